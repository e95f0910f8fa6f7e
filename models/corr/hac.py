"""Long-run variances for the standard errors of the correlation area (none assumes independent rows).

Every correlation here is a ratio of sums, ρ = C / √(A·B) with C = Σ c_k, A = Σ a_k, B = Σ b_k over
intervals, blocks or periods k. Its delta-method influence per k is

    ψ_k = c_k / √(A·B) − ρ/2 · (a_k / A + b_k / B)       (Σ ψ_k = 0),

and Var(ρ̂) is the long-run variance of Σ ψ_k: Newey–West (Bartlett kernel) over k, so volatility
clustering and serially dependent products do not shrink the error bar the way an i.i.d. formula
(1 − ρ²)/√n would. The lag is Newey & West's (1994) plug-in rule of thumb ⌊4 (n/100)^(2/9)⌋ unless given.
"""
from __future__ import annotations

import math

import numpy as np


def nw_lags(n: int) -> int:
    return int(math.floor(4.0 * (max(n, 1) / 100.0) ** (2.0 / 9.0)))


def long_run_sum_var(psi: np.ndarray, lags: int | None = None) -> float:
    """Newey–West variance of Σ_k ψ_k (ψ centred by the caller or mean-zero by construction)."""
    psi = np.asarray(psi, dtype=np.float64)
    n = psi.shape[0]
    if n == 0:
        return float("nan")
    L = nw_lags(n) if lags is None else int(lags)
    v = float(psi @ psi)
    for lag in range(1, min(L, n - 1) + 1):
        v += 2.0 * (1.0 - lag / (L + 1.0)) * float(psi[lag:] @ psi[:-lag])
    return max(v, 0.0)


def long_run_cov(scores: np.ndarray, lags: int | None = None) -> np.ndarray:
    """Newey–West long-run covariance of Σ_t s_t for scores (T, p) (the 'meat' of a sandwich)."""
    s = np.asarray(scores, dtype=np.float64)
    T = s.shape[0]
    L = nw_lags(T) if lags is None else int(lags)
    S = s.T @ s
    for lag in range(1, min(L, T - 1) + 1):
        G = s[lag:].T @ s[:-lag]
        S += (1.0 - lag / (L + 1.0)) * (G + G.T)
    return S


def ratio_corr_se(c: np.ndarray, a: np.ndarray, b: np.ndarray, lags: int | None = None) -> tuple[float, float]:
    """(ρ, HAC standard error) of ρ = Σc / √(Σa · Σb) from per-k contributions."""
    C, A, B = float(np.sum(c)), float(np.sum(a)), float(np.sum(b))
    if not (A > 0 and B > 0):
        return float("nan"), float("nan")
    rho = C / math.sqrt(A * B)
    psi = np.asarray(c) / math.sqrt(A * B) - 0.5 * rho * (np.asarray(a) / A + np.asarray(b) / B)
    return rho, math.sqrt(long_run_sum_var(psi, lags))


def fisher_band(rho: float, se: float, z: float) -> tuple[float, float]:
    """A confidence interval for a correlation through Fisher's z (stays inside (−1, 1)); the
    delta-method s.e. of ρ maps to s.e./(1 − ρ²) on the z scale."""
    if not (math.isfinite(rho) and math.isfinite(se)) or abs(rho) >= 1:
        return float("nan"), float("nan")
    zr = math.atanh(rho)
    zse = se / (1.0 - rho * rho)
    return math.tanh(zr - z * zse), math.tanh(zr + z * zse)
