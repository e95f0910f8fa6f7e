"""The incremental book (models/data/orderbook.py) and the live market state's one-second samples.

The reference is the file reader (`read_capture`): fed the same capture one message at a time,
the online book sampled on the same grid must equal the offline rebuild at every snapshot of
every shared capture (prices and sizes exactly, COIN-M sizes converted to coins the same way).
The update-id rules are checked on small hand-made streams: buffering, dropping what the snapshot
contains, the straddle rule, gaps (resync vs keep applying), out-of-order diffs, the bounded buffer.
"""
from __future__ import annotations

import gzip

import numpy as np
import orjson
import pytest

from execal.models.data.binance import read_capture
from execal.models.data.orderbook import APPLIED, BUFFERED, DROPPED, GAP, OUT_OF_ORDER, OrderBook
from execal.models.live.market import MarketState

CAPTURES = {"usdm_btcusdt_20240808.gz": "usdm", "usdm_ethusdt_20240808.gz": "usdm",
            "spot_btcusdt_20240808.gz": "spot", "cm_btcusd_perp_20240808.gz": "coinm"}
L = 20


def replay_lines(path, state: MarketState):
    """Feed a capture through the market state, message by message, as the live client does."""
    with gzip.open(path, "rb") as fh:
        for line in fh:
            msg = orjson.loads(line[line.index(b" ") + 1:])
            stream = msg.get("stream")
            if stream is None:
                state.on_snapshot(msg)
                continue
            data = msg["data"]
            channel = stream.partition("@")[2]
            if channel.startswith("depth"):
                state.on_diff(data)
            elif channel == "bookTicker":
                state.on_ticker(data["b"], data["a"], data.get("T"))
            elif channel == "trade":
                state.on_trade(float(data["p"]), float(data["q"]), data["T"] * 1_000_000)
    state.finish()


@pytest.mark.shared_data
@pytest.mark.parametrize("fname", list(CAPTURES))
def test_online_book_equals_offline_rebuild_at_every_snapshot(shared_data, fname):
    path = shared_data / "binance-raw" / fname
    offline = read_capture(path, levels=L, interval_s=1.0)
    state = MarketState("v", "s", CAPTURES[fname], levels=L, sample_levels=L, resync=False,
                        history=100_000)
    replay_lines(path, state)
    ticks = list(state.ticks)
    book = offline.book
    t_off = book["timestamp"].dt.tz_localize(None).to_numpy().astype(np.int64)
    t_on = np.array([t["t_ns"] for t in ticks], dtype=np.int64)
    assert len(book) > 300                       # six minutes on a one-second grid
    np.testing.assert_array_equal(t_on, t_off)
    for prefix, k in (("bid_price", 0), ("bid_size", 1), ("ask_price", 2), ("ask_size", 3)):
        off = book[[f"{prefix}_{i}" for i in range(L)]].to_numpy()
        on = np.array([t["levels"][k] for t in ticks])
        np.testing.assert_array_equal(on, off, err_msg=f"{fname} {prefix}")
    assert state.book.counts["gaps"] == offline.stats["gaps"] == 0
    assert state.book.counts["applied"] == offline.stats["diffs_applied"]
    assert state.book.counts["dropped_before_snapshot"] == offline.stats["diffs_dropped_before_snapshot"]
    # the features of the last tick are those of the last sampled book
    last = ticks[-1]
    bp, bs, ap, as_ = last["levels"]
    assert last["mid"] == pytest.approx((bp[0] + ap[0]) / 2)
    assert last["spread_bps"] == pytest.approx((ap[0] - bp[0]) / last["mid"] * 1e4)


@pytest.mark.shared_data
def test_depth_and_walk_cost_of_a_tick_match_a_direct_computation(shared_data):
    path = shared_data / "binance-raw" / "usdm_btcusdt_20240808.gz"
    state = MarketState("v", "s", "usdm", levels=200, sample_levels=200, depth_bps=(5.0,),
                        walk_sizes=(0.5, 5.0), resync=False)
    replay_lines(path, state)
    tick = state.ticks[-1]
    bp, bs, ap, as_ = tick["levels"]
    mid = tick["mid"]
    # depth within 5 bps: a direct loop over the levels
    want_b = sum(q for p, q in zip(bp, bs) if p >= mid * (1 - 5e-4))
    want_a = sum(q for p, q in zip(ap, as_) if p <= mid * (1 + 5e-4))
    assert tick["depth_bid_5bps"] == pytest.approx(want_b, rel=1e-12)
    assert tick["depth_ask_5bps"] == pytest.approx(want_a, rel=1e-12)
    assert want_b > 0 and want_a > 0
    # walk the asks by hand: VWAP of the levels consumed
    for size, got in zip((0.5, 5.0), tick["walk_buy_bps"]):
        left, notional = size, 0.0
        for p, q in zip(ap, as_):
            take = min(left, q)
            notional += take * p
            left -= take
            if left <= 0:
                break
        assert got == pytest.approx((notional / size / mid - 1) * 1e4, rel=1e-9)


