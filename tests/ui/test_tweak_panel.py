"""The Tweak panel's callback bodies without a browser: slider ranges from the fit, what a move returns
(checked against Calibrator.fix and error_metrics computed independently), reset, and refit from here."""
from __future__ import annotations

import base64
import math
import warnings

import dash
import numpy as np
import pandas as pd
import pytest
from dash import Patch, no_update
from dash.exceptions import PreventUpdate
from plotly.io.json import to_json_plotly

from execal.components import diagnostics_panel as D
from execal.components import figures
from execal.components import impact_figures as F
from execal.components import results as R
from execal.components import tweak_panel as T
from execal.models.impact.fit import Calibrator, CalibrationWarning
from execal.models.impact.result import error_metrics
from execal.models.impact.simulate import simulate_fills

SESSION = "3f2b8c4e-1d2a-4b5c-8d9e-0a1b2c3d4e5f"


def put(results, result, dataset="ds-key") -> str:
    pooled = getattr(result, "pooled", result)
    run = {"calibrator": dict(pooled.settings), "segments": list(getattr(result, "by", [])), "bootstrap": None}
    key = R.result_key(dataset, {"venue": ["okx"]}, run)
    results.put(key, result, meta={"origin": "fit", "dataset": dataset, "filters": {"venue": ["okx"]},
                                   "settings": run, "source": "fills.csv"})
    return key


def base_of(results, key, target=None, trigger=None):
    return T.controls_outputs(results, {"key": key}, target, trigger)["base"]


def move(results, base, current, name, value, kind=T.SLIDER):
    sliders = dict(base["fitted"])
    boxes = dict(base["fitted"])
    (sliders if kind == T.SLIDER else boxes)[name] = value
    return T.tweak_response(results, base, current, {"type": kind, "param": name}, sliders, boxes, base["order"])


def badge_text(outputs, suffix) -> str:
    for b in outputs[T.DELTAS]:
        if b.id == T._id(suffix):
            return b.children
    raise AssertionError(f"no badge {suffix}")


# --- controls -----------------------------------------------------------------------------------


def test_nice_step():
    assert T.nice_step(1.0) == pytest.approx(0.005)
    assert T.nice_step(0.0761) == pytest.approx(0.0005)
    assert T.nice_step(3000.0) == pytest.approx(20.0)
    assert T.nice_step(0.0) == 0.01


def test_slider_specs_span_five_standard_errors_inside_the_bounds(fitted):
    specs = {s["name"]: s for s in T.slider_specs(fitted)}
    y = specs["Y"]
    se = fitted.std_errors["Y"]
    assert y["value"] == fitted.params["Y"] and y["std_err"] == pytest.approx(se)
    assert y["max"] == pytest.approx(fitted.params["Y"] + 5 * se)
    assert fitted.params["Y"] - 5 * se - y["step"] < y["min"] <= fitted.params["Y"] - 5 * se
    assert (y["max"] - y["min"]) / y["step"] == pytest.approx(T.SLIDER_STEPS, rel=0.6)
    assert (y["lower"], y["upper"]) == (0.0, 20.0)
    h = specs["h"]                     # fixed in the fit: no s.e., the slider covers its bounds
    assert h["fixed"] and (h["min"], h["max"]) == (0.0, 5.0) and h["std_err"] is None
    assert not y["fixed"]


def test_slider_range_clipped_at_a_bound(sample):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        res = Calibrator(bounds={"delta": (0.05, 0.45)}).fit(sample)
    d = {s["name"]: s for s in T.slider_specs(res)}["delta"]
    assert d["max"] == pytest.approx(0.45) and d["min"] <= d["value"] <= d["max"]


def test_controls_for_a_result(results, fitted):
    key = put(results, fitted)
    out = T.controls_outputs(results, {"key": key}, None, None)
    assert out["base"]["order"] == ["h", "Y", "delta"] and out["base"]["key"] == key
    assert out["target_hidden"] and out["target"] == T.POOLED
    js = to_json_plotly(out["controls"])
    for name in ("h", "Y", "delta"):
        for kind in (T.SLIDER, T.BOX, T.FIX):
            assert f'"id":{{"type":"{kind}","param":"{name}"}}' in js.replace(" ", "")
    assert '"updatemode":"drag"' in js and "Y value" in js       # every box is labelled
    empty = T.controls_outputs(results, None, None, None)
    assert empty["base"] is None and T.NO_RESULT in str(empty["controls"].children)


