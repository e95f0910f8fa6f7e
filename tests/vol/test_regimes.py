"""Markov-switching variance (models/regimes.py): the blocked filter equals the plain Hamilton
filter, the likelihood equals statsmodels' on the same parameters and the fit reaches statsmodels'
optimum, known regimes are recovered (accuracy measured) on simulated and sample data, labels
are ordered by volatility, regime_labels has no look-ahead, real bars, bad input."""
import json
import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.regime_switching.markov_regression import MarkovRegression

from execal.models.data.io import load
from execal.models.vol.realized import returns_from
from execal.models.vol.base import VolatilityCalibrator
from execal.models.vol.regimes import _scan, loglike, param_names, regime_labels, steady_state
from execal.models.data.schema import DataError


def fit_markov(data, **settings):
    return VolatilityCalibrator("markov", **settings).fit(data)


def simulate(P, sigma, n, seed, mu=0.0, start="2024-01-01", freq="5min"):
    rng = np.random.default_rng(seed)
    P = np.asarray(P)
    cum = P.cumsum(1)
    u = rng.random(n)
    s = np.empty(n, dtype=int)
    s[0] = 0
    for t in range(1, n):
        s[t] = min(np.searchsorted(cum[s[t - 1]], u[t]), len(sigma) - 1)
    y = mu + np.asarray(sigma)[s] * rng.standard_normal(n)
    idx = pd.date_range(start, periods=n, freq=freq, tz="UTC")
    return pd.Series(y, index=idx), s


def naive_filter(y, P, mu, sigma2):
    """Hamilton's filter, one step at a time (the textbook recursion)."""
    xi = steady_state(P)
    llf = 0.0
    out = np.empty((len(y), len(mu)))
    for t, yt in enumerate(y):
        pred = xi @ P
        dens = np.exp(-0.5 * (yt - mu) ** 2 / sigma2) / np.sqrt(2 * np.pi * sigma2)
        joint = pred * dens
        f = joint.sum()
        llf += math.log(f)
        xi = joint / f
        out[t] = xi
    return llf, out


P2 = np.array([[0.99, 0.01], [0.03, 0.97]])
P3 = np.array([[0.99, 0.008, 0.002], [0.01, 0.98, 0.01], [0.005, 0.02, 0.975]])


