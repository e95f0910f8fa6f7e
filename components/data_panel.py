"""The Data panel: bring a dataset in (upload or bundled sample), see what it is, and what validation dropped.

It owns the session's *active dataset*: it sets `store.ACTIVE_DATASET_ID` (a key, never a frame), which
later panels read. A file that fails to load leaves the previous dataset active and shows the loader's
`DataError` message in an alert; anything unexpected is logged server-side and shown as one short line.
On a session's first visit the bundled sample fills are loaded, so the app never opens empty.

`load_dataset` and `render_dataset` are the callbacks' bodies as plain functions (tests call them directly);
`register_callbacks` only wires them to ids.
"""
from __future__ import annotations

import base64
import binascii
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from components import figures
from components import store as store_mod
from models.io import parse_mapping
from models.schema import KINDS, DataError

if TYPE_CHECKING:
    from components.layout import Settings

log = logging.getLogger(__name__)

PANEL = "data"
TITLE = "Data"

SAMPLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".txt", ".gz")
PRELOAD_SAMPLE = "fills.csv"
AUTO_KIND = "auto"


def _id(name: str) -> str:
    return f"{name}-{PANEL}"


UPLOAD = _id("upload")
UPLOAD_LABEL = _id("upload-label")
SAMPLE = _id("sample")
KIND = _id("kind")
MAPPING = _id("mapping")
APPLY = _id("apply")
ALERT = _id("alert")
SIZE_ALERT = _id("size-alert")
LIMITS = _id("limits")
SOURCE = _id("source")
SUMMARY = _id("summary")
REPORT = _id("report")
COVERAGE = _id("coverage")
GRID = _id("grid")
PREVIEW_TITLE = _id("preview-title")


# --- pure helpers -------------------------------------------------------------------------------


def sample_files(sample_dir: Path) -> list[str]:
    """Bundled sample files a user may pick (names only; the server never opens other paths)."""
    if not sample_dir.is_dir():
        return []
    return sorted(p.name for p in sample_dir.iterdir()
                  if p.is_file() and p.name.lower().endswith(SAMPLE_SUFFIXES))


def decode_upload(contents: str, filename: str) -> bytes:
    """The bytes of a dcc.Upload data URL ('data:<mime>;base64,<payload>')."""
    head, sep, payload = (contents or "").partition(",")
    if not sep or ";base64" not in head:
        raise DataError("the upload did not arrive as a base64 data URL; try again", file=filename)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("the upload was corrupted in transit (bad base64); try again", file=filename) from None


def parse_mapping_text(text: str | None) -> dict[str, str] | None:
    """'their=canonical, ...' → {their: canonical}; None for an empty box. Raises DataError."""
    if not text or not text.strip():
        return None
    return parse_mapping(text) or None


KEPT_NOTE = "\nThe dataset shown below is unchanged."


def _kept_note(st: store_mod.SessionStore, session_id: str) -> str:
    return KEPT_NOTE if st.active_key(session_id) else ""


def alert(message: str) -> tuple[str, bool]:
    return message, True


# --- callback bodies ----------------------------------------------------------------------------


def _load_source(st: store_mod.SessionStore, settings: Settings, session_id: str, source: dict,
                 contents: str | None, kind: str | None, mapping_text: str | None) -> str:
    """Load an upload or a bundled sample for a session; returns the dataset key (raises DataError)."""
    kind = None if kind in (None, "", AUTO_KIND) else kind
    mapping = parse_mapping_text(mapping_text)
    name = source.get("name") or "upload"
    if source.get("type") == "sample":
        if name not in sample_files(settings.sample_dir):
            raise DataError("no such bundled sample file", file=name)
        raw = (settings.sample_dir / name).read_bytes()
        # the upload limit protects the server from users' files, not from its own samples
        max_bytes = max(settings.max_upload_bytes, len(raw))
    else:
        if not contents:
            raise DataError("choose a file to upload first", file=name)
        raw = decode_upload(contents, name)
        max_bytes = settings.max_upload_bytes
    return st.load_bytes(raw, name=name, kind=kind, mapping=mapping, max_bytes=max_bytes,
                         session_id=session_id)


