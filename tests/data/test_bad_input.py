"""Bad files, built in tmp_path: each is refused with a clear DataError or loses only its bad rows.

Policy (models/io.py): structural problems raise DataError naming the file (and column / first
rows when known); row-level problems drop rows and record them with 1-based data row numbers in
the user's file order; more than half the rows dropped is a DataError.
"""
from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import execal.models.data.io as mio
from execal.models.data.io import load
from execal.models.data.schema import DataError

pytestmark = pytest.mark.timeout(120)

HEADER = "timestamp,symbol,side,quantity,arrival_price,exec_price\n"


def fills_rows(n: int, start_s: int = 0) -> list[str]:
    return [f"2024-03-01T00:{(start_s + i) // 60 % 60:02d}:{(start_s + i) % 60:02d}Z,BTCUSDT,"
            f"{'buy' if i % 2 else 'sell'},{i + 1},100,{100 + (i % 7) / 100}\n" for i in range(n)]


def write(tmp_path: Path, lines: list[str], name: str = "bad.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    path.write_text(header + "".join(lines))
    return path


def drop_for(ds, column):
    found = [d for d in ds.report.dropped if d.column == column]
    assert len(found) == 1, ds.report.dropped
    return found[0]


# --- structural: DataError -----------------------------------------------------------------------


def test_missing_required_column_lists_missing_and_found(tmp_path):
    lines = [",".join(r.split(",")[:4] + r.split(",")[5:]) for r in fills_rows(5)]
    path = write(tmp_path, lines, header="timestamp,symbol,side,quantity,exec_price\n")
    with pytest.raises(DataError) as err:
        load(path)
    msg = str(err.value)
    assert msg.startswith("bad.csv:")
    assert "missing: arrival_price" in msg
    assert "Found columns: timestamp, symbol, side, quantity, exec_price" in msg
    with pytest.raises(DataError, match="'fills' missing: arrival_price. Found columns: timestamp"):
        load(path, kind="fills")


def test_all_timestamps_unparseable(tmp_path):
    lines = [r.replace("2024-03-01T", "yesterday ").replace("Z,", ",") for r in fills_rows(5)]
    with pytest.raises(DataError) as err:
        load(write(tmp_path, lines))
    msg = str(err.value)
    assert "bad.csv: column 'timestamp':" in msg and "'yesterday 00:00:00'" in msg
    assert "(rows 1, 2, 3, 4, 5)" in msg


def test_non_iso_dates_refused_not_guessed(tmp_path):
    lines = [f"03/0{i + 1}/2024 10:00,BTCUSDT,buy,1,100,100.1\n" for i in range(4)]
    with pytest.raises(DataError, match="ISO-8601"):
        load(write(tmp_path, lines))


def test_empty_file_zero_bytes(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"^empty.csv: the file is empty \(0 bytes\)$"):
        load(path)
    with pytest.raises(DataError, match="empty"):
        load(b"", name="upload.csv")
    with pytest.raises(DataError, match="empty"):
        load(gzip.compress(b""), name="upload.csv.gz")


def test_header_only(tmp_path):
    with pytest.raises(DataError, match="^bad.csv: has a header but no data rows$"):
        load(write(tmp_path, []))
    with pytest.raises(DataError, match="no data rows"):
        load(gzip.compress(HEADER.encode()), name="h.csv.gz")


@pytest.mark.parametrize("blob, what", [
    (bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)), "binary data"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "PNG image"),
    (b"PK\x03\x04" + b"\x00" * 100, "zip archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, "Excel"),
    (pickle.dumps({"a": 1}, protocol=5), "pickle"),
])
def test_binary_garbage(tmp_path, blob, what):
    path = tmp_path / "data.csv"
    path.write_bytes(blob)
    with pytest.raises(DataError, match=f"^data.csv: is not a CSV or Parquet file: .*{what}"):
        load(path)


