"""Merton jump-diffusion (models/jumps.py): likelihood vs a direct Poisson-mixture sum, recovery of
known parameters, jump probabilities at known jump times, no-jump data, real bars, bad input."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from execal.models.vol.base import VolatilityCalibrator
from execal.models.vol.jumps import _loglik_grad, loglike


def fit_merton(data, **settings):
    return VolatilityCalibrator("merton", **settings).fit(data)


def fit_realized(data, **settings):
    return VolatilityCalibrator("realized", **settings).fit(data)
from execal.models.data.schema import DataError


def simulate(n, *, mu=0.0, sigma=0.03, lam=5.0, mu_jump=-0.001, sigma_jump=0.005, dt=1 / 1440, seed=0):
    rng = np.random.default_rng(seed)
    jumps = rng.poisson(lam * dt, n)
    r = (mu * dt + sigma * math.sqrt(dt) * rng.standard_normal(n) + jumps * mu_jump
         + np.sqrt(jumps) * sigma_jump * rng.standard_normal(n))
    idx = pd.date_range("2024-01-01", periods=n, freq=pd.Timedelta(days=dt), tz="UTC")
    return pd.Series(r, index=idx), jumps


def test_loglike_is_the_poisson_mixture_of_normals():
    r, _ = simulate(300, seed=1)
    r = r.to_numpy()
    dt = 1 / 1440
    params = (0.01, 0.03, 50.0, 0.002, 0.004)
    direct = 0.0
    for x in r:
        dens = sum(stats.poisson.pmf(n, 50.0 * dt)
                   * stats.norm.pdf(x, 0.01 * dt + n * 0.002, math.sqrt(0.03 ** 2 * dt + n * 0.004 ** 2))
                   for n in range(30))
        direct += math.log(dens)
    assert loglike(params, r, dt) == pytest.approx(direct, rel=1e-12)


def test_score_is_the_gradient_of_the_likelihood():
    r, _ = simulate(2_000, seed=2)
    y = r.to_numpy() / r.std()
    z = np.array([0.01, math.log(0.8), math.log(0.01), -0.3, math.log(4.0)])
    _, g = _loglik_grad(z, y)
    h = 1e-6
    numeric = [(_loglik_grad(z + h * e, y)[0] - _loglik_grad(z - h * e, y)[0]) / (2 * h) for e in np.eye(5)]
    np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-4)


def test_recovers_known_parameters_and_flags_the_jumps():
    true = {"mu": 0.0, "sigma": 0.03, "lam": 5.0, "mu_jump": -0.001, "sigma_jump": 0.005}
    r, jumps = simulate(50_000, seed=3, **true)
    res = fit_merton(r)
    assert res.converged, res.report.message
    assert res.data["period_s"] == 60
    for name in ("sigma", "lam", "mu_jump", "sigma_jump"):
        assert abs(res.params[name] - true[name]) < 4 * res.std_errors[name], (name, res.params, res.std_errors)
    assert res.params["sigma"] == pytest.approx(0.03, rel=0.02)
    jp = res.jump_probabilities()
    flagged = jp["jump"].to_numpy()
    has_jump = jumps > 0
    precision = (flagged & has_jump).sum() / flagged.sum()
    assert precision > 0.85, precision
    # small jumps hide in the diffusion; the big ones are found
    big = has_jump & (np.abs(r.to_numpy()) > 5 * 0.03 / math.sqrt(1440))
    assert flagged[big].mean() > 0.9
    json.dumps(res.to_dict(), allow_nan=False)


def test_without_jumps_the_jump_share_is_small():
    rng = np.random.default_rng(4)
    r = pd.Series(0.02 / math.sqrt(24) * rng.standard_normal(5_000),
                  index=pd.date_range("2024-01-01", periods=5_000, freq="1h", tz="UTC"))
    res = fit_merton(r)
    assert res.params["sigma"] == pytest.approx(0.02, rel=0.05)
    assert res.stats["jump_share_of_variance"] < 0.1


@pytest.mark.shared_data
def test_real_bars(shared_data):
    path = shared_data / "bars" / "coinbase_btc-usd_1h_2024.csv"
    res = fit_merton(path)
    assert res.converged and res.n_obs == 6114
    assert all(np.isfinite(list(res.std_errors.values())))
    # total volatility of the jump-diffusion vs the realised hourly close-to-close level
    realised = fit_realized(path, estimator="realized_variance").params["sigma_daily"]
    assert res.stats["total_sigma_daily"] == pytest.approx(realised, rel=0.15)
    assert 0 < res.stats["jump_share_of_variance"] < 1
    assert res.params["sigma"] < res.stats["total_sigma_daily"]


def test_bad_input():
    with pytest.raises(DataError, match="too few observations.*at least 200"):
        fit_merton(np.random.default_rng(0).normal(0, 0.01, 150))
    with pytest.raises(DataError, match="constant returns"):
        fit_merton(np.zeros(1_000))


def test_non_convergence_is_reported():
    r, _ = simulate(5_000, seed=6)
    res = fit_merton(r, max_iter=1)
    assert not res.converged
    assert any(w.startswith("not converged") for w in res.warnings)
    assert res.to_dict()["converged"] is False
