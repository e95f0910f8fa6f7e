"""Volatility surfaces: raw SVI per expiry, the SSVI surface, and their static-arbitrage report.

The room where a prepared option chain (`execal.models.surface.options.Chain`) becomes a surface. Same house
shape as the impact engine: a registered model *spec* (`SVI`, `SSVI`), a `SurfaceCalibrator`
holding the settings, and `fit()` / `fix()` returning an immutable `SurfaceResult` with the
parameters, the RMSE in vol points and the optimizer's own report for every slice (never
swallowed), the arbitrage report, tidy frames for figures, and `to_config()`.

Models (k = ln(K/F), w = σ_imp²·T total implied variance):
- raw SVI (Gatheral 2004): w(k) = a + b·(ρ·(k − m) + √((k − m)² + σ²)), one parameter set per expiry.
- SSVI (Gatheral & Jacquier 2014): w(k, θ) = θ/2·(1 + ρφk + √((φk + ρ)² + 1 − ρ²)) with θ_t the ATM
  total variance of each expiry and the power-law φ(θ) = η/(θ^γ·(1 + θ)^(1−γ)) (their eq. 4.5).

Raw SVI is fitted by Zeliade's quasi-explicit reduction (Zeliade Systems 2009, "Quasi-explicit
calibration of Gatheral's SVI model"): for fixed (m, σ), with y = (k − m)/σ, w = a + d·y + c·√(y²+1)
is linear in (a, c = bσ, d = ρbσ), and the admissible set 0 ≤ |d| ≤ c, c + |d| ≤ 2σ (b ≥ 0, |ρ| ≤ 1,
and Lee's moment bound on the wing slopes, b(1 + |ρ|) ≤ 2: steeper wings have g < 0 far out, as
g → 1/4 − (b(1+|ρ|))²/16; Zeliade use the weaker Rogers–Tehranchi 4) is a diamond, so the inner
problem is a 3-variable least-squares
problem solved exactly (interior, 4 edges, 4 vertices) in closed form. The outer 2-D problem in
(m, log σ) starts from the best points of a grid and runs a Levenberg–Marquardt on the reduced
residuals (variable projection); every slice, grid point and start is one row of the same numpy
batch, so 12 expiries cost about as much as one. Negative minimum variance a + bσ√(1−ρ²) < 0 is
penalised in the outer problem. Robust fallback: scipy `least_squares` (trf, soft-L1 loss) on the
five raw parameters, used when the quasi-explicit fit fails or has too few strikes for the grid.

The objective is the weighted sum of squared *vol* residuals, linearised in total variance:
σ_model − σ_mid ≈ (w_model − w_mid)/(2σ_mid·T), so the total-variance weights are
u/(2σ_mid·T)² with u the user weights (uniform, vega, or inverse bid–ask spread; normalised to
mean 1 per slice). RMSE is reported exactly, in vol points (1 vol point = 0.01 of vol).

Arbitrage (static): butterfly — Durrleman's g(k) = (1 − k·w'/(2w))² − w'²/4·(1/w + 1/4) + w''/2 ≥ 0
on a fine k-grid for every slice (g < 0 means a negative risk-neutral density); calendar — w(k, T)
non-decreasing in T at every grid k between consecutive slices; for SSVI, Gatheral–Jacquier's
sufficient conditions (Theorem 4.1 calendar, Theorem 4.2 butterfly). `no_arbitrage=True` refits,
in increasing T, every SVI slice that breaks g ≥ 0 on the grid, or lies below the previous slice
where it is quoted, under those constraints (SLSQP with an analytic constraint Jacobian; see
`_svi_constrained`). Calendar is forced only over the slice's quoted range, where both smiles are
pinned by quotes: forcing extrapolated wings would drag the quotes along, so what the wings do
beyond the quotes is reported (with `in_quoted_range`), not forced. For a surface free of static
arbitrage everywhere use SSVI with `no_arbitrage=True`: the power-law conditions
η(1 + |ρ|) ≤ 2, γ ≤ ½ and non-decreasing θ make it so (GJ 2014, Theorems 4.1–4.2 and the remark
after Corollary 4.1).
"""
from __future__ import annotations

import datetime as _dt

import math
import time
import warnings
import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize

from execal.models.core import __version__
from execal.models.core.jsonable import clean as _clean
from execal.models.core.params import Param
from execal.models.core.report import OptimizerReport
from execal.models.core.result import normal_conf_int, report_line
from execal.models.data.schema import DataError, ValidationReport
from execal.models.surface.options import Chain, prepare_chain

VOL_PTS = 100.0                  # 1 vol point = 0.01 of (annualised, fractional) vol
WEIGHTS = ("uniform", "vega", "spread")
WEIGHT_DESCRIPTIONS = {
    "uniform": "every quote counts the same",
    "vega": "vega of the quote (relative to the slice's largest): the near-the-money quotes that "
            "carry most price information count most",
    "spread": "1 / (ask IV − bid IV): tight quotes count more; quotes without a two-sided IV "
              "get the slice's median weight",
}
MIN_POINTS_SVI = 5               # five parameters
MIN_POINTS_PER_PARAM = 2         # fewer quotes per fitted parameter than this: a "few quotes" warning
GRID_POINTS = 2001               # k-grid of the arbitrage checks
G_TOL = 1e-9                     # g and calendar tolerance (rounding of the formulas)
_TINY = 1e-12

# --- formulas ---------------------------------------------------------------------------------


def svi_total_variance(k, a, b, rho, m, sigma) -> np.ndarray:
    """Raw SVI total variance w(k) = a + b·(ρ(k − m) + √((k − m)² + σ²)) (broadcasts)."""
    x = np.asarray(k, dtype=np.float64) - m
    return a + b * (rho * x + np.sqrt(x * x + sigma * sigma))


