"""Impact models, features and the registry: formulas, analytic Jacobians, missing inputs."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import least_squares

from execal.models.impact.features import Features, impact_features
from execal.models.core.registry import KINDS, LOSSES, MODELS, OPTIMIZERS, WEIGHTS, describe, get_model, models_of_kind, register_model
from execal.models.data.schema import DataError
from execal.models.impact.simulate import simulate_fills

MODEL_NAMES = ("sqrt", "power_law", "almgren", "istar", "linear")


def _features(n=400, seed=0, spread=True, market_volume=True):
    rng = np.random.default_rng(seed)
    p = np.exp(rng.uniform(np.log(1e-5), np.log(0.1), n))
    T = rng.uniform(0.001, 0.2, n)
    mv = rng.uniform(100, 5000, n) if market_volume else None
    q = p * 1000.0
    return Features.from_arrays(participation=p, sigma=rng.uniform(0.01, 0.08, n), T_days=T,
                                spread_bps=rng.uniform(0.5, 5, n) if spread else None,
                                market_volume=mv, quantity=q, adv=np.full(n, 1000.0))


def _random_theta(model, rng):
    theta = []
    for p in model.params:
        lo, hi = p.lower, p.upper
        if p.name == "a1":
            lo, hi = 50.0, 2000.0     # keep I* in a realistic range
        theta.append(rng.uniform(lo + 0.1 * (hi - lo), lo + 0.6 * (hi - lo)) if p.name != "h" else 1.3)
    return np.array(theta)


@pytest.mark.parametrize("name", MODEL_NAMES)
@pytest.mark.parametrize("spread", [True, False])
def test_analytic_jacobian_matches_finite_differences(name, spread):
    model = get_model(name)
    f = _features(spread=spread)
    rng = np.random.default_rng(1)
    for _ in range(3):
        theta = _random_theta(model, rng)
        J = model.jacobian(theta, f)
        assert J.shape == (f.n, len(model.params))
        for j in range(len(model.params)):
            step = 1e-6 * max(abs(theta[j]), 1e-2)
            up, down = theta.copy(), theta.copy()
            up[j] += step
            down[j] -= step
            fd = (model.predict(up, f) - model.predict(down, f)) / (2 * step)
            scale = np.abs(fd).max() + 1e-12
            np.testing.assert_allclose(J[:, j], fd, rtol=1e-5, atol=1e-6 * scale,
                                       err_msg=f"{name}: d/d{model.params[j].name}")
        # a subset of columns is the same as those columns of the full Jacobian
        free = [j for j in range(len(model.params)) if j % 2 == 1]
        np.testing.assert_array_equal(model.jacobian(theta, f, free), J[:, free])


def test_predictions_match_the_issue_formulas():
    f = _features()
    p, s, T, sp = f.participation, f.sigma, f.T_days, f.spread_bps
    h = 1.2
    np.testing.assert_allclose(get_model("sqrt").predict({"h": h, "Y": 0.8}, f),
                               h * sp / 2 + 1e4 * 0.8 * s * p ** 0.5, rtol=1e-12)
    np.testing.assert_allclose(get_model("power_law").predict({"h": h, "Y": 0.8, "delta": 0.6}, f),
                               h * sp / 2 + 1e4 * 0.8 * s * p ** 0.6, rtol=1e-12)
    np.testing.assert_allclose(get_model("linear").predict({"h": h, "lambda": 3.0}, f),
                               h * sp / 2 + 1e4 * 3.0 * s * p, rtol=1e-12)
    alm = {"h": h, "gamma": 0.3, "eta": 0.15, "beta": 0.6}
    np.testing.assert_allclose(get_model("almgren").predict(alm, f),
                               h * sp / 2 + 1e4 * s * (0.3 / 2 * p + 0.15 * (p / T) ** 0.6), rtol=1e-12)
    ist = {"h": h, "a1": 700.0, "a2": 0.55, "a3": 0.71, "a4": 0.5, "b1": 0.9}
    pov = f.quantity / (f.quantity + f.market_volume)
    istar = 700.0 * p ** 0.55 * (s * np.sqrt(365.0)) ** 0.71
    np.testing.assert_allclose(get_model("istar").predict(ist, f),
                               h * sp / 2 + 0.9 * istar * pov ** 0.5 + 0.1 * istar, rtol=1e-12)


def test_istar_pov_falls_back_to_adv_and_duration():
    f = _features(market_volume=False)
    pov = np.minimum(f.participation / f.T_days, 1.0)
    np.testing.assert_allclose(f.pov, pov)
    assert get_model("istar").jacobian(get_model("istar").defaults, f).shape[1] == 6


def test_spread_term_is_dropped_without_spread():
    with_spread, without = _features(spread=True), _features(spread=False)
    m = get_model("power_law")
    theta = {"h": 1.0, "Y": 0.7, "delta": 0.5}
    np.testing.assert_allclose(m.predict(theta, with_spread) - m.predict(theta, without),
                               with_spread.spread_bps / 2, rtol=1e-12)
    assert np.all(m.jacobian(m.theta(theta), without)[:, 0] == 0)


def test_features_from_a_frame():
    df, _ = simulate_fills(500, seed=4)
    f = impact_features(df)
    np.testing.assert_allclose(f.participation, df["quantity"] / df["adv"])
    np.testing.assert_allclose(f.T_days, df["duration_s"] / 86400)
    np.testing.assert_allclose(f.expected_noise_bps, 1e4 * df["volatility"] * np.sqrt(df["duration_s"] / 86400))
    horizon = impact_features(df, "horizon")
    np.testing.assert_allclose(horizon.participation, df["quantity"] / df["market_volume"])
    # cost derived from prices when there is no cost_bps column
    derived = impact_features(df.drop(columns="cost_bps"))
    np.testing.assert_allclose(derived.cost_bps, df["cost_bps"], rtol=1e-7, atol=1e-7)
    # string sides are understood too
    strings = df.drop(columns="cost_bps").assign(side=np.where(df["side"] > 0, "BUY", "sell"))
    np.testing.assert_allclose(impact_features(strings).cost_bps, derived.cost_bps)
    unknown = df.drop(columns="cost_bps").assign(side=np.where(np.arange(len(df)) == 2, 0, df["side"]))
    assert np.isnan(impact_features(unknown).cost_bps[2])     # side 0: direction unknown, no cost
    codes, labels = f.group("venue")
    assert set(labels) == {"binance", "okx", "coinbase"}
    assert (np.array(labels)[codes] == df["venue"].to_numpy()).all()


def test_take_rows_keeps_cached_arrays_consistent():
    df, _ = simulate_fills(300, seed=5)
    f = impact_features(df)
    _ = f.log_participation, f.group("venue")
    idx = np.array([5, 1, 200])
    sub = f.take_rows(idx)
    np.testing.assert_array_equal(sub.log_participation, np.log(f.participation[idx]))
    np.testing.assert_array_equal(sub.row_index, idx)
    assert [sub.group("venue")[1][c] for c in sub.group("venue")[0]] == list(df["venue"].iloc[idx])


@pytest.mark.parametrize("name,drop,column", [
    ("power_law", ["volatility"], "volatility"),
    ("sqrt", ["adv"], "adv"),
    ("almgren", ["duration_s"], "duration_s"),
    ("istar", ["market_volume", "duration_s"], "market_volume"),
    ("linear", ["quantity"], "quantity"),
])
def test_a_model_names_the_column_it_needs(name, drop, column):
    df, _ = simulate_fills(100, seed=6)
    with pytest.raises(DataError, match=column) as err:
        impact_features(df.drop(columns=drop), model=name)
    assert name in str(err.value)


def test_registry_is_complete_and_json_ready():
    impact = models_of_kind("impact")
    names = {p.name for m in impact.values() for p in m.params}
    assert names == {"h", "Y", "delta", "gamma", "eta", "beta", "a1", "a2", "a3", "a4", "b1", "lambda"}
    assert set(impact) == set(MODEL_NAMES)
    assert {"trf", "dogbox", "lm", "differential_evolution", "multistart", "lm_normal"} <= set(OPTIMIZERS)
    assert set(LOSSES) == {"linear", "huber", "soft_l1", "cauchy", "arctan"}
    assert {"none", "noise", "column", "auto"} <= set(WEIGHTS)
    d = json.loads(json.dumps(describe()))
    assert {m["kind"] for m in d["models"].values()} <= set(d["kinds"]) == set(KINDS)
    for m in (m for m in d["models"].values() if m["kind"] == "impact"):
        assert m["formula"] and m["params"]
        for p in m["params"]:
            assert p["lower"] < p["upper"] and p["lower"] <= p["default"] <= p["upper"]
            assert p["description"]
    assert d["models"]["power_law"]["params"][0]["fixed_by_default"] is True   # h


def test_registry_accepts_other_kinds_and_rejects_duplicates():
    class Garch:
        name, kind, label, params = "garch_test", "volatility", "GARCH(1,1)", ()

        def describe(self):
            return {"name": self.name, "kind": self.kind}
    try:
        register_model(Garch())
        assert describe()["models"]["garch_test"]["kind"] == "volatility"
        with pytest.raises(ValueError, match="unknown impact model"):
            get_model("garch_test")
        with pytest.raises(ValueError, match="already registered"):
            register_model(Garch())
    finally:
        MODELS.pop("garch_test", None)


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_losses_are_scipys(loss):
    # a residual function independent of x: least_squares' reported cost is ½·Σ c²·rho(z)
    r = np.array([-7.0, -1.5, -0.2, 0.0, 0.3, 0.9, 2.5, 40.0])
    c = 1.7
    res = least_squares(lambda x: r + 0 * x[0], [0.0], loss=loss, f_scale=c, max_nfev=1)
    rho = LOSSES[loss].rho((r / c) ** 2)
    assert res.cost == pytest.approx(0.5 * c * c * rho[0].sum(), rel=1e-12)
    # derivatives by finite differences
    z = (r / c) ** 2 + 0.05
    dz = 1e-6
    for order in (1, 2):
        fd = (LOSSES[loss].rho(z + dz)[order - 1] - LOSSES[loss].rho(z - dz)[order - 1]) / (2 * dz)
        np.testing.assert_allclose(LOSSES[loss].rho(z)[order], fd, rtol=1e-5, atol=1e-9)


def test_predict_propagates_nan_instead_of_failing():
    df, _ = simulate_fills(50, seed=7)
    df.loc[3, "volatility"] = np.nan
    pred = get_model("power_law").predict({"h": 1, "Y": 0.7, "delta": 0.5}, impact_features(df))
    assert np.isnan(pred[3]) and np.isfinite(np.delete(pred, 3)).all()


def test_unknown_parameter_names_are_refused():
    with pytest.raises(ValueError, match="no parameter"):
        get_model("power_law").theta({"Y": 1, "delta": 0.5, "h": 1, "gamma": 1})
    with pytest.raises(ValueError, match="missing"):
        get_model("power_law").theta({"Y": 1})
    assert isinstance(pd.Series(get_model("power_law").defaults).sum(), float)
