"""The Order flow panel: how each venue's order flow forms prices — order-flow imbalance against the mid,
Kyle's lambda, trade-sign memory and the propagator kernel, book resilience after sweeps — per venue, side
by side.

Input: Binance raw captures (`<receive ns> <json>` lines, gzip; one file per venue and symbol) uploaded here,
several at once, or the bundled synthetic venue (`execal.models.orderflow.simulate.simulate_market`, seeded:
known sign memory γ = 0.5, kernel G(ℓ) = 0.6·ℓ^−0.35, depth exponent 1). The Data panel keeps canonical
frames, not the raw diffs the book must be rebuilt from event by event, so this panel takes the capture
files themselves: their bytes are kept server-side in the app's private cache (0700), keyed by content hash
and listed per session; the browser holds keys only.

Settings: the OFI / Kyle windows, the book levels kept per event (multi-level OFI, resilience depth) and the
share of the depth that makes an order a sweep. Analyse replays each capture and fits every registry model
of kind "orderflow" but the schedule cost (`execal.models.orderflow.analysis.analyse`); the report is stored
in the app's ResultStore by (captures, settings), so a repeat or a reload is a lookup. A model that cannot be
fitted on a venue is said in the status, never hidden.

Shown: the status (every fit's verdict and warnings), the per-venue table beside the paper's R² ≈ 0.65 at
10 s, OFI vs Δmid per window with the fits, β vs depth, the sign autocorrelation (log–log), the response
function and the propagator kernel with their fits, the resilience curves, the liquidity-evaporation
episodes; "Download JSON" gives what `execal orderflow` writes.

Built on the shell (`execal.components.shell`: ids, settings and stores, the card / graph / table frame,
the per-process LRU, upload decoding, the session's memory); a hidden panel draws nothing until opened.
`store_uploads`, `source_options`, `fit_outputs`, `render_outputs` and `download_output` are the callbacks'
bodies as plain functions (tests call them); `register_callbacks` only wires them.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from typing import Any, Mapping

import dash_bootstrap_components as dbc
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from execal.components import orderflow_figures as OF
from execal.components import results as results_mod
from execal.components import shell
from execal.components import store as store_mod
from execal.models.core.errors import CalibrationError
from execal.models.data.schema import DataError
from execal.models.orderflow.analysis import OrderFlowReport, analyse
from execal.models.orderflow.data import load_venue
from execal.models.orderflow.simulate import simulate_market

PANEL = "orderflow"
TITLE = "Order flow"
_id = shell.ids_for(PANEL)
log = logging.getLogger(__name__)

# the settings form, the Analyse / Download card and the stores
UPLOAD, UPLOAD_NOTE, SOURCES, WINDOWS, LEVELS, SHARE = _id("upload", "upload-note", "sources", "windows", "levels",
                                                           "share")
RUN, DOWNLOAD_BUTTON, DOWNLOAD, NOTE, ALERT = _id("run", "download-button", "download", "note", "alert")
VIEW = _id("view")          # dcc.Store: {key, sources, settings}: the analysis on screen
SHOWN = _id("shown")        # dcc.Store: the result key the figures were drawn for
# what the panel shows
STATUS, TABLE, PAPER, EVAPORATION = _id("status", "table", "paper", "evaporation")
OFI, DEPTH, SIGNS, PROPAGATOR, RESILIENCE = _id("ofi", "depth", "signs", "propagator", "resilience")

SAMPLE = "sample:synthetic"
SAMPLE_LABEL = "sample: synthetic venue (seeded simulator, known truth)"
SAMPLE_SECONDS = 1800.0
CAPTURE_PREFIX = "capture:"
WINDOW_CHOICES = ("1s", "5s", "10s", "30s", "60s")
DEFAULT_WINDOWS = ["1s", "10s", "60s"]
LEVEL_CHOICES = (5, 10, 20)
DEFAULT_LEVELS = 10
DEFAULT_SHARE = 0.5
KEY_CAPTURE = "execal:orderflow:capture:"          # + sha256 -> raw capture bytes
# + session id -> JSON list of {sha, name, bytes} (the session's last view is `shell.remember`ed)
KEY_CAPTURES = "execal:orderflow:captures:"
TTL_S = shell.SESSION_MEMORY_TTL_S
EVICTED = "This analysis is no longer in the server's cache: press Analyse again"


class SettingsError(ValueError):
    """A control holds a value the panel cannot use (named in the message)."""


# --- captures in the private cache ---------------------------------------------------------------


def session_captures(cache, session_id: Any) -> list[dict]:
    if not store_mod.is_session_id(session_id):
        return []
    text = cache.get(KEY_CAPTURES + session_id)
    try:
        items = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return []
    return [c for c in items if isinstance(c, dict) and (KEY_CAPTURE + str(c.get("sha"))) in cache]


def store_uploads(cache, session_id: Any, contents: list | None, names: list | None,
                  max_bytes: int) -> tuple[list[str], list[str]]:
    """Keep each uploaded capture's bytes (by sha256) and list it for the session.
    Returns (names stored, one error line per file refused)."""
    if not store_mod.is_session_id(session_id):
        raise DataError("no browser session yet: reload the page")
    items = session_captures(cache, session_id)
    stored, errors = [], []
    for raw_contents, name in zip(contents or [], names or []):
        try:
            raw = shell.decode_upload(raw_contents, name)
            if len(raw) > max_bytes:
                raise DataError(f"{len(raw) / 2**20:.1f} MB is over the upload limit of {max_bytes / 2**20:.0f} MB",
                                file=name)
            if raw[:2] != b"\x1f\x8b" and not raw[:20].split(b" ")[0].isdigit():
                raise DataError("not a Binance raw capture (gzip of '<receive ns> <json>' lines)", file=name)
        except DataError as err:
            errors.append(str(err))
            continue
        sha = hashlib.sha256(raw).hexdigest()
        cache.set(KEY_CAPTURE + sha, raw, expire=TTL_S)
        items = [c for c in items if c.get("sha") != sha] + [{"sha": sha, "name": str(name), "bytes": len(raw)}]
        stored.append(str(name))
    cache.set(KEY_CAPTURES + session_id, json.dumps(items), expire=TTL_S)
    return stored, errors


def source_options(cache, session_id: Any) -> list[dict]:
    """The session's captures (most recent last) and the bundled synthetic venue."""
    opts = [{"label": f"{c['name']} ({c['bytes'] / 2**20:.1f} MB)", "value": CAPTURE_PREFIX + c["sha"]}
            for c in session_captures(cache, session_id)]
    return opts + [{"label": SAMPLE_LABEL, "value": SAMPLE}]