def svi_derivatives(k, a, b, rho, m, sigma) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(w, w', w'') of raw SVI in k."""
    x = np.asarray(k, dtype=np.float64) - m
    root = np.sqrt(x * x + sigma * sigma)
    w = a + b * (rho * x + root)
    w1 = b * (rho + x / root)
    w2 = b * sigma * sigma / root ** 3
    return w, w1, w2


def durrleman_g(k, w, w1, w2) -> np.ndarray:
    """Durrleman's density factor g(k); the risk-neutral density is ≥ 0 where g ≥ 0 (and w > 0)."""
    k = np.asarray(k, dtype=np.float64)
    with np.errstate(all="ignore"):
        g = (1.0 - k * w1 / (2.0 * w)) ** 2 - 0.25 * w1 * w1 * (1.0 / w + 0.25) + 0.5 * w2
    # a non-positive total variance is an arbitrage in itself: report it as g = -inf there
    return np.where(w > 0, g, -np.inf)


def svi_g_and_jacobian(k, a, b, rho, m, sigma, w_min: float = 0.0):
    """Durrleman's g of raw SVI on k and its Jacobian in (a, b, rho, m, sigma), analytically.

    Total variances below `w_min` are clipped there (g stays finite and smooth at infeasible
    points, which constrained optimizers visit). Returns (g, dg (k.size, 5), w, dw (k.size, 5)).
    """
    k = np.asarray(k, dtype=np.float64)
    x = k - m
    R = np.sqrt(x * x + sigma * sigma)
    R3 = R ** 3
    w = a + b * (rho * x + R)
    w1 = b * (rho + x / R)
    w2 = b * sigma * sigma / R3
    one = np.ones_like(k)
    zero = np.zeros_like(k)
    dw = np.stack([one, rho * x + R, b * x, b * (-rho - x / R), b * sigma / R], axis=1)
    dw1 = np.stack([zero, rho + x / R, b * one, -b * sigma * sigma / R3, -b * x * sigma / R3], axis=1)
    dw2 = np.stack([zero, sigma * sigma / R3, zero, 3.0 * b * sigma * sigma * x / R ** 5,
                    b * sigma * (2.0 / R3 - 3.0 * sigma * sigma / R ** 5)], axis=1)
    clipped = w < w_min
    wc = np.where(clipped, w_min, w) if w_min > 0 else w
    with np.errstate(all="ignore"):
        u = 1.0 - k * w1 / (2.0 * wc)
        g = u * u - 0.25 * w1 * w1 * (1.0 / wc + 0.25) + 0.5 * w2
        dg_dw = np.where(clipped, 0.0, u * k * w1 / (wc * wc) + 0.25 * w1 * w1 / (wc * wc))
        dg_dw1 = -u * k / wc - 0.5 * w1 * (1.0 / wc + 0.25)
    dg = dg_dw[:, None] * dw + dg_dw1[:, None] * dw1 + 0.5 * dw2
    return g, dg, w, dw


def ssvi_phi(theta, eta, gamma) -> np.ndarray:
    """Power-law φ(θ) = η / (θ^γ·(1 + θ)^(1 − γ)) (Gatheral & Jacquier 2014, eq. 4.5)."""
    theta = np.asarray(theta, dtype=np.float64)
    return eta / (theta ** gamma * (1.0 + theta) ** (1.0 - gamma))


def ssvi_total_variance(k, theta, rho, eta, gamma) -> np.ndarray:
    """SSVI w(k, θ) = θ/2·(1 + ρφk + √((φk + ρ)² + 1 − ρ²))."""
    phi = ssvi_phi(theta, eta, gamma)
    pk = phi * np.asarray(k, dtype=np.float64)
    return 0.5 * theta * (1.0 + rho * pk + np.sqrt((pk + rho) ** 2 + 1.0 - rho * rho))


def ssvi_to_raw_svi(theta, rho, eta, gamma) -> dict[str, float]:
    """The SSVI slice at θ as raw SVI (GJ 2014, Lemma 3.2 with φ = φ(θ))."""
    phi = float(ssvi_phi(np.asarray(theta, dtype=np.float64), eta, gamma))
    theta = float(theta)
    return {"a": 0.5 * theta * (1.0 - rho * rho), "b": 0.5 * theta * phi, "rho": float(rho),
            "m": -rho / phi, "sigma": math.sqrt(1.0 - rho * rho) / phi}


SVI_PARAMS = ("a", "b", "rho", "m", "sigma")
SSVI_PARAMS = ("rho", "eta", "gamma")


def _svi_vec(params: Mapping[str, float] | Sequence[float]) -> np.ndarray:
    if isinstance(params, Mapping):
        missing = [p for p in SVI_PARAMS if p not in params]
        if missing:
            raise ValueError(f"raw SVI needs parameter(s) {', '.join(missing)}")
        return np.array([float(params[p]) for p in SVI_PARAMS])
    vec = np.asarray(params, dtype=np.float64).reshape(-1)
    if vec.size != 5:
        raise ValueError("raw SVI has five parameters (a, b, rho, m, sigma)")
    return vec


# --- arbitrage checks ------------------------------------------------------------------------------


def default_k_grid(k_data=None, points: int = GRID_POINTS) -> np.ndarray:
    """k from min(−1.5, 1.5·min k) to max(1.5, 1.5·max k): the quoted range and well beyond it
    (an arbitrage in the extrapolated wings still breaks any density or price taken from them)."""
    lo, hi = -1.5, 1.5
    if k_data is not None and np.size(k_data):
        kd = np.asarray(k_data, dtype=np.float64)
        lo, hi = min(lo, 1.5 * float(np.min(kd))), max(hi, 1.5 * float(np.max(kd)))
    return np.linspace(lo, hi, points)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of every run of True."""
    if not mask.any():
        return []
    d = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1))


def butterfly_report(params, k_grid=None, k_data=None) -> dict:
    """Durrleman's g on a grid for one raw SVI slice: where and by how much g < 0.

    Returns {ok, min_g, k_at_min_g, min_w, violations: [{k_from, k_to, min_g, k_at_min_g,
    in_quoted_range}], grid: {k_from, k_to, points}}. `in_quoted_range` says whether the interval
    overlaps the quoted strikes (`k_data`), i.e. whether the quotes themselves carry the arbitrage.
    """
    a, b, rho, m, sigma = _svi_vec(params)
    k = default_k_grid(k_data) if k_grid is None else np.asarray(k_grid, dtype=np.float64)
    w, w1, w2 = svi_derivatives(k, a, b, rho, m, sigma)
    g = durrleman_g(k, w, w1, w2)
    bad = g < -G_TOL
    kd = None if k_data is None or not np.size(k_data) else (float(np.min(k_data)), float(np.max(k_data)))
    violations = []
    for i, j in _runs(bad):
        seg = g[i:j + 1]
        at = i + int(np.argmin(seg))
        violations.append({"k_from": float(k[i]), "k_to": float(k[j]), "min_g": _f(g[at]),
                           "k_at_min_g": float(k[at]),
                           "in_quoted_range": None if kd is None else bool(k[i] <= kd[1] and k[j] >= kd[0])})
    at = int(np.argmin(g))
    return {"ok": not violations, "min_g": _f(g[at]), "k_at_min_g": float(k[at]),
            "min_w": _f(np.min(w)), "violations": violations,
            "grid": {"k_from": float(k[0]), "k_to": float(k[-1]), "points": int(k.size)}}


def calendar_report(expiries: Sequence[str], T_years: Sequence[float], w_grid: np.ndarray,
                    k_grid: np.ndarray, quoted_ranges: Sequence[tuple[float, float]] | None = None) -> list[dict]:
    """Calendar arbitrage between consecutive expiries: where w(k, T_i) > w(k, T_{i+1}).

    `w_grid` is (slices, grid points). One entry per violated interval: {expiry_short,
    expiry_long, k_from, k_to, max_excess_w, k_at_max, in_quoted_range}; `in_quoted_range` says
    whether the interval overlaps the longer expiry's quoted k-range (`quoted_ranges`, per slice).
    """
    out = []
    order = np.argsort(np.asarray(T_years, dtype=np.float64), kind="stable")
    for i0, i1 in zip(order[:-1], order[1:]):
        excess = w_grid[i0] - w_grid[i1]
        for i, j in _runs(excess > G_TOL * np.maximum(1.0, np.abs(w_grid[i1]))):
            seg = excess[i:j + 1]
            at = i + int(np.argmax(seg))
            inside = None
            if quoted_ranges is not None:
                q_lo, q_hi = quoted_ranges[i1]
                inside = bool(k_grid[i] <= q_hi and k_grid[j] >= q_lo)
            out.append({"expiry_short": str(expiries[i0]), "expiry_long": str(expiries[i1]),
                        "k_from": float(k_grid[i]), "k_to": float(k_grid[j]),
                        "max_excess_w": _f(seg.max()), "k_at_max": float(k_grid[at]),
                        "in_quoted_range": inside})
    return out


def ssvi_conditions(rho: float, eta: float, gamma: float, thetas: Sequence[float]) -> dict:
    """Gatheral–Jacquier's sufficient conditions for an SSVI surface, with margins.

    Calendar (Thm 4.1): θ non-decreasing in T, and 0 ≤ ∂θ(θφ) ≤ (1 + √(1−ρ²))/ρ²·φ; for the
    power law ∂θ(θφ) = φ(1 − γ)/(1 + θ), so this holds for 0 ≤ γ ≤ 1.
    Butterfly (Thm 4.2): θφ(1 + |ρ|) < 4 and θφ²(1 + |ρ|) ≤ 4 for every slice.
    Power-law shortcut (GJ remark after Cor. 4.1): η(1 + |ρ|) ≤ 2 with 0 < γ ≤ ½ implies both.
    A positive `margin` is by how much the condition holds, a negative one by how much it fails.
    """
    th = np.asarray(thetas, dtype=np.float64)
    phi = ssvi_phi(th, eta, gamma)
    ar = abs(rho)
    cal_deriv = phi * (1.0 - gamma) / (1.0 + th)
    cal_upper = (1.0 + math.sqrt(max(1.0 - rho * rho, 0.0))) / max(rho * rho, _TINY) * phi
    b1 = th * phi * (1.0 + ar)
    b2 = th * phi * phi * (1.0 + ar)
    dtheta = np.diff(th)
    conds = {
        "theta_non_decreasing": {"ok": bool((dtheta >= -G_TOL).all()),
                                 "margin": _f(dtheta.min()) if dtheta.size else None,
                                 "where": [int(i) + 1 for i in np.flatnonzero(dtheta < -G_TOL)]},
        "calendar_dthetaphi_nonneg": {"ok": bool((cal_deriv >= 0).all()), "margin": _f(cal_deriv.min())},
        "calendar_dthetaphi_upper": {"ok": bool((cal_deriv <= cal_upper).all()),
                                     "margin": _f((cal_upper - cal_deriv).min())},
        "butterfly_theta_phi": {"ok": bool((b1 < 4.0).all()), "margin": _f((4.0 - b1).min()),
                                "where": [int(i) for i in np.flatnonzero(b1 >= 4.0)]},
        "butterfly_theta_phi2": {"ok": bool((b2 <= 4.0).all()), "margin": _f((4.0 - b2).min()),
                                 "where": [int(i) for i in np.flatnonzero(b2 > 4.0)]},
        "power_law_eta": {"ok": bool(eta * (1.0 + ar) <= 2.0 + G_TOL and 0.0 < gamma <= 0.5 + G_TOL),
                          "margin": _f(2.0 - eta * (1.0 + ar)),
                          "note": "eta·(1+|rho|) ≤ 2 and 0 < gamma ≤ 1/2: sufficient for no butterfly"},
    }
    conds["free_of_static_arbitrage"] = bool(
        conds["theta_non_decreasing"]["ok"] and conds["calendar_dthetaphi_nonneg"]["ok"]
        and conds["calendar_dthetaphi_upper"]["ok"] and conds["butterfly_theta_phi"]["ok"]
        and conds["butterfly_theta_phi2"]["ok"])
    return conds


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


# --- quasi-explicit raw SVI (Zeliade), batched over slices, grid points and starts ----------------

# The four vertices of the (c, d) diamond |d| ≤ c, c + |d| ≤ 2σ, in units of σ.
_VERTICES = ((0.0, 0.0), (1.0, 1.0), (2.0, 0.0), (1.0, -1.0))
# The four edges: d = s·c + off·σ, with q = z + s·y the regressor of c, and c's range in σ units.
_EDGES = ((1.0, 0.0, 0.0, 1.0), (-1.0, 0.0, 0.0, 1.0), (-1.0, 2.0, 1.0, 2.0), (1.0, -2.0, 1.0, 2.0))


def _inner(k, v, om, m, sig):
    """Exact inner solve of the quasi-explicit reduction for a batch of problems.

    k, v, om: (P, n) log-moneyness, total variance, total-variance weights (0 = padding);
    m, sig: (P,). Returns theta (P, 3) = (a, c, d) and the weighted residuals (P, n).
    """
    y = (k - m[:, None]) / sig[:, None]
    z = np.sqrt(y * y + 1.0)
    oy, oz = om * y, om * z
    S1 = om.sum(1)
    Sy, Sz = oy.sum(1), oz.sum(1)
    Syy, Syz, Szz = (oy * y).sum(1), (oy * z).sum(1), (oz * z).sum(1)
    Sv, Syv, Szv = (om * v).sum(1), (oy * v).sum(1), (oz * v).sum(1)

    def objective(a, c, d):   # up to the constant Σω·v², which every candidate shares
        return (a * a * S1 + c * c * Szz + d * d * Syy + 2.0 * (a * c * Sz + a * d * Sy + c * d * Syz)
                - 2.0 * (a * Sv + c * Szv + d * Syv))

    tol = 1e-10 * sig
    best_f = np.full(m.shape, np.inf)
    best = np.zeros((m.shape[0], 3))

    def consider(a, c, d, feasible):
        nonlocal best_f
        f = objective(a, c, d)
        take = feasible & np.isfinite(f) & (f < best_f)
        best_f = np.where(take, f, best_f)
        best[:, 0] = np.where(take, a, best[:, 0])
        best[:, 1] = np.where(take, c, best[:, 1])
        best[:, 2] = np.where(take, d, best[:, 2])

    for cu, du in _VERTICES:
        c, d = cu * sig, du * sig
        consider((Sv - c * Sz - d * Sy) / S1, c, d, np.ones(m.shape, dtype=bool))
    with np.errstate(all="ignore"):
        for s, off, c_lo, c_hi in _EDGES:
            o = off * sig
            Sq, Sqq = Sz + s * Sy, Szz + 2.0 * s * Syz + Syy
            Sv_, Sqv = Sv - o * Sy, Szv + s * Syv - o * (Syz + s * Syy)
            det = S1 * Sqq - Sq * Sq
            c = (S1 * Sqv - Sq * Sv_) / det
            a = (Sv_ - Sq * c) / S1
            ok = (det > _TINY * S1 * Sqq) & (c >= c_lo * sig - tol) & (c <= c_hi * sig + tol)
            consider(a, c, s * c + o, ok)
        # interior: the 3×3 normal equations by the adjugate (no LAPACK call per problem)
        m00, m01, m02, m11, m12, m22 = S1, Sz, Sy, Szz, Syz, Syy
        A00 = m11 * m22 - m12 * m12
        A01 = m02 * m12 - m01 * m22
        A02 = m01 * m12 - m02 * m11
        A11 = m00 * m22 - m02 * m02
        A12 = m01 * m02 - m00 * m12
        A22 = m00 * m11 - m01 * m01
        det = m00 * A00 + m01 * A01 + m02 * A02
        a = (A00 * Sv + A01 * Szv + A02 * Syv) / det
        c = (A01 * Sv + A11 * Szv + A12 * Syv) / det
        d = (A02 * Sv + A12 * Szv + A22 * Syv) / det
        scale = np.abs(m00 * m11 * m22) + _TINY
        inside = (np.abs(det) > 1e-13 * scale) & (np.abs(d) <= c + tol) & (c + np.abs(d) <= 2.0 * sig + tol)
    # the interior optimum, when admissible, is the constrained optimum (convex problem): take it
    # outright rather than by comparing objectives that cancel to rounding noise on exact data
    best[:, 0] = np.where(inside, a, best[:, 0])
    best[:, 1] = np.where(inside, c, best[:, 1])
    best[:, 2] = np.where(inside, d, best[:, 2])
    resid = np.sqrt(om) * (best[:, 0:1] + best[:, 1:2] * z + best[:, 2:3] * y - v)
    return best, resid


def _reduced(k, v, om, x, pen_scale):
    """Residual vector of the reduced (variable projection) problem at x = (m, ln σ)."""
    m, sig = x[:, 0], np.exp(x[:, 1])
    theta, resid = _inner(k, v, om, m, sig)
    a, c, d = theta[:, 0], theta[:, 1], theta[:, 2]
    min_var = a + np.sqrt(np.maximum(c * c - d * d, 0.0))
    penalty = pen_scale * np.minimum(min_var, 0.0)
    return theta, np.concatenate([resid, penalty[:, None]], axis=1)


def _theta_to_raw(theta, m, sig) -> np.ndarray:
    a, c, d = theta[..., 0], theta[..., 1], theta[..., 2]
    b = c / sig
    with np.errstate(all="ignore"):
        rho = np.where(c > 0, d / np.where(c > 0, c, 1.0), 0.0)
    return np.stack([a, b, np.clip(rho, -1.0, 1.0), m, sig], axis=-1)


@dataclass(frozen=True)
class _QEReport:
    status: int
    message: str
    success: bool
    iterations: int
    nfev: int
    cost: float
    grid_points: int
    at_bound: tuple = ()
    starts: tuple = ()


_LM_MESSAGES = {0: "maximum number of iterations reached",
                1: "gradient below tolerance",
                2: "relative reduction of the cost below tolerance",
                3: "no step in (m, ln sigma) reduces the cost (step below tolerance)",
                4: "residuals at rounding level: exact fit"}
_EXACT_VOL = 1e-10               # RMS vol residual below which a fit is exact to rounding


def _svi_quasi_explicit(k, v, om, *, m_grid: int = 15, sigma_grid: int = 12, starts: int = 3,
                        max_iter: int = 200, tol: float = 1e-10):
    """Quasi-explicit raw SVI for S slices at once. k, v, om: (S, n) padded with om = 0.

    Returns raw parameters (S, 5) and one `_QEReport` per slice.
    """
    S, n = k.shape
    has = om > 0
    k_lo = np.where(has, k, np.inf).min(1)
    k_hi = np.where(has, k, -np.inf).max(1)
    span = np.maximum(k_hi - k_lo, 1e-6)
    # the grid: m across and a quarter beyond the quoted range, σ log-spaced over three decades
    mu = np.linspace(-0.25, 1.25, m_grid)
    su = np.geomspace(1e-3, 2.0, sigma_grid)
    gm = (k_lo[:, None] + span[:, None] * mu[None, :])[:, :, None] * np.ones((1, 1, sigma_grid))
    gs = (span[:, None] * su[None, :])[:, None, :] * np.ones((1, m_grid, 1))
    G = m_grid * sigma_grid
    gm, gs = gm.reshape(S * G), gs.reshape(S * G)
    rep = np.repeat(np.arange(S), G)
    pen_scale = 10.0 * np.sqrt(om.sum(1))
    _, r = _reduced(k[rep], v[rep], om[rep], np.stack([gm, np.log(gs)], axis=1), pen_scale[rep])
    cost_grid = 0.5 * np.einsum("pn,pn->p", r, r).reshape(S, G)
    # several starts per slice: the best grid points that are not neighbours of a better one
    order = np.argsort(cost_grid, axis=1, kind="stable")
    picks = []
    for s in range(S):
        chosen = []
        for g in order[s]:
            im, isg = divmod(int(g), sigma_grid)
            if all(abs(im - jm) > 1 or abs(isg - js) > 1 for jm, js in chosen):
                chosen.append((im, isg))
            if len(chosen) == starts:
                break
        picks.append([s * G + im * sigma_grid + isg for im, isg in chosen])
    start_idx = np.array([p for pk in picks for p in pk])
    owner = rep[start_idx]
    x = np.stack([gm[start_idx], np.log(gs[start_idx])], axis=1)
    B = x.shape[0]
    kk, vv, oo, ps = k[owner], v[owner], om[owner], pen_scale[owner]
    # bounds of the outer problem: m within a span of the quotes, σ from 1e-4 to 10 spans (a
    # vanishing σ is a V-shaped smile the data cannot tell from a very small one)
    lo = np.stack([k_lo[owner] - span[owner], np.log(1e-4 * span[owner])], axis=1)
    hi = np.stack([k_hi[owner] + span[owner], np.log(10.0 * span[owner])], axis=1)
    n_obs = np.maximum((oo > 0).sum(1), 1)
    theta, R = _reduced(kk, vv, oo, x, ps)
    cost = 0.5 * np.einsum("pn,pn->p", R, R)
    lam = np.full(B, 1e-3)
    status = np.full(B, -1)
    iters = np.zeros(B, dtype=int)
    nfev = np.ones(B, dtype=int)
    held = np.zeros((B, 2), dtype=bool)
    # residuals ≈ √u·(vol error): below 1e-10 of vol on average the fit is exact to rounding
    exact = np.sqrt(2.0 * cost / n_obs) < _EXACT_VOL
    status[exact] = 4
    active = np.flatnonzero(~exact)
    for it in range(max_iter):
        if active.size == 0:
            break
        na = active.size
        xa, Ra, ca = x[active], R[active], cost[active]
        # forward differences, stepping inwards at an upper bound
        h = 1e-7 * np.stack([np.exp(xa[:, 1]), np.ones(na)], axis=1)
        h = np.where(xa + h > hi[active], -h, h)
        xp = np.concatenate([xa + np.stack([h[:, 0], np.zeros(na)], axis=1),
                             xa + np.stack([np.zeros(na), h[:, 1]], axis=1)])
        two = np.concatenate([active, active])
        _, Rp = _reduced(kk[two], vv[two], oo[two], xp, ps[two])
        J = np.stack([(Rp[:na] - Ra) / h[:, 0:1], (Rp[na:] - Ra) / h[:, 1:2]], axis=2)   # (B, n+1, 2)
        g = np.einsum("bni,bn->bi", J, Ra)
        H = np.einsum("bni,bnj->bij", J, J)
        dH = np.maximum(np.stack([H[:, 0, 0], H[:, 1, 1]], axis=1), _TINY)
        # a variable at a bound whose gradient points outward is held there (projected LM)
        hold = ((xa <= lo[active] + 1e-12) & (g > 0)) | ((xa >= hi[active] - 1e-12) & (g < 0))
        gf = np.where(hold, 0.0, g)
        gnorm = np.max(np.abs(gf) / np.sqrt(dH * np.maximum(2.0 * ca, _TINY)[:, None]), axis=1)
        la = lam[active]
        A = H.copy()
        A[:, 0, 0] += la * dH[:, 0]
        A[:, 1, 1] += la * dH[:, 1]
        A[:, 0, 1] = np.where(hold.any(1), 0.0, A[:, 0, 1])
        A[:, 1, 0] = A[:, 0, 1]
        det = A[:, 0, 0] * A[:, 1, 1] - A[:, 0, 1] * A[:, 1, 0]
        with np.errstate(all="ignore"):
            step = -np.stack([(A[:, 1, 1] * gf[:, 0] - A[:, 0, 1] * gf[:, 1]) / det,
                              (A[:, 0, 0] * gf[:, 1] - A[:, 1, 0] * gf[:, 0]) / det], axis=1)
        step = np.where(np.isfinite(step) & ~hold, step, 0.0)
        step[:, 1] = np.clip(step[:, 1], -2.0, 2.0)          # σ changes by at most e² a step
        xt = np.clip(xa + step, lo[active], hi[active])
        step = xt - xa
        theta_t, Rt = _reduced(kk[active], vv[active], oo[active], xt, ps[active])
        ct = 0.5 * np.einsum("pn,pn->p", Rt, Rt)
        nfev[active] += 3
        iters[active] += 1
        better = np.isfinite(ct) & (ct < ca)
        acc = active[better]
        x[acc], R[acc], cost[acc], theta[acc] = xt[better], Rt[better], ct[better], theta_t[better]
        held[active] = hold
        lam[active] = np.where(better, np.maximum(la / 3.0, 1e-12), la * 4.0)
        rel = np.where(better, (ca - ct) / np.maximum(ca, _TINY), 0.0)
        small_step = np.abs(step).max(1) < tol * (tol + np.abs(xa).max(1))
        stalled = ~better & (lam[active] > 1e12)          # no step of any length reduces the cost
        done_status = np.where(gnorm < tol, 1, np.where(better & (rel < tol), 2,
                                                       np.where((small_step | stalled) & ~better, 3, -1)))
        done_status = np.where(np.sqrt(2.0 * cost[active] / n_obs[active]) < _EXACT_VOL, 4, done_status)
        finished = done_status >= 0
        status[active[finished]] = done_status[finished]
        active = active[~finished]
    status[status < 0] = 0
    # pick each slice's best start
    params = np.empty((S, 5))
    reports = []
    for s in range(S):
        mine = np.flatnonzero(owner == s)
        best = mine[np.argmin(cost[mine])]
        params[s] = _theta_to_raw(theta[best], x[best, 0], np.exp(x[best, 1]))
        st = int(status[best])
        at_bound = []
        for j, name in enumerate(("m", "sigma")):
            if x[best, j] <= lo[best, j] + 1e-12:
                at_bound.append(f"{name} at lower bound {lo[best, j] if j == 0 else np.exp(lo[best, j]):g}")
            elif x[best, j] >= hi[best, j] - 1e-12:
                at_bound.append(f"{name} at upper bound {hi[best, j] if j == 0 else np.exp(hi[best, j]):g}")
        reports.append(_QEReport(status=st, message=_LM_MESSAGES[st], success=st > 0,
                                 iterations=int(iters[mine].sum()), nfev=int(G + nfev[mine].sum()),
                                 cost=float(cost[best]), grid_points=G, at_bound=tuple(at_bound),
                                 starts=tuple({"m0": float(gm[start_idx[i]]), "sigma0": float(gs[start_idx[i]]),
                                               "cost": float(cost[i]), "status": int(status[i]),
                                               "iterations": int(iters[i])} for i in mine)))
    return params, reports


# --- slices and weights ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Slice:
    expiry: pd.Timestamp
    T: float
    forward: float
    forward_source: str
    k: np.ndarray
    iv: np.ndarray           # mid IV
    iv_bid: np.ndarray
    iv_ask: np.ndarray
    u: np.ndarray            # user weights on squared vol residuals, mean 1

    @property
    def w(self) -> np.ndarray:
        return self.iv * self.iv * self.T

    @property
    def omega(self) -> np.ndarray:
        """Total-variance weights: vol residual ≈ Δw / (2σT)."""
        return self.u / (2.0 * self.iv * self.T) ** 2


def _slices(chain, weights: str) -> tuple[list[_Slice], list[str]]:
    notes: list[str] = []
    pts = chain.points.sort_values(["T_years", "k"], kind="stable")
    fw = chain.forwards.set_index("expiry")
    if weights == "spread" and not np.isfinite(pts["iv_spread"].to_numpy()).any():
        raise DataError("weights='spread' needs bid and ask implied vols (or prices) for at least "
                        "some quotes; this chain has none", file=chain.source, column="bid_price")
    out = []
    for expiry, grp in pts.groupby("expiry", sort=False):
        iv = grp["iv_mid"].to_numpy(np.float64)
        if weights == "uniform":
            u = np.ones(iv.size)
        elif weights == "vega":
            vega = grp["vega"].to_numpy(np.float64)
            u = vega / vega.max() if np.isfinite(vega).all() and vega.max() > 0 else np.ones(iv.size)
        else:
            spread = grp["iv_spread"].to_numpy(np.float64)
            good = np.isfinite(spread) & (spread > 0)
            if not good.any():
                notes.append(f"expiry {expiry.isoformat()}: no two-sided quotes, uniform weights used")
                u = np.ones(iv.size)
            else:
                u = np.where(good, 1.0 / np.where(good, spread, 1.0), np.median(1.0 / spread[good]))
        u = u / u.mean()
        k = grp["k"].to_numpy(np.float64)
        if k.min() > 0 or k.max() < 0:
            notes.append(f"expiry {expiry.isoformat()}: quotes on one side of the forward only "
                         f"(k from {k.min():.3g} to {k.max():.3g}): one SVI wing is extrapolated and "
                         "the parameters are weakly identified")
        out.append(_Slice(expiry=expiry, T=float(grp["T_years"].iloc[0]),
                          forward=float(fw.loc[expiry, "forward"]),
                          forward_source=str(fw.loc[expiry, "forward_source"]),
                          k=k, iv=iv,
                          iv_bid=grp["iv_bid"].to_numpy(np.float64),
                          iv_ask=grp["iv_ask"].to_numpy(np.float64), u=u))
    return out, notes


def _pad(slices: Sequence[_Slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = max(s.k.size for s in slices)
    k = np.zeros((len(slices), n))
    v = np.zeros((len(slices), n))
    om = np.zeros((len(slices), n))
    for i, s in enumerate(slices):
        k[i, :s.k.size], v[i, :s.k.size], om[i, :s.k.size] = s.k, s.w, s.omega
        k[i, s.k.size:] = s.k[-1]        # padding: a real k, zero weight
    return k, v, om


def _vol_errors(s: _Slice, w_model: np.ndarray) -> dict:
    iv_model = np.sqrt(np.maximum(w_model, 0.0) / s.T)
    err = iv_model - s.iv
    band = np.isfinite(s.iv_bid) & np.isfinite(s.iv_ask)
    inside = (iv_model >= s.iv_bid - 1e-12) & (iv_model <= s.iv_ask + 1e-12)
    return {"rmse_vol_pts": VOL_PTS * float(np.sqrt(np.mean(err * err))),
            "weighted_rmse_vol_pts": VOL_PTS * float(np.sqrt(np.sum(s.u * err * err) / np.sum(s.u))),
            "max_abs_error_vol_pts": VOL_PTS * float(np.max(np.abs(err))),
            "inside_band_fraction": float(inside[band].mean()) if band.any() else None}


# --- raw SVI: fallback and the no-arbitrage refit --------------------------------------------------


def _svi_bounds(s: _Slice) -> tuple[np.ndarray, np.ndarray]:
    span = max(float(np.ptp(s.k)), 1e-4)
    wmax = float(s.w.max())
    # a may be well below zero when sigma is large (w_min = a + b·sigma·sqrt(1 − rho²) ≥ 0)
    lo = np.array([-2.0 * 10.0 * span - wmax, 0.0, -0.999, float(s.k.min()) - span, 1e-4 * span])
    hi = np.array([wmax, 2.0, 0.999, float(s.k.max()) + span, 10.0 * span])
    return lo, hi


def _svi_least_squares(s: _Slice, start: np.ndarray) -> tuple[np.ndarray, Any]:
    """The robust fallback: bounded trf on the five raw parameters, vol residuals, soft-L1."""
    lo, hi = _svi_bounds(s)
    x0 = np.clip(np.where(np.isfinite(start), start, 0.5 * (lo + hi)), lo + 1e-12, hi - 1e-12)
    su = np.sqrt(s.u)

    def resid(p):
        w = svi_total_variance(s.k, *p)
        return su * (np.sqrt(np.maximum(w, 1e-16) / s.T) - s.iv)

    def jac(p):
        return _svi_vol_jacobian(s, p)

    f_scale = max(0.005, float(np.nanmedian(s.iv_ask - s.iv_bid)) if np.isfinite(s.iv_ask - s.iv_bid).any() else 0.005)
    res = optimize.least_squares(resid, x0, jac=jac, bounds=(lo, hi), method="trf", loss="soft_l1",
                                 f_scale=f_scale, x_scale="jac", ftol=1e-10, xtol=1e-10, gtol=1e-10,
                                 max_nfev=1000)
    return res.x, res


def _svi_vol_jacobian(s: _Slice, p) -> np.ndarray:
    """d(√u·σ_model)/d(a, b, rho, m, sigma) on the slice's quotes (the weighted vol residuals')."""
    a, b, rho, m, sig = p
    x = s.k - m
    root = np.sqrt(x * x + sig * sig)
    w = np.maximum(a + b * (rho * x + root), 1e-16)
    dv = np.sqrt(s.u) / (2.0 * np.sqrt(w * s.T))
    return np.stack([dv, dv * (rho * x + root), dv * b * x, dv * b * (-rho - x / root),
                     dv * b * sig / root], axis=1)


def least_squares_std_errors(residuals: np.ndarray, jacobian: np.ndarray) -> tuple[np.ndarray, str | None]:
    """s²·(JᵀJ)⁻¹ with s² = Σr²/(n − p): the standard errors of a least-squares fit whose residuals
    are `residuals` and Jacobian `jacobian` (n × p) at the solution; NaN, with the reason, when
    there are no residual degrees of freedom or JᵀJ is singular."""
    n, k = jacobian.shape
    if n <= k:
        return np.full(k, np.nan), f"{n} quotes for {k} parameters: no residual degrees of freedom, no standard errors"
    A = jacobian.T @ jacobian
    if not np.isfinite(A).all():
        return np.full(k, np.nan), "non-finite Jacobian: no standard errors"
    eig = np.linalg.eigvalsh(A)
    if eig.min() <= 1e-12 * max(eig.max(), 1e-300):
        return np.full(k, np.nan), "the quotes do not pin every parameter (singular JᵀJ): no standard errors"
    s2 = float(residuals @ residuals) / (n - k)
    cov = s2 * np.linalg.inv(A)
    return np.sqrt(np.clip(np.diag(cov), 0.0, None)), None


def svi_std_errors(s: _Slice, params) -> tuple[dict[str, float], str | None]:
    """Least-squares standard errors of a raw SVI slice on its weighted vol residuals (the quotes of
    one snapshot treated as independent errors around the smile: how tightly the quotes pin the
    parameters, not how the smile moves over time; conditional on any active no-arbitrage constraint)."""
    p = np.asarray(params, dtype=np.float64)
    w = svi_total_variance(s.k, *p)
    r = np.sqrt(s.u) * (np.sqrt(np.maximum(w, 1e-16) / s.T) - s.iv)
    se, note = least_squares_std_errors(r, _svi_vol_jacobian(s, p))
    return dict(zip(SVI_PARAMS, map(float, se))), note


def _constraint_grid(s: _Slice, k_grid: np.ndarray, points: int = 241) -> np.ndarray:
    return np.unique(np.concatenate([np.linspace(k_grid[0], k_grid[-1], points), s.k]))


def _svi_constrained(s: _Slice, start: np.ndarray, k_grid: np.ndarray,
                     floor: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """Raw SVI under Durrleman's g ≥ 0 (and w ≥ previous slice) on the grid, by SLSQP.

    SLSQP (analytic constraint Jacobian, scaled variables) from the unconstrained fit, with the
    constraints on 121 grid points plus the quoted k, then on the binding points of the check grid
    as well (up to two more rounds). A result that still fails the check between
    grid points is *repaired*: moved along the segment to a feasible start (b shrunk with the
    level kept, a lifted above the floor: a flatter smile, g ≈ 1) just far enough to pass, by
    bisection (typically a 1e-3 fraction). When that does not give a converged, nearly untouched
    point, SLSQP from the feasible start and a penalty method (trf, μ up to 1e6) run as well. The
    best candidate that passes the fine-grid check is kept; every run is reported.
    """
    lo, hi = _svi_bounds(s)
    om, v = s.omega, s.w
    span = max(float(np.ptp(s.k)), 1e-4)
    wbar = max(float(v.mean()), _TINY)
    fine = np.unique(np.concatenate([k_grid, s.k]))
    if floor is not None:         # the previous slice may lie above every quote of this one
        hi[0] = max(hi[0], 2.0 * float(svi_total_variance(s.k, *floor).max()))
    norm = VOL_PTS ** 2 / s.u.sum()         # objective: weighted mean squared vol residual, vol points²
    start = np.where(np.isfinite(start), start, 0.5 * (lo + hi))
    lo, hi = np.minimum(lo, start), np.maximum(hi, start)      # the start is always admissible
    scale = np.array([wbar, max(abs(start[1]), wbar / span), 1.0, span, span])

    def objective(x):
        r = svi_total_variance(s.k, *(x * scale)) - v
        return norm * float(np.sum(om * r * r))

    def gradient(x):
        a, b, rho, m, sig = x * scale
        d = s.k - m
        root = np.sqrt(d * d + sig * sig)
        r = om * (a + b * (rho * d + root) - v)
        return 2.0 * norm * scale * np.array([r.sum(), (r * (rho * d + root)).sum(), (r * b * d).sum(),
                                              (r * b * (-rho - d / root)).sum(), (r * b * sig / root).sum()])

    w_clip = 1e-6 * wbar

    def min_var(p):
        a, b, rho, m, sig = p
        r = math.sqrt(max(1.0 - rho * rho, 1e-12))
        return (a + b * sig * r) / wbar, np.array([1.0, sig * r, -b * sig * rho / r, 0.0, b * r]) / wbar

    # calendar: w ≥ the previous slice where this slice is quoted (both smiles pinned by quotes);
    # beyond, the extrapolated wings are reported, not forced (they would drag the quotes along)
    q_lo, q_hi = float(s.k.min()), float(s.k.max())

    def quoted(kk):
        return kk[(kk >= q_lo) & (kk <= q_hi)]

    def constraints(p, kk, margin):
        g, _, _, _ = svi_g_and_jacobian(kk, *p, w_min=w_clip)
        out = [g - margin, [min_var(p)[0]]]
        if floor is not None:
            kq = quoted(kk)
            wf = svi_total_variance(kq, *floor)
            out.append((svi_total_variance(kq, *p) - wf) / np.maximum(wf, wbar))
        return np.concatenate(out)

    def constraints_jac(p, kk):
        """d constraints / d p (rows: constraints, columns: a, b, rho, m, sigma)."""
        _, dg, _, dw = svi_g_and_jacobian(kk, *p, w_min=w_clip)
        out = [dg, min_var(p)[1][None, :]]
        if floor is not None:
            kq = quoted(kk)
            _, _, _, dwq = svi_g_and_jacobian(kq, *p)
            out.append(dwq / np.maximum(svi_total_variance(kq, *floor), wbar)[:, None])
        return np.concatenate(out, axis=0)

    def feasible(p, tol: float = G_TOL) -> bool:
        return bool(constraints(p, fine, 0.0).min() >= -tol)

    # feasible starts, the better kept: (i) the previous slice lifted to this slice's level (calendar
    # holds by construction, and its shape is usually close); (ii) this fit flattened (b shrunk,
    # the level at the quotes kept) and lifted above the floor and above zero variance (g ≈ 1)
    k_mid = float(np.sum(s.u * s.k) / np.sum(s.u))
    safes = []
    if floor is not None:
        q = np.array(floor, dtype=np.float64)
        q[0] += max(0.0, float(svi_total_variance(k_mid, *start) - svi_total_variance(k_mid, *floor)))
        q[0] += 1e-6 * wbar
        if feasible(q, 0.0):
            safes.append(q)
    for shrink in (0.5, 0.25, 0.1, 0.03, 0.0):
        q = start.copy()
        q[1] *= shrink
        q[0] += float(svi_total_variance(k_mid, *start) - svi_total_variance(k_mid, *q))
        lift = -(q[0] + q[1] * q[4] * math.sqrt(max(1.0 - q[2] ** 2, 0.0))) + 1e-6 * wbar
        if floor is not None:
            kq = quoted(fine)
            lift = max(lift, float(np.max(svi_total_variance(kq, *floor) - svi_total_variance(kq, *q)))
                       + 1e-6 * wbar)
        q[0] += max(lift, 0.0)
        if feasible(q, 0.0):
            safes.append(q)
            break
    safe = min(safes, key=lambda q: objective(q / scale)) if safes else None
    if safe is not None:
        lo, hi = np.minimum(lo, safe), np.maximum(hi, safe)
    bounds = list(zip(lo / scale, hi / scale))
    def repair(p):
        """The point nearest p on the segment to the feasible start that passes the check."""
        if safe is None:
            return None, None
        lo_t, hi_t = 0.0, 1.0
        for _ in range(40):
            t = 0.5 * (lo_t + hi_t)
            if feasible((1.0 - t) * p + t * safe, 0.0):
                hi_t = t
            else:
                lo_t = t
        return (1.0 - hi_t) * p + hi_t * safe, hi_t

    runs: list[dict] = []
    candidates: list[tuple[float, np.ndarray, Any, dict]] = []   # (objective, params, scipy result, run)

    def consider(p, res, label, **extra):
        ok = feasible(p)
        entry = {"stage": label, "passes_fine_grid_check": ok, **extra}
        if res is not None:
            entry.update({"status": int(res.status), "message": str(res.message),
                          "nit": int(getattr(res, "nit", getattr(res, "njev", 0) or 0)),
                          "nfev": int(res.nfev)})
        if not ok:
            fixed, t = repair(p)
            entry["repaired_toward_feasible_start"] = _f(t) if t is not None else None
            p = fixed
        if p is not None:
            f = objective(p / scale)
            entry["objective_vol_pts2"] = _f(f)
            candidates.append((f, p, res, entry))
        runs.append(entry)
        return ok

    def binding_points(p) -> list[float]:
        """The check-grid point of least slack in every stretch where a constraint (nearly) binds."""
        wf, w1, w2 = svi_derivatives(fine, *p)
        gaps = [durrleman_g(fine, wf, w1, w2)]
        if floor is not None:
            wfl = np.where((fine >= q_lo) & (fine <= q_hi), svi_total_variance(fine, *floor), -np.inf)
            gaps.append((wf - wfl) / np.maximum(wfl, wbar))
        out = []
        for gap in gaps:
            for i, j in _runs(gap < 1e-3):
                out.append(float(fine[i + int(np.argmin(gap[i:j + 1]))]))
        return out

    def slsqp(x0, label):
        """SLSQP on a coarse grid, adding the check grid's binding points for up to two more
        rounds (warm-started): few constraints keep each SQP step cheap."""
        kk = _constraint_grid(s, k_grid, 121)
        x = x0 / scale
        for round_ in range(3):
            res = optimize.minimize(objective, x, jac=gradient, method="SLSQP", bounds=bounds,
                                    constraints=[{"type": "ineq",
                                                  "fun": lambda x, kk=kk: constraints(x * scale, kk, 0.0),
                                                  "jac": lambda x, kk=kk: constraints_jac(x * scale, kk) * scale}],
                                    options={"maxiter": 200, "ftol": 1e-10})
            p = res.x * scale
            if round_ == 2 or feasible(p) or not res.success:
                break
            x = res.x
            kk = np.unique(np.concatenate([kk, binding_points(p)]))
        consider(p, res, "slsqp_no_arbitrage", start=label, rounds=round_ + 1, constraint_points=int(kk.size))
        return res

    # 1. SLSQP from the unconstrained fit; what remains between grid points is cleared by the
    #    repair (a tiny move, reported)
    res = slsqp(start, "unconstrained fit")
    last = runs[-1]
    direct = bool(res.success) and (last["passes_fine_grid_check"]
                                   or (last.get("repaired_toward_feasible_start") or 1.0) < 0.01)
    # 2. otherwise: SLSQP from the feasible start, and a penalty method (trf on the vol residuals
    #    plus μ·constraint violations, μ growing), each repaired the same way
    if not direct:
        if safe is not None:
            slsqp(safe, "feasible start")
        kk = _constraint_grid(s, k_grid, 241)
        su = np.sqrt(s.u)
        x = start / scale
        for mu in (1e2, 1e4, 1e6):
            def resid(x, mu=mu):
                p = x * scale
                w = svi_total_variance(s.k, *p)
                r = su * (np.sqrt(np.maximum(w, 1e-16) / s.T) - s.iv) * VOL_PTS
                c = constraints(p, kk, 1e-7)
                return np.concatenate([r, math.sqrt(mu) * np.minimum(c, 0.0)])

            def resid_jac(x, mu=mu):
                p = x * scale
                _, _, w, dw = svi_g_and_jacobian(s.k, *p)
                dr = (su * VOL_PTS / (2.0 * np.sqrt(np.maximum(w, 1e-16) * s.T)))[:, None] * dw
                c = constraints(p, kk, 1e-7)
                dc = constraints_jac(p, kk) * (c < 0.0)[:, None] * math.sqrt(mu)
                return np.concatenate([dr, dc], axis=0) * scale
            pen = optimize.least_squares(resid, np.clip(x, lo / scale, hi / scale), jac=resid_jac,
                                         bounds=(lo / scale, hi / scale), method="trf", x_scale=1.0,
                                         ftol=1e-10, xtol=1e-10, max_nfev=200)
            x = pen.x
        consider(x * scale, pen, "penalty_least_squares_no_arbitrage", mu=1e6)
    if safe is not None:
        consider(safe, None, "feasible_start")
    if not candidates:
        return start, {"result": None, "rounds": runs, "objective": objective(start / scale),
                       "chosen": None}
    f, p, res, entry = min(candidates, key=lambda c: c[0])
    return p, {"result": res, "rounds": runs, "objective": f, "chosen": entry}


# --- SSVI ------------------------------------------------------------------------------------------


def _atm_theta(s: _Slice) -> float:
    """ATM total variance by linear interpolation in k (nearest quote outside the range)."""
    order = np.argsort(s.k)
    return float(np.interp(0.0, s.k[order], s.w[order]))


class _SSVIProblem:
    """Residuals and analytic Jacobian of SSVI over all slices, in the fitted parametrisation.

    free: p = (rho, eta, gamma, theta_1..n); no-arbitrage: p = (rho, u, gamma, delta_1..n) with
    eta = 2u/(1 + |rho|) and theta = cumsum(delta) in increasing T.
    """

    def __init__(self, slices: Sequence[_Slice], no_arbitrage: bool):
        self.slices = slices
        self.no_arbitrage = no_arbitrage
        self.n = len(slices)
        self.idx = np.concatenate([np.full(s.k.size, i) for i, s in enumerate(slices)])
        self.k = np.concatenate([s.k for s in slices])
        self.iv = np.concatenate([s.iv for s in slices])
        self.T = np.concatenate([np.full(s.k.size, s.T) for s in slices])
        self.su = np.sqrt(np.concatenate([s.u for s in slices]))

    def natural(self, p) -> tuple[float, float, float, np.ndarray]:
        rho, e, gamma = p[0], p[1], p[2]
        if self.no_arbitrage:
            return rho, 2.0 * e / (1.0 + abs(rho)), gamma, np.cumsum(p[3:])
        return rho, e, gamma, np.asarray(p[3:])

    def to_p(self, rho, eta, gamma, theta) -> np.ndarray:
        if self.no_arbitrage:
            return np.concatenate([[rho, eta * (1.0 + abs(rho)) / 2.0, gamma], np.diff(theta, prepend=0.0)])
        return np.concatenate([[rho, eta, gamma], theta])

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        wmax = max(float(s.w.max()) for s in self.slices)
        if self.no_arbitrage:
            lo = np.concatenate([[-0.999, 1e-8, 1e-6], [1e-10], np.zeros(self.n - 1)])
            hi = np.concatenate([[0.999, 1.0, 0.5], np.full(self.n, 10.0 * wmax)])
        else:
            lo = np.concatenate([[-0.999, 1e-8, 0.0], np.full(self.n, 1e-10)])
            hi = np.concatenate([[0.999, 100.0, 1.0], np.full(self.n, 10.0 * wmax)])
        return lo, hi

    def _parts(self, p):
        rho, eta, gamma, theta = self.natural(p)
        th = theta[self.idx]
        phi = eta / (th ** gamma * (1.0 + th) ** (1.0 - gamma))
        pk = phi * self.k
        root = np.sqrt((pk + rho) ** 2 + 1.0 - rho * rho)
        w = 0.5 * th * (1.0 + rho * pk + root)
        return rho, eta, gamma, theta, th, phi, pk, root, w

    def residuals(self, p) -> np.ndarray:
        *_, w = self._parts(p)
        return self.su * (np.sqrt(np.maximum(w, 1e-16) / self.T) - self.iv)

    def jacobian(self, p) -> np.ndarray:
        rho, eta, gamma, theta, th, phi, pk, root, w = self._parts(p)
        dvdw = self.su / (2.0 * np.sqrt(np.maximum(w, 1e-16) * self.T))
        dw_drho = 0.5 * th * pk * (1.0 + 1.0 / root)
        dw_dphi = 0.5 * th * (rho * self.k + (pk + rho) * self.k / root)
        dw_deta = dw_dphi * phi / eta
        dw_dgamma = dw_dphi * phi * np.log((1.0 + th) / th)
        dphi_dth = phi * (-gamma / th - (1.0 - gamma) / (1.0 + th))
        dw_dth = w / th + dw_dphi * dphi_dth
        J = np.zeros((self.k.size, 3 + self.n))
        J[:, 0] = dvdw * dw_drho
        J[:, 1] = dvdw * dw_deta
        J[:, 2] = dvdw * dw_dgamma
        J[np.arange(self.k.size), 3 + self.idx] = dvdw * dw_dth
        if self.no_arbitrage:
            u = p[1]
            sign = np.sign(rho) if rho != 0 else 0.0
            deta_drho = -2.0 * u * sign / (1.0 + abs(rho)) ** 2
            J[:, 0] += J[:, 1] * deta_drho
            J[:, 1] *= 2.0 / (1.0 + abs(rho))
            # theta_i = sum_{j<=i} delta_j: d/d delta_j = sum over i >= j
            J[:, 3:] = np.cumsum(J[:, 3:][:, ::-1], axis=1)[:, ::-1]
        return J


def _fit_ssvi(slices: Sequence[_Slice], no_arbitrage: bool, tol: float, max_nfev: int | None):
    """SSVI by bounded trf on all slices at once; starts from ATM thetas and a short 3-parameter
    search over rho (θ held at the ATM values), then frees everything."""
    order = np.argsort([s.T for s in slices], kind="stable")
    slices = [slices[i] for i in order]
    prob = _SSVIProblem(slices, no_arbitrage)
    lo, hi = prob.bounds()
    theta0 = np.array([max(_atm_theta(s), 1e-8) for s in slices])
    if no_arbitrage:
        theta0 = np.maximum.accumulate(theta0)
    starts = []
    best = None
    for rho0 in (-0.5, 0.0, 0.5):
        eta0, gamma0 = (1.0, 0.4) if not no_arbitrage else (1.0 / (1.0 + abs(rho0)), 0.4)
        p0 = np.clip(prob.to_p(rho0, eta0, gamma0, theta0), lo, hi)
        free3 = np.zeros(p0.size, dtype=bool)
        free3[:3] = True

        def r3(q, p0=p0):
            p = p0.copy()
            p[:3] = q
            return prob.residuals(p)

        def j3(q, p0=p0):
            p = p0.copy()
            p[:3] = q
            return prob.jacobian(p)[:, :3]

        res3 = optimize.least_squares(r3, p0[:3], jac=j3, bounds=(lo[:3], hi[:3]), method="trf",
                                      x_scale="jac", ftol=1e-8, xtol=1e-8, gtol=1e-8, max_nfev=200)
        starts.append({"rho0": rho0, "rho": float(res3.x[0]), "cost": float(res3.cost),
                       "nfev": int(res3.nfev)})
        if best is None or res3.cost < best[1]:
            p = p0.copy()
            p[:3] = res3.x
            best = (p, res3.cost)
    res = optimize.least_squares(prob.residuals, best[0], jac=prob.jacobian, bounds=(lo, hi),
                                 method="trf", x_scale="jac", ftol=tol, xtol=tol, gtol=tol,
                                 max_nfev=max_nfev or 1000)
    rho, eta, gamma, theta = prob.natural(res.x)
    theta_by_slice = np.empty(len(slices))
    theta_by_slice[order] = theta
    se_natural, note = _ssvi_std_errors(prob, res.x)
    se_theta = np.empty(len(slices))
    se_theta[order] = se_natural[3:]
    se = {"rho": float(se_natural[0]), "eta": float(se_natural[1]), "gamma": float(se_natural[2]),
          "theta": se_theta, "note": note}
    return (float(rho), float(eta), float(gamma)), theta_by_slice, res, starts, lo, hi, prob, se


def _ssvi_std_errors(prob: "_SSVIProblem", p: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Standard errors of (rho, eta, gamma, theta_1..n) at the SSVI solution `p`: least squares
    s²·(JᵀJ)⁻¹ in the fitted parametrisation, carried to the natural parameters by the delta method
    (the no-arbitrage parametrisation's map is differentiated numerically: central differences)."""
    se_p, note = least_squares_std_errors(prob.residuals(p), prob.jacobian(p))
    if note:
        return np.full(p.size, np.nan), note
    J = prob.jacobian(p)
    r = prob.residuals(p)
    cov_p = float(r @ r) / (J.shape[0] - J.shape[1]) * np.linalg.inv(J.T @ J)
    if not prob.no_arbitrage:
        return se_p, None

    def natural(q):
        rho, eta, gamma, theta = prob.natural(q)
        return np.concatenate([[rho, eta, gamma], theta])
    G = np.empty((p.size, p.size))
    for j in range(p.size):
        h = 1e-6 * max(abs(p[j]), 1e-4)
        up, down = p.copy(), p.copy()
        up[j] += h
        down[j] -= h
        G[:, j] = (natural(up) - natural(down)) / (2.0 * h)
    cov = G @ cov_p @ G.T
    return np.sqrt(np.clip(np.diag(cov), 0.0, None)), None


