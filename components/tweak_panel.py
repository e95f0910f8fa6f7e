"""The Tweak panel: move the parameters by hand and see at once what the fit would lose or gain.

A slider and a number box per parameter start at the fitted values (slider range: fitted ± 5 standard
errors inside the parameter's bounds; the box accepts any value inside the bounds). Every move builds a
hand-set result with `Calibrator.fix(params, features)` on the result's prepared `Features` (arch's
rule: a tweaked parameter set is just a fixed result, the same code path as the fit) and redraws the
cost-vs-participation curve, predicted vs actual, and the in- / out-of-sample metrics with their change
against the fit (Δ RMSE, Δ bias). "Reset to fitted" goes back; "Refit from here" runs a normal fit with
the ticked parameters fixed at their current values and makes it the active result.

Speed (1,000,000 fills): everything that does not depend on the parameters (the downsampled rows and
their hover texts, participation bins, the fitted curve and metrics, train/test rows) is prepared once
per result in a per-process cache (`TweakState`); a move then costs the fix (~30 ms), two metric passes
and a bincount. Predicted vs actual is updated with a `dash.Patch` carrying only the new x values of the
drawn points, not the whole figure.
"""
from __future__ import annotations

import datetime as dt
import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import dash_bootstrap_components as dbc
import numpy as np
from dash import ALL, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from execal.components import impact_figures as F
from execal.components import results as results_mod
from execal.components import shell
from execal.components import store as store_mod
from execal.models.core.registry import OPTIMIZERS
from execal.components.figures import plain
from execal.models.impact.fit import CalibrationError, Calibrator
from execal.models.impact.result import error_metrics
from execal.models.impact.timevarying import TIME_VARYING_STRATEGIES, TimeVaryingCalibrator
from execal.models.data.schema import DataError

log = logging.getLogger(__name__)

PANEL = "tweak"
TITLE = "Tweak"
_id = shell.ids_for(PANEL)

# the controls: which parameter set, a slider / box / fix per parameter, reset and refit
TARGET, TARGET_WRAP, CONTROLS = _id("target", "target-wrap", "controls")
BASE = _id("base")             # dcc.Store: {"key", "target", "order", "fitted", "ranges", "bounds"}
# the current hand-set values {"key", "target", "params"}: the app-level store, which Export reads
PARAMS = shell.HAND_SET_ID
RESET, REFIT, REFIT_ALERT = _id("reset", "refit", "refit-alert")
# what the hand-set parameters change
DELTAS, METRICS, CURVE, PRED_ACTUAL = _id("deltas", "metrics", "curve", "pred-actual")

SLIDER = "tweak-slider"        # pattern-matching id types: {"type": ..., "param": name}
BOX = "tweak-box"
FIX = "tweak-fix"

POOLED = results_mod.POOLED
N_SE = 5.0                     # slider half-width in standard errors
SLIDER_STEPS = 200
CACHE_ITEMS = 4
NO_RESULT = "No calibration result yet: run one in the Calibrate panel, then tweak its parameters here"
EVICTED = "This result is no longer in the server's cache: calibrate again"
FIXED_STYLES = {"fitted": {"dash": "dot", "width": 2}, "tweaked": {"dash": "solid", "width": 3}}


def slider_id(name: str) -> dict:
    return {"type": SLIDER, "param": name}


def box_id(name: str) -> dict:
    return {"type": BOX, "param": name}


def fix_id(name: str) -> dict:
    return {"type": FIX, "param": name}


# --- the parameter set being tweaked ---------------------------------------------------------


def target_options(result) -> list[dict]:
    """Which parameter set to tweak: the result itself, or for a segmented result the pooled fit or
    one segment's."""
    if not hasattr(result, "segments"):
        return [{"label": "Fitted parameters", "value": POOLED}]
    return ([{"label": "Pooled fit (all segments)", "value": POOLED}]
            + [{"label": F.segment_name(s.key), "value": F.segment_name(s.key)} for s in result.segments])


target_result = results_mod.target_result   # the parameter set behind a target (pooled when unknown)


