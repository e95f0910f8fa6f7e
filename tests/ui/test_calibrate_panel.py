"""The Data panel's filters and the Calibrate panel without a browser: settings built from the registry,
the cache lookup before any work, the background run's body (stages, meta, errors), and what is shown."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import plotly
import pytest
from dash import no_update

from browser_utils import fills_csv
from execal.components import calibrate_panel as cp
from execal.components import data_panel as dp
from execal.components import jobs
from execal.components import shell as ui_shell
from execal.components import layout as shell
from execal.components import results as results_mod
from execal.components import store
from execal.models.core import registry
from execal.models.impact.fit import CalibrationError, Calibrator, CalibrationWarning
from execal.models.data.io import load
from execal.models.data.schema import DataError

from ui_fixtures import SAMPLE_FILLS as SAMPLE
from ui_fixtures import ROOT, SESSION


def default_settings(**changes) -> dict:
    c = cp.controls_from_settings(None)
    c.update(changes)
    return cp.build_settings(**c)


def controls(**changes) -> dict:
    c = cp.controls_from_settings(None)
    c.update(changes)
    return c


# --- filters (the Data panel's Filters card) ----------------------------------------------------


def test_filters_from_controls_end_date_is_inclusive():
    filters, problems = dp.filters_from_controls("2024-09-03", "2024-09-05", ["ETHUSDT", "BTCUSDT"], [], "1.5", None)
    assert problems == []
    assert filters == {"symbol": ["BTCUSDT", "ETHUSDT"], "start": "2024-09-03T00:00:00+00:00",
                       "end": "2024-09-06T00:00:00+00:00", "size_min": 1.5}
    frame = pd.DataFrame({"timestamp": pd.to_datetime(["2024-09-02 23:59:59", "2024-09-03 00:00:00", "2024-09-05 23:59:59",
                                                       "2024-09-06 00:00:00"], utc=True),
                          "symbol": ["BTCUSDT"] * 4, "quantity": [2.0, 2.0, 2.0, 2.0]})
    kept = results_mod.apply_filters(frame, filters)
    # the first and last day picked are kept whole; the instants just outside are not
    assert kept["timestamp"].dt.strftime("%m-%d %H:%M:%S").tolist() == ["09-03 00:00:00", "09-05 23:59:59"]


def test_controls_round_trip_through_filters():
    values = ("2024-09-03", "2024-09-05", ["BTCUSDT"], ["okx", "binance"], 0.5, 10.0)
    filters, problems = dp.filters_from_controls(*values)
    assert not problems
    back = dp.controls_from_filters(filters)
    assert dp.same_controls(back, values)
    assert dp.controls_from_filters({}) == dp.NO_FILTER_VALUES
    # an exclusive end inside a day (a CLI filter) shows that day as the last one
    assert dp.controls_from_filters({"end": "2024-09-05T12:00:00Z"})[1] == "2024-09-05"


@pytest.mark.parametrize("values, expected", [
    (("2024-09-05", "2024-09-03", [], [], None, None), "before the start date"),
    ((None, None, [], [], 5, 1), "below the smallest"),
    ((None, None, [], [], -1, None), "must be a number ≥ 0"),
    (("yesterday", None, [], [], None, None), "is not a date"),
])
def test_bad_filter_controls_are_problems_not_filters(values, expected):
    _, problems = dp.filters_from_controls(*values)
    assert len(problems) == 1 and expected in problems[0]


def test_filter_choices_and_status_count_rows():
    frame = load(fills_csv(6, symbol="SOLUSDT", venue="bybit").encode(), name="f.csv").frame
    choices = dp.filter_choices(frame)
    assert choices["symbols"] == ["SOLUSDT"] and choices["venues"] == ["bybit"]
    assert (choices["first_date"], choices["last_date"]) == ("2024-03-01", "2024-03-01")
    assert (choices["size_min"], choices["size_max"]) == (1.0, 6.0)
    assert all(choices["has"].values())
    text, color = dp.filter_status(frame, {"size_min": 3})
    assert text == "4 of 6 rows pass the filters." and color == "text-body"
    text, color = dp.filter_status(frame, {"venue": ["nowhere"]})
    assert text.startswith("No rows pass") and color == "text-danger"
    assert dp.filter_status(frame, {})[0] == "No filters: all 6 rows are used."
    bars = pd.DataFrame({"timestamp": frame["timestamp"], "close": 1.0})
    assert dp.filter_choices(bars)["has"] == {"timestamp": True, "symbol": False, "venue": False, "quantity": False}


def test_filter_card_follows_the_active_result(st, results, fills_key):
    key = results_mod.result_key(fills_key, {"venue": ["okx"]}, {"x": 1})
    results.put(key, {"stand-in": True}, meta={"dataset": fills_key, "filters": {"venue": ["okx"]}})
    active, active_result = {"key": fills_key}, {"key": key}
    # a result of the active dataset: its filters come back (page reload, import, cached repeat)
    out = dp.filter_card_update(st, results, triggered={results_mod.ACTIVE_RESULT_ID}, active=active,
                                active_result=active_result, current=dp.NO_FILTER_VALUES)
    assert out["values"] == (None, None, [], ["okx"], None, None) and out["choices"] is None
    # already showing them: nothing to change
    out = dp.filter_card_update(st, results, triggered={results_mod.ACTIVE_RESULT_ID}, active=active,
                                active_result=active_result, current=(None, None, [], ["okx"], None, None))
    assert out["values"] is None
    # Clear empties them
    out = dp.filter_card_update(st, results, triggered={dp.FILTER_CLEAR}, active=active,
                                active_result=active_result, current=(None, None, [], ["okx"], None, None))
    assert out["values"] == dp.NO_FILTER_VALUES
    # another dataset loaded: the old result's filters do not apply, the choices are the new data's
    other = st.load_bytes(fills_csv(4, venue="kraken").encode(), name="other.csv", session_id=SESSION)
    out = dp.filter_card_update(st, results, triggered={store.ACTIVE_DATASET_ID}, active={"key": other},
                                active_result=active_result, current=(None, None, [], ["okx"], None, None))
    assert out["values"] == dp.NO_FILTER_VALUES and out["choices"]["venues"] == ["kraken"]


# --- settings from the registry -----------------------------------------------------------------


def test_default_form_is_the_calibrator_defaults():
    assert default_settings() == {"calibrator": Calibrator().get_params(), "segments": [], "bootstrap": None}


@pytest.mark.parametrize("changes", [
    {"model": "almgren", "optimizer": "differential_evolution", "options": {"maxiter": 50, "popsize": 15}},
    {"optimizer": "trf", "loss": "huber", "segments": ["side", "venue"], "bootstrap_n": 40, "bootstrap_by": "order_id"},
    {"optimizer": "lm", "loss": "linear", "weights": "none", "participation": "horizon",
     "settings": {"f_scale": 2.5, "test_fraction": 0.2, "walk_forward": 3, "multistart": 2, "seed": 7}},
    {"params": {"h": {"mode": "fit", "lower": 0, "upper": 3}, "Y": {"mode": "fix", "value": 0.7},
                "delta": {"mode": "fit", "lower": 0.2, "upper": None}}},
    {"weights": "column", "weight_column": "fee_bps", "options": {"max_nfev": 500}},
])
def test_settings_round_trip_through_the_form(changes):
    params = changes.pop("params", None)
    c = controls(**changes)
    if params:
        c["params"] = {**c["params"], **{k: {**c["params"][k], **v} for k, v in params.items()}}
    settings = cp.build_settings(**c)
    assert cp.build_settings(**cp.controls_from_settings(settings)) == settings
    # and it is what a Calibrator accepts as is
    assert Calibrator(**settings["calibrator"]).get_params() == settings["calibrator"]


def test_parameter_table_maps_to_fixed_bounds_and_free():
    c = controls()
    c["params"]["h"] = {"mode": "fit", "value": 1, "lower": 0, "upper": 2}
    c["params"]["Y"] = {"mode": "fix", "value": "0.8", "lower": 0, "upper": 20}
    c["params"]["delta"] = {"mode": "fit", "value": 0.5, "lower": "", "upper": 1.0}
    s = cp.build_settings(**c)["calibrator"]
    assert s["free"] == ["h"] and s["fixed"] == {"Y": 0.8}
    assert s["bounds"] == {"h": [0.0, 2.0], "delta": [None, 1.0]}     # empty bound = unbounded
    # registry defaults stay implicit (h fixed at 1, default bounds, default option values)
    plain = cp.build_settings(**controls(options={"max_nfev": 0}))["calibrator"]
    assert plain["fixed"] == {} and plain["bounds"] == {} and plain["free"] == [] and plain["options"] == {}


@pytest.mark.parametrize("changes, message", [
    ({"params": {"Y": {"mode": "fit", "lower": "abc", "upper": 20}}}, "lower bound of Y: 'abc' is not a number"),
    ({"params": {"Y": {"mode": "fit", "lower": 5, "upper": 1}}}, "bounds of 'Y'"),
    ({"params": {"Y": {"mode": "fix", "value": None}}}, "value of Y: enter a number"),
    ({"settings": {"test_fraction": 0.95}}, "test_fraction must be between 0 and 0.9"),
    ({"settings": {"walk_forward": 1.5}}, "walk_forward: 1.5 is not a whole number"),
    ({"optimizer": "lm", "loss": "soft_l1"}, "supports only loss 'linear'"),
    ({"weights": "column", "weight_column": None}, "weight_column"),
    ({"bootstrap_n": 1}, "0 (off) or at least 2"),
    ({"segments": ["order_id"]}, "choose from venue, symbol, side"),
    ({"model": "garch_nope"}, "unknown model"),
])
def test_bad_form_values_name_the_control(changes, message):
    params = changes.pop("params", None)
    c = controls(**changes)
    if params:
        c["params"] = {**c["params"], **{k: {**c["params"][k], **v} for k, v in params.items()}}
    with pytest.raises(CalibrationError, match=None) as err:
        cp.build_settings(**c)
    assert message in str(err.value)


def test_segment_and_bootstrap_choices_are_what_the_calibrator_accepts():
    frame = load(SAMPLE.read_bytes()[:400_000], name="fills.csv").frame
    cal = Calibrator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        for by in cp.SEGMENT_BY:
            assert cal.fit_segments(frame, by=(by,)).segments
        result = cal.fit(frame)
        for by in cp.BOOTSTRAP_BY:
            assert cal.bootstrap(n=2, by=by, result=result).bootstrap.n == 2
    with pytest.raises(CalibrationError):
        cal.fit_segments(frame, by=("order_id",))
    with pytest.raises(CalibrationError):
        cal.bootstrap(n=2, by="week", result=result)


def _texts(component) -> list[str]:
    """Every string in a component tree, and every option label/value, for layout assertions."""
    out = []

    def walk(c):
        if isinstance(c, (list, tuple)):
            for x in c:
                walk(x)
            return
        if isinstance(c, str):
            out.append(c)
            return
        if c is None or not hasattr(c, "to_plotly_json"):
            return
        for prop in ("options",):
            for o in getattr(c, prop, None) or []:
                if isinstance(o, dict):
                    out.extend(str(o.get(k)) for k in ("label", "value"))
        for prop in ("children", "label"):
            walk(getattr(c, prop, None))
    walk(component)
    return out


class _App:
    """The two things `layout` reads from an app."""


def test_every_picker_comes_from_the_registry(monkeypatch):
    base = registry.MODELS["power_law"]
    fake = type("Fake", (type(base),), {"name": "fake_law", "label": "Fake law", "params": base.params})()
    monkeypatch.setitem(registry.MODELS, "fake_law", fake)
    page = cp.layout(_App())
    texts = set(_texts(page))
    for name, m in registry.models_of_kind("impact").items():
        assert f"{m.label} ({name})" in texts
    assert "Fake law (fake_law)" in texts        # a model registered later shows up with no UI change
    for spec in registry.OPTIMIZERS.values():
        assert spec.label in texts
    for spec in registry.WEIGHTS.values():
        assert spec.label in texts
    for p in registry.SETTINGS:
        assert any(t.startswith(p.name) for t in texts), p.name
    for s in cp.SEGMENT_BY:
        assert s in texts
    # the parameter table has one row per parameter, with a labelled control per cell
    for model in registry.models_of_kind("impact"):
        table = cp.param_table(model)
        rows = table.children[0].children[1].children
        assert [r.to_plotly_json()["props"]["data-param"] for r in rows] == list(registry.get_model(model).param_names)
        labels = [t for t in _texts(table) if t.endswith(("fit or fix", "value if fixed", "lower bound", "upper bound"))]
        assert len(labels) == 4 * len(rows)
    # options per optimizer, from its spec
    de = _texts(cp.options_component("differential_evolution"))
    assert {"maxiter (generations)", "popsize (× parameters)"} <= set(de)


def test_dom_id_matches_dash_stringify():
    assert cp.dom_id({"type": "t", "param": "delta"}) == '{"param":"delta","type":"t"}'
    assert cp.dom_id("plain") == "plain"


# --- plan: the cache is checked before any work --------------------------------------------------


def test_plan_starts_a_job_then_a_repeat_is_served_from_the_cache(st, results, fills_key):
    settings = default_settings()
    plan = cp.plan_calibration(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                               filters={"venue": ["okx"]}, run_settings=settings)
    assert plan["active"] is None and plan["job"]["dataset"] == fills_key
    job = plan["job"]
    assert job["key"] == results_mod.result_key(fills_key, {"venue": ["okx"]}, settings)
    key = cp.run_calibration(st, results, job)
    assert key == job["key"] and results.active(SESSION) == key
    again = cp.plan_calibration(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                                filters={"venue": ["okx"]}, run_settings=settings)
    assert again["job"] is None and again["active"] == {"key": key} and "from the cache" in again["note"]
    # other filters or settings are another run
    other = cp.plan_calibration(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                                filters={"venue": ["binance"]}, run_settings=settings)
    assert other["job"] is not None and other["job"]["key"] != key


def test_plan_refuses_what_cannot_be_calibrated(st, results, fills_key):
    settings = default_settings()
    with pytest.raises(DataError, match="session is not ready"):
        cp.plan_calibration(st, results, session_id="nope", active_dataset={"key": fills_key}, filters={},
                            run_settings=settings)
    with pytest.raises(DataError, match="no dataset loaded"):
        cp.plan_calibration(st, results, session_id=SESSION, active_dataset=None, filters={}, run_settings=settings)
    # another session's dataset is no dataset here, whatever key the browser sends
    with pytest.raises(DataError, match="no dataset loaded"):
        cp.plan_calibration(st, results, session_id=store.new_session_id(), active_dataset={"key": fills_key},
                            filters={}, run_settings=settings)
    bars = st.load_bytes((ROOT / "sample_data" / "bars_15m.csv").read_bytes(), name="bars_15m.csv",
                         session_id=SESSION)
    with pytest.raises(DataError, match="Calibration needs fills.*bars \\(bars_15m.csv\\)"):
        cp.plan_calibration(st, results, session_id=SESSION, active_dataset={"key": bars}, filters={},
                            run_settings=settings)


# --- run: the background callback's body ----------------------------------------------------------


def _job(st, results, fills_key, settings, filters=None) -> dict:
    return cp.plan_calibration(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                               filters=filters or {}, run_settings=settings)["job"]


def test_run_reports_honest_stages_and_stores_meta(st, results, fills_key):
    settings = default_settings(segments=["venue"], bootstrap_n=50)
    job = _job(st, results, fills_key, settings, filters={"symbol": ["BTCUSDT", "ETHUSDT"]})
    seen: list[tuple[float, str]] = []
    key = cp.run_calibration(st, results, job, lambda pct, label: seen.append((pct, label)))
    labels = [label for _, label in seen]
    percents = [pct for pct, _ in seen]
    assert percents == sorted(percents) and 0 < percents[0] and percents[-1] < 100
    assert labels[0] == "Loading data" and labels[1].startswith("Computing features of ")
    # the pooled fit, then each of the 3 venues, then every bootstrap block, then metrics
    assert [l for l in labels if l.startswith("Fitting")] == [
        "Fitting pooled (1 of 4 fits)", "Fitting segment 1 of 3", "Fitting segment 2 of 3", "Fitting segment 3 of 3"]
    boots = [l for l in labels if l.startswith("Bootstrap")]
    assert boots[0] == "Bootstrap 0/50" and boots[-1] == "Bootstrap 50/50" and len(boots) == 1 + 2
    assert labels[-2:] == ["Computing metrics", "Saving the result"]
    result, meta = results.get(key), results.meta(key)
    assert [dict(s.key) for s in result.segments] == [{"venue": v} for v in ("binance", "coinbase", "okx")]
    assert result.pooled.bootstrap.n == 50 and result.pooled.bootstrap.samples.shape[1] == 2
    frame = load(SAMPLE.read_bytes(), name="fills.csv").frame
    kept = frame[frame["symbol"].isin(["BTCUSDT", "ETHUSDT"])]
    assert meta["dataset"] == fills_key and meta["filters"] == {"symbol": ["BTCUSDT", "ETHUSDT"]}
    assert meta["settings"] == settings and meta["rows"] == len(kept) and meta["source"] == "fills.csv"
    assert meta["provenance"]["rows"] == len(kept) and meta["provenance"]["filters"] == meta["filters"]
    assert meta["provenance"]["sha256"] == store.SessionStore.get_dataset(st, fills_key).sha256
    # breakdowns were computed in the job, so they travel with the stored result
    assert "metrics" in result.pooled._cache


def test_the_panel_fits_exactly_what_the_calibrator_fits(st, results, fills_key):
    settings = default_settings(optimizer="trf", settings={**cp.controls_from_settings(None)["settings"],
                                                           "test_fraction": 0.25})
    key = cp.run_calibration(st, results, _job(st, results, fills_key, settings, {"venue": ["okx"]}))
    frame = load(SAMPLE.read_bytes(), name="fills.csv").frame
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        direct = Calibrator(**settings["calibrator"]).fit(frame[frame["venue"] == "okx"].reset_index(drop=True))
    got = results.get(key)
    assert got.params == direct.params and got.out_of_sample == direct.out_of_sample


def test_bootstrap_in_blocks_is_reproducible_and_counts_every_resample(st, results, fills_key):
    assert cp.bootstrap_block_sizes(60) == [20, 20, 20]
    assert cp.bootstrap_block_sizes(2) == [2] and cp.bootstrap_block_sizes(3) == [3]
    assert all(s >= 2 for s in cp.bootstrap_block_sizes(27)) and sum(cp.bootstrap_block_sizes(27)) == 27
    frame = load(SAMPLE.read_bytes()[:600_000], name="fills.csv").frame
    cal = Calibrator(seed=3)
    fitted = cal.fit(frame)
    done = []
    a = cp.bootstrap_in_blocks(cal, fitted, n=30, by="day", progress=done.append).bootstrap
    b = cp.bootstrap_in_blocks(cal, fitted, n=30, by="day").bootstrap
    assert done == [15, 30] and a.n == 30 and a.samples.shape[0] + a.failures == 30
    np.testing.assert_array_equal(a.samples, b.samples)
    other = cp.bootstrap_in_blocks(Calibrator(seed=4), fitted, n=30, by="day").bootstrap
    assert not np.array_equal(a.samples, other.samples)
    assert not a.samples.flags.writeable


def test_failures_are_messages_not_tracebacks(st, results, fills_key, monkeypatch, caplog):
    # no rows left after the filters
    out = cp.run_job(st, results, _job(st, results, fills_key, default_settings(), {"venue": ["nowhere"]}))
    assert out["alert"][1] and "no rows of fills.csv pass the filters" in out["alert"][0]
    assert out["active"] is no_update
    # a global search without finite bounds: the calibrator's own message
    settings = default_settings(optimizer="differential_evolution")
    settings["calibrator"]["bounds"] = {"Y": [0.0, None]}
    out = cp.run_job(st, results, _job(st, results, fills_key, settings))
    assert "needs finite bounds" in out["alert"][0]
    # the dataset left the cache
    job = _job(st, results, fills_key, default_settings(loss="huber"))
    out = cp.run_job(store.SessionStore(st.cache), results, {**job, "dataset": "f" * 64 + "-fills"})
    assert "no longer in the server's cache" in out["alert"][0]
    # anything else: one line, the details in the log
    monkeypatch.setattr(cp, "run_calibration", lambda *a, **k: (_ for _ in ()).throw(KeyError("secret-detail")))
    out = cp.run_job(st, results, job)
    assert out["alert"][0].startswith("Calibration failed unexpectedly (KeyError)")
    assert "secret-detail" not in out["alert"][0] and "secret-detail" in caplog.text


def test_non_converged_fit_is_flagged(st, results, fills_key):
    settings = default_settings(options={"max_nfev": 1})
    key = cp.run_calibration(st, results, _job(st, results, fills_key, settings))
    s = cp.optimizer_status(results.get(key))
    assert s["converged"] is False and s["badge"] == "NOT converged" and s["color"] == "danger"
    assert s["status"] == 0 and "maximum number of function evaluations" in s["message"]
    view = cp.render_result(results, {"key": key}, {"key": fills_key})
    text = " ".join(_texts(view["status"]))
    assert "NOT converged" in text and "did not converge" in text


def test_render_shows_status_parameters_and_empty_states(st, results, fills_key):
    assert cp.EMPTY_MESSAGE in _texts(cp.render_result(results, None)["status"])
    gone = results_mod.result_key(fills_key, {}, {"gone": True})
    assert any("no longer in the server's cache" in t for t in _texts(cp.render_result(results, {"key": gone})["status"]))
    key = cp.run_calibration(st, results, _job(st, results, fills_key, default_settings(segments=["venue"])))
    view = cp.render_result(results, {"key": key}, {"key": fills_key})
    status = _texts(view["status"])
    # the optimizer's words, without scipy's reStructuredText backticks (a page shows them literally)
    assert "Converged" in status and "ftol termination condition is satisfied." in status
    assert not any("`" in t for t in status)
    body = json.dumps(view["body"], cls=plotly.utils.PlotlyJSONEncoder)
    result = results.get(key)
    for name, value in result.pooled.params.items():
        assert f'"data-row": "{name}"' in body and f"{value:.6g}" in body
    assert "venue=okx" in body and "Wald" in body
    # a result of another dataset says so
    other = st.load_bytes(fills_csv(4).encode(), name="other.csv")
    warned = _texts(cp.render_result(results, {"key": key}, {"key": other})["status"])
    assert any("not on the active dataset" in t for t in warned)


def test_restored_result_after_a_reload(st, results, fills_key):
    assert cp.restored_result(results, SESSION) is None
    key = cp.run_calibration(st, results, _job(st, results, fills_key, default_settings()))
    assert cp.restored_result(results, SESSION) == {"key": key}
    assert cp.restored_result(results, "not-a-session") is None
    results.cache.delete(key)   # evicted: nothing to restore, rather than a key to nothing
    assert cp.restored_result(results, SESSION) is None


def test_progress_calibrator_counts_fits_without_changing_them():
    frame = load(SAMPLE.read_bytes()[:400_000], name="fills.csv").frame
    calls = []
    cal = cp.ReportingCalibrator(seed=1)
    cal.on_fit = calls.append
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        seg = cal.fit_segments(frame, by=("side",))
        plain = Calibrator(seed=1).fit_segments(frame, by=("side",))
    assert calls == [0, 1, 2] and cp.segment_count(cal.features(frame), ("side",)) == 2
    assert seg.pooled.params == plain.pooled.params
    assert [s.result.params for s in seg.segments] == [s.result.params for s in plain.segments]


# --- the callbacks, wired: a page replayed through the server without a browser ------------------


def test_callbacks_wire_the_panels_through_a_replayed_page(tmp_path):
    from execal import app as app_module
    from bench.bench_dashboard import Renderer
    from execal.components import export_panel as ep

    app = app_module.create_app(cache_dir=str(tmp_path / "c"), sample_dir=str(ROOT / "sample_data"))
    st, results = store.get_store(app), results_mod.get_results(app)
    page = Renderer(app.server.test_client(), SESSION)
    page.load()
    dataset = page.props[(store.ACTIVE_DATASET_ID, "data")]
    assert st.get_dataset(dataset["key"]).source == "fills.csv"      # first visit: the sample
    assert page.props[(results_mod.ACTIVE_RESULT_ID, "data")] is None
    assert cp.EMPTY_MESSAGE in json.dumps(page.props[(cp.STATUS, "children")])
    assert page.props[(ep.CONFIG_JSON, "disabled")] is True
    assert page.props[(dp.FILTER_VENUE, "options")] == [{"label": v, "value": v} for v in ("binance", "coinbase", "okx")]

    # a filter and a segmentation, then Calibrate: not in the cache, so a job is requested
    page.set(dp.FILTER_VENUE, "value", ["okx", "coinbase"])
    assert page.props[(results_mod.FILTERS_ID, "data")] == {"venue": ["coinbase", "okx"]}
    page.set(cp.SEGMENTS, "value", ["symbol"])
    page.set(cp.RUN, "n_clicks", 1)
    ticket = page.props[(cp.JOB, "data")]
    assert set(ticket) == {"ticket"}              # the job itself stays on the server
    with jobs.job_context(SESSION, cache=results.cache):
        job = ui_shell.claim_job(results.cache, ticket)
    assert job["filters"] == {"venue": ["coinbase", "okx"]} and job["settings"]["segments"] == ["symbol"]
    # the job process's part, then its output reaches the page as the background callback's would
    out = cp.run_job(st, results, job)
    page.set(results_mod.ACTIVE_RESULT_ID, "data", out["active"])
    status = json.dumps(page.props[(cp.STATUS, "children")])
    assert "Converged" in status and "3 segments" in status
    # the Export panel makes its links when it is opened (a hidden panel does no work)
    assert page.props[(ep.CONFIG_JSON, "disabled")] is True
    page.set(shell.LOCATION_ID, "pathname", shell.panel_path(ep))
    assert page.props[(ep.CONFIG_JSON, "href")] == ep.link_href(SESSION, job["key"], "config.json")
    assert page.props[(ep.CONFIG_JSON, "disabled")] is False
    fitted = results.get(job["key"]).pooled.params
    assert f"{fitted['delta']:.6g}" in json.dumps(page.props[(cp.PARAMS, "children")])
    # pressing Calibrate again: answered from the cache, no second job
    page.set(cp.RUN, "n_clicks", 2)
    assert page.props[(cp.JOB, "data")] == ticket
    assert "from the cache" in page.props[(cp.NOTE, "children")]

    # the form follows the registry: lm takes least squares only; the weight column opens for 'column'
    page.set(cp.OPTIMIZER, "value", "lm")
    assert page.props[(cp.LOSS, "value")] == "linear"
    assert [o["value"] for o in page.props[(cp.LOSS, "options")]] == ["linear"]
    assert page.props[(cp.WEIGHT_COLUMN, "disabled")] is True
    page.set(cp.WEIGHTS_PICK, "value", "column")
    assert page.props[(cp.WEIGHT_COLUMN, "disabled")] is False
    page.set(cp.MODEL, "value", "almgren")
    assert [p.name for p in registry.get_model("almgren").params] == [
        i["param"] for i in page.ids.values() if isinstance(i, dict) and i.get("type") == cp.PARAM_MODE]

    # a reload: the result, its filters and the settings that produced it come back
    page.load()
    assert page.props[(results_mod.ACTIVE_RESULT_ID, "data")] == {"key": job["key"]}
    assert page.props[(dp.FILTER_VENUE, "value")] == ["coinbase", "okx"]
    assert page.props[(results_mod.FILTERS_ID, "data")] == {"venue": ["coinbase", "okx"]}
    assert page.props[(cp.SEGMENTS, "value")] == ["symbol"]
    assert page.props[(cp.OPTIMIZER, "value")] == "lm_normal" and page.props[(cp.MODEL, "value")] == "power_law"
