"""The UI shell: everything the panels share, so a panel module holds only its own room.

A panel is a module with `PANEL` (its url slug), `TITLE`, `layout(app) -> Component` and
`register_callbacks(app)`. It imports this shell (and figures, store, results, models), never another
panel and never `layout`; `layout` imports the panels (one line in its `PANELS` list) and is the only
module that does (`tests/core/test_architecture.py` holds the rule). docs/notes/NOTES-uishell.md has a panel template.

The shell, by section (every name below is public and stable):

ids
    `ids_for(PANEL)` -> `_id`; `_id("graph")` is "graph-<PANEL>": every id of a panel comes from its slug
    (`A, B = _id("a", "b")` declares a group of them on one line).
    `dom_id(component_id)`: the DOM id Dash gives a (pattern-matching) dict id, for a label's `for`.
    `LOCATION_ID`, `SESSION_STORE_ID`, `ACTIVE_DATASET_ID`, `ACTIVE_RESULT_ID`, `FILTERS_ID`, `HAND_SET_ID`:
    the app-level stores `layout` places (the browser holds keys and small records only: data stays on
    the server).
    `key_of(data)`: the "key" of a {"key": ...} store, else None; `result_key_of(data)`: only a result key.
settings and stores
    `Settings` (cache_dir, sample_dir, max_upload_bytes), `get_settings(app)`, `attach_settings(app, s)`,
    `max_upload_bytes(mb)`; `stores(app)` -> (SessionStore, ResultStore); `session_ready(ts, session_id)`.
    `remember(cache, name, session_id, value)` / `recall(cache, name, session_id)`: a panel's small JSON
    memory per session (its last view), so a reload brings it back.
routing
    `is_shown(PANEL, pathname)`: whether the URL shows the panel ('/' and unknown paths show the first).
    `needs_render(PANEL, pathname, trigger, wanted, drawn)`: draw now? Only while on screen (a hidden
    panel does no work), and on re-opening only when what is drawn is not what is wanted.
frame: one look for every card (pure layout builders, no callbacks)
    `card(title, body, about=...)`, `card_col(...)` (a card in a grid column), `graph(id, message)`
    (a Graph in a spinner, starting as a designed empty state), `slot(id, content)` (a Div in a spinner),
    `empty_text(message)`, `empty_figure(message)` (the empty chart as cached JSON; its message wrapped to
    fit a third of the page, `figures.empty_message(fig)` reads it back),
    `empty_outputs(message, graphs=, texts=, status=)` (a render callback's designed empty states),
    `status_banner(PANEL, children, level)`, `empty_status(PANEL, message)`, `verdict_banner(...)`,
    `field(label, control, control_id, help)`, `section(title, children)`, `rows_table(rows, ...)`.
    Style constants: `GRAPH_CONFIG`, `FIGURE_HEIGHT_PX`, `LOADING_DELAY_MS`, `EMPTY_CLASS`, `LEVEL_RANK`.
plain runs (a computation quick enough for an ordinary callback)
    `run_card(run_id, label, note_id=, alert_id=, download=(button, download, label), store_ids=)`,
    `register_download(app, button_id=, download_id=, alert_id=, view_id=, make=)`.
background jobs (a Run / Cancel / progress card and its background callback)
    `JobIds.of(_id)`, `job_card(ids, run_label, store_ids=())`, `job_callback_kwargs(ids)`,
    `JobProgress(set_progress)`, `register_cancel_note(app, ids, message)`.
    The job's body is a module-level function marked `@background_job` (it runs in a clean job process,
    components/jobs.py); inside it, `job_stores()` are its stores and `job_owner()` who asked.
    Server-side truth: the plan callback validates and builds the job on the server and keeps it there,
    `submit_job(cache, owner, job)` -> {"ticket"} (what the browser's job store holds); the job body
    `claim_job(cache, request)` takes it back for the job's owner only (a forged request finds nothing).
    `request_owner()`: who is asking (the server-side session or user; components/identity.py).
per-process cache
    `LRU(size).get_or_make(key, make)`: what a worker prepares once per result; `clear_process_caches()`.
data sources
    `DatasetPicker(kinds, samples, missing, ...)`: the "which data" picker of a panel that reads another
    kind than the active dataset (`.options`, `.choose`, `.resolve`, `.sample_options`; bundled samples load without
    becoming the session's active dataset); `SAMPLE_PREFIX`, `sample_value(name)`.
uploads
    `decode_upload(contents, filename)`: the bytes of a dcc.Upload data URL (DataError when garbled); a
    panel that lets the user act on an upload later keeps the bytes server-side
    (`SessionStore.keep_upload` / `last_upload`) and empties the dcc.Upload (contents None), so the
    browser holds no copy and choosing the same file again fires the upload again.
    `load_streamed_upload(st, settings, owner, token, kind=, mapping=)`: the dataset of a file the page
    streamed to the upload route (components/uploads.py), parsed from disk, never whole in a worker.
"""
from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple

