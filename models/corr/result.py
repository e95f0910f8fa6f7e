"""The correlation area's result types for tick data: a correlation matrix with its pieces.

`CorrelationResult` is what the realised-covariance and Hayashi–Yoshida estimators return: the
names of the series, the correlation and covariance matrices over the common window, `params`
(one `rho[A|B]` per pair) with HAC standard errors, the one `OptimizerReport` (closed form, or
fixed for hand-set correlations), and the Epps curves and lead–lag scans computed with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import pandas as pd

from execal.models.core.frozen import freeze_arrays
from execal.models.core.jsonable import clean, num
from execal.models.core.params import NS_PER_DAY, NS_PER_S
from execal.models.core.report import OptimizerReport
from execal.models.core.result import ResultMixin
from execal.models.corr.hac import fisher_band

KIND = "correlation"


def pair_name(a: str, b: str) -> str:
    return f"rho[{a}|{b}]"


def pairs_of(names) -> list[tuple[int, int]]:
    k = len(names)
    return [(i, j) for i in range(k) for j in range(i + 1, k)]


def matrix_from_pairs(names, values: Mapping[str, float], diag: float = 1.0) -> np.ndarray:
    k = len(names)
    m = np.full((k, k), np.nan)
    np.fill_diagonal(m, diag)
    for i, j in pairs_of(names):
        m[i, j] = m[j, i] = values[pair_name(names[i], names[j])]
    return m


def psd_warning(matrix: np.ndarray, what: str) -> str | None:
    """A warning when a covariance / correlation matrix is not positive semi-definite (HY and
    pairwise estimates need not be): a basket's risk computed from it could be negative."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape[0] < 2 or not np.isfinite(m).all():
        return None
    lam = float(np.linalg.eigvalsh(0.5 * (m + m.T)).min())
    scale = float(np.abs(np.diag(m)).max()) or 1.0
    if lam < -1e-10 * scale:
        return (f"the {what} matrix is not positive semi-definite (smallest eigenvalue {lam:.3g}); "
                f"pairwise estimates need not be jointly consistent: shrink it before computing a portfolio risk")
    return None


@dataclass(frozen=True, eq=False)
class EppsCurve:
    """Realised correlation of one pair against the sampling interval (previous-tick grids).

    `rho[i]` at `intervals_s[i]` from `n_returns[i]` grid returns, with a HAC standard error
    `se[i]`; `hy_rho` is the Hayashi–Yoshida correlation of the same pair (no synchronisation,
    so it is the level the curve would reach without the Epps effect, noise aside)."""
    x: str
    y: str
    intervals_s: np.ndarray
    rho: np.ndarray
    se: np.ndarray
    n_returns: np.ndarray
    hy_rho: float | None = None
    refresh_rho: float | None = None
    refresh_interval_s: float | None = None

    def __post_init__(self):
        freeze_arrays(self, ("intervals_s", "rho", "se", "n_returns"))

    def frame(self, z: float = 1.959963984540054) -> pd.DataFrame:
        lo, hi = zip(*(fisher_band(r, s, z) for r, s in zip(self.rho, self.se))) if len(self.rho) else ((), ())
        return pd.DataFrame({"interval_s": self.intervals_s, "rho": self.rho, "se": self.se,
                             "ci_low": np.asarray(lo, float), "ci_high": np.asarray(hi, float),
                             "n_returns": self.n_returns})

    def to_dict(self) -> dict:
        f = self.frame()
        return clean({"x": self.x, "y": self.y, "hy_rho": num(self.hy_rho), "refresh_rho": num(self.refresh_rho),
                      "refresh_interval_s": num(self.refresh_interval_s),
                      "points": [{k: (int(v) if k == "n_returns" else num(v)) for k, v in row.items()}
                                 for row in f.to_dict("records")]})


