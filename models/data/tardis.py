"""Tardis.dev CSV formats, read natively: their column spellings turned into execal's canonical ones.

Tardis (https://docs.tardis.dev/downloadable-csv-files) publishes one CSV layout per data type.
`execal.models.data.io.load` reads the file and, when `detect_format` recognises the header, hands the raw
frame here; this module only renames, converts units and (for `incremental_book_L2`) rebuilds the
order book. Validation (NaN, non-positive prices, duplicates, sorting) stays in `execal.models.data.io`, so a
Tardis file is checked exactly like any other file.

Conventions of every Tardis CSV: `timestamp` is the exchange time in microseconds since the epoch
(UTC), `local_timestamp` is Tardis' receive time (dropped: execal works in exchange time),
`exchange` is the venue.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from execal.models.data.schema import DropRecord

BASE_COLUMNS = frozenset({"exchange", "symbol", "timestamp", "local_timestamp"})

# Tardis format name -> execal kind
KIND_OF = {
    "trades": "trades",
    "quotes": "quotes",
    "book_snapshot": "book",
    "incremental_book_L2": "book",
    "options_chain": "options",
    "derivative_ticker": "ticker",
}

# Plain renames per format (columns not listed keep their name; execal.models.data.io ignores non-canonical ones).
_RENAMES = {
    "trades": {"exchange": "venue", "amount": "quantity", "id": "trade_id"},
    "quotes": {"exchange": "venue", "ask_amount": "ask_size", "bid_amount": "bid_size"},
    "book_snapshot": {"exchange": "venue"},
    "options_chain": {"exchange": "venue", "type": "option_type", "strike_price": "strike",
                      "expiration": "expiry", "bid_amount": "bid_size", "ask_amount": "ask_size",
                      "underlying_index": "underlying"},
    "derivative_ticker": {"exchange": "venue"},
}

_LEVEL_RE = re.compile(r"^(asks|bids)\[(\d+)\]\.(price|amount)$")

DEFAULT_DEPTH = 25
# A 25-level wide snapshot is 100 float64 = 800 bytes; replaying a day of updates into one
# snapshot per distinct timestamp would not fit in memory (and takes ~13 us per snapshot), so
# above this many snapshots load() samples on the finest interval of _INTERVAL_LADDER_S that fits.
DEFAULT_MAX_SNAPSHOTS = 250_000
_INTERVAL_LADDER_S = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0)


def detect_format(columns: Iterable[str]) -> str | None:
    """The Tardis format whose header this is (see KIND_OF), or None.

    Tardis `liquidations` files have exactly the `trades` header, so they are read as trades.
    """
    cols = {str(c).strip().lower() for c in columns}
    if not BASE_COLUMNS <= cols:
        return None
    if {"is_snapshot", "side", "price", "amount"} <= cols:
        return "incremental_book_L2"
    if {"id", "side", "price", "amount"} <= cols:
        return "trades"
    if {"type", "strike_price", "expiration"} <= cols:   # before quotes: it has bid/ask too
        return "options_chain"
    if {"ask_amount", "ask_price", "bid_price", "bid_amount"} <= cols:
        return "quotes"
    if {"funding_rate", "mark_price", "index_price"} <= cols:
        return "derivative_ticker"
    if any(_LEVEL_RE.match(c) for c in cols):
        return "book_snapshot"
    return None


@dataclass
class Converted:
    """A Tardis frame in canonical spelling, ready for `execal.models.data.io.validate`."""
    kind: str
    frame: pd.DataFrame
    rows: np.ndarray                       # 1-based data row in the file, one per output row
    drops: list[DropRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def us_to_utc(values: pd.Series) -> pd.Series:
    """Tardis microsecond timestamps -> datetime64[ns, UTC]; unparseable values become NaT."""
    num = pd.to_numeric(values, errors="coerce")
    if num.dtype.kind in "iu":
        # integer path is exact; float would round sub-microsecond digits of 1.6e15
        return pd.Series(pd.to_datetime(num.to_numpy(np.int64), unit="us", utc=True),
                         index=values.index).astype("datetime64[ns, UTC]")
    arr = num.to_numpy(np.float64, na_value=np.nan)
    ok = np.isfinite(arr) & (np.abs(arr) < 9.2e15)     # int64 ns overflows beyond ~2262
    ns = np.where(ok, np.round(arr * 1e3), 0).astype(np.int64)
    out = pd.Series(pd.to_datetime(ns, unit="ns", utc=True), index=values.index)
    out[~ok] = pd.NaT
    return out


def to_canonical(frame: pd.DataFrame, fmt: str, *, rows: np.ndarray | None = None,
                 depth: int = DEFAULT_DEPTH, interval_s: float | None = None,
                 max_snapshots: int | None = DEFAULT_MAX_SNAPSHOTS) -> Converted:
    """Rename a raw Tardis frame (lower-case headers) to canonical columns and units.

    `rows` are the 1-based data row numbers of `frame` in the user's file (default 1..n).
    """
    if rows is None:
        rows = np.arange(1, len(frame) + 1, dtype=np.int64)
    if fmt == "incremental_book_L2":
        return rebuild_book(frame, rows=rows, depth=depth, interval_s=interval_s,
                            max_snapshots=max_snapshots)
    out = frame.rename(columns=_RENAMES.get(fmt, {}))
    out["timestamp"] = us_to_utc(out["timestamp"])
    warnings: list[str] = []
    if fmt == "book_snapshot":
        renames = {}
        for col in out.columns:
            m = _LEVEL_RE.match(col)
            if m:
                side = "ask" if m.group(1) == "asks" else "bid"
                what = "price" if m.group(3) == "price" else "size"
                renames[col] = f"{side}_{what}_{int(m.group(2))}"
        out = out.rename(columns=renames)
    elif fmt == "options_chain":
        out["expiry"] = us_to_utc(out["expiry"])
        # Deribit quotes option prices in the underlying coin (inverse options)
        out["price_unit"] = "base"
        for col in ("bid_iv", "ask_iv", "mark_iv"):
            if col in out.columns:   # Tardis gives percent; execal vols are fractions
                out[col] = pd.to_numeric(out[col], errors="coerce") / 100.0
        warnings.append("options_chain: prices are in the underlying coin (price_unit='base'); "
                        "implied vols converted from percent to fractions")
    return Converted(KIND_OF[fmt], out, np.asarray(rows, dtype=np.int64), [], warnings)


# --- incremental_book_L2 -> wide snapshots ----------------------------------------------------


class _Book:
    """One symbol's L2 book: price -> amount, with sorted price lists for the top levels."""
    __slots__ = ("bids", "asks", "bid_px", "ask_px")

    def __init__(self):
        self.bids: dict[float, float] = {}
        self.asks: dict[float, float] = {}
        self.bid_px: list[float] = []   # ascending; best bid is the last
        self.ask_px: list[float] = []   # ascending; best ask is the first

    def clear(self):
        self.bids.clear(); self.asks.clear(); self.bid_px.clear(); self.ask_px.clear()

    def update(self, is_bid: bool, price: float, amount: float):
        levels, prices = (self.bids, self.bid_px) if is_bid else (self.asks, self.ask_px)
        if amount == 0.0:
            if price in levels:
                del levels[price]
                del prices[bisect.bisect_left(prices, price)]
        else:
            if price not in levels:
                bisect.insort(prices, price)
            levels[price] = amount


