"""The Order flow panel's callback bodies as plain functions on a real ResultStore in a private cache
(uploads kept by hash per session, the synthetic sample, settings validation, analysis and cache lookup,
the session's view after a reload, errors as one line, the JSON download), its pure figure builders
without Dash, and the wiring (the panel is in the app; its callbacks answer through Dash's endpoint)."""
from __future__ import annotations

import base64
import gzip
import json

import numpy as np
import plotly.graph_objects as go
import pytest
from dash import no_update
from dash.exceptions import PreventUpdate

from execal.components import orderflow_figures as OF
from execal.components import orderflow_panel as op
from execal.components import results as results_mod
from execal.components import store as store_mod
from execal.models.orderflow.analysis import analyse
from execal.models.orderflow.simulate import simulate_market


@pytest.fixture(scope="module")
def report():
    return analyse([simulate_market(seconds=900.0, seed=3).data], windows_s=(1.0, 10.0))


def data_url(raw: bytes) -> str:
    return "data:application/gzip;base64," + base64.b64encode(raw).decode()


def run(results, session, **kw):
    args = dict(trigger=op.RUN, session_id=session, sources=[op.SAMPLE], windows=["1s", "10s"], levels="10",
                share=0.5, view=None)
    args.update(kw)
    return op.fit_outputs(results, **args)


# --- sources ---------------------------------------------------------------------------------------


def test_uploads_are_kept_by_hash_and_listed_for_the_session(results, session):
    assert op.source_options(results.cache, session) == [{"label": op.SAMPLE_LABEL, "value": op.SAMPLE}]
    raw = gzip.compress(b'1723161256172216566 {"lastUpdateId": 1, "bids": [], "asks": []}\n')
    stored, errors = op.store_uploads(results.cache, session, [data_url(raw), "data:text/plain;base64,aGVsbG8="],
                                      ["usdm_x.gz", "hello.txt"], max_bytes=2**20)
    assert stored == ["usdm_x.gz"]
    assert len(errors) == 1 and "hello.txt" in errors[0] and "not a Binance raw capture" in errors[0]
    options = op.source_options(results.cache, session)
    assert [o["value"] for o in options][-1] == op.SAMPLE
    assert options[0]["value"] == op.CAPTURE_PREFIX + __import__("hashlib").sha256(raw).hexdigest()
    # a fresh upload selects the session's captures; otherwise the pick stays
    assert op.chosen_sources(options, [op.SAMPLE], fresh=True) == [options[0]["value"]]
    assert op.chosen_sources(options, [op.SAMPLE], fresh=False) == [op.SAMPLE]
    # another session sees none of it; the same bytes again are listed once
    assert op.source_options(results.cache, store_mod.new_session_id())[0]["value"] == op.SAMPLE
    op.store_uploads(results.cache, session, [data_url(raw)], ["again.gz"], max_bytes=2**20)
    assert len(op.source_options(results.cache, session)) == 2
    # over the limit
    _, errors = op.store_uploads(results.cache, session, [data_url(raw)], ["big.gz"], max_bytes=10)
    assert "upload limit" in errors[0]


def test_settings_are_validated():
    assert op.build_settings(windows=["60s", "1s"], levels="5", share="0.3") == \
        {"windows": ["1s", "60s"], "levels": 5, "share": 0.3}
    for bad in (dict(windows=[], levels=10, share=0.5), dict(windows=["1s"], levels=7, share=0.5),
                dict(windows=["1s"], levels="x", share=0.5), dict(windows=["1s"], levels=10, share=0)):
        with pytest.raises(op.SettingsError):
            op.build_settings(**bad)


# --- analysis, cache, reload ------------------------------------------------------------------------


def test_analyse_the_sample_then_find_it_in_the_cache_and_after_a_reload(results, session):
    out = run(results, session)
    assert out["alert"] == ("", False)
    assert out["note"].startswith("Analysed 1 venue(s)")
    view = out["view"]
    assert results_mod.is_result_key(view["key"]) and view["sources"] == [op.SAMPLE]
    again = run(results, session, view=view)
    assert again["view"]["key"] == view["key"] and again["note"].startswith("Shown from the cache")
    # a page load brings the session's view back; with nothing saved nothing happens
    restored = op.fit_outputs(results, trigger=store_mod.SESSION_STORE_ID, session_id=session, sources=None,
                              windows=None, levels=None, share=None, view=None)
    assert restored["view"] == view
    with pytest.raises(PreventUpdate):
        op.fit_outputs(results, trigger=store_mod.SESSION_STORE_ID, session_id=store_mod.new_session_id(),
                       sources=None, windows=None, levels=None, share=None, view=None)
    shown = op.render_outputs(results, view)
    assert shown["download_disabled"] is False
    for f in op.FIGURES:
        assert isinstance(shown[f], go.Figure) and len(shown[f].data) > 0, f
    table = shown[op.TABLE]
    assert "simulated" in json.dumps(table.to_plotly_json(), default=str)
    # the JSON download is what the CLI writes
    dl = op.download_output(results, view)
    doc = json.loads(dl["download"]["content"])
    assert doc["kind"] == "orderflow" and doc["table"][0]["venue"] == "simulated"
    assert doc["sources"] == [op.SAMPLE]


