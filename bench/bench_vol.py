"""Volatility room speed: GARCH vs arch, Markov switching vs statsmodels, realised estimators on
1,000,000 bars vs a pandas groupby, Merton MLE vs a numerical-gradient BFGS.

Targets (issue 5): GARCH(1,1) on 100,000 returns within 1.2× of calling arch directly; Markov
switching on 50,000 returns ≤ 10 s (statsmodels' MarkovRegression on the same returns is the
baseline); all realised estimators on 1,000,000 bars ≤ 1 s. Every baseline runs on the same data
in the same run. `quick` shrinks the sizes (smoke run; no floors).
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from bench.common import best_of, row


def _garch_returns(n: int, seed: int = 1) -> np.ndarray:
    from arch.univariate import GARCH, ConstantMean, Normal

    model = ConstantMean(None, volatility=GARCH(1, 0, 1), distribution=Normal(seed=np.random.default_rng(seed)))
    return model.simulate([0.03, 0.05, 0.08, 0.9], n, burn=500)["data"].to_numpy() / 100


def _markov_returns(n: int, k: int, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    P = (np.array([[0.995, 0.005], [0.01, 0.99]]) if k == 2 else
         np.array([[0.995, 0.004, 0.001], [0.006, 0.99, 0.004], [0.002, 0.008, 0.99]]))
    sigma = np.array([0.001, 0.003] if k == 2 else [0.0005, 0.001, 0.0025])
    u = rng.random(n)
    cum = P.cumsum(1)
    s = np.zeros(n, dtype=np.intp)
    for t in range(1, n):               # simulation only, not timed
        s[t] = np.searchsorted(cum[s[t - 1]], u[t])
    return sigma[s] * rng.standard_normal(n)


def _bars(n: int, seed: int = 3) -> pd.DataFrame:
    """n one-minute bars of a GBM at 3 % a day (range from 10 points per bar)."""
    rng = np.random.default_rng(seed)
    step = 0.03 / math.sqrt(1440 * 10)
    path = 10.0 + np.cumsum(rng.standard_normal((n, 10)) * step, axis=None).reshape(n, 10)
    opens = np.concatenate([[10.0], path[:-1, -1]])
    return pd.DataFrame({
        "timestamp": pd.date_range("2020-01-01", periods=n, freq="1min", tz="UTC"),
        "open": np.exp(opens), "high": np.exp(np.maximum(path.max(1), opens)),
        "low": np.exp(np.minimum(path.min(1), opens)), "close": np.exp(path[:, -1]), "volume": 1.0})


def _pandas_realized(frame: pd.DataFrame) -> pd.DataFrame:
    """The notebook way: per-bar terms in pandas, then a groupby by UTC day."""
    f = frame
    lo, lh, ll, lc = (np.log(f[c]) for c in ("open", "high", "low", "close"))
    prev = lc.shift(1)
    d = pd.DataFrame({"day": f["timestamp"].dt.floor("D"), "r": lc - prev, "o": lo - prev,
                      "c": lc - lo, "park": (lh - ll) ** 2 / (4 * math.log(2)),
                      "gk": 0.5 * (lh - ll) ** 2 - (2 * math.log(2) - 1) * (lc - lo) ** 2,
                      "rs": (lh - lc) * (lh - lo) + (ll - lc) * (ll - lo)})
    d["bp"] = d["r"].abs() * d["r"].abs().shift(1)
    g = d.groupby("day")
    n = g["r"].count()
    k = 0.34 / (1.34 + (n + 1) / (n - 1))
    per_day = 1440
    out = pd.DataFrame({
        "close_to_close": g["r"].var() * per_day, "realized_variance": g["r"].apply(lambda x: (x ** 2).mean()) * per_day,
        "bipower": g["bp"].mean() * math.pi / 2 * per_day, "parkinson": g["park"].mean() * per_day,
        "garman_klass": g["gk"].mean() * per_day, "rogers_satchell": g["rs"].mean() * per_day,
        "yang_zhang": (g["o"].var() + k * g["c"].var() + (1 - k) * g["rs"].mean()) * per_day})
    return np.sqrt(out)


def run(quick: bool = False) -> list[dict]:
    from arch import arch_model
    from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

    from execal.models.vol.base import VolatilityCalibrator
    from execal.models.vol.jumps import loglike as merton_loglike
    from execal.models.vol.realized import bar_series, jump_test, realized_table

    def fit_garch(data, **settings):
        return VolatilityCalibrator("garch", **settings).fit(data)

    def fit_markov(data, **settings):
        return VolatilityCalibrator("markov", **settings).fit(data)

    def fit_merton(data, **settings):
        return VolatilityCalibrator("merton", **settings).fit(data)

    rows = []
    repeat = 1 if quick else 3

    # --- GARCH(1,1) vs arch on the same returns -----------------------------------------------
    n = 10_000 if quick else 100_000
    r = _garch_returns(n)
    t_ours, ours = best_of(lambda: fit_garch(r, period="1D"), repeat)
    t_arch, ref = best_of(lambda: arch_model(100 * r).fit(disp="off"), repeat)
    same = np.allclose(list(ours.params.values()), ref.params.to_numpy(), rtol=1e-10)
    rows.append(row(f"GARCH(1,1) fit, {n:,} returns (params identical: {same})", t_ours,
                    floor_s=None if quick else 1.2 * t_arch, baseline="arch_model(100·r).fit() directly",
                    baseline_s=t_arch, note="floor = 1.2 × arch's time in this run"))

    def ours_full():
        res = fit_garch(r, period="1D")
        return res.to_dict(), res.forecast(10)

    def arch_full():
        res = arch_model(100 * r).fit(disp="off")
        return res.std_err, res.conditional_volatility / 100, res.forecast(horizon=10, reindex=False)
    t_ours, _ = best_of(ours_full, repeat)
    t_arch, _ = best_of(arch_full, repeat)
    rows.append(row(f"GARCH(1,1) fit + std errors + 10-step forecast + JSON, {n:,} returns", t_ours,
                    floor_s=None if quick else 1.2 * t_arch,
                    baseline="arch fit + std_err + conditional vol + forecast", baseline_s=t_arch,
                    note="floor = 1.2 × arch's time in this run"))

    # --- Markov switching vs statsmodels -----------------------------------------------------
    n = 5_000 if quick else 50_000
    for k in (2, 3):
        y = _markov_returns(n, k)
        t_one, one = best_of(lambda: fit_markov(y, k_regimes=k, period="5min", starts=0), 1)
        t_ours, res = best_of(lambda: fit_markov(y, k_regimes=k, period="5min"), 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # statsmodels on returns ×100 (its optimizer struggles with variances ~1e-6)
            t_sm, sm = best_of(lambda: MarkovRegression(100 * y, k_regimes=k, trend="c", switching_trend=False,
                                                        switching_variance=True).fit(disp=False), 1)
        llf_sm = sm.llf + n * math.log(100)   # density of y = 100 × density of 100·y
        rows.append(row(f"Markov switching k={k}, {n:,} returns", t_ours, floor_s=None if quick else 10.0,
                        baseline="statsmodels MarkovRegression.fit", baseline_s=t_sm,
                        note=f"loglik execal {res.loglikelihood:.2f} vs statsmodels {llf_sm:.2f}; "
                             f"converged {res.converged}; {res.stats['multistart']['starts']} starts, "
                             f"spread {res.stats['multistart']['loglik_spread']:.3g}"))
        rows.append(row(f"Markov switching k={k}, {n:,} returns, one start (starts=0)", t_one,
                        baseline="statsmodels MarkovRegression.fit", baseline_s=t_sm,
                        note=f"loglik {one.loglikelihood:.2f}: what the multistart row costs on top"))

    # --- realised estimators on 1,000,000 bars ------------------------------------------------
    n = 100_000 if quick else 1_000_000
    frame = _bars(n)
    t_val, bars = best_of(lambda: bar_series(frame), repeat)
    t_est, table = best_of(lambda: realized_table(bars, "1D"), repeat)
    t_pd, ref_table = best_of(lambda: _pandas_realized(frame), 1)
    full = table["complete"].to_numpy().copy()
    full[0] = False      # the first bar of the data has no previous close: Yang–Zhang differs there
    agree = np.allclose(table.loc[full, "yang_zhang"].to_numpy(),
                        ref_table["yang_zhang"].to_numpy()[full], rtol=1e-8)
    rows.append(row(f"all 7 realised estimators per day, {n:,} 1-min bars", t_est,
                    floor_s=None if quick else 1.0, baseline="pandas per-bar terms + groupby(day)",
                    baseline_s=t_pd, note=f"validation/bar_series adds {t_val:.3f} s; same values: {agree}"))
    t_val_est = t_val + t_est
    rows.append(row(f"bar_series + realised estimators, {n:,} bars (end to end)", t_val_est,
                    floor_s=None if quick else 1.0, baseline="pandas per-bar terms + groupby(day)",
                    baseline_s=t_pd))
    t_jump, jt = best_of(lambda: jump_test(bars), repeat)
    rows.append(row(f"jump tests (Lee-Mykland + BNS), {n:,} bars", t_jump, note=f"{len(jt.times)} jump times"))

    # --- HAR-RV on 1-minute bars vs pandas + statsmodels ---------------------------------------
    n = 200_000 if quick else 1_000_000
    frame = _bars(n, seed=5)

    def fit_har():
        res = VolatilityCalibrator("har").fit(frame)
        return res, res.forecast(22)

    def pandas_statsmodels():
        import statsmodels.api as sm

        close = frame.set_index("timestamp")["close"]
        r = np.log(close).diff()
        daily = (r ** 2).groupby(r.index.floor("D"))
        rv = (daily.mean() * 1440)[daily.count() >= 720]
        w = rv.rolling(5).mean()
        m = rv.rolling(22).mean()
        X = sm.add_constant(pd.concat([rv, w, m], axis=1).iloc[21:-1].to_numpy())
        y = rv.iloc[22:].to_numpy()
        return sm.OLS(y, X).fit(cov_type="HAC", cov_kwds={"maxlags": 22})
    t_h, (hres, _) = best_of(fit_har, repeat)
    t_sm, ref = best_of(pandas_statsmodels, repeat)
    same = np.allclose(list(hres.params.values()), ref.params, rtol=1e-8)
    rows.append(row(f"HAR-RV from {n:,} 1-min bars: daily RV, OLS + HAC, 22-day forecast (params same: {same})",
                    t_h, baseline="pandas daily RV + statsmodels OLS(cov_type='HAC')", baseline_s=t_sm,
                    note=f"{hres.n_obs} daily rows; execal also computes all 7 realised estimators per day"))

    # --- Merton MLE ----------------------------------------------------------------------------
    n = 5_000 if quick else 50_000
    rng = np.random.default_rng(4)
    dt = 1 / 1440
    jumps = rng.poisson(5 * dt, n)
    rm = 0.03 * math.sqrt(dt) * rng.standard_normal(n) + jumps * -0.001 + np.sqrt(jumps) * 0.005 * rng.standard_normal(n)
    t_m, mres = best_of(lambda: fit_merton(rm, period="1min"), 1)

    def numeric_bfgs():
        """The same likelihood, starts and keep-the-best, with scipy's finite-difference gradient."""
        from scipy import optimize

        from execal.models.vol.jumps import _starts
        best = None
        for x0 in _starts(rm, dt):
            z0 = np.array([x0[0], math.log(x0[1]), math.log(x0[2]), x0[3], math.log(x0[4])])

            def nll(z):
                v = -merton_loglike([z[0], math.exp(z[1]), math.exp(z[2]), z[3], math.exp(z[4])], rm, dt)
                return v if np.isfinite(v) else 1e300
            with np.errstate(all="ignore"):
                res = optimize.minimize(nll, z0, method="BFGS")
            best = res if best is None or res.fun < best.fun else best
        return best
    t_b, bres = best_of(numeric_bfgs, 1)
    rows.append(row(f"Merton jump-diffusion MLE, {n:,} returns", t_m,
                    baseline="scipy BFGS, numerical gradient, same starts", baseline_s=t_b,
                    note=f"loglik execal {mres.loglikelihood:.2f} vs baseline {-bres.fun:.2f}"))
    return rows