@pytest.mark.parametrize("block", [None, 7, 1000])
def test_blocked_scan_equals_the_plain_filter(block):
    y, _ = simulate(P3, [0.5, 1.0, 3.0], 2_345, seed=1)
    y = y.to_numpy()
    mu, s2 = np.array([0.0, 0.1, -0.2]), np.array([0.3, 1.1, 8.0])
    llf_naive, filt_naive = naive_filter(y, P3, mu, s2)
    logf = -0.5 * (np.log(2 * np.pi * s2) + (y[:, None] - mu) ** 2 / s2)
    m = logf.max(1)
    F, logc = _scan(np.exp(logf - m[:, None]), P3, steady_state(P3), block=block)
    assert m.sum() + logc.sum() == pytest.approx(llf_naive, rel=1e-12)
    np.testing.assert_allclose(F, filt_naive, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("k,switching_mean", [(2, False), (2, True), (3, False), (3, True)])
def test_loglike_equals_statsmodels_on_the_same_params(k, switching_mean):
    y, _ = simulate(P3 if k == 3 else P2, [0.01, 0.02, 0.05][:k], 3_000, seed=2)
    y = y.to_numpy()
    model = MarkovRegression(y, k_regimes=k, trend="c", switching_trend=switching_mean,
                             switching_variance=True)
    assert model.param_names == param_names(k, switching_mean)
    rng = np.random.default_rng(3)
    for _ in range(3):
        P = rng.dirichlet(np.full(k, 1.0) + 20 * np.eye(k)[rng.integers(k)], size=k)
        P = 0.5 * P + 0.5 * np.eye(k)
        params = [P[i, j] for j in range(k - 1) for i in range(k)]
        params += list(rng.normal(0, 0.01, k if switching_mean else 1))
        params += list(np.sort(rng.uniform(1e-4, 3e-3, k)))
        assert loglike(params, y, k, switching_mean) == pytest.approx(model.loglike(np.array(params)),
                                                                      rel=1e-11, abs=1e-7)


def test_fit_reaches_the_statsmodels_optimum():
    y, _ = simulate(P2, [0.01, 0.03], 1_500, seed=4)
    y = y.to_numpy()
    ours = fit_markov(y, k_regimes=2, period="1h")
    sm = MarkovRegression(y, k_regimes=2, trend="c", switching_trend=False,
                          switching_variance=True).fit(disp=False)
    assert ours.loglikelihood >= sm.llf - 1e-6
    assert ours.loglikelihood == pytest.approx(sm.llf, abs=1e-3)
    # statsmodels' labels are arbitrary: put its regimes in variance order, then compare
    p00, p10, const, v0, v1 = sm.params
    se = dict(zip(sm.model.param_names, sm.bse))
    if v0 > v1:
        p00, p10, v0, v1 = 1 - p10, 1 - p00, v1, v0
        se["sigma2[0]"], se["sigma2[1]"] = se["sigma2[1]"], se["sigma2[0]"]
    np.testing.assert_allclose(list(ours.params.values()), [p00, p10, const, v0, v1], rtol=2e-3, atol=1e-7)
    # standard errors agree with statsmodels' (another numerical Hessian) to a few percent
    for name in ("sigma2[0]", "sigma2[1]", "const"):
        assert ours.std_errors[name] == pytest.approx(se[name], rel=0.05), name


def test_recovers_two_simulated_regimes():
    y, s = simulate(P2, [0.001, 0.003], 20_000, seed=5)
    res = fit_markov(y)
    assert res.converged and res.n_obs == 20_000
    acc = np.mean(res.smoothed.argmax(1) == s)
    acc_filtered = np.mean(res.filtered.argmax(1) == s)
    assert acc > 0.97 and acc_filtered > 0.93, (acc, acc_filtered)
    sig = np.sqrt(res.sigma2)
    se = np.array([res.std_errors["sigma2[0]"], res.std_errors["sigma2[1]"]])
    assert np.all(np.abs(res.sigma2 - np.array([1e-6, 9e-6])) < 4 * se), (sig, se)
    assert res.params["p[0->0]"] == pytest.approx(0.99, abs=4 * res.std_errors["p[0->0]"])
    reg = res.regimes
    # expected durations 1/(1-p_ii): 100 and 33 five-minute periods
    assert reg[0]["expected_duration_periods"] == pytest.approx(1 / (1 - res.transition[0, 0]))
    assert 60 < reg[0]["expected_duration_periods"] < 170 and 20 < reg[1]["expected_duration_periods"] < 55
    assert reg[0]["expected_duration_days"] == pytest.approx(reg[0]["expected_duration_periods"] / 288)
    assert reg[0]["share_of_time"] + reg[1]["share_of_time"] == pytest.approx(1.0)
    assert reg[1]["share_of_time"] == pytest.approx(np.mean(s == 1), abs=0.03)
    assert reg[1]["sigma_daily"] == pytest.approx(sig[1] * math.sqrt(288))
    json.dumps(res.to_dict(), allow_nan=False)


def test_recovers_three_regimes_with_switching_means():
    y, s = simulate(P3, [0.5, 1.0, 3.0], 15_000, seed=6)
    y = y + np.array([0.1, 0.0, -0.3])[s]
    res = fit_markov(y, k_regimes=3, switching_mean=True)
    assert res.converged
    assert np.mean(res.smoothed.argmax(1) == s) > 0.85
    np.testing.assert_allclose(np.sqrt(res.sigma2), [0.5, 1.0, 3.0], rtol=0.1)
    np.testing.assert_allclose(res.mu, [0.1, 0.0, -0.3], atol=0.1)


def test_labels_are_ordered_by_volatility_and_do_not_swap():
    y, s = simulate(P2, [0.002, 0.0005], 8_000, seed=7)     # regime 0 of the simulation is the wild one
    a = fit_markov(y)
    b = fit_markov(y.iloc[::-1].set_axis(y.index))          # same data, reversed: another path
    c = fit_markov(y)
    assert a.sigma2[0] < a.sigma2[1] and b.sigma2[0] < b.sigma2[1]
    assert np.mean(a.smoothed.argmax(1) == (1 - s)) > 0.95
    assert a.params == c.params
    np.testing.assert_allclose(a.sigma2, b.sigma2, rtol=0.05)


def test_sample_bars_regimes_match_ground_truth(root):
    """The sample market switches between calm and stressed days (ground_truth.json): the fitted
    regimes classify the days (mean smoothed probability > ½) and recover both sigmas."""
    truth = json.loads((root / "sample_data" / "ground_truth.json").read_text())["market"]
    ds = load(root / "sample_data" / "bars_15m.csv")
    for sym, spec in truth["symbols"].items():
        res = fit_markov(ds, symbol=sym)
        assert res.converged
        path = res.regime_path()
        p_stressed = pd.Series(res.smoothed[:, 1]).groupby(path["timestamp"].dt.floor("D").to_numpy()).mean()
        truth_days = np.asarray(spec["regime_by_day"])
        accuracy = np.mean((p_stressed.to_numpy() > 0.5) == truth_days)
        assert accuracy >= 0.95, (sym, accuracy)
        reg = res.regimes
        assert reg[0]["sigma_daily"] == pytest.approx(spec["sigma_calm"], rel=0.1)
        assert reg[1]["sigma_daily"] == pytest.approx(spec["sigma_stressed"], rel=0.1)


def test_regime_labels_use_filtered_probabilities_without_look_ahead():
    y, s = simulate(P2, [0.001, 0.004], 3_000, seed=8, freq="15min")
    close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(y.to_numpy())]))
    t = pd.date_range(y.index[0] - pd.Timedelta("15min"), periods=len(close), freq="15min", tz="UTC")
    bars = pd.DataFrame({"timestamp": t, "open": np.r_[close[0], close[:-1]], "close": close, "volume": 1.0})
    bars["high"] = bars[["open", "close"]].max(axis=1) * 1.0001
    bars["low"] = bars[["open", "close"]].min(axis=1) * 0.9999
    res = fit_markov(bars)
    arrival = pd.to_datetime([t[0] - pd.Timedelta("1h"), t[500] + pd.Timedelta("7min"),
                              t[2000], t[-1] + pd.Timedelta("10min"), t[-1] + pd.Timedelta("2h")], utc=True)
    fills = pd.DataFrame({"timestamp": arrival})
    labels = regime_labels(fills, bars, res, return_probabilities=True)
    assert labels["regime"].iloc[0] == -1 and labels["regime"].iloc[4] == -1
    # by hand: the last return known at arrival is the bar closed by then; predict one step
    ret = returns_from(bars)
    _, F = res.filter(ret.values)
    for row, a in ((1, arrival[1]), (2, arrival[2]), (3, arrival[3])):
        i = np.searchsorted(ret.known_at_ns, a.value, side="right") - 1
        expect = F[i] @ res.transition
        np.testing.assert_allclose(labels.loc[row, ["p_regime_0", "p_regime_1"]].to_numpy(float), expect)
        assert labels["regime"].iloc[row] == expect.argmax()
    # changing every bar after an arrival does not change its label or probabilities
    late = bars.copy()
    after = late["timestamp"] >= t[2000]
    late.loc[after, ["open", "high", "low", "close"]] *= 1.5
    again = regime_labels(fills.iloc[[1, 2]], late, res, return_probabilities=True)
    pd.testing.assert_frame_equal(again, labels.iloc[[1, 2]])
    # smoothed probabilities would use the future: they differ from the filtered ones somewhere
    assert np.abs(res.smoothed - res.filtered).max() > 0.5


