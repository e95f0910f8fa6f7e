"""`execal record`: what the sockets deliver, written in the capture format execal reads.

One file per venue, symbol and hour, `<venue>_<symbol>_<YYYYmmdd>_<HH>.gz` (the venue name carries
the market, so `models.data.binance.market_from_name` recognises it), gzip text with one message a
line, `<receive ns> <message as received>`, and the REST depth snapshot as a line without "stream":
exactly what `execal.models.data.io.load` / `read_capture` and the replay server read. Files are
rotated on the hour (receive time, UTC); a rotated file must rebuild its book on its own, so before
the first depth diff written to a new file the recorder writes the book as a snapshot line (the
monitor's book just before that diff, with a lastUpdateId the diff straddles). A restart in the
same hour appends a new gzip member to the hour's file (readers decompress every member).
"""
from __future__ import annotations

import gzip
import time
from pathlib import Path

import orjson

from execal.models.data.orderbook import OrderBook

NS_PER_HOUR = 3600 * 10**9


class Recorder:
    def __init__(self, directory, *, clock=time.time_ns):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.files: dict[tuple[str, str], tuple[int, gzip.GzipFile]] = {}
        self.need_snapshot: set[tuple[str, str]] = set()
        self.lines = 0
        self.files_written: list[str] = []

    def _file(self, venue: str, symbol: str, now_ns: int) -> gzip.GzipFile:
        key = (venue, symbol)
        hour = now_ns // NS_PER_HOUR
        cur = self.files.get(key)
        if cur is not None and cur[0] == hour:
            return cur[1]
        if cur is not None:
            cur[1].close()
            self.need_snapshot.add(key)            # the new file rebuilds its book on its own
        stamp = time.strftime("%Y%m%d_%H", time.gmtime(hour * 3600))
        path = self.dir / f"{venue}_{symbol.lower()}_{stamp}.gz"
        fh = gzip.open(path, "ab")
        self.files[key] = (hour, fh)
        self.files_written.append(path.name)
        return fh

    def message(self, venue: str, raw, monitor=None) -> None:
        """One stream message as received (before the monitor applies it)."""
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
        if not body.startswith(b'{"stream":"'):
            return                                 # not a stream message: nothing to replay
        end = body.find(b'"', 11)
        stream = body[11:end].decode()
        symbol, _, channel = stream.partition("@")
        now = self.clock()
        fh = self._file(venue, symbol.upper(), now)
        key = (venue, symbol.upper())
        if key in self.need_snapshot and channel.startswith("depth") and monitor is not None:
            state = monitor.markets.get(key)
            if state is not None and state.book.ready:
                diff = orjson.loads(body)["data"]
                self._write_book(fh, now, state.book, diff)
                self.need_snapshot.discard(key)
        fh.write(b"%d %s\n" % (now, body))
        self.lines += 1

    @staticmethod
    def _write_book(fh, now: int, book: OrderBook, next_diff: dict) -> None:
        snap = book.snapshot()
        # the next diff must straddle lastUpdateId: futures U <= id <= u, spot U == id + 1
        snap["lastUpdateId"] = next_diff["U"] if book.market != "spot" else next_diff["U"] - 1
        fh.write(b"%d %s\n" % (now, orjson.dumps(snap)))

    def snapshot(self, venue: str, symbol: str, snap: dict) -> None:
        """A REST snapshot as fetched: the line without "stream"."""
        now = self.clock()
        fh = self._file(venue, symbol.upper(), now)
        self.need_snapshot.discard((venue, symbol.upper()))
        fh.write(b"%d %s\n" % (now, orjson.dumps(snap)))
        self.lines += 1

    def flush(self) -> None:
        for _, fh in self.files.values():
            fh.flush()

    def close(self) -> None:
        for _, fh in self.files.values():
            fh.close()
        self.files.clear()
