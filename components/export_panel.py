"""The Export panel: take the active result away (config, predictions, report) and bring a config back.

Downloads are plain links to one Flask route, `/_execal/export/<file>?key=…`, answered from the
server-side stores: the config as JSON or YAML (`execal.models.impact.config.dump_config` with the provenance the Calibrate
panel recorded), the predictions as CSV streamed in blocks (a million rows never sit in one string, and never
ride through a callback), and the self-contained HTML report (`execal.components.report`). A link works only for a
result of the asking session's datasets, the session being the request's own (its signed cookie or signed-in
user, never a URL parameter), so a result key alone opens nothing.

Importing a config validates it (`execal.models.impact.config.load_config`: a bad key is named, never a traceback), applies
it to the active dataset with the filters it records (the pooled parameters and, for a segmented config, each
segment's), stores that hand-set result like a fit, with the config's settings as the run settings, and makes
it the active result: the Calibrate panel then shows the same model, settings and parameters, and Diagnostics
and Tweak draw them.

What is exported is what is on screen: when the Tweak panel holds other parameters than the fit's (the
app-level `HAND_SET_ID` store), the downloads are of that hand-set result (`results.shown_result`), and
every file says which it is: the config's `parameters` block ({"source": "fitted" | "hand-set", "note",
and for hand-set values the fit they started from}), a `parameters` column in the predictions, the
report's status, and the badge in this panel.

`import_config`, `export_response`, `links_outputs` and `predictions_chunks` are plain functions (tests
call them directly); `register_callbacks` only wires them.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from typing import Any, Iterator, Mapping
from urllib.parse import urlencode

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from flask import Response, request

from execal.components import impact_figures as F
from execal.components import results as results_mod
from execal.components import shell
from execal.components import store as store_mod
from execal.components.report import build_report, optimizer_status
from execal.models.impact.config import ConfigError, config_dict, dump_config, load_config, make_provenance
from execal.models.impact.fit import CalibrationError, Calibrator, result_from_config
from execal.models.impact.result import Segment, SegmentedResult
from execal.models.data.csvsafe import neutralise
from execal.models.data.schema import DataError

log = logging.getLogger(__name__)

PANEL = "export"
TITLE = "Export"
_id = shell.ids_for(PANEL)

SUMMARY = _id("summary")
SHOWN = _id("shown")    # dcc.Store: the result key the summary and links were made for
# the download links, and the config import
CONFIG_JSON, CONFIG_YAML, PREDICTIONS, REPORT = _id("config-json", "config-yaml", "predictions", "report")
IMPORT, IMPORT_LABEL, IMPORT_ALERT = _id("import", "import-label", "import-alert")

ROUTE = "/_execal/export/<name>"
ROUTE_PREFIX = "/_execal/export/"
# file name served -> (what, mime type)
FILES = {
    "config.json": ("config", "application/json"),
    "config.yaml": ("config", "application/yaml"),
    "predictions.csv": ("predictions", "text/csv"),
    "report.html": ("report", "text/html"),
}
LINKS = ((CONFIG_JSON, "config.json", "Config (JSON)"), (CONFIG_YAML, "config.yaml", "Config (YAML)"),
         (PREDICTIONS, "predictions.csv", "Predictions (CSV)"), (REPORT, "report.html", "HTML report"))
CSV_CHUNK_ROWS = 100_000
MAX_CONFIG_BYTES = 5 * 2**20
NO_RESULT = "No calibration result yet: run one in the Calibrate panel, or import a config below."
EVICTED = "This result is no longer in the server's cache; calibrate again."


class ExportError(LookupError):
    """A download that cannot be served (unknown file, not this session's result, evicted)."""


# --- downloads ----------------------------------------------------------------------------------


def download_name(result, key: str, name: str, *, hand_set: bool = False) -> str:
    """execal_<model>_<8 hex of the key>[_hand-set]_<name>: distinct per result, stable per result."""
    pooled = getattr(result, "pooled", result)
    return f"execal_{pooled.model.name}_{key.split(':', 1)[-1][:8]}{'_hand-set' if hand_set else ''}_{name}"


def link_href(session_id: str, key: str, name: str) -> str:
    """The download link of a result (the session is the request's own cookie, never in the URL)."""
    return ROUTE_PREFIX + name + "?" + urlencode({"key": key})


def authorised(st: store_mod.SessionStore, results: results_mod.ResultStore, session_id: Any, key: Any) -> bool:
    """A session may download a result of one of its datasets, or its active result."""
    if not store_mod.is_session_id(session_id) or not results_mod.is_result_key(key):
        return False
    if results.active(session_id) == key:
        return True
    dataset = results.meta(key).get("dataset")
    return bool(dataset) and dataset in st.session_keys(session_id)


def provenance_of(meta: Mapping) -> dict:
    """The provenance the Calibrate panel recorded (dataset sha256, rows, span, filters)."""
    prov = dict(meta.get("provenance") or {})
    prov["filters"] = dict(meta.get("filters") or prov.get("filters") or {})
    return prov


def predictions_frame(result, rows: slice = slice(None), view: F.ResultView | None = None,
                      parameters: str = results_mod.FITTED) -> pd.DataFrame:
    """One row per order the model used: where it came from, observed and predicted cost, residual, sample
    (and segment), and whether the parameters were fitted or set by hand: what the Diagnostics panel
    draws (`impact_figures.view_of`, passed in when known)."""
    view = F.view_of(result) if view is None else view
    pooled = getattr(result, "pooled", result)
    f = pooled.features
    out: dict[str, Any] = {"row": f.row_index[rows] + 1}
    if f.timestamp_ns is not None:
        out["timestamp"] = pd.to_datetime(f.timestamp_ns[rows], utc=True)
    for name in ("symbol", "venue", "side", "order_id"):
        if name in f.labels:
            values = f.labels[name][rows]
            if name == "side":   # +1 buy / -1 sell, as in the canonical fills
                side = np.asarray(values, dtype=np.float64)
                values = side.astype(np.int8) if np.isfinite(side).all() else side
            out[name] = values
    if f.quantity is not None:
        out["quantity"] = f.quantity[rows]
    out["participation"] = f.participation[rows]
    out["observed_cost_bps"] = view.observed_bps[rows]
    out["predicted_cost_bps"] = view.predicted_bps[rows]
    out["residual_bps"] = view.residual_bps[rows]
    out["sample"] = np.where(view.is_train[rows], "in-sample", "held-out")
    if view.segment is not None:
        codes, labels = view.segment
        names = np.array(list(labels) + ["(pooled)"], dtype=object)
        out["segment"] = names[np.where(codes[rows] >= 0, codes[rows], len(labels))]
    out["parameters"] = parameters
    return pd.DataFrame(out)


def predictions_chunks(result, chunk_rows: int = CSV_CHUNK_ROWS, parameters: str = results_mod.FITTED) -> Iterator[str]:
    """The predictions CSV in blocks of `chunk_rows` rows (header first): memory stays O(chunk)."""
    n = int(getattr(result, "pooled", result).features.n)
    view = F.view_of(result)
    for start in range(0, max(n, 1), chunk_rows):
        block = predictions_frame(result, slice(start, min(start + chunk_rows, n)), view, parameters)
        yield neutralise(block).to_csv(index=False, header=start == 0, float_format="%.10g", lineterminator="\n",
                           date_format="%Y-%m-%dT%H:%M:%S.%fZ")


def export_response(st: store_mod.SessionStore, results: results_mod.ResultStore, name: str, session_id: Any,
                    key: Any) -> tuple[Any, str, str]:
    """(body: str or iterator of str, mime type, download file name). Raises ExportError."""
    if name not in FILES:
        raise ExportError(f"no such export: {name}")
    if not authorised(st, results, session_id, key):
        raise ExportError("no such result for this session")
    result = results.get(key)
    if result is None:
        raise ExportError("this result is no longer in the server's cache; calibrate again")
    meta = results.meta(key)
    label = results_mod.parameters_label(meta)
    what, mime = FILES[name]
    filename = download_name(result, key, name, hand_set=label["source"] == results_mod.HAND_SET)
    if what == "predictions":
        return predictions_chunks(result, parameters=label["source"]), mime, filename
    config = labelled_config(result, meta)
    if what == "config":
        return dump_config(config, path_or_format=name.rsplit(".", 1)[1]), mime, filename
    return build_report(result, meta, config=config), mime, filename


def labelled_config(result, meta: Mapping) -> dict:
    """The config of `result` with its `parameters` block: fitted or hand-set (and then the fit's key
    and fitted values they started from), so a config never passes hand-set values off as a fit."""
    config = config_dict(result, provenance_of(meta))
    block = results_mod.parameters_label(meta)
    if block["source"] == results_mod.HAND_SET:
        block = {**block, "hand_set_of": meta.get("hand_set_of"), "target": meta.get("target"),
                 "fitted": dict(meta.get("fitted") or {})}
    return {**config, "parameters": block}


# --- import -------------------------------------------------------------------------------------


def _segment_key(key: Mapping[str, str]) -> dict[str, str]:
    return {str(k): str(v) for k, v in key.items()}


def result_from_imported(config: Mapping, dataset) -> Any:
    """The config's parameters on `dataset` (already filtered): a hand-set `CalibrationResult` (status
    "fixed", `execal.models.impact.fit.result_from_config`), or a `SegmentedResult` of hand-set results when the
    config has segments (each on its own rows; a segment absent from the data is left out)."""
    pooled = result_from_config(config, dataset.frame)
    segments = config.get("segments") or []
    if not segments:
        return pooled
    by = tuple(config.get("segment_by") or list(segments[0]["key"]))
    calibrator = Calibrator(**pooled.settings)   # the settings result_from_config used
    groupings = {b: pooled.features.group(b) for b in by}
    fitted = []
    for seg in segments:
        rows = np.ones(pooled.features.n, dtype=bool)
        for b in by:
            grouping, value = groupings.get(b), seg["key"].get(b)
            if grouping is None or value not in grouping[1]:
                rows[:] = False
                break
            rows &= grouping[0] == grouping[1].index(value)
        idx = np.flatnonzero(rows)
        if idx.size:
            fitted.append(Segment(key=_segment_key(seg["key"]),
                                  result=calibrator.fix(seg["params"], pooled.features.take_rows(idx))))
    if not fitted:
        return pooled
    return SegmentedResult(by=by, pooled=pooled, segments=tuple(fitted), test=dict(config.get("segment_test") or {}))


def settings_from_config(config: Mapping) -> dict:
    """Run settings (as the Calibrate panel builds them) of a config, so its controls show them."""
    model = config["model"]
    settings = dict((config.get("optimizer") or {}).get("settings") or {})
    try:
        params = Calibrator(**{**settings, "model": model["name"],
                               "participation": model.get("participation", "adv")}).get_params()
    except (CalibrationError, TypeError, ValueError):
        # settings from another execal version: the model and participation still restore the view
        params = Calibrator(model=model["name"], participation=model.get("participation", "adv")).get_params()
    boot = model.get("bootstrap") or {}
    boot_ok = boot.get("by") in results_mod.BOOTSTRAP_BY
    n_boot = int(boot.get("n") or 0)
    return {"calibrator": params,
            "segments": [s for s in results_mod.SEGMENT_BY if s in (config.get("segment_by") or [])],
            "bootstrap": {"n": n_boot, "by": boot.get("by")} if n_boot >= 2 and boot_ok
            else None}


def import_config(st: store_mod.SessionStore, results: results_mod.ResultStore, *, session_id: Any,
                  active_dataset: Any, contents: str | None, filename: str | None) -> dict:
    """Validate an uploaded config and make its view the active result.

    Returns {"active": {"key"} | no_update, "message": str, "color": Bootstrap colour}; never raises for bad
    input (a ConfigError or DataError becomes the message; the active result is left as it was).
    """
    name = filename or "config"
    try:
        if not store_mod.is_session_id(session_id):
            raise DataError("your session is not ready yet; reload the page")
        raw = shell.decode_upload(contents, name)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{len(raw) / 2**20:.1f} MB is too big for a config (at most "
                              f"{MAX_CONFIG_BYTES // 2**20} MB)", source=name)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("not UTF-8 text: a config is a JSON or YAML file", source=name) from None
        try:
            config = load_config(text)
        except ConfigError as err:
            raise ConfigError(str(err), source=name) from None
        key_ds = shell.key_of(active_dataset)
        dataset = st.get_dataset(key_ds) if key_ds else None
        if dataset is None:
            raise DataError("load the fills to apply the config to in the Data panel first", file=name)
        if dataset.kind != "fills":
            raise DataError(f"a config applies to fills; the active dataset is {dataset.kind} ({dataset.source})",
                            file=name)
        data = dict(config.get("data") or {})
        filters = results_mod.clean_filters(data.get("filters") if isinstance(data.get("filters"), Mapping) else {})
        frame = results_mod.apply_filters(dataset.frame, filters)
        if len(frame) == 0:
            raise DataError(f"no rows of {dataset.source} pass the config's filters {filters}", file=name)
        filtered = dataclasses.replace(dataset, frame=frame)
        result = result_from_imported(config, filtered)
    except (ConfigError, DataError, CalibrationError) as err:
        return {"active": no_update, "message": f"{err}\nThe active result is unchanged.", "color": "danger"}
    except Exception as err:   # never a traceback in the browser: log it, say one line
        log.exception("importing %s failed", name)
        return {"active": no_update, "message": f"{name}: could not be imported ({type(err).__name__}); the "
                "details are in the server log.\nThe active result is unchanged.", "color": "danger"}
    run_settings = settings_from_config(config)
    key = results_mod.result_key(key_ds, filters, {"imported": hashlib.sha256(raw).hexdigest()})
    meta = {"origin": "import", "dataset": key_ds, "filters": filters, "settings": run_settings,
            "source": dataset.source, "rows": int(len(frame)),
            "provenance": make_provenance(dataset, filters=filters, frame=frame),
            "config_file": name, "config_model": config["model"],
            "config_report": (config.get("optimizer") or {}).get("report") or {}, "config_data": data,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    results.put(key, result, meta=meta)
    results.set_active(session_id, key)
    pooled = getattr(result, "pooled", result)
    message = (f"Imported {name}: {pooled.model.label} with its parameters on {dataset.source} "
               f"({len(frame):,} rows" + (f", filters {filters}" if filters else "") + ").")
    color = "success"
    if data.get("sha256") and data["sha256"] != dataset.sha256:
        message += (f"\nThe config was calibrated on {data.get('file') or 'another file'} (a different sha256): "
                    "its parameters are shown on the active data.")
        color = "warning"
    return {"active": {"key": key}, "message": message, "color": color}


# --- the panel ----------------------------------------------------------------------------------


PARAMETER_BADGES = {results_mod.FITTED: ("Fitted parameters", "success"),
                    results_mod.HAND_SET: ("Hand-set parameters", "warning")}


def summary_component(results: results_mod.ResultStore, key: str | None) -> html.Div:
    """What the downloads hold: the model, fitted or hand-set parameters (as a badge and a note), the data."""
    result = results.get(key) if key else None
    if result is None:
        return shell.empty_text(NO_RESULT if not key else EVICTED)
    meta = results.meta(key)
    pooled = getattr(result, "pooled", result)
    s = optimizer_status(result)
    seg = f", {len(result.segments)} segments by {', '.join(result.by)}" if hasattr(result, "segments") else ""
    origin = {"import": f"imported from {meta.get('config_file', 'a config')}", "tweak": "refitted in Tweak",
              "hand-set": "tweaked in Tweak"}.get(meta.get("origin"), "calibrated")
    label = results_mod.parameters_label(meta)
    text, colour = PARAMETER_BADGES[label["source"]]
    return html.Div([
        html.Div([html.Span(dbc.Badge(text, color=colour, className="me-2", id=_id("parameters-badge")),
                            **{"data-source": label["source"]}),
                  # a hand-set result's own status ("set by hand") would only repeat the first badge
                  dbc.Badge(s["badge"], color=s["color"], className="me-2")
                  if label["source"] == results_mod.FITTED else None,
                  html.Strong(f"{pooled.model.label} ({pooled.model.name})"),
                  html.Span(f" · {origin}{seg}", className="text-muted")], className="mb-1"),
        html.Div(", ".join(f"{k} = {F.format_number(v, 6)}" for k, v in pooled.params.items()),
                 className="small font-monospace", **{"data-field": "params"}),
        html.Div(f"Parameters {label['source']}: {label['note']}.", className="small", **{"data-field": "parameters"}),
        html.Div(f"Data: {meta.get('source', '?')}, {meta.get('rows', pooled.features.n):,} rows",
                 className="small text-muted"),
    ])


def links_outputs(results: results_mod.ResultStore, active_result: Any, session_id: Any, hand_set: Any) -> dict:
    """The download card for what is on screen: {"key": the result exported (the active one, or its
    hand-set version), "summary", "hrefs", "names", "disabled"} (the links empty and disabled without
    a result or a session)."""
    key, result = results_mod.shown_result(results, shell.result_key_of(active_result), hand_set)
    if result is None or not store_mod.is_session_id(session_id):
        n = len(LINKS)
        return {"key": key, "summary": summary_component(results, shell.key_of(active_result)),
                "hrefs": [""] * n, "names": [""] * n, "disabled": [True] * n}
    hand = results_mod.parameters_label(results.meta(key))["source"] == results_mod.HAND_SET
    return {"key": key, "summary": summary_component(results, key),
            "hrefs": [link_href(session_id, key, name) for _, name, _ in LINKS],
            "names": [download_name(result, key, name, hand_set=hand) for _, name, _ in LINKS],
            "disabled": [False] * len(LINKS)}


def shown_signature(active_result: Any, hand_set: Any) -> str | None:
    """What the card was drawn for: the active result and, when they are of it, the hand-set values."""
    key = shell.result_key_of(active_result)
    if key is None:
        return None
    record = hand_set if isinstance(hand_set, dict) and hand_set.get("key") == key else None
    return json.dumps([key, record], sort_keys=True, default=str)


def layout(app) -> html.Div:
    buttons = [dbc.Button(label, id=cid, href="", download="", external_link=True, color="primary",
                          outline=True, disabled=True, className="me-2 mb-2")
               for cid, _, label in LINKS]
    download_card = shell.card("Download the active result", [
        html.Div(shell.empty_text(NO_RESULT), id=SUMMARY, className="mb-3"),
        html.Div(buttons),
        html.Ul([
            html.Li(["Config: model, parameters (fitted or hand-set) with standard errors and intervals, "
                     "optimizer settings and report, data provenance (sha256, rows, span, filters), metrics, "
                     "segments; ", html.Code("execal predict --config"), " reads it."]),
            html.Li("Predictions: one row per order the model used: observed, predicted, residual, sample, "
                    "and whether the parameters were fitted or hand-set."),
            html.Li("Report: one HTML file that opens offline: status, parameters, metrics, figures, config."),
        ], className="small text-muted mb-0 mt-2"),
    ])
    import_card = shell.card("Import a config", [
        html.Label("Config file (JSON or YAML)", id=IMPORT_LABEL, className="form-label mb-1"),
        dcc.Upload(id=IMPORT, multiple=False, accept=".json,.yaml,.yml,application/json,text/yaml",
                   className="execal-upload mb-2",
                   children=html.Div(["Drag and drop or ", html.Span("choose a config", className="execal-link")],
                                     **{"aria-labelledby": IMPORT_LABEL})),
        html.Div("Its parameters are applied to the active dataset, with the filters it records, and become "
                 "the active result: Calibrate, Diagnostics and Tweak show them.", className="form-text mb-2"),
        dbc.Alert(id=IMPORT_ALERT, is_open=False, dismissable=True, className="execal-error mb-0"),
    ])
    return dbc.Row([dcc.Store(id=SHOWN, storage_type="memory"),
                    dbc.Col(download_card, lg=7), dbc.Col(import_card, lg=5)], className="execal-export-panel")


def register_callbacks(app) -> None:
    st, results = shell.stores(app)

    @app.callback(
        Output(SUMMARY, "children"),
        [Output(cid, "href") for cid, _, _ in LINKS] + [Output(cid, "download") for cid, _, _ in LINKS]
        + [Output(cid, "disabled") for cid, _, _ in LINKS],
        Output(SHOWN, "data"),
        Input(shell.ACTIVE_RESULT_ID, "data"), Input(shell.SESSION_STORE_ID, "data"),
        Input(shell.LOCATION_ID, "pathname"), Input(shell.HAND_SET_ID, "data"), State(SHOWN, "data"),
    )
    def _links(active_result, session_id, pathname, hand_set, shown):
        # hidden, the panel waits to be opened (its summary needs the whole result); opened again, it keeps it
        wanted = shown_signature(active_result, hand_set)
        if not shell.needs_render(PANEL, pathname, ctx.triggered_id, wanted, shown):
            raise PreventUpdate
        out = links_outputs(results, active_result, session_id, hand_set)
        return [out["summary"], *out["hrefs"], *out["names"], *out["disabled"], wanted]

    @app.callback(
        Output(shell.ACTIVE_RESULT_ID, "data", allow_duplicate=True),
        Output(IMPORT_ALERT, "children"), Output(IMPORT_ALERT, "is_open"), Output(IMPORT_ALERT, "color"),
        Input(IMPORT, "contents"),
        State(IMPORT, "filename"), State(shell.SESSION_STORE_ID, "data"), State(shell.ACTIVE_DATASET_ID, "data"),
        prevent_initial_call=True,
    )
    def _import(contents, filename, session_id, active):
        if not contents:
            raise PreventUpdate
        out = import_config(st, results, session_id=session_id, active_dataset=active, contents=contents,
                            filename=filename)
        return out["active"], out["message"], True, out["color"]

    @app.server.route(ROUTE)
    def _export(name: str):
        try:
            body, mime, filename = export_response(st, results, name, shell.request_owner(),
                                                   request.args.get("key"))
        except ExportError as err:
            return Response(f"{err}\n", status=404, mimetype="text/plain")
        headers = {"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store",
                   "X-Content-Type-Options": "nosniff"}
        return Response(body, mimetype=mime, headers=headers)
