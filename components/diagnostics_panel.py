"""The Diagnostics panel: how well the active calibration explains the costs, and where it misses.

It reads the active result (the key in `results.ACTIVE_RESULT_ID` → `ResultStore`) and shows: the optimizer's verdict (a non-converged fit is flagged in red); predicted
vs actual cost (45° line, colour by venue, hover names the order); cost vs participation on a log axis
with binned means ± s.e. and the fitted curve of each segment; residuals against the fitted value, time
and participation; the residual histogram with the noise model the weights imply, and a normal QQ plot;
the parameter table (s.e., CI, bootstrap CI, fixed flags); in- and out-of-sample metrics; and, for a
segmented calibration, each segment's parameters with the test of equal coefficients.

Everything is computed server-side once per result and kept in a small per-process cache, so a page
reload or a panel switch redraws instantly; the browser receives figures of at most
`impact_figures.MAX_SCATTER_POINTS` points per scatter, never the frame. `diagnostics_outputs` is the
callback's body as a plain function (tests call it directly); `register_callbacks` only wires it.
"""
from __future__ import annotations

import logging
from typing import Any

import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from execal.components import impact_figures as F
from execal.components import results as results_mod
from execal.components import shell

log = logging.getLogger(__name__)

PANEL = "diagnostics"
TITLE = "Diagnostics"
_id = shell.ids_for(PANEL)

STATUS = _id("status")
# the figures, and the tables beside them
PRED_ACTUAL, COST_PARTICIPATION, HISTOGRAM, QQ = _id("pred-actual", "cost-participation", "histogram", "qq")
RESID_FITTED, RESID_TIME, RESID_PARTICIPATION = _id("resid-fitted", "resid-time", "resid-participation")
SAMPLES, SEGMENTS = _id("samples", "segments")
PARAMS, METRICS, SEGMENT_TABLES = _id("params", "metrics", "segment-tables")
SHOWN = _id("shown")    # dcc.Store: the result key the panel's figures were drawn for

GRAPHS = (PRED_ACTUAL, COST_PARTICIPATION, RESID_FITTED, RESID_TIME, RESID_PARTICIPATION, HISTOGRAM, QQ,
          SAMPLES, SEGMENTS)
TEXTS = (PARAMS, METRICS, SEGMENT_TABLES)
CACHE_ITEMS = 4
NO_RESULT = "No calibration result yet: run one in the Calibrate panel"
EVICTED = "This result is no longer in the server's cache: run the calibration again"


# --- what the panel shows, per result -----------------------------------------------------------


_prepared = shell.LRU(CACHE_ITEMS)


def build_diagnostics(result, *, max_points: int = F.MAX_SCATTER_POINTS) -> dict:
    """Every figure and table of the panel for one result (a CalibrationResult or SegmentedResult);
    scatters draw at most `max_points` orders."""
    view = F.view_of(result)
    index = F.scatter_index(view, max_points)
    residual = view.residual_bps
    tails = view.residual_tails
    y_range = F.central_range(residual, extra=(0.0,), quantiles=tails) if tails else None
    p_bins = F.log_bins(view.participation)
    p_label = F.participation_label(view.participation_kind)
    time_bins = (F.linear_bins(view.time_ns.astype(np.float64)) if view.time_ns is not None else None)
    metric_columns = F.result_metric_columns(result)
    segmented = hasattr(result, "segments")
    seg_tables: Any
    if segmented:
        seg_tables = html.Div([
            shell.rows_table(F.segment_test_rows(result.test or {}), caption="Do the segments share the parameters?"),
            html.Div(className="mb-2"),
            shell.rows_table(F.segment_rows(result), caption="Parameters per segment (95 % CI)"),
        ])
    else:
        seg_tables = shell.empty_text("Calibrate with a segmentation (e.g. by venue) to compare segments.")
    return {
        STATUS: status_component(result),
        PRED_ACTUAL: F.predicted_vs_actual_figure(view, index),
        COST_PARTICIPATION: F.cost_vs_participation_figure(
            F.participation_series(view, p_bins), participation_label=p_label),
        RESID_FITTED: F.residual_scatter_figure(view.predicted_bps, residual, index, x_title="predicted cost (bps)",
                                                bins=F.linear_bins(view.predicted_bps), y_range=y_range),
        RESID_TIME: F.residual_scatter_figure(view.time_ns, residual, index, x_title="time (UTC)", bins=time_bins,
                                              time_x=True, y_range=y_range,
                                              empty_message="No timestamps in the data: no residuals over time"),
        RESID_PARTICIPATION: F.residual_scatter_figure(view.participation, residual, index, log_x=True,
                                                       x_title=f"{p_label} (log)",
                                                       bins=p_bins, y_range=y_range),
        HISTOGRAM: F.residual_histogram_figure(view),
        QQ: F.qq_figure(view),
        PARAMS: shell.rows_table(F.parameter_rows(result), table_id=_id("params-table")),
        METRICS: shell.rows_table(F.metrics_rows(metric_columns), table_id=_id("metrics-table")),
        SAMPLES: F.sample_comparison_figure(metric_columns),
        SEGMENTS: F.segment_parameter_figure(result if segmented else None),
        SEGMENT_TABLES: seg_tables,
    }


