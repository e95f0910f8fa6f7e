"""The Diagnostics panel's callback body and layout, without a browser: every output for the active
result, the designed empty states, and errors that never reach the user as a traceback."""
from __future__ import annotations

import warnings

import dash
import plotly.graph_objects as go
from plotly.io.json import to_json_plotly

from execal.components import diagnostics_panel as D
from execal.components import figures
from execal.components import impact_figures as F
from execal.components import results as R
from execal.models.impact.fit import Calibrator, CalibrationWarning
from execal.models.impact.simulate import simulate_fills
from ui_fixtures import text_of


def put(results, result, name="x") -> dict:
    key = R.result_key(name, {}, {"calibrator": dict(getattr(result, "pooled", result).settings)})
    results.put(key, result, meta={"origin": "fit", "dataset": name})
    return {"key": key}


def annotation(fig: go.Figure) -> str:
    return figures.empty_message(fig) if fig.layout.annotations else ""


def test_no_active_result_gives_designed_empty_states(results):
    out = D.diagnostics_outputs(results, None)
    assert set(out) == set(D.OUTPUT_PROPS)
    for g in D.GRAPHS:
        assert len(out[g].data) == 0 and annotation(out[g]) == D.NO_RESULT
    assert D.NO_RESULT in text_of(out[D.STATUS]) and D.NO_RESULT in text_of(out[D.PARAMS])
    # garbage in the store is treated as no result, not an error
    assert annotation(D.diagnostics_outputs(results, {"key": "../../etc"})[D.PRED_ACTUAL]) == D.NO_RESULT


def test_evicted_result_says_so(results):
    out = D.diagnostics_outputs(results, {"key": R.result_key("gone", {}, {})})
    assert annotation(out[D.QQ]) == D.EVICTED
    assert out[D.STATUS].to_plotly_json()["props"]["data-level"] == "warning"


def test_fitted_result_populates_every_figure(results, sample):
    result = Calibrator(test_fraction=0.25).fit(sample)
    out = D.diagnostics_outputs(results, put(results, result))
    for g in (D.PRED_ACTUAL, D.COST_PARTICIPATION, D.RESID_FITTED, D.RESID_TIME, D.RESID_PARTICIPATION,
              D.HISTOGRAM, D.QQ, D.SAMPLES):
        assert len(out[g].data) > 0, g
    assert {t.name for t in out[D.PRED_ACTUAL].data} >= {"binance", "okx", "coinbase"}
    assert out[D.STATUS].to_plotly_json()["props"]["data-level"] == "success"
    assert "Converged" in text_of(out[D.STATUS]) and "15,000 orders in-sample" in text_of(out[D.STATUS])
    params = text_of(out[D.PARAMS])
    assert f"{result.params['Y']:.6g}" in params and "fixed" in params
    metrics = text_of(out[D.METRICS])
    assert f"{result.out_of_sample['rmse_bps']:.4g}" in metrics
    # not segmented: the segment card explains how to get one
    assert "No segments" in annotation(out[D.SEGMENTS])
    assert "segmentation" in text_of(out[D.SEGMENT_TABLES])


def test_result_is_prepared_once_per_process(results, sample, monkeypatch):
    active = put(results, Calibrator().fit(sample))
    first = D.diagnostics_outputs(results, active)
    calls = []
    monkeypatch.setattr(D, "build_diagnostics", lambda r: calls.append(r) or {})
    again = D.diagnostics_outputs(results, active)
    assert again is first and calls == []


def test_segmented_result_shows_segments(results, sample):
    seg = Calibrator().fit_segments(sample, by=("venue",))
    out = D.diagnostics_outputs(results, put(results, seg))
    fig = out[D.SEGMENTS]
    assert len(fig.data) == 2 and "Wald p" in fig.layout.title.text
    tables = text_of(out[D.SEGMENT_TABLES])
    assert "venue=okx" in tables and "Wald" in tables
    # cost vs participation: one marker series per segment
    names = [t.name for t in out[D.COST_PARTICIPATION].data if t.mode == "markers"]
    assert names == ["venue=binance", "venue=coinbase", "venue=okx"]


def test_non_converged_fit_is_flagged_red(results, sample):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        bad = Calibrator(max_nfev=2).fit(sample)
    out = D.diagnostics_outputs(results, put(results, bad))
    status = out[D.STATUS].to_plotly_json()["props"]
    assert status["data-level"] == "danger"
    assert "NOT CONVERGED" in text_of(out[D.STATUS])


def test_unexpected_error_is_one_line_not_a_traceback(results, sample, monkeypatch, caplog):
    active = put(results, Calibrator().fit(sample))

    def boom(result):
        raise ZeroDivisionError("deep inside")
    monkeypatch.setattr(F, "view_of", boom)
    out = D.diagnostics_outputs(results, active)
    text = text_of(out[D.STATUS])
    assert "ZeroDivisionError" in text and "server log" in text and "deep inside" not in text
    assert out[D.STATUS].to_plotly_json()["props"]["data-level"] == "danger"
    assert "diagnostics of" in caplog.text


def test_response_size_with_downsampling(results):
    fills, _ = simulate_fills(60_000, seed=11, outlier_share=0.01)
    out = D.diagnostics_outputs(results, put(results, Calibrator(test_fraction=0.2).fit(fills), "big"))
    drawn = sum(len(t.x) for t in out[D.PRED_ACTUAL].data[:-1])
    assert drawn == F.MAX_SCATTER_POINTS
    size = len(to_json_plotly([out[k] for k in D.OUTPUT_PROPS]))
    assert size < 5 * 2**20


def test_layout_and_callbacks_wired(results):
    app = dash.Dash(__name__)
    R.attach(app, results)
    tree = D.layout(app)
    js = to_json_plotly(tree)
    for i in D.OUTPUT_PROPS:
        assert f'"id":"{i}"' in js
    D.register_callbacks(app)
    outputs = " ".join(app.callback_map)
    for i, prop in D.OUTPUT_PROPS.items():
        assert f"{i}.{prop}" in outputs


def test_result_without_observed_costs_says_so(results, sample):
    """A config's parameters applied to fills without prices (a 'fixed' result): nothing to compare."""
    frame = sample.frame.drop(columns=["arrival_price", "exec_price", "side", "cost_bps"], errors="ignore")
    out = D.diagnostics_outputs(results, put(results, Calibrator().fix({"Y": 0.8, "delta": 0.5}, frame), "nocost"))
    for g in (D.PRED_ACTUAL, D.COST_PARTICIPATION, D.RESID_FITTED, D.RESID_TIME, D.HISTOGRAM, D.QQ):
        assert len(out[g].data) == 0 and annotation(out[g]) == F.NO_COST, g
    assert out[D.STATUS].to_plotly_json()["props"]["data-level"] == "info"
