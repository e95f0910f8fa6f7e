"""Monitor runs the dashboard starts and follows: one background process per run, one directory.

A run is `execal monitor ... --state-dir <runs>/<run_id>` started in its own session (so it outlives
the web worker that started it and is not killed by a worker restart); every worker can follow it
because everything it says is in its directory (see execal.live.runner.StateWriter): run.json
(what was asked), status.json, ticks.jsonl, fills.jsonl, events.jsonl, history/, control.json
(written here: pause, resume, stop, switch), stderr.log. A page that reloads finds its run again
by id (the browser keeps only the id) and re-reads the files from the start.

`demo_inputs` makes the demonstration scenario of the panel and its browser test: a config fitted
before the capture's window and fills inside the window whose impact coefficient Y doubles at a
known time, so an alarm and a recalibration are expected.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from execal.live.synthetic import change_point_fills, to_records
from execal.models.impact.fit import Calibrator
from execal.models.live.events import read_events
from execal.models.live.versions import ConfigHistory

RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{6}$")
PACKAGE_PARENT = Path(__file__).resolve().parents[1].parent


def is_run_id(value) -> bool:
    return isinstance(value, str) and bool(RUN_ID.match(value))


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def capture_span_ns(path) -> tuple[int, int]:
    """Exchange-time span of a capture from its first and last stream messages (fast: no replay)."""
    import gzip

    opener = gzip.open if str(path).endswith(".gz") else open
    first = last = None
    with opener(path, "rb") as fh:
        for line in fh:
            body = line[line.find(b" ") + 1:]
            if body.startswith(b'{"stream"'):
                t = json.loads(body)["data"]
                stamp = t.get("T") or t.get("E")
                if stamp:
                    first = first or stamp
                    last = stamp
    if first is None:
        raise ValueError(f"{Path(path).name}: no timed stream messages")
    return first * 1_000_000, last * 1_000_000


def demo_inputs(run_dir: Path, capture: str, *, seed: int = 7, change_at: float = 0.3,
                fills_per_s: float = 3.0, y_before: float = 0.7, y_after: float = 1.4) -> dict:
    """cfg.json and fills.jsonl of the demonstration: Y steps from `y_before` to `y_after` at
    `change_at` of the capture's span."""
    start, end = capture_span_ns(capture)
    start += 3 * 10**9                      # the book needs its snapshot first
    change = int(start + change_at * (end - start))
    n = max(100, int((end - start) / 1e9 * fills_per_s))
    symbol = Path(capture).name.split("_")[1].upper() if "_" in Path(capture).name else "BTCUSDT"
    pre, _ = change_point_fills(2000, start - 86_400 * 10**9, start, seed=seed, symbol=symbol,
                                params_before={"Y": y_before})
    config = Calibrator(model="sqrt", loss="linear").fit(pre).to_config()
    fills, truth = change_point_fills(n, start, end, change_ns=change, params_before={"Y": y_before},
                                      params_after={"Y": y_after}, seed=seed + 1, symbol=symbol)
    (run_dir / "input_config.json").write_text(json.dumps(config))
    (run_dir / "input_fills.jsonl").write_text("".join(json.dumps(r) + "\n" for r in to_records(fills)))
    # input_*: the state writer owns fills.jsonl (the processed fill records)
    return {"config": str(run_dir / "input_config.json"), "fills": str(run_dir / "input_fills.jsonl"),
            "change_ns": change, "change": pd.Timestamp(change, tz="UTC").isoformat(),
            "y_before": y_before, "y_after": y_after, "fills_n": n}


def start_run(runs_dir: Path, *, capture: str, speed: str = "10", config: str | None = None,
              fills: str | None = None, demo: bool = False, settings: str | None = None,
              python: str = sys.executable) -> str:
    """Start a monitor process on a replayed capture; returns its run id."""
    run_id = new_run_id()
    run_dir = Path(runs_dir) / run_id
    run_dir.mkdir(parents=True, exist_ok=False)
    meta = {"run_id": run_id, "capture": capture, "speed": speed, "started": time.time(), "demo": demo}
    if demo:
        meta["demo_truth"] = demo_inputs(run_dir, capture)
        config, fills = meta["demo_truth"]["config"], meta["demo_truth"]["fills"]
    meta.update(config=config, fills=fills)
    cmd = [python, "-m", "execal.cli", "monitor", capture, "--state-dir", str(run_dir), "--speed", str(speed),
           "--status-every", "5", "--summary", str(run_dir / "summary.json")]
    if config:
        cmd += ["--config", config]
    if fills:
        cmd += ["--fills", fills]
    if settings:
        cmd += ["--set", settings]
    meta["command"] = cmd
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    with open(run_dir / "stderr.log", "wb") as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=env, start_new_session=True, cwd=str(run_dir))
    meta["pid"] = proc.pid
    (run_dir / "run.json").write_text(json.dumps(meta))
    return run_id


def run_dir_of(runs_dir: Path, run_id: str) -> Path:
    if not is_run_id(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    return Path(runs_dir) / run_id


def meta(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def alive(run_dir: Path) -> bool:
    pid = meta(run_dir).get("pid")
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, PermissionError):
        return False
    # a zombie (finished, not reaped by its parent worker) is not running
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def status(run_dir: Path) -> dict:
    try:
        st = json.loads((run_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        st = {}
    st["alive"] = alive(run_dir)
    st["finished"] = (run_dir / "summary.json").exists()
    return st


def control(run_dir: Path, **command) -> dict:
    """Ask the running monitor something: paused=True/False, stop=True, switch=version."""
    path = run_dir / "control.json"
    try:
        current = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        current = {}
    current = {k: v for k, v in current.items() if k in ("paused",)}
    current.update(command)
    current["seq"] = int(time.time() * 1e6)
    tmp = run_dir / "control.json.tmp"
    tmp.write_text(json.dumps(current))
    os.replace(tmp, path)
    return current


def stop(run_dir: Path, timeout_s: float = 0.0) -> None:
    """Stop cleanly (control file, then SIGINT to the process); wait up to `timeout_s`."""
    control(run_dir, stop=True)
    pid = meta(run_dir).get("pid")
    if pid and alive(run_dir):
        try:
            os.kill(int(pid), signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while timeout_s and alive(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)


def read_jsonl(path: Path, offset: int = 0, max_rows: int | None = None) -> tuple[list[dict], int]:
    """Rows appended since `offset` (complete lines) and the new offset; with `max_rows`, only the
    last rows are kept (the first draw of a long run)."""
    rows, new = read_events(path, offset)
    if max_rows is not None and len(rows) > max_rows:
        rows = rows[-max_rows:]
    return rows, new


def history(run_dir: Path) -> ConfigHistory:
    return ConfigHistory(run_dir / "history")


def list_runs(runs_dir: Path) -> list[dict]:
    out = []
    base = Path(runs_dir)
    if not base.is_dir():
        return out
    for d in sorted(base.iterdir(), reverse=True):
        if is_run_id(d.name):
            m = meta(d)
            out.append({"run_id": d.name, "capture": Path(m.get("capture", "")).name, "alive": alive(d)})
    return out
