"""The Datasets panel: partitioned datasets too big to upload, read where they lie on the server.

Which directories exist is the server's choice, never the browser's: EXECAL_DATA_ROOTS lists the data
roots (separated by ':'); the panel offers the execal datasets found in them (the root itself and
sub-directories two levels down, those with a `_manifest.json`), and the browser only ever sends back
the opaque key of one of those entries, which `resolve` maps to a path again and checks. Summary,
coverage and the filter choices come from the manifest and partition statistics (no row is read); a
calibration streams the rows (execal.models.impact.outofcore) as a background job with a progress bar
and a Cancel button; on a dataset of trades or bars the models offered are the volatility models,
fitted on bars aggregated out of core (execal.models.data.streambars) by the same kind of job, in this process or on the Dask cluster the server is configured with
(EXECAL_DASK_SCHEDULER: the browser picks "cluster", not an address). The diagnostics are drawn from
exact aggregates over every usable row (binned means, residual quantiles) plus a stratified sample of
points, and say so. The browser holds keys; results (JSON-ready dicts, our own) are in the cache.

`list_datasets`, `resolve`, `dataset_summary`, `run_job` and `render_result` are the callbacks' bodies
as plain functions (tests call them); `register_callbacks` only wires them.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from execal.components import dataset_figures as D
from execal.components import shell
from execal.components import store as store_mod
from execal.models.core.errors import CalibrationError
from execal.models.core.jsonable import clean
from execal.models.core.registry import LOSSES, models_of_kind
from execal.models.data.bars import parse_freq
from execal.models.data.compute import ENV_SCHEDULER, scheduler_address
from execal.models.data.dataset import is_dataset, open_dataset
from execal.models.data.schema import DataError
from execal.models.data.streambars import dataset_bar_series
from execal.models.impact.fit import Calibrator
from execal.models.impact.outofcore import diagnostics_aggregate, fit_dataset
from execal.models.vol.base import VolatilityCalibrator

PANEL = "datasets"
TITLE = "Datasets"
ENV_ROOTS = "EXECAL_DATA_ROOTS"
SEARCH_DEPTH = 2
RESULT_PREFIX = "ooc-result:"
BAR_LIMITS_S = (1, 86_400)             # bar lengths a volatility job may ask for
MAX_PLOT_POINTS = 2_000                # the bars chart: an exact min/max envelope beyond this


_id = shell.ids_for(PANEL)


DATASET, REFRESH, SUMMARY, COVERAGE = _id("dataset", "refresh", "summary", "coverage")
SYMBOLS, VENUES, START, END = _id("symbols", "venues", "start", "end")
MODEL, LOSS, BOOT_N, WHERE = _id("model", "loss", "bootstrap", "where")
RUN, CANCEL, PROGRESS, PROGRESS_WRAP = _id("run", "cancel", "progress", "progress-wrap")
BAR = _id("bar")
JOB, RESULT_KEY, RESULT, ALERT = _id("job", "result-key", "result", "alert")


# --- the server's data roots ---------------------------------------------------------------------

def data_roots(env: Mapping[str, str] | None = None) -> list[Path]:
    """The directories datasets may be read from (EXECAL_DATA_ROOTS, ':'-separated; none by default)."""
    text = (env if env is not None else os.environ).get(ENV_ROOTS, "")
    out = []
    for part in text.split(os.pathsep):
        part = part.strip()
        if part and Path(part).is_dir():
            out.append(Path(part).resolve())
    return out


def list_datasets(roots: list[Path]) -> list[dict]:
    """[{key, label, path}] of the datasets in the roots (the root and SEARCH_DEPTH levels down)."""
    out = []
    for i, root in enumerate(roots):
        found = []
        frontier = [root]
        for depth in range(SEARCH_DEPTH + 1):
            nxt = []
            for d in frontier:
                if is_dataset(d):
                    found.append(d)
                    continue          # a dataset's own sub-directories are its partitions
                if depth < SEARCH_DEPTH:
                    try:
                        nxt += sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
                    except OSError:
                        continue
            frontier = nxt
        for d in found:
            real = d.resolve()
            if real != root and root not in real.parents:
                continue          # a symlink out of the root is not offered
            rel = d.relative_to(root).as_posix() if d != root else "."
            out.append({"key": f"{i}:{rel}", "label": f"{root.name}/{rel}" if rel != "." else root.name,
                        "path": str(d)})
    return out


def resolve(key: Any, roots: list[Path] | None = None) -> Path:
    """The dataset directory of an offered key; DataError for anything else (a path the browser
    made up, '..', a symlink out of the root, a directory without a manifest)."""
    roots = data_roots() if roots is None else roots
    offered = {d["key"]: d["path"] for d in list_datasets(roots)}
    if not isinstance(key, str) or key not in offered:
        raise DataError("not a dataset of the server's data roots (EXECAL_DATA_ROOTS)")
    path = Path(offered[key]).resolve()
    root = roots[int(key.split(":", 1)[0])]
    if path != root and root not in path.parents:
        raise DataError("not a dataset of the server's data roots (EXECAL_DATA_ROOTS)")
    return path


def _filters(symbols, venues, start, end) -> dict:
    return {"symbols": list(symbols) if symbols else None, "venues": list(venues) if venues else None,
            "start": start or None, "end": end or None}


def dataset_summary(key: Any, filters: Mapping | None = None, roots: list[Path] | None = None) -> dict:
    """Summary and coverage of a dataset (filtered) from its manifest: no data file is opened."""
    ds = open_dataset(resolve(key, roots))
    view = ds.select(**(filters or {}))
    return {"summary": view.summary(), "coverage": view.coverage(),
            "all": ds.summary() if filters else None}


def model_options(kind: str) -> list[dict]:
    """The models a dataset of `kind` can calibrate: impact models on fills, volatility models
    (those that read bars) on trades and bars."""
    if kind in ("trades", "bars"):
        return [{"label": f"{m.label} (volatility)", "value": name}
                for name, m in models_of_kind("volatility").items() if "bar" in m.defaults()]
    return [{"label": name, "value": name} for name in models_of_kind("impact")]


# --- the job ------------------------------------------------------------------------------------

_STAGE_SPAN = {"prepare": (0, 8), "start values": (8, 14), "fit": (14, 70), "select": (8, 10)}


def job_for(key, filters, model, loss, bootstrap, where, roots=None, bar=None) -> dict:
    path = resolve(key, roots)      # refuse early, in the request, what the job would refuse
    kind = open_dataset(path).kind
    cluster = where == "cluster"
    if cluster and scheduler_address() is None:
        raise CalibrationError(f"no Dask cluster is configured on the server ({ENV_SCHEDULER})")
    if kind in ("trades", "bars"):
        if model not in {o["value"] for o in model_options(kind)}:
            raise CalibrationError(f"{model!r} is not a volatility model that reads bars")
        bar = str(bar or "1min").strip()
        bar_s = parse_freq(bar, "bar") / 1e9
        if not BAR_LIMITS_S[0] <= bar_s <= BAR_LIMITS_S[1]:
            raise CalibrationError(f"bar length: {BAR_LIMITS_S[0]} s to 1 day, got {bar}")
        return {"area": "volatility", "key": key, "filters": dict(filters), "model": model, "bar": bar,
                "cluster": cluster}
    if model not in models_of_kind("impact"):
        raise CalibrationError(f"unknown impact model {model!r}")
    if loss not in LOSSES:
        raise CalibrationError(f"unknown loss {loss!r}")
    n = int(bootstrap or 0)
    if n and not 2 <= n <= 1000:
        raise CalibrationError("bootstrap resamples: 0 (none) or 2 to 1000")
    return {"key": key, "filters": dict(filters), "model": model, "loss": loss, "bootstrap": n,
            "cluster": cluster}


def result_key(job: Mapping) -> str:
    return RESULT_PREFIX + hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:32]


def run_job(cache, job: Mapping, progress: Callable[[float, str], None] = lambda p, s: None,
            roots: list[Path] | None = None) -> str:
    """Fit (streamed) and aggregate the diagnostics; store a JSON-ready dict; return its key."""
    path = resolve(job["key"], roots)
    view = open_dataset(path).select(**job["filters"])
    scheduler = scheduler_address() if job["cluster"] else ""
    if job.get("area") == "volatility":
        return _run_volatility(cache, job, view, scheduler, progress)
    fit_passes = [0]

    def on_fit(info):
        stage = info["stage"]
        frac = info["tasks_done"] / max(info["tasks"], 1)
        if stage == "fit":
            if info["tasks_done"] == info["tasks"]:
                fit_passes[0] += 1
            lo, hi = 14, 70
            # LM passes: about four to eight; the bar creeps towards the end of its span
            done = fit_passes[0] + frac
            pct = lo + (hi - lo) * (1 - 0.75 ** done)
        elif stage.startswith("bootstrap"):
            pct = 70 + 5 * frac
        else:
            lo, hi = _STAGE_SPAN.get(stage, (8, 14))
            pct = lo + (hi - lo) * frac
        progress(pct, f"pass {info['pass']}: {stage} ({info['tasks_done']}/{info['tasks']} tasks)")
    cal = Calibrator(job["model"], loss=job["loss"])
    result = fit_dataset(cal, view, scheduler=scheduler, bootstrap=job["bootstrap"], progress=on_fit,
                         group_metrics=True)

    def on_diag(info):
        frac = info["tasks_done"] / max(info["tasks"], 1)
        base = {"prepare": 75, "diagnostics: counts": 83}.get(info["stage"], 91)
        stage = info["stage"] if info["stage"].startswith("diagnostics") else f"diagnostics: {info['stage']}"
        progress(base + 8 * frac, f"{stage} ({info['tasks_done']}/{info['tasks']} tasks)")
    agg = diagnostics_aggregate(result, view, scheduler=scheduler, progress=on_diag)
    payload = clean({"job": dict(job), "result": result.to_dict(), "summary": result.summary(),
                     "diagnostics": agg, "dataset": view.summary()["file"]})
    key = result_key(job)
    cache.set(key, json.dumps(payload, allow_nan=False))
    progress(100, "done")
    return key


def _run_volatility(cache, job: Mapping, view, scheduler, progress) -> str:
    """Bars of the view aggregated out of core (gaps skipped and reported), then the model."""
    symbols = job["filters"].get("symbols") or []
    if len(symbols) > 1:
        raise DataError("a volatility model fits one symbol: choose one in Symbols")

    def on_task(done, total):
        progress(5 + 75 * done / max(total, 1), f"bars: {done}/{total} tasks")
    progress(2, "bars: reading the partitions")
    bars = dataset_bar_series(view, symbol=symbols[0] if symbols else None, bar=job["bar"], gaps="skip",
                              scheduler=scheduler, progress=on_task)
    progress(82, f"fitting {job['model']} on {bars.n:,} bars")
    result = VolatilityCalibrator(job["model"], bar=job["bar"], gaps="skip").fit(bars)
    payload = clean({"job": dict(job), "vol": result.to_dict(), "summary": result.summary(),
                     "bars": bars_envelope(bars.t_ns, bars.close), "dataset": view.summary()["file"]})
    key = result_key(job)
    cache.set(key, json.dumps(payload, allow_nan=False))
    progress(100, "done")
    return key


def bars_envelope(t_ns: np.ndarray, close: np.ndarray, max_points: int = MAX_PLOT_POINTS) -> dict:
    """The closes to draw: every bar when there are few, else per bucket of consecutive bars the
    exact min and max close and the last close (so no spike is lost)."""
    n = int(close.shape[0])
    step = max(1, -(-n // max_points))
    starts = np.arange(0, n, step)
    ends = np.minimum(starts + step, n) - 1
    t = np.datetime_as_string(t_ns[ends].astype("datetime64[ns]"), unit="s").tolist()
    if step == 1:
        return {"n": n, "step": 1, "t": t, "close": close.tolist()}
    return {"n": n, "step": step, "t": t, "close": close[ends].tolist(),
            "low": np.minimum.reduceat(close, starts).tolist(), "high": np.maximum.reduceat(close, starts).tolist()}


@shell.background_job
def dataset_job(set_progress, ticket):
    """The background callback: runs in a job process (components/jobs.py), on the job that `_plan`
    built and validated on the server for this owner (a forged payload runs nothing)."""
    cache = shell.job_stores()[0].cache
    job = shell.claim_job(cache, ticket)
    if not job:
        raise PreventUpdate
    job.pop("session", None)
    started = time.perf_counter()

    def progress(pct, label):
        set_progress((round(float(pct), 1), f"{label} · {time.perf_counter() - started:.0f} s"))
    try:
        return run_job(cache, job, progress), "", False
    except (DataError, CalibrationError) as err:
        return no_update, f"Calibration failed: {err}", True


# --- rendering ----------------------------------------------------------------------------------

def _facts(rows: list[tuple[str, str]]) -> html.Dl:
    items = []
    for label, value in rows:
        items += [html.Dt(label, className="col-sm-3"), html.Dd(value, className="col-sm-9 mb-1")]
    return html.Dl(items, className="row small mb-0")


def _table(rows: list[dict]) -> dbc.Table | html.P:
    if not rows:
        return html.P("Nothing to show.", className="text-muted small")
    cols = list(rows[0])
    return dbc.Table([html.Thead(html.Tr([html.Th(c) for c in cols])),
                      html.Tbody([html.Tr([html.Td(r[c]) for c in cols]) for r in rows])],
                     size="sm", bordered=False, striped=True, className="small")


def render_result(cache, key: str | None) -> list:
    if not key:
        return [html.P("No streamed fit yet: pick a dataset and press Calibrate.", className="text-muted")]
    text = cache.get(key)
    if text is None:
        return [html.P("That result is no longer in the cache; calibrate again.", className="text-muted")]
    payload = json.loads(text)
    if "vol" in payload:
        return _render_volatility(payload)
    res, agg = payload["result"], payload["diagnostics"]
    status = "converged" if res["converged"] else "NOT CONVERGED"
    agg["sample"] = {**agg["sample"], **{k: np.asarray(agg["sample"][k], dtype=float)
                                         for k in ("participation", "observed_bps", "predicted_bps")}}
    src = res["source"]
    return [
        dbc.Alert(f"{res['model']}: {status} — {res['report'].get('message', '')}",
                  color="success" if res["converged"] else "warning", className="py-2"),
        html.P(f"{res['rows']['train']:,} rows in-sample, {src['passes']} passes over "
               f"{payload['dataset']} ({src['executor']}, {src['seconds']:.1f} s)", className="small"),
        _table(D.param_rows(res)),
        html.H3("Diagnostics", className="h6 mt-3"),
        html.P(agg["note"], className="small text-muted"),
        dcc.Graph(figure=D.binned_figure(agg), config={"displaylogo": False}),
        dbc.Row([dbc.Col([html.H4("Residual quantiles (exact)", className="h6"),
                          _table(D.quantile_rows(agg))], md=4),
                 dbc.Col([html.H4("Binned means (exact)", className="h6"), _table(D.bin_rows(agg))], md=8)]),
        html.Pre(payload["summary"], className="small bg-light p-2"),
    ]


def _render_volatility(payload: Mapping) -> list:
    res = payload["vol"]
    status = "converged" if res["converged"] else "NOT CONVERGED"
    data = res.get("data") or {}
    return [
        dbc.Alert(f"{res['label']}: {status} — {res['report'].get('message', '')}",
                  color="success" if res["converged"] else "warning", className="py-2"),
        html.P(f"{res['n_obs']:,} returns of {payload['bars']['n']:,} {data.get('frequency', '')} bars "
               f"aggregated out of core from {payload['dataset']} ({data.get('start', '')} to "
               f"{data.get('end', '')})", className="small"),
        _table(D.param_rows(res)),
        html.Ul([html.Li(w, className="small text-warning-emphasis") for w in res["warnings"]])
        if res["warnings"] else html.Div(),
        dcc.Graph(figure=D.bars_figure(payload["bars"], data.get("symbol")), config={"displaylogo": False}),
        html.Pre(payload["summary"], className="small bg-light p-2"),
    ]


def layout(app) -> html.Div:
    roots = data_roots()
    options = [{"label": d["label"], "value": d["key"]} for d in list_datasets(roots)]
    cluster = scheduler_address()
    where = [{"label": "this server", "value": "local"},
             {"label": f"Dask cluster ({cluster})" if cluster else "Dask cluster (none configured)",
              "value": "cluster", "disabled": cluster is None}]
    models = [{"label": m, "value": m} for m in models_of_kind("impact")]
    pick = dbc.Card(dbc.CardBody([
        html.Label("Dataset on the server", htmlFor=DATASET, className="form-label"),
        dbc.InputGroup([dcc.Dropdown(id=DATASET, options=options, placeholder=(
            "choose a dataset" if options else f"no datasets: set {ENV_ROOTS} on the server"),
            className="flex-grow-1"),
            dbc.Button("Refresh", id=REFRESH, color="secondary", outline=True, size="sm")]),
        html.Div(f"Directories made by `execal ingest`, found under the server's {ENV_ROOTS}.",
                 className="form-text"),
        html.Div(id=SUMMARY, className="mt-3"),
        dcc.Graph(id=COVERAGE, config={"displaylogo": False}, style={"height": "260px"}),
    ]), className="mb-3")
    controls = dbc.Card(dbc.CardBody([
        html.Label("Symbols", htmlFor=SYMBOLS), dcc.Dropdown(id=SYMBOLS, multi=True, placeholder="all"),
        html.Label("Venues", htmlFor=VENUES, className="mt-2"),
        dcc.Dropdown(id=VENUES, multi=True, placeholder="all"),
        dbc.Row([dbc.Col([html.Label("From (UTC)", htmlFor=START), dbc.Input(id=START, placeholder="YYYY-MM-DD")]),
                 dbc.Col([html.Label("Before (UTC)", htmlFor=END), dbc.Input(id=END, placeholder="YYYY-MM-DD")])],
                className="mt-2"),
        html.Label("Model", htmlFor=MODEL, className="mt-2"),
        dcc.Dropdown(id=MODEL, options=models, value="power_law", clearable=False),
        html.Label("Bar length (volatility models)", htmlFor=BAR, className="mt-2"),
        dbc.Input(id=BAR, value="1min", disabled=True, placeholder="1min, 5min, 1h, 1D"),
        html.Label("Loss", htmlFor=LOSS, className="mt-2"),
        dcc.Dropdown(id=LOSS, options=[{"label": n, "value": n} for n in LOSSES], value="soft_l1",
                     clearable=False),
        html.Label("Bootstrap by day (resamples, 0 = none)", htmlFor=BOOT_N, className="mt-2"),
        dbc.Input(id=BOOT_N, type="number", min=0, max=1000, step=1, value=0),
        html.Label("Run on", className="mt-2"), dbc.RadioItems(id=WHERE, options=where, value="local"),
        html.Div([dbc.Button("Calibrate", id=RUN, color="primary", className="me-2"),
                  dbc.Button("Cancel", id=CANCEL, color="secondary", outline=True, disabled=True)],
                 className="mt-3"),
        html.Div(dbc.Progress(id=PROGRESS, value=0, label="", striped=True, animated=True, className="mt-2"),
                 id=PROGRESS_WRAP, hidden=True),
        dbc.Alert(id=ALERT, is_open=False, color="danger", dismissable=True, className="mt-2"),
    ]), className="mb-3")
    return html.Div([dcc.Store(id=JOB, storage_type="memory"), dcc.Store(id=RESULT_KEY, storage_type="memory"),
                     dbc.Row([dbc.Col([pick, controls], lg=5), dbc.Col(html.Div(id=RESULT), lg=7)])],
                    className="execal-datasets-panel")


def register_callbacks(app) -> None:
    cache = store_mod.get_store(app).cache

    @app.callback(Output(DATASET, "options"), Input(REFRESH, "n_clicks"), prevent_initial_call=True)
    def _refresh(_):
        return [{"label": d["label"], "value": d["key"]} for d in list_datasets(data_roots())]

    @app.callback(
        Output(SUMMARY, "children"), Output(COVERAGE, "figure"), Output(SYMBOLS, "options"),
        Output(VENUES, "options"), Output(START, "placeholder"), Output(END, "placeholder"),
        Output(MODEL, "options"), Output(MODEL, "value"), Output(LOSS, "disabled"), Output(BOOT_N, "disabled"),
        Output(BAR, "disabled"),
        Input(DATASET, "value"), Input(SYMBOLS, "value"), Input(VENUES, "value"),
        Input(START, "value"), Input(END, "value"),
    )
    def _summary(key, symbols, venues, start, end):
        if not key:
            raise PreventUpdate
        try:
            out = dataset_summary(key, _filters(symbols, venues, start, end))
        except DataError as err:
            return (html.P(str(err), className="text-danger"), no_update, [], [], "", "") + (no_update,) * 5
        choices = D.filter_choices(out["all"] or out["summary"])
        models = no_update, no_update, no_update, no_update, no_update
        if ctx.triggered_id == DATASET:       # a new dataset: the models its kind can calibrate
            vol = out["summary"]["kind"] in ("trades", "bars")
            options = model_options(out["summary"]["kind"])
            models = options, options[0]["value"] if options else None, vol, vol, not vol
        return (_facts(D.summary_rows(out["summary"])), D.coverage_figure(out["coverage"]),
                choices["symbols"], choices["venues"], choices["start"] or "YYYY-MM-DD",
                choices["end"] or "YYYY-MM-DD") + models

    @app.callback(
        Output(JOB, "data"), Output(ALERT, "children"), Output(ALERT, "is_open"),
        Output(RESULT_KEY, "data", allow_duplicate=True),
        Input(RUN, "n_clicks"),
        State(DATASET, "value"), State(SYMBOLS, "value"), State(VENUES, "value"), State(START, "value"),
        State(END, "value"), State(MODEL, "value"), State(LOSS, "value"), State(BOOT_N, "value"),
        State(WHERE, "value"), State(BAR, "value"),
        prevent_initial_call=True,
    )
    def _plan(clicks, key, symbols, venues, start, end, model, loss, boot, where, bar):
        if not clicks:
            raise PreventUpdate
        try:
            job = job_for(key, _filters(symbols, venues, start, end), model, loss, boot, where, bar=bar)
        except (DataError, CalibrationError, ValueError) as err:
            return no_update, f"Cannot calibrate: {err}", True, no_update
        done = result_key(job)
        if cache.get(done) is not None:      # the same job ran before: shown at once
            return no_update, "", False, done
        owner = shell.request_owner()
        # the job stays on the server; the browser gets a ticket only this session can redeem
        return shell.submit_job(cache, owner, {**job, "session": owner}), "", False, no_update

    app.callback(
        Output(RESULT_KEY, "data"), Output(ALERT, "children", allow_duplicate=True),
        Output(ALERT, "is_open", allow_duplicate=True),
        Input(JOB, "data"),
        background=True,
        running=[(Output(RUN, "disabled"), True, False), (Output(CANCEL, "disabled"), False, True),
                 (Output(PROGRESS_WRAP, "hidden"), False, True)],
        cancel=[Input(CANCEL, "n_clicks")],
        progress=[Output(PROGRESS, "value"), Output(PROGRESS, "label")],
        progress_default=[0, ""],
        interval=shell.JOB_POLL_MS,
        prevent_initial_call=True,
    )(dataset_job)

    @app.callback(Output(RESULT, "children"), Input(RESULT_KEY, "data"))
    def _render(key):
        return render_result(cache, key)
