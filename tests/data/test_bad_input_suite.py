"""The bad-input suite (issue 11): over 70 files a user could hand execal, each run through the
command line as a user would (`execal inspect`, in process), plus a property-based fuzz of every
reader (hypothesis).

The contract for every input: exit 0 with a report whose rows add up (kept + dropped = read), or
exit 2 with one line on stderr naming the file (and the column and rows where known); never exit 1,
never a traceback. Peak memory of the worst inputs is measured in a fresh process against the
bound documented in the README (the interpreter with pandas/pyarrow loaded, plus 150 MB).
"""
from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execal import cli
from execal.models.data.io import load
from execal.models.data.schema import DataError

HEADER = "timestamp,symbol,venue,side,quantity,arrival_price,exec_price"


def _rows(n: int, *, start: int = 1_725_148_800) -> list[str]:
    return [f"{pd.Timestamp(start + 7 * i, unit='s', tz='UTC'):%Y-%m-%dT%H:%M:%SZ},BTCUSDT,binance,"
            f"{'buy' if i % 2 else 'sell'},{1 + i % 5},60000,{60000 + (i % 11) - 5}" for i in range(n)]


def _csv(rows, header=HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def _replace(rows, i, col, value):
    out = list(rows)
    cells = out[i].split(",")
    cells[HEADER.split(",").index(col)] = value
    out[i] = ",".join(cells)
    return out


def _parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def _cases() -> dict[str, bytes]:
    """name -> file bytes. Names carry the suffix a user's file would have."""
    good = _rows(300)
    big = _rows(3000)
    cases: dict[str, bytes] = {
        "empty.csv": b"",
        "header_only.csv": _csv([]),
        "blank_lines.csv": b"\n\n\n",
        "only_spaces.csv": b"   \n  \n",
        "json_records.json": json.dumps([{"a": 1}]).encode(),
        "json_object.csv": b'{"timestamp": 1}',
        "ndjson.csv": b'{"a":1}\n{"a":2}\n',
        "html.csv": b"<!DOCTYPE html><html><body>Not found</body></html>",
        "xml.csv": b"<?xml version='1.0'?><root/>",
        "pdf.csv": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj",
        "zip.csv": b"PK\x03\x04" + b"\x00" * 100,
        "png.csv": b"\x89PNG\r\n\x1a\n" + b"\x00" * 100,
        "pickle.csv": b"\x80\x04\x95" + b"\x00" * 50,
        "nul_bytes.csv": b"\x00" * 500,
        "random_binary.csv": np.random.default_rng(1).bytes(4000),
        "utf16.csv": _csv(good[:20]).decode().encode("utf-16"),
        "latin1_head.csv": _csv(good[:20]).replace(b"binance", "bin\xe4nce".encode("latin-1")),
        "latin1_after_64k.csv": _csv(big).replace(b"binance", "bin\xe4nce".encode("latin-1"))[::1],
        "binary_after_64k.csv": _csv(big)[:70_000] + b"\x00\x01\xfe\xff" * 10 + _csv(big)[70_000:],
        "bom.csv": b"\xef\xbb\xbf" + _csv(good),
        "crlf.csv": _csv(good).replace(b"\n", b"\r\n"),
        "semicolon.csv": _csv(good).replace(b",", b";"),
        "tab.csv": _csv(good).replace(b",", b"\t"),
        "pipe.csv": _csv(good).replace(b",", b"|"),
        "preamble.csv": b"https://example.com data export\n" + _csv(good),
        "unterminated_quote.csv": _csv(_replace(good, 10, "symbol", '"BTCUSDT')),
        "quoted_fields.csv": _csv([",".join(f'"{c}"' for c in r.split(",")) for r in good]),
        "quoted_newline_cell.csv": _csv(_replace(good, 5, "venue", '"bin\nance"')),
        "ragged_rows.csv": _csv(good[:100] + [good[100] + ",extra"] + good[101:]),
        "mostly_ragged.csv": _csv([r + ",x" for r in good[:200]] + good[200:]),
        "short_rows.csv": _csv(good[:50] + ["2024-09-01T00:00:00Z,BTCUSDT"] + good[50:]),
        "missing_required.csv": _csv([",".join(r.split(",")[:-1]) for r in good], header=",".join(HEADER.split(",")[:-1])),
        "unknown_columns.csv": _csv(["1,2,3"] * 10, header="a,b,c"),
        "duplicate_header.csv": _csv([r + ",1" for r in good], header=HEADER + ",quantity"),
        "long_column_name.csv": _csv([r + ",1" for r in good], header=HEADER + ",x" + "y" * 1_000_000),
        "long_cell.csv": _csv(_replace(good, 3, "symbol", "S" * 2_000_000)),
        "nan_prices.csv": _csv(_replace(good, 4, "exec_price", "NaN")),
        "inf_prices.csv": _csv(_replace(good, 4, "exec_price", "inf")),
        "negative_price.csv": _csv(_replace(good, 4, "arrival_price", "-60000")),
        "zero_quantity.csv": _csv(_replace(good, 4, "quantity", "0")),
        "huge_exec_price.csv": _csv(_replace(good, 5, "exec_price", "1e300")),
        "tiny_exec_price.csv": _csv(_replace(good, 5, "exec_price", "1e-300")),
        "price_as_text.csv": _csv(_replace(good, 7, "exec_price", "sixty thousand")),
        "thousands_separators.csv": _csv(_replace(good, 7, "exec_price", '"60,001"')),
        "all_prices_text.csv": _csv([",".join(r.split(",")[:-1] + ["n/a"]) for r in good]),
        "bad_side.csv": _csv(_replace(good, 8, "side", "long")),
        "all_bad_sides.csv": _csv([r.replace(",buy,", ",up,").replace(",sell,", ",down,") for r in good]),
        "side_numbers.csv": _csv([r.replace(",buy,", ",1,").replace(",sell,", ",-1,") for r in good]),
        "empty_symbol.csv": _csv(_replace(good, 9, "symbol", "")),
        "duplicate_rows.csv": _csv(good + good[:10]),
        "unsorted.csv": _csv(good[::-1]),
        "timestamp_garbage.csv": _csv(_replace(good, 2, "timestamp", "yesterday")),
        "timestamps_all_garbage.csv": _csv([",".join(["soon"] + r.split(",")[1:]) for r in good]),
        "epoch_seconds.csv": _csv([",".join([str(1_725_148_800 + i)] + r.split(",")[1:]) for i, r in enumerate(good)]),
        "epoch_ms.csv": _csv([",".join([str((1_725_148_800 + i) * 1000)] + r.split(",")[1:]) for i, r in enumerate(good)]),
        "epoch_us.csv": _csv([",".join([str((1_725_148_800 + i) * 10**6)] + r.split(",")[1:]) for i, r in enumerate(good)]),
        "epoch_ns.csv": _csv([",".join([str((1_725_148_800 + i) * 10**9)] + r.split(",")[1:]) for i, r in enumerate(good)]),
        "epoch_s_and_ms.csv": _csv([",".join([str((1_725_148_800 + i) * (1000 if i % 2 else 1))] + r.split(",")[1:])
                                    for i, r in enumerate(good)]),
        "iso_and_ns.csv": _csv([",".join([str((1_725_148_800 + i) * 10**9)] + r.split(",")[1:]) if i % 2 else r
                                for i, r in enumerate(good)]),
        "yyyymmdd_numbers.csv": _csv([",".join(["20240901"] + r.split(",")[1:]) for r in good]),
        "future_dates.csv": _csv([r.replace("2024-", "2116-") for r in good]),
        "some_future_dates.csv": _csv([r.replace("2024-", "2116-") if i < 5 else r for i, r in enumerate(good)]),
        "timezone_offsets.csv": _csv([r.replace("Z,", "+02:00,") for r in good]),
        "bools_as_timestamp.csv": _csv([",".join(["true"] + r.split(",")[1:]) for r in good]),
        "gzip_ok.csv.gz": gzip.compress(_csv(good)),
        "gzip_truncated.csv.gz": gzip.compress(_csv(big))[:5000],
        "gzip_corrupt.csv.gz": b"\x1f\x8b\x08\x00" + b"\xff" * 300,
        "gzip_empty.csv.gz": gzip.compress(b""),
        "gzip_bomb.csv.gz": gzip.compress(_csv(good[:1]) + b"\n" * (200 * 1024**2), compresslevel=9),
        "gzip_of_json.csv.gz": gzip.compress(b'[{"a": 1}]'),
        "double_gzip.csv.gz": gzip.compress(gzip.compress(_csv(good))),
        "parquet_ok.parquet": _parquet(pd.read_csv(io.BytesIO(_csv(good)))),
        "parquet_truncated.parquet": _parquet(pd.read_csv(io.BytesIO(_csv(good))))[:300],
        "parquet_empty.parquet": _parquet(pd.read_csv(io.BytesIO(_csv(good))).iloc[:0]),
        "parquet_far_future.parquet": _parquet(pd.read_csv(io.BytesIO(_csv(good))).assign(
            timestamp=pd.Timestamp(2**62, unit="ns", tz="UTC"))),
        "parquet_int_timestamps.parquet": _parquet(pd.read_csv(io.BytesIO(_csv(good))).assign(
            timestamp=np.arange(300, dtype=np.int64) * 1000 + 1_725_148_800_000)),
        "parquet_wrong_types.parquet": _parquet(pd.DataFrame({"timestamp": ["x"] * 5, "symbol": [1] * 5,
                                                              "side": [None] * 5, "quantity": ["a"] * 5,
                                                              "arrival_price": [b"x"] * 5, "exec_price": [1.0] * 5})),
        "binance_capture_garbage.gz": gzip.compress(b"1723161255000000000 {not json\n"),
        "binance_capture_truncated.gz": gzip.compress(b'1723161255000000000 {"stream":"btcusdt@trade","data":{"e":"trade","T":1,"p":"1","q":"1","m":true,"t":1,"s":"BTCUSDT"}}\n'
                                                      b'1723161255000000001 {"stream":"btcusdt@tra'),
        "binance_capture_bad_qty.gz": gzip.compress(b'1723161255000000000 {"lastUpdateId": 1, "bids": [["1", "x"]], "asks": []}\n'),
        "tardis_trades_bad.csv": b"exchange,symbol,timestamp,local_timestamp,id,side,price,amount\n"
                                 b"binance,BTCUSDT,notatime,1,1,buy,1,1\n" * 3,
        "options_chain_garbage.csv": b"timestamp,symbol,expiry,strike,option_type,mark_price\n"
                                     b"2024-01-01T00:00:00Z,BTC-X,never,abc,maybe,1\n" * 5,
    }
    return cases


CASES = _cases()


def test_the_suite_has_at_least_70_files():
    assert len(CASES) >= 70


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_bad_file_is_refused_clearly_or_accounted_for(name, tmp_path, capsys):
    path = tmp_path / name
    path.write_bytes(CASES[name])
    code = cli.main(["inspect", str(path), "--report"])
    captured = capsys.readouterr()
    assert code in (0, 2), (name, code, captured.err[-2000:])
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert len(captured.err) < 2000, (name, len(captured.err))        # one short line, not a dump
    if code == 2:
        line = captured.err.strip()
        assert line.count("\n") == 0 and name[:20] in line, (name, line)
        return
    summary = json.loads(captured.out)
    report = summary["report"]
    dropped = sum(d["count"] for d in report["dropped"])
    assert report["rows_kept"] + dropped == report["rows_read"], (name, report)
    assert report["rows_kept"] == summary["rows"]
    assert len(captured.out) < 200_000, (name, len(captured.out))      # a 1 MB name is cut


@pytest.mark.parametrize("name, outcome", [
    ("unterminated_quote.csv", "never closes"), ("latin1_after_64k.csv", "not UTF-8"),
    ("binary_after_64k.csv", "binary data"), ("json_records.json", "is JSON"),
    ("gzip_bomb.csv.gz", "gzip bomb"), ("future_dates.csv", "in the future"),
    ("yyyymmdd_numbers.csv", "do not look like seconds"), ("parquet_far_future.parquet", "in the future"),
])
def test_the_named_refusals(name, outcome, tmp_path):
    path = tmp_path / name
    path.write_bytes(CASES[name])
    with pytest.raises(DataError, match=outcome):
        load(path)


def test_mixed_epoch_units_are_each_read_right(tmp_path):
    for name in ("epoch_s_and_ms.csv", "iso_and_ns.csv"):
        path = tmp_path / name
        path.write_bytes(CASES[name])
        ds = load(path)
        assert len(ds.frame) == 300, name
        expected = pd.Timestamp(1_725_148_800, unit="s", tz="UTC")
        assert ds.frame["timestamp"].min() == expected, name
        assert ds.frame["timestamp"].max() < expected + pd.Timedelta(hours=1), name


def test_an_absurd_price_is_a_reported_drop_and_calibrate_exits_cleanly(tmp_path, capsys):
    path = tmp_path / "huge_exec_price.csv"
    path.write_bytes(CASES["huge_exec_price.csv"])
    ds = load(path)
    assert any(d.column == "exec_price" and d.first_rows == [6] for d in ds.report.dropped)
    code = cli.main(["calibrate", str(path), "--model", "power_law", "--participation", "adv",
                     "--out", str(tmp_path / "cfg.json"), "--quiet"])
    err = capsys.readouterr().err
    assert code in (0, 2, 3) and "Traceback" not in err


# --- memory ------------------------------------------------------------------------------------------

_PEAK = """
import sys, json
def hwm():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM:')) / 1024
import pandas, pyarrow, pyarrow.csv, pyarrow.parquet
from execal.models.data.io import load
from execal.models.data.schema import DataError
base = hwm()
try:
    load(sys.argv[1])
    outcome = 'ok'
except DataError as e:
    outcome = 'refused'
print(json.dumps({'base_mb': base, 'peak_mb': hwm(), 'outcome': outcome}))
"""
PEAK_BOUND_MB = 150     # documented in the README: what a refused bad input may add to a process


@pytest.mark.parametrize("name", ["gzip_bomb.csv.gz", "long_cell.csv", "long_column_name.csv",
                                  "binary_after_64k.csv", "unterminated_quote.csv"])
def test_peak_memory_of_the_worst_inputs_is_bounded(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(CASES[name])
    out = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True,
                         check=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["peak_mb"] - got["base_mb"] < PEAK_BOUND_MB, got


# --- property-based fuzz of every reader -------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture])


def _never_crashes(data: bytes, name: str = "fuzz.csv", **kw):
    try:
        ds = load(data, name=name, **kw)
    except DataError as err:
        assert str(err).startswith(name) or name in str(err)
        return
    report = ds.report
    assert report.rows_kept == len(ds.frame)
    assert report.rows_kept + sum(d.count for d in report.dropped) == report.rows_read


@FUZZ
@given(st.binary(max_size=3000))
def test_fuzz_any_bytes(data):
    _never_crashes(data)


_cell = st.one_of(st.text(max_size=12), st.integers(-10**20, 10**20).map(str),
                  st.floats(allow_nan=True, allow_infinity=True).map(repr),
                  st.sampled_from(["", "buy", "sell", "B", "S", "1", "-1", "2024-09-01T00:00:00Z",
                                   "1725148800", "1725148800000", '"', '""', "NaN", "inf", ",", "\n"]))


@FUZZ
@given(st.lists(st.lists(_cell, min_size=7, max_size=7), min_size=1, max_size=40),
       st.sampled_from([",", ";", "\t"]))
def test_fuzz_fills_csv_cells(rows, delim):
    text = delim.join(HEADER.split(",")) + "\n" + "\n".join(delim.join(r) for r in rows) + "\n"
    _never_crashes(text.encode("utf-8", errors="surrogatepass"))


@FUZZ
@given(st.lists(st.lists(_cell, min_size=7, max_size=7), min_size=1, max_size=40))
def test_fuzz_gzip_csv(rows):
    text = HEADER + "\n" + "\n".join(",".join(r) for r in rows) + "\n"
    _never_crashes(gzip.compress(text.encode("utf-8", errors="surrogatepass")), name="fuzz.csv.gz")


@FUZZ
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(-2**62, 2**62)),
                          st.one_of(st.none(), st.text(max_size=5)),
                          st.one_of(st.none(), st.floats()), st.one_of(st.none(), st.floats()),
                          st.one_of(st.none(), st.floats())), min_size=1, max_size=30))
