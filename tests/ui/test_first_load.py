"""First page load of a new worker (issue 4 "Scale"): what a page load may and may not do.

A new worker must not read the active dataset's frame nor unpickle the active result to draw the first
page: the Data panel draws from the dataset's JSON view, the Calibrate panel from the result's view, and
hidden result panels (Diagnostics, Tweak, Export) wait until the user opens them. Each test replays the
page through the server (bench.bench_dashboard.Renderer, the same replay the benchmark times) on an app
whose per-process caches are empty, as a new gunicorn worker's are.
"""
from __future__ import annotations

import json
import uuid

import pytest

from execal import app as app_module
from bench.bench_dashboard import Renderer
from execal.components import calibrate_panel as cp
from execal.components import data_panel as dp
from execal.components import diagnostics_panel as dg
from execal.components import export_panel as ep
from execal.components import figures
from execal.components import layout as shell
from execal.components import shell as ui_shell
from execal.components import results as results_mod
from execal.components import store
from execal.components import tweak_panel as tp
from execal.models.impact.simulate import simulate_fills

N_FILLS = 3000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A cache holding a session's dataset and active segmented result, made by one app (worker)."""
    cache_dir = tmp_path_factory.mktemp("first-load") / "cache"
    session_id = str(uuid.uuid4())
    frame, _ = simulate_fills(N_FILLS, params={"binance": {"Y": 0.6, "delta": 0.5}, "okx": {"Y": 0.9, "delta": 0.5}},
                              seed=3)
    maker = app_module.create_app(cache_dir=str(cache_dir))
    st, results = store.get_store(maker), results_mod.get_results(maker)
    key = st.load_bytes(store.frame_to_parquet(frame.drop(columns=["cost_bps"])), name="fills.parquet",
                        session_id=session_id)
    c = cp.controls_from_settings(None)
    c.update({"segments": ["venue"]})
    plan = cp.plan_calibration(st, results, session_id=session_id, active_dataset={"key": key}, filters={},
                               run_settings=cp.build_settings(**c))
    result_key = cp.run_calibration(st, results, plan["job"])
    return {"cache_dir": cache_dir, "session": session_id, "dataset": key, "result": result_key,
            "venues": sorted(map(str, frame["venue"].unique()))}


class Spy:
    """Counts the calls of a store method that reads the frame or unpickles a result."""

    def __init__(self, monkeypatch, cls, name):
        self.calls = []
        original = getattr(cls, name)

        def spy(obj, *args, **kwargs):
            self.calls.append(args[:1])
            return original(obj, *args, **kwargs)
        monkeypatch.setattr(cls, name, spy)


def new_worker(served) -> tuple:
    app = app_module.create_app(cache_dir=str(served["cache_dir"]))
    return app, Renderer(app.server.test_client(), served["session"])


def test_a_new_worker_draws_the_first_page_without_the_frame_or_the_result(served, monkeypatch):
    app, page = new_worker(served)
    frames = Spy(monkeypatch, store.SessionStore, "get_dataset")
    unpickled = Spy(monkeypatch, results_mod.ResultStore, "get")
    page.load()
    # (the Volatility and Vol surface panels open their small bundled samples; not the session's data)
    assert (served["dataset"],) not in frames.calls and unpickled.calls == []
    # ... and yet the page shows the dataset and the restored result
    assert page.props[(results_mod.ACTIVE_RESULT_ID, "data")] == {"key": served["result"]}
    summary = json.dumps(page.props[(dp.SUMMARY, "children")])
    rows = store.get_store(app).info(served["dataset"])["rows"]
    assert rows > N_FILLS // 2 and f"\"{rows:,}\"" in summary and ", ".join(served["venues"]) in summary
    assert len(page.props[(dp.GRID, "rowData")]) == figures.PREVIEW_ROWS
    assert page.props[(dp.FILTER_VENUE, "options")] == [{"label": v, "value": v} for v in served["venues"]]
    assert page.props[(dp.FILTER_STATUS, "children")] == f"No filters: all {rows:,} rows are used."
    assert page.props[("status-badge-calibrate", "children")] == "Converged"
    assert "Converged" in json.dumps(page.props[(cp.STATUS, "children")])
    # hidden result panels have not drawn anything yet
    assert dg.NO_RESULT in json.dumps(page.props[(dg.STATUS, "children")])
    assert page.props.get((tp.BASE, "data")) is None
    assert page.props[(ep.CONFIG_JSON, "disabled")] is True


@pytest.mark.parametrize("panel", [dg, tp, ep])
def test_a_hidden_panel_draws_when_opened_and_once_per_result(served, panel):
    app, page = new_worker(served)
    page.load()
    outputs_before = {k: len(v) for k, v in page.sizes.items()}
    page.set(shell.LOCATION_ID, "pathname", shell.panel_path(panel))
    # the panel's own callbacks (the router answers every navigation)
    drawn = {k for k, v in page.sizes.items() if len(v) > outputs_before.get(k, 0) and f"-{panel.PANEL}." in k
             and shell.panel_container_id(dp) not in k}
    assert drawn, "opening the panel drew nothing"
    if panel is dg:
        status = json.dumps(page.props[(dg.STATUS, "children")])
        assert dg.NO_RESULT not in status and "segments by venue" in status
        assert page.props[(dg.SHOWN, "data")] == served["result"]
    elif panel is tp:
        assert page.props[(tp.BASE, "data")]["key"] == served["result"]
    else:
        assert page.props[(ep.CONFIG_JSON, "disabled")] is False
        assert page.props[(ep.CONFIG_JSON, "href")] == ep.link_href(served["session"], served["result"],
                                                                    "config.json")
    # away and back on the same result: nothing is drawn again
    counts = {k: len(v) for k, v in page.sizes.items()}
    page.set(shell.LOCATION_ID, "pathname", shell.panel_path(dp))
    page.set(shell.LOCATION_ID, "pathname", shell.panel_path(panel))
    assert {k: len(v) for k, v in page.sizes.items() if k in drawn} == {k: counts[k] for k in drawn}


