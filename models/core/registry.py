"""The registry: THE single list of what models, optimizers, losses and weightings exist.

The UI pickers and sliders, the CLI (`execal models`) and the config schema are all generated from
`describe()`; nothing else in execal keeps its own list. Every model carries a `kind`
("impact", "volatility", "surface", "orderflow", "correlation"), a label, a formula and its parameters with bounds, units and descriptions.
Losses carry their implementation (rho(z), rho'(z), rho''(z), z = (r/f_scale)², the same functions
as scipy's `least_squares`) so the fast normal-equations solver and the sandwich covariance use
exactly the loss scipy minimises.
"""
from __future__ import annotations

from dataclasses import dataclass
import importlib
from typing import Any, Callable, MutableMapping

import numpy as np

from execal.models.core.params import Param

KINDS = ("impact", "volatility", "surface", "orderflow", "correlation")

# --- models ----------------------------------------------------------------------------------
# Every model that exists, by name: (kind, "module:attribute" of its specification). A model's
# module is imported when the entry is first used (so listing the impact models never loads arch,
# statsmodels or the surface code); `register_model` adds one at run time (a plug-in, a test).
# A new model is its module plus one line here; UI pickers, CLI choices and config schema follow.

ENTRIES: dict[str, tuple[str, str]] = {
    # impact (execal.models.impact.models)
    "sqrt": ("impact", "execal.models.impact.models:SQUARE_ROOT"),
    "power_law": ("impact", "execal.models.impact.models:POWER_LAW"),
    "almgren": ("impact", "execal.models.impact.models:ALMGREN"),
    "istar": ("impact", "execal.models.impact.models:ISTAR"),
    "linear": ("impact", "execal.models.impact.models:LINEAR"),
    # volatility (execal.models.vol)
    "realized": ("volatility", "execal.models.vol.realized:REALIZED_MODEL"),
    "garch": ("volatility", "execal.models.vol.garch:GARCH_MODEL"),
    "gjr": ("volatility", "execal.models.vol.garch:GJR_MODEL"),
    "egarch": ("volatility", "execal.models.vol.garch:EGARCH_MODEL"),
    "markov": ("volatility", "execal.models.vol.regimes:MARKOV_MODEL"),
    "merton": ("volatility", "execal.models.vol.jumps:MERTON_MODEL"),
    "har": ("volatility", "execal.models.vol.har:HAR_MODEL"),
    # option surfaces (execal.models.surface.svi)
    "svi": ("surface", "execal.models.surface.svi:SVI"),
    "ssvi": ("surface", "execal.models.surface.svi:SSVI"),
    # order flow and price formation, per venue (execal.models.orderflow)
    "ofi": ("orderflow", "execal.models.orderflow.ofi:OFI_MODEL"),
    "kyle": ("orderflow", "execal.models.orderflow.kyle:KYLE_MODEL"),
    "propagator": ("orderflow", "execal.models.orderflow.propagator:PROPAGATOR_MODEL"),
    "resilience": ("orderflow", "execal.models.orderflow.resilience:RESILIENCE_MODEL"),
    "book_cost": ("orderflow", "execal.models.orderflow.cost:BOOK_COST_MODEL"),
    # correlation structures (execal.models.corr)
    "realized_cov": ("correlation", "execal.models.corr.spec:REALIZED"),
    "hayashi_yoshida": ("correlation", "execal.models.corr.spec:HAYASHI_YOSHIDA"),
    "dcc": ("correlation", "execal.models.corr.spec:DCC_MODEL"),
    "ledoit_wolf": ("correlation", "execal.models.corr.spec:LEDOIT_WOLF"),
    "regime_corr": ("correlation", "execal.models.corr.spec:REGIME_CORR"),
    "basket_cost": ("correlation", "execal.models.corr.spec:BASKET"),
    # pricing models of the underlying, calibrated to the chain (execal.models.surface.heston)
    "heston": ("surface", "execal.models.surface.heston:HESTON"),
    "bates": ("surface", "execal.models.surface.heston:BATES"),
}