# --- specs (what the registry lists) ---------------------------------------------------------------


@dataclass(frozen=True)
class SurfaceModel:
    """A surface model specification: metadata for the registry, the UI and the config file."""
    name: str
    label: str
    formula: str
    reference: str
    params: tuple[Param, ...]
    per_expiry: tuple[str, ...]          # parameters with one value per expiry
    kind: str = "surface"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "label": self.label, "formula": self.formula,
                "reference": self.reference, "params": [p.to_dict() for p in self.params],
                "per_expiry": list(self.per_expiry), "weights": dict(WEIGHT_DESCRIPTIONS),
                "methods": {"quasi_explicit": "Zeliade's reduction: exact inner (a, c, d) solve, "
                                              "grid + Levenberg–Marquardt over (m, ln sigma)",
                            "least_squares": "scipy least_squares (trf, soft-L1) on the five raw "
                                             "parameters"} if self.name == "svi" else
                {"least_squares": "scipy least_squares (trf) on (rho, eta, gamma, theta per expiry), "
                                  "analytic Jacobian"},
                "no_arbitrage": ("fit under Durrleman's g ≥ 0 on the grid and w above the previous "
                                 "expiry (SLSQP)" if self.name == "svi" else
                                 "eta·(1+|rho|) ≤ 2, gamma ≤ 1/2, theta non-decreasing: free of "
                                 "static arbitrage (Gatheral & Jacquier 2014)")}