def nice_step(span: float, steps: int = SLIDER_STEPS) -> float:
    """A round slider step (1, 2 or 5 × 10^k) giving about `steps` steps over `span`."""
    if not (span > 0 and math.isfinite(span)):
        return 0.01
    raw = span / steps
    power = 10.0 ** math.floor(math.log10(raw))
    for m in (1.0, 2.0, 5.0, 10.0):
        if raw <= m * power:
            return m * power
    return 10.0 * power


def _short(v: float) -> str:
    return f"{v:.3g}"


def slider_specs(result, n_se: float = N_SE) -> list[dict]:
    """One control spec per model parameter: name, unit, description, fitted value, slider min / max /
    step (fitted ± n_se standard errors inside the bounds; the bounds when there is no s.e.), the box's
    bounds, and whether it was fixed in the fit."""
    se = result.std_errors
    out = []
    for p in result.model.params:
        v = float(result.params[p.name])
        lo_b, hi_b = result.bounds.get(p.name, (p.lower, p.upper))
        lower = -math.inf if lo_b is None else float(lo_b)
        upper = math.inf if hi_b is None else float(hi_b)
        s = se.get(p.name, math.nan)
        if math.isfinite(s) and s > 0:
            lo, hi = max(lower, v - n_se * s), min(upper, v + n_se * s)
        else:
            width = max(abs(v), 1.0)
            lo = lower if math.isfinite(lower) else v - width
            hi = upper if math.isfinite(upper) else v + width
        lo, hi = min(lo, v), max(hi, v)
        if hi <= lo:
            hi = lo + max(abs(lo), 1.0) * 1e-3
        step = nice_step(hi - lo)
        # the slider's grid starts at a multiple of the step (a keyboard press moves one step)
        grid_lo = math.floor(lo / step) * step
        lo = grid_lo if grid_lo >= lower else lo
        out.append({"name": p.name, "unit": p.unit, "description": p.description, "value": v,
                    "min": lo, "max": hi, "step": step,
                    "lower": lower if math.isfinite(lower) else None,
                    "upper": upper if math.isfinite(upper) else None,
                    "fixed": p.name not in result.free, "std_err": s if math.isfinite(s) else None})
    return out


def base_record(key: str, target: str, specs: list[dict]) -> dict:
    """The BASE store: what the controls were built from (JSON-ready)."""
    return {"key": key, "target": target, "order": [s["name"] for s in specs],
            "fitted": {s["name"]: s["value"] for s in specs},
            "ranges": {s["name"]: [s["min"], s["max"]] for s in specs},
            "bounds": {s["name"]: [s["lower"], s["upper"]] for s in specs}}


def clip_to(value: float, bounds) -> float:
    lo, hi = bounds
    if lo is not None:
        value = max(value, lo)
    if hi is not None:
        value = min(value, hi)
    return value


def param_controls(specs: list[dict]) -> list:
    """Slider + number box + 'fix' checkbox per parameter, each labelled."""
    rows = []
    for s in specs:
        name = s["name"]
        unit = f" ({s['unit']})" if s["unit"] and s["unit"] != "×" else ""
        se = f"; fitted {s['value']:.4g} ± {s['std_err']:.2g}" if s["std_err"] else f"; fitted {s['value']:.4g}"
        marks = {s["min"]: _short(s["min"]), s["max"]: _short(s["max"])}
        rows.append(html.Div([
            html.Div([html.Span(name + unit, className="fw-semibold me-2", id=_id(f"label-{name}")),
                      html.Small(s["description"] + se, className="text-muted")], className="mb-1"),
            dbc.Row([
                dbc.Col(html.Div(dcc.Slider(
                    id=slider_id(name), min=s["min"], max=s["max"], step=s["step"], value=s["value"],
                    updatemode="drag", allow_direct_input=False, marks=marks, included=False),
                    role="group", **{"aria-label": f"{name} slider", "data-param": name}), width=6),
                dbc.Col(html.Label([html.Span(f"{name} value", className="visually-hidden"), dbc.Input(
                    id=box_id(name), type="number", value=s["value"], min=s["lower"], max=s["upper"],
                    step="any", debounce=True, size="sm", className="execal-tweak-box")], className="w-100 mb-0"),
                    width=4),
                dbc.Col(dbc.Checkbox(id=fix_id(name), value=bool(s["fixed"]), label="fix",
                                     label_class_name="small"), width=2),
            ], className="g-2 align-items-center"),
        ], className="mb-3 execal-tweak-param", **{"data-param": name}))
    return rows