def test_regime_labels_of_other_symbols_are_unknown(root):
    ds = load(root / "sample_data" / "bars_15m.csv")
    res = fit_markov(ds, symbol="ETHUSDT")
    fills = pd.DataFrame({"timestamp": pd.to_datetime(["2024-09-10 12:00"] * 2, utc=True),
                          "symbol": ["ETHUSDT", "BTCUSDT"]})
    lab = regime_labels(fills, ds, res)
    assert lab.iloc[0] in (0, 1) and lab.iloc[1] == -1 and lab.name == "regime"


@pytest.mark.shared_data
def test_real_bars(shared_data):
    res = fit_markov(shared_data / "bars" / "ftx_btc-perp_1m_2022-01.csv", k_regimes=2)
    assert res.converged and res.n_obs == 45_030
    calm, wild = res.regimes
    assert calm["sigma_daily"] < wild["sigma_daily"]
    assert 0.01 < calm["sigma_daily"] < 0.04 and 0.04 < wild["sigma_daily"] < 0.15
    assert all(r["expected_duration_periods"] > 2 for r in res.regimes)
    hourly = fit_markov(shared_data / "bars" / "coinbase_btc-usd_1h_2024.csv", k_regimes=3)
    assert hourly.sigma2[0] < hourly.sigma2[1] < hourly.sigma2[2]
    assert sum(r["share_of_time"] for r in hourly.regimes) == pytest.approx(1.0)
    json.dumps(hourly.to_dict(), allow_nan=False)


