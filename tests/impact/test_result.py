"""CalibrationResult: immutability, intervals, correlations, metrics against hand computations."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from execal.models.impact.fit import Calibrator
from execal.models.impact.result import CalibrationResult, error_metrics, group_metrics
from execal.models.impact.simulate import simulate_fills


@pytest.fixture(scope="module")
def fills():
    df, _ = simulate_fills(8_000, params={"Y": 0.7, "delta": 0.5}, seed=41, outlier_share=0.01)
    return df


@pytest.fixture(scope="module")
def result(fills):
    return Calibrator(test_fraction=0.2).fit(fills)


def test_result_is_immutable(result):
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.theta = np.zeros(3)
    for name in ("theta", "covariance", "predicted_bps", "residuals_bps", "is_train"):
        with pytest.raises(ValueError):
            getattr(result, name)[0] = 1.0
    params = result.params
    params["Y"] = 99.0
    assert result.params["Y"] != 99.0


def test_conf_int_and_correlation(result):
    se = result.std_errors
    for alpha in (0.05, 0.1):
        z = stats.norm.ppf(1 - alpha / 2)
        for name in result.free:
            lo, hi = result.conf_int(alpha)[name]
            assert lo == pytest.approx(result.params[name] - z * se[name])
            assert hi == pytest.approx(result.params[name] + z * se[name])
    assert np.isnan(result.conf_int()["h"][0])      # fixed parameter
    corr = result.correlation
    assert list(corr.index) == ["Y", "delta"]
    np.testing.assert_allclose(np.diag(corr), 1.0)
    np.testing.assert_allclose(corr.values, corr.values.T)
    assert -1 < corr.loc["Y", "delta"] < 1
    np.testing.assert_allclose(np.sqrt(np.diag(result.covariance)), [se["Y"], se["delta"]])


def test_error_metrics_by_hand():
    obs = np.array([1.0, 2.0, 4.0, 8.0, np.nan])
    pred = np.array([1.5, 1.5, 5.0, 6.0, 3.0])
    noise = np.array([1.0, 2.0, 1.0, 4.0, 1.0])
    m = error_metrics(obs, pred, noise)
    res = np.array([-0.5, 0.5, -1.0, 2.0])
    assert m["n"] == 4
    assert m["rmse_bps"] == pytest.approx(np.sqrt(np.mean(res ** 2)))
    assert m["mae_bps"] == pytest.approx(1.0)
    assert m["median_abs_error_bps"] == pytest.approx(0.75)
    assert m["bias_bps"] == pytest.approx(-0.25)        # mean(predicted − observed)
    o = obs[:4]
    assert m["r2"] == pytest.approx(1 - np.sum(res ** 2) / np.sum((o - o.mean()) ** 2))
    z = res / noise[:4]
    assert m["z_mean"] == pytest.approx(z.mean()) and m["z_rms"] == pytest.approx(np.sqrt(np.mean(z ** 2)))
    assert m["z_std"] == pytest.approx(z.std(ddof=1))
    assert error_metrics(obs[4:], pred[4:])["n"] == 0


def test_group_metrics_match_pandas_groupby():
    rng = np.random.default_rng(0)
    n = 5000
    codes = rng.integers(-1, 4, n)
    obs, pred, noise = rng.normal(5, 3, n), rng.normal(5, 1, n), rng.uniform(1, 3, n)
    got = group_metrics(codes, ("a", "b", "c", "d"), obs, pred, noise)
    frame = pd.DataFrame({"g": codes, "o": obs, "p": pred, "s": noise})
    for code, part in frame[frame["g"] >= 0].groupby("g"):
        want = error_metrics(part["o"].to_numpy(), part["p"].to_numpy(), part["s"].to_numpy())
        have = got["abcd"[code]]
        for key, value in want.items():
            assert have[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_metrics_breakdowns(result, fills):
    m = result.metrics
    assert set(m) >= {"in_sample", "out_of_sample", "walk_forward", "by_venue", "by_symbol",
                      "by_side", "by_size_bucket"}
    assert set(m["by_venue"]) == {"binance", "okx", "coinbase"}
    assert set(m["by_side"]) == {"buy", "sell"}
    assert sum(v["n"] for v in m["by_venue"].values()) == m["in_sample"]["n"] == result.n_train
    assert sum(v["n"] for v in m["by_size_bucket"].values()) == result.n_train
    assert m["out_of_sample"]["n"] == len(fills) - result.n_train
    # residuals are observed − predicted on the rows named by row_index
    np.testing.assert_allclose(result.residuals_bps,
                               fills["cost_bps"].to_numpy()[result.row_index] - result.predicted_bps)


def test_fixed_and_fitted_results_share_the_type(fills, result):
    fixed = Calibrator().fix({"Y": 0.7, "delta": 0.5}, fills)
    assert type(fixed) is type(result) is CalibrationResult
    assert fixed.std_errors["Y"] != fixed.std_errors["Y"]      # NaN: nothing was estimated
    assert fixed.metrics["in_sample"]["n"] == len(fills)
    # a result predicts new data with its own parameters
    np.testing.assert_allclose(fixed.predict(fills), fixed.predicted_bps)


def test_summary_mentions_parameters_and_status(result):
    text = result.summary()
    assert "power_law" in text and "delta" in text and "(fixed)" in text
    assert result.report.message in text
    assert f"{result.params['Y']:.6g}" in text
