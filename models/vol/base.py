"""The volatility area's contract: the model specification the registry lists, the estimator
(`VolatilityCalibrator`) and the immutable result every volatility model returns.

- `VolatilityModel` is what the registry, the UI and the CLI see of a model: label, formula,
  parameters, the choices of its settings, and its `fit` / `fix` implementations. The settings and
  their defaults are the keyword arguments of the model's fit function (one source: the CLI flags,
  the panel's choices and `get_params()` all read them from there).
- `VolatilityCalibrator(model, **settings)` is the estimator of the project-wide contract
  (`execal.models.core.result.Estimator`): settings in `__init__`, `get_params()` /
  `set_params()`, `fit(data) -> VolatilityResult`, `fix(params, data) -> VolatilityResult` of the
  same type.
- `VolatilityResult` (and its subclasses, one per model) is immutable: `params`, `std_errors`,
  `conf_int()`, `report` (the one `OptimizerReport`: likelihood fits say loss "mle", closed forms
  use `OptimizerReport.closed_form`, hand-set parameters `OptimizerReport.fixed`), `converged`
  (from the report), `warnings`, `summary()` (text), `to_dict()`, `to_config()`. The model's
  headline numbers (persistence, regimes, jump share, R², ...) are in `stats`.
- `prepare_returns` / `prepare_bars`: the data plumbing every model shares, with the notes that
  say what was dropped (a gap skipped with `gaps="skip"` is named, counted and dated: every
  result carries them in `warnings`, so they reach the CLI's stderr, its JSON and the UI).
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from execal.models.core.jsonable import clean, num
from execal.models.core.params import DAYS_PER_YEAR, NS_PER_DAY, NS_PER_S, Param
from execal.models.core.registry import get_model
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator, ResultMixin, params_table, report_line
from execal.models.data.bars import (BarSeries, Returns, _freq_label, bar_series, check_not_constant,
                                     returns_from, returns_of_bars)
from execal.models.data.schema import ValidationReport

GIVEN_RETURNS = (pd.Series, np.ndarray, list, tuple)
# what the data settings every model shares mean (a model's own option_help says more)
COMMON_HELP = {
    "symbol": "the symbol to use when the file holds several",
    "bar": "bar length built from trades (default 1min), or coarser bars from bars",
    "gaps": "missing bars: stop with an error (default) or skip the returns across them (what was "
            "dropped is in the warnings)",
    "freq": "return interval, a multiple of the bar (default: the bar)",
    "period": "the time one given return spans (given returns only)",
}
GAP_REASON = "return across a gap in the bars"      # the DropRecord models.data.bars writes per gap
MAX_GAPS_LISTED = 3


# --- the model specification -----------------------------------------------------------------

def _keywords(fn: Callable) -> dict[str, Any]:
    """The keyword settings of a fit function and their defaults (arguments bound by a
    functools.partial, such as the GARCH variant, are the model's identity, not settings)."""
    bound = set(getattr(fn, "keywords", None) or ())
    out = {}
    for name, p in inspect.signature(fn).parameters.items():
        if p.kind == p.KEYWORD_ONLY and name not in bound:
            out[name] = p.default
    return out


@dataclass(frozen=True)
class VolatilityModel:
    """A volatility model as the registry, the UI and the CLI see it.

    `options`: setting -> its choices (a tuple) or a value shown as its default; `fit_fn(data,
    **settings)` and `fix_fn(params, data, **settings)` are the model's implementations, whose
    keyword arguments are the settings (with their defaults). `forecasts`: the result has a
    conditional volatility path and forecasts (`volatility_frame()`, `forecast(h)`), so the
    Volatility panel offers it in its forecasting picker and the CLI writes its forecasts.
    """
    name: str
    label: str
    formula: str
    params: tuple[Param, ...]
    options: Mapping[str, Any]
    reference: str
    fit_fn: Callable[..., "VolatilityResult"] = field(repr=False, compare=False)
    fix_fn: Callable[..., "VolatilityResult"] = field(repr=False, compare=False)
    option_help: Mapping[str, str] = field(default_factory=dict)
    forecasts: bool = False
    kind: str = "volatility"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def help(self, setting: str) -> str:
        return self.option_help.get(setting) or COMMON_HELP.get(setting, "")

    def defaults(self) -> dict[str, Any]:
        """Every setting with its default (the fit function's keyword defaults)."""
        return _keywords(self.fit_fn)

    def check(self, settings: Mapping[str, Any]) -> dict[str, Any]:
        """`settings` validated: unknown names and values outside a setting's choices raise ValueError."""
        known = self.defaults()
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"{self.label} has no setting {', '.join(map(repr, unknown))} "
                             f"(settings: {', '.join(known)})")
        for name, value in settings.items():
            choices = self.options.get(name)
            if isinstance(choices, tuple) and value not in choices and value is not None:
                raise ValueError(f"{self.label}: {name} must be one of {', '.join(map(str, choices))}, "
                                 f"got {value!r}")
        return dict(settings)

    def fit(self, data, **settings) -> "VolatilityResult":
        full = {**self.defaults(), **self.check(settings)}
        return _with_settings(self.fit_fn(data, **full), full)

    def fix(self, params: Mapping[str, float], data, **settings) -> "VolatilityResult":
        full = {**self.defaults(), **self.check(settings)}
        return _with_settings(self.fix_fn(params, data, **full), full)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "label": self.label, "formula": self.formula,
                "reference": self.reference, "params": [p.to_dict() for p in self.params],
                "options": {k: (list(v) if isinstance(v, (tuple, list)) else v)
                            for k, v in self.options.items()},
                "settings": clean(self.defaults()),
                "option_help": {k: self.help(k) for k in self.defaults()},
                "forecasts": self.forecasts}