import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html, set_props
from dash.exceptions import PreventUpdate

from execal.components import figures
from execal.components import identity
from execal.components import jobs as jobs_mod
from execal.components import results as results_mod
from execal.components import store as store_mod
from execal.components import uploads as uploads_mod
from execal.models.data.schema import DataError

# --- ids ----------------------------------------------------------------------------------------

LOCATION_ID = "execal-url"
SESSION_STORE_ID = store_mod.SESSION_STORE_ID      # {"session_id"}: localStorage
ACTIVE_DATASET_ID = store_mod.ACTIVE_DATASET_ID    # {"key": dataset key} or None
ACTIVE_RESULT_ID = results_mod.ACTIVE_RESULT_ID    # {"key": result key} or None
FILTERS_ID = results_mod.FILTERS_ID                # the Data panel's filters (results.apply_filters)
HAND_SET_ID = results_mod.HAND_SET_ID              # {"key", "target", "params"}: Tweak's hand-set values


def ids_for(panel: str) -> Callable[..., Any]:
    """The id maker of a panel: `_id = ids_for(PANEL)`, then `_id("graph")` == "graph-<PANEL>", and
    `_id("a", "b")` == ("a-<PANEL>", "b-<PANEL>") for a group of ids declared on one line."""
    def _id(*names: str) -> Any:
        made = tuple(f"{name}-{panel}" for name in names)
        return made[0] if len(made) == 1 else made
    return _id


def dom_id(component_id: str | dict) -> str:
    """The DOM id Dash gives a component (dict ids are JSON with sorted keys): what a label's `for` names."""
    if isinstance(component_id, str):
        return component_id
    return "{" + ",".join(json.dumps(k) + ":" + json.dumps(component_id[k]) for k in sorted(component_id)) + "}"


