"""Walk the book: what a market order of a given size costs against recorded order-book snapshots.

A market buy of size Q lifts the asks from the best level outwards until Q is filled; its
average price is the VWAP of the levels it consumed (the last one partly). Its cost against the
mid is `(VWAP / mid - 1) * 1e4 * side` bps (side +1 buy, -1 sell), which is the half spread for
a tiny order and grows with size. This is the "visible liquidity" impact curve that the
execution-cost models in execal are compared with.

The kernel is vectorised over snapshots AND sizes: cumulative quantity and notional over levels,
then ONE `np.searchsorted` over the flattened cumulative quantities of all snapshots, each row
shifted by `row * (max_depth + 1)` so the flattened array is globally sorted and a query can
only land in its own row. No Python loop over snapshots.

Sizes are in base units (coins; `models.binance` already converts COIN-M contracts). An order
larger than the visible depth gets NaN and is counted: its cost is unknown, never extrapolated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.schema import book_levels

_SIDES = {"buy": (1,), "sell": (-1,), "both": (1, -1), 1: (1,), -1: (-1,)}


def book_arrays(book: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """bid_px, bid_sz, ask_px, ask_sz of a wide "book" frame, each (n_snapshots, n_levels)
    float64, level 0 the best; missing levels stay NaN."""
    n_levels = book_levels(book)
    if n_levels == 0:
        raise ValueError("book frame has no bid_price_0/ask_price_0 columns")
    missing = [f"{s}_size_{i}" for s in ("bid", "ask") for i in range(n_levels)
               if f"{s}_size_{i}" not in book.columns]
    if missing:
        raise ValueError(f"book frame lacks size columns: {', '.join(missing[:5])}")

    def block(prefix: str) -> np.ndarray:
        cols = [f"{prefix}_{i}" for i in range(n_levels)]
        return book[cols].to_numpy(dtype=np.float64, na_value=np.nan)

    return block("bid_price"), block("bid_size"), block("ask_price"), block("ask_size")


@dataclass(frozen=True)
class Walk:
    """Result of walking one side of the book with several order sizes.

    cost_bps, vwap: (n_snapshots, n_sizes), NaN where the order exceeds the visible depth or the
    side is empty; exhausted: the same shape, True where the order exceeds the visible depth;
    depth: (n_snapshots,) visible quantity on that side.
    """
    cost_bps: np.ndarray
    vwap: np.ndarray
    exhausted: np.ndarray
    depth: np.ndarray

    @property
    def n_exhausted(self) -> int:
        return int(self.exhausted.sum())


def walk_book(px: np.ndarray, sz: np.ndarray, sizes, mid: np.ndarray, side: int = +1) -> Walk:
    """Walk one side (px, sz: (n_snapshots, n_levels), level 0 best) with market orders of
    each of `sizes` (base units, > 0) and price them against `mid` (n_snapshots,).

    NaN or non-positive sizes in the book count as empty levels (NaN padding)."""
    px = np.asarray(px, dtype=np.float64)
    sz = np.asarray(sz, dtype=np.float64)
    if px.ndim != 2 or px.shape != sz.shape:
        raise ValueError(f"px and sz must be 2-D of the same shape, got {px.shape} and {sz.shape}")
    sizes = np.atleast_1d(np.asarray(sizes, dtype=np.float64))
    if sizes.ndim != 1 or not np.all(sizes > 0):
        raise ValueError("sizes must be a 1-D array of positive numbers")
    mid = np.broadcast_to(np.asarray(mid, dtype=np.float64), (px.shape[0],))
    if side not in (1, -1):
        raise ValueError(f"side must be +1 (buy) or -1 (sell), got {side!r}")
    n_snap, n_lev = px.shape
    n_size = sizes.size
    if n_lev == 0 or n_snap == 0:
        empty = np.full((n_snap, n_size), np.nan)
        return Walk(empty, empty.copy(), np.ones((n_snap, n_size), bool), np.zeros(n_snap))

    usable = (sz > 0) & np.isfinite(px)
    qty = np.where(usable, sz, 0.0)
    # a leading zero column so that "cumulative before level k" is column k
    cum_qty = np.zeros((n_snap, n_lev + 1))
    np.cumsum(qty, axis=1, out=cum_qty[:, 1:])
    cum_notional = np.zeros((n_snap, n_lev + 1))
    np.cumsum(np.where(usable, px * qty, 0.0), axis=1, out=cum_notional[:, 1:])
    depth = cum_qty[:, -1]

    # one global search: row i's cumulative quantities shifted by i * (max depth + 1)
    stride = float(depth.max()) + 1.0
    offset = np.arange(n_snap, dtype=np.float64) * stride
    haystack = (cum_qty[:, 1:] + offset[:, None]).ravel()
    needles = (sizes[None, :] + offset[:, None]).ravel()
    pos = np.searchsorted(haystack, needles, side="left").reshape(n_snap, n_size)
    # level that fills the last unit; the offset's rounding can only push it one row over
    level = pos - (np.arange(n_snap) * n_lev)[:, None]
    np.clip(level, 0, n_lev - 1, out=level)

    rows = np.arange(n_snap)[:, None]
    before_qty = cum_qty[rows, level]
    before_notional = cum_notional[rows, level]
    last_px = px[rows, level]
    notional = before_notional + (sizes[None, :] - before_qty) * last_px
    exhausted = sizes[None, :] > depth[:, None]       # exact test, not the shifted one
    vwap = notional / sizes[None, :]
    vwap[exhausted] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        cost = (vwap / mid[:, None] - 1.0) * 1e4 * side
    return Walk(cost_bps=cost, vwap=vwap, exhausted=exhausted, depth=depth)


def walk_cost_bps(px: np.ndarray, sz: np.ndarray, sizes: np.ndarray, mid: np.ndarray,
                  side: int = +1) -> np.ndarray:
    """Cost in bps of a market order of each size against each snapshot, (n_snap, n_sizes):
    `(VWAP / mid - 1) * 1e4 * side`. side=+1 buys walk the asks, -1 sells walk the bids.
    Beyond the visible depth: NaN (use `walk_book(...).n_exhausted` to count them)."""
    return walk_book(px, sz, sizes, mid, side).cost_bps


def market_impact_curve(book: pd.DataFrame, sizes, side: str | int = "both") -> pd.DataFrame:
    """Tidy impact curve of a wide book frame: one row per snapshot, side and size.

    Columns: timestamp, symbol, venue, side (+1 buy / -1 sell, int8), size (base units),
    notional (size * mid, quote currency), cost_bps, half_spread_bps, depth_fraction (size as a
    fraction of the visible depth on that side), depth_exhausted (bool; cost_bps is NaN).
    `attrs["depth_exhausted"]` counts the exhausted rows.
    """
    key = side.lower() if isinstance(side, str) else side
    if key not in _SIDES:
        raise ValueError(f"side must be 'buy', 'sell' or 'both', got {side!r}")
    sizes = np.atleast_1d(np.asarray(sizes, dtype=np.float64))
    bid_px, bid_sz, ask_px, ask_sz = book_arrays(book)
    best_bid, best_ask = bid_px[:, 0], ask_px[:, 0]
    mid = (best_bid + best_ask) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        half_spread_bps = (best_ask - best_bid) / 2.0 / mid * 1e4
    n_snap, n_size = len(book), sizes.size
    frames = []
    for s in _SIDES[key]:
        walk = walk_book(ask_px, ask_sz, sizes, mid, +1) if s > 0 else \
            walk_book(bid_px, bid_sz, sizes, mid, -1)
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = sizes[None, :] / walk.depth[:, None]
        snap = np.repeat(np.arange(n_snap), n_size)
        frames.append(pd.DataFrame({
            "timestamp": _column(book, "timestamp", snap),
            "symbol": _column(book, "symbol", snap),
            "venue": _column(book, "venue", snap),
            "side": np.full(n_snap * n_size, s, dtype=np.int8),
            "size": np.tile(sizes, n_snap),
            "notional": (mid[:, None] * sizes[None, :]).ravel(),
            "cost_bps": walk.cost_bps.ravel(),
            "half_spread_bps": half_spread_bps[snap],
            "depth_fraction": fraction.ravel(),
            "depth_exhausted": walk.exhausted.ravel(),
        }))
    out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    out.attrs["depth_exhausted"] = int(out["depth_exhausted"].sum())
    out.attrs["size_unit"] = book.attrs.get("size_unit", "base")
    return out


def _column(book: pd.DataFrame, name: str, snap: np.ndarray) -> pd.Series:
    """Column `name` repeated per (snapshot, size) row, dtype kept; missing -> NA strings."""
    if name not in book.columns:
        return pd.Series(pd.NA, index=range(len(snap)), dtype="str")
    return book[name].iloc[snap].reset_index(drop=True)
