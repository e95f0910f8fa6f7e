"""Benchmark of `execal.models.data.io.load` on a large fills file: wall time and peak memory.

1,000,000 synthetic fills (100,000 with quick=True) are written once as CSV, with ISO-8601
millisecond timestamps ending in 'Z' because that is what users export, and as Parquet (a
datetime64 column). `load()` (read + rename + validate + derive cost_bps) is timed against the
plain readers on the same files: `pd.read_csv(path)` with the default engine and
`pd.read_parquet(path)`, neither of which validates anything.

Peak memory: a fresh interpreter imports execal and pandas, records its peak RSS (the baseline),
runs only the load, and records the peak again; the row reports the difference and both numbers.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench.common import best_of, row

ROOT = Path(__file__).resolve().parents[1]
CSV_FLOOR_S = 3.0
PARQUET_FLOOR_S = 1.0
PEAK_MB_LIMIT = 500.0


def make_fills(n: int, seed: int = 7) -> pa.Table:
    """n fills over ~2 days: a few symbols and venues, log-normal sizes, costs of a few bps."""
    rng = np.random.default_rng(seed)
    start = np.datetime64("2024-03-01T00:00:00.000", "ms")
    gaps_ms = rng.exponential(170.0, n).astype(np.int64) + 1
    times = start + np.cumsum(gaps_ms).astype("timedelta64[ms]")
    symbols = np.array(["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"])
    sym_idx = rng.integers(0, len(symbols), n)
    ref = np.array([62_000.0, 3_400.0, 140.0, 0.55, 0.12])[sym_idx]
    side = rng.choice(np.array([1, -1]), n)
    arrival = ref * np.exp(rng.normal(0, 0.01, n))
    cost_bps = rng.normal(3.0, 6.0, n)
    exec_price = arrival * (1 + side * cost_bps / 1e4)
    return pa.table({
        "timestamp": times,
        "symbol": symbols[sym_idx],
        "venue": np.array(["binance", "okx", "bybit"])[rng.integers(0, 3, n)],
        "side": np.where(side > 0, "buy", "sell"),
        "quantity": np.round(rng.lognormal(0.0, 1.2, n), 6),
        "arrival_price": np.round(arrival, 6),
        "exec_price": np.round(exec_price, 6),
        "duration_s": np.round(rng.exponential(300.0, n), 3),
        "order_id": np.char.add("ord-", np.arange(n).astype(str)),
    })


def write_files(n: int, folder: Path) -> tuple[Path, Path]:
    table = make_fills(n)
    csv_path, parquet_path = folder / "fills.csv", folder / "fills.parquet"
    iso = pa.array(np.datetime_as_string(table["timestamp"].to_numpy(), unit="ms", timezone="UTC"))
    # unquoted, like most exports (no field contains a comma)
    pacsv.write_csv(table.set_column(0, "timestamp", iso), csv_path,
                    pacsv.WriteOptions(quoting_style="none"))
    pq.write_table(table.set_column(0, "timestamp", table["timestamp"].cast(pa.timestamp("ms", "UTC"))),
                   parquet_path)
    return csv_path, parquet_path


# VmHWM (this process's RSS high-water mark) rather than getrusage().ru_maxrss: on Linux the
# latter survives fork+exec, so a child would report the benchmark parent's peak.
_PEAK_SCRIPT = """
import json, sys, time
def hwm_kb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:"))
import pandas as pd
from execal.models.data.io import load
base_kb = hwm_kb()
t0 = time.perf_counter()
out = {call}
seconds = time.perf_counter() - t0
peak_kb = hwm_kb()
print(json.dumps({{"base_mb": base_kb / 1024, "peak_mb": peak_kb / 1024, "seconds": seconds,
                  "rows": len(out.frame if hasattr(out, "frame") else out)}}))
"""


def peak_rss(call: str) -> dict:
    """Run `call` in a fresh interpreter; its peak RSS before and after (MB, Linux VmHWM)."""
    code = _PEAK_SCRIPT.format(root=str(ROOT), call=call)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[dict]:
    from execal.models.data.io import load

    n = 100_000 if quick else 1_000_000
    repeat = 2 if quick else 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="execal-bench-load-") as tmp:
        csv_path, parquet_path = write_files(n, Path(tmp))
        csv_mb = csv_path.stat().st_size / 1024**2
        pq_mb = parquet_path.stat().st_size / 1024**2

        t_csv, ds = best_of(lambda: load(csv_path), repeat)
        assert len(ds.frame) == n and ds.report.dropped == [], ds.report
        t_pd_csv, _ = best_of(lambda: pd.read_csv(csv_path), repeat)
        rows.append(row(f"load CSV {n:,} fills", t_csv, floor_s=CSV_FLOOR_S,
                        baseline="pd.read_csv(path), default engine, no validation",
                        baseline_s=t_pd_csv,
                        note=f"{csv_mb:.0f} MB, ISO-8601 ms 'Z' timestamps as text; "
                             f"validated, kind={ds.kind}"))

        t_pq, ds = best_of(lambda: load(parquet_path), repeat)
        assert len(ds.frame) == n
        t_pd_pq, _ = best_of(lambda: pd.read_parquet(parquet_path), repeat)
        rows.append(row(f"load Parquet {n:,} fills", t_pq, floor_s=PARQUET_FLOOR_S,
                        baseline="pd.read_parquet(path), no validation", baseline_s=t_pd_pq,
                        note=f"{pq_mb:.0f} MB, timestamp[ms, UTC] column; validated"))

        for label, path, baseline_call in (
                ("CSV", csv_path, f"pd.read_csv({str(csv_path)!r})"),
                ("Parquet", parquet_path, f"pd.read_parquet({str(parquet_path)!r})")):
            ours = peak_rss(f"load({str(path)!r})")
            theirs = peak_rss(baseline_call)
            delta = ours["peak_mb"] - ours["base_mb"]
            delta_base = theirs["peak_mb"] - theirs["base_mb"]
            r = row(f"peak memory, load {label} {n:,} fills (fresh process)", ours["seconds"],
                    baseline=f"{baseline_call.split('(')[0]} in a fresh process",
                    baseline_s=theirs["seconds"],
                    note=f"peak RSS +{delta:.0f} MB over a {ours['base_mb']:.0f} MB "
                         f"interpreter+imports baseline (peak {ours['peak_mb']:.0f} MB; limit "
                         f"+{PEAK_MB_LIMIT:.0f} MB); plain reader +{delta_base:.0f} MB")
            r["meets_floor"] = delta <= PEAK_MB_LIMIT   # the floor here is memory, see note
            rows.append(r)
    return rows


if __name__ == "__main__":
    for r in run(quick="--quick" in sys.argv):
        print(r)