def diff(U, u, pu=None, b=(), a=(), T=1000):
    d = {"e": "depthUpdate", "E": T, "T": T, "s": "X", "U": U, "u": u, "b": [list(x) for x in b],
         "a": [list(x) for x in a]}
    if pu is not None:
        d["pu"] = pu
    return d


SNAP = {"lastUpdateId": 100, "bids": [["10.0", "1.0"], ["9.0", "2.0"]],
        "asks": [["11.0", "1.5"], ["12.0", "3.0"]]}


def test_futures_rules_buffer_drop_straddle_chain():
    book = OrderBook("usdm", resync=True)
    assert book.on_diff(diff(90, 95, 89)) == BUFFERED          # before the snapshot
    assert book.on_diff(diff(96, 101, 95, b=[("10.0", "0")])) == BUFFERED
    statuses = book.on_snapshot(SNAP)
    # futures: u < lastUpdateId is inside the snapshot; the next one straddles 100
    assert statuses == [DROPPED, APPLIED]
    assert book.best_bid == 9.0 and book.best_ask == 11.0
    assert book.on_diff(diff(102, 105, 101, a=[("10.5", "0.2")])) == APPLIED
    assert book.best_ask == 10.5
    assert book.on_diff(diff(103, 104, 101)) == OUT_OF_ORDER     # not newer than 105
    # a gap (pu != previous u): stop, buffer, ask for a snapshot
    assert book.on_diff(diff(110, 112, 108)) == GAP
    assert book.needs_snapshot and book.counts["gaps"] == 1
    assert book.on_diff(diff(113, 115, 112, b=[("9.5", "4")])) == BUFFERED
    fresh = {"lastUpdateId": 113, "bids": [["9.0", "2.0"]], "asks": [["11.0", "1.0"]]}
    assert book.on_snapshot(fresh) == [DROPPED, APPLIED]
    assert book.ready and book.best_bid == 9.5 and book.prev_u == 115
    assert book.counts["out_of_order"] == 1


def test_spot_rules_and_snapshot_older_than_the_stream():
    book = OrderBook("spot", resync=True)
    book.on_diff(diff(90, 100))                    # u <= lastUpdateId: inside the snapshot
    book.on_diff(diff(101, 103, b=[("10.0", "5")]))
    assert book.on_snapshot(SNAP) == [DROPPED, APPLIED]
    assert book.bids[10.0] == 5.0
    assert book.on_diff(diff(104, 104)) == APPLIED
    assert book.on_diff(diff(106, 107)) == GAP      # U must be previous u + 1
    # a snapshot older than the buffered diffs cannot start the book: another gap
    assert book.on_snapshot({"lastUpdateId": 100, "bids": [], "asks": []}) == [GAP]
    assert book.needs_snapshot and book.counts["gaps"] == 2


def test_offline_mode_counts_gaps_and_keeps_applying():
    book = OrderBook("usdm", resync=False)
    book.on_snapshot(SNAP)
    assert book.on_diff(diff(100, 101, 99)) == APPLIED
    book.on_diff(diff(105, 106, 103, b=[("9.9", "1")]))     # gap: counted, applied
    assert book.counts["gaps"] == 1 and book.bids[9.9] == 1.0 and not book.needs_snapshot


def test_pending_buffer_is_bounded_and_counts_overflow():
    book = OrderBook("usdm", max_pending=3)
    for i in range(10):
        book.on_diff(diff(i, i, i - 1))
    assert len(book.pending) == 3 and book.counts["pending_overflow"] == 7


def test_snapshot_round_trip_serves_the_same_book():
    book = OrderBook("usdm")
    book.on_snapshot(SNAP)
    book.on_diff(diff(100, 101, 99, b=[("10.5", "0.7")], a=[("12.0", "0")]))
    snap = book.snapshot()
    assert snap["lastUpdateId"] == 101
    assert snap["bids"][0] == ["10.5", "0.7"] and snap["asks"] == [["11.0", "1.5"]]
    other = OrderBook("usdm")
    other.on_snapshot(snap)
    assert other.bids == book.bids and other.asks == book.asks
    assert other.depth_within(1e4) == (pytest.approx(1.0 + 2.0 + 0.7), pytest.approx(1.5))
