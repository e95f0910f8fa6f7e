"""Binance raw capture replay: the four real captures and small synthetic ones built here."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from execal.models.data.binance import read_capture
from execal.models.data.schema import DataError, book_levels

FILES = {
    # file: (diffs, bookTicker, trades, diffs buffered before the snapshot, of which dropped)
    "usdm_btcusdt_20240808.gz": (6551, 66089, 21313, 6, 4),
    "usdm_ethusdt_20240808.gz": (6586, 53992, 14076, 7, 5),
    "spot_btcusdt_20240808.gz": (3451, 28040, 9757, 3, 2),
    "cm_btcusd_perp_20240808.gz": (26847, 19136, 2286, 25, 23),
}
VENUE = {"usdm": "binance-usdm", "spot": "binance-spot", "cm": "binance-coinm"}


@pytest.fixture(scope="module")
def captures(shared_data):
    return {f: read_capture(shared_data / "binance-raw" / f, levels=20, interval_s=1.0)
            for f in FILES}


# --- real captures ------------------------------------------------------------------------------

@pytest.mark.shared_data
@pytest.mark.parametrize("fname", list(FILES))
def test_message_counts_match_sources(captures, fname):
    diffs, tickers, trades, buffered, dropped = FILES[fname]
    cap = captures[fname]
    s = cap.stats
    assert (s["diffs"], s["book_tickers"], s["trades"], s["snapshots"]) == (diffs, tickers,
                                                                           trades, 1)
    assert s["messages"] == diffs + tickers + trades + 1
    assert len(cap.trades) == trades and len(cap.quotes) == tickers
    # the snapshot is fetched after the streams start: a few diffs precede it, most of them
    # already inside it
    assert s["diffs_buffered_before_snapshot"] == buffered
    assert s["diffs_dropped_before_snapshot"] == dropped
    assert s["diffs_applied"] == diffs - dropped
    assert s["gaps"] == 0 and s["diffs_out_of_order"] == 0      # these captures are clean
    assert s["synced"] is True
    assert cap.warnings == []
    assert s["venue"] == VENUE[fname.split("_")[0]]


@pytest.mark.shared_data
def test_level_update_count_usdm_btcusdt(captures):
    assert captures["usdm_btcusdt_20240808.gz"].stats["level_updates"] == 443_262


@pytest.mark.shared_data
@pytest.mark.parametrize("fname", list(FILES))
def test_frames_are_canonical_and_span_the_window(captures, fname):
    cap = captures[fname]
    assert list(cap.trades.columns) == ["timestamp", "symbol", "price", "quantity", "side",
                                        "venue", "trade_id"]
    assert list(cap.quotes.columns) == ["timestamp", "symbol", "bid_price", "bid_size",
                                        "ask_price", "ask_size", "venue"]
    assert book_levels(cap.book) == 20
    assert list(cap.book.columns[:3]) == ["timestamp", "symbol", "venue"]
    for frame in (cap.trades, cap.quotes, cap.book):
        assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
        assert frame["timestamp"].is_monotonic_increasing or frame is cap.quotes
    assert cap.trades["side"].dtype == np.int8
    assert cap.trades["trade_id"].is_unique
    # exchange clock: the recorder's clock ran ~1.27 s behind, so the window is
    # 23:54:15-23:59:59.8 local (SOURCES.md) = about 23:54:16-00:00:01 exchange time
    start, end = pd.Timestamp(cap.stats["start"]), pd.Timestamp(cap.stats["end"])
    assert pd.Timestamp("2024-08-08 23:54:14Z") <= start <= pd.Timestamp("2024-08-08 23:54:18Z")
    assert pd.Timestamp("2024-08-09 00:00:00Z") <= end <= pd.Timestamp("2024-08-09 00:00:02Z")
    # one book row a second over the whole window
    ts = cap.book["timestamp"]
    assert 340 <= len(ts) <= 347
    assert (ts.diff().dropna() == pd.Timedelta("1s")).all()
    assert (ts.dt.microsecond == 0).all()


@pytest.mark.shared_data
@pytest.mark.parametrize("fname", list(FILES))
def test_book_never_crossed_and_levels_sorted(captures, fname):
    cap = captures[fname]
    assert cap.stats["crossed_after_diff"] == 0
    assert (cap.top["bid_price"] < cap.top["ask_price"]).all()
    bp = cap.book[[f"bid_price_{i}" for i in range(20)]].to_numpy()
    ap = cap.book[[f"ask_price_{i}" for i in range(20)]].to_numpy()
    assert not np.isnan(bp).any() and not np.isnan(ap).any()
    assert (bp[:, 0] < ap[:, 0]).all()
    assert (np.diff(bp, axis=1) < 0).all() and (np.diff(ap, axis=1) > 0).all()
    sz = cap.book[[c for c in cap.book.columns if "_size_" in c]].to_numpy()
    assert (sz > 0).all()


@pytest.mark.shared_data
@pytest.mark.parametrize("fname", list(FILES))
def test_rebuilt_top_agrees_with_bookticker(captures, fname):
    """After a diff whose final update id u equals a bookTicker's u, both describe the same book
    state: best bid/ask prices and sizes must agree."""
    cap = captures[fname]
    quotes = cap.quotes.assign(update_id=cap.quote_update_ids)
    both = quotes.merge(cap.top, on="update_id", suffixes=("_ticker", "_book"))
    assert len(both) >= 500          # measured: 629, 551, 564, 1124 matching ids
    same = ((both.bid_price_ticker == both.bid_price_book)
            & (both.ask_price_ticker == both.ask_price_book)
            & np.isclose(both.bid_size_ticker, both.bid_size_book, rtol=1e-12)
            & np.isclose(both.ask_size_ticker, both.ask_size_book, rtol=1e-12))
    assert same.mean() >= 0.99       # measured: 100 % on all four files


@pytest.mark.shared_data
@pytest.mark.parametrize("fname", list(FILES))
def test_book_samples_are_the_state_as_of_the_last_diff(captures, fname):
    cap = captures[fname]
    asof = pd.merge_asof(cap.book[["timestamp", "bid_price_0", "ask_price_0", "bid_size_0"]],
                         cap.top, on="timestamp", direction="backward")
    assert (asof["bid_price_0"] == asof["bid_price"]).all()
    assert (asof["ask_price_0"] == asof["ask_price"]).all()
    assert np.allclose(asof["bid_size_0"], asof["bid_size"], rtol=1e-12)


@pytest.mark.shared_data
def test_trade_side_and_values_match_the_raw_messages(shared_data, captures):
    path = shared_data / "binance-raw" / "usdm_btcusdt_20240808.gz"
    raw = [json.loads(line.split(" ", 1)[1])["data"] for line in gzip.open(path, "rt")
           if "@trade" in line[:80]]
    trades = captures["usdm_btcusdt_20240808.gz"].trades
    expected_side = np.array([-1 if m["m"] else 1 for m in raw])   # m: buyer is maker = sell
    assert (trades["side"].to_numpy() == expected_side).all()
    assert 0 < (expected_side == -1).mean() < 1                      # both sides present
    assert np.array_equal(trades["price"].to_numpy(), [float(m["p"]) for m in raw])
    assert np.array_equal(trades["quantity"].to_numpy(), [float(m["q"]) for m in raw])
    assert trades["trade_id"].tolist() == [str(m["t"]) for m in raw]
    ts_ms = trades["timestamp"].astype("int64") // 1_000_000
    assert ts_ms.tolist() == [m["T"] for m in raw]


@pytest.mark.shared_data
def test_coinm_sizes_are_converted_to_coins(shared_data, captures):
    cap = captures["cm_btcusd_perp_20240808.gz"]
    assert cap.stats["contract_size_usd"] == 100.0
    assert "contracts of 100 USD" in cap.stats["size_unit"]
    assert cap.book.attrs["contract_size_usd"] == 100.0
    # coins * price / 100 gives back whole contracts everywhere
    contracts = cap.trades["quantity"] * cap.trades["price"] / 100
    assert np.allclose(contracts, contracts.round(), atol=1e-6)
    assert (contracts.round() >= 1).all()
    q = cap.quotes
    for size, price in (("bid_size", "bid_price"), ("ask_size", "ask_price")):
        c = q[size] * q[price] / 100
        assert np.allclose(c, c.round(), atol=1e-6)
    for i in range(20):
        c = cap.book[f"bid_size_{i}"] * cap.book[f"bid_price_{i}"] / 100
        assert np.allclose(c, c.round(), atol=1e-6)
    # against the raw first trade
    path = shared_data / "binance-raw" / "cm_btcusd_perp_20240808.gz"
    first = next(json.loads(line.split(" ", 1)[1])["data"] for line in gzip.open(path, "rt")
                 if "@trade" in line[:80])
    assert cap.trades["quantity"].iloc[0] == pytest.approx(
        float(first["q"]) * 100 / float(first["p"]), rel=1e-12)
    # USD-M sizes are untouched (already base units)
    assert captures["usdm_btcusdt_20240808.gz"].stats["contract_size_usd"] is None


@pytest.mark.shared_data
def test_spot_bookticker_time_comes_from_receive_time_plus_offset(captures):
    cap = captures["spot_btcusdt_20240808.gz"]
    s = cap.stats
    assert s["quote_time_source"].startswith("local receive time")
    assert 1000 < s["clock_offset_ms"] < 1600          # the recorder's clock lagged ~1.27 s
    q, t = cap.quotes["timestamp"], cap.trades["timestamp"]
    assert abs(q.iloc[0] - t.iloc[0]) < pd.Timedelta("2s")
    assert abs(q.iloc[-1] - t.iloc[-1]) < pd.Timedelta("2s")


@pytest.mark.shared_data
@pytest.mark.parametrize("fname, market", [("cm_btcusd_perp_20240808.gz", "coinm"),
                                           ("spot_btcusdt_20240808.gz", "spot")])
def test_market_detected_from_message_fields(shared_data, captures, fname, market):
    data = (shared_data / "binance-raw" / fname).read_bytes()
    cap = read_capture(data)                     # bytes, no name: fields decide
    assert cap.stats["market"] == market
    assert cap.stats["market_source"] == "message fields"
    assert cap.book.equals(captures[fname].book)


# --- synthetic captures -------------------------------------------------------------------------

def _line(ns: int, obj: dict) -> str:
    return f"{ns} {json.dumps(obj, separators=(',', ':'))}"


def _diff(U, u, pu, t_ms, bids=(), asks=(), spot=False):
    data = {"e": "depthUpdate", "E": t_ms, "s": "BTCUSDT", "U": U, "u": u,
            "b": [list(x) for x in bids], "a": [list(x) for x in asks]}
    if not spot:
        data.update(T=t_ms, pu=pu)
    return {"stream": f"btcusdt@depth@{'100ms' if spot else '0ms'}", "data": data}


def _trade(t, t_ms, p, q, m):
    return {"stream": "btcusdt@trade", "data": {"e": "trade", "E": t_ms, "T": t_ms, "s": "BTCUSDT",
                                                "t": t, "p": p, "q": q, "m": m}}


def futures_lines():
    return [
        # before the snapshot; already inside it (u 5 < lastUpdateId 8): dropped
        _line(900_000_000, _diff(1, 5, 0, 900, bids=[("100.0", "9")])),
        _line(1_100_000_000, {"stream": "btcusdt@bookTicker", "data": {
            "u": 6, "s": "BTCUSDT", "b": "100.0", "B": "1", "a": "101.0", "A": "1",
            "T": 1100, "E": 1100}}),
        # before the snapshot, straddles lastUpdateId 8: the first applied diff
        _line(1_500_000_000, _diff(6, 9, 5, 1500, bids=[("99.0", "3")], asks=[("103.0", "4")])),
        _line(1_600_000_000, {"lastUpdateId": 8, "E": 1400, "T": 1400,
                              "bids": [["100.0", "1"], ["99.0", "2"]],
                              "asks": [["101.0", "1"], ["102.0", "3"]]}),
        _line(1_700_000_000, _trade(11, 1700, "101.0", "0.5", False)),
        _line(1_800_000_000, _trade(12, 1800, "100.0", "0.25", True)),
        # quantity 0 deletes the best bid
        _line(2_500_000_000, _diff(10, 12, 9, 2500, bids=[("100.0", "0.000")],
                                   asks=[("101.0", "2")])),
        # pu 14 != previous u 12: a gap
        _line(3_500_000_000, _diff(15, 16, 14, 3500, bids=[("98.5", "1")])),
    ]


def write_gz(path, lines):
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_synthetic_futures_capture(tmp_path):
    path = write_gz(tmp_path / "usdm_test.gz", futures_lines())
    cap = read_capture(path, levels=2, interval_s=1.0)
    s = cap.stats
    assert s["market"] == "usdm" and s["market_source"] == "file name"
    assert s["diffs"] == 4 and s["diffs_buffered_before_snapshot"] == 2
    assert s["diffs_dropped_before_snapshot"] == 1
    assert s["diffs_applied"] == 3
    assert s["gaps"] == 1
    assert any("gap" in w and "line 8" in w for w in cap.warnings)
    assert s["level_updates"] == 5
    # grid from the first applied diff (1.5 s) to the last (3.5 s): 2 s and 3 s
    book = cap.book
    assert book["timestamp"].astype("int64").tolist() == [2_000_000_000, 3_000_000_000]
    # at 2 s: snapshot + diff on line 3 (99 -> 3, new ask level 103 beyond the 2 kept)
    row = book.iloc[0]
    assert [row.bid_price_0, row.bid_size_0, row.bid_price_1, row.bid_size_1] == [100, 1, 99, 3]
    assert [row.ask_price_0, row.ask_size_0, row.ask_price_1, row.ask_size_1] == [101, 1, 102, 3]
    # at 3 s: the 100 bid is gone (qty 0), one bid level left -> NaN padding
    row = book.iloc[1]
    assert [row.bid_price_0, row.bid_size_0] == [99, 3]
    assert np.isnan(row.bid_price_1) and np.isnan(row.bid_size_1)
    assert [row.ask_price_0, row.ask_size_0] == [101, 2]
    # best bid/ask after every applied diff, with its update id
    assert cap.top["update_id"].tolist() == [9, 12, 16]
    assert cap.top["bid_price"].tolist() == [100, 99, 99]
    assert cap.top["ask_price"].tolist() == [101, 101, 101]
    # trades: m=False -> buyer aggressor (+1), m=True -> seller aggressor (-1)
    assert cap.trades["side"].tolist() == [1, -1]
    assert cap.trades["quantity"].tolist() == [0.5, 0.25]
    assert cap.quote_update_ids.tolist() == [6]
    assert cap.quotes["timestamp"].astype("int64").tolist() == [1_100_000_000]


def test_synthetic_spot_capture_rules_and_quote_clock(tmp_path):
    offset_ns = 500_000_000            # exchange clock 0.5 s ahead of the recorder's
    lines = [
        _line(0, _diff(1, 8, None, 500, bids=[("100.0", "5")], spot=True)),   # u <= 8: dropped
        _line(100_000_000, _diff(9, 10, None, 600, asks=[("101.0", "0.00000000")], spot=True)),
        _line(150_000_000, {"lastUpdateId": 8, "bids": [["100.0", "1"]],
                            "asks": [["101.0", "1"], ["102.0", "2"]]}),
        _line(1_700_000_000 - offset_ns, _trade(1, 1700, "102.0", "1", False)),
        _line(1_800_000_000 - offset_ns, {"stream": "btcusdt@bookTicker", "data": {
            "u": 12, "s": "BTCUSDT", "b": "100.0", "B": "1", "a": "102.0", "A": "2"}}),
        _line(1_900_000_000, _diff(11, 12, None, 1800, bids=[("100.5", "1")], spot=True)),
        _line(2_000_000_000, _diff(14, 15, None, 2900, asks=[("102.0", "1")], spot=True)),  # gap
    ]
    path = write_gz(tmp_path / "capture.gz", lines)
    cap = read_capture(path, levels=3)
    s = cap.stats
    assert s["market"] == "spot" and s["market_source"] == "message fields"
    assert s["diffs_dropped_before_snapshot"] == 1 and s["diffs_applied"] == 3
    assert s["gaps"] == 1
    assert cap.top["ask_price"].tolist() == [102, 102, 102]     # 101 deleted by "0.00000000"
    assert cap.top["bid_price"].tolist() == [100, 100.5, 100.5]
    # the bookTicker has no exchange time: receive time + median (exchange - receive)
    assert s["clock_offset_ms"] == 500
    assert cap.quotes["timestamp"].astype("int64").tolist() == [1_800_000_000]
    # the same file under a misleading name: the diff fields win, with a warning
    misnamed = write_gz(tmp_path / "usdm_oops.gz", lines)
    cap2 = read_capture(misnamed, levels=3)
    assert cap2.stats["market"] == "spot"
    assert any("file name says 'usdm'" in w for w in cap2.warnings)
    # an explicit argument is obeyed without question
    cap3 = read_capture(misnamed, levels=3, market="spot")
    assert cap3.stats["market_source"] == "argument"
    assert not any("file name says" in w for w in cap3.warnings)


@pytest.mark.parametrize("bad, lineno", [
    ("this is not a capture line", 5),
    ('1723161255030314667 {"stream":"btcusdt@trade","data":{"e":"tra', 5),
    ("1723161255030314667", 5),
])
def test_garbage_line_is_a_data_error_naming_the_line(tmp_path, bad, lineno):
    lines = futures_lines()
    lines.insert(lineno - 1, bad)
    path = write_gz(tmp_path / "usdm_bad.gz", lines)
    with pytest.raises(DataError) as err:
        read_capture(path)
    assert err.value.rows == [lineno]
    assert f"line {lineno}" in str(err.value) and "usdm_bad.gz" in str(err.value)


def test_missing_field_is_a_data_error_naming_the_line(tmp_path):
    lines = futures_lines()
    lines[4] = lines[4].replace('"p":"101.0",', "")           # a trade without its price
    path = write_gz(tmp_path / "usdm_bad.gz", lines)
    with pytest.raises(DataError) as err:
        read_capture(path)
    assert err.value.rows == [5] and "'p'" in str(err.value)


def test_truncated_capture_keeps_the_complete_lines(tmp_path):
    text = ("\n".join(futures_lines()) + "\n").encode()
    cut = text[:-40]                                          # last line cut mid-write
    cap = read_capture(cut, name="usdm_cut")
    assert cap.stats["truncated_last_line"] == 1 and cap.stats["diffs"] == 3
    assert any("incomplete" in w for w in cap.warnings)
    # a gzip stream cut short: same, plus a warning about the stream
    whole = gzip.compress(text)
    cap = read_capture(whole[: len(whole) - 30], name="usdm_cut.gz")
    assert any("gzip stream ends early" in w for w in cap.warnings)
    assert cap.stats["trades"] == 2


def test_empty_and_non_capture_inputs(tmp_path):
    with pytest.raises(DataError, match="empty"):
        read_capture(b"", name="empty.gz")
    with pytest.raises(DataError) as err:
        read_capture(b"timestamp,price\n1,2\n", name="trades.csv")
    assert err.value.rows == [1]
    with pytest.raises(DataError, match="cannot read"):
        read_capture(tmp_path / "missing.gz")
    with pytest.raises(ValueError):
        read_capture(b"", market="kraken")


def test_capture_without_snapshot_keeps_trades_and_says_why_no_book(tmp_path):
    lines = [ln for ln in futures_lines() if "lastUpdateId" not in ln]
    cap = read_capture(write_gz(tmp_path / "usdm_nosnap.gz", lines))
    assert len(cap.book) == 0 and cap.stats["synced"] is False
    assert cap.stats["diffs_applied"] == 0 and cap.stats["diffs_buffered_before_snapshot"] == 4
    assert any("no REST depth snapshot" in w for w in cap.warnings)
    assert len(cap.trades) == 2 and len(cap.quotes) == 1