def _with_settings(result: "VolatilityResult", full: Mapping[str, Any]) -> "VolatilityResult":
    """The result with every setting it was made with (the model's resolved values win, e.g. the
    GARCH scale "auto" became 100), so `to_config()` can rebuild the estimator."""
    return dataclasses.replace(result, settings={**full, **dict(result.settings)})


class VolatilityCalibrator(Estimator):
    """The estimator of every volatility model: `VolatilityCalibrator("gjr", dist="t").fit(bars)`.

    `model`: a registered volatility model's name (`execal models`: realized, garch, gjr, egarch,
    markov, merton, har, ...) or a `VolatilityModel`; `settings`: that model's settings (see
    `get_params()`; unknown ones raise ValueError). `fit(data)` estimates on bars, trades, a path,
    a Dataset, `Returns` or a Series / array of returns; `fix(params, data)` evaluates hand-set
    parameters and returns the same result type (status "fixed").
    """

    def __init__(self, model: Any = "garch", **settings):
        self.model = model
        self._spec = get_model(model, kind="volatility")
        self.settings = {**self._spec.defaults(), **self._spec.check(settings)}

    def get_params(self) -> dict[str, Any]:
        return {"model": self.model, **self.settings}

    def set_params(self, **changes) -> "VolatilityCalibrator":
        """A copy with `changes` applied (estimators are treated as values)."""
        return type(self)(**{**self.get_params(), **changes})

    @property
    def spec(self) -> VolatilityModel:
        return self._spec

    def fit(self, data) -> "VolatilityResult":
        return self._spec.fit(data, **self.settings)

    def fix(self, params: Mapping[str, float], data) -> "VolatilityResult":
        return self._spec.fix(params, data, **self.settings)

    @classmethod
    def from_config(cls, config: Mapping) -> "VolatilityCalibrator":
        """The estimator a result's `to_config()` was made with (then `.fix(config["params"], data)`)."""
        if config.get("kind") != "volatility":
            raise ValueError(f"not a volatility config (kind {config.get('kind')!r})")
        return cls(config["model"], **dict(config.get("settings") or {}))


