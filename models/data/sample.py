"""Seeded synthetic market: fills with a known execution-cost model, and the bars, trades, quotes and
option chain of the same simulated market.

Why this room exists: a calibration tool is only trustworthy if it recovers parameters that we chose.
Everything here comes from one seed, so `python -m execal.models.data.sample --out sample_data --seed 7` writes
byte-identical files on every run, and `ground_truth.json` says exactly what a calibration should find.

The simulated world (all constants below, all written to ground_truth.json and the README):
- one minute grid of mid prices per symbol: geometric Brownian motion whose daily sigma is the state of
  a two-state (calm / stressed) Markov chain on UTC days;
- a consolidated traded volume per symbol and minute (intraday profile, day-level and minute-level
  log-normal noise, more volume on stressed days); bars, trades, `adv` and `market_volume` are all
  built from it, so they agree with each other;
- a quoted spread per symbol, venue and minute (AR(1) in logs, wider on stressed days);
- metaorders whose cost is `h*spread_bps/2 + impact(model) + noise`, noise Student-t, plus outliers.

`generate_fills(...)` exposes the fills generator with chosen parameters for tests and benchmarks.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.signal import lfilter
from scipy.special import ndtr

from execal.models.data.dataset import DatasetWriter, is_dataset

# --- the simulated world -----------------------------------------------------------------------

MINUTES_PER_DAY = 1440
SECONDS_PER_DAY = 86_400
ADV_WINDOW_DAYS = 20          # the `adv` column: mean daily volume of the 20 days before the arrival day
DEFAULT_START = "2024-09-01"  # first day of fills; the market starts `warmup_days` earlier
DEFAULT_DAYS = 60
DEFAULT_WARMUP_DAYS = 21      # 20-day windows (+1 day for the first close-to-close return) before day 1
DEFAULT_SEED = 7

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
VENUES = ("binance", "okx", "coinbase")

# Daily sigmas are fractions (0.025 = 2.5 % a day). adv_base is consolidated volume in base units.
SYMBOL_SPECS: dict[str, dict[str, Any]] = {
    "BTCUSDT": {"price0": 58_000.0, "sigma_calm": 0.025, "sigma_stressed": 0.055,
                "adv_base": 25_000.0, "share": 0.45, "lot_decimals": 5, "price_decimals": 2,
                "spread_bps": {"binance": 0.8, "okx": 1.0, "coinbase": 1.4}},
    "ETHUSDT": {"price0": 2_600.0, "sigma_calm": 0.032, "sigma_stressed": 0.070,
                "adv_base": 300_000.0, "share": 0.35, "lot_decimals": 4, "price_decimals": 2,
                "spread_bps": {"binance": 1.2, "okx": 1.5, "coinbase": 2.0}},
    "SOLUSDT": {"price0": 145.0, "sigma_calm": 0.045, "sigma_stressed": 0.095,
                "adv_base": 3_000_000.0, "share": 0.20, "lot_decimals": 2, "price_decimals": 3,
                "spread_bps": {"binance": 2.5, "okx": 3.0, "coinbase": 4.0}},
}
# Venue share of metaorders, true sqrt/power-law coefficient Y, taker fee (not in exec_price).
VENUE_SPECS: dict[str, dict[str, float]] = {
    "binance": {"share": 0.50, "Y": 0.6, "fee_bps": 1.0},
    "okx": {"share": 0.30, "Y": 0.8, "fee_bps": 0.8},
    "coinbase": {"share": 0.20, "Y": 1.0, "fee_bps": 4.0},
}
# Day-to-day regime chain, rows = from (calm, stressed), columns = to (calm, stressed).
TRANSITION = ((0.92, 0.08), (0.25, 0.75))
STRESS_VOLUME_MULT = 1.6
STRESS_SPREAD_MULT = 1.5
DAILY_VOLUME_LOGSD = 0.25
MINUTE_VOLUME_LOGSD = 0.5
INTRADAY_AMPLITUDE = 0.4      # activity profile 1 + A*cos(2*pi*(hour - 15)/24): busiest at 15:00 UTC
INTRADAY_PEAK_HOUR = 15.0
SPREAD_LOGSD = 0.25           # stationary sd of log(spread) around its level
SPREAD_AR_PHI = 0.98          # per-minute AR(1) persistence of log(spread)

# Metaorders: Q/adv = 10**(-5 + 4*Beta(1.3, 2.2)) (most orders small); duration from a target POV.
PARTICIPATION_BETA = (1.3, 2.2)
POV_RANGE = (0.02, 0.30)
DURATION_RANGE_S = (60, 14_400)

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "power_law": {"h": 1.0, "delta": 0.5, "Y": {v: s["Y"] for v, s in VENUE_SPECS.items()}},
    "sqrt": {"h": 1.0, "Y": {v: s["Y"] for v, s in VENUE_SPECS.items()}},
    "almgren": {"h": 1.0, "gamma": 0.3, "eta": 0.15, "beta": 0.6},
    "linear": {"h": 1.0, "lambda": 5.0},
}
FORMULAS = {
    "power_law": "cost_bps = h*spread_bps/2 + 1e4*Y*sigma*(Q/V)**delta",
    "sqrt": "cost_bps = h*spread_bps/2 + 1e4*Y*sigma*(Q/V)**0.5",
    "almgren": "cost_bps = h*spread_bps/2 + 1e4*sigma*(gamma/2*(Q/V) + eta*(Q/(V*T))**beta)",
    "linear": "cost_bps = h*spread_bps/2 + 1e4*lambda*sigma*(Q/V)",
}
NOISE_SCALE = 0.5
NOISE_DOF = 4.0
OUTLIER_SHARE = 0.01
NOISE_BURST_RANGE = (10.0, 30.0)      # outlier kind 1: +-U(10, 30) x the fill's noise sd
BAD_PRINT_RANGE_BPS = (100.0, 500.0)  # outlier kind 2: +-U(100, 500) bps (a wrong exec price)

# One day of BTCUSDT trades and quotes (binance) for enrichment tests.
TAPE_SYMBOL, TAPE_VENUE, TAPE_DAY = "BTCUSDT", "binance", "2024-10-15"
TRADES_PER_DAY = 43_200
QUOTES_PER_DAY = 4_320
TICK = 0.01

# Option chain: SSVI (Gatheral & Jacquier 2014) with power-law phi, BTC, Deribit-like.
SSVI = {"rho": -0.2, "eta": 1.2, "gamma": 0.45}
ATM_VOL_TERM = {"sigma_short": 0.50, "sigma_long": 0.60, "tau_years": 0.25}  # sigma(T)=l+(s-l)e^(-T/tau)
FUTURES_BASIS = 0.06          # annualised: F(T) = S * exp(basis * T)
EXPIRIES = ("2024-11-01", "2024-11-02", "2024-11-08", "2024-11-29", "2024-12-27",
            "2025-01-31", "2025-03-28", "2025-10-31")
EXPIRY_HOUR_UTC = 8
STRIKES_PER_EXPIRY = (31, 33, 35, 35, 37, 37, 39, 39)
STRIKE_REACH_SD = 3.0
STRIKE_STEPS = (50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000)
IV_HALF_SPREAD = {"base": 0.005, "per_sd": 0.004, "max_sd": 4.0}  # fractions of vol
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

FILL_COLUMNS = ("timestamp", "symbol", "venue", "side", "quantity", "arrival_price", "exec_price",
                "duration_s", "adv", "market_volume", "volatility", "spread_bps", "fee_bps",
                "order_id")
SAMPLE_FILES = ("fills.csv", "bars_15m.csv", "trades_BTCUSDT.csv.gz", "quotes_BTCUSDT.csv.gz",
                "options_chain.csv", "ground_truth.json", "README.md")


# --- market ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Market:
    """One simulated market on a minute grid; arrays are indexed [symbol, ...] (and [.., venue, ..])."""
    seed: int
    start: np.datetime64          # midnight UTC of the first (warm-up) day
    days: int                     # total days, warm-up included
    warmup_days: int
    symbols: tuple[str, ...]
    venues: tuple[str, ...]
    regime: np.ndarray            # (S, days) int8, 0 calm / 1 stressed
    sigma_daily: np.ndarray       # (S, days) true daily sigma of the day's regime
    daily_volume: np.ndarray      # (S, days)
    log_mid: np.ndarray           # (S, M+1) log mid at each minute boundary
    minute_volume: np.ndarray     # (S, M)
    cum_volume: np.ndarray        # (S, M+1) volume traded before each minute boundary
    spread_bps: np.ndarray        # (S, V, M) quoted spread during each minute

    @property
    def minutes(self) -> int:
        return self.days * MINUTES_PER_DAY

    def adv(self) -> np.ndarray:
        """(S, days): mean daily volume of the ADV_WINDOW_DAYS days strictly before each day."""
        cs = np.concatenate([np.zeros((len(self.symbols), 1)), np.cumsum(self.daily_volume, 1)], 1)
        d = np.arange(self.days)
        out = (cs[:, d] - cs[:, np.maximum(d - ADV_WINDOW_DAYS, 0)]) / ADV_WINDOW_DAYS
        out[:, d < ADV_WINDOW_DAYS] = np.nan
        return out

    def mid_at(self, sym: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        """Mid price at seconds since `start`: log-linear between minute boundaries."""
        m = t_s / 60.0
        i = np.minimum(np.floor(m).astype(np.int64), self.minutes - 1)
        f = m - i
        return np.exp(self.log_mid[sym, i] * (1 - f) + self.log_mid[sym, i + 1] * f)

    def volume_between(self, sym: np.ndarray, t0_s: np.ndarray, t1_s: np.ndarray) -> np.ndarray:
        """Volume traded in [t0, t1]: the minute volume is spread evenly over its minute."""
        def cum(t_s):
            m = t_s / 60.0
            i = np.minimum(np.floor(m).astype(np.int64), self.minutes - 1)
            return self.cum_volume[sym, i] + self.minute_volume[sym, i] * (m - i)
        return cum(t1_s) - cum(t0_s)


def _intraday_profile(minute_of_day: np.ndarray) -> np.ndarray:
    hour = minute_of_day / 60.0
    return 1.0 + INTRADAY_AMPLITUDE * np.cos(2 * np.pi * (hour - INTRADAY_PEAK_HOUR) / 24.0)


def _regime_paths(rng: np.random.Generator, n_series: int, days: int) -> np.ndarray:
    """Two-state Markov chains on days, vectorised through geometric sojourn times."""
    p_leave = np.array([TRANSITION[0][1], TRANSITION[1][0]])
    stationary_stressed = p_leave[0] / p_leave.sum()
    first = (rng.random(n_series) < stationary_stressed).astype(np.int8)
    # each sojourn lasts >= 1 day, so `days` sojourns always cover the horizon
    states = (first[:, None] + np.arange(days)[None, :]) % 2
    sojourn = rng.geometric(p_leave[states])
    # the first sojourn is already under way at day 0: by memorylessness it is geometric too
    out = np.empty((n_series, days), dtype=np.int8)
    for s in range(n_series):   # one np.repeat per symbol, not a loop over days
        out[s] = np.repeat(states[s], sojourn[s])[:days]
    return out


def simulate_market(seed: int = DEFAULT_SEED, *, start: str = DEFAULT_START,
                    days: int = DEFAULT_DAYS, warmup_days: int = DEFAULT_WARMUP_DAYS,
                    symbols: Sequence[str] = SYMBOLS, venues: Sequence[str] = VENUES) -> Market:
    """Simulate `warmup_days + days` UTC days of the market (deterministic for a seed)."""
    symbols, venues = tuple(symbols), tuple(venues)
    unknown = [s for s in symbols if s not in SYMBOL_SPECS]
    if unknown:
        raise ValueError(f"unknown symbols {unknown}; known: {sorted(SYMBOL_SPECS)}")
    if warmup_days < ADV_WINDOW_DAYS:
        raise ValueError(f"warmup_days must be >= {ADV_WINDOW_DAYS} so every fill has an adv")
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[0])
    n_sym, n_ven = len(symbols), len(venues)
    total_days = days + warmup_days
    minutes = total_days * MINUTES_PER_DAY
    specs = [SYMBOL_SPECS[s] for s in symbols]

    regime = _regime_paths(rng, n_sym, total_days)
    sig = np.array([[s["sigma_calm"], s["sigma_stressed"]] for s in specs])
    sigma_daily = np.take_along_axis(sig, regime.astype(np.intp), 1)

    # GBM on the minute grid with the day's sigma; drift -sigma^2/2 keeps the price a martingale
    sigma_min = np.repeat(sigma_daily, MINUTES_PER_DAY, axis=1) / np.sqrt(MINUTES_PER_DAY)
    steps = sigma_min * rng.standard_normal((n_sym, minutes)) - 0.5 * sigma_min ** 2
    log0 = np.log([s["price0"] for s in specs])[:, None]
    log_mid = np.concatenate([log0, log0 + np.cumsum(steps, 1)], 1)

    # consolidated volume: day level x intraday weights normalised within each day
    base = np.array([s["adv_base"] for s in specs])[:, None]
    day_noise = np.exp(DAILY_VOLUME_LOGSD * rng.standard_normal((n_sym, total_days))
                       - 0.5 * DAILY_VOLUME_LOGSD ** 2)
    daily_volume = base * day_noise * np.where(regime == 1, STRESS_VOLUME_MULT, 1.0)
    mod = np.arange(minutes) % MINUTES_PER_DAY
    weights = _intraday_profile(mod)[None, :] * np.exp(
        MINUTE_VOLUME_LOGSD * rng.standard_normal((n_sym, minutes)))
    weights = weights.reshape(n_sym, total_days, MINUTES_PER_DAY)
    weights /= weights.sum(2, keepdims=True)
    minute_volume = (weights * daily_volume[:, :, None]).reshape(n_sym, minutes)
    cum_volume = np.concatenate([np.zeros((n_sym, 1)), np.cumsum(minute_volume, 1)], 1)

    # spreads: AR(1) in logs around level x regime multiplier
    level = np.empty((n_sym, n_ven))
    for i, s in enumerate(specs):
        known = s["spread_bps"]
        level[i] = [known.get(v, float(np.median(list(known.values())))) for v in venues]
    shocks = rng.standard_normal((n_sym, n_ven, minutes)) * SPREAD_LOGSD
    shocks[..., 1:] *= np.sqrt(1 - SPREAD_AR_PHI ** 2)   # the first value is already stationary
    log_dev = lfilter([1.0], [1.0, -SPREAD_AR_PHI], shocks, axis=-1)
    stress = np.repeat(np.where(regime == 1, STRESS_SPREAD_MULT, 1.0), MINUTES_PER_DAY, axis=1)
    spread = (level[:, :, None] * stress[:, None, :]
              * np.exp(log_dev - 0.5 * SPREAD_LOGSD ** 2))

    start64 = np.datetime64(start, "D") - np.timedelta64(warmup_days, "D")
    return Market(seed=seed, start=start64, days=total_days, warmup_days=warmup_days,
                  symbols=symbols, venues=venues, regime=regime, sigma_daily=sigma_daily,
                  daily_volume=daily_volume, log_mid=log_mid, minute_volume=minute_volume,
                  cum_volume=cum_volume, spread_bps=spread)


# --- fills -------------------------------------------------------------------------------------


def _resolve_params(model: str, params: Mapping[str, Any] | None,
                    venues: Sequence[str]) -> dict[str, Any]:
    if model not in DEFAULT_PARAMS:
        raise ValueError(f"unknown model {model!r}; known: {sorted(DEFAULT_PARAMS)}")
    merged: dict[str, Any] = dict(DEFAULT_PARAMS[model])
    unknown = set(params or {}) - set(merged)
    if unknown:
        raise ValueError(f"model {model!r} has no parameters {sorted(unknown)}; "
                         f"it has {sorted(merged)}")
    merged.update(params or {})
    out: dict[str, Any] = {}
    for name, value in merged.items():
        if isinstance(value, Mapping):
            missing = [v for v in venues if v not in value]
            if missing:
                raise ValueError(f"parameter {name!r} is per venue but has no value for {missing}")
            out[name] = {v: float(value[v]) for v in venues}
        else:
            out[name] = float(value)
    return out


def _per_fill(value: Any, venues: Sequence[str], venue_idx: np.ndarray) -> np.ndarray:
    if isinstance(value, dict):
        return np.array([value[v] for v in venues])[venue_idx]
    return np.full(venue_idx.shape, value)


def _impact_bps(model: str, p: dict[str, Any], venues, vi, sigma, participation, T_days):
    def par(name):
        return _per_fill(p[name], venues, vi)
    if model == "power_law":
        return 1e4 * par("Y") * sigma * participation ** par("delta")
    if model == "sqrt":
        return 1e4 * par("Y") * sigma * np.sqrt(participation)
    if model == "almgren":
        return 1e4 * sigma * (par("gamma") / 2 * participation
                              + par("eta") * (participation / T_days) ** par("beta"))
    return 1e4 * par("lambda") * sigma * participation   # linear


def _iso(t: np.ndarray, unit: str) -> np.ndarray:
    """ISO-8601 UTC strings ('...Z') from datetime64, vectorised and byte-stable."""
    return np.char.add(np.datetime_as_string(t, unit=unit), "Z")


def generate_fills(n: int = 20_000, *, seed: int = DEFAULT_SEED, model: str = "power_law",
                   params: Mapping[str, Any] | None = None,
                   venues: Sequence[str] | Mapping[str, float] = VENUES,
                   symbols: Sequence[str] = SYMBOLS,
                   noise_scale: float = NOISE_SCALE, outlier_share: float = OUTLIER_SHARE,
                   dof: float = NOISE_DOF, participation: str = "adv",
                   days: int = DEFAULT_DAYS, start: str = DEFAULT_START,
                   market: Market | None = None, day: int | None = None,
                   rng: np.random.Generator | None = None,
                   first_order_id: int = 1) -> tuple[pd.DataFrame, dict]:
    """Metaorders with a known cost model, as a canonical fills frame, and the truth behind them.

    `params` override the model's defaults (`DEFAULT_PARAMS`); a value may be a number or a
    {venue: number} mapping. `venues` is a list (shares from VENUE_SPECS, equal for unknown venues)
    or {venue: share}. `participation` = "adv" (Q/adv) or "horizon" (Q/market_volume) picks the
    denominator of the impact formula. Noise: 1e4*sigma*sqrt(T)*noise_scale*eps with eps Student-t
    (dof) scaled to unit variance; `outlier_share` of the rows get an outlier (half noise bursts,
    half bad prints). The frame is what `execal.models.data.io.load` makes of fills.csv: timestamp
    datetime64[ns, UTC], side int8 (+1/-1), and the derived cost_bps.

    For data bigger than memory (`generate_fills_dataset`): `day` (0-based day of the fills
    window) puts every arrival in that UTC day, `rng` replaces the seed's fills stream and order
    ids start at `first_order_id`.
    """
    if n < 1:
        raise ValueError("n must be >= 1")
    if dof <= 2:
        raise ValueError("dof must be > 2 (the noise is scaled to unit variance)")
    if not 0 <= outlier_share < 1:
        raise ValueError("outlier_share must be in [0, 1)")
    if participation not in ("adv", "horizon"):
        raise ValueError("participation must be 'adv' or 'horizon'")
    if isinstance(venues, Mapping):
        venue_names = tuple(venues)
        venue_share = np.array([float(venues[v]) for v in venue_names])
    else:
        venue_names = tuple(venues)
        venue_share = np.array([VENUE_SPECS[v]["share"] if v in VENUE_SPECS else 1.0
                                for v in venue_names])
    venue_share = venue_share / venue_share.sum()
    p = _resolve_params(model, params, venue_names)
    if market is None:
        market = simulate_market(seed, start=start, days=days, symbols=symbols,
                                 venues=venue_names)
    elif market.venues != venue_names or market.seed != seed:
        raise ValueError("market was simulated for other venues or another seed")
    symbols = market.symbols
    specs = [SYMBOL_SPECS[s] for s in symbols]
    if rng is None:
        rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(5)[1])

    sym_share = np.array([s["share"] for s in specs])
    si = rng.choice(len(symbols), size=n, p=sym_share / sym_share.sum())
    vi = rng.choice(len(venue_names), size=n, p=venue_share)
    side = np.where(rng.random(n) < 0.5, 1, -1).astype(np.int8)
    target_part = 10.0 ** (-5.0 + 4.0 * rng.beta(*PARTICIPATION_BETA, size=n))
    pov = np.exp(rng.uniform(np.log(POV_RANGE[0]), np.log(POV_RANGE[1]), n))
    duration_s = np.clip(np.round(target_part / pov * SECONDS_PER_DAY), *DURATION_RANGE_S)

    # arrival minute drawn with the intraday activity profile, within the fills window
    first_min = market.warmup_days * MINUTES_PER_DAY
    if day is None:
        window = np.arange(first_min, market.minutes)
    else:
        if not 0 <= day < market.days - market.warmup_days:
            raise ValueError(f"day {day} is outside the {market.days - market.warmup_days} fills days")
        window = np.arange(first_min + day * MINUTES_PER_DAY, first_min + (day + 1) * MINUTES_PER_DAY)
    w = _intraday_profile(window % MINUTES_PER_DAY)
    arrival_s = (rng.choice(window, size=n, p=w / w.sum()) * 60
                 + rng.integers(0, 60, n)).astype(np.float64)
    arrival_s = np.minimum(arrival_s, market.minutes * 60 - duration_s)   # ends inside the data

    eps = rng.standard_t(dof, n) / np.sqrt(dof / (dof - 2))
    n_out = int(round(outlier_share * n))
    out_idx = rng.choice(n, size=n_out, replace=False)
    out_sign = np.where(rng.random(n_out) < 0.5, 1.0, -1.0)
    out_size = rng.random(n_out)
    n_burst = n_out // 2

    order = np.argsort(arrival_s, kind="stable")   # rows in time order; order_id follows it
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    si, vi, side, target_part, duration_s, arrival_s, eps = (
        a[order] for a in (si, vi, side, target_part, duration_s, arrival_s, eps))
    out_idx = rank[out_idx]

    day = (arrival_s // SECONDS_PER_DAY).astype(np.int64)
    sigma = market.sigma_daily[si, day]
    adv = np.round(market.adv()[si, day], 3)
    market_volume = np.round(market.volume_between(si, arrival_s, arrival_s + duration_s), 4)
    minute = (arrival_s // 60).astype(np.int64)
    spread_bps = np.round(market.spread_bps[si, vi, minute], 3)
    lot = np.array([s["lot_decimals"] for s in specs])[si]
    ref = adv if participation == "adv" else market_volume
    quantity = np.maximum(np.round(target_part * ref * 10.0 ** lot) / 10.0 ** lot, 10.0 ** -lot)
    price_dec = np.array([s["price_decimals"] for s in specs])[si]
    arrival_price = np.round(market.mid_at(si, arrival_s) * 10.0 ** price_dec) / 10.0 ** price_dec

    # the truth is computed from the values as written, so recovery is exact in expectation
    part = quantity / ref
    T_days = duration_s / SECONDS_PER_DAY
    half_spread = _per_fill(p["h"], venue_names, vi) * spread_bps / 2
    impact = _impact_bps(model, p, venue_names, vi, sigma, part, T_days)
    noise_sd = 1e4 * sigma * np.sqrt(T_days) * noise_scale
    noise = noise_sd * eps
    outlier_bps = np.zeros(n)
    burst, bad = out_idx[:n_burst], out_idx[n_burst:]
    lo, hi = NOISE_BURST_RANGE
    outlier_bps[burst] = (out_sign[:n_burst] * (lo + (hi - lo) * out_size[:n_burst])
                          * noise_sd[burst])
    lo, hi = BAD_PRINT_RANGE_BPS
    outlier_bps[bad] = out_sign[n_burst:] * (lo + (hi - lo) * out_size[n_burst:])
    cost = half_spread + impact + noise + outlier_bps
    exec_price = np.round(arrival_price * (1 + side * cost / 1e4), 6)

    ts = market.start.astype("datetime64[ns]") + (arrival_s * 1e9).astype("timedelta64[ns]")
    order_id = np.char.add("O", np.char.zfill(np.arange(first_order_id, first_order_id + n).astype(str), 7))
    fee = np.array([VENUE_SPECS.get(v, {"fee_bps": 1.0})["fee_bps"] for v in venue_names])[vi]
    frame = pd.DataFrame({
        "timestamp": pd.DatetimeIndex(ts).tz_localize("UTC"),
        "symbol": np.asarray(symbols)[si], "venue": np.asarray(venue_names)[vi], "side": side,
        "quantity": quantity, "arrival_price": arrival_price, "exec_price": exec_price,
        "duration_s": duration_s, "adv": adv, "market_volume": market_volume,
        "volatility": sigma, "spread_bps": spread_bps, "fee_bps": fee, "order_id": order_id,
    })
    frame["symbol"] = frame["symbol"].astype(str)
    frame["cost_bps"] = side * (exec_price / arrival_price - 1) * 1e4
    truth = {
        "model": model,
        "formula": FORMULAS[model],
        "params": p,
        "participation": participation,
        "units": {"cost": "bps", "sigma": "daily, fraction", "T": "days = duration_s/86400",
                  "spread_bps": "bps"},
        "noise": {"distribution": "student_t", "dof": float(dof), "scale": float(noise_scale),
                  "formula": "noise_bps = 1e4*sigma*sqrt(T)*scale*eps, "
                             "eps = t(dof)/sqrt(dof/(dof-2))"},
        "outliers": {"share": float(outlier_share), "count": n_out,
                     "noise_burst": {"count": int(n_burst), "times_noise_sd": list(NOISE_BURST_RANGE),
                                     "order_ids": sorted(order_id[burst].tolist())},
                     "bad_print": {"count": int(n_out - n_burst), "bps": list(BAD_PRINT_RANGE_BPS),
                                   "order_ids": sorted(order_id[bad].tolist())}},
        "seed": int(seed),
        "n": int(n),
        "venues": list(venue_names),
        "symbols": list(symbols),
        "fee_bps": {v: float(VENUE_SPECS.get(v, {"fee_bps": 1.0})["fee_bps"]) for v in venue_names},
    }
    return frame, truth


# --- bars, trades, quotes ----------------------------------------------------------------------


def make_bars(market: Market, bar_minutes: int = 15) -> pd.DataFrame:
    """OHLCV bars of the mid path, labelled by their open time; volume in base units."""
    if MINUTES_PER_DAY % bar_minutes:
        raise ValueError("bar_minutes must divide a day")
    n_sym = len(market.symbols)
    n_bars = market.minutes // bar_minutes
    lm = market.log_mid
    # the bar's path: its bar_minutes boundaries plus the closing boundary
    inside = lm[:, :-1].reshape(n_sym, n_bars, bar_minutes)
    closes = lm[:, bar_minutes::bar_minutes]
    path = np.concatenate([inside, closes[:, :, None]], 2)
    dec = np.array([SYMBOL_SPECS[s]["price_decimals"] for s in market.symbols])[:, None]
    scale = 10.0 ** dec

    # rows in time order, symbols interleaved: the file is sorted by timestamp like a download
    def flat(x):
        return x.T.ravel()

    def px(x):
        return flat(np.round(np.exp(x) * scale) / scale)

    start = market.start.astype("datetime64[m]")
    ts = start + np.arange(n_bars) * np.timedelta64(bar_minutes, "m")
    volume = market.minute_volume.reshape(n_sym, n_bars, bar_minutes).sum(2)
    return pd.DataFrame({
        "timestamp": np.repeat(_iso(ts, "s"), n_sym),
        "symbol": np.tile(np.asarray(market.symbols), n_bars),
        "open": px(path[:, :, 0]), "high": px(path.max(2)), "low": px(path.min(2)),
        "close": px(path[:, :, -1]), "volume": flat(np.round(volume, 4)),
    })


def _tape_day_index(market: Market, day: str) -> int:
    d = int((np.datetime64(day, "D") - market.start.astype("datetime64[D]")).astype(int))
    if not market.warmup_days <= d < market.days:
        raise ValueError(f"tape day {day} is outside the fills window")
    return d


def make_trades(market: Market, *, symbol: str = TAPE_SYMBOL, venue: str = TAPE_VENUE,
                day: str = TAPE_DAY, trades_per_day: int = TRADES_PER_DAY) -> pd.DataFrame:
    """One day of prints: their volume per minute is the market's minute volume (so the bars of
    that day are the sum of the tape), prices are the mid +- half the venue's spread by aggressor."""
    rng = np.random.default_rng(np.random.SeedSequence(market.seed).spawn(5)[2])
    s, v = market.symbols.index(symbol), market.venues.index(venue)
    d = _tape_day_index(market, day)
    minutes = np.arange(d * MINUTES_PER_DAY, (d + 1) * MINUTES_PER_DAY)
    vol = market.minute_volume[s, minutes]
    counts = np.maximum(rng.poisson(trades_per_day * vol / vol.sum()), 1)
    minute = np.repeat(minutes, counts)
    n = minute.size
    offset_ms = rng.integers(0, 60_000, n)
    size_w = rng.lognormal(0.0, 1.0, n)
    aggressor = np.where(rng.random(n) < 0.5, 1, -1)
    order = np.lexsort((offset_ms, minute))
    minute, offset_ms, size_w, aggressor = (a[order] for a in (minute, offset_ms, size_w, aggressor))
    minute_total = np.bincount(minute - minutes[0], weights=size_w, minlength=MINUTES_PER_DAY)
    qty = vol[minute - minutes[0]] * size_w / minute_total[minute - minutes[0]]
    dec = SYMBOL_SPECS[symbol]["lot_decimals"]
    qty = np.maximum(np.round(qty, dec), 10.0 ** -dec)
    t_s = minute * 60 + offset_ms / 1000.0
    mid = market.mid_at(np.full(n, s), t_s)
    half = market.spread_bps[s, v, minute] / 2e4
    price = np.round(mid * (1 + aggressor * half) / TICK) * TICK
    ts = market.start.astype("datetime64[ms]") + (minute * 60_000 + offset_ms).astype("timedelta64[ms]")
    return pd.DataFrame({
        "timestamp": _iso(ts, "ms"), "symbol": symbol, "venue": venue,
        "price": np.round(price, 2), "quantity": qty,
        "side": np.where(aggressor > 0, "buy", "sell"),
    })