def test_controls_for_a_segmented_result(results, sample):
    seg = Calibrator().fit_segments(sample, by=("venue",))
    key = put(results, seg)
    out = T.controls_outputs(results, {"key": key}, None, None)
    assert [o["value"] for o in out["options"]] == [T.POOLED, "venue=binance", "venue=coinbase", "venue=okx"]
    assert not out["target_hidden"]
    picked = T.controls_outputs(results, {"key": key}, "venue=okx", T.TARGET)
    assert picked["target"] == "venue=okx"
    assert picked["base"]["fitted"]["Y"] == seg.segment(venue="okx").params["Y"]
    # a new result (not a target pick) starts from the pooled fit
    assert T.controls_outputs(results, {"key": key}, "venue=okx", None)["target"] == T.POOLED


# --- moves --------------------------------------------------------------------------------------


def test_resolve_params():
    base = {"key": "k", "target": "pooled", "fitted": {"Y": 1.0, "delta": 0.5},
            "bounds": {"Y": [0.0, 20.0], "delta": [0.05, 1.5]}}
    assert T.resolve_params(base, None, T.BASE, {}, {}) == ({"Y": 1.0, "delta": 0.5}, "full")
    current = {"key": "k", "target": "pooled", "params": {"Y": 2.0, "delta": 0.5}}
    p, what = T.resolve_params(base, current, {"type": T.SLIDER, "param": "delta"}, {"delta": 0.6}, {})
    assert p == {"Y": 2.0, "delta": 0.6} and what == "slider"     # earlier moves are kept
    p, what = T.resolve_params(base, current, {"type": T.BOX, "param": "Y"}, {}, {"Y": 99})
    assert p["Y"] == 20.0 and what == "box"                         # clipped to the bounds
    assert T.resolve_params(base, current, {"type": T.BOX, "param": "Y"}, {}, {"Y": None})[1] == "none"
    stale = {"key": "other", "target": "pooled", "params": {"Y": 7.0}}
    p, _ = T.resolve_params(base, stale, {"type": T.SLIDER, "param": "delta"}, {"delta": 0.7}, {})
    assert p == {"Y": 1.0, "delta": 0.7}                              # another result's values are dropped
    assert T.resolve_params(base, current, T.RESET, {}, {}) == ({"Y": 1.0, "delta": 0.5}, "full")


def test_first_render_at_the_fitted_values_shows_no_change(results, fitted):
    key = put(results, fitted)
    base = base_of(results, key)
    resp = T.tweak_response(results, base, None, T.BASE, {}, {}, base["order"])
    assert resp.params["params"] == base["fitted"]
    assert resp.sliders == [base["fitted"][n] for n in base["order"]]
    assert badge_text(resp.outputs, "delta-rmse-in").endswith("+0 bps")
    fig = resp.outputs[T.PRED_ACTUAL]
    assert fig.data and fig.data[0].name == "binance"               # full figure on first render
    np.testing.assert_allclose(np.asarray(fig.data[0].x, dtype=np.float64),
                               fitted.predicted_bps[fitted.features.group("venue")[0] == 0], rtol=1e-6)


