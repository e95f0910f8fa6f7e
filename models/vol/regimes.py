"""Volatility regimes: a Markov-switching model (2 or 3 regimes) fitted to returns.

The model is statsmodels' `MarkovRegression(y, k_regimes=k, trend="c", switching_trend=
switching_mean, switching_variance=switching_variance)` with its steady-state initial
probabilities: y_t | s_t = j ~ N(μ_j, σ²_j), P[i, j] = Pr(s_t = j | s_{t-1} = i). By default the
variance switches and the mean is common (volatility regimes); `switching_mean=True` gives a mean
per regime, and `switching_variance=False` one common variance (then a mean must switch: regimes
of level, as statsmodels' Fed funds example). Parameters are reported under statsmodels' names and
in its order (p[i->j], const, sigma2[j] or sigma2) and `loglike` equals statsmodels' `loglike` on
the same parameters (tests/vol/test_regimes.py checks it).

Why not statsmodels' fit: its Hamilton filter walks the series in Python-level steps per
iteration of a quasi-Newton search, which takes minutes on 50,000 returns. Here the filter is a
*blocked scan*: the recursion v_t = normalise(η_t ⊙ (v_{t-1} P)) is cut into √n blocks; each
block's transfer matrix is built for all blocks at once (√n vectorised steps), the block
boundaries are chained (√n small steps), then every block is filtered at once from its boundary
(√n vectorised steps). It is the same arithmetic as the sequential filter, so the likelihood is
identical, at about 3√n numpy calls instead of n.

Estimation, from several starts (the likelihood of a mixture has local maxima: on statsmodels'
Fed funds series a single start stops at −540.23 where the maximum is −539.16): EM (Baum–Welch;
the backward pass is the same scan run backwards) from a data-driven start and `starts` seeded
random ones, the best then polished by Newton–Raphson on the exact score (Fisher's identity: one
filter + smoother pass) with a numerical Hessian, BFGS where the likelihood is flat; standard
errors from that Hessian, by the delta method in statsmodels' parameters. Every start's
log-likelihood is in `report.starts`, the best and their spread in `stats["multistart"]`.
A transition probability at 0 or 1 or a variance on its floor is a boundary: listed in
`report.active_bounds` and warned about. Fewer than 50 returns per parameter warn.

Regimes are sorted by volatility (regime 0 the calmest; by mean with one common variance) so labels
never swap between runs. Expected duration of regime j = 1 / (1 − p[j->j]) periods.
`regime_labels(fills, bars, result)` gives each fill the most probable regime by the *filtered*
probability at arrival (the one-step prediction from the bars closed before it), never the smoothed
one, so there is no look-ahead in the state (the parameters are the full-sample fit).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import optimize

from execal.models.core.frozen import freeze_arrays
from execal.models.core.params import DAYS_PER_YEAR, NS_PER_DAY, Param
from execal.models.core.report import OptimizerReport
from execal.models.data.bars import GAP_POLICIES, Returns, _as_dataset, _freq_label, _time_ns, bar_series, returns_of_bars
from execal.models.data.schema import DataError, DropRecord
from execal.models.vol.base import VolatilityModel, VolatilityResult, data_info, few_observations, prepare_returns

LOG_2PI = math.log(2.0 * math.pi)
TINY = 1e-300
MIN_OBS_PER_PARAM = 20        # refused below
FEW_OBS_PER_PARAM = 50        # warned below
VAR_FLOOR = 1e-6              # × sample variance: a regime cannot collapse onto zero returns
DEFAULT_STARTS = 4            # random starts besides the data-driven one
START_ITER = 10               # EM iterations that rank the starts on long series
FULL_EM_OBS = 5_000           # up to this many returns every start runs EM to convergence
BOUND_TOL = 1e-6              # a transition probability this close to 0 or 1 is on the boundary


# --- the blocked scan (the hot kernel) -------------------------------------------------------

def _scan(E: np.ndarray, M: np.ndarray, v0: np.ndarray, block: int | None = None):
    """v_t = normalise(E_t ⊙ (v_{t-1} @ M)) for t = 0..n-1 from v0; returns (V (n,k), log c (n,))
    with c_t the normaliser, computed in ~3√n vectorised steps (see the module docstring)."""
    n, k = E.shape
    L = block or max(8, int(math.sqrt(n)))
    B = -(-n // L)
    pad = B * L - n
    Ep = np.concatenate([E, np.ones((pad, k))]) if pad else E
    Ep = Ep.reshape(B, L, k)
    # 1. transfer matrix of every block but the last, all blocks at once
    starts = np.empty((B, k))
    starts[0] = v0
    if B > 1:
        T = np.broadcast_to(np.eye(k), (B - 1, k, k)).copy()
        El = Ep[:-1]
        for l in range(L):
            T = T @ M
            T *= El[:, l, None, :]
            T /= T.sum(axis=(1, 2), keepdims=True) + TINY
        # 2. chain the block boundaries
        cur = np.asarray(v0, dtype=np.float64)
        for b in range(B - 1):
            cur = cur @ T[b]
            cur = cur / (cur.sum() + TINY)
            starts[b + 1] = cur
    # 3. every block from its boundary, all at once
    V = np.empty((B, L, k))
    logc = np.empty((B, L))
    cur = starts
    for l in range(L):
        u = cur @ M
        u *= Ep[:, l]
        c = u.sum(1)
        np.maximum(c, TINY, out=c)
        cur = u / c[:, None]
        V[:, l] = cur
        logc[:, l] = c
    np.log(logc, out=logc)
    return V.reshape(B * L, k)[:n], logc.reshape(-1)[:n]


def _log_densities(y: np.ndarray, mu: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """(n, k) Gaussian log densities."""
    d = y[:, None] - mu[None, :]
    return -0.5 * (LOG_2PI + np.log(sigma2)[None, :] + d * d / sigma2[None, :])


def steady_state(P: np.ndarray) -> np.ndarray:
    """Ergodic probabilities of a row-stochastic P, exactly as statsmodels computes them."""
    k = P.shape[0]
    A = np.c_[(np.eye(k) - P.T).T, np.ones(k)].T   # statsmodels' (column-stochastic) construction
    return np.maximum(np.linalg.pinv(A)[:, -1], 1e-20)


def _filter(y, P, mu, sigma2):
    """Hamilton filter: (loglik, filtered (n,k), scaled emissions (n,k), per-t log max)."""
    logf = _log_densities(y, mu, sigma2)
    m = logf.max(1)
    E = np.exp(logf - m[:, None])
    F, logc = _scan(E, P, steady_state(P))
    return float(m.sum() + logc.sum()), F, E, m


def _smooth(P, F, E):
    """Smoothed probabilities (n,k) and expected transition counts (k,k) (Baum–Welch)."""
    n, k = F.shape
    W, _ = _scan(E[::-1], P.T, np.ones(k))
    W = W[::-1]                                  # W_t ∝ η_t ⊙ β_t
    beta = np.empty_like(F)
    beta[-1] = 1.0
    beta[:-1] = W[1:] @ P.T
    G = F * beta
    G /= G.sum(1, keepdims=True)
    Z = np.einsum("ti,ti->t", F[:-1] @ P, W[1:])
    N = P * ((F[:-1] / np.maximum(Z, TINY)[:, None]).T @ W[1:])
    return G, N


# --- the same, for several parameter sets at once (the multistart's EM) ----------------------
# The scan costs ~3√n numpy calls whatever the array sizes, so S starts filtered together cost
# little more than one: the multistart runs its EM on all starts at once.

def _scan_batch(E: np.ndarray, M: np.ndarray, v0: np.ndarray, block: int | None = None):
    """`_scan` for S parameter sets: E (S,n,k), M (S,k,k), v0 (S,k) -> V (S,n,k), log c (S,n)."""
    S, n, k = E.shape
    L = block or max(8, int(math.sqrt(n)))
    B = -(-n // L)
    pad = B * L - n
    Ep = np.concatenate([E, np.ones((S, pad, k))], axis=1) if pad else E
    Ep = Ep.reshape(S, B, L, k)
    starts = np.empty((S, B, k))
    starts[:, 0] = v0
    if B > 1:
        T = np.broadcast_to(np.eye(k), (S, B - 1, k, k)).copy()
        El = Ep[:, :-1]
        Mb = M[:, None]
        for l in range(L):
            T = T @ Mb
            T *= El[:, :, l, None, :]
            T /= T.sum(axis=(2, 3), keepdims=True) + TINY
        cur = np.asarray(v0, dtype=np.float64)[:, None, :]
        for b in range(B - 1):
            cur = cur @ T[:, b]
            cur = cur / (cur.sum(-1, keepdims=True) + TINY)
            starts[:, b + 1] = cur[:, 0]
    V = np.empty((S, B, L, k))
    logc = np.empty((S, B, L))
    cur = starts
    for l in range(L):
        u = cur @ M
        u *= Ep[:, :, l]
        c = u.sum(-1)
        np.maximum(c, TINY, out=c)
        cur = u / c[..., None]
        V[:, :, l] = cur
        logc[:, :, l] = c
    np.log(logc, out=logc)
    return V.reshape(S, B * L, k)[:, :n], logc.reshape(S, -1)[:, :n]


def _filter_batch(y, P, mu, sigma2):
    """`_filter` for S parameter sets: P (S,k,k), mu and sigma2 (S,k) -> loglik (S,), F, E (S,n,k)."""
    d = y[None, :, None] - mu[:, None, :]
    logf = -0.5 * (LOG_2PI + np.log(sigma2)[:, None, :] + d * d / sigma2[:, None, :])
    m = logf.max(2)
    E = np.exp(logf - m[..., None])
    v0 = np.stack([steady_state(p) for p in P])
    F, logc = _scan_batch(E, P, v0)
    return m.sum(1) + logc.sum(1), F, E


def _smooth_batch(P, F, E):
    """`_smooth` for S parameter sets: G (S,n,k) and expected transition counts N (S,k,k)."""
    S, n, k = F.shape
    PT = np.swapaxes(P, 1, 2)
    W, _ = _scan_batch(E[:, ::-1], PT, np.ones((S, k)))
    W = W[:, ::-1]
    beta = np.empty_like(F)
    beta[:, -1] = 1.0
    beta[:, :-1] = W[:, 1:] @ PT
    G = F * beta
    G /= G.sum(-1, keepdims=True)
    Z = np.einsum("sti,sti->st", F[:, :-1] @ P, W[:, 1:])
    N = P * (np.swapaxes(F[:, :-1] / np.maximum(Z, TINY)[..., None], 1, 2) @ W[:, 1:])
    return G, N


# --- parameters --------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Shape:
    """What switches: k regimes; a mean per regime or one; a variance per regime or one."""
    k: int
    switching_mean: bool = False
    switching_variance: bool = True

    @property
    def n_means(self) -> int:
        return self.k if self.switching_mean else 1

    @property
    def n_variances(self) -> int:
        return self.k if self.switching_variance else 1


@dataclass(frozen=True)
class _Theta:
    P: np.ndarray         # (k, k) row-stochastic
    mu: np.ndarray        # (k,) (all equal without switching mean)
    sigma2: np.ndarray    # (k,) (all equal without switching variance)

    def sorted(self, shape: _Shape) -> "_Theta":
        """Regimes in a fixed order: by variance (0 = calmest); with one common variance, by mean."""
        key = self.sigma2 if shape.switching_variance else self.mu
        order = np.argsort(key, kind="stable")
        return _Theta(self.P[np.ix_(order, order)], self.mu[order], self.sigma2[order])


def param_names(k: int, switching_mean: bool = False, switching_variance: bool = True) -> list[str]:
    """statsmodels' names and order."""
    names = [f"p[{i}->{j}]" for j in range(k - 1) for i in range(k)]
    names += [f"const[{j}]" for j in range(k)] if switching_mean else ["const"]
    return names + ([f"sigma2[{j}]" for j in range(k)] if switching_variance else ["sigma2"])


