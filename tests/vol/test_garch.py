"""GARCH family (models/garch.py): equal to arch's own on arch's S&P 500 data, recovery of known
parameters, forecasts, fixed parameters, honest non-convergence, real crypto bars, bad input."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from arch.data import sp500
from arch.univariate import GARCH, ConstantMean, Normal

from execal.models.vol.base import VolatilityCalibrator
from execal.models.data.io import load
from execal.models.vol.realized import returns_from
from execal.models.data.schema import DataError

def fit_garch(data, vol="garch", **settings):
    return VolatilityCalibrator(vol, **settings).fit(data)


def fix_garch(data, params, vol="garch", **settings):
    return VolatilityCalibrator(vol, **settings).fix(params, data)


ARCH_SPEC = {"garch": dict(vol="GARCH", o=0), "gjr": dict(vol="GARCH", o=1), "egarch": dict(vol="EGARCH", o=1)}


@pytest.fixture(scope="module")
def sp500_returns():
    return sp500.load()["Adj Close"].pct_change().dropna()


@pytest.mark.parametrize("vol", ["garch", "gjr", "egarch"])
@pytest.mark.parametrize("dist", ["normal", "t"])
def test_equals_arch_on_sp500(sp500_returns, vol, dist):
    ours = fit_garch(sp500_returns, vol=vol, dist=dist)
    ref = arch_model(100 * sp500_returns, p=1, q=1, dist=dist, **ARCH_SPEC[vol]).fit(disp="off")
    assert ours.scale == 100.0
    assert list(ours.params) == list(ref.params.index)
    np.testing.assert_allclose(list(ours.params.values()), ref.params.to_numpy(), rtol=1e-12, atol=0)
    np.testing.assert_allclose(list(ours.std_errors.values()), ref.std_err.to_numpy(), rtol=1e-10)
    assert ours.loglikelihood_arch == pytest.approx(ref.loglikelihood, rel=1e-14)
    # the reported log-likelihood is of the unscaled returns: + n·ln(100)
    assert ours.loglikelihood == pytest.approx(ref.loglikelihood + len(sp500_returns) * math.log(100), rel=1e-14)
    np.testing.assert_allclose(ours.sigma, ref.conditional_volatility.to_numpy() / 100, rtol=1e-12)
    assert ours.converged and ref.convergence_flag == 0
    fc = ours.forecast(1)
    ref_fc = ref.forecast(horizon=1, reindex=False).variance.iloc[-1, 0] / 1e4
    assert fc["variance"].iloc[0] == pytest.approx(ref_fc, rel=1e-12)


def test_multi_step_forecast_equals_arch_and_converges_to_the_long_run_level(sp500_returns):
    ours = fit_garch(sp500_returns)
    ref = arch_model(100 * sp500_returns).fit(disp="off")
    fc = ours.forecast(2000)
    np.testing.assert_allclose(fc["variance"], ref.forecast(horizon=2000, reindex=False).variance.iloc[-1] / 1e4,
                               rtol=1e-12)
    assert fc["sigma_daily"].iloc[-1] == pytest.approx(ours.stats["sigma_daily_long_run"], rel=1e-3)
    # the cumulative-horizon sigma lies between the one-step and the long-run level
    lo, hi = sorted([fc["sigma_daily"].iloc[0], ours.stats["sigma_daily_long_run"]])
    assert lo <= fc["sigma_daily_horizon"].iloc[20] <= hi
    frame = ours.volatility_frame()
    assert len(frame) == len(sp500_returns)
    np.testing.assert_allclose(frame["sigma_annualized"], frame["sigma_daily"] * math.sqrt(365))


def test_egarch_multi_step_forecast_is_simulated_and_repeatable(sp500_returns):
    res = fit_garch(sp500_returns, vol="egarch")
    a, b = res.forecast(5, seed=1), res.forecast(5, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert (a["sigma"] > 0).all()
    # the one-step forecast is analytic and equals the simulated first step
    assert res.forecast(1)["variance"].iloc[0] == pytest.approx(a["variance"].iloc[0], rel=1e-10)


def test_recovers_known_garch_parameters():
    true = {"mu": 0.02, "omega": 0.05, "alpha[1]": 0.08, "beta[1]": 0.9}
    model = ConstantMean(None, volatility=GARCH(1, 0, 1), distribution=Normal(seed=np.random.default_rng(11)))
    sim = model.simulate(list(true.values()), 20_000, burn=1000)
    res = fit_garch(sim["data"].to_numpy() / 100, period="1D")
    assert res.converged and res.scale == 100.0
    for name, value in true.items():
        assert abs(res.params[name] - value) < 4 * res.std_errors[name], (name, res.params, res.std_errors)
    assert res.stats["persistence"] == pytest.approx(0.98, abs=0.01)


def test_fixed_parameters_give_the_same_result_type(sp500_returns):
    fitted = fit_garch(sp500_returns, vol="gjr", dist="t")
    fixed = fix_garch(sp500_returns, fitted.params, vol="gjr", dist="t")
    assert fixed.status == "fixed" and fitted.status == "fitted"
    assert type(fixed) is type(fitted)
    assert fixed.loglikelihood == pytest.approx(fitted.loglikelihood, rel=1e-12)
    np.testing.assert_allclose(fixed.sigma, fitted.sigma, rtol=1e-12)
    worse = fix_garch(sp500_returns, {**fitted.params, "beta[1]": 0.5}, vol="gjr", dist="t")
    assert worse.loglikelihood < fitted.loglikelihood - 10
    with pytest.raises(ValueError, match="missing"):
        fix_garch(sp500_returns, {"mu": 0.0}, vol="garch")


def test_non_convergence_is_reported(sp500_returns):
    res = fit_garch(sp500_returns, options={"maxiter": 3})
    assert not res.converged
    assert res.report.status != 0 and res.report.loss == "mle" and not res.report.success
    assert "Iteration limit" in res.report.message
    assert any("did not converge" in w for w in res.warnings)
    d = res.to_dict()
    assert d["converged"] is False and d["warnings"]
    json.dumps(d, allow_nan=False)


@pytest.mark.shared_data
def test_ftx_one_minute_bars(shared_data):
    ds = load(shared_data / "bars" / "ftx_btc-perp_1m_2022-01.csv")
    res = fit_garch(ds, dist="t")
    # 1-minute log returns have variance ~1e-7: auto scale picks 1e4 so arch sees variance ~1
    assert res.scale == 1e4
    r = returns_from(ds).values
    ref = arch_model(r * 1e4, dist="t", rescale=False).fit(disp="off")
    np.testing.assert_allclose(list(res.params.values()), ref.params.to_numpy(), rtol=1e-12)
    assert res.converged
    assert 0.9 < res.stats["persistence"] < 1.0
    # daily volatility from 1-minute GARCH agrees with the realised level of the month (3.8 %)
    assert 0.025 < res.stats["sigma_daily_mean"] < 0.05
    json.dumps(res.to_dict(), allow_nan=False)


@pytest.mark.shared_data
def test_coinbase_hourly_and_tardis_trades(shared_data):
    res = fit_garch(shared_data / "bars" / "coinbase_btc-usd_1h_2024.csv", vol="gjr")
    assert res.converged and res.n_obs == 6114
    assert 0.015 < res.stats["sigma_daily_mean"] < 0.05
    trades = fit_garch(shared_data / "tardis" / "binance-futures_trades_BTCUSDT_2020-02-22.csv")
    assert trades.n_obs == 125 and trades.data["frequency"] == "1min"


def test_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="too few observations.*50 returns.*at least 100"):
        fit_garch(rng.normal(0, 0.01, 50))
    with pytest.raises(DataError, match="constant returns"):
        fit_garch(np.zeros(500))
    n = 300
    flat = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC"),
                         "open": 10.0, "high": 10.0, "low": 10.0, "close": 10.0, "volume": 1.0})
    with pytest.raises(DataError, match="constant prices"):
        fit_garch(flat)
    gappy = flat.assign(close=10 + rng.random(n), high=12.0, low=9.0).drop(index=[100])
    with pytest.raises(DataError, match="gaps in the 1h bars.*rows 101"):
        fit_garch(gappy)
    with pytest.raises(ValueError, match="unknown volatility model .figarch"):
        fit_garch(rng.normal(0, 0.01, 500), vol="figarch")


@pytest.mark.shared_data
def test_cli_garch_and_realized(shared_data, tmp_path, capsys):
    from execal import cli

    bars = shared_data / "bars" / "coinbase_btc-usd_1h_2024.csv"
    out = tmp_path / "g.json"
    assert cli.main(["vol", str(bars), "--model", "gjr", "--dist", "t", "--horizon", "24",
                     "--out", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert list(doc["params"]) == ["mu", "omega", "alpha[1]", "gamma[1]", "beta[1]", "nu"]
    assert all(v is not None and v > 0 for v in doc["std_errors"].values())
    assert doc["converged"] is True and doc["report"]["status"] == 0
    assert len(doc["forecast"]) == 24 and doc["forecast"][0]["sigma_daily"] > 0
    out = tmp_path / "r.json"
    assert cli.main(["vol", str(bars), "--model", "realized", "--estimator", "parkinson",
                     "--out", str(out), "--quiet"]) == 0
    doc = json.loads(out.read_text())
    assert doc["settings"]["estimator"] == "parkinson" and len(doc["periods"]) == 256
    assert doc["stats"]["jumps"]["bns_periods_tested"] > 200
    # daily returns from 1-minute bars of one month: too few for a GARCH, said plainly
    code = cli.main(["vol", str(shared_data / "bars" / "ftx_btc-perp_1m_2022-01.csv"), "--model", "garch",
                     "--freq", "1D"])
    err = capsys.readouterr().err
    assert code == 2 and "too few observations for GARCH(1,1): 31 returns at 1D" in err


@pytest.mark.shared_data
def test_gjr_t_on_hourly_btc_sits_on_the_stationarity_boundary_and_says_so(shared_data, tmp_path, capsys):
    """Issue 10, item 6: GJR-t on Coinbase hourly BTC ends with α + γ/2 + β = 1. The fit warns, names
    the active constraint, and half-life / long-run volatility are None with the reason next to them."""
    from execal import cli

    bars = shared_data / "bars" / "coinbase_btc-usd_1h_2024.csv"
    res = fit_garch(bars, vol="gjr", dist="t")
    p = res.params
    assert p["alpha[1]"] + 0.5 * p["gamma[1]"] + p["beta[1]"] == pytest.approx(1.0, abs=1e-6)
    assert res.converged and res.report.active_bounds == ("alpha[1] + 0.5·gamma[1] + beta[1] ≤ 1",)
    assert any(w.startswith("on the stationarity boundary") for w in res.warnings)
    s = res.stats
    assert s["half_life_periods"] is None and s["half_life_days"] is None
    assert "stationarity boundary" in s["half_life_note"]
    assert s["sigma_annualized_long_run"] is None and "no long-run level" in s["long_run_note"]
    # the CLI: still exit 0 (it converged), the warning on stderr and in the JSON, nulls explained
    out = tmp_path / "gjr.json"
    assert cli.main(["vol", str(bars), "--model", "gjr", "--dist", "t", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert any(w.startswith("on the stationarity boundary") for w in doc["warnings"])
    assert doc["stats"]["half_life_days"] is None and "stationarity" in doc["stats"]["half_life_note"]
    assert "on the stationarity boundary" in err and "half-life — (undefined" in err
    assert doc["report"]["active_bounds"] == ["alpha[1] + 0.5·gamma[1] + beta[1] ≤ 1"]


def test_an_interior_fit_has_no_boundary_warning(sp500_returns):
    res = fit_garch(sp500_returns, vol="garch", dist="t")
    assert res.report.active_bounds == () and not any("boundary" in w for w in res.warnings)
    assert res.stats["half_life_days"] > 0 and res.stats["sigma_annualized_long_run"] > 0
    # GJR on the same returns puts all the reaction in γ: α stops at its lower bound 0, and says so
    gjr = fit_garch(sp500_returns, vol="gjr", dist="t")
    assert gjr.params["alpha[1]"] == pytest.approx(0.0, abs=1e-6) and gjr.report.active_bounds == ("alpha[1] ≥ 0",)
    assert any("constraint is active: alpha[1] ≥ 0" in w for w in gjr.warnings)


def test_a_parameter_at_its_bound_is_warned():
    """White noise has no ARCH effect: α ends at its lower bound 0 (a constraint arch enforces)."""
    r = np.random.default_rng(3).normal(0, 0.01, 3000)
    res = fit_garch(r, period="1D")
    assert any(b.startswith("alpha[1]") for b in res.report.active_bounds), res.report.active_bounds
    assert any("boundary" in w and "alpha[1]" in w for w in res.warnings)
    assert res.report.loss == "mle" and res.report.method == "SLSQP (arch)"


def test_few_returns_warn():
    r = np.random.default_rng(2).standard_t(5, 300) * 0.01
    res = fit_garch(r, period="1D")
    assert any(w.startswith("few observations: 300") for w in res.warnings)
