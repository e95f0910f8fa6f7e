"""The Calibrate panel: pick a model and how to fit it, run the fit in the background, see what the optimizer said.

Every picker, the parameter table and the numeric settings are generated from `execal.models.core.registry` (models of
kind "impact", OPTIMIZERS with their options, LOSSES, WEIGHTS, PARTICIPATION, SETTINGS): adding a model or an
optimizer there adds it here. Pressing Calibrate first looks the run up in the `ResultStore` by (dataset key,
filters, settings): a repeat is answered at once, without starting a job. Otherwise a Dash background callback
(the app's DiskcacheManager on the private cache) fits in a separate process and reports honest stages
(loading data, features, the pooled fit and each segment's, bootstrap resamples, metrics) to a progress bar;
Cancel kills that process and leaves the previous result in place.

The result (a `CalibrationResult`, or a `SegmentedResult` when segmenting) is stored with meta {dataset,
filters, settings, provenance, ...}, becomes the session's active result (`results.ACTIVE_RESULT_ID`, a key)
and its optimizer status is shown first: converged or NOT, the message, iterations, evaluations, bounds hit.
After a page reload the session's last result comes back from `ResultStore.active(session_id)`, and the
controls show the settings that produced it.

`build_settings`, `controls_from_settings`, `plan_calibration`, `run_calibration` and `render_result` are the
callbacks' bodies as plain functions (tests call them directly); `register_callbacks` only wires them.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
import warnings
from typing import Any, Callable, Mapping

import dash_bootstrap_components as dbc
import numpy as np
from dash import ALL, Input, Output, State, dcc, html, no_update
from dash.exceptions import PreventUpdate

from execal.components import impact_figures as fig_tables
from execal.components import results as results_mod
from execal.components import shell
from execal.components import store as store_mod
from execal.components.results import BOOTSTRAP_BY, SEGMENT_BY
from execal.components.shell import dom_id
from execal.components.report import optimizer_status
from execal.models.impact.config import make_provenance
from execal.models.impact.fit import CalibrationError, Calibrator, CalibrationWarning
from execal.models.core.registry import LOSSES, OPTIMIZERS, SETTINGS, WEIGHTS, describe, get_model, models_of_kind
from execal.models.impact.result import BootstrapResult
from execal.models.impact.timevarying import TIME_VARYING_STRATEGIES, TimeVaryingCalibrator
from execal.models.data.schema import DataError

log = logging.getLogger(__name__)

PANEL = "calibrate"
TITLE = "Calibrate"
_id = shell.ids_for(PANEL)

# the settings form (each picker with its help line)
MODEL, MODEL_INFO, PARAMS = _id("model", "model-info", "params")
OPTIMIZER, OPTIMIZER_INFO, OPTIONS = _id("optimizer", "optimizer-info", "options")
LOSS, LOSS_INFO, WEIGHTS_PICK, WEIGHTS_INFO, WEIGHT_COLUMN = _id("loss", "loss-info", "weights", "weights-info",
                                                                 "weight-column")
PARTICIPATION_PICK, SEGMENTS = _id("participation", "segments")
BOOT_N, BOOT_BY = _id("bootstrap-n", "bootstrap-by")
# running: Run / Cancel / progress / note / alert / the job store, then what the fit said
JOB_IDS = shell.JobIds.of(_id)
RUN, CANCEL, PROGRESS, PROGRESS_WRAP, NOTE, ALERT, JOB = JOB_IDS
STATUS, RESULT = _id("status", "result")
# pattern-matching id types: one component per registry entry
SETTING, OPTION = _id("setting", "option")
PARAM_KINDS = PARAM_MODE, PARAM_VALUE, PARAM_LOWER, PARAM_UPPER = _id("param-mode", "param-value", "param-lower",
                                                                      "param-upper")


def setting_id(name: str) -> dict:
    return {"type": SETTING, "name": name}


def option_id(name: str) -> dict:
    return {"type": OPTION, "name": name}


def param_id(kind: str, name: str) -> dict:
    return {"type": kind, "param": name}


MAX_BOOTSTRAP = 5000
# bootstrap resamples per block: each block is one Calibrator.bootstrap call, one progress step
BOOTSTRAP_BLOCK = 25
# where the settings controls sit in the form (a registry setting not named here lands under "Search")
LOSS_SETTINGS = ("f_scale",)
SPLIT_SETTINGS = ("test_fraction", "walk_forward")
DEFAULT_PARAMS = Calibrator().get_params()
EMPTY_MESSAGE = "No calibration yet: choose a model and its settings on the left, then press Calibrate."
FILLS_ONLY = ("Calibration needs fills (parent orders with arrival and execution prices): the active "
              "dataset is {kind} ({file}). Load a fills file in the Data panel.")


def impact_models() -> dict:
    return models_of_kind("impact")


def _is_integer(p) -> bool:
    """A registry setting counted in whole units (folds, starts, seed, generations)."""
    return all(isinstance(v, int) and not isinstance(v, bool) for v in (p.default, p.lower, p.upper))


# --- settings <-> controls ----------------------------------------------------------------------


def _number(value, what: str, *, integer: bool = False, required: bool = False,
            lower: float | None = None, upper: float | None = None) -> float | int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise CalibrationError(f"{what}: enter a number")
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CalibrationError(f"{what}: {value!r} is not a number") from None
    if not math.isfinite(v):
        raise CalibrationError(f"{what}: {value!r} is not a finite number")
    if integer:
        if v != int(v):
            raise CalibrationError(f"{what}: {value!r} is not a whole number")
        v = int(v)
    if lower is not None and v < lower or upper is not None and v > upper:
        raise CalibrationError(f"{what} must be between {lower:g} and {upper:g}, got {value!r}")
    return v


def build_settings(*, model: str, optimizer: str, loss: str, weights: str, weight_column: str | None = None,
                   participation: str = "adv", settings: Mapping[str, Any] | None = None,
                   options: Mapping[str, Any] | None = None,
                   params: Mapping[str, Mapping[str, Any]] | None = None,
                   segments=None, bootstrap_n=0, bootstrap_by: str | None = "day") -> dict:
    """The run settings of the form's values, JSON-ready and normalised (equal runs give equal dicts):
    {"calibrator": Calibrator.get_params(), "segments": [...], "bootstrap": {"n", "by"} | None}.

    `params` is {name: {"mode": "fit" | "fix", "value", "lower", "upper"}} (the parameter table);
    empty bounds mean unbounded. Raises CalibrationError naming the control that is wrong.
    """
    settings, options, params = dict(settings or {}), dict(options or {}), dict(params or {})
    if model not in impact_models():
        raise CalibrationError(f"unknown model {model!r} (available: {', '.join(impact_models())})")
    spec = OPTIMIZERS.get(optimizer)
    if spec is None:
        raise CalibrationError(f"unknown optimizer {optimizer!r} (available: {', '.join(OPTIMIZERS)})")
    kw: dict[str, Any] = {}
    for p in SETTINGS:
        v = _number(settings.get(p.name), p.name, integer=_is_integer(p), lower=p.lower, upper=p.upper)
        kw[p.name] = p.default if v is None else v
    opts: dict[str, Any] = {}
    for p in spec.params:
        v = _number(options.get(p.name), f"{spec.label}: {p.name}", integer=_is_integer(p),
                    lower=p.lower, upper=p.upper)
        if v is not None and v != p.default:   # defaults stay implicit, as in the CLI
            opts[p.name] = v
    fixed: dict[str, float] = {}
    bounds: dict[str, tuple] = {}
    free: list[str] = []
    for p in get_model(model).params:
        row = params.get(p.name) or {}
        mode = row.get("mode") or ("fix" if p.fixed else "fit")
        if mode not in ("fit", "fix"):
            raise CalibrationError(f"parameter {p.name}: choose fit or fix, not {mode!r}")
        if mode == "fix":
            value = _number(row.get("value"), f"value of {p.name}", required=True)
            if not (p.fixed and value == p.default):   # h fixed at 1 is the model's own default
                fixed[p.name] = value
            continue
        if p.fixed:
            free.append(p.name)
        lo = _number(row.get("lower"), f"lower bound of {p.name}")
        hi = _number(row.get("upper"), f"upper bound of {p.name}")
        if (lo, hi) != (p.lower, p.upper):
            bounds[p.name] = (lo, hi)
    calibrator = Calibrator(model=model, optimizer=optimizer, loss=loss, weights=weights,
                            weight_column=weight_column if weights == "column" else None,
                            fixed=fixed, bounds=bounds, participation=participation, free=tuple(free),
                            options=opts, **kw)
    chosen = list(segments or [])
    if spec.strategy in TIME_VARYING_STRATEGIES and chosen:
        raise CalibrationError(f"{spec.label} learns one path over time: choose no segments "
                               "(or a batch optimizer)")
    unknown = [s for s in chosen if s not in SEGMENT_BY]
    if unknown:
        raise CalibrationError(f"segments by {', '.join(map(str, unknown))}: choose from {', '.join(SEGMENT_BY)}")
    n_boot = _number(bootstrap_n, "bootstrap resamples", integer=True, lower=0, upper=MAX_BOOTSTRAP) or 0
    if n_boot == 1:
        raise CalibrationError("bootstrap resamples: 0 (off) or at least 2")
    if n_boot and spec.strategy in TIME_VARYING_STRATEGIES:
        raise CalibrationError(f"{spec.label} learns a path: bootstrap a batch fit (bootstrap resamples: 0)")
    if n_boot and bootstrap_by not in BOOTSTRAP_BY:
        raise CalibrationError(f"bootstrap by {bootstrap_by!r}: choose from {', '.join(BOOTSTRAP_BY)}")
    return {"calibrator": calibrator.get_params(), "segments": [s for s in SEGMENT_BY if s in chosen],
            "bootstrap": {"n": int(n_boot), "by": bootstrap_by} if n_boot else None}


def controls_from_settings(run_settings: Mapping | None) -> dict:
    """The form's values for run settings (the inverse of `build_settings`; defaults for None).
    Unknown models fall back to the default model (a config from a newer execal)."""
    run_settings = dict(run_settings or {})
    c = {**DEFAULT_PARAMS, **dict(run_settings.get("calibrator") or {})}
    if c.get("model") not in impact_models():
        c = dict(DEFAULT_PARAMS)
    model = get_model(c["model"])
    fixed, bounds, free = dict(c.get("fixed") or {}), dict(c.get("bounds") or {}), set(c.get("free") or ())
    params = {}
    for p in model.params:
        lo, hi = bounds.get(p.name, (p.lower, p.upper))
        if p.name in fixed:
            mode, value = "fix", float(fixed[p.name])
        elif p.fixed and p.name not in free:
            mode, value = "fix", p.default
        else:
            mode, value = "fit", p.default
        params[p.name] = {"mode": mode, "value": value, "lower": lo, "upper": hi}
    optimizer = c.get("optimizer") if c.get("optimizer") in OPTIMIZERS else DEFAULT_PARAMS["optimizer"]
    options = {p.name: (c.get("options") or {}).get(p.name, p.default) for p in OPTIMIZERS[optimizer].params}
    if "max_nfev" in options:
        options["max_nfev"] = c.get("max_nfev") or options["max_nfev"]
    boot = run_settings.get("bootstrap") or {}
    return {"model": model.name, "optimizer": optimizer, "loss": c.get("loss"), "weights": c.get("weights"),
            "weight_column": c.get("weight_column"), "participation": c.get("participation"),
            "settings": {p.name: c.get(p.name, p.default) for p in SETTINGS}, "options": options,
            "params": params, "segments": list(run_settings.get("segments") or []),
            "bootstrap_n": int(boot.get("n") or 0), "bootstrap_by": boot.get("by") or BOOTSTRAP_BY[0]}


def _by_name(values, ids, key: str) -> dict:
    return {i[key]: v for v, i in zip(values or [], ids or [])}


def params_from_table(modes, values, lowers, uppers, ids) -> dict:
    """{name: {"mode", "value", "lower", "upper"}} from the pattern-matched table columns (same order)."""
    out = {}
    for mode, value, lo, hi, i in zip(modes or [], values or [], lowers or [], uppers or [], ids or []):
        out[i["param"]] = {"mode": mode, "value": value, "lower": lo, "upper": hi}
    return out


# --- running ------------------------------------------------------------------------------------


def _no_progress(percent: float, label: str) -> None:
    return None


def plan_calibration(st: store_mod.SessionStore, results: results_mod.ResultStore, *, session_id: Any,
                     active_dataset: Any, filters: Mapping | None, run_settings: dict) -> dict:
    """What pressing Calibrate does, decided before any work: {"active": {"key"} | None (a stored
    result for exactly this run: shown at once), "job": dict | None (the background run to start),
    "note": str}. Raises DataError for a session or dataset that cannot be calibrated."""
    if not store_mod.is_session_id(session_id):
        raise DataError("your session is not ready yet; reload the page")
    dataset_key = shell.key_of(active_dataset)
    if not dataset_key or not st.has_dataset(dataset_key) or dataset_key not in st.session_keys(session_id):
        # only the caller's own dataset: a key from elsewhere is no dataset here
        raise DataError("no dataset loaded (or it left the server's cache): load fills in the Data panel")
    dataset = st.get_dataset(dataset_key)
    if dataset is None:
        raise DataError("the dataset left the server's cache: load it again in the Data panel")
    if dataset.kind != "fills":
        raise DataError(FILLS_ONLY.format(kind=dataset.kind, file=dataset.source))
    filters = results_mod.clean_filters(filters)
    key = results_mod.result_key(dataset_key, filters, run_settings)
    if key in results.cache:
        results.set_active(session_id, key)
        return {"active": {"key": key}, "job": None,
                "note": "Already calibrated with this data, these filters and settings: shown from the cache."}
    job = {"key": key, "dataset": dataset_key, "filters": filters, "settings": run_settings,
           "session": session_id, "requested_at": time.time()}
    return {"active": None, "job": job, "note": ""}


class ReportingCalibrator(Calibrator):
    """A Calibrator that says when each fit starts (pooled first, then one per segment, the order of
    `fit_segments`), so the progress bar counts real work. Numerics are the base class's."""
    on_fit: Callable[[int], None] | None = None
    fits_started = 0

    def fit(self, fills, cost_bps=None):
        if self.on_fit is not None:
            self.on_fit(self.fits_started)
        self.fits_started += 1
        return super().fit(fills, cost_bps)


