"""The calibrator: parameter recovery, robustness, solver agreement, determinism, bad input.

Tolerances (documented here, asserted below), on generated data with Student-t(4) noise of scale
0.5 × expected noise (1e4·sigma·√T) and 1 % outliers, soft_l1 loss with noise weights:
- the truth lies inside the 95 % sandwich confidence interval of every free parameter;
- and within 5 standard errors and REL_TOL relative (20,000 fills): 10 % for the one- and
  two-parameter laws; 30 % for almgren and istar, whose parameters trade off against each other
  (gamma's standard error alone is ~10 % of its value at this size).
A fixed seed makes a single 95 % interval deterministic; that the intervals are honest (coverage
near 95 %, standardised errors with unit spread) is checked over 24 datasets in
`test_sandwich_intervals_have_nominal_coverage`.
"""
import warnings

import numpy as np
import pandas as pd
import pytest

from execal.models.impact.features import Features, impact_features
from execal.models.impact.fit import CalibrationError, CalibrationWarning, Calibrator
from execal.models.impact.result import CalibrationResult
from execal.models.data.schema import DataError
from execal.models.impact.simulate import simulate_fills

TRUTH = {
    "power_law": {"Y": 0.7, "delta": 0.5},
    "sqrt": {"Y": 0.8},
    "linear": {"lambda": 5.0},
    "almgren": {"gamma": 0.314, "eta": 0.142, "beta": 0.6},
    "istar": {"a1": 700.0, "a2": 0.55, "a3": 0.71, "a4": 0.5, "b1": 0.9},
}
REL_TOL = {"power_law": 0.10, "sqrt": 0.10, "linear": 0.10, "almgren": 0.30, "istar": 0.30}


@pytest.fixture(scope="module")
def fills():
    df, _ = simulate_fills(20_000, params=TRUTH["power_law"], seed=11, outlier_share=0.01)
    return df


@pytest.mark.parametrize("model", list(TRUTH))
def test_parameter_recovery(model):
    df, _ = simulate_fills(20_000, model=model, params=TRUTH[model], seed=1000, outlier_share=0.01)
    res = Calibrator(model=model).fit(df)
    assert res.report.success and res.report.converged
    ci, se = res.conf_int(), res.std_errors
    for name, true in TRUTH[model].items():
        est = res.params[name]
        assert ci[name][0] <= true <= ci[name][1], f"{model}.{name}: {true} not in {ci[name]}"
        assert abs(est - true) <= 5 * se[name]
        assert abs(est - true) <= REL_TOL[model] * abs(true), f"{model}.{name}: {est} vs {true}"
    assert res.params["h"] == 1.0 and "h" not in res.free


def test_sandwich_intervals_have_nominal_coverage():
    """Over 24 independent datasets, the 95 % intervals of power_law cover the truth in 19–24
    cases (a Binomial(24, 0.95) lands there with probability > 99 %) and the standardised errors
    (estimate − truth)/SE have a spread between 0.6 and 1.5."""
    covered, zs = 0, []
    for seed in range(24):
        df, _ = simulate_fills(5_000, params=TRUTH["power_law"], seed=500 + seed, outlier_share=0.01)
        res = Calibrator(optimizer="lm_normal").fit(df)
        for name, true in TRUTH["power_law"].items():
            lo, hi = res.conf_int()[name]
            covered += lo <= true <= hi
            zs.append((res.params[name] - true) / res.std_errors[name])
    assert 38 <= covered <= 48, covered      # of 48 intervals (2 parameters × 24)
    assert 0.6 < np.std(zs) < 1.5 and abs(np.mean(zs)) < 0.5


def test_spread_coefficient_is_fitted_when_freed():
    df, _ = simulate_fills(30_000, params={"h": 1.5, "Y": 0.7, "delta": 0.5}, seed=22,
                           noise_scale=0.05, participation_range=(1e-6, 1e-2))
    res = Calibrator(free=("h",)).fit(df)
    assert "h" in res.free
    lo, hi = res.conf_int()["h"]
    assert lo <= 1.5 <= hi
    with pytest.raises(CalibrationError, match="spread_bps"):
        Calibrator(free=("h",)).fit(df.drop(columns="spread_bps"))