# --- the per-result tweak state (prepared once) ------------------------------------------------


class TweakState:
    """Everything a slider move needs that does not depend on the parameters, for one result (or
    one segment of it): calibrator, features, rows, scatter plan, bins, fitted curve and metrics."""

    def __init__(self, result, *, max_points: int = F.MAX_SCATTER_POINTS):
        self.result = result
        self.calibrator = Calibrator(**dict(result.settings))
        self.features = result.features
        self.view = F.result_view(result)
        self.is_train = np.asarray(result.is_train, dtype=bool)
        self.all_train = bool(self.is_train.all())
        self.train_idx = None if self.all_train else np.flatnonzero(self.is_train)
        self.test_idx = None if self.all_train else np.flatnonzero(~self.is_train)
        obs, noise = self.view.observed_bps, self.view.expected_noise_bps
        self._obs = {"in-sample": obs if self.all_train else obs[self.train_idx]}
        self._noise = {"in-sample": noise if (self.all_train or noise is None) else noise[self.train_idx]}
        if not self.all_train:
            self._obs["out-of-sample"] = obs[self.test_idx]
            self._noise["out-of-sample"] = None if noise is None else noise[self.test_idx]
        self.index = F.scatter_index(self.view, max_points)
        self.plan = F.scatter_plan(self.view, self.index)
        self.bins = F.log_bins(self.view.participation)
        self.fitted_params = dict(result.params)
        self.fitted_metrics = self.metrics(np.asarray(result.predicted_bps))
        # binned observed costs and the fitted curve do not move with the parameters; a move only
        # re-averages the new predictions per bin (one bincount, rows outside the bins in a dump bin)
        self.series = F.participation_series(self.view, self.bins)
        self._codes = np.where(self.bins.codes >= 0, self.bins.codes, self.bins.count)
        self._curve_count = np.bincount(self._codes, minlength=self.bins.count + 1)[:self.bins.count]
        # the fit objective on every row at the fitted values: what a tweak's objective compares with
        self.fitted_loss = self.calibrator.fix(self.fitted_params, self.features).report.cost

    def metrics(self, predicted: np.ndarray) -> dict[str, dict]:
        out = {}
        for sample, obs in self._obs.items():
            if self.all_train:
                pred = predicted
            else:
                pred = predicted[self.train_idx if sample == "in-sample" else self.test_idx]
            out[sample] = error_metrics(obs, pred, self._noise[sample])
        return out

    def update(self, params: Mapping[str, float]) -> dict:
        """One slider move: the hand-set result, its metrics and curve (no figure objects)."""
        fixed = self.calibrator.fix(dict(params), self.features)
        predicted = np.asarray(fixed.predicted_bps)
        metrics = self.metrics(predicted)
        return {"result": fixed, "predicted": predicted, "metrics": metrics, "series": self.tweaked_series(predicted),
                "loss": fixed.report.cost}

    def tweaked_series(self, predicted: np.ndarray) -> list[F.CurveSeries]:
        """The fitted series with a 'tweaked' curve: the mean of `predicted` per participation bin."""
        if len(self.series) == 1:
            curve = F.bin_means(self._codes, self.bins.count, predicted, self._curve_count)
            if curve is not None:
                s = self.series[0]
                return [F.CurveSeries(s.name, s.centres, s.count, s.observed_mean, s.observed_se,
                                      {"fitted": s.curves["fitted"], "tweaked": curve})]
        return F.participation_series(self.view, self.bins, {"fitted": self.view.predicted_bps,
                                                             "tweaked": predicted})


