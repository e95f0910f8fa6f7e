"""Time-varying calibration: an impact coefficient that drifts, learnt online, or set per regime.

A batch fit (models/fit.py) assumes one parameter set for the whole sample. This room asks whether
the coefficients move, three ways:

Kalman ("kalman", strategy "time_varying"). For a model linear in one coefficient beta (Y of
`sqrt` / `power_law` with delta fixed, lambda of `linear`, eta of `almgren`, a1 of `istar`), with
x_t = d cost / d beta (the model's analytic Jacobian column; e.g. 1e4·sigma·(Q/V)^delta) and
y_t = cost_t − (the rest of the model), the scalar state-space model is

    y_t = x_t·beta_t + e_t,   e_t ~ N(0, s²·r_t)
    beta_t = beta_{t−1} + n_t,   n_t ~ N(0, q·dt_t),   dt_t = days since the previous fill.

r_t is the calibrator's noise model: 1/w_t² with w_t its residual weight (weights "noise": r_t =
(1e4·sigma·√T)²). Outliers: a fill whose weighted residual at the batch fit exceeds `outlier_k`
(default 5) robust standard deviations (1.4826·median |r|) is left out of the filter and of its
likelihood (then judged once more at the smoothed path, option `reweight`, so a drift is not
mistaken for outliers); this is innovation capping taken to its limit, fixed before the search
so every q is scored on the same fills. Down-weighting every fill by the loss's rho'(z) instead
was tried and rejected: data-dependent weights bias the variance parameters (q came out 20 % low
on Student-t noise, 50 % low with 1 % outliers; the gate recovers it, see the tests). With q = 0
the path is the weighted least-squares estimate on the fills kept (the batch fit itself with loss
"linear" and no gate). The other free parameters (delta, h, ...) stay at the batch estimate:
`fixed_at_batch` says so, and the bands are conditional on them. The state starts diffuse (exact
for a scalar state: the first fill kept initialises it and is left out of the likelihood). The noise scale
s² is concentrated out of the Gaussian likelihood (prediction-error decomposition) and q/s² is
found by a grid over the drift-to-batch-variance ratio, then bounded Brent on log q
(scipy.optimize.minimize_scalar); its standard error comes from the observed information of
(log q, log s²), and the likelihood-ratio test of q = 0 (a boundary: ½χ²₁) says whether the
coefficient moves at all. The RTS smoother gives the path and its bands; the filtered path (what
was knowable at each fill) and one-step-ahead predictions come with it.

SGD ("sgd", strategy "online"). Every free parameter is updated fill by fill, in time order, on
the calibrator's robust loss with the model's analytic Jacobian, as a stochastic Gauss-Newton
step: H_t = (1−eta_t)·H_{t−1} + eta_t·a_t·J_tJ_tᵀ (a_t = rho' + 2rho''z, the Gauss-Newton weight
of the robust loss, as in lm_normal), theta_t = theta_{t−1} − eta_t·H_t⁻¹·g_t (projected on the
bounds). Learning rate eta_t = max(1/(t + t0), 1/window): the 1/t phase is recursive least
squares with the start as a prior worth t0 fills (with t0 = 0, loss "linear" and a model linear
in its parameters, its end point is the batch fit), the floor 1/window turns it into exponential
forgetting with a memory of `window` fills so a drifting parameter is tracked. The start is the
model's defaults (what one knows before any fill). The Kalman model uses the calibrator's loss
only through the batch fit; SGD minimises it directly.

Regimes (`with_regimes`): each fill's volatility regime from a Markov-switching model fitted to
bars per symbol, labelled by the filtered (one-step-ahead) probabilities at arrival: no
look-ahead in the states (the parameters are fitted on the whole bar sample). The calibrator's
`fit_segments(..., by=("regime",))` then gives one parameter set per regime and the Wald test.

The hot recursions are the small kernels below, compiled by numba when it is installed
(they are plain Python loops otherwise: the same results, about a hundred times slower).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import optimize, stats

from execal.models.core.errors import CalibrationError
from execal.models.core.frozen import readonly
from execal.models.core.jsonable import clean as _clean
from execal.models.core.params import NS_PER_DAY
from execal.models.core.registry import OPTIMIZERS
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator, normal_conf_int, params_table, report_line
from execal.models.data.schema import DataError
from execal.models.impact.features import Features
from execal.models.impact.fit import DEFAULT_TOL, TIME_VARYING, Calibrator
from execal.models.impact.result import CalibrationResult, error_metrics

try:   # numba is optional: the kernels are plain Python loops without it
    import numba as _numba

    def _jit(fn):
        return _numba.njit(cache=True, nogil=True)(fn)

    def _jit_inline(fn):
        # a one-fill step: inlined into the whole-array loops (a call per fill doubles their time),
        # still callable on its own by the live monitor
        return _numba.njit(cache=True, nogil=True, inline="always")(fn)
    HAVE_NUMBA = True
except ImportError:   # pragma: no cover - numba is installed where the benchmarks run
    def _jit(fn):
        return fn
    _jit_inline = _jit
    HAVE_NUMBA = False

TIME_VARYING_STRATEGIES = TIME_VARYING       # the optimizer strategies this room runs
# the coefficient the Kalman filter lets drift, per model (the cost is linear in it)
DRIFT_PARAMETER = {"sqrt": "Y", "power_law": "Y", "linear": "lambda", "almgren": "eta", "istar": "a1"}
PATH_POINTS = 2000
LOSS_CODES = {"linear": 0, "soft_l1": 1, "huber": 2, "cauchy": 3, "arctan": 4}
_LOSS_CODES = LOSS_CODES
_TINY = 1e-300


def _calibration_error(message: str):
    return CalibrationError(message)


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# --- kernels ---------------------------------------------------------------------------------

@_jit
def _kf_loglik(y, x, r, dt, q):
    """One filter pass at state noise q (per day, in units of s²): (Σ v²/S, Σ log S, count)
    over the non-diffuse steps. r_t = inf marks a fill left out (an outlier): no update, no
    likelihood term. Information-exact diffuse start at the first fill kept."""
    n = y.shape[0]
    m = 0.0
    P = 0.0
    diffuse = True
    ssq = 0.0
    sld = 0.0
    count = 0
    for t in range(n):
        if diffuse:
            if r[t] < np.inf:
                m = y[t] / x[t]
                P = r[t] / (x[t] * x[t])
                diffuse = False
            continue
        P += q * dt[t]
        if not r[t] < np.inf:
            continue
        xt = x[t]
        S = xt * xt * P + r[t]
        v = y[t] - xt * m
        iS = 1.0 / S
        m += P * xt * iS * v
        P = P * r[t] * iS          # = Pp − K·x·Pp, never negative
        ssq += v * v * iS
        sld += math.log(S)
        count += 1
    return ssq, sld, count


@_jit_inline
def kf_step(m, P, diffuse, y, x, r, dt, q):
    """One fill of the filter: the state (m, P, diffuse) before it and the fill's (y, x, r, dt) in,
    (m_pred, p_pred, m, P, diffuse, v, S) out: the predicted moments (NaN / inf while diffuse), the
    filtered ones, and the innovation v with its variance S in units of s² (NaN / inf when the fill
    is left out or starts the filter). The whole-array pass below and the live monitor
    (execal.live.online) both step through this function, so their paths are the same numbers."""
    if diffuse:
        if r < np.inf:
            return np.nan, np.inf, y / x, r / (x * x), False, np.nan, np.inf
        return np.nan, np.inf, m, P, True, np.nan, np.inf
    P += q * dt
    mp = m
    pp = P
    if r < np.inf:
        S = x * x * P + r
        iS = 1.0 / S
        v = y - x * m
        m += P * x * iS * v
        P = P * r * iS
        return mp, pp, m, P, False, v, S
    return mp, pp, m, P, False, np.nan, np.inf


@_jit
def _kf_store(y, x, r, dt, q, mp, pp, mf, pf):
    """The same pass, keeping predicted (mp, pp) and filtered (mf, pf) moments per fill (NaN /
    inf before the first fill kept)."""
    n = y.shape[0]
    m = np.nan
    P = np.inf
    diffuse = True
    for t in range(n):
        a, b, m, P, diffuse, v, S = kf_step(m, P, diffuse, y[t], x[t], r[t], dt[t], q)
        mp[t] = a
        pp[t] = b
        mf[t] = m
        pf[t] = P


@_jit
def _rts(mf, pf, pp, dt, q, ms, ps):
    """Rauch-Tung-Striebel smoother of a random-walk scalar state (before the first fill kept,
    the state is the first estimate walked back in time)."""
    n = mf.shape[0]
    ms[n - 1] = mf[n - 1]
    ps[n - 1] = pf[n - 1]
    for t in range(n - 2, -1, -1):
        if not pf[t] < np.inf:
            ms[t] = ms[t + 1]
            ps[t] = ps[t + 1] + q * dt[t + 1]
            continue
        J = pf[t] / pp[t + 1] if pp[t + 1] > 0.0 else 1.0
        ms[t] = mf[t] + J * (ms[t + 1] - mf[t])
        v = pf[t] + J * J * (ps[t + 1] - pp[t + 1])
        ps[t] = v if v > 0.0 else 0.0


@_jit
def _loss_derivs(code, z):
    """(rho'(z), rho''(z)) of the registry's losses (the same formulas as scipy's)."""
    if code == 0:
        return 1.0, 0.0
    if code == 1:
        t = 1.0 + z
        d1 = 1.0 / math.sqrt(t)
        return d1, -0.5 * d1 / t
    if code == 2:
        if z <= 1.0:
            return 1.0, 0.0
        sz = math.sqrt(z)
        return 1.0 / sz, -0.5 / (sz * z)
    if code == 3:
        t = 1.0 + z
        return 1.0 / t, -1.0 / (t * t)
    t = 1.0 + z * z
    return 1.0 / t, -2.0 * z / (t * t)


@_jit
def _model_eval(code, th, c0, c1, c2, c3, J):
    """Cost (bps) of one fill and d cost / d theta (all parameters) into J.

    code 0, power family (sqrt, power_law, linear): th = (h, Y, delta), columns (half spread,
      1e4·sigma, log Q/V);
    code 1, almgren: th = (h, gamma, eta, beta), columns (half spread, 1e4·sigma, Q/V, log rate);
    code 2, istar: th = (h, a1, a2, a3, a4, b1), columns (half spread, log Q/V, log sigma_ann,
      log POV).
    """
    J[0] = c0
    if code == 0:
        base = c1 * math.exp(th[2] * c2)
        J[1] = base
        J[2] = th[1] * base * c2
        return th[0] * c0 + th[1] * base
    if code == 1:
        e = c1 * math.exp(th[3] * c3)
        J[1] = 0.5 * c1 * c2
        J[2] = e
        J[3] = th[2] * e * c3
        return th[0] * c0 + 0.5 * th[1] * c1 * c2 + th[2] * e
    istar = math.exp(math.log(th[1]) + th[2] * c1 + th[3] * c2)
    pov_pow = math.exp(th[4] * c3)
    mi = istar * (th[5] * pov_pow + 1.0 - th[5])
    J[1] = mi / th[1]
    J[2] = mi * c1
    J[3] = mi * c2
    J[4] = istar * th[5] * pov_pow * c3
    J[5] = istar * (pov_pow - 1.0)
    return th[0] * c0 + mi


@_jit_inline
def sgd_step(code, c0, c1, c2, c3, yt, wt, t, th, free, lo, hi, loss, f_scale, t0, eta_min, H, L, J,
             Jf, g, step):
    """Fill number t (0-based) of the stochastic Gauss-Newton pass: updates the full parameter
    vector th and the running curvature H in place (L, J, Jf, g, step are scratch) and returns the
    prediction made before the fill. `_sgd_kernel` and the live monitor (execal.live.online) both
    step through this function."""
    k = free.shape[0]
    pred = _model_eval(code, th, c0, c1, c2, c3, J)
    res = wt * (pred - yt)
    z = (res / f_scale) ** 2
    d1, d2 = _loss_derivs(loss, z)
    a = d1 + 2.0 * d2 * z
    if a < 2.220446049250313e-16:
        a = 2.220446049250313e-16
    for i in range(k):
        Jf[i] = wt * J[free[i]]
        g[i] = d1 * res * Jf[i]
    if t == 0:
        # the start values count as t0 pseudo-fills with this fill's curvature
        # (H starts as zeros: the caller allocates it so)
        for i in range(k):
            H[i, i] = a * Jf[i] * Jf[i] + 1e-12
    eta = 1.0 / (t + 1.0 + t0)
    if eta < eta_min:
        eta = eta_min
    for i in range(k):
        for j in range(k):
            H[i, j] = (1.0 - eta) * H[i, j] + eta * a * Jf[i] * Jf[j]
    # Cholesky of H (+ a relative ridge) and two triangular solves: k is at most 6
    dmax = 0.0
    for i in range(k):
        if H[i, i] > dmax:
            dmax = H[i, i]
    ridge = 1e-10 * dmax + 1e-300
    for i in range(k):
        for j in range(i + 1):
            s = H[i, j] + (ridge if i == j else 0.0)
            for m in range(j):
                s -= L[i, m] * L[j, m]
            if i == j:
                L[i, i] = math.sqrt(s if s > ridge else ridge)
            else:
                L[i, j] = s / L[j, j]
    for i in range(k):
        s = g[i]
        for m in range(i):
            s -= L[i, m] * step[m]
        step[i] = s / L[i, i]
    for i in range(k - 1, -1, -1):
        s = step[i]
        for m in range(i + 1, k):
            s -= L[m, i] * step[m]
        step[i] = s / L[i, i]
    for i in range(k):
        v = th[free[i]] - eta * step[i]
        if v < lo[i]:
            v = lo[i]
        elif v > hi[i]:
            v = hi[i]
        th[free[i]] = v
    return pred


@_jit
def _sgd_kernel(code, cols, y, w, theta, free, lo, hi, loss, f_scale, t0, eta_min, path, pred_before):
    """Stochastic Gauss-Newton, fill by fill (see the module docstring; one fill is `sgd_step`).
    Writes the free parameters after each fill into path (n, k) and the prediction made before it
    into pred_before; returns the final full parameter vector."""
    n = y.shape[0]
    k = free.shape[0]
    th = theta.copy()
    J = np.empty(theta.shape[0])
    Jf = np.empty(k)
    g = np.empty(k)
    H = np.zeros((k, k))
    L = np.zeros((k, k))
    step = np.empty(k)
    for t in range(n):
        pred_before[t] = sgd_step(code, cols[t, 0], cols[t, 1], cols[t, 2], cols[t, 3], y[t], w[t], t,
                                  th, free, lo, hi, loss, f_scale, t0, eta_min, H, L, J, Jf, g, step)
        for i in range(k):
            path[t, i] = th[free[i]]
    return th


def _py(kernel):
    """The pure-Python twin of a kernel (itself without numba)."""
    return getattr(kernel, "py_func", kernel)


# --- the Kalman filter on arrays -------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class KalmanPath:
    """Moments of beta_t in units of s² (multiply variances by `s2`) at state noise q/s² = q_tilde."""
    q_tilde: float
    s2: float
    m_pred: np.ndarray
    p_pred: np.ndarray
    m_filt: np.ndarray
    p_filt: np.ndarray
    m_smooth: np.ndarray
    p_smooth: np.ndarray


def kalman_path(y, x, r, dt_days, q_tilde: float, s2: float = 1.0) -> KalmanPath:
    """Filter and RTS smoother of y_t = x_t·beta_t + e_t (var s²·r_t), beta a random walk with
    variance s²·q_tilde per day; x_t must be non-zero and r_t positive (inf: the fill is left out)."""
    y, x, r, dt = (np.ascontiguousarray(a, dtype=np.float64) for a in (y, x, r, dt_days))
    n = y.shape[0]
    mp, pp, mf, pf, ms, ps = (np.empty(n) for _ in range(6))
    _kf_store(y, x, r, dt, float(q_tilde), mp, pp, mf, pf)
    _rts(mf, pf, pp, dt, float(q_tilde), ms, ps)
    return KalmanPath(float(q_tilde), float(s2), mp, pp, mf, pf, ms, ps)


def kalman_loglik(y, x, r, dt_days, q: float, s2: float | None = None) -> dict:
    """Gaussian log-likelihood (prediction-error decomposition, diffuse start) at state noise
    q per day and noise scale s² (concentrated out when None): {loglik, s2, ssq, sld, n}."""
    y, x, r, dt = (np.ascontiguousarray(a, dtype=np.float64) for a in (y, x, r, dt_days))
    return _loglik_terms(y, x, r, dt, q, s2)


def _loglik_terms(y, x, r, dt, q, s2=None, q_is_tilde=False) -> dict:
    if s2 is None:
        # q is in units of s² here: the scale is concentrated out
        ssq, sld, count = _kf_loglik(y, x, r, dt, float(q))
        s2_hat = ssq / count
        ll = -0.5 * (count * math.log(2.0 * math.pi * s2_hat) + sld + count)
        return {"loglik": ll, "s2": s2_hat, "ssq": ssq, "sld": sld, "n": count}
    q_tilde = float(q) if q_is_tilde else float(q) / s2
    ssq, sld, count = _kf_loglik(y, x, r, dt, q_tilde)
    ll = -0.5 * (count * math.log(2.0 * math.pi * s2) + sld + ssq / s2)
    return {"loglik": ll, "s2": s2, "ssq": ssq, "sld": sld, "n": count}


def estimate_state_noise(y, x, r, dt_days, *, around: float | None = None) -> dict:
    """Maximum-likelihood q (per day) and s² of the drifting-coefficient model.

    The profile likelihood in q/s² is searched on a grid of u = log10(q/s² · span / V), V the
    variance of a constant beta (1/Σ x²/r), i.e. from a drift over the whole sample of 1e-4 batch
    variances to one where every fill resets the state; then bounded Brent on the best bracket.
    `around` (a previous q/s²) narrows the grid. Returns q, s2, q_tilde, loglik, loglik_q0,
    lr_test, std errors, nfev, converged, status, message, at_bound.
    """
    y, x, r, dt = (np.ascontiguousarray(a, dtype=np.float64) for a in (y, x, r, dt_days))
    kept = np.isfinite(r)
    n = int(kept.sum())
    if n < 3:
        raise _calibration_error(f"the Kalman calibration needs at least 3 fills, got {n}")
    first, last = int(np.argmax(kept)), int(kept.shape[0] - 1 - np.argmax(kept[::-1]))
    span = float(dt[first + 1:last + 1].sum())
    if not span > 0:
        raise _calibration_error("the Kalman calibration needs fills at different times: all "
                                 f"{n} fills have the same timestamp")
    info = float(np.einsum("i,i->", x * x, 1.0 / r))
    var_const = 1.0 / info
    unit = var_const / span               # q/s² = unit·10^u
    nfev = 0
    cache: dict[float, float] = {}

    def profile(u):
        nonlocal nfev
        if u in cache:
            return cache[u]
        nfev += 1
        ll = _loglik_terms(y, x, r, dt, unit * 10.0 ** u)["loglik"]
        cache[u] = ll if math.isfinite(ll) else -np.inf
        return cache[u]

    u_lo, u_hi = -4.0, 2.0 * math.log10(n) + 2.0
    if around is not None and around > 0:
        centre = math.log10(around / unit)
        grid = np.arange(max(u_lo, centre - 2.0), min(u_hi, centre + 2.0) + 1e-9, 1.0)
        grid = grid if grid.size >= 2 else np.linspace(u_lo, u_hi, int(u_hi - u_lo) + 1)
    else:
        grid = np.linspace(u_lo, u_hi, int(round(u_hi - u_lo)) + 1)
    values = np.array([profile(float(u)) for u in grid])
    best = int(np.argmax(values))
    a = float(grid[best - 1]) if best > 0 else float(grid[0]) - 2.0
    b = float(grid[best + 1]) if best < grid.size - 1 else float(grid[-1])
    res = optimize.minimize_scalar(lambda u: -profile(float(u)), bounds=(a, b), method="bounded",
                                   options={"xatol": 1e-3, "maxiter": 100})
    u_hat = float(res.x)
    ll_hat = -float(res.fun)
    if values[best] > ll_hat:
        u_hat, ll_hat = float(grid[best]), float(values[best])
    ll0 = _loglik_terms(y, x, r, dt, 0.0)
    nfev += 1
    at_lower = ll0["loglik"] >= ll_hat - 1e-9 * max(1.0, abs(ll_hat))
    at_upper = u_hat >= u_hi - 0.05
    q_tilde = 0.0 if at_lower else unit * 10.0 ** u_hat
    terms = ll0 if at_lower else _loglik_terms(y, x, r, dt, q_tilde)
    s2 = terms["s2"]
    q = s2 * q_tilde
    lr = max(0.0, 2.0 * (terms["loglik"] - ll0["loglik"]))
    p_value = 0.5 * float(stats.chi2.sf(lr, 1)) if lr > 0 else 1.0
    se_q, se_log_q, se_s2, notes = np.nan, np.nan, np.nan, []
    if not at_lower:
        se_q, se_log_q, se_s2, note = _q_std_error(y, x, r, dt, q_tilde, terms)
        nfev += 2
        if note:
            notes.append(note)
    else:
        notes.append("q is at its lower bound 0: no evidence that the coefficient moves "
                     "(a constant coefficient: the weighted least-squares estimate on the fills kept)")
    if at_upper:
        notes.append("q is at the upper end of the search (every fill resets the coefficient): "
                     "the model is probably misspecified (a missing term, the wrong exponent)")
    converged = bool(res.success) and not at_upper
    return {"q": q, "q_tilde": q_tilde, "s2": s2, "q_std_error": se_q, "log_q_std_error": se_log_q,
            "s2_std_error": se_s2, "loglik": terms["loglik"], "loglik_q0": ll0["loglik"],
            "n_loglik": terms["n"],
            "lr_test": {"statistic": lr, "p_value": p_value, "df": 1,
                        "note": "H0: q = 0 (constant coefficient); boundary: p = ½·P(χ²₁ > LR)"},
            "nfev": nfev, "status": int(res.status), "message": str(res.message),
            "converged": converged, "at_lower_bound": bool(at_lower), "at_upper_bound": bool(at_upper),
            "search": {"u": "log10(q/s² · span_days · Σx²/r)", "grid": [float(g) for g in grid],
                       "bracket": [a, b], "u_hat": u_hat, "span_days": span},
            "notes": notes}


def _q_std_error(y, x, r, dt, q_tilde, terms) -> tuple[float, float, float, str | None]:
    """Standard errors of q and s² from the observed information of (log q/s², log s²): the
    likelihood is analytic in log s², numerical (central differences) in log q/s²."""
    h = 0.05
    lo = _loglik_terms(y, x, r, dt, q_tilde * math.exp(-h))
    hi = _loglik_terms(y, x, r, dt, q_tilde * math.exp(h))
    ssq0, sld0, s2 = terms["ssq"], terms["sld"], terms["s2"]
    d_ssq = (hi["ssq"] - lo["ssq"]) / (2 * h)
    d2_ssq = (hi["ssq"] - 2 * ssq0 + lo["ssq"]) / h ** 2
    d2_sld = (hi["sld"] - 2 * sld0 + lo["sld"]) / h ** 2
    eb = 1.0 / s2
    H = np.array([[-0.5 * (d2_sld + d2_ssq * eb), 0.5 * d_ssq * eb],
                  [0.5 * d_ssq * eb, -0.5 * ssq0 * eb]])
    try:
        cov = np.linalg.inv(-H)
    except np.linalg.LinAlgError:
        return np.nan, np.nan, np.nan, "singular information matrix: no standard error for q"
    if not (np.linalg.eigvalsh(-H) > 0).all():
        return np.nan, np.nan, np.nan, ("the likelihood is not concave in log q at the optimum: "
                                        "no standard error for q")
    var_log_q = cov[0, 0] + cov[1, 1] + 2 * cov[0, 1]     # log q = log(q/s²) + log s²
    q = s2 * q_tilde
    se_log_q = math.sqrt(max(var_log_q, 0.0))
    return q * se_log_q, se_log_q, s2 * math.sqrt(max(cov[1, 1], 0.0)), None


# --- the result ------------------------------------------------------------------------------



def thin_index(t: np.ndarray, max_points: int) -> np.ndarray:
    """Indices of at most `max_points` points of a time-ordered path: the first point and the
    last point of each of max_points − 1 equal time bins (the state at the bin's end)."""
    n = t.shape[0]
    if n <= max_points:
        return np.arange(n)
    edges = np.linspace(float(t[0]), float(t[-1]), max_points)
    last = np.searchsorted(t, edges[1:], side="right") - 1
    idx = np.unique(np.concatenate([[0], np.clip(last, 0, n - 1), [n - 1]]))
    if idx.size > max_points:   # float edges at the same instant: keep evenly spaced ones
        idx = idx[np.linspace(0, idx.size - 1, max_points).astype(np.int64)]
    return idx


@dataclass(frozen=True, eq=False)
class TimeVaryingResult:
    """A calibration whose parameters move over time: their path, the final state, and the batch
    fit they are compared with. Immutable; arrays are read-only and in time order.

    The estimator contract: `params` is the final state (every model parameter; what `result`,
    `predict` and the config use), `std_errors` its standard errors (Kalman: the filtered
    standard deviation of the moving coefficient at the last fill; SGD: none, it has no
    covariance; parameters held at the batch fit: the batch fit's), `conf_int()`, `report` (the
    one OptimizerReport), `converged`, `warnings` (this fit's and the batch fit's), `summary()`,
    `to_dict()`, `to_config()`; `TimeVaryingCalibrator.fix` gives the same type for hand-set
    parameters (a constant path, status "fixed")."""
    method: str                          # "kalman" | "sgd"
    model: Any
    parameters: tuple[str, ...]          # the parameters that move along the path
    timestamp_ns: np.ndarray | None      # (n,) arrival times (None: row order, SGD only)
    row_index: np.ndarray                # (n,) 0-based input position of each path point
    values: np.ndarray                   # (n, k) smoothed state (kalman) / iterate after the fill (sgd)
    lower: np.ndarray                    # (n, k) band (NaN for sgd)
    upper: np.ndarray
    params: Mapping[str, float]          # the final state: every parameter of the model
    report: OptimizerReport
    batch: CalibrationResult
    result: CalibrationResult            # a result at the final state (predict, config, panels)
    fixed_at_batch: Mapping[str, float] = field(default_factory=dict)
    q: float | None = None               # state-noise variance per day (parameter² / day)
    q_std_error: float | None = None
    noise_scale: float | None = None     # s: the noise is s·(expected noise) (weights "noise")
    loglikelihood: float | None = None
    lr_test: Mapping | None = None
    filtered: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None   # value, lower, upper
    metrics: Mapping = field(default_factory=dict)
    comparison: Mapping = field(default_factory=dict)
    alpha: float = 0.05
    settings: Mapping = field(default_factory=dict)
    status: str = "fitted"               # "fitted" | "fixed" (hand-set parameters, a constant path)
    _cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        for name in ("timestamp_ns", "row_index", "values", "lower", "upper"):
            a = getattr(self, name)
            if a is not None:
                object.__setattr__(self, name, readonly(a))
        if self.filtered is not None:
            object.__setattr__(self, "filtered", tuple(readonly(a) for a in self.filtered))

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def converged(self) -> bool:
        return bool(self.report.converged)

    @property
    def warnings(self) -> tuple[str, ...]:
        """This fit's warnings, then the batch fit's (it fixes the non-moving parameters)."""
        own = tuple(self.report.warnings)
        batch = tuple(f"batch fit: {w}" for w in self.batch.report.warnings
                      if self.batch is not self.result and w not in own)
        return own + batch

    @property
    def std_errors(self) -> dict[str, float]:
        """Standard errors of `params` (NaN where there is none; see the class docstring)."""
        final = self.result.std_errors
        batch = self.batch.std_errors
        out = {}
        for name in self.params:
            if name in self.parameters:
                out[name] = float(final.get(name, np.nan))
            elif name in self.fixed_at_batch:
                out[name] = float(batch.get(name, np.nan))
            else:
                out[name] = np.nan
        return out

    def conf_int(self, alpha: float | None = None) -> dict[str, tuple[float, float]]:
        """Normal intervals of the final state (alpha defaults to the fit's, 0.05)."""
        return normal_conf_int(self.params, self.std_errors, self.alpha if alpha is None else alpha)

    def _time_axis(self) -> np.ndarray:
        return (self.timestamp_ns if self.timestamp_ns is not None
                else np.arange(self.n, dtype=np.int64))

    def path_frame(self, max_points: int | None = None, *, which: str = "path") -> pd.DataFrame:
        """Tidy path: timestamp, parameter, value, lower, upper (one row per point and moving
        parameter); `which` = "path" (smoothed for kalman, iterates for sgd) or "filtered"
        (kalman: what was knowable at each fill); at most `max_points` points per parameter."""
        if which == "filtered":
            if self.filtered is None:
                raise ValueError(f"a {self.method} result has no filtered path")
            values, lower, upper = self.filtered
        elif which == "path":
            values, lower, upper = self.values, self.lower, self.upper
        else:
            raise ValueError(f"which must be 'path' or 'filtered', got {which!r}")
        t = self._time_axis()
        idx = np.arange(self.n) if max_points is None else thin_index(t, int(max_points))
        k = len(self.parameters)
        if self.timestamp_ns is not None:
            stamps = pd.DatetimeIndex(np.tile(self.timestamp_ns[idx], k).view("datetime64[ns]")).tz_localize("UTC")
        else:
            stamps = np.tile(idx, k)
        return pd.DataFrame({
            "timestamp": stamps,
            "parameter": pd.Categorical.from_codes(np.repeat(np.arange(k), idx.size), list(self.parameters)),
            "value": values[idx].T.reshape(-1), "lower": lower[idx].T.reshape(-1),
            "upper": upper[idx].T.reshape(-1)})

    @property
    def path(self) -> pd.DataFrame:
        """The whole path as a tidy frame (see `path_frame`), built on first access."""
        if "path" not in self._cache:
            self._cache["path"] = self.path_frame()
        return self._cache["path"]

    def path_summary(self) -> dict:
        """Per moving parameter: first, last, min, max of the path and when."""
        t = self._time_axis()

        def when(i):
            if self.timestamp_ns is None:
                return int(i)
            return pd.Timestamp(int(t[i]), tz="UTC").isoformat()
        out = {}
        for j, name in enumerate(self.parameters):
            v = self.values[:, j]
            i_min, i_max = int(np.nanargmin(v)), int(np.nanargmax(v))
            out[name] = {"first": _num(v[0]), "last": _num(v[-1]), "min": _num(v[i_min]),
                         "max": _num(v[i_max]), "first_time": when(0), "last_time": when(self.n - 1),
                         "min_time": when(i_min), "max_time": when(i_max)}
        return out

    def to_dict(self, max_points: int | None = None) -> dict:
        """JSON-ready: the `time_varying` block of the config (path thinned to ≤ max_points)."""
        max_points = int(max_points or self.settings.get("path_points") or PATH_POINTS)
        t = self._time_axis()
        idx = thin_index(t, max_points)
        if self.timestamp_ns is not None:
            stamps = [pd.Timestamp(int(v), tz="UTC").isoformat() for v in t[idx]]
        else:
            stamps = [int(v) for v in idx]
        path = {"points": int(idx.size), "of": self.n, "timestamp": stamps,
                "thinning": "first fill, then the last fill of each equal time bin", "parameters": {}}
        for j, name in enumerate(self.parameters):
            entry = {"value": [_num(v) for v in self.values[idx, j]]}
            if np.isfinite(self.lower[:, j]).any():
                entry["lower"] = [_num(v) for v in self.lower[idx, j]]
                entry["upper"] = [_num(v) for v in self.upper[idx, j]]
            if self.filtered is not None:
                entry["filtered"] = [_num(v) for v in self.filtered[0][idx, j]]
            path["parameters"][name] = entry
        batch = self.batch
        out = {
            "method": self.method, "strategy": OPTIMIZERS[self.method].strategy,
            "status": self.status, "converged": self.converged, "warnings": list(self.warnings),
            "parameters": list(self.parameters), "params": dict(self.params),
            "std_errors": self.std_errors,
            "conf_int": {k: list(v) for k, v in self.conf_int().items()},
            "fixed_at_batch": dict(self.fixed_at_batch),
            "q": _num(self.q), "q_std_error": _num(self.q_std_error),
            "q_units": (f"{self.parameters[0]}² per day" if self.method == "kalman" else None),
            "noise_scale": _num(self.noise_scale), "loglikelihood": _num(self.loglikelihood),
            "lr_test": dict(self.lr_test) if self.lr_test else None,
            "alpha": self.alpha, "rows": self.n,
            "path_summary": self.path_summary(), "path": path,
            "metrics": dict(self.metrics), "comparison": dict(self.comparison),
            "batch": {"method": batch.report.method, "params": batch.params,
                      "std_errors": batch.std_errors, "converged": batch.report.converged,
                      "message": batch.report.message},
            "report": self.report.to_dict(), "settings": dict(self.settings)}
        return _clean(out)

    def to_config(self, provenance: Mapping | None = None) -> dict:
        """The config of the final state (model.params = the last point of the path) with the
        `time_varying` block."""
        config = self.result.to_config(provenance)
        config["time_varying"] = self.to_dict()
        return config

    def summary(self) -> str:
        rep = self.report
        lines = [f"{self.model.label} ({self.model.name}), {self.method} ({self.status})", report_line(rep),
                 f"rows: {self.n}; moving: {', '.join(self.parameters)}"
                 + (f"; fixed at the batch fit: " + ", ".join(f"{k} = {v:.6g}" for k, v in self.fixed_at_batch.items())
                    if self.fixed_at_batch else ""),
                 "final state (s.e.: " + ("filtered, at the last fill" if self.method == "kalman" else
                                          "none for online SGD") + "; held parameters: the batch fit's):"]
        held = tuple(k for k in self.params if k not in self.parameters and k not in self.fixed_at_batch)
        lines += params_table(self.params, self.std_errors, self.conf_int(), fixed=held)
        if self.q is not None:
            se = "" if self.q_std_error is None else f" ± {self.q_std_error:.3g}"
            lr = self.lr_test or {}
            lines.append(f"q = {self.q:.6g}{se} per day; noise scale {self.noise_scale:.4g}; "
                         f"loglik {self.loglikelihood:.6g}; LR test of q = 0: {lr.get('statistic', float('nan')):.3g} "
                         f"(p = {lr.get('p_value', float('nan')):.3g})")
        summ = self.path_summary()
        se_b = self.batch.std_errors
        for name in self.parameters:
            s = summ[name]
            lines.append(f"{name}: first {s['first']:.6g}, last {s['last']:.6g}, min {s['min']:.6g}, "
                         f"max {s['max']:.6g}; batch {self.batch.params[name]:.6g} ± {se_b[name]:.3g}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)


# --- calibration -----------------------------------------------------------------------------

def _options(calibrator) -> dict:
    spec = OPTIMIZERS[calibrator.optimizer]
    out = {p.name: p.default for p in spec.params}
    out.update(calibrator.options)
    return out


def _check_settings(calibrator) -> None:
    spec = OPTIMIZERS.get(calibrator.optimizer)
    if spec is None or spec.strategy not in TIME_VARYING_STRATEGIES:
        raise _calibration_error(f"optimizer {calibrator.optimizer!r} is not a time-varying calibration "
                                 "(choose kalman or sgd)")
    unsupported = [name for name, value in (("test_fraction", calibrator.test_fraction),
                                            ("walk_forward", calibrator.walk_forward),
                                            ("multistart", calibrator.multistart)) if value]
    if unsupported:
        raise _calibration_error(f"optimizer '{calibrator.optimizer}' learns along time and has its own "
                                 f"one-step-ahead metrics: {', '.join(unsupported)} is not supported with it")


def _time_order(features: Features) -> np.ndarray | None:
    ts = features.timestamp_ns
    if ts is None:
        return None
    if ts.shape[0] < 2 or bool(np.all(ts[1:] >= ts[:-1])):
        return np.arange(ts.shape[0])
    return np.argsort(ts, kind="stable")


def calibrate_time_varying(calibrator, fills, cost_bps=None, *, parameter: str | None = None,
                           batch: CalibrationResult | None = None, alpha: float = 0.05) -> TimeVaryingResult:
    """Run the calibrator's time-varying optimizer ("kalman" or "sgd") on `fills`.

    The batch fit it is compared with (and that fixes the non-moving parameters of the Kalman
    model) is the same calibrator with optimizer `lm_normal`; pass `batch` to reuse one.
    `parameter` (kalman) is the drifting coefficient (default: DRIFT_PARAMETER of the model).
    """
    _check_settings(calibrator)
    if not 0 < alpha < 1:
        raise _calibration_error(f"alpha must be in (0, 1), got {alpha}")
    batch_cal = calibrator.set_params(optimizer="lm_normal", options={})
    if batch is None:
        batch = batch_cal.fit(calibrator.features(fills, cost_bps))
    if calibrator.optimizer == "kalman":
        return _kalman(calibrator, batch, parameter, alpha)
    return _sgd(calibrator, batch, alpha)


class TimeVaryingCalibrator(Estimator):
    """The time-varying impact calibrations as an estimator: `fit(fills) -> TimeVaryingResult`.

    method: "kalman" (one coefficient drifts as a random walk, its variance q by maximum likelihood)
    or "sgd" (every free parameter learnt fill by fill). The other settings are `Calibrator`'s
    (model, loss, f_scale, weights, fixed, bounds, participation, free, max_nfev, tol) and
    `options` are the method's own (the registry's OPTIMIZERS["kalman" | "sgd"].params, e.g.
    {"outlier_k": 5}, {"window": 5000, "t0": 100}). `parameter` names the Kalman's drifting
    coefficient (default: DRIFT_PARAMETER of the model); `alpha` the level of its bands.

    `fit` runs the batch fit it is compared with (the same settings with `lm_normal`; pass
    `batch=` to reuse one), then the path; `fix(params, fills)` gives the same result type for
    hand-set parameters: a constant path, status "fixed".
    """

    def __init__(self, model: str = "power_law", method: str = "kalman", loss: str = "soft_l1",
                 f_scale: float = 1.0, weights: str = "auto", weight_column: str | None = None,
                 fixed: Mapping[str, float] | None = None, bounds: Mapping | None = None,
                 participation: str = "adv", *, free=(), parameter: str | None = None,
                 alpha: float = 0.05, max_nfev: int | None = None, tol: float = DEFAULT_TOL,
                 options: Mapping[str, Any] | None = None):
        methods = [name for name, spec in OPTIMIZERS.items() if spec.strategy in TIME_VARYING_STRATEGIES]
        if method not in methods:
            raise _calibration_error(f"method must be one of {', '.join(methods)}, got {method!r} "
                                     "(a batch fit is Calibrator's job)")
        if not 0 < float(alpha) < 1:
            raise _calibration_error(f"alpha must be in (0, 1), got {alpha}")
        self.model = getattr(model, "name", model)
        self.method = method
        self.loss = loss
        self.f_scale = float(f_scale)
        self.weights = weights
        self.weight_column = weight_column
        self.fixed = dict(fixed or {})
        self.bounds = {k: tuple(v) for k, v in (bounds or {}).items()}
        self.participation = participation
        self.free = tuple(free)
        self.parameter = parameter
        self.alpha = float(alpha)
        self.max_nfev = max_nfev
        self.tol = float(tol)
        self.options = dict(options or {})
        self.calibrator()            # every setting is checked now, before any data is read

    @classmethod
    def from_calibrator(cls, calibrator: Calibrator, *, method: str | None = None,
                        parameter: str | None = None, alpha: float = 0.05) -> "TimeVaryingCalibrator":
        """The time-varying estimator with a `Calibrator`'s settings (the UI and the CLI build a
        Calibrator from the registry's controls); `method` defaults to its optimizer. Settings a
        path cannot honour (test_fraction, walk_forward, multistart) are refused."""
        c = calibrator.get_params()
        method = method or c["optimizer"]
        _check_settings(calibrator.set_params(optimizer=method, options=c["options"]
                                              if c["optimizer"] == method else {}))
        return cls(model=c["model"], method=method, loss=c["loss"], f_scale=c["f_scale"],
                   weights=c["weights"], weight_column=c["weight_column"], fixed=c["fixed"],
                   bounds=c["bounds"], participation=c["participation"], free=c["free"],
                   parameter=parameter, alpha=alpha, max_nfev=c["max_nfev"], tol=c["tol"],
                   options=c["options"] if c["optimizer"] == method else {})

    def calibrator(self) -> Calibrator:
        """The `Calibrator` carrying these settings (optimizer = the method)."""
        return Calibrator(model=self.model, optimizer=self.method, loss=self.loss, f_scale=self.f_scale,
                          weights=self.weights, weight_column=self.weight_column, fixed=self.fixed,
                          bounds=self.bounds, participation=self.participation, free=self.free,
                          max_nfev=self.max_nfev, tol=self.tol, options=self.options)

    def fit(self, fills, cost_bps=None, *, batch: CalibrationResult | None = None) -> TimeVaryingResult:
        """The path of the parameters over `fills` (a frame, Dataset, mapping or Features)."""
        return calibrate_time_varying(self.calibrator(), fills, cost_bps, parameter=self.parameter,
                                      batch=batch, alpha=self.alpha)

    def fix(self, params: Mapping[str, float], fills, cost_bps=None) -> TimeVaryingResult:
        """Hand-set parameters as a result of the same type: a path that does not move (what a drift
        is compared against), status "fixed", no standard errors. Missing parameters take the fixed
        values or the model defaults (as `Calibrator.fix`)."""
        cal = self.calibrator()
        hand = cal.set_params(optimizer="lm_normal", options={}).fix(params, fills, cost_bps)
        model, features = hand.model, hand.features
        if self.method == "kalman":
            name = self.parameter or DRIFT_PARAMETER.get(model.name)
            if name not in model.param_names:
                raise _calibration_error(f"model '{model.name}' has no drifting coefficient "
                                         f"{name!r} (parameters: {', '.join(model.param_names)})")
            moving = (name,)
        else:
            free_idx, _ = cal._free_and_theta(features)
            moving = tuple(model.params[i].name for i in free_idx)
        order = _time_order(features)
        order = np.arange(features.n) if order is None else order
        rows = features if np.array_equal(order, np.arange(features.n)) else features.take_rows(order, labels=False)
        values = np.tile([hand.theta[model.index(n)] for n in moving], (features.n, 1))
        nan = np.full(values.shape, np.nan)
        metrics = {}
        if rows.cost_bps is not None:
            metrics["final_state"] = error_metrics(rows.cost_bps, hand.predicted_bps[order],
                                                   rows.expected_noise_bps)
        settings = {**_options(cal), "parameters": list(moving), "alpha": self.alpha}
        return TimeVaryingResult(
            method=self.method, model=model, parameters=moving, timestamp_ns=rows.timestamp_ns,
            row_index=rows.row_index, values=values, lower=nan, upper=nan, params=hand.params,
            report=hand.report, batch=hand, result=hand, metrics=metrics, alpha=self.alpha,
            settings=settings, status="fixed")


def fit_kalman(fills, model: str = "power_law", *, parameter: str | None = None, **settings) -> TimeVaryingResult:
    """Kalman calibration with a drifting coefficient; `settings` are Calibrator's (loss, weights, ...)."""
    calibrator = Calibrator(model=model, optimizer="kalman", **settings)
    return TimeVaryingCalibrator.from_calibrator(calibrator, parameter=parameter).fit(fills)


def fit_sgd(fills, model: str = "power_law", **settings) -> TimeVaryingResult:
    """Online SGD calibration; `settings` are Calibrator's (loss, weights, options={window, t0}, ...)."""
    return TimeVaryingCalibrator.from_calibrator(Calibrator(model=model, optimizer="sgd", **settings)).fit(fills)


def _inliers(weighted_residual: np.ndarray, k: float) -> tuple[np.ndarray, float]:
    """Fills whose weighted residual is within k robust standard deviations (1.4826·median |r|);
    k ≤ 0 keeps every fill. Returns (mask, robust sd)."""
    scale = 1.4826 * float(np.median(np.abs(weighted_residual)))
    if not k > 0 or not scale > 0:
        return np.ones(weighted_residual.shape[0], dtype=bool), scale
    return np.abs(weighted_residual) <= k * scale, scale


def _final_result(calibrator, batch: CalibrationResult, theta: np.ndarray, free: tuple[str, ...],
                  covariance: np.ndarray, report: OptimizerReport) -> CalibrationResult:
    features = batch.features
    predicted = batch.model.predict(theta, features)
    return CalibrationResult(
        model=batch.model, theta=theta, free=free, covariance=covariance, report=report,
        features=features, is_train=np.ones(features.n, dtype=bool), predicted_bps=predicted,
        residuals_bps=features.cost_bps - predicted, status="fitted",
        participation=batch.participation, weights=batch.weights, validation=batch.validation,
        settings=calibrator.get_params(), bounds=dict(batch.bounds))


def _kalman(calibrator, batch: CalibrationResult, parameter: str | None, alpha: float) -> TimeVaryingResult:
    model = batch.model
    options = _options(calibrator)
    name = parameter or DRIFT_PARAMETER.get(model.name)
    if name is None:
        raise _calibration_error(f"model '{model.name}' has no default drifting coefficient: name the "
                                 f"parameter (one of {', '.join(model.param_names)})")
    if name not in model.param_names:
        raise _calibration_error(f"model '{model.name}' has no parameter '{name}' "
                                 f"(parameters: {', '.join(model.param_names)})")
    if name not in batch.free:
        raise _calibration_error(f"'{name}' is fixed in this calibration: the Kalman filter lets a free "
                                 "coefficient drift (unfix it)")
    features = batch.features
    if features.timestamp_ns is None:
        raise DataError("the Kalman calibration needs a 'timestamp' column (the state drifts with time)",
                        file=features.source, column="timestamp")
    j = model.index(name)
    theta_b = np.array(batch.theta)
    x_all = model.jacobian(theta_b, features, [j])[:, 0]
    theta_0 = theta_b.copy()
    theta_0[j] = 0.0
    offset = model.predict(theta_0, features)
    # linear in the coefficient: cost = offset + beta·x exactly (else the state model is wrong)
    pred_b = model.predict(theta_b, features)
    theta_2 = theta_b.copy()
    theta_2[j] = 2.0 * theta_b[j] + 1.0
    lin_err = np.max(np.abs(model.predict(theta_2, features) - offset - theta_2[j] * x_all))
    if not lin_err <= 1e-8 * (np.max(np.abs(pred_b)) + 1.0):
        linear = [p for p in DRIFT_PARAMETER.values()]
        raise _calibration_error(f"model '{model.name}' is not linear in '{name}': the Kalman calibration "
                                 "lets a coefficient drift that the cost is proportional to "
                                 f"(e.g. {', '.join(sorted(set(linear)))})")
    w_all = calibrator._residual_weights(features, batch.weights)
    w_all = np.ones(features.n) if w_all is None else np.asarray(w_all, dtype=np.float64)
    usable = (w_all > 0) & (x_all != 0)
    dropped_rows = int((~usable).sum())
    order = _time_order(features)
    if dropped_rows:
        order = order[usable[order]]
    ts = features.timestamp_ns[order]
    x = np.ascontiguousarray(x_all[order])
    y = np.ascontiguousarray(features.cost_bps[order] - offset[order])
    w = w_all[order]
    base_r = 1.0 / (w * w)
    dt = np.empty(order.shape[0])
    dt[0] = 0.0
    np.subtract(ts[1:], ts[:-1], out=dt[1:])
    dt /= NS_PER_DAY
    k_out = float(options.get("outlier_k", 5.0) or 0.0)
    # pass 1: outliers judged by the batch fit's residuals
    kept, scale = _inliers(w * (y - theta_b[j] * x), k_out)
    r = np.where(kept, base_r, np.inf)
    est = estimate_state_noise(y, x, r, dt)
    kp = kalman_path(y, x, r, dt, est["q_tilde"], est["s2"])
    passes = 1
    if int(options.get("reweight", 1)) and not est["at_lower_bound"] and k_out > 0:
        # pass 2: judged by the smoothed path's residuals (a drift must not look like outliers)
        kept2, scale = _inliers(w * (y - kp.m_smooth * x), k_out)
        passes = 2
        if not np.array_equal(kept2, kept):
            kept, r = kept2, np.where(kept2, base_r, np.inf)
            first = est
            est = estimate_state_noise(y, x, r, dt, around=first["q_tilde"])
            est["nfev"] += first["nfev"]
            kp = kalman_path(y, x, r, dt, est["q_tilde"], est["s2"])
    s2 = est["s2"]
    zcrit = float(stats.norm.ppf(1 - alpha / 2))
    sd_s = np.sqrt(s2 * kp.p_smooth)
    sd_f = np.sqrt(s2 * kp.p_filt)
    ms, mf = kp.m_smooth, kp.m_filt
    final = float(mf[-1])
    theta_f = theta_b.copy()
    theta_f[j] = final
    final_se = float(sd_f[-1])
    # metrics on the rows in time order: one step ahead (real time), smoothed, batch, final state
    cost = features.cost_bps[order]
    noise = features.expected_noise_bps
    noise = None if noise is None else noise[order]
    off = offset[order]
    metrics = {"one_step_ahead": error_metrics(cost[1:], off[1:] + x[1:] * kp.m_pred[1:],
                                               None if noise is None else noise[1:]),
               "smoothed": error_metrics(cost, off + x * ms, noise),
               "batch": error_metrics(cost, pred_b[order], noise),
               "final_state": error_metrics(cost, off + x * final, noise),
               "note": "one_step_ahead: each fill predicted with the coefficient filtered up to the "
                       "previous fill (the first fill initialises the filter)"}
    se_b = batch.std_errors[name]
    comparison = {name: {"final": final, "batch": float(theta_b[j]), "difference": final - float(theta_b[j]),
                         "final_std_error": final_se, "batch_std_error": _num(se_b),
                         "path_mean": float(ms.mean()),
                         "max_abs_path_minus_batch": float(np.max(np.abs(ms - theta_b[j])))}}
    fixed_at_batch = {p: float(theta_b[model.index(p)]) for p in batch.free if p != name}
    warn = list(est["notes"])
    rows_out = features.row_index[order][~kept]
    outliers = {"k": k_out, "robust_sd": scale, "count": int(rows_out.size),
                "first_rows": (np.sort(rows_out)[:5] + 1).tolist(),
                "rule": "|weighted residual| > k × 1.4826·median|weighted residual| at the batch fit"
                        + (", then at the smoothed path" if passes == 2 else "")}
    if rows_out.size:
        warn.append(f"{rows_out.size} outlier fill(s) (|residual| > {k_out:g} robust sd) left out of the "
                    "filter and its likelihood (rows " + ", ".join(map(str, outliers["first_rows"]))
                    + (" ...)" if rows_out.size > 5 else ")"))
    if dropped_rows:
        warn.append(f"{dropped_rows} fill(s) with zero weight or no sensitivity to {name} carry no "
                    "information about it and are left out of the filter")
    if not est["converged"] and not est["at_upper_bound"]:
        warn.insert(0, f"the likelihood search for q did not converge (status {est['status']}: "
                       f"{est['message']}); q is where it stopped")
    message = (f"Kalman filter, {name} a random walk: q = {est['q']:.4g} per day "
               f"({'at its lower bound' if est['at_lower_bound'] else 'ML'}), noise scale "
               f"{math.sqrt(s2):.4g}; minimize_scalar: {est['message']}")
    settings = {**options, "parameter": name, "passes": passes, "alpha": alpha,
                "numba": HAVE_NUMBA, "search": est["search"],
                "outliers": outliers}
    report = OptimizerReport(
        method="kalman", loss=calibrator.loss, f_scale=calibrator.f_scale, weights=batch.weights,
        status=est["status"], message=message, success=bool(est["status"] == 0 and np.isfinite(final)),
        converged=est["converged"], nfev=est["nfev"], iterations=passes, cost=None,
        active_bounds=(), warnings=tuple(warn), settings=settings)
    result = _final_result(calibrator, batch, theta_f, (name,), np.array([[final_se ** 2]]), report)
    return TimeVaryingResult(
        method="kalman", model=model, parameters=(name,), timestamp_ns=ts,
        row_index=features.row_index[order], values=ms[:, None], lower=(ms - zcrit * sd_s)[:, None],
        upper=(ms + zcrit * sd_s)[:, None], params=model.as_dict(theta_f), report=report, batch=batch,
        result=result, fixed_at_batch=fixed_at_batch, q=float(est["q"]), q_std_error=_num(est["q_std_error"]),
        noise_scale=math.sqrt(s2), loglikelihood=float(est["loglik"]),
        lr_test=est["lr_test"], filtered=(mf[:, None], (mf - zcrit * sd_f)[:, None], (mf + zcrit * sd_f)[:, None]),
        metrics=metrics, comparison=comparison, alpha=alpha, settings=settings)


def sgd_inputs(model, features: Features, theta: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(kernel code, (n, 4) columns, internal theta) of a model, or raise for a model without a kernel."""
    n = features.n
    hs = features.half_spread_bps if features.spread_bps is not None else np.zeros(n)
    if model.name in ("sqrt", "power_law", "linear"):
        delta = {"sqrt": 0.5, "linear": 1.0}.get(model.name)
        th = np.array([theta[0], theta[1], theta[2] if delta is None else delta])
        cols = np.column_stack([hs, features.sigma_bps, features.log_participation, np.zeros(n)])
        return 0, cols, th
    if model.name == "almgren":
        cols = np.column_stack([hs, features.sigma_bps, features.participation, features.log_rate])
        return 1, cols, np.array(theta, dtype=np.float64)
    if model.name == "istar":
        cols = np.column_stack([hs, features.log_participation, features.log_sigma_ann, features.log_pov])
        return 2, cols, np.array(theta, dtype=np.float64)
    raise _calibration_error(f"the online SGD calibration has no per-fill kernel for model '{model.name}' "
                             "(available: sqrt, power_law, linear, almgren, istar)")


_sgd_inputs = sgd_inputs


def sgd_path(model, features: Features, theta0, free, lo, hi, *, loss: str = "soft_l1",
             f_scale: float = 1.0, weights=None, t0: float = 100.0, window: float = 5000.0,
             python: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the SGD kernel on rows already in time order: (path (n, k), predictions made before each
    fill (n,), final full theta). `python` runs the pure-Python twin of the kernel."""
    code, cols, th = sgd_inputs(model, features, np.asarray(theta0, dtype=np.float64))
    n = features.n
    free = np.asarray(free, dtype=np.int64)
    w = np.ones(n) if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    path = np.empty((n, free.shape[0]))
    pred = np.empty(n)
    kernel = _py(_sgd_kernel) if python else _sgd_kernel
    eta_min = 1.0 / window if window and window > 0 else 0.0
    final = kernel(code, np.ascontiguousarray(cols), np.ascontiguousarray(features.cost_bps, dtype=np.float64),
                   w, th, free, np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64),
                   _LOSS_CODES[loss], float(f_scale), float(t0), float(eta_min), path, pred)
    full = np.array(theta0, dtype=np.float64)
    full[:] = final[:full.shape[0]]
    return path, pred, full


def _sgd(calibrator, batch: CalibrationResult, alpha: float) -> TimeVaryingResult:
    model = batch.model
    options = _options(calibrator)
    window, t0 = float(options.get("window", 0) or 0), float(options.get("t0", 0) or 0)
    if window < 0 or t0 < 0:
        raise _calibration_error("sgd options window and t0 must be ≥ 0")
    features = batch.features
    warn = []
    order = _time_order(features)
    if order is None:
        order = np.arange(features.n)
        warn.append("no 'timestamp' column: fills are learnt in row order")
    rows = features if np.array_equal(order, np.arange(features.n)) else features.take_rows(order, labels=False)
    free_idx, theta0 = calibrator._free_and_theta(rows)
    lo, hi = calibrator._bounds(free_idx)
    theta0[free_idx] = np.clip(theta0[free_idx], lo, hi)
    weights = calibrator._residual_weights(rows, batch.weights)
    path, pred, theta_f = sgd_path(model, rows, theta0, free_idx, lo, hi, loss=calibrator.loss,
                                   f_scale=calibrator.f_scale, weights=weights, t0=t0, window=window)
    names = tuple(model.params[i].name for i in free_idx)
    se_b = batch.std_errors
    comparison = {}
    for i, name in zip(free_idx, names):
        diff = float(theta_f[i] - batch.theta[i])
        se = se_b.get(name, np.nan)
        comparison[name] = {"final": float(theta_f[i]), "batch": float(batch.theta[i]), "difference": diff,
                            "batch_std_error": _num(se), "difference_in_batch_se": _num(diff / se) if se else None}
    gaps = [abs(c["difference_in_batch_se"]) for c in comparison.values() if c["difference_in_batch_se"] is not None]
    finite = bool(np.isfinite(theta_f).all())
    at_bound = [f"{n} at {'lower' if v <= a else 'upper'} bound" for n, v, a, b
                in zip(names, theta_f[free_idx], lo, hi) if v <= a or v >= b]
    if at_bound:
        warn.append("parameter(s) ended at a bound: " + "; ".join(at_bound))
    if gaps and max(gaps) > 3:
        warn.append(f"the online estimate ends {max(gaps):.1f} batch standard errors from the batch fit: "
                    "the parameters drift, or the learning-rate floor (window) is too short to average the noise")
    if not finite:
        warn.insert(0, "the online updates diverged (non-finite parameters)")
    noise = rows.expected_noise_bps
    batch_pred = model.predict(batch.theta, rows)
    metrics = {"one_step_ahead": error_metrics(rows.cost_bps, pred, noise),
               "batch": error_metrics(rows.cost_bps, batch_pred, noise),
               "final_state": error_metrics(rows.cost_bps, model.predict(theta_f, rows), noise),
               "note": "one_step_ahead: each fill predicted with the parameters learnt from the fills before it"}
    schedule = (f"eta_t = max(1/(t + {t0:g}), 1/{window:g})" if window > 0 else f"eta_t = 1/(t + {t0:g})")
    settings = {**options, "schedule": schedule, "start": model.as_dict(theta0), "numba": HAVE_NUMBA,
                "update": "stochastic Gauss-Newton: theta -= eta·H⁻¹·g, H the running robust curvature"}
    message = (f"online SGD over {rows.n} fills ({schedule}); final parameters "
               + (f"within {max(gaps):.2f} batch s.e. of the batch fit" if gaps else "computed"))
    report = OptimizerReport(
        method="sgd", loss=calibrator.loss, f_scale=calibrator.f_scale, weights=batch.weights,
        status=1 if finite else 0, message=message, success=finite, converged=finite and not at_bound,
        nfev=rows.n, iterations=rows.n, cost=None, active_bounds=tuple(at_bound), warnings=tuple(warn),
        settings=settings)
    k = len(names)
    result = _final_result(calibrator, batch, theta_f, names, np.full((k, k), np.nan), report)
    nan = np.full(path.shape, np.nan)
    return TimeVaryingResult(
        method="sgd", model=model, parameters=names, timestamp_ns=rows.timestamp_ns,
        row_index=rows.row_index, values=path, lower=nan, upper=nan, params=model.as_dict(theta_f),
        report=report, batch=batch, result=result, metrics=metrics, comparison=comparison,
        alpha=alpha, settings=settings)


def regime_table(segmented) -> dict:
    """Per free parameter: its value ± s.e. in each regime and the ratio to the calmest regime's."""
    out = {}
    by = tuple(segmented.by)
    if "regime" not in by:
        return out
    for name in segmented.pooled.free:
        rows = []
        for s in segmented.segments:
            res = s.result
            rows.append({"key": dict(s.key), "value": res.params[name], "std_error": res.std_errors[name],
                         "rows": int(res.features.n)})
        base = [r for r in rows if r["key"].get("regime") == "calm"]
        calm = base[0]["value"] if len(base) == 1 else None
        for r in rows:
            r["ratio_to_calm"] = _num(r["value"] / calm) if calm else None
        out[name] = rows
    return out


def regime_summary_text(segmented) -> str:
    """The per-regime table as plain text (the CLI prints it)."""
    lines = []
    for name, rows in regime_table(segmented).items():
        for r in rows:
            key = ", ".join(f"{k}={v}" for k, v in r["key"].items())
            ratio = "" if r["ratio_to_calm"] is None else f"   × calm {r['ratio_to_calm']:.3f}"
            lines.append(f"{name:<8}{key:<28}{r['value']:>12.6g} ± {r['std_error']:<10.3g} ({r['rows']} rows){ratio}")
    wald = (segmented.test or {}).get("wald")
    if wald:
        lines.append(f"Wald test of equal coefficients: χ² = {wald['statistic']:.3f}, df {wald['df']}, "
                     f"p = {wald['p_value']:.3g}")
    return "\n".join(lines)


