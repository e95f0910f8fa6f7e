"""European option prices under Heston (1993) and Bates (1996) from their characteristic functions.

The room where a stochastic-volatility model becomes prices: vectorised over strikes and expiries,
with the price's gradient in the model parameters from the same quadrature (for calibration).

Models (forward measure, undiscounted, X_T = ln(S_T/F) a martingale in S):
- Heston: dv = kappa·(theta − v)dt + sigma·sqrt(v)dW_v, d ln S = −v/2 dt + sqrt(v)dW_S, corr(dW_S, dW_v) = rho,
  v(0) = v0.
- Bates: Heston plus compound-Poisson jumps in ln S with intensity lambda (per year) and normal log
  jumps N(nu, delta²), compensated so that S stays a martingale (QuantLib's BatesModel convention).

Characteristic function: the "little trap" form of Albrecher, Mayer, Schoutens & Tistaert (2007),
which stays on the principal branch of the complex logarithm for every maturity: with ξ = kappa −
sigma·rho·iz, q = z² + iz, d = sqrt(ξ² + sigma²·q) (Re d ≥ 0), β = ξ + d, g = (ξ − d)/β = −sigma²·q/β²,
    ln φ(z) = kappa·theta·(−q·T/β − 2/sigma²·ln((1 − g·e^{−dT})/(1 − g))) − v0·q/β·(1 − e^{−dT})/(1 − g·e^{−dT})
(ξ − d = −sigma²·q/β is written without the cancellation) plus, for Bates,
lambda·T·(e^{iz·nu − z²·delta²/2} − 1 − iz·(e^{nu + delta²/2} − 1)). Its derivatives in every parameter
are analytic (chain rule through ξ, d, β, g, e^{−dT}); `log_cf(..., grad=True)` returns them.

Prices: Lewis (2001), with x = ln(F/K),
    C/F = 1 − sqrt(K/F)/π · ∫_0^∞ Re[e^{iux}·φ(u − i/2)] / (u² + 1/4) du,
written against a Black-76 control variate of total variance w (the model's expected integrated
variance): OTM/F = Black_OTM(w)/F − sqrt(K/F)/π · ∫_0^∞ Re[e^{iux}·(φ(u − i/2) − e^{−w(u²+1/4)/2})]/(u² + 1/4) du.
Both φ terms equal 1 at u = ±i/2, so the difference has no pole there: the integrand is an even,
analytic function of u in the strip |Im u| < d, where d = min(p₊ − 1/2, 1/2 − p₋) and (p₋, p₊) are the
moments E[(S_T/F)^p] that are finite at T (found from the Riccati explosion time, Andersen &
Piterbarg 2007). On such an integrand the trapezoidal rule is spectrally accurate: error
≲ 2M/(e^{2πd'/h} − 1) for any d' < d, with M the integrand's size on the line Im u = ±d' (its moment
E[(S_T/F)^{1/2 ± d'}], the e^{±d'x} of the strikes and the Black moment). The plan per expiry picks the
step h that maximises 2πd'/ln(1 + 2M/tol) over d', and truncates at the U beyond which the
integrand's bound |φ| + |φ_BS| integrates to less than `tol` (a scan of |φ| on a log grid). The nodes
are uniform, so e^{iu_n x} = e^{i·m·h·x}·e^{i·b·B·h·x} (n = b·B + m, B ≈ sqrt(N)) costs about 2·sqrt(N)
complex exponentials per strike and the sum over nodes is a matrix product: pricing 1,200 options
costs a few milliseconds (bench/bench_heston.py).

Accuracy (tests/surface/test_heston.py): absolute error below 1e-10 of the forward against QuantLib's
AnalyticHestonEngine / BatesEngine run with adaptive Gauss–Lobatto at tolerance 1e-12 (itself checked
against a 30-digit mpmath quadrature), for strikes K/F from 0.5 to 2 and expiries from 1 day to 2
years, including the short-dated wings. The number of nodes adapts to the expiry: a few dozen for
typical crypto parameters, tens of thousands where the variance process is nearly degenerate
(sigma² ≫ 2·kappa·theta over years, where moments just above the first explode and the strip is thin).

Prices are in units of the forward (the coin price of an inverse option, C/F); multiply by F for the
quote currency (`option_prices(..., unit="quote")`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from execal.models.surface.iv import black76

HESTON_PARAMS = ("v0", "kappa", "theta", "sigma", "rho")
BATES_PARAMS = HESTON_PARAMS + ("lambda", "nu", "delta")
PARAMS = {"heston": HESTON_PARAMS, "bates": BATES_PARAMS}

DEFAULT_TOL = 1e-12            # target absolute error of a price, in units of the forward
MIN_T_YEARS = 1e-9             # shorter expiries are priced at intrinsic (flag EXPIRED)
MAX_NODES = 400_000            # per expiry by default; beyond it the plan is capped (flag CAPPED)
MIN_NODES = 16
_SCAN_U = np.geomspace(1e-2, 1e6, 97)        # |φ| scan for the truncation point
_D_FRACTIONS = np.linspace(0.05, 0.95, 19)   # candidate strip widths d' as fractions of d
_P_MAX = 64.0                                 # moments searched up to order 1 + _P_MAX and down to −_P_MAX
_BISECTIONS = 16

# flags of a priced option (bit field)
OK = 0
EXPIRED = 1        # T ≤ MIN_T_YEARS: intrinsic value
TRUNCATED = 2      # the integrand had not decayed to tol at u = 1e6: accuracy not guaranteed
CAPPED = 4         # the plan needed more than MAX_NODES nodes: accuracy not guaranteed
BAD_INPUT = 8      # F, K or T not finite or not positive; non-finite parameters
FLAG_NAMES = {EXPIRED: "expired", TRUNCATED: "truncated", CAPPED: "capped", BAD_INPUT: "bad_input"}


def param_vector(params: Mapping[str, float] | Sequence[float], model: str = "heston") -> np.ndarray:
    """The parameters in `PARAMS[model]` order as a float array (from a mapping or a sequence)."""
    names = PARAMS[model]
    if isinstance(params, Mapping):
        missing = [n for n in names if n not in params]
        if missing:
            raise ValueError(f"{model} needs parameter(s) {', '.join(missing)}")
        return np.array([float(params[n]) for n in names])
    vec = np.asarray(params, dtype=np.float64).ravel()
    if vec.size != len(names):
        raise ValueError(f"{model} has {len(names)} parameters ({', '.join(names)}), got {vec.size}")
    return vec


# --- the characteristic function --------------------------------------------------------------------

def log_cf(z, T, params, *, jumps: bool = False, grad: bool = False):
    """ln E[exp(iz·ln(S_T/F))] at complex `z` (broadcast with `T`), little-trap form.

    `params` in `BATES_PARAMS` order when `jumps` (else `HESTON_PARAMS`). With `grad`, also returns
    ∂ln φ/∂p stacked on a new first axis, in the same parameter order.
    """
    v0, kappa, theta, sigma, rho = (float(p) for p in params[:5])
    z = np.asarray(z, dtype=np.complex128)
    T = np.asarray(T, dtype=np.float64)
    iz = 1j * z
    q = z * z + iz
    s2 = sigma * sigma
    xi = kappa - sigma * rho * iz
    d = np.sqrt(xi * xi + s2 * q)
    beta = xi + d
    g = -s2 * q / (beta * beta)
    E = np.exp(-d * T)
    one_m_E = -np.expm1(-d * T)
    den = 1.0 - g * E
    D = -q / beta * one_m_E / den
    L = np.log(den / (1.0 - g))
    C0 = -q * T / beta - 2.0 * L / s2          # C = kappa·theta·C0
    out = kappa * theta * C0 + v0 * D
    if jumps:
        lam, nu, delta = (float(p) for p in params[5:8])
        jump_cf = np.exp(iz * nu - 0.5 * z * z * delta * delta)
        comp = np.exp(nu + 0.5 * delta * delta)
        J0 = T * (jump_cf - 1.0 - iz * (comp - 1.0))
        out = out + lam * J0
    if not grad:
        return out
    grads = []
    # ∂ξ/∂(kappa, sigma, rho) and ∂sigma/∂(kappa, sigma, rho)
    for dxi, dsig in ((1.0, 0.0), (-rho * iz, 1.0), (-sigma * iz, 0.0)):
        dd = (xi * dxi + sigma * q * dsig) / d
        dbeta = dxi + dd
        dg = g * (2.0 * dsig / sigma - 2.0 * dbeta / beta)
        dE = -T * E * dd
        dD = (q * dbeta / (beta * beta)) * one_m_E / den \
            - q / beta * (-dE / den + one_m_E * (dg * E + g * dE) / (den * den))
        dL = -(dg * E + g * dE) / den + dg / (1.0 - g)
        dC0 = q * T * dbeta / (beta * beta) - 2.0 * dL / s2 + 4.0 * L * dsig / (s2 * sigma)
        grads.append(kappa * theta * dC0 + v0 * dD)
    d_kappa, d_sigma, d_rho = grads
    d_kappa = d_kappa + theta * C0
    d_theta = kappa * C0
    parts = [np.broadcast_to(D, out.shape), d_kappa, np.broadcast_to(d_theta, out.shape), d_sigma, d_rho]
    if jumps:
        parts += [np.broadcast_to(J0, out.shape),
                  lam * T * (iz * jump_cf - iz * comp),
                  lam * T * (-z * z * delta * jump_cf - iz * delta * comp)]
    return out, np.stack(np.broadcast_arrays(*parts))


# --- moments and the analyticity strip ---------------------------------------------------------------

def explosion_time(p, kappa: float, sigma: float, rho: float) -> np.ndarray:
    """Time at which E[(S_T/F)^p] becomes infinite under Heston (inf: never), for p > 1 or p < 0.

    The coefficient D of v0 in ln E[(S/F)^p] solves D' = sigma²/2·D² − k·D + p(p−1)/2, D(0) = 0, with
    k = kappa − rho·sigma·p; with Δ = k² − sigma²·p(p−1) it blows up at
    2/sqrt(−Δ)·(π/2 + arctan(k/sqrt(−Δ))) when Δ < 0, at ln((k − sqrtΔ)/(k + sqrtΔ))/sqrtΔ when Δ ≥ 0
    and k < 0, and never when Δ ≥ 0 and k > 0 (Andersen & Piterbarg 2007). Jumps with normal log
    sizes have every moment, so Bates explodes at the same time.
    """
    p = np.asarray(p, dtype=np.float64)
    k = kappa - rho * sigma * p
    delta = k * k - sigma * sigma * p * (p - 1.0)
    with np.errstate(all="ignore"):
        root = np.sqrt(np.abs(delta))
        t_complex = 2.0 / root * (0.5 * np.pi + np.arctan(k / root))
        t_real = np.where(k < 0.0, np.log((k - root) / (k + root)) / root, np.inf)
        t_real = np.where((k < 0.0) & (root == 0.0), -2.0 / k, t_real)
    return np.where(delta < 0.0, t_complex, t_real)


def moment_strip(T, kappa: float, sigma: float, rho: float) -> tuple[np.ndarray, np.ndarray]:
    """(p₋, p₊): the moments E[(S_T/F)^p] are finite for p₋ < p < p₊ (capped at −64 and 65), to
    within 64·2^-16 (the plan only needs the strip's width roughly)."""
    T = np.atleast_1d(np.asarray(T, dtype=np.float64))
    n = T.size
    # both searches in one array: p₊ in (1, 65], p₋ in [−64, 0)
    inside = np.concatenate([np.full(n, 1.0), np.full(n, 0.0)])
    outside = np.concatenate([np.full(n, 1.0 + _P_MAX), np.full(n, -_P_MAX)])
    TT = np.concatenate([T, T])
    a, b = inside, outside
    capped = explosion_time(b, kappa, sigma, rho) > TT
    for _ in range(_BISECTIONS):
        m = 0.5 * (a + b)
        finite = explosion_time(m, kappa, sigma, rho) > TT
        a = np.where(finite, m, a)
        b = np.where(finite, b, m)
    p = np.where(capped, outside, a)
    return p[n:], p[:n]


def expected_variance(params, T) -> np.ndarray:
    """E[∫_0^T v dt] = theta·T + (v0 − theta)·(1 − e^{−kappa·T})/kappa (plus the jumps' variance)."""
    v0, kappa, theta = (float(p) for p in params[:3])
    T = np.asarray(T, dtype=np.float64)
    decay = -np.expm1(-kappa * T) / kappa if kappa > 1e-12 else T
    w = theta * T + (v0 - theta) * decay
    if len(params) > 5:
        lam, nu, delta = (float(p) for p in params[5:8])
        w = w + lam * T * (nu * nu + delta * delta)
    return np.maximum(w, 1e-12)


# --- the quadrature plan -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """Per expiry: the trapezoid step h, the node count, the truncation point and flags."""
    T: np.ndarray
    w_cv: np.ndarray         # total variance of the Black-76 control variate
    h: np.ndarray
    nodes: np.ndarray
    U: np.ndarray
    strip: np.ndarray        # d = min(p₊ − 1/2, 1/2 − p₋)
    flags: np.ndarray


def plan(params, T, x_lo, x_hi, *, jumps: bool = False, tol: float = DEFAULT_TOL,
         max_nodes: int = MAX_NODES) -> Plan:
    """The trapezoid plan (see the module docstring) for expiries `T` whose options have
    x = ln(F/K) in [x_lo, x_hi] (arrays, one entry per expiry)."""
    T = np.asarray(T, dtype=np.float64)
    x_lo, x_hi = np.asarray(x_lo, dtype=np.float64), np.asarray(x_hi, dtype=np.float64)
    flags = np.zeros(T.shape, dtype=np.int64)
    kappa, sigma, rho = float(params[1]), float(params[3]), float(params[4])
    w = expected_variance(params, T)
    p_lo, p_hi = moment_strip(T, kappa, sigma, rho)
    strip = np.minimum(p_hi - 0.5, 0.5 - p_lo)
    up = np.maximum(x_hi, 0.0)          # e^{d·x} below the axis
    down = np.maximum(-x_lo, 0.0)       # e^{−d·x} above it; also sqrt(K/F) ≤ e^{down/2}
    dc = strip[None, :] * _D_FRACTIONS[:, None]            # (candidates, expiries)
    with np.errstate(all="ignore"):
        m_below = np.real(log_cf(-1j * (0.5 + dc), T[None, :], params, jumps=jumps))
        m_above = np.real(log_cf(-1j * (0.5 - dc), T[None, :], params, jumps=jumps))
    m_below = np.where(np.isfinite(m_below), m_below, np.inf)
    m_above = np.where(np.isfinite(m_above), m_above, np.inf)
    m_bs = 0.5 * w[None, :] * (dc + 0.5) * (dc - 0.5)        # ln E[(S/F)^{1/2 ± d}] under Black
    ln_m = np.maximum(np.maximum(m_below + dc * up, m_above + dc * down), m_bs + dc * np.maximum(up, down))
    ln_m = ln_m + np.log(2.0) + 0.5 * down + np.log(2.0 / np.pi) - np.log(np.minimum(dc, 0.5))
    with np.errstate(over="ignore"):
        denom = np.logaddexp(0.0, ln_m + np.log(2.0 / tol))
    h = np.max(2.0 * np.pi * dc / denom, axis=0)
    # truncation: the bound sqrt(K/F)/π·(|φ| + |φ_BS|)/(u² + 1/4) integrates to < tol beyond U
    u = _SCAN_U[:, None]
    with np.errstate(all="ignore"):
        mag = np.exp(np.real(log_cf(u - 0.5j, T[None, :], params, jumps=jumps)))
        bound = np.exp(0.5 * down)[None, :] / np.pi * (mag + np.exp(-0.5 * w[None, :] * (u * u + 0.25))) \
            / (u * u + 0.25)
    bound = np.where(np.isfinite(bound), bound, np.inf)
    seg = 0.5 * (bound[1:] * u[1:] + bound[:-1] * u[:-1]) * np.diff(np.log(_SCAN_U))[:, None]
    tail = np.concatenate([np.cumsum(seg[::-1], axis=0)[::-1], np.zeros((1, T.size))]) + bound[-1] * _SCAN_U[-1]
    done = tail <= tol
    found = done.any(axis=0)
    U = np.where(found, _SCAN_U[np.argmax(done, axis=0)], _SCAN_U[-1])
    flags |= np.where(found, 0, TRUNCATED)
    h = np.minimum(h, U / (MIN_NODES - 1))
    nodes = np.ceil(U / h).astype(np.int64) + 1
    capped = nodes > max_nodes
    flags |= np.where(capped, CAPPED, 0)
    nodes = np.minimum(nodes, max_nodes)
    h = np.where(capped, U / (max_nodes - 1), h)
    return Plan(T=T, w_cv=w, h=h, nodes=nodes, U=U, strip=strip, flags=flags)


# --- prices ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FourierPrices:
    """Out-of-the-money prices in units of the forward (call for K ≥ F, put below), their gradient
    in the parameters (n × p, or None), a flag per option and the plan used per expiry."""
    otm: np.ndarray
    jac: np.ndarray | None
    flags: np.ndarray
    plan: Plan | None
    expiry_index: np.ndarray      # expiry of each option: index into plan.T

    def call(self, strike_over_forward) -> np.ndarray:
        kf = np.asarray(strike_over_forward, dtype=np.float64)
        return np.where(kf >= 1.0, self.otm, self.otm + (1.0 - kf))

    def put(self, strike_over_forward) -> np.ndarray:
        kf = np.asarray(strike_over_forward, dtype=np.float64)
        return np.where(kf >= 1.0, self.otm - (1.0 - kf), self.otm)


def otm_prices(params, forward, strike, T_years, *, model: str = "heston", grad: bool = False,
               tol: float = DEFAULT_TOL, max_nodes: int = MAX_NODES) -> FourierPrices:
    """Out-of-the-money option prices / F under `model` ("heston" or "bates"), vectorised.

    `params`: mapping or sequence in `PARAMS[model]` order; `forward`, `strike`, `T_years` broadcast
    to one entry per option (every option of an expiry shares its characteristic function). With
    `grad`, `jac[i, j]` = ∂(price_i/F_i)/∂param_j. `max_nodes` caps the nodes per expiry (flag
    CAPPED where the plan wanted more: a calibration's trial points far from any market).
    """
    jumps = model == "bates"
    if model not in PARAMS:
        raise ValueError(f"model must be one of {', '.join(PARAMS)}, got {model!r}")
    p = param_vector(params, model)
    F, K, T = (a.ravel() for a in np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                                        for a in (forward, strike, T_years))))
    n = F.size
    n_par = p.size
    otm = np.full(n, np.nan)
    jac = np.full((n, n_par), np.nan) if grad else None
    flags = np.zeros(n, dtype=np.int64)
    with np.errstate(all="ignore"):
        bad = ~(np.isfinite(F) & np.isfinite(K) & np.isfinite(T) & (F > 0) & (K > 0))
    if not np.all(np.isfinite(p)) or p[1] <= 0 or p[3] <= 0 or p[2] < 0 or p[0] < 0 or abs(p[4]) > 1 \
            or (jumps and (p[5] < 0 or p[7] < 0)):
        bad[:] = True
    flags[bad] = BAD_INPUT
    expired = ~bad & (T <= MIN_T_YEARS)
    flags[expired] = EXPIRED
    otm[expired] = 0.0
    if grad:
        jac[expired] = 0.0
    live = np.flatnonzero(~bad & ~expired)
    if live.size == 0:
        return FourierPrices(otm, jac, flags, None, np.full(n, -1))
    x = np.log(F[live] / K[live])
    kf = K[live] / F[live]
    T_u, inv = np.unique(T[live], return_inverse=True)
    n_exp = T_u.size
    x_lo = np.full(n_exp, np.inf)
    x_hi = np.full(n_exp, -np.inf)
    np.minimum.at(x_lo, inv, x)
    np.maximum.at(x_hi, inv, x)
    pl = plan(p, T_u, x_lo, x_hi, jumps=jumps, tol=tol, max_nodes=max(int(max_nodes), MIN_NODES))
    flags[live] |= pl.flags[inv]
    # every expiry's nodes in one evaluation of the characteristic function
    starts = np.concatenate([[0], np.cumsum(pl.nodes)])
    k_idx = np.arange(starts[-1]) - np.repeat(starts[:-1], pl.nodes)
    which = np.repeat(np.arange(n_exp), pl.nodes)
    u = k_idx * pl.h[which]
    z = u - 0.5j
    qq = u * u + 0.25
    if grad:
        lphi, dlphi = log_cf(z, pl.T[which], p, jumps=jumps, grad=True)
    else:
        lphi = log_cf(z, pl.T[which], p, jumps=jumps)
    phi = np.exp(lphi)
    weight = pl.h[which] / qq
    weight[starts[:-1]] *= 0.5                       # trapezoid: half weight at u = 0 (even integrand)
    rows = [(phi - np.exp(-0.5 * pl.w_cv[which] * qq)) * weight]
    if grad:
        rows.extend(phi * dlphi * weight)
    psi = np.stack(rows)                             # (1 + p, all nodes)
    integral = np.empty((live.size, psi.shape[0]))
    order = np.argsort(inv, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(inv, minlength=n_exp))])
    for e in range(n_exp):
        opts = order[bounds[e]:bounds[e + 1]]
        integral[opts] = _sum_over_nodes(psi[:, starts[e]:starts[e + 1]], x[opts], pl.h[e])
    scale = np.sqrt(kf) / np.pi
    cv = black76(1.0, kf, 1.0, np.sqrt(pl.w_cv[inv]), kf >= 1.0)
    otm[live] = cv - scale * integral[:, 0]
    if grad:
        jac[live] = -scale[:, None] * integral[:, 1:]
    return FourierPrices(otm, jac, flags, pl, _expiry_index(n, live, inv))