def status_component(result) -> html.Div:
    """The optimizer's verdict, prominent: green converged, amber with warnings, red not converged."""
    pooled = getattr(result, "pooled", result)
    n_in = pooled.n_train
    n_out = int(pooled.is_train.shape[0]) - n_in
    seg = f"; {len(result.segments)} segments by {', '.join(result.by)}" if hasattr(result, "segments") else ""
    facts = (f"{pooled.model.label}: {pooled.model.formula} — {n_in:,} orders in-sample, "
             f"{n_out:,} out-of-sample{seg}")
    return shell.verdict_banner(PANEL, F.status_summary(result), facts)


def empty_outputs(message: str, *, level: str = "secondary") -> dict:
    return shell.empty_outputs(message, graphs=GRAPHS, texts=TEXTS, status=(STATUS, PANEL), level=level)


def diagnostics_outputs(results: results_mod.ResultStore, active: Any) -> dict:
    """The callback's body: {output id: value} for the active result, or designed empty states."""
    key = shell.result_key_of(active)
    if key is None:
        return empty_outputs(NO_RESULT)
    result = results.get(key)
    if result is None:
        return empty_outputs(EVICTED, level="warning")
    try:
        return _prepared.get_or_make(key, lambda: build_diagnostics(result))
    except Exception as err:   # never a traceback in the browser: log it, say one line
        log.exception("diagnostics of %s failed", key)
        return empty_outputs(f"The diagnostics could not be drawn ({type(err).__name__}); "
                             "the details are in the server log.", level="danger")


# --- layout -------------------------------------------------------------------------------------


def _graph(graph_id: str):
    return shell.graph(graph_id, NO_RESULT, height=F.FIGURE_HEIGHT)


card = shell.card_col


def layout(app) -> html.Div:
    return html.Div([
        dcc.Store(id=SHOWN, storage_type="memory"),
        shell.slot(STATUS, shell.empty_status(PANEL, NO_RESULT)),
        html.Div(className="mb-3"),
        dbc.Row([
            card("Predicted vs actual cost", _graph(PRED_ACTUAL),
                 "each order; colour = venue; dashed = perfect prediction"),
            card("Cost vs participation", _graph(COST_PARTICIPATION),
                 "binned mean cost ± standard error, and the fitted curve of each segment"),
        ]),
        dbc.Row([
            card("Residuals vs fitted", _graph(RESID_FITTED), width={"lg": 4}),
            card("Residuals vs time", _graph(RESID_TIME), width={"lg": 4}),
            card("Residuals vs participation", _graph(RESID_PARTICIPATION), width={"lg": 4}),
        ]),
        dbc.Row([
            card("Residual distribution", _graph(HISTOGRAM), "histogram and the noise model the weights imply"),
            card("Normal QQ plot", _graph(QQ), "standardised residuals; heavy tails bend away from the line"),
        ]),
        dbc.Row([
            card("Parameters", shell.slot(PARAMS, NO_RESULT),
                 "estimate, sandwich standard error and confidence intervals"),
            card("Metrics", shell.slot(METRICS, NO_RESULT),
                 "in-sample, out-of-sample (held-out latest rows) and walk-forward"),
        ]),
        dbc.Row([
            card("In- vs out-of-sample", _graph(SAMPLES), width={"lg": 4}),
            card("Segments", [_graph(SEGMENTS), shell.slot(SEGMENT_TABLES, NO_RESULT, class_name="mt-2")],
                 "each segment's parameters with CIs, and the test that they are equal", width={"lg": 8}),
        ]),
    ], className="execal-diagnostics-panel")


# --- callbacks ----------------------------------------------------------------------------------

OUTPUT_PROPS = {STATUS: "children", PARAMS: "children", METRICS: "children", SEGMENT_TABLES: "children",
                **{g: "figure" for g in GRAPHS}}


def register_callbacks(app) -> None:
    order = list(OUTPUT_PROPS)

    @app.callback(
        [Output(i, OUTPUT_PROPS[i]) for i in order] + [Output(SHOWN, "data")],
        Input(shell.ACTIVE_RESULT_ID, "data"), Input(shell.LOCATION_ID, "pathname"),
        State(SHOWN, "data"),
    )
    def _render(active, pathname, shown):
        key = shell.result_key_of(active)
        if not shell.needs_render(PANEL, pathname, ctx.triggered_id, key, shown):
            raise PreventUpdate
        out = diagnostics_outputs(results_mod.get_results(app), active)
        return [out[i] for i in order] + [key]