def chosen_sources(options: list[dict], current: Any, fresh: bool) -> list[str]:
    """After an upload every capture of the session is chosen; otherwise the user's pick while it is
    offered, else the captures, else the sample."""
    values = [o["value"] for o in options]
    captures = [v for v in values if v.startswith(CAPTURE_PREFIX)]
    if fresh and captures:
        return captures
    kept = [v for v in (current or []) if v in values]
    return kept or captures or [SAMPLE]


@functools.lru_cache(maxsize=1)
def sample_venue():
    """The bundled synthetic venue (seeded; one per process)."""
    return simulate_market(seconds=SAMPLE_SECONDS, seed=7).data


def load_sources(cache, session_id: Any, values: list[str], levels: int) -> list:
    """VenueData of each chosen source, in the order chosen. Raises DataError."""
    names = {CAPTURE_PREFIX + c["sha"]: c["name"] for c in session_captures(cache, session_id)}
    out = []
    for v in values:
        if v == SAMPLE:
            out.append(sample_venue())
            continue
        raw = cache.get(KEY_CAPTURE + v[len(CAPTURE_PREFIX):]) if v.startswith(CAPTURE_PREFIX) else None
        if raw is None:
            raise DataError("this capture is no longer in the server's cache: upload it again",
                            file=names.get(v, v))
        out.append(load_venue(raw, name=names.get(v), levels=levels))
    return out