def load_dataset(st: store_mod.SessionStore, settings: Settings, *, trigger: str | None, session_id: Any,
                 contents: str | None = None, filename: str | None = None, sample: str | None = None,
                 kind: str | None = None, mapping_text: str | None = None,
                 source: dict | None = None) -> dict:
    """Decide the session's active dataset after `trigger` (an input id, or None for page load).

    Returns {"active": {"key": ...} | no_update, "alert": (message, open) | no_update,
    "source": dict | no_update}. On failure the active dataset is left as it was.
    """
    out: dict[str, Any] = {"active": no_update, "alert": ("", False), "source": no_update}
    if not store_mod.is_session_id(session_id):
        out["alert"] = alert("Your session is not ready yet; reload the page.")
        return out

    if trigger in (None, store_mod.SESSION_STORE_ID):
        key = st.active_key(session_id)
        if key is None and PRELOAD_SAMPLE in sample_files(settings.sample_dir):
            source = {"type": "sample", "name": PRELOAD_SAMPLE}
            trigger, sample, out["source"] = SAMPLE, PRELOAD_SAMPLE, source
        else:
            out["active"] = {"key": key} if key else None
            return out

    if trigger == UPLOAD:
        source = {"type": "upload", "name": filename or "upload"}
    elif trigger == SAMPLE:
        if not sample:
            raise PreventUpdate
        source = {"type": "sample", "name": sample}
    elif trigger == APPLY:
        if not source:
            out["alert"] = alert("Load a file first, then change the kind or mapping and press Reload.")
            return out
    else:
        raise PreventUpdate

    try:
        key = _load_source(st, settings, session_id, source, contents, kind, mapping_text)
    except DataError as err:
        out["alert"] = alert(str(err) + _kept_note(st, session_id))
        return out
    except Exception as err:  # never a traceback in the browser: log it, say one line
        log.exception("loading %s failed", source.get("name"))
        out["alert"] = alert(f"{source.get('name')}: could not be loaded ({type(err).__name__}). "
                             "The details are in the server log." + _kept_note(st, session_id))
        return out
    out["active"] = {"key": key}
    out["source"] = source
    return out


EMPTY_MESSAGE = ("No dataset loaded yet. Upload a CSV, CSV.gz or Parquet file, "
                 "or pick a bundled sample on the left.")


def render_dataset(st: store_mod.SessionStore, active: dict | None) -> dict:
    """What the panel shows for the active dataset: summary, report, coverage chart and preview grid."""
    key = (active or {}).get("key") if isinstance(active, dict) else None
    dataset = st.get_dataset(key) if key else None
    if dataset is None:
        message = EMPTY_MESSAGE if not key else (
            "This dataset is no longer in the server's cache. Load the file again.")
        return {
            "summary": html.P(message, className="execal-empty text-muted mb-0"),
            "report": html.P("The validation report appears here once a file is loaded.",
                             className="execal-empty text-muted mb-0"),
            "coverage": figures.empty_figure("No data"),
            "columns": [], "rows": [],
            "preview_title": "Preview",
        }
    summary = dataset.summary()
    columns, rows = figures.preview_table(dataset.frame)
    return {
        "summary": summary_component(summary),
        "report": report_component(summary["report"], dataset.report.warnings),
        "coverage": figures.coverage_figure(dataset.frame),
        "columns": columns, "rows": rows,
        "preview_title": f"Preview (first {len(rows):,} of {summary['rows']:,} rows)",
    }


def summary_component(summary: dict) -> html.Dl:
    items = []
    for label, value in figures.summary_rows(summary):
        items += [html.Dt(label, className="col-sm-3"),
                  html.Dd(value, className="col-sm-9", **{"data-field": label.lower().replace(" ", "-")})]
    return html.Dl(items, className="row mb-0 execal-summary", id=_id("summary-list"))


