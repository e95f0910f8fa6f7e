"""Ledoit–Wolf shrinkage of the sample covariance of several assets' returns.

Ledoit & Wolf (2004), "A well-conditioned estimator for large-dimensional covariance matrices": with
X the (T, N) demeaned returns, S = X'X/T, μ = tr(S)/N and the normalised Frobenius norm
‖A‖² = tr(AA')/N,

    δ² = ‖S − μI‖²,   β̄² = (1/T²) Σ_t ‖x_t x_t' − S‖²,   β² = min(β̄², δ²),
    Σ* = (β²/δ²) μ I + (1 − β²/δ²) S,

the convex combination of S and the scaled identity that minimises the expected quadratic loss,
with the optimal weight estimated consistently. The same normalisation as scikit-learn's
`LedoitWolf` (tests/corr/test_corr_shrinkage.py checks both against each other and against a loop
written from the paper). The shrunk matrix is always positive definite, which is what a basket's
risk term needs when a sample or pairwise (HY) matrix is not.

Standard errors: a moving-block bootstrap of the rows (block length ⌈T^⅓⌉, `n_boot` resamples,
seeded) re-estimates the shrinkage weight and the shrunk correlations, so serial dependence and
volatility clustering stay in the resamples (no i.i.d. assumption).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from execal.models.core.frozen import freeze_arrays
from execal.models.core.jsonable import clean
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.corr.panel import ReturnPanel, returns_panel
from execal.models.corr.result import PanelResult, pair_name, pairs_of, psd_warning

MIN_OBS = 10


def ledoit_wolf(X: np.ndarray, *, assume_centered: bool = False) -> tuple[np.ndarray, float, float, np.ndarray]:
    """(Σ*, shrinkage weight, μ, S) for returns X (T, N)."""
    X = np.asarray(X, dtype=np.float64)
    T, N = X.shape
    if not assume_centered:
        X = X - X.mean(0)
    S = X.T @ X / T
    mu = float(np.trace(S)) / N
    X2 = X * X
    delta_ = float(np.sum(S * S))                         # ‖S‖²_F (unnormalised)
    beta_ = float(np.sum(X2.T @ X2)) / T                  # (1/T) Σ_t ‖x_t x_t'‖²_F
    beta = (beta_ - delta_) / (N * T)
    delta = (delta_ - 2.0 * mu * float(np.trace(S)) + N * mu * mu) / N
    beta = min(beta, delta)
    weight = 0.0 if beta == 0 else beta / delta
    return weight * mu * np.eye(N) + (1.0 - weight) * S, float(weight), mu, S


def corr_of(cov: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(cov))
    return cov / np.outer(d, d)


def block_bootstrap_indices(T: int, n_boot: int, seed: int, block: int | None = None) -> np.ndarray:
    """(n_boot, T) row indices of a moving-block bootstrap (blocks of ⌈T^⅓⌉ consecutive rows)."""
    L = block or max(1, math.ceil(T ** (1 / 3)))
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(T / L)
    starts = rng.integers(0, T - L + 1, size=(n_boot, n_blocks))
    idx = (starts[:, :, None] + np.arange(L)[None, None, :]).reshape(n_boot, -1)[:, :T]
    return idx


@dataclass(frozen=True, eq=False)
class ShrinkageResult(PanelResult):
    """Ledoit–Wolf covariance of a return panel, with the sample covariance beside it."""
    covariance: np.ndarray               # shrunk, per period
    sample_covariance: np.ndarray        # per period
    panel: ReturnPanel
    settings: Mapping = field(default_factory=dict)
    kind: str = "correlation"

    def __post_init__(self):
        freeze_arrays(self, ("covariance", "sample_covariance"))

    @property
    def shrinkage(self) -> float:
        return float(self.params["shrinkage"])

    @property
    def correlation(self) -> np.ndarray:
        return corr_of(np.asarray(self.covariance))

    @property
    def sample_correlation(self) -> np.ndarray:
        return corr_of(np.asarray(self.sample_covariance))

    def covariance_per_day(self) -> np.ndarray:
        return np.asarray(self.covariance) * self.panel.periods_per_day

    def condition_numbers(self) -> tuple[float, float]:
        return float(np.linalg.cond(self.sample_covariance)), float(np.linalg.cond(self.covariance))

    def summary(self) -> str:
        c_s, c_l = self.condition_numbers()
        return "\n".join([super().summary(), f"{self.panel.n} returns at {self.panel.freq} × {len(self.names)} assets; "
                          f"condition number {c_s:.3g} (sample) → {c_l:.3g} (shrunk)"])

    def to_dict(self) -> dict:
        out = super().to_dict()
        c_s, c_l = self.condition_numbers()
        out.update(clean({"kind": self.kind, "names": list(self.names), "correlation": self.correlation,
                          "sample_correlation": self.sample_correlation, "covariance": np.asarray(self.covariance),
                          "sample_covariance": np.asarray(self.sample_covariance),
                          "covariance_per_day": self.covariance_per_day(), "freq": self.panel.freq,
                          "condition_number": {"sample": c_s, "shrunk": c_l}, "settings": dict(self.settings),
                          "data": self.panel.info()}))
        return out


class LedoitWolf(Estimator):
    """Ledoit–Wolf (2004) shrinkage toward the scaled identity, with block-bootstrap standard errors.

    `fit(data)`: a ReturnPanel, a frame of returns, or a list of bars/trades files (log returns at
    `freq`, joined on common periods)."""

    name = "ledoit_wolf"

    def __init__(self, freq: str | None = None, bar: str | None = None, gaps: str = "skip", n_boot: int = 200,
                 seed: int = 0, block: int | None = None):
        self.freq = freq
        self.bar = bar
        self.gaps = gaps
        self.n_boot = n_boot
        self.seed = seed
        self.block = block

    def panel(self, data) -> ReturnPanel:
        p = returns_panel(data, freq=self.freq, bar=self.bar, gaps=self.gaps)
        p.require(MIN_OBS, "a covariance matrix")
        return p

    def fit(self, data) -> ShrinkageResult:
        t0 = time.perf_counter()
        panel = self.panel(data)
        X = np.asarray(panel.values)
        cov, w, mu, S = ledoit_wolf(X)
        params = self._params(panel.names, cov, w, mu)
        ses = {k: float("nan") for k in params}
        if self.n_boot:
            draws = []
            for idx in block_bootstrap_indices(panel.n, self.n_boot, self.seed, self.block):
                c, wb, mb, _ = ledoit_wolf(X[idx])
                draws.append(list(self._params(panel.names, c, wb, mb).values()))
            sd = np.std(np.asarray(draws), axis=0, ddof=1)
            ses = dict(zip(params, map(float, sd)))
        warn = []
        if panel.n < 5 * panel.k:
            warn.append(f"only {panel.n} returns for {panel.k} assets: the sample covariance is poorly conditioned "
                        f"and the shrinkage weight ({w:.2f}) carries most of the estimate")
        report = OptimizerReport.closed_form(
            "Ledoit–Wolf (2004) optimal shrinkage toward μ·I (no optimizer)", seconds=round(time.perf_counter() - t0, 4),
            se=f"moving-block bootstrap, {self.n_boot} resamples, block "
               f"{self.block or max(1, math.ceil(panel.n ** (1 / 3)))} rows, seed {self.seed}")
        return ShrinkageResult(model=self.name, names=panel.names, params=params, std_errors=ses, report=report,
                               warnings=tuple(warn), covariance=cov, sample_covariance=S, panel=panel,
                               settings={**self.get_params(), "freq": panel.freq})

    def fix(self, params: Mapping[str, float], data) -> ShrinkageResult:
        """A hand-set shrinkage weight (`{"shrinkage": w}`, 0 = the sample covariance, 1 = μ·I)."""
        if set(params) != {"shrinkage"}:
            raise ValueError("a hand-set Ledoit–Wolf estimate takes exactly {'shrinkage': weight in [0, 1]}")
        w = float(params["shrinkage"])
        if not 0 <= w <= 1:
            raise ValueError(f"the shrinkage weight must be in [0, 1], got {w}")
        panel = self.panel(data)
        X = np.asarray(panel.values)
        _, _, mu, S = ledoit_wolf(X)
        cov = w * mu * np.eye(panel.k) + (1 - w) * S
        p = self._params(panel.names, cov, w, mu)
        warn = [x for x in (psd_warning(cov, "covariance"),) if x]
        return ShrinkageResult(model=self.name, names=panel.names, params=p, std_errors={k: float("nan") for k in p},
                               report=OptimizerReport.fixed(shrinkage=w), warnings=tuple(warn), covariance=cov,
                               sample_covariance=S, panel=panel, settings={**self.get_params(), "freq": panel.freq})

    @staticmethod
    def _params(names, cov, w, mu) -> dict[str, float]:
        c = corr_of(cov)
        out = {"shrinkage": float(w), "mu": float(mu)}
        out.update({pair_name(names[i], names[j]): float(c[i, j]) for i, j in pairs_of(names)})
        return out
