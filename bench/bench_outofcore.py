"""Out of core: 100,000,000 fills (quick: 2,000,000; `--rows N` to choose) written as a partitioned
dataset in bounded memory, then calibrated (power_law, soft_l1) by streaming it, in a fresh process
each so the peak RSS (Linux VmHWM, as bench/bench_load.py) is the step's own.

Rows (each against a named baseline measured in the same run):
- generate: `sample.generate_fills_dataset` vs `sample.generate_fills` of 1,000,000 rows in memory
  (rows/s; the baseline keeps every row in memory, the dataset writer one day at a time);
- calibrate in-process: `fit_dataset` on all rows (floor 60 s, peak RSS <= 2 GB) vs the in-memory
  `Calibrator.fit` on the first 1,000,000 rows (frame already in memory), scaled to the same rows
  (the note gives both rows/s);
- calibrate on a `dask.distributed.LocalCluster` (2 worker processes, 1 thread each) vs in-process;
  the parameters must be identical (asserted);
- one-day filter: bytes read through a byte-counting filesystem for one day's rows vs the whole
  dataset (same columns);
- summary: the dataset summary from the manifest (what the dashboard's Data panel shows first).

The dataset goes to $EXECAL_BENCH_DIR (default /tmp/execal-bench) and is deleted afterwards
unless --keep (--reuse then skips generating it again). Run: `python -m bench.run --only outofcore
[--quick] [--rows N]` or `python -m bench.bench_outofcore [--quick] [--rows N] [--keep] [--reuse]`.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import best_of, row

ROOT = Path(__file__).resolve().parents[1]
FULL_ROWS = 100_000_000
QUICK_ROWS = 2_000_000
FIT_FLOOR_S = 60.0
PEAK_MB_LIMIT = 2048.0
SUMMARY_FLOOR_S = 2.0
DAYS = 365

_CHILD = """
import json, sys, time
def hwm_mb():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmHWM:")) / 1024
{imports}
base = hwm_mb()
t0 = time.perf_counter()
{body}
seconds = time.perf_counter() - t0
print(json.dumps({{"seconds": seconds, "base_mb": base, "peak_mb": hwm_mb(), "out": out}}))
"""


def child(imports: str, body: str, timeout: float = 7200) -> dict:
    """Run `body` (which sets `out`) in a fresh interpreter; its time and VmHWM before / after."""
    code = _CHILD.format(imports=imports, body=body)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=dict(os.environ))
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:   # pragma: no cover
        return "?"


def run(quick: bool = False, rows: int | None = None, keep: bool = False,
        reuse: bool = False) -> list[dict]:
    import numpy as np

    from execal.models.data.dataset import ReadCounter, fmt_bytes, open_dataset
    from execal.models.data.sample import generate_fills
    from execal.models.impact.fit import Calibrator

    n = int(rows or (QUICK_ROWS if quick else FULL_ROWS))
    days = DAYS if n >= 10 * DAYS else max(1, n // 10)
    base_dir = Path(os.environ.get("EXECAL_BENCH_DIR", "/tmp/execal-bench"))
    base_dir.mkdir(parents=True, exist_ok=True)
    path = base_dir / f"outofcore-{n}"
    reuse = reuse and (path / "_manifest.json").is_file() and open_dataset(path).manifest["rows"] == n
    if path.exists() and not reuse:
        shutil.rmtree(path)
    out: list[dict] = []
    loads = [f"start {load_average()}"]
    try:
        # 1. generate, in a fresh process (unless --reuse found it)
        if reuse:
            loads.append("dataset reused: no generate row")
        gen = None if reuse else child("from execal.models.data.sample import generate_fills_dataset",
                    f"m = generate_fills_dataset({str(path)!r}, {n}, days={days}, seed=7)\n"
                    f"out = {{'rows': m['rows'], 'bytes': m['bytes'], 'partitions': len(m['partitions'])}}")
        base_n = min(1_000_000, n)
        if gen is not None:
            loads.append(f"after generate {load_average()}")
            t_base, _ = best_of(lambda: generate_fills(base_n, seed=7, days=days), 1)
            g = gen["out"]
            r = row(f"generate {n:,} fills as a partitioned dataset (fresh process)", gen["seconds"],
                    baseline=f"generate_fills({base_n:,}) in memory, scaled to {n:,} rows",
                    baseline_s=t_base * n / base_n,
                    note=f"{g['partitions']:,} partitions, {fmt_bytes(g['bytes'])} on disk; peak RSS "
                         f"{gen['peak_mb']:.0f} MB (limit {PEAK_MB_LIMIT:.0f}); {n / gen['seconds']:,.0f} "
                         f"rows/s vs {base_n / t_base:,.0f} rows/s in memory")
            r["meets_floor"] = gen["peak_mb"] <= PEAK_MB_LIMIT
            out.append(r)

        # 2. summary from the manifest
        t_sum, summary = best_of(lambda: open_dataset(path).summary(), 3)
        out.append(row(f"dataset summary of {n:,} fills (manifest only)", t_sum, floor_s=SUMMARY_FLOOR_S,
                       note=f"{summary['partitions']:,} partitions, {summary['days']} days, "
                            f"{summary['rows']:,} rows; no data file opened"))

        # 3. calibrate in-process, fresh process; baseline: the in-memory fit of 1M rows
        fit_body = (f"r = fit_dataset(Calibrator('power_law', loss='soft_l1'), {str(path)!r}EXTRA)\n"
                    "out = {'params': {k: float(v) for k, v in r.params.items()}, 'passes': r.source['passes'],"
                    " 'tasks': r.source['tasks'], 'nfev': r.report.nfev, 'status': r.report.status,"
                    " 'executor': r.source['executor'], 'rows': r.n_train, 'fit_s': r.source['seconds']}")
        imports = ("from execal.models.impact.fit import Calibrator\n"
                   "from execal.models.impact.outofcore import fit_dataset")
        here = child(imports, fit_body.replace("EXTRA", ""))
        loads.append(f"after in-process fit {load_average()}")
        two = child(imports, fit_body.replace("EXTRA", ", threads=2"))
        loads.append(f"after 2-thread fit {load_average()}")
        ds = open_dataset(path)
        first = ds.select(days=sorted(ds.all().values("day"))[: max(1, -(-base_n * days // n))]).to_frame()
        first = first.iloc[:base_n]
        cal = Calibrator("power_law", loss="soft_l1")
        t_mem, mem = best_of(lambda: cal.fit(first), 3 if quick else 2)
        del first
        h = here["out"]
        rows_per_s = h["rows"] / here["seconds"]
        mem_rows_per_s = mem.n_train / t_mem
        r = row(f"calibrate power_law soft_l1 on {n:,} fills, streamed in-process (fresh process)",
                here["seconds"], floor_s=FIT_FLOOR_S,
                baseline=f"Calibrator.fit on {mem.n_train:,} fills in memory, scaled to {h['rows']:,} rows",
                baseline_s=t_mem * h["rows"] / mem.n_train,
                note=f"{rows_per_s:,.0f} rows/s vs {mem_rows_per_s:,.0f} rows/s in memory; peak RSS "
                     f"{here['peak_mb']:.0f} MB (limit {PEAK_MB_LIMIT:.0f}); {h['passes']} passes of "
                     f"{h['tasks']} tasks, nfev {h['nfev']}, status {h['status']}; Y {h['params']['Y']:.6f}, "
                     f"delta {h['params']['delta']:.6f}")
        r["meets_floor"] = here["seconds"] <= FIT_FLOOR_S and here["peak_mb"] <= PEAK_MB_LIMIT
        out.append(r)

        t2 = two["out"]
        assert t2["params"] == h["params"], (t2["params"], h["params"])
        r = row(f"calibrate power_law soft_l1 on {n:,} fills, streamed in-process, 2 threads (fresh process)",
                two["seconds"], floor_s=FIT_FLOOR_S,
                baseline="the same fit in-process, one thread", baseline_s=here["seconds"],
                note=f"identical parameters (asserted); {t2['rows'] / two['seconds']:,.0f} rows/s; peak RSS "
                     f"{two['peak_mb']:.0f} MB (limit {PEAK_MB_LIMIT:.0f})")
        r["meets_floor"] = two["seconds"] <= FIT_FLOOR_S and two["peak_mb"] <= PEAK_MB_LIMIT
        out.append(r)

        # 4. the same on a two-process LocalCluster
        cluster_body = (
            "from dask.distributed import LocalCluster\n"
            "from execal.models.data.compute import close_clients\n"
            "with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as c:\n"
            "    t1 = time.perf_counter()\n"
            "    " + fit_body.replace("EXTRA", ", scheduler=c.scheduler_address").replace("\n", "\n    ") + "\n"
            "    out['fit_only_s'] = time.perf_counter() - t1\n"
            "    close_clients()\n")
        there = child(imports, cluster_body)
        loads.append(f"after LocalCluster fit {load_average()}")
        c = there["out"]
        assert c["params"] == h["params"], (c["params"], h["params"])
        out.append(row(f"calibrate on {n:,} fills on a LocalCluster (2 worker processes)", c["fit_only_s"],
                       baseline="the same fit in-process (fresh process, one thread)",
                       baseline_s=here["seconds"],
                       note=f"identical parameters (asserted); cluster start-up "
                            f"{there['seconds'] - c['fit_only_s']:.1f} s not included; "
                            f"client peak RSS {there['peak_mb']:.0f} MB"))

        # 5. one-day filter: bytes read
        fs = ReadCounter.filesystem()
        counted = open_dataset(path, filesystem=fs)
        cols = ["quantity", "cost_bps"]
        day = counted.all().values("day")[days // 2]
        t_day, tab = best_of(lambda: counted.select(days=[day]).to_table(cols), 1)
        day_bytes, day_files = fs.handler.bytes_read, len(fs.handler.files)
        assert all(f"/day={day}/" in f for f in fs.handler.files)
        fs.handler.reset()
        t_all, whole_rows = best_of(lambda: sum(b.num_rows for b in counted.all().batches(cols)), 1)
        all_bytes, all_files = fs.handler.bytes_read, len(fs.handler.files)
        out.append(row(f"one-day filter on {n:,} fills: read {tab.num_rows:,} rows of {day}", t_day,
                       baseline=f"the same columns of all {whole_rows:,} rows", baseline_s=t_all,
                       note=f"{fmt_bytes(day_bytes)} in {day_files} files read vs {fmt_bytes(all_bytes)} in "
                            f"{all_files} files ({all_bytes / max(day_bytes, 1):,.0f}x less); only "
                            f"day={day} files touched"))
        np.testing.assert_equal(tab.num_rows, counted.select(days=[day]).rows_upper)
    finally:
        if not keep and path.exists():
            shutil.rmtree(path)
    loads.append(f"end {load_average()}")
    for r in out:
        r["note"] += f" [load avg {'; '.join(loads)}]" if r is out[-1] else ""
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", type=int)
    ap.add_argument("--keep", action="store_true", help="keep the generated dataset")
    ap.add_argument("--reuse", action="store_true", help="use a dataset kept by --keep (no generate row)")
    a = ap.parse_args()
    for r in run(quick=a.quick, rows=a.rows, keep=a.keep, reuse=a.reuse):
        print(json.dumps(r))
