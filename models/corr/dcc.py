"""Dynamic conditional correlation: DCC-GARCH(1,1) (Engle 2002), estimated in two steps.

Step 1, margins: each asset's returns get a univariate GARCH-family model fitted by `arch` (GARCH,
GJR or EGARCH, normal or Student-t errors, constant or zero mean; returns scaled like the volatility
area does), giving standardised residuals z_{i,t} = ε_{i,t} / σ_{i,t}. The volatility area is not
imported (areas never import each other): `arch` is called directly here.

Step 2, correlation: with Q̄ = (1/T) Σ_t z_t z_t' (Engle's unconditional second moment of z),

    Q_1 = Q̄,   Q_t = (1 − a − b) Q̄ + a z_{t−1} z_{t−1}' + b Q_{t−1},   R_t = diag(Q_t)^−½ Q_t diag(Q_t)^−½,

and (a, b), a, b ≥ 0, a + b < 1, maximise the correlation part of the Gaussian log-likelihood

    L_C = −½ Σ_t [ ln|R_t| + z_t' R_t⁻¹ z_t − z_t' z_t ].

Computation: the recursion is a first-order linear filter in every element of Q, run by
`scipy.signal.lfilter` over all elements at once (no Python loop over t); ln|R_t| and z'R⁻¹z come
from batched linear algebra on (T, k, k) arrays. The gradient is analytic: dQ/da and dQ/db obey the
same filter (inputs z z' − Q̄ and Q_{t−1} − Q̄), and dℓ_t = −½ Σ G∘dQ_t with
G = Q⁻¹ − v v' + diag((v_i w_i − 1)/q_ii), w = diag(Q)^½ z, v = Q⁻¹ w. SLSQP (scipy) maximises
over the constraint set from the best of a few starts.

Standard errors (what is reported, and its limits): for a and b, the two-step sandwich
(−H₂₂)⁻¹ LRV(Σψ) (−H₂₂)⁻¹ (`two_step_covariance`) that carries the estimation error of the first steps —
the margins' parameters (their per-period scores and Hessians from arch, through its public `fix` and
`compute_param_cov`) and the correlation target Q̄ — into ψ_t, with a Newey–West long-run variance, so
volatility clustering and misspecified dynamics are not assumed away. It is computed on first use (a
few score evaluations per margin parameter; the fit does not wait for it). `se_conditional` is the
sandwich conditional on the first steps (ignores their error; smaller). Limits: the asymptotics are
non-standard at a bound (a = 0: no standard errors are given), and the margins' own standard errors are
arch's, each margin on its own (not joint). tests/corr/test_corr_dcc.py checks the two-step errors against
the Monte-Carlo spread of (â, b̂) over 40 simulated datasets.

`loglikelihood` = Σ margins' log-likelihoods (of the unscaled returns) + L_C: with normal margins it
is the full Gaussian DCC log-likelihood; with Student-t margins it is a quasi-likelihood.

Forecasts: R_{T+1} is known at T; beyond, Engle & Sheppard's (2001) approximation
R_{T+h} ≈ (1 − (a+b)^{h−1}) R̄ + (a+b)^{h−1} R_{T+1} (R̄ = Q̄ normalised), and the covariance
H_{T+h} = D_{T+h} R_{T+h} D_{T+h} with the margins' variance forecasts from arch.
"""
from __future__ import annotations

import functools
import math
import time
import warnings as _warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, signal

from execal.models.core.archutil import arch_std_errors, choose_scale
from execal.models.core.frozen import freeze_arrays
from execal.models.core.jsonable import clean, num
from execal.models.core.params import DAYS_PER_YEAR
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator, LazyMapping
from execal.models.corr.hac import long_run_cov
from execal.models.corr.panel import ReturnPanel, returns_panel
from execal.models.corr.result import PanelResult, pair_name, pairs_of
from execal.models.data.schema import DataError

VOLS = {"garch": ("GARCH", 0), "gjr": ("GARCH", 1), "egarch": ("EGARCH", 1)}
DISTS = ("normal", "t")
MEANS = ("constant", "zero")
MIN_OBS = 100
FEW_OBS_WARN = 500
STARTS = ((0.01, 0.97), (0.03, 0.95), (0.05, 0.90), (0.10, 0.80), (0.02, 0.70))
EPS = 1e-6                     # a + b ≤ 1 − EPS
SE_NOTE = ("a, b: two-step sandwich including the estimation error of the margins' parameters and of the "
           "correlation target Q̄ (Newey & McFadden 1994 §6; Engle & Sheppard 2001), Newey–West over periods; "
           "'std_errors_conditional' is the sandwich conditional on the first steps (smaller: it ignores their "
           "error); margins: arch's robust standard errors, each margin on its own")


