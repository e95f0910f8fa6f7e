"""Synthetic fills with a known change in impact: the ground truth of the monitor's tests, of the
detector benchmark and of the dashboard's demo.

n fills spread over [start_ns, end_ns); before `change_ns` the cost follows `params_before`, from it
on `params_after` (e.g. Y 0.7 -> 1.4), plus Gaussian noise of `noise_scale` × the expected noise
1e4·sigma·√T (the calibrator's noise model, weights "noise"). Inputs are drawn like
`models.impact.simulate`: participation log-uniform, duration log-uniform, a few volatility levels,
spread uniform. Vectorised and seeded: the same seed gives the same fills.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from execal.models.core.registry import get_model
from execal.models.impact.features import Features


def change_point_fills(n: int, start_ns: int, end_ns: int, *, change_ns: int | None = None,
                       model: str = "sqrt", params_before: Mapping | None = None,
                       params_after: Mapping | None = None, seed: int = 0, noise_scale: float = 0.5,
                       venue: str = "binance-usdm", symbol: str = "BTCUSDT",
                       participation_range: tuple[float, float] = (1e-4, 0.05),
                       arrival_price: float = 60_000.0) -> tuple[pd.DataFrame, dict]:
    impact = get_model(model)
    rng = np.random.default_rng(seed)
    before = dict(params_before or {"Y": 0.7})
    after = dict(params_after or before)
    lo, hi = np.log(participation_range[0]), np.log(participation_range[1])
    participation = np.exp(rng.uniform(lo, hi, n))
    adv = np.full(n, 10_000.0)
    quantity = participation * adv
    duration_s = np.exp(rng.uniform(np.log(30.0), np.log(1800.0), n))
    T = duration_s / 86_400.0
    sigma = rng.choice([0.025, 0.035, 0.045], n)
    spread_bps = rng.uniform(0.5, 3.0, n)
    t_ns = np.sort(rng.integers(start_ns, end_ns, n))
    change_ns = int(end_ns if change_ns is None else change_ns)
    f = Features.from_arrays(participation=participation, sigma=sigma, T_days=T, spread_bps=spread_bps,
                             quantity=quantity, adv=adv)
    post = t_ns >= change_ns
    expected = impact.predict(impact.theta(before, fill_defaults=True), f)
    expected[post] = impact.predict(impact.theta(after, fill_defaults=True), f.take_rows(np.flatnonzero(post)))
    noise = noise_scale * 1e4 * sigma * np.sqrt(T) * rng.standard_normal(n)
    cost = expected + noise
    side = rng.choice(np.array([1, -1]), n)
    arrival = arrival_price * np.exp(rng.normal(0, 1e-3, n))
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime(t_ns, utc=True), "symbol": symbol, "venue": venue,
        "side": np.where(side > 0, "buy", "sell"), "quantity": quantity, "arrival_price": arrival,
        "exec_price": arrival * (1.0 + side * cost / 1e4), "duration_s": duration_s, "adv": adv,
        "volatility": sigma, "spread_bps": spread_bps,
        "order_id": [f"s{seed}-{i:06d}" for i in range(n)], "cost_bps": cost})
    truth = {"model": model, "before": before, "after": after, "change_ns": change_ns,
             "first_fill_after_change": int(np.argmax(post)) if post.any() else None,
             "noise_scale": noise_scale, "seed": seed}
    return frame, truth


def to_records(frame: pd.DataFrame) -> list[dict]:
    """Fills as JSON-ready dicts (ISO timestamps), as a fills file or a Redis stream carries them."""
    out = frame.to_dict("records")
    for rec in out:
        rec["timestamp"] = rec["timestamp"].isoformat()
    return out