def key_of(data: Any) -> str | None:
    """The "key" of a {"key": ...} store's data, else None."""
    key = data.get("key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def result_key_of(data: Any) -> str | None:
    """The result key in the ACTIVE_RESULT_ID store's data, or None (garbage is no result)."""
    key = key_of(data)
    return key if results_mod.is_result_key(key) else None


# --- settings and stores --------------------------------------------------------------------------

DEFAULT_MAX_UPLOAD_MB = 200.0
# the rest of an upload's callback request: JSON framing, file name, the other inputs and states
REQUEST_OVERHEAD_BYTES = 64 * 2**10
SESSION_MEMORY_TTL_S = 30 * 24 * 3600


@dataclass(frozen=True)
class Settings:
    """What the panels need to know about this server."""
    cache_dir: Path
    sample_dir: Path
    max_upload_bytes: int
    backend: Any = None           # jobs.Backend: where a clean process finds the stores (streamed uploads)

    @property
    def max_upload_mb(self) -> float:
        return self.max_upload_bytes / 2**20

    @property
    def max_request_bytes(self) -> int:
        """Flask's MAX_CONTENT_LENGTH: the upload travels base64 (4/3) inside a JSON callback request."""
        return int(self.max_upload_bytes * 4 / 3) + REQUEST_OVERHEAD_BYTES


def max_upload_bytes(max_upload_mb: float | None = None) -> int:
    """The upload limit: the argument, else env EXECAL_MAX_UPLOAD_MB, else 200 MB."""
    if max_upload_mb is None:
        text = os.environ.get("EXECAL_MAX_UPLOAD_MB", "").strip()
        try:
            max_upload_mb = float(text) if text else DEFAULT_MAX_UPLOAD_MB
        except ValueError:
            raise ValueError(f"EXECAL_MAX_UPLOAD_MB must be a number of megabytes, got {text!r}") from None
    if not max_upload_mb > 0:
        raise ValueError(f"the upload limit must be positive, got {max_upload_mb} MB")
    return int(max_upload_mb * 2**20)


def attach_settings(app, settings: Settings) -> None:
    app.server.extensions["execal_settings"] = settings


def get_settings(app) -> Settings:
    return app.server.extensions["execal_settings"]


def stores(app) -> tuple[store_mod.SessionStore, results_mod.ResultStore]:
    """The app's session store (datasets) and result store, both on the one private cache."""
    return store_mod.get_store(app), results_mod.get_results(app)


def session_ready(ts: Any, session_id: Any) -> bool:
    """Whether the session store has been read from localStorage (a modified_timestamp ≥ 0) and holds a
    valid id: before that, a callback on it must wait (the real session id follows)."""
    return ts is not None and ts >= 0 and store_mod.is_session_id(session_id)


def memory_key(name: str, session_id: str) -> str:
    """The cache key under which `remember` keeps a panel's value for a session."""
    return f"execal:{name}:session:{session_id}"


def remember(cache, name: str, session_id: Any, value: Mapping, ttl_s: float = SESSION_MEMORY_TTL_S) -> None:
    """Keep a small JSON value (a panel's last view) for a session, server-side."""
    if store_mod.is_session_id(session_id):
        cache.set(memory_key(name, session_id), json.dumps(dict(value), default=str), expire=ttl_s)


def recall(cache, name: str, session_id: Any) -> dict | None:
    """What `remember` kept for the session, or None (unknown session, expired, unreadable)."""
    if not store_mod.is_session_id(session_id):
        return None
    text = cache.get(memory_key(name, session_id))
    try:
        value = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# --- routing ------------------------------------------------------------------------------------

_panel_order: list[str] = []


def set_panel_order(slugs: Iterable[str]) -> None:
    """The panels' slugs in nav order (`layout` sets it): the first is shown for '/' and unknown paths."""
    _panel_order[:] = list(slugs)


def visible_slug(pathname: str | None) -> str | None:
    """The slug of the panel a URL path shows."""
    slug = (pathname or "/").strip("/").split("/")[0]
    if slug in _panel_order or not _panel_order:
        return slug or None
    return _panel_order[0]


def is_shown(panel: str, pathname: str | None) -> bool:
    """Whether the URL path shows the panel `panel`: a hidden panel's heavy render waits until the
    user opens it (a new worker's first page would otherwise draw every panel of a 1M-row result)."""
    return visible_slug(pathname) == panel


def needs_render(panel: str, pathname: str | None, trigger: Any, wanted: Any, drawn: Any) -> bool:
    """Whether a render callback should draw: only while the panel is on screen (hidden, it waits for the
    user to open it), and when the trigger is opening the panel, only if what is drawn (`drawn`, kept in
    a dcc.Store) is not what is wanted now (`wanted`: a result key, a view's signature)."""
    if not is_shown(panel, pathname):
        return False
    return not (trigger == LOCATION_ID and drawn == wanted)


# --- frame: style and layout pieces ----------------------------------------------------------------

GRAPH_CONFIG = {"displaylogo": False, "responsive": True}
FIGURE_HEIGHT_PX = 330
LOADING_DELAY_MS = 300
EMPTY_CLASS = "execal-empty text-muted mb-0"
# how bad a verdict is: the worst model's level colours a panel's status banner
LEVEL_RANK = {"success": 0, "info": 0, "light": 0, "secondary": 0, "warning": 1, "danger": 2}


def empty_text(message: str, **props) -> html.P:
    """The designed empty state of a text slot."""
    return html.P(message, className=EMPTY_CLASS, **props)


@functools.lru_cache(maxsize=64)
def _empty_figure_json(message: str) -> str:
    return json.dumps(figures.empty_figure(message).to_plotly_json(), default=str)


def empty_figure(message: str) -> dict:
    """`figures.empty_figure(message)` as plain JSON, built once per message per process (a page holds
    dozens of empty charts, and a go.Figure copies its whole template each time it is built)."""
    return json.loads(_empty_figure_json(message))


def card(title: str, body, *, about: str | None = None, title_id: str | None = None, dense: bool = False,
         class_name: str = "mb-3") -> dbc.Card:
    """A titled card: an h2 header (with an optional one-line "about" under it) over its body."""
    heading = html.H2(title, className="h6 mb-0", **({"id": title_id} if title_id else {}))
    header = [heading] + ([html.Small(about, className="text-muted")] if about else [])
    return dbc.Card([dbc.CardHeader(header), dbc.CardBody(body, className="p-2" if dense else None)],
                    className=class_name)


def card_col(title: str, body, about: str | None = None, width: Mapping | None = None) -> dbc.Col:
    """A card filling a grid column (`width`: dbc.Col breakpoints, default half a row from lg up)."""
    return dbc.Col(card(title, body, about=about, dense=True, class_name="h-100"), className="mb-3",
                   **dict(width or {"lg": 6}))


def graph(graph_id: str, message: str, *, height: int | None = FIGURE_HEIGHT_PX, config: Mapping | None = None,
          delay_show: int = LOADING_DELAY_MS) -> dcc.Loading:
    """A chart in a spinner, starting as the designed empty state `message` (height None: the figure's)."""
    style = {"height": f"{height}px"} if height else {}
    return dcc.Loading(dcc.Graph(id=graph_id, figure=empty_figure(message), config=dict(config or GRAPH_CONFIG),
                                 style=style), type="circle", delay_show=delay_show)


def slot(slot_id: str, content: Any = None, *, class_name: str | None = None) -> dcc.Loading:
    """A Div a callback fills, in a spinner; `content` is what it shows first (a string: an empty state)."""
    if isinstance(content, str):
        content = empty_text(content)
    return dcc.Loading(html.Div(content, id=slot_id, className=class_name), type="dot", delay_show=LOADING_DELAY_MS)


def status_banner(panel: str, children, level: str = "secondary", *, data_level: str | None = None) -> html.Div:
    """A panel's verdict, first and prominent (id "status-alert-<panel>", data-level for tests and CSS)."""
    return html.Div(dbc.Alert(children, color=level, className="mb-0 execal-status"), id=f"status-alert-{panel}",
                    **{"data-level": data_level or level})


def empty_status(panel: str, message: str, level: str = "secondary") -> html.Div:
    """The status banner before there is anything to judge (data-level "empty")."""
    return status_banner(panel, message, level, data_level="empty" if level == "secondary" else level)


def verdict_banner(panel: str, summary: Mapping, facts: Any) -> html.Div:
    """The status banner of one verdict: {"headline", "details", "level"} (a figures module's
    status_summary) with a line of facts under the headline and the details listed."""
    children = [html.Strong(summary["headline"], className="execal-status-headline d-block"),
                html.Div(facts, className="small")]
    if summary.get("details"):
        children.append(html.Ul([html.Li(d) for d in summary["details"]], className="small mb-0 mt-1"))
    return status_banner(panel, children, summary["level"])


def empty_outputs(message: str, *, graphs: Iterable[str] = (), texts: Iterable[str] = (),
                  blanks: Iterable[str] = (), status: tuple[str, str] | None = None, level: str = "secondary",
                  as_json: bool = False) -> dict:
    """A render callback's designed empty states, {output id: value}: each of `graphs` an empty chart
    saying `message` (a go.Figure, or cached JSON with `as_json`), each of `texts` an empty text, each
    of `blanks` nothing, and `status` = (output id, panel slug) an empty status banner."""
    make = empty_figure if as_json else figures.empty_figure
    out: dict[str, Any] = {g: make(message) for g in graphs}
    out.update({t: empty_text(message) for t in texts})
    out.update({b: None for b in blanks})
    if status is not None:
        out[status[0]] = empty_status(status[1], message, level)
    return out


def field(label: str, control, control_id: str | dict, help_text: Any = None, *, help_id: str | None = None,
          compact: bool = False) -> html.Div:
    """A labelled control (the label's `for` names the control, dict ids included), with help under it."""
    label_class = "mb-1 small fw-semibold" if compact else "form-label mb-1"
    parts = [html.Label(label, htmlFor=dom_id(control_id), className=label_class), control]
    if help_text is not None or help_id is not None:
        parts.append(help_text if not isinstance(help_text, (str, type(None))) else
                     html.Div(help_text or "", className="form-text", **({"id": help_id} if help_id else {})))
    return html.Div(parts, className="mb-3")


def section(title: str, children: list) -> html.Fieldset:
    """A titled group of fields in a settings card."""
    return html.Fieldset([html.Legend(title, className="h6 fs-6 mb-2"), *children], className="mb-3 border-bottom pb-2")


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float)) else str(value)


