"""Synthetic fills with known impact parameters: the ground truth of the calibration tests and
benchmarks (the shipped sample data is `models/sample.py`'s job; this is the small, fast twin the
engine's own tests control row by row).

cost_bps = model(params) + noise_scale·1e4·sigma·√T·ε, ε Student-t(dof) scaled to unit variance,
plus an `outlier_share` of rows shifted by ±U(20, 100)·noise_scale·expected noise. Vectorised;
the same seed gives the same frame.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from execal.models.core.registry import get_model
from execal.models.impact.features import Features


def simulate_fills(n: int, *, model: str = "power_law", params: Mapping | None = None,
                   seed: int = 0, participation_range: tuple[float, float] = (1e-5, 0.1),
                   noise_scale: float = 0.5, dof: float | None = 4.0, outlier_share: float = 0.0,
                   venues: tuple[str, ...] = ("binance", "okx", "coinbase"),
                   symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
                   days: int = 60, start: str = "2024-01-01", with_spread: bool = True,
                   ) -> tuple[pd.DataFrame, dict]:
    """A canonical fills frame (plus `cost_bps`) and the truth. `params` may be {name: value} or
    {venue: {name: value}} for venue-specific truths."""
    impact = get_model(model)
    rng = np.random.default_rng(seed)
    lo, hi = np.log(participation_range[0]), np.log(participation_range[1])
    participation = np.exp(rng.uniform(lo, hi, n))
    adv = np.exp(rng.uniform(np.log(1e3), np.log(1e5), n))
    quantity = participation * adv
    duration_s = np.exp(rng.uniform(np.log(60.0), np.log(4 * 3600.0), n))
    T = duration_s / 86_400.0
    market_volume = adv * T * rng.uniform(0.5, 1.5, n)
    sigma = rng.choice([0.025, 0.04, 0.055], n)
    spread_bps = rng.uniform(0.5, 4.0, n) if with_spread else None
    venue = rng.choice(np.array(venues), n)
    symbol = rng.choice(np.array(symbols), n)
    side = rng.choice(np.array([1, -1], dtype=np.int8), n)
    t0 = pd.Timestamp(start, tz="UTC").value
    timestamp_ns = np.sort(t0 + rng.integers(0, days * 86_400 * 10**9, n))
    features = Features.from_arrays(participation=participation, sigma=sigma, T_days=T,
                                    spread_bps=spread_bps, market_volume=market_volume,
                                    quantity=quantity, adv=adv)
    params = dict(params or {})
    per_venue = bool(params) and all(isinstance(v, Mapping) for v in params.values())
    expected = np.empty(n)
    if per_venue:
        for v, p in params.items():
            rows = np.flatnonzero(venue == v)
            expected[rows] = impact.predict(impact.theta(p, fill_defaults=True), features.take_rows(rows))
    else:
        expected[:] = impact.predict(impact.theta(params, fill_defaults=True), features)
    noise_bps = 1e4 * sigma * np.sqrt(T)
    if dof is None:
        eps = rng.standard_normal(n)
    else:
        eps = rng.standard_t(dof, n) / np.sqrt(dof / (dof - 2.0))
    cost = expected + noise_scale * noise_bps * eps
    outliers = rng.random(n) < outlier_share
    k = int(outliers.sum())
    cost[outliers] += rng.choice([-1.0, 1.0], k) * rng.uniform(20, 100, k) * noise_scale * noise_bps[outliers]
    arrival = np.exp(rng.normal(np.log(30_000.0), 0.5, n))
    exec_price = arrival * (1.0 + side * cost / 1e4)
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime(timestamp_ns, utc=True), "symbol": symbol, "venue": venue,
        "side": side, "quantity": quantity, "arrival_price": arrival, "exec_price": exec_price,
        "duration_s": duration_s, "adv": adv, "market_volume": market_volume, "volatility": sigma,
        "order_id": np.char.add("o", np.arange(n).astype(str)), "cost_bps": cost})
    if with_spread:
        frame.insert(frame.columns.get_loc("volatility") + 1, "spread_bps", spread_bps)
    truth = {"model": impact.name, "params": params, "seed": seed, "noise_scale": noise_scale,
             "dof": dof, "outlier_share": outlier_share, "outliers": k,
             "expected_bps": expected}
    return frame, truth
