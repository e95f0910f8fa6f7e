"""Implied volatility from option prices: Black-76 on forwards, vectorised, to machine accuracy.

The room where a price becomes a vol. Everything works in Jäckel's normalised coordinates
(x = ln(F/K), s = σ√T, β = time value / √(F·K)): an in-the-money price is mapped to its
out-of-the-money twin (put–call parity), so one function b(x, s) with x ≤ 0 covers calls and puts.

`implied_vol` is a vectorised port of Peter Jäckel's "Let's Be Rational" (2013/2016): the
four-branch rational initial guess (shape-preserving rational cubic interpolation of transformed
price maps) and Householder(3) steps on branch-specific objectives (1/ln b in the lower wing,
b in the middle, ln(b_max − b) in the upper region), so two iterations reach machine precision
almost everywhere. Only unconverged entries iterate further (arrays are compacted), with the
bracketing/bisection safeguard of the original. b(x, s) is evaluated in the four regions of the
original (asymptotic expansion, small-t expansion, Φ form, erfcx form) so deep wings keep their
relative accuracy. Ported from the C++ original via the MIT-licensed `py_lets_be_rational`
(© 2017 Gammon Capital LLC); the original's notice, which must be preserved:

    Copyright © 2013-2014 Peter Jäckel.
    Permission to use, copy, modify, and distribute this software is freely granted,
    provided that this notice is preserved.
    WARRANTY DISCLAIMER: The Software is provided "as is" without warranty of any kind, either
    express or implied, including without limitation any implied warranties of condition,
    uninterrupted use, merchantability, fitness for a particular purpose, or non-infringement.

Bad quotes never raise: each entry gets a flag (`FLAGS`) and a NaN vol where none exists.
Prices are undiscounted and in the currency of F and K (convert coin-quoted prices first with
`execal.models.surface.options.to_quote_units`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import erfcx, ndtr, ndtri

# --- flags ------------------------------------------------------------------------------------

OK = 0
BELOW_INTRINSIC = 1   # price at or below intrinsic value: no time value, no vol
ABOVE_MAX = 2         # price at or above the upper bound (F for a call, K for a put)
ZERO_VEGA = 3         # extreme wing: vega (or the time value) underflows; the vol is not resolvable
NOT_CONVERGED = 4     # the iteration did not settle (only for absurd inputs, |ln F/K| ≫ 100)
BAD_INPUT = 5         # price, F, K or T missing, non-finite or not positive
FLAGS = {OK: "ok", BELOW_INTRINSIC: "below_intrinsic", ABOVE_MAX: "above_max",
         ZERO_VEGA: "zero_vega", NOT_CONVERGED: "not_converged", BAD_INPUT: "bad_input"}
FLAG_DESCRIPTIONS = {
    OK: "implied vol found",
    BELOW_INTRINSIC: "price at or below intrinsic value (no time value)",
    ABOVE_MAX: "price at or above its no-arbitrage maximum (forward for a call, strike for a put)",
    ZERO_VEGA: "extreme wing: vega or time value too small for the price to pin down a vol",
    NOT_CONVERGED: "the implied-vol iteration did not converge",
    BAD_INPUT: "price, forward, strike or expiry missing, non-finite or not positive",
}

# --- constants (as in Let's Be Rational) --------------------------------------------------------

_EPS = np.finfo(float).eps
_DBL_MIN = np.finfo(float).tiny
_DBL_MAX = np.finfo(float).max
_SQRT_DBL_MIN = np.sqrt(_DBL_MIN)
_SQRT_DBL_MAX = np.sqrt(_DBL_MAX)
_ONE_OVER_SQRT_TWO = 0.7071067811865475244008443621048490392848359376887
_ONE_OVER_SQRT_TWO_PI = 0.3989422804014326779399460599343818684758586311649
_SQRT_TWO_PI = 2.506628274631000502415765284811045253006986740610
_TWO_PI = 6.283185307179586476925286766559005768394338798750
_SQRT_PI_OVER_TWO = 1.253314137315500251207882642405522626503493370305
_SQRT_THREE = 1.732050807568877293527446341505872366942805253810
_SQRT_ONE_OVER_THREE = 0.577350269189625764509148780501957455647601751270
_TWO_PI_OVER_SQRT_27 = 1.209199576156145233729385505094770488189377498728
_PI_OVER_SIX = 0.523598775598298873077107230546583814032861566563
_ASYMPTOTIC_H = -10.0                     # h = x/s below which the asymptotic expansion is used
_SMALL_T = 2.0 * _EPS ** (1.0 / 16.0)     # t = s/2 below which the small-t expansion is used
_R_MIN = -(1.0 - np.sqrt(_EPS))           # rational cubic control parameter range
_R_MAX = 2.0 / (_EPS * _EPS)
# Householder(3) converges quartically: after a step of relative size 1e-6 the error is far
# below 1e-16, so entries whose last step was smaller than this stop iterating.
_SETTLED_STEP = 1e-6
_CHUNK = 16384


# --- the normalised Black function ----------------------------------------------------------

def _asymptotic_expansion(h, t):
    """b for h < -10 (Abramowitz & Stegun 26.2.12 expansion of Φ/φ, 17th order in (h/r)²)."""
    e = (t / h) ** 2
    r = (h + t) * (h - t)
    q = (h / r) ** 2
    s = (2.0+q*(-6.0E0-2.0*e+3.0*q*(1.0E1+e*(2.0E1+2.0*e)+5.0*q*(-1.4E1+e*(-7.0E1+e*(-4.2E1-2.0*e))+7.0*q*(1.8E1+e*(1.68E2+e*(2.52E2+e*(7.2E1+2.0*e)))+9.0*q*(-2.2E1+e*(-3.3E2+e*(-9.24E2+e*(-6.6E2+e*(-1.1E2-2.0*e))))+1.1E1*q*(2.6E1+e*(5.72E2+e*(2.574E3+e*(3.432E3+e*(1.43E3+e*(1.56E2+2.0*e)))))+1.3E1*q*(-3.0E1+e*(-9.1E2+e*(-6.006E3+e*(-1.287E4+e*(-1.001E4+e*(-2.73E3+e*(-2.1E2-2.0*e))))))+1.5E1*q*(3.4E1+e*(1.36E3+e*(1.2376E4+e*(3.8896E4+e*(4.862E4+e*(2.4752E4+e*(4.76E3+e*(2.72E2+2.0*e)))))))+1.7E1*q*(-3.8E1+e*(-1.938E3+e*(-2.3256E4+e*(-1.00776E5+e*(-1.84756E5+e*(-1.51164E5+e*(-5.4264E4+e*(-7.752E3+e*(-3.42E2-2.0*e))))))))+1.9E1*q*(4.2E1+e*(2.66E3+e*(4.0698E4+e*(2.3256E5+e*(5.8786E5+e*(7.05432E5+e*(4.0698E5+e*(1.08528E5+e*(1.197E4+e*(4.2E2+2.0*e)))))))))+2.1E1*q*(-4.6E1+e*(-3.542E3+e*(-6.7298E4+e*(-4.90314E5+e*(-1.63438E6+e*(-2.704156E6+e*(-2.288132E6+e*(-9.80628E5+e*(-2.01894E5+e*(-1.771E4+e*(-5.06E2-2.0*e))))))))))+2.3E1*q*(5.0E1+e*(4.6E3+e*(1.0626E5+e*(9.614E5+e*(4.08595E6+e*(8.9148E6+e*(1.04006E7+e*(6.53752E6+e*(2.16315E6+e*(3.542E5+e*(2.53E4+e*(6.0E2+2.0*e)))))))))))+2.5E1*q*(-5.4E1+e*(-5.85E3+e*(-1.6146E5+e*(-1.77606E6+e*(-9.37365E6+e*(-2.607579E7+e*(-4.01166E7+e*(-3.476772E7+e*(-1.687257E7+e*(-4.44015E6+e*(-5.9202E5+e*(-3.51E4+e*(-7.02E2-2.0*e))))))))))))+2.7E1*q*(5.8E1+e*(7.308E3+e*(2.3751E5+e*(3.12156E6+e*(2.003001E7+e*(6.919458E7+e*(1.3572783E8+e*(1.5511752E8+e*(1.0379187E8+e*(4.006002E7+e*(8.58429E6+e*(9.5004E5+e*(4.7502E4+e*(8.12E2+2.0*e)))))))))))))+2.9E1*q*(-6.2E1+e*(-8.99E3+e*(-3.39822E5+e*(-5.25915E6+e*(-4.032015E7+e*(-1.6934463E8+e*(-4.1250615E8+e*(-6.0108039E8+e*(-5.3036505E8+e*(-2.8224105E8+e*(-8.870433E7+e*(-1.577745E7+e*(-1.472562E6+e*(-6.293E4+e*(-9.3E2-2.0*e))))))))))))))+3.1E1*q*(6.6E1+e*(1.0912E4+e*(4.74672E5+e*(8.544096E6+e*(7.71342E7+e*(3.8707344E8+e*(1.14633288E9+e*(2.07431664E9+e*(2.33360622E9+e*(1.6376184E9+e*(7.0963464E8+e*(1.8512208E8+e*(2.7768312E7+e*(2.215136E6+e*(8.184E4+e*(1.056E3+2.0*e)))))))))))))))+3.3E1*(-7.0E1+e*(-1.309E4+e*(-6.49264E5+e*(-1.344904E7+e*(-1.4121492E8+e*(-8.344518E8+e*(-2.9526756E9+e*(-6.49588632E9+e*(-9.0751353E9+e*(-8.1198579E9+e*(-4.6399188E9+e*(-1.6689036E9+e*(-3.67158792E8+e*(-4.707164E7+e*(-3.24632E6+e*(-1.0472E5+e*(-1.19E3-2.0*e)))))))))))))))))*q)))))))))))))))))  # noqa: E501
    return np.maximum(_ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * (h * h + t * t)) * (t / r) * s, 0.0)


def _small_t_expansion(h, t):
    """b for t < 0.21: Y(h+t) − Y(h−t) expanded to 12th order in t (Y = Φ/φ)."""
    a = 1.0 + h * (0.5 * _SQRT_TWO_PI) * erfcx(-_ONE_OVER_SQRT_TWO * h)
    w = t * t
    h2 = h * h
    expansion = 2*t*(a+w*((-1+3*a+a*h2)/6+w*((-7+15*a+h2*(-1+10*a+a*h2))/120+w*((-57+105*a+h2*(-18+105*a+h2*(-1+21*a+a*h2)))/5040+w*((-561+945*a+h2*(-285+1260*a+h2*(-33+378*a+h2*(-1+36*a+a*h2))))/362880+w*((-6555+10395*a+h2*(-4680+17325*a+h2*(-840+6930*a+h2*(-52+990*a+h2*(-1+55*a+a*h2)))))/39916800+((-89055+135135*a+h2*(-82845+270270*a+h2*(-20370+135135*a+h2*(-1926+25740*a+h2*(-75+2145*a+h2*(-1+78*a+a*h2))))))*w)/6227020800.0))))))  # noqa: E501
    return np.maximum(_ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * (h * h + t * t)) * expansion, 0.0)


def _erfcx_form(h, t):
    """b = ½·exp(−(h²+t²)/2)·[erfcx(−(h+t)/√2) − erfcx(−(h−t)/√2)]: one exponential, no Φ tails."""
    return np.maximum(0.5 * np.exp(-0.5 * (h * h + t * t))
                      * (erfcx(-_ONE_OVER_SQRT_TWO * (h + t)) - erfcx(-_ONE_OVER_SQRT_TWO * (h - t))), 0.0)


def _cdf_form(x, s):
    """b = Φ(h+t)·e^{x/2} − Φ(h−t)·e^{−x/2}: accurate when b is close to b_max."""
    h = x / s
    t = 0.5 * s
    b_max = np.exp(0.5 * x)
    return np.maximum(ndtr(h + t) * b_max - ndtr(h - t) / b_max, 0.0)


def normalised_black(x, s, *, accurate: bool = True) -> np.ndarray:
    """Out-of-the-money normalised Black price b(x, s) for x = ln(F/K) ≤ 0, s = σ√T ≥ 0.

    b = Φ(x/s + s/2)·e^{x/2} − Φ(x/s − s/2)·e^{−x/2}, evaluated region by region as in Let's Be
    Rational so that tiny wing prices keep their relative accuracy. `accurate=False` (for the
    initial guess and the first Householder step, whose errors the last step removes) uses the
    cheaper erfcx form down to t = s/2 = 1e-3 instead of 0.21, which costs at most ~4e-13 of
    relative accuracy there.
    """
    x, s = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(s, dtype=np.float64))
    out = np.zeros(x.shape)
    small_t = _SMALL_T if accurate else 1e-3
    with np.errstate(all="ignore"):
        pos = s > 0.0                         # s = 0: b is the (zero) intrinsic value
        r1 = pos & (x < s * _ASYMPTOTIC_H) & (0.5 * s * s + x < s * (_SMALL_T + _ASYMPTOTIC_H))
        rest = pos & ~r1
        r2 = rest & (0.5 * s < small_t)
        rest &= ~r2
        r3 = rest & (x + 0.5 * s * s > 0.85 * s)
        r4 = rest & ~r3
        if r4.all():                          # the common case: skip the index shuffling
            return _erfcx_form(x / s, 0.5 * s)
        for mask, fn in ((r1, _asymptotic_expansion), (r2, _small_t_expansion), (r4, _erfcx_form)):
            if mask.any():
                xs, ss = x[mask], s[mask]
                out[mask] = fn(xs / ss, 0.5 * ss)
        if r3.any():
            out[r3] = _cdf_form(x[r3], s[r3])
    return out


def normalised_vega(x, s) -> np.ndarray:
    """∂b/∂s = φ(x/s + s/2)·e^{x/2} = exp(−(x²/s² + s²/4)/2)/√(2π)."""
    x, s = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(s, dtype=np.float64))
    with np.errstate(all="ignore"):
        h = x / s
        v = h * h
        v += 0.25 * s * s
        v *= -0.5
        v = np.exp(v, out=v)
        v *= _ONE_OVER_SQRT_TWO_PI
    # x = s = 0 gives 0/0; any other s ≤ |x|·√DBL_MIN underflows to 0 as it should
    nan = np.isnan(v)
    if nan.any():
        v[nan & (x == 0.0)] = _ONE_OVER_SQRT_TWO_PI
    return v


# --- rational cubic interpolation (Delbourgo & Gregory, as used by Jäckel) ---------------------

def _rc_interpolate(x, x_l, x_r, y_l, y_r, d_l, d_r, r):
    h = x_r - x_l
    with np.errstate(all="ignore"):
        t = (x - x_l) / h
        omt = 1.0 - t
        t2, omt2 = t * t, omt * omt
        value = ((y_r * t2 * t + (r * y_r - h * d_r) * t2 * omt + (r * y_l + h * d_l) * t * omt2
                  + y_l * omt2 * omt) / (1.0 + (r - 3.0) * t * omt))
        linear = y_r * t + y_l * (1.0 - t)
    value = np.where(r >= _R_MAX, linear, value)
    return np.where(np.abs(h) <= 0.0, 0.5 * (y_l + y_r), value)


def _r_min(d_l, d_r, s, prefer_shape: bool):
    """Smallest control parameter that keeps the interpolant monotone / convex."""
    monotonic = (d_l * s >= 0) & (d_r * s >= 0)
    convex = (d_l <= s) & (s <= d_r)
    concave = (d_l >= s) & (s >= d_r)
    with np.errstate(all="ignore"):
        r1 = np.where(monotonic & (np.abs(s) >= _DBL_MIN), (d_r + d_l) / s,
                      np.where(monotonic & prefer_shape, _R_MAX, -_DBL_MAX))
        degenerate = (np.abs(s - d_l) < _DBL_MIN) | (np.abs(d_r - s) < _DBL_MIN)
        r2_shape = np.maximum(np.abs((d_r - d_l) / (d_r - s)), np.abs((d_r - d_l) / (s - d_l)))
    cc = convex | concave
    r2 = np.where(cc & ~degenerate, r2_shape,
                  np.where(cc & degenerate & prefer_shape, _R_MAX,
                           np.where(~cc & monotonic & prefer_shape, _R_MAX, -_DBL_MAX)))
    r = np.maximum(_R_MIN, np.maximum(r1, r2))
    return np.where(monotonic | convex | concave, r, _R_MIN)


def _control(num, den):
    with np.errstate(all="ignore"):
        r = num / den
    r = np.where(np.abs(den) < _DBL_MIN, np.where(num > 0, _R_MAX, _R_MIN), r)
    return np.where(np.abs(num) < _DBL_MIN, 0.0, r)


def _convex_r_right(x_l, x_r, y_l, y_r, d_l, d_r, d2_r, prefer_shape: bool):
    h = x_r - x_l
    r = _control(0.5 * h * d2_r + (d_r - d_l), d_r - (y_r - y_l) / h)
    return np.maximum(r, _r_min(d_l, d_r, (y_r - y_l) / h, prefer_shape))


def _convex_r_left(x_l, x_r, y_l, y_r, d_l, d_r, d2_l, prefer_shape: bool):
    h = x_r - x_l
    r = _control(0.5 * h * d2_l + (d_r - d_l), (y_r - y_l) / h - d_l)
    return np.maximum(r, _r_min(d_l, d_r, (y_r - y_l) / h, prefer_shape))


# --- transformed maps of the lower and upper wings --------------------------------------------

def _f_lower_map(x, s):
    ax = np.abs(x)
    z = _SQRT_ONE_OVER_THREE * ax / s
    y = z * z
    s2 = s * s
    Phi = ndtr(-z)
    phi = _ONE_OVER_SQRT_TWO_PI * np.exp(-0.5 * z * z)
    fpp = (_PI_OVER_SIX * y / (s2 * s) * Phi
           * (8.0 * _SQRT_THREE * s * ax + (3.0 * s2 * (s2 - 8.0) - 8.0 * x * x) * Phi / phi)
           * np.exp(2.0 * y + 0.25 * s2))
    fp = _TWO_PI * y * Phi * Phi * np.exp(y + 0.125 * s2)
    f = _TWO_PI_OVER_SQRT_27 * ax * (Phi * Phi * Phi)
    return f, fp, fpp


def _inverse_f_lower_map(x, f):
    return np.abs(x / (_SQRT_THREE * ndtri(np.cbrt(f / (_TWO_PI_OVER_SQRT_27 * np.abs(x))))))


def _f_upper_map(x, s):
    f = ndtr(-0.5 * s)
    w = (x / s) ** 2
    fp = -0.5 * np.exp(0.5 * w)
    fpp = _SQRT_PI_OVER_TWO * np.exp(w + 0.125 * s * s) * w / s
    return f, fp, fpp


# --- the solver ---------------------------------------------------------------------------------

_LOWER, _MIDDLE, _UPPER = 0, 1, 2     # objective: 1/ln b, b, ln(b_max − b)


def _initial_guess(beta, x):
    """Jäckel's four-branch rational guess. Returns s, bracket and the objective per entry."""
    n = beta.shape[0]
    s = np.empty(n)
    s_left = np.full(n, _DBL_MIN)
    s_right = np.full(n, _DBL_MAX)
    branch = np.full(n, _MIDDLE, dtype=np.int8)
    b_max = np.exp(0.5 * x)
    s_c = np.sqrt(np.abs(2.0 * x))
    b_c = normalised_black(x, s_c, accurate=False)
    v_c = normalised_vega(x, s_c)
    with np.errstate(all="ignore"):
        lower = np.flatnonzero(beta < b_c)
        if lower.size:
            xl, bl_beta, sc, bc, vc = x[lower], beta[lower], s_c[lower], b_c[lower], v_c[lower]
            s_l = sc - bc / vc
            b_l = normalised_black(xl, s_l, accurate=False)
            low = bl_beta < b_l
            # lowest segment: interpolate the transformed map f(b) on [0, b_l], then invert it
            if low.any():
                i = lower[low]
                xx, bb, sl, bbl = xl[low], bl_beta[low], s_l[low], b_l[low]
                f_l, fp_l, fpp_l = _f_lower_map(xx, sl)
                r = _convex_r_right(0.0, bbl, 0.0, f_l, 1.0, fp_l, fpp_l, True)
                f = _rc_interpolate(bb, 0.0, bbl, 0.0, f_l, 1.0, fp_l, r)
                t = bb / bbl
                f = np.where(f > 0, f, (f_l * t + bbl * (1.0 - t)) * t)   # roundoff at |x| > 500
                s[i] = _inverse_f_lower_map(xx, f)
                s_right[i] = sl
                branch[i] = _LOWER
            mid = ~low
            if mid.any():
                i = lower[mid]
                sl, bbl, sc_m, bc_m, vc_m = s_l[mid], b_l[mid], sc[mid], bc[mid], vc[mid]
                v_l = normalised_vega(xl[mid], sl)
                r = _convex_r_right(bbl, bc_m, sl, sc_m, 1.0 / v_l, 1.0 / vc_m, 0.0, False)
                s[i] = _rc_interpolate(bl_beta[mid], bbl, bc_m, sl, sc_m, 1.0 / v_l, 1.0 / vc_m, r)
                s_left[i] = sl
                s_right[i] = sc_m
        upper = np.flatnonzero(~(beta < b_c))
        if upper.size:
            xu, bu, sc, bc, vc, bm = x[upper], beta[upper], s_c[upper], b_c[upper], v_c[upper], b_max[upper]
            s_h = np.where(vc > _DBL_MIN, sc + (bm - bc) / vc, sc)
            b_h = normalised_black(xu, s_h, accurate=False)
            mid = bu <= b_h
            if mid.any():
                i = upper[mid]
                sh, bh = s_h[mid], b_h[mid]
                v_h = normalised_vega(xu[mid], sh)
                r = _convex_r_left(bc[mid], bh, sc[mid], sh, 1.0 / vc[mid], 1.0 / v_h, 0.0, False)
                s[i] = _rc_interpolate(bu[mid], bc[mid], bh, sc[mid], sh, 1.0 / vc[mid], 1.0 / v_h, r)
                s_left[i] = sc[mid]
                s_right[i] = sh
            hi = ~mid
            if hi.any():
                i = upper[hi]
                xx, bb, sh, bh, bmx = xu[hi], bu[hi], s_h[hi], b_h[hi], bm[hi]
                f_h, fp_h, fpp_h = _f_upper_map(xx, sh)
                r = _convex_r_left(bh, bmx, f_h, 0.0, fp_h, -0.5, fpp_h, True)
                f = np.where(fpp_h > -_SQRT_DBL_MAX,
                             _rc_interpolate(bb, bh, bmx, f_h, 0.0, fp_h, -0.5, r), -_DBL_MAX)
                h = bmx - bh
                t = (bb - bh) / h
                f = np.where(f > 0, f, (f_h * (1.0 - t) + 0.5 * h * t) * (1.0 - t))
                s[i] = -2.0 * ndtri(f)
                s_left[i] = sh
                # below half of b_max the plain objective b − β is the better conditioned one
                branch[i] = np.where(bb > 0.5 * bmx, _UPPER, _MIDDLE)
    return s, s_left, s_right, branch


