"""The Monitor panel: run the live monitor on a replayed capture, watch it, steer its config.

Source and speed, then Start: the server starts `execal monitor` as a background process in its own
session (execal.live.runs), on a capture replayed through the local websocket server, with fills
from a file — or the demonstration: fills whose impact coefficient doubles at a known time, and a
config fitted before it. The process writes its state to a run directory in the private cache; any
web worker reads it, so the monitor keeps running when the page is closed and the panel reattaches
on reload (the browser keeps only the run id, in localStorage).

Every half second the panel reads what the run appended since the last read (byte offsets in a
dcc.Store) and extends its figures with Dash's extendData — market mid, spread, depth and realised
volatility; predicted vs realised cost of each fill; the Kalman / SGD coefficient paths against the
live config; the timeline of alarms, recalibrations and switches — never redrawing a figure per
tick. Pause / resume / stop and "switch to version" are written to the run's control file. The
config history lists every version with its out-of-sample comparison; any two can be diffed.

The figures and tables are pure builders (components/monitor_figures.py); this module only wires.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import dash_bootstrap_components as dbc
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from execal.components import monitor_figures as MF
from execal.components import shell
from execal.components import store
from execal.live import runs
from execal.models.live.versions import HistoryError

log = logging.getLogger(__name__)

PANEL = "monitor"
TITLE = "Monitor"


_id = shell.ids_for(PANEL)


SOURCE, SOURCE_PATH, FILLS_MODE, FILLS_PATH = _id("source", "source-path", "fills-mode", "fills-path")
CONFIG_PATH, SPEED, START, PAUSE = _id("config-path", "speed", "start", "pause")
STOP, NOTE, STATUS = _id("stop", "note", "status")
RUN = _id("run")                 # dcc.Store (localStorage): {"run_id": ...}
OFFSETS = _id("offsets")         # dcc.Store: {"run_id", "ticks", "fills", "events", "versions"}
TICK = _id("tick")               # dcc.Interval
MID = _id("mid")
SPREAD = _id("spread")
DEPTH = _id("depth")
VOL = _id("vol")
COST = _id("cost")
COEF = _id("coef")
EVENTS_GRAPH = _id("events-graph")
EVENTS = _id("events")
HISTORY = _id("history")
DIFF_A = _id("diff-a")
DIFF_B = _id("diff-b")
DIFF = _id("diff")
SWITCH_TO = _id("switch-to")
SWITCH = _id("switch")
LAG = _id("lag")

MARKET_GRAPHS = {MID: "mid", SPREAD: "spread", DEPTH: "depth", VOL: "vol"}
GRAPHS = (MID, SPREAD, DEPTH, VOL, COST, COEF, EVENTS_GRAPH)
GRAPH_CONFIG = {"displaylogo": False, "responsive": True}
SPEEDS = ("1", "10", "30", "100", "max")
POLL_MS = 500
FIRST_DRAW_ROWS = 20_000
DEMO = "demo"


def runs_dir(app) -> Path:
    """Monitor runs live in the app's private cache directory (shared by every worker)."""
    d = Path(store.get_store(app).cache.directory) / "monitor-runs"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d


def shared_captures() -> list[str]:
    """Capture files offered by default: the shared Binance captures and EXECAL_CAPTURE_DIR."""
    root = Path(__file__).resolve().parents[1]
    shared = Path(os.environ.get("EXECAL_SHARED_DATA", root.parent / "shared" / "data")) / "binance-raw"
    dirs = [shared] + [Path(p) for p in os.environ.get("EXECAL_CAPTURE_DIR", "").split(os.pathsep) if p]
    out = []
    for d in dirs:
        if d.is_dir():
            out.extend(str(p) for p in sorted(d.glob("*.gz")))
    return out


# --- layout ---------------------------------------------------------------------------------------

def _field(label: str, control, for_id: str) -> html.Div:
    return html.Div([dbc.Label(label, html_for=for_id, className="small fw-semibold mb-1"), control],
                    className="mb-2")


