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
(tests/vol/test_garch.py checks it on arch's S&P 500 data). `loglikelihood` is of the unscaled returns
(arch's value + n·ln(scale)) so it compares with the Markov and Merton fits; arch's own value is
`loglikelihood_arch`. arch's convergence flag and optimizer message are the `report`, and its
warnings are collected into `warnings` rather than lost.

Boundaries are never silent: arch maximises under its constraints (ω ≥ 0, α ≥ 0, α + γ ≥ 0, β ≥ 0,
α + γ/2 + β ≤ 1; EGARCH β ≤ 1; Student-t 2.05 ≤ ν ≤ 500) and box bounds; a fit that stops on one
lists it in `report.active_bounds` and carries a warning (on the stationarity constraint the
variance does not revert, so the half-life and the long-run level are None and `stats` says why).
Fewer than 500 returns also warn: simulation studies find GARCH(1,1) estimates and their
persistence unreliable below that (Hwang & Valls Pereira 2006).

Through the contract: `VolatilityCalibrator("gjr", dist="t").fit(data)`; `.fix(params, data)`
gives the same result type for hand-set parameters (arch's `fix`).
"""
from __future__ import annotations

import functools
import math
import warnings as _warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from execal.models.core.archutil import DEFAULT_SCALE, arch_std_errors, choose_scale
from execal.models.core.frozen import freeze_arrays
from execal.models.core.params import DAYS_PER_YEAR, Param
from execal.models.core.report import OptimizerReport
from execal.models.core.result import LazyMapping
from execal.models.data.bars import GAP_POLICIES, Returns, _freq_label
from execal.models.vol.base import (VolatilityModel, VolatilityResult, data_info, few_observations,
                                    prepare_returns)

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
MIN_OBS = 100            # below this a GARCH likelihood is too flat to say anything (refused)
FEW_OBS = 500            # below this GARCH estimates are unreliable (warned; Hwang & Valls Pereira 2006)
BOUND_TOL = 1e-6         # a constraint within this (relative) distance of equality is active


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

    def stat_lines(self) -> list[str]:
        s = self.stats or {}
        fmt = lambda x, d=4: "—" if x is None else f"{x:.{d}g}"      # noqa: E731
        lines = [f"persistence {s.get('persistence_formula', '')} = {fmt(s.get('persistence'), 6)}; half-life "
                 + (f"{fmt(s.get('half_life_days'))} days ({fmt(s.get('half_life_periods'))} periods)"
                    if s.get("half_life_periods") is not None else f"— ({s.get('half_life_note')})")]
        lr = s.get("sigma_annualized_long_run")
        lines.append("long-run σ annualised " + (f"{100 * lr:.4g} % ({s.get('long_run_note')})" if lr is not None
                                                   else f"— ({s.get('long_run_note')})"))
        if s.get("sigma_daily_last") is not None:
            lines.append(f"last σ daily {100 * s['sigma_daily_last']:.4g} %; returns scaled by {self.scale:g} for arch")
        return lines

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["loglikelihood_arch"] = self.loglikelihood_arch
        out["scale"] = self.scale
        return out


def _stats(vol: str, params: Mapping[str, float], scale: float, returns: Returns,
           sigma: np.ndarray) -> dict:
    a = params.get("alpha[1]", 0.0)
    g = params.get("gamma[1]", 0.0)
    b = params.get("beta[1]", 0.0)
    w = params.get("omega", np.nan)
    per_day = returns.periods_per_day
    if vol == "egarch":
        persistence = b
        formula = "exp(ω/(1−β)): the geometric long-run level"
        what = "β"
        long_run_var = math.exp(w / (1 - b)) if b < 1 - BOUND_TOL else None   # exp E[ln σ²]
    else:
        persistence = a + 0.5 * g + b      # symmetric errors: P(ε<0) = ½
        formula = "ω/(1 − α − γ/2 − β)"
        what = "α + γ/2 + β" if vol == "gjr" else "α + β"
        long_run_var = w / (1 - persistence) if persistence < 1 - BOUND_TOL else None
    out: dict[str, Any] = {"persistence": persistence, "persistence_formula": what}
    if 0 < persistence < 1 - BOUND_TOL:
        half_life = math.log(0.5) / math.log(persistence)
        out.update(half_life_periods=half_life, half_life_days=half_life / per_day,
                   half_life_note="ln ½ / ln(persistence) periods")
    else:
        why = (f"undefined: persistence {what} = {persistence:.6f} is on or beyond the stationarity "
               f"boundary 1, shocks to the variance never die out (integrated variance)"
               if persistence >= 1 - BOUND_TOL else
               f"undefined: persistence {what} = {persistence:.6g} ≤ 0")
        out.update(half_life_periods=None, half_life_days=None, half_life_note=why)
    if long_run_var is not None and long_run_var >= 0:
        long_run_sigma = math.sqrt(long_run_var) / scale
        out.update(sigma_daily_long_run=long_run_sigma * math.sqrt(per_day),
                   sigma_annualized_long_run=long_run_sigma * math.sqrt(per_day * DAYS_PER_YEAR),
                   long_run_note=formula)
    else:
        out.update(sigma_daily_long_run=None, sigma_annualized_long_run=None,
                   long_run_note=f"undefined: {formula} needs persistence {what} < 1, the fit has "
                                 f"{persistence:.6f} (the variance has no long-run level)")
    last = float(sigma[-1]) if sigma.size else float("nan")
    out.update(sigma_daily_last=last * math.sqrt(per_day),
               sigma_daily_mean=float(np.mean(sigma)) * math.sqrt(per_day) if sigma.size else None)
    return out


def _units(scale: float, params: Mapping[str, float]) -> dict[str, str]:
    s = f"{scale:g}"
    units = {"mu": f"return×{s} per period", "omega": f"(return×{s})² per period",
             "alpha[1]": "-", "gamma[1]": "-", "beta[1]": "-", "nu": "degrees of freedom"}
    return {k: units.get(k, "-") for k in params}


def _term(coef: float, name: str) -> str:
    c = abs(coef)
    return name if c == 1 else f"{c:g}·{name}"


def _constraint_text(row: np.ndarray, b: float, names: list[str]) -> tuple[str, bool]:
    """(readable constraint, is it the stationarity constraint) of arch's row·x − b ≥ 0."""
    nz = [(float(c), n) for c, n in zip(row, names) if c != 0]
    if nz and all(c < 0 for c, _ in nz):           # −Σ c·x ≥ b  ⇔  Σ |c|·x ≤ −b
        return " + ".join(_term(c, n) for c, n in nz) + f" ≤ {-b:g}", True
    lhs = " + ".join(_term(c, n) if c > 0 else f"−{_term(c, n)}" for c, n in nz)
    return f"{lhs} ≥ {b:g}", False


def _boundaries(res, params: Mapping[str, float], returns_scaled: np.ndarray) -> tuple[list[str], list[str]]:
    """(active constraint / bound texts, warnings) of an arch fit: every constraint arch maximised
    under and every box bound, checked at the solution."""
    model = res.model
    vol_names = list(model.volatility.parameter_names())
    dist_names = list(model.distribution.parameter_names())
    active, warn = [], []
    resid = np.asarray(res.resid, dtype=np.float64)
    resid = resid[np.isfinite(resid)] if resid.size else returns_scaled
    for names, comp in ((vol_names, model.volatility), (dist_names, model.distribution)):
        if not names:
            continue
        x = np.array([params[n] for n in names])
        A, b = comp.constraints()
        for row, bi in zip(np.atleast_2d(A), np.atleast_1d(b)):
            if not row.size:
                continue
            slack = float(row @ x - bi)
            if abs(slack) <= BOUND_TOL * max(1.0, abs(float(bi))):
                text, stationarity = _constraint_text(row, float(bi), names)
                if text in active:
                    continue
                active.append(text)
                if stationarity:
                    warn.append(f"on the stationarity boundary: {text} holds with equality (value "
                                f"{-float(row @ x):.6f}): shocks to the variance never die out, so the "
                                f"half-life and the long-run volatility are undefined (None), forecasts "
                                f"do not revert, and standard errors at a boundary are not reliable")
                else:
                    warn.append(f"a parameter constraint is active: {text} holds with equality; the "
                                f"estimate sits on the boundary of the parameter space and its standard "
                                f"error is not reliable")
        box = comp.bounds(resid)
        for n, (lo, hi) in zip(names, box):
            v = float(params[n])
            for edge, side in ((lo, "lower"), (hi, "upper")):
                if edge is None or not math.isfinite(float(edge)):
                    continue
                if abs(v - float(edge)) <= BOUND_TOL * max(1.0, abs(float(edge))):
                    text = f"{n} = {float(edge):g} ({side} bound)"
                    if any(a.startswith(n + " ") for a in active):    # already named by a constraint
                        continue
                    active.append(text)
                    warn.append(f"{n} = {v:.6g} is at its {side} bound {float(edge):g}: the estimate sits "
                                f"on the boundary of the parameter space and its standard error is not reliable")
    return active, warn


def _build(res, *, vol, dist, mean, scale, returns: Returns, status, settings, caught, notes,
           options=None) -> GarchResult:
    params = {str(k): float(v) for k, v in res.params.items()}
    warn = list(notes)
    active: list[str] = []
    if status == "fitted":
        std = LazyMapping(res.params.index, functools.partial(arch_std_errors, res))
        flag = int(res.convergence_flag)
        opt = res.optimization_result
        message = str(getattr(opt, "message", "")) or ("converged" if flag == 0 else "not converged")
        converged = flag == 0
        active, bound_warn = _boundaries(res, params, returns.values * scale)
        report = OptimizerReport(method="SLSQP (arch)", loss="mle", status=flag, message=message,
                                 success=converged, converged=converged,
                                 nfev=int(getattr(opt, "nfev", 0) or 0),
                                 iterations=int(getattr(opt, "nit", 0) or 0), active_bounds=tuple(active),
                                 settings={"cov_type": "robust", "options": dict(options or {})})
        if not converged:
            warn.append(f"the optimizer did not converge (arch convergence flag {flag}: {message}); treat "
                        f"the parameters with care")
        warn += bound_warn
        warn += few_observations(returns.n, FEW_OBS, VOLS[vol]["label"],
                                 "simulation studies find GARCH estimates unreliable there")
    else:
        std = {k: float("nan") for k in params}
        report = OptimizerReport.fixed()
    warn += [f"{w.category.__name__}: {' '.join(str(w.message).split())}" for w in caught]
    # arch's loglikelihood is of the scaled returns: the density of r is scale × that of scale·r
    llf_arch = float(res.loglikelihood)
    llf = llf_arch + returns.n * math.log(scale)
    sigma = np.asarray(res.conditional_volatility, dtype=np.float64) / scale
    return GarchResult(
        model=vol, params=params, std_errors=std, report=report, loglikelihood=llf, n_obs=returns.n,
        status=status, units=_units(scale, params), stats=_stats(vol, params, scale, returns, sigma),
        settings=settings, warnings=tuple(dict.fromkeys(warn)),
        data=data_info(returns.source, returns.symbol, returns.t_ns, returns.period_ns),
        validation=returns.report, vol=vol, dist=dist, scale=scale, loglikelihood_arch=llf_arch,
        returns=returns, sigma=sigma, arch_result=res)


def _fit(data, *, vol: str, dist: str = "normal", mean: str = "constant", scale: float | str = "auto",
         options: Mapping[str, Any] | None = None, freq: str | None = None, symbol: str | None = None,
         bar: str | None = None, gaps: str = "error", period: str | None = None) -> GarchResult:
    """Fit GARCH(1,1) (`vol="garch"`), GJR-GARCH (`"gjr"`) or EGARCH (`"egarch"`) with normal or
    Student-t (`dist="t"`) errors by arch's maximum likelihood.

    `data`: bars, trades, a path (log returns at the bar length or at `freq`), or returns as a
    Series / array (used as given: e.g. simple returns for a comparison with arch). `options` go to
    the optimizer (scipy SLSQP through arch, e.g. {"maxiter": 200}).
    """
    _check(vol, dist, mean)
    returns, notes = prepare_returns(data, freq=freq, symbol=symbol, bar=bar, gaps=gaps, period=period)
    returns.require(MIN_OBS, VOLS[vol]["label"])
    s = choose_scale(returns.values, scale)
    model = _arch_model(returns.values * s, vol, dist, mean)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        res = model.fit(disp="off", options=dict(options) if options else None)
    settings = {"dist": dist, "mean": mean, "freq": freq, "scale": s, "options": dict(options or {})}
    return _build(res, vol=vol, dist=dist, mean=mean, scale=s, returns=returns, status="fitted",
                  settings=settings, caught=caught, notes=notes, options=options)


def _fix(params: Mapping[str, float], data, *, vol: str, dist: str = "normal", mean: str = "constant",
         scale: float | str = "auto", options: Mapping[str, Any] | None = None, freq: str | None = None,
         symbol: str | None = None, bar: str | None = None, gaps: str = "error",
         period: str | None = None) -> GarchResult:
    """A GarchResult for parameters set by hand (arch's names, on returns × `scale`; give the
    scale the parameters are in: a fit's `settings["scale"]`). `options` (optimizer) are unused."""
    _check(vol, dist, mean)
    returns, notes = prepare_returns(data, freq=freq, symbol=symbol, bar=bar, gaps=gaps, period=period)
    returns.require(2, VOLS[vol]["label"])
    s = choose_scale(returns.values, scale)
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
    settings = {"dist": dist, "mean": mean, "freq": freq, "scale": s}
    return _build(res, vol=vol, dist=dist, mean=mean, scale=s, returns=returns, status="fixed",
                  settings=settings, caught=caught, notes=notes)


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


OPTION_HELP = {"dist": "error distribution: normal or Student-t",
               "mean": "constant mean or zero mean",
               "scale": "returns × scale for arch (auto: ×100 unless the variance is far from 1–1000)",
               "freq": "return interval, a multiple of the bar (default: the bar)"}

GARCH_MODELS: tuple[VolatilityModel, ...] = tuple(
    VolatilityModel(name=name, label=spec["label"], formula=spec["formula"], params=_params(name),
                    options={"dist": DISTS, "mean": MEANS, "freq": None, "scale": "auto", "gaps": GAP_POLICIES},
                    reference="Bollerslev 1986; Glosten, Jagannathan & Runkle 1993; Nelson 1991; "
                              "estimated with arch (Sheppard)",
                    fit_fn=functools.partial(_fit, vol=name), fix_fn=functools.partial(_fix, vol=name),
                    option_help=OPTION_HELP, forecasts=True)
    for name, spec in VOLS.items())
GARCH_MODEL, GJR_MODEL, EGARCH_MODEL = (next(m for m in GARCH_MODELS if m.name == n) for n in ("garch", "gjr", "egarch"))