def _resolve(path: str):
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


class _Models(MutableMapping):
    """name -> model specification, importing each model's module on first use. Setting an item
    registers a model object at run time (a plug-in, a test); deleting one removes it."""

    def __init__(self):
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str):
        if name not in self._loaded:
            if name not in ENTRIES:
                raise KeyError(name)
            model = _resolve(ENTRIES[name][1])
            if model.name != name or model.kind != ENTRIES[name][0]:
                raise RuntimeError(f"registry entry {name!r} resolves to {model.kind} model {model.name!r}")
            self._loaded[name] = model
        return self._loaded[name]

    def __setitem__(self, name: str, model) -> None:
        ENTRIES[name] = (model.kind, "")
        self._loaded[name] = model

    def __delitem__(self, name: str) -> None:
        del ENTRIES[name]
        self._loaded.pop(name, None)

    def __iter__(self):
        return iter(list(ENTRIES))

    def __len__(self) -> int:
        return len(ENTRIES)


MODELS = _Models()


def register_model(model) -> None:
    """Add a model (any kind) at run time; it needs name, kind, label, params and describe()."""
    for attr in ("name", "kind", "label", "params", "describe"):
        if not hasattr(model, attr):
            raise TypeError(f"a registered model needs '{attr}'")
    if model.kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {model.kind!r}")
    if model.name in ENTRIES:
        raise ValueError(f"a model named '{model.name}' is already registered")
    MODELS[model.name] = model


def model_names(kind: str) -> list[str]:
    """The names of the models of one kind, without importing them."""
    return [name for name, (k, _) in ENTRIES.items() if k == kind]


def models_of_kind(kind: str) -> dict[str, Any]:
    return {name: MODELS[name] for name in model_names(kind)}


def get_model(model, kind: str = "impact"):
    """The registered model called `model` (or `model` itself if it already is one)."""
    if not isinstance(model, str):
        return model
    if ENTRIES.get(model, (None,))[0] != kind:
        names = ", ".join(model_names(kind))
        raise ValueError(f"unknown {kind} model {model!r} (available: {names})")
    return MODELS[model]


# --- losses ----------------------------------------------------------------------------------


def _linear(z):
    one = np.ones_like(z)
    return z, one, np.zeros_like(z)


def _soft_l1(z):
    t = z + 1.0
    root = np.sqrt(t)
    rho1 = np.reciprocal(root)
    rho2 = rho1 / t
    rho2 *= -0.5
    root -= 1.0
    root *= 2.0
    return root, rho1, rho2


def _huber(z):
    big = z > 1.0
    sqrt_z = np.sqrt(np.where(big, z, 1.0))
    rho = np.where(big, 2.0 * sqrt_z - 1.0, z)
    rho1 = np.where(big, 1.0 / sqrt_z, 1.0)
    rho2 = np.where(big, -0.5 / (sqrt_z * np.where(big, z, 1.0)), 0.0)
    return rho, rho1, rho2


def _cauchy(z):
    t = 1.0 + z
    return np.log1p(z), 1.0 / t, -1.0 / (t * t)


def _arctan(z):
    t = 1.0 + z * z
    return np.arctan(z), 1.0 / t, -2.0 * z / (t * t)


@dataclass(frozen=True)
class LossSpec:
    name: str
    label: str
    formula: str
    description: str
    rho: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "formula": self.formula,
                "description": self.description}


