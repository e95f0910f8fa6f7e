"""The Export panel and the HTML report without a browser: config / predictions / report downloads from the
server-side stores (who may download what), and importing a config back into the same view."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import plotly
import pytest
from dash import no_update

from browser_utils import fills_csv
from execal.components import calibrate_panel as cp
from execal.components import identity
from execal.components import export_panel as ep
from execal.components import report
from execal.components import results as results_mod
from execal.components import store
from execal.models.impact.config import dump_config, load_config
from execal.models.impact.fit import Calibrator
from execal.models.data.io import load

from ui_fixtures import OTHER_SESSION, ROOT, SESSION
from ui_fixtures import SAMPLE_FILLS as SAMPLE


def calibrate(st, results, fills_key, filters=None, **changes) -> str:
    c = cp.controls_from_settings(None)
    c.update(changes)
    plan = cp.plan_calibration(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                               filters=filters or {}, run_settings=cp.build_settings(**c))
    return cp.run_calibration(st, results, plan["job"]) if plan["job"] else plan["active"]["key"]


def data_url(text: str | bytes) -> str:
    raw = text.encode() if isinstance(text, str) else text
    return "data:application/octet-stream;base64," + base64.b64encode(raw).decode()


def body_text(body) -> str:
    return body if isinstance(body, str) else "".join(body)


# --- downloads ----------------------------------------------------------------------------------


def test_config_downloads_validate_and_carry_provenance(st, results, fills_key):
    key = calibrate(st, results, fills_key, filters={"venue": ["okx", "binance"]})
    result = results.get(key)
    texts = {}
    for name in ("config.json", "config.yaml"):
        body, mime, filename = ep.export_response(st, results, name, SESSION, key)
        assert filename.startswith("execal_power_law_") and filename.endswith(name)
        texts[name] = body
        cfg = load_config(body)
        assert cfg["model"]["params"] == result.params          # exact: floats written with repr
        assert cfg["data"]["sha256"] == st.get_dataset(fills_key).sha256
        assert cfg["data"]["filters"] == {"venue": ["binance", "okx"]}
        frame = load(SAMPLE.read_bytes(), name="fills.csv").frame
        assert cfg["data"]["rows"] == int(frame["venue"].isin(["okx", "binance"]).sum())
        assert cfg["optimizer"]["report"]["converged"] is True
    assert json.loads(texts["config.json"])["model"]["name"] == "power_law"
    assert texts["config.yaml"].startswith("schema_version: 1")


def test_predictions_csv_is_what_the_model_predicts(st, results, fills_key):
    key = calibrate(st, results, fills_key, settings={**cp.controls_from_settings(None)["settings"],
                                                     "test_fraction": 0.2})
    result = results.get(key)
    body, mime, _ = ep.export_response(st, results, "predictions.csv", SESSION, key)
    assert mime == "text/csv"
    frame = pd.read_csv(io.StringIO(body_text(body)))
    n = result.features.n
    assert len(frame) == n
    assert list(frame.columns) == ["row", "timestamp", "symbol", "venue", "side", "order_id", "quantity",
                                   "participation", "observed_cost_bps", "predicted_cost_bps", "residual_bps",
                                   "sample", "parameters"]
    assert set(frame["parameters"]) == {"fitted"}
    np.testing.assert_allclose(frame["predicted_cost_bps"], result.predicted_bps, rtol=1e-9)
    np.testing.assert_allclose(frame["residual_bps"], frame["observed_cost_bps"] - frame["predicted_cost_bps"],
                               rtol=0, atol=1e-6)   # each column to 10 significant digits
    assert (frame["sample"] == "held-out").sum() == n - result.n_train
    assert frame["row"].iloc[0] == result.row_index[0] + 1
    assert set(frame["side"]) == {1, -1}
    # blocks glue into the same file, with one header
    chunked = "".join(ep.predictions_chunks(result, chunk_rows=777))
    assert chunked == "".join(ep.predictions_chunks(result, chunk_rows=10**7))
    assert chunked.count("row,timestamp") == 1


def test_segmented_predictions_use_each_segments_parameters(st, results, fills_key):
    key = calibrate(st, results, fills_key, segments=["venue"])
    result = results.get(key)
    frame = pd.read_csv(io.StringIO(body_text(ep.export_response(st, results, "predictions.csv", SESSION, key)[0])))
    np.testing.assert_allclose(frame["predicted_cost_bps"], result.predict(result.pooled.features), rtol=1e-9)
    assert set(frame["segment"]) == {"venue=binance", "venue=coinbase", "venue=okx"}
    assert (frame["segment"] == "venue=" + frame["venue"]).all()


def test_report_is_self_contained_and_says_what_the_panel_says(st, results, fills_key):
    key = calibrate(st, results, fills_key, segments=["venue"], bootstrap_n=20)
    result = results.get(key)
    page, mime, filename = ep.export_response(st, results, "report.html", SESSION, key)
    assert mime == "text/html" and filename.endswith("report.html")
    # offline: plotly.js inline once, nothing fetched from anywhere
    assert page.count("<script>") == 1 + page.count("Plotly.newPlot(")
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|<img[^>]+src=\"?https?:", page)
    assert len(page) < 8 * 2**20
    scripts = re.findall(r"var f=(.*?);Plotly\.newPlot", page)
    figs = report.report_figures(result)
    assert len(scripts) == len(figs) == 6
    for text in scripts:
        assert json.loads(text.replace("<\\/", "</"))["data"]
    assert '<span class="badge success">Converged</span>' in page
    for name, value in result.pooled.params.items():
        assert f"<td>{name}</td><td>{value:.6g}</td>" in page
    assert "venue=okx" in page and "bootstrap 95% CI" in page
    assert st.get_dataset(fills_key).sha256 in page      # provenance
    assert '"schema_version": 1' in page                 # the config itself


# --- what is on screen: fitted or hand-set (issue 10 item 12) ------------------------------------


def links(results, key, record) -> dict:
    return ep.links_outputs(results, {"key": key}, SESSION, record)


def test_export_writes_the_hand_set_parameters_on_screen_labelled(st, results, fills_key):
    key = calibrate(st, results, fills_key, settings={**cp.controls_from_settings(None)["settings"],
                                                     "test_fraction": 0.2})
    fit = results.get(key)
    hand = {**fit.params, "Y": fit.params["Y"] * 1.25, "delta": 0.6}
    record = {"key": key, "target": results_mod.POOLED, "params": hand}     # what the Tweak panel keeps
    card = links(results, key, record)
    shown = card["key"]
    assert shown != key and not any(card["disabled"])
    assert card["hrefs"] == [ep.link_href(SESSION, shown, name) for _, name, _ in ep.LINKS]
    assert all("_hand-set_" in n for n in card["names"])
    summary = str(card["summary"])
    assert "Hand-set parameters" in summary and "Fitted parameters" not in summary
    # the config says hand-set, holds the hand-set values and the fit they started from
    body, _, filename = ep.export_response(st, results, "config.json", SESSION, shown)
    cfg = load_config(body)
    assert "_hand-set_" in filename
    assert cfg["parameters"]["source"] == "hand-set" and cfg["parameters"]["hand_set_of"] == key
    assert cfg["parameters"]["fitted"] == fit.params and cfg["model"]["params"] == hand
    assert cfg["model"]["status"] == "fixed"
    # the predictions are those of the hand-set parameters, computed independently here
    expected = Calibrator(**fit.settings).fix(hand, fit.features).predicted_bps
    frame = pd.read_csv(io.StringIO(body_text(ep.export_response(st, results, "predictions.csv", SESSION, shown)[0])))
    np.testing.assert_allclose(frame["predicted_cost_bps"], expected, rtol=1e-9)
    assert not np.allclose(frame["predicted_cost_bps"], fit.predicted_bps)
    assert set(frame["parameters"]) == {"hand-set"}
    page = ep.export_response(st, results, "report.html", SESSION, shown)[0]
    assert "HAND-SET in the Tweak panel" in page and '"source": "hand-set"' in page
    # the same values again are the same stored result (made once)
    assert links(results, key, record)["key"] == shown


def test_export_writes_the_fit_when_the_sliders_sit_on_it(st, results, fills_key):
    key = calibrate(st, results, fills_key)
    fit = results.get(key)
    for record in (None, {"key": key, "target": results_mod.POOLED, "params": dict(fit.params)},
                   {"key": "result:" + "0" * 32, "target": results_mod.POOLED, "params": {"Y": 9.0}},
                   {"key": key, "params": {"nonsense": "x"}}):
        card = links(results, key, record)
        assert card["key"] == key and "Fitted parameters" in str(card["summary"])
    cfg = load_config(ep.export_response(st, results, "config.json", SESSION, key)[0])
    assert cfg["parameters"]["source"] == "fitted" and cfg["model"]["params"] == fit.params


def test_a_hand_set_segment_is_exported_with_the_other_segments_fitted(st, results, fills_key):
    key = calibrate(st, results, fills_key, segments=["venue"])
    fit = results.get(key)
    okx = next(s.result for s in fit.segments if s.key == {"venue": "okx"})
    hand = {**okx.params, "Y": okx.params["Y"] + 0.3}
    shown = links(results, key, {"key": key, "target": "venue=okx", "params": hand})["key"]
    cfg = load_config(ep.export_response(st, results, "config.json", SESSION, shown)[0])
    segments = {s["key"]["venue"]: s["params"] for s in cfg["segments"]}
    assert segments["okx"] == hand and cfg["model"]["params"] == fit.pooled.params
    assert segments["binance"] == next(s.result.params for s in fit.segments if s.key == {"venue": "binance"})
    assert cfg["parameters"]["source"] == "hand-set" and cfg["parameters"]["target"] == "venue=okx"


def test_report_escapes_what_users_name():
    frame = load(fills_csv(40).encode(), name="x.csv").frame
    frame["adv"], frame["volatility"] = 1e4, 0.03
    from execal.models.impact.fit import Calibrator
    result = Calibrator(weights="none").fit(frame)
    page = report.build_report(result, {"source": "<script>alert(1)</script>.csv"}, figures=[], plotlyjs="")
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.csv" in page


def test_downloads_are_for_the_sessions_own_results(st, results, fills_key, tmp_path):
    key = calibrate(st, results, fills_key)
    with pytest.raises(ep.ExportError, match="no such result for this session"):
        ep.export_response(st, results, "config.json", OTHER_SESSION, key)
    with pytest.raises(ep.ExportError, match="no such export"):
        ep.export_response(st, results, "../../etc/passwd", SESSION, key)
    with pytest.raises(ep.ExportError):
        ep.export_response(st, results, "config.json", "not-a-session", key)
    # a session that loaded the same file may download results fitted on it
    st.set_active(OTHER_SESSION, fills_key)
    assert ep.export_response(st, results, "config.json", OTHER_SESSION, key)[0]
    results.cache.delete(key)   # evicted (a worker that never held it in memory asks)
    with pytest.raises(ep.ExportError, match="no longer in the server's cache"):
        ep.export_response(st, results_mod.ResultStore(st.cache), "config.json", SESSION, key)


def test_export_route_serves_attachments(tmp_path):
    from execal import app as app_module

    app = app_module.create_app(cache_dir=str(tmp_path / "c"))
    st, results = store.get_store(app), results_mod.get_results(app)
    fills_key = st.load_bytes(SAMPLE.read_bytes(), name="fills.csv", session_id=SESSION)
    key = calibrate(st, results, fills_key)
    client = app.server.test_client()
    # the session is the browser's signed cookie; a link names only the result
    client.set_cookie(identity.COOKIE_NAME, identity.session_cookie(app, SESSION))
    r = client.get(ep.link_href(SESSION, key, "config.json"))
    assert r.status_code == 200 and r.mimetype == "application/json"
    assert r.headers["Content-Disposition"] == f'attachment; filename="{ep.download_name(results.get(key), key, "config.json")}"'
    assert load_config(r.get_data(as_text=True))["model"]["params"] == results.get(key).params
    r = client.get(ep.link_href(SESSION, key, "predictions.csv"))
    assert r.status_code == 200 and r.get_data(as_text=True).count("\n") == results.get(key).features.n + 1
    assert client.get(ep.ROUTE_PREFIX + "config.json").status_code == 404
    # another browser (its own cookie, or none) gets nothing, even naming this session in the URL
    other = app.server.test_client()
    other.set_cookie(identity.COOKIE_NAME, identity.session_cookie(app, OTHER_SESSION))
    for c in (other, app.server.test_client()):
        assert c.get(ep.link_href(SESSION, key, "config.json")).status_code == 404
        assert c.get(ep.ROUTE_PREFIX + f"predictions.csv?session={SESSION}&key={key}").status_code == 404


# --- import -------------------------------------------------------------------------------------


def test_import_round_trip_restores_the_same_view(st, results, fills_key):
    key = calibrate(st, results, fills_key, filters={"symbol": ["BTCUSDT"]}, segments=["venue"], optimizer="trf",
                    loss="huber")
    fitted = results.get(key)
    text = ep.export_response(st, results, "config.yaml", SESSION, key)[0]
    out = ep.import_config(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                           contents=data_url(text), filename="my.yaml")
    assert out["color"] == "success" and out["message"].startswith("Imported my.yaml: Power law")
    new_key = out["active"]["key"]
    assert new_key != key and results.active(SESSION) == new_key
    imported, meta = results.get(new_key), results.meta(new_key)
    assert imported.pooled.status == "fixed" and imported.pooled.params == fitted.pooled.params
    assert [s.result.params for s in imported.segments] == [s.result.params for s in fitted.segments]
    assert imported.pooled.features.n == fitted.pooled.features.n         # the config's filters applied
    np.testing.assert_allclose(imported.predict(imported.pooled.features), fitted.predict(fitted.pooled.features),
                               rtol=1e-12)
    assert meta["filters"] == {"symbol": ["BTCUSDT"]}
    # the Calibrate controls come back as they were
    c = cp.controls_from_settings(meta["settings"])
    assert (c["optimizer"], c["loss"], c["segments"]) == ("trf", "huber", ["venue"])
    assert meta["settings"]["calibrator"] == results.meta(key)["settings"]["calibrator"]
    # the panel shows the config's standard errors, not a hand-set result's blanks
    rows = cp.parameter_table_rows(imported, meta)
    y = next(r for r in rows if r["parameter"] == "Y")
    assert y["std err"].endswith("(config)") and y["value"] == f"{fitted.pooled.params['Y']:.6g}"
    # importing the same file again is the same result
    again = ep.import_config(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                             contents=data_url(text), filename="my.yaml")
    assert again["active"] == {"key": new_key}


@pytest.mark.parametrize("text, expected", [
    ("{not json", "not valid JSON or YAML at line 1"),
    ('{"schema_version": 1, "model": {"name": "nope", "params": {}}}', "config key 'model.name': expected one of"),
    ('{"schema_version": 1, "model": {"name": "power_law", "params": {"Y": 1}}}', "config key 'model.params'"),
    ('{"schema_version": 9}', "config key 'schema_version'"),
    (b"\xff\xfe\x00garbage", "not UTF-8 text"),
])
def test_bad_configs_are_named_and_change_nothing(st, results, fills_key, text, expected):
    before = calibrate(st, results, fills_key)
    out = ep.import_config(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                           contents=data_url(text), filename="bad.json")
    assert out["active"] is no_update and out["color"] == "danger"
    assert out["message"].startswith("bad.json:") and expected in out["message"]
    assert "Traceback" not in out["message"] and out["message"].endswith("The active result is unchanged.")
    assert results.active(SESSION) == before


def test_import_needs_fills_to_apply_to(st, results, fills_key):
    key = calibrate(st, results, fills_key)
    text = ep.export_response(st, results, "config.json", SESSION, key)[0]
    out = ep.import_config(st, results, session_id=SESSION, active_dataset=None, contents=data_url(text),
                           filename="c.json")
    assert "load the fills" in out["message"]
    bars = st.load_bytes((ROOT / "sample_data" / "bars_15m.csv").read_bytes(), name="bars_15m.csv")
    out = ep.import_config(st, results, session_id=SESSION, active_dataset={"key": bars}, contents=data_url(text),
                           filename="c.json")
    assert "applies to fills; the active dataset is bars" in out["message"]
    out = ep.import_config(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                           contents="not a data url", filename="c.json")
    assert "base64 data URL" in out["message"]


def test_import_on_other_data_says_so(st, results, fills_key):
    key = calibrate(st, results, fills_key)
    text = ep.export_response(st, results, "config.json", SESSION, key)[0]
    small = load(fills_csv(30).encode(), name="small.csv")
    frame = small.frame.assign(adv=5e4, volatility=0.02)
    buf = io.BytesIO()
    frame.to_parquet(buf)
    other = st.load_bytes(buf.getvalue(), name="small.parquet", session_id=SESSION)
    out = ep.import_config(st, results, session_id=SESSION, active_dataset={"key": other}, contents=data_url(text),
                           filename="c.json")
    assert out["color"] == "warning" and "a different sha256" in out["message"]
    assert results.get(out["active"]["key"]).params == results.get(key).params


def test_export_summary_and_links(st, results, fills_key):
    empty = ep.summary_component(results, None)
    assert empty.children == ep.NO_RESULT
    key = calibrate(st, results, fills_key)
    text = json.dumps(ep.summary_component(results, key), cls=plotly.utils.PlotlyJSONEncoder)
    assert "Converged" in text and "Power law (power_law)" in text and "Y = " in text
    href = ep.link_href(SESSION, key, "report.html")
    assert href.startswith("/_execal/export/report.html?key=result%3A") and SESSION not in href


def test_dump_of_an_imported_result_keeps_the_parameters(st, results, fills_key):
    key = calibrate(st, results, fills_key)
    text = ep.export_response(st, results, "config.json", SESSION, key)[0]
    new = ep.import_config(st, results, session_id=SESSION, active_dataset={"key": fills_key},
                           contents=data_url(text), filename="c.json")["active"]["key"]
    again = load_config(ep.export_response(st, results, "config.json", SESSION, new)[0])
    assert again["model"]["params"] == load_config(text)["model"]["params"]
    assert again["model"]["status"] == "fixed"
    assert load_config(dump_config(results.get(new), ep.provenance_of(results.meta(new)), "yaml"))
