"""Online market state of one symbol on one venue: book, mid, spread, depth, cost curve, volatility.

Messages come in one at a time (`on_diff`, `on_ticker`, `on_trade`, already parsed). Everything a
message changes is O(1) or O(log levels) (the book's sorted price lists); the heavier features are
made once per second of exchange time, on the same grid as the file reader's book samples: when a
message stamped after the next grid time g arrives, the state as of g (every diff stamped <= g
applied) is summarised into a `tick` before the message is applied:

* mid and spread (bps) of the rebuilt book (the exchange's best bid/offer stream when no book);
* depth within each of `depth_bps` of the mid, a side, in base units (COIN-M contracts converted
  to coins at each level's price, as the file reader does);
* the walk-the-book cost (bps against the mid, `execal.models.data.book.walk_book`) of market
  orders of `walk_sizes` (base units), buy and sell: the visible-liquidity cost curve;
* realised volatility of the one-second mid log returns: EWMA (half-life `vol_halflife_s`) and
  bipower variation over the trailing `bipower_window_s` seconds (robust to jumps), both as a daily
  fraction (per-second variance × 86,400);
* the regime probability: one Hamilton-filter step per regime period (`regime`, optional);
* the traded volume over the trailing `volume_window_s` seconds, scaled to a day (an ADV
  estimate for fills that carry none).

The grid is driven by the depth stream's exchange time when there is one (so the samples are the
file reader's), otherwise by the trades' and tickers'. `sample_levels` > 0 keeps the top levels in
each tick (tests compare them with the file reader's book).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np

from execal.models.core.params import NS_PER_S, SECONDS_PER_DAY
from execal.models.data.orderbook import OrderBook
from execal.models.live.regime import HamiltonFilter

_HALF_PI = math.pi / 2.0


def walk_one(px: np.ndarray, sz: np.ndarray, sizes: np.ndarray, mid: float, side: int) -> np.ndarray:
    """Walk-the-book cost (bps against `mid`) of market orders of each of `sizes` (sorted) on one
    side of one book (best level first, NaN padding): `data.book.walk_book` for a single snapshot,
    without its (n_snapshots × n_sizes) machinery (a tick is one snapshot, every second).
    NaN beyond the visible depth."""
    ok = np.isfinite(px) & (sz > 0)
    px, sz = px[ok], sz[ok]
    cum = np.cumsum(sz)
    if not cum.size:
        return np.full(sizes.shape, np.nan)
    notional = np.cumsum(px * sz)
    k = np.minimum(np.searchsorted(cum, sizes, side="left"), cum.size - 1)
    before_q = np.where(k > 0, cum[k - 1], 0.0)
    before_n = np.where(k > 0, notional[k - 1], 0.0)
    vwap = (before_n + (sizes - before_q) * px[k]) / sizes
    cost = (vwap / mid - 1.0) * 1e4 * side
    cost[sizes > cum[-1]] = np.nan
    return cost


class MarketState:
    """The live state of one (venue, symbol)."""

    def __init__(self, venue: str, symbol: str, market: str, *, interval_s: float = 1.0,
                 levels: int = 100, depth_bps: tuple[float, ...] = (10.0,),
                 walk_sizes: tuple[float, ...] = (), vol_halflife_s: float = 60.0,
                 bipower_window_s: int = 300, volume_window_s: int = 300,
                 contract_size_usd: float = 100.0, regime: HamiltonFilter | None = None,
                 sample_levels: int = 0, resync: bool = True, history: int = 3600):
        self.venue, self.symbol = venue, symbol
        self.book = OrderBook(market, symbol, resync=resync)
        self.market = self.book.market
        self.coinm = self.market == "coinm"
        self.contract = float(contract_size_usd) if self.coinm else None
        self.step_ns = int(round(interval_s * NS_PER_S))
        self.interval_s = float(interval_s)
        self.levels = int(levels)
        self.depth_bps = tuple(float(b) for b in depth_bps)
        self.walk_sizes = np.asarray(sorted(walk_sizes), dtype=np.float64)
        self.sample_levels = int(sample_levels)
        # EWMA of squared one-second returns: weight 1 - lam per interval, half-life in seconds
        self.lam = 0.5 ** (self.interval_s / float(vol_halflife_s))
        self.ewma_var = None
        self.bip_window = max(2, int(bipower_window_s / self.interval_s))
        self.bip_terms: deque = deque()
        self.bip_sum = 0.0
        self.abs_prev = None
        self.regime = regime
        self.regime_ns = (int(round(regime.period_s * NS_PER_S)) if regime is not None else None)
        self.regime_next_ns = None
        self.regime_anchor_mid = None
        self.volume_window_ns = int(volume_window_s * NS_PER_S)
        self.volumes: deque = deque()       # (t_ns, base quantity)
        self.volume_sum = 0.0
        self.first_trade_ns = None
        self.has_depth = False
        self.next_grid_ns: int | None = None
        self.prev_mid = None
        self.bbo = ("nan", "nan")            # the exchange's best bid / ask stream (as sent)
        self.last_trade = np.nan
        self.last_time_ns: int | None = None
        self.seen_wall = 0.0                 # wall clock (monotonic) of the last message, set by the monitor
        self.ticks: deque = deque(maxlen=history)
        self.sinks: list = []                # callables(tick) run for every tick
        self.counts = dict(tickers=0, trades=0, ticks=0)

    # -- messages ---------------------------------------------------------------------------------

    def on_diff(self, diff: dict) -> int:
        """A depth diff (Binance fields): grid ticks up to its time, then the book."""
        self.has_depth = True
        self.book.counts["diffs"] += 1
        return self._diff(diff)

    def _diff(self, diff: dict) -> int:
        t_ns = (diff.get("T") or diff["E"]) * 1_000_000
        g = self.next_grid_ns
        if g is not None and t_ns > g:
            self._emit_until(t_ns)
        status = self.book.process(diff)
        if g is None and status == 0:
            # the grid starts at the first diff applied (the file reader's rule)
            self.next_grid_ns = -(-t_ns // self.step_ns) * self.step_ns
        if self.last_time_ns is None or t_ns > self.last_time_ns:
            self.last_time_ns = t_ns
        return status

    def on_snapshot(self, snap: dict) -> list[int]:
        """A REST snapshot: the buffered diffs are replayed through the grid, one by one."""
        return [self._diff(d) for d in self.book.on_snapshot(snap, replay=False)]

    def on_ticker(self, bid, ask, t_ms: int | None) -> None:
        """Best bid / ask (numbers or the exchange's strings: parsed only when read) at exchange
        time `t_ms` (None: spot's bookTicker has none)."""
        self.counts["tickers"] += 1
        if t_ms is not None and not self.has_depth:
            self._clock(t_ms * 1_000_000)     # ticks before this message first, then the new state
        self.bbo = (bid, ask)

    def on_trade(self, price: float, qty: float, t_ns: int) -> None:
        self.counts["trades"] += 1
        if not self.has_depth:
            self._clock(t_ns)
        if self.coinm:
            qty = qty * self.contract / price
        self.last_trade = price
        vols = self.volumes
        vols.append((t_ns, qty))
        self.volume_sum += qty
        if self.first_trade_ns is None:
            self.first_trade_ns = t_ns
        cut = t_ns - self.volume_window_ns
        while vols[0][0] < cut:
            self.volume_sum -= vols.popleft()[1]

    def _clock(self, t_ns: int) -> None:
        g = self.next_grid_ns
        if g is None:
            self.next_grid_ns = -(-t_ns // self.step_ns) * self.step_ns
        elif t_ns > g:
            self._emit_until(t_ns)
        self.last_time_ns = t_ns

    # -- the one-second summary --------------------------------------------------------------------

    def mid_spread(self) -> tuple[float, float]:
        """(mid, spread in bps) of the book, else of the exchange's best bid/offer stream."""
        book = self.book
        if book.ready and book.bid_keys and book.ask_keys:
            bid, ask = book.bid_keys[-1], book.ask_keys[0]
        else:
            bid, ask = float(self.bbo[0]), float(self.bbo[1])
        mid = 0.5 * (bid + ask)
        return mid, (ask - bid) / mid * 1e4

    def _emit_until(self, t_ns: int) -> None:
        """A tick at every grid time before `t_ns` (the state as of the last message <= g); grid
        times with nothing new in between repeat the state (their mid return is 0)."""
        g, step = self.next_grid_ns, self.step_ns
        tick = None
        while g < t_ns:
            if tick is None:
                tick = self._tick(g)
            else:
                tick = self._repeat(tick, g)
            for sink in self.sinks:
                sink(tick)
            g += step
        self.next_grid_ns = g

    def _vol_update(self, r: float) -> None:
        r2 = r * r
        self.ewma_var = r2 if self.ewma_var is None else self.lam * self.ewma_var + (1.0 - self.lam) * r2
        a = abs(r)
        if self.abs_prev is not None:
            term = a * self.abs_prev
            self.bip_terms.append(term)
            self.bip_sum += term
            if len(self.bip_terms) > self.bip_window:
                self.bip_sum -= self.bip_terms.popleft()
        self.abs_prev = a

    def sigma_daily(self) -> tuple[float, float]:
        """(EWMA, bipower) volatility as a daily fraction (NaN until there are returns)."""
        per_day = SECONDS_PER_DAY / self.interval_s
        ewma = math.sqrt(self.ewma_var * per_day) if self.ewma_var is not None else np.nan
        n = len(self.bip_terms)
        bip = math.sqrt(max(self.bip_sum, 0.0) * _HALF_PI / n * per_day) if n else np.nan
        return ewma, bip

    def adv_estimate(self) -> float:
        """Traded volume over the trailing window, scaled to a day (base units)."""
        if not self.volumes:
            return np.nan
        span = min(self.volume_window_ns, self.volumes[-1][0] - self.first_trade_ns)
        if span <= 0:
            return np.nan
        return self.volume_sum * (SECONDS_PER_DAY * NS_PER_S / span)

    def _regime_step(self, g: int, mid: float) -> None:
        reg = self.regime
        if self.regime_next_ns is None:
            self.regime_next_ns = g + self.regime_ns
            self.regime_anchor_mid = mid
            return
        while g >= self.regime_next_ns:
            r = math.log(mid / self.regime_anchor_mid)
            reg.step(r)
            self.regime_anchor_mid = mid
            self.regime_next_ns += self.regime_ns

    def _base(self, px: np.ndarray, sz: np.ndarray) -> np.ndarray:
        return sz * self.contract / px if self.coinm else sz

    def _tick(self, g: int) -> dict:
        mid, spread = self.mid_spread()
        tick = {"t_ns": g, "venue": self.venue, "symbol": self.symbol, "mid": mid,
                "spread_bps": spread}
        if math.isfinite(mid):
            if self.prev_mid is not None:
                self._vol_update(math.log(mid / self.prev_mid))
            self.prev_mid = mid
            if self.regime is not None:
                self._regime_step(g, mid)
        book = self.book
        if book.ready and book.bid_keys and book.ask_keys:
            bp, bs, ap, as_ = book.levels(max(self.levels, self.sample_levels))
            bs, as_ = self._base(bp, bs), self._base(ap, as_)
            for bps in self.depth_bps:
                lo, hi = mid * (1.0 - bps * 1e-4), mid * (1.0 + bps * 1e-4)
                db = float(np.nansum(np.where(bp >= lo, bs, 0.0)))
                da = float(np.nansum(np.where(ap <= hi, as_, 0.0)))
                if bp[-1] >= lo or ap[-1] <= hi:    # the window reaches past the levels read
                    db, da = self._depth_full(bps, mid)
                tick[f"depth_bid_{bps:g}bps"] = db
                tick[f"depth_ask_{bps:g}bps"] = da
            if self.walk_sizes.size:
                L = self.levels
                tick["walk_buy_bps"] = walk_one(ap[:L], as_[:L], self.walk_sizes, mid, +1).tolist()
                tick["walk_sell_bps"] = walk_one(bp[:L], bs[:L], self.walk_sizes, mid, -1).tolist()
            if self.sample_levels:
                n = self.sample_levels
                tick["levels"] = (bp[:n], bs[:n], ap[:n], as_[:n])
        ewma, bip = self.sigma_daily()
        tick["sigma_ewma"] = ewma
        tick["sigma_bipower"] = bip
        tick["adv"] = self.adv_estimate()
        if self.regime is not None:
            tick["p_regime"] = self.regime.probabilities.tolist()
            tick["regime"] = self.regime.regime
        self.ticks.append(tick)
        self.counts["ticks"] += 1
        return tick

    def _depth_full(self, bps: float, mid: float) -> tuple[float, float]:
        if not self.coinm:
            return self.book.depth_within(bps, mid)
        # COIN-M: contracts to coins at each level's price
        lo, hi = mid * (1.0 - bps * 1e-4), mid * (1.0 + bps * 1e-4)
        c = self.contract
        b = sum(q * c / p for p, q in self.book.bids.items() if p >= lo)
        a = sum(q * c / p for p, q in self.book.asks.items() if p <= hi)
        return b, a

    def _repeat(self, tick: dict, g: int) -> dict:
        """The next grid time with no message in between: the same book, a zero mid return."""
        out = dict(tick)
        out["t_ns"] = g
        if self.prev_mid is not None:
            self._vol_update(0.0)
            if self.regime is not None:
                self._regime_step(g, self.prev_mid)
                out["p_regime"] = self.regime.probabilities.tolist()
                out["regime"] = self.regime.regime
        out["sigma_ewma"], out["sigma_bipower"] = self.sigma_daily()
        self.ticks.append(out)
        self.counts["ticks"] += 1
        return out

    def finish(self) -> None:
        """Emit the ticks up to the last message (end of a replay)."""
        if self.next_grid_ns is not None and self.last_time_ns is not None:
            self._emit_until(self.last_time_ns + 1)

    def status(self) -> dict:
        mid, spread = self.mid_spread()
        ewma, bip = self.sigma_daily()
        return {"venue": self.venue, "symbol": self.symbol, "market": self.market, "mid": mid,
                "spread_bps": spread, "book_ready": self.book.ready, "book_levels": len(self.book),
                "sigma_ewma": ewma, "sigma_bipower": bip, **self.counts,
                **{f"book_{k}": v for k, v in self.book.counts.items()}}