def make_quotes(market: Market, *, symbol: str = TAPE_SYMBOL, venue: str = TAPE_VENUE,
                day: str = TAPE_DAY, quotes_per_day: int = QUOTES_PER_DAY) -> pd.DataFrame:
    """Top of book at random times of the tape day: bid/ask around the mid at the venue's spread
    of that minute, bid rounded down and ask up to the tick."""
    rng = np.random.default_rng(np.random.SeedSequence(market.seed).spawn(5)[3])
    s, v = market.symbols.index(symbol), market.venues.index(venue)
    d = _tape_day_index(market, day)
    day_ms = d * SECONDS_PER_DAY * 1000
    t_ms = np.unique(rng.integers(day_ms, day_ms + SECONDS_PER_DAY * 1000, quotes_per_day))
    n = t_ms.size
    minute = t_ms // 60_000
    mid = market.mid_at(np.full(n, s), t_ms / 1000.0)
    half = market.spread_bps[s, v, minute] / 2e4
    bid = np.floor(mid * (1 - half) / TICK) * TICK
    ask = np.ceil(mid * (1 + half) / TICK) * TICK
    ts = market.start.astype("datetime64[ms]") + t_ms.astype("timedelta64[ms]")
    return pd.DataFrame({
        "timestamp": _iso(ts, "ms"), "symbol": symbol, "venue": venue,
        "bid_price": np.round(bid, 2),
        "bid_size": np.maximum(np.round(rng.lognormal(0.5, 1.0, n), 3), 0.001),
        "ask_price": np.round(ask, 2),
        "ask_size": np.maximum(np.round(rng.lognormal(0.5, 1.0, n), 3), 0.001),
    })


