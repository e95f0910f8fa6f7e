"""Conditional volatility: GARCH(1,1), GJR-GARCH(1,1,1) and EGARCH(1,1,1), a thin wrapper of `arch`.

arch (Kevin Sheppard) does the estimation; this room feeds it returns the way arch recommends and
turns its result into execal's immutable `GarchResult`: returns are scaled (×100 by default, the
scale arch's own examples use; "auto" keeps ×100 unless the scaled variance falls outside arch's
comfortable 1–1000 range, then the power of ten that brings it inside, like arch's `rescale`), the
fit is arch's own (same defaults: constant mean, robust covariance), and everything a user reads
back is converted to fractions: the conditional volatility path, the forecasts and the long-run
level, per period, per day and annualised (365-day calendar).

`params` / `std_errors` are arch's, on the scaled returns, under arch's names (mu, omega, alpha[1],
gamma[1], beta[1], nu), so a fit on the same returns equals `arch_model(scale·r).fit()` exactly
(tests/test_garch.py checks it on arch's S&P 500 data). `loglikelihood` is of the unscaled returns
(arch's value + n·ln(scale)) so it compares with the Markov and Merton fits; arch's own value is
`loglikelihood_arch`. arch's convergence flag and optimizer message are kept, and its warnings are
collected into `warnings` rather than lost.

`fix_garch(data, params)` gives the same result type for hand-set parameters (arch's `fix`).
"""
from __future__ import annotations

import math
import warnings as _warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from execal.models.core.frozen import freeze_arrays
from execal.models.core.params import DAYS_PER_YEAR, Param
from execal.models.data.bars import Returns, _freq_label, returns_from
from execal.models.vol.base import VolatilityModel, VolatilityResult, data_info

VOLS: dict[str, dict[str, Any]] = {
    "garch": {"vol": "GARCH", "o": 0, "label": "GARCH(1,1)",
              "formula": "σ²_t = ω + α·ε²_{t-1} + β·σ²_{t-1}"},
    "gjr": {"vol": "GARCH", "o": 1, "label": "GJR-GARCH(1,1,1)",
            "formula": "σ²_t = ω + (α + γ·1[ε_{t-1}<0])·ε²_{t-1} + β·σ²_{t-1}"},
    "egarch": {"vol": "EGARCH", "o": 1, "label": "EGARCH(1,1,1)",
               "formula": "ln σ²_t = ω + α·(|e_{t-1}| − √(2/π)) + γ·e_{t-1} + β·ln σ²_{t-1}"},
}
DISTS = ("normal", "t")
MEANS = ("constant", "zero")
MIN_OBS = 100            # below this a GARCH likelihood is too flat to say anything
DEFAULT_SCALE = 100.0


def _choose_scale(values: np.ndarray, scale) -> float:
    if scale not in (None, "auto"):
        s = float(scale)
        if not s > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        return s
    var = float(np.var(values))
    s = DEFAULT_SCALE
    if var > 0:
        # arch's rescale rule: powers of ten until the scaled variance is in [1, 1000]
        while var * s * s < 1.0:
            s *= 10.0
        while var * s * s > 1000.0:
            s /= 10.0
    return s


def _arch_model(y: np.ndarray, vol: str, dist: str, mean: str):
    from arch import arch_model

    spec = VOLS[vol]
    return arch_model(y, mean="Constant" if mean == "constant" else "Zero", vol=spec["vol"],
                      p=1, o=spec["o"], q=1, dist=dist, rescale=False)


def _check(vol: str, dist: str, mean: str) -> None:
    if vol not in VOLS:
        raise ValueError(f"unknown GARCH variant {vol!r}; choose one of {', '.join(VOLS)}")
    if dist not in DISTS:
        raise ValueError(f"unknown error distribution {dist!r}; choose one of {', '.join(DISTS)}")
    if mean not in MEANS:
        raise ValueError(f"unknown mean {mean!r}; choose one of {', '.join(MEANS)}")