def rows_table(rows: list[dict], *, table_id: str | None = None, caption: str | None = None,
               skip: tuple[str, ...] = ("key",), row_key: str | None = None, nowrap: Iterable[str] = (),
               small: bool = False, class_name: str = "execal-table") -> html.Div:
    """A compact table of `rows` (columns from the first row's keys, less `skip`) that scrolls sideways
    inside its card rather than widening the page. Every cell carries its column as data-field and every
    row a data-row (the `row_key` column, else "key", else the first column); `nowrap` columns never wrap.
    No rows: the empty state says `caption` (or "Nothing to show.")."""
    if not rows:
        return empty_text(caption or "Nothing to show.")
    cols = [c for c in rows[0] if c not in skip]
    nowrap = set(nowrap)
    wrap = (lambda c: "text-nowrap" if c in nowrap else None)  # noqa: E731
    head = html.Thead(html.Tr([html.Th(c, scope="col", className=wrap(c)) for c in cols]))
    body = html.Tbody([html.Tr([html.Td(_cell(r.get(c, "")), className=wrap(c), **{"data-field": c}) for c in cols],
                               **{"data-row": str(r.get(row_key) if row_key else r.get("key", r.get(cols[0], "")))})
                       for r in rows])
    parts = ([html.Caption(caption, className="small text-muted")] if caption else []) + [head, body]
    table = dbc.Table(parts, size="sm", striped=True, bordered=False, hover=True,
                      className=f"{class_name} mb-0" + (" small" if small else ""), **({"id": table_id} if table_id else {}))
    return html.Div(table, className="table-responsive")