_states = shell.LRU(CACHE_ITEMS)


def tweak_state(key: str, target: str, result) -> TweakState:
    """The prepared state of (result key, parameter set), from this process's cache."""
    return _states.get_or_make(f"{key}|{target}", lambda: TweakState(target_result(result, target)))


# --- what a move returns ------------------------------------------------------------------------


def _delta(a, b) -> float | None:
    return None if a is None or b is None else b - a


def delta_badges(state: TweakState, metrics: Mapping[str, dict], loss: float | None) -> list:
    """Δ RMSE and Δ bias against the fit (in-sample, and out-of-sample when there is a test split)."""
    items = []
    for sample in metrics:
        f, t = state.fitted_metrics[sample], metrics[sample]
        d_rmse, d_bias = _delta(f.get("rmse_bps"), t.get("rmse_bps")), _delta(f.get("bias_bps"), t.get("bias_bps"))
        suffix = "in" if sample == "in-sample" else "out"
        for label, d, name in (("Δ RMSE", d_rmse, "rmse"), ("Δ bias", d_bias, "bias")):
            colour = "secondary" if d is None or abs(d) < 1e-12 else ("danger" if (name == "rmse" and d > 0) else "info")
            items.append(dbc.Badge(f"{label} ({sample}) {'—' if d is None else f'{d:+.4g}'} bps", color=colour,
                                   className="me-2 mb-1 execal-delta", id=_id(f"delta-{name}-{suffix}")))
    if loss is not None and state.fitted_loss is not None:
        d = loss - state.fitted_loss
        items.append(dbc.Badge(f"Δ fit objective {d:+.4g} ({'worse' if d > 0 else 'better' if d < 0 else 'same'})",
                               color="secondary", className="me-2 mb-1 execal-delta", id=_id("delta-loss")))
    return items


def tweak_outputs(state: TweakState, params: Mapping[str, float], *, full: bool) -> dict:
    """Deltas, metrics table, curve figure and predicted-vs-actual (a whole figure when `full`, else a
    Patch of the x values) for the hand-set `params`."""
    up = state.update(params)
    view = state.view.with_predicted(up["predicted"])
    if full:
        pva = F.predicted_vs_actual_figure(view, plan=state.plan)
        curve = F.cost_vs_participation_figure(up["series"], curve_styles=FIXED_STYLES,
                                               participation_label=F.participation_label(state.view.participation_kind))
    else:
        # only the x of the drawn orders and the tweaked curve move: patch those, keep the rest
        pva = no_update if state.plan is None else as_patch(F.predicted_vs_actual_update(up["predicted"], state.plan))
        curve = as_patch(F.cost_vs_participation_update(up["series"], "tweaked"))
    rows = F.delta_rows(state.fitted_metrics, up["metrics"])
    return {
        DELTAS: delta_badges(state, up["metrics"], up["loss"]),
        METRICS: shell.rows_table(rows, table_id=_id("metrics-table")),
        CURVE: curve,
        PRED_ACTUAL: pva,
    }


def as_patch(update: Mapping[int, Mapping[str, Any]]) -> Patch | Any:
    """A Dash Patch setting figure["data"][trace][prop] = values for each entry of `update`
    (no_update when there is nothing to change, e.g. a figure in its empty state)."""
    if not update:
        return no_update
    patch = Patch()
    for i, props in update.items():
        for prop, values in props.items():
            patch["data"][i][prop] = values
    return patch


def empty_outputs(message: str) -> dict:
    return {DELTAS: [], **shell.empty_outputs(message, graphs=(CURVE, PRED_ACTUAL), texts=(METRICS,))}


def controls_outputs(results: results_mod.ResultStore, active: Any, target: str | None, trigger: Any) -> dict:
    """The controls callback's body: sliders/boxes/checkboxes, BASE record, target picker."""
    key = shell.result_key_of(active)
    result = results.get(key) if key else None
    if result is None:
        return {"controls": shell.empty_text(NO_RESULT if key is None else EVICTED), "base": None,
                "options": [], "target": None, "target_hidden": True}
    options = target_options(result)
    values = [o["value"] for o in options]
    if trigger != TARGET or target not in values:
        target = POOLED
    specs = slider_specs(target_result(result, target))
    return {"controls": param_controls(specs), "base": base_record(key, target, specs), "options": options,
            "target": target, "target_hidden": len(options) < 2}


