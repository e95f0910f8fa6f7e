"""Correlation in calm and stressed regimes, given the regime of every period.

The labels are INPUT: the volatility area computes Markov-switching regimes (execal.models.vol.regimes)
and the composition happens in the CLI and the panel (an area never imports another). Labels are
matched to the return panel by timestamp (a Series indexed by time) or by position (an array of the
panel's length); periods without a label are dropped and counted.

Per regime: the Pearson correlation matrix of the returns in that regime, each pair with a HAC
standard error (delta method on the centred products, Newey–West over the regime's periods in time
order: runs of a regime are concatenated, so the few lags that straddle two runs are an
approximation); per pair, the difference between the most and the least volatile regime with a
z-test (the two regimes' estimates treated as independent).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from execal.models.core.frozen import freeze_arrays
from execal.models.core.jsonable import clean
from execal.models.core.params import NS_PER_DAY
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.corr.hac import ratio_corr_se
from execal.models.corr.panel import ReturnPanel, returns_panel
from execal.models.corr.result import PanelResult, pair_name, pairs_of
from execal.models.data.schema import DataError

MIN_PER_REGIME = 20


def _align(panel: ReturnPanel, labels) -> np.ndarray:
    """Labels as an object array aligned with the panel's rows (None where missing)."""
    if isinstance(labels, pd.Series) and isinstance(labels.index, pd.DatetimeIndex):
        idx = labels.index.tz_localize("UTC") if labels.index.tz is None else labels.index.tz_convert("UTC")
        s = pd.Series(labels.to_numpy(object), index=idx.as_unit("ns").asi8)
        s = s[~s.index.duplicated(keep="last")]
        out = s.reindex(np.asarray(panel.t_ns)).to_numpy(object)
    else:
        arr = np.asarray(labels, dtype=object)
        if arr.shape[0] != panel.n:
            raise DataError(f"{arr.shape[0]} regime labels for {panel.n} returns: give one label per return "
                            f"period, or a Series indexed by time", column="regime")
        out = arr
    return np.array([None if (v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA) else v
                     for v in out], dtype=object)


def pair_correlations(X: np.ndarray, names) -> tuple[dict, dict, np.ndarray]:
    """Pearson correlations of columns of X with HAC s.e. per pair, and the full matrix."""
    Xc = X - X.mean(0)
    C = np.corrcoef(X, rowvar=False) if X.shape[0] > 1 else np.full((X.shape[1],) * 2, np.nan)
    rho, se = {}, {}
    for i, j in pairs_of(names):
        x, y = Xc[:, i], Xc[:, j]
        r, s = ratio_corr_se(x * y, x * x, y * y)
        key = pair_name(names[i], names[j])
        rho[key], se[key] = r, s
    return rho, se, C


@dataclass(frozen=True, eq=False)
class RegimeCorrelation:
    """One regime's correlation matrix."""
    regime: str
    n_obs: int
    correlation: np.ndarray
    rho: Mapping[str, float]
    se: Mapping[str, float]
    sigma_daily: np.ndarray

    def __post_init__(self):
        freeze_arrays(self, ("correlation", "sigma_daily"))

    def to_dict(self) -> dict:
        return clean({"regime": self.regime, "n_obs": self.n_obs, "correlation": np.asarray(self.correlation),
                      "rho": dict(self.rho), "se": dict(self.se), "sigma_daily": np.asarray(self.sigma_daily)})


@dataclass(frozen=True, eq=False)
class RegimeResult(PanelResult):
    regimes: tuple[RegimeCorrelation, ...]
    differences: tuple[Mapping, ...]
    panel: ReturnPanel
    all_periods: RegimeCorrelation | None = None
    settings: Mapping = field(default_factory=dict)
    kind: str = "correlation"

    def regime(self, name: str) -> RegimeCorrelation:
        return next(r for r in self.regimes if r.regime == name)

    def summary(self) -> str:
        lines = [super().summary()]
        for d in self.differences:
            lines.append(f"{d['pair']}: {d['high']} − {d['low']} = {d['difference']:+.3f} (z {d['z']:.2f}, "
                         f"p {d['p_value']:.3g})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(clean({"kind": self.kind, "names": list(self.names), "regimes": [r.to_dict() for r in self.regimes],
                          "all_periods": self.all_periods.to_dict() if self.all_periods else None,
                          "differences": [dict(d) for d in self.differences], "settings": dict(self.settings),
                          "data": self.panel.info()}))
        return out


