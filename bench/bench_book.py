"""Benchmarks of the Binance capture replay and the walk-the-book kernel.

1. Replay of ../shared/data/binance-raw/usdm_btcusdt_20240808.gz (93,954 messages, ~443,000
   level updates) into trades, quotes and 1 s book snapshots of 20 levels, against the floor of
   any replay: gzip-decompress the same file and `orjson.loads` every line, keeping nothing.
2. Walk-the-book on random books, 1,000 sizes x 1,000 snapshots x 1,000 levels a side
   (200 each with quick=True): `walk_cost_bps` (one global searchsorted) against the obvious
   vectorised-per-snapshot version, a Python loop over snapshots doing cumsum + searchsorted on
   each row, on the same arrays. Both results are checked equal (1e-9 bps) before timing counts.
3. The shape of a long capture: 20,000 snapshots x 100 levels x 10 sizes (2,000 with quick),
   where the per-snapshot loop pays its Python overhead 20,000 times.
4. The same kernel on the real capture: 345 snapshots x 1,000 levels x 1,000 sizes (buys).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import orjson

from bench.common import best_of, row
from execal.models.data.binance import read_capture
from execal.models.data.book import book_arrays, walk_cost_bps

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EXECAL_SHARED_DATA", ROOT.parent / "shared" / "data"))
CAPTURE = SHARED / "binance-raw" / "usdm_btcusdt_20240808.gz"
REPLAY_FLOOR_S = 1.0
WALK_FLOOR_S = 0.5


def parse_only(path: Path) -> int:
    """Baseline: decompress and parse every message, nothing else."""
    n = 0
    for line in gzip.decompress(path.read_bytes()).split(b"\n"):
        if line:
            orjson.loads(line[line.find(b" ") + 1:])
            n += 1
    return n


def random_books(n_snap: int, n_lev: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    mid = 60_000 * np.exp(rng.normal(0, 0.01, n_snap))
    ask_px = mid[:, None] + 0.05 + np.cumsum(rng.exponential(0.5, (n_snap, n_lev)), axis=1)
    ask_sz = rng.lognormal(-1.0, 1.2, (n_snap, n_lev))
    return ask_px, ask_sz, mid


def walk_per_snapshot(px, sz, sizes, mid, side=1):
    """Baseline: the same arithmetic, one snapshot at a time."""
    out = np.full((px.shape[0], sizes.size), np.nan)
    for i in range(px.shape[0]):
        q = np.where(np.isfinite(sz[i]) & (sz[i] > 0), sz[i], 0.0)
        cum_q = np.concatenate(([0.0], np.cumsum(q)))
        cum_n = np.concatenate(([0.0], np.cumsum(np.where(q > 0, px[i] * q, 0.0))))
        k = np.minimum(np.searchsorted(cum_q[1:], sizes, side="left"), px.shape[1] - 1)
        vwap = (cum_n[k] + (sizes - cum_q[k]) * px[i, k]) / sizes
        vwap[sizes > cum_q[-1]] = np.nan
        out[i] = (vwap / mid[i] - 1.0) * 1e4 * side
    return out


def _check(fast, slow, what):
    if not (np.array_equal(np.isnan(fast), np.isnan(slow))
            and np.allclose(fast, slow, rtol=0, atol=1e-9, equal_nan=True)):
        raise AssertionError(f"{what}: walk_cost_bps disagrees with the per-snapshot loop")


def run(quick: bool = False) -> list[dict]:
    rows = []
    repeat = 2 if quick else 3

    # 1. replay
    base_s, n_msgs = best_of(lambda: parse_only(CAPTURE), repeat)
    replay_s, cap = best_of(lambda: read_capture(CAPTURE, interval_s=1.0, levels=20), repeat)
    s = cap.stats
    rows.append(row(
        "binance replay usdm_btcusdt (trades+quotes+1s book, 20 levels)", replay_s,
        floor_s=REPLAY_FLOOR_S, baseline="gzip+orjson parse only", baseline_s=base_s,
        note=f"{s['messages']:,} msgs ({n_msgs:,} parsed by baseline), "
             f"{s['level_updates']:,} level updates, {s['book_snapshots']} snapshots"))

    # 2. walk the book, synthetic
    n = 200 if quick else 1000
    px, sz, mid = random_books(n, n)
    sizes = np.linspace(0.01, float(np.median(sz.sum(axis=1))) * 1.2, n)  # some exhaust depth
    fast = walk_cost_bps(px, sz, sizes, mid, +1)
    _check(fast, walk_per_snapshot(px, sz, sizes, mid, +1), "random books")
    walk_s, _ = best_of(lambda: walk_cost_bps(px, sz, sizes, mid, +1), repeat)
    loop_s, _ = best_of(lambda: walk_per_snapshot(px, sz, sizes, mid, +1), repeat)
    rows.append(row(
        f"walk the book {n} sizes x {n} snapshots x {n} levels", walk_s,
        floor_s=WALK_FLOOR_S if not quick else None, baseline="per-snapshot numpy loop",
        baseline_s=loop_s, note=f"{int(np.isnan(fast).sum()):,} orders beyond depth (NaN)"))

    # 3. many snapshots, few sizes
    n_snap = 2000 if quick else 20_000
    px, sz, mid = random_books(n_snap, 100, seed=5)
    few = np.array([0.1, 0.5, 1, 2, 5, 10, 20, 30, 40, 60.0])
    _check(walk_cost_bps(px, sz, few, mid, -1), walk_per_snapshot(px, sz, few, mid, -1),
           "many snapshots")
    walk_s, _ = best_of(lambda: walk_cost_bps(px, sz, few, mid, -1), repeat)
    loop_s, _ = best_of(lambda: walk_per_snapshot(px, sz, few, mid, -1), repeat)
    rows.append(row(
        f"walk the book {few.size} sizes x {n_snap:,} snapshots x 100 levels", walk_s,
        baseline="per-snapshot numpy loop", baseline_s=loop_s, note="sells"))

    # 4. walk the book, real capture
    deep = read_capture(CAPTURE, interval_s=1.0, levels=1000).book
    _, _, ask_px, ask_sz = book_arrays(deep)
    real_mid = (deep["bid_price_0"].to_numpy() + deep["ask_price_0"].to_numpy()) / 2
    real_sizes = np.linspace(0.001, 50.0, 1000)
    fast = walk_cost_bps(ask_px, ask_sz, real_sizes, real_mid, +1)
    _check(fast, walk_per_snapshot(ask_px, ask_sz, real_sizes, real_mid, +1), "usdm_btcusdt")
    walk_s, _ = best_of(lambda: walk_cost_bps(ask_px, ask_sz, real_sizes, real_mid, +1), repeat)
    loop_s, _ = best_of(lambda: walk_per_snapshot(ask_px, ask_sz, real_sizes, real_mid, +1),
                        repeat)
    rows.append(row(
        f"walk the book usdm_btcusdt {len(deep)} snapshots x 1000 levels x 1000 sizes", walk_s,
        baseline="per-snapshot numpy loop", baseline_s=loop_s,
        note=f"median cost of 50 BTC buy {np.nanmedian(fast[:, -1]):.2f} bps"))
    return rows
