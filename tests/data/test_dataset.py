"""Partitioned datasets (execal.models.data.dataset): ingest through load()'s validation in
chunks, the manifest, idempotent append, filters pushed down to pyarrow (a one-day filter reads
only that day's files, counted through a filesystem that counts bytes), and the bounded-memory
sample generator."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from execal.models.data.dataset import (MANIFEST, ReadCounter, ingest, is_dataset, open_dataset,
                                        read_task)
from execal.models.data.io import load
from execal.models.data.sample import _to_file_fills, generate_fills, generate_fills_dataset
from execal.models.data.schema import DataError

KEY = ["timestamp", "order_id"]


def fills_csv(tmp_path, name="fills.csv", n=6_000, seed=3, days=6, start="2024-09-01"):
    frame, _ = generate_fills(n, seed=seed, days=days, start=start)
    path = tmp_path / name
    _to_file_fills(frame).to_csv(path, index=False)
    return path


def canonical(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY).reset_index(drop=True)


@pytest.fixture(scope="module")
def two_files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("src")
    a = fills_csv(tmp, "a.csv", start="2024-09-01")
    b = fills_csv(tmp, "b.csv", seed=4, start="2024-09-07")
    return a, b


def test_ingest_keeps_every_row_load_keeps_and_partitions_by_day_symbol_venue(tmp_path, two_files):
    a, _ = two_files
    out = tmp_path / "ds"
    rep = ingest([a], out, chunk_rows=1_500)       # several chunks per file
    assert rep.sources[0]["status"] == "ingested"
    ds = open_dataset(out)
    frame = ds.all().to_frame()
    ref = load(a).frame
    assert len(frame) == len(ref)
    pd.testing.assert_frame_equal(canonical(frame)[ref.columns], canonical(ref), check_dtype=False)
    # the manifest knows per partition what a groupby of the rows says
    day = ref["timestamp"].dt.strftime("%Y-%m-%d")
    counts = ref.groupby([day, ref["symbol"], ref["venue"]]).size()
    manifest = json.loads((out / MANIFEST).read_text())
    got = {(p["day"], p["symbol"], p["venue"]): p["rows"] for p in manifest["partitions"].values()}
    assert got == {k: int(v) for k, v in counts.items()}
    for p in manifest["partitions"].values():
        rows = ref[(day == p["day"]) & (ref["symbol"] == p["symbol"]) & (ref["venue"] == p["venue"])]
        s = p["stats"]["cost_bps"]
        assert s["count"] == len(rows)
        assert s["min"] == rows["cost_bps"].min() and s["max"] == rows["cost_bps"].max()
        assert s["sum"] == pytest.approx(rows["cost_bps"].sum(), rel=1e-12)
        assert all(f.startswith(f"day={p['day']}/symbol={p['symbol']}/venue={p['venue']}/") for f in p["files"])
    src = manifest["sources"][0]
    assert src["sha256"] == load(a).sha256 and src["rows"] == len(ref)
    assert src["start"] == ref["timestamp"].min().isoformat()


def test_chunking_does_not_change_the_content(tmp_path, two_files):
    a, _ = two_files
    ingest([a], tmp_path / "one", chunk_rows=10**7)
    ingest([a], tmp_path / "many", chunk_rows=700)
    one = canonical(open_dataset(tmp_path / "one").all().to_frame())
    many = canonical(open_dataset(tmp_path / "many").all().to_frame())
    pd.testing.assert_frame_equal(one, many)


def test_append_adds_partitions_and_reingest_is_a_no_op(tmp_path, two_files):
    a, b = two_files
    out = tmp_path / "ds"
    ingest([a], out)
    m1 = json.loads((out / MANIFEST).read_text())
    rep = ingest([a, b], out)
    assert [s["status"] for s in rep.sources] == ["skipped", "ingested"]
    m2 = json.loads((out / MANIFEST).read_text())
    assert len(m2["sources"]) == 2
    assert set(m1["partitions"]) < set(m2["partitions"])
    assert m2["rows"] == len(load(a).frame) + len(load(b).frame)
    days = {p["day"] for p in m2["partitions"].values()}
    assert min(days) == "2024-09-01" and max(days) == "2024-09-12"
    again = ingest([b], out)
    assert again.sources[0]["status"] == "skipped"
    assert json.loads((out / MANIFEST).read_text())["rows"] == m2["rows"]


def test_failed_ingest_leaves_the_dataset_unchanged(tmp_path, two_files):
    a, _ = two_files
    out = tmp_path / "ds"
    ingest([a], out)
    before = sorted(p.relative_to(out) for p in out.rglob("*.parquet"))
    bars = tmp_path / "bars.csv"
    bars.write_text("timestamp,open,high,low,close,volume\n2024-09-01T00:00:00Z,1,2,0.5,1.5,10\n")
    with pytest.raises(DataError, match="required column"):
        ingest([bars], out)
    # a file that goes wrong after two chunks were written
    bad = fills_csv(tmp_path, "bad.csv", seed=9, start="2024-10-01")
    lines = bad.read_text().splitlines()
    lines[2500] = lines[2500].replace(",buy,", ",maybe,").replace(",sell,", ",maybe,")
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="unknown side"):
        ingest([bad], out, chunk_rows=1_000)
    assert sorted(p.relative_to(out) for p in out.rglob("*.parquet")) == before
    assert json.loads((out / MANIFEST).read_text())["rows"] == len(load(a).frame)


def test_bad_rows_are_reported_with_file_row_numbers_like_load(tmp_path):
    path = fills_csv(tmp_path, n=3_000)
    lines = path.read_text().splitlines()
    lines[2500] = lines[2500].replace(",buy,", ",maybe,") if ",buy," in lines[2500] else lines[2500].replace(",sell,", ",maybe,")
    lines[2800] = lines[2800] + ",extra"
    # a number column that turns to text late in the file: the first block typed it as numbers
    cols = lines[0].split(",")
    q = cols.index("quantity")
    cells = lines[2900].split(",")
    cells[q] = "n/a"
    lines[2900] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="unknown side"):
        load(path)
    lines[2500] = lines[2501]          # a duplicate row instead
    path.write_text("\n".join(lines) + "\n")
    ref = load(path)
    rep = ingest([path], tmp_path / "ds", chunk_rows=1_000)
    got = {(d["reason"], d["column"]): (d["count"], d["first_rows"]) for d in rep.sources[0]["dropped"]}
    want = {(d.reason, d.column): (d.count, d.first_rows) for d in ref.report.dropped}
    # the duplicate pair sits inside one chunk, so the per-chunk duplicate check finds it too
    assert got == want and len(want) == 3
    assert rep.sources[0]["rows"] == len(ref.frame)
    got_frame = canonical(open_dataset(tmp_path / "ds").all().to_frame())
    pd.testing.assert_frame_equal(got_frame[ref.frame.columns], canonical(ref.frame), check_dtype=False)


def test_parquet_source_and_kind_detection(tmp_path):
    frame, _ = generate_fills(2_000, seed=5, days=3)
    path = tmp_path / "fills.parquet"
    pq.write_table(pa.Table.from_pandas(frame.drop(columns="cost_bps"), preserve_index=False), path)
    ingest([path], tmp_path / "ds", chunk_rows=500)
    ds = open_dataset(tmp_path / "ds")
    assert ds.kind == "fills" and is_dataset(tmp_path / "ds")
    got = canonical(ds.all().to_frame())
    pd.testing.assert_frame_equal(got[frame.columns], canonical(frame), check_dtype=False)


def test_filters_equal_pandas_filtering(tmp_path, two_files):
    a, b = two_files
    ingest([a, b], tmp_path / "ds", chunk_rows=2_000)
    ds = open_dataset(tmp_path / "ds")
    full = ds.all().to_frame()
    view = ds.select(start="2024-09-03T06:00", end="2024-09-09", symbols=["BTCUSDT", "SOLUSDT"],
                     venues="okx", min_quantity=0.5, max_quantity=5e4)
    got = canonical(view.to_frame())
    ts = full["timestamp"]
    want = full[(ts >= pd.Timestamp("2024-09-03T06:00", tz="UTC")) & (ts < pd.Timestamp("2024-09-09", tz="UTC"))
                & full["symbol"].isin(["BTCUSDT", "SOLUSDT"]) & (full["venue"] == "okx")
                & (full["quantity"] >= 0.5) & (full["quantity"] <= 5e4)]
    assert len(want) > 100
    pd.testing.assert_frame_equal(got, canonical(want))
    assert view.values("venue") == ["okx"] and set(view.values("symbol")) <= {"BTCUSDT", "SOLUSDT"}
    assert min(view.values("day")) == "2024-09-03" and max(view.values("day")) == "2024-09-08"


def test_one_day_filter_reads_only_that_days_files(tmp_path, two_files):
    a, b = two_files
    ingest([a, b], tmp_path / "ds")
    fs = ReadCounter.filesystem()
    counter = fs.handler
    ds = open_dataset(tmp_path / "ds", filesystem=fs)
    cols = ["quantity", "cost_bps"]
    whole = ds.all().to_table(cols)
    bytes_all, files_all = counter.bytes_read, set(counter.files)
    counter.reset()
    day = ds.select(days=["2024-09-05"]).to_table(cols)
    assert day.num_rows == ds.select(days=["2024-09-05"]).rows_upper > 0
    assert counter.files and all("/day=2024-09-05/" in f for f in counter.files)
    assert len(counter.files) == len(ds.select(days=["2024-09-05"]).files) < len(files_all)
    n_days = len(ds.all().values("day"))
    assert counter.bytes_read < 2.0 * bytes_all / n_days
    assert whole.num_rows == ds.manifest["rows"]
    # a time window inside one day: the same files, rows filtered by pyarrow
    counter.reset()
    win = ds.select(start="2024-09-05T10:00", end="2024-09-05T11:00").to_frame()
    assert all("/day=2024-09-05/" in f for f in counter.files)
    assert len(win) and win["timestamp"].min() >= pd.Timestamp("2024-09-05T10:00", tz="UTC")
    assert win["timestamp"].max() < pd.Timestamp("2024-09-05T11:00", tz="UTC")


def test_tasks_are_picklable_and_read_the_same_rows(tmp_path, two_files):
    import pickle
    a, _ = two_files
    ingest([a], tmp_path / "ds")
    view = open_dataset(tmp_path / "ds").select(start="2024-09-02", min_quantity=0.1)
    tasks = view.tasks(target_rows=500)
    assert len(tasks) > 3
    again = [pickle.loads(pickle.dumps(t)) for t in tasks]
    cols = ["timestamp", "symbol", "cost_bps"]
    got = pa.Table.from_batches([b for t in again for b in read_task(t, cols)])
    assert got.equals(view.to_table(cols))


def test_summary_comes_from_the_manifest_without_reading_rows(tmp_path, two_files):
    a, b = two_files
    ingest([a, b], tmp_path / "ds")
    fs = ReadCounter.filesystem()
    ds = open_dataset(tmp_path / "ds", filesystem=fs)
    s = ds.summary()
    assert fs.handler.bytes_read == 0
    ref = pd.concat([load(a).frame, load(b).frame])
    assert s["rows"] == len(ref) and s["kind"] == "fills"
    assert s["symbols"] == sorted(ref["symbol"].unique()) and s["venues"] == sorted(ref["venue"].unique())
    assert s["start"] == ref["timestamp"].min().isoformat() and s["end"] == ref["timestamp"].max().isoformat()
    cov = ds.all().coverage()
    assert cov["rows"].sum() == len(ref)
    q = ds.all().column_stats("quantity")
    assert q["min"] == ref["quantity"].min() and q["count"] == len(ref)


def test_generator_writes_a_dataset_day_by_day(tmp_path):
    out = tmp_path / "gen"
    manifest = generate_fills_dataset(out, 20_000, days=5, seed=11, chunk_rows=3_000)
    assert manifest["rows"] == 20_000
    frame = open_dataset(out).all().to_frame()
    assert frame["order_id"].is_unique and len(frame) == 20_000
    per_day = frame["timestamp"].dt.strftime("%Y-%m-%d").value_counts().sort_index()
    assert list(per_day) == [4_000] * 5 and per_day.index[0] == "2024-09-01"
    truth = json.loads((out / "_ground_truth.json").read_text())
    assert truth["params"]["delta"] == 0.5 and truth["n"] == 20_000
    # deterministic
    generate_fills_dataset(tmp_path / "again", 20_000, days=5, seed=11, chunk_rows=3_000)
    pd.testing.assert_frame_equal(canonical(frame), canonical(open_dataset(tmp_path / "again").all().to_frame()))
    with pytest.raises(ValueError, match="already holds"):
        generate_fills_dataset(out, 20_000, days=5)
    # the fills of a day follow the same cost model as the in-memory generator's
    day = frame[frame["timestamp"] < pd.Timestamp("2024-09-02", tz="UTC")]
    assert (day["cost_bps"].abs() < 1e4).all() and np.isfinite(day["adv"]).all()


def test_load_points_a_dataset_directory_to_open_dataset(tmp_path, two_files):
    a, _ = two_files
    ingest([a], tmp_path / "ds")
    with pytest.raises(DataError, match="open_dataset"):
        load(tmp_path / "ds")
    ds = open_dataset(tmp_path / "ds").all().to_dataset(max_rows=10**6)
    assert ds.kind == "fills" and len(ds.frame) == len(load(a).frame)
    with pytest.raises(DataError, match="more than 10"):
        open_dataset(tmp_path / "ds").all().to_dataset(max_rows=10)


@pytest.mark.shared_data
def test_ingest_real_captures_and_tardis_files(shared_data, tmp_path):
    capture = shared_data / "binance-raw" / "usdm_btcusdt_20240808.gz"
    tardis = shared_data / "tardis" / "binance-futures_trades_BTCUSDT_2020-02-22.csv"
    rep = ingest([capture, tardis], tmp_path / "ds", kind="trades", chunk_rows=3_000)
    assert [s["status"] for s in rep.sources] == ["ingested", "ingested"]
    got = canonical_trades(open_dataset(tmp_path / "ds").all().to_frame())
    want = canonical_trades(pd.concat([load(capture, kind="trades").frame, load(tardis).frame]))
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)
    days = open_dataset(tmp_path / "ds").all().values("day")
    assert days == ["2020-02-22", "2024-08-08"]


def canonical_trades(frame):
    return frame.sort_values(["timestamp", "trade_id", "price"]).reset_index(drop=True)