SVI = SurfaceModel(
    "svi", "Raw SVI (per expiry)",
    "w(k) = a + b·(rho·(k − m) + sqrt((k − m)² + sigma²)), k = ln(K/F), w = implied vol² · T",
    "Gatheral (2004); Zeliade Systems (2009), quasi-explicit calibration",
    (Param("a", 0.01, -1.0, 10.0, "total variance", "level: w at the minimum is a + b·sigma·sqrt(1 − rho²)"),
     Param("b", 0.1, 0.0, 2.0, "total variance per unit k", "angle between the wings (Lee: b(1+|rho|) ≤ 2)"),
     Param("rho", -0.3, -1.0, 1.0, "", "skew: rotation of the smile"),
     Param("m", 0.0, -5.0, 5.0, "log-moneyness", "horizontal shift of the smile"),
     Param("sigma", 0.1, 1e-6, 10.0, "log-moneyness", "ATM curvature: smoothness of the vertex")),
    per_expiry=("a", "b", "rho", "m", "sigma"))

SSVI = SurfaceModel(
    "ssvi", "SSVI surface (power-law phi)",
    "w(k, theta) = theta/2·(1 + rho·phi·k + sqrt((phi·k + rho)² + 1 − rho²)), "
    "phi(theta) = eta / (theta^gamma · (1 + theta)^(1 − gamma)), theta = ATM total variance per expiry",
    "Gatheral & Jacquier (2014), Arbitrage-free SVI volatility surfaces, eq. 4.5",
    (Param("rho", -0.3, -1.0, 1.0, "", "skew, shared by every expiry"),
     Param("eta", 1.0, 0.0, 100.0, "", "level of phi: ATM curvature"),
     Param("gamma", 0.4, 0.0, 1.0, "", "decay of phi with theta (term structure of the skew)"),
     Param("theta", 0.01, 0.0, 10.0, "total variance", "ATM total variance, one per expiry")),
    per_expiry=("theta",))

