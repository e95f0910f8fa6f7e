"""The Epps curve: realised correlation of a pair against the sampling interval of previous-tick grids.

Shared by the realised-covariance estimator (its matrix sits on one of these grids) and the
Hayashi–Yoshida estimator (which draws the curve beside its own, grid-free, level). See realized.py
for the effect and the standard errors.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from execal.models.core.params import NS_PER_S
from execal.models.corr.hac import ratio_corr_se
from execal.models.corr.result import EppsCurve
from execal.models.corr.ticks import TickSeries, calendar_grid, common_window, previous_tick, refresh_times
from execal.models.data.bars import parse_freq

NICE_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
MIN_RETURNS = 20          # fewer grid returns than this: the Epps point is not drawn
FEW_RETURNS_WARN = 50


def grid_returns(series: Sequence[TickSeries], grid_ns: np.ndarray) -> np.ndarray:
    """(n_grid − 1, k) previous-tick log returns; the first grid time is at or after every start."""
    P = np.column_stack([previous_tick(s, grid_ns) for s in series])
    return np.diff(P, axis=0)


def auto_interval_s(span_s: float) -> float:
    """The matrix's sampling interval when none is given: the largest 'nice' interval leaving at least
    100 returns in the window, between 1 s and 5 min."""
    target = span_s / 100.0
    fits = [v for v in NICE_S if 1 <= v <= 300 and v <= target]
    return float(fits[-1]) if fits else 1.0


def default_epps_intervals(span_s: float, finest_s: float) -> list[float]:
    """Nice intervals from the data's finest meaningful step to a twentieth of the window."""
    lo = max(finest_s, NICE_S[0])
    return [float(v) for v in NICE_S if lo <= v <= span_s / MIN_RETURNS]


def _interval_s(value) -> float:
    if isinstance(value, (int, float)):
        if not value > 0:
            raise ValueError(f"a sampling interval must be > 0 s, got {value}")
        return float(value)
    return parse_freq(value, "interval") / NS_PER_S


def realized_pair(R: np.ndarray, i: int, j: int) -> tuple[float, float, int]:
    """(ρ, HAC s.e., n) of columns i and j of grid returns R (rows with a NaN dropped)."""
    x, y = R[:, i], R[:, j]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    rho, se = ratio_corr_se(x * y, x * x, y * y)
    return rho, se, int(ok.sum())


def epps_curve(x: TickSeries, y: TickSeries, intervals_s: Sequence[float], *, window: tuple[int, int] | None = None,
               hy: float | None = None, refresh: bool = True) -> EppsCurve:
    """Realised correlation of x and y at each sampling interval (previous-tick grids)."""
    start, end = window or common_window([x, y])
    xs, ys = x.window(start, end), y.window(start, end)
    rhos, ses, ns = [], [], []
    for d in intervals_s:
        grid = calendar_grid(start, end, max(int(round(d * NS_PER_S)), 1))
        if grid.shape[0] - 1 < MIN_RETURNS:
            rhos.append(np.nan), ses.append(np.nan), ns.append(grid.shape[0] - 1)
            continue
        rho, se, n = realized_pair(grid_returns([xs, ys], grid), 0, 1)
        rhos.append(rho), ses.append(se), ns.append(n)
    r_rho = r_int = None
    if refresh:
        rt = refresh_times([xs, ys], start, end)
        if rt.shape[0] > MIN_RETURNS:
            r_rho, _, _ = realized_pair(grid_returns([xs, ys], rt), 0, 1)
            r_int = float(np.mean(np.diff(rt))) / NS_PER_S
    return EppsCurve(x.name, y.name, np.asarray(intervals_s, float), np.asarray(rhos, float), np.asarray(ses, float),
                     np.asarray(ns, np.int64), hy, r_rho, r_int)


def finest_spacing_s(series: Sequence[TickSeries]) -> float:
    return min(float(np.median(np.diff(np.asarray(s.t_ns)))) / NS_PER_S for s in series)
