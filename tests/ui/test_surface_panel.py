"""The Vol surface panel's callback bodies as plain functions, on a real SessionStore / ResultStore in a private
cache: choosing the chain, underlyings, registry-driven settings, fit and cache lookup, restoring the session's
surface after a reload, the Data filters, errors shown as one clear line, the empty states and the surface config
download. Plus the wiring: the panel is in the app, its callbacks answer through Dash's own endpoint."""
from __future__ import annotations

import hashlib
import json
import pickle
import re
from types import MappingProxyType

import pandas as pd
import plotly.graph_objects as go
import pytest
from dash import no_update
from dash.exceptions import PreventUpdate

from execal.components import results as results_mod
from execal.components import store as store_mod
from execal.components import surface_panel as sp
from execal.components.figures import empty_message
from execal.models.data.schema import Dataset
from execal.models.surface.svi import SURFACE_MODELS, WEIGHTS

from ui_fixtures import SAMPLE_DIR, post_callback

SAMPLE = sp.sample_value(sp.SAMPLE_CHAIN)
FILLS = "timestamp,symbol,side,quantity,arrival_price,exec_price\n2024-01-01T00:00:00Z,BTCUSDT,buy,1,100,100.1\n"


def fit(st, rs, session, *, trigger=sp.RUN, source=SAMPLE, underlying="BTC", model="svi", weights="vega",
        no_arbitrage=False, filters=None, active=None, view=None):
    return sp.fit_outputs(st, rs, SAMPLE_DIR, trigger=trigger, session_id=session, source=source,
                          underlying=underlying, model=model, weights=weights, no_arbitrage=no_arbitrage,
                          filters=filters or {}, active=active, view=view)


def message_of(figure) -> str:
    """The text of an empty-state figure (a go.Figure or its dict)."""
    return empty_message(go.Figure(figure))


def deribit_key(st, shared_data, session=None):
    path = shared_data / "tardis" / "format-examples" / "deribit_options_chain.csv"
    return st.load_bytes(path.read_bytes(), name=path.name, session_id=session)


# --- choices from the registry -----------------------------------------------------------------------


def test_pickers_come_from_the_registry():
    assert list(sp.surface_models()) == [m.name for m in SURFACE_MODELS] == ["svi", "ssvi"]
    assert set(sp.weight_choices("svi")) == set(WEIGHTS) == set(sp.weight_choices("ssvi"))
    settings = sp.build_settings(model="ssvi", weights="spread", no_arbitrage=[1], underlying=" btc ")
    assert settings == {"model": "ssvi", "weights": "spread", "no_arbitrage": True, "underlying": "BTC"}
    assert sp.build_settings(model="svi", weights="vega", no_arbitrage=None, underlying=sp.WHOLE_CHAIN)["underlying"] \
        is None
    with pytest.raises(sp.SettingsError, match="surface model 'heston'"):
        sp.build_settings(model="heston", weights="vega", no_arbitrage=False, underlying="BTC")
    with pytest.raises(sp.SettingsError, match="weights 'noise'"):
        sp.build_settings(model="svi", weights="noise", no_arbitrage=False, underlying="BTC")


# --- sources ----------------------------------------------------------------------------------------


def test_sources_sample_then_the_sessions_chains(stores, session, shared_data):
    st, rs = stores
    options, default = sp.source_options(st, SAMPLE_DIR, session, None)
    assert [o["value"] for o in options] == [SAMPLE] and default == SAMPLE
    # fills are no chain: not offered
    fills_key = st.load_bytes(FILLS.encode(), name="fills.csv", session_id=session)
    assert [o["value"] for o in sp.source_options(st, SAMPLE_DIR, session, {"key": fills_key})[0]] == [SAMPLE]
    chain_key = deribit_key(st, shared_data, session)
    options, default = sp.source_options(st, SAMPLE_DIR, session, {"key": chain_key})
    assert [o["value"] for o in options] == [chain_key, SAMPLE] and default == chain_key
    assert options[0]["label"] == "active dataset: deribit_options_chain.csv (7 quotes)"
    # the user's pick stays while the active dataset does not change
    _, value, seen = sp.choose_source(st, SAMPLE_DIR, session, {"key": chain_key}, SAMPLE, chain_key)
    assert value == SAMPLE and seen == chain_key
    # a chain that has just become the active dataset takes over
    _, value, _ = sp.choose_source(st, SAMPLE_DIR, session, {"key": chain_key}, SAMPLE, fills_key)
    assert value == chain_key
    # after a reload (nothing picked yet) the session's last fitted chain comes back
    _, value, _ = sp.choose_source(st, SAMPLE_DIR, session, {"key": chain_key}, None, None, {"source": SAMPLE})
    assert value == SAMPLE