def rebuild_book(frame: pd.DataFrame, *, rows: np.ndarray | None = None,
                 depth: int = DEFAULT_DEPTH, interval_s: float | None = None,
                 max_snapshots: int | None = None) -> Converted:
    """Replay Tardis `incremental_book_L2` rows into wide book snapshots (kind "book").

    Rows are applied in file order (Tardis' arrival order). `is_snapshot` rows replace the book
    of their symbol (a new snapshot starts whenever is_snapshot turns true again); amount 0
    deletes a level. A snapshot of the top `depth` levels a side is emitted after every distinct
    exchange timestamp of a symbol, or with `interval_s` once per interval: the row stamped at
    the interval's end holds the book after all updates up to and including that time (intervals
    without updates are not emitted). Without `interval_s`, if there would be more than
    `max_snapshots` snapshots, the finest interval of 1 ms, 10 ms, 100 ms, 1 s, ... that keeps
    within it is used instead (and a warning says so). Rows with an unknown side or a missing
    price/amount cannot be applied and are dropped (and reported).
    """
    n = len(frame)
    if rows is None:
        rows = np.arange(1, n + 1, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    drops: list[DropRecord] = []

    ts = us_to_utc(frame["timestamp"])
    ts_us = ts.to_numpy("datetime64[us]").view(np.int64)
    price = pd.to_numeric(frame["price"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    amount = pd.to_numeric(frame["amount"], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    side_txt = frame["side"].astype("str").str.strip().str.lower()
    is_bid = side_txt.isin(["bid", "buy", "b"]).to_numpy()
    is_ask = side_txt.isin(["ask", "sell", "a", "s"]).to_numpy()
    snap_txt = frame["is_snapshot"].astype("str").str.strip().str.lower()
    is_snap = snap_txt.isin(["true", "1", "t", "yes"]).to_numpy()

    bad_checks = [
        ("unparseable timestamp", "timestamp", ts.isna().to_numpy()),
        ("unknown side (expected bid/ask)", "side", ~(is_bid | is_ask)),
        ("price missing or not a positive number", "price", ~(np.isfinite(price) & (price > 0))),
        ("amount missing or negative", "amount", ~(np.isfinite(amount) & (amount >= 0))),
    ]
    bad = np.zeros(n, dtype=bool)
    for reason, col, mask in bad_checks:
        new = mask & ~bad
        if new.any():
            drops.append(DropRecord(f"book update dropped: {reason}", col, int(new.sum()),
                                    rows[new][:5].tolist()))
        bad |= mask
    keep = ~bad
    sym_codes, sym_names = pd.factorize(frame["symbol"].astype("str").to_numpy()[keep])
    venue = frame["exchange"].astype("str").to_numpy()[keep] if "exchange" in frame else None
    ts_us, price, amount = ts_us[keep], price[keep], amount[keep]
    is_bid, is_snap, rows_k = is_bid[keep], is_snap[keep], rows[keep]
    m = len(ts_us)

    by_symbol = [np.flatnonzero(sym_codes == code) for code in range(len(sym_names))]
    stamp, last_of_group = _groups(ts_us, by_symbol, interval_s)
    n_emit = int(last_of_group.sum())
    sampled_note = ""
    if not interval_s and max_snapshots and n_emit > max_snapshots:
        for step_s in _INTERVAL_LADDER_S:
            stamp, last_of_group = _groups(ts_us, by_symbol, step_s)
            n_emit = int(last_of_group.sum())
            if n_emit <= max_snapshots:
                break
        interval_s = step_s
        sampled_note = (f": one per distinct timestamp would exceed {max_snapshots:,} "
                        f"snapshots")
    bid_p = np.full((n_emit, depth), np.nan); bid_s = np.full((n_emit, depth), np.nan)
    ask_p = np.full((n_emit, depth), np.nan); ask_s = np.full((n_emit, depth), np.nan)
    out_stamp = np.empty(n_emit, dtype=np.int64)
    out_sym = np.empty(n_emit, dtype=np.int64)
    out_rows = np.empty(n_emit, dtype=np.int64)
    out_src = np.empty(n_emit, dtype=np.int64)

    books = [_Book() for _ in sym_names]
    in_snapshot = [False] * len(sym_names)
    k = 0
    # the replay is inherently sequential: plain lists iterate far faster than numpy scalars
    for i, (code, bid, px, amt, snap, last) in enumerate(zip(
            sym_codes.tolist(), is_bid.tolist(), price.tolist(), amount.tolist(),
            is_snap.tolist(), last_of_group.tolist())):
        book = books[code]
        if snap and not in_snapshot[code]:
            book.clear()
        in_snapshot[code] = snap
        book.update(bid, px, amt)
        if last:
            top_b = book.bid_px[-1:-depth - 1:-1]
            top_a = book.ask_px[:depth]
            if top_b:
                bid_p[k, :len(top_b)] = top_b
                bid_s[k, :len(top_b)] = [book.bids[p] for p in top_b]
            if top_a:
                ask_p[k, :len(top_a)] = top_a
                ask_s[k, :len(top_a)] = [book.asks[p] for p in top_a]
            out_stamp[k] = stamp[i]; out_sym[k] = code; out_rows[k] = rows_k[i]; out_src[k] = i
            k += 1

    out = {"timestamp": pd.to_datetime(out_stamp, unit="us", utc=True).astype("datetime64[ns, UTC]"),
           "symbol": np.asarray(sym_names, dtype=object)[out_sym]}
    if venue is not None:
        out["venue"] = venue[out_src]
    for lvl in range(depth):
        out[f"bid_price_{lvl}"] = bid_p[:, lvl]
        out[f"bid_size_{lvl}"] = bid_s[:, lvl]
        out[f"ask_price_{lvl}"] = ask_p[:, lvl]
        out[f"ask_size_{lvl}"] = ask_s[:, lvl]
    how = f"every {interval_s:g} s" if interval_s else "every distinct timestamp"
    warnings = [f"incremental_book_L2: {n:,} updates replayed into {n_emit:,} snapshots "
                f"(top {depth} levels, {how}{sampled_note})"]
    return Converted("book", pd.DataFrame(out), out_rows, drops, warnings)


def _groups(ts_us: np.ndarray, by_symbol: list[np.ndarray],
            interval_s: float | None) -> tuple[np.ndarray, np.ndarray]:
    """(stamp per row, mask of the last row of each emitted group).

    A group is a run of one symbol's rows with the same stamp: the exchange timestamp, or with
    an interval its end (timestamps rounded up to a multiple of the interval).
    """
    if interval_s:
        step = max(int(round(interval_s * 1e6)), 1)
        stamp = -((-ts_us) // step) * step
    else:
        stamp = ts_us
    last = np.zeros(len(ts_us), dtype=bool)
    for idx in by_symbol:
        if len(idx):
            s = stamp[idx]
            last[idx[np.append(s[1:] != s[:-1], True)]] = True
    return stamp, last
