"""`execal monitor` and `execal record` as a user runs them: a subprocess on a replayed capture and a
fills file with a known change in impact; status lines on stderr, events as JSON lines, Ctrl-C
(SIGINT) ends it cleanly with a JSON summary; bad input exits 2 with one line."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from execal.live.synthetic import change_point_fills, to_records
from execal.models.impact.fit import Calibrator

pytestmark = pytest.mark.shared_data
PKG = Path(__file__).resolve().parents[2]


def env():
    e = dict(os.environ)
    e.setdefault("PYTHONPATH", str(PKG.parent))
    return e


def prefix(shared_data, tmp_path, lines=20_000):
    out = tmp_path / "usdm_btcusdt_20240808.gz"
    with gzip.open(shared_data / "binance-raw" / out.name, "rb") as fh, gzip.open(out, "wb") as dst:
        for i, line in enumerate(fh):
            if i >= lines:
                break
            dst.write(line)
    return out


def scenario(tmp_path):
    """A config fitted before the window, and fills in the window whose Y doubles at its middle."""
    start = pd.Timestamp("2024-08-08T23:54:18Z").value
    end = pd.Timestamp("2024-08-08T23:55:30Z").value
    change = pd.Timestamp("2024-08-08T23:54:50Z").value
    pre, _ = change_point_fills(1500, start - 86_400 * 10**9, start, seed=1)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(Calibrator(model="sqrt", loss="linear").fit(pre).to_config()))
    fills, truth = change_point_fills(600, start, end, change_ns=change, params_after={"Y": 1.6}, seed=2)
    path = tmp_path / "fills.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in to_records(fills)))
    return cfg, path, truth


def test_monitor_subprocess_alarm_recalibration_and_clean_sigint(shared_data, tmp_path):
    capture = prefix(shared_data, tmp_path)
    cfg, fills, truth = scenario(tmp_path)
    events = tmp_path / "events.jsonl"
    cmd = [sys.executable, "-m", "execal.cli", "monitor", str(capture), "--config", str(cfg), "--fills", str(fills),
           "--speed", "4", "--events", str(events), "--history", str(tmp_path / "history"),
           "--status-every", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), text=True)
    try:
        deadline = time.monotonic() + 240
        seen = []
        while time.monotonic() < deadline and proc.poll() is None:
            if events.exists():
                seen = [json.loads(line) for line in events.read_text().splitlines() if line.strip()]
                if any(e["kind"] == "recalibration" for e in seen):
                    break
            time.sleep(0.2)
        assert proc.poll() is None, "the monitor ended before it was interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    status = [line for line in err.splitlines() if line.startswith("execal: msgs ")]
    assert len(status) >= 2 and "binance-usdm:BTCUSDT mid" in status[-1]
    assert "execal: stopped;" in err
    summary = json.loads(out)
    assert summary["counts"]["messages"] > 1000 and summary["counts"]["fills_used"] > 100
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    kinds = [e["kind"] for e in seen]
    assert kinds[0] == "switch" and kinds[-1] == "stop" and "start" in kinds
    alarms = [e for e in seen if e["kind"] == "alarm" and e["detector"] in ("cusum", "page_hinkley")]
    assert alarms, kinds
    first = pd.Timestamp(alarms[0]["time"]).value
    # detected after the change (no false alarm before it in this run), within 20 s of market time
    assert truth["change_ns"] <= first < truth["change_ns"] + 20 * 10**9
    recal = next(e for e in seen if e["kind"] == "recalibration")
    assert recal["comparison"]["n"] >= 10 and recal["version"] == 2
    assert (tmp_path / "history").is_dir() and len(list((tmp_path / "history").glob("v*.json"))) >= 2


def test_monitor_bad_input_exits_2_with_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "execal.cli", "monitor", str(tmp_path / "missing.gz")],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such capture file" in r.stderr
    bad = tmp_path / "cfg.json"
    bad.write_text('{"schema_version": 1, "model": {"name": "nope"}}')
    r = subprocess.run([sys.executable, "-m", "execal.cli", "monitor", "usdm:btcusdt", "--config", str(bad)],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 2 and "model.name" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "execal.cli", "monitor", "moon:btc"],
                       capture_output=True, text=True, env=env(), timeout=120)
    assert r.returncode == 2 and "MARKET:SYMBOL" in r.stderr


def test_record_subprocess_writes_a_readable_capture(shared_data, tmp_path):
    from execal.models.data.binance import read_capture

    capture = prefix(shared_data, tmp_path, lines=20_000)
    out_dir = tmp_path / "rec"
    r = subprocess.run([sys.executable, "-m", "execal.cli", "record", str(capture), "--out", str(out_dir),
                        "--speed", "max", "--quiet"], capture_output=True, text=True, env=env(), timeout=240)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    files = summary["recorded"]["files"]
    assert len(files) == 1 and files[0].startswith("binance-usdm_btcusdt_")
    cap = read_capture(out_dir / files[0])
    src = read_capture(capture)
    assert len(cap.trades) == len(src.trades) and cap.stats["synced"] and cap.stats["gaps"] == 0
    # execal's own loader reads it like any capture (tomorrow's calibration data)
    from execal.models.data.io import load

    assert len(load(out_dir / files[0], kind="trades").frame) == len(src.trades)
    assert len(load(out_dir / files[0], kind="book").frame) > 0