def test_other_kinds_are_skipped_by_their_key_without_decoding_the_frame(stores, session, monkeypatch):
    st, rs = stores
    fills_key = st.load_bytes(FILLS.encode(), name="fills.csv", session_id=session)
    assert store_mod.kind_of_key(fills_key) == "fills"
    assert store_mod.kind_of_key("0" * 64 + "-options-m" + "a" * 12) == "options"
    assert store_mod.kind_of_key("not a key") is None
    decoded = []
    real = st.get_dataset
    monkeypatch.setattr(st, "get_dataset", lambda key: decoded.append(key) or real(key))
    sp.source_options(st, SAMPLE_DIR, session, {"key": fills_key})
    assert decoded == []


def test_the_sample_is_loaded_without_becoming_the_active_dataset(stores, session):
    st, rs = stores
    key = sp.resolve_source(st, SAMPLE_DIR, SAMPLE)
    assert st.get_dataset(key).kind == "options" and st.active_key(session) is None
    assert sp.resolve_source(st, SAMPLE_DIR, SAMPLE) == key
    with pytest.raises(sp.DataError, match="no such bundled sample"):
        sp.resolve_source(st, SAMPLE_DIR, sp.sample_value("../etc/passwd"))
    with pytest.raises(sp.DataError, match="choose the option chain"):
        sp.resolve_source(st, SAMPLE_DIR, None)
    with pytest.raises(sp.DataError, match="no longer in the server's cache"):
        sp.resolve_source(st, SAMPLE_DIR, "0" * 64 + "-options")


def test_underlyings(stores, shared_data):
    st, _ = stores
    assert sp.underlyings_of(st.get_dataset(sp.resolve_source(st, SAMPLE_DIR, SAMPLE)).frame) == ["BTC"]
    assert sp.underlyings_of(st.get_dataset(deribit_key(st, shared_data)).frame) == ["BTC", "ETH"]
    frame = pd.DataFrame({"underlying": ["eth", "ETH", None], "strike": [1.0, 2.0, 3.0]})
    assert sp.underlyings_of(frame) == ["ETH"]
    assert sp.underlyings_of(pd.DataFrame({"strike": [1.0]})) == []
    assert sp.underlying_choice(["BTC", "ETH"], "ETH", None) == "ETH"
    assert sp.underlying_choice(["BTC", "ETH"], "SOL", "ETH") == "ETH"
    assert sp.underlying_choice(["BTC", "ETH"], None, None) == "BTC"


# --- fitting, the cache and the session's view -------------------------------------------------------


def test_fit_then_lookup(stores, session):
    st, rs = stores
    out = fit(st, rs, session)
    view = out["view"]
    assert out["alert"] == ("", False) and re.fullmatch(r"Fitted in [\d,]+ ms\.", out["note"])
    assert results_mod.is_result_key(view["key"]) and view["source"] == SAMPLE
    assert view["settings"] == {"model": "svi", "weights": "vega", "no_arbitrage": False, "underlying": "BTC"}
    result = sp.get_result(rs, view["key"])
    assert result.model.name == "svi" and len(result.fitted_slices) == 8
    # the same chain and settings again: a lookup, the same key
    again = fit(st, rs, session, view=view)
    assert again["view"]["key"] == view["key"] and again["note"].startswith("Shown from the cache")
    # other settings: another key
    other = fit(st, rs, session, model="ssvi", view=view)
    assert other["view"]["key"] != view["key"] and sp.get_result(rs, other["view"]["key"]).model.name == "ssvi"
    # another worker (empty process memory) reads the stored surface back, read-only parameters intact
    sp._results.clear()
    back = sp.get_result(results_mod.ResultStore(rs.cache), view["key"])
    assert isinstance(back.slices[0].params, MappingProxyType)
    assert dict(back.slices[0].params) == dict(result.slices[0].params)