def test_robust_loss_with_noise_weights_beats_plain_least_squares():
    """t(3) noise + 2 % outliers at 20–100× noise: soft_l1 with 1/(sigma√T) weights is far more
    accurate than unweighted least squares, on every one of four datasets."""
    err_robust, err_ols = [], []
    for seed in range(4):
        df, _ = simulate_fills(20_000, params={"Y": 0.7, "delta": 0.5}, seed=100 + seed, dof=3,
                               outlier_share=0.02)
        robust = Calibrator(loss="soft_l1", weights="noise").fit(df)
        ols = Calibrator(loss="linear", weights="none").fit(df)
        e_r = np.array([abs(robust.params["Y"] - 0.7) / 0.7, abs(robust.params["delta"] - 0.5) / 0.5])
        e_o = np.array([abs(ols.params["Y"] - 0.7) / 0.7, abs(ols.params["delta"] - 0.5) / 0.5])
        assert e_r.max() < 0.03, f"seed {seed}: robust error {e_r}"
        assert abs(robust.params["Y"] - 0.7) < 4 * robust.std_errors["Y"]
        err_robust.append(e_r)
        err_ols.append(e_o)
    err_robust, err_ols = np.array(err_robust), np.array(err_ols)
    # on average over the datasets, least squares is at least 5× further from the truth
    assert err_ols.mean(axis=0).min() > 5 * err_robust.mean(axis=0).max()
    # and its confidence interval is at least 5× wider (it pays for the outliers)
    assert (ols.std_errors["Y"] > 5 * robust.std_errors["Y"])


@pytest.mark.parametrize("loss", ["linear", "soft_l1", "huber", "cauchy", "arctan"])
def test_fast_normal_equations_solver_reproduces_trf(fills, loss):
    trf = Calibrator(loss=loss, optimizer="trf").fit(fills)
    fast = Calibrator(loss=loss, optimizer="lm_normal").fit(fills)
    assert trf.report.success and fast.report.success
    for name in trf.free:
        assert fast.params[name] == pytest.approx(trf.params[name], rel=1e-6)
    assert fast.report.iterations >= 1 and fast.report.message.endswith("is satisfied.")


def test_other_optimizers_agree(fills):
    base = Calibrator(loss="linear").fit(fills).params
    for opt in ("dogbox", "lm", "differential_evolution", "multistart"):
        res = Calibrator(loss="linear", optimizer=opt, options={"maxiter": 30} if opt.startswith("diff") else None).fit(fills)
        assert res.report.success, opt
        for name in ("Y", "delta"):
            assert res.params[name] == pytest.approx(base[name], rel=1e-5), opt
    ms = Calibrator(optimizer="multistart", options={"starts": 4}).fit(fills)
    assert len(ms.report.starts) == 5
    assert min(s["cost"] for s in ms.report.starts) == pytest.approx(ms.report.cost)
    de = Calibrator(optimizer="differential_evolution", options={"maxiter": 20, "subsample": 5000}).fit(fills)
    assert de.report.starts[0]["stage"] == "global" and de.report.starts[0]["rows"] == 5000


def test_lm_refuses_robust_losses():
    with pytest.raises(CalibrationError, match="lm"):
        Calibrator(optimizer="lm", loss="soft_l1")


def test_bounds_are_respected_and_reported(fills):
    res = Calibrator(bounds={"delta": (0.2, 0.45)}).fit(fills)
    assert res.params["delta"] == pytest.approx(0.45)
    assert any("delta at upper bound" in a for a in res.report.active_bounds)
    assert any("bound" in w for w in res.report.warnings)
    fast = Calibrator(bounds={"delta": (0.2, 0.45)}, optimizer="lm_normal").fit(fills)
    assert fast.params["Y"] == pytest.approx(res.params["Y"], rel=1e-6)
    assert fast.report.active_bounds == res.report.active_bounds


def test_one_sided_bounds(fills):
    res = Calibrator(bounds={"Y": (None, 0.5)}).fit(fills)
    assert res.params["Y"] == pytest.approx(0.5) and res.bounds["Y"] == (-np.inf, 0.5)
    with pytest.raises(CalibrationError, match="finite bounds"):
        Calibrator(optimizer="multistart", bounds={"Y": (None, 0.5)}).fit(fills)


def test_fixed_parameters_are_not_estimated(fills):
    res = Calibrator(fixed={"delta": 0.5}).fit(fills)
    assert res.free == ("Y",) and res.params["delta"] == 0.5
    assert np.isnan(res.std_errors["delta"]) and res.std_errors["Y"] > 0