def resolve_params(base: Mapping, current: Mapping | None, trigger: Any, slider_values: Mapping[str, Any],
                   box_values: Mapping[str, Any]) -> tuple[dict, str]:
    """The hand-set parameters after `trigger`, and what changed: "full" (new result / reset: back
    to the fitted values), "slider", "box" or "none" (an empty or invalid box)."""
    fitted = dict(base["fitted"])
    stale = not current or current.get("key") != base["key"] or current.get("target") != base["target"]
    params = fitted if stale else {**fitted, **dict(current.get("params") or {})}
    if trigger in (BASE, RESET, None):
        return fitted, "full"
    if isinstance(trigger, Mapping) and trigger.get("param") in fitted:
        name = trigger["param"]
        value = (slider_values if trigger.get("type") == SLIDER else box_values).get(name)
        try:
            value = float(value)
        except (TypeError, ValueError):
            return params, "none"
        if not math.isfinite(value):
            return params, "none"
        params[name] = clip_to(value, base["bounds"][name])
        return params, "slider" if trigger.get("type") == SLIDER else "box"
    return params, "none"


@dataclass
class TweakResponse:
    sliders: Any
    boxes: Any
    params: Any
    outputs: dict


def tweak_response(results: results_mod.ResultStore, base: Mapping | None, current: Mapping | None,
                   trigger: Any, slider_values: Mapping[str, Any], box_values: Mapping[str, Any],
                   order: list[str]) -> TweakResponse:
    """The move callback's body. A dragged slider is not written back (it would pull the handle to
    a stale position mid-drag); its box follows. A typed box moves its slider (clipped to its range)."""
    if not base:
        return TweakResponse(no_update, no_update, None, empty_outputs(NO_RESULT))
    result = results.get(base["key"])
    if result is None:
        return TweakResponse(no_update, no_update, None, empty_outputs(EVICTED))
    params, what = resolve_params(base, current, trigger, slider_values, box_values)
    if what == "none":
        raise PreventUpdate
    state = tweak_state(base["key"], base["target"], result)
    try:
        outputs = tweak_outputs(state, params, full=what == "full")
    except (CalibrationError, DataError) as err:
        outputs = empty_outputs(f"These parameters cannot be evaluated: {err}")
    record = {"key": base["key"], "target": base["target"], "params": params}
    slider_out = [clip_to(params[n], base["ranges"][n]) for n in order]
    boxes_out = [params[n] for n in order]
    return TweakResponse(no_update if what == "slider" else slider_out,
                         no_update if what == "box" and all(
                             box_values.get(n) == params[n] for n in order) else boxes_out,
                         record, outputs)


# --- refit from here --------------------------------------------------------------------------


def refit_settings(result, params: Mapping[str, float], fix: Mapping[str, bool]) -> dict:
    """Calibrator settings of `result` with the ticked parameters fixed at `params` and every unticked
    one free (a parameter fixed by default, like the spread coefficient h, is freed by unticking it)."""
    settings = dict(result.settings)
    fixed = {n: float(params[n]) for n, on in fix.items() if on and n in params}
    default_fixed = {p.name for p in result.model.params if p.fixed}
    free = [n for n in result.model.param_names if not fix.get(n, False) and n in default_fixed]
    return {**settings, "fixed": fixed, "free": free}