def _householder_step(beta, x, s, b, bp, branch, s_left, s_right, b_max):
    """One Householder(3) step ds for each entry, on its branch's objective."""
    with np.errstate(all="ignore"):
        h = x / s
        b_halley = h * h / s - s / 4.0
        b_hh3 = b_halley * b_halley - 3.0 * (h / s) ** 2 - 0.25
        # middle: g = b − β
        newton = (beta - b) / bp
        halley = b_halley
        hh3 = b_hh3
        # lower: g = 1/ln b − 1/ln β
        is_low = branch == _LOWER
        if is_low.any():
            ln_b = np.log(b)
            ln_beta = np.log(beta)
            bpob = bp / b
            n_low = (ln_beta - ln_b) * ln_b / ln_beta / bpob
            h_low = b_halley - bpob * (1.0 + 2.0 / ln_b)
            hh3_low = (b_hh3 + 2.0 * bpob * bpob * (1.0 + 3.0 / ln_b * (1.0 + 1.0 / ln_b))
                       - 3.0 * b_halley * bpob * (1.0 + 2.0 / ln_b))
            newton = np.where(is_low, n_low, newton)
            halley = np.where(is_low, h_low, halley)
            hh3 = np.where(is_low, hh3_low, hh3)
        # upper: g = ln((b_max − β)/(b_max − b))
        is_up = branch == _UPPER
        if is_up.any():
            gap = b_max - b
            g = np.log((b_max - beta) / gap)
            gp = bp / gap
            newton = np.where(is_up, -g / gp, newton)
            halley = np.where(is_up, b_halley + gp, halley)
            hh3 = np.where(is_up, b_hh3 + gp * (2.0 * gp + 3.0 * b_halley), hh3)
        ds = newton * (1.0 + 0.5 * halley * newton) / (1.0 + newton * (halley + hh3 * newton / 6.0))
        # underflow of b or b': bisect the bracket instead
        stuck = ((is_low & ((b <= 0) | (bp <= 0))) | (is_up & ((b >= b_max) | (bp <= _DBL_MIN)))
                 | (~np.isfinite(ds)))
        ds = np.where(stuck, 0.5 * (s_left + s_right) - s, ds)
    return np.maximum(-0.5 * s, ds)


