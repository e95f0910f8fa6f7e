"""HAR-RV (models/vol/har.py): the regression equals statsmodels' OLS on the same design (coefficients to
1e-10, Newey-West HAC standard errors with the same lags), the realised variance and the design equal a
direct loop, the multi-step forecast equals the recursion written out, known coefficients are recovered
from simulated intraday returns, out-of-sample metrics, the stationarity boundary, the contract (fix,
config round trip) and the three places a new model touches (CLI choice, panel picker, config schema)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from execal.models.core.registry import ENTRIES, describe, models_of_kind
from execal.models.data.schema import DataError
from execal.models.vol.base import VolatilityCalibrator, VolatilityResult
from execal.models.vol.har import HarResult, har_design

TRUE = {"const": -0.35, "beta_d": 0.35, "beta_w": 0.3, "beta_m": 0.25}     # log HAR, daily


def simulate_log_har(days: int, per_day: int, seed: int, params=TRUE, noise=0.25):
    """Intraday log returns whose daily variance follows a log HAR: log RV_{t+1} = c + b_d log RV_t +
    b_w log mean(RV_{t-4..t}) + b_m log mean(RV_{t-21..t}) + e, spread evenly over `per_day` returns."""
    rng = np.random.default_rng(seed)
    c, bd, bw, bm = (params[k] for k in ("const", "beta_d", "beta_w", "beta_m"))
    level = c / (1 - bd - bw - bm)
    rv = np.full(days + 200, math.exp(level))
    for t in range(22, rv.shape[0] - 1):
        x = np.log([rv[t], rv[t - 4:t + 1].mean(), rv[t - 21:t + 1].mean()])
        rv[t + 1] = math.exp(c + bd * x[0] + bw * x[1] + bm * x[2] + noise * rng.standard_normal())
    rv = rv[200:] * 1e-4                        # variance per day, fraction² (σ ≈ 1–3 % a day)
    r = rng.standard_normal((days, per_day)) * np.sqrt(rv / per_day)[:, None]
    idx = pd.date_range("2021-01-01", periods=days * per_day, freq=pd.Timedelta(days=1) / per_day, tz="UTC")
    return pd.Series(r.ravel(), index=idx), rv


def bars_of(returns: pd.Series) -> pd.DataFrame:
    close = 100 * np.exp(np.cumsum(returns.to_numpy()))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame({"timestamp": returns.index, "open": open_, "high": np.maximum(open_, close) * 1.0001,
                         "low": np.minimum(open_, close) * 0.9999, "close": close, "volume": 1.0})


@pytest.fixture(scope="module")
def hourly():
    r, _ = simulate_log_har(700, 24, seed=1)
    return bars_of(r)


def statsmodels_fit(res: HarResult, correction: bool = False):
    d = res.design_frame()
    d = d[d["train"]]
    return sm.OLS(d["target"].to_numpy(), d[["const", "rv_d", "rv_w", "rv_m"]].to_numpy()).fit(
        cov_type="HAC", cov_kwds={"maxlags": res.stats["hac_lags"], "use_correction": correction})


@pytest.mark.parametrize("settings", [{}, {"log": True}, {"ahead": 5, "hac_correction": True},
                                      {"hac_lags": 7, "log": True, "test_fraction": 0.25},
                                      {"estimator": "bipower", "lags": (1, 7, 30)}])
def test_equals_statsmodels_ols_with_hac(hourly, settings):
    res = VolatilityCalibrator("har", **settings).fit(hourly)
    ref = statsmodels_fit(res, settings.get("hac_correction", False))
    np.testing.assert_allclose(list(res.params.values()), ref.params, rtol=1e-10, atol=0)
    np.testing.assert_allclose(list(res.std_errors.values()), ref.bse, rtol=1e-10, atol=0)
    assert res.stats["r2"] == pytest.approx(ref.rsquared, rel=1e-10)
    if "hac_lags" in settings:
        assert res.stats["hac_lags"] == settings["hac_lags"]
    else:   # documented default: the longest window, at least ahead − 1, at most a quarter of the rows
        assert res.stats["hac_lags"] == max(res.lags[-1], res.ahead - 1)
    # HAC differs from the i.i.d. standard errors: overlapping regressors are serially dependent
    iid = sm.OLS(ref.model.endog, ref.model.exog).fit()
    assert not np.allclose(iid.bse, ref.bse, rtol=0.01)


def test_realised_variance_and_design_equal_a_direct_loop(hourly):
    res = VolatilityCalibrator("har").fit(hourly)
    # RV of a complete day = the sum of its squared hourly log returns (the first day has no first return)
    close = hourly.set_index("timestamp")["close"]
    r = np.log(close).diff().dropna()
    by_day = (r ** 2).groupby(r.index.floor("D"))
    full = by_day.count() == 24
    rv = res.rv_series()
    direct = by_day.sum()[full]
    direct.index = direct.index.as_unit("ns")
    pd.testing.assert_series_equal(rv.loc[direct.index], direct.rename("rv"), check_freq=False, check_index_type=False,
                                   check_names=False, rtol=1e-12)
    assert len(rv) == 700 and rv.index[0] == pd.Timestamp("2021-01-01", tz="UTC")   # day 1: 23 of 24 kept
    # the design, one row at a time
    v = rv.to_numpy()
    d = res.design_frame()
    for row in (0, 1, 100, len(d) - 1):
        t = 21 + row
        assert d["rv_d"].iloc[row] == pytest.approx(v[t], rel=1e-14)
        assert d["rv_w"].iloc[row] == pytest.approx(sum(v[t - i] for i in range(5)) / 5, rel=1e-12)
        assert d["rv_m"].iloc[row] == pytest.approx(sum(v[t - i] for i in range(22)) / 22, rel=1e-12)
        assert d["target"].iloc[row] == pytest.approx(v[t + 1], rel=1e-14)
        assert d["timestamp"].iloc[row] == rv.index[t + 1]
    X, y, base = har_design(v, (1, 5, 22), 1, log=True)
    np.testing.assert_allclose(X[:, 1:], np.log(d[["rv_d", "rv_w", "rv_m"]].to_numpy()), rtol=1e-14)


def test_multi_step_forecast_is_the_recursion(hourly):
    for log in (False, True):
        res = VolatilityCalibrator("har", log=log).fit(hourly)
        b = res.params
        hist = list(res.rv)
        expect = []
        for _ in range(30):
            x = [hist[-1], np.mean(hist[-5:]), np.mean(hist[-22:])]
            if log:
                f = b["const"] + b["beta_d"] * math.log(x[0]) + b["beta_w"] * math.log(x[1]) + b["beta_m"] * math.log(x[2])
                hist.append(math.exp(f))
                expect.append(math.exp(f + 0.5 * res.resid_var))
            else:
                f = b["const"] + b["beta_d"] * x[0] + b["beta_w"] * x[1] + b["beta_m"] * x[2]
                hist.append(f)
                expect.append(f)
        fc = res.forecast(30)
        np.testing.assert_allclose(fc["variance"], expect, rtol=1e-12)
        np.testing.assert_allclose(fc["sigma_daily"], np.sqrt(expect), rtol=1e-12)
        assert fc["timestamp"].iloc[0] == res.rv_series().index[-1] + pd.Timedelta("1D")
        # far out the recursion settles at the long-run level the stats report
        far = res.forecast(2000)["sigma_annualized"].iloc[-1]
        if not log:
            assert far == pytest.approx(res.stats["sigma_annualized_long_run"], rel=1e-6)


def test_recovers_known_log_har_coefficients():
    r, _ = simulate_log_har(3000, 96, seed=7)
    res = VolatilityCalibrator("har", log=True).fit(r)     # given returns: RV = Σ r² per day
    assert res.n_obs == 3000 - 22 and res.warnings == ()
    # the simulation's RV is scaled by 1e-4: in logs a shift s, so the intercept is c + s·(1 − Σβ)
    shift = math.log(1e-4) * (1 - TRUE["beta_d"] - TRUE["beta_w"] - TRUE["beta_m"])
    for name, value in {**TRUE, "const": TRUE["const"] + shift}.items():
        # 96 returns a day measure RV with ~15 % noise: a small errors-in-variables bias, hence the slack
        assert abs(res.params[name] - value) < 4 * res.std_errors[name] + 0.05, (name, res.params, res.std_errors)
    assert res.stats["persistence"] == pytest.approx(0.9, abs=0.05)


def test_out_of_sample_metrics(hourly):
    res = VolatilityCalibrator("har", test_fraction=0.2, ahead=3).fit(hourly)
    d = res.design_frame()
    n_test = res.stats["test_rows"]
    assert n_test == round(0.2 * len(d)) and (~d["train"]).sum() == n_test + 2      # gap of ahead − 1 rows
    train = d[d["train"]]
    beta = np.linalg.lstsq(train[["const", "rv_d", "rv_w", "rv_m"]].to_numpy(), train["target"].to_numpy(),
                           rcond=None)[0]
    np.testing.assert_allclose(list(res.params.values()), beta, rtol=1e-10)
    test = d.iloc[-n_test:]
    err = test["target"] - test["fitted"]
    assert res.stats["mse_oos"] == pytest.approx(float(np.mean(err ** 2)), rel=1e-12)
    r2 = 1 - float(np.sum(err ** 2)) / float(np.sum((test["target"] - train["target"].mean()) ** 2))
    assert res.stats["r2_oos"] == pytest.approx(r2, rel=1e-12)
    assert res.stats["qlike_oos"] > 0


def test_non_stationary_coefficients_warn_and_say_why(hourly):
    res = VolatilityCalibrator("har").fix({"const": 1e-5, "beta_d": 0.5, "beta_w": 0.4, "beta_m": 0.2}, hourly)
    assert res.status == "fixed" and res.report.method == "fixed"
    assert any("stationarity boundary" in w for w in res.warnings)
    s = res.stats
    assert s["half_life_days"] is None and "stationarity boundary" in s["half_life_note"]
    assert s["sigma_annualized_long_run"] is None and "does not revert" in s["long_run_note"]
    fitted = VolatilityCalibrator("har").fit(hourly)
    assert not any("stationarity" in w for w in fitted.warnings)
    assert fitted.stats["half_life_days"] > 0 and fitted.stats["sigma_annualized_long_run"] > 0


def test_contract_fix_and_config_round_trip(hourly):
    cal = VolatilityCalibrator("har", log=True, lags=(1, 5, 22))
    assert cal.get_params()["log"] is True and cal.set_params(log=False).get_params()["log"] is False
    res = cal.fit(hourly)
    assert isinstance(res, VolatilityResult) and res.converged and res.report.loss == "none"
    assert "HAC (Newey-West" in res.summary() and "R² in sample" in res.summary()
    cfg = json.loads(json.dumps(res.to_config({"file": "hourly.csv"}), allow_nan=False))
    assert cfg["kind"] == "volatility" and cfg["model"] == "har" and cfg["data"]["file"] == "hourly.csv"
    again = VolatilityCalibrator.from_config(cfg).fix(cfg["params"], hourly)
    assert type(again) is type(res) and again.status == "fixed"
    np.testing.assert_allclose(again.forecast(10)["variance"], res.forecast(10)["variance"], rtol=1e-12)
    json.dumps(res.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="has no setting 'lag'"):
        VolatilityCalibrator("har", lag=3)


def test_bad_input(hourly):
    with pytest.raises(DataError, match="too few observations for HAR-RV.*need at least 50"):
        VolatilityCalibrator("har").fit(hourly.iloc[: 24 * 60])
    with pytest.raises(ValueError, match="from returns .no bars. the realised variance is one of"):
        VolatilityCalibrator("har", estimator="parkinson").fit(np.random.default_rng(0).normal(0, 0.01, 5000))
    with pytest.raises(ValueError, match="lags must be three increasing"):
        VolatilityCalibrator("har", lags=(5, 1, 22)).fit(hourly)


def test_one_registry_line_makes_a_cli_choice_a_panel_option_and_a_config_schema(hourly, tmp_path, capsys):
    from execal import cli
    from execal.components import vol_panel

    assert ENTRIES["har"] == ("volatility", "execal.models.vol.har:HAR_MODEL")
    assert "har" in models_of_kind("volatility") and "har" in vol_panel.garch_models()
    schema = describe()["models"]["har"]
    assert schema["kind"] == "volatility" and schema["forecasts"] is True
    assert schema["settings"]["lags"] == [1, 5, 22] and "hac_lags" in schema["option_help"]
    path = tmp_path / "hourly.csv"
    hourly.to_csv(path, index=False)
    out = tmp_path / "har.json"
    code = cli.main(["vol", str(path), "--model", "har", "--log", "--lags", "1,5,22", "--horizon", "7",
                     "--test-fraction", "0.2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["model"] == "har" and doc["settings"]["log"] is True and len(doc["forecast"]) == 7
    assert doc["report"]["method"] == "closed_form" and doc["stats"]["test_rows"] > 0
    assert "HAR-RV" in err and "out of sample" in err
    assert cli.main(["vol", str(path), "--model", "har", "--dist", "t"]) == 2
    assert "does not take --dist" in capsys.readouterr().err