# --- the result -------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class VolatilityResult(ResultMixin):
    """A fitted, closed-form or hand-set volatility model: immutable, JSON-ready via `to_dict()`.

    `params` / `std_errors` are in the units `units` names; `loglikelihood` is of the returns as
    fractions (log returns, not ×100), so GARCH, Markov and Merton fits on the same returns
    compare (None for models without a likelihood of the returns: realised estimators, HAR).
    `status`: "fitted", "closed_form" or "fixed"; `report`: what the optimizer said (a fit that
    did not converge says so there, in `converged` and in `warnings`, never silently). `stats`:
    the model's headline numbers; a number that is undefined (None) has a `*_note` saying why.
    """
    model: str
    params: Mapping[str, float]
    std_errors: Mapping[str, float]
    report: OptimizerReport
    loglikelihood: float | None
    n_obs: int
    status: str = "fitted"                                       # "fitted" | "closed_form" | "fixed"
    units: Mapping[str, str] = field(default_factory=dict)
    stats: Mapping[str, Any] = field(default_factory=dict)       # model-specific headline numbers
    settings: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)        # source, symbol, span, frequency
    validation: ValidationReport | None = None

    kind = "volatility"

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

    @property
    def label(self) -> str:
        try:
            return get_model(self.model, kind="volatility").label
        except (ValueError, KeyError):
            return self.model

    def title(self) -> str:
        return f"{self.label} ({self.model})"

    def stat_lines(self) -> list[str]:
        """The model's headline numbers as text lines (subclasses say more)."""
        return []

    def summary(self) -> str:
        d = self.data or {}
        where = ", ".join(str(x) for x in (d.get("source"), d.get("symbol")) if x)
        span = f", {str(d.get('start'))[:16]} → {str(d.get('end'))[:16]}" if d.get("start") else ""
        lines = [f"{self.title()} on {where or 'the data'}: {self.n_obs:,} observations at "
                 f"{d.get('frequency', '?')}{span}"]
        rep = self.report
        if self.status == "closed_form":
            lines.append(f"closed form: {rep.message}")
        elif self.status == "fixed":
            lines.append(f"parameters set by hand: {rep.message}")
        else:
            lines.append(report_line(rep) + (f"; {rep.iterations} iterations" if rep.iterations else ""))
        if self.loglikelihood is not None:
            lines.append(f"log-likelihood {self.loglikelihood:.10g} (returns as fractions), "
                         f"AIC {self.aic:.10g}, BIC {self.bic:.10g}")
        lines += params_table(self.params, self.std_errors, self.conf_int())
        lines += self.stat_lines()
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        out = {"model": self.model, "label": self.label, "kind": self.kind, "status": self.status,
               "converged": bool(self.converged), "n_obs": self.n_obs,
               "params": {k: num(v) for k, v in self.params.items()},
               "std_errors": {k: num(v) for k, v in self.std_errors.items()},
               "conf_int": {k: [num(a), num(b)] for k, (a, b) in self.conf_int().items()},
               "loglikelihood": num(self.loglikelihood), "aic": num(self.aic), "bic": num(self.bic),
               "units": dict(self.units), "stats": self.stats, "settings": self.settings,
               "report": self.report.to_dict(), "warnings": list(self.warnings), "data": self.data}
        if self.validation is not None:
            out["validation"] = self.validation.to_dict()
        return clean(out)

    def to_config(self, provenance: Mapping | None = None) -> dict:
        """What rebuilds this result: `VolatilityCalibrator.from_config(cfg).fix(cfg["params"], data)`."""
        return clean({"schema_version": 1, "kind": self.kind, "model": self.model, "label": self.label,
                      "settings": self.settings, "params": {k: num(v) for k, v in self.params.items()},
                      "std_errors": {k: num(v) for k, v in self.std_errors.items()},
                      "units": dict(self.units), "status": self.status, "converged": bool(self.converged),
                      "loglikelihood": num(self.loglikelihood), "report": self.report.to_dict(),
                      "warnings": list(self.warnings), "stats": self.stats,
                      "data": {**dict(self.data), **dict(provenance or {})}})


# --- the data every model shares ------------------------------------------------------------

def _when(t_ns: int, bar_ns: int) -> str:
    ts = pd.Timestamp(int(t_ns), unit="ns", tz="UTC")
    return f"{ts:%Y-%m-%d} ({ts:%a})" if bar_ns % NS_PER_DAY == 0 else f"{ts:%Y-%m-%d %H:%M}"