def refit(results: results_mod.ResultStore, base: Mapping, current: Mapping | None,
          fix: Mapping[str, bool], session_id: Any) -> tuple[str | None, str, str]:
    """Fit again from the current parameters with the ticked ones fixed; store the result and make it
    the session's active one. Returns (new key or None, message, alert colour)."""
    old_key = base["key"]
    result = results.get(old_key)
    if result is None:
        return None, "This result is no longer in the server's cache: calibrate again.", "warning"
    params = dict(base["fitted"])
    if current and current.get("key") == old_key and current.get("target") == base["target"]:
        params.update(current.get("params") or {})
    segmented = hasattr(result, "segments")
    pooled = result.pooled if segmented else result
    if segmented and base["target"] != POOLED:
        return None, ("Refit works on the pooled parameters of a segmented calibration: pick 'Pooled fit' "
                      "(each segment is then refitted with the same fixed values)."), "warning"
    if all(fix.get(n, False) for n in pooled.model.param_names):
        return None, "Every parameter is ticked 'fix': untick at least one to refit.", "warning"
    settings = refit_settings(pooled, params, fix)
    started = time.perf_counter()
    try:
        calibrator = Calibrator(**settings)
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            if segmented:
                new = calibrator.fit_segments(pooled.features, by=result.by)
            elif OPTIMIZERS[calibrator.optimizer].strategy in TIME_VARYING_STRATEGIES:   # a path's final state
                new = TimeVaryingCalibrator.from_calibrator(calibrator).fit(result.features).result
            else:
                new = calibrator.fit(result.features)
    except (CalibrationError, DataError, ValueError) as err:
        return None, f"Refit failed: {err}", "danger"
    # stored as the Calibrate panel stores a fit: keyed by (dataset, filters, run settings), with the
    # run settings in the meta, so Calibrate's controls show what produced it
    meta = results.meta(old_key)
    # (no bootstrap: a refit from here is a quick look; bootstrap it from the Calibrate panel)
    run_settings = {"calibrator": calibrator.get_params(),
                    "segments": list(result.by) if segmented else [], "bootstrap": None}
    key = results_mod.result_key(str(meta.get("dataset") or old_key), meta.get("filters"), run_settings)
    results.put(key, new, meta={**meta, "origin": "tweak", "settings": run_settings, "refit_from": old_key,
                                "elapsed_s": round(time.perf_counter() - started, 3),
                                "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
    if store_mod.is_session_id(session_id):
        results.set_active(session_id, key)
    pooled_new = new.pooled if segmented else new
    fixed_names = ", ".join(settings["fixed"]) or "none"
    status = "converged" if pooled_new.report.converged else "NOT converged"
    colour = "success" if pooled_new.report.converged else "danger"
    return key, f"Refitted with {fixed_names} fixed: {status} ({plain(pooled_new.report.message)})", colour


# --- layout -------------------------------------------------------------------------------------


def layout(app) -> html.Div:
    controls_card = shell.card("Parameters", [
        html.Div([html.Label("Parameter set", htmlFor=TARGET, className="form-label mb-1"),
                  dcc.Dropdown(id=TARGET, options=[], value=None, clearable=False)],
                 id=TARGET_WRAP, hidden=True, className="mb-3"),
        shell.slot(CONTROLS, NO_RESULT),
        html.Div([
            dbc.Button("Reset to fitted", id=RESET, color="secondary", outline=True, size="sm", className="me-2"),
            dbc.Button("Refit from here", id=REFIT, color="primary", size="sm"),
        ], className="mt-2"),
        html.Div("Refit runs a normal fit with the parameters ticked 'fix' held at their current values.",
                 className="form-text"),
        dcc.Loading(dbc.Alert(id=REFIT_ALERT, is_open=False, dismissable=True, className="mt-2 mb-0 small"),
                    type="dot"),
        dcc.Store(id=BASE, storage_type="memory"),
    ])

    def graph(graph_id):
        return shell.graph(graph_id, NO_RESULT, height=F.FIGURE_HEIGHT, delay_show=500)

    return dbc.Row([
        dbc.Col(controls_card, lg=4),
        dbc.Col([
            html.Div(id=DELTAS, className="mb-2", **{"aria-live": "polite"}),
            dbc.Row([
                dbc.Col(shell.card("Cost vs participation", graph(CURVE), dense=True,
                                   about="dotted = fitted curve, solid = tweaked"), lg=6),
                dbc.Col(shell.card("Predicted vs actual", graph(PRED_ACTUAL), about="at the hand-set parameters",
                                   dense=True), lg=6),
            ]),
            shell.card("Change against the fit", html.Div(shell.empty_text(NO_RESULT), id=METRICS),
                       about="metrics at the hand-set parameters vs at the fitted ones (Δ = tweaked − fitted)",
                       dense=True),
        ], lg=8),
    ], className="execal-tweak-panel")


# --- callbacks ----------------------------------------------------------------------------------


def register_callbacks(app) -> None:
    results = results_mod.get_results(app)

    @app.callback(
        Output(CONTROLS, "children"), Output(BASE, "data"), Output(TARGET, "options"), Output(TARGET, "value"),
        Output(TARGET_WRAP, "hidden"),
        Input(shell.ACTIVE_RESULT_ID, "data"), Input(TARGET, "value"), Input(shell.LOCATION_ID, "pathname"),
        State(BASE, "data"),
    )
    def _controls(active, target, pathname, base):
        # hidden, the panel waits to be opened; opened again on the same result, it keeps its sliders
        if not shell.needs_render(PANEL, pathname, ctx.triggered_id, shell.result_key_of(active), shell.key_of(base)):
            raise PreventUpdate
        out = controls_outputs(results, active, target, ctx.triggered_id)
        return out["controls"], out["base"], out["options"], out["target"], out["target_hidden"]

    @app.callback(
        Output({"type": SLIDER, "param": ALL}, "value"), Output({"type": BOX, "param": ALL}, "value"),
        Output(PARAMS, "data"),
        Output(DELTAS, "children"), Output(METRICS, "children"), Output(CURVE, "figure"),
        Output(PRED_ACTUAL, "figure"),
        Input({"type": SLIDER, "param": ALL}, "value"), Input({"type": BOX, "param": ALL}, "value"),
        Input(RESET, "n_clicks"), Input(BASE, "data"),
        State(PARAMS, "data"),
    )
    def _move(slider_values, box_values, _reset, base, current):
        names = [i["id"]["param"] for i in ctx.inputs_list[0]]
        box_names = [i["id"]["param"] for i in ctx.inputs_list[1]]
        if base and names != list(base.get("order", [])):
            raise PreventUpdate   # controls of another result still on the page: the new ones follow
        trigger = ctx.triggered_id
        if len(ctx.triggered) > 1 and any(t["prop_id"].startswith(BASE + ".") for t in ctx.triggered):
            trigger = BASE    # new controls and their base arrive together
        resp = tweak_response(results, base, current, trigger, dict(zip(names, slider_values)),
                              dict(zip(box_names, box_values)), names)
        # a wildcard output is a list, one value per component; "unchanged" is no_update in each slot
        sliders = [no_update] * len(names) if resp.sliders is no_update else resp.sliders
        boxes = [no_update] * len(box_names) if resp.boxes is no_update else resp.boxes
        o = resp.outputs
        return sliders, boxes, resp.params, o[DELTAS], o[METRICS], o[CURVE], o[PRED_ACTUAL]

    @app.callback(
        Output(shell.ACTIVE_RESULT_ID, "data", allow_duplicate=True),
        Output(REFIT_ALERT, "children"), Output(REFIT_ALERT, "is_open"), Output(REFIT_ALERT, "color"),
        Input(REFIT, "n_clicks"),
        State({"type": FIX, "param": ALL}, "value"), State(BASE, "data"), State(PARAMS, "data"),
        State(shell.SESSION_STORE_ID, "data"),
        prevent_initial_call=True,
        running=[(Output(REFIT, "disabled"), True, False)],
    )
    def _refit(n_clicks, fix_values, base, current, session_id):
        if not n_clicks:
            raise PreventUpdate
        if not base:
            return no_update, NO_RESULT, True, "warning"
        fix_names = [i["id"]["param"] for i in ctx.states_list[0]]
        key, message, colour = refit(results, base, current, dict(zip(fix_names, fix_values)), session_id)
        return ({"key": key} if key else no_update), message, True, colour