SURFACE_MODELS = (SVI, SSVI)
_MODELS = {m.name: m for m in SURFACE_MODELS}


# --- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SliceFit:
    """One expiry of a fitted (or hand-set) surface."""
    expiry: pd.Timestamp
    T_years: float
    forward: float
    forward_source: str
    n_points: int
    status: str                               # "fitted" | "fixed" | "skipped"
    params: Mapping[str, float] | None        # raw SVI (for SSVI: the equivalent slice)
    theta: float | None                       # SSVI: ATM total variance
    rmse_vol_pts: float | None
    weighted_rmse_vol_pts: float | None
    max_abs_error_vol_pts: float | None
    inside_band_fraction: float | None        # model vol within [bid IV, ask IV], where both exist
    optimizer: OptimizerReport | None         # the slice's fit (SSVI: the surface's); None when hand-set
    butterfly: Mapping[str, Any]
    message: str = ""
    std_errors: Mapping[str, float] | None = None   # raw SVI fits only (see `svi_std_errors`)

    def conf_int(self, alpha: float = 0.05) -> dict[str, tuple[float, float]] | None:
        if self.params is None:
            return None
        return normal_conf_int(self.params, self.std_errors or {}, alpha)

    def to_dict(self) -> dict:
        bf = self.butterfly
        return {"expiry": self.expiry.isoformat(), "T_years": self.T_years, "forward": self.forward,
                "forward_source": self.forward_source, "points": self.n_points, "status": self.status,
                "message": self.message,
                "params": None if self.params is None else dict(self.params), "theta": self.theta,
                "std_errors": None if self.std_errors is None else dict(self.std_errors),
                "rmse_vol_pts": self.rmse_vol_pts, "weighted_rmse_vol_pts": self.weighted_rmse_vol_pts,
                "max_abs_error_vol_pts": self.max_abs_error_vol_pts,
                "inside_band_fraction": self.inside_band_fraction,
                "butterfly_ok": bf.get("ok"), "min_g": bf.get("min_g"),
                "k_at_min_g": bf.get("k_at_min_g"),
                "butterfly_violations": list(bf.get("violations", [])),
                "optimizer": None if self.optimizer is None else self.optimizer.to_dict()}


