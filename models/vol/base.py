"""The volatility area's estimator specification and result (every volatility model returns one)."""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from execal.models.core.jsonable import clean as _jsonable, num as _num
from execal.models.core.params import DAYS_PER_YEAR, NS_PER_DAY, NS_PER_S, Param
from execal.models.data.bars import _freq_label
from execal.models.data.schema import ValidationReport


# --- the shared model descriptor and result --------------------------------------------------

@dataclass(frozen=True)
class VolatilityModel:
    """A volatility model as the registry, the UI and the CLI see it (metadata + `fit`).

    `fit(data, **options)` is the model module's fit function; `options` lists its settings with
    their choices (the UI pickers and CLI flags are generated from them).
    """
    name: str
    label: str
    formula: str
    params: tuple[Param, ...]
    options: Mapping[str, Any]
    reference: str
    fit_path: str                 # "module:function", imported on use (arch/statsmodels load lazily)
    kind: str = "volatility"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def fit(self, data, **options):
        module, func = self.fit_path.split(":")
        return getattr(importlib.import_module(module), func)(data, **options)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "label": self.label, "formula": self.formula,
                "reference": self.reference, "params": [p.to_dict() for p in self.params],
                "options": {k: (list(v) if isinstance(v, (tuple, list)) else v)
                            for k, v in self.options.items()}}


@dataclass(frozen=True, eq=False)
class VolatilityResult:
    """A fitted (or hand-set) volatility model: immutable, JSON-ready via `to_dict()`.

    `params` / `std_errors` are in the units `units` names; `loglikelihood` is of the returns as
    fractions (log returns, not ×100), so GARCH, Markov and Merton fits on the same returns compare.
    `converged` / `status` / `message` are the optimizer's own report: a fit that did not converge
    says so here and in `warnings`, never silently.
    """
    model: str
    params: Mapping[str, float]
    std_errors: Mapping[str, float]
    loglikelihood: float | None
    n_obs: int
    converged: bool
    status: str                      # "fitted" | "fixed" | "closed_form"
    message: str
    units: Mapping[str, str] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)     # model-specific headline numbers
    settings: Mapping[str, Any] = field(default_factory=dict)
    optimizer: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)        # source, symbol, span, frequency
    validation: ValidationReport | None = None

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def aic(self) -> float | None:
        return None if self.loglikelihood is None else 2 * self.n_params - 2 * self.loglikelihood

    @property
    def bic(self) -> float | None:
        if self.loglikelihood is None:
            return None
        return self.n_params * math.log(max(self.n_obs, 1)) - 2 * self.loglikelihood

    def conf_int(self, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
        z = float(stats.norm.ppf(1 - alpha / 2))
        return {k: (v - z * self.std_errors.get(k, np.nan), v + z * self.std_errors.get(k, np.nan))
                for k, v in self.params.items()}

    def to_dict(self) -> dict:
        out = {"model": self.model, "status": self.status, "converged": bool(self.converged),
               "message": self.message, "n_obs": self.n_obs,
               "params": {k: _num(v) for k, v in self.params.items()},
               "std_errors": {k: _num(v) for k, v in self.std_errors.items()},
               "loglikelihood": _num(self.loglikelihood), "aic": _num(self.aic), "bic": _num(self.bic),
               "units": dict(self.units), "summary": _jsonable(self.summary),
               "settings": _jsonable(self.settings), "optimizer": _jsonable(self.optimizer),
               "warnings": list(self.warnings), "data": _jsonable(self.data)}
        if self.validation is not None:
            out["validation"] = self.validation.to_dict()
        return out


def data_info(source: str, symbol: str | None, t_ns: np.ndarray, period_ns: int) -> dict:
    ts = pd.to_datetime(t_ns[[0, -1]], unit="ns", utc=True) if t_ns.shape[0] else None
    return {"source": source, "symbol": symbol, "frequency": _freq_label(period_ns),
            "period_s": period_ns / NS_PER_S,
            "start": ts[0].isoformat() if ts is not None else None,
            "end": ts[1].isoformat() if ts is not None else None}


def to_daily(sigma_per_period, period_ns: int):
    """Per-period sigma → daily sigma (square-root-of-time, 24/7 calendar)."""
    return np.asarray(sigma_per_period) * math.sqrt(NS_PER_DAY / period_ns)


def annualize(sigma_daily):
    return np.asarray(sigma_daily) * math.sqrt(DAYS_PER_YEAR)