def _to_vector(th: _Theta, shape: _Shape) -> np.ndarray:
    k = th.P.shape[0]
    p = [th.P[i, j] for j in range(k - 1) for i in range(k)]
    mu = list(th.mu) if shape.switching_mean else [th.mu[0]]
    s2 = list(th.sigma2) if shape.switching_variance else [th.sigma2[0]]
    return np.array(p + mu + s2)


def _from_vector(x: np.ndarray, shape: _Shape) -> _Theta:
    k = shape.k
    x = np.asarray(x, dtype=np.float64)
    P = np.empty((k, k))
    pos = 0
    for j in range(k - 1):
        P[:, j] = x[pos:pos + k]
        pos += k
    P[:, k - 1] = 1.0 - P[:, :k - 1].sum(1)
    nm = shape.n_means
    mu = x[pos:pos + nm] if shape.switching_mean else np.full(k, x[pos])
    pos += nm
    s2 = x[pos:pos + k].copy() if shape.switching_variance else np.full(k, x[pos])
    return _Theta(P, np.asarray(mu, dtype=np.float64), np.asarray(s2, dtype=np.float64))


def loglike(params, y, k: int, switching_mean: bool = False, switching_variance: bool = True) -> float:
    """Log-likelihood at statsmodels-ordered parameters (same value as statsmodels' `loglike`)."""
    th = _from_vector(np.asarray(params), _Shape(k, switching_mean, switching_variance))
    if (th.P < 0).any() or (th.sigma2 <= 0).any():
        return -np.inf
    return _filter(np.asarray(y, dtype=np.float64), th.P, th.mu, th.sigma2)[0]