# --- the correlation likelihood -----------------------------------------------------------------------

def _filter(x: np.ndarray, b: float) -> np.ndarray:
    """y_t = x_t + b·y_{t−1} (y_0 = x_0) along the last axis: scipy's lfilter, in C."""
    return signal.lfilter([1.0], [1.0, -b], x, axis=-1)


class _Terms:
    """What the likelihood reuses across evaluations for one z: the upper-triangle indices, the
    (p, T) elements of z_{t−1} z_{t−1}' and Q̄ (p = k(k+1)/2)."""

    def __init__(self, z: np.ndarray, qbar: np.ndarray | None = None):
        self.z = np.asarray(z, dtype=np.float64)
        T, k = self.z.shape
        self.T, self.k = T, k
        self.qbar = self.z.T @ self.z / T if qbar is None else np.asarray(qbar, dtype=np.float64)
        self.iu = np.triu_indices(k)
        self.qb = self.qbar[self.iu][:, None]
        zl = self.z[:-1]
        self.zz = zl[:, self.iu[0]].T * zl[:, self.iu[1]].T            # (p, T − 1)
        self.pos = {}
        for r, (i, j) in enumerate(zip(*self.iu)):
            self.pos[i, j] = self.pos[j, i] = r
        self.zc = np.ascontiguousarray(self.z.T)                       # (k, T)
        self.zz_sum = np.einsum("ti,ti->t", self.z, self.z)

    def q_triu(self, a: float, b: float) -> np.ndarray:
        x = np.empty((self.qb.shape[0], self.T))
        x[:, :1] = self.qb
        x[:, 1:] = (1.0 - a - b) * self.qb + a * self.zz
        return _filter(x, b)

    def full(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[1], self.k, self.k))
        out[:, self.iu[0], self.iu[1]] = x.T
        out[:, self.iu[1], self.iu[0]] = x.T
        return out

    def loglik(self, a: float, b: float, gradient: bool = False):
        """(ℓ (T,), scores (T, 2) | None, Q's upper triangle (p, T)).

        Every k×k operation (Cholesky, substitutions, the inverse) is written out element by element
        over arrays of length T: ~k³ vector operations instead of T small LAPACK calls, which for
        k ≤ ~10 is many times faster than batched np.linalg on (T, k, k)."""
        k, T = self.k, self.T
        qt = self.q_triu(a, b)
        at = self.pos
        zc = self.zc
        q = [qt[at[i, i]] for i in range(k)]
        L: dict = {}
        logdet = np.zeros(T)
        for j in range(k):
            s_ = q[j].copy()
            for m in range(j):
                s_ -= L[j, m] * L[j, m]
            if not np.all(s_ > 0):
                raise np.linalg.LinAlgError("Q_t is not positive definite")
            d = np.sqrt(s_)
            L[j, j] = d
            logdet += np.log(d)
            for i in range(j + 1, k):
                s_ = qt[at[j, i]].copy()
                for m in range(j):
                    s_ -= L[i, m] * L[j, m]
                L[i, j] = s_ / d
        sq = [np.sqrt(qi) for qi in q]
        w = [zc[i] * sq[i] for i in range(k)]
        y = []
        for i in range(k):                                  # L y = w
            s_ = w[i].copy()
            for m in range(i):
                s_ -= L[i, m] * y[m]
            y.append(s_ / L[i, i])
        quad = sum(yi * yi for yi in y)
        ell = -0.5 * (2.0 * logdet - sum(np.log(qi) for qi in q) + quad - self.zz_sum)
        if not gradient:
            return ell, None, qt
        v = [None] * k
        for i in reversed(range(k)):                        # L' v = y, so v = Q⁻¹ w
            s_ = y[i].copy()
            for m in range(i + 1, k):
                s_ -= L[m, i] * v[m]
            v[i] = s_ / L[i, i]
        M: dict = {}                                        # M = L⁻¹ (lower)
        for j in range(k):
            M[j, j] = 1.0 / L[j, j]
            for i in range(j + 1, k):
                s_ = L[i, j] * M[j, j]
                for m in range(j + 1, i):
                    s_ = s_ + L[i, m] * M[m, j]
                M[i, j] = -s_ / L[i, i]
        Gt = np.empty_like(qt)
        for r, (i, j) in enumerate(zip(*self.iu)):          # G = Q⁻¹ − v v' + diag((v w − 1)/q), upper
            qinv = M[j, i] * M[j, j]
            for m in range(j + 1, k):
                qinv = qinv + M[m, i] * M[m, j]
            g = qinv - v[i] * v[j]
            if i == j:
                g = g + (v[i] * w[i] - 1.0) / q[i]
            Gt[r] = g if i == j else 2.0 * g               # off-diagonal elements count twice
        xa = np.zeros_like(qt)
        xa[:, 1:] = self.zz - self.qb
        xb = np.zeros_like(qt)
        xb[:, 1:] = qt[:, :-1] - self.qb
        scores = -0.5 * np.column_stack([(Gt * _filter(xa, b)).sum(0), (Gt * _filter(xb, b)).sum(0)])
        return ell, scores, qt