# --- option chain ------------------------------------------------------------------------------


def random_walk_trades(day: str, n: int, symbol: str, start_price: float, *, seed: int,
                       sigma_per_min: float = 0.0008, quiet_hour: int | None = 5,
                       tie_every: int = 7, shuffle: bool = True) -> pd.DataFrame:
    """`n` trades of `symbol` over one UTC day, as a file would hold them (ISO timestamps): a
    random walk of log price with `sigma_per_min` per minute (the ground truth) sampled at random
    millisecond times, no trade in hour `quiet_hour` (flat bars), every `tie_every`-th trade at
    its predecessor's time (ties), rows shuffled when `shuffle` (a file not in time order). Prices
    are rounded to cents, so a few rows can repeat exactly (the reader drops those)."""
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(day, tz="UTC").value
    ms = np.sort(rng.integers(0, 86_400_000, n))
    if quiet_hour is not None:
        lo = 3_600_000 * quiet_hour
        ms = np.sort(np.minimum(np.where((ms >= lo) & (ms < lo + 3_600_000), ms + 3_600_000, ms), 86_399_999))
    if tie_every:
        ms[1::tie_every] = ms[0:-1:tie_every][: len(ms[1::tie_every])]
    dt_min = np.diff(np.concatenate([[0], ms])) / 60_000.0
    log_p = np.log(start_price) + np.cumsum(rng.standard_normal(n) * sigma_per_min * np.sqrt(dt_min))
    frame = pd.DataFrame({"timestamp": pd.to_datetime(t0 + ms * 1_000_000, unit="ns", utc=True)
                          .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                          "symbol": symbol, "price": np.round(np.exp(log_p), 2),
                          "quantity": np.round(rng.uniform(0.001, 2, n), 3)})
    if shuffle:
        frame = frame.iloc[rng.permutation(n)].reset_index(drop=True)
    return frame