def test_same_input_and_seed_give_identical_output(fills):
    def run():
        cal = Calibrator(optimizer="multistart", options={"starts": 3}, test_fraction=0.2, seed=5)
        res = cal.bootstrap(result=cal.fit(fills), n=20, by="day")
        return res
    a, b = run(), run()
    assert a.params == b.params
    np.testing.assert_array_equal(a.residuals_bps, b.residuals_bps)
    np.testing.assert_array_equal(a.covariance, b.covariance)
    np.testing.assert_array_equal(a.bootstrap.samples, b.bootstrap.samples)
    assert a.out_of_sample == b.out_of_sample
    c = Calibrator(optimizer="multistart", test_fraction=0.2, seed=6).bootstrap(result=a, n=20, by="day")
    assert not np.array_equal(c.bootstrap.samples, a.bootstrap.samples)
    with pytest.raises(CalibrationError, match="other settings.*loss"):
        Calibrator(loss="huber", test_fraction=0.2).bootstrap(result=a, n=5)


def test_non_converged_fit_is_flagged_not_hidden(fills):
    for opt in ("trf", "lm_normal"):
        with pytest.warns(CalibrationWarning, match="did not converge"):
            res = Calibrator(optimizer=opt, max_nfev=2, tol=1e-15).fit(fills)
        assert res.report.status == 0 and not res.report.success and not res.report.converged
        assert "maximum number of function evaluations" in res.report.message
        assert res.report.warnings[0].startswith("the optimizer did not converge")
        assert "did not converge" in res.summary()


# --- bad input -------------------------------------------------------------------------------

def test_fewer_rows_than_parameters(fills):
    with pytest.raises(CalibrationError, match="need more rows than parameters"):
        Calibrator().fit(fills.head(2))


def test_no_variation_in_size(fills):
    same = fills.head(500).assign(quantity=1.0, adv=100.0)
    with pytest.raises(CalibrationError, match="no variation in order size"):
        Calibrator().fit(same)


def test_missing_sigma_column_is_named(fills):
    with pytest.raises(DataError, match="'volatility'"):
        Calibrator().fit(fills.drop(columns="volatility"))


def test_all_nan_sigma_is_named(fills):
    with pytest.raises(CalibrationError, match="no usable rows.*volatility"):
        Calibrator().fit(fills.head(100).assign(volatility=np.nan))


def test_all_nan_segment_is_named(fills):
    df = fills.copy()
    df.loc[df["venue"] == "okx", "volatility"] = np.nan
    with pytest.raises(CalibrationError, match="segment venue=okx.*volatility"):
        Calibrator().fit_segments(df, by="venue")


def test_dropped_rows_are_counted_with_first_rows(fills):
    df = fills.head(1000).copy()
    df.loc[[4, 9], "volatility"] = np.nan
    df.loc[7, "quantity"] = -1.0
    res = Calibrator().fit(df)
    drops = {d.column: d for d in res.validation.dropped}
    assert drops["volatility"].count == 2 and drops["volatility"].first_rows == [5, 10]
    assert drops["quantity/adv"].count == 1 and drops["quantity/adv"].first_rows == [8]
    assert res.validation.rows_kept == 997 == res.features.n
    assert 4 not in res.row_index


def test_bad_settings_are_refused_before_any_data():
    with pytest.raises(CalibrationError, match="unknown optimizer"):
        Calibrator(optimizer="newton")
    with pytest.raises(CalibrationError, match="no parameter"):
        Calibrator(fixed={"gamma": 1.0})
    with pytest.raises(CalibrationError, match="lower < upper"):
        Calibrator(bounds={"delta": (0.8, 0.2)})
    with pytest.raises(CalibrationError, match="weight_column"):
        Calibrator(weights="column")
    with pytest.raises(CalibrationError, match="unknown impact model"):
        Calibrator(model="nope")


# --- data shapes and options -----------------------------------------------------------------

def test_fit_on_plain_arrays_and_mappings(fills):
    f = impact_features(fills)
    arrays = Features.from_arrays(participation=f.participation, sigma=f.sigma, T_days=f.T_days,
                                  spread_bps=f.spread_bps, cost_bps=f.cost_bps)
    a = Calibrator().fit(arrays)
    b = Calibrator().fit({c: fills[c].to_numpy() for c in ("quantity", "adv", "volatility",
                                                            "duration_s", "spread_bps", "cost_bps")})
    c = Calibrator().fit(fills)
    assert a.params == pytest.approx(c.params, rel=1e-9) and b.params == pytest.approx(c.params, rel=1e-9)
    # no duration: weights fall back to none, and the participation column is used as given
    d = Calibrator().fit({"participation": f.participation, "volatility": f.sigma, "cost_bps": f.cost_bps})
    assert d.weights == "none" and d.report.success