def segment_count(features, by) -> int:
    """How many segments `fit_segments(features, by)` fits (distinct combinations, missing values included)."""
    combined = np.zeros(features.n, dtype=np.int64)
    for b in by:
        grouping = features.group(b)
        if grouping is None:
            return 0     # fit_segments raises the DataError naming the column
        codes, labels = grouping
        combined = combined * (len(labels) + 1) + (codes + 1)
    return int(np.unique(combined).size)


def bootstrap_block_sizes(n: int, block: int = BOOTSTRAP_BLOCK) -> list[int]:
    """Resamples per block: ⌈n/block⌉ near-equal blocks (each ≥ 2, what Calibrator.bootstrap needs)."""
    if n < 2:
        return []
    k = max(1, min(math.ceil(n / block), n // 2))
    return [len(a) for a in np.array_split(np.arange(n), k)]


def bootstrap_in_blocks(calibrator: Calibrator, result, *, n: int, by: str,
                        progress: Callable[[int], None] = lambda done: None):
    """`Calibrator.bootstrap` in blocks of ≤ BOOTSTRAP_BLOCK resamples, so progress can count them.

    Block seeds are spawned from the calibrator's seed (numpy SeedSequence): the same n and seed give the
    same intervals in the app every time, though not the same draws as the CLI's single stream
    (`execal calibrate --bootstrap n`): same distribution, different resamples.
    """
    sizes = bootstrap_block_sizes(n)
    seeds = np.random.SeedSequence(calibrator.seed).generate_state(len(sizes))
    parts, done = [], 0
    for size, seed in zip(sizes, seeds):
        parts.append(calibrator.bootstrap(n=size, by=by, seed=int(seed), result=result).bootstrap)
        done += size
        progress(done)
    samples = np.vstack([p.samples for p in parts])
    samples.flags.writeable = False
    merged = BootstrapResult(by=by, n=n, seed=calibrator.seed, clusters=parts[0].clusters,
                             names=parts[0].names, samples=samples,
                             failures=sum(p.failures for p in parts))
    return result.with_bootstrap(merged)


def run_calibration(st: store_mod.SessionStore, results: results_mod.ResultStore, job: Mapping,
                    progress: Callable[[float, str], None] = _no_progress) -> str:
    """Fit what `job` (from `plan_calibration`) asks, store the result and make it the session's
    active one; returns its key. Raises DataError / CalibrationError with a user-facing message."""
    started = time.perf_counter()
    progress(2, "Loading data")
    dataset = st.get_dataset(job["dataset"])
    if dataset is None:
        raise DataError("the dataset is no longer in the server's cache; load the file again")
    filters = results_mod.clean_filters(job.get("filters"))
    frame = results_mod.apply_filters(dataset.frame, filters)
    if len(frame) == 0:
        raise CalibrationError(f"no rows of {dataset.source} pass the filters; widen them in the Data panel")
    run_settings = job["settings"]
    calibrator = ReportingCalibrator(**run_settings["calibrator"])
    segments = tuple(run_settings.get("segments") or ())
    boot = run_settings.get("bootstrap") or None
    fit_end = 70.0 if boot else 90.0
    progress(6, f"Computing features of {len(frame):,} fills")
    features = calibrator.features(dataclasses.replace(dataset, frame=frame))
    total = 1 + (segment_count(features, segments) if segments else 0)

    def on_fit(i: int) -> None:
        label = "Fitting" if not segments else (
            f"Fitting pooled (1 of {total} fits)" if i == 0 else f"Fitting segment {i} of {total - 1}")
        progress(10 + (fit_end - 10) * i / total, label)

    calibrator.on_fit = on_fit
    with warnings.catch_warnings():
        # the status travels in the result (report.warnings, shown in the panel), not as log noise
        warnings.simplefilter("ignore", CalibrationWarning)
        if OPTIMIZERS[calibrator.optimizer].strategy in TIME_VARYING_STRATEGIES:
            # a path (Kalman / SGD): the panels show its final state, a CalibrationResult
            on_fit(0)
            result = TimeVaryingCalibrator.from_calibrator(calibrator).fit(features).result
        else:
            result = calibrator.fit_segments(features, by=segments) if segments else calibrator.fit(features)
        if boot:
            pooled = result.pooled if segments else result
            n = int(boot["n"])
            progress(fit_end, f"Bootstrap 0/{n}")
            pooled = bootstrap_in_blocks(
                calibrator, pooled, n=n, by=boot["by"],
                progress=lambda done: progress(fit_end + (92 - fit_end) * done / n, f"Bootstrap {done}/{n}"))
            result = dataclasses.replace(result, pooled=pooled) if segments else pooled
    progress(93, "Computing metrics")
    pooled = result.pooled if segments else result
    _ = pooled.metrics   # breakdowns are computed once here and stored with the result
    for seg in getattr(result, "segments", ()):
        _ = seg.result.in_sample
    progress(97, "Saving the result")
    meta = {"origin": "fit", "dataset": job["dataset"], "filters": filters, "settings": run_settings,
            "source": dataset.source, "rows": int(len(frame)),
            "provenance": make_provenance(dataset, filters=filters, frame=frame),
            "elapsed_s": round(time.perf_counter() - started, 3),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    results.put(job["key"], result, meta=meta)
    results.view(job["key"], RESULT_VIEW, result_view)   # while the result is in memory: pages need only this
    results.set_active(job["session"], job["key"])
    return job["key"]


def run_job(st: store_mod.SessionStore, results: results_mod.ResultStore, job: Any,
            progress: Callable[[float, str], None] = _no_progress) -> dict:
    """The background callback's body: {"active", "alert": (message, open), "note"}; never raises."""
    out: dict[str, Any] = {"active": no_update, "alert": ("", False), "note": ""}
    if not isinstance(job, dict) or not results_mod.is_result_key(job.get("key")):
        raise PreventUpdate
    try:
        key = run_calibration(st, results, job, progress)
    except (DataError, CalibrationError) as err:
        out["alert"] = (f"Calibration failed: {err}", True)
        return out
    except Exception as err:   # never a traceback in the browser: log it, say one line
        log.exception("calibration %s failed", job.get("key"))
        out["alert"] = (f"Calibration failed unexpectedly ({type(err).__name__}); the details are in the "
                        "server log.", True)
        return out
    out["active"] = {"key": key}
    return out


@shell.background_job
def calibration_job(set_progress, ticket):
    """The background callback: runs in a job process (components/jobs.py), on that process's stores.
    What it fits is the job `_plan` built and validated on the server for this owner, never the
    browser's payload: anything else (a forged job, another session's ticket) runs nothing."""
    st, results = shell.job_stores()
    job = shell.claim_job(results.cache, ticket)
    if job is None or not results_mod.is_result_key(job.get("key")):
        raise PreventUpdate
    progress = shell.JobProgress(set_progress)
    out = run_job(st, results, job, progress)
    note = "" if out["alert"][1] else f"Calibrated in {progress.seconds:.1f} s."
    return out["active"], out["alert"][0], out["alert"][1], note


def restored_result(results: results_mod.ResultStore, session_id: Any) -> dict | None:
    """ACTIVE_RESULT_ID after a page load: the session's last result, if the cache still has it."""
    key = results.active(session_id) if store_mod.is_session_id(session_id) else None
    return {"key": key} if results_mod.is_result_key(key) and key in results.cache else None


# --- the result, shown --------------------------------------------------------------------------


def _fmt(value, digits: int = 6) -> str:
    return fig_tables.format_number(value, digits)


def _table(rows: list[dict], *, table_id: str | None = None, row_key: str | None = None) -> html.Div:
    return shell.rows_table(rows, table_id=table_id, row_key=row_key, skip=(), class_name="execal-result-table")


def _facts(items: list[tuple[str, Any]]) -> html.Dl:
    children = []
    for label, value in items:
        children += [html.Dt(label, className="col-sm-4"),
                     html.Dd(value, className="col-sm-8 mb-1", **{"data-field": label.lower().replace(" ", "-")})]
    return html.Dl(children, className="row mb-0 small")


def status_component(result, meta: Mapping) -> html.Div:
    return status_of(optimizer_status(result), meta)


def status_of(s: Mapping, meta: Mapping) -> html.Div:
    """The status block from `optimizer_status(result)` (or its JSON copy in the result's view)."""
    imported = meta.get("origin") == "import"
    badge = dbc.Badge(s["badge"], color=s["color"], className="fs-6 me-2", id=_id("status-badge"))
    headline = [badge, html.Span(s["message"], className="execal-status-message")]
    facts = [("Optimizer", f"{s['method']} · loss {s['loss']} (f_scale {s['f_scale']:g}) · weights {s['weights']}"),
             ("Status code", "–" if s["status"] is None else str(s["status"])),
             ("Iterations", _fmt(s["iterations"])),
             ("Evaluations", f"{_fmt(s['nfev'])} function" + (f", {_fmt(s['njev'])} Jacobian" if s["njev"] else "")),
             ("Final cost", _fmt(s["cost"])),
             ("Active bounds", "; ".join(s["active_bounds"]) or "none"),
             ("Rows", f"{s['n_train']:,} in-sample, {s['n_test']:,} held out"
              + (f", {s['segments']} segments" if s["segments"] else ""))]
    if meta.get("elapsed_s") is not None:
        facts.append(("Computed in", f"{meta['elapsed_s']:.2f} s at {meta.get('created_at', '?')}"))
    children: list = [html.Div(headline, className="d-flex align-items-center flex-wrap mb-2")]
    if imported:
        original = meta.get("config_report") or {}
        children.append(dbc.Alert(
            f"Imported from {meta.get('config_file', 'a config')}: the config's parameters on the active data "
            f"(no optimisation was run). The original fit: {original.get('method', '?')}, "
            + ("converged" if original.get("converged") else "NOT converged") +
            f" ({original.get('message', 'no message')}).", color="info", className="py-2 small mb-2"))
    children.append(_facts(facts))
    for text in s["segments_not_converged"]:
        children.append(dbc.Alert(f"Segment NOT converged: {text}", color="danger", className="py-1 px-2 mb-1 small"))
    for w in s["warnings"]:
        children.append(dbc.Alert(w, color="warning", className="py-1 px-2 mb-1 small"))
    return html.Div(children, **{"data-converged": str(s["converged"]).lower()})


def parameter_table_rows(result, meta: Mapping) -> list[dict]:
    """The parameter table: the diagnostics' rows, with the original fit's errors for an imported config."""
    rows = fig_tables.parameter_rows(result)
    model_block = meta.get("config_model") if meta.get("origin") == "import" else None
    if model_block:
        se, ci = model_block.get("std_errors") or {}, model_block.get("conf_int") or {}
        for row in rows:
            name = row["parameter"]
            if se.get(name) is not None:
                row["std err"] = _fmt(se[name], 4) + " (config)"
            interval = ci.get(name)
            key = next((k for k in row if k.endswith("CI") and not k.startswith("bootstrap")), None)
            if key and interval and None not in interval:
                row[key] = f"[{_fmt(interval[0], 4)}, {_fmt(interval[1], 4)}] (config)"
    return rows


RESULT_VIEW = "calibrate"


def result_view(result, meta: Mapping) -> dict:
    """What this panel shows of a result, JSON-ready (kept beside the result: see ResultStore.view)."""
    segmented = hasattr(result, "segments")
    return {"status": optimizer_status(result), "params": parameter_table_rows(result, meta),
            "metrics": fig_tables.metrics_rows(fig_tables.result_metric_columns(result)),
            "segmented": segmented,
            "segments": fig_tables.segment_rows(result) if segmented else [],
            "segment_test": fig_tables.segment_test_rows(result.test or {}) if segmented else [],
            "fitted": dict(getattr(result, "pooled", result).params)}


def render_result(results: results_mod.ResultStore, active_result: Any, active_dataset: Any = None) -> dict:
    """{"status": component, "body": component} for the active result (designed empty states)."""
    key = shell.key_of(active_result)
    if not key:
        return {"status": shell.empty_text(EMPTY_MESSAGE), "body": []}
    view = results.view(key, RESULT_VIEW, result_view)
    if view is None:
        return {"status": shell.empty_text("This result is no longer in the server's cache; press Calibrate to run it "
                                           "again."), "body": []}
    meta = results.meta(key)
    status = [status_of(view["status"], meta)]
    dataset_key = shell.key_of(active_dataset)
    if dataset_key and meta.get("dataset") and meta["dataset"] != dataset_key:
        status.insert(0, dbc.Alert(
            f"This result was calibrated on {meta.get('source', 'another dataset')}, not on the active dataset. "
            "Press Calibrate to fit the active one.", color="warning", className="py-2 small mb-2"))
    filters = meta.get("filters") or {}
    where = f"{meta.get('source', '?')}, {meta.get('rows', 0):,} rows" + (
        f" after filters {json.dumps(filters, ensure_ascii=False)}" if filters else ", no filters")
    status.append(html.P(f"Data: {where}.", className="small text-muted mb-0 mt-2"))
    body = [html.H3("Parameters", className="h6"),
            _table(view["params"], table_id=_id("param-results"), row_key="parameter"),
            html.H3("Fit quality", className="h6 mt-3"),
            _table(view["metrics"], table_id=_id("metrics"))]
    if view["segmented"]:
        body += [html.H3("Segments", className="h6 mt-3"),
                 _table(view["segments"], table_id=_id("segments-table"), row_key="segment"),
                 _table(view["segment_test"])]
    return {"status": html.Div(status), "body": html.Div(body)}


# --- layout -------------------------------------------------------------------------------------


_field = shell.field


def _number_input(component_id, value, p, *, size: str = "sm") -> dbc.Input:
    step = 1 if _is_integer(p) else "any"
    return dbc.Input(id=component_id, type="number", value=value, min=p.lower, max=p.upper, step=step,
                     size=size, debounce=True)


def setting_field(p, value) -> html.Div:
    unit = f" ({p.unit})" if p.unit else ""
    return _field(f"{p.name}{unit}", _number_input(setting_id(p.name), value, p), setting_id(p.name), p.description)


def options_component(optimizer: str, values: Mapping[str, Any] | None = None) -> list:
    """One number box per option of the optimizer (from the registry)."""
    spec = OPTIMIZERS[optimizer]
    values = dict(values or {})
    if not spec.params:
        return [html.P("This optimizer has no options.", className="small text-muted")]
    return [_field(f"{p.name}" + (f" ({p.unit})" if p.unit else ""),
                   _number_input(option_id(p.name), values.get(p.name, p.default), p), option_id(p.name),
                   p.description) for p in spec.params]


def model_info(model: str) -> list:
    d = describe()["models"][model]
    return [html.Code(d["formula"], className="d-block small mb-1"),
            html.Div(d.get("reference", ""), className="form-text mt-0")]


def param_table(model: str, params: Mapping[str, Mapping] | None = None,
                fitted: Mapping[str, float] | None = None) -> html.Div:
    """The parameter table: fit or fix each parameter, its value when fixed, its bounds when fitted,
    and the active result's value (when it is this model's)."""
    spec = get_model(model)
    params = dict(params or controls_from_settings({"calibrator": {**DEFAULT_PARAMS, "model": model,
                                                                   "fixed": {}, "bounds": {}, "free": []}})["params"])
    fitted = dict(fitted or {})
    head = html.Thead(html.Tr([html.Th(c, scope="col") for c in
                               ("Parameter", "Fit or fix", "Value if fixed", "Lower bound", "Upper bound",
                                "Active result")]))
    rows = []
    for p in spec.params:
        row = params.get(p.name) or {}

        def cell_input(kind, value, placeholder, label):
            cid = param_id(kind, p.name)
            return html.Td([html.Label(label, htmlFor=dom_id(cid), className="visually-hidden"),
                            dbc.Input(id=cid, type="number", value=value, step="any", size="sm",
                                      debounce=True, placeholder=placeholder)])
        mode_id = param_id(PARAM_MODE, p.name)
        rows.append(html.Tr([
            html.Th([html.Span(p.name, className="fw-semibold"),
                     html.Small(f" ({p.unit})" if p.unit else "", className="text-muted"),
                     html.Div(p.description, className="form-text mt-0 fw-normal")], scope="row",
                    style={"maxWidth": "22rem"}),
            html.Td([html.Label(f"{p.name}: fit or fix", htmlFor=dom_id(mode_id), className="visually-hidden"),
                     dbc.Select(id=mode_id, value=row.get("mode", "fix" if p.fixed else "fit"), size="sm",
                                style={"minWidth": "5.5rem"},
                                options=[{"label": "fit", "value": "fit"}, {"label": "fix", "value": "fix"}])]),
            cell_input(PARAM_VALUE, row.get("value", p.default), f"{p.default:g}", f"{p.name}: value if fixed"),
            cell_input(PARAM_LOWER, _blank_inf(row.get("lower", p.lower)), "−∞", f"{p.name}: lower bound"),
            cell_input(PARAM_UPPER, _blank_inf(row.get("upper", p.upper)), "+∞", f"{p.name}: upper bound"),
            html.Td(_fmt(fitted.get(p.name)) if p.name in fitted else "–", **{"data-field": "fitted"}),
        ], **{"data-param": p.name}))
    return html.Div([dbc.Table([head, html.Tbody(rows)], size="sm", responsive=True, className="mb-1 execal-param-table"),
                     html.Div("Fixed parameters keep their value; fitted ones stay inside their bounds "
                              "(leave a bound empty for none).", className="form-text")])


def _blank_inf(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def _fitted_params(results: results_mod.ResultStore, active_result: Any, model: str) -> tuple[dict, dict | None]:
    """(fitted values, run settings) of the active result when it is of `model`, else ({}, None)."""
    key = shell.key_of(active_result)
    if not key:
        return {}, None
    meta = results.meta(key)
    settings = meta.get("settings") or {}
    if (settings.get("calibrator") or {}).get("model") != model:
        return {}, None
    view = results.view(key, RESULT_VIEW, result_view)
    if view is None:
        return {}, settings
    return dict(view["fitted"]), settings


def layout(app) -> html.Div:
    reg = describe()
    c = controls_from_settings(None)
    choice = lambda d: [{"label": v["label"], "value": k} for k, v in d.items()]  # noqa: E731
    groups: dict[str, list] = {"loss": [], "split": [], "search": []}
    for p in SETTINGS:
        group = "loss" if p.name in LOSS_SETTINGS else "split" if p.name in SPLIT_SETTINGS else "search"
        groups[group].append(setting_field(p, c["settings"][p.name]))

    section = shell.section
    model_section = section("Model", [
        _field("Model", dcc.Dropdown(id=MODEL, options=[{"label": f"{m.label} ({name})", "value": name}
                                                         for name, m in impact_models().items()],
                                     value=c["model"], clearable=False), MODEL),
        html.Div(model_info(c["model"]), id=MODEL_INFO, className="mb-2"),
    ])
    opt_section = section("Optimizer", [
        _field("Optimizer", dcc.Dropdown(id=OPTIMIZER, options=choice(reg["optimizers"]), value=c["optimizer"],
                                         clearable=False), OPTIMIZER,
               reg["optimizers"][c["optimizer"]]["description"], help_id=OPTIMIZER_INFO),
        html.Div(options_component(c["optimizer"], c["options"]), id=OPTIONS),
        *groups["search"],
    ])
    loss_section = section("Loss and weights", [
        _field("Loss", dcc.Dropdown(id=LOSS, options=[{"label": reg["losses"][n]["label"], "value": n}
                                                       for n in OPTIMIZERS[c["optimizer"]].losses],
                                    value=c["loss"], clearable=False), LOSS,
               reg["losses"][c["loss"]]["formula"], help_id=LOSS_INFO),
        *groups["loss"],
        html.Div(reg["loss_note"], className="form-text mt-n2 mb-3"),
        _field("Weights", dcc.Dropdown(id=WEIGHTS_PICK, options=choice(reg["weights"]), value=c["weights"],
                                       clearable=False), WEIGHTS_PICK,
               reg["weights"][c["weights"]]["description"], help_id=WEIGHTS_INFO),
        _field("Weight column", dcc.Dropdown(id=WEIGHT_COLUMN, options=[], value=c["weight_column"],
                                             placeholder="only for weights 'User column'", disabled=True),
               WEIGHT_COLUMN),
        _field("Participation", dbc.RadioItems(id=PARTICIPATION_PICK, value=c["participation"],
                                               options=[{"label": f"{k}: {v}", "value": k}
                                                        for k, v in reg["participation"].items()]),
               PARTICIPATION_PICK),
    ])
    split_section = section("Segments, train / test, bootstrap", [
        _field("Segment by (one fit per segment, plus the pooled fit)",
               dbc.Checklist(id=SEGMENTS, value=c["segments"], inline=True,
                             options=[{"label": s, "value": s} for s in SEGMENT_BY]), SEGMENTS),
        *groups["split"],
        dbc.Row([
            dbc.Col(_field("Bootstrap resamples", dbc.Input(id=BOOT_N, type="number", min=0, max=MAX_BOOTSTRAP,
                                                            step=1, value=c["bootstrap_n"], size="sm",
                                                            debounce=True), BOOT_N, "0 = off")),
            dbc.Col(_field("Resample whole", dbc.Select(id=BOOT_BY, value=c["bootstrap_by"], size="sm",
                                                        options=[{"label": b, "value": b} for b in BOOTSTRAP_BY]),
                           BOOT_BY)),
        ], className="g-2"),
    ])
    settings_card = shell.card("Settings", [model_section, opt_section, loss_section, split_section],
                               class_name="mb-3 execal-calibrate-settings")
    run_card = shell.job_card(JOB_IDS, "Calibrate")
    params_card = shell.card("Model parameters: fit or fix", html.Div(param_table(c["model"], c["params"]), id=PARAMS))
    status_card = shell.card("Optimizer status", dcc.Loading(html.Div(shell.empty_text(EMPTY_MESSAGE), id=STATUS),
                                                             type="dot"))
    result_card = shell.card("Result", dcc.Loading(html.Div(id=RESULT), type="dot"))
    return dbc.Row([
        dbc.Col(settings_card, md=5, lg=4),
        dbc.Col([run_card, status_card, params_card, result_card], md=7, lg=8),
    ], className="execal-calibrate-panel")


# --- callbacks ----------------------------------------------------------------------------------


def _changed(new, old) -> Any:
    return no_update if new == old else new


def register_callbacks(app) -> None:
    st, results = shell.stores(app)

    @app.callback(
        Output(shell.ACTIVE_RESULT_ID, "data"),
        Input(shell.SESSION_STORE_ID, "modified_timestamp"),
        State(shell.SESSION_STORE_ID, "data"),
    )
    def _restore(ts, session_id):
        if not shell.session_ready(ts, session_id):
            raise PreventUpdate   # the real session id has not been read from localStorage yet
        return restored_result(results, session_id)

    @app.callback(
        Output(results_mod.ACTIVE_RESULT_ID, "data", allow_duplicate=True),
        Output(JOB, "data"),
        Output(ALERT, "children"), Output(ALERT, "is_open"),
        Output(NOTE, "children"),
        Input(RUN, "n_clicks"),
        State(store_mod.SESSION_STORE_ID, "data"), State(store_mod.ACTIVE_DATASET_ID, "data"),
        State(results_mod.FILTERS_ID, "data"),
        State(MODEL, "value"), State(OPTIMIZER, "value"), State(LOSS, "value"), State(WEIGHTS_PICK, "value"),
        State(WEIGHT_COLUMN, "value"), State(PARTICIPATION_PICK, "value"), State(SEGMENTS, "value"),
        State(BOOT_N, "value"), State(BOOT_BY, "value"),
        State({"type": SETTING, "name": ALL}, "value"), State({"type": SETTING, "name": ALL}, "id"),
        State({"type": OPTION, "name": ALL}, "value"), State({"type": OPTION, "name": ALL}, "id"),
        [State({"type": kind, "param": ALL}, "value") for kind in PARAM_KINDS],
        State({"type": PARAM_MODE, "param": ALL}, "id"),
        prevent_initial_call=True,
    )
    def _plan(clicks, session_id, active, filters, model, optimizer, loss, weights, weight_column,
              participation, segments, boot_n, boot_by, setting_values, setting_ids, option_values, option_ids,
              modes, values, lowers, uppers, param_ids):
        if not clicks:
            raise PreventUpdate
        try:
            run_settings = build_settings(
                model=model, optimizer=optimizer, loss=loss, weights=weights, weight_column=weight_column,
                participation=participation, settings=_by_name(setting_values, setting_ids, "name"),
                options=_by_name(option_values, option_ids, "name"),
                params=params_from_table(modes, values, lowers, uppers, param_ids), segments=segments,
                bootstrap_n=boot_n, bootstrap_by=boot_by)
            plan = plan_calibration(st, results, session_id=session_id, active_dataset=active,
                                    filters=filters, run_settings=run_settings)
        except (DataError, CalibrationError) as err:
            return no_update, no_update, f"Cannot calibrate: {err}", True, ""
        if plan["job"] is None:
            return plan["active"], no_update, "", False, plan["note"]
        # the job stays on the server; the browser gets a ticket that only this session can redeem
        return no_update, shell.submit_job(results.cache, session_id, plan["job"]), "", False, \
            "Starting the calibration…"

    app.callback(
        Output(results_mod.ACTIVE_RESULT_ID, "data", allow_duplicate=True),
        Output(ALERT, "children", allow_duplicate=True), Output(ALERT, "is_open", allow_duplicate=True),
        Output(NOTE, "children", allow_duplicate=True),
        Input(JOB, "data"),
        **shell.job_callback_kwargs(JOB_IDS),
    )(calibration_job)

    shell.register_cancel_note(app, JOB_IDS, "Calibration cancelled: the result shown is the previous one.")

    @app.callback(
        Output(STATUS, "children"), Output(RESULT, "children"),
        Input(results_mod.ACTIVE_RESULT_ID, "data"), Input(store_mod.ACTIVE_DATASET_ID, "data"),
    )
    def _render(active_result, active):
        view = render_result(results, active_result, active)
        return view["status"], view["body"]

    static_outputs = [Output(MODEL, "value"), Output(OPTIMIZER, "value"), Output(LOSS, "value"),
                      Output(WEIGHTS_PICK, "value"), Output(WEIGHT_COLUMN, "value"),
                      Output(PARTICIPATION_PICK, "value"), Output(SEGMENTS, "value"), Output(BOOT_N, "value"),
                      Output(BOOT_BY, "value"), Output({"type": SETTING, "name": ALL}, "value")]

    @app.callback(
        static_outputs,
        Input(results_mod.ACTIVE_RESULT_ID, "data"),
        [State(o.component_id, o.component_property) for o in static_outputs],
        State({"type": SETTING, "name": ALL}, "id"),
        prevent_initial_call=True,
    )
    def _sync_controls(active_result, model, optimizer, loss, weights, weight_column, participation, segments,
                       boot_n, boot_by, setting_values, setting_ids):
        # the form shows the settings of the result on screen (after a reload, a cached repeat, an import)
        key = shell.key_of(active_result)
        settings = results.meta(key).get("settings") if key else None
        if not settings:
            raise PreventUpdate
        c = controls_from_settings(settings)
        names = [i["name"] for i in setting_ids]
        new_settings = [c["settings"].get(n, v) for n, v in zip(names, setting_values)]
        same = all(a == b for a, b in zip(new_settings, setting_values))
        return [_changed(c["model"], model), _changed(c["optimizer"], optimizer), _changed(c["loss"], loss),
                _changed(c["weights"], weights), _changed(c["weight_column"], weight_column),
                _changed(c["participation"], participation), _changed(c["segments"], segments or []),
                _changed(c["bootstrap_n"], boot_n), _changed(c["bootstrap_by"], boot_by),
                [no_update] * len(new_settings) if same else new_settings]

    @app.callback(
        Output(PARAMS, "children"), Output(MODEL_INFO, "children"),
        Input(MODEL, "value"), Input(results_mod.ACTIVE_RESULT_ID, "data"),
        prevent_initial_call=True,
    )
    def _param_table(model, active_result):
        if model not in impact_models():
            raise PreventUpdate
        fitted, settings = _fitted_params(results, active_result, model)
        params = controls_from_settings(settings)["params"] if settings else None
        return param_table(model, params, fitted), model_info(model)

    @app.callback(
        Output(OPTIONS, "children"), Output(OPTIMIZER_INFO, "children"), Output(LOSS, "options"),
        Output(LOSS, "value", allow_duplicate=True),
        Input(OPTIMIZER, "value"), Input(results_mod.ACTIVE_RESULT_ID, "data"),
        State(LOSS, "value"),
        prevent_initial_call=True,
    )
    def _optimizer(optimizer, active_result, loss):
        if optimizer not in OPTIMIZERS:
            raise PreventUpdate
        spec = OPTIMIZERS[optimizer]
        key = shell.key_of(active_result)
        settings = (results.meta(key).get("settings") or {}) if key else {}
        values = None
        if (settings.get("calibrator") or {}).get("optimizer") == optimizer:
            values = controls_from_settings(settings)["options"]
        labels = describe()["losses"]
        loss_options = [{"label": labels[n]["label"], "value": n} for n in spec.losses]
        return (options_component(optimizer, values), spec.description, loss_options,
                no_update if loss in spec.losses else spec.losses[0])

    @app.callback(
        Output(LOSS_INFO, "children"), Input(LOSS, "value"),
    )
    def _loss_info(loss):
        return LOSSES[loss].formula if loss in LOSSES else ""

    @app.callback(
        Output(WEIGHTS_INFO, "children"), Output(WEIGHT_COLUMN, "disabled"),
        Input(WEIGHTS_PICK, "value"),
    )
    def _weights_info(weights):
        spec = WEIGHTS.get(weights)
        return (spec.description if spec else ""), weights != "column"

    @app.callback(
        Output(WEIGHT_COLUMN, "options"), Output(SEGMENTS, "options"),
        Input(store_mod.ACTIVE_DATASET_ID, "data"),
    )
    def _data_choices(active):
        key = shell.key_of(active)
        info = st.info(key) if key else None    # column dtypes without reading the frame
        dtypes = {} if info is None else info["dtypes"]
        columns = [c for c, t in dtypes.items() if t.startswith(("float", "int"))]
        present = set(dtypes)
        segments = [{"label": s if s in present else f"{s} (not in the data)", "value": s,
                     "disabled": s not in present} for s in SEGMENT_BY]
        return [{"label": c, "value": c} for c in columns], segments