LOSSES: dict[str, LossSpec] = {s.name: s for s in (
    LossSpec("linear", "Least squares", "rho(z) = z",
             "ordinary (weighted) least squares: efficient for Gaussian noise, pulled by outliers", _linear),
    LossSpec("soft_l1", "Soft L1", "rho(z) = 2·((1+z)^0.5 − 1)",
             "smooth approximation of absolute error beyond f_scale: the usual robust choice", _soft_l1),
    LossSpec("huber", "Huber", "rho(z) = z if z ≤ 1 else 2·z^0.5 − 1",
             "squared error inside f_scale, absolute error outside", _huber),
    LossSpec("cauchy", "Cauchy", "rho(z) = ln(1 + z)",
             "strongly down-weights outliers; the objective may have several minima", _cauchy),
    LossSpec("arctan", "Arctan", "rho(z) = arctan(z)",
             "bounded loss: a single residual's influence is capped", _arctan),
)}
LOSS_NOTE = ("z = (r/f_scale)², r = weighted residual; cost = ½·Σ f_scale²·rho(z), as in "
             "scipy.optimize.least_squares. f_scale is in units of the weighted residual: bps with "
             "weights 'none', multiples of the expected noise with weights 'noise'.")

# --- optimizers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerSpec:
    name: str
    label: str
    description: str
    strategy: str                  # "local" | "global" | "multistart" | "time_varying" | "online"
    supports_bounds: bool
    losses: tuple[str, ...]        # the losses it accepts
    params: tuple[Param, ...] = ()

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "description": self.description,
                "strategy": self.strategy, "supports_bounds": self.supports_bounds,
                "losses": list(self.losses), "params": [p.to_dict() for p in self.params]}


_ALL_LOSSES = tuple(LOSSES)
_MAX_NFEV = Param("max_nfev", 0, 0, 1e6, "evaluations",
                  "stop after this many function evaluations (0 = optimizer default)")
OPTIMIZERS: dict[str, OptimizerSpec] = {s.name: s for s in (
    OptimizerSpec("lm_normal", "Fast LM (normal equations)",
                  "Levenberg–Marquardt on the p×p normal equations with the robust loss applied as "
                  "IRLS weights (the same objective and termination rules as scipy's trf), "
                  "bounds by projection: one pass over the data per iteration, for millions of fills",
                  "local", True, _ALL_LOSSES, (_MAX_NFEV,)),
    OptimizerSpec("trf", "Trust region reflective (scipy)",
                  "scipy.optimize.least_squares(method='trf'): bounded, robust losses, analytic "
                  "Jacobian, x_scale='jac'", "local", True, _ALL_LOSSES, (_MAX_NFEV,)),
    OptimizerSpec("dogbox", "Dogbox (scipy)",
                  "scipy.optimize.least_squares(method='dogbox'): rectangular trust regions, "
                  "bounded, robust losses", "local", True, _ALL_LOSSES, (_MAX_NFEV,)),
    OptimizerSpec("lm", "Levenberg–Marquardt (MINPACK)",
                  "scipy.optimize.least_squares(method='lm'): unbounded, least squares only "
                  "(the solution is checked against the model bounds afterwards)", "local", False,
                  ("linear",), (_MAX_NFEV,)),
    OptimizerSpec("differential_evolution", "Global search + polish",
                  "scipy.optimize.differential_evolution on the robust cost (on an evenly spaced "
                  "subsample of at most `subsample` rows), then a local 'trf' polish on all rows",
                  "global", True, _ALL_LOSSES,
                  (Param("maxiter", 100, 1, 10_000, "generations", "generations of the global search"),
                   Param("popsize", 15, 5, 200, "× parameters", "population size multiplier"),
                   Param("subsample", 50_000, 1_000, 10_000_000, "rows",
                         "rows the global stage evaluates (the polish uses all)"), _MAX_NFEV)),
    OptimizerSpec("multistart", "Multi-start trf",
                  "'trf' from the data-driven start plus `starts` Latin-hypercube points inside the "
                  "bounds; keeps the lowest cost (guards against local minima)", "multistart", True,
                  _ALL_LOSSES,
                  (Param("starts", 8, 1, 1000, "starts", "number of extra starting points"), _MAX_NFEV)),
    # time-varying calibrations (models/timevarying.py): a path of parameters, not one set; the
    # result is the final state, compared with the batch fit (lm_normal) on the same settings
    OptimizerSpec("kalman", "Kalman filter (drifting coefficient)",
                  "the impact coefficient (Y; lambda of the linear law) drifts as a random walk whose "
                  "variance per day q is estimated by maximum likelihood with the noise scale; the "
                  "smoothed path with its bands over time; the other parameters stay at the batch "
                  "fit; outliers (beyond k robust sd) are left out", "time_varying", False,
                  _ALL_LOSSES,
                  (Param("outlier_k", 5.0, 0.0, 100.0, "robust sd", "fills whose residual at the "
                         "batch fit exceeds k robust standard deviations are left out (0 = keep all)"),
                   Param("reweight", 1, 0, 1, "0/1", "judge outliers once more at the smoothed path "
                         "(1) or only at the batch fit (0)"),
                   Param("path_points", 2000, 10, 100_000, "points", "path points kept in the config"))),
    OptimizerSpec("sgd", "Online SGD (fill by fill)",
                  "every free parameter updated fill by fill in time order (stochastic Gauss-Newton "
                  "on the robust loss, analytic Jacobian), learning rate max(1/(t + t0), 1/window): "
                  "converges like recursive least squares, then tracks drift with a memory of "
                  "`window` fills; its path is compared with the batch fit", "online", True,
                  _ALL_LOSSES,
                  (Param("window", 5000, 0, 1e8, "fills", "learning-rate floor 1/window (0 = pure "
                         "1/t decay: converges to the batch fit, cannot follow drift)"),
                   Param("t0", 100, 0, 1e8, "fills", "weight of the start values (model defaults), "
                         "in fills"),
                   Param("path_points", 2000, 10, 100_000, "points", "path points kept in the config"))),
)}