def test_stored_bytes_round_trip_without_touching_the_global_pickle_table(stores, session):
    st, rs = stores
    result = sp.get_result(rs, fit(st, rs, session)["view"]["key"])
    with pytest.raises(TypeError, match="mappingproxy"):
        pickle.dumps(result)         # the global table is unchanged
    back = pickle.loads(sp.result_bytes(result))
    assert back.rmse_vol_pts == pytest.approx(result.rmse_vol_pts)
    assert isinstance(back.global_params, MappingProxyType) is isinstance(result.global_params, MappingProxyType)
    # a key that holds another panel's result (not bytes) is no surface
    rs.put("result:" + "f" * 32, {"not": "a surface"})
    assert sp.get_result(rs, "result:" + "f" * 32) is None
    assert sp.get_result(rs, "nonsense") is None


def test_nothing_is_fitted_before_the_user_asks(stores, session):
    st, rs = stores
    with pytest.raises(PreventUpdate):       # page load of a new session
        fit(st, rs, session, trigger=None)
    with pytest.raises(PreventUpdate):       # a control moved, nothing shown yet
        fit(st, rs, session, trigger=sp.MODEL, model="ssvi")


def test_a_reload_brings_the_sessions_surface_back(stores, session):
    st, rs = stores
    first = fit(st, rs, session, model="ssvi")["view"]
    saved = sp.saved_view(rs.cache, session)
    assert saved == first
    # page load: no view in the browser yet, same controls -> the same surface, from the cache
    restored = fit(st, rs, session, trigger=None, model="ssvi")
    assert restored["view"] == first and restored["note"].startswith("Shown from the cache")
    # another session sees nothing
    with pytest.raises(PreventUpdate):
        fit(st, rs, store_mod.new_session_id(), trigger=None)


def test_a_control_change_refits_while_a_surface_is_shown(stores, session):
    st, rs = stores
    view = fit(st, rs, session)["view"]
    out = fit(st, rs, session, trigger=sp.NO_ARB, no_arbitrage=True, view=view)
    assert out["view"]["settings"]["no_arbitrage"] is True
    assert sp.get_result(rs, out["view"]["key"]).no_arbitrage is True


def test_bad_input_is_one_clear_line_and_keeps_the_surface(stores, session, shared_data):
    st, rs = stores
    view = fit(st, rs, session)["view"]
    out = fit(st, rs, session, trigger=sp.UNDERLYING, underlying="ETH", view=view)
    assert out["view"] is no_update
    text, is_open = out["alert"]
    assert is_open and text.startswith("options_chain.csv: column 'symbol': no options on underlying 'ETH'")
    assert text.endswith("The surface shown is unchanged.")
    # fills are no option chain
    fills_key = st.load_bytes(FILLS.encode(), name="fills.csv", session_id=session)
    out = fit(st, rs, session, source=fills_key, view=view)
    assert out["alert"][0].startswith("fills.csv: this is a fills dataset, not an option chain")
    # spread weights on a chain without any two-sided quote
    chain_key = deribit_key(st, shared_data)
    ds = st.get_dataset(chain_key)
    one_sided = ds.frame.assign(bid_price=float("nan"), ask_price=float("nan"), bid_iv=float("nan"),
                                ask_iv=float("nan"))
    key = st.put_dataset(None, Dataset(kind="options", frame=one_sided, source="one_sided.csv", sha256="1" * 64,
                                       report=ds.report))
    out = fit(st, rs, session, source=key, weights="spread")
    assert out["view"] is no_update
    assert out["alert"][0].startswith("one_sided.csv: column 'bid_price': weights='spread'")
    # a control value the form cannot hold
    out = fit(st, rs, session, model="heston")
    assert out["alert"] == ("surface model 'heston': choose one of svi, ssvi.", True)