# --- settings and the analysis ----------------------------------------------------------------------


def build_settings(*, windows: Any, levels: Any, share: Any) -> dict:
    chosen = [w for w in WINDOW_CHOICES if w in (windows or [])]
    if not chosen:
        raise SettingsError("choose at least one window")
    try:
        lv = int(levels)
    except (TypeError, ValueError):
        raise SettingsError(f"levels {levels!r}: choose one of {', '.join(map(str, LEVEL_CHOICES))}") from None
    if lv not in LEVEL_CHOICES:
        raise SettingsError(f"levels {lv}: choose one of {', '.join(map(str, LEVEL_CHOICES))}")
    try:
        sh = float(share)
    except (TypeError, ValueError):
        raise SettingsError("sweep share: a number between 0.05 and 10") from None
    if not 0.05 <= sh <= 10:
        raise SettingsError("sweep share: a number between 0.05 and 10")
    return {"windows": chosen, "levels": lv, "share": sh}


def windows_seconds(settings: Mapping) -> tuple[float, ...]:
    return tuple(float(w[:-1]) for w in settings["windows"])


def report_key(values: list[str], settings: Mapping) -> str:
    return results_mod.result_key("orderflow:" + "+".join(values), {}, {"panel": PANEL, **dict(settings)})


def compute_report(cache, session_id: Any, values: list[str], settings: Mapping) -> OrderFlowReport:
    venues = load_sources(cache, session_id, values, settings["levels"])
    return analyse(venues, windows_s=windows_seconds(settings), levels=settings["levels"],
                   settings={"resilience": {"share": settings["share"]}})


_reports = shell.LRU(4)


class _Missing(LookupError):
    pass


def get_report(rs: results_mod.ResultStore, key: Any) -> OrderFlowReport | None:
    """The report stored under `key`, or None (unknown, evicted, or another panel's result); only a
    report found is remembered in the process (another worker may store it later)."""
    if not results_mod.is_result_key(key):
        return None

    def load():
        found = rs.get(key)
        if not isinstance(found, OrderFlowReport):
            raise _Missing(key)
        return found

    try:
        return _reports.get_or_make(key, load)
    except _Missing:
        return None


def save_view(cache, session_id: Any, view: Mapping) -> None:
    shell.remember(cache, PANEL, session_id, view)


def saved_view(cache, session_id: Any) -> dict | None:
    view = shell.recall(cache, PANEL, session_id)
    return view if view is not None and results_mod.is_result_key(view.get("key")) else None


def fit_outputs(rs: results_mod.ResultStore, *, trigger: Any, session_id: Any, sources: Any, windows: Any,
                levels: Any, share: Any, view: Any) -> dict:
    """The Analyse callback's body: {"view", "alert": (text, open), "note"}. On a page load (no press)
    the session's last analysis comes back; otherwise nothing happens until Analyse is pressed."""
    cache = rs.cache
    if trigger != RUN:
        saved = saved_view(cache, session_id)
        if saved is None or isinstance(view, dict):
            raise PreventUpdate
        return {"view": saved, "alert": ("", False), "note": "Shown from the cache (your last analysis)."}
    kept = " The analysis shown is unchanged." if isinstance(view, dict) else ""
    try:
        settings = build_settings(windows=windows, levels=levels, share=share)
        values = [v for v in (sources or []) if isinstance(v, str)]
        if not values:
            raise SettingsError("choose at least one capture (or the synthetic sample)")
        key = report_key(values, settings)
        t0 = time.perf_counter()
        if get_report(rs, key) is None:
            report = compute_report(cache, session_id, values, settings)
            rs.put(key, report, meta={"panel": PANEL, "sources": values, "settings": settings})
            _reports.get_or_make(key, lambda: report)
            note = f"Analysed {len(values)} venue(s) in {time.perf_counter() - t0:,.1f} s."
        else:
            note = "Shown from the cache (same captures and settings)."
    except (DataError, SettingsError, CalibrationError) as err:
        return {"view": no_update, "alert": (str(err).rstrip(".") + "." + kept, True), "note": ""}
    except Exception as err:     # never a traceback in the browser
        log.exception("order-flow analysis failed")
        return {"view": no_update, "note": "",
                "alert": (f"The order flow could not be analysed ({type(err).__name__}); the details are in "
                          "the server log." + kept, True)}
    new_view = {"key": key, "sources": values, "settings": settings}
    save_view(cache, session_id, new_view)
    return {"view": new_view, "alert": ("", False), "note": note}