def normalised_implied_vol(beta, x, *, max_iterations: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """s = σ√T with b(x, s) = β, for out-of-the-money x ≤ 0 and 0 < β < e^{x/2}.

    Returns (s, iterations, converged). Two Householder(3) steps for every entry (Let's Be Rational's
    choice), then further steps only where the last step was still large.
    """
    beta = np.asarray(beta, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    s, s_left, s_right, branch = _initial_guess(beta, x)
    n = beta.shape[0]
    iterations = np.zeros(n, dtype=np.int16)
    active = np.arange(n)
    ds = np.full(n, _DBL_MAX)
    ds_prev = np.zeros(n)
    reversals = np.zeros(n, dtype=np.int8)
    b_max = np.exp(0.5 * x)
    for it in range(max_iterations):
        if active.size == 0:
            break
        if active.size == n:      # the first two passes: every entry, no gathering
            xa, ba, sa, sl, sr, dsa, dsp, rev, br, bm = (x, beta, s, s_left, s_right, ds, ds_prev,
                                                          reversals, branch, b_max)
        else:
            xa, ba, sa, sl, sr = x[active], beta[active], s[active], s_left[active], s_right[active]
            dsa, dsp, rev = ds[active], ds_prev[active], reversals[active]
            br, bm = branch[active], b_max[active]
        rev = rev + (dsa * dsp < 0)
        if it > 0:
            # looping, or outside the bracket: bisect (only for extreme |x|, as in the original)
            bisect = (rev >= 3) | ~((sa > sl) & (sa < sr))
            sa = np.where(bisect, 0.5 * (sl + sr), sa)
            rev = np.where(bisect, 0, rev)
            dsa = np.where(bisect, 0.0, dsa)
        dsp = dsa
        b = normalised_black(xa, sa, accurate=it > 0)    # the first step's errors the next removes
        bp = normalised_vega(xa, sa)
        sr = np.where((b > ba) & (sa < sr), sa, sr)
        sl = np.where((b < ba) & (sa > sl), sa, sl)
        dsa = _householder_step(ba, xa, sa, b, bp, br, sl, sr, bm)
        sa = sa + dsa
        if active.size == n:
            s, s_left, s_right, ds, ds_prev, reversals = sa, sl, sr, dsa, dsp, rev
        else:
            s[active], s_left[active], s_right[active] = sa, sl, sr
            ds[active], ds_prev[active], reversals[active] = dsa, dsp, rev
        iterations[active] += 1
        if it >= 1:     # never after the first step, which used the cheaper b
            done = np.abs(dsa) <= _SETTLED_STEP * sa
            active = active[~done]
    converged = np.ones(n, dtype=bool)
    converged[active] = False
    return s, iterations, converged


@dataclass(frozen=True)
class IVResult:
    """Implied vols (NaN where there is none), a flag per entry (`FLAGS`) and iterations used."""
    vol: np.ndarray
    flag: np.ndarray
    iterations: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.flag == OK

    def counts(self) -> dict[str, int]:
        """How many entries carry each flag (by name), zeros omitted."""
        c = np.bincount(self.flag, minlength=len(FLAGS))
        return {FLAGS[i]: int(c[i]) for i in range(len(FLAGS)) if c[i]}


def _as_is_call(is_call, shape) -> np.ndarray:
    arr = np.asarray(is_call)
    if arr.dtype.kind in "US" or arr.dtype == object:
        arr = np.char.lower(arr.astype(str))
        arr = np.isin(arr, ("c", "call", "true", "1"))
    return np.broadcast_to(arr.astype(bool), shape)


def implied_vol(price, forward, strike, T_years, is_call, *, max_iterations: int = 8) -> IVResult:
    """Black-76 implied vol (annualised fraction) of undiscounted prices, vectorised.

    `price`, `forward` and `strike` are in the same currency; `is_call` is a bool array (or
    "C"/"P"/"call"/"put" strings). Never raises on bad quotes: see `FLAGS`.
    """
    price, F, K, T = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                           for a in (price, forward, strike, T_years)))
    shape = price.shape
    price, F, K, T = (np.ravel(a) for a in (price, F, K, T))
    call = np.ravel(_as_is_call(is_call, shape))
    n = price.shape[0]
    vol = np.full(n, np.nan)
    flag = np.full(n, OK, dtype=np.int8)
    iterations = np.zeros(n, dtype=np.int16)
    with np.errstate(all="ignore"):
        bad = ~(np.isfinite(price) & np.isfinite(F) & np.isfinite(K) & np.isfinite(T)
                & (F > 0) & (K > 0) & (T > 0))
        intrinsic = np.where(call, np.maximum(F - K, 0.0), np.maximum(K - F, 0.0))
        upper = np.where(call, F, K)
        flag[bad] = BAD_INPUT
        below = ~bad & (price <= intrinsic)
        flag[below] = BELOW_INTRINSIC
        above = ~bad & ~below & (price >= upper)
        flag[above] = ABOVE_MAX
        todo = np.flatnonzero(flag == OK)
        Ft, Kt, Tt = F[todo], K[todo], T[todo]
        x = -np.abs(np.log(Ft / Kt))                       # out-of-the-money twin
        root_fk = np.sqrt(Ft) * np.sqrt(Kt)
        time_value = price[todo] - intrinsic[todo]
        beta = time_value / root_fk
        # subnormal time value, or a time value lost in the rounding of a deep ITM price
        tiny = (beta < _DBL_MIN) | (time_value < 4.0 * _EPS * price[todo])
        beta_max = np.exp(0.5 * x)
        # rounding can push the OTM twin to its own maximum even when the quote is below its
        beta = np.minimum(beta, beta_max * (1.0 - _EPS))
        solve = np.flatnonzero(~tiny)
        s = np.empty(solve.size)
        its = np.empty(solve.size, dtype=np.int16)
        conv = np.empty(solve.size, dtype=bool)
        # chunks small enough that every temporary stays in cache: ~4x faster than whole arrays
        for lo in range(0, solve.size, _CHUNK):
            part = solve[lo:lo + _CHUNK]
            s[lo:lo + _CHUNK], its[lo:lo + _CHUNK], conv[lo:lo + _CHUNK] = normalised_implied_vol(
                beta[part], x[part], max_iterations=max_iterations)
        sigma = s / np.sqrt(Tt[solve])
        idx = todo[solve]
        vol[idx] = sigma
        iterations[idx] = its
        vega_zero = normalised_vega(x[solve], s) <= 0.0
        flag[idx[~conv]] = NOT_CONVERGED
        flag[idx[vega_zero & conv]] = ZERO_VEGA
        flag[todo[tiny]] = ZERO_VEGA
        vol[~np.isfinite(vol)] = np.nan
    return IVResult(vol.reshape(shape), flag.reshape(shape), iterations.reshape(shape))


# --- prices and greeks ----------------------------------------------------------------------------

def black76(forward, strike, T_years, vol, is_call) -> np.ndarray:
    """Undiscounted Black-76 price, accurate in the wings (intrinsic + √(FK)·b(−|x|, σ√T))."""
    F, K, T, v = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                       for a in (forward, strike, T_years, vol)))
    call = _as_is_call(is_call, F.shape)
    with np.errstate(all="ignore"):
        intrinsic = np.where(call, np.maximum(F - K, 0.0), np.maximum(K - F, 0.0))
        x = -np.abs(np.log(F / K))
        tv = np.sqrt(F) * np.sqrt(K) * normalised_black(x.ravel(), (v * np.sqrt(T)).ravel()).reshape(F.shape)
    return intrinsic + tv


def black76_vega(forward, strike, T_years, vol) -> np.ndarray:
    """∂price/∂σ (per unit of vol, same currency as F): F·φ(d1)·√T."""
    F, K, T, v = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64)
                                       for a in (forward, strike, T_years, vol)))
    with np.errstate(all="ignore"):
        x = np.log(F / K)
        s = v * np.sqrt(T)
        return np.sqrt(F) * np.sqrt(K) * np.sqrt(T) * normalised_vega(x, s)