def report_component(report: dict, warnings: list[str] | None) -> html.Div:
    children: list = [html.P(figures.report_headline(report), className="mb-2 execal-report-headline")]
    drops = figures.drop_rows(report)
    if drops:
        head = html.Thead(html.Tr([html.Th(c) for c in drops[0]]))
        body = html.Tbody([html.Tr([html.Td(v) for v in d.values()]) for d in drops])
        children.append(dbc.Table([head, body], size="sm", bordered=False, striped=True,
                                  className="execal-drops mb-2"))
    for w in warnings or []:
        children.append(dbc.Alert(w, color="warning", className="py-1 px-2 mb-1 small"))
    if not drops and not warnings:
        children.append(html.P("No rows dropped, no warnings.", className="text-muted small mb-0"))
    return html.Div(children)


# --- layout -------------------------------------------------------------------------------------


def _labelled(label: str, control, control_id: str, help_text: str | None = None) -> html.Div:
    parts = [html.Label(label, htmlFor=control_id, className="form-label mb-1"), control]
    if help_text:
        parts.append(html.Div(help_text, className="form-text"))
    return html.Div(parts, className="mb-3")


def layout(app) -> html.Div:
    from components.layout import get_settings

    settings = get_settings(app)
    samples = sample_files(settings.sample_dir)
    limit = f"{settings.max_upload_mb:.3g} MB"
    load_card = dbc.Card([
        dbc.CardHeader(html.H2("Load data", className="h6 mb-0")),
        dbc.CardBody([
            html.Label("Upload a file", id=UPLOAD_LABEL, className="form-label mb-1"),
            dcc.Upload(
                id=UPLOAD, multiple=False, className="execal-upload mb-1",
                children=html.Div(["Drag and drop or ", html.Span("choose a file", className="execal-link")],
                                  **{"aria-labelledby": UPLOAD_LABEL}),
            ),
            html.Div(f"CSV, CSV.gz or Parquet, up to {limit}. The kind and column mapping below apply.",
                     className="form-text mb-3"),
            _labelled("Or pick a bundled sample", dcc.Dropdown(
                id=SAMPLE, options=[{"label": s, "value": s} for s in samples], placeholder=(
                    "Choose a sample file" if samples else "No sample files on this server"),
                clearable=False, disabled=not samples), SAMPLE),
            _labelled("Dataset kind", dcc.Dropdown(
                id=KIND, value=AUTO_KIND, clearable=False,
                options=[{"label": "Detect automatically", "value": AUTO_KIND}]
                + [{"label": figures.KIND_LABELS.get(k, k), "value": k} for k in KINDS]), KIND),
            _labelled("Column mapping", dbc.Input(
                id=MAPPING, type="text", placeholder="their_name=canonical, ..."),
                MAPPING, "For columns the loader does not recognise, e.g. px=exec_price, qty=quantity."),
            dbc.Button("Reload with these options", id=APPLY, color="secondary", outline=True, size="sm"),
            dcc.Store(id=LIMITS, data={"max_request_chars": settings.max_request_bytes, "limit": limit}),
            dcc.Store(id=SOURCE, storage_type="memory"),
        ]),
    ], className="mb-3")

    def card(title, body, title_id=None):
        heading = html.H2(title, className="h6 mb-0", **({"id": title_id} if title_id else {}))
        return dbc.Card([dbc.CardHeader(heading), dbc.CardBody(body)], className="mb-3")

    summary_card = card("Dataset", dcc.Loading(html.Div(
        html.P(EMPTY_MESSAGE, className="execal-empty text-muted mb-0"), id=SUMMARY), type="dot"))
    report_card = card("Validation", html.Div(
        html.P("The validation report appears here once a file is loaded.",
               className="execal-empty text-muted mb-0"), id=REPORT))
    coverage_card = card("Rows over time", dcc.Graph(
        id=COVERAGE, figure=figures.empty_figure("No data"), config={"displaylogo": False},
        style={"height": "220px"}))
    grid = dag.AgGrid(
        id=GRID, rowData=[], columnDefs=[], className="execal-grid",
        style={"height": "360px", "width": "100%"},
        defaultColDef={"sortable": True, "resizable": True, "filter": True, "minWidth": 110},
        # dots in a column name must not be read as nested fields; no custom HTML templates (XSS guard)
        dashGridOptions={"suppressFieldDotNotation": True, "animateRows": False,
                         "localeText": {"noRowsToShow": "No rows to preview"}},
    )
    preview_card = card("Preview", grid, title_id=PREVIEW_TITLE)
    return dbc.Row([
        dbc.Col(load_card, md=4, lg=3),
        dbc.Col([dbc.Alert(id=ALERT, is_open=False, color="danger", dismissable=True, className="execal-error"),
                 dbc.Alert(id=SIZE_ALERT, is_open=False, color="danger", className="execal-error"),
                 summary_card, dbc.Row([dbc.Col(report_card, lg=6), dbc.Col(coverage_card, lg=6)]),
                 preview_card], md=8, lg=9),
    ], className="execal-data-panel")