def _expiry_index(n: int, live: np.ndarray, inv: np.ndarray) -> np.ndarray:
    out = np.full(n, -1, dtype=np.int64)
    out[live] = inv
    return out


def _sum_over_nodes(psi: np.ndarray, x: np.ndarray, h: float) -> np.ndarray:
    """Re Σ_n psi[:, n]·e^{i·n·h·x_j} for every option j, as (options, rows).

    n = b·B + m: e^{inhx} = e^{imhx}·e^{ibBhx}, so each option needs B + N/B exponentials and the
    sum over m is one complex matrix product."""
    rows, nodes = psi.shape
    block = max(int(np.sqrt(nodes)), 1)
    n_blocks = -(-nodes // block)
    padded = np.zeros((rows, n_blocks * block), dtype=np.complex128)
    padded[:, :nodes] = psi
    # (block, rows·n_blocks): column r·n_blocks + b holds psi[r, b·block + m] in row m
    stacked = padded.reshape(rows, n_blocks, block).transpose(2, 0, 1).reshape(block, rows * n_blocks)
    inner = np.exp(1j * h * np.multiply.outer(x, np.arange(block)))            # (options, block)
    outer = np.exp(1j * h * block * np.multiply.outer(x, np.arange(n_blocks)))  # (options, n_blocks)
    # einsum's own loops, not BLAS: these products are small, and a threaded zgemm on a busy
    # machine costs a hundred times more than the arithmetic
    partial = np.einsum("om,mc->oc", inner, stacked).reshape(x.size, rows, n_blocks)
    return np.einsum("orb,ob->or", partial, outer).real


def option_prices(params, forward, strike, T_years, is_call, *, model: str = "heston", unit: str = "quote",
                  tol: float = DEFAULT_TOL) -> np.ndarray:
    """Undiscounted call/put prices under `model`: in the quote currency (`unit="quote"`, the
    currency of F and K) or in coin units (`unit="base"`: the price of an inverse, coin-margined
    option, C/F)."""
    if unit not in ("quote", "base"):
        raise ValueError(f"unit must be 'quote' or 'base', got {unit!r}")
    F, K, T, call = np.broadcast_arrays(np.asarray(forward, dtype=np.float64), np.asarray(strike, dtype=np.float64),
                                        np.asarray(T_years, dtype=np.float64), np.asarray(is_call, dtype=bool))
    res = otm_prices(params, F, K, T, model=model, tol=tol)
    kf = (K / F).ravel()
    out = np.where(call.ravel(), res.call(kf), res.put(kf))
    if unit == "quote":
        out = out * F.ravel()
    return out.reshape(F.shape)