def q_path(z: np.ndarray, a: float, b: float, qbar: np.ndarray) -> np.ndarray:
    """Q_t, t = 1..T, as (T, k, k)."""
    terms = _Terms(z, qbar)
    return terms.full(terms.q_triu(a, b))


def correlation_of(Q: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diagonal(Q, axis1=-2, axis2=-1))
    return Q / (d[..., :, None] * d[..., None, :])


def loglik_terms(z: np.ndarray, a: float, b: float, qbar: np.ndarray | None = None, *, gradient: bool = False):
    """ℓ_t = −½ (ln|R_t| + z_t'R_t⁻¹z_t − z_t'z_t) for t = 1..T; with `gradient`, also the scores
    (T, 2) = (∂ℓ_t/∂a, ∂ℓ_t/∂b) and Q (T, k, k). Returns (ℓ, scores | None, Q)."""
    terms = _Terms(z, qbar)
    ell, scores, qt = terms.loglik(a, b, gradient)
    return ell, scores, terms.full(qt)


def dcc_loglik(z: np.ndarray, a: float, b: float) -> float:
    """L_C at (a, b) for standardised residuals z (T, k)."""
    return float(loglik_terms(z, a, b)[0].sum())


def _objective(theta, terms: _Terms):
    a, b = float(theta[0]), float(theta[1])
    if a < 0 or b < 0 or a + b >= 1:
        return 1e10, np.zeros(2)
    try:
        ell, s, _ = terms.loglik(a, b, gradient=True)
    except np.linalg.LinAlgError:
        return 1e10, np.zeros(2)
    return -float(ell.sum()) / terms.T, -s.sum(0) / terms.T


def fit_correlation(z: np.ndarray, *, starts: Sequence[tuple[float, float]] = STARTS, maxiter: int = 200
                    ) -> tuple[np.ndarray, Any, list[dict]]:
    """Maximise L_C over (a, b): SLSQP from the best start. Returns (theta, scipy result, starts tried)."""
    terms = _Terms(z)
    tried = []
    for a0, b0 in starts:
        f = -float(terms.loglik(a0, b0)[0].sum()) / terms.T
        tried.append({"a": a0, "b": b0, "neg_loglik_per_obs": f})
    best = min(tried, key=lambda s: s["neg_loglik_per_obs"])
    x0 = np.array([best["a"], best["b"]])
    cons = ({"type": "ineq", "fun": lambda th: 1.0 - EPS - th[0] - th[1], "jac": lambda th: np.array([-1.0, -1.0])},)
    res = optimize.minimize(_objective, x0, args=(terms,), jac=True, method="SLSQP",
                            bounds=[(0.0, 1.0), (0.0, 1.0)], constraints=cons,
                            options={"maxiter": maxiter, "ftol": 1e-12})
    return np.asarray(res.x, dtype=np.float64), res, tried


def sandwich(z: np.ndarray, a: float, b: float, *, lags: int | None = None
             ) -> tuple[np.ndarray, np.ndarray, bool, tuple]:
    """(covariance of (a, b), Hessian of L_C, Hessian negative definite?, (ℓ, scores, Q) at (a, b)).

    The Hessian is a forward difference of the analytic gradient, stepping inward from a bound."""
    terms = _Terms(z)
    at = terms.loglik(a, b, gradient=True)
    g0 = at[1].sum(0)
    H = np.empty((2, 2))
    theta = np.array([a, b])
    for j in range(2):
        h = 1e-5 * max(abs(theta[j]), 1e-2)
        step = theta.copy()
        # step away from the boundary a + b = 1 (and from 0, where the forward step already goes inward)
        step[j] += -h if theta.sum() + h >= 1 - EPS else h
        g1 = terms.loglik(step[0], step[1], gradient=True)[1].sum(0)
        H[:, j] = (g1 - g0) / (step[j] - theta[j])
    H = 0.5 * (H + H.T)
    nd = bool(np.all(np.linalg.eigvalsh(H) < 0))
    B = long_run_cov(at[1], lags)
    at = (at[0], at[1], terms.full(at[2]))
    if not nd:
        return np.full((2, 2), np.nan), H, False, at
    Ainv = np.linalg.inv(-H)
    return Ainv @ B @ Ainv, H, True, at