def test_unexpected_errors_are_logged_not_shown(stores, session, monkeypatch, caplog):
    st, rs = stores

    def broken(*args, **kwargs):
        raise KeyError("internal-detail")

    monkeypatch.setattr(sp, "compute_surface", broken)
    out = fit(st, rs, session)
    assert out["view"] is no_update and "KeyError" in out["alert"][0] and "internal-detail" not in out["alert"][0]
    assert "internal-detail" in caplog.text


def test_filters_apply_to_the_active_chain_only(stores, session, shared_data):
    st, rs = stores
    key = deribit_key(st, shared_data, session)
    filters = {"end": "2020-06-08T00:00:06Z"}       # keeps the first three quotes (BTC, 9 June)
    # the chain is the active dataset: applied, in the key, in the note
    out = fit(st, rs, session, source=key, model="ssvi", filters=filters, active={"key": key})
    assert out["view"]["filters"] == filters and "Data filters applied: end = 2020-06-08T00:00:06Z" in out["note"]
    result = sp.get_result(rs, out["view"]["key"])
    assert result.chain.as_of == pd.Timestamp("2020-06-08T00:00:05.454Z") and len(result.slices) == 1
    plain = fit(st, rs, session, source=key, model="ssvi", active={"key": key})
    assert plain["view"]["key"] != out["view"]["key"]
    # the sample is not the active dataset: the filters belong to another file
    out = fit(st, rs, session, filters=filters, active={"key": key})
    assert out["view"]["filters"] == {} and "not applied" in out["note"]
    # filters that leave nothing
    out = fit(st, rs, session, source=key, filters={"start": "2030-01-01"}, active={"key": key})
    assert out["alert"][0] == "deribit_options_chain.csv: no quote passes the Data panel's filters."


# --- what is shown ------------------------------------------------------------------------------------


def test_render_empty_evicted_and_fitted(stores, session):
    st, rs = stores
    empty = sp.render_outputs(rs, None)
    assert empty["download_disabled"] is True and empty["expiry_options"] == []
    assert message_of(empty[sp.SURFACE]) == sp.EMPTY_MESSAGE
    evicted = sp.render_outputs(rs, {"key": "result:" + "0" * 32})
    assert message_of(evicted[sp.TERM]) == sp.EVICTED
    assert message_of(sp.smiles_output(rs, {"key": "result:" + "0" * 32}, [])) == sp.EVICTED
    view = fit(st, rs, session, model="ssvi")["view"]
    out = sp.render_outputs(rs, view)
    assert out["download_disabled"] is False and len(out["expiry_value"]) == 8
    assert out[sp.STATUS].to_plotly_json()["props"]["data-level"] == "success"
    params = out[sp.PARAMS].children
    assert params.id == sp._id("params-table") and len(params.children[1].children) == 8
    assert out[sp.SSVI] is not None and out[sp.CONDITIONS] is not None
    assert out[sp.CALENDAR].id == sp._id("calendar-none")
    assert len(out[sp.RESIDUALS].data) == 8 and out[sp.SURFACE].data[0].type == "surface"
    # the chosen expiries are kept across a refit
    chosen = out["expiry_value"][:2]
    assert sp.render_outputs(rs, view, chosen)["expiry_value"] == chosen
    assert len([t for t in sp.smiles_output(rs, view, chosen).data if t.mode == "markers"]) == 2


def test_render_failure_is_a_message(stores, session, monkeypatch):
    st, rs = stores
    view = fit(st, rs, session)["view"]
    sp._prepared.clear()
    monkeypatch.setattr(sp.SF, "surface_view", lambda result: 1 / 0)
    out = sp.render_outputs(rs, view)
    assert "ZeroDivisionError" in message_of(out[sp.SURFACE])