def test_user_weight_column(fills):
    df = fills.assign(w=1.0 / (1e4 * fills["volatility"] * np.sqrt(fills["duration_s"] / 86400)))
    col = Calibrator(weights="column", weight_column="w").fit(df)
    noise = Calibrator(weights="noise").fit(df)
    assert col.params == pytest.approx(noise.params, rel=1e-9)
    with pytest.raises(DataError, match="nope"):
        Calibrator(weights="column", weight_column="nope").fit(df)


def test_horizon_participation(fills):
    res = Calibrator(participation="horizon").fit(fills)
    assert res.participation == "horizon"
    np.testing.assert_allclose(res.features.participation, fills["quantity"] / fills["market_volume"])


def test_chronological_split_and_walk_forward(fills):
    shuffled = fills.sample(frac=1.0, random_state=0)
    res = Calibrator(test_fraction=0.25, walk_forward=3).fit(shuffled)
    ts = res.features.timestamp_ns
    assert ts[~res.is_train].min() >= ts[res.is_train].max()
    assert res.out_of_sample["n"] == 5000 and res.in_sample["n"] == 15000
    wf = res.walk_forward
    assert [f["fold"] for f in wf["folds"]] == [1, 2, 3]
    assert sum(f["test_rows"] for f in wf["folds"]) == wf["out_of_sample"]["n"] == 15000
    assert all(abs(f["params"]["Y"] - 0.7) < 0.1 for f in wf["folds"])


def test_fix_returns_the_same_type(fills):
    cal = Calibrator()
    fitted = cal.fit(fills)
    fixed = cal.fix(fitted.params, fills)
    assert type(fixed) is CalibrationResult and fixed.status == "fixed" and fixed.report.status is None
    np.testing.assert_array_equal(fixed.predicted_bps, fitted.predicted_bps)
    assert fixed.in_sample == fitted.in_sample
    assert fixed.report.cost == pytest.approx(fitted.report.cost, rel=1e-12)
    partial = cal.fix({"Y": 0.5}, fills)
    assert partial.params == {"h": 1.0, "Y": 0.5, "delta": 0.5}
    with pytest.raises(CalibrationError, match="no parameter"):
        cal.fix({"gamma": 1.0}, fills)


def test_bootstrap_intervals(fills):
    cal = Calibrator()
    res = cal.bootstrap(fills, n=60, by="day", seed=3)
    boot = res.bootstrap
    assert boot.samples.shape == (60, 2) and boot.failures == 0 and boot.clusters == 60
    lo, hi = boot.conf_int()["Y"]
    assert lo <= 0.7 <= hi
    # cluster-bootstrap spread is comparable to the sandwich standard error
    assert 0.5 < boot.std_errors["Y"] / res.std_errors["Y"] < 2.0
    by_order = cal.bootstrap(result=res, n=20, by="order_id")
    assert by_order.bootstrap.by == "order_id" and by_order.bootstrap.clusters == len(fills)
    with pytest.raises(DataError, match="timestamp"):
        cal.bootstrap(fills.drop(columns="timestamp"), n=5, by="day")


def test_segments_and_the_equal_coefficient_test():
    per_venue = {"binance": {"Y": 0.6, "delta": 0.5}, "okx": {"Y": 0.8, "delta": 0.5},
                 "coinbase": {"Y": 1.0, "delta": 0.5}}
    df, _ = simulate_fills(30_000, params=per_venue, seed=31, outlier_share=0.01)
    seg = Calibrator().fit_segments(df, by=("venue",))
    assert {s.key["venue"] for s in seg.segments} == set(per_venue)
    for s in seg.segments:
        assert abs(s.result.params["Y"] - per_venue[s.key["venue"]]["Y"]) < 0.05
    assert seg.test["wald"]["p_value"] < 1e-6 and seg.test["chow"]["p_value"] < 1e-6
    assert seg.pooled.features.n == 30_000
    same, _ = simulate_fills(30_000, params={"Y": 0.7, "delta": 0.5}, seed=32, outlier_share=0.01)
    seg2 = Calibrator().fit_segments(same, by=("venue", "symbol"))
    assert len(seg2.segments) == 9
    assert seg2.test["wald"]["p_value"] > 0.01 and seg2.test["wald"]["df"] == 16
    pred = seg.predict(df)
    okx = (df["venue"] == "okx").to_numpy()
    np.testing.assert_allclose(pred[okx], seg.segment(venue="okx").predict(df)[okx])