def test_corrupt_and_truncated_gzip(tmp_path):
    blob = gzip.compress(("".join([HEADER] + fills_rows(2000))).encode())
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        load(blob[: len(blob) // 2], name="cut.csv.gz")
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        load(blob[:10] + b"\xff" * 50 + blob[60:], name="broken.csv.gz")


def test_not_utf8(tmp_path):
    text = HEADER + "2024-03-01T00:00:00Z,BTC€,buy,1,100,100.1\n"
    path = tmp_path / "latin.csv"
    path.write_bytes(text.replace("€", "é").encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load(path)


def test_too_big_refused_before_parsing(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(os.urandom(3 * 1024 * 1024))       # garbage: the size must be the complaint
    with pytest.raises(DataError, match=r"^big.csv: file is 3 MB, over the limit of 2 MB$"):
        load(path, max_bytes=2 * 1024 * 1024)
    with pytest.raises(DataError, match=r"file is 3 MB, over the limit of 1 MB"):
        load(path.read_bytes(), name="big.csv", max_bytes=1024 * 1024)


def test_gzip_bomb_capped(tmp_path):
    blob = gzip.compress(HEADER.encode() + b"0" * (6 * 1024 * 1024))
    assert len(blob) < 1024 * 1024
    with pytest.raises(DataError, match="decompresses to more than 5 MB"):
        load(blob, name="bomb.csv.gz", max_bytes=1024 * 1024)


def test_unknown_side_values(tmp_path):
    lines = fills_rows(6)
    for i in (2, 4):
        parts = lines[i].split(",")
        parts[2] = "hold"
        lines[i] = ",".join(parts)
    with pytest.raises(DataError) as err:
        load(write(tmp_path, lines))
    assert str(err.value).startswith("bad.csv: column 'side': unknown side value(s) 'hold'")
    assert err.value.rows == [3, 5]


def test_parquet_quantity_as_text(tmp_path):
    frame = pd.DataFrame({"timestamp": pd.date_range("2024-03-01", periods=4, freq="s", tz="UTC"),
                          "symbol": "BTC", "side": "buy",
                          "quantity": ["lots", "some", "1.5", "many"],
                          "arrival_price": 100.0, "exec_price": 100.1})
    frame.to_parquet(tmp_path / "q.parquet")
    with pytest.raises(DataError) as err:
        load(tmp_path / "q.parquet")
    msg = str(err.value)
    assert "3 of 4 rows would be dropped" in msg and "3 not a number in 'quantity'" in msg
    assert err.value.column == "quantity" and err.value.rows == [1, 2, 4]


def test_parquet_timestamp_as_bool(tmp_path):
    table = pa.table({"timestamp": [True, False], "symbol": ["X", "X"],
                      "price": [1.0, 2.0], "quantity": [1.0, 1.0]})
    pq.write_table(table, tmp_path / "b.parquet")
    with pytest.raises(DataError, match="^b.parquet: column 'timestamp': holds true/false"):
        load(tmp_path / "b.parquet")


def test_parquet_numeric_as_bool(tmp_path):
    table = pa.table({"timestamp": [1_709_251_200, 1_709_251_201], "symbol": ["X", "X"],
                      "price": [True, False], "quantity": [1.0, 1.0]})
    pq.write_table(table, tmp_path / "b.parquet")
    with pytest.raises(DataError, match="column 'price': holds true/false values where numbers"):
        load(tmp_path / "b.parquet")


def test_corrupt_parquet(tmp_path):
    frame = pd.DataFrame({"timestamp": [1_709_251_200], "symbol": ["X"], "price": [1.0],
                          "quantity": [1.0]})
    frame.to_parquet(tmp_path / "ok.parquet")
    blob = (tmp_path / "ok.parquet").read_bytes()
    with pytest.raises(DataError, match="unreadable Parquet"):
        load(blob[:40] + b"\x00" * 40 + blob[80:], name="x.parquet")


def test_more_than_half_dropped(tmp_path):
    lines = fills_rows(10)
    for i in (0, 2, 4, 6, 8, 9):
        lines[i] = lines[i].replace(",100,", ",-100,", 1)   # arrival_price <= 0
    with pytest.raises(DataError) as err:
        load(write(tmp_path, lines))
    msg = str(err.value)
    assert "6 of 10 rows would be dropped" in msg and "6 not positive in 'arrival_price'" in msg
    assert err.value.column == "arrival_price" and err.value.rows == [1, 3, 5, 7, 9]   # first 5


def test_mapping_to_unknown_name(tmp_path):
    path = write(tmp_path, fills_rows(3))
    with pytest.raises(DataError, match="'arrival' is not a canonical column name"):
        load(path, mapping={"arrival_price": "arrival"})


def test_unknown_columns_only(tmp_path):
    path = write(tmp_path, ["1,2,3\n"], header="a,b,c\n")
    with pytest.raises(DataError, match="^bad.csv: cannot tell what kind.*Found columns: a, b, c"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="^nope.csv: cannot open"):
        load(tmp_path / "nope.csv")


# --- row level: dropped and reported ---------------------------------------------------------------


def test_some_unparseable_timestamps_dropped(tmp_path):
    lines = fills_rows(10)
    lines[2] = "not a time" + lines[2][20:]
    lines[6] = "2024-13-45T00:00:00Z" + lines[6][20:]
    ds = load(write(tmp_path, lines))
    rec = drop_for(ds, "timestamp")
    assert (rec.count, rec.first_rows) == (2, [3, 7])
    assert len(ds.frame) == 8 and ds.report.rows_read == 10 and ds.report.rows_kept == 8
    assert any("dropped 2 rows" in w and "'timestamp'" in w for w in ds.summary()["warnings"])


def test_bad_cells_beyond_the_type_inference_block(tmp_path, monkeypatch):
    """pyarrow infers types from the first block; bad cells later must still be row-level."""
    monkeypatch.setattr(mio, "_CSV_BLOCK_BYTES", 4096)
    lines = fills_rows(600)
    lines[400] = "garbage-time" + lines[400][20:]
    parts = lines[500].split(",")
    parts[3] = "n/a"
    lines[500] = ",".join(parts)
    ds = load(write(tmp_path, lines))
    assert drop_for(ds, "timestamp").first_rows == [401]
    assert drop_for(ds, "quantity").first_rows == [501]
    assert len(ds.frame) == 598


def test_non_positive_price_and_quantity(tmp_path):
    lines = fills_rows(8)
    lines[1] = lines[1].replace(",2,100,", ",0,100,")           # quantity 0
    lines[5] = lines[5].replace(",6,100,", ",-6,100,")          # quantity < 0
    parts = lines[3].rstrip("\n").split(",")
    parts[5] = "-100.5"                                            # exec_price < 0
    lines[3] = ",".join(parts) + "\n"
    ds = load(write(tmp_path, lines))
    q, px = drop_for(ds, "quantity"), drop_for(ds, "exec_price")
    assert (q.count, q.first_rows, q.reason) == (2, [2, 6], "not positive")
    assert (px.count, px.first_rows) == (1, [4])
    assert (ds.frame["quantity"] > 0).all() and len(ds.frame) == 5


@pytest.mark.parametrize("bad", ["NaN", "inf", "-inf", ""])
def test_nan_inf_in_required_numeric(tmp_path, bad):
    lines = fills_rows(6)
    parts = lines[4].rstrip("\n").split(",")
    parts[4] = bad
    lines[4] = ",".join(parts) + "\n"
    ds = load(write(tmp_path, lines))
    rec = drop_for(ds, "arrival_price")
    assert (rec.count, rec.first_rows) == (1, [5])
    assert np.isfinite(ds.frame["arrival_price"]).all() and len(ds.frame) == 5


def test_duplicate_rows(tmp_path):
    lines = fills_rows(6)
    lines.insert(3, lines[1])       # exact copy of data row 2, becomes data row 4
    lines.append(lines[0])          # copy of row 1 at row 8
    ds = load(write(tmp_path, lines))
    rec = drop_for(ds, None)
    assert (rec.count, rec.first_rows) == (2, [4, 8]) and "duplicate" in rec.reason
    assert len(ds.frame) == 6


def test_same_time_different_values_are_not_duplicates(tmp_path):
    rows = ["2024-03-01T00:00:00Z,BTCUSDT,buy,1,100,100.1\n",
            "2024-03-01T00:00:00Z,BTCUSDT,buy,1,100,100.2\n",
            "2024-03-01T00:00:00Z,ETHUSDT,buy,1,100,100.1\n"]
    ds = load(write(tmp_path, rows))
    assert len(ds.frame) == 3 and ds.report.dropped == []


def test_unsorted_time_sorted_with_warning(tmp_path):
    lines = fills_rows(6)
    lines[1], lines[4] = lines[4], lines[1]
    lines[2] = lines[2].replace(",3,100,", ",-3,100,")         # a bad row too: numbering in file order
    ds = load(write(tmp_path, lines))
    assert ds.frame["timestamp"].is_monotonic_increasing
    assert ds.frame["quantity"].tolist() == [1, 2, 4, 5, 6]
    # file order of times (row 3 dropped): t0 t4 . t3 t1 t5 -> rows 4 and 5 step back in time
    warning = next(w for w in ds.report.warnings if "earlier than the row before" in w)
    assert warning.startswith("2 row(s)") and "rows 4, 5)" in warning
    assert drop_for(ds, "quantity").first_rows == [3]


def test_stable_sort_keeps_file_order_of_ties(tmp_path):
    rows = ["2024-03-01T00:00:01Z,X,buy,1,100,100.1\n",
            "2024-03-01T00:00:00Z,X,buy,2,100,100.1\n",
            "2024-03-01T00:00:00Z,X,buy,3,100,100.1\n"]
    assert load(write(tmp_path, rows)).frame["quantity"].tolist() == [2, 3, 1]


def test_semicolon_delimited_read_with_warning(tmp_path):
    lines = [r.replace(",", ";") for r in fills_rows(5)]
    ds = load(write(tmp_path, lines, header=HEADER.replace(",", ";")))
    assert len(ds.frame) == 5 and ds.kind == "fills"
    assert any("looks ';'-delimited" in w for w in ds.report.warnings)


def test_rows_with_wrong_number_of_fields(tmp_path):
    lines = fills_rows(10)
    lines[3] = "2024-03-01T00:00:03Z,BTCUSDT,buy\n"
    lines[7] = lines[7].rstrip("\n") + ",extra\n"
    ds = load(write(tmp_path, lines))
    rec = next(d for d in ds.report.dropped if "number of fields" in d.reason)
    assert (rec.count, rec.first_rows) == (2, [4, 8])
    assert ds.report.rows_read == 10 and len(ds.frame) == 8
    # later drops keep counting rows of the file, skipping none
    lines[8] = lines[8].replace(",9,100,", ",0,100,")
    ds = load(write(tmp_path, lines))
    assert drop_for(ds, "quantity").first_rows == [9]


def test_optional_column_junk_becomes_missing(tmp_path):
    lines = [r.rstrip("\n") + f",{v}\n" for r, v in zip(fills_rows(3), ["binance", "", "okx"])]
    lines = [r.rstrip("\n") + f",{v}\n" for r, v in zip(lines, ["12.5", "soon", "3"])]
    ds = load(write(tmp_path, lines, header=HEADER.rstrip("\n") + ",venue,duration_s\n"))
    assert len(ds.frame) == 3
    assert np.isnan(ds.frame["duration_s"].iloc[1])
    assert any("duration_s" in w and "not numbers" in w and "rows 2" in w for w in ds.report.warnings)


def test_messages_never_tracebacks(tmp_path):
    """Every bad file above yields a one-line message that names the file."""
    for blob in (b"", b"a;b\n", b"\x00\x01\x02", HEADER.encode()):
        with pytest.raises(DataError) as err:
            load(blob, name="u.csv")
        assert str(err.value).startswith("u.csv") and "\n" not in str(err.value)


def test_compact_dates_are_not_epoch_seconds(tmp_path):
    rows = [f"2024030{i + 1},BTCUSDT,buy,1,100,100.1\n" for i in range(3)]
    with pytest.raises(DataError, match="20240301.*do not look like seconds.*1970-08-23"):
        load(write(tmp_path, rows))


def test_bom_semicolon_decimal_comma_single_row():
    blob = "\ufefftimestamp;symbol;price;quantity\n2024-01-01T00:00:00Z;X;1,5;2\n".encode()
    ds = load(blob, name="bom.csv")
    assert ds.frame[["price", "quantity"]].iloc[0].tolist() == [1.5, 2.0]
    assert any("';'-delimited" in w for w in ds.report.warnings)