class RegimeCorrelations(Estimator):
    """Correlation matrices per regime label. `fit(data, labels)`; `order` lists the regimes from calm
    to stressed (default: sorted by the average daily volatility of the assets in each regime)."""

    name = "regime_corr"

    def __init__(self, order: Sequence[str] | None = None, freq: str | None = None, bar: str | None = None,
                 gaps: str = "skip", min_obs: int = MIN_PER_REGIME):
        self.order = order
        self.freq = freq
        self.bar = bar
        self.gaps = gaps
        self.min_obs = min_obs

    def fit(self, data, labels=None) -> RegimeResult:
        if labels is None:
            raise ValueError("regime correlations need the regime labels (one per return period)")
        t0 = time.perf_counter()
        panel = returns_panel(data, freq=self.freq, bar=self.bar, gaps=self.gaps)
        lab = _align(panel, labels)
        have = np.array([v is not None for v in lab])
        warn = []
        if (~have).any():
            warn.append(f"{int((~have).sum())} of {panel.n} return periods have no regime label and are left out")
        X = np.asarray(panel.values)
        names = panel.names
        keys = [str(v) for v in lab[have]]
        present = list(dict.fromkeys(keys))
        per_day = NS_PER_DAY / panel.period_ns
        regimes = []
        for r in present:
            m = np.zeros(panel.n, bool)
            m[np.flatnonzero(have)[np.array(keys) == r]] = True
            Xr = X[m]
            if Xr.shape[0] < self.min_obs:
                warn.append(f"regime {r!r}: only {Xr.shape[0]} returns (< {self.min_obs}): not estimated")
                continue
            rho, se, C = pair_correlations(Xr, names)
            regimes.append(RegimeCorrelation(r, int(Xr.shape[0]), C, rho, se, Xr.std(0, ddof=1) * math.sqrt(per_day)))
        if not regimes:
            raise DataError("no regime has enough labelled returns for a correlation matrix", column="regime")
        if self.order is not None:
            unknown = [r.regime for r in regimes if r.regime not in list(map(str, self.order))]
            if unknown:
                raise ValueError(f"regimes {unknown} are not in the given order {list(self.order)}")
            regimes.sort(key=lambda r: list(map(str, self.order)).index(r.regime))
        else:
            regimes.sort(key=lambda r: float(np.mean(r.sigma_daily)))
        rho_all, se_all, C_all = pair_correlations(X, names)
        everything = RegimeCorrelation("all", panel.n, C_all, rho_all, se_all, X.std(0, ddof=1) * math.sqrt(per_day))
        params, ses = {}, {}
        for r in regimes:
            for k, v in r.rho.items():
                params[f"{k}@{r.regime}"] = v
                ses[f"{k}@{r.regime}"] = r.se[k]
        diffs = []
        if len(regimes) >= 2:
            low, high = regimes[0], regimes[-1]
            for k in low.rho:
                d = high.rho[k] - low.rho[k]
                s = math.hypot(high.se[k], low.se[k])
                z = d / s if s > 0 else float("nan")
                diffs.append({"pair": k, "low": low.regime, "high": high.regime, "difference": d, "se": s, "z": z,
                              "p_value": float(2 * stats.norm.sf(abs(z))) if math.isfinite(z) else None})
        report = OptimizerReport.closed_form("sample correlation per regime (no optimizer)",
                                             seconds=round(time.perf_counter() - t0, 4),
                                             se="delta method, Newey–West within each regime")
        return RegimeResult(model=self.name, names=names, params=params, std_errors=ses, report=report,
                            warnings=tuple(warn), regimes=tuple(regimes), differences=tuple(diffs), panel=panel,
                            all_periods=everything, settings={**self.get_params(), "freq": panel.freq,
                                                              "order": None if self.order is None else list(self.order)})

    def fix(self, params: Mapping[str, float], data, labels=None) -> RegimeResult:
        """Hand-set correlations per regime ('rho[A|B]@<regime>' for every pair of every labelled regime):
        the "what if stressed correlations were ..." view, with the data's own regime volatilities."""
        fitted = self.fit(data, labels)
        need = list(fitted.params)
        missing = [n for n in need if n not in params]
        unknown = [n for n in params if n not in need]
        if missing or unknown:
            raise ValueError(f"hand-set regime correlations need exactly {need}"
                             + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
        names = fitted.names
        regimes = []
        for r in fitted.regimes:
            rho = {k: float(params[f"{k}@{r.regime}"]) for k in r.rho}
            C = np.eye(len(names))
            for i, j in pairs_of(names):
                C[i, j] = C[j, i] = rho[pair_name(names[i], names[j])]
            regimes.append(RegimeCorrelation(r.regime, r.n_obs, C, rho, {k: float("nan") for k in rho},
                                             np.asarray(r.sigma_daily)))
        p = {n: float(params[n]) for n in need}
        return RegimeResult(model=self.name, names=names, params=p, std_errors={n: float("nan") for n in need},
                            report=OptimizerReport.fixed(**p), warnings=fitted.warnings, regimes=tuple(regimes),
                            differences=(), panel=fitted.panel, all_periods=fitted.all_periods,
                            settings=fitted.settings)


def labels_frame(t_ns: np.ndarray, labels: Sequence) -> pd.Series:
    """A label Series indexed by UTC time (what `fit` aligns on)."""
    return pd.Series(list(labels), index=pd.to_datetime(np.asarray(t_ns), unit="ns", utc=True), name="regime")