def test_slider_move_matches_fix_and_independent_metrics(results, fitted):
    key = put(results, fitted)
    base = base_of(results, key)
    resp = move(results, base, None, "Y", 0.95)
    params = {**base["fitted"], "Y": 0.95}
    assert resp.params["params"] == params
    assert resp.sliders is no_update                                 # never written back mid-drag
    assert resp.boxes == [params[n] for n in base["order"]]
    # independent: a fresh calibrator's fix on the raw frame, metrics on the train / test split
    fixed = Calibrator(test_fraction=0.2).fix(params, fitted.features)
    train = fitted.is_train
    obs, noise = fitted.features.cost_bps, fitted.features.expected_noise_bps
    m_in = error_metrics(obs[train], fixed.predicted_bps[train], noise[train])
    m_out = error_metrics(obs[~train], fixed.predicted_bps[~train], noise[~train])
    d_rmse = m_in["rmse_bps"] - fitted.in_sample["rmse_bps"]
    d_bias_out = m_out["bias_bps"] - fitted.out_of_sample["bias_bps"]
    assert badge_text(resp.outputs, "delta-rmse-in") == f"Δ RMSE (in-sample) {d_rmse:+.4g} bps"
    assert badge_text(resp.outputs, "delta-bias-out") == f"Δ bias (out-of-sample) {d_bias_out:+.4g} bps"
    assert abs(d_rmse) > 1e-6
    # predicted vs actual: a Patch of every venue trace's x (and the 45° line), values = the fix's
    patch = resp.outputs[T.PRED_ACTUAL]
    assert isinstance(patch, Patch)
    ops = patch.to_plotly_json()["operations"]
    assert [op["location"] for op in ops][:3] == [["data", 0, "x"], ["data", 1, "x"], ["data", 2, "x"]]
    state = T.tweak_state(base["key"], base["target"], fitted)
    first = ops[0]["params"]["value"]
    got = np.frombuffer(base64.b64decode(first["bdata"]), "<f4")
    np.testing.assert_allclose(got, fixed.predicted_bps[state.plan.rows[0]], rtol=1e-6)
    # the curve figure: only the tweaked line moves (trace 2, after the binned costs and the fitted
    # line); its values are the mean of the fix's predictions per participation bin
    curve_ops = resp.outputs[T.CURVE].to_plotly_json()["operations"]
    assert [op["location"] for op in curve_ops] == [["data", 2, "y"]]
    full = T.tweak_response(results, base, resp.params, T.BASE, {}, {}, base["order"]).outputs[T.CURVE]
    assert [t.name for t in full.data] == ["all orders", "all orders: fitted", "all orders: tweaked"]
    codes = state.bins.codes
    means = pd.Series(fixed.predicted_bps).groupby(codes).mean()
    counts = pd.Series(codes).value_counts().sort_index()
    shown = counts.index[counts >= F.MIN_BIN_COUNT]
    np.testing.assert_allclose(curve_ops[0]["params"]["value"], means.loc[shown].to_numpy(), rtol=1e-9)


def test_box_entry_moves_its_slider_clipped_to_the_slider_range(results, fitted):
    key = put(results, fitted)
    base = base_of(results, key)
    resp = move(results, base, None, "Y", 3.0, kind=T.BOX)
    assert resp.params["params"]["Y"] == 3.0                         # inside the bounds: kept as typed
    y_max = base["ranges"]["Y"][1]
    assert resp.sliders[base["order"].index("Y")] == y_max            # the slider shows its end
    assert resp.boxes is no_update                                     # nothing to correct in the boxes
    clipped = move(results, base, None, "Y", 50.0, kind=T.BOX)
    assert clipped.params["params"]["Y"] == 20.0 and clipped.boxes[base["order"].index("Y")] == 20.0
    with pytest.raises(PreventUpdate):
        move(results, base, None, "Y", None, kind=T.BOX)


def test_reset_goes_back_to_the_fit(results, fitted):
    key = put(results, fitted)
    base = base_of(results, key)
    moved = move(results, base, None, "delta", 0.55)
    reset = T.tweak_response(results, base, moved.params, T.RESET, {}, {}, base["order"])
    assert reset.params["params"] == base["fitted"]
    assert reset.sliders == [base["fitted"][n] for n in base["order"]]
    assert badge_text(reset.outputs, "delta-rmse-in").endswith("+0 bps")


def test_tweak_response_size_is_small(results):
    fills, _ = simulate_fills(60_000, seed=5)
    key = put(results, Calibrator().fit(fills))
    base = base_of(results, key)
    resp = move(results, base, None, "delta", 0.55)
    size = len(to_json_plotly([resp.sliders, resp.boxes, resp.params, *resp.outputs.values()]))
    assert size < 1 * 2**20      # a patch of ≤ 20k float32 x values, the curve, the tables


def test_no_result_and_evicted(results):
    assert D.NO_RESULT.split(":")[0] in str(T.tweak_response(results, None, None, T.BASE, {}, {}, []).outputs[T.METRICS].children)
    base = {"key": R.result_key("gone", {}, {}), "target": T.POOLED, "order": [], "fitted": {}, "ranges": {},
            "bounds": {}}
    resp = T.tweak_response(results, base, None, T.BASE, {}, {}, [])
    assert "no longer in the server's cache" in figures.empty_message(resp.outputs[T.CURVE])


# --- refit from here ----------------------------------------------------------------------------