def _margin_scores(m: "Margin") -> tuple[np.ndarray, np.ndarray, list[tuple[float, np.ndarray, np.ndarray]]]:
    """(P1 = (−H11)⁻¹, per-observation scores (T, n) of the margin's log-likelihood, and for each
    parameter (h, z at θ + h e_j, z at θ − h e_j)) by central differences through arch's public
    `fix` and `distribution.loglikelihood(..., individual=True)`."""
    res = m.arch_result
    model = res.model
    theta = np.asarray(res.params, dtype=np.float64)
    n_dist = len(model.distribution.parameter_names())

    def at(th):
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            fx = model.fix(th)
        resid = np.asarray(fx.resid, dtype=np.float64)
        sigma = np.asarray(fx.conditional_volatility, dtype=np.float64)
        dp = th[len(th) - n_dist:] if n_dist else np.empty(0)
        ll = np.asarray(model.distribution.loglikelihood(dp, resid, sigma * sigma, individual=True), dtype=np.float64)
        return ll, resid / sigma

    P1 = np.asarray(model.compute_param_cov(theta, robust=False), dtype=np.float64)
    scores = np.empty((theta.shape[0] and len(at(theta)[0]), theta.shape[0]))
    moves = []
    for j in range(theta.shape[0]):
        h = 1e-5 * max(abs(theta[j]), 1e-2)
        up, dn = theta.copy(), theta.copy()
        up[j] += h
        dn[j] -= h
        (l_up, z_up), (l_dn, z_dn) = at(up), at(dn)
        scores[:, j] = (l_up - l_dn) / (2 * h)
        moves.append((h, z_up, z_dn))
    return P1, scores, moves


def two_step_covariance(margins: Sequence["Margin"], z: np.ndarray, a: float, b: float, H22: np.ndarray, *,
                        lags: int | None = None) -> np.ndarray:
    """The covariance of (â, b̂) with the first steps' estimation error (Newey & McFadden 1994, §6;
    Engle & Sheppard 2001): the margins' parameters θ₁ and the correlation target Q̄ are estimated before
    (a, b), so

        θ̂₂ − θ₂ ≈ (−H₂₂)⁻¹ Σ_t ψ_t,   ψ_t = s₂ₜ + A₂₁ (−H₁₁)⁻¹ s₁ₜ + A₂Q (vech(z_t z_t') − vech Q̄) / T,

    with s₁ₜ, s₂ₜ the per-period scores of the margins and of the correlation likelihood, H₁₁ the margins'
    Hessians (arch, block-diagonal), A₂₁ = ∂Σ s₂/∂θ₁ (Q̄ recomputed from the moved z) and A₂Q = ∂Σ s₂/∂Q̄,
    both by central differences of the analytic score; the variance of Σ ψ_t is Newey–West."""
    z = np.asarray(z, dtype=np.float64)
    T, k = z.shape
    terms = _Terms(z)
    s2 = terms.loglik(a, b, gradient=True)[1]
    psi = s2.copy()
    iu = terms.iu
    for r, (i, j) in enumerate(zip(*iu)):                 # A2Q: move one element of Q̄ (both sides of it)
        h = 1e-6
        E = np.zeros((k, k))
        E[i, j] = E[j, i] = h
        g_up = _Terms(z, terms.qbar + E).loglik(a, b, gradient=True)[1].sum(0)
        g_dn = _Terms(z, terms.qbar - E).loglik(a, b, gradient=True)[1].sum(0)
        col = (g_up - g_dn) / (2 * h)
        psi += np.outer(z[:, i] * z[:, j] - terms.qbar[i, j], col) / T
    for c, m in enumerate(margins):                        # A21 P1 s1, one margin at a time (block-diagonal)
        P1, s1, moves = _margin_scores(m)
        A21 = np.empty((2, len(moves)))
        for jp, (h, z_up, z_dn) in enumerate(moves):
            zu, zd = z.copy(), z.copy()
            zu[:, c], zd[:, c] = z_up, z_dn
            A21[:, jp] = (_Terms(zu).loglik(a, b, gradient=True)[1].sum(0)
                          - _Terms(zd).loglik(a, b, gradient=True)[1].sum(0)) / (2 * h)
        psi += s1 @ (A21 @ P1).T
    Ainv = np.linalg.inv(-H22)
    return Ainv @ long_run_cov(psi, lags) @ Ainv


# --- margins through arch -----------------------------------------------------------------------------

