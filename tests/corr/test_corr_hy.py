"""Hayashi–Yoshida and lead–lag: the vectorised sums against a brute-force double loop, the
asynchronous-sampling behaviour on simulated correlated diffusions, and the lead–lag scan on a path
with a known lead."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from execal.models.corr.hy import (HayashiYoshida, cross_covariances, hy_correlation, hy_covariance, lead_lag)
from execal.models.corr.ticks import from_arrays, tick_series
from execal.models.data.schema import DataError


def brute_force_hy(tx, px, ty, py, shift=0):
    """Σ_i Σ_j r_i s_j 1{(t_{i-1}, t_i] ∩ (u_{j-1} − shift, u_j − shift] ≠ ∅}: the definition, two loops."""
    total = 0.0
    for i in range(1, len(tx)):
        for j in range(1, len(ty)):
            a, b = tx[i - 1], tx[i]
            c, d = ty[j - 1] - shift, ty[j] - shift
            if max(a, c) < min(b, d):
                total += (px[i] - px[i - 1]) * (py[j] - py[j - 1])
    return total


def brute_force_null_var(tx, px, ty, py, shift=0):
    total = 0.0
    for i in range(1, len(tx)):
        for j in range(1, len(ty)):
            if max(tx[i - 1], ty[j - 1] - shift) < min(tx[i], ty[j] - shift):
                total += (px[i] - px[i - 1]) ** 2 * (py[j] - py[j - 1]) ** 2
    return total


def series(t, logp, name):
    return from_arrays(np.asarray(t, dtype=np.int64), np.asarray(logp, float), log=True, name=name)


@pytest.mark.parametrize("seed", range(40))
def test_hy_equals_the_double_loop_on_small_inputs(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(3, 30, 2)
    # a small time range so that equal times across the two series (touching intervals) happen often
    tx = np.sort(rng.choice(60, n, replace=False))
    ty = np.sort(rng.choice(60, m, replace=False))
    px, py = rng.standard_normal(n).cumsum(), rng.standard_normal(m).cumsum()
    x, y = series(tx, px, "x"), series(ty, py, "y")
    assert hy_covariance(x, y) == pytest.approx(brute_force_hy(tx, px, ty, py), abs=1e-12)
    assert hy_covariance(y, x) == pytest.approx(brute_force_hy(ty, py, tx, px), abs=1e-12)
    lags = np.array([-7, -3, -1, 0, 2, 5, 11])
    cov, var0 = cross_covariances(x, y, lags)
    for lag, c, v in zip(lags, cov, var0):
        assert c == pytest.approx(brute_force_hy(tx, px, ty, py, shift=lag), abs=1e-12)
        assert v == pytest.approx(brute_force_null_var(tx, px, ty, py, shift=lag), abs=1e-12)


def test_hy_on_identical_times_is_the_realised_covariance():
    rng = np.random.default_rng(3)
    t = np.cumsum(rng.integers(1, 100, 500))
    px, py = rng.standard_normal(500).cumsum(), rng.standard_normal(500).cumsum()
    assert hy_covariance(series(t, px, "x"), series(t, py, "y")) == pytest.approx(np.diff(px) @ np.diff(py), rel=1e-12)


def correlated_ticks(rho: float, n_steps: int, rate_x: float, rate_y: float, seed: int, lag_steps: int = 0,
                     step_ns: int = 1_000_000, sigma: float = 1e-4):
    """Two correlated Brownian log prices on a fine clock (1 ms), y delayed by `lag_steps`, each observed at
    its own Poisson times (probability `rate` per step)."""
    rng = np.random.default_rng(seed)
    z1, z2 = rng.standard_normal((2, n_steps))
    bx = np.cumsum(sigma * z1)
    by = np.cumsum(sigma * (rho * z1 + math.sqrt(1 - rho * rho) * z2))
    t = np.arange(n_steps) * step_ns
    by = by[:n_steps] if lag_steps == 0 else np.concatenate([np.zeros(lag_steps), by[:n_steps - lag_steps]])
    ox = rng.random(n_steps) < rate_x
    oy = rng.random(n_steps) < rate_y
    ox[0] = oy[0] = True
    return series(t[ox], bx[ox], "x"), series(t[oy], by[oy], "y")


def test_hy_is_free_of_the_epps_effect_on_asynchronous_diffusions():
    """Correlated diffusions observed at independent Poisson times: HY recovers ρ, a fine previous-tick grid
    does not (the Epps effect), and the HAC s.e. is of the size of the Monte-Carlo spread."""
    from execal.models.corr.epps import grid_returns, realized_pair
    from execal.models.corr.ticks import calendar_grid

    rho = 0.6
    hy, fine, ses = [], [], []
    for seed in range(12):
        x, y = correlated_ticks(rho, 200_000, 0.02, 0.01, seed)
        out = hy_correlation(x, y)
        hy.append(out["rho"])
        ses.append(out["se"])
        grid = calendar_grid(0, 199_999 * 1_000_000, 20_000_000)    # 20 ms ≪ the 50–100 ms tick spacing
        fine.append(realized_pair(grid_returns([x, y], grid), 0, 1)[0])
    assert abs(np.mean(hy) - rho) < 0.03
    assert np.mean(fine) < 0.5 * rho
    spread = np.std(hy, ddof=1)
    assert 0.5 < np.mean(ses) / spread < 2.0


def test_lead_lag_finds_a_known_lead_and_its_sign():
    # y follows x by 40 ms: the peak is at +40 ms (x leads), significant under both null bands
    x, y = correlated_ticks(0.9, 120_000, 0.05, 0.05, seed=5, lag_steps=40)
    for band in ("asymptotic", "shift"):
        ll = lead_lag(x, y, max_lag_s=0.2, step_s=0.01, band=band, n_shifts=100)
        assert ll.best_lag_s == pytest.approx(0.04)
        assert ll.significant and ll.leader == "x"
        assert ll.best_rho > 0.7 and ll.best_rho > ll.rho_at_zero + 0.2
        assert ll.lead_lag_ratio > 5
        assert "x leads y by 40 ms" in ll.verdict()
    # and the scan of (y, x) is the mirror image
    back = lead_lag(y, x, max_lag_s=0.2, step_s=0.01)
    assert back.best_lag_s == pytest.approx(-0.04) and back.leader == "x"


def test_lead_lag_of_independent_series_stays_in_the_band():
    x, y = correlated_ticks(0.0, 120_000, 0.05, 0.05, seed=8)
    for band in ("asymptotic", "shift"):
        ll = lead_lag(x, y, max_lag_s=0.1, step_s=0.01, band=band, n_shifts=100)
        assert not ll.significant
        assert ll.leader is None and "no significant peak" in ll.verdict()
        assert ll.n_exceed <= 3                 # 21 lags, pointwise 5 %: about one by chance


def test_estimator_contract_matrix_and_fix():
    x, y = correlated_ticks(0.6, 100_000, 0.03, 0.02, seed=1)
    _, z = correlated_ticks(-0.3, 100_000, 0.03, 0.02, seed=2)
    z = series(z.t_ns, z.log_price, "z")
    est = HayashiYoshida(max_lag_s=0.05, lag_step_s=0.01)
    assert est.get_params()["max_lag_s"] == 0.05
    assert est.set_params(band="shift").band == "shift"
    res = est.fit([x, y, z])
    assert res.names == ("x", "y", "z")
    assert set(res.params) == {"rho[x|y]", "rho[x|z]", "rho[y|z]"}
    assert res.correlation[0, 1] == res.params["rho[x|y]"] == res.correlation[1, 0]
    assert res.report.method == "closed_form" and res.converged
    assert len(res.lead_lag) == 3
    lo, hi = res.conf_int()["rho[x|y]"]
    assert lo < res.params["rho[x|y]"] < hi
    d = res.to_dict()
    assert d["kind"] == "correlation" and d["lead_lag"][0]["convention"].startswith("lag > 0")
    cfg = res.to_config({"file": "sim"})
    assert cfg["schema_version"] == 1 and cfg["data"] == {"file": "sim"}
    assert "rho[x|y]" in res.summary()
    fixed = est.fix({"rho[x|y]": 0.5, "rho[x|z]": 0.0, "rho[y|z]": 0.1}, [x, y, z])
    assert type(fixed) is type(res) and fixed.report.method == "fixed"
    assert fixed.covariance[0, 1] == pytest.approx(0.5 * math.sqrt(fixed.covariance[0, 0] * fixed.covariance[1, 1]))
    with pytest.raises(ValueError, match="missing"):
        est.fix({"rho[x|y]": 0.5}, [x, y, z])


def test_bad_input_names_file_column_and_rows():
    frame = pd.DataFrame({"timestamp": pd.to_datetime([1, 2, 3, 4], unit="s", utc=True),
                          "symbol": "BTC", "price": [1.0, -2.0, 3.0, 4.0], "quantity": 1.0})
    with pytest.raises(DataError, match=r"column 'price'.*rows 2"):
        tick_series(frame)
    good = frame.assign(price=[1.0, 2.0, 3.0, 4.0])
    with pytest.raises(DataError, match="at least two series"):
        HayashiYoshida().fit(good)
    late = good.assign(timestamp=pd.to_datetime([10, 11, 12, 13], unit="s", utc=True), symbol="ETH")
    with pytest.raises(DataError, match="do not overlap"):
        HayashiYoshida().fit(pd.concat([good, late]))


def test_same_timestamp_ticks_keep_the_last_and_are_counted():
    frame = pd.DataFrame({"timestamp": pd.to_datetime([1, 1, 1, 2, 3, 3, 4], unit="s", utc=True),
                          "symbol": "BTC", "price": [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6], "quantity": 1.0})
    (s,) = tick_series(frame)
    assert s.n == 4
    assert np.allclose(np.exp(s.log_price), [1.2, 1.3, 1.5, 1.6])
    assert s.report.dropped[-1].count == 3
