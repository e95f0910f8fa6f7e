"""Jumps as a model: Merton's jump-diffusion fitted to returns by maximum likelihood.

Over a period of Δ days a log return is r = μΔ + σ√Δ·Z + Σ_{i≤N} J_i with N ~ Poisson(λΔ) and
J_i ~ N(μ_J, δ²): a Poisson mixture of normals,

    f(r) = Σ_n Pois(n; λΔ) · φ(r; μΔ + n·μ_J, σ²Δ + n·δ²),

truncated where the Poisson tail is below 1e-12. Parameters (all per day, fractions): `mu` (drift
of the diffusion part), `sigma` (diffusion volatility), `lam` (expected jumps per day), `mu_jump`,
`sigma_jump` (jump size mean and standard deviation, log-return). The drift is the physical
measure's, without Merton's risk-neutral compensator: this is estimation, not pricing.

Estimation: L-BFGS on unconstrained coordinates (log σ, log λ, log δ) from a few starts (a
bipower / threshold start and two fixed jump rates), keeping the best (every start is in
`report.starts`); standard errors from the inverse of a central-difference Hessian of the
log-likelihood, by the delta method in the natural parameters. The optimizer's status and message
are the `report`. A coordinate at its guard (the diffusion variance on its floor, the jump rate or
size at the limits the search allows) is a boundary: listed in `report.active_bounds` and warned
about; fewer than 500 returns warn. `MertonResult.jump_probabilities()` gives each return's
posterior probability of containing a jump (figure-ready jump times).

Through the contract: `VolatilityCalibrator("merton").fit(data)`, `.fix(params, data)`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from typing import Mapping

from execal.models.core.params import DAYS_PER_YEAR, Param
from execal.models.core.report import OptimizerReport
from execal.models.data.bars import GAP_POLICIES, Returns
from execal.models.vol.base import (VolatilityModel, VolatilityResult, data_info, few_observations,
                                    prepare_returns)

NAMES = ("mu", "sigma", "lam", "mu_jump", "sigma_jump")
MIN_OBS = 200             # refused below
FEW_OBS = 500             # warned below: jumps are rare, their size is poorly identified
LOG_V_FLOOR = math.log(1e-8)   # diffusion variance ≥ 1e-8 × the sample variance
MAX_LOG_LAM = 50.0             # |ln λ'| (jumps per period) the search allows
MAX_LOG_B = 20.0               # |ln b| (jump sd / sample sd) the search allows
TAIL = 1e-12
MAX_TERMS = 60


def _n_terms(lam_dt: float) -> int:
    """Jump counts to keep so the Poisson tail beyond them is below 1e-12."""
    if not np.isfinite(lam_dt) or lam_dt <= 0:
        return 1
    return int(min(MAX_TERMS, max(2, stats.poisson.isf(TAIL, lam_dt) + 1)))


def _log_terms(r: np.ndarray, dt: float, mu, sigma, lam, mu_j, sig_j) -> np.ndarray:
    """(n_obs, n_terms) log of Pois(n)·φ(r | n jumps)."""
    lam_dt = lam * dt
    n = np.arange(_n_terms(lam_dt))
    log_pois = n * math.log(max(lam_dt, 1e-300)) - lam_dt - special.gammaln(n + 1)
    mean = mu * dt + n * mu_j
    var = sigma * sigma * dt + n * sig_j * sig_j
    d = r[:, None] - mean[None, :]
    return log_pois[None, :] - 0.5 * (np.log(2 * math.pi * var)[None, :] + d * d / var[None, :])


def loglike(params, r: np.ndarray, dt: float) -> float:
    """Log-likelihood of returns `r` (each over `dt` days) at (mu, sigma, lam, mu_jump, sigma_jump)."""
    mu, sigma, lam, mu_j, sig_j = map(float, params)
    if sigma <= 0 or lam < 0 or sig_j <= 0:
        return -np.inf
    return float(special.logsumexp(_log_terms(np.asarray(r, dtype=np.float64), dt, mu, sigma, lam,
                                              mu_j, sig_j), axis=1).sum())


# The fit works on standardised returns y = r / s (s = the returns' standard deviation) with
# per-period coordinates z = (m, ln v, ln λ', a, ln b): diffusion mean m and variance v, jumps per
# period λ', jump mean a and sd b, all O(1), so the optimizer sees a well-scaled problem.

def _terms_z(y: np.ndarray, z: np.ndarray):
    m, v, lam, a, b = z[0], math.exp(z[1]), math.exp(z[2]), z[3], math.exp(z[4])
    n = np.arange(_n_terms(lam))
    mean = m + n * a
    var = v + n * b * b
    d = y[:, None] - mean[None, :]
    lt = (n * math.log(max(lam, 1e-300)) - lam - special.gammaln(n + 1))[None, :] \
        - 0.5 * (np.log(2 * math.pi * var)[None, :] + d * d / var[None, :])
    return lt, n, d, var, (m, v, lam, a, b)


def _loglik_grad(z: np.ndarray, y: np.ndarray):
    """Log-likelihood and its analytic gradient in the standardised coordinates."""
    lt, n, d, var, (m, v, lam, a, b) = _terms_z(y, z)
    lse = special.logsumexp(lt, axis=1)
    w = np.exp(lt - lse[:, None])                    # Pr(n jumps | y_t)
    u = d / var[None, :]                             # ∂/∂mean of the log term
    dv = 0.5 * (u * u - 1.0 / var[None, :])          # ∂/∂var of the log term
    g_m = float((w * u).sum())
    g_a = float(((w * u) @ n).sum())
    wdv = w * dv
    g_lv = float(wdv.sum()) * v
    g_lb = float((wdv @ n).sum()) * 2 * b * b
    g_ll = float((w @ n).sum() - y.shape[0] * lam)   # Σ_t E[n|y_t] − T·λ', times λ' / λ'
    return float(lse.sum()), np.array([g_m, g_lv, g_ll, g_a, g_lb])


def _to_natural(z: np.ndarray, s: float, dt: float) -> np.ndarray:
    """(mu, sigma, lam, mu_jump, sigma_jump) per day from the standardised coordinates."""
    return np.array([z[0] * s / dt, math.exp(0.5 * z[1]) * s / math.sqrt(dt), math.exp(z[2]) / dt,
                     z[3] * s, math.exp(z[4]) * s])


def _to_z(x: np.ndarray, s: float, dt: float) -> np.ndarray:
    return np.array([x[0] * dt / s, 2 * math.log(x[1] * math.sqrt(dt) / s),
                     math.log(max(x[2] * dt, 1e-12)), x[3] / s, math.log(x[4] / s)])


def _starts(r: np.ndarray, dt: float) -> list[np.ndarray]:
    """A threshold start (returns beyond 4 bipower sigmas are the jumps) and two fixed rates."""
    a = np.abs(r - np.median(r))
    bv = (math.pi / 2) * float(np.mean(a[1:] * a[:-1])) if r.shape[0] > 1 else float(np.var(r))
    s_period = math.sqrt(max(bv, 1e-30))
    big = a > 4 * s_period
    mu0 = float(np.mean(r[~big])) / dt if (~big).any() else 0.0
    sig0 = s_period / math.sqrt(dt)
    out = []
    if big.sum() >= 3:
        out.append(np.array([mu0, sig0, big.sum() / (r.shape[0] * dt), float(np.mean(r[big])),
                             max(float(np.std(r[big])), s_period)]))
    for per_period in (0.01, 0.1):
        out.append(np.array([mu0, sig0, per_period / dt, 0.0, 3 * s_period]))
    return out


@dataclass(frozen=True, eq=False)
class MertonResult(VolatilityResult):
    """A Merton jump-diffusion fit (parameters per day, fractions)."""
    returns: Returns | None = None
    dt_days: float = 1.0

    def stat_lines(self) -> list[str]:
        s = self.stats or {}
        share = s.get("jump_share_of_variance")
        return [f"total σ annualised {100 * s.get('total_sigma_annualized', float('nan')):.4g} %, diffusion "
                f"{100 * s.get('diffusion_sigma_annualized', float('nan')):.4g} %; jumps' share of variance "
                + (f"{100 * share:.3g} %" if share is not None else "—")
                + f"; {s.get('jumps_per_year', float('nan')):.4g} jumps per year, "
                  f"{s.get('expected_jumps_in_sample', float('nan')):.4g} expected in the sample"]

    def jump_probabilities(self, threshold: float = 0.5) -> pd.DataFrame:
        """Per return: timestamp, return, p_jump = Pr(at least one jump | r), jump (p_jump > threshold)."""
        r = np.asarray(self.returns.values)
        p = self.params
        lt = _log_terms(r, self.dt_days, p["mu"], p["sigma"], p["lam"], p["mu_jump"], p["sigma_jump"])
        p_none = np.exp(lt[:, 0] - special.logsumexp(lt, axis=1))
        p_jump = 1.0 - p_none
        return pd.DataFrame({"timestamp": self.returns.timestamps, "return": r, "p_jump": p_jump,
                             "jump": p_jump > threshold})


def _stats(x: np.ndarray, dt: float, n: int) -> dict:
    jump_var = float(x[2] * (x[3] ** 2 + x[4] ** 2))
    total_var = float(x[1] ** 2 + jump_var)
    return {
        "total_sigma_daily": math.sqrt(total_var),
        "total_sigma_annualized": math.sqrt(total_var * DAYS_PER_YEAR),
        "diffusion_sigma_annualized": float(x[1]) * math.sqrt(DAYS_PER_YEAR),
        "jump_share_of_variance": jump_var / total_var if total_var > 0 else None,
        "expected_jumps_in_sample": float(x[2] * dt * n),
        "jumps_per_year": float(x[2] * DAYS_PER_YEAR),
    }


def _merton_result(returns, x, se, llf, report, status, stats, warnings, dt, freq, max_iter) -> "MertonResult":
    return MertonResult(
        model="merton", params=dict(zip(NAMES, map(float, x))), std_errors=dict(zip(NAMES, map(float, se))),
        report=report, loglikelihood=llf, n_obs=returns.n, status=status,
        units={"mu": "log return per day", "sigma": "fraction per √day", "lam": "jumps per day",
               "mu_jump": "log return", "sigma_jump": "log return"},
        stats=stats, settings={"freq": freq, "max_iter": max_iter}, warnings=tuple(dict.fromkeys(warnings)),
        data=data_info(returns.source, returns.symbol, returns.t_ns, returns.period_ns),
        validation=returns.report, returns=returns, dt_days=dt)


def _fit_merton(data, *, max_iter: int = 1000, freq: str | None = None, symbol: str | None = None,
                bar: str | None = None, gaps: str = "error", period: str | None = None) -> "MertonResult":
    """Fit Merton's jump-diffusion by maximum likelihood to log returns of bars / trades (or given
    returns, each over `period`).

    L-BFGS with the analytic score (the posterior jump-count weights give it in one pass) from
    three starts; the best is kept, every start is reported in `report.starts`.
    """
    returns, notes = prepare_returns(data, freq=freq, symbol=symbol, bar=bar, gaps=gaps, period=period)
    returns.require(MIN_OBS, "Merton's jump-diffusion")
    r = np.asarray(returns.values, dtype=np.float64)
    dt = returns.period_ns / (86_400 * 1e9)
    s = float(np.std(r))
    y = r / s

    def nll(z):
        if z[1] < LOG_V_FLOOR or not np.all(np.isfinite(z)) or abs(z[2]) > MAX_LOG_LAM or abs(z[4]) > MAX_LOG_B:
            return 1e300, np.zeros_like(z)
        f, g = _loglik_grad(z, y)
        return -f, -g

    best, tried = None, []
    for x0 in _starts(r, dt):
        with np.errstate(all="ignore"):
            res = optimize.minimize(nll, _to_z(x0, s, dt), jac=True, method="L-BFGS-B",
                                    options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-7})
        tried.append({"start": dict(zip(NAMES, map(float, x0))),
                      "loglik": -float(res.fun) - y.shape[0] * math.log(s),
                      "success": bool(res.success), "message": str(res.message), "iterations": int(res.nit)})
        if best is None or res.fun < best.fun:
            best = res
    z = best.x
    llf, grad = _loglik_grad(z, y)
    llf -= y.shape[0] * math.log(s)                 # density of r = density of y / s
    grad_max = float(np.max(np.abs(grad)))
    # L-BFGS's "abnormal termination in line search" at a flat optimum is common: what counts is
    # a score that is numerically zero
    converged = bool(best.success) or grad_max < 1e-3 * max(1.0, math.sqrt(y.shape[0]))
    warnings: list[str] = list(notes)
    if not converged:
        warnings.append(f"not converged: {best.message} (largest score component {grad_max:.3g})")
    x = _to_natural(z, s, dt)
    active = []
    if x[2] * dt * r.shape[0] < 1:
        warnings.append("less than one jump expected in the whole sample: the jump size is not identified")
    if z[1] <= LOG_V_FLOOR + 1e-3:
        active.append("sigma at its floor")
        warnings.append("the diffusion variance sits on its floor (many identical returns?): the estimate is on "
                        "the boundary of the parameter space and its standard error is not reliable")
    if abs(z[2]) >= MAX_LOG_LAM - 1e-3:
        active.append("lam at its limit")
        warnings.append(f"the jump rate lam = {x[2]:.3g} per day is at the limit of the search: the estimate "
                        "is on the boundary and its standard error is not reliable")
    if abs(z[4]) >= MAX_LOG_B - 1e-3:
        active.append("sigma_jump at its limit")
        warnings.append(f"the jump size sd sigma_jump = {x[4]:.3g} is at the limit of the search: the estimate "
                        "is on the boundary and its standard error is not reliable")
    warnings += few_observations(r.shape[0], FEW_OBS, "Merton's jump-diffusion",
                                 "jumps are rare, their rate and size are poorly identified")
    # observed information: central differences of the analytic score; delta method to per-day units
    m = z.shape[0]
    H = np.empty((m, m))
    for i in range(m):
        h = 1e-5 * max(1.0, abs(z[i]))
        e = np.zeros(m)
        e[i] = h
        H[:, i] = (_loglik_grad(z + e, y)[1] - _loglik_grad(z - e, y)[1]) / (2 * h)
    H = 0.5 * (H + H.T)
    jac = np.array([s / dt, 0.5 * x[1], x[2], s, x[4]])        # dx/dz (diagonal)
    try:
        cov = np.linalg.inv(-H)
        d = np.diag(cov) * jac ** 2
        ok = np.isfinite(d) & (d > 0)
        se = np.where(ok, np.sqrt(np.where(ok, d, 0.0)), np.nan)
        if not ok.all() or np.any(np.linalg.eigvalsh(-H) <= 0):
            warnings.append("the Hessian is not negative definite: standard errors are unreliable")
    except np.linalg.LinAlgError:
        se = np.full(5, np.nan)
        warnings.append("singular Hessian: standard errors undefined")
    report = OptimizerReport(method="L-BFGS-B, analytic score (best of starts)", loss="mle",
                             status=int(best.status), message=str(best.message), success=bool(best.success),
                             converged=converged, nfev=int(best.nfev), iterations=int(best.nit),
                             active_bounds=tuple(active), starts=tuple(tried),
                             settings={"gradient_max_abs": grad_max})
    return _merton_result(returns, x, se, llf, report, "fitted", _stats(x, dt, r.shape[0]), warnings, dt,
                          freq, max_iter)


def _fix_merton(params: Mapping[str, float], data, *, max_iter: int = 1000, freq: str | None = None,
                symbol: str | None = None, bar: str | None = None, gaps: str = "error",
                period: str | None = None) -> "MertonResult":
    """A MertonResult at hand-set parameters (per day, fractions): the log-likelihood there and the
    jump probabilities. `max_iter` is unused."""
    missing = [n for n in NAMES if n not in params]
    unknown = [n for n in params if n not in NAMES]
    if missing or unknown:
        raise ValueError(f"Merton's jump-diffusion takes parameters {list(NAMES)}"
                         + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    x = np.array([float(params[n]) for n in NAMES])
    if not (x[1] > 0 and x[2] >= 0 and x[4] > 0):
        raise ValueError("Merton's jump-diffusion needs sigma > 0, lam >= 0 and sigma_jump > 0")
    returns, notes = prepare_returns(data, freq=freq, symbol=symbol, bar=bar, gaps=gaps, period=period)
    returns.require(2, "Merton's jump-diffusion")
    r = np.asarray(returns.values, dtype=np.float64)
    dt = returns.period_ns / (86_400 * 1e9)
    llf = loglike(x, r, dt)
    return _merton_result(returns, x, np.full(5, np.nan), llf, OptimizerReport.fixed(), "fixed",
                          _stats(x, dt, r.shape[0]), notes, dt, freq, max_iter)


MERTON_MODEL = VolatilityModel(
    name="merton", label="Merton jump-diffusion",
    formula="r = μΔ + σ√Δ·Z + Σ_{i≤N} J_i, N ~ Poisson(λΔ), J ~ N(μ_J, δ²)",
    params=(Param("mu", 0.0, -10.0, 10.0, "log return per day", "drift of the diffusion part"),
            Param("sigma", 0.03, 0.0, 5.0, "fraction per √day", "diffusion volatility"),
            Param("lam", 1.0, 0.0, 10_000.0, "jumps per day", "jump intensity"),
            Param("mu_jump", 0.0, -1.0, 1.0, "log return", "mean jump size"),
            Param("sigma_jump", 0.01, 0.0, 1.0, "log return", "jump size standard deviation")),
    options={"freq": None, "gaps": GAP_POLICIES},
    reference="Merton 1976; maximum likelihood as in Ball & Torous 1985",
    fit_fn=_fit_merton, fix_fn=_fix_merton,
    option_help={"max_iter": "L-BFGS iterations at most per start",
                 "freq": "return interval, a multiple of the bar (default: the bar)"})
