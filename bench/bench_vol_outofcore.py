"""Volatility on bars aggregated out of core: 50,000,000 trades (quick: 2,000,000; `--rows N`) of
one symbol over 30 days written as a trades dataset, then aggregated to one-minute bars and a GARCH
fitted on them, in a fresh process each so the peak RSS (Linux VmHWM) is the step's own.

Rows (against a named baseline measured in the same run on the same rows):
- streamed: `streambars.dataset_bar_series` + `VolatilityCalibrator("garch").fit` vs the in-memory
  path (`view.to_dataset()` then the same fit: what `execal vol DIR` did before); the bars are
  asserted identical and the parameters equal; the note gives both peak RSS figures and trades/s;
- on a two-process `LocalCluster` vs in-process (identical bars asserted).

Run: `python -m bench.run --only vol_outofcore [--quick] [--rows N]`. The dataset goes to
$EXECAL_BENCH_DIR (default /tmp/execal-bench) and is deleted afterwards.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from bench.bench_outofcore import child, load_average
from bench.common import row

FULL_ROWS = 50_000_000
QUICK_ROWS = 2_000_000
DAYS = 30

_GENERATE = """
import numpy as np, pandas as pd
from execal.models.data.dataset import DatasetWriter
n, days, root = {n}, {days}, {root!r}
rng = np.random.default_rng(11)
start_ns = pd.Timestamp("2024-01-01", tz="UTC").value
span_ms = days * 86_400_000
writer = DatasetWriter(root, "trades", {{"file": "bench-trades", "sha256": "b" * 64}})
chunk = 1_000_000
log_p = np.log(40_000.0)
for lo in range(0, n, chunk):
    m = min(chunk, n - lo)
    ms = np.sort(rng.integers(lo * span_ms // n, (lo + m) * span_ms // n, m))
    steps = rng.standard_normal(m) * 0.0008 * np.sqrt(np.maximum(np.diff(np.concatenate([[ms[0]], ms])), 1) / 60_000)
    prices = np.exp(log_p + np.cumsum(steps))
    log_p = float(np.log(prices[-1]))
    writer.write_frame(pd.DataFrame({{"timestamp": pd.to_datetime(start_ns + ms * 1_000_000, unit="ns", utc=True),
                                     "symbol": "BTCUSDT", "price": np.round(prices, 2),
                                     "quantity": rng.uniform(0.001, 1.0, m)}}))
writer.commit()
out = n
"""

_IMPORTS = ("from execal.models.data.dataset import open_dataset\n"
            "from execal.models.data.streambars import dataset_bar_series\n"
            "from execal.models.vol.base import VolatilityCalibrator\n"
            "import hashlib, numpy as np")

_DIGEST = ("digest = hashlib.sha256(b''.join(np.ascontiguousarray(getattr(bars, k)).tobytes() for k in "
           "('t_ns', 'open', 'high', 'low', 'close', 'contiguous'))).hexdigest()\n")

_STREAMED = """
view = open_dataset({root!r}).all()
bars = dataset_bar_series(view, bar="1min"{scheduler})
fit = VolatilityCalibrator("garch", bar="1min").fit(bars)
""" + _DIGEST + """out = {{"params": fit.params, "bars": bars.n, "digest": digest, "rows": bars.report.rows_read}}
"""

_IN_MEMORY = """
from execal.models.data.bars import bar_series
view = open_dataset({root!r}).all()
data = view.to_dataset()
bars = bar_series(data, bar="1min")
fit = VolatilityCalibrator("garch", bar="1min").fit(data)
""" + _DIGEST + """out = {{"params": fit.params, "bars": bars.n, "digest": digest, "rows": len(data.frame)}}
"""

_CLUSTER = """
from dask.distributed import LocalCluster
from execal.models.data.compute import close_clients
cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
try:
    view = open_dataset({root!r}).all()
    bars = dataset_bar_series(view, bar="1min", scheduler=cluster.scheduler_address)
finally:
    close_clients()
    cluster.close()
""" + _DIGEST + """out = {{"bars": bars.n, "digest": digest}}
"""


def run(quick: bool = False, rows: int | None = None) -> list[dict]:
    n = rows or (QUICK_ROWS if quick else FULL_ROWS)
    root = Path(os.environ.get("EXECAL_BENCH_DIR", "/tmp/execal-bench")) / f"vol-trades-{n}"
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    out = []
    try:
        gen = child("", _GENERATE.format(n=n, days=DAYS, root=str(root)))
        streamed = child(_IMPORTS, _STREAMED.format(root=str(root), scheduler=""))
        memory = child(_IMPORTS, _IN_MEMORY.format(root=str(root)))
        s, m = streamed["out"], memory["out"]
        assert s["digest"] == m["digest"] and s["bars"] == m["bars"], "streamed bars differ from in-memory"
        assert s["params"] == m["params"], "GARCH parameters differ"
        out.append(row(f"vol: {n:,} trades -> 1 min bars + GARCH, streamed", streamed["seconds"],
                       baseline="in memory (view.to_dataset + same fit)", baseline_s=memory["seconds"],
                       note=f"{s['bars']:,} bars, identical bars and parameters (asserted); "
                            f"{n / streamed['seconds']:,.0f} trades/s; peak RSS {streamed['peak_mb']:.0f} MB "
                            f"streamed vs {memory['peak_mb']:.0f} MB in memory; written in "
                            f"{gen['seconds']:.0f} s; load {load_average()}"))
        cluster = child(_IMPORTS, _CLUSTER.format(root=str(root)))
        assert cluster["out"]["digest"] == s["digest"], "LocalCluster bars differ"
        out.append(row(f"vol: {n:,} trades -> bars on a 2-worker LocalCluster", cluster["seconds"],
                       baseline="in process", baseline_s=streamed["seconds"],
                       note=f"identical bars (asserted), cluster start included; client peak RSS "
                            f"{cluster['peak_mb']:.0f} MB"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