def test_errors_are_one_line_and_keep_the_view(results, session):
    shown = {"key": "result:" + "0" * 32}
    out = run(results, session, sources=[], view=shown)
    assert out["view"] is no_update and out["alert"][1] is True
    assert "choose at least one capture" in out["alert"][0] and "unchanged" in out["alert"][0]
    out = run(results, session, sources=[op.CAPTURE_PREFIX + "f" * 64])
    assert "no longer in the server's cache" in out["alert"][0]
    out = run(results, session, windows=[])
    assert "at least one window" in out["alert"][0]
    # an uploaded file that is no capture: named, no traceback
    raw = gzip.compress(b"1723161256172216566 {broken\n")
    op.store_uploads(results.cache, session, [data_url(raw)], ["broken.gz"], max_bytes=2**20)
    src = op.source_options(results.cache, session)[0]["value"]
    out = run(results, session, sources=[src])
    assert out["alert"][1] and "broken.gz" in out["alert"][0] and "Traceback" not in out["alert"][0]
    # an evicted result: a designed empty state, not an error
    gone = op.render_outputs(results, {"key": "result:" + "1" * 32})
    assert gone["download_disabled"] is True
    assert op.download_output(results, {"key": "result:" + "1" * 32})["alert"] == (op.EVICTED, True)


# --- the figure builders -------------------------------------------------------------------------------


def test_figures_draw_every_venue_and_fit(report):
    fig = OF.ofi_scatter_figure(report)
    assert [a.text for a in fig.layout.annotations] == ["1s windows", "10s windows"]
    assert len(fig.data) == 4                      # points + fit per window
    res = report.venues[0].results["ofi"]
    fit = fig.data[1]
    depth = res.metrics["mean_best_depth_1s"]
    slope = (fit.y[1] - fit.y[0]) / (fit.x[1] - fit.x[0])
    assert slope == pytest.approx(res.params["beta_1s"] * depth, rel=1e-9)
    depth_fig = OF.beta_depth_figure(report)
    assert depth_fig.layout.xaxis.type == "log" and depth_fig.layout.yaxis.type == "log"
    signs = OF.sign_memory_figure(report)
    assert signs.layout.xaxis.type == "log" and np.all(np.asarray(signs.data[0].y) > 0)
    prop = OF.propagator_figure(report)
    names = {t.name for t in prop.data}
    assert "simulated SYNTH power law" in names and "simulated SYNTH band" in names
    res_fig = OF.resilience_figure(report)
    assert len(res_fig.data) >= 2
    rows = OF.comparison_rows(report)
    assert rows[0]["venue"] == "simulated SYNTH" and "R² 10s" in rows[0] and "kernel β" in rows[0]
    assert "0.65" in OF.paper_note(report)
    s = OF.status_summary(report)
    assert s["level"] in ("success", "warning") and s["headline"]


def test_empty_states_say_why():
    from execal.models.orderflow.analysis import OrderFlowReport, VenueReport
    empty = OrderFlowReport((VenueReport("v", "S", "", {}, {"ofi": "no book"}),), {"windows_s": [1.0]})
    for fn in (OF.ofi_scatter_figure, OF.beta_depth_figure, OF.sign_memory_figure, OF.propagator_figure,
               OF.resilience_figure):
        fig = fn(empty)
        assert fig.layout.annotations and fig.layout.annotations[0].text.startswith("No ")
    s = OF.status_summary(empty)
    assert s["level"] == "warning" and "no book" in s["details"][0]


def test_the_panel_is_wired_into_the_app(tmp_path):
    from execal.app import create_app
    from execal.components import layout

    assert op in layout.PANELS
    app = create_app(cache_dir=str(tmp_path / "c"))
    client = app.server.test_client()
    assert client.get(f"/{op.PANEL}").status_code == 200
    body = json.dumps(app.layout() if callable(app.layout) else app.layout, default=str)
    assert op.RUN in body and op.UPLOAD in body