@dataclass(frozen=True, eq=False)
class GarchResult(VolatilityResult):
    """A GARCH-family fit (or fixed parameters) with paths in fractions."""
    vol: str = "garch"
    dist: str = "normal"
    scale: float = DEFAULT_SCALE
    loglikelihood_arch: float | None = None
    returns: Returns | None = None
    sigma: np.ndarray | None = None            # conditional sigma per period, fraction
    arch_result: Any = field(default=None, repr=False)

    def __post_init__(self):
        freeze_arrays(self, ("sigma",))

    def volatility_frame(self) -> pd.DataFrame:
        """Per period: timestamp (period label), return, sigma (per period), sigma_daily,
        sigma_annualized; the conditional volatility path, figure-ready."""
        r = self.returns
        daily = self.sigma * math.sqrt(r.periods_per_day)
        return pd.DataFrame({"timestamp": r.timestamps, "return": np.asarray(r.values),
                             "sigma": np.asarray(self.sigma), "sigma_daily": daily,
                             "sigma_annualized": daily * math.sqrt(DAYS_PER_YEAR)})

    def forecast(self, horizon: int = 10, *, simulations: int = 2000, seed: int = 0) -> pd.DataFrame:
        """Variance forecasts from the last observation, h = 1..horizon periods ahead, in fractions.

        Columns: h, timestamp (label of the forecast period), variance (per period), sigma,
        sigma_daily, sigma_annualized, and sigma_daily_horizon: the volatility of the cumulative
        return over the next h periods, per day. EGARCH beyond one step uses arch's simulation
        method (seeded, so repeatable)."""
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        res = self.arch_result
        method = "simulation" if (self.vol == "egarch" and horizon > 1) else "analytic"
        kwargs = {}
        if method == "simulation":
            gen = np.random.default_rng(seed)
            kwargs = {"simulations": simulations, "rng": gen.standard_normal}
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            f = res.forecast(horizon=horizon, method=method, reindex=False, **kwargs)
        var = np.asarray(f.variance.iloc[-1], dtype=np.float64) / self.scale ** 2
        r = self.returns
        sigma = np.sqrt(var)
        per_day = r.periods_per_day
        h = np.arange(1, horizon + 1)
        last = r.t_ns[-1] if r.n else 0
        daily = sigma * math.sqrt(per_day)
        return pd.DataFrame({
            "h": h, "timestamp": pd.to_datetime(last + h * r.period_ns, unit="ns", utc=True),
            "variance": var, "sigma": sigma, "sigma_daily": daily,
            "sigma_annualized": daily * math.sqrt(DAYS_PER_YEAR),
            "sigma_daily_horizon": np.sqrt(np.cumsum(var) / (h / per_day))})

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["loglikelihood_arch"] = self.loglikelihood_arch
        out["scale"] = self.scale
        return out


def _summary(vol: str, params: Mapping[str, float], scale: float, returns: Returns,
             sigma: np.ndarray) -> dict:
    a = params.get("alpha[1]", 0.0)
    g = params.get("gamma[1]", 0.0)
    b = params.get("beta[1]", 0.0)
    w = params.get("omega", np.nan)
    per_day = returns.periods_per_day
    if vol == "egarch":
        persistence = b
        long_run_var = math.exp(w / (1 - b)) if b < 1 else float("nan")   # exp E[ln σ²]
    else:
        persistence = a + 0.5 * g + b      # symmetric errors: P(ε<0) = ½
        long_run_var = w / (1 - persistence) if persistence < 1 else float("nan")
    long_run_sigma = math.sqrt(long_run_var) / scale if long_run_var == long_run_var else float("nan")
    half_life = math.log(0.5) / math.log(persistence) if 0 < persistence < 1 else float("nan")
    last = float(sigma[-1]) if sigma.size else float("nan")
    return {
        "persistence": persistence,
        "half_life_periods": half_life,
        "half_life_days": half_life / per_day,
        "sigma_daily_long_run": long_run_sigma * math.sqrt(per_day),
        "sigma_annualized_long_run": long_run_sigma * math.sqrt(per_day * DAYS_PER_YEAR),
        "long_run_note": "exp(ω/(1−β)): the geometric long-run level" if vol == "egarch"
        else "ω/(1 − α − γ/2 − β)",
        "sigma_daily_last": last * math.sqrt(per_day),
        "sigma_daily_mean": float(np.mean(sigma)) * math.sqrt(per_day) if sigma.size else None,
    }


