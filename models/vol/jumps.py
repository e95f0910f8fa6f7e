"""Jumps as a model: Merton's jump-diffusion fitted to returns by maximum likelihood.

Over a period of Δ days a log return is r = μΔ + σ√Δ·Z + Σ_{i≤N} J_i with N ~ Poisson(λΔ) and
J_i ~ N(μ_J, δ²): a Poisson mixture of normals,

    f(r) = Σ_n Pois(n; λΔ) · φ(r; μΔ + n·μ_J, σ²Δ + n·δ²),

truncated where the Poisson tail is below 1e-12. Parameters (all per day, fractions): `mu` (drift
of the diffusion part), `sigma` (diffusion volatility), `lam` (expected jumps per day), `mu_jump`,
`sigma_jump` (jump size mean and standard deviation, log-return). The drift is the physical
measure's, without Merton's risk-neutral compensator: this is estimation, not pricing.

Estimation: BFGS on unconstrained coordinates (log σ, log λ, log δ) from a few starts (a bipower
/ threshold start and two fixed jump rates), keeping the best; standard errors from the inverse
of a central-difference Hessian of the log-likelihood in the natural parameters. The optimizer's
status and message are part of the result. `MertonResult.jump_probabilities()` gives each
return's posterior probability of containing a jump (figure-ready jump times).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from execal.models.core.params import DAYS_PER_YEAR, Param
from execal.models.data.bars import Returns, _freq_label, returns_from
from execal.models.vol.base import VolatilityModel, VolatilityResult, data_info

NAMES = ("mu", "sigma", "lam", "mu_jump", "sigma_jump")
MIN_OBS = 200
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

    def jump_probabilities(self, threshold: float = 0.5) -> pd.DataFrame:
        """Per return: timestamp, return, p_jump = Pr(at least one jump | r), jump (p_jump > threshold)."""
        r = np.asarray(self.returns.values)
        p = self.params
        lt = _log_terms(r, self.dt_days, p["mu"], p["sigma"], p["lam"], p["mu_jump"], p["sigma_jump"])
        p_none = np.exp(lt[:, 0] - special.logsumexp(lt, axis=1))
        p_jump = 1.0 - p_none
        return pd.DataFrame({"timestamp": self.returns.timestamps, "return": r, "p_jump": p_jump,
                             "jump": p_jump > threshold})


def fit_merton(data, *, freq: str | None = None, symbol: str | None = None, bar: str | None = None,
               gaps: str = "error", period: str | None = None, max_iter: int = 1000,
               **_ignored) -> MertonResult:
    """Fit Merton's jump-diffusion by maximum likelihood to log returns of bars / trades (or given
    returns, each over `period`).

    L-BFGS with the analytic score (the posterior jump-count weights give it in one pass) from
    three starts; the best is kept, every start is reported in `summary["starts"]`.
    """
    returns = data if isinstance(data, Returns) else returns_from(
        data, freq=freq, symbol=symbol, bar=bar, gaps=gaps, period=period)
    returns.require(MIN_OBS, "Merton's jump-diffusion")
    r = np.asarray(returns.values, dtype=np.float64)
    dt = returns.period_ns / (86_400 * 1e9)
    s = float(np.std(r))
    y = r / s
    log_v_floor = math.log(1e-8)      # diffusion variance ≥ 1e-8 × the sample variance

    def nll(z):
        if z[1] < log_v_floor or not np.all(np.isfinite(z)) or abs(z[2]) > 50 or abs(z[4]) > 20:
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
    warnings: list[str] = []
    if not converged:
        warnings.append(f"not converged: {best.message} (largest score component {grad_max:.3g})")
    x = _to_natural(z, s, dt)
    if x[2] * dt * r.shape[0] < 1:
        warnings.append("less than one jump expected in the whole sample: the jump size is not identified")
    if z[1] <= log_v_floor + 1e-3:
        warnings.append("the diffusion variance sits on its floor (many identical returns?)")
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
    params = dict(zip(NAMES, map(float, x)))
    jump_var = float(x[2] * (x[3] ** 2 + x[4] ** 2))
    total_var = float(x[1] ** 2 + jump_var)
    summary = {
        "total_sigma_daily": math.sqrt(total_var),
        "total_sigma_annualized": math.sqrt(total_var * DAYS_PER_YEAR),
        "diffusion_sigma_annualized": float(x[1]) * math.sqrt(DAYS_PER_YEAR),
        "jump_share_of_variance": jump_var / total_var if total_var > 0 else None,
        "expected_jumps_in_sample": float(x[2] * dt * r.shape[0]),
        "jumps_per_year": float(x[2] * DAYS_PER_YEAR),
        "starts": tried,
    }
    return MertonResult(
        model="merton", params=params, std_errors=dict(zip(NAMES, map(float, se))), loglikelihood=llf,
        n_obs=returns.n, converged=converged, status="fitted", message=str(best.message),
        units={"mu": "log return per day", "sigma": "fraction per √day", "lam": "jumps per day",
               "mu_jump": "log return", "sigma_jump": "log return"},
        summary=summary,
        settings={"freq": freq or _freq_label(returns.period_ns), "max_iter": max_iter},
        optimizer={"method": "L-BFGS-B, analytic score (best of starts)", "status": int(best.status),
                   "message": str(best.message), "iterations": int(best.nit), "nfev": int(best.nfev),
                   "gradient_max_abs": grad_max},
        warnings=tuple(warnings),
        data=data_info(returns.source, returns.symbol, returns.t_ns, returns.period_ns),
        validation=returns.report, returns=returns, dt_days=dt)


MERTON_MODEL = VolatilityModel(
    name="merton", label="Merton jump-diffusion",
    formula="r = μΔ + σ√Δ·Z + Σ_{i≤N} J_i, N ~ Poisson(λΔ), J ~ N(μ_J, δ²)",
    params=(Param("mu", 0.0, -10.0, 10.0, "log return per day", "drift of the diffusion part"),
            Param("sigma", 0.03, 0.0, 5.0, "fraction per √day", "diffusion volatility"),
            Param("lam", 1.0, 0.0, 10_000.0, "jumps per day", "jump intensity"),
            Param("mu_jump", 0.0, -1.0, 1.0, "log return", "mean jump size"),
            Param("sigma_jump", 0.01, 0.0, 1.0, "log return", "jump size standard deviation")),
    options={"freq": None},
    reference="Merton 1976; maximum likelihood as in Ball & Torous 1985",
    fit_path="execal.models.vol.jumps:fit_merton")
