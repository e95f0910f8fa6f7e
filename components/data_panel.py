"""The Data panel: bring a dataset in (upload or bundled sample), see what it is, and what validation dropped.

It owns the session's *active dataset*: it sets `store.ACTIVE_DATASET_ID` (a key, never a frame), which
later panels read. A file that fails to load leaves the previous dataset active and shows the loader's
`DataError` message in an alert; anything unexpected is logged server-side and shown as one short line.
On a session's first visit the bundled sample fills are loaded, so the app never opens empty.

It also owns the *filters* (date range, symbol, venue, size range) that every later panel applies: the
Filters card writes `results.FILTERS_ID` (a small dict, see `results.apply_filters`). The controls follow
the active result: after a fit, a config import or a page reload they show the filters that result was
calibrated on (when it belongs to the active dataset), and they are cleared when another dataset is loaded.

`load_dataset` and `render_dataset` are the callbacks' bodies as plain functions (tests call them directly);
`register_callbacks` only wires them to ids.
"""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from pathlib import Path
from typing import Any

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from execal.components import figures
from execal.components import results as results_mod
from execal.components import shell
from execal.components import store as store_mod
from execal.components.shell import Settings
from execal.models.data.io import parse_mapping
from execal.models.data.schema import KINDS, DataError

log = logging.getLogger(__name__)

PANEL = "data"
TITLE = "Data"

SAMPLE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".txt", ".gz")
PRELOAD_SAMPLE = "fills.csv"
AUTO_KIND = "auto"
_id = shell.ids_for(PANEL)

# loading: the upload, the bundled sample, the kind and mapping, and what went wrong
UPLOAD, UPLOAD_LABEL, SAMPLE, KIND, MAPPING, APPLY = _id("upload", "upload-label", "sample", "kind", "mapping", "apply")
ALERT, SIZE_ALERT = _id("alert", "size-alert")
# dcc.Stores: the upload limit; what "Reload with these options" applies to (the last file chosen,
# even a refused one)
LIMITS, SOURCE = _id("limits", "source")
# dcc.Store: {"token", "name", "bytes"} of a file the page streamed to the upload route (assets/execal_upload.js)
STREAMED = _id("streamed")
# what the dataset is
SUMMARY, REPORT, COVERAGE, GRID, PREVIEW_TITLE = _id("summary", "report", "coverage", "grid", "preview-title")
# the Filters card
FILTER_START, FILTER_END, FILTER_SYMBOL, FILTER_VENUE = _id("filter-start", "filter-end", "filter-symbol",
                                                            "filter-venue")
FILTER_SIZE_MIN, FILTER_SIZE_MAX = _id("filter-size-min", "filter-size-max")
FILTER_CLEAR, FILTER_STATUS = _id("filter-clear", "filter-status")
# the controls, in the order the filter callbacks read and write their values
FILTER_CONTROLS = (FILTER_START, FILTER_END, FILTER_SYMBOL, FILTER_VENUE, FILTER_SIZE_MIN, FILTER_SIZE_MAX)


# --- pure helpers -------------------------------------------------------------------------------


def sample_files(sample_dir: Path) -> list[str]:
    """Bundled sample files a user may pick (names only; the server never opens other paths)."""
    if not sample_dir.is_dir():
        return []
    return sorted(p.name for p in sample_dir.iterdir()
                  if p.is_file() and p.name.lower().endswith(SAMPLE_SUFFIXES))


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


def mapping_hint(name: str) -> str:
    """What to do after an upload is refused: the kind and mapping apply to that file on Reload."""
    return (f"\nType a column mapping (their_name=canonical) or choose the kind, then press "
            f"“Reload with these options”: they apply to {name}.")


@functools.lru_cache(maxsize=32)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sample_of_key(sample_dir: Path, key: str | None, secret: bytes) -> str | None:
    """The bundled sample a dataset key was loaded from (the key's prefix is the server-keyed content hash
    of the file), or None: the sample picker shows the sample on screen, and never a same-named upload."""
    if not store_mod.is_dataset_key(key):
        return None
    for name in sample_files(sample_dir):
        path = sample_dir / name
        st_ = path.stat()
        keyed = store_mod.dataset_key(_file_sha256(path, st_.st_size, st_.st_mtime_ns), "x", secret=secret,
                                      name=name)
        if key.startswith(keyed[:-len("-x")] + "-"):
            return name
    return None


