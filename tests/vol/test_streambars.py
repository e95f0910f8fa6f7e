"""Volatility on bars aggregated out of core (execal.models.data.streambars): the streamed bars
equal the in-memory `bar_series` of the same rows array for array (ties, unsorted files, empty
intervals, several batches, tasks and files per partition), in this process, on threads and on a
two-process Dask LocalCluster; a GARCH fit on them equals the in-memory fit and recovers the
simulated volatility; bad values are refused with file, column and rows; the CLI streams a
dataset directory with filters."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from execal.models.data.bars import bar_series
from execal.models.data.dataset import ingest, open_dataset
from execal.models.data.sample import random_walk_trades
from execal.models.data.schema import DataError
from execal.models.data.streambars import _batch_partial, dataset_bar_series, merge_partials
from execal.models.vol.base import VolatilityCalibrator

SIGMA_PER_MIN = 0.0008            # true one-minute log-return volatility of the simulated trades
SMALL = {"task_rows": 9_000, "batch_rows": 2_500}


def _trades(seed: int, day: str, n: int, symbol: str, start_price: float) -> pd.DataFrame:
    """A day of trades of a random walk with SIGMA_PER_MIN per minute: ties, a quiet hour, shuffled."""
    return random_walk_trades(day, n, symbol, start_price, seed=seed, sigma_per_min=SIGMA_PER_MIN)


@pytest.fixture(scope="module")
def trades_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trades")
    files = []
    for i, day in enumerate(("2024-03-01", "2024-03-02", "2024-03-03")):
        for j, (sym, p0) in enumerate((("BTCUSDT", 60_000.0), ("ETHUSDT", 3_000.0))):
            n = 12_000 if sym == "BTCUSDT" else 4_000
            path = tmp / f"trades_{day}_{sym}.csv"
            _trades(10 * i + j, day, n, sym, p0).to_csv(path, index=False)
            files.append(path)
    # a second file for one day and symbol: two files in one partition
    extra = _trades(99, "2024-03-02", 3_000, "BTCUSDT", 61_000.0)
    extra.to_csv(tmp / "late.csv", index=False)
    files.append(tmp / "late.csv")
    out = tmp / "ds"
    ingest(files, out, kind="trades", chunk_rows=5_000)
    return out


def _same(a, b):
    for name in ("t_ns", "open", "high", "low", "close", "contiguous"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.bar_ns == b.bar_ns and a.symbol == b.symbol


@pytest.mark.parametrize("bar", [None, "5min", "1h"])
def test_streamed_bars_equal_the_in_memory_bars(trades_dir, bar):
    view = open_dataset(trades_dir).all()
    streamed = dataset_bar_series(view, symbol="BTCUSDT", bar=bar, **SMALL)
    memory = bar_series(view.to_dataset(), symbol="BTCUSDT", bar=bar)
    _same(streamed, memory)
    assert streamed.report.rows_read == open_dataset(trades_dir).select(symbols=["BTCUSDT"]).rows_upper > 38_900
    assert any("out of core" in w for w in streamed.report.warnings)
    assert any("had no trade" in w for w in streamed.report.warnings)    # the quiet hour


def test_ties_keep_dataset_order_across_batches():
    """Trades at one timestamp split over two batches: the first in dataset order opens the bar,
    the last closes it — as a stable sort of all rows would."""
    t = np.array([5, 5, 5, 5], dtype=np.int64)
    p = np.array([1.0, 2.0, 3.0, 4.0])
    merged = merge_partials([_batch_partial(t[:2], p[:2], 10), _batch_partial(t[2:], p[2:], 10)])
    assert merged["first_p"].tolist() == [1.0] and merged["last_p"].tolist() == [4.0]
    # and out of order: the later batch holds the earlier trade
    merged = merge_partials([_batch_partial(np.array([7, 8]), np.array([1.0, 2.0]), 10),
                             _batch_partial(np.array([3, 9]), np.array([5.0, 6.0]), 10)])
    assert merged["first_p"].tolist() == [5.0] and merged["last_p"].tolist() == [6.0]
    assert merged["high"].tolist() == [6.0] and merged["low"].tolist() == [1.0]
    assert merged["count"].tolist() == [4]


def test_filters_and_threads_give_the_same_bars(trades_dir):
    ds = open_dataset(trades_dir)
    view = ds.select(start="2024-03-02T06:00", end="2024-03-03T12:00", symbols=["ETHUSDT"])
    one = dataset_bar_series(view, bar="5min", **SMALL)
    two = dataset_bar_series(view, bar="5min", threads=2, **SMALL)
    memory = bar_series(view.to_dataset(), bar="5min")
    _same(one, memory)
    _same(two, memory)
    assert one.symbol == "ETHUSDT"
    assert pd.Timestamp(one.t_ns[0], tz="UTC") >= pd.Timestamp("2024-03-02T06:00", tz="UTC")


def test_several_symbols_need_a_choice(trades_dir):
    with pytest.raises(DataError, match="several symbols.*BTCUSDT, ETHUSDT"):
        dataset_bar_series(open_dataset(trades_dir).all())
    # a symbol outside the view's own symbol filter is refused, not read around the filter
    with pytest.raises(DataError, match="not among the view's symbols"):
        dataset_bar_series(open_dataset(trades_dir).select(symbols=["ETHUSDT"]), symbol="BTCUSDT")


def test_garch_on_streamed_bars_equals_the_in_memory_fit_and_recovers_sigma(trades_dir):
    view = open_dataset(trades_dir).all()
    cal = VolatilityCalibrator("garch", symbol="BTCUSDT", bar="1min", gaps="skip")
    streamed = cal.fit(dataset_bar_series(view, symbol="BTCUSDT", bar="1min", **SMALL))
    memory = cal.fit(view.to_dataset())
    assert streamed.params == memory.params
    assert streamed.converged
    # the one-minute returns of the streamed bars have the simulated volatility (within 10 %; one
    # day: the other days restart the walk, and a second file interleaves its own walk on day 2)
    day = open_dataset(trades_dir).select(days=["2024-03-01"])
    r = np.diff(np.log(dataset_bar_series(day, symbol="BTCUSDT", **SMALL).close))
    r = r[r != 0]
    assert abs(np.std(r) / SIGMA_PER_MIN - 1) < 0.1


def test_a_two_process_dask_cluster_gives_the_same_bars(trades_dir):
    from dask.distributed import LocalCluster

    from execal.models.data.compute import close_clients

    view = open_dataset(trades_dir).all()
    here = dataset_bar_series(view, symbol="BTCUSDT", bar="5min", **SMALL)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        try:
            there = dataset_bar_series(view, symbol="BTCUSDT", bar="5min",
                                       scheduler=cluster.scheduler_address, **SMALL)
        finally:
            close_clients()
    _same(here, there)
    assert any("dask tcp://" in w for w in there.report.warnings)


def test_a_bad_price_is_refused_with_file_column_and_row(tmp_path):
    """A dataset written by another tool (here: the writer, without the reader's validation) with
    a negative price in its second day: refused, naming the partition file, the column and the row."""
    from execal.models.data.dataset import DatasetWriter

    frame = pd.concat([_trades(1, "2024-03-01", 500, "BTCUSDT", 60_000.0),
                       _trades(2, "2024-03-02", 500, "BTCUSDT", 60_000.0)], ignore_index=True)
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    frame.loc[517, "price"] = -1.0               # the 18th row of day 2
    writer = DatasetWriter(tmp_path / "ds", "trades", {"file": "other-tool.parquet", "sha256": "x" * 64})
    writer.write_frame(frame)
    writer.commit()
    with pytest.raises(DataError) as err:
        dataset_bar_series(open_dataset(tmp_path / "ds").all(), **SMALL)
    text = str(err.value)
    assert "day=2024-03-02" in text and "column 'price'" in text and "negative" in text
    assert err.value.rows == [18]


def test_a_fills_dataset_is_refused(tmp_path):
    from execal.models.data.sample import _to_file_fills, generate_fills

    fills = _to_file_fills(generate_fills(n=400, seed=3)[0])
    ingest([_write(fills, tmp_path / "f.csv")], tmp_path / "ds", kind="fills")
    with pytest.raises(DataError, match="trades or bars; this one holds fills"):
        dataset_bar_series(open_dataset(tmp_path / "ds").all())


def _write(frame: pd.DataFrame, path):
    frame.to_csv(path, index=False)
    return path


def test_cli_vol_streams_a_dataset_directory(trades_dir, tmp_path):
    """`execal vol DIR` with filters: the realised-volatility table of the streamed bars equals the
    in-memory one of the same rows (a closed form: equal to rounding), and the warnings reach the
    JSON and stderr."""
    out = tmp_path / "realized.json"
    proc = subprocess.run([sys.executable, "-m", "execal.cli", "vol", str(trades_dir), "--model", "realized",
                           "--symbol", "BTCUSDT", "--bar", "5min", "--start", "2024-03-01", "--end", "2024-03-03",
                           "--out", str(out), "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    view = open_dataset(trades_dir).select(start="2024-03-01", end="2024-03-03")
    memory = VolatilityCalibrator("realized", symbol="BTCUSDT", bar="5min").fit(view.to_dataset())
    assert got["params"] == pytest.approx(memory.params, rel=1e-12) and got["params"]
    assert any("out of core" in w for w in got["warnings"])
    assert "out of core" in proc.stderr and "had no trade" in proc.stderr


def test_cli_vol_refuses_dataset_filters_on_a_file(tmp_path):
    path = _write(_trades(5, "2024-03-01", 300, "BTCUSDT", 60_000.0), tmp_path / "t.csv")
    proc = subprocess.run([sys.executable, "-m", "execal.cli", "vol", str(path), "--model", "realized",
                           "--start", "2024-03-01"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "dataset directory" in proc.stderr and "Traceback" not in proc.stderr


def test_a_bars_dataset_of_real_minute_bars_equals_the_file(shared_data, tmp_path):
    """FTX BTC-PERP one-minute bars of January 2022 ingested as a dataset: the streamed bars at
    1 h, and the GJR fit on them, equal what the file gives in memory."""
    from execal.models.data.io import load

    path = shared_data / "bars" / "ftx_btc-perp_1m_2022-01.csv"
    ingest([path], tmp_path / "ds", kind="bars", chunk_rows=7_000)
    view = open_dataset(tmp_path / "ds").all()
    streamed = dataset_bar_series(view, bar="1h", gaps="skip", **SMALL)
    memory = bar_series(load(path, kind="bars"), bar="1h", gaps="skip")
    _same(streamed, memory)
    assert streamed.n > 700
    cal = VolatilityCalibrator("gjr", bar="1h", gaps="skip")
    assert cal.fit(streamed).params == cal.fit(load(path, kind="bars")).params
