"""The Correlation panel's callback bodies as plain functions on a real SessionStore / ResultStore in a private
cache (sources, settings, compute and cache lookup, the session's result after a reload, one-line errors,
rendering), and the wiring through Dash's own endpoint."""
from __future__ import annotations

import plotly.graph_objects as go
import pytest
from dash import no_update
from dash.exceptions import PreventUpdate
from ui_fixtures import SAMPLE_DIR, post_callback

from execal.components import corr_panel as cp
from execal.components import results as results_mod
from execal.components import store as store_mod

FORM = {"method": "hy", "price": "auto", "interval": "", "max_lag": 0.5, "lag_step": 0.05, "freq": "",
        "regimes": False}


def compute(st, rs, session, trigger=cp.RUN, sources=None, view=None, **form):
    f = {**FORM, **form}
    return cp.fit_outputs(st, rs, SAMPLE_DIR, trigger=trigger, session_id=session,
                          sources=cp.default_sources(f["method"]) if sources is None else sources, form=f, view=view)


def test_settings_are_validated_and_normalised():
    assert list(cp.method_choices()) == ["realized", "hy", "dcc", "shrinkage"]
    s = cp.build_settings(**{**FORM, "max_lag": "1", "lag_step": 0.01})
    assert s == {"method": "hy", "price": "auto", "max_lag_s": 1.0, "lag_step_s": 0.01}
    assert cp.build_settings(**{**FORM, "method": "dcc", "freq": " 1h ", "regimes": [1]}) == {
        "method": "dcc", "freq": "1h", "regimes": True}
    with pytest.raises(cp.SettingsError, match="lag step"):
        cp.build_settings(**{**FORM, "lag_step": -1})
    with pytest.raises(cp.SettingsError, match="4,000 lags"):
        cp.build_settings(**{**FORM, "max_lag": 100, "lag_step": 0.001})
    with pytest.raises(cp.SettingsError, match="method"):
        cp.build_settings(**{**FORM, "method": "pca"})


def test_sources_list_the_sessions_tick_and_bar_datasets_then_the_samples(stores, session):
    st, _ = stores
    fills = "timestamp,symbol,side,quantity,arrival_price,exec_price\n2024-01-01T00:00:00Z,BTC,buy,1,100,100.1\n"
    st.load_bytes(fills.encode(), name="fills.csv", session_id=session)
    trades = (SAMPLE_DIR / "trades_BTCUSDT.csv.gz").read_bytes()
    key = st.load_bytes(trades, name="my_trades.csv.gz", session_id=session)
    options = cp.source_options(st, SAMPLE_DIR, session)
    assert options[0]["value"] == key and "trades" in options[0]["label"]
    assert [o["value"] for o in options[1:]] == [cp.SAMPLE_PREFIX + n for n in cp.SAMPLES]
    assert not any("fills" in o["label"] for o in options)


def test_compute_then_lookup_and_render(stores, session):
    st, rs = stores
    out = compute(st, rs, session)
    assert out["alert"] == ("", False) and out["note"].startswith("Computed in")
    view = out["view"]
    entry = cp.get_entry(rs, view["key"])
    assert entry["result"].model == "hayashi_yoshida" and len(entry["result"].epps) == 1
    again = compute(st, rs, session)
    assert again["view"]["key"] == view["key"] and again["note"].startswith("Shown from the cache")
    r = cp.render_outputs(rs, view)
    assert go.Figure(r[cp.HEATMAP]).data[0].type == "heatmap"
    assert len(go.Figure(r[cp.LEAD_LAG]).data) == 3 and len(go.Figure(r[cp.EPPS]).data) == 2
    assert r[cp.LEAD_LAG_TABLE] is not None and r[cp.REGIME_TABLE] is None
    assert "DCC-GARCH" in go.Figure(r[cp.DCC_PATH]).layout.annotations[0].text