# --- what the panel shows ---------------------------------------------------------------------------

FIGURES = (OFI, DEPTH, SIGNS, PROPAGATOR, RESILIENCE)
SLOTS = (STATUS, TABLE, PAPER, EVAPORATION)


def rows_component(rows: list[dict], *, table_id: str, caption: str | None = None) -> html.Div:
    """A compact table of `rows` (`shell.rows_table`) whose cells never wrap."""
    return shell.rows_table(rows, table_id=table_id, caption=caption, nowrap=rows[0] if rows else (), small=True)


def status_component(report: OrderFlowReport) -> html.Div:
    """The verdict, with the analysis's warnings folded under it."""
    s = OF.status_summary(report)
    children = [html.Strong(s["headline"], className="execal-status-headline d-block")]
    if s["details"]:
        children.append(html.Ul([html.Li(d) for d in s["details"]], className="small mb-0 mt-1"))
    if s["warnings"]:
        children.append(html.Details([html.Summary(f"{len(s['warnings'])} warning(s)", className="small"),
                                      html.Ul([html.Li(w) for w in s["warnings"]], className="small mb-0")],
                                     id=_id("warnings")))
    return shell.status_banner(PANEL, children, s["level"])


def empty_outputs(message: str, *, level: str = "secondary") -> dict:
    return {**shell.empty_outputs(message, graphs=FIGURES, texts=(TABLE,), blanks=(PAPER, EVAPORATION),
                                  status=(STATUS, PANEL), level=level, as_json=True),
            "download_disabled": True}


def render_outputs(rs: results_mod.ResultStore, view: Any) -> dict:
    key = view.get("key") if isinstance(view, dict) else None
    if not results_mod.is_result_key(key):
        return empty_outputs(OF.NO_REPORT)
    try:
        report = get_report(rs, key)
        if report is None:
            return empty_outputs(EVICTED, level="warning")
        evap = OF.evaporation_rows(report)
        return {
            STATUS: status_component(report),
            TABLE: rows_component(OF.comparison_rows(report), table_id=_id("venues-table")),
            PAPER: html.P(OF.paper_note(report), className="small text-muted mb-0 mt-2", id=_id("paper-note")),
            EVAPORATION: (rows_component(evap, table_id=_id("evaporation-table"),
                                         caption="depth below 30 % of its usual level for ≥ 1 s, not taken by trades")
                          if evap else shell.empty_text("No liquidity-evaporation episode on these venues.")),
            OFI: OF.ofi_scatter_figure(report), DEPTH: OF.beta_depth_figure(report),
            SIGNS: OF.sign_memory_figure(report), PROPAGATOR: OF.propagator_figure(report),
            RESILIENCE: OF.resilience_figure(report), "download_disabled": False,
        }
    except Exception as err:
        log.exception("order-flow view of %s failed", key)
        return empty_outputs(f"The analysis could not be drawn ({type(err).__name__}); the details are in the "
                             "server log.", level="danger")