# --- the surface config ------------------------------------------------------------------------------------


def test_download_the_surface_config(stores, session):
    st, rs = stores
    view = fit(st, rs, session, model="svi")["view"]
    out = sp.download_output(st, rs, view)
    assert out["alert"] == ("", False)
    data = out["download"]
    assert data["filename"] == "surface_svi_BTC_20241031T0000.json" and data["type"] == "application/json"
    config = json.loads(data["content"])
    assert config["kind"] == "surface" and config["model"]["name"] == "svi"
    sha = hashlib.sha256((SAMPLE_DIR / sp.SAMPLE_CHAIN).read_bytes()).hexdigest()
    assert config["data"]["sha256"] == sha and config["data"]["file"] == sp.SAMPLE_CHAIN
    assert config["data"]["rows"] == 572 and config["data"]["filters"] == {}
    result = sp.get_result(rs, view["key"])
    for e, s in zip(config["model"]["expiries"], result.slices):
        assert e["params"] == pytest.approx(dict(s.params))
        assert set(e["params"]) == {"a", "b", "rho", "m", "sigma"}
        assert config["metrics"]["by_expiry"][e["expiry"]]["rmse_vol_pts"] == pytest.approx(s.rmse_vol_pts)
    assert config["optimizer"]["weights"] == "vega"
    assert all(v["success"] for v in config["optimizer"]["slices"].values())


def test_download_without_a_surface_says_why(stores):
    st, rs = stores
    out = sp.download_output(st, rs, None)
    assert out["download"] is no_update and out["alert"] == ("no surface to export: press Fit surface first", True)
    out = sp.download_output(st, rs, {"key": "result:" + "0" * 32})
    assert out["alert"] == (sp.EVICTED, True)


def test_filtered_config_records_its_filters(stores, session, shared_data):
    st, rs = stores
    key = deribit_key(st, shared_data, session)
    filters = {"end": "2020-06-08T00:00:06Z"}
    view = fit(st, rs, session, source=key, model="ssvi", filters=filters, active={"key": key})["view"]
    config = json.loads(sp.download_output(st, rs, view)["download"]["content"])
    assert config["data"]["filters"] == filters
    assert config["data"]["rows"] == len(results_mod.apply_filters(st.get_dataset(key).frame, filters)) == 3


# --- wiring -------------------------------------------------------------------------------------------------


def test_the_panel_is_wired_into_the_app(tmp_path):
    from execal import app as app_module
    from execal.components import identity, layout

    assert sp in layout.PANELS
    app = app_module.create_app(cache_dir=str(tmp_path / "c"))
    # the fit callback through Dash's own endpoint: Fit pressed on the sample chain
    session = store_mod.new_session_id()
    # the browser of this session holds its signed cookie: the server reads the session from it
    client = app.server.test_client()
    client.set_cookie(identity.COOKIE_NAME, identity.session_cookie(app, session))
    values = {sp.RUN: 1, sp.SOURCE: SAMPLE, sp.UNDERLYING: "BTC", sp.MODEL: "svi", sp.WEIGHTS: "vega",
              sp.NO_ARB: False, results_mod.FILTERS_ID: {}, sp.PRICING: [], store_mod.SESSION_STORE_ID: session}
    fit_cb, response = post_callback(client, f"..{sp.VIEW}.data", values,
                                     changed=f"{sp.RUN}.n_clicks")
    assert {i["id"] for i in fit_cb["inputs"]} == {sp.RUN, sp.SOURCE, sp.UNDERLYING, sp.MODEL, sp.WEIGHTS, sp.NO_ARB,
                                                  results_mod.FILTERS_ID, sp.PRICING}
    assert response.status_code == 200, response.get_data(as_text=True)
    view = response.get_json()["response"][sp.VIEW]["data"]
    assert results_mod.is_result_key(view["key"])
    # keys only in the browser: the response is small and holds no frame
    assert len(response.data) < 4_000
    assert sp.saved_view(store_mod.get_store(app).cache, session)["key"] == view["key"]