# --- callbacks ----------------------------------------------------------------------------------


def register_callbacks(app) -> None:
    from components.layout import get_settings

    st = store_mod.get_store(app)
    settings = get_settings(app)

    @app.callback(
        Output(store_mod.ACTIVE_DATASET_ID, "data"),
        Output(ALERT, "children"), Output(ALERT, "is_open"),
        Output(SOURCE, "data"),
        Input(store_mod.SESSION_STORE_ID, "modified_timestamp"),
        Input(UPLOAD, "contents"), Input(SAMPLE, "value"), Input(APPLY, "n_clicks"),
        State(store_mod.SESSION_STORE_ID, "data"), State(UPLOAD, "filename"),
        State(KIND, "value"), State(MAPPING, "value"), State(SOURCE, "data"),
    )
    def _load(session_ts, contents, sample, _clicks, session_id, filename, kind, mapping_text, source):
        trigger = ctx.triggered_id
        if trigger in (None, store_mod.SESSION_STORE_ID) and (session_ts is None or session_ts < 0):
            # the store has not been read from localStorage yet: the real session id follows
            raise PreventUpdate
        out = load_dataset(st, settings, trigger=trigger, session_id=session_id, contents=contents,
                           filename=filename, sample=sample, kind=kind, mapping_text=mapping_text,
                           source=source)
        message, is_open = out["alert"]
        return out["active"], message, is_open, out["source"]

    @app.callback(
        Output(SUMMARY, "children"), Output(REPORT, "children"), Output(COVERAGE, "figure"),
        Output(GRID, "columnDefs"), Output(GRID, "rowData"), Output(PREVIEW_TITLE, "children"),
        Input(store_mod.ACTIVE_DATASET_ID, "data"),
    )
    def _render(active):
        view = render_dataset(st, active)
        return (view["summary"], view["report"], view["coverage"], view["columns"], view["rows"],
                view["preview_title"])

    # Over-size uploads are refused by the server (MAX_CONTENT_LENGTH) before any callback runs, so the
    # browser itself says why; the size of the base64 payload is known there without sending it.
    app.clientside_callback(
        """
        function(contents, filename, limits) {
            if (!contents || !limits) { return ["", false]; }
            if (contents.length > limits.max_request_chars) {
                return [(filename || "file") + ": the file is over the " + limits.limit +
                        " upload limit and was not loaded.\\nThe dataset shown below is unchanged.", true];
            }
            return ["", false];
        }
        """,
        Output(SIZE_ALERT, "children"), Output(SIZE_ALERT, "is_open"),
        Input(UPLOAD, "contents"), State(UPLOAD, "filename"), State(LIMITS, "data"),
    )