def test_dcc_with_regimes(stores, session):
    st, rs = stores
    out = compute(st, rs, session, method="dcc", regimes=True)
    assert out["alert"] == ("", False), out["alert"]
    entry = cp.get_entry(rs, out["view"]["key"])
    assert entry["result"].names == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert [r.regime for r in entry["regimes"].regimes] == ["calm", "stressed"]
    r = cp.render_outputs(rs, out["view"])
    assert len(go.Figure(r[cp.REGIME_FIG]).data) == 2 and len(go.Figure(r[cp.DCC_PATH]).data) == 9
    # the independent sample assets: a is at its bound, and the status says so (never a silent green)
    status = str(r[cp.STATUS])
    assert "data-level" in status


def test_a_reload_brings_the_sessions_result_back(stores, session):
    st, rs = stores
    with pytest.raises(PreventUpdate):                    # nothing computed before the user asks
        compute(st, rs, session, trigger=None)
    out = compute(st, rs, session, method="shrinkage")
    back = compute(st, rs, session, trigger=None)
    assert back["view"]["key"] == out["view"]["key"] and back["note"].startswith("Shown from the cache")
    with pytest.raises(PreventUpdate):                    # a view already shown is not replaced
        compute(st, rs, session, trigger=None, view=out["view"])


@pytest.mark.parametrize("kwargs,needle", [
    ({"sources": []}, "choose the series"),
    ({"sources": [cp.SAMPLE_PREFIX + "bars_15m.csv"]}, "tick methods need trades or quotes"),
    ({"method": "dcc", "sources": [cp.SAMPLE_PREFIX + "quotes_BTCUSDT.csv.gz"]}, "returns methods need bars"),
    ({"sources": [cp.SAMPLE_PREFIX + "trades_BTCUSDT.csv.gz"]}, "at least two series"),
    ({"sources": ["0" * 64 + "-trades"]}, "no longer in the server's cache"),
    ({"lag_step": "abc"}, "not a number"),
    ({"method": "realized", "interval": "2d"}, "shorter interval"),
])
def test_bad_input_is_one_clear_line(stores, session, kwargs, needle):
    st, rs = stores
    out = compute(st, rs, session, **kwargs)
    assert out["view"] is no_update
    text, is_open = out["alert"]
    assert is_open and needle in text and "Traceback" not in text


def test_unexpected_errors_are_logged_not_shown(stores, session, monkeypatch, caplog):
    st, rs = stores
    monkeypatch.setattr(cp, "compute", lambda *a, **k: 1 / 0)
    out = compute(st, rs, session)
    assert "ZeroDivisionError" in out["alert"][0] and "server log" in out["alert"][0]
    assert "correlation failed" in caplog.text


def test_render_empty_and_evicted(stores):
    _, rs = stores
    empty = cp.render_outputs(rs, None)
    assert go.Figure(empty[cp.HEATMAP]).layout.annotations[0].text.replace("<br>", " ") == cp.CF.NO_RESULT
    gone = cp.render_outputs(rs, {"key": "result:" + "0" * 32})
    assert go.Figure(gone[cp.EPPS]).layout.annotations[0].text.replace("<br>", " ") == cp.EVICTED


def test_the_panel_is_wired_into_the_app(tmp_path):
    from execal import app as app_module
    from execal.components import layout

    assert cp in layout.PANELS
    app = app_module.create_app(cache_dir=str(tmp_path / "c"))
    session = store_mod.new_session_id()
    values = {cp.RUN: 1, store_mod.SESSION_STORE_ID: session, cp.SOURCES: cp.default_sources("hy"), cp.METHOD: "hy",
              cp.PRICE: "auto", cp.INTERVAL: "", cp.MAX_LAG: 0.2, cp.LAG_STEP: 0.05, cp.FREQ: "", cp.REGIMES: False}
    fit_cb, response = post_callback(app.server.test_client(), f"..{cp.VIEW}.data", values,
                                     changed=f"{cp.RUN}.n_clicks")
    assert {i["id"] for i in fit_cb["inputs"]} == {cp.RUN, store_mod.SESSION_STORE_ID}
    assert response.status_code == 200, response.get_data(as_text=True)
    view = response.get_json()["response"][cp.VIEW]["data"]
    assert results_mod.is_result_key(view["key"])
    assert len(response.data) < 4_000                    # keys only in the browser