def _arch(y: np.ndarray, vol: str, dist: str, mean: str):
    from arch import arch_model

    name, o = VOLS[vol]
    return arch_model(y, mean="Constant" if mean == "constant" else "Zero", vol=name, p=1, o=o, q=1,
                      dist=dist, rescale=False)


class _DCCStdErrors(Mapping):
    """a, b's standard errors (a mapping, or a function computing them on first use: the two-step
    correction costs a few likelihood gradients per margin parameter), then each margin's
    '<asset>.<param>' (arch's, also computed on first use)."""

    def __init__(self, se_ab, margins):
        self._source = se_ab
        self._values: dict | None = None if callable(se_ab) else dict(se_ab)
        self._margins = margins

    @property
    def _ab(self) -> dict:
        if self._values is None:
            self._values = dict(self._source())
        return self._values

    def __getstate__(self):
        # a pickled result (the app's cache) holds the numbers, not the function that computes them
        return {"_source": None, "_values": self._ab, "_margins": self._margins}

    def __getitem__(self, key):
        if key in ("a", "b"):
            return self._ab[key]
        for m in self._margins:
            if key.startswith(f"{m.name}.") and key[len(m.name) + 1:] in m.params:
                return float(m.std_errors[key[len(m.name) + 1:]])
        raise KeyError(key)

    def __iter__(self):
        yield from ("a", "b")
        for m in self._margins:
            yield from (f"{m.name}.{k}" for k in m.params)

    def __len__(self):
        return 2 + sum(len(m.params) for m in self._margins)


@dataclass(frozen=True)
class Margin:
    """One asset's first-step fit (arch), with the numbers the DCC result reports."""
    name: str
    params: Mapping[str, float]
    std_errors: Mapping[str, float]
    scale: float
    loglikelihood: float                 # of the unscaled returns
    converged: bool
    message: str
    warnings: tuple[str, ...]
    arch_result: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return clean({"name": self.name, "params": dict(self.params), "std_errors": dict(self.std_errors),
                      "scale": self.scale, "loglikelihood": self.loglikelihood, "converged": self.converged,
                      "message": self.message, "warnings": list(self.warnings)})


