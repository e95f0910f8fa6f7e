"""The estimator contract every area follows (scikit-learn's settings + arch's model/result split).

An *estimator* takes its settings in `__init__` (stored under the same names), exposes them with
`get_params()` / `set_params(**changes)` (a copy), learns with `fit(data) -> Result` and evaluates
hand-set parameters with `fix(params, data) -> Result` of the same type.

A *result* is immutable and has: `params` and `std_errors` (name -> float), `conf_int(alpha)`,
`report` (the one `OptimizerReport`), `converged`, `warnings` (tuple of text), `summary() -> str`,
`to_dict()` (JSON-ready) and `to_config(provenance)`. `ResultMixin` gives the generic parts to any
frozen dataclass that has `params`, `std_errors`, `report`, `warnings` and a `name`/`model`.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Iterable, Mapping

from scipy import stats

from execal.models.core.jsonable import clean, num


class Estimator:
    """Settings in `__init__`, `get_params()`, `set_params()`; subclasses add `fit` and `fix`."""

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [n for n, p in sig.parameters.items()
                if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **changes):
        """A copy with `changes` applied (estimators are treated as values)."""
        unknown = set(changes) - set(self._param_names())
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} of {type(self).__name__}")
        return type(self)(**{**self.get_params(), **changes})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class LazyMapping(Mapping):
    """A read-only mapping whose keys are known now and whose values `compute()` (name -> float)
    makes on first access: standard errors from a numerical Hessian (arch's), which a forecast or a
    volatility path never reads. Give a picklable `compute` (a module-level function or a
    functools.partial of one) and the mapping pickles without computing anything."""

    def __init__(self, keys: Iterable[str], compute: Callable[[], Mapping[str, float]]):
        self._keys = tuple(map(str, keys))
        self._compute = compute
        self._values: dict[str, float] | None = None

    def _get(self) -> dict[str, float]:
        if self._values is None:
            self._values = {str(k): float(v) for k, v in self._compute().items()}
        return self._values

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._keys)

    def __len__(self):
        return len(self._keys)

    def __repr__(self):
        return repr(self._get())


def normal_conf_int(params: Mapping[str, float], std_errors: Mapping[str, float],
                    alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Wald intervals value ± z·s.e. (NaN where there is no standard error)."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    out = {}
    for k, v in params.items():
        se = std_errors.get(k)
        se = float("nan") if se is None else float(se)
        out[k] = (float(v) - z * se, float(v) + z * se)
    return out


def params_table(params: Mapping[str, float], std_errors: Mapping[str, float],
                 conf_int: Mapping[str, tuple[float, float]], *, fixed=()) -> list[str]:
    """The parameter table every summary prints."""
    lines = [f"{'param':<14}{'value':>14}{'std err':>12}{'95% CI':>28}"]
    for name, value in params.items():
        se = std_errors.get(name)
        lo, hi = conf_int.get(name, (math.nan, math.nan))
        se_text = f"{se:>12.4g}" if se is not None and math.isfinite(se) else f"{'—':>12}"
        ci = f"[{lo:>11.5g}, {hi:>11.5g}]" if math.isfinite(lo) and math.isfinite(hi) else f"{'—':>26}"
        tag = "  (fixed)" if name in fixed else ""
        lines.append(f"{name:<14}{float(value):>14.6g}{se_text}   {ci}{tag}")
    return lines


def report_line(report) -> str:
    state = "converged" if report.converged else "NOT CONVERGED"
    return f"status: {state}; method {report.method}; {report.message}"


class ResultMixin:
    """Generic contract parts for a frozen result dataclass with `params`, `std_errors`, `report`
    and `warnings` (and a `model` or `name` that says what was fitted)."""

    @property
    def converged(self) -> bool:
        return bool(self.report.converged)

    def conf_int(self, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
        return normal_conf_int(self.params, self.std_errors, alpha)

    def title(self) -> str:
        model = getattr(self, "model", None) or getattr(self, "name", "")
        return str(getattr(model, "label", model))

    def summary(self) -> str:
        lines = [self.title(), report_line(self.report),
                 *params_table(self.params, self.std_errors, self.conf_int())]
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return clean({"model": self.title(), "converged": self.converged,
                      "params": {k: num(v) for k, v in self.params.items()},
                      "std_errors": {k: num(v) for k, v in self.std_errors.items()},
                      "conf_int": {k: [num(a), num(b)] for k, (a, b) in self.conf_int().items()},
                      "report": self.report.to_dict(), "warnings": list(self.warnings)})

    def to_config(self, provenance: Mapping | None = None) -> dict:
        from_self = self.to_dict()
        return clean({"schema_version": 1, "kind": getattr(self, "kind", None), **from_self,
                      "data": dict(provenance or {})})
