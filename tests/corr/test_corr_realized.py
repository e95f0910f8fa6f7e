"""Realised covariance on synchronised grids and the Epps curve: previous-tick sampling against pandas'
merge_asof, refresh times against a direct loop, the Epps effect on simulated asynchronous diffusions,
the HAC standard error against the Monte-Carlo spread."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from execal.models.corr.hac import long_run_sum_var, ratio_corr_se
from execal.models.corr.epps import epps_curve
from execal.models.corr.realized import RealizedCovariance
from execal.models.corr.ticks import calendar_grid, from_arrays, previous_tick, refresh_times
from test_corr_hy import correlated_ticks, series


def test_previous_tick_equals_merge_asof():
    rng = np.random.default_rng(0)
    t = np.sort(rng.choice(10_000, 300, replace=False)).astype(np.int64)
    p = rng.standard_normal(300).cumsum()
    s = series(t, p, "x")
    grid = calendar_grid(-50, 10_050, 37)
    ours = previous_tick(s, grid)
    ref = pd.merge_asof(pd.DataFrame({"g": grid}), pd.DataFrame({"g": t, "p": p}), on="g",
                        direction="backward")["p"].to_numpy()
    assert np.array_equal(np.isnan(ours), np.isnan(ref))
    assert np.allclose(ours[~np.isnan(ours)], ref[~np.isnan(ref)])


def test_refresh_times_equal_a_direct_loop():
    rng = np.random.default_rng(1)
    a = np.sort(rng.choice(5000, 400, replace=False)).astype(np.int64)
    b = np.sort(rng.choice(5000, 150, replace=False)).astype(np.int64)
    c = np.sort(rng.choice(5000, 250, replace=False)).astype(np.int64)
    ss = [series(t, np.zeros(t.size), n) for t, n in ((a, "a"), (b, "b"), (c, "c"))]
    # direct: walk time forward, remembering which series have ticked since the last refresh
    times = sorted(set(a) | set(b) | set(c))
    start = max(a[0], b[0], c[0])
    out = [start]
    fresh = {"a": False, "b": False, "c": False}
    for t in times:
        if t <= start:
            continue
        for name, arr in (("a", a), ("b", b), ("c", c)):
            if t in set(arr):
                fresh[name] = True
        if all(fresh.values()) and t <= min(a[-1], b[-1], c[-1]):
            out.append(t)
            fresh = dict.fromkeys(fresh, False)
    assert refresh_times(ss).tolist() == out


def test_realised_matrix_equals_numpy_on_the_grid():
    x, y = correlated_ticks(0.5, 200_000, 0.02, 0.02, seed=3)
    res = RealizedCovariance(interval="1s", epps=False).fit([x, y])
    start, end = res.window_ns
    grid = calendar_grid(start, end, 1_000_000_000)
    R = np.diff(np.column_stack([previous_tick(x, grid), previous_tick(y, grid)]), axis=0)
    assert np.allclose(res.covariance, R.T @ R, rtol=1e-12)
    rho = (R[:, 0] @ R[:, 1]) / np.sqrt((R[:, 0] @ R[:, 0]) * (R[:, 1] @ R[:, 1]))
    assert res.params["rho[x|y]"] == pytest.approx(rho, rel=1e-12)
    assert res.extras["interval_s"] == 1.0 and res.n_obs["grid_returns"] == len(R)


def test_epps_curve_rises_toward_the_hy_level():
    x, y = correlated_ticks(0.7, 400_000, 0.01, 0.005, seed=4)      # ticks every 100 ms and 200 ms
    curve = epps_curve(x, y, [0.01, 0.05, 0.2, 1.0, 5.0], hy=0.7)
    rho = curve.rho
    assert rho[0] < 0.2 and rho[-1] > 0.6                  # synchronisation bias at 10 ms, gone at 5 s
    assert np.all(np.diff(rho[:4]) > 0)
    # refresh time beats a calendar grid of about its own spacing (0.23 s vs 0.2 s) but keeps some bias
    assert 0.15 < curve.refresh_interval_s < 0.3
    assert rho[2] + 0.1 < curve.refresh_rho < 0.7
    f = curve.frame()
    assert (f["ci_low"] < f["rho"]).all() and (f["rho"] < f["ci_high"]).all()
    res = RealizedCovariance(epps_intervals=[0.05, 1.0]).fit([x, y])
    (e,) = res.epps
    assert e.hy_rho == pytest.approx(0.7, abs=0.05)
    assert e.to_dict()["points"][0]["interval_s"] == 0.05


def test_hac_se_matches_the_monte_carlo_spread_and_the_iid_case():
    # i.i.d. bivariate normal: the delta-method s.e. of the uncentred ratio is ≈ (1 − ρ²)/√n
    rng = np.random.default_rng(6)
    rho, n = 0.5, 4000
    est, ses = [], []
    for _ in range(200):
        z = rng.standard_normal((n, 2))
        x, y = z[:, 0], rho * z[:, 0] + np.sqrt(1 - rho ** 2) * z[:, 1]
        r, s = ratio_corr_se(x * y, x * x, y * y, lags=0)
        est.append(r)
        ses.append(s)
    assert np.mean(ses) == pytest.approx((1 - rho ** 2) / np.sqrt(n), rel=0.05)
    assert np.std(est, ddof=1) == pytest.approx(np.mean(ses), rel=0.15)
    # a serially correlated series: Newey–West sees what the i.i.d. sum does not
    e = rng.standard_normal(20_000)
    ar = np.empty_like(e)
    ar[0] = e[0]
    for t in range(1, e.size):
        ar[t] = 0.8 * ar[t - 1] + e[t]
    ar -= ar.mean()
    assert long_run_sum_var(ar, lags=40) > 5 * float(ar @ ar)


def test_refresh_grid_and_errors():
    x, y = correlated_ticks(0.5, 100_000, 0.02, 0.02, seed=7)
    res = RealizedCovariance(grid="refresh", epps=False).fit([x, y])
    assert 0.02 < res.extras["interval_s"] < 0.2
    with pytest.raises(ValueError, match="grid"):
        RealizedCovariance(grid="daily").fit([x, y])
    with pytest.raises(ValueError, match="choose a shorter interval"):
        RealizedCovariance(interval="1h", epps=False).fit([x, y])
    few = RealizedCovariance(interval="5s", epps=False).fit([x, y])
    assert any("only" in w for w in few.warnings)


def test_mid_quotes_and_crossed_quotes():
    t = pd.to_datetime(np.arange(6), unit="s", utc=True)
    frame = pd.DataFrame({"timestamp": t, "symbol": "BTC", "bid_price": [10, 11, 12, 13, 14, 15.0],
                          "bid_size": 1.0, "ask_price": [11, 12, 11.5, 14, 15, 16.0], "ask_size": 1.0})
    from execal.models.corr.ticks import tick_series

    (s,) = tick_series(frame)
    assert s.price == "mid" and s.n == 5                      # the crossed row 3 is dropped and counted
    assert np.allclose(np.exp(s.log_price), [10.5, 11.5, 13.5, 14.5, 15.5])
    assert "crossed" in s.report.dropped[-1].reason and s.report.dropped[-1].first_rows == [3]
    assert from_arrays(np.arange(3), [1.0, 2.0, 3.0]).n == 3
