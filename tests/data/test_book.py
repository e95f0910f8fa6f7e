"""Walk-the-book cost: hand-computed books, edge cases, a naive reference, and real Binance data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from execal.models.data.book import book_arrays, market_impact_curve, walk_book, walk_cost_bps

# one snapshot: bids 99 x 2, 98 x 1; asks 100 x 1, 101 x 2, 102 x 3; mid 99.5
ASK_PX = np.array([[100.0, 101.0, 102.0]])
ASK_SZ = np.array([[1.0, 2.0, 3.0]])
BID_PX = np.array([[99.0, 98.0, np.nan]])
BID_SZ = np.array([[2.0, 1.0, np.nan]])
MID = np.array([99.5])


def bps(vwap: float, mid: float = 99.5, side: int = 1) -> float:
    return (vwap / mid - 1.0) * 1e4 * side


def naive_cost(px_row, sz_row, size, mid, side):
    """Reference: walk level by level in plain Python."""
    remaining, notional = size, 0.0
    for p, q in zip(px_row, sz_row):
        if not (q > 0) or not np.isfinite(p):
            continue
        take = min(q, remaining)
        notional += take * p
        remaining -= take
        if remaining <= 0:
            return (notional / size / mid - 1.0) * 1e4 * side
    return np.nan


def random_books(rng, n_snap, n_lev, max_pad=5):
    mid = 100 + rng.normal(0, 1, n_snap)
    ticks = rng.uniform(0.01, 0.2, (n_snap, n_lev))
    ask_px = mid[:, None] + 0.005 + np.cumsum(ticks, axis=1)
    ask_sz = rng.exponential(1.0, (n_snap, n_lev))
    pad = rng.integers(0, max_pad + 1, n_snap)        # NaN-padded tail of varying length
    for i, k in enumerate(pad):
        if k:
            ask_px[i, -k:] = np.nan
            ask_sz[i, -k:] = np.nan
    return ask_px, ask_sz, mid


def test_hand_computed_buys():
    sizes = np.array([0.5, 1.0, 2.0, 3.0, 4.5, 6.0])
    cost = walk_cost_bps(ASK_PX, ASK_SZ, sizes, MID, +1)
    expected = [bps(100.0), bps(100.0), bps((100 + 101) / 2), bps((100 + 202) / 3),
                bps((100 + 202 + 102 * 1.5) / 4.5), bps((100 + 202 + 306) / 6)]
    assert cost.shape == (1, 6)
    np.testing.assert_allclose(cost[0], expected, rtol=0, atol=1e-9)


def test_hand_computed_sells_walk_the_bids_and_are_positive():
    cost = walk_cost_bps(BID_PX, BID_SZ, np.array([1.0, 2.0, 2.5, 3.0]), MID, -1)
    expected = [bps(99.0, side=-1), bps(99.0, side=-1), bps((198 + 49) / 2.5, side=-1),
                bps((198 + 98) / 3, side=-1)]
    np.testing.assert_allclose(cost[0], expected, rtol=0, atol=1e-9)
    assert (cost > 0).all()


def test_size_exactly_at_a_level_boundary_is_continuous():
    # cum depth is 1, 3, 6: an order of exactly 3 consumes levels 0-1 and nothing of level 2
    eps = 1e-9
    c = walk_cost_bps(ASK_PX, ASK_SZ, np.array([3.0 - eps, 3.0, 3.0 + eps]), MID, +1)[0]
    assert c[1] == pytest.approx(bps(302 / 3), abs=1e-9)
    assert abs(c[0] - c[1]) < 1e-6 and abs(c[2] - c[1]) < 1e-6
    assert c[0] <= c[1] <= c[2]


def test_partial_last_level():
    # 1.25 units: 1 at 100 and 0.25 at 101
    c = walk_cost_bps(ASK_PX, ASK_SZ, np.array([1.25]), MID, +1)[0, 0]
    assert c == pytest.approx(bps((100 + 0.25 * 101) / 1.25), abs=1e-9)


def test_beyond_visible_depth_is_nan_and_counted():
    w = walk_book(BID_PX, BID_SZ, np.array([3.0, 3.0001, 10.0]), MID, -1)
    assert np.isfinite(w.cost_bps[0, 0])
    assert np.isnan(w.cost_bps[0, 1:]).all()
    assert w.exhausted.tolist() == [[False, True, True]]
    assert w.n_exhausted == 2
    assert w.depth.tolist() == [3.0]


def test_empty_side_and_nan_mid_give_nan():
    px = np.vstack([ASK_PX, np.full((1, 3), np.nan)])
    sz = np.vstack([ASK_SZ, np.full((1, 3), np.nan)])
    w = walk_book(px, sz, np.array([0.5]), np.array([np.nan, 99.5]), +1)
    assert np.isnan(w.cost_bps).all()             # row 0: no mid; row 1: no depth
    assert w.exhausted.tolist() == [[False], [True]]


def test_rejects_bad_sizes():
    with pytest.raises(ValueError):
        walk_cost_bps(ASK_PX, ASK_SZ, np.array([1.0, 0.0]), MID)
    with pytest.raises(ValueError):
        walk_cost_bps(ASK_PX, ASK_SZ, np.array([1.0]), MID, side=0)


def test_matches_naive_reference_on_random_books():
    rng = np.random.default_rng(7)
    ask_px, ask_sz, mid = random_books(rng, 60, 25)
    sizes = np.concatenate([rng.uniform(0.01, 30.0, 40), [1e-6, 25.0, 100.0]])
    fast = walk_cost_bps(ask_px, ask_sz, sizes, mid, +1)
    slow = np.array([[naive_cost(ask_px[i], ask_sz[i], s, mid[i], +1) for s in sizes]
                     for i in range(len(mid))])
    assert np.array_equal(np.isnan(fast), np.isnan(slow))
    assert np.isnan(slow).any() and np.isfinite(slow).any()      # both regimes exercised
    np.testing.assert_allclose(fast[np.isfinite(slow)], slow[np.isfinite(slow)],
                               rtol=0, atol=1e-9)
    # the same book mirrored into bids, walked as sells
    bid_px = 2 * mid[:, None] - ask_px
    fast_sell = walk_cost_bps(bid_px, ask_sz, sizes, mid, -1)
    slow_sell = np.array([[naive_cost(bid_px[i], ask_sz[i], s, mid[i], -1) for s in sizes]
                          for i in range(len(mid))])
    np.testing.assert_allclose(fast_sell, slow_sell, rtol=0, atol=1e-9)   # NaN == NaN here


def test_unsorted_sizes_come_back_in_the_callers_order():
    rng = np.random.default_rng(5)
    ask_px, ask_sz, mid = random_books(rng, 30, 20)
    sizes = rng.uniform(0.01, 25.0, 50)                 # shuffled, some beyond depth
    order = np.argsort(sizes)
    w = walk_book(ask_px, ask_sz, sizes, mid, +1)
    w_sorted = walk_book(ask_px, ask_sz, sizes[order], mid, +1)
    np.testing.assert_array_equal(w.cost_bps[:, order], w_sorted.cost_bps)
    np.testing.assert_array_equal(w.exhausted[:, order], w_sorted.exhausted)
    assert w.exhausted.any() and not w.exhausted.all()


def test_cost_is_non_decreasing_in_size():
    rng = np.random.default_rng(11)
    ask_px, ask_sz, mid = random_books(rng, 200, 40)
    sizes = np.sort(rng.uniform(0.001, 50.0, 300))
    cost = walk_cost_bps(ask_px, ask_sz, sizes, mid, +1)
    d = np.diff(cost, axis=1)
    assert (d[np.isfinite(d)] >= -1e-9).all()          # rounding only, no real decrease
    # once exhausted, stays exhausted
    nan = np.isnan(cost)
    assert (nan[:, :-1] <= nan[:, 1:]).all()


def _book_frame():
    return pd.DataFrame({
        "timestamp": pd.to_datetime([1_700_000_000_000, 1_700_000_001_000], unit="ms", utc=True),
        "symbol": ["BTCUSDT", "BTCUSDT"], "venue": ["binance-usdm", "binance-usdm"],
        "bid_price_0": [99.0, 99.0], "bid_price_1": [98.0, np.nan],
        "bid_size_0": [2.0, 1.0], "bid_size_1": [1.0, np.nan],
        "ask_price_0": [100.0, 100.0], "ask_price_1": [101.0, 101.0],
        "ask_size_0": [1.0, 1.0], "ask_size_1": [2.0, 0.5],
    })


def test_book_arrays_shapes_and_padding():
    bid_px, bid_sz, ask_px, ask_sz = book_arrays(_book_frame())
    assert bid_px.shape == bid_sz.shape == ask_px.shape == ask_sz.shape == (2, 2)
    assert bid_px.dtype == np.float64
    assert np.isnan(bid_px[1, 1]) and ask_sz[1, 1] == 0.5
    with pytest.raises(ValueError):
        book_arrays(pd.DataFrame({"timestamp": [], "symbol": []}))


def test_market_impact_curve_tidy_frame():
    book = _book_frame()
    curve = market_impact_curve(book, [1.0, 2.0], side="both")
    assert list(curve.columns) == ["timestamp", "symbol", "venue", "side", "size", "notional",
                                   "cost_bps", "half_spread_bps", "depth_fraction",
                                   "depth_exhausted"]
    assert len(curve) == 2 * 2 * 2
    assert curve["side"].dtype == np.int8
    assert curve["timestamp"].dtype == book["timestamp"].dtype
    assert curve["timestamp"].iloc[-1] == book["timestamp"].iloc[1]
    buy = curve[curve.side == 1].reset_index(drop=True)
    sell = curve[curve.side == -1].reset_index(drop=True)
    # snapshot 0, buy 2: 1 @ 100 + 1 @ 101
    assert buy.loc[1, "cost_bps"] == pytest.approx(bps(100.5), abs=1e-9)
    assert buy.loc[1, "depth_fraction"] == pytest.approx(2 / 3)
    assert buy.loc[0, "notional"] == pytest.approx(99.5)
    assert buy.loc[0, "half_spread_bps"] == pytest.approx(0.5 / 99.5 * 1e4)
    # snapshot 1: the bid side holds 1 unit only, the ask side 1.5
    assert sell.loc[3, "depth_exhausted"] and np.isnan(sell.loc[3, "cost_bps"])
    assert buy.loc[3, "depth_exhausted"] and not buy.loc[2, "depth_exhausted"]
    assert curve.attrs["depth_exhausted"] == 2
    assert (curve["symbol"] == "BTCUSDT").all()
    only_sell = market_impact_curve(book, [1.0], side="sell")
    assert set(only_sell["side"]) == {-1}
    with pytest.raises(ValueError):
        market_impact_curve(book, [1.0], side="up")


# --- real data --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def usdm_deep_book(shared_data):
    from execal.models.data.binance import read_capture
    cap = read_capture(shared_data / "binance-raw" / "usdm_btcusdt_20240808.gz", levels=1000)
    return cap.book


@pytest.mark.shared_data
def test_real_btcusdt_costs_are_positive_increasing_and_plausible(usdm_deep_book):
    sizes = np.array([0.01, 0.1, 1.0, 5.0, 10.0, 20.0, 50.0])
    curve = market_impact_curve(usdm_deep_book, sizes, side="both")
    assert curve.attrs["depth_exhausted"] == 0          # 1000 levels hold > 50 BTC a side
    assert (curve["cost_bps"] > 0).all()
    # a market order never does better than the touch: cost >= half spread
    over = curve["cost_bps"] - curve["half_spread_bps"]
    assert (over >= -1e-9).all()
    for s in (1, -1):
        wide = curve[curve.side == s].pivot(index="timestamp", columns="size", values="cost_bps")
        assert (np.diff(wide.to_numpy(), axis=1) >= -1e-9).all()
        med = wide.median()
        # BTCUSDT perp, 8 Aug 2024: one tick (0.1 USD) wide, so a 0.01 BTC order pays the
        # half spread 0.0081 bps; 1 BTC still mostly fills at the touch; 50 BTC ~2.5-3 bps
        assert med[0.01] == pytest.approx(0.05 / 61_800 * 1e4, rel=0.05)
        assert 0.0 < med[1.0] < 0.1
        assert 0.2 < med[10.0] < 2.0
        assert 1.0 < med[50.0] < 6.0
        one_btc_over = over[(curve.side == s) & (curve["size"] == 1.0)]
        assert one_btc_over.max() < 2.0                 # never > 2 bps beyond the half spread


@pytest.mark.shared_data
def test_coinm_book_walks_in_coins(shared_data):
    from execal.models.data.binance import read_capture
    cap = read_capture(shared_data / "binance-raw" / "cm_btcusd_perp_20240808.gz", levels=200)
    curve = market_impact_curve(cap.book, [0.1, 1.0], side="buy")
    assert curve.attrs["size_unit"].startswith("base")
    assert (curve["cost_bps"].dropna() > 0).all()
    # 1 BTC = ~618 contracts: deep enough on the inverse perp, costs in the same bps range
    assert curve.loc[curve["size"] == 1.0, "cost_bps"].median() < 5.0
