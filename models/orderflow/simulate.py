"""Order flow with a known truth, for the tests, the benchmarks and the panel's sample.

* `long_memory_signs`: ±1 signs whose autocorrelation is known exactly: the sign of fractional
  Gaussian noise (Davies–Harte circulant embedding, exact), ρ(ℓ) = (2/π)·arcsin(ρ_fGn(ℓ)) ~
  ℓ^(−γ) with γ = 2 − 2H.
* `simulate_tape`: a propagator (TIM1) market in trade time with those signs and a known kernel.
* `simulate_ofi_book`: book states event by event whose mid moves by exactly β·OFI per event in
  expectation, β ∝ 1/depth across intervals if asked (the CKS relation with a known exponent).
* `simulate_resilience_book`: a book whose depth is swept at known times and refills with a known
  half-life (spread likewise).
* `simulate_market` + `simulate_child_orders`: a synthetic venue (depth regimes, order-flow
  pressure that makes OFI predictive, long-memory market orders with a known volume-dependent
  propagator) and parent orders sliced into child market orders executed in it (each child walks
  the book in force, moved by the parent's own earlier children through the true kernel): the
  realised parent costs the book-aware cost and the parent power law are compared on.

All seeded (numpy Generator); nothing here reads or writes sample_data/.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.fft import irfft, next_fast_len

from execal.models.core.params import BPS
from execal.models.data.book import BookEvents, walk_each
from execal.models.orderflow.data import Trades, TradeTape, VenueData
from execal.models.orderflow.propagator import propagate

T0_NS = 1_725_148_800 * 10**9          # 2024-09-01T00:00:00Z


# --- long-memory signs ---------------------------------------------------------------------------

def fgn_autocorrelation(lags, hurst: float) -> np.ndarray:
    """ρ(ℓ) = ½(|ℓ+1|^2H − 2|ℓ|^2H + |ℓ−1|^2H) of fractional Gaussian noise."""
    k = np.abs(np.asarray(lags, dtype=np.float64))
    h2 = 2.0 * hurst
    return 0.5 * (np.abs(k + 1) ** h2 - 2 * k ** h2 + np.abs(k - 1) ** h2)


def fgn(n: int, hurst: float, rng: np.random.Generator) -> np.ndarray:
    """n points of unit-variance fractional Gaussian noise (Davies & Harte 1987, exact)."""
    m = next_fast_len(2 * n, real=True)
    half = m // 2
    row = fgn_autocorrelation(np.concatenate([np.arange(half + 1), np.arange(half - 1, 0, -1)]), hurst)
    lam = np.fft.rfft(row).real
    if lam.min() < -1e-8 * lam.max():
        raise ValueError("circulant embedding is not positive definite")
    lam = np.clip(lam, 0.0, None)
    z = (rng.standard_normal(lam.size) + 1j * rng.standard_normal(lam.size))
    z[0] = z[0].real * math.sqrt(2.0)
    if m % 2 == 0:
        z[-1] = z[-1].real * math.sqrt(2.0)
    x = irfft(np.sqrt(lam) * z, m) * math.sqrt(m / 2.0)
    return x[:n]


def sign_autocorrelation_truth(lags, gamma: float) -> np.ndarray:
    """The exact autocorrelation of `long_memory_signs(.., gamma)`: (2/π)·arcsin(ρ_fGn(ℓ))."""
    return 2.0 / math.pi * np.arcsin(fgn_autocorrelation(lags, 1.0 - gamma / 2.0))


def long_memory_signs(n: int, gamma: float, rng: np.random.Generator) -> np.ndarray:
    """±1 signs with autocorrelation ~ ℓ^(−gamma) (0 < gamma < 1): sign of fGn, H = 1 − γ/2."""
    if not 0 < gamma < 1:
        raise ValueError("gamma must be in (0, 1)")
    return np.where(fgn(n, 1.0 - gamma / 2.0, rng) >= 0, 1.0, -1.0)


def power_law_kernel(max_lag: int, g1_bps: float, beta: float, support: int | None = None) -> np.ndarray:
    """G(ℓ), ℓ = 0..max_lag: G(0) = 0, G(ℓ) = g1·min(ℓ, support)^(−β) (constant after `support`:
    the kernel's increments g vanish beyond it, so an L ≥ support Toeplitz system is exact)."""
    lags = np.arange(max_lag + 1, dtype=np.float64)
    if support is not None:
        lags = np.minimum(lags, support)
    G = np.zeros(max_lag + 1)
    G[1:] = g1_bps * lags[1:] ** (-beta)
    return G


# --- the propagator market in trade time --------------------------------------------------------

@dataclass(frozen=True)
class Simulated:
    """A simulated input and the truth it was made from."""
    data: object
    truth: dict = field(default_factory=dict)


def simulate_tape(n: int = 200_000, *, gamma: float = 0.5, g1_bps: float = 0.5, kernel_beta: float = 0.3,
                  support: int = 60, noise_bps: float = 0.3, volume_exponent: float = 0.0,
                  rate_per_s: float = 5.0, seed: int = 0) -> Simulated:
    """TIM1 in trade time: m_n = Σ_{k≥1} G(k)·x_{n−k} + Σ noise, x = ε·w, w = (v/v̄)^ψ / mean,
    ε long-memory signs, v lognormal volumes. Returns a TradeTape and the truth (kernel G to
    `support` + 40 lags, exact sign autocorrelation)."""
    rng = np.random.default_rng(seed)
    eps = long_memory_signs(n, gamma, rng)
    vol = rng.lognormal(0.0, 1.0, n)
    w = vol ** volume_exponent
    w = w / w.mean()
    L = support + 40
    G = power_law_kernel(n - 1 if n > 1 else 1, g1_bps, kernel_beta, support)
    mid = propagate(eps * w, G) + np.cumsum(rng.normal(0.0, noise_bps, n))
    t = T0_NS + np.cumsum(rng.exponential(1e9 / rate_per_s, n)).astype(np.int64)
    tape = TradeTape(t, eps, vol, mid)
    return Simulated(tape, {"gamma": gamma, "kernel_beta": kernel_beta, "kernel_g1_bps": g1_bps,
                            "support": support, "G": G[:L + 1],
                            "rho": sign_autocorrelation_truth(np.arange(L + 1), gamma),
                            "volume_exponent": volume_exponent, "noise_bps": noise_bps})


# --- a book whose mid moves by β·OFI ------------------------------------------------------------

def _ladder(best: np.ndarray, n_levels: int, tick_bps: float, side: int) -> np.ndarray:
    """Prices of L levels from the best outwards, each `tick_bps` apart (multiplicative)."""
    k = np.arange(n_levels, dtype=np.float64)
    return best[:, None] * np.exp(-side * k[None, :] * tick_bps / BPS)


def simulate_ofi_book(n_events: int = 40_000, *, beta_bps: float = 0.05, depth: float = 2.0,
                      depth_by_interval: tuple[float, ...] | None = None, interval_s: float = 30.0,
                      rate_per_s: float = 20.0, noise_sd: float = 0.5, levels: int = 5,
                      half_spread_bps: float = 0.5, tick_bps: float = 0.2, mid0: float = 60_000.0,
                      seed: int = 0) -> Simulated:
    """Book states in which every event moves the log-mid by exactly β·e_n·ξ_n bps in
    expectation (ξ lognormal with mean 1, sd `noise_sd` in logs), e_n the best-level OFI of the
    event: up or down with probability ½, best sizes refreshed (lognormal, mean `depth`), bid and
    ask moving together so the indicator terms of e_n agree with the move. With
    `depth_by_interval` the mean depth is that value in successive intervals of `interval_s`
    (cycling) and β_j = beta_bps·depth/depth_j, i.e. β ∝ depth^(−1): the CKS exponent is 1."""
    rng = np.random.default_rng(seed)
    t = T0_NS + np.cumsum(rng.exponential(1e9 / rate_per_s, n_events)).astype(np.int64)
    if depth_by_interval:
        j = ((t - t[0]) // int(interval_s * 1e9)) % len(depth_by_interval)
        d = np.asarray(depth_by_interval, dtype=np.float64)[j]
    else:
        d = np.full(n_events, depth)
    beta_n = beta_bps * depth / d
    sd = 0.5
    qb = d * rng.lognormal(-sd * sd / 2, sd, n_events)
    qa = d * rng.lognormal(-sd * sd / 2, sd, n_events)
    up = rng.random(n_events) < 0.5
    e = np.zeros(n_events)
    e[1:] = np.where(up[1:], qb[1:] + qa[:-1], -qb[:-1] - qa[1:])
    xi = rng.lognormal(-noise_sd ** 2 / 2, noise_sd, n_events)
    step_bps = beta_n * e * xi
    log_mid = np.log(mid0) + np.cumsum(step_bps) / BPS
    mid = np.exp(log_mid)
    bid = mid * math.exp(-half_spread_bps / BPS)
    ask = mid * math.exp(half_spread_bps / BPS)
    bid_px, ask_px = _ladder(bid, levels, tick_bps, +1), _ladder(ask, levels, tick_bps, -1)
    bid_sz = np.column_stack([qb] + [d * rng.lognormal(0, sd, n_events) for _ in range(levels - 1)])
    ask_sz = np.column_stack([qa] + [d * rng.lognormal(0, sd, n_events) for _ in range(levels - 1)])
    events = BookEvents(t, np.arange(n_events, dtype=np.int64), bid_px, bid_sz, ask_px, ask_sz,
                        meta={"venue": "simulated", "symbol": "OFI-BOOK"})
    empty = Trades(np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0))
    data = VenueData(events, empty, "simulated", "OFI-BOOK", source="simulate_ofi_book")
    return Simulated(data, {"beta_bps": beta_bps, "depth": depth, "depth_exponent": 1.0 if depth_by_interval else None,
                            "e": e, "step_bps": step_bps})


# --- a book with sweeps and a known recovery ------------------------------------------------------

def simulate_resilience_book(seconds: float = 1800.0, *, depth_half_life_s: float = 2.0,
                             spread_half_life_s: float = 0.5, sweep_every_s: float = 20.0,
                             swept_share: float = 0.8, depth: float = 10.0, levels: int = 5,
                             spread_widening_bps: float = 3.0, half_spread_bps: float = 0.5,
                             step_s: float = 0.05, mid0: float = 60_000.0, seed: int = 0) -> Simulated:
    """Book states every `step_s`: the depth of each side sits at `depth` (small noise) until a
    sweep (a taker order of `swept_share` of the hit side, every ~`sweep_every_s`) takes that
    share away; it then refills as depth·(1 − share·2^(−τ/h)). The spread widens by
    `spread_widening_bps` at a sweep and closes as 2^(−τ/h_s). Returns VenueData with the sweeps
    as trades."""
    rng = np.random.default_rng(seed)
    n = int(seconds / step_s)
    t = T0_NS + (np.arange(n) * step_s * 1e9).astype(np.int64)
    sweep_t = np.cumsum(rng.uniform(0.6, 1.4, int(seconds / sweep_every_s) + 2) * sweep_every_s)
    sweep_t = sweep_t[(sweep_t > 10.0) & (sweep_t < seconds - 5.0)]
    sweep_side = np.where(rng.random(sweep_t.size) < 0.5, 1, -1)
    tau_s = (t - T0_NS) / 1e9
    k = np.searchsorted(sweep_t, tau_s, side="right") - 1           # last sweep at or before
    since = np.where(k >= 0, tau_s - sweep_t[np.maximum(k, 0)], np.inf)
    last_side = np.where(k >= 0, sweep_side[np.maximum(k, 0)], 0)
    missing = swept_share * np.exp(-math.log(2) * since / depth_half_life_s)
    noise = rng.lognormal(0.0, 0.05, (n, 2))
    bid_depth = depth * noise[:, 0] * np.where(last_side < 0, 1 - missing, 1.0)
    ask_depth = depth * noise[:, 1] * np.where(last_side > 0, 1 - missing, 1.0)
    widen = spread_widening_bps * np.exp(-math.log(2) * since / spread_half_life_s)
    hs = half_spread_bps + widen / 2
    mid = np.full(n, mid0)
    bid, ask = mid * np.exp(-hs / BPS), mid * np.exp(hs / BPS)
    bid_px, ask_px = _ladder(bid, levels, 0.2, +1), _ladder(ask, levels, 0.2, -1)
    bid_sz = np.repeat(bid_depth[:, None] / levels, levels, axis=1)
    ask_sz = np.repeat(ask_depth[:, None] / levels, levels, axis=1)
    events = BookEvents(t, np.arange(n, dtype=np.int64), bid_px, bid_sz, ask_px, ask_sz,
                        meta={"venue": "simulated", "symbol": "RESILIENCE"})
    # the sweeps as trades, a hair before the state that shows them; small background trades
    tr_t = (T0_NS + sweep_t * 1e9).astype(np.int64) - 1_000_000
    bg_t = np.sort(T0_NS + (rng.uniform(5, seconds - 5, int(seconds)) * 1e9).astype(np.int64))
    all_t = np.concatenate([tr_t, bg_t])
    all_q = np.concatenate([np.full(tr_t.size, swept_share * depth), np.full(bg_t.size, 0.01 * depth)])
    all_s = np.concatenate([sweep_side, np.where(rng.random(bg_t.size) < 0.5, 1, -1)])
    order = np.argsort(all_t, kind="stable")
    trades = Trades(all_t[order], np.full(all_t.size, mid0), all_q[order], all_s[order])
    data = VenueData(events, trades, "simulated", "RESILIENCE", source="simulate_resilience_book")
    return Simulated(data, {"depth_half_life_s": depth_half_life_s, "spread_half_life_s": spread_half_life_s,
                            "sweeps": int(sweep_t.size)})


# --- a synthetic venue and child orders executed in it -------------------------------------------

def _ou(n: int, dt: np.ndarray, tau_s: float, sd: float, rng) -> np.ndarray:
    """An Ornstein–Uhlenbeck path (stationary sd `sd`, time-scale `tau_s`) on irregular steps."""
    a = np.exp(-dt / tau_s)
    shocks = rng.standard_normal(n) * sd * np.sqrt(1 - a * a)
    x = np.empty(n)
    x[0] = rng.standard_normal() * sd
    # x_k = a_k x_{k-1} + s_k: a linear recursion; scipy.signal.lfilter needs constant a, so
    # solve it in log space of the cumulative products (a > 0)
    log_cum = np.cumsum(np.log(a))
    scaled = shocks * np.exp(-log_cum)
    scaled[0] = x[0] * np.exp(-log_cum[0])
    return np.exp(log_cum) * np.cumsum(scaled)


@dataclass(frozen=True)
class MarketTruth:
    """What `simulate_market` used (the parts a child order's execution needs, and the truth)."""
    G: np.ndarray                   # kernel, bps, lags 0..len-1 (constant beyond)
    volume_exponent: float
    mean_weight_volume: float       # v̄ with w = (v/v̄)^ψ normalised to mean 1
    weight_norm: float
    orders_per_s: float
    trade_t_ns: np.ndarray
    trade_x: np.ndarray             # ε·w of each market order
    book_mid_bps: np.ndarray        # log-mid from the book's own moves at each event (bps)
    params: dict


def simulate_market(seconds: float = 4 * 3600.0, *, seed: int = 7, levels: int = 10,
                    event_rate_per_s: float = 10.0, order_rate_per_s: float = 4.0, gamma: float = 0.5,
                    g1_bps: float = 0.6, kernel_beta: float = 0.35, support: int = 200,
                    volume_exponent: float = 0.5, beta0_bps: float = 0.02, depth0: float = 3.0,
                    depth_log_sd: float = 0.8, depth_tau_s: float = 900.0, pressure_sd: float = 0.35,
                    pressure_tau_s: float = 120.0, half_spread_bps: float = 0.4, tick_bps: float = 0.3,
                    refill_half_life_s: float = 1.0, depletion: float = 0.6, widening_bps: float = 1.0,
                    order_size_log_sd: float = 1.1, mid0: float = 60_000.0) -> Simulated:
    """A synthetic venue: book states at `event_rate_per_s` whose log-mid moves by
    (β0/depth(t))·e_n·ξ per event (e_n the event's best-level OFI; up with probability
    (1 + p(t))/2, p an order-flow pressure OU, so OFI is persistent and predicts the next
    window's move), plus the transient impact of market orders (long-memory signs γ, lognormal
    volumes, kernel G(ℓ) = g1·min(ℓ, support)^(−β) on x = ε·(v/v̄)^ψ) in trade time; the depth
    follows a log-OU regime. A market order takes `depletion`·v/depth (at most 90 %) of the side it
    hits, every level, and widens the spread by that share × `widening_bps`; both refill with a
    half-life of `refill_half_life_s` (the largest decayed share missing counts). Every recorded book
    state holds the total mid; trades print at the touch. Returns VenueData and `MarketTruth`."""
    rng = np.random.default_rng(seed)
    n_ev = int(seconds * event_rate_per_s)
    t_ev = T0_NS + np.cumsum(rng.exponential(1e9 / event_rate_per_s, n_ev)).astype(np.int64)
    dt_ev = np.diff(np.concatenate([[T0_NS], t_ev])) / 1e9
    depth_t = depth0 * np.exp(_ou(n_ev, dt_ev, depth_tau_s, depth_log_sd, rng) - depth_log_sd ** 2 / 2)
    pressure = np.clip(_ou(n_ev, dt_ev, pressure_tau_s, pressure_sd, rng), -0.9, 0.9)
    sd = 0.5
    qb = depth_t * rng.lognormal(-sd * sd / 2, sd, n_ev)
    qa = depth_t * rng.lognormal(-sd * sd / 2, sd, n_ev)
    up = rng.random(n_ev) < (1 + pressure) / 2
    e = np.zeros(n_ev)
    e[1:] = np.where(up[1:], qb[1:] + qa[:-1], -qb[:-1] - qa[1:])
    xi = rng.lognormal(-0.125, 0.5, n_ev)
    book_bps = np.cumsum(beta0_bps / depth_t * e * xi)
    # market orders
    n_tr = int(seconds * order_rate_per_s)
    t_tr = T0_NS + np.cumsum(rng.exponential(1e9 / order_rate_per_s, n_tr)).astype(np.int64)
    keep = t_tr < t_ev[-1]
    t_tr = t_tr[keep]
    n_tr = t_tr.size
    eps = long_memory_signs(n_tr, gamma, rng)
    vol = depth0 * 0.15 * rng.lognormal(0.0, order_size_log_sd, n_tr)
    v_bar = float(np.median(vol))
    w = (vol / v_bar) ** volume_exponent
    w_norm = float(w.mean())
    x = eps * w / w_norm
    G = power_law_kernel(n_tr, g1_bps, kernel_beta, support)
    trade_bps = propagate(x, G)                       # m_n: before order n
    # the trade part of the mid after all orders at or before t: m at index (count)
    after_all = np.concatenate([trade_bps, [trade_bps[-1] + float(np.dot(G[1:n_tr + 1][::-1], x))
                                             if n_tr else 0.0]])
    n_before_ev = np.searchsorted(t_tr, t_ev, side="right")
    total_bps = book_bps + after_all[n_before_ev]
    mid = mid0 * np.exp(total_bps / BPS)
    # depletion: each market order takes a share of the side it hits, which refills with a half-life;
    # the share missing at t is the largest of the decayed shares, max_n share_n·2^(−(t − t_n)/h),
    # i.e. exp(−c·t + cummax_n(log share_n + c·t_n)) with c = ln 2 / h: one running maximum
    c = math.log(2.0) / refill_half_life_s
    t_ev_s = (t_ev - T0_NS) / 1e9
    taken = {}
    for hit_by in (+1, -1):                       # buys take the asks, sells the bids
        idx = np.flatnonzero(eps == hit_by)
        at = np.clip(np.searchsorted(t_ev, t_tr[idx], side="right") - 1, 0, n_ev - 1)
        share = np.clip(depletion * vol[idx] / depth_t[at], 1e-12, 0.9)
        running = np.maximum.accumulate(np.log(share) + c * (t_tr[idx] - T0_NS) / 1e9)
        k = np.searchsorted(t_tr[idx], t_ev, side="right") - 1
        taken[hit_by] = np.where(k >= 0, np.exp(running[np.maximum(k, 0)] - c * t_ev_s), 0.0)
    widen = widening_bps * np.maximum(taken[+1], taken[-1])
    bid = mid * np.exp(-(half_spread_bps + widen / 2) / BPS)
    ask = mid * np.exp((half_spread_bps + widen / 2) / BPS)
    bid_px, ask_px = _ladder(bid, levels, tick_bps, +1), _ladder(ask, levels, tick_bps, -1)
    deeper = lambda: depth_t[:, None] * rng.lognormal(-sd * sd / 2, sd, (n_ev, levels - 1))   # noqa: E731
    bid_sz = np.column_stack([qb, deeper()]) * (1.0 - taken[-1])[:, None]
    ask_sz = np.column_stack([qa, deeper()]) * (1.0 - taken[+1])[:, None]
    events = BookEvents(t_ev, np.arange(n_ev, dtype=np.int64), bid_px, bid_sz, ask_px, ask_sz,
                        meta={"venue": "simulated", "symbol": "SYNTH", "market": "simulated"})
    # prints at the touch of the state in force
    j = np.searchsorted(t_ev, t_tr, side="right") - 1
    j = np.maximum(j, 0)
    price = np.where(eps > 0, ask_px[j, 0], bid_px[j, 0])
    trades = Trades(t_tr, price, vol, eps.astype(np.int8))
    data = VenueData(events, trades, "simulated", "SYNTH", market="simulated", source="simulate_market")
    truth = MarketTruth(G=G[:support + 2], volume_exponent=volume_exponent, mean_weight_volume=v_bar,
                        weight_norm=w_norm, orders_per_s=n_tr / seconds, trade_t_ns=t_tr, trade_x=x,
                        book_mid_bps=book_bps,
                        params={"gamma": gamma, "kernel_g1_bps": g1_bps, "kernel_beta": kernel_beta,
                                "support": support, "volume_exponent": volume_exponent,
                                "beta0_bps": beta0_bps, "depth0": depth0, "seed": seed,
                                "seconds": seconds, "half_spread_bps": half_spread_bps,
                                "tick_bps": tick_bps, "levels": levels,
                                "refill_half_life_s": refill_half_life_s})
    return Simulated(data, {"market": truth})


def simulate_child_orders(market: Simulated, n_parents: int = 600, *, seed: int = 11,
                          children: tuple[int, int] = (3, 10), interval_s: tuple[float, float] = (1.0, 10.0),
                          child_depth_share: tuple[float, float] = (0.3, 4.0),
                          warmup_s: float = 120.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parent orders sliced into equal child market orders every Δt, executed in the synthetic
    market: child k walks the book state in force at t_k, every price of which is moved by the
    parent's own earlier children, side·Σ_{j<k} G(ℓ_jk)·w_j bps with ℓ_jk = round(orders_per_s·
    (t_k − t_j)) the market orders in between and w_j = (q_j/v̄)^ψ/mean (the same kernel and volume
    weight as the market's own orders). Child sizes are `child_depth_share` × the best depth on
    the side at arrival. Returns (parents: canonical fills columns + order_id, children: one row
    per child with its parent, time offset, size and realised VWAP)."""
    truth: MarketTruth = market.truth["market"]
    data: VenueData = market.data
    ev = data.events
    rng = np.random.default_rng(seed)
    span = (ev.t_ns[-1] - ev.t_ns[0]) / 1e9
    n_child = rng.integers(children[0], children[1] + 1, n_parents)
    dt = rng.uniform(*interval_s, n_parents)
    dur = (n_child - 1) * dt
    arrive_s = np.sort(rng.uniform(warmup_s, span - dur.max() - 1.0, n_parents))
    t0 = ev.t_ns[0] + (arrive_s * 1e9).astype(np.int64)
    side = np.where(rng.random(n_parents) < 0.5, 1, -1)
    j0 = ev.asof(t0)
    best = np.where(side > 0, ev.ask_sz[j0, 0], ev.bid_sz[j0, 0])
    q_child = best * rng.uniform(*child_depth_share, n_parents)
    parent = np.repeat(np.arange(n_parents), n_child)
    k = np.concatenate([np.arange(c) for c in n_child])
    offset = k * dt[parent]
    t_child = t0[parent] + (offset * 1e9).astype(np.int64)
    q = q_child[parent]
    s = side[parent]
    # the parent's own transient impact on child k: Σ_{j<k} G(ℓ_jk)·w_j
    w = (q / truth.mean_weight_volume) ** truth.volume_exponent / truth.weight_norm
    impact = np.zeros(parent.size)
    G = truth.G
    max_c = int(n_child.max())
    for lag_children in range(1, max_c):       # loop over child lags (<= 9), vectorised over parents
        later = k >= lag_children
        idx = np.flatnonzero(later)
        earlier = idx - lag_children
        ell = np.rint(truth.orders_per_s * lag_children * dt[parent[idx]]).astype(np.int64)
        impact[idx] += G[np.clip(np.maximum(ell, 1), 0, G.size - 1)] * w[earlier]
    jc = ev.asof(t_child)
    # the market's own move from arrival to the child (what nobody can predict but the OFI drift)
    mid_move = s * (np.log(ev.mid[jc]) - np.log(ev.mid[j0][parent])) * BPS
    shift = np.exp(s * impact / BPS)[:, None]
    px = np.where(s[:, None] > 0, ev.ask_px[jc], ev.bid_px[jc]) * shift
    sz = np.where(s[:, None] > 0, ev.ask_sz[jc], ev.bid_sz[jc])
    arrival_mid = ev.mid[j0]
    # cost against the arrival mid, then the price it means
    vwap = arrival_mid[parent] * (1.0 + walk_each(px, sz, q, arrival_mid[parent], s) / BPS * s)
    complete = ~pd.Series(np.isnan(vwap)).groupby(parent).any().to_numpy()
    # the child's walk against the mid it met (the market's mid moved by its own impact)
    met_mid = ev.mid[jc] * np.exp(s * impact / BPS)
    walk_bps = walk_each(px, sz, q, met_mid, s)
    child_frame = pd.DataFrame({"order_id": parent.astype(str), "child": k, "offset_s": offset, "qty": q,
                                "side": s, "vwap": vwap, "own_impact_bps": impact, "walk_bps": walk_bps,
                                "mid_move_bps": mid_move})
    notional = pd.Series(vwap * q).groupby(parent).sum(min_count=1).to_numpy()
    Q = q_child * n_child
    exec_price = notional / Q
    # the venue's daily volatility and volume, for the parent power law's features
    mid_bps = BPS * np.log(ev.mid)
    sec = (ev.t_ns - ev.t_ns[0]) // 10**9
    last_each_s = np.flatnonzero(np.diff(np.append(sec, sec[-1] + 1)) > 0)
    r1 = np.diff(mid_bps[last_each_s]) / BPS
    sigma_daily = float(np.std(r1) * math.sqrt(86_400))
    adv = float(data.trades.qty.sum() / span * 86_400)
    spread_bps = (ev.ask_px[j0, 0] - ev.bid_px[j0, 0]) / arrival_mid * BPS
    parents = pd.DataFrame({
        "timestamp": pd.to_datetime(t0, unit="ns", utc=True), "symbol": data.symbol, "venue": data.venue,
        "side": side.astype(np.int8), "quantity": Q, "arrival_price": arrival_mid, "exec_price": exec_price,
        "duration_s": np.maximum(dur, 1.0), "adv": adv, "volatility": sigma_daily, "spread_bps": spread_bps,
        "order_id": np.arange(n_parents).astype(str), "n_children": n_child, "interval_s": dt,
        "arrival_ns": t0})
    # a parent one of whose children met less visible depth than its size has no realised price:
    # dropped (and counted), never filled with a guess
    keep = complete
    parents = parents[keep].reset_index(drop=True)
    child_frame = child_frame[np.repeat(keep, n_child)].reset_index(drop=True)
    parents.attrs["dropped_beyond_depth"] = int((~keep).sum())
    return parents, child_frame