def ssvi_phi(theta: np.ndarray, eta: float, gamma: float) -> np.ndarray:
    """Power-law phi(theta) = eta / (theta^gamma (1+theta)^(1-gamma))."""
    return eta / (theta ** gamma * (1 + theta) ** (1 - gamma))


def ssvi_total_variance(k: np.ndarray, theta: np.ndarray, rho: float, eta: float,
                        gamma: float) -> np.ndarray:
    """SSVI total implied variance w(k, theta) at log-moneyness k = log(K/F)."""
    phi = ssvi_phi(theta, eta, gamma)
    return theta / 2 * (1 + rho * phi * k + np.sqrt((phi * k + rho) ** 2 + 1 - rho ** 2))


def ssvi_to_raw_svi(theta: float, rho: float, eta: float, gamma: float) -> dict[str, float]:
    """The same slice as raw SVI w(k) = a + b(rho(k-m) + sqrt((k-m)^2 + sigma^2))."""
    phi = float(ssvi_phi(np.asarray(theta), eta, gamma))
    return {"a": theta / 2 * (1 - rho ** 2), "b": theta * phi / 2, "rho": rho,
            "m": -rho / phi, "sigma": np.sqrt(1 - rho ** 2) / phi}


def black76(F: np.ndarray, K: np.ndarray, T: np.ndarray, vol: np.ndarray,
            is_call: np.ndarray) -> np.ndarray:
    """Undiscounted Black-76 price in the currency of F and K."""
    sd = vol * np.sqrt(T)
    d1 = np.log(F / K) / sd + sd / 2
    d2 = d1 - sd
    call = F * ndtr(d1) - K * ndtr(d2)
    put = K * ndtr(-d2) - F * ndtr(-d1)
    return np.where(is_call, call, put)