# --- a plain Run card (a computation quick enough for an ordinary callback) --------------------------


def run_card(run_id: str, run_label: str, *, note_id: str, alert_id: str,
             download: tuple[str, str, str] | None = None, store_ids: Iterable[str] = ()) -> dbc.Card:
    """The Run button (and, with `download` = (button id, dcc.Download id, label), a Download button that
    starts disabled), a status note in a spinner, an error alert and the panel's memory dcc.Stores."""
    buttons = [dbc.Button(run_label, id=run_id, color="primary", className="me-2")]
    extra: list = []
    if download is not None:
        button_id, download_id, label = download
        buttons.append(dbc.Button(label, id=button_id, color="secondary", outline=True, disabled=True))
        extra.append(dcc.Download(id=download_id))
    return dbc.Card(dbc.CardBody([
        html.Div(buttons, className="d-flex flex-wrap gap-2 align-items-center mb-2"),
        dcc.Loading(html.P("", id=note_id, role="status", className="small text-muted mb-0"), type="dot",
                    delay_show=LOADING_DELAY_MS),
        dbc.Alert(id=alert_id, is_open=False, color="danger", dismissable=True, className="execal-error mt-2 mb-0"),
        *extra,
        *[dcc.Store(id=i, storage_type="memory") for i in store_ids],
    ]), className="mb-3")