# --- weights ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightSpec:
    name: str
    label: str
    description: str
    needs: tuple[str, ...]

    def describe(self) -> dict:
        return {"name": self.name, "label": self.label, "description": self.description,
                "needs": list(self.needs)}


WEIGHTS: dict[str, WeightSpec] = {s.name: s for s in (
    WeightSpec("auto", "Automatic", "'noise' when the data has duration and volatility, else 'none'", ()),
    WeightSpec("none", "None", "every fill counts the same; residuals in bps", ()),
    WeightSpec("noise", "Inverse expected noise",
               "residual ÷ expected noise 1e4·sigma·√T: long orders in volatile markets, whose cost "
               "is mostly price diffusion, count less; residuals become z-scores",
               ("volatility", "duration_s")),
    WeightSpec("column", "User column",
               "a column of your data multiplies each residual (like 1/σᵢ; for inverse-variance "
               "weights give their square root); must be finite and ≥ 0", ("weight_column",)),
)}

PARTICIPATION = {
    "adv": "Q/V = quantity / adv (average daily volume)",
    "horizon": "Q/V = quantity / market_volume (volume traded while the order worked)",
}

# Calibrator settings shared by every optimizer (for UI controls and CLI help).
SETTINGS: tuple[Param, ...] = (
    Param("f_scale", 1.0, 1e-6, 1e6, "residual units", "robust-loss scale: residuals beyond it are "
          "down-weighted"),
    Param("test_fraction", 0.0, 0.0, 0.9, "fraction", "last share of the data (by time) held out "
          "for out-of-sample metrics"),
    Param("walk_forward", 0, 0, 50, "folds", "expanding-window walk-forward folds (0 = off)"),
    Param("multistart", 0, 0, 1000, "starts", "extra random starts for any local optimizer"),
    Param("seed", 0, 0, 2**31 - 1, "", "random seed (multistart, global search, bootstrap)"),
)


def describe() -> dict:
    """Everything the registry holds, JSON-ready."""
    return {
        "kinds": list(KINDS),
        "models": {name: m.describe() for name, m in MODELS.items()},
        "optimizers": {name: o.describe() for name, o in OPTIMIZERS.items()},
        "losses": {name: s.describe() for name, s in LOSSES.items()},
        "loss_note": LOSS_NOTE,
        "weights": {name: w.describe() for name, w in WEIGHTS.items()},
        "participation": dict(PARTICIPATION),
        "settings": [p.to_dict() for p in SETTINGS],
    }