def atm_vol(T_years: np.ndarray) -> np.ndarray:
    p = ATM_VOL_TERM
    return p["sigma_long"] + (p["sigma_short"] - p["sigma_long"]) * np.exp(-T_years / p["tau_years"])


def _deribit_date(d: np.datetime64) -> str:
    y, m, day = str(d).split("-")
    return f"{int(day)}{MONTHS[int(m) - 1]}{y[2:]}"


def make_options(market: Market) -> tuple[pd.DataFrame, dict]:
    """A BTC option chain snapshot at the end of the simulated market (Deribit-like, inverse)."""
    snapshot = market.start.astype("datetime64[s]") + np.timedelta64(market.days * SECONDS_PER_DAY, "s")
    spot = round(float(np.exp(market.log_mid[market.symbols.index("BTCUSDT"), -1])), 2)
    rho, eta, gamma = SSVI["rho"], SSVI["eta"], SSVI["gamma"]
    parts, expiries_truth = [], []
    for exp_day, n_strikes in zip(EXPIRIES, STRIKES_PER_EXPIRY):   # 8 expiries, not per row
        expiry = np.datetime64(exp_day, "s") + np.timedelta64(EXPIRY_HOUR_UTC * 3600, "s")
        T = float((expiry - snapshot).astype(np.int64)) / (365.0 * SECONDS_PER_DAY)
        F = round(spot * np.exp(FUTURES_BASIS * T), 2)   # priced with F as written
        vol_atm = float(atm_vol(np.asarray(T)))
        theta = vol_atm ** 2 * T
        # strikes: equally spaced in log-moneyness over +-3 ATM sd, each rounded to the largest
        # nice step below the local spacing (Deribit-like: fine near the money, coarse in the wings)
        reach = STRIKE_REACH_SD * vol_atm * np.sqrt(T)
        k_grid = np.linspace(-reach, reach, n_strikes)
        raw = F * np.exp(k_grid)
        steps = np.asarray(STRIKE_STEPS, dtype=float)
        local = raw * (k_grid[1] - k_grid[0])
        step = steps[np.maximum(np.searchsorted(steps, local, side="right") - 1, 0)]
        strikes = np.unique(np.round(raw / step) * step)
        K = np.repeat(strikes, 2)
        is_call = np.tile([True, False], strikes.size)
        k = np.log(K / F)
        mark_iv = np.sqrt(ssvi_total_variance(k, np.full(K.size, theta), rho, eta, gamma) / T)
        sd_units = np.minimum(np.abs(k) / (vol_atm * np.sqrt(T)), IV_HALF_SPREAD["max_sd"])
        half = IV_HALF_SPREAD["base"] + IV_HALF_SPREAD["per_sd"] * sd_units
        bid_iv, ask_iv = mark_iv - half, mark_iv + half
        Fv, Tv = np.full(K.size, F), np.full(K.size, T)
        label = _deribit_date(np.datetime64(exp_day, "D"))
        parts.append(pd.DataFrame({
            "timestamp": _iso(np.full(K.size, snapshot), "s"),
            "symbol": [f"BTC-{label}-{int(x)}-{'C' if c else 'P'}" for x, c in zip(K, is_call)],
            "venue": "deribit",
            "expiry": _iso(np.full(K.size, expiry), "s"),
            "strike": K, "option_type": np.where(is_call, "C", "P"),
            "underlying_price": spot, "futures_price": F,
            "bid_iv": np.round(bid_iv, 6), "ask_iv": np.round(ask_iv, 6),
            "mark_iv": np.round(mark_iv, 6),
            # inverse (coin-margined) prices: Black-76 in USD divided by the futures price
            "bid_price": np.round(black76(Fv, K, Tv, np.round(bid_iv, 6), is_call) / F, 8),
            "ask_price": np.round(black76(Fv, K, Tv, np.round(ask_iv, 6), is_call) / F, 8),
            "mark_price": np.round(black76(Fv, K, Tv, np.round(mark_iv, 6), is_call) / F, 8),
            "price_unit": "base",
        }))
        expiries_truth.append({
            "expiry": str(expiry) + "Z", "T_years": T, "futures_price": F,
            "atm_vol": vol_atm, "theta": theta, "strikes": int(strikes.size),
            "raw_svi": ssvi_to_raw_svi(theta, rho, eta, gamma),
        })
    truth = {
        "snapshot": str(snapshot) + "Z", "underlying": "BTC", "spot": spot,
        "model": "ssvi", "rho": rho, "eta": eta, "gamma": gamma,
        "phi": "eta / (theta**gamma * (1 + theta)**(1 - gamma))",
        "w": "theta/2 * (1 + rho*phi*k + sqrt((phi*k + rho)**2 + 1 - rho**2)), k = log(K/F)",
        "theta_term_structure": {"form": "theta(T) = atm_vol(T)**2 * T, atm_vol(T) = sigma_long "
                                         "+ (sigma_short - sigma_long)*exp(-T/tau_years)",
                                 **ATM_VOL_TERM},
        "T_convention": "ACT/365 years from the snapshot to expiry 08:00 UTC",
        "futures_basis_annual": FUTURES_BASIS,
        "discounting": "none (undiscounted Black-76, as Deribit marks)",
        "iv_half_spread": {**IV_HALF_SPREAD,
                           "form": "base + per_sd * min(|k| / (atm_vol*sqrt(T)), max_sd)"},
        "expiries": expiries_truth,
    }
    return pd.concat(parts, ignore_index=True), truth