# unconstrained coordinates for the polish: row logits (last = 0), means, log variances
def _pack(th: _Theta, shape: _Shape) -> np.ndarray:
    k = th.P.shape[0]
    P = np.maximum(th.P, 1e-12)
    logits = np.log(P[:, :k - 1]) - np.log(P[:, k - 1:])
    mu = th.mu if shape.switching_mean else th.mu[:1]
    s2 = th.sigma2 if shape.switching_variance else th.sigma2[:1]
    return np.concatenate([logits.ravel(), mu, np.log(s2)])


def _unpack(z: np.ndarray, shape: _Shape) -> _Theta:
    k = shape.k
    nl = k * (k - 1)
    logits = np.concatenate([z[:nl].reshape(k, k - 1), np.zeros((k, 1))], 1)
    logits -= logits.max(1, keepdims=True)
    P = np.exp(logits)
    P /= P.sum(1, keepdims=True)
    nm = shape.n_means
    mu = z[nl:nl + nm] if shape.switching_mean else np.full(k, z[nl])
    ls2 = z[nl + nm:nl + nm + shape.n_variances]
    s2 = np.exp(ls2) if shape.switching_variance else np.full(k, math.exp(ls2[0]))
    return _Theta(P, np.asarray(mu, dtype=np.float64), np.asarray(s2, dtype=np.float64))


# --- estimation --------------------------------------------------------------------------------

