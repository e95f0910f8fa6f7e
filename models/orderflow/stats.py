"""The small statistics every order-flow estimator shares: OLS with Newey–West (HAC) standard
errors, log–log power-law fits, and the moving-block bootstrap.

Why HAC: the rows these regressions see are consecutive time windows (or lags of one series) of
one market, so their errors are serially dependent; i.i.d. standard errors would be too small.
Newey–West with the Bartlett kernel and the plug-in lag floor(4·(n/100)^(2/9)) (Newey & West 1994),
never below the overlap of overlapping windows minus one; the covariance carries the small-sample
factor n/(n−k) (statsmodels: `cov_type="HAC"` with `use_correction=True`; the tests compare).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_OBS = 30          # fewer rows than this: the fit is made, with a warning


def nw_lags(n: int, min_lags: int = 0) -> int:
    """Newey–West plug-in lag floor(4·(n/100)^(2/9)), at least `min_lags`, at most n − 1."""
    if n <= 1:
        return 0
    return int(min(max(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)), min_lags), n - 1))


@dataclass(frozen=True)
class OLSFit:
    """y = X·coef + u by least squares; `se` Newey–West HAC with `lags`; r2 uncentred-free
    (centred on mean y when X has a constant column 0)."""
    coef: np.ndarray
    se: np.ndarray
    cov: np.ndarray
    r2: float
    n: int
    lags: int
    resid_sd: float

    @property
    def tstat(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.coef / self.se


def hac_cov(X: np.ndarray, u: np.ndarray, lags: int, xtx_inv: np.ndarray) -> np.ndarray:
    """Sandwich (X'X)^-1 S (X'X)^-1 with Bartlett-weighted S = Γ0 + Σ w_l (Γ_l + Γ_l')."""
    xu = X * u[:, None]
    S = xu.T @ xu
    for lag in range(1, lags + 1):
        w = 1.0 - lag / (lags + 1.0)
        gamma = xu[lag:].T @ xu[:-lag]
        S += w * (gamma + gamma.T)
    return xtx_inv @ S @ xtx_inv


def ols_hac(y, X, *, lags: int | None = None, min_lags: int = 0, constant: bool = True) -> OLSFit:
    """OLS of y on X (a constant column is prepended with `constant`) with HAC standard errors.

    Rows with a NaN anywhere are dropped. `lags` None: the Newey–West plug-in (>= `min_lags`)."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X[:, None]
    if constant:
        X = np.column_stack([np.ones(len(y)), X])
    ok = np.isfinite(y) & np.all(np.isfinite(X), axis=1)
    y, X = y[ok], X[ok]
    n, k = X.shape
    nan = np.full(k, np.nan)
    if n <= k:
        return OLSFit(nan, nan.copy(), np.full((k, k), np.nan), math.nan, n, 0, math.nan)
    xtx = X.T @ X
    try:
        xtx_inv = np.linalg.inv(xtx)
    except np.linalg.LinAlgError:
        xtx_inv = np.linalg.pinv(xtx)
    coef = xtx_inv @ (X.T @ y)
    u = y - X @ coef
    L = nw_lags(n, min_lags) if lags is None else int(min(max(lags, 0), n - 1))
    cov = hac_cov(X, u, L, xtx_inv) * (n / (n - k))
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    ss_res = float(u @ u)
    centre = y.mean() if constant else 0.0
    ss_tot = float(((y - centre) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return OLSFit(coef, se, cov, r2, n, L, math.sqrt(ss_res / (n - k)))


def hac_mean(x, *, lags: int | None = None) -> tuple[float, float, int]:
    """Mean of x and its Newey–West standard error (NaNs dropped): (mean, se, n)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    n = x.size
    if n < 2:
        return (float(x.mean()) if n else math.nan), math.nan, n
    fit = ols_hac(x, np.zeros((n, 0)), lags=lags)
    return float(fit.coef[0]), float(fit.se[0]), n


@dataclass(frozen=True)
class PowerLaw:
    """y = amplitude · x^(−exponent), fitted as log y = log amplitude − exponent · log x."""
    amplitude: float
    exponent: float
    n_points: int
    r2: float
    x_range: tuple[float, float]

    def __call__(self, x) -> np.ndarray:
        return self.amplitude * np.asarray(x, dtype=np.float64) ** (-self.exponent)


def log_bins(lags: np.ndarray, per_decade: int = 10) -> np.ndarray:
    """Indices of `lags` (positive, ascending) thinned to ~`per_decade` per decade, so a
    log–log fit is not dominated by the many long lags."""
    lags = np.asarray(lags, dtype=np.float64)
    if lags.size == 0:
        return np.zeros(0, dtype=np.int64)
    grid = np.unique(np.round(np.log10(lags) * per_decade))
    first = np.searchsorted(np.round(np.log10(lags) * per_decade), grid, side="left")
    return np.unique(first)


def fit_power_law(x, y, *, per_decade: int | None = 10) -> PowerLaw:
    """Least squares in log–log over the points with x > 0 and y > 0 (thinned to log-spaced
    points when `per_decade`). NaN amplitude/exponent with fewer than 3 usable points."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    if per_decade and x.size:
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        keep = log_bins(x, per_decade)
        x, y = x[keep], y[keep]
    if x.size < 3:
        return PowerLaw(math.nan, math.nan, int(x.size), math.nan,
                        (float(x.min()) if x.size else math.nan, float(x.max()) if x.size else math.nan))
    lx, ly = np.log(x), np.log(y)
    A = np.column_stack([np.ones_like(lx), lx])
    coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
    resid = ly - A @ coef
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float(resid @ resid) / ss_tot if ss_tot > 0 else math.nan
    return PowerLaw(float(np.exp(coef[0])), float(-coef[1]), int(x.size), r2, (float(x[0]), float(x[-1])))


def block_bootstrap_weights(n_blocks: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_blocks) multinomial counts: how often each block is drawn in each resample
    (the moving-block bootstrap over non-overlapping blocks, Künsch 1989 / Carlstein 1986)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_blocks, size=(n_boot, n_blocks))
    counts = np.zeros((n_boot, n_blocks))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n_blocks), draws.ravel()), 1.0)
    return counts