# --- the sample directory ----------------------------------------------------------------------


def _csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n").encode()


def _to_file_fills(frame: pd.DataFrame) -> pd.DataFrame:
    """The canonical frame as a user's CSV: ISO timestamps, buy/sell, no derived cost_bps."""
    out = frame.loc[:, list(FILL_COLUMNS)].copy()
    ts = out["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    out["timestamp"] = _iso(ts, "s")
    out["side"] = np.where(out["side"].to_numpy() > 0, "buy", "sell")
    out["duration_s"] = out["duration_s"].astype(np.int64)
    return out


def market_truth(market: Market) -> dict:
    days = market.start.astype("datetime64[D]") + np.arange(market.days)
    return {
        "start": str(market.start) + "T00:00:00Z",
        "days": market.days, "warmup_days": market.warmup_days,
        "fills_start": str(days[market.warmup_days]) + "T00:00:00Z",
        "end": str(days[-1] + 1) + "T00:00:00Z",
        "price_path": "GBM on a 1-minute grid, daily sigma = the day's regime sigma, "
                      "log drift -sigma^2/2 (martingale)",
        "regime": {"states": ["calm", "stressed"], "transition": [list(r) for r in TRANSITION],
                   "transition_note": "P[from][to] per UTC day; initial state from the "
                                      "stationary distribution"},
        "symbols": {s: {"price0": SYMBOL_SPECS[s]["price0"],
                        "sigma_calm": SYMBOL_SPECS[s]["sigma_calm"],
                        "sigma_stressed": SYMBOL_SPECS[s]["sigma_stressed"],
                        "adv_base": SYMBOL_SPECS[s]["adv_base"],
                        "spread_bps": SYMBOL_SPECS[s]["spread_bps"],
                        "regime_by_day": market.regime[i].tolist(),
                        "daily_volume": np.round(market.daily_volume[i], 4).tolist()}
                    for i, s in enumerate(market.symbols)},
        "volume": {"stress_mult": STRESS_VOLUME_MULT, "daily_logsd": DAILY_VOLUME_LOGSD,
                   "minute_logsd": MINUTE_VOLUME_LOGSD,
                   "intraday": f"1 + {INTRADAY_AMPLITUDE}*cos(2*pi*(hour - "
                               f"{INTRADAY_PEAK_HOUR:g})/24)",
                   "adv": f"mean daily volume of the {ADV_WINDOW_DAYS} UTC days strictly before "
                          "the arrival day",
                   "market_volume": "volume in [arrival, arrival + duration_s], each minute's "
                                    "volume spread evenly over its minute"},
        "spread": {"stress_mult": STRESS_SPREAD_MULT, "logsd": SPREAD_LOGSD,
                   "ar_phi_per_minute": SPREAD_AR_PHI,
                   "form": "level * stress_mult(regime) * exp(AR(1) - logsd^2/2)"},
    }


def _readme(truth: dict, sizes: dict[str, int], seed: int) -> str:
    f, m, o = truth["fills"], truth["market"], truth["options"]
    yrow = (", ".join(f"{v}: {f['params']['Y'][v]:g}" for v in f["venues"])
            if isinstance(f["params"].get("Y"), dict) else str(f["params"].get("Y")))
    burst, bad = f["outliers"]["noise_burst"], f["outliers"]["bad_print"]
    fill_days = m["days"] - m["warmup_days"]
    lines = [
        "# execal sample data (generated, do not edit)",
        "",
        "Synthetic crypto market data with known parameters: a calibration on these files should",
        "find the values below. Every file comes from one seed and one simulated market, so the files",
        "agree with each other (bars are the sum of the tape, `adv`/`market_volume` come from the",
        "same volume).",
        "",
        "Regenerate (byte-identical for a seed; `tests/data/test_sample.py` checks the committed copy):",
        "",
        "```",
        f"python -m execal.models.data.sample --out sample_data --seed {seed}",
        "```",
        "",
        "## Files",
        "",
        "| file | what | rows | bytes |",
        "|---|---|---:|---:|",
        f"| fills.csv | {f['n']:,} metaorders (canonical fills columns), {m['fills_start'][:10]} to "
        f"{m['end'][:10]} ({fill_days} UTC days, 24/7), {', '.join(f['symbols'])} on "
        f"{', '.join(f['venues'])} "
        f"| {truth['rows']['fills.csv']:,} | {sizes['fills.csv']:,} |",
        f"| bars_15m.csv | 15-minute OHLCV of the mid path, labelled by open time, volume in base "
        f"units (consolidated), from {m['start'][:10]} (a {m['warmup_days']}-day warm-up before the "
        f"first fill, so a 20-day adv/volatility exists for every fill) "
        f"| {truth['rows']['bars_15m.csv']:,} | {sizes['bars_15m.csv']:,} |",
        f"| trades_BTCUSDT.csv.gz | {TAPE_SYMBOL} {TAPE_VENUE} prints of {TAPE_DAY}: each minute's "
        f"volume equals the bars' minute volume; price = mid +- half spread by aggressor side, "
        f"tick {TICK} | {truth['rows']['trades_BTCUSDT.csv.gz']:,} "
        f"| {sizes['trades_BTCUSDT.csv.gz']:,} |",
        f"| quotes_BTCUSDT.csv.gz | top of book of the same day and venue at random times; spread = "
        f"the venue's spread of that minute | {truth['rows']['quotes_BTCUSDT.csv.gz']:,} "
        f"| {sizes['quotes_BTCUSDT.csv.gz']:,} |",
        f"| options_chain.csv | BTC option chain snapshot at {o['snapshot']} (Deribit-like: "
        f"{len(o['expiries'])} expiries, calls and puts, inverse prices in BTC, IVs as fractions) "
        f"from an SSVI surface | {truth['rows']['options_chain.csv']:,} "
        f"| {sizes['options_chain.csv']:,} |",
        "| ground_truth.json | every true parameter, machine-readable | | |",
        "",
        "## Fills: the true cost model",
        "",
        f"`{f['formula']}` with Q/V = quantity/adv, sigma = `volatility` (the true daily sigma of the",
        "day's regime), spread = `spread_bps` at arrival. Realised cost:",
        "`cost_bps = side*(exec_price/arrival_price - 1)*1e4`; `fee_bps` is NOT in exec_price.",
        "",
        "| parameter | true value |",
        "|---|---|",
        f"| model | {f['model']} |",
        f"| h | {f['params']['h']:g} |",
        f"| delta | {f['params'].get('delta', 0.5):g} |",
        f"| Y by venue | {yrow} |",
        f"| noise | `{f['noise']['formula']}`, dof = {f['noise']['dof']:g}, scale = "
        f"{f['noise']['scale']:g} |",
        f"| outliers | {f['outliers']['share']:.1%} of rows ({f['outliers']['count']}): "
        f"{burst['count']} noise bursts of +-U({burst['times_noise_sd'][0]:g}, "
        f"{burst['times_noise_sd'][1]:g}) x the fill's noise sd, {bad['count']} bad prints of "
        f"+-U({bad['bps'][0]:g}, {bad['bps'][1]:g}) bps (order ids in ground_truth.json) |",
        f"| participation Q/adv | 10^(-5 + 4 Beta{PARTICIPATION_BETA}): 1e-5 to 0.1, most orders "
        f"small |",
        f"| duration_s | Q/adv / POV days, POV log-uniform {POV_RANGE}, clipped to "
        f"{DURATION_RANGE_S[0]} s to {DURATION_RANGE_S[1]} s |",
        f"| fee_bps | " + ", ".join(f"{v}: {x:g}" for v, x in f["fee_bps"].items()) + " |",
        "",
        "## Market",
        "",
        "| symbol | price at start | sigma calm | sigma stressed | adv base "
        "| spread bps (binance, okx, coinbase) | stressed days |",
        "|---|---:|---:|---:|---:|---|---:|",
    ]
    for s, v in m["symbols"].items():
        sp = ", ".join(f"{x:g}" for x in v["spread_bps"].values())
        lines.append(f"| {s} | {v['price0']:,g} | {v['sigma_calm']:g} | {v['sigma_stressed']:g} | "
                     f"{v['adv_base']:,.0f} | {sp} | {sum(v['regime_by_day'])} of {m['days']} |")
    tr = m["regime"]["transition"]
    lines += [
        "",
        f"- Regimes: a two-state Markov chain per symbol on UTC days, P(calm->stressed) = "
        f"{tr[0][1]:g}, P(stressed->calm) = {tr[1][0]:g}; the `volatility` column is the sigma of "
        f"the arrival day's regime.",
        f"- Price: {m['price_path']}.",
        f"- Volume: stressed days x{m['volume']['stress_mult']:g}, day noise log-sd "
        f"{m['volume']['daily_logsd']:g}, minute noise log-sd {m['volume']['minute_logsd']:g}, "
        f"intraday profile `{m['volume']['intraday']}`. `adv` = {m['volume']['adv']}; "
        f"`market_volume` = {m['volume']['market_volume']}.",
        f"- Spread: `{m['spread']['form']}`, per-minute AR(1) phi "
        f"{m['spread']['ar_phi_per_minute']:g}, "
        f"log-sd {m['spread']['logsd']:g}, stressed x{m['spread']['stress_mult']:g}.",
        "",
        "## Options: the true SSVI surface",
        "",
        f"w(k, theta) = {o['w']}, phi(theta) = {o['phi']}, rho = {o['rho']:g}, eta = {o['eta']:g}, "
        f"gamma = {o['gamma']:g}; {o['theta_term_structure']['form']} with sigma_short = "
        f"{o['theta_term_structure']['sigma_short']:g}, sigma_long = "
        f"{o['theta_term_structure']['sigma_long']:g}, tau = "
        f"{o['theta_term_structure']['tau_years']:g} y. Futures F = S exp("
        f"{o['futures_basis_annual']:g} T), "
        f"S = {o['spot']:,}; {o['discounting']}; mark_iv is on the surface, bid/ask = mark -+ "
        f"`{o['iv_half_spread']['form']}` (base {o['iv_half_spread']['base']:g}, per_sd "
        f"{o['iv_half_spread']['per_sd']:g}).",
        "",
        "| expiry | T (years) | futures | ATM vol | theta | raw SVI a | b | rho | m | sigma |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in o["expiries"]:
        r = e["raw_svi"]
        lines.append(f"| {e['expiry'][:10]} | {e['T_years']:.4f} | {e['futures_price']:,.2f} | "
                     f"{e['atm_vol']:.4f} | {e['theta']:.5f} | {r['a']:.5f} | {r['b']:.5f} | "
                     f"{r['rho']:g} | {r['m']:.5f} | {r['sigma']:.5f} |")
    lines.append("")
    return "\n".join(lines)


def build_sample(seed: int = DEFAULT_SEED) -> dict[str, bytes]:
    """Every sample file as bytes, keyed by file name (deterministic for a seed)."""
    market = simulate_market(seed)
    fills, fills_truth = generate_fills(20_000, seed=seed, market=market)
    bars = make_bars(market)
    trades = make_trades(market)
    quotes = make_quotes(market)
    options, options_truth = make_options(market)
    files = {
        "fills.csv": _csv_bytes(_to_file_fills(fills)),
        "bars_15m.csv": _csv_bytes(bars),
        # mtime=0: gzip headers carry a time stamp, which would break byte-identical output
        "trades_BTCUSDT.csv.gz": gzip.compress(_csv_bytes(trades), compresslevel=9, mtime=0),
        "quotes_BTCUSDT.csv.gz": gzip.compress(_csv_bytes(quotes), compresslevel=9, mtime=0),
        "options_chain.csv": _csv_bytes(options),
    }
    truth = {
        "seed": seed,
        "generator": "execal.models.data.sample",
        "command": f"python -m execal.models.data.sample --out sample_data --seed {seed}",
        "fills": fills_truth,
        "market": market_truth(market),
        "tape": {"symbol": TAPE_SYMBOL, "venue": TAPE_VENUE, "day": TAPE_DAY,
                 "tick": TICK, "note": "trades and quotes of one day; the tape's volume is the "
                                       "consolidated volume of the bars"},
        "options": options_truth,
        "rows": {"fills.csv": len(fills), "bars_15m.csv": len(bars),
                 "trades_BTCUSDT.csv.gz": len(trades), "quotes_BTCUSDT.csv.gz": len(quotes),
                 "options_chain.csv": len(options)},
    }
    files["ground_truth.json"] = (json.dumps(truth, indent=1, allow_nan=False) + "\n").encode()
    files["README.md"] = _readme(truth, {k: len(v) for k, v in files.items()}, seed).encode()
    return files


def write_sample(out: str | Path, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """Write the sample files into `out` (created if needed); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in build_sample(seed).items():
        (out / name).write_bytes(data)
        paths[name] = out / name
    return paths


DATASET_CHUNK_ROWS = 1_000_000   # at most this many fills are in memory while writing a dataset


def generate_fills_dataset(out: str | Path, n: int, *, days: int = 365, seed: int = DEFAULT_SEED,
                           start: str = DEFAULT_START, model: str = "power_law",
                           params: Mapping[str, Any] | None = None,
                           chunk_rows: int = DATASET_CHUNK_ROWS,
                           progress=None) -> dict:
    """Write `n` fills over `days` UTC days as a partitioned dataset (day / symbol / venue, see
    execal.models.data.dataset) in bounded memory: one simulated market for the whole span, then
    day by day (and in chunks of at most `chunk_rows` within a day) the fills of that day, each
    chunk from its own seeded stream, written and forgotten. Deterministic for (seed, n, days,
    chunk_rows). The truth (model, parameters, noise) goes to DIR/_ground_truth.json.
    Returns the dataset manifest."""
    if n < days:
        raise ValueError(f"n ({n}) must be at least the number of days ({days})")
    out = Path(out)
    if is_dataset(out):
        raise ValueError(f"{out} already holds a dataset; write the sample into a new directory")
    market = simulate_market(seed, start=start, days=days)
    per_day = np.full(days, n // days, dtype=np.int64)
    per_day[: n % days] += 1
    settings = {"generator": "execal.models.data.sample.generate_fills_dataset", "n": int(n),
                "days": int(days), "seed": int(seed), "start": start, "model": model,
                "params": dict(params or {}), "chunk_rows": int(chunk_rows)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    writer = DatasetWriter(out, "fills", {"file": f"generated: {n:,} fills, seed {seed}",
                                          "sha256": digest, "kind": "fills", "generator": settings})
    truth = None
    next_id = 1
    try:
        for d in range(days):
            chunks = -(-int(per_day[d]) // chunk_rows)
            for c in range(chunks):
                size = int(per_day[d]) // chunks + (1 if c < int(per_day[d]) % chunks else 0)
                rng = np.random.default_rng(np.random.SeedSequence([seed, 15, d, c]))
                frame, truth_chunk = generate_fills(size, seed=seed, model=model, params=params,
                                                    market=market, day=d, rng=rng,
                                                    first_order_id=next_id)
                next_id += size
                writer.write_frame(frame)
                del frame
                if truth is None:
                    truth = {k: v for k, v in truth_chunk.items() if k not in ("outliers", "n")}
                    truth["outliers"] = {"share": truth_chunk["outliers"]["share"],
                                         "note": "order ids of outliers are not listed for datasets"}
            writer.flush_days_before(None)
            if progress:
                progress(d + 1, days, writer.rows)
        truth["n"] = int(n)
        truth["market"] = market_truth(market)
        truth["settings"] = settings
        manifest = writer.commit()
    except BaseException:
        writer.abort()
        raise
    (out / "_ground_truth.json").write_text(json.dumps(truth, indent=1, allow_nan=False) + "\n")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m execal.models.data.sample", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="sample_data", help="output directory (default sample_data)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed (default {DEFAULT_SEED})")
    ap.add_argument("--dataset", metavar="DIR", help="instead of the sample files, write --rows fills "
                    "as a partitioned dataset in DIR (bounded memory)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="--dataset: number of fills")
    ap.add_argument("--days", type=int, default=365, help="--dataset: UTC days they span")
    args = ap.parse_args(argv)
    if args.dataset:
        def show(done, total, rows):
            if done == total or done % 30 == 0:
                print(f"day {done}/{total}: {rows:,} fills", file=sys.stderr, flush=True)
        manifest = generate_fills_dataset(args.dataset, args.rows, days=args.days, seed=args.seed,
                                          progress=show)
        print(f"{args.dataset}: {manifest['rows']:,} fills in {len(manifest['partitions']):,} "
              f"partitions, {manifest['bytes']:,} bytes")
        return 0
    paths = write_sample(args.out, args.seed)
    for name, path in paths.items():
        print(f"{path}  {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