def _source_bytes(st: store_mod.SessionStore, settings: Settings, session_id: str, source: dict) -> tuple[bytes, int]:
    """(bytes, size limit) of what `source` names: a bundled sample, or the session's last upload as the
    server keeps it (never re-sent by the browser). Raises DataError."""
    name = source.get("name") or "upload"
    if source.get("type") == "sample":
        if name not in sample_files(settings.sample_dir):
            raise DataError("no such bundled sample file", file=name)
        raw = (settings.sample_dir / name).read_bytes()
        # the upload limit protects the server from users' files, not from its own samples
        return raw, max(settings.max_upload_bytes, len(raw))
    kept = st.last_upload(session_id)
    if kept is None or kept[1] != name:
        raise DataError("the uploaded file is no longer on the server: choose it again", file=name)
    return kept[0], settings.max_upload_bytes


def _load_source(st: store_mod.SessionStore, settings: Settings, session_id: str, source: dict,
                 kind: str | None, mapping_text: str | None) -> str:
    """Load an upload or a bundled sample for a session; returns the dataset key (raises DataError)."""
    kind = None if kind in (None, "", AUTO_KIND) else kind
    mapping = parse_mapping_text(mapping_text)
    if source.get("token"):
        # streamed to disk by the upload route: parsed from the file, never whole in this worker
        return shell.load_streamed_upload(st, settings, session_id, source["token"], kind=kind, mapping=mapping)
    raw, max_bytes = _source_bytes(st, settings, session_id, source)
    return st.load_bytes(raw, name=source.get("name") or "upload", kind=kind, mapping=mapping,
                         max_bytes=max_bytes, session_id=session_id)


def load_dataset(st: store_mod.SessionStore, settings: Settings, *, trigger: str | None, session_id: Any,
                 contents: str | None = None, filename: str | None = None, sample: str | None = None,
                 kind: str | None = None, mapping_text: str | None = None,
                 source: dict | None = None, streamed: dict | None = None) -> dict:
    """Decide the session's active dataset after `trigger` (an input id, or None for page load).

    An upload's bytes are kept server-side for the session (`SessionStore.keep_upload`) and the upload
    box is emptied, so the browser holds no copy, choosing the same file again loads it again, and
    "Reload with these options" applies the kind and mapping to the file just uploaded, even when it
    was refused (the SOURCE store names it).

    Returns {"active": {"key": ...} | None | no_update, "alert": (message, open), "source": dict |
    no_update (what Reload applies to), "sample": the sample picker's value | no_update,
    "clear_upload": bool}. On failure the active dataset is left as it was.
    """
    out: dict[str, Any] = {"active": no_update, "alert": ("", False), "source": no_update, "sample": no_update,
                           "clear_upload": False}
    if not store_mod.is_session_id(session_id):
        out["alert"] = alert("Your session is not ready yet; reload the page.")
        return out

    preloading = trigger in (None, store_mod.SESSION_STORE_ID)
    if preloading:
        key = st.active_key(session_id)
        if key is None and PRELOAD_SAMPLE in sample_files(settings.sample_dir):
            source = {"type": "sample", "name": PRELOAD_SAMPLE}
            trigger, sample, out["source"] = SAMPLE, PRELOAD_SAMPLE, source
        else:
            out["active"] = {"key": key} if key else None
            out["sample"] = sample_of_key(settings.sample_dir, key, st.secret)
            return out

    if trigger == STREAMED:
        if not isinstance(streamed, dict) or not streamed.get("token"):
            raise PreventUpdate
        source = {"type": "upload", "name": str(streamed.get("name") or "upload"), "token": streamed["token"]}
        out["source"] = source      # the file stays on the server: Reload applies to it, loaded or refused
    elif trigger == UPLOAD:
        if not contents:
            raise PreventUpdate     # the box emptied by this callback, after taking the file
        name = filename or "upload"
        source = {"type": "upload", "name": name}
        out["clear_upload"] = True
        try:
            st.keep_upload(session_id, shell.decode_upload(contents, name), name)
        except DataError as err:
            out["alert"] = alert(str(err) + _kept_note(st, session_id))
            return out
        out["source"] = source      # from now on Reload applies to this file, loaded or refused
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

    name = source.get("name") or "upload"
    hint = mapping_hint(name) if source.get("type") == "upload" else ""
    try:
        key = _load_source(st, settings, session_id, source, kind, mapping_text)
    except DataError as err:
        out["alert"] = alert(str(err) + hint + _kept_note(st, session_id))
        return out
    except Exception as err:  # never a traceback in the browser: log it, say one line
        log.exception("loading %s failed", name)
        out["alert"] = alert(f"{name}: could not be loaded ({type(err).__name__}). "
                             "The details are in the server log." + _kept_note(st, session_id))
        return out
    out["active"] = {"key": key}
    out["source"] = source
    # the sample picker names the sample on screen, and nothing once another file is
    out["sample"] = name if preloading else (None if source.get("type") == "upload" else no_update)
    return out