def fit_margin(values: np.ndarray, name: str, *, vol: str, dist: str, mean: str, scale, fixed: Mapping | None = None,
               options: Mapping | None = None) -> Margin:
    s = choose_scale(values, scale)
    model = _arch(values * s, vol, dist, mean)
    with _warnings.catch_warnings(record=True) as caught:
        _warnings.simplefilter("always")
        if fixed is None:
            res = model.fit(disp="off", options=dict(options) if options else None)
        else:
            pnames = res_names(model)
            missing = [n for n in pnames if n not in fixed]
            unknown = [n for n in fixed if n not in pnames]
            if missing or unknown:
                raise ValueError(f"the {name} margin takes {[f'{name}.{n}' for n in pnames]}"
                                 + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
            res = model.fix([float(fixed[n]) for n in pnames])
    params = {str(k): float(v) for k, v in res.params.items()}
    if fixed is None:
        flag = int(res.convergence_flag)
        converged = flag == 0
        message = str(getattr(res.optimization_result, "message", "")) or ("converged" if converged else "not converged")
        ses = LazyMapping(res.params.index, functools.partial(arch_std_errors, res))
    else:
        converged, message = True, "parameters fixed by hand"
        ses = {k: float("nan") for k in params}
    warn = tuple(dict.fromkeys(f"{name}: {w.category.__name__}: {' '.join(str(w.message).split())}" for w in caught))
    return Margin(name, params, ses, s, float(res.loglikelihood) + values.shape[0] * math.log(s), converged,
                  message, warn, res)


def res_names(model) -> list[str]:
    return (list(model.parameter_names()) + list(model.volatility.parameter_names())
            + list(model.distribution.parameter_names()))


def standardized(margin: Margin) -> tuple[np.ndarray, np.ndarray]:
    """(z, σ as fractions) of a margin."""
    res = margin.arch_result
    sigma = np.asarray(res.conditional_volatility, dtype=np.float64)
    z = np.asarray(res.resid, dtype=np.float64) / sigma
    return z, sigma / margin.scale


# --- the result ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class DCCResult(PanelResult):
    """A two-step DCC-GARCH fit (or hand-set parameters): margins, (a, b), the correlation path."""
    margins: tuple[Margin, ...]
    panel: ReturnPanel
    z: np.ndarray                      # (T, k) standardised residuals
    sigma: np.ndarray                  # (T, k) conditional volatility per period, fractions
    qbar: np.ndarray
    q_last: np.ndarray                 # Q_T
    correlation_path: np.ndarray       # (T, k, k) R_t
    loglikelihood: float
    loglikelihood_correlation: float
    settings: Mapping = field(default_factory=dict)
    hessian: np.ndarray | None = None
    se_conditional: Mapping = field(default_factory=dict)
    kind: str = "correlation"

    def __post_init__(self):
        freeze_arrays(self, ("z", "sigma", "qbar", "q_last", "correlation_path", "hessian"))

    @property
    def a(self) -> float:
        return float(self.params["a"])

    @property
    def b(self) -> float:
        return float(self.params["b"])

    @property
    def persistence(self) -> float:
        return self.a + self.b

    @property
    def half_life_periods(self) -> float:
        p = self.persistence
        return math.log(0.5) / math.log(p) if 0 < p < 1 else float("nan")

    def unconditional_correlation(self) -> np.ndarray:
        return correlation_of(np.asarray(self.qbar))

    def path_frame(self) -> pd.DataFrame:
        """Per period and pair: timestamp, pair, x, y, rho (R_t), tidy and figure-ready."""
        R = np.asarray(self.correlation_path)
        ts = self.panel.timestamps
        parts = []
        for i, j in pairs_of(self.names):
            parts.append(pd.DataFrame({"timestamp": ts, "pair": pair_name(self.names[i], self.names[j]),
                                       "x": self.names[i], "y": self.names[j], "rho": R[:, i, j]}))
        return pd.concat(parts, ignore_index=True)

    def forecast(self, horizon: int = 10) -> dict:
        """R_{T+h}, σ_{T+h} and H_{T+h} for h = 1..horizon (see the module docstring)."""
        if horizon < 1:
            raise ValueError("horizon must be >= 1")
        a, b = self.a, self.b
        z_T = np.asarray(self.z)[-1]
        Q1 = (1 - a - b) * np.asarray(self.qbar) + a * np.outer(z_T, z_T) + b * np.asarray(self.q_last)
        R1 = correlation_of(Q1)
        Rbar = correlation_of(np.asarray(self.qbar))
        h = np.arange(1, horizon + 1)
        wts = (a + b) ** (h - 1)
        R = (1 - wts)[:, None, None] * Rbar + wts[:, None, None] * R1
        k = len(self.names)
        var = np.empty((horizon, k))
        for i, m in enumerate(self.margins):
            method = "simulation" if (self.settings.get("vol") == "egarch" and horizon > 1) else "analytic"
            kwargs = {}
            if method == "simulation":
                kwargs = {"simulations": 2000, "rng": np.random.default_rng(0).standard_normal}
            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")
                f = m.arch_result.forecast(horizon=horizon, method=method, reindex=False, **kwargs)
            var[:, i] = np.asarray(f.variance.iloc[-1], dtype=np.float64) / m.scale ** 2
        sig = np.sqrt(var)
        H = R * sig[:, :, None] * sig[:, None, :]
        last = int(self.panel.t_ns[-1]) if self.panel.n else 0
        return {"h": h, "timestamp": pd.to_datetime(last + h * self.panel.period_ns, unit="ns", utc=True),
                "correlation": R, "sigma": sig, "covariance": H,
                "sigma_daily": sig * math.sqrt(self.panel.periods_per_day)}

    def forecast_frame(self, horizon: int = 10) -> pd.DataFrame:
        f = self.forecast(horizon)
        parts = [pd.DataFrame({"h": f["h"], "timestamp": f["timestamp"],
                               "pair": pair_name(self.names[i], self.names[j]), "rho": f["correlation"][:, i, j]})
                 for i, j in pairs_of(self.names)]
        return pd.concat(parts, ignore_index=True)

    def summary(self) -> str:
        lines = [super().summary(),
                 f"persistence a + b = {self.persistence:.4f} (half-life {self.half_life_periods:.3g} periods of "
                 f"{self.panel.freq}); log-likelihood {self.loglikelihood:.2f} (correlation part "
                 f"{self.loglikelihood_correlation:.2f}); {self.panel.n} returns × {len(self.names)} assets"]
        R = np.asarray(self.correlation_path)
        for i, j in pairs_of(self.names):
            lines.append(f"  {pair_name(self.names[i], self.names[j])}: last {R[-1, i, j]:.3f}, mean {R[:, i, j].mean():.3f}, "
                         f"range [{R[:, i, j].min():.3f}, {R[:, i, j].max():.3f}]")
        return "\n".join(lines)

    def to_dict(self, horizon: int = 10, path_points: int = 2000) -> dict:
        out = super().to_dict()
        R = np.asarray(self.correlation_path)
        step = max(1, self.panel.n // path_points)
        f = self.forecast(horizon)
        out.update(clean({
            "kind": self.kind, "names": list(self.names), "loglikelihood": num(self.loglikelihood),
            "loglikelihood_correlation": num(self.loglikelihood_correlation),
            "persistence": self.persistence, "half_life_periods": num(self.half_life_periods),
            "freq": self.panel.freq, "n_obs": self.panel.n, "se_note": SE_NOTE,
            "std_errors_conditional": dict(self.se_conditional),
            "unconditional_correlation": self.unconditional_correlation(), "last_correlation": R[-1],
            "margins": [m.to_dict() for m in self.margins], "settings": dict(self.settings),
            "data": self.panel.info(),
            "path": {"every": step, "timestamp": [t.isoformat() for t in self.panel.timestamps[::step]],
                     **{pair_name(self.names[i], self.names[j]): R[::step, i, j] for i, j in pairs_of(self.names)}},
            "forecast": {"h": f["h"], "timestamp": [t.isoformat() for t in f["timestamp"]],
                         "correlation": f["correlation"], "sigma_daily": f["sigma_daily"],
                         "sigma_annualized": f["sigma_daily"] * math.sqrt(DAYS_PER_YEAR)}}))
        return out


# --- the estimator ------------------------------------------------------------------------------------

class DCC(Estimator):
    """DCC-GARCH(1,1) in two steps: arch margins, then (a, b) by SLSQP on the correlation likelihood.

    `fit(data)`: a ReturnPanel, a frame of returns (one column per asset), or a list of bars/trades
    files or Datasets (log returns at `freq`, joined on common periods)."""

    name = "dcc"

    def __init__(self, vol: str = "garch", dist: str = "normal", mean: str = "constant", scale: float | str = "auto",
                 freq: str | None = None, bar: str | None = None, gaps: str = "skip", maxiter: int = 200,
                 hac_lags: int | None = None):
        self.vol = vol
        self.dist = dist
        self.mean = mean
        self.scale = scale
        self.freq = freq
        self.bar = bar
        self.gaps = gaps
        self.maxiter = maxiter
        self.hac_lags = hac_lags

    def _check(self) -> None:
        if self.vol not in VOLS:
            raise ValueError(f"unknown margin model {self.vol!r}; choose one of {', '.join(VOLS)}")
        if self.dist not in DISTS:
            raise ValueError(f"unknown error distribution {self.dist!r}; choose one of {', '.join(DISTS)}")
        if self.mean not in MEANS:
            raise ValueError(f"unknown mean {self.mean!r}; choose one of {', '.join(MEANS)}")

    def panel(self, data) -> ReturnPanel:
        p = returns_panel(data, freq=self.freq, bar=self.bar, gaps=self.gaps)
        p.require(MIN_OBS, "DCC-GARCH")
        return p

    def _margins(self, panel: ReturnPanel, fixed: Mapping | None = None) -> tuple[Margin, ...]:
        out = []
        for i, name in enumerate(panel.names):
            mine = None
            if fixed is not None:
                prefix = f"{name}."
                mine = {k[len(prefix):]: v for k, v in fixed.items() if k.startswith(prefix)}
            out.append(fit_margin(panel.values[:, i], name, vol=self.vol, dist=self.dist, mean=self.mean,
                                  scale=self.scale, fixed=mine or None))
        return tuple(out)

    def fit(self, data) -> DCCResult:
        self._check()
        t0 = time.perf_counter()
        panel = self.panel(data)
        margins = self._margins(panel)
        t1 = time.perf_counter()
        z, sigma = self._z(margins)
        theta, res, tried = fit_correlation(z, maxiter=self.maxiter)
        a, b = float(theta[0]), float(theta[1])
        cov, H, nd, at = sandwich(z, a, b, lags=self.hac_lags)
        warn: list[str] = []
        active = tuple(n for n, v in (("a", a), ("b", b)) if v <= 1e-6)
        if a + b >= 1 - 1e-4:
            active += ("a+b<1",)
        for n in active:
            warn.append(f"{n} is at its bound: " + ("a = 0 means constant correlation (CCC), b unidentified"
                                                   if n == "a" else "b = 0: no persistence in the correlation"
                                                   if n == "b" else "the correlation dynamics are integrated "
                                                   "(a + b ≈ 1): the mean-reversion target Q̄ means little"))
        if not nd:
            warn.append("the Hessian of the correlation likelihood is not negative definite at the optimum: "
                        "no standard errors for a and b")
        converged = bool(res.success)
        if not converged:
            warn.append(f"SLSQP did not converge on (a, b): {res.message}")
        se_ab = np.sqrt(np.clip(np.diag(cov), 0, None)) if nd else np.array([np.nan, np.nan])
        conditional = {"a": float(se_ab[0]), "b": float(se_ab[1])}
        lags = self.hac_lags

        def corrected() -> dict:
            # computed on first use of std_errors['a'/'b'] (summary, to_dict): ~4 score evaluations per
            # margin parameter, more than the fit itself
            if not nd:
                return {"a": float("nan"), "b": float("nan")}
            try:
                V = two_step_covariance(margins, z, a, b, H, lags=lags)
            except (np.linalg.LinAlgError, ValueError, FloatingPointError):
                return {"a": float("nan"), "b": float("nan")}
            d = np.sqrt(np.clip(np.diag(V), 0, None))
            return {"a": float(d[0]), "b": float(d[1])}
        report = OptimizerReport(
            method="two_step: arch margins + SLSQP (scipy) on the DCC correlation likelihood", loss="mle",
            status=int(res.status), message=str(res.message), success=bool(res.success), converged=converged,
            nfev=int(res.nfev), njev=int(getattr(res, "njev", 0) or 0), iterations=int(getattr(res, "nit", 0) or 0),
            cost=float(res.fun) * panel.n, active_bounds=active, warnings=tuple(warn),
            starts=tuple(tried), settings={"margins_s": round(t1 - t0, 4),
                                           "correlation_s": round(time.perf_counter() - t1, 4), "se": SE_NOTE})
        return self._result(panel, margins, z, sigma, a, b, corrected, report, warn, H, at, conditional)

    def fix(self, params: Mapping[str, float], data) -> DCCResult:
        """Hand-set (a, b); the margins are hand-set too when every one of their parameters is given
        as '<asset>.<param>' (arch's names), else fitted by arch (first step as in `fit`)."""
        self._check()
        if "a" not in params or "b" not in params:
            raise ValueError("a hand-set DCC needs 'a' and 'b'")
        a, b = float(params["a"]), float(params["b"])
        if a < 0 or b < 0 or a + b >= 1:
            raise ValueError(f"DCC needs a, b ≥ 0 and a + b < 1; got a = {a}, b = {b}")
        panel = self.panel(data)
        margin_keys = {k for k in params if k not in ("a", "b")}
        margins = self._margins(panel, fixed=dict(params) if margin_keys else None)
        z, sigma = self._z(margins)
        report = OptimizerReport.fixed(**{k: float(v) for k, v in params.items()})
        return self._result(panel, margins, z, sigma, a, b, {"a": float("nan"), "b": float("nan")}, report, [], None)

    @staticmethod
    def _z(margins: Sequence[Margin]) -> tuple[np.ndarray, np.ndarray]:
        zs, sig = zip(*(standardized(m) for m in margins))
        z = np.column_stack(zs)
        C = np.corrcoef(z, rowvar=False)
        if not np.all(np.linalg.eigvalsh(C) > 1e-8):
            names = [m.name for m in margins]
            i, j = np.unravel_index(np.argmax(np.abs(C - np.eye(len(names)))), C.shape)
            raise DataError(f"the standardised returns of {names[i]} and {names[j]} are perfectly correlated "
                            f"(ρ = {C[i, j]:.6f}; the same series twice?): their correlation has nothing to "
                            f"estimate and the DCC likelihood is undefined")
        return z, np.column_stack(sig)

    def _result(self, panel, margins, z, sigma, a, b, se_ab, report, warn, H, at=None,
                conditional: Mapping | None = None) -> DCCResult:
        ell, _, Q = at if at is not None else loglik_terms(z, a, b)
        params = {"a": a, "b": b}
        for m in margins:
            for k, v in m.params.items():
                params[f"{m.name}.{k}"] = v
        ses = _DCCStdErrors(se_ab, margins)
        warn = list(warn)
        for m in margins:
            if not m.converged:
                warn.append(f"the {m.name} margin did not converge ({m.message}): its residuals, and so the "
                            f"correlation, are unreliable")
            warn.extend(m.warnings)
        if panel.n < FEW_OBS_WARN:
            warn.append(f"only {panel.n} returns: DCC's (a, b) are weakly identified below ~{FEW_OBS_WARN}")
        llc = float(ell.sum())
        settings = {**self.get_params(), "freq": panel.freq}
        return DCCResult(model=self.name, names=panel.names, params=params, std_errors=ses, report=report,
                         warnings=tuple(dict.fromkeys(warn)), margins=tuple(margins), panel=panel, z=z, sigma=sigma,
                         qbar=z.T @ z / z.shape[0], q_last=Q[-1], correlation_path=correlation_of(Q),
                         loglikelihood=sum(m.loglikelihood for m in margins) + llc, loglikelihood_correlation=llc,
                         settings=settings, hessian=H,
                         se_conditional=dict(conditional or {"a": float("nan"), "b": float("nan")}))