def _graph(gid: str):
    return dcc.Graph(id=gid, figure=MF.market_figure("mid", [], []) if gid in MARKET_GRAPHS else {},
                     config=GRAPH_CONFIG, className="execal-monitor-graph")


def layout(app) -> dbc.Row:
    captures = shared_captures()
    options = [{"label": Path(p).name, "value": p} for p in captures]
    settings = dbc.Card([
        dbc.CardHeader(html.H2("Source", className="h6 mb-0")),
        dbc.CardBody([
            _field("Capture (replayed through the local websocket server)",
                   dcc.Dropdown(id=SOURCE, options=options, value=captures[0] if captures else None,
                                placeholder="a Binance raw capture", clearable=True), SOURCE),
            _field("…or a capture file on the server",
                   dbc.Input(id=SOURCE_PATH, placeholder="/path/to/capture.gz", type="text", debounce=True),
                   SOURCE_PATH),
            _field("Fills and config", dbc.RadioItems(id=FILLS_MODE, value=DEMO, options=[
                {"label": "demo: fills whose impact doubles at a known time", "value": DEMO},
                {"label": "a fills file and a config on the server", "value": "files"}]), FILLS_MODE),
            _field("Fills file (CSV or JSON lines, tailed)",
                   dbc.Input(id=FILLS_PATH, placeholder="/path/to/fills.jsonl", type="text", debounce=True),
                   FILLS_PATH),
            _field("Config (execal calibrate --out)",
                   dbc.Input(id=CONFIG_PATH, placeholder="/path/to/config.json", type="text", debounce=True),
                   CONFIG_PATH),
            _field("Speed", dbc.RadioItems(id=SPEED, value="10", inline=True,
                                           options=[{"label": "max" if s == "max" else f"{s}×", "value": s}
                                                    for s in SPEEDS]), SPEED),
            html.Div([dbc.Button("Start", id=START, color="primary", className="me-2"),
                      dbc.Button("Pause", id=PAUSE, color="secondary", outline=True, className="me-2",
                                 disabled=True),
                      dbc.Button("Stop", id=STOP, color="danger", outline=True, disabled=True)]),
            html.P("", id=NOTE, className="small text-muted mt-2 mb-0", role="status"),
        ]),
    ], className="mb-3")
    history = dbc.Card([
        dbc.CardHeader(html.H2("Config history", className="h6 mb-0")),
        dbc.CardBody([
            html.Div(id=HISTORY, className="mb-2", style={"overflowX": "auto"}),
            dbc.Row([dbc.Col(_field("Switch the live model to", dcc.Dropdown(id=SWITCH_TO, options=[]), SWITCH_TO)),
                     dbc.Col(dbc.Button("Switch", id=SWITCH, color="success", outline=True, className="mt-4"),
                             width="auto")]),
            dbc.Row([dbc.Col(_field("Diff", dcc.Dropdown(id=DIFF_A, options=[]), DIFF_A)),
                     dbc.Col(_field("against", dcc.Dropdown(id=DIFF_B, options=[]), DIFF_B))]),
            html.Div(id=DIFF, style={"overflowX": "auto"}),
        ]),
    ], className="mb-3")
    main = html.Div([
        html.Div("No monitor running.", id=STATUS, className="alert alert-light py-2 small mb-2", role="status"),
        html.Small("", id=LAG, className="text-muted d-block mb-2"),
        dbc.Row([dbc.Col(_graph(MID), lg=6), dbc.Col(_graph(SPREAD), lg=6)]),
        dbc.Row([dbc.Col(_graph(DEPTH), lg=6), dbc.Col(_graph(VOL), lg=6)]),
        dbc.Row([dbc.Col(_graph(COST), lg=6), dbc.Col(_graph(COEF), lg=6)]),
        _graph(EVENTS_GRAPH),
        html.H3("Events", className="h6 mt-3"),
        html.Div(id=EVENTS),
    ])
    return dbc.Row([
        dcc.Store(id=RUN, storage_type="local"),
        dcc.Store(id=OFFSETS, storage_type="memory"),
        dcc.Interval(id=TICK, interval=POLL_MS, disabled=True),
        dbc.Col([settings, history], lg=3),
        dbc.Col(main, lg=9),
    ])