def test_bad_input():
    with pytest.raises(DataError, match="too few observations.*at least 100"):
        fit_markov(np.random.default_rng(0).normal(size=60))
    with pytest.raises(DataError, match="constant returns"):
        fit_markov(np.full(500, 0.001))
    with pytest.raises(ValueError, match="k_regimes must be one of 2, 3"):
        fit_markov(np.random.default_rng(0).normal(size=600), k_regimes=4)


def test_cli_writes_regimes_with_volatility_duration_and_share(root, tmp_path, capsys):
    from execal import cli

    out = tmp_path / "vol.json"
    code = cli.main(["vol", str(root / "sample_data" / "bars_15m.csv"), "--model", "markov",
                     "--symbol", "SOLUSDT", "--out", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["converged"] is True and doc["loglikelihood"] is not None
    assert set(doc["params"]) == set(param_names(2, False)) == set(doc["std_errors"])
    calm, stressed = doc["regimes"]
    for reg in (calm, stressed):
        assert {"sigma_daily", "sigma_annualized", "expected_duration_days", "share_of_time"} <= set(reg)
    assert calm["sigma_daily"] == pytest.approx(0.045, rel=0.1)
    assert stressed["sigma_daily"] == pytest.approx(0.095, rel=0.1)
    assert "regime 1: sigma_daily" in capsys.readouterr().err
    # bad input: one clean line, exit 2, no traceback
    code = cli.main(["vol", str(root / "sample_data" / "bars_15m.csv"), "--model", "markov"])
    err = capsys.readouterr().err
    assert code == 2 and "several symbols" in err and "Traceback" not in err


@pytest.mark.shared_data
def test_degenerate_likelihood_is_reported_not_hidden(shared_data):
    """1-second bars of a 2-hour trade tape are mostly flat (no trade, zero return): a regime can
    sit on exact zeros, where the Gaussian likelihood is unbounded. The fit says so."""
    res = fit_markov(shared_data / "tardis" / "binance-futures_trades_BTCUSDT_2020-02-22.csv", bar="1s")
    assert any("variance sits on the floor" in w for w in res.warnings)
    assert res.converged == (not any(w.startswith("not converged") for w in res.warnings))
    assert res.to_dict()["warnings"] == list(res.warnings)


# --- multistart and a common variance (issue 10, item 5) -------------------------------------------

@pytest.fixture(scope="module")
def fedfunds():
    from statsmodels.tsa.regime_switching.tests.test_markov_regression import fedfunds as data

    return np.asarray(data, dtype=np.float64)


def test_multistart_reaches_the_fedfunds_maximum_a_single_start_misses(fedfunds):
    """statsmodels' Fed funds series, switching variance, one mean: one start stops at the local maximum
    −540.229 (what execal reported before); the multistart reaches statsmodels' −539.159 and says how far
    apart its starts ended."""
    sm = MarkovRegression(fedfunds, k_regimes=2, trend="c", switching_trend=False, switching_variance=True)
    sm_res = sm.fit(disp=False)
    assert sm_res.llf == pytest.approx(-539.159, abs=1e-3)
    single = fit_markov(fedfunds, starts=0, period="1D")
    assert single.loglikelihood == pytest.approx(-540.229, abs=1e-3) and single.converged
    res = fit_markov(fedfunds, period="1D")
    assert res.loglikelihood >= -539.159 and res.loglikelihood >= sm_res.llf - 1e-6
    assert res.loglikelihood == pytest.approx(loglike(list(res.params.values()), fedfunds, 2), rel=1e-12)
    ms = res.stats["multistart"]
    starts = res.report.starts
    assert ms["starts"] == len(starts) == 5 and ms["best_loglik"] == res.loglikelihood
    llfs = [s["loglik"] for s in starts]
    assert ms["loglik_spread"] == pytest.approx(max(llfs) - min(llfs)) and ms["loglik_spread"] > 0.5
    assert sum(s["best"] for s in starts) == 1 and res.report.loss == "mle"
    assert "spread of the starts' log-likelihoods" in res.summary()
    # same answer as statsmodels' optimum, regimes in variance order
    p00, p10, const, v0, v1 = sm_res.params
    if v0 > v1:
        p00, p10, v0, v1 = 1 - p10, 1 - p00, v1, v0
    np.testing.assert_allclose(list(res.params.values()), [p00, p10, const, v0, v1], rtol=1e-3)


def test_switching_mean_with_a_common_variance_equals_statsmodels(fedfunds):
    sm = MarkovRegression(fedfunds, k_regimes=2, trend="c", switching_trend=True, switching_variance=False)
    assert sm.param_names == param_names(2, True, False)
    sm_res = sm.fit(disp=False)
    rng = np.random.default_rng(0)
    for _ in range(3):      # the likelihood itself, at arbitrary parameters
        params = [rng.uniform(0.8, 0.99), rng.uniform(0.01, 0.2), rng.uniform(2, 5), rng.uniform(6, 10),
                  rng.uniform(1, 6)]
        assert loglike(params, fedfunds, 2, True, False) == pytest.approx(sm.loglike(np.array(params)), rel=1e-11)
    res = fit_markov(fedfunds, switching_mean=True, switching_variance=False, period="1D")
    assert res.converged and list(res.params) == sm.param_names
    assert res.loglikelihood >= sm_res.llf - 1e-6
    assert res.loglikelihood == pytest.approx(sm_res.llf, abs=1e-4)
    # one variance for both regimes; regimes ordered by mean
    assert res.sigma2[0] == res.sigma2[1] and res.mu[0] < res.mu[1]
    np.testing.assert_allclose(sorted([res.params["const[0]"], res.params["const[1]"]]),
                               sorted(sm_res.params[2:4]), rtol=1e-3)
    assert res.params["sigma2"] == pytest.approx(sm_res.params[4], rel=1e-3)
    se = dict(zip(sm.param_names, sm_res.bse))
    assert res.std_errors["sigma2"] == pytest.approx(se["sigma2"], rel=0.05)
    with pytest.raises(ValueError, match="nothing switches"):
        fit_markov(fedfunds, switching_variance=False)


def test_batched_em_equals_one_start_at_a_time():
    from execal.models.vol import regimes as R

    y, _ = simulate(P3, [0.5, 1.0, 3.0], 1_500, seed=11)
    y = ((y - y.mean()) / y.std()).to_numpy()
    for shape in (R._Shape(3), R._Shape(3, True), R._Shape(2, True, False)):
        rng = np.random.default_rng(1)
        thetas = [R._start(y, shape)] + [R._random_start(y, shape, rng) for _ in range(3)]
        batch = R._em_batch(y, thetas, shape, 1e-6, 25, 1e-8)
        for th0, (th, llf, it, ok) in zip(thetas, batch):
            one = R._em(y, th0, shape, 1e-6, 25, 1e-8)
            assert llf == pytest.approx(one[1], rel=1e-12) and it == one[2] and ok == one[3]
            np.testing.assert_allclose(th.sigma2, one[0].sigma2, rtol=1e-10)
            np.testing.assert_allclose(th.P, one[0].P, rtol=1e-10, atol=1e-14)


def test_fixed_parameters_give_the_same_type_and_likelihood(fedfunds):
    fitted = fit_markov(fedfunds, period="1D")
    fixed = VolatilityCalibrator("markov", period="1D").fix(fitted.params, fedfunds)
    assert type(fixed) is type(fitted) and fixed.status == "fixed" and fixed.report.method == "fixed"
    assert fixed.loglikelihood == pytest.approx(fitted.loglikelihood, rel=1e-10)
    np.testing.assert_allclose(fixed.smoothed, fitted.smoothed, atol=1e-8)
    with pytest.raises(ValueError, match="missing"):
        VolatilityCalibrator("markov").fix({"const": 1.0}, fedfunds)


def test_a_transition_probability_on_the_boundary_is_warned():
    """Three regimes on data with two (calm and wild blocks of 300): the third regime is reached only
    from one of the others, so a transition probability sits at 0 and the fit says so."""
    rng = np.random.default_rng(3)
    s = (np.arange(3000) // 300) % 2
    y = rng.normal(0, 1, 3000) * np.where(s == 1, 3, 1)
    res = fit_markov(y, k_regimes=3, period="1h")
    edge = [b for b in res.report.active_bounds if b.startswith("p[")]
    assert edge, res.report.active_bounds
    i, j = map(int, edge[0][2:edge[0].index("]")].split("->"))
    assert res.transition[i, j] < 1e-6 or res.transition[i, j] > 1 - 1e-6
    assert any(w.startswith(edge[0].split(" =")[0]) and "on the boundary of [0, 1]" in w for w in res.warnings)
    two = fit_markov(y, k_regimes=2, period="1h")          # the right number of regimes: interior
    assert not two.report.active_bounds and not any("boundary" in w for w in two.warnings)
