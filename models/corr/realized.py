"""Realised covariance on synchronised grids, and the Epps curve.

Previous-tick grids: every series is sampled at t₀, t₀ + Δ, t₀ + 2Δ, … (the common window) with
the last price observed at or before each grid time, and the realised covariance is Σ_k r^x_k r^y_k
of the grid returns (uncentred, the realised-measure convention). Asynchronous trading makes the
grid returns of a fine grid share less of their information than the assets really do (a move of x
in (t_k, t_{k+1}] may reach y's next tick only after t_{k+1}), so the realised correlation falls as
Δ → 0: the Epps (1979) effect. The Epps curve is that correlation against Δ; the Hayashi–Yoshida
correlation of the same pair (no grid) is drawn beside it as the level without the effect.

Refresh-time sampling (Barndorff-Nielsen, Hansen, Lunde & Shephard 2011) is the finest grid on
which every series has a fresh tick in every interval; its correlation is reported with its mean
interval.

Standard errors: per grid return k, the contributions (r^x r^y, r^x², r^y²) of the ratio
ρ = Σ r^x r^y / √(Σ r^x² Σ r^y²) give the delta-method influence, and its Newey–West variance over
k is the s.e. (hac.py): volatility clustering and the serial dependence noise induces in fine-grid
returns are not assumed away.
"""
from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import numpy as np

from execal.models.core.params import NS_PER_S
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.corr.epps import (FEW_RETURNS_WARN, _interval_s, auto_interval_s, default_epps_intervals,
                                     epps_curve, finest_spacing_s, grid_returns, realized_pair)
from execal.models.corr.hy import fixed_result, hy_correlation
from execal.models.corr.result import CorrelationResult, EppsCurve, matrix_from_pairs, pair_name, pairs_of, psd_warning
from execal.models.corr.ticks import TickSeries, as_series, calendar_grid, common_window, need_two, refresh_times

class RealizedCovariance(Estimator):
    """Realised covariance / correlation matrix on a previous-tick grid, with the Epps curve of every pair.

    Settings: `interval` (seconds or a frequency like "5s", "1min"; None: the largest nice interval
    leaving ≥ 100 returns, 1 s – 5 min), `grid` ("calendar" previous-tick, or "refresh" time),
    `epps_intervals` (seconds; None: nice values from the median tick spacing to a twentieth of the
    window), `epps` (compute the curves), `price` for files."""

    name = "realized_cov"

    def __init__(self, interval: float | str | None = None, grid: str = "calendar",
                 epps_intervals: Sequence[float] | None = None, epps: bool = True, price: str = "auto",
                 hy_reference: bool = True):
        self.interval = interval
        self.grid = grid
        self.epps_intervals = epps_intervals
        self.epps = epps
        self.price = price
        self.hy_reference = hy_reference

    def _series(self, data) -> list[TickSeries]:
        return need_two(as_series(data, price=self.price))

    def fit(self, data) -> CorrelationResult:
        if self.grid not in ("calendar", "refresh"):
            raise ValueError(f"grid must be 'calendar' or 'refresh', got {self.grid!r}")
        t0 = time.perf_counter()
        series = self._series(data)
        start, end = common_window(series)
        span_s = (end - start) / NS_PER_S
        windowed = [s.window(start, end) for s in series]
        names = tuple(s.name for s in series)
        warn: list[str] = []
        if self.grid == "refresh":
            grid = refresh_times(windowed, start, end)
            interval_s = float(np.mean(np.diff(grid))) / NS_PER_S if grid.shape[0] > 1 else float("nan")
        else:
            interval_s = auto_interval_s(span_s) if self.interval is None else _interval_s(self.interval)
            grid = calendar_grid(start, end, max(int(round(interval_s * NS_PER_S)), 1))
        R = grid_returns(windowed, grid)
        n_ret = int(np.isfinite(R).all(axis=1).sum())
        if n_ret < 2:
            raise ValueError(f"only {n_ret} grid returns at {interval_s:g} s over a {span_s:.1f}-s window: "
                             f"choose a shorter interval")
        if n_ret < FEW_RETURNS_WARN:
            warn.append(f"only {n_ret} returns at {interval_s:g} s: the correlations are imprecise")
        ok = np.isfinite(R).all(axis=1)
        cov = R[ok].T @ R[ok]
        params, ses = {}, {}
        for i, j in pairs_of(names):
            rho, se, _ = realized_pair(R, i, j)
            key = pair_name(names[i], names[j])
            params[key], ses[key] = rho, se
        corr = matrix_from_pairs(names, params)
        w = psd_warning(cov, "realised covariance")
        if w:
            warn.append(w)
        curves = ()
        if self.epps:
            intervals = (list(map(float, self.epps_intervals)) if self.epps_intervals is not None
                         else default_epps_intervals(span_s, finest_spacing_s(windowed)))
            built = []
            for i, j in pairs_of(names):
                hy = (hy_correlation(series[i], series[j], window=(start, end))["rho"]
                      if self.hy_reference else None)
                built.append(epps_curve(series[i], series[j], intervals, window=(start, end), hy=hy))
            curves = tuple(built)
        settings = {**self.get_params(), "interval_s": interval_s,
                    "epps_intervals": None if self.epps_intervals is None else list(self.epps_intervals)}
        report = OptimizerReport.closed_form(
            f"realised covariance of {n_ret} previous-tick returns at {interval_s:g} s (no optimizer)",
            seconds=round(time.perf_counter() - t0, 4), se="delta method, Newey–West over grid returns")
        return CorrelationResult(
            model=self.name, names=names, correlation=corr, covariance=cov, params=params, std_errors=ses,
            report=report, warnings=tuple(dict.fromkeys(warn)), window_ns=(start, end),
            series=tuple(s.info() for s in series), settings=settings, epps=curves,
            n_obs={"grid_returns": n_ret, **{s.name: s.n for s in windowed}},
            extras={"interval_s": interval_s, "grid": self.grid})

    def fix(self, params: Mapping[str, float], data) -> CorrelationResult:
        """Hand-set correlations on these series (see `hy.fixed_result`)."""
        return fixed_result(self.name, params, self._series(data), self.get_params())


def epps_summary(curve: EppsCurve) -> dict:
    """Where the curve stands: its finest and coarsest points and the interval at which it first
    reaches 90 % of its largest value (a rough 'time to synchronise')."""
    rho = np.asarray(curve.rho)
    ok = np.isfinite(rho)
    if not ok.any():
        return {}
    top = float(np.nanmax(rho))
    reach = np.flatnonzero(ok & (rho >= 0.9 * top)) if top > 0 else np.array([], int)
    return {"finest_s": float(curve.intervals_s[ok][0]), "rho_finest": float(rho[ok][0]),
            "coarsest_s": float(curve.intervals_s[ok][-1]), "rho_coarsest": float(rho[ok][-1]),
            "rho_max": top, "reaches_90pct_of_max_at_s": float(curve.intervals_s[reach[0]]) if reach.size else None,
            "hy_rho": curve.hy_rho if curve.hy_rho is None or math.isfinite(curve.hy_rho) else None}
