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

Sizes are in base units (coins; `execal.models.data.binance` already converts COIN-M contracts). An order
larger than the visible depth gets NaN and is counted: its cost is unknown, never extrapolated.

`BookEvents` is the book *event by event* (the state after every applied update, first L levels a
side), which order-flow measures (OFI, resilience) need and a sampled snapshot frame cannot give;
`levels_matrix` turns the replay's ragged per-event level lists into its (n, L) arrays in bulk.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from execal.models.data.schema import book_levels

_SIDES = {"buy": (1,), "sell": (-1,), "both": (1, -1), 1: (1,), -1: (-1,)}


@dataclass(frozen=True, eq=False)
class BookEvents:
    """The order book after every update event, first `levels` levels a side (level 0 the best).

    t_ns (n,) int64 exchange time of each event (non-decreasing), update_id (n,) int64 the
    exchange's last update id in the event, and bid_px, bid_sz, ask_px, ask_sz (n, levels) float64
    (NaN where a side has fewer levels). Sizes in base units. Read-only arrays.
    """
    t_ns: np.ndarray
    update_id: np.ndarray
    bid_px: np.ndarray
    bid_sz: np.ndarray
    ask_px: np.ndarray
    ask_sz: np.ndarray
    size_unit: str = "base"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.t_ns)
        for name in ("bid_px", "bid_sz", "ask_px", "ask_sz"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.ndim != 2 or a.shape[0] != n or a.shape != np.shape(self.bid_px):
                raise ValueError(f"BookEvents.{name} must be (n_events, levels), got {a.shape}")
        for name in ("t_ns", "update_id", "bid_px", "bid_sz", "ask_px", "ask_sz"):
            a = np.asarray(getattr(self, name))
            if a.flags.writeable:
                a = a.view()
                a.flags.writeable = False
            object.__setattr__(self, name, a)

    def __len__(self) -> int:
        return len(self.t_ns)

    @property
    def levels(self) -> int:
        return int(self.bid_px.shape[1])

    @property
    def mid(self) -> np.ndarray:
        return (self.bid_px[:, 0] + self.ask_px[:, 0]) / 2.0

    @property
    def spread(self) -> np.ndarray:
        return self.ask_px[:, 0] - self.bid_px[:, 0]

    def depth(self, levels: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(bid depth, ask depth) summed over the first `levels` levels (all when None)."""
        k = self.levels if levels is None else int(levels)
        return (np.nansum(self.bid_sz[:, :k], axis=1), np.nansum(self.ask_sz[:, :k], axis=1))

    def asof(self, t_ns, *, strict: bool = False) -> np.ndarray:
        """Index of the book state in force at each time (the last event at or before it; strictly
        before with `strict`); -1 before the first event."""
        side = "left" if strict else "right"
        return np.searchsorted(self.t_ns, np.asarray(t_ns, dtype=np.int64), side=side) - 1


def levels_matrix(prices, quantities, counts, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """(price, size) arrays (n, levels), NaN-padded, from flat per-event level lists: event i
    holds `counts[i]` (<= levels) consecutive entries of `prices` (floats, best first) and
    `quantities` (numbers or decimal strings as the exchange sent them). One Arrow string -> float
    cast for all quantities and one scatter for all rows: no per-event loop."""
    counts = np.asarray(counts, dtype=np.int64)
    n = counts.size
    px = np.full((n, levels), np.nan)
    sz = np.full((n, levels), np.nan)
    total = int(counts.sum())
    if total == 0:
        return px, sz
    if len(prices) != total or len(quantities) != total or counts.max() > levels:
        raise ValueError("levels_matrix: counts do not match the flat price / quantity lists")
    flat_px = np.asarray(prices, dtype=np.float64)
    if isinstance(quantities[0], str):
        flat_sz = pc.cast(pa.array(quantities, type=pa.string()), pa.float64()).to_numpy(
            zero_copy_only=False)
    else:
        flat_sz = np.asarray(quantities, dtype=np.float64)
    if total == n * levels:                       # every event had all its levels: a reshape
        return flat_px.reshape(n, levels).copy(), flat_sz.reshape(n, levels).copy()
    rows = np.repeat(np.arange(n), counts)
    cols = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    px[rows, cols] = flat_px
    sz[rows, cols] = flat_sz
    return px, sz


def walk_each(px: np.ndarray, sz: np.ndarray, sizes, mid, side: int | np.ndarray = +1) -> np.ndarray:
    """Cost in bps of ONE market order per row: row i of (px, sz) (n, levels; level 0 the best;
    asks for buys, bids for sells) walked with `sizes[i]` and priced against `mid[i]`:
    `(VWAP / mid − 1)·1e4·side` (side a scalar or one per row). The per-row twin of `walk_book`
    (which prices every size against every snapshot): a child order of a schedule meets one book.
    NaN beyond the visible depth; NaN or non-positive sizes in the book count as empty levels."""
    px = np.asarray(px, dtype=np.float64)
    sz = np.asarray(sz, dtype=np.float64)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1)
    if px.ndim != 2 or px.shape != sz.shape or sizes.size != px.shape[0]:
        raise ValueError("walk_each: px, sz must be (n, levels) and sizes (n,)")
    usable = np.isfinite(px) & np.isfinite(sz) & (sz > 0)
    qty = np.where(usable, sz, 0.0)
    cum = np.cumsum(qty, axis=1)
    notional = np.cumsum(np.where(usable, px * qty, 0.0), axis=1)
    n, n_lev = px.shape
    if n_lev == 0:
        return np.full(n, np.nan)
    k = np.minimum((cum < sizes[:, None]).sum(axis=1), n_lev - 1)      # the level that fills the last unit
    rows = np.arange(n)
    prev = np.maximum(k - 1, 0)
    before_q = np.where(k > 0, cum[rows, prev], 0.0)
    before_n = np.where(k > 0, notional[rows, prev], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = (before_n + (sizes - before_q) * px[rows, k]) / sizes
        vwap[(sizes > cum[:, -1]) | ~(sizes > 0)] = np.nan
        return (vwap / np.asarray(mid, dtype=np.float64) - 1.0) * 1e4 * np.asarray(side)


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

    # sorted sizes make the global search's queries ascending, which numpy's binary search
    # exploits (it starts each search at the previous answer): 10x faster than shuffled
    order = None
    if n_size > 1 and np.any(np.diff(sizes) < 0):
        order = np.argsort(sizes, kind="stable")
        sizes = sizes[order]

    usable = np.isfinite(px)
    usable &= sz > 0
    qty = np.where(usable, sz, 0.0)
    # a leading zero column so that "cumulative before level k" is column k
    width = n_lev + 1
    cum_qty = np.zeros((n_snap, width))
    np.cumsum(qty, axis=1, out=cum_qty[:, 1:])
    level_notional = np.zeros_like(qty)
    np.multiply(px, qty, out=level_notional, where=usable)
    cum_notional = np.zeros((n_snap, width))
    np.cumsum(level_notional, axis=1, out=cum_notional[:, 1:])
    del qty, level_notional, usable
    depth = cum_qty[:, -1].copy()

    # one global search: row i's cumulative quantities shifted by i * (max depth + 1)
    stride = float(depth.max()) + 1.0
    offset = np.arange(n_snap, dtype=np.float64) * stride
    haystack = cum_qty[:, 1:] + offset[:, None]
    needles = sizes[None, :] + offset[:, None]
    pos = np.searchsorted(haystack.ravel(), needles.ravel(), side="left")
    del haystack, needles
    # the level that fills the last unit; the offset's rounding can only push it one row over
    level = pos.reshape(n_snap, n_size)
    level -= (np.arange(n_snap) * n_lev)[:, None]
    np.clip(level, 0, n_lev - 1, out=level)
    # flat indices into the (n_snap, n_lev + 1) cumulative arrays: 1-D take beats 2-D fancy
    level += (np.arange(n_snap) * width)[:, None]
    flat = level.ravel()
    before_qty = np.take(cum_qty.ravel(), flat).reshape(n_snap, n_size)
    before_notional = np.take(cum_notional.ravel(), flat).reshape(n_snap, n_size)
    flat -= np.repeat(np.arange(n_snap), n_size)          # same level, px has n_lev columns
    last_px = np.take(px.ravel(), flat).reshape(n_snap, n_size)
    del level, flat, pos

    # vwap = (notional before the last level + remainder * its price) / size, in place
    vwap = np.subtract(sizes[None, :], before_qty, out=before_qty)
    vwap *= last_px
    vwap += before_notional
    vwap /= sizes[None, :]
    exhausted = sizes[None, :] > depth[:, None]       # exact test, not the shifted one
    vwap[exhausted] = np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = 1e4 * side / mid
        cost = vwap * scale[:, None]
        cost -= 1e4 * side
    if order is not None:
        back = np.empty_like(order)
        back[order] = np.arange(n_size)
        cost, vwap, exhausted = cost[:, back], vwap[:, back], exhausted[:, back]
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