def _units(scale: float, params: Mapping[str, float]) -> dict[str, str]:
    s = f"{scale:g}"
    units = {"mu": f"return×{s} per period", "omega": f"(return×{s})² per period",
             "alpha[1]": "-", "gamma[1]": "-", "beta[1]": "-", "nu": "degrees of freedom"}
    return {k: units.get(k, "-") for k in params}


class _StdErrors(Mapping):
    """arch's standard errors, computed on first access: arch derives its robust covariance from
    a numerical Hessian (a quarter of a fit's time on 100,000 returns), which a forecast or a
    volatility path does not need."""

    def __init__(self, res):
        self._res = res
        self._values: dict[str, float] | None = None

    def _get(self) -> dict[str, float]:
        if self._values is None:
            self._values = {str(k): float(v) for k, v in self._res.std_err.items()}
        return self._values

    def __getitem__(self, key):
        return self._get()[key]

    def __iter__(self):
        return iter(self._res.params.index)

    def __len__(self):
        return len(self._res.params)

    def __repr__(self):
        return repr(self._get())


def _build(res, *, vol, dist, mean, scale, returns: Returns, status, settings, caught) -> GarchResult:
    params = {str(k): float(v) for k, v in res.params.items()}
    if status == "fitted":
        std = _StdErrors(res)
        flag = int(res.convergence_flag)
        opt = res.optimization_result
        message = str(getattr(opt, "message", "")) or ("converged" if flag == 0 else "not converged")
        converged = flag == 0
        optimizer = {"method": "SLSQP (arch)", "convergence_flag": flag, "message": message,
                     "iterations": int(getattr(opt, "nit", 0) or 0),
                     "nfev": int(getattr(opt, "nfev", 0) or 0), "cov_type": "robust"}
    else:
        std = {k: float("nan") for k in params}
        converged, message, optimizer = True, "parameters fixed by hand (not estimated)", {}
    warn = [f"{w.category.__name__}: {' '.join(str(w.message).split())}" for w in caught]
    if status == "fitted" and not converged:
        warn.insert(0, f"the optimizer did not converge (arch convergence flag {optimizer['convergence_flag']}: "
                       f"{message}); treat the parameters with care")
    # arch's loglikelihood is of the scaled returns: the density of r is scale × that of scale·r
    llf_arch = float(res.loglikelihood)
    llf = llf_arch + returns.n * math.log(scale)
    sigma = np.asarray(res.conditional_volatility, dtype=np.float64) / scale
    return GarchResult(
        model=vol, params=params, std_errors=std, loglikelihood=llf, n_obs=returns.n,
        converged=converged, status=status, message=message, units=_units(scale, params),
        summary=_summary(vol, params, scale, returns, sigma), settings=settings, optimizer=optimizer,
        warnings=tuple(dict.fromkeys(warn)),
        data=data_info(returns.source, returns.symbol, returns.t_ns, returns.period_ns),
        validation=returns.report, vol=vol, dist=dist, scale=scale, loglikelihood_arch=llf_arch,
        returns=returns, sigma=sigma, arch_result=res)


def fit_garch(data, *, vol: str = "garch", dist: str = "normal", mean: str = "constant",
              freq: str | None = None, symbol: str | None = None, bar: str | None = None,
              gaps: str = "error", scale: float | str = "auto", period: str | None = None,
              options: Mapping[str, Any] | None = None, **_ignored) -> GarchResult:
    """Fit GARCH(1,1) (`vol="garch"`), GJR-GARCH (`"gjr"`) or EGARCH (`"egarch"`) with normal or
    Student-t (`dist="t"`) errors by arch's maximum likelihood.

    `data`: bars, trades, a path (log returns at the bar length or at `freq`), or returns as a
    Series / array (used as given: e.g. simple returns for a comparison with arch). `options` go to
    the optimizer (scipy SLSQP through arch, e.g. {"maxiter": 200}).
    """
    _check(vol, dist, mean)
    returns = data if isinstance(data, Returns) else returns_from(
        data, freq=freq, symbol=symbol, bar=bar, gaps=gaps, period=period)
    returns.require(MIN_OBS, VOLS[vol]["label"])
    s = _choose_scale(returns.values, scale)
    model = _arch_model(returns.values * s, vol, dist, mean)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        res = model.fit(disp="off", options=dict(options) if options else None)
    settings = {"vol": vol, "dist": dist, "mean": mean, "freq": freq or _freq_label(returns.period_ns),
                "scale": s, "options": dict(options or {})}
    return _build(res, vol=vol, dist=dist, mean=mean, scale=s, returns=returns, status="fitted",
                  settings=settings, caught=caught)