def _table(rows: list[dict], table_id: str, empty: str):
    if not rows:
        return html.P(empty, className="small text-muted mb-0")
    cols = list(rows[0])
    return dbc.Table([html.Thead(html.Tr([html.Th(c) for c in cols])),
                      html.Tbody([html.Tr([html.Td(r[c]) for c in cols], **{"data-row": str(r[cols[0]])})
                                  for r in rows])],
                     id=table_id, size="sm", striped=True, hover=True, className="execal-table small mb-0")


# --- what the callbacks do (plain functions: tests call them directly) ------------------------------

def start_run(base: Path, capture: str | None, path: str | None, mode: str, fills: str | None,
              config: str | None, speed: str) -> tuple[dict | None, str]:
    """({"run_id"} or None, note)."""
    capture = (path or "").strip() or capture
    if not capture or not Path(capture).is_file():
        return None, f"No such capture file: {capture}" if capture else "Choose a capture to replay."
    if mode == DEMO:
        run_id = runs.start_run(base, capture=capture, speed=speed, demo=True)
        return {"run_id": run_id}, f"Started run {run_id} (demo: the impact coefficient doubles at a known time)."
    for label, p in (("fills", fills), ("config", config)):
        if not p or not Path(p).is_file():
            return None, f"No such {label} file: {p}" if p else f"Give the {label} file."
    run_id = runs.start_run(base, capture=capture, speed=speed, config=config, fills=fills)
    return {"run_id": run_id}, f"Started run {run_id}."


def _markets(status: dict, ticks: list[dict]) -> list[str]:
    found = list((status.get("markets") or {}).keys())
    for t in ticks:
        k = MF.market_key(t)
        if k not in found:
            found.append(k)
    return found


def attach(base: Path, run: dict | None) -> dict:
    """Full figures, tables and offsets of a run (a start, a reload, a reattach)."""
    run_id = (run or {}).get("run_id")
    if not runs.is_run_id(run_id) or not (base / run_id).is_dir():
        return {"figures": {g: no_update for g in GRAPHS}, "offsets": None, "status": "No monitor running.",
                "events": MF.event_rows([]), "history": [], "versions": [], "interval_off": True, "markets": []}
    d = base / run_id
    status = runs.status(d)
    ticks, t_off = runs.read_jsonl(d / "ticks.jsonl", 0, FIRST_DRAW_ROWS)
    fills, f_off = runs.read_jsonl(d / "fills.jsonl", 0, FIRST_DRAW_ROWS)
    events, e_off = runs.read_jsonl(d / "events.jsonl", 0)
    markets = _markets(status, ticks)
    name = MF.drift_name(fills)
    figures = {g: MF.market_figure(kind, markets, ticks) for g, kind in MARKET_GRAPHS.items()}
    figures[COST] = MF.cost_figure(fills)
    figures[COEF] = MF.coef_figure(fills, name)
    figures[EVENTS_GRAPH] = MF.events_figure(events)
    versions = _versions(d)
    return {"figures": figures, "status": MF.status_text(status), "events": MF.event_rows(events),
            "history": MF.history_rows(versions, name), "versions": versions,
            "offsets": {"run_id": run_id, "ticks": t_off, "fills": f_off, "events": e_off, "markets": markets,
                        "drift": name, "n_versions": len(versions), "n_events": len(events),
                        "recent_events": events[-40:]},
            "interval_off": bool(status.get("finished") and not status.get("alive")), "markets": markets}


def _versions(d: Path) -> list[dict]:
    try:
        return runs.history(d).versions()
    except (OSError, HistoryError):
        return []