def test_fuzz_parquet(rows):
    frame = pd.DataFrame(rows, columns=["timestamp", "symbol", "price", "quantity", "side"])
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="ns", utc=True, errors="coerce")
    _never_crashes(_parquet(frame), name="fuzz.parquet")


_messages = st.one_of(
    st.builds(lambda p, q, m: {"stream": "btcusdt@trade", "data": {"e": "trade", "T": 1723161255000, "p": p,
                                                                   "q": q, "m": m, "t": 1, "s": "BTCUSDT"}},
              st.sampled_from(["60000.1", "x", "", "0", "-1"]), st.sampled_from(["0.5", "y", "0"]), st.booleans()),
    st.builds(lambda b, a: {"stream": "btcusdt@bookTicker", "data": {"u": 1, "T": 1723161255000, "b": b,
                                                                     "B": "1", "a": a, "A": "1", "s": "BTCUSDT"}},
              st.sampled_from(["60000", "z"]), st.sampled_from(["60001", ""])),
    st.builds(lambda u, bids: {"stream": "btcusdt@depth@0ms", "data": {"e": "depthUpdate", "E": 1723161255000,
                                                                      "T": 1723161255000, "s": "BTCUSDT", "U": u,
                                                                      "u": u + 1, "pu": u - 1, "b": bids, "a": []}},
              st.integers(0, 10), st.lists(st.tuples(st.sampled_from(["1", "2", "q"]), st.sampled_from(["0", "1", "w"])),
                                           max_size=3)),
    st.builds(lambda luid: {"lastUpdateId": luid, "bids": [["1", "1"]], "asks": [["2", "1"]]}, st.integers(0, 5)),
    st.just({"unexpected": True}),
)


@FUZZ
@given(st.lists(_messages, min_size=1, max_size=30), st.sampled_from(["trades", "quotes", "book"]))
def test_fuzz_binance_capture(messages, kind):
    text = "".join(f"{1723161255000000000 + i} {json.dumps(m)}\n" for i, m in enumerate(messages))
    _never_crashes(gzip.compress(text.encode()), name="usdm_btcusdt_fuzz.gz", kind=kind)


_OTHER_LAYOUTS = {
    "tardis_trades.csv": "exchange,symbol,timestamp,local_timestamp,id,side,price,amount",
    "chain.csv": "timestamp,symbol,expiry,strike,option_type,mark_price,underlying_price",
}


@FUZZ
@given(st.sampled_from(sorted(_OTHER_LAYOUTS)), st.data())
def test_fuzz_tardis_trades_and_option_chains(name, data):
    header = _OTHER_LAYOUTS[name]
    width = header.count(",") + 1
    rows = data.draw(st.lists(st.lists(_cell, min_size=width, max_size=width), min_size=1, max_size=20))
    text = header + "\n" + "\n".join(",".join(r) for r in rows) + "\n"
    _never_crashes(text.encode("utf-8", errors="surrogatepass"), name=name)