@dataclass(frozen=True, eq=False)
class SurfaceResult:
    """A fitted or hand-set surface: parameters, fit quality, optimizer reports, arbitrage."""
    model: SurfaceModel
    status: str                               # "fitted" | "fixed"
    slices: tuple[SliceFit, ...]
    global_params: Mapping[str, float] | None   # SSVI: rho, eta, gamma
    optimizer: Any                            # SSVI: the surface fit's OptimizerReport; SVI: None
    calendar_violations: tuple[Mapping, ...]
    ssvi_conditions: Mapping | None
    k_grid: np.ndarray
    chain: Any                                # execal.models.surface.options.Chain
    weights: str
    no_arbitrage: bool
    settings: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    seconds: float | None = None
    global_std_errors: Mapping[str, Any] | None = None   # SSVI: rho, eta, gamma, theta {expiry: s.e.}

    # -- the estimator contract ---------------------------------------------------------------------
    @property
    def report(self) -> OptimizerReport:
        """The one optimizer report of the surface: SSVI's own fit; for raw SVI (one fit per expiry)
        their aggregate — converged when every fitted expiry converged, evaluations summed, bounds and
        each expiry's method, status and message listed (`starts`); hand-set parameters: "fixed"."""
        if self.status == "fixed":
            return OptimizerReport(method="fixed", loss="none", weights=self.weights, status=None,
                                   message="parameters set by hand; no optimisation was run",
                                   warnings=tuple(self.warnings), settings=dict(self.settings))
        if self.optimizer is not None:
            return self.optimizer
        fitted = [f for f in self.slices if f.optimizer is not None and f.status == "fitted"]
        failed = [f for f in fitted if not f.optimizer.success]
        skipped = len(self.slices) - len(fitted)
        converged = bool(fitted) and not failed
        message = (f"raw SVI per expiry: {len(fitted) - len(failed)} of {len(fitted)} fitted expiries "
                   "converged" + (f", {skipped} skipped" if skipped else "")) if fitted else \
            f"no expiry could be fitted ({skipped} skipped)"
        return OptimizerReport(
            method="svi per expiry: " + ", ".join(sorted({f.optimizer.method for f in fitted})) if fitted
            else "svi per expiry", loss="linear", weights=self.weights,
            status="converged" if converged else ("not_converged" if fitted else "nothing_fitted"),
            message=message, success=converged, converged=converged,
            nfev=sum(int(f.optimizer.nfev or 0) for f in fitted),
            iterations=sum(int(f.optimizer.iterations or 0) for f in fitted),
            cost=sum(float(f.optimizer.cost) for f in fitted if f.optimizer.cost is not None) if fitted else None,
            active_bounds=tuple(f"{f.expiry.isoformat()}: {b}" for f in fitted for b in f.optimizer.active_bounds),
            warnings=tuple(self.warnings),
            starts=tuple({"expiry": f.expiry.isoformat(), "method": f.optimizer.method,
                          "status": f.optimizer.status, "converged": f.optimizer.converged,
                          "message": f.optimizer.message, "nfev": f.optimizer.nfev} for f in fitted),
            settings=dict(self.settings))

    @property
    def converged(self) -> bool:
        return bool(self.report.converged)

    @property
    def std_errors(self) -> dict:
        """Standard errors shaped like `params`: {expiry ISO: {a, b, rho, m, sigma}} (raw SVI; NaN for
        SSVI's per-expiry equivalents and hand-set slices) and, for SSVI, "ssvi": {rho, eta, gamma,
        theta: {expiry ISO: s.e.}}. Least-squares errors s²·(JᵀJ)⁻¹ of the weighted vol residuals."""
        nan = {n: math.nan for n in SVI_PARAMS}
        out = {s.expiry.isoformat(): (None if s.params is None else dict(s.std_errors or nan)) for s in self.slices}
        if self.global_params is not None:
            g = dict(self.global_std_errors or {})
            theta = dict(g.get("theta") or {})
            out["ssvi"] = {n: g.get(n, math.nan) for n in SSVI_PARAMS} | {
                "theta": {s.expiry.isoformat(): theta.get(s.expiry.isoformat(), math.nan) for s in self.slices}}
        return out

    def conf_int(self, alpha: float = 0.05) -> dict:
        """Normal intervals shaped like `params` (value ± z·s.e.)."""
        params, se = self.params, self.std_errors
        out = {}
        for key, p in params.items():
            if p is None:
                out[key] = None
            elif key == "ssvi":
                g = {n: p[n] for n in SSVI_PARAMS}
                out[key] = normal_conf_int(g, se[key], alpha) | {
                    "theta": {e: normal_conf_int({"t": v}, {"t": se[key]["theta"].get(e, math.nan)}, alpha)["t"]
                              for e, v in p["theta"].items() if v is not None}}
            else:
                out[key] = normal_conf_int(p, se[key] or {}, alpha)
        return out

    # -- access -----------------------------------------------------------------------------------
    @property
    def validation(self) -> ValidationReport:
        return self.chain.report

    @property
    def fitted_slices(self) -> tuple[SliceFit, ...]:
        return tuple(s for s in self.slices if s.params is not None)

    @property
    def params(self) -> dict:
        """{expiry ISO: raw SVI params} (and the SSVI globals under "ssvi")."""
        out = {s.expiry.isoformat(): (None if s.params is None else dict(s.params)) for s in self.slices}
        if self.global_params is not None:
            out["ssvi"] = dict(self.global_params) | {"theta": {s.expiry.isoformat(): s.theta
                                                               for s in self.slices}}
        return out

    @property
    def rmse_vol_pts(self) -> float | None:
        """RMSE over every fitted quote, in vol points."""
        frame = self.smile_frame()
        err = frame["error_vol_pts"].to_numpy()
        err = err[np.isfinite(err)]
        return float(np.sqrt(np.mean(err * err))) if err.size else None

    def _slice(self, expiry) -> SliceFit:
        ts = pd.Timestamp(expiry)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts
        for s in self.slices:
            if s.expiry == ts:
                return s
        raise KeyError(f"no expiry {ts.isoformat()} in this surface")

    def total_variance(self, k, expiry) -> np.ndarray:
        s = self._slice(expiry)
        if s.params is None:
            return np.full(np.shape(k), np.nan)
        return svi_total_variance(k, *(s.params[p] for p in SVI_PARAMS))

    def implied_vol(self, k, expiry) -> np.ndarray:
        s = self._slice(expiry)
        return np.sqrt(np.maximum(self.total_variance(k, expiry), 0.0) / s.T_years)

    @property
    def arbitrage(self) -> dict:
        """The arbitrage report: butterfly per slice, calendar across slices, SSVI conditions."""
        butterfly = [{"expiry": s.expiry.isoformat(), **dict(s.butterfly)} for s in self.fitted_slices]
        ok = all(b["ok"] for b in butterfly) and not self.calendar_violations
        return {"free_of_static_arbitrage_on_grid": ok,
                "grid": {"k_from": float(self.k_grid[0]), "k_to": float(self.k_grid[-1]),
                         "points": int(self.k_grid.size)},
                "butterfly": butterfly, "calendar_violations": [dict(c) for c in self.calendar_violations],
                "ssvi_conditions": None if self.ssvi_conditions is None else dict(self.ssvi_conditions)}

    # -- figure-ready frames -------------------------------------------------------------------------
    def smile_frame(self) -> pd.DataFrame:
        """One row per fitted quote: market mid/bid/ask IV, model IV, error (vol points), weight."""
        pts = self.chain.points
        parts = []
        u_of = {sl.expiry: sl.u for sl in _slices(self.chain, self.weights)[0]}   # sorted by k
        for s in self.slices:
            grp = pts[pts["expiry"] == s.expiry].sort_values("k", kind="stable")
            k = grp["k"].to_numpy()
            iv_model = self.implied_vol(k, s.expiry) if s.params is not None else np.full(k.size, np.nan)
            frame = grp[["expiry", "T_years", "strike", "option_type", "forward", "k", "iv_mid",
                         "iv_bid", "iv_ask"]].copy()
            frame["iv_model"] = iv_model
            frame["error_vol_pts"] = VOL_PTS * (iv_model - grp["iv_mid"].to_numpy())
            frame["weight"] = u_of.get(s.expiry, np.full(k.size, np.nan))
            frame["in_band"] = (iv_model >= frame["iv_bid"].to_numpy() - 1e-12) & \
                (iv_model <= frame["iv_ask"].to_numpy() + 1e-12)
            parts.append(frame)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    def curve_frame(self, points: int = 201, k_grid=None) -> pd.DataFrame:
        """Model curves on a k-grid per fitted slice: w, IV and Durrleman's g (for the figures)."""
        parts = []
        for s in self.fitted_slices:
            if k_grid is None:
                kd = self.chain.slice_points(s.expiry)["k"].to_numpy()
                pad = 0.25 * max(float(np.ptp(kd)), 1e-3)
                k = np.linspace(kd.min() - pad, kd.max() + pad, points)
            else:
                k = np.asarray(k_grid, dtype=np.float64)
            w, w1, w2 = svi_derivatives(k, *(s.params[p] for p in SVI_PARAMS))
            parts.append(pd.DataFrame({"expiry": s.expiry, "T_years": s.T_years, "k": k,
                                       "strike": s.forward * np.exp(k), "w_model": w,
                                       "iv_model": np.sqrt(np.maximum(w, 0.0) / s.T_years),
                                       "g": durrleman_g(k, w, w1, w2)}))
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

    # -- export ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """JSON-ready: what `execal surface` writes."""
        return _clean({
            "model": self.model.name, "status": self.status, "weights": self.weights,
            "no_arbitrage": self.no_arbitrage, "underlying": self.chain.underlying,
            "as_of": self.chain.as_of.isoformat(), "source": self.chain.source,
            "rmse_vol_pts": self.rmse_vol_pts, "converged": self.converged,
            "report": self.report.to_dict(), "std_errors": self.std_errors,
            "conf_int": self.conf_int(),
            "ssvi": None if self.global_params is None else dict(self.global_params),
            "optimizer": None if self.optimizer is None else self.optimizer.to_dict(),
            "expiries": [s.to_dict() for s in self.slices],
            "calendar_violations": [dict(c) for c in self.calendar_violations],
            "arbitrage": self.arbitrage, "warnings": list(self.warnings),
            "seconds": self.seconds, "chain": self.chain.summary()})

    def to_config(self, provenance: Mapping | None = None) -> dict:
        """The exported config (schema_version 1, kind "surface"): the surface parameters, how they
        were fitted, the data they came from, fit quality and the arbitrage report."""
        ch = self.chain
        data = {"file": ch.source, "sha256": ch.sha256, "rows": ch.report.rows_read,
                "rows_used": ch.report.rows_kept, "as_of": ch.as_of.isoformat(),
                "underlying": ch.underlying, "iv_source": ch.iv_source,
                "forward_method": ch.forward_method,
                "dropped": [d.to_dict() for d in ch.report.dropped]}
        data.update({k: v for k, v in dict(provenance or {}).items() if v is not None})
        return _clean({
            "schema_version": 1, "kind": "surface", "execal_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"name": self.model.name, "label": self.model.label, "formula": self.model.formula,
                      "status": self.status, "converged": self.converged,
                      "global_params": None if self.global_params is None else dict(self.global_params),
                      "global_std_errors": self.std_errors.get("ssvi"),
                      "expiries": [{"expiry": s.expiry.isoformat(), "T_years": s.T_years,
                                    "forward": s.forward, "theta": s.theta,
                                    "params": None if s.params is None else dict(s.params),
                                    "std_errors": None if s.std_errors is None else dict(s.std_errors)}
                                   for s in self.slices]},
            "warnings": list(self.warnings),
            "optimizer": {"weights": self.weights, "no_arbitrage": self.no_arbitrage,
                          "settings": dict(self.settings),
                          "report": self.report.to_dict(),
                          "slices": {s.expiry.isoformat(): None if s.optimizer is None else s.optimizer.to_dict()
                                     for s in self.slices}},
            "data": data,
            "metrics": {"rmse_vol_pts": self.rmse_vol_pts,
                        "by_expiry": {s.expiry.isoformat(): {"rmse_vol_pts": s.rmse_vol_pts,
                                                             "weighted_rmse_vol_pts": s.weighted_rmse_vol_pts,
                                                             "max_abs_error_vol_pts": s.max_abs_error_vol_pts,
                                                             "inside_band_fraction": s.inside_band_fraction,
                                                             "points": s.n_points}
                                      for s in self.slices}},
            "arbitrage": self.arbitrage})

    def summary(self) -> str:
        lines = [f"{self.model.label} ({self.model.name}), {self.status}; weights {self.weights}"
                 + (", no-arbitrage fit" if self.no_arbitrage else ""), report_line(self.report),
                 f"{'expiry':<27}{'T':>8}{'a':>10}{'b':>10}{'rho':>8}{'m':>9}{'sigma':>9}"
                 f"{'RMSE vp':>9}{'min g':>10}  (± s.e. below each fit)"]
        for s in self.slices:
            if s.params is None:
                lines.append(f"{s.expiry.isoformat():<27}{s.T_years:>8.4f}  {s.status}: {s.message}")
                continue
            p = s.params
            lines.append(f"{s.expiry.isoformat():<27}{s.T_years:>8.4f}{p['a']:>10.5f}{p['b']:>10.5f}"
                         f"{p['rho']:>8.3f}{p['m']:>9.4f}{p['sigma']:>9.4f}{s.rmse_vol_pts:>9.3f}"
                         f"{s.butterfly['min_g']:>10.4f}")
            if s.std_errors is not None:
                e = s.std_errors
                lines.append(f"{'  ± s.e.':<35}{e['a']:>10.2g}{e['b']:>10.2g}{e['rho']:>8.2g}{e['m']:>9.2g}"
                             f"{e['sigma']:>9.2g}")
        if self.global_params is not None:
            se = self.std_errors["ssvi"]
            lines.append("ssvi: " + ", ".join(f"{k} = {v:.6g} ± {se.get(k, math.nan):.3g}"
                                              for k, v in self.global_params.items()))
        lines.append(f"calendar violations: {len(self.calendar_violations)}")
        lines.extend(f"warning: {w}" for w in self.warnings)
        return "\n".join(lines)