def _start(y: np.ndarray, shape: _Shape) -> _Theta:
    """Data-driven start: the k quantile groups of a rolling variance (switching variance) or of a
    rolling mean (switching mean, one variance), persistent chain."""
    k = shape.k
    n = y.shape[0]
    w = int(min(max(n // 50, 5), 200))
    cs1 = np.concatenate([[0.0], np.cumsum(y)])
    d = y - y.mean()
    cs = np.concatenate([[0.0], np.cumsum(d * d)])
    idx = np.arange(n)
    lo = np.clip(idx - w // 2, 0, n)
    hi = np.clip(idx + w // 2 + 1, 0, n)
    local = (cs[hi] - cs[lo]) / (hi - lo) if shape.switching_variance else (cs1[hi] - cs1[lo]) / (hi - lo)
    edges = np.quantile(local, np.linspace(0, 1, k + 1)[1:-1])
    group = np.searchsorted(edges, local, side="right")
    mu = np.array([y[group == j].mean() if (group == j).any() else y.mean() for j in range(k)]) \
        if shape.switching_mean else np.full(k, y.mean())
    resid2 = (y - mu[group]) ** 2
    if shape.switching_variance:
        sigma2 = np.array([np.mean(resid2[group == j]) if (group == j).any() else np.var(d) for j in range(k)])
    else:
        sigma2 = np.full(k, np.mean(resid2))
    sigma2 = np.maximum(sigma2, np.var(d) * 1e-3)
    stay = 1.0 - 1.0 / max(w, 10)
    P = np.full((k, k), (1.0 - stay) / (k - 1))
    np.fill_diagonal(P, stay)
    return _Theta(P, mu, sigma2)


def _random_start(y: np.ndarray, shape: _Shape, rng: np.random.Generator) -> _Theta:
    """A random start for the multistart (y standardised: variance 1): variances log-uniform in
    [0.02, 3], straddling the sample variance (or one common variance in [0.2, 1]), means at
    random quantiles of y (a common mean between the 30 % and 70 % quantiles: it is estimated
    together with the variances), a transition matrix with a random persistent diagonal. On
    statsmodels' Fed funds series half of these starts reach the global maximum (a quarter when
    the variances are drawn up to 5, far above the sample's)."""
    k = shape.k
    if shape.switching_variance:
        sigma2 = np.sort(np.exp(rng.uniform(math.log(0.02), math.log(3.0), k)))
    else:
        sigma2 = np.full(k, rng.uniform(0.2, 1.0))
    mu = np.sort(np.quantile(y, rng.uniform(0.05, 0.95, k))) if shape.switching_mean \
        else np.full(k, np.quantile(y, rng.uniform(0.3, 0.7)))
    stay = rng.uniform(0.5, 0.995, k)
    off = rng.dirichlet(np.ones(k - 1), size=k) * (1.0 - stay)[:, None]
    P = np.empty((k, k))
    for i in range(k):
        P[i, i] = stay[i]
        P[i, [j for j in range(k) if j != i]] = off[i]
    return _Theta(P, mu, sigma2)


def _em(y, th: _Theta, shape: _Shape, floor: float, max_iter: int, tol: float):
    """Baum–Welch from `th`: (theta, loglik, iterations, converged)."""
    llf_old = -np.inf
    it = 0
    for it in range(1, max_iter + 1):
        llf, F, E, _ = _filter(y, th.P, th.mu, th.sigma2)
        if abs(llf - llf_old) <= tol * (1.0 + abs(llf)):
            return th, llf, it, True
        llf_old = llf
        G, N = _smooth(th.P, F, E)
        P = N / np.maximum(N.sum(1, keepdims=True), TINY)
        nk = np.maximum(G.sum(0), TINY)
        if shape.switching_mean:
            mu = (G.T @ y) / nk
        else:
            prec = G / th.sigma2[None, :]
            mu = np.full(th.mu.shape, float(prec.sum(1) @ y / prec.sum()))
        d2 = (y[:, None] - mu[None, :]) ** 2
        if shape.switching_variance:
            sigma2 = np.maximum(np.einsum("tk,tk->k", G, d2) / nk, floor)
        else:
            sigma2 = np.full(th.sigma2.shape, max(float(np.einsum("tk,tk->", G, d2)) / y.shape[0], floor))
        th = _Theta(P, mu, sigma2)
    llf = _filter(y, th.P, th.mu, th.sigma2)[0]
    return th, llf, it, False


def _em_batch(y, thetas: list[_Theta], shape: _Shape, floor: float, max_iter: int, tol: float):
    """`_em` for several starts at once (a start stops changing when it has converged):
    [(theta, loglik, iterations, converged)] in the order of `thetas`."""
    S = len(thetas)
    P = np.stack([t.P for t in thetas])
    mu = np.stack([t.mu for t in thetas])
    sigma2 = np.stack([t.sigma2 for t in thetas])
    llf_old = np.full(S, -np.inf)
    llf = np.full(S, -np.inf)
    iters = np.zeros(S, int)
    done = np.zeros(S, bool)
    n = y.shape[0]
    for _ in range(max_iter):
        active = ~done
        llf_now, F, E = _filter_batch(y, P[active], mu[active], sigma2[active])
        llf[active] = llf_now
        iters[active] += 1
        conv = np.abs(llf_now - llf_old[active]) <= tol * (1.0 + np.abs(llf_now))
        idx = np.flatnonzero(active)
        done[idx[conv]] = True
        llf_old[active] = llf_now
        if done.all():
            break
        keep = ~conv
        idx, F, E = idx[keep], F[keep], E[keep]
        Pa, mua, s2a = P[idx], mu[idx], sigma2[idx]
        G, N = _smooth_batch(Pa, F, E)
        P[idx] = N / np.maximum(N.sum(-1, keepdims=True), TINY)
        nk = np.maximum(G.sum(1), TINY)
        if shape.switching_mean:
            mu[idx] = np.einsum("stk,t->sk", G, y) / nk
        else:
            prec = G / s2a[:, None, :]
            common = np.einsum("st,t->s", prec.sum(-1), y) / prec.sum(axis=(1, 2))
            mu[idx] = common[:, None]
        d2 = (y[None, :, None] - mu[idx][:, None, :]) ** 2
        if shape.switching_variance:
            sigma2[idx] = np.maximum(np.einsum("stk,stk->sk", G, d2) / nk, floor)
        else:
            sigma2[idx] = np.maximum(np.einsum("stk,stk->s", G, d2) / n, floor)[:, None]
    else:
        last = ~done
        if last.any():                     # the likelihood at the last update
            llf[last] = _filter_batch(y, P[last], mu[last], sigma2[last])[0]
    return [(_Theta(P[s].copy(), mu[s].copy(), sigma2[s].copy()), float(llf[s]), int(iters[s]), bool(done[s]))
            for s in range(S)]


def _loglik_grad(z: np.ndarray, y: np.ndarray, shape: _Shape):
    """Log-likelihood and its exact gradient in the unconstrained coordinates of `_pack`.

    Fisher's identity: the score is the expected complete-data score under the smoothed
    probabilities, so one filter + one smoother pass gives the whole gradient (the initial
    steady-state term's derivative is taken numerically: it only involves the k×k matrix)."""
    k = shape.k
    th = _unpack(z, shape)
    llf, F, E, _ = _filter(y, th.P, th.mu, th.sigma2)
    G, N = _smooth(th.P, F, E)
    d = y[:, None] - th.mu[None, :]
    Gd = G * d
    g_mu = Gd.sum(0) / th.sigma2
    g_ls2 = 0.5 * (np.einsum("tk,tk->k", Gd, d) / th.sigma2 - G.sum(0))
    g_logit = (N - th.P * N.sum(1, keepdims=True))[:, :k - 1]
    nl = k * (k - 1)

    def initial(a):
        t = _unpack(np.concatenate([a, z[nl:]]), shape)
        return float(G[0] @ np.log(np.maximum(steady_state(t.P) @ t.P, TINY)))
    a = z[:nl]
    h = 1e-6
    g_init = np.array([(initial(a + h * e) - initial(a - h * e)) / (2 * h) for e in np.eye(nl)])
    grad = np.concatenate([g_logit.ravel() + g_init, g_mu if shape.switching_mean else [g_mu.sum()],
                           g_ls2 if shape.switching_variance else [g_ls2.sum()]])
    return llf, grad


def _natural_jacobian(z: np.ndarray, shape: _Shape) -> np.ndarray:
    """d(statsmodels parameters)/d(unconstrained coordinates), by central differences."""
    m = z.shape[0]
    J = np.empty((m, m))
    for i in range(m):
        h = 1e-6 * max(1.0, abs(z[i]))
        e = np.zeros(m)
        e[i] = h
        J[:, i] = (_to_vector(_unpack(z + e, shape), shape) - _to_vector(_unpack(z - e, shape), shape)) / (2 * h)
    return J


@dataclass(frozen=True, eq=False)
class MarkovResult(VolatilityResult):
    """A Markov-switching fit; regimes sorted by volatility (0 = calmest), or by mean when the
    variance is common to the regimes."""
    k_regimes: int = 2
    switching_mean: bool = False
    switching_variance: bool = True
    transition: np.ndarray | None = None      # (k,k) row-stochastic, P[i,j] = Pr(j | i)
    mu: np.ndarray | None = None
    sigma2: np.ndarray | None = None          # per period, fraction²
    returns: Returns | None = None
    filtered: np.ndarray | None = None        # (n,k) Pr(s_t | y_1..y_t)
    smoothed: np.ndarray | None = None        # (n,k) Pr(s_t | all y)

    def __post_init__(self):
        freeze_arrays(self, ("transition", "mu", "sigma2", "filtered", "smoothed"))

    @property
    def regimes(self) -> list[dict]:
        return list(self.stats["regimes"])

    def stat_lines(self) -> list[str]:
        lines = [f"regime {r['regime']}: sigma_daily {r['sigma_daily']:.4g}, mean {r['mean']:.4g}, expected "
                 f"duration {r['expected_duration_days']:.3g} days, share of time {r['share_of_time']:.3f}"
                 for r in self.regimes]
        ms = (self.stats or {}).get("multistart")
        if ms:
            spread = ms.get("loglik_spread")
            lines.append(f"multistart: best log-likelihood {ms['best_loglik']:.6g} from start {ms['best_start']} "
                         f"({ms['best_origin']}) of {ms['starts']}; spread of the starts' log-likelihoods "
                         + (f"{spread:.4g}" if spread is not None else "—") + f" ({ms['ranked_on']})")
        return lines

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["regimes"] = out["stats"]["regimes"]
        return out

    def probabilities_frame(self) -> pd.DataFrame:
        """Tidy: timestamp, regime, filtered, smoothed (one row per period and regime)."""
        r = self.returns
        n, k = self.smoothed.shape
        return pd.DataFrame({
            "timestamp": np.repeat(r.timestamps.to_numpy(), k),
            "regime": np.tile(np.arange(k), n),
            "filtered": self.filtered.ravel(), "smoothed": self.smoothed.ravel()})

    def regime_path(self) -> pd.DataFrame:
        """Per period: timestamp, return, most probable regime (smoothed and filtered), and the
        regime's daily sigma."""
        r = self.returns
        s = self.smoothed.argmax(1)
        sig_daily = np.sqrt(self.sigma2 * r.periods_per_day)
        return pd.DataFrame({"timestamp": r.timestamps, "return": np.asarray(r.values),
                             "regime": s.astype(np.int8), "regime_filtered": self.filtered.argmax(1).astype(np.int8),
                             "sigma_daily": sig_daily[s]})

    def filter(self, y: np.ndarray) -> tuple[float, np.ndarray]:
        """(loglik, filtered probabilities) of other returns (same period) at these parameters."""
        llf, F, _, _ = _filter(np.asarray(y, dtype=np.float64), np.asarray(self.transition),
                               np.asarray(self.mu), np.asarray(self.sigma2))
        return llf, F


def _regime_summary(th: _Theta, G: np.ndarray, period_ns: int) -> list[dict]:
    per_day = NS_PER_DAY / period_ns
    share = G.mean(0)
    stationary = steady_state(th.P)
    out = []
    for j in range(th.P.shape[0]):
        stay = th.P[j, j]
        dur = 1.0 / (1.0 - stay) if stay < 1 else float("inf")
        sig = math.sqrt(th.sigma2[j])
        out.append({"regime": j, "mean": float(th.mu[j]), "sigma": sig,
                    "sigma_daily": sig * math.sqrt(per_day),
                    "sigma_annualized": sig * math.sqrt(per_day * DAYS_PER_YEAR),
                    "expected_duration_periods": dur, "expected_duration_days": dur / per_day,
                    "share_of_time": float(share[j]), "share_stationary": float(stationary[j]),
                    "share_most_probable": float(np.mean(G.argmax(1) == j))})
    return out


def _score_hessian(z, y, shape: _Shape):
    """(loglik, score, Hessian) in unconstrained coordinates; the Hessian by central differences
    of the exact score (2m filter + smoother passes)."""
    f, g = _loglik_grad(z, y, shape)
    m = z.shape[0]
    H = np.empty((m, m))
    for i in range(m):
        h = 1e-5 * max(1.0, abs(z[i]))
        e = np.zeros(m)
        e[i] = h
        H[:, i] = (_loglik_grad(z + e, y, shape)[1]
                   - _loglik_grad(z - e, y, shape)[1]) / (2 * h)
    return f, g, 0.5 * (H + H.T)


def _maximise(z, y, shape: _Shape, floor, newton_iter=4, tol=1e-7):
    """From EM's solution to the maximum: Newton–Raphson (exact score, numerical Hessian, step
    halving) while the Hessian is negative definite, which converges in 2–3 steps when the model
    is identified; otherwise BFGS started from the (eigenvalue-floored) inverse Hessian, one score
    evaluation per iteration, for flat ridges (a transition probability going to 0, a redundant
    regime). Returns (z, loglik, score, Hessian at z, converged, message, details)."""
    n = y.shape[0]
    f, g, H = _score_hessian(z, y, shape)
    details: dict[str, Any] = {"newton_iterations": 0}
    for it in range(1, newton_iter + 1):
        try:
            L = np.linalg.cholesky(-H)
        except np.linalg.LinAlgError:
            break
        step = np.linalg.solve(L.T, np.linalg.solve(L, g))
        decrement = 0.5 * float(g @ step)
        details["newton_iterations"] = it - 1
        if decrement < tol:
            return z, f, g, H, True, f"Newton decrement {decrement:.1e} < {tol:g}", details
        t = 1.0
        for _ in range(40):
            zn = z + t * step
            th = _unpack(zn, shape)
            if (th.sigma2 >= floor).all() and _filter(y, th.P, th.mu, th.sigma2)[0] > f:
                break
            t *= 0.5
        else:
            break
        z = zn
        f, g, H = _score_hessian(z, y, shape)
    details["newton_iterations"] = it

    def nll(x):
        t = _unpack(x, shape)
        if (t.sigma2 < floor).any() or not np.all(np.isfinite(x)):
            return 1e300, np.zeros_like(x)
        fx, gx = _loglik_grad(x, y, shape)
        return -fx, -gx
    w, V = np.linalg.eigh(-H)
    w = np.maximum(np.abs(w), 1e-5 * max(np.abs(w).max(), 1e-300))
    inv0 = (V / w) @ V.T
    gtol = 1e-5 * math.sqrt(n)
    with np.errstate(all="ignore"):
        res = optimize.minimize(nll, z, jac=True, method="BFGS",
                                options={"hess_inv0": 0.5 * (inv0 + inv0.T), "gtol": gtol, "maxiter": 500})
    if -res.fun >= f:
        z = res.x
    f, g, H = _score_hessian(z, y, shape)
    grad_max = float(np.max(np.abs(g)))
    details.update({"bfgs_iterations": int(res.nit), "bfgs_message": str(res.message)})
    converged = bool(res.success) or grad_max < gtol
    return z, f, g, H, converged, f"BFGS: {res.message}", details


def _standardise(returns: Returns) -> tuple[np.ndarray, float, float]:
    y_raw = np.asarray(returns.values, dtype=np.float64)
    loc, scale = float(y_raw.mean()), float(y_raw.std())
    return (y_raw - loc) / scale, loc, scale


def _boundary_warnings(th: _Theta, names: list[str], floor_hit: bool) -> tuple[list[str], list[str]]:
    """(active bounds, warnings): a transition probability at 0 or 1 (an absorbing or unreachable
    regime), a variance on its floor."""
    k = th.P.shape[0]
    active, warn = [], []
    for i in range(k):
        for j in range(k):
            p = float(th.P[i, j])
            edge = 0.0 if p < BOUND_TOL else 1.0 if p > 1.0 - BOUND_TOL else None
            if edge is None:
                continue
            active.append(f"p[{i}->{j}] = {edge:g}")
            what = ("regime {i} is never left (absorbing)" if edge == 1.0 and i == j else
                    "regime {i} never moves to regime {j}" if edge == 0.0 else "regime {i} always moves to {j}")
            warn.append(f"p[{i}->{j}] = {p:.3g} is on the boundary of [0, 1] ({what.format(i=i, j=j)}): "
                        f"the likelihood is maximised on the edge of the parameter space, so the delta-method "
                        f"standard errors there are not reliable; fewer regimes may suit the data")
    if floor_hit:
        active.append("sigma2 at the floor")
        warn.append("a regime's variance sits on the floor (1e-6 × the sample variance): many identical "
                    "returns (flat bars?) make the likelihood unbounded there")
    return active, warn


def _fit_markov(data, *, k_regimes: int = 2, switching_mean: bool = False, switching_variance: bool = True,
                starts: int = DEFAULT_STARTS, seed: int = 0, max_iter: int = 100, tol: float = 1e-8,
                freq: str | None = None, symbol: str | None = None, bar: str | None = None,
                gaps: str = "error", period: str | None = None) -> MarkovResult:
    """Fit a k-regime (2 or 3) Markov-switching model by maximum likelihood, from several starts.

    Starts: the data-driven one (quantile groups of a rolling variance, or of a rolling mean when
    only the mean switches) plus `starts` random ones (seeded by `seed`). Each runs EM (Baum–Welch);
    on up to 5,000 returns every start runs to convergence (at most `max_iter` iterations, relative
    log-likelihood change below `tol`), on longer series the first `START_ITER` iterations rank
    them and the best two continue. The best is polished by Newton–Raphson on the exact score
    (Fisher's identity) with its numerical Hessian, BFGS on flat ridges. The report lists every
    start's log-likelihood; `stats["multistart"]` has the best and the spread. The returns are
    standardised for the fit (numerics) and the parameters converted back, so `params` are in the
    units of the returns as given and `loglikelihood` is of those returns.
    """
    if k_regimes not in (2, 3):
        raise ValueError("k_regimes must be 2 or 3")
    if not (switching_mean or switching_variance):
        raise ValueError("nothing switches: ask for switching_mean, switching_variance or both")
    if int(starts) < 0:
        raise ValueError(f"starts must be >= 0, got {starts}")
    shape = _Shape(int(k_regimes), bool(switching_mean), bool(switching_variance))
    returns, notes = prepare_returns(data, freq=freq, symbol=symbol, bar=bar, gaps=gaps, period=period)
    names = param_names(shape.k, shape.switching_mean, shape.switching_variance)
    returns.require(MIN_OBS_PER_PARAM * len(names), f"a {shape.k}-regime Markov-switching model")
    t0 = time.perf_counter()
    y, loc, scale = _standardise(returns)
    n = y.shape[0]
    shift = n * math.log(scale)                 # loglik of the returns = loglik of y − n·ln(scale)
    floor = VAR_FLOOR
    warnings: list[str] = list(notes)

    # 1. every start: EM (to convergence on short series, else START_ITER iterations to rank them)
    rng = np.random.default_rng(seed)
    thetas = [("data-driven", _start(y, shape))] + [("random", _random_start(y, shape, rng))
                                                    for _ in range(int(starts))]
    first_iter = max_iter if n <= FULL_EM_OBS else min(max_iter, START_ITER)
    with np.errstate(all="ignore"):
        stage = _em_batch(y, [th0 for _, th0 in thetas], shape, floor, first_iter, tol)
        runs = [{"start": i, "origin": origin, "theta": th, "llf": llf, "iterations": it, "em_converged": ok}
                for i, ((origin, _), (th, llf, it, ok)) in enumerate(zip(thetas, stage))]
        ranked = sorted(runs, key=lambda r: -r["llf"] if np.isfinite(r["llf"]) else np.inf)
        # 2. the best two continue EM to convergence (nothing to do when they converged already)
        go_on = [r for r in ranked[:2] if not r["em_converged"] and r["iterations"] < max_iter]
        if go_on:
            more = _em_batch(y, [r["theta"] for r in go_on], shape, floor,
                             max_iter - min(r["iterations"] for r in go_on), tol)
            for r, (th, llf, it, ok) in zip(go_on, more):
                r.update(theta=th, llf=llf, iterations=r["iterations"] + it, em_converged=ok, continued=True)
        best = max(ranked[:2], key=lambda r: r["llf"])
    # 3. polish the best (sorted first, so its Hessian is usually the final one)
    th = best["theta"].sorted(shape)
    with np.errstate(all="ignore"):
        z, llf, g, H, converged, message, details = _maximise(_pack(th, shape), y, shape, floor)
    grad_max = float(np.max(np.abs(g)))
    if not converged:
        warnings.append(f"not converged: {message} (largest score component {grad_max:.3g})")

    # regimes in a fixed order; the polish rarely reorders them, if it did the Hessian (in
    # coordinates that depend on the order) is recomputed at the sorted parameters
    th = _unpack(z, shape)
    sorted_th = th.sorted(shape)
    if not np.array_equal(sorted_th.sigma2, th.sigma2) or not np.array_equal(sorted_th.mu, th.mu):
        th = sorted_th
        z = _pack(th, shape)
        with np.errstate(all="ignore"):
            llf, g, H = _score_hessian(z, y, shape)
    llf, F, E, _ = _filter(y, th.P, th.mu, th.sigma2)
    G, _ = _smooth(th.P, F, E)

    # standard errors: inverse observed information in unconstrained coordinates, delta method to
    # statsmodels' parameters, then to the returns' units (y_raw = loc + scale·y)
    nat = _Theta(th.P, loc + scale * th.mu, th.sigma2 * scale ** 2)
    x_nat = _to_vector(nat, shape)
    try:
        J = _natural_jacobian(z, shape)
        cov = J @ np.linalg.inv(-H) @ J.T
        d = np.diag(cov)
        ok = np.isfinite(d) & (d > 0)
        se_std = np.where(ok, np.sqrt(np.where(ok, d, 0.0)), np.nan)
        if not ok.all() or np.any(np.linalg.eigvalsh(-H) <= 0):
            warnings.append("the Hessian is not negative definite at the optimum: standard errors "
                            "are unreliable (NaN where undefined); too many regimes for the data?")
    except np.linalg.LinAlgError:
        se_std = np.full(x_nat.shape, np.nan)
        warnings.append("singular Hessian: standard errors undefined")
    npt = shape.k * (shape.k - 1)
    nm = shape.n_means
    conv = np.ones_like(se_std)
    conv[npt:npt + nm] = scale
    conv[npt + nm:] = scale ** 2
    se = se_std * conv
    active, bound_warn = _boundary_warnings(th, names, bool((th.sigma2 <= floor * 1.0001).any()))
    warnings += bound_warn
    warnings += few_observations(n, FEW_OBS_PER_PARAM * len(names), f"{len(names)} Markov-switching parameters",
                                 f"fewer than {FEW_OBS_PER_PARAM} returns per parameter")

    llf_raw = llf - shift
    start_llfs = np.array([r["llf"] - shift for r in runs])
    start_rows = tuple({"start": r["start"], "origin": r["origin"], "loglik": float(r["llf"] - shift),
                        "em_iterations": int(r["iterations"]), "em_converged": bool(r["em_converged"]),
                        "continued": bool(r.get("continued", False)), "best": r is best} for r in runs)
    finite = start_llfs[np.isfinite(start_llfs)]
    multistart = {"starts": len(runs), "best_start": int(best["start"]), "best_origin": best["origin"],
                  "best_loglik": float(llf_raw),
                  "loglik_spread": float(finite.max() - finite.min()) if finite.size else None,
                  "worst_start_loglik": float(finite.min()) if finite.size else None,
                  "ranked_on": "converged EM log-likelihoods" if first_iter == max_iter
                  else f"log-likelihoods after {first_iter} EM iterations (the best two then converged)"}
    report = OptimizerReport(
        method=f"EM (Baum-Welch) from {len(runs)} start(s), then Newton-Raphson (BFGS on flat ridges)",
        loss="mle", status="converged" if converged else "not converged", message=message,
        success=bool(converged), converged=bool(converged),
        iterations=int(details.get("newton_iterations", 0)) + int(details.get("bfgs_iterations", 0)),
        active_bounds=tuple(active), starts=start_rows,
        settings={"em_iterations": int(best["iterations"]), "em_converged": bool(best["em_converged"]),
                  "em_loglik": float(best["llf"] - shift), **details, "gradient_max_abs": grad_max,
                  "seconds": time.perf_counter() - t0})
    stats = {"regimes": _regime_summary(nat, G, returns.period_ns), "transition_matrix": nat.P.tolist(),
             "transition_note": "row i, column j: Pr(regime j next period | regime i now)",
             "order_note": "regimes sorted by variance (0 = calmest)" if shape.switching_variance
             else "one common variance: regimes sorted by mean (0 = lowest)",
             "multistart": multistart}
    return _markov_result(returns, names, x_nat, se, nat, F, G, llf_raw, report, "fitted", stats,
                          tuple(dict.fromkeys(warnings)), shape, freq)


def _markov_result(returns, names, x_nat, se, nat, F, G, llf_raw, report, status, stats, warnings, shape,
                   freq) -> MarkovResult:
    return MarkovResult(
        model="markov", params=dict(zip(names, map(float, x_nat))), std_errors=dict(zip(names, map(float, se))),
        report=report, loglikelihood=llf_raw, n_obs=returns.n, status=status,
        units={n: ("probability" if n.startswith("p[") else "return per period" if n.startswith("const")
                   else "return² per period") for n in names},
        stats=stats,
        settings={"k_regimes": shape.k, "switching_mean": shape.switching_mean,
                  "switching_variance": shape.switching_variance, "freq": freq},
        warnings=warnings, data=data_info(returns.source, returns.symbol, returns.t_ns, returns.period_ns),
        validation=returns.report, k_regimes=shape.k, switching_mean=shape.switching_mean,
        switching_variance=shape.switching_variance, transition=nat.P, mu=nat.mu, sigma2=nat.sigma2,
        returns=returns, filtered=F, smoothed=G)


def _fix_markov(params: Mapping[str, float], data, *, k_regimes: int = 2, switching_mean: bool = False,
                switching_variance: bool = True, starts: int = DEFAULT_STARTS, seed: int = 0,
                max_iter: int = 100, tol: float = 1e-8, freq: str | None = None, symbol: str | None = None,
                bar: str | None = None, gaps: str = "error", period: str | None = None) -> MarkovResult:
    """A MarkovResult at hand-set parameters (statsmodels' names, in the returns' units): the
    filtered and smoothed probabilities and the log-likelihood there, regimes in the order given.
    The optimizer settings (starts, seed, max_iter, tol) are unused."""
    if k_regimes not in (2, 3):
        raise ValueError("k_regimes must be 2 or 3")
    shape = _Shape(int(k_regimes), bool(switching_mean), bool(switching_variance))
    names = param_names(shape.k, shape.switching_mean, shape.switching_variance)
    missing = [n for n in names if n not in params]
    unknown = [n for n in params if n not in names]
    if missing or unknown:
        raise ValueError(f"a {shape.k}-regime Markov-switching model takes parameters {names}"
                         + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    x = np.array([float(params[n]) for n in names])
    nat = _from_vector(x, shape)
    if (nat.P < -1e-12).any() or (nat.P > 1 + 1e-12).any():
        raise ValueError("transition probabilities must be in [0, 1] and each row's given ones sum to at most 1")
    if not (nat.sigma2 > 0).all():
        raise ValueError("variances must be > 0")
    returns, notes = prepare_returns(data, freq=freq, symbol=symbol, bar=bar, gaps=gaps, period=period)
    returns.require(2, f"a {shape.k}-regime Markov-switching model")
    y, loc, scale = _standardise(returns)
    P = np.clip(nat.P, 0.0, 1.0)
    with np.errstate(all="ignore"):
        llf, F, E, _ = _filter(y, P, (nat.mu - loc) / scale, nat.sigma2 / scale ** 2)
        G, _ = _smooth(P, F, E)
    llf_raw = llf - y.shape[0] * math.log(scale)
    stats = {"regimes": _regime_summary(nat, G, returns.period_ns), "transition_matrix": nat.P.tolist(),
             "transition_note": "row i, column j: Pr(regime j next period | regime i now)",
             "order_note": "regimes in the order given"}
    return _markov_result(returns, names, x, np.full(len(names), np.nan), nat, F, G, llf_raw,
                          OptimizerReport.fixed(), "fixed", stats, tuple(notes), shape, freq)


# --- regimes of fills, without look-ahead ------------------------------------------------------

def regime_labels(fills: pd.DataFrame, bars, result: MarkovResult, *,
                  return_probabilities: bool = False):
    """The regime of each fill: argmax of the *filtered* probability at its arrival.

    The filter runs on `bars` (same symbol and sampling as the fit) with the result's parameters;
    a fill arriving at time a gets the one-step prediction P' ξ_{t|t} from the last return known
    at or before a (the bar closed by then), i.e. only information available at arrival. Fills
    before the second bar or after the last bar's period, or of another symbol, get -1.
    Returns a Series "regime" (int8) aligned with `fills`, or with `return_probabilities` a frame
    with the label and Pr(regime j) columns.
    """
    if not isinstance(result, MarkovResult):
        raise TypeError("regime_labels needs a MarkovResult (VolatilityCalibrator('markov').fit)")
    symbol = result.returns.symbol
    series = bar_series(bars, symbol=symbol, gaps="skip")
    period = result.settings.get("freq")
    ret = returns_of_bars(series, None if period == _freq_label(series.bar_ns) else period)
    if ret.period_ns != result.returns.period_ns:
        raise DataError(f"the bars give {_freq_label(ret.period_ns)} returns but the regimes were "
                        f"fitted on {_freq_label(result.returns.period_ns)} returns", file=series.source)
    _, F = result.filter(ret.values)
    pred = F @ np.asarray(result.transition)           # Pr(s_{t+1} | y_1..y_t)
    known = ret.known_at_ns
    arrival = _time_ns(fills, "fills", np.arange(1, len(fills) + 1))
    i = np.searchsorted(known, arrival, side="right") - 1
    ok = (i >= 0) & (arrival < known[-1] + ret.period_ns) if known.shape[0] else np.zeros(len(fills), bool)
    if symbol is not None and "symbol" in fills.columns:
        ok &= (fills["symbol"].astype("string") == symbol).fillna(False).to_numpy(bool)
    k = result.k_regimes
    probs = np.full((len(fills), k), np.nan)
    probs[ok] = pred[i[ok]]
    labels = np.full(len(fills), -1, dtype=np.int8)
    labels[ok] = probs[ok].argmax(1)
    lab = pd.Series(labels, index=fills.index, name="regime")
    if not return_probabilities:
        return lab
    out = pd.DataFrame({"regime": lab})
    for j in range(k):
        out[f"p_regime_{j}"] = probs[:, j]
    return out


MARKOV_MODEL = VolatilityModel(
    name="markov", label="Markov-switching variance",
    formula="r_t | s_t=j ~ N(μ_j, σ²_j), Pr(s_t=j | s_{t-1}=i) = p[i->j] (μ and/or σ² switch)",
    params=(Param("p[i->i]", 0.98, 0.0, 1.0, "probability", "probability of staying in regime i"),
            Param("const", 0.0, -1.0, 1.0, "return per period", "mean return (per regime with switching mean)"),
            Param("sigma2[j]", 1e-4, 0.0, 1.0, "return² per period",
                  "variance of regime j (one 'sigma2' without switching variance)")),
    options={"k_regimes": (2, 3), "switching_mean": (False, True), "switching_variance": (True, False),
             "freq": None, "gaps": GAP_POLICIES},
    reference="Hamilton 1989; Kim 1994; statsmodels MarkovRegression",
    fit_fn=_fit_markov, fix_fn=_fix_markov,
    option_help={"k_regimes": "number of regimes",
                 "switching_mean": "a mean return per regime",
                 "switching_variance": "a variance per regime (off: one common variance; a mean must switch)",
                 "starts": "random EM starts besides the data-driven one (multistart)",
                 "seed": "seed of the random starts",
                 "max_iter": "EM iterations at most", "tol": "EM stops at this relative log-likelihood change",
                 "freq": "return interval, a multiple of the bar (default: the bar)"})

REGIME_NAMES = {2: ("calm", "stressed"), 3: ("calm", "elevated", "stressed")}


# --- regimes ---------------------------------------------------------------------------------

def with_regimes(fills: pd.DataFrame, bars, *, k_regimes: int = 2, freq: str | None = None
                 ) -> tuple[pd.DataFrame, dict]:
    """The fills that have a volatility regime, with a 'regime' column ("calm", "stressed"; with
    3 regimes "calm", "elevated", "stressed"), and what was done: per symbol the Markov fit
    (regimes' daily sigma, expected durations, convergence) and the fills per regime; the fills
    without a label (before the bars' second return, after their last period, or of a symbol the
    bars lack) are dropped and counted.

    Regimes are fitted per symbol on `bars` (a Dataset, frame or path) by the Markov model and each
    fill gets the regime of highest *filtered* one-step-ahead probability at its arrival
    (`regime_labels`): no look-ahead in the states.
    """
    if k_regimes not in REGIME_NAMES:
        raise ValueError(f"k_regimes must be 2 or 3, got {k_regimes}")
    names = REGIME_NAMES[k_regimes]
    frame, source, _, _ = _as_dataset(bars, "bars")
    n = len(fills)
    labels = np.full(n, -1, dtype=np.int64)
    per_symbol = []
    warn = []
    if "symbol" in fills.columns and "symbol" in frame.columns:
        fill_sym = fills["symbol"].astype("string")
        bar_syms = set(map(str, frame["symbol"].astype("string").dropna().unique()))
        symbols = sorted(set(map(str, fill_sym.dropna().unique())))
        missing = [s for s in symbols if s not in bar_syms]
        if missing:
            warn.append(f"no bars for symbol(s) {', '.join(missing)}: their fills have no regime")
        symbols = [s for s in symbols if s in bar_syms]
    else:
        symbols = [None]
    for sym in symbols:
        res = MARKOV_MODEL.fit(bars, k_regimes=k_regimes, symbol=sym, gaps="skip", freq=freq)
        lab = regime_labels(fills, bars, res).to_numpy(np.int64)
        mine = lab >= 0
        labels[mine] = lab[mine]
        if not res.converged:
            warn.append(f"the {k_regimes}-regime Markov fit of {sym or source} did not converge "
                        f"({res.report.message}): its labels are unreliable")
        regimes = [{"name": names[r["regime"]], **{key: r[key] for key in
                    ("sigma_daily", "expected_duration_days", "share_of_time")}} for r in res.regimes]
        per_symbol.append({"symbol": sym, "converged": bool(res.converged), "message": res.report.message,
                           "loglikelihood": res.loglikelihood, "return_period": res.data.get("frequency"),
                           "regimes": regimes,
                           "fills": {names[j]: int((lab == j).sum()) for j in range(k_regimes)},
                           "warnings": list(res.warnings)})
    keep = labels >= 0
    dropped = []
    if not keep.all():
        bad = np.flatnonzero(~keep)
        dropped.append(DropRecord("no regime label (a fill before the bars' second return, after "
                                  "their last period, or of a symbol without bars)", "regime",
                                  int(bad.size), (bad[:5] + 1).tolist()).to_dict())
    if not keep.any():
        raise DataError("no fill falls inside the bars: no regime can be assigned (check that the bars "
                        "cover the fills' dates and symbols)", file=source, column="timestamp")
    out = fills.loc[keep].reset_index(drop=True)
    out["regime"] = pd.array(np.array(names, dtype=object)[labels[keep]], dtype="string")
    info = {"k_regimes": k_regimes, "names": list(names), "bars": source,
            "method": "Markov-switching variance per symbol (multistart EM + Newton); each fill labelled by the "
                      "most probable regime of the filtered one-step-ahead probabilities at arrival",
            "symbols": per_symbol, "fills": {nm: int((labels == j).sum()) for j, nm in enumerate(names)},
            "dropped": dropped, "warnings": warn}
    return out, info
