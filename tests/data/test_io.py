"""Readers on real files (../shared/data) and on small files built here: what load() returns."""
from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from execal.models.data import tardis
from execal.models.data.io import detect_kind, load, parse_mapping, validate
from execal.models.data.schema import KINDS, DataError, book_levels

pytestmark = pytest.mark.timeout(120)

UTC = "UTC"


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_canonical(ds) -> None:
    """The contract every loaded frame keeps (schema.py docstring)."""
    f = ds.frame
    assert str(f["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert f["timestamp"].is_monotonic_increasing
    assert isinstance(f.index, pd.RangeIndex) and f.index[0] == 0
    for col in f.columns:
        if col in ("symbol", "venue", "trade_id", "option_type", "underlying", "price_unit"):
            assert pd.api.types.is_string_dtype(f[col].dtype), col
        elif col == "side":
            assert f[col].dtype == np.int8
        elif col not in ("timestamp", "expiry"):
            assert f[col].dtype == np.float64, col
    assert ds.report.rows_kept == len(f)


# --- real data ----------------------------------------------------------------------------------


REAL = [
    # path, kind, rows, first timestamp, last timestamp
    ("tardis/binance-futures_trades_BTCUSDT_2020-02-22.csv", "trades", 9_999,
     "2020-02-22 00:00:02.111", "2020-02-22 02:05:47.728"),
    ("tardis/binance-futures_quotes_BTCUSDT_2020-02-22.csv", "quotes", 9_999,
     "2020-02-22 00:00:01.096", "2020-02-22 00:03:47.061"),
    ("tardis/format-examples/binance-futures_book_snapshot_25_BTCUSDT.csv", "book", 10,
     "2020-09-01 00:00:03.696", "2020-09-01 00:00:04.005"),
    ("tardis/format-examples/binance-futures_book_snapshot_5_BTCUSDT.csv", "book", 10,
     "2020-09-01 00:00:03.696", "2020-09-01 00:00:04.284"),
    ("tardis/format-examples/bitmex_trades_XBTUSD.csv", "trades", 10,
     "2020-03-01 00:00:03.145", "2020-03-01 00:00:03.276"),
    # 15 snapshot updates, all at one exchange timestamp -> one book row
    ("tardis/format-examples/deribit_incremental_book_L2_BTC-PERPETUAL.csv", "book", 1,
     "2020-04-01 00:00:00.245", "2020-04-01 00:00:00.245"),
    ("tardis/format-examples/deribit_options_chain.csv", "options", 7,
     "2020-06-07 23:59:59.413", "2020-06-08 00:01:00.454"),
    ("tardis/format-examples/huobi-dm-swap_quotes_BTC-USD.csv", "quotes", 10,
     "2020-05-01 00:00:01.099", "2020-05-01 00:00:01.814"),
    ("bars/ftx_btc-perp_1m_2022-01.csv", "bars", 45_031,
     "2021-12-31 23:01", "2022-02-01 05:31"),
    # SOURCES.md says 2024-01-01 - 2024-09-11; the file's first bar is 2023-12-31 23:00+00:00
    ("bars/coinbase_btc-usd_1h_2024.csv", "bars", 6_115,
     "2023-12-31 23:00", "2024-09-11 17:00"),
]


@pytest.mark.shared_data
@pytest.mark.parametrize("rel, kind, rows, start, end", REAL, ids=[r[0].split("/")[-1] for r in REAL])
def test_real_file_loads(shared_data, rel, kind, rows, start, end):
    path = shared_data / rel
    ds = load(path)
    assert ds.kind == kind
    assert len(ds.frame) == rows
    assert ds.frame["timestamp"].iloc[0] == ts(start)
    assert ds.frame["timestamp"].iloc[-1] == ts(end)
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.source == path.name
    assert ds.report.dropped == []
    assert_canonical(ds)


@pytest.mark.shared_data
def test_every_shared_csv_is_covered(shared_data):
    """A new file in ../shared/data must get a row in REAL (or this test says which)."""
    on_disk = {str(p.relative_to(shared_data)) for p in shared_data.rglob("*.csv")}
    assert on_disk == {r[0] for r in REAL}


@pytest.mark.shared_data
def test_tardis_trades_values(shared_data):
    f = load(shared_data / "tardis/binance-futures_trades_BTCUSDT_2020-02-22.csv").frame
    first = f.iloc[0]
    assert (first["symbol"], first["venue"], first["side"]) == ("BTCUSDT", "binance-futures", 1)
    assert (first["price"], first["quantity"], first["trade_id"]) == (9682.0, 0.132, "42377944")
    assert set(f["side"].unique()) == {-1, 1}
    assert list(f.columns) == ["timestamp", "symbol", "price", "quantity", "venue", "side", "trade_id"]


@pytest.mark.shared_data
def test_tardis_book_snapshot_levels(shared_data):
    base = shared_data / "tardis/format-examples"
    f25 = load(base / "binance-futures_book_snapshot_25_BTCUSDT.csv").frame
    f5 = load(base / "binance-futures_book_snapshot_5_BTCUSDT.csv").frame
    assert (book_levels(f25), book_levels(f5)) == (25, 5)
    row = f5.iloc[0]
    assert (row["bid_price_0"], row["bid_size_0"]) == (11657.07, 10.896)
    assert (row["ask_price_0"], row["ask_size_0"]) == (11657.08, 1.714)
    assert (row["bid_price_4"], row["ask_price_4"]) == (11655.68, 11657.92)
    # every snapshot: bids descending, asks ascending, not crossed
    bids = f25[[f"bid_price_{i}" for i in range(25)]].to_numpy()
    asks = f25[[f"ask_price_{i}" for i in range(25)]].to_numpy()
    assert (np.diff(bids, axis=1) < 0).all() and (np.diff(asks, axis=1) > 0).all()
    assert (bids[:, 0] < asks[:, 0]).all()


@pytest.mark.shared_data
def test_tardis_incremental_book_replay(shared_data):
    f = load(shared_data / "tardis/format-examples/deribit_incremental_book_L2_BTC-PERPETUAL.csv").frame
    raw = pd.read_csv(shared_data / "tardis/format-examples/deribit_incremental_book_L2_BTC-PERPETUAL.csv")
    asks = raw[raw.side == "ask"].sort_values("price")
    assert book_levels(f) == 0 or np.isnan(f["bid_price_0"]).all()   # the excerpt holds asks only
    got = f[[f"ask_price_{i}" for i in range(15)]].iloc[0].to_numpy()
    np.testing.assert_array_equal(got, asks.price.to_numpy())
    assert f["ask_size_0"].iloc[0] == 18640.0 and np.isnan(f["ask_price_15"].iloc[0])


@pytest.mark.shared_data
def test_tardis_options_chain_units(shared_data):
    ds = load(shared_data / "tardis/format-examples/deribit_options_chain.csv")
    f = ds.frame
    first = f.iloc[0]
    assert first["option_type"] == "put" and first["strike"] == 9875.0
    assert first["expiry"] == ts("2020-06-09 08:00")
    assert first["bid_iv"] == pytest.approx(0.5591) and first["mark_iv"] == pytest.approx(0.6289)
    assert first["underlying"] == "SYN.BTC-9JUN20" and first["underlying_price"] == 9756.36
    assert (f["price_unit"] == "base").all()
    # the hand-edited row without bid/ask is kept (quotes are optional), with NaN
    assert np.isnan(f.loc[f.symbol == "BTC-10JUN20-10000-C", "bid_price"]).all()
    assert set(f["option_type"]) == {"call", "put"}


@pytest.mark.shared_data
def test_coinbase_bars_take_date_not_unix(shared_data):
    ds = load(shared_data / "bars/coinbase_btc-usd_1h_2024.csv")
    step = np.diff(ds.frame["timestamp"].to_numpy("datetime64[s]").astype(np.int64))
    assert (step == 3600).all()                                   # hourly, no gaps
    assert "quote_volume" in ds.frame.columns
    assert any("unix" in w for w in ds.report.warnings)


@pytest.mark.shared_data
def test_ftx_bars_have_no_gaps(shared_data):
    f = load(shared_data / "bars/ftx_btc-perp_1m_2022-01.csv").frame
    step = np.diff(f["timestamp"].to_numpy("datetime64[s]").astype(np.int64))
    assert (step == 60).all()
    assert f["open"].iloc[0] == 46319.0 and f["volume"].iloc[-1] == 685906.9735


@pytest.mark.shared_data
def test_binance_capture_via_load(shared_data):
    path = shared_data / "binance-raw/spot_btcusdt_20240808.gz"
    ds = load(path)
    assert ds.kind == "trades" and len(ds.frame) == 9_757          # SOURCES.md
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert any("quotes" in w and "book" in w for w in ds.report.warnings)
    assert_canonical(ds)
    quotes = load(path, kind="quotes")
    assert quotes.kind == "quotes" and len(quotes.frame) > 20_000
    assert load(path, kind="book").kind == "book"
    with pytest.raises(DataError, match="bars"):
        load(path, kind="bars")


# --- timestamps ---------------------------------------------------------------------------------


T0 = pd.Timestamp("2024-03-01 12:00:00.123456789", tz=UTC)


@pytest.mark.parametrize("unit, scale", [("s", 1e9), ("ms", 1e6), ("us", 1e3), ("ns", 1)])
def test_epoch_integer_units(tmp_path, unit, scale):
    ns = T0.value
    values = [ns // int(scale) + i for i in range(3)]
    text = "timestamp,symbol,price,quantity\n" + "".join(f"{v},X,1,1\n" for v in values)
    ds = load(write(tmp_path, "t.csv", text))
    expected = pd.to_datetime(values, unit=unit, utc=True)
    assert list(ds.frame["timestamp"]) == list(expected)
    assert any(f"read as {({'s': 'seconds', 'ms': 'milliseconds', 'us': 'microseconds', 'ns': 'nanoseconds'})[unit]}" in w
               for w in ds.report.warnings)


def test_epoch_float_seconds(tmp_path):
    text = "ts,symbol,price,quantity\n1709294400.5,X,1,1\n1709294401.25,X,1,1\n"
    f = load(write(tmp_path, "t.csv", text)).frame
    assert list(f["timestamp"]) == [ts("2024-03-01 12:00:00.5"), ts("2024-03-01 12:00:01.25")]


@pytest.mark.parametrize("text, expected", [
    ("2024-03-01T12:00:00Z", "2024-03-01 12:00:00"),
    ("2024-03-01T12:00:00.250Z", "2024-03-01 12:00:00.25"),
    ("2024-03-01 12:00:00", "2024-03-01 12:00:00"),                # naive = UTC
    ("2024-03-01T14:00:00+02:00", "2024-03-01 12:00:00"),          # offset converted to UTC
    ("2024-03-01", "2024-03-01 00:00:00"),
])
def test_iso_timestamps(tmp_path, text, expected):
    csv = f"time,symbol,price,quantity\n{text},X,1,1\n"
    assert load(write(tmp_path, "t.csv", csv)).frame["timestamp"].iloc[0] == ts(expected)


def test_mixed_offsets_in_text_column(tmp_path):
    csv = ("timestamp,symbol,price,quantity\n2024-03-01T12:00:00Z,X,1,1\n"
           "2024-03-01T14:00:01+02:00,X,1,2\n2024-03-01 12:00:02,X,1,3\n")
    f = load(write(tmp_path, "t.csv", csv)).frame
    assert list(f["timestamp"]) == [ts("2024-03-01 12:00:00"), ts("2024-03-01 12:00:01"),
                                    ts("2024-03-01 12:00:02")]


def test_epoch_numbers_as_text_in_parquet(tmp_path):
    frame = pd.DataFrame({"timestamp": ["1709294400000", "1709294401000"], "symbol": ["X", "X"],
                          "price": [1.0, 2.0], "quantity": [1.0, 1.0]})
    frame.to_parquet(tmp_path / "t.parquet")
    f = load(tmp_path / "t.parquet").frame
    assert f["timestamp"].iloc[1] == ts("2024-03-01 12:00:01")


# --- sides, aliases, kinds, mapping -------------------------------------------------------------


FILLS = ("timestamp,symbol,side,quantity,arrival_price,exec_price\n"
         "2024-03-01T00:00:00Z,BTCUSDT,{s0},1.5,100,100.05\n"
         "2024-03-01T00:01:00Z,BTCUSDT,{s1},2,100,99.95\n")


@pytest.mark.parametrize("buy, sell", [("buy", "sell"), ("BUY", "Sell"), ("B", "s"), ("b", "S"),
                                       ("1", "-1"), ("+1", "-1"), (" Buy ", " SELL "),
                                       ("long", "short")])
def test_side_spellings(tmp_path, buy, sell):
    f = load(write(tmp_path, "f.csv", FILLS.format(s0=buy, s1=sell))).frame
    assert f["side"].tolist() == [1, -1] and f["side"].dtype == np.int8


def test_fills_cost_bps(tmp_path):
    ds = load(write(tmp_path, "f.csv", FILLS.format(s0="buy", s1="sell")))
    assert ds.kind == "fills"
    # buy 5 bps above arrival and sell 5 bps below both cost +5 bps
    np.testing.assert_allclose(ds.frame["cost_bps"], [5.0, 5.0], rtol=1e-9)


def test_trades_unknown_aggressor_is_zero(tmp_path):
    csv = ("timestamp,symbol,price,quantity,side\n2024-03-01T00:00:00Z,X,1,1,unknown\n"
           "2024-03-01T00:00:01Z,X,1,1,\n2024-03-01T00:00:02Z,X,1,1,sell\n")
    assert load(write(tmp_path, "t.csv", csv)).frame["side"].tolist() == [0, 0, -1]


def test_aliases(tmp_path):
    csv = ("Time,Instrument,Exchange,Side,Qty,Arrival_Mid,Avg_Price\n"
           "2024-03-01T00:00:00Z,ETHUSDT,binance,buy,3,2000,2001\n")
    ds = load(write(tmp_path, "f.csv", csv))
    assert ds.kind == "fills"
    row = ds.frame.iloc[0]
    assert (row["symbol"], row["venue"], row["quantity"]) == ("ETHUSDT", "binance", 3.0)
    assert (row["arrival_price"], row["exec_price"]) == (2000.0, 2001.0)
    assert row["cost_bps"] == pytest.approx(5.0)


def test_alias_quotes_bid_ask(tmp_path):
    csv = "ts,symbol,bid,bid_qty,ask,ask_qty\n2024-03-01T00:00:00Z,X,99,1,101,2\n"
    ds = load(write(tmp_path, "q.csv", csv))
    assert ds.kind == "quotes"
    assert ds.frame[["bid_price", "bid_size", "ask_price", "ask_size"]].iloc[0].tolist() == [99, 1, 101, 2]


def test_mapping(tmp_path):
    csv = ("when,coin,dir,filled,decision_px,fill_px\n"
           "2024-03-01T00:00:00Z,BTC,buy,1,100,100.1\n")
    mapping = {"WHEN": "timestamp", "coin": "symbol", "dir": "side", "filled": "quantity",
               "decision_px": "arrival_price", "fill_px": "exec_price"}
    ds = load(write(tmp_path, "f.csv", csv), mapping=mapping)
    assert ds.kind == "fills" and ds.frame["cost_bps"].iloc[0] == pytest.approx(10.0)
    assert parse_mapping("when=timestamp, coin = symbol,dir=side") == {
        "when": "timestamp", "coin": "symbol", "dir": "side"}
    assert parse_mapping("  ") == {}


def test_mapping_errors(tmp_path):
    path = write(tmp_path, "f.csv", FILLS.format(s0="buy", s1="sell"))
    with pytest.raises(DataError, match="not a canonical column name"):
        load(path, mapping={"symbol": "ticker_symbol"})
    with pytest.raises(DataError, match="'nope', which is not in the file"):
        load(path, mapping={"nope": "symbol"})
    with pytest.raises(DataError, match="not of the form"):
        parse_mapping("when=timestamp,c")
    with pytest.raises(DataError, match="not a canonical"):
        parse_mapping("a=b")


@pytest.mark.parametrize("columns, kind", [
    (["timestamp", "symbol", "side", "quantity", "arrival_price", "exec_price"], "fills"),
    (["time", "symbol", "px", "qty"], "trades"),
    (["timestamp", "symbol", "bid", "bid_size", "ask", "ask_size"], "quotes"),
    (["timestamp", "symbol", "bid_price_0", "bid_size_0", "ask_price_0", "ask_size_0"], "book"),
    (["timestamp", "symbol", "expiration", "strike", "type"], "options"),
    (["date", "open", "high", "low", "close", "volume"], "bars"),
    (["timestamp", "symbol", "mark_price", "funding_rate"], "ticker"),
])
def test_detect_kind(columns, kind):
    assert detect_kind(columns) == kind


def test_detect_kind_errors():
    with pytest.raises(DataError, match="several kinds.*Found columns: timestamp"):
        detect_kind(["timestamp", "symbol", "price", "quantity", "bid_price", "bid_size",
                     "ask_price", "ask_size"])
    with pytest.raises(DataError, match="cannot tell.*Found columns: foo, bar"):
        detect_kind(["foo", "bar"])


def test_explicit_kind_checks_columns(tmp_path):
    path = write(tmp_path, "f.csv", FILLS.format(s0="buy", s1="sell"))
    with pytest.raises(DataError, match="required column.*'bars' missing: open"):
        load(path, kind="bars")
    with pytest.raises(DataError, match="unknown kind"):
        load(path, kind="candles")
    assert set(KINDS) >= {"ticker"}


# --- containers ---------------------------------------------------------------------------------


def test_csv_gz_detected_by_magic(tmp_path):
    text = FILLS.format(s0="buy", s1="sell")
    plain = load(write(tmp_path, "f.csv", text))
    blob = gzip.compress(text.encode())
    for name in ("f.csv.gz", "f_no_extension"):
        (tmp_path / name).write_bytes(blob)
        ds = load(tmp_path / name)
        pd.testing.assert_frame_equal(ds.frame, plain.frame)
        assert ds.sha256 == hashlib.sha256(blob).hexdigest()     # of the bytes as uploaded


def test_parquet_round_trip(tmp_path):
    ds = load(write(tmp_path, "f.csv", FILLS.format(s0="buy", s1="sell")))
    ds.frame.drop(columns="cost_bps").to_parquet(tmp_path / "f.parquet")
    back = load(tmp_path / "f.parquet")
    pd.testing.assert_frame_equal(back.frame, ds.frame)
    # naive datetimes and a misleading extension: magic bytes decide, naive = UTC
    naive = ds.frame.drop(columns="cost_bps").assign(timestamp=ds.frame.timestamp.dt.tz_localize(None))
    naive.to_parquet(tmp_path / "f.csv")
    pd.testing.assert_frame_equal(load(tmp_path / "f.csv").frame, ds.frame)


def test_bytes_with_name(tmp_path):
    blob = FILLS.format(s0="buy", s1="sell").encode()
    ds = load(blob, name="my fills.csv")
    assert ds.source == "my fills.csv" and ds.sha256 == hashlib.sha256(blob).hexdigest()
    assert len(ds.frame) == 2
    assert load(gzip.compress(blob), name="my fills.csv.gz").frame.equals(ds.frame)
    with pytest.raises(DataError, match="^my fills.csv: column 'side'"):
        load(blob.replace(b"sell", b"hold"), name="my fills.csv")


@pytest.mark.parametrize("delim", [";", "\t", "|"])
def test_other_delimiters(tmp_path, delim):
    text = FILLS.format(s0="buy", s1="sell").replace(",", delim)
    ds = load(write(tmp_path, "f.csv", text))
    assert len(ds.frame) == 2 and ds.frame["exec_price"].tolist() == [100.05, 99.95]
    assert any("delimited" in w for w in ds.report.warnings)


def test_semicolon_with_decimal_commas(tmp_path):
    text = FILLS.format(s0="buy", s1="sell").replace(",", ";").replace(".", ",")
    text = text.replace("00:00:00Z", "00:00:00Z").replace("T00:01:00Z", "T00:01:00Z")
    ds = load(write(tmp_path, "f.csv", text))
    assert ds.frame["exec_price"].tolist() == [100.05, 99.95]


def test_preamble_line_skipped(tmp_path):
    text = "https://www.cryptodatadownload.com\n" + FILLS.format(s0="buy", s1="sell")
    ds = load(write(tmp_path, "f.csv", text))
    assert len(ds.frame) == 2 and any("before the header" in w for w in ds.report.warnings)


def test_quoted_fields_and_crlf(tmp_path):
    text = ('timestamp,symbol,price,quantity,venue\r\n'
            '2024-03-01T00:00:00Z,"BTC,USDT",1,1,"a ""b"""\r\n')
    f = load(write(tmp_path, "t.csv", text)).frame
    assert f["symbol"].iloc[0] == "BTC,USDT" and f["venue"].iloc[0] == 'a "b"'


def test_size_limit_from_environment(tmp_path, monkeypatch):
    rows = "".join(f"2024-03-01T00:00:{i % 60:02d}Z,BTCUSDT,buy,{i + 1},100,100.05\n"
                   for i in range(400))
    path = write(tmp_path, "f.csv", FILLS.splitlines(keepends=True)[0] + rows)   # ~18 KB
    monkeypatch.setenv("EXECAL_MAX_UPLOAD_MB", "0.01")
    with pytest.raises(DataError, match=r"^f.csv: file is 0.02 MB, over the limit of 0.01 MB$"):
        load(path)
    assert len(load(path, max_bytes=100_000).frame) == 400      # the argument wins


# --- Tardis units -------------------------------------------------------------------------------


def test_tardis_derivative_ticker(tmp_path):
    text = ("exchange,symbol,timestamp,local_timestamp,funding_timestamp,funding_rate,"
            "predicted_funding_rate,open_interest,last_price,index_price,mark_price\n"
            "binance-futures,BTCUSDT,1599868800000000,1599868800123456,1599868800000000,0.0001,"
            "0.00012,1000.5,10000.5,10001,10002\n"
            "binance-futures,BTCUSDT,1599868801000000,1599868801123456,1599868800000000,,"
            ",1000.6,10000.6,,10003\n")
    ds = load(write(tmp_path, "t.csv", text))
    assert ds.kind == "ticker" and len(ds.frame) == 2
    row = ds.frame.iloc[0]
    assert row["timestamp"] == ts("2020-09-12 00:00:00")
    assert (row["funding_rate"], row["mark_price"], row["venue"]) == (0.0001, 10002.0, "binance-futures")
    assert np.isnan(ds.frame["index_price"].iloc[1])   # empty fields are missing, not dropped


def _incremental(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["exchange", "symbol", "timestamp", "local_timestamp",
                                       "is_snapshot", "side", "price", "amount"])


def test_incremental_book_replay_rules():
    t = 1_600_000_000_000_000
    raw = _incremental([
        ("x", "A", t, t, "true", "bid", 99.0, 1.0),
        ("x", "A", t, t, "true", "bid", 98.0, 2.0),
        ("x", "A", t, t, "true", "ask", 101.0, 3.0),
        ("x", "A", t + 10, t, "false", "bid", 99.5, 4.0),       # new best bid
        ("x", "A", t + 10, t, "false", "ask", 101.0, 0.0),      # delete the only ask
        ("x", "B", t + 15, t, "true", "ask", 7.0, 1.0),          # another symbol, own book
        ("x", "A", t + 20, t, "false", "bid", 99.0, 5.0),       # size change
        ("x", "A", t + 30, t, "true", "ask", 102.0, 1.0),       # a new snapshot resets A
    ])
    conv = tardis.to_canonical(raw, "incremental_book_L2", depth=3)
    f = conv.frame
    assert conv.kind == "book" and len(f) == 5
    assert f["symbol"].tolist() == ["A", "A", "B", "A", "A"]
    np.testing.assert_array_equal(f["bid_price_0"], [99.0, 99.5, np.nan, 99.5, np.nan])
    np.testing.assert_array_equal(f["bid_price_1"], [98.0, 99.0, np.nan, 99.0, np.nan])
    np.testing.assert_array_equal(f["bid_size_1"], [2.0, 1.0, np.nan, 5.0, np.nan])
    np.testing.assert_array_equal(f["ask_price_0"], [101.0, np.nan, 7.0, np.nan, 102.0])
    assert conv.rows.tolist() == [3, 5, 6, 7, 8]       # the last file row behind each snapshot

    sampled = tardis.rebuild_book(raw[raw.symbol == "A"], depth=2, interval_s=0.000025)
    # ceil to 25 us: t -> t, t+10 and t+20 -> t+25, t+30 -> t+50
    assert (sampled.frame["timestamp"] - pd.Timestamp(t * 1000, tz=UTC)).dt.total_seconds().mul(1e6).round().tolist() == [0, 25, 50]
    assert sampled.frame["bid_size_1"].tolist()[1] == 5.0   # state after t+20, the last in the interval


def test_incremental_book_bad_rows_reported():
    t = 1_600_000_000_000_000
    raw = _incremental([
        ("x", "A", t, t, "true", "bid", 99.0, 1.0),
        ("x", "A", t, t, "true", "middle", 98.0, 2.0),
        ("x", "A", t + 1, t, "false", "ask", -1.0, 2.0),
    ])
    conv = tardis.to_canonical(raw, "incremental_book_L2")
    assert [(d.column, d.first_rows) for d in conv.drops] == [("side", [2]), ("price", [3])]
    assert len(conv.frame) == 1


def test_tardis_format_detection():
    base = ["exchange", "symbol", "timestamp", "local_timestamp"]
    assert tardis.detect_format(base + ["id", "side", "price", "amount"]) == "trades"
    assert tardis.detect_format(base + ["asks[0].price", "asks[0].amount"]) == "book_snapshot"
    assert tardis.detect_format(["symbol", "timestamp", "id", "side", "price", "amount"]) is None


# --- validate() directly ------------------------------------------------------------------------


def test_validate_public():
    t = 1_709_251_200
    frame = pd.DataFrame({"timestamp": [t + 3, t + 1, t + 2], "symbol": ["X"] * 3,
                          "price": [1.0, 2.0, -1.0],
                          "quantity": [1, 1, 1], "extra": ["a", "b", "c"]})
    clean, report = validate(frame, "trades", source="mine")
    assert clean["price"].tolist() == [2.0, 1.0]
    assert [(d.column, d.first_rows) for d in report.dropped] == [("price", [3])]
    assert any("earlier than the row before" in w for w in report.warnings)
    assert any("extra" in w for w in report.warnings)
    assert "extra" not in clean.columns


def test_generic_options_file(tmp_path):
    csv = ("timestamp,symbol,expiry,strike,type,mark_iv,underlying_price\n"
           "2024-03-01T00:00:00Z,BTC-29MAR24-60000-C,2024-03-29T08:00:00Z,60000,C,0.55,61000\n"
           "2024-03-01T00:00:00Z,BTC-29MAR24-60000-P,2024-03-29T08:00:00Z,60000,p,0.56,61000\n"
           "2024-03-01T00:00:00Z,BTC-29MAR24-60000-X,2024-03-29T08:00:00Z,60000,straddle,0.5,61000\n")
    ds = load(write(tmp_path, "o.csv", csv))
    assert ds.kind == "options"
    assert ds.frame["option_type"].tolist() == ["call", "put"]
    assert ds.frame["expiry"].iloc[0] == ts("2024-03-29 08:00")
    assert [(d.column, d.first_rows) for d in ds.report.dropped] == [("option_type", [3])]


@pytest.mark.shared_data
def test_tardis_file_with_the_wrong_kind(shared_data):
    with pytest.raises(DataError, match="Tardis 'trades' file, i.e. kind 'trades', not 'quotes'"):
        load(shared_data / "tardis/binance-futures_trades_BTCUSDT_2020-02-22.csv", kind="quotes")


def test_tardis_trades_as_upload_bytes(shared_data):
    blob = (shared_data / "tardis/format-examples/bitmex_trades_XBTUSD.csv").read_bytes()
    ds = load(gzip.compress(blob), name="bitmex_trades_XBTUSD.csv.gz")
    assert ds.kind == "trades" and len(ds.frame) == 10 and (ds.frame["side"] == -1).all()
    assert ds.frame["quantity"].iloc[0] == 2152.0 and ds.source == "bitmex_trades_XBTUSD.csv.gz"


def test_incremental_book_sampled_when_too_many_snapshots():
    t = 1_600_000_000_000_000
    rows = [("x", "A", t + i * 4_000, t, "false", "bid", 100.0 - (i % 5), float(i + 1))
            for i in range(1000)]                                   # one update every 4 ms
    conv = tardis.to_canonical(_incremental(rows), "incremental_book_L2", max_snapshots=200)
    # 1000 distinct timestamps > 200: 1 ms and 10 ms grids give 1000 and 400, 100 ms gives 41
    assert len(conv.frame) == 41
    assert "every 0.1 s: one per distinct timestamp would exceed 200" in conv.warnings[0]
    exact = tardis.to_canonical(_incremental(rows), "incremental_book_L2", max_snapshots=None)
    assert len(exact.frame) == 1000
    # the sampled rows equal the exact replay at the last update of each 100 ms interval
    last = exact.frame.set_index(exact.rows).loc[conv.rows]
    np.testing.assert_array_equal(last["bid_size_0"].to_numpy(), conv.frame["bid_size_0"].to_numpy())


def test_option_chain_with_mark_price_is_options_not_ticker():
    assert detect_kind(["timestamp", "symbol", "expiry", "strike", "option_type", "mark_price"]) == "options"


def test_symbols_one_after_another_are_merged(tmp_path):
    csv = ("timestamp,symbol,price,quantity\n2024-03-01T00:00:00Z,A,1,1\n2024-03-01T00:00:02Z,A,1,1\n"
           "2024-03-01T00:00:01Z,B,1,1\n2024-03-01T00:00:03Z,B,1,1\n")
    ds = load(write(tmp_path, "t.csv", csv))
    assert ds.frame["symbol"].tolist() == ["A", "B", "A", "B"]
    assert any("in time order per symbol" in w and "rows 3" in w for w in ds.report.warnings)