def test_refit_with_a_fixed_parameter_becomes_the_active_result(results, fitted):
    key = put(results, fitted)
    base = base_of(results, key)
    current = move(results, base, None, "Y", 0.9).params
    new_key, message, colour = T.refit(results, base, current, {"h": True, "Y": True, "delta": False}, SESSION)
    assert colour == "success" and "Y" in message and "converged" in message
    new = results.get(new_key)
    assert new.params["Y"] == 0.9 and new.free == ("delta",)
    assert new.params["delta"] != pytest.approx(fitted.params["delta"], abs=1e-6)   # refitted for Y = 0.9
    assert results.active(SESSION) == new_key
    meta = results.meta(new_key)
    assert meta["origin"] == "tweak" and meta["refit_from"] == key and meta["dataset"] == "ds-key"
    assert meta["settings"]["calibrator"]["fixed"] == {"h": 1.0, "Y": 0.9}
    # keyed like a Calibrate-panel fit of the same settings (a repeat is a cache hit there)
    assert new_key == R.result_key("ds-key", {"venue": ["okx"]}, meta["settings"])
    # the same refit again lands on the same key
    assert T.refit(results, base, current, {"h": True, "Y": True, "delta": False}, SESSION)[0] == new_key


def test_refit_frees_a_default_fixed_parameter(results, fitted):
    key = put(results, fitted)
    base = base_of(results, key)
    new_key, _, colour = T.refit(results, base, None, {"h": False, "Y": False, "delta": False}, SESSION)
    assert colour == "success" and "h" in results.get(new_key).free


def test_refit_refusals_and_errors(results, fitted):
    key = put(results, fitted)
    base = base_of(results, key)
    k, message, colour = T.refit(results, base, None, {"h": True, "Y": True, "delta": True}, SESSION)
    assert k is None and colour == "warning" and "untick" in message
    fills, _ = simulate_fills(2_000, seed=1, with_spread=False)
    no_spread = Calibrator().fit(fills)
    key2 = put(results, no_spread, "other")
    base2 = base_of(results, key2)
    k, message, colour = T.refit(results, base2, None, {"h": False, "Y": False, "delta": False}, SESSION)
    assert k is None and colour == "danger" and "spread" in message


def test_refit_segmented_refits_every_segment(results, sample):
    seg = Calibrator().fit_segments(sample, by=("venue",))
    key = put(results, seg)
    base = base_of(results, key)
    new_key, _, colour = T.refit(results, base, None, {"h": True, "Y": False, "delta": True}, SESSION)
    new = results.get(new_key)
    assert colour == "success" and hasattr(new, "segments") and len(new.segments) == 3
    assert all(s.result.params["delta"] == pytest.approx(seg.pooled.params["delta"]) for s in new.segments)
    seg_base = base_of(results, key, "venue=okx", T.TARGET)
    k, message, colour = T.refit(results, seg_base, None, {"h": True}, SESSION)
    assert k is None and "Pooled" in message


def test_state_is_prepared_once(results, fitted):
    key = put(results, fitted)
    s1 = T.tweak_state(key, T.POOLED, fitted)
    assert T.tweak_state(key, T.POOLED, fitted) is s1
    assert math.isclose(s1.fitted_metrics["in-sample"]["rmse_bps"], fitted.in_sample["rmse_bps"], rel_tol=1e-12)


def test_layout_and_callbacks_wired(results):
    app = dash.Dash(__name__)
    R.attach(app, results)
    js = to_json_plotly(T.layout(app))
    for i in (T.CONTROLS, T.RESET, T.REFIT, T.DELTAS, T.METRICS, T.CURVE, T.PRED_ACTUAL, T.TARGET):
        assert f'"id":"{i}"' in js
    assert f'"htmlFor":"{T.TARGET}"' in js
    T.register_callbacks(app)
    outputs = " ".join(app.callback_map)
    assert f"{T.CURVE}.figure" in outputs and f"{R.ACTIVE_RESULT_ID}.data" in outputs


def test_result_without_observed_costs_moves_without_errors(results, sample):
    frame = sample.frame.drop(columns=["arrival_price", "exec_price", "side", "cost_bps"], errors="ignore")
    key = put(results, Calibrator().fix({"Y": 0.8, "delta": 0.5}, frame))
    base = base_of(results, key)
    first = T.tweak_response(results, base, None, T.BASE, {}, {}, base["order"])
    assert figures.empty_message(first.outputs[T.PRED_ACTUAL]) == F.NO_COST
    resp = move(results, base, first.params, "Y", 1.0)
    assert resp.params["params"]["Y"] == 1.0
    assert badge_text(resp.outputs, "delta-rmse-in") == "Δ RMSE (in-sample) — bps"
    assert resp.outputs[T.PRED_ACTUAL] is no_update and resp.outputs[T.CURVE] is no_update