def fix_garch(data, params: Mapping[str, float], *, vol: str = "garch", dist: str = "normal",
              mean: str = "constant", scale: float | str = 100.0, freq: str | None = None,
              symbol: str | None = None, bar: str | None = None, gaps: str = "error",
              period: str | None = None) -> GarchResult:
    """A GarchResult for parameters set by hand (arch's names, on returns × `scale`)."""
    _check(vol, dist, mean)
    returns = data if isinstance(data, Returns) else returns_from(
        data, freq=freq, symbol=symbol, bar=bar, gaps=gaps, period=period)
    returns.require(2, VOLS[vol]["label"])
    s = _choose_scale(returns.values, scale)
    model = _arch_model(returns.values * s, vol, dist, mean)
    names = (list(model.parameter_names()) + list(model.volatility.parameter_names())
             + list(model.distribution.parameter_names()))
    missing = [n for n in names if n not in params]
    unknown = [n for n in params if n not in names]
    if missing or unknown:
        raise ValueError(f"{VOLS[vol]['label']} with {dist} errors takes parameters {names}"
                         + (f"; missing {missing}" if missing else "")
                         + (f"; unknown {unknown}" if unknown else ""))
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        res = model.fix([float(params[n]) for n in names])
    settings = {"vol": vol, "dist": dist, "mean": mean, "freq": freq or _freq_label(returns.period_ns),
                "scale": s}
    return _build(res, vol=vol, dist=dist, mean=mean, scale=s, returns=returns, status="fixed",
                  settings=settings, caught=caught)


def _params(vol: str) -> tuple[Param, ...]:
    """Parameter metadata for the UI and CLI (bounds are slider ranges; arch enforces its own)."""
    eg = vol == "egarch"
    out = [Param("mu", 0.0, -10.0, 10.0, "return×scale per period", "constant mean"),
           Param("omega", 0.05, -10.0 if eg else 0.0, 10.0 if eg else 100.0,
                 "log variance" if eg else "(return×scale)² per period", "variance intercept"),
           Param("alpha[1]", 0.1, -2.0 if eg else 0.0, 2.0 if eg else 1.0, "-",
                 "reaction to the last shock")]
    if vol in ("gjr", "egarch"):
        out.append(Param("gamma[1]", 0.05, -2.0 if eg else 0.0, 2.0 if eg else 1.0, "-",
                         "extra reaction to negative shocks (leverage)"))
    out.append(Param("beta[1]", 0.85, -1.0 if eg else 0.0, 1.0, "-", "persistence of the last variance"))
    out.append(Param("nu", 8.0, 2.05, 500.0, "degrees of freedom", "Student-t tails (dist='t' only)"))
    return tuple(out)


def _fit_path(vol):
    return f"execal.models.vol.garch:fit_{vol}"


def fit_gjr(data, **options) -> GarchResult:
    """GJR-GARCH(1,1,1): `fit_garch(data, vol="gjr", ...)`."""
    options.pop("vol", None)
    return fit_garch(data, vol="gjr", **options)


def fit_egarch(data, **options) -> GarchResult:
    """EGARCH(1,1,1): `fit_garch(data, vol="egarch", ...)`."""
    options.pop("vol", None)
    return fit_garch(data, vol="egarch", **options)


GARCH_MODELS: tuple[VolatilityModel, ...] = tuple(
    VolatilityModel(name=name, label=spec["label"], formula=spec["formula"], params=_params(name),
                    options={"dist": DISTS, "mean": MEANS, "freq": None, "scale": "auto"},
                    reference="Bollerslev 1986; Glosten, Jagannathan & Runkle 1993; Nelson 1991; "
                              "estimated with arch (Sheppard)",
                    fit_path="execal.models.vol.garch:fit_garch" if name == "garch" else _fit_path(name))
    for name, spec in VOLS.items())
GARCH_MODEL, GJR_MODEL, EGARCH_MODEL = (next(m for m in GARCH_MODELS if m.name == n) for n in ("garch", "gjr", "egarch"))