# --- the calibrator --------------------------------------------------------------------------------


def _report(method: str, weights: str, *, status, message, success, nfev=0, njev=None, iterations=None,
            cost=None, active=(), warn=(), starts=(), settings=None):
    return OptimizerReport(method=method, loss="linear" if "soft" not in method else "soft_l1",
                           f_scale=1.0, weights=weights, status=status, message=message,
                           success=bool(success), converged=bool(success), nfev=int(nfev), njev=njev,
                           iterations=iterations, cost=cost, active_bounds=tuple(active),
                           warnings=tuple(warn), starts=tuple(starts), settings=dict(settings or {}))


class SurfaceCalibrator:
    """Settings of one surface calibration; `fit(chain)` / `fix(params, chain)` → `SurfaceResult`.

    model: "svi" (raw SVI per expiry) or "ssvi"; weights: "uniform" | "vega" | "spread";
    no_arbitrage: fit under the butterfly (and calendar) constraints (see module docstring);
    method (SVI): "quasi_explicit" (default) or "least_squares"; k_grid: the arbitrage-check grid
    (default `default_k_grid` over every quoted k); tol, max_iter: optimizer tolerances.
    """

    def __init__(self, model: str = "svi", weights: str = "vega", no_arbitrage: bool = False, *,
                 method: str = "quasi_explicit", k_grid: Sequence[float] | None = None,
                 grid_points: int = GRID_POINTS, tol: float = 1e-10, max_iter: int = 200,
                 starts: int = 3):
        if model not in _MODELS:
            raise ValueError(f"unknown surface model {model!r} (available: {', '.join(_MODELS)})")
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        if method not in ("quasi_explicit", "least_squares"):
            raise ValueError(f"method must be 'quasi_explicit' or 'least_squares', got {method!r}")
        if grid_points < 11:
            raise ValueError("grid_points must be at least 11")
        self.model = _MODELS[model]
        self.weights = weights
        self.no_arbitrage = bool(no_arbitrage)
        self.method = method
        self.k_grid = None if k_grid is None else np.asarray(k_grid, dtype=np.float64)
        self.grid_points = int(grid_points)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.starts = int(starts)

    def get_params(self) -> dict:
        return {"model": self.model.name, "weights": self.weights, "no_arbitrage": self.no_arbitrage,
                "method": self.method if self.model.name == "svi" else "least_squares",
                "k_grid": None if self.k_grid is None else [float(self.k_grid[0]), float(self.k_grid[-1]),
                                                            int(self.k_grid.size)],
                "grid_points": self.grid_points, "tol": self.tol, "max_iter": self.max_iter,
                "starts": self.starts}

    # -- helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _chain(chain):
        return chain if isinstance(chain, Chain) else prepare_chain(chain)

    def _grid(self, chain) -> np.ndarray:
        if self.k_grid is not None:
            return self.k_grid
        return default_k_grid(chain.points["k"].to_numpy(), self.grid_points)

    def _finish(self, chain, slices, fits, k_grid, *, status, global_params=None, optimizer=None,
                warn=(), t0=None, global_std_errors=None) -> SurfaceResult:
        """Slice results, butterfly per slice, calendar across slices, SSVI conditions, standard
        errors, and the warnings of fits at a bound or on few quotes."""
        out = []
        warn = list(warn)
        for s, (params, theta, opt, st, msg) in zip(slices, fits):
            if params is None:
                out.append(SliceFit(s.expiry, s.T, s.forward, s.forward_source, int(s.k.size), st, None,
                                    None, None, None, None, None, opt, {"ok": None, "violations": []}, msg))
                continue
            p = MappingProxyType({n: float(v) for n, v in zip(SVI_PARAMS, params)})   # read-only
            err = _vol_errors(s, svi_total_variance(s.k, *params))
            se = None
            if st == "fitted" and global_params is None:
                se_dict, note = svi_std_errors(s, params)
                se = MappingProxyType(se_dict)
                where = f"expiry {s.expiry.isoformat()}"
                if note:
                    warn.append(f"{where}: {note}")
                elif s.k.size < MIN_POINTS_PER_PARAM * len(SVI_PARAMS):
                    warn.append(f"{where}: few quotes: {s.k.size} for {len(SVI_PARAMS)} parameters (fewer than "
                                f"{MIN_POINTS_PER_PARAM} per parameter): the smile is barely pinned and its "
                                "standard errors rest on few degrees of freedom")
                if opt is not None and opt.active_bounds:
                    warn.append(f"{where}: parameter(s) at a bound: {'; '.join(opt.active_bounds)} "
                                "(standard errors there are not reliable)")
            out.append(SliceFit(s.expiry, s.T, s.forward, s.forward_source, int(s.k.size), st, p,
                                None if theta is None else float(theta), err["rmse_vol_pts"],
                                err["weighted_rmse_vol_pts"], err["max_abs_error_vol_pts"],
                                err["inside_band_fraction"], opt,
                                MappingProxyType(butterfly_report(params, k_grid, s.k)), msg, se))
        fitted = [f for f in out if f.params is not None]
        w_grid = np.array([svi_total_variance(k_grid, *(f.params[n] for n in SVI_PARAMS)) for f in fitted]) \
            if fitted else np.empty((0, k_grid.size))
        ranges = {sl.expiry: (float(sl.k.min()), float(sl.k.max())) for sl in slices}
        calendar = calendar_report([f.expiry.isoformat() for f in fitted], [f.T_years for f in fitted],
                                   w_grid, k_grid, [ranges[f.expiry] for f in fitted]) \
            if len(fitted) > 1 else []
        cond = None
        if global_params is not None:
            cond = ssvi_conditions(global_params["rho"], global_params["eta"], global_params["gamma"],
                                   [f.theta for f in sorted(fitted, key=lambda f: f.T_years)])
        if global_params is None:
            failed = [f for f in out if f.optimizer is not None and not f.optimizer.success
                      and f.status == "fitted"]
        elif optimizer is not None and not optimizer.success:
            failed, warn = [], warn + [f"the SSVI fit did not converge ({optimizer.message}); the "
                                       "parameters are where it stopped"]
        else:
            failed = []
        if global_params is not None and optimizer is not None:
            if optimizer.active_bounds:
                warn.append("SSVI parameter(s) at a bound: " + "; ".join(optimizer.active_bounds)
                            + " (standard errors there are not reliable)")
            warn.extend(f"SSVI: {w}" for w in optimizer.warnings)
        if status == "fitted" and not fitted:
            warn.append(f"no expiry could be fitted: all {len(out)} were skipped (see each expiry's message)")
        for f in failed:
            warn.append(f"expiry {f.expiry.isoformat()}: the optimizer did not converge "
                        f"({f.optimizer.message}); the parameters are where it stopped")
        return SurfaceResult(model=self.model, status=status, slices=tuple(out),
                             global_params=None if global_params is None else MappingProxyType(dict(global_params)),
                             optimizer=optimizer,
                             calendar_violations=tuple(calendar), ssvi_conditions=cond,
                             k_grid=_readonly(k_grid), chain=chain, weights=self.weights,
                             no_arbitrage=self.no_arbitrage, settings=self.get_params(),
                             warnings=tuple(warn),
                             seconds=None if t0 is None else time.perf_counter() - t0,
                             global_std_errors=None if global_std_errors is None else MappingProxyType(
                                 {k: (MappingProxyType(dict(v)) if isinstance(v, Mapping) else v)
                                  for k, v in global_std_errors.items()}))

    # -- raw SVI -----------------------------------------------------------------------------------------
    def _fit_svi(self, slices: list[_Slice], k_grid: np.ndarray) -> list[tuple]:
        fits: list[tuple | None] = [None] * len(slices)
        eligible = [i for i, s in enumerate(slices) if s.k.size >= MIN_POINTS_SVI]
        for i, s in enumerate(slices):
            if s.k.size < MIN_POINTS_SVI:
                fits[i] = (None, None, None, "skipped",
                           f"{s.k.size} quoted strike(s): raw SVI needs at least {MIN_POINTS_SVI}")
        settings = {"tol": self.tol, "max_iter": self.max_iter, "starts": self.starts}
        if eligible and self.method == "quasi_explicit":
            k, v, om = _pad([slices[i] for i in eligible])
            params, reps = _svi_quasi_explicit(k, v, om, starts=self.starts, max_iter=self.max_iter,
                                               tol=self.tol)
            for j, i in enumerate(eligible):
                rep = reps[j]
                starts = [dict(st) for st in rep.starts]
                opt = _report("quasi_explicit", self.weights, status=rep.status, message=rep.message,
                              success=rep.success, nfev=rep.nfev, iterations=rep.iterations,
                              cost=rep.cost, starts=starts, active=rep.at_bound,
                              settings=settings | {"grid_points": rep.grid_points})
                p = params[j]
                if rep.success and np.isfinite(p).all():
                    fits[i] = (p, None, opt, "fitted", "")
                    continue
                # robust fallback, started from where the quasi-explicit search stopped; the
                # better of the two (weighted vol RMSE) is kept, and both are reported
                p2, res = _svi_least_squares(slices[i], np.where(np.isfinite(p), p, np.nan))
                qe_err = _vol_errors(slices[i], svi_total_variance(slices[i].k, *p))["weighted_rmse_vol_pts"] \
                    if np.isfinite(p).all() else np.inf
                ls_err = _vol_errors(slices[i], svi_total_variance(slices[i].k, *p2))["weighted_rmse_vol_pts"]
                stages = starts + [{"stage": "quasi_explicit", "status": rep.status, "message": rep.message,
                                    "weighted_rmse_vol_pts": _f(qe_err)},
                                   {"stage": "least_squares_soft_l1", "status": int(res.status),
                                    "message": str(res.message), "weighted_rmse_vol_pts": _f(ls_err)}]
                if ls_err <= qe_err or not np.isfinite(qe_err):
                    opt = _report("least_squares_soft_l1 (fallback)", self.weights, status=int(res.status),
                                  message=str(res.message), success=bool(res.success), nfev=res.nfev,
                                  njev=res.njev, iterations=res.njev, cost=float(res.cost), starts=stages,
                                  warn=[f"quasi-explicit fit did not converge ({rep.message}): the "
                                        "least_squares fallback fits better and is used"], settings=settings)
                    fits[i] = (p2, None, opt, "fitted", "quasi-explicit did not converge; least_squares fallback")
                else:
                    opt = _report("quasi_explicit", self.weights, status=rep.status, message=rep.message,
                                  success=False, nfev=rep.nfev + int(res.nfev), iterations=rep.iterations,
                                  cost=rep.cost, starts=stages, active=rep.at_bound,
                                  warn=["the least_squares fallback did not fit better"],
                                  settings=settings | {"grid_points": rep.grid_points})
                    fits[i] = (p, None, opt, "fitted", "quasi-explicit did not converge (kept: the fallback fit worse)")
        elif eligible:
            for i in eligible:
                s = slices[i]
                start = _svi_heuristic_start(s)
                p, res = _svi_least_squares(s, start)
                opt = _report("least_squares_soft_l1", self.weights, status=int(res.status),
                              message=str(res.message), success=bool(res.success), nfev=res.nfev,
                              njev=res.njev, iterations=res.njev, cost=float(res.cost), settings=settings)
                fits[i] = (p, None, opt, "fitted", "")
        if self.no_arbitrage:
            self._enforce_svi(slices, fits, k_grid)
        return fits

    def _enforce_svi(self, slices, fits, k_grid) -> None:
        """Refit, in increasing T, every slice whose fit breaks g ≥ 0 on the grid or lies below
        the previous slice where it is quoted, under those constraints."""
        prev = None
        for i, s in enumerate(slices):
            p, theta, opt, st, msg = fits[i]
            if p is None:
                continue
            bf = butterfly_report(p, k_grid)
            kq = np.concatenate([s.k, k_grid[(k_grid >= s.k.min()) & (k_grid <= s.k.max())]])
            below = prev is not None and bool(
                (svi_total_variance(kq, *p) < svi_total_variance(kq, *prev) - G_TOL).any())
            if bf["ok"] and not below:
                prev = p
                continue
            p2, info = _svi_constrained(s, p, k_grid, prev)
            res = info["result"]
            what = ("butterfly" if not bf["ok"] else "") + (" and " if (not bf["ok"] and below) else "") + \
                ("calendar" if below else "")
            chosen = info["chosen"]
            method = chosen["stage"] if chosen else "no_arbitrage_failed"
            if chosen is None:
                status_, message, success = -1, "no point passing the no-arbitrage check was found", False
                nfev = njev = nit = 0
            elif res is None:
                status_, success = -1, False
                message = ("no optimizer run ended on a point that passes the fine-grid check: the "
                           "feasible start (a flattened smile) is kept")
                nfev = njev = nit = 0
            else:
                status_, success = int(res.status), bool(res.success)
                message = str(res.message)
                rep_t = chosen.get("repaired_toward_feasible_start")
                if rep_t is not None:
                    # a nudge off the constrained optimum, not a different answer, below 1 %
                    success = success and rep_t < 0.01
                    message += (f"; the result broke the constraints between grid points and was moved "
                                f"{rep_t:.3g} of the way to the feasible start")
                nfev, nit = int(res.nfev), int(chosen.get("nit", 0))
                njev = getattr(res, "njev", None)
                njev = None if njev is None else int(njev)
            new = _report(method, self.weights, status=status_, message=message,
                          success=success, nfev=nfev, njev=njev,
                          iterations=nit, cost=float(info["objective"]),
                          starts=([{"stage": opt.method, "status": opt.status, "message": opt.message,
                                    "cost": opt.cost}] if opt is not None else []) + info["rounds"],
                          warn=[f"unconstrained fit broke the {what} condition (min g "
                                f"{'-inf (w ≤ 0)' if bf['min_g'] is None else format(bf['min_g'], '.3g')}); "
                                "refitted under the no-arbitrage constraints"],
                          settings={"constraint": "g(k) ≥ 0 on the grid, w ≥ previous slice, "
                                                  "a + b·sigma·sqrt(1−rho²) ≥ 0",
                                    "cost": "weighted mean squared vol residual (vol points²); the "
                                            "first stage's cost is ½·Σ weighted residual²"})
            fits[i] = (p2, theta, new, st, f"refitted under the {what} constraint")
            prev = p2

    # -- SSVI ----------------------------------------------------------------------------------------------
    def _fit_ssvi_slices(self, slices, k_grid):
        usable = [s for s in slices if s.k.size >= 1]
        (rho, eta, gamma), thetas, res, starts, lo, hi, prob, se = _fit_ssvi(
            usable, self.no_arbitrage, self.tol, None if self.max_iter is None else 100 * self.max_iter)
        active = []
        names = ["rho", "u = eta(1+|rho|)/2" if self.no_arbitrage else "eta", "gamma"] + \
            [f"{'delta' if self.no_arbitrage else 'theta'}[{i}]" for i in range(len(usable))]
        for name, x, a, b in zip(names, res.x, lo, hi):
            if x <= a + 1e-10 * max(1.0, abs(a)):
                active.append(f"{name} at lower bound {a:g}")
            elif x >= b - 1e-10 * max(1.0, abs(b)):
                active.append(f"{name} at upper bound {b:g}")
        opt = _report("least_squares_trf", self.weights, status=int(res.status), message=str(res.message),
                      success=bool(res.success), nfev=int(res.nfev), njev=int(res.njev),
                      iterations=int(res.njev), cost=float(res.cost), active=active, starts=starts,
                      settings={"tol": self.tol, "parametrisation":
                                "rho, u, gamma, theta increments" if self.no_arbitrage else
                                "rho, eta, gamma, theta"})
        if se["note"]:
            opt = dataclasses.replace(opt, warnings=opt.warnings + (se["note"],))
        gp = {"rho": rho, "eta": eta, "gamma": gamma}
        fits = []
        for s, th in zip(usable, thetas):
            raw = ssvi_to_raw_svi(th, rho, eta, gamma)
            fits.append((np.array([raw[n] for n in SVI_PARAMS]), float(th), opt, "fitted", ""))
        se_out = {"rho": se["rho"], "eta": se["eta"], "gamma": se["gamma"],
                  "theta": {s.expiry.isoformat(): float(v) for s, v in zip(usable, se["theta"])}}
        return fits, gp, opt, se_out

    # -- public ------------------------------------------------------------------------------------------
    def fit(self, chain) -> SurfaceResult:
        """Fit the surface to `chain` (a `Chain`, or a Dataset / frame prepared with defaults)."""
        t0 = time.perf_counter()
        chain = self._chain(chain)
        slices, notes = _slices(chain, self.weights)
        k_grid = self._grid(chain)
        if self.model.name == "svi":
            fits = self._fit_svi(slices, k_grid)
            return self._finish(chain, slices, fits, k_grid, status="fitted", warn=notes, t0=t0)
        fits, gp, opt, se = self._fit_ssvi_slices(slices, k_grid)
        if len(slices) < 3:
            notes.append(f"{len(slices)} expiry(ies): phi(theta) is seen at {len(slices)} point(s), so "
                         "eta and gamma are not separately identified")
        if not opt.success:
            warnings.warn(f"SSVI fit did not converge: {opt.message}", RuntimeWarning, stacklevel=2)
        return self._finish(chain, slices, fits, k_grid, status="fitted", global_params=gp,
                            optimizer=opt, warn=notes, t0=t0, global_std_errors=se)

    def fix(self, params: Mapping[str, Any], chain) -> SurfaceResult:
        """A result for hand-set parameters (same type as `fit`, status "fixed").

        SVI: {expiry ISO: {a, b, rho, m, sigma}} (expiries not given are "skipped").
        SSVI: {rho, eta, gamma, theta: {expiry ISO: θ} or a list in expiry order}; missing θ are
        the chain's ATM total variances.
        """
        chain = self._chain(chain)
        slices, notes = _slices(chain, self.weights)
        k_grid = self._grid(chain)
        fits = []
        if self.model.name == "svi":
            given = {pd.Timestamp(k).tz_localize("UTC") if pd.Timestamp(k).tzinfo is None else pd.Timestamp(k):
                     v for k, v in dict(params).items()}
            for s in slices:
                if s.expiry in given and given[s.expiry] is not None:
                    fits.append((_svi_vec(given[s.expiry]), None, None, "fixed", "hand-set parameters"))
                else:
                    fits.append((None, None, None, "skipped", "no parameters given for this expiry"))
            return self._finish(chain, slices, fits, k_grid, status="fixed", warn=notes)
        try:
            rho, eta, gamma = (float(params[n]) for n in SSVI_PARAMS)
        except KeyError as err:
            raise ValueError(f"SSVI needs parameter {err.args[0]!r}") from None
        theta_in = params.get("theta")
        for i, s in enumerate(slices):
            if isinstance(theta_in, Mapping):
                th = {pd.Timestamp(k).isoformat(): v for k, v in theta_in.items()}.get(s.expiry.isoformat())
            elif theta_in is not None:
                th = list(theta_in)[i]
            else:
                th = None
            th = _atm_theta(s) if th is None else float(th)
            raw = ssvi_to_raw_svi(th, rho, eta, gamma)
            fits.append((np.array([raw[n] for n in SVI_PARAMS]), th, None, "fixed", "hand-set parameters"))
        return self._finish(chain, slices, fits, k_grid, status="fixed",
                            global_params={"rho": rho, "eta": eta, "gamma": gamma}, warn=notes)


def _svi_heuristic_start(s: _Slice) -> np.ndarray:
    """A plain start for the least-squares path: ATM level, mild skew, vertex at the money."""
    span = max(float(np.ptp(s.k)), 1e-3)
    atm = _atm_theta(s)
    return np.array([0.5 * atm, 0.1, -0.3, 0.0, 0.2 * span])


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.flags.writeable = False
    return a


def fit_surface(chain, model: str = "svi", weights: str = "vega", no_arbitrage: bool = False,
                **options) -> SurfaceResult:
    """Shortcut: `SurfaceCalibrator(model, weights, no_arbitrage, **options).fit(chain)`."""
    return SurfaceCalibrator(model, weights, no_arbitrage, **options).fit(chain)