def register_download(app, *, button_id: str, download_id: str, alert_id: str, view_id: str,
                      make: Callable[[Any], Mapping]) -> None:
    """Pressing the Download button of a `run_card` sends `make(view)["download"]` (dcc.Download data or
    no_update) and sets the alert to `make(view)["alert"]` = (text, open)."""
    @app.callback(Output(download_id, "data"), Output(alert_id, "children", allow_duplicate=True),
                  Output(alert_id, "is_open", allow_duplicate=True),
                  Input(button_id, "n_clicks"), State(view_id, "data"), prevent_initial_call=True)
    def _download(_clicks, view):
        out = make(view)
        return out["download"], *out["alert"]


# --- background jobs --------------------------------------------------------------------------------


class JobIds(NamedTuple):
    """The ids of a panel's Run / Cancel / progress card (`JobIds.of(_id)`: run-<PANEL>, cancel-<PANEL>, ...)."""
    run: str
    cancel: str
    progress: str
    progress_wrap: str
    note: str
    alert: str
    job: str

    @classmethod
    def of(cls, _id: Callable[[str], str]) -> JobIds:
        return cls(*(_id(n) for n in ("run", "cancel", "progress", "progress-wrap", "note", "alert", "job")))


def job_card(ids: JobIds, run_label: str, store_ids: Iterable[str] = ()) -> dbc.Card:
    """Run and Cancel buttons, a progress bar (shown while a job runs), a status note, an error alert and
    the job store (plus the panel's other `store_ids`, memory dcc.Stores)."""
    return dbc.Card(dbc.CardBody([
        html.Div([dbc.Button(run_label, id=ids.run, color="primary", className="me-2"),
                  dbc.Button("Cancel", id=ids.cancel, color="secondary", outline=True, disabled=True)],
                 className="d-flex align-items-center mb-2"),
        html.Div([html.Label("Progress", htmlFor=ids.progress, className="visually-hidden"),
                  dbc.Progress(id=ids.progress, value=0, label="", striped=True, animated=True,
                               style={"height": "1.4rem"})], id=ids.progress_wrap, hidden=True, className="mb-2"),
        html.P("", id=ids.note, role="status", className="small text-muted mb-0"),
        dbc.Alert(id=ids.alert, is_open=False, color="danger", dismissable=True, className="execal-error mt-2 mb-0"),
        *[dcc.Store(id=i, storage_type="memory") for i in (ids.job, *store_ids)],
    ]), className="mb-3")


# how often the browser asks a running job for news: a finished fit shows within this
JOB_POLL_MS = 400
background_job = jobs_mod.background_job
job_owner = jobs_mod.job_owner
job_stores = jobs_mod.job_stores
request_owner = identity.current_owner
JOB_TICKET_TTL_S = 3600
_JOB_PREFIX = "execal:job:"


def submit_job(cache, owner: Any, job: Mapping) -> dict:
    """Keep a job the server has built and validated, for `owner`; returns what the browser's job store
    holds: {"ticket": random} (a ticket names a job only together with the owner who asked)."""
    if not store_mod.is_session_id(owner):
        raise DataError("your session is not ready yet; reload the page")
    ticket = secrets.token_urlsafe(18)
    cache.set(f"{_JOB_PREFIX}{owner}:{ticket}", json.dumps(dict(job), default=str), expire=JOB_TICKET_TTL_S)
    return {"ticket": ticket}


def claim_job(cache, request: Any) -> dict | None:
    """In a job: the job kept by `submit_job` under the request's ticket for the job's own owner, taken
    once (None for anything else: a forged payload, another owner's ticket, a replay)."""
    ticket = request.get("ticket") if isinstance(request, dict) else None
    owner = job_owner()
    if not (isinstance(ticket, str) and 8 <= len(ticket) <= 64 and store_mod.is_session_id(owner)):
        return None
    text = cache.pop(f"{_JOB_PREFIX}{owner}:{ticket}", None)
    try:
        job = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    return job if isinstance(job, dict) and job.get("session") == owner else None