def download_output(rs: results_mod.ResultStore, view: Any) -> dict:
    key = view.get("key") if isinstance(view, dict) else None
    report = get_report(rs, key)
    if report is None:
        return {"download": no_update, "alert": ("Nothing to download: press Analyse first." if key is None
                                                 else EVICTED, True)}
    doc = report.to_dict()
    doc["sources"] = list(view.get("sources") or [])
    return {"download": {"content": json.dumps(doc, allow_nan=False), "filename": "orderflow.json",
                         "type": "application/json"}, "alert": ("", False)}


# --- layout ---------------------------------------------------------------------------------------


def _field(text: str, control, control_id: str, help_text: Any = None) -> html.Div:
    return shell.field(text, control, control_id, help_text, compact=True)


def _graph(graph_id: str) -> dcc.Loading:
    return shell.graph(graph_id, OF.NO_REPORT, height=OF.FIGURE_HEIGHT_PX)


_card = shell.card_col


def _slot(slot_id: str, empty: bool = True) -> dcc.Loading:
    return shell.slot(slot_id, OF.NO_REPORT if empty else None)


def layout(app) -> dbc.Row:
    upload = dcc.Upload(id=UPLOAD, multiple=True, className="execal-upload",
                        children=html.Div(["Drop capture files (.gz) here or ", html.A("choose files")]),
                        style={"borderWidth": "1px", "borderStyle": "dashed", "borderRadius": "6px",
                               "padding": "10px", "textAlign": "center"})
    upload_help = html.Div([
        html.Small("one file per venue and symbol: <receive ns> <json> lines, REST snapshot + depth diffs + trades "
                   "(hftbacktest's recorder format)", className="form-text d-block"),
        html.P("", id=UPLOAD_NOTE, className="small mb-0 mt-1", role="status")])
    settings_card = shell.card("Captures and settings", [
        _field("Binance raw captures", upload, UPLOAD, upload_help),
        _field("Venues to analyse", dbc.Checklist(id=SOURCES, options=[], value=[]), SOURCES),
        _field("Windows", dbc.Checklist(id=WINDOWS, value=list(DEFAULT_WINDOWS), inline=True, persistence=True,
                                        persistence_type="local",
                                        options=[{"label": w, "value": w} for w in WINDOW_CHOICES]), WINDOWS,
               "Δmid on OFI and Kyle's λ over each window"),
        _field("Book levels", dbc.Select(id=LEVELS, value=str(DEFAULT_LEVELS), persistence=True,
                                         persistence_type="local",
                                         options=[{"label": str(n), "value": str(n)} for n in LEVEL_CHOICES]),
               LEVELS, "multi-level OFI and the depth a sweep is measured on"),
        _field("Sweep share of depth", dbc.Input(id=SHARE, type="number", value=DEFAULT_SHARE, min=0.05, max=10,
                                                 step=0.05, persistence=True, persistence_type="local"), SHARE,
               "an order larger than this share of the depth it hits is a sweep"),
    ], class_name="mb-3 execal-orderflow-settings")
    run_card = shell.run_card(RUN, "Analyse", note_id=NOTE, alert_id=ALERT,
                              download=(DOWNLOAD_BUTTON, DOWNLOAD, "Download JSON"), store_ids=(VIEW, SHOWN))
    status = shell.slot(STATUS, shell.empty_status(PANEL, OF.NO_REPORT))
    figures_col = [
        run_card, status, html.Div(className="mb-3"),
        dbc.Row([_card("Venues side by side", [_slot(TABLE), _slot(PAPER, empty=False)],
                       "β, R² per window, Kyle's λ, Amihud, sign memory, kernel decay, half-lives", {"lg": 12})]),
        dbc.Row([_card("Order-flow imbalance vs mid change", _graph(OFI),
                       "each window: points and the venue's OLS fit (OFI in multiples of the average best depth)",
                       {"lg": 12})]),
        dbc.Row([_card("β vs depth", _graph(DEPTH), "per interval, log–log; lines: β = c·depth^−x (CKS: x ≈ 1)"),
                 _card("Trade-sign memory", _graph(SIGNS), "autocorrelation of order signs, log–log; line: ℓ^−γ")]),
        dbc.Row([_card("Response and propagator kernel", _graph(PROPAGATOR),
                       "R(ℓ) with its bootstrap band; G(ℓ) from the Toeplitz system, dotted: power law", {"lg": 12})]),
        dbc.Row([_card("Resilience after sweeps", _graph(RESILIENCE),
                       "median depth dip and mean spread widening after sweeps; dotted: fitted half-life",
                       {"lg": 12})]),
        dbc.Row([_card("Liquidity evaporation", _slot(EVAPORATION, empty=False),
                       "cancelled, not traded, depth drops", {"lg": 12})]),
    ]
    return dbc.Row([dbc.Col(settings_card, md=4, lg=3), dbc.Col(figures_col, md=8, lg=9)],
                   className="execal-orderflow-panel")


