"""What every order-flow estimator reads: one venue and symbol's book event by event and its trades.

`VenueData` bundles the rebuilt book after every update (`execal.models.data.book.BookEvents`,
first L levels a side) with the trade tape (exchange time, price, size, aggressor side) and says
where it came from. `load_venue` replays a Binance raw capture once (`read_capture(...,
event_levels=L)`); `taker_orders` merges the prints of one aggressive order; `trade_tape` puts the
mid in force just before each order beside it, which is what the propagator and Kyle's lambda read.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np

from execal.models.core.errors import CalibrationError
from execal.models.core.frozen import freeze_arrays
from execal.models.core.params import BPS
from execal.models.data.binance import Capture, read_capture
from execal.models.data.book import BookEvents

DEFAULT_LEVELS = 10


@dataclass(frozen=True, eq=False)
class Trades:
    """A trade tape: t_ns (n,) int64 non-decreasing, price, qty (base units), side (+1 buyer-
    initiated, -1 seller-initiated) — one row per print or per taker order (`taker_orders`)."""
    t_ns: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    side: np.ndarray
    prints: np.ndarray | None = None      # prints merged into each row (taker_orders)

    def __post_init__(self):
        object.__setattr__(self, "t_ns", np.asarray(self.t_ns, dtype=np.int64))
        for name in ("price", "qty"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        object.__setattr__(self, "side", np.asarray(self.side, dtype=np.int8))
        n = len(self.t_ns)
        if not all(len(getattr(self, a)) == n for a in ("price", "qty", "side")):
            raise ValueError("Trades arrays must have the same length")
        freeze_arrays(self, ("t_ns", "price", "qty", "side", "prints"))

    def __len__(self) -> int:
        return len(self.t_ns)

    @property
    def notional(self) -> np.ndarray:
        return self.price * self.qty


def taker_orders(trades: Trades) -> Trades:
    """Merge consecutive prints with the same exchange time and aggressor side into one taker
    order (Binance sends one print per maker order a taker order fills): size summed, price the
    VWAP. Sign-memory and propagator estimates are about orders, not about how many makers one
    order happened to meet."""
    n = len(trades)
    if n == 0:
        return trades
    new = np.ones(n, dtype=bool)
    new[1:] = (trades.t_ns[1:] != trades.t_ns[:-1]) | (trades.side[1:] != trades.side[:-1])
    starts = np.flatnonzero(new)
    qty = np.add.reduceat(trades.qty, starts)
    notional = np.add.reduceat(trades.qty * trades.price, starts)
    with np.errstate(invalid="ignore", divide="ignore"):
        vwap = np.where(qty > 0, notional / qty, trades.price[starts])
    counts = np.diff(np.append(starts, n))
    return Trades(trades.t_ns[starts], vwap, qty, trades.side[starts], prints=counts)


@dataclass(frozen=True, eq=False)
class VenueData:
    """One venue and symbol: the book event by event and the trade prints."""
    events: BookEvents
    trades: Trades
    venue: str
    symbol: str
    market: str = ""
    source: str = ""
    size_unit: str = "base"
    warnings: tuple[str, ...] = ()
    stats: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.venue} {self.symbol}".strip()

    @property
    def span_s(self) -> float:
        t = self.events.t_ns
        return float(t[-1] - t[0]) / 1e9 if len(t) > 1 else 0.0

    def between(self, start_ns: int | None = None, end_ns: int | None = None) -> "VenueData":
        """The events and trades in [start_ns, end_ns) (a training or test period)."""
        ev, tr = self.events, self.trades
        lo = 0 if start_ns is None else int(np.searchsorted(ev.t_ns, start_ns, side="left"))
        hi = len(ev) if end_ns is None else int(np.searchsorted(ev.t_ns, end_ns, side="left"))
        tlo = 0 if start_ns is None else int(np.searchsorted(tr.t_ns, start_ns, side="left"))
        thi = len(tr) if end_ns is None else int(np.searchsorted(tr.t_ns, end_ns, side="left"))
        events = BookEvents(ev.t_ns[lo:hi], ev.update_id[lo:hi], ev.bid_px[lo:hi], ev.bid_sz[lo:hi],
                            ev.ask_px[lo:hi], ev.ask_sz[lo:hi], size_unit=ev.size_unit, meta=dict(ev.meta))
        trades = Trades(tr.t_ns[tlo:thi], tr.price[tlo:thi], tr.qty[tlo:thi], tr.side[tlo:thi])
        return replace(self, events=events, trades=trades)

    def tick(self) -> float:
        """The price grid step, the smallest positive gap between distinct book prices seen."""
        prices = np.unique(np.concatenate([self.events.bid_px[:, :5].ravel(),
                                           self.events.ask_px[:, :5].ravel()]))
        prices = prices[np.isfinite(prices)]
        gaps = np.diff(prices)
        gaps = gaps[gaps > 0]
        return float(np.round(gaps.min(), 12)) if gaps.size else float("nan")


def from_capture(capture: Capture) -> VenueData:
    """A `VenueData` of a replayed capture (read with `event_levels` > 0)."""
    if capture.events is None:
        raise CalibrationError("the capture was read without event_levels: the order-flow "
                               "measures need the book after every update")
    ev = capture.events
    tr = capture.trades
    if len(ev) < 2:
        raise CalibrationError(f"{ev.meta.get('source', 'capture')}: fewer than two book "
                               "events (no depth diffs after the snapshot?)")
    trades = Trades(tr["timestamp"].dt.as_unit("ns").astype("int64").to_numpy(),
                    tr["price"].to_numpy(), tr["quantity"].to_numpy(), tr["side"].to_numpy())
    return VenueData(events=ev, trades=trades, venue=str(ev.meta.get("venue", "")),
                     symbol=str(ev.meta.get("symbol", "")), market=str(ev.meta.get("market", "")),
                     source=str(ev.meta.get("source", "")), size_unit=ev.size_unit,
                     warnings=tuple(capture.warnings),
                     stats={k: capture.stats.get(k) for k in ("diffs_applied", "trades", "gaps",
                                                              "start", "end", "contract_size_usd")})


def load_venue(source: str | os.PathLike | bytes, *, name: str | None = None,
               levels: int = DEFAULT_LEVELS, market: str | None = None) -> VenueData:
    """Replay a Binance raw capture and keep the first `levels` levels after every update."""
    capture = read_capture(source, name=name, levels=1, interval_s=60.0, market=market,
                           event_levels=levels)
    return from_capture(capture)


@dataclass(frozen=True, eq=False)
class TradeTape:
    """Signed orders in trade time with the log-mid (bps) in force just before each: what the
    propagator and Kyle's lambda read. `mid_bps` = 1e4·ln(mid); NaN before the first book state."""
    t_ns: np.ndarray
    sign: np.ndarray
    qty: np.ndarray
    mid_bps: np.ndarray
    price: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "sign", np.asarray(self.sign, dtype=np.float64))
        object.__setattr__(self, "mid_bps", np.asarray(self.mid_bps, dtype=np.float64))
        object.__setattr__(self, "qty", np.asarray(self.qty, dtype=np.float64))
        object.__setattr__(self, "t_ns", np.asarray(self.t_ns, dtype=np.int64))
        freeze_arrays(self, ("t_ns", "sign", "qty", "mid_bps", "price"))

    def __len__(self) -> int:
        return len(self.sign)


def trade_tape(data: VenueData, *, aggregate: bool = True) -> TradeTape:
    """Orders (taker orders with `aggregate`, else prints) with the mid of the last book state
    strictly before each order's time (a state stamped with the same millisecond may already hold
    the order's own effect). Orders before the first book state are dropped."""
    trades = taker_orders(data.trades) if aggregate else data.trades
    idx = data.events.asof(trades.t_ns, strict=True)
    keep = idx >= 0
    mid = data.events.mid[idx[keep]]
    with np.errstate(invalid="ignore", divide="ignore"):
        mid_bps = BPS * np.log(mid)
    return TradeTape(trades.t_ns[keep], trades.side[keep].astype(np.float64), trades.qty[keep],
                     mid_bps, trades.price[keep])