@dataclass(frozen=True, eq=False)
class LeadLag:
    """Hayashi–Yoshida cross-correlation of x and y over lags, with a significance band.

    Convention: at lag θ > 0, x's move at t is paired with y's move at t + θ, so a peak at θ > 0
    means x LEADS y by θ. `band_low`/`band_high` are the pointwise (1 − alpha) band of ρ under the
    null of no cross-dependence (see `band_method`); `significant` says whether the peak leaves it.
    `lead_lag_ratio` is Huth & Abergel's Σ_{θ>0} ρ² / Σ_{θ<0} ρ² (> 1: x leads)."""
    x: str
    y: str
    lags_s: np.ndarray
    rho: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    band_method: str
    alpha: float
    best_lag_s: float
    best_rho: float
    rho_at_zero: float
    significant: bool
    lead_lag_ratio: float | None
    n_exceed: int
    note: str = ""

    def __post_init__(self):
        freeze_arrays(self, ("lags_s", "rho", "band_low", "band_high"))

    @property
    def leader(self) -> str | None:
        if not self.significant or self.best_lag_s == 0:
            return None
        return self.x if self.best_lag_s > 0 else self.y

    def verdict(self) -> str:
        if not self.significant:
            return (f"no significant peak: max |ρ| {abs(self.best_rho):.3f} at {1e3 * self.best_lag_s:+.0f} ms "
                    f"stays inside the {100 * (1 - self.alpha):.0f}% null band")
        if self.best_lag_s == 0:
            return f"synchronous: peak ρ {self.best_rho:.3f} at lag 0 (neither leads at this lag step)"
        lead, follow = (self.x, self.y) if self.best_lag_s > 0 else (self.y, self.x)
        return (f"{lead} leads {follow} by {1e3 * abs(self.best_lag_s):.0f} ms "
                f"(peak ρ {self.best_rho:.3f}, ρ at lag 0 {self.rho_at_zero:.3f})")

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"lag_s": self.lags_s, "rho": self.rho, "band_low": self.band_low,
                             "band_high": self.band_high})

    def to_dict(self) -> dict:
        return clean({"x": self.x, "y": self.y, "convention": "lag > 0: x's move at t pairs with y's move at "
                      "t + lag (x leads)", "best_lag_s": self.best_lag_s, "best_rho": self.best_rho,
                      "rho_at_zero": self.rho_at_zero, "significant": self.significant, "leader": self.leader,
                      "verdict": self.verdict(), "lead_lag_ratio": self.lead_lag_ratio,
                      "band_method": self.band_method, "alpha": self.alpha, "lags_outside_band": self.n_exceed,
                      "lags": len(self.lags_s), "note": self.note,
                      "curve": {"lag_s": self.lags_s, "rho": self.rho, "band_low": self.band_low,
                                "band_high": self.band_high}})


@dataclass(frozen=True, eq=False)
class PanelResult(ResultMixin):
    """The contract fields every correlation-area result over a panel of assets shares (DCC, Ledoit–Wolf,
    regime-conditional matrices, basket cost); each subclass adds its own after them."""
    model: str
    names: tuple[str, ...]
    params: Mapping[str, float]
    std_errors: Mapping[str, float]
    report: OptimizerReport
    warnings: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class CorrelationResult(ResultMixin):
    """Correlation of several tick series over their common window (realised or Hayashi–Yoshida)."""
    model: str
    names: tuple[str, ...]
    correlation: np.ndarray
    covariance: np.ndarray               # integrated over the window, (log return)²
    params: Mapping[str, float]
    std_errors: Mapping[str, float]
    report: OptimizerReport
    warnings: tuple[str, ...]
    window_ns: tuple[int, int]
    series: tuple[Mapping, ...] = ()
    settings: Mapping = field(default_factory=dict)
    epps: tuple[EppsCurve, ...] = ()
    lead_lag: tuple[LeadLag, ...] = ()
    n_obs: Mapping[str, int] = field(default_factory=dict)
    extras: Mapping = field(default_factory=dict)
    kind: str = KIND

    def __post_init__(self):
        freeze_arrays(self, ("correlation", "covariance"))

    @property
    def window_s(self) -> float:
        return (self.window_ns[1] - self.window_ns[0]) / NS_PER_S

    def covariance_per_day(self) -> np.ndarray:
        """The window's covariance scaled to one day (24/7 markets; assumes the window is typical)."""
        return np.asarray(self.covariance) * NS_PER_DAY / max(self.window_ns[1] - self.window_ns[0], 1)

    def matrix_frame(self) -> pd.DataFrame:
        return pd.DataFrame(np.asarray(self.correlation), index=list(self.names), columns=list(self.names))

    def epps_for(self, x: str, y: str) -> EppsCurve | None:
        return next((e for e in self.epps if {e.x, e.y} == {x, y}), None)

    def summary(self) -> str:
        lines = [super().summary(),
                 f"window: {pd.Timestamp(self.window_ns[0], unit='ns', tz='UTC')} – "
                 f"{pd.Timestamp(self.window_ns[1], unit='ns', tz='UTC')} ({self.window_s:.1f} s)"]
        for e in self.epps:
            pts = ", ".join(f"{s:g}s:{r:.3f}" for s, r in zip(e.intervals_s, e.rho) if math.isfinite(r))
            hy = f"; HY {e.hy_rho:.3f}" if e.hy_rho is not None else ""
            lines.append(f"Epps {e.x} / {e.y}: {pts}{hy}")
        for ll in self.lead_lag:
            lines.append(f"lead-lag {ll.x} / {ll.y}: {ll.verdict()}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(clean({
            "kind": self.kind, "names": list(self.names), "correlation": np.asarray(self.correlation),
            "covariance_window": np.asarray(self.covariance), "covariance_per_day": self.covariance_per_day(),
            "window": {"start": pd.Timestamp(self.window_ns[0], unit="ns", tz="UTC").isoformat(),
                       "end": pd.Timestamp(self.window_ns[1], unit="ns", tz="UTC").isoformat(),
                       "seconds": self.window_s},
            "n_obs": dict(self.n_obs), "extras": dict(self.extras), "series": [dict(s) for s in self.series], "settings": dict(self.settings),
            "epps": [e.to_dict() for e in self.epps], "lead_lag": [ll.to_dict() for ll in self.lead_lag]}))
        return out