def job_error_handler(ids: JobIds) -> Callable[[Exception], None]:
    """A background callback's `on_error`: a job that failed or whose process died (killed, out of memory,
    over its time limit) is said in the job card's alert, within one poll; nothing else changes."""
    def _on_error(err: Exception) -> None:
        set_props(ids.alert, {"children": jobs_mod.error_message(err), "is_open": True})
        set_props(ids.note, {"children": ""})
        return None
    return _on_error


def job_callback_kwargs(ids: JobIds) -> dict:
    """The `app.callback` keywords of a job's background callback (Input(ids.job, "data")): Run disabled
    and Cancel enabled while it runs, Cancel kills its process, progress as (percent, label), polled every
    JOB_POLL_MS, a failed or lost job said in the card's alert."""
    return {"background": True,
            "running": [(Output(ids.run, "disabled"), True, False), (Output(ids.cancel, "disabled"), False, True),
                        (Output(ids.progress_wrap, "hidden"), False, True)],
            "cancel": [Input(ids.cancel, "n_clicks")],
            "progress": [Output(ids.progress, "value"), Output(ids.progress, "label")],
            "progress_default": [0, ""],
            "interval": JOB_POLL_MS,
            "on_error": job_error_handler(ids),
            "prevent_initial_call": True}


class JobProgress:
    """`progress(percent, label)` for a background callback's `set_progress`, with the seconds elapsed
    appended to the label (`.seconds`: elapsed since the job started)."""

    def __init__(self, set_progress: Callable[[tuple], None]):
        self._set = set_progress
        self._started = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._started

    def __call__(self, percent: float, label: str) -> None:
        self._set((round(float(percent), 1), f"{label} · {self.seconds:.1f} s"))


def register_cancel_note(app, ids: JobIds, message: str) -> None:
    """Pressing Cancel says `message` in the note (the job's own callback is cancelled by Dash)."""
    @app.callback(Output(ids.note, "children", allow_duplicate=True), Input(ids.cancel, "n_clicks"),
                  prevent_initial_call=True)
    def _cancelled(clicks):
        if not clicks:
            raise PreventUpdate
        return message


# --- per-process cache --------------------------------------------------------------------------

_caches: weakref.WeakSet = weakref.WeakSet()


