"""Monitor events: timestamped JSON objects, one a line, appended to an events log.

An event is {time (exchange/market time, ISO UTC), t_ns, wall_time (ISO UTC), kind, ...}: kind
"alarm" (a detector fired: detector, statistic, threshold, direction, venue, symbol),
"recalibration" (a new config version and its out-of-sample comparison), "switch" (the live
config changed), "resync" (a book gap or reconnection), "start" / "stop". The log is written line
by line and flushed, so a reader (the dashboard, `tail -f`) sees each event when it happens; it
is append-only.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from collections import deque
from pathlib import Path

from execal.models.core.jsonable import clean


def iso_ns(t_ns: int | None) -> str | None:
    if t_ns is None:
        return None
    return _dt.datetime.fromtimestamp(int(t_ns) / 1e9, tz=_dt.timezone.utc).isoformat(
        timespec="milliseconds")


def make_event(kind: str, t_ns: int | None, **fields) -> dict:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    return clean({"time": iso_ns(t_ns), "t_ns": t_ns, "wall_time": now, "kind": kind, **fields})


class EventLog:
    """Append-only JSON-lines log (None path: kept in memory only) plus the last `keep` events."""

    def __init__(self, path: str | os.PathLike | None = None, keep: int = 1000):
        self.path = Path(path) if path else None
        self.recent: deque = deque(maxlen=keep)
        self.counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8") if self.path else None

    def write(self, event: dict) -> dict:
        line = json.dumps(event, allow_nan=False, separators=(",", ":"))
        with self._lock:
            self.recent.append(event)
            key = event.get("detector") or event["kind"]
            self.counts[key] = self.counts.get(key, 0) + 1
            if self._fh is not None:
                self._fh.write(line + "\n")
                self._fh.flush()
        return event

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def read_events(path: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """Events appended since byte `offset` (complete lines only) and the new offset."""
    p = Path(path)
    if not p.exists():
        return [], offset
    with open(p, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    out = []
    for line in data[:end].split(b"\n"):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out, offset + end + 1