# --- callbacks ------------------------------------------------------------------------------------


def register_callbacks(app) -> None:
    _, rs = shell.stores(app)

    @app.callback(
        Output(SOURCES, "options"), Output(SOURCES, "value"), Output(UPLOAD_NOTE, "children"),
        Input(shell.SESSION_STORE_ID, "data"), Input(UPLOAD, "contents"),
        State(UPLOAD, "filename"), State(SOURCES, "value"),
    )
    def _sources(session_id, contents, names, current):
        note = ""
        fresh = ctx.triggered_id == UPLOAD and bool(contents)
        if fresh:
            try:
                stored, errors = store_uploads(rs.cache, session_id, contents, names,
                                               shell.get_settings(app).max_upload_bytes)
            except DataError as err:
                stored, errors = [], [str(err)]
            note = html.Span([html.Span(f"Kept {len(stored)} capture(s). " if stored else ""),
                              *[html.Span(e, className="text-danger d-block") for e in errors]])
        options = source_options(rs.cache, session_id)
        return options, chosen_sources(options, current, fresh), note

    @app.callback(
        Output(VIEW, "data"), Output(ALERT, "children"), Output(ALERT, "is_open"), Output(NOTE, "children"),
        Input(RUN, "n_clicks"), Input(shell.SESSION_STORE_ID, "data"),
        State(SOURCES, "value"), State(WINDOWS, "value"), State(LEVELS, "value"), State(SHARE, "value"),
        State(VIEW, "data"),
    )
    def _fit(_clicks, session_id, sources, windows, levels, share, view):
        out = fit_outputs(rs, trigger=ctx.triggered_id, session_id=session_id, sources=sources,
                          windows=windows, levels=levels, share=share, view=view)
        return out["view"], *out["alert"], out["note"]

    @app.callback(
        [Output(i, "children") for i in SLOTS] + [Output(i, "figure") for i in FIGURES]
        + [Output(DOWNLOAD_BUTTON, "disabled"), Output(SHOWN, "data")],
        Input(VIEW, "data"), Input(shell.LOCATION_ID, "pathname"), State(SHOWN, "data"),
    )
    def _render(view, pathname, shown):
        key = shell.result_key_of(view)
        # hidden, the panel does no work; re-opened on what it already drew, it keeps it
        if key is None or not shell.needs_render(PANEL, pathname, ctx.triggered_id, key, shown):
            raise PreventUpdate
        out = render_outputs(rs, view)
        return [out[i] for i in SLOTS] + [out[i] for i in FIGURES] + [out["download_disabled"], key]

    shell.register_download(app, button_id=DOWNLOAD_BUTTON, download_id=DOWNLOAD, alert_id=ALERT, view_id=VIEW,
                            make=lambda view: download_output(rs, view))