def poll(base: Path, offsets: dict | None) -> dict | None:
    """What the run appended since `offsets`: extendData per graph, status, tables; None = nothing."""
    if not offsets or not runs.is_run_id(offsets.get("run_id")):
        return None
    d = base / offsets["run_id"]
    status = runs.status(d)
    ticks, t_off = runs.read_jsonl(d / "ticks.jsonl", offsets["ticks"])
    fills, f_off = runs.read_jsonl(d / "fills.jsonl", offsets["fills"])
    events, e_off = runs.read_jsonl(d / "events.jsonl", offsets["events"])
    markets = list(offsets.get("markets") or [])
    found = _markets(status, ticks)
    redraw = None
    if any(m not in markets for m in found):
        # a market the figures have no trace for yet: redraw the market figures from every tick
        markets = markets + [m for m in found if m not in markets]
        every, _ = runs.read_jsonl(d / "ticks.jsonl", 0, FIRST_DRAW_ROWS)
        redraw = {g: MF.market_figure(kind, markets, every) for g, kind in MARKET_GRAPHS.items()}
    name = offsets.get("drift") or MF.drift_name(fills)
    extend = {g: (None if redraw else MF.market_extend(kind, markets, ticks)) for g, kind in MARKET_GRAPHS.items()}
    extend[COST] = MF.cost_extend(fills)
    extend[COEF] = MF.coef_extend(fills, name)
    extend[EVENTS_GRAPH] = MF.events_extend(events)
    new = dict(offsets, ticks=t_off, fills=f_off, events=e_off, markets=markets, drift=name)
    out = {"extend": extend, "redraw": redraw, "status": MF.status_text(status), "offsets": new, "events": None,
           "history": None,
           "versions": None, "finished": bool(status.get("finished") and not status.get("alive"))}
    if events:
        recent = (offsets.get("recent_events") or []) + events
        new["recent_events"] = recent[-40:]
        new["n_events"] = offsets.get("n_events", 0) + len(events)
        out["events"] = MF.event_rows(recent)
    versions = _versions(d)
    if len(versions) != offsets.get("n_versions") or any(e.get("kind") == "switch" for e in events):
        new["n_versions"] = len(versions)
        out["history"] = MF.history_rows(versions, name)
        out["versions"] = versions
    walls = [r["wall"] for r in ticks if "wall" in r]
    out["lag_s"] = (time.time() - max(walls)) if walls else None
    return out


def _version_options(versions: list[dict]) -> list[dict]:
    return [{"label": f"v{v['version']}" + (" (live)" if v.get("active") else "") + f" — {v.get('reason')}",
             "value": v["version"]} for v in reversed(versions)]


# --- callbacks ------------------------------------------------------------------------------------------

