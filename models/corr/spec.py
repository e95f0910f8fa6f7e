"""The correlation area as the registry, the CLI and the UI see it: one `CorrelationModel` per estimator.

`CorrelationModel.estimator(**settings)` builds the estimator (its module is imported on first use);
`input` says what `fit` takes: "ticks" (trades or quotes, asynchronous), "returns" (aligned bars or
returns of several assets), "returns+labels" (plus a regime label per period) or "covariance" (a
correlation result, for the basket cost). `CLI_METHODS` maps `execal corr --method` to the entries.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

from execal.models.core.params import Param

KIND = "correlation"


@dataclass(frozen=True)
class CorrelationModel:
    name: str
    label: str
    formula: str
    params: tuple[Param, ...]
    options: Mapping[str, Any]
    reference: str
    estimator_path: str            # "module:Class", imported on use
    input: str
    kind: str = KIND

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def estimator_class(self):
        module, cls = self.estimator_path.split(":")
        return getattr(importlib.import_module(module), cls)

    def estimator(self, **settings):
        return self.estimator_class()(**settings)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "label": self.label, "formula": self.formula,
                "reference": self.reference, "input": self.input, "params": [p.to_dict() for p in self.params],
                "options": {k: (list(v) if isinstance(v, (tuple, list)) else v) for k, v in self.options.items()}}


_RHO = Param("rho[A|B]", 0.0, -1.0, 1.0, "-", "correlation of the pair (one parameter per pair)")

REALIZED = CorrelationModel(
    name="realized_cov", label="Realised covariance (previous-tick grid) + Epps curve",
    formula="ρ(Δ) = Σ_k r^x_k r^y_k / √(Σ (r^x_k)² Σ (r^y_k)²) on previous-tick Δ-grids",
    params=(_RHO,), options={"interval": None, "grid": ("calendar", "refresh"), "price": ("auto", "trade", "mid")},
    reference="Epps 1979; Barndorff-Nielsen, Hansen, Lunde & Shephard 2011 (refresh time)",
    estimator_path="execal.models.corr.realized:RealizedCovariance", input="ticks")

HAYASHI_YOSHIDA = CorrelationModel(
    name="hayashi_yoshida", label="Hayashi–Yoshida (asynchronous) + lead–lag",
    formula="HY = Σ_i Σ_j r_i s_j 1{I_i ∩ J_j ≠ ∅};  ρ(θ) = HY(θ)/√(RV_x RV_y)",
    params=(_RHO,), options={"band": ("asymptotic", "shift"), "max_lag_s": 2.0, "lag_step_s": 0.01,
                             "price": ("auto", "trade", "mid")},
    reference="Hayashi & Yoshida 2005; Hoffmann, Rosenbaum & Yoshida 2013; Huth & Abergel 2014",
    estimator_path="execal.models.corr.hy:HayashiYoshida", input="ticks")

DCC_MODEL = CorrelationModel(
    name="dcc", label="DCC-GARCH(1,1), two-step",
    formula="Q_t = (1 − a − b) Q̄ + a z_{t−1} z_{t−1}' + b Q_{t−1};  R_t = diag(Q_t)^−½ Q_t diag(Q_t)^−½",
    params=(Param("a", 0.05, 0.0, 1.0, "-", "reaction of the correlation to the last shocks"),
            Param("b", 0.90, 0.0, 1.0, "-", "persistence of the correlation (a + b < 1)")),
    options={"vol": ("garch", "gjr", "egarch"), "dist": ("normal", "t"), "mean": ("constant", "zero"), "freq": None},
    reference="Engle 2002; Engle & Sheppard 2001; margins by arch (Sheppard)",
    estimator_path="execal.models.corr.dcc:DCC", input="returns")

LEDOIT_WOLF = CorrelationModel(
    name="ledoit_wolf", label="Ledoit–Wolf shrinkage",
    formula="Σ* = w μ I + (1 − w) S,  w = min(β̄², δ²)/δ²",
    params=(Param("shrinkage", 0.1, 0.0, 1.0, "-", "weight of the scaled identity"),),
    options={"freq": None, "n_boot": 200},
    reference="Ledoit & Wolf 2004 (same normalisation as scikit-learn's LedoitWolf)",
    estimator_path="execal.models.corr.shrinkage:LedoitWolf", input="returns")

REGIME_CORR = CorrelationModel(
    name="regime_corr", label="Correlation per volatility regime",
    formula="ρ_r = corr(r_t | regime_t = r), calm vs stressed with a z-test of the difference",
    params=(Param("rho[A|B]@regime", 0.0, -1.0, 1.0, "-", "correlation of the pair in the regime"),),
    options={"order": None, "freq": None},
    reference="labels from the volatility area's Markov-switching model (Hamilton 1989)",
    estimator_path="execal.models.corr.regimes:RegimeCorrelations", input="returns+labels")

BASKET = CorrelationModel(
    name="basket_cost", label="Basket execution cost (Almgren–Chriss, correlated risk)",
    formula="min E + λ Var,  Var = τ Σ_k x_k' C x_k,  C_ij = ρ_ij σ_i σ_j P_i P_j",
    params=(Param("risk_aversion", 1e-6, 0.0, 1e-2, "1/USD", "λ of the mean–variance trade-off"),
            Param("horizon_days", 1.0, 1e-3, 30.0, "days", "execution horizon"),
            Param("eta_bps", 50.0, 0.0, 1e4, "bps at 1 ADV/day", "temporary impact"),
            Param("gamma_bps", 10.0, 0.0, 1e4, "bps per ADV", "permanent impact")),
    options={"steps": 48},
    reference="Almgren & Chriss 2000 (multiple-security portfolios)",
    estimator_path="execal.models.corr.basket:BasketCost", input="covariance")

# execal corr --method NAME -> the registry entry
CLI_METHODS = {"realized": "realized_cov", "hy": "hayashi_yoshida", "dcc": "dcc", "shrinkage": "ledoit_wolf"}