class LRU:
    """A tiny per-process LRU: what a gunicorn worker prepares once per result (figures, tables, states)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        _caches.add(self)

    def get_or_make(self, key: str, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def clear_process_caches() -> None:
    """Empty every LRU of this process (tests: one test's results must not leak into the next)."""
    for cache in list(_caches):
        cache.clear()


# --- data sources ---------------------------------------------------------------------------------

SAMPLE_PREFIX = "sample:"


def sample_value(name: str) -> str:
    """The picker value of a bundled sample file."""
    return SAMPLE_PREFIX + name


@dataclass(frozen=True)
class DatasetPicker:
    """The "which data" picker of a panel that reads other kinds than the active dataset may be.

    Offers the session's datasets of `kinds` (most recent first; the active one first and marked, and
    chosen while it is of these kinds), then the bundled `samples` (file name -> a note after its name;
    the first is the default). A dataset's kind is read from its key and its label from the store's small
    info view: no frame is decoded to fill the picker. A sample is loaded into the store when resolved,
    once per cache, without becoming the session's active dataset (the impact panels keep theirs).
    """
    kinds: tuple[str, ...]
    samples: Mapping[str, str]
    missing: str                                    # DataError message when nothing is chosen
    label: str = "{source} ({kind}, {rows:,} rows)"
    # the kind a sample is loaded as (None: detected; a mapping: per sample file name)
    sample_kind: str | Mapping[str, str] | None = None
    sample_label: str = "sample: {name}{note}"      # a sample's option label ({note}: its `samples` value)

    def available_samples(self, sample_dir: Path) -> list[str]:
        return [n for n in self.samples if (Path(sample_dir) / n).is_file()]

    def sample_options(self, sample_dir: Path) -> list[dict]:
        """The options of the bundled samples present in `sample_dir` (no store needed: a layout's first
        options, valid before the session's datasets are listed)."""
        return [{"label": self.sample_label.format(name=name, note=self.samples[name]), "value": sample_value(name)}
                for name in self.available_samples(sample_dir)]

    def options(self, st: store_mod.SessionStore, sample_dir: Path, session_id: Any,
                active: Mapping | None) -> tuple[list[dict], str | None]:
        """(dropdown options, default value)."""
        options: list[dict] = []
        default = None
        active_key = key_of(active)
        keys = st.session_keys(session_id) if store_mod.is_session_id(session_id) else []
        if active_key and active_key not in keys:
            keys = keys + [active_key]
        for key in reversed(keys):          # most recent first
            if store_mod.kind_of_key(key) not in self.kinds:
                continue
            info = st.info(key)
            if info is None:
                continue
            tag = "active dataset: " if key == active_key else ""
            options.append({"label": tag + self.label.format(**info), "value": key})
            if key == active_key:
                default = key
        options += self.sample_options(sample_dir)
        if default is None and options:
            first = sample_value(next(iter(self.samples)))
            default = first if any(o["value"] == first for o in options) else options[0]["value"]
        return options, default

    def choose(self, st: store_mod.SessionStore, sample_dir: Path, session_id: Any, active: Mapping | None,
               current: Any, seen: Any, saved: Mapping | None = None) -> tuple[list[dict], Any, str]:
        """(options, value, the active key or "" to keep as `seen`). A dataset that has just become the
        active one (loaded in the Data panel) becomes the panel's data; otherwise the user's pick stays
        while it is offered, then the source of `saved` (the session's last view, {"source": ...}: after
        a reload), then the default."""
        options, default = self.options(st, sample_dir, session_id, active)
        values = [o["value"] for o in options]
        active_key = key_of(active)
        newly_active = active_key is not None and seen is not None and active_key != seen
        if newly_active and active_key in values:
            return options, active_key, active_key
        if current in values:
            return options, current, active_key or ""
        remembered = (saved or {}).get("source")
        return options, (remembered if remembered in values else default), active_key or ""

    def resolve(self, st: store_mod.SessionStore, sample_dir: Path, source: Any) -> str:
        """The dataset key of a picker value (a sample is loaded into the store). Raises DataError."""
        if isinstance(source, str) and source.startswith(SAMPLE_PREFIX):
            name = source[len(SAMPLE_PREFIX):]
            if name not in self.available_samples(sample_dir):
                raise DataError("no such bundled sample file", file=name)
            kind = self.sample_kind.get(name) if isinstance(self.sample_kind, Mapping) else self.sample_kind
            return st.load_bytes((Path(sample_dir) / name).read_bytes(), name=name, kind=kind)
        if not store_mod.is_dataset_key(source):
            raise DataError(self.missing)
        if not st.has_dataset(source):
            raise DataError("this dataset is no longer in the server's cache: load it again in the Data panel")
        return source


# --- uploads --------------------------------------------------------------------------------------


def load_streamed_upload(st: store_mod.SessionStore, settings: Settings, owner: Any, token: Any, *,
                         kind: str | None = None, mapping: dict | None = None) -> str:
    """The dataset key of the owner's streamed upload `token` (made the owner's active dataset). DataError."""
    if settings.backend is None:
        raise DataError("this server takes uploads through the page only")
    return uploads_mod.load(st, settings.backend, owner, token, kind=kind, mapping=mapping,
                            max_bytes=settings.max_upload_bytes)


def decode_upload(contents: str | None, filename: str) -> bytes:
    """The bytes of a dcc.Upload data URL ('data:<mime>;base64,<payload>'). Raises DataError."""
    head, sep, payload = (contents or "").partition(",")
    if not sep or ";base64" not in head:
        raise DataError("the upload did not arrive as a base64 data URL; try again", file=filename)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise DataError("the upload was corrupted in transit (bad base64); try again", file=filename) from None
