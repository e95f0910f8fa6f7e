"""Volatility-surface benchmarks: implied vols, raw SVI per expiry, the SSVI surface.

Rows (each against a baseline measured on the same data in the same run):
- implied vol of 1,000,000 out-of-the-money prices (floor 1.0 s at 1e-10 relative accuracy)
  against scipy.optimize.newton on the same arrays (vectorised Newton on the price, analytic
  vega, start σ = 0.5); the note gives the largest relative error of both against the true vols,
  and execal's agreement with the `lets-be-rational` package on 2,000 of the prices (when the
  test-only reference is installed) with its per-quote time.
- raw SVI on 12 expiries × 100 strikes (floor 0.1 s for all 12, arbitrage report included)
  against a plain per-slice `scipy.optimize.minimize` (L-BFGS-B, bounds, finite-difference
  gradient, from a heuristic start); the note gives the RMSE (vol points) of both.
- the SSVI surface on the same chain (floor 0.3 s) against `scipy.optimize.minimize`
  (L-BFGS-B, finite-difference gradient) on the same (rho, eta, gamma, theta_i) parametrisation.

The chain: 12 expiries from 1 day to 2 years, 100 strikes over ±3.5 ATM standard deviations,
mid IVs from the sample's SSVI surface (rho −0.2, eta 1.2, gamma 0.45) plus Gaussian noise of
0.2 vol points, bid/ask ±0.5 vol points.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
from scipy import optimize

from bench.common import best_of, row
from execal.models.surface.iv import black76, black76_vega, implied_vol
from execal.models.surface.options import chain_from_vols
from execal.models.surface.svi import SurfaceCalibrator, _slices, _svi_bounds, ssvi_total_variance

SSVI_TRUTH = {"rho": -0.2, "eta": 1.2, "gamma": 0.45}


def _otm_prices(n: int, seed: int = 2):
    rng = np.random.default_rng(seed)
    F = rng.uniform(50, 150, n)
    T = np.exp(rng.uniform(np.log(1 / 365), np.log(3), n))
    vol = np.exp(rng.uniform(np.log(0.05), np.log(3.0), n))
    z = rng.uniform(-4, 4, n)
    K = F * np.exp(z * vol * np.sqrt(T))
    call = K >= F
    return F, K, T, vol, call, black76(F, K, T, vol, call)


def _newton_iv(price, F, K, T, call):
    def f(v):
        return black76(F, K, T, v, call) - price

    def fp(v):
        return black76_vega(F, K, T, v)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return optimize.newton(f, np.full(price.shape, 0.5), fprime=fp, tol=1e-14, maxiter=100)


def _chain(n_exp: int = 12, n_k: int = 100, noise_vol: float = 0.002, seed: int = 5):
    rng = np.random.default_rng(seed)
    Ts = np.geomspace(1 / 365, 2.0, n_exp)
    ks, Tv, ivs = [], [], []
    for T in Ts:
        atm = 0.5 + 0.1 * (1 - np.exp(-T / 0.25))
        theta = atm * atm * T
        k = np.linspace(-3.5, 3.5, n_k) * atm * np.sqrt(T)
        iv = np.sqrt(ssvi_total_variance(k, theta, **SSVI_TRUTH) / T)
        ks.append(k), Tv.append(np.full(n_k, T)), ivs.append(iv + rng.normal(0, noise_vol, n_k))
    k, T, iv = np.concatenate(ks), np.concatenate(Tv), np.concatenate(ivs)
    return chain_from_vols(k, T, iv, iv_bid=iv - 0.005, iv_ask=iv + 0.005)


def _rmse_vol_pts(k, T, iv, w_model):
    return 100.0 * float(np.sqrt(np.mean((np.sqrt(np.maximum(w_model, 0.0) / T) - iv) ** 2)))


def _baseline_svi(slices):
    """Per slice: scipy.optimize.minimize (L-BFGS-B, FD gradient) on the vol-space squared error."""
    out = []
    for s in slices:
        lo, hi = _svi_bounds(s)
        atm = float(np.interp(0.0, s.k, s.w))
        x0 = np.clip([0.5 * atm, 0.1, -0.3, 0.0, 0.2 * float(np.ptp(s.k))], lo, hi)

        def sse(p, s=s):
            w = p[0] + p[1] * (p[2] * (s.k - p[3]) + np.sqrt((s.k - p[3]) ** 2 + p[4] ** 2))
            return float(np.sum((np.sqrt(np.maximum(w, 1e-16) / s.T) - s.iv) ** 2))
        res = optimize.minimize(sse, x0, method="L-BFGS-B", bounds=list(zip(lo, hi)))
        out.append(res)
    return out


def _baseline_ssvi(slices):
    k = np.concatenate([s.k for s in slices])
    iv = np.concatenate([s.iv for s in slices])
    idx = np.concatenate([np.full(s.k.size, i) for i, s in enumerate(slices)])
    T = np.concatenate([np.full(s.k.size, s.T) for s in slices])
    theta0 = np.array([float(np.interp(0.0, s.k, s.w)) for s in slices])

    def sse(p):
        th = p[3:][idx]
        w = ssvi_total_variance(k, th, p[0], p[1], p[2])
        return float(np.sum((np.sqrt(np.maximum(w, 1e-16) / T) - iv) ** 2))
    x0 = np.concatenate([[-0.3, 1.0, 0.4], theta0])
    bounds = [(-0.999, 0.999), (1e-8, 100.0), (0.0, 1.0)] + [(1e-10, 10.0)] * len(slices)
    return optimize.minimize(sse, x0, method="L-BFGS-B", bounds=bounds), k, T, iv, idx


def run(quick: bool = False) -> list[dict]:
    rows = []
    # --- implied vols ---------------------------------------------------------------------------
    n = 100_000 if quick else 1_000_000
    F, K, T, vol, call, price = _otm_prices(n)
    implied_vol(price[:1000], F[:1000], K[:1000], T[:1000], call[:1000])        # warm-up
    secs, res = best_of(lambda: implied_vol(price, F, K, T, call), repeat=3)
    err = np.abs(res.vol / vol - 1.0)
    base_s, v_newton = best_of(lambda: _newton_iv(price, F, K, T, call), repeat=1)
    with np.errstate(all="ignore"):
        err_newton = np.abs(v_newton / vol - 1.0)
    bad_newton = ~np.isfinite(err_newton) | (err_newton > 1e-6)
    note = (f"max rel err {np.nanmax(err):.1e} ({res.counts()}); Newton: {int(bad_newton.sum()):,} "
            f"quotes off by > 1e-6 or not finite (wings), max rel err on the others "
            f"{err_newton[~bad_newton].max():.1e}")
    try:
        from py_lets_be_rational import implied_volatility_from_a_transformed_rational_guess as lbr
        m = 2000
        t0 = time.perf_counter()
        ref = np.array([lbr(price[i], F[i], K[i], T[i], 1.0 if call[i] else -1.0) for i in range(m)])
        per_quote = (time.perf_counter() - t0) / m
        note += (f"; vs lets-be-rational on {m:,}: max rel diff "
                 f"{np.max(np.abs(res.vol[:m] / ref - 1)):.1e} (it takes {1e6 * per_quote:.0f} µs/quote "
                 f"in pure Python)")
    except ImportError:
        note += "; lets-be-rational not installed (test-only reference)"
    rows.append(row(f"implied vol, {n:,} OTM prices", secs, floor_s=1.0,
                    baseline="scipy.optimize.newton (vectorised, analytic vega)", baseline_s=base_s,
                    note=note))

    # --- raw SVI ------------------------------------------------------------------------------------
    chain = _chain()
    slices, _ = _slices(chain, "uniform")
    cal = SurfaceCalibrator("svi", "uniform")
    cal.fit(chain)                                                                # warm-up
    secs, fit = best_of(lambda: cal.fit(chain), repeat=10)
    base_s, base = best_of(lambda: _baseline_svi(slices), repeat=1 if quick else 3)
    rmse_base = [_rmse_vol_pts(s.k, s.T, s.iv, r.x[0] + r.x[1] * (r.x[2] * (s.k - r.x[3])
                                                                  + np.sqrt((s.k - r.x[3]) ** 2 + r.x[4] ** 2)))
                 for s, r in zip(slices, base)]
    rmse_ours = [s.rmse_vol_pts for s in fit.slices]
    rows.append(row("raw SVI, 12 expiries × 100 strikes (quasi-explicit)", secs, floor_s=0.1,
                    baseline="per-slice scipy.optimize.minimize (L-BFGS-B)", baseline_s=base_s,
                    note=f"RMSE vol pts execal {np.mean(rmse_ours):.3f} (max {np.max(rmse_ours):.3f}), "
                         f"baseline {np.mean(rmse_base):.3f} (max {np.max(rmse_base):.3f}); noise 0.2; "
                         f"all converged: {all(s.optimizer.success for s in fit.slices)}; "
                         f"baseline converged {sum(r.success for r in base)}/12"))

    # --- SSVI ------------------------------------------------------------------------------------------
    cal = SurfaceCalibrator("ssvi", "uniform")
    cal.fit(chain)
    secs, fit = best_of(lambda: cal.fit(chain), repeat=10)
    base_s, (bres, k, T, iv, idx) = best_of(lambda: _baseline_ssvi(slices), repeat=1 if quick else 3)
    p = bres.x
    rmse_b = _rmse_vol_pts(k, T, iv, ssvi_total_variance(k, p[3:][idx], p[0], p[1], p[2]))
    gp = fit.global_params
    rows.append(row("SSVI surface, 12 expiries × 100 strikes", secs, floor_s=0.3,
                    baseline="scipy.optimize.minimize (L-BFGS-B, FD gradient)", baseline_s=base_s,
                    note=f"RMSE vol pts execal {fit.rmse_vol_pts:.3f}, baseline {rmse_b:.3f}; "
                         f"rho/eta/gamma {gp['rho']:.4f}/{gp['eta']:.4f}/{gp['gamma']:.4f} "
                         f"(truth -0.2/1.2/0.45); baseline {p[0]:.4f}/{p[1]:.4f}/{p[2]:.4f}, "
                         f"{bres.message}"))
    return rows