def gap_note(bars: BarSeries) -> str | None:
    """What `gaps="skip"` dropped from these bars, in words: how many returns, how many bars were
    missing, and the first gaps (last bar before → first bar after, with their rows)."""
    if bars.n < 2 or bars.from_trades:
        return None
    after = np.flatnonzero(~np.asarray(bars.contiguous)[1:]) + 1
    if not after.size:
        return None
    t = np.asarray(bars.t_ns)
    missing = int(((t[after] - t[after - 1]) // bars.bar_ns - 1).sum())
    bar = _freq_label(bars.bar_ns)
    first = ", ".join(f"{_when(t[i - 1], bars.bar_ns)} → {_when(t[i], bars.bar_ns)}"
                      for i in after[:MAX_GAPS_LISTED])
    rows = "" if bars.rows is None else f" (data rows {', '.join(str(int(bars.rows[i])) for i in after[:5])})"
    more = ", ..." if after.size > MAX_GAPS_LISTED else ""
    return (f"gaps skipped: {after.size:,} return(s) across {after.size:,} gap(s) in the {bar} bars were "
            f"dropped ({missing:,} {bar} bar(s) missing); first gaps: {first}{more}{rows}")


def dropped_notes(report: ValidationReport | None, bars: BarSeries | None = None) -> list[str]:
    """Every row or return the data plumbing dropped, one line each (the gap record in words),
    then what it did to the data (bars sorted, flat bars over intervals without a trade, bars
    aggregated, read out of core): the result's warnings carry both to the CLI and the UI."""
    if report is None:
        return []
    out = list(dict.fromkeys(report.warnings))
    for d in report.dropped:
        if d.reason.startswith(GAP_REASON) and bars is not None:
            note = gap_note(bars)
            if note:
                out.append(note)
                continue
        rows = f" (first rows {', '.join(map(str, d.first_rows[:5]))})" if d.first_rows else ""
        col = f" [{d.column}]" if d.column else ""
        out.append(f"dropped {d.count:,}{col}: {d.reason}{rows}")
    return out


def prepare_bars(data, *, symbol: str | None = None, bar: str | None = None,
                 gaps: str = "error") -> tuple[BarSeries, list[str]]:
    """Validated bars of one instrument (bars, trades, a path, a Dataset or a BarSeries) and the
    notes saying what was dropped."""
    bars = data if isinstance(data, BarSeries) else bar_series(data, symbol=symbol, bar=bar, gaps=gaps)
    return bars, dropped_notes(bars.report, bars)


def prepare_returns(data, *, freq: str | None = None, symbol: str | None = None, bar: str | None = None,
                    gaps: str = "error", period: str | None = None) -> tuple[Returns, list[str]]:
    """Log returns from bars / trades / a path / a Dataset (at the bar length or at `freq`), or
    given returns (`Returns`, a Series with a DatetimeIndex or an array: used as given, each over
    `period`), and the notes saying what was dropped."""
    if isinstance(data, Returns):
        return data, dropped_notes(data.report)
    if isinstance(data, GIVEN_RETURNS):
        r = returns_from(data, period=period)
        return r, dropped_notes(r.report)
    bars, _ = prepare_bars(data, symbol=symbol, bar=bar, gaps=gaps)
    check_not_constant(bars)
    r = returns_of_bars(bars, freq)
    return r, dropped_notes(r.report, bars)


def data_info(source: str, symbol: str | None, t_ns: np.ndarray, period_ns: int) -> dict:
    ts = pd.to_datetime(t_ns[[0, -1]], unit="ns", utc=True) if t_ns.shape[0] else None
    return {"source": source, "symbol": symbol, "frequency": _freq_label(period_ns),
            "period_s": period_ns / NS_PER_S,
            "start": ts[0].isoformat() if ts is not None else None,
            "end": ts[1].isoformat() if ts is not None else None}


def few_observations(n: int, n_min: int, what: str, why: str) -> list[str]:
    """The warning of a fit on fewer observations than the documented minimum `n_min`."""
    return [f"few observations: {n:,} for {what} (below {n_min:,}: {why}); treat the estimates and "
            f"their standard errors with care"] if n < n_min else []


MIN_HAC_WINDOW = 22     # periods: the autocorrelation of daily volatility decays over about a month


def default_hac_lags(n: int, window: int = MIN_HAC_WINDOW, h: int = 1) -> int:
    """Newey–West lags for `n` serially dependent rows: at least `window` (the longest averaging
    window of the rows: overlapping windows are correlated up to that lag, and daily volatility's own
    autocorrelation decays over about a month), at least h − 1 (overlapping h-step targets), at
    least the Newey–West rule of thumb ⌊4(n/100)^(2/9)⌋, and at most a quarter of the sample."""
    rule = int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))
    return int(max(0, min(max(window, h - 1, rule), n // 4)))


def hac_covariance(X: np.ndarray, resid: np.ndarray, lags: int, correction: bool = False) -> np.ndarray:
    """Newey–West (Bartlett kernel) covariance of OLS coefficients: (X'X)⁻¹ S (X'X)⁻¹ with
    S = Σ_{|l|≤L} (1 − |l|/(L+1)) Σ_t x_t u_t u_{t−l} x_{t−l}'. `correction` multiplies by
    n/(n − k) (statsmodels' `use_correction`); without it this is statsmodels'
    `cov_type="HAC", cov_kwds={"maxlags": L}` exactly."""
    X = np.asarray(X, dtype=np.float64)
    xu = X * np.asarray(resid, dtype=np.float64)[:, None]
    S = xu.T @ xu
    for lag in range(1, int(lags) + 1):
        s = xu[lag:].T @ xu[:-lag]
        S += (1.0 - lag / (lags + 1.0)) * (s + s.T)
    xtx_inv = np.linalg.pinv(X.T @ X)
    cov = xtx_inv @ S @ xtx_inv.T
    if correction:
        n, k = X.shape
        cov *= n / float(n - k)
    return cov


def to_daily(sigma_per_period, period_ns: int):
    """Per-period sigma → daily sigma (square-root-of-time, 24/7 calendar)."""
    return np.asarray(sigma_per_period) * math.sqrt(NS_PER_DAY / period_ns)


def annualize(sigma_daily):
    return np.asarray(sigma_daily) * math.sqrt(DAYS_PER_YEAR)