def test_a_result_changed_while_hidden_is_drawn_on_opening(served):
    app, page = new_worker(served)
    page.load()
    page.set(shell.LOCATION_ID, "pathname", shell.panel_path(dg))
    assert page.props[(dg.SHOWN, "data")] == served["result"]
    page.set(shell.LOCATION_ID, "pathname", shell.panel_path(dp))
    page.set(results_mod.ACTIVE_RESULT_ID, "data", None)
    assert page.props[(dg.SHOWN, "data")] == served["result"]      # hidden: not redrawn yet
    page.set(shell.LOCATION_ID, "pathname", shell.panel_path(dg))
    assert page.props[(dg.SHOWN, "data")] is None
    assert dg.NO_RESULT in json.dumps(page.props[(dg.STATUS, "children")])


def test_needs_render():
    loc, here = shell.LOCATION_ID, "/" + dg.PANEL
    key = "result:" + "0" * 32
    needs = ui_shell.needs_render
    assert not needs(dg.PANEL, "/", None, key, None)                            # hidden
    assert needs(dg.PANEL, here, None, key, None)                               # opened on load
    assert not needs(dg.PANEL, here, loc, key, key)                             # reopened, same result
    assert needs(dg.PANEL, here, loc, key, "result:" + "1" * 32)                # reopened, another result
    assert needs(dg.PANEL, here, results_mod.ACTIVE_RESULT_ID, key, key)        # a new fit
    assert ui_shell.result_key_of({"key": key}) == key and ui_shell.result_key_of({"key": "x"}) is None
    assert shell.is_shown(dp.PANEL, None) and shell.is_shown(dp.PANEL, "/nowhere")
    assert shell.is_shown(dg.PANEL, "/diagnostics") and not shell.is_shown(dg.PANEL, "/")


def test_the_views_show_what_the_frame_and_the_result_show(served):
    app, _ = new_worker(served)
    st, results = store.get_store(app), results_mod.get_results(app)
    dataset = st.get_dataset(served["dataset"])
    view = dp.render_dataset(st, {"key": served["dataset"]})
    assert json.loads(view["coverage"].to_json()) == json.loads(figures.coverage_figure(dataset.frame).to_json())
    assert (view["columns"], view["rows"]) == tuple(json.loads(json.dumps(figures.preview_table(dataset.frame))))
    assert st.info(served["dataset"])["rows"] == len(dataset.frame)
    assert st.info(served["dataset"])["dtypes"] == {str(c): str(t) for c, t in dataset.frame.dtypes.items()}
    result, meta = results.get(served["result"]), results.meta(served["result"])
    from_view = cp.render_result(results, {"key": served["result"]})
    assert json.dumps(from_view["status"].children[0].to_plotly_json(), default=str) == json.dumps(
        cp.status_component(result, meta).to_plotly_json(), default=str)
    assert results.view(served["result"], cp.RESULT_VIEW, cp.result_view)["fitted"] == dict(result.pooled.params)
    # a result stored again under its key drops the views of what was there before
    results.put(served["result"], result, meta={**meta, "origin": "import", "config_model": {
        "std_errors": {"delta": 0.5}}})
    rows = results.view(served["result"], cp.RESULT_VIEW, cp.result_view)["params"]
    assert any("(config)" in str(v) for r in rows for v in r.values())
    results.put(served["result"], result, meta=meta)


def test_unknown_views_and_gone_datasets(tmp_path):
    st = store.SessionStore(store.open_cache(tmp_path / "c"))
    assert st.view("0" * 64 + "-fills", dp.DATA_VIEW) is None
    assert st.view("not a key", dp.DATA_VIEW) is None
    assert st.info(None) is None
    assert dp.render_dataset(st, {"key": "0" * 64 + "-fills"})["preview_title"] == "Preview"
    assert dp.filter_status(None, {}, rows=12) == ("No filters: all 12 rows are used.", "text-muted")
    assert dp.filter_status(None, {}) == ("Load a dataset to filter it.", "text-muted")


def test_empty_figure_is_the_validated_one():
    import plotly.graph_objects as go

    fig = figures.empty_figure("nothing here")
    ref = go.Figure()
    ref.update_layout(xaxis={"visible": False}, yaxis={"visible": False}, height=220,
                      margin={"l": 10, "r": 10, "t": 10, "b": 10}, template="plotly_white",
                      annotations=[{"text": "nothing here", "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                                    "showarrow": False, "font": {"size": 14, "color": "#6c757d"}}])
    assert json.loads(fig.to_json()) == json.loads(ref.to_json())
    fig.update_layout(height=500)            # a caller changing its copy changes no other empty figure
    assert figures.empty_figure("x").layout.height == 220