EMPTY_MESSAGE = ("No dataset loaded yet. Upload a CSV, CSV.gz or Parquet file, "
                 "or pick a bundled sample on the left.")
NO_REPORT = "The validation report appears here once a file is loaded."


DATA_VIEW = "data-panel"


def dataset_view(dataset) -> dict:
    """What this panel shows of a dataset, JSON-ready (kept in the store beside the frame, so a page load
    on a new worker does not read a 1M-row frame to show its summary): summary, preview rows, coverage
    counts and the Filters card's choices."""
    columns, rows = figures.preview_table(dataset.frame)
    coverage = None
    if "timestamp" in dataset.frame.columns and dataset.frame["timestamp"].notna().any():
        edges, counts = figures.coverage_counts(dataset.frame["timestamp"])
        coverage = {"edges_ns": edges.as_unit("ns").asi8.tolist(), "counts": counts.tolist()}
    return {"summary": dataset.summary(), "columns": columns, "rows": rows, "coverage": coverage,
            "choices": filter_choices(dataset.frame)}


store_mod.register_view(DATA_VIEW, dataset_view)


def render_dataset(st: store_mod.SessionStore, active: dict | None) -> dict:
    """What the panel shows for the active dataset: summary, report, coverage chart and preview grid."""
    key = shell.key_of(active)
    view = st.view(key, DATA_VIEW) if key else None
    if view is None:
        message = EMPTY_MESSAGE if not key else (
            "This dataset is no longer in the server's cache. Load the file again.")
        return {
            "summary": shell.empty_text(message),
            "report": shell.empty_text(NO_REPORT),
            "coverage": figures.empty_figure("No data"),
            "columns": [], "rows": [],
            "preview_title": "Preview",
        }
    summary, rows = view["summary"], view["rows"]
    cov = view["coverage"]
    coverage = (figures.empty_figure("No timestamps to chart") if cov is None else
                figures.coverage_figure_of_counts(pd.to_datetime(np.asarray(cov["edges_ns"], dtype=np.int64),
                                                                 utc=True),
                                                  np.asarray(cov["counts"], dtype=np.int64)))
    return {
        "summary": summary_component(summary),
        "report": report_component(summary["report"], summary["report"].get("warnings")),
        "coverage": coverage,
        "columns": view["columns"], "rows": rows,
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


# --- filters ------------------------------------------------------------------------------------

# the columns a filter reads: counting rows that pass copies only these, not the whole frame
FILTER_COLUMNS = ("timestamp", "symbol", "venue", "quantity")
NO_FILTER_VALUES = (None, None, [], [], None, None)


def filter_choices(frame: pd.DataFrame | None) -> dict:
    """What the Filters card offers for a frame: symbols, venues, the date span (YYYY-MM-DD, UTC) and
    the size span; `has[column]` is False for a column the data lacks (its control is disabled)."""
    out: dict[str, Any] = {"symbols": [], "venues": [], "first_date": None, "last_date": None,
                           "size_min": None, "size_max": None, "has": {c: False for c in FILTER_COLUMNS}}
    if frame is None:
        return out
    for col, key in (("symbol", "symbols"), ("venue", "venues")):
        if col in frame.columns:
            out["has"][col] = True
            out[key] = sorted(map(str, frame[col].dropna().unique()))
    if "timestamp" in frame.columns and frame["timestamp"].notna().any():
        out["has"]["timestamp"] = True
        out["first_date"] = frame["timestamp"].min().strftime("%Y-%m-%d")
        out["last_date"] = frame["timestamp"].max().strftime("%Y-%m-%d")
    if "quantity" in frame.columns:
        out["has"]["quantity"] = True
        q = frame["quantity"].to_numpy(dtype=float, na_value=np.nan)
        q = q[np.isfinite(q)]
        if q.size:
            out["size_min"], out["size_max"] = float(q.min()), float(q.max())
    return out


def _utc_midnight(day: dt.date) -> str:
    return f"{day.isoformat()}T00:00:00+00:00"


def filters_from_controls(start_date: str | None, end_date: str | None, symbols, venues,
                          size_min, size_max) -> tuple[dict, list[str]]:
    """(filters dict for `results.apply_filters`, problems) from the card's control values.

    The end date is inclusive for the user (a day picked is a day kept), so the filter's exclusive
    `end` is the next UTC midnight. A problem (unreadable date, reversed range) means the filters
    are not applied; the card says why.
    """
    problems: list[str] = []
    out: dict[str, Any] = {}

    def day(text, what):
        if text in (None, ""):
            return None
        try:
            return dt.date.fromisoformat(str(text))
        except ValueError:
            problems.append(f"the {what} date {text!r} is not a date (YYYY-MM-DD)")
            return None

    start, end = day(start_date, "start"), day(end_date, "end")
    if start is not None:
        out["start"] = _utc_midnight(start)
    if end is not None:
        out["end"] = _utc_midnight(end + dt.timedelta(days=1))
    if start is not None and end is not None and end < start:
        problems.append(f"the end date {end} is before the start date {start}")
    if symbols:
        out["symbol"] = list(symbols)
    if venues:
        out["venue"] = list(venues)

    def size(value, what):
        if value in (None, ""):
            return None
        try:
            v = float(value)
        except (TypeError, ValueError):
            problems.append(f"the {what} size {value!r} is not a number")
            return None
        if not np.isfinite(v) or v < 0:
            problems.append(f"the {what} size must be a number ≥ 0, got {value!r}")
            return None
        return v

    lo, hi = size(size_min, "smallest"), size(size_max, "largest")
    if lo is not None:
        out["size_min"] = lo
    if hi is not None:
        out["size_max"] = hi
    if lo is not None and hi is not None and hi < lo:
        problems.append(f"the largest size {hi:g} is below the smallest {lo:g}")
    return results_mod.clean_filters(out), problems


def controls_from_filters(filters: dict | None) -> tuple:
    """The card's control values (start date, end date, symbols, venues, size min, size max) that
    produce `filters` (the inverse of `filters_from_controls`; an end inside a day shows that day)."""
    f = results_mod.clean_filters(filters)

    def utc(text):
        ts = pd.Timestamp(text)
        return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")

    start = utc(f["start"]).strftime("%Y-%m-%d") if "start" in f else None
    # exclusive end: the last day kept is the day of the instant just before it
    end = (utc(f["end"]) - pd.Timedelta(1, "ns")).strftime("%Y-%m-%d") if "end" in f else None
    return (start, end, list(f.get("symbol", [])), list(f.get("venue", [])),
            f.get("size_min"), f.get("size_max"))


def filter_status(frame: pd.DataFrame | None, filters: dict | None, *, rows: int | None = None) -> tuple[str, str]:
    """(sentence, Bootstrap text class) saying how many rows pass the filters; without filters `rows`
    (the dataset's row count) is enough, the frame is needed only to count what passes."""
    if frame is None and rows is None:
        return "Load a dataset to filter it.", "text-muted"
    n = len(frame) if frame is not None else int(rows)
    if not results_mod.clean_filters(filters):
        return f"No filters: all {n:,} rows are used.", "text-muted"
    if frame is None:
        return "Load a dataset to filter it.", "text-muted"
    narrow = frame[[c for c in FILTER_COLUMNS if c in frame.columns]]
    kept = len(results_mod.apply_filters(narrow, filters))
    if kept == 0:
        return f"No rows pass these filters (0 of {n:,}); calibration needs at least a few.", "text-danger"
    return f"{kept:,} of {n:,} rows pass the filters.", "text-body"


def same_controls(a, b) -> bool:
    """Control values equal up to list order and number formatting (None == [] for the pickers)."""
    def norm(v):
        if v in (None, "", []):
            return None
        if isinstance(v, (list, tuple)):
            return tuple(sorted(map(str, v)))
        if isinstance(v, (int, float)):
            return float(v)
        return str(v)
    return [norm(x) for x in a] == [norm(x) for x in b]


def filter_card_update(st: store_mod.SessionStore, results: results_mod.ResultStore, *,
                       triggered: set[str], active: dict | None, active_result: dict | None,
                       current: tuple) -> dict:
    """The Filters card after the active dataset, the active result or the Clear button changed.

    Returns {"choices": filter_choices(...) | None (unchanged), "values": control values | None
    (unchanged)}. The values follow the active result when it was calibrated on the active dataset;
    a newly loaded dataset clears them; Clear clears them.
    """
    key = shell.key_of(active)
    view = st.view(key, DATA_VIEW) if key else None
    choices = (view["choices"] if view is not None else filter_choices(None)) \
        if store_mod.ACTIVE_DATASET_ID in triggered or not triggered else None
    result_key = shell.key_of(active_result)
    meta = results.meta(result_key) if result_key else {}
    if FILTER_CLEAR in triggered or view is None:
        target = NO_FILTER_VALUES
    elif key and meta.get("dataset") == key:
        target = controls_from_filters(meta.get("filters"))
    elif store_mod.ACTIVE_DATASET_ID in triggered:
        target = NO_FILTER_VALUES
    else:
        target = None
    values = None if target is None or same_controls(target, current) else target
    return {"choices": choices, "values": values}


# --- layout -------------------------------------------------------------------------------------


def layout(app) -> html.Div:
    settings = shell.get_settings(app)
    samples = sample_files(settings.sample_dir)
    limit = f"{settings.max_upload_mb:.3g} MB"
    load_card = shell.card("Load data", [
        html.Label("Upload a file", id=UPLOAD_LABEL, className="form-label mb-1"),
        dcc.Upload(
            id=UPLOAD, multiple=False, className="execal-upload mb-1",
            children=html.Div(["Drag and drop or ", html.Span("choose a file", className="execal-link")],
                              **{"aria-labelledby": UPLOAD_LABEL,
                                 # the page streams the file to the server (assets/execal_upload.js)
                                 "data-max-bytes": str(settings.max_upload_bytes), "data-limit": limit}),
        ),
        html.Div(f"CSV, CSV.gz or Parquet, up to {limit}. The kind and column mapping below apply.",
                 className="form-text mb-3"),
        shell.field("Or pick a bundled sample", dcc.Dropdown(
            id=SAMPLE, options=[{"label": s, "value": s} for s in samples], placeholder=(
                "Choose a sample file" if samples else "No sample files on this server"),
            clearable=False, disabled=not samples), SAMPLE),
        shell.field("Dataset kind", dcc.Dropdown(
            id=KIND, value=AUTO_KIND, clearable=False,
            options=[{"label": "Detect automatically", "value": AUTO_KIND}]
            + [{"label": figures.KIND_LABELS.get(k, k), "value": k} for k in KINDS]), KIND),
        shell.field("Column mapping", dbc.Input(
            id=MAPPING, type="text", placeholder="their_name=canonical, ..."),
            MAPPING, "For columns the loader does not recognise, e.g. px=exec_price, qty=quantity."),
        dbc.Button("Reload with these options", id=APPLY, color="secondary", outline=True, size="sm"),
        dcc.Store(id=LIMITS, data={"max_request_chars": settings.max_request_bytes, "limit": limit}),
        dcc.Store(id=SOURCE, storage_type="memory"),
        dcc.Store(id=STREAMED, storage_type="memory"),
    ])

    filter_card = shell.card("Filters", [
        html.Div("Applied by every later panel: calibration, diagnostics and export.",
                 className="form-text mt-0 mb-2"),
        dbc.Row([
            dbc.Col(shell.field("From (UTC)", dbc.Input(id=FILTER_START, type="date"), FILTER_START)),
            dbc.Col(shell.field("To (UTC, inclusive)", dbc.Input(id=FILTER_END, type="date"), FILTER_END)),
        ], className="g-2"),
        shell.field("Symbols", dcc.Dropdown(id=FILTER_SYMBOL, multi=True, options=[],
                                          placeholder="All symbols"), FILTER_SYMBOL),
        shell.field("Venues", dcc.Dropdown(id=FILTER_VENUE, multi=True, options=[],
                                         placeholder="All venues"), FILTER_VENUE),
        dbc.Row([
            dbc.Col(shell.field("Size from", dbc.Input(id=FILTER_SIZE_MIN, type="number", min=0,
                                                     debounce=True, placeholder="any"), FILTER_SIZE_MIN)),
            dbc.Col(shell.field("Size to", dbc.Input(id=FILTER_SIZE_MAX, type="number", min=0,
                                                   debounce=True, placeholder="any"), FILTER_SIZE_MAX)),
        ], className="g-2"),
        html.Div("Size is the order quantity, in the symbol's base units.", className="form-text mt-0 mb-2"),
        html.P("Load a dataset to filter it.", id=FILTER_STATUS, role="status", className="small mb-2"),
        dbc.Button("Clear filters", id=FILTER_CLEAR, color="secondary", outline=True, size="sm"),
    ])

    summary_card = shell.card("Dataset", dcc.Loading(html.Div(shell.empty_text(EMPTY_MESSAGE), id=SUMMARY),
                                                     type="dot"))
    report_card = shell.card("Validation", html.Div(shell.empty_text(NO_REPORT), id=REPORT))
    coverage_card = shell.card("Rows over time", dcc.Graph(
        id=COVERAGE, figure=shell.empty_figure("No data"), config={"displaylogo": False},
        style={"height": "220px"}))
    grid = dag.AgGrid(
        id=GRID, rowData=[], columnDefs=[], className="execal-grid",
        style={"height": "360px", "width": "100%"},
        defaultColDef={"sortable": True, "resizable": True, "filter": True, "minWidth": 110},
        # dots in a column name must not be read as nested fields; no custom HTML templates (XSS guard)
        dashGridOptions={"suppressFieldDotNotation": True, "animateRows": False,
                         "localeText": {"noRowsToShow": "No rows to preview"}},
    )
    preview_card = shell.card("Preview", grid, title_id=PREVIEW_TITLE)
    return dbc.Row([
        dbc.Col([load_card, filter_card], md=4, lg=3),
        dbc.Col([dbc.Alert(id=ALERT, is_open=False, color="danger", dismissable=True, className="execal-error"),
                 dbc.Alert(id=SIZE_ALERT, is_open=False, color="danger", className="execal-error"),
                 summary_card, dbc.Row([dbc.Col(report_card, lg=6), dbc.Col(coverage_card, lg=6)]),
                 preview_card], md=8, lg=9),
    ], className="execal-data-panel")


# --- callbacks ----------------------------------------------------------------------------------


def register_callbacks(app) -> None:
    st, results = shell.stores(app)
    settings = shell.get_settings(app)

    @app.callback(
        Output(store_mod.ACTIVE_DATASET_ID, "data"),
        Output(ALERT, "children"), Output(ALERT, "is_open"),
        Output(SOURCE, "data"),
        # the same callback empties the upload box and sets the sample picker (no loop: Dash does not
        # call a callback again for its own outputs)
        Output(UPLOAD, "contents"), Output(SAMPLE, "value"),
        Input(store_mod.SESSION_STORE_ID, "modified_timestamp"),
        Input(UPLOAD, "contents"), Input(SAMPLE, "value"), Input(APPLY, "n_clicks"), Input(STREAMED, "data"),
        State(store_mod.SESSION_STORE_ID, "data"), State(UPLOAD, "filename"),
        State(KIND, "value"), State(MAPPING, "value"), State(SOURCE, "data"),
    )
    def _load(session_ts, contents, sample, _clicks, streamed, session_id, filename, kind, mapping_text, source):
        trigger = ctx.triggered_id
        if trigger in (None, store_mod.SESSION_STORE_ID) and (session_ts is None or session_ts < 0):
            # the store has not been read from localStorage yet: the real session id follows
            raise PreventUpdate
        out = load_dataset(st, settings, trigger=trigger, session_id=session_id, contents=contents,
                           filename=filename, sample=sample, kind=kind, mapping_text=mapping_text,
                           source=source, streamed=streamed)
        message, is_open = out["alert"]
        return (out["active"], message, is_open, out["source"], None if out["clear_upload"] else no_update,
                out["sample"])

    @app.callback(
        Output(SUMMARY, "children"), Output(REPORT, "children"), Output(COVERAGE, "figure"),
        Output(GRID, "columnDefs"), Output(GRID, "rowData"), Output(PREVIEW_TITLE, "children"),
        Input(store_mod.ACTIVE_DATASET_ID, "data"),
    )
    def _render(active):
        view = render_dataset(st, active)
        return (view["summary"], view["report"], view["coverage"], view["columns"], view["rows"],
                view["preview_title"])

    @app.callback(
        Output(FILTER_SYMBOL, "options"), Output(FILTER_VENUE, "options"),
        Output(FILTER_START, "min"), Output(FILTER_START, "max"),
        Output(FILTER_END, "min"), Output(FILTER_END, "max"),
        Output(FILTER_SIZE_MIN, "placeholder"), Output(FILTER_SIZE_MAX, "placeholder"),
        Output(FILTER_START, "disabled"), Output(FILTER_END, "disabled"), Output(FILTER_SYMBOL, "disabled"),
        Output(FILTER_VENUE, "disabled"), Output(FILTER_SIZE_MIN, "disabled"), Output(FILTER_SIZE_MAX, "disabled"),
        [Output(c, "value") for c in FILTER_CONTROLS],
        Input(results_mod.ACTIVE_RESULT_ID, "data"), Input(store_mod.ACTIVE_DATASET_ID, "data"),
        Input(FILTER_CLEAR, "n_clicks"),
        [State(c, "value") for c in FILTER_CONTROLS],
    )
    def _filter_controls(active_result, active, _clear, *current):
        triggered = {p.rsplit(".", 1)[0] for p in ctx.triggered_prop_ids}
        out = filter_card_update(st, results, triggered=triggered, active=active,
                                 active_result=active_result, current=current)
        c = out["choices"]
        if c is None:
            head = [no_update] * 14
        else:
            has = c["has"]
            size_hint = (lambda v: "any" if v is None else f"{v:.6g}")
            head = [[{"label": x, "value": x} for x in c["symbols"]],
                    [{"label": x, "value": x} for x in c["venues"]],
                    c["first_date"], c["last_date"], c["first_date"], c["last_date"],
                    size_hint(c["size_min"]), size_hint(c["size_max"]),
                    not has["timestamp"], not has["timestamp"], not has["symbol"], not has["venue"],
                    not has["quantity"], not has["quantity"]]
        values = out["values"]
        return head + ([no_update] * len(FILTER_CONTROLS) if values is None else list(values))

    @app.callback(
        Output(results_mod.FILTERS_ID, "data"), Output(FILTER_STATUS, "children"),
        Output(FILTER_STATUS, "className"),
        [Input(c, "value") for c in FILTER_CONTROLS], Input(store_mod.ACTIVE_DATASET_ID, "data"),
        State(results_mod.FILTERS_ID, "data"),
    )
    def _apply_filter_controls(start, end, symbols, venues, size_min, size_max, active, current):
        filters, problems = filters_from_controls(start, end, symbols, venues, size_min, size_max)
        if problems:
            return no_update, "Not applied: " + "; ".join(problems) + ".", "small mb-2 text-danger"
        key = shell.key_of(active)
        info = st.info(key) if key else None
        # the frame is read only to count rows that pass filters; without filters its size is known
        dataset = st.get_dataset(key) if info is not None and filters else None
        text, color = filter_status(dataset.frame if dataset is not None else None, filters,
                                    rows=None if info is None else info["rows"])
        changed = filters != results_mod.clean_filters(current)
        return (filters if changed else no_update), text, f"small mb-2 {color}"

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