def register_callbacks(app) -> None:
    base = runs_dir(app)

    @app.callback(Output(RUN, "data"), Output(NOTE, "children"),
                  Input(START, "n_clicks"), Input(PAUSE, "n_clicks"), Input(STOP, "n_clicks"),
                  Input(SWITCH, "n_clicks"),
                  State(SOURCE, "value"), State(SOURCE_PATH, "value"), State(FILLS_MODE, "value"),
                  State(FILLS_PATH, "value"), State(CONFIG_PATH, "value"), State(SPEED, "value"),
                  State(RUN, "data"), State(SWITCH_TO, "value"), State(PAUSE, "children"),
                  prevent_initial_call=True)
    def _buttons(_start, _pause, _stop, _switch, capture, path, mode, fills, config, speed, run, switch_to,
                 pause_label):
        trigger = ctx.triggered_id
        if trigger == START:
            started, note = start_run(base, capture, path, mode, fills, config, speed)
            return (started if started else no_update), note
        run_id = (run or {}).get("run_id")
        if not runs.is_run_id(run_id) or not (base / run_id).is_dir():
            return no_update, "No run to control."
        d = base / run_id
        if trigger == PAUSE:
            paused = pause_label == "Pause"
            runs.control(d, paused=paused)
            return no_update, "Paused." if paused else "Resumed."
        if trigger == STOP:
            runs.stop(d)
            return no_update, f"Stopping run {run_id}…"
        if trigger == SWITCH:
            if switch_to is None:
                return no_update, "Choose the version to switch to."
            runs.control(d, switch=int(switch_to), reason="switched from the dashboard")
            return no_update, f"Asked the monitor to switch to v{switch_to}."
        raise PreventUpdate

    @app.callback([Output(g, "figure") for g in GRAPHS]
                  + [Output(OFFSETS, "data"), Output(STATUS, "children"), Output(EVENTS, "children"),
                     Output(HISTORY, "children"), Output(SWITCH_TO, "options"), Output(DIFF_A, "options"),
                     Output(DIFF_B, "options"), Output(TICK, "disabled"), Output(PAUSE, "disabled"),
                     Output(STOP, "disabled")],
                  Input(RUN, "data"))
    def _attach(run):
        out = attach(base, run)
        opts = _version_options(out["versions"])
        live = out["offsets"] is not None and not out["interval_off"]
        return ([out["figures"][g] for g in GRAPHS]
                + [out["offsets"], out["status"], _table(out["events"], _id("events-table"), "No events yet."),
                   _table(out["history"], _id("history-table"), "No config yet."), opts, opts, opts,
                   out["interval_off"], not live, not live])

    @app.callback([Output(g, "extendData") for g in GRAPHS]
                  + [Output(g, "figure", allow_duplicate=True) for g in MARKET_GRAPHS]
                  + [Output(OFFSETS, "data", allow_duplicate=True), Output(STATUS, "children", allow_duplicate=True),
                     Output(EVENTS, "children", allow_duplicate=True), Output(HISTORY, "children", allow_duplicate=True),
                     Output(SWITCH_TO, "options", allow_duplicate=True), Output(DIFF_A, "options", allow_duplicate=True),
                     Output(DIFF_B, "options", allow_duplicate=True), Output(TICK, "disabled", allow_duplicate=True),
                     Output(LAG, "children"), Output(PAUSE, "children")],
                  Input(TICK, "n_intervals"), State(OFFSETS, "data"), prevent_initial_call=True)
    def _poll(_n, offsets):
        out = poll(base, offsets)
        if out is None:
            raise PreventUpdate
        ext = [out["extend"][g] if out["extend"][g] is not None else no_update for g in GRAPHS]
        ext += [out["redraw"][g] if out["redraw"] else no_update for g in MARKET_GRAPHS]
        events = (_table(out["events"], _id("events-table"), "No events yet.") if out["events"] is not None
                  else no_update)
        if out["history"] is not None:
            history = _table(out["history"], _id("history-table"), "No config yet.")
            opts = _version_options(out["versions"])
        else:
            history, opts = no_update, no_update
        lag = (f"newest tick shown {out['lag_s']:.2f} s after it was processed" if out.get("lag_s") is not None
               else no_update)
        st = runs.status(base / offsets["run_id"])
        pause_label = "Resume" if (st.get("runner") or {}).get("paused") else "Pause"
        return ext + [out["offsets"], out["status"], events, history, opts, opts, opts, out["finished"], lag,
                      pause_label]

    @app.callback(Output(DIFF, "children"), Input(DIFF_A, "value"), Input(DIFF_B, "value"), State(RUN, "data"))
    def _diff(a, b, run):
        run_id = (run or {}).get("run_id")
        if a is None or b is None or not runs.is_run_id(run_id):
            return html.P("Choose two versions to compare.", className="small text-muted mb-0")
        try:
            rows = MF.diff_rows(runs.history(base / run_id).diff(a, b))
        except HistoryError as exc:
            return html.P(str(exc), className="small text-danger mb-0")
        rows = [{"key": r["key"], f"v{a}": r["a"], f"v{b}": r["b"]} for r in rows
                if not r["key"].startswith(("created_at", "versioning.created_at"))]
        return _table(rows, _id("diff-table"), "The two versions are the same.")
