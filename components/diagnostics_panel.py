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
import threading
from collections import OrderedDict
from typing import Any, Callable

import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from execal.components import figures
from execal.components import impact_figures as F
from execal.components import results as results_mod

log = logging.getLogger(__name__)

PANEL = "diagnostics"
TITLE = "Diagnostics"


def _id(name: str) -> str:
    return f"{name}-{PANEL}"


STATUS = _id("status")
PRED_ACTUAL = _id("pred-actual")
COST_PARTICIPATION = _id("cost-participation")
RESID_FITTED = _id("resid-fitted")
RESID_TIME = _id("resid-time")
RESID_PARTICIPATION = _id("resid-participation")
HISTOGRAM = _id("histogram")
QQ = _id("qq")
PARAMS = _id("params")
METRICS = _id("metrics")
SAMPLES = _id("samples")
SEGMENTS = _id("segments")
SEGMENT_TABLES = _id("segment-tables")
SHOWN = _id("shown")    # dcc.Store: the result key the panel's figures were drawn for

GRAPHS = (PRED_ACTUAL, COST_PARTICIPATION, RESID_FITTED, RESID_TIME, RESID_PARTICIPATION, HISTOGRAM, QQ,
          SAMPLES, SEGMENTS)
CACHE_ITEMS = 4
NO_RESULT = "No calibration result yet: run one in the Calibrate panel"
EVICTED = "This result is no longer in the server's cache: run the calibration again"
GRAPH_CONFIG = {"displaylogo": False, "responsive": True}


# --- the active result (shared with the Tweak panel) ------------------------------------------

def results_of(app) -> results_mod.ResultStore:
    return results_mod.get_results(app)


def active_key(active: Any) -> str | None:
    """The result key in the ACTIVE_RESULT_ID store's data (the Calibrate panel restores it from the
    session after a reload), or None."""
    key = active.get("key") if isinstance(active, dict) else None
    return key if results_mod.is_result_key(key) else None


def rows_table(rows: list[dict], *, table_id: str | None = None, caption: str | None = None,
               skip: tuple[str, ...] = ()) -> html.Div | dbc.Table:
    """A compact Bootstrap table of `rows` (column names from the first row's keys)."""
    if not rows:
        return html.P(caption or "Nothing to show.", className="execal-empty text-muted mb-0")
    cols = [c for c in rows[0] if c not in skip]
    head = html.Thead(html.Tr([html.Th(c, scope="col") for c in cols]))
    body = html.Tbody([html.Tr([html.Td(r.get(c, "")) for c in cols],
                               **{"data-row": str(r.get("key", r.get(cols[0], "")))}) for r in rows])
    parts = [head, body]
    if caption:
        parts.insert(0, html.Caption(caption, className="small text-muted"))
    extra = {"id": table_id} if table_id else {}
    return dbc.Table(parts, size="sm", striped=True, bordered=False, hover=True,
                     className="execal-table mb-0", **extra)


# --- what the panel shows, per result -----------------------------------------------------------


class _LRU:
    """A tiny per-process LRU (each gunicorn worker prepares a result once)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

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


_prepared = _LRU(CACHE_ITEMS)


def participation_label(kind: str) -> str:
    return "participation Q/ADV" if kind == "adv" else "participation Q/V (volume during the order)"


def build_diagnostics(result, *, max_points: int = F.MAX_SCATTER_POINTS) -> dict:
    """Every figure and table of the panel for one result (a CalibrationResult or SegmentedResult);
    scatters draw at most `max_points` orders."""
    view = F.view_of(result)
    index = F.scatter_index(view, max_points)
    residual = view.residual_bps
    tails = view.residual_tails
    y_range = F.central_range(residual, extra=(0.0,), quantiles=tails) if tails else None
    p_bins = F.log_bins(view.participation)
    time_bins = (F.linear_bins(view.time_ns.astype(np.float64)) if view.time_ns is not None else None)
    metric_columns = F.result_metric_columns(result)
    segmented = hasattr(result, "segments")
    seg_tables: Any
    if segmented:
        seg_tables = html.Div([
            rows_table(F.segment_test_rows(result.test or {}), caption="Do the segments share the parameters?"),
            html.Div(className="mb-2"),
            rows_table(F.segment_rows(result), caption="Parameters per segment (95 % CI)"),
        ])
    else:
        seg_tables = html.P("Calibrate with a segmentation (e.g. by venue) to compare segments.",
                            className="execal-empty text-muted mb-0")
    return {
        STATUS: status_component(result),
        PRED_ACTUAL: F.predicted_vs_actual_figure(view, index),
        COST_PARTICIPATION: F.cost_vs_participation_figure(
            F.participation_series(view, p_bins), participation_label=participation_label(view.participation_kind)),
        RESID_FITTED: F.residual_scatter_figure(view.predicted_bps, residual, index, x_title="predicted cost (bps)",
                                                bins=F.linear_bins(view.predicted_bps), y_range=y_range),
        RESID_TIME: F.residual_scatter_figure(view.time_ns, residual, index, x_title="time (UTC)", bins=time_bins,
                                              time_x=True, y_range=y_range,
                                              empty_message="No timestamps in the data: no residuals over time"),
        RESID_PARTICIPATION: F.residual_scatter_figure(view.participation, residual, index, log_x=True,
                                                       x_title=f"{participation_label(view.participation_kind)} (log)",
                                                       bins=p_bins, y_range=y_range),
        HISTOGRAM: F.residual_histogram_figure(view),
        QQ: F.qq_figure(view),
        PARAMS: rows_table(F.parameter_rows(result), table_id=_id("params-table")),
        METRICS: rows_table(F.metrics_rows(metric_columns), table_id=_id("metrics-table")),
        SAMPLES: F.sample_comparison_figure(metric_columns),
        SEGMENTS: F.segment_parameter_figure(result if segmented else None),
        SEGMENT_TABLES: seg_tables,
    }


def status_component(result) -> dbc.Alert:
    """The optimizer's verdict, prominent: green converged, amber with warnings, red not converged."""
    s = F.status_summary(result)
    pooled = getattr(result, "pooled", result)
    n_in = pooled.n_train
    n_out = int(pooled.is_train.shape[0]) - n_in
    seg = f"; {len(result.segments)} segments by {', '.join(result.by)}" if hasattr(result, "segments") else ""
    facts = (f"{pooled.model.label}: {pooled.model.formula} — {n_in:,} orders in-sample, "
             f"{n_out:,} out-of-sample{seg}")
    children = [html.Strong(s["headline"], className="execal-status-headline d-block"),
                html.Div(facts, className="small")]
    if s["details"]:
        children.append(html.Ul([html.Li(d) for d in s["details"]], className="small mb-0 mt-1"))
    return html.Div(dbc.Alert(children, color=s["level"], className="mb-0 execal-status"),
                    id=_id("status-alert"), **{"data-level": s["level"]})


def empty_outputs(message: str, *, level: str = "secondary") -> dict:
    out = {g: figures.empty_figure(message) for g in GRAPHS}
    out[STATUS] = html.Div(dbc.Alert(message, color=level, className="mb-0 execal-status"),
                           id=_id("status-alert"),
                           **{"data-level": "empty" if level == "secondary" else level})
    for t in (PARAMS, METRICS, SEGMENT_TABLES):
        out[t] = html.P(message, className="execal-empty text-muted mb-0")
    return out


def needs_render(shown_here: bool, trigger: Any, active: Any, shown: Any, location_id: str) -> bool:
    """Whether the render callback should draw: only while the panel is on screen (hidden, it waits for
    the user to open it), and on opening only when the figures are of another result than the active one."""
    if not shown_here:
        return False
    return not (trigger == location_id and shown == active_key(active))


def diagnostics_outputs(results: results_mod.ResultStore, active: Any) -> dict:
    """The callback's body: {output id: value} for the active result, or designed empty states."""
    key = active_key(active)
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


def _graph(graph_id: str, height: int = F.FIGURE_HEIGHT) -> dcc.Loading:
    return dcc.Loading(dcc.Graph(id=graph_id, figure=figures.empty_figure(NO_RESULT), config=GRAPH_CONFIG,
                                 style={"height": f"{height}px"}), type="circle", delay_show=300)


def _card(title: str, body, about: str | None = None, width: dict | None = None) -> dbc.Col:
    header = [html.H2(title, className="h6 mb-0")]
    if about:
        header.append(html.Small(about, className="text-muted"))
    return dbc.Col(dbc.Card([dbc.CardHeader(header), dbc.CardBody(body, className="p-2")], className="mb-3 h-100"),
                   className="mb-3", **(width or {"lg": 6}))


def layout(app) -> html.Div:
    empty = html.P(NO_RESULT, className="execal-empty text-muted mb-0")
    return html.Div([
        dcc.Store(id=SHOWN, storage_type="memory"),
        dcc.Loading(html.Div(dbc.Alert(NO_RESULT, color="secondary", className="mb-0"), id=STATUS),
                    type="dot", delay_show=300),
        html.Div(className="mb-3"),
        dbc.Row([
            _card("Predicted vs actual cost", _graph(PRED_ACTUAL),
                  "each order; colour = venue; dashed = perfect prediction"),
            _card("Cost vs participation", _graph(COST_PARTICIPATION),
                  "binned mean cost ± standard error, and the fitted curve of each segment"),
        ]),
        dbc.Row([
            _card("Residuals vs fitted", _graph(RESID_FITTED), width={"lg": 4}),
            _card("Residuals vs time", _graph(RESID_TIME), width={"lg": 4}),
            _card("Residuals vs participation", _graph(RESID_PARTICIPATION), width={"lg": 4}),
        ]),
        dbc.Row([
            _card("Residual distribution", _graph(HISTOGRAM), "histogram and the noise model the weights imply"),
            _card("Normal QQ plot", _graph(QQ), "standardised residuals; heavy tails bend away from the line"),
        ]),
        dbc.Row([
            _card("Parameters", dcc.Loading(html.Div(empty, id=PARAMS), type="dot", delay_show=300),
                  "estimate, sandwich standard error and confidence intervals"),
            _card("Metrics", dcc.Loading(html.Div(empty, id=METRICS), type="dot", delay_show=300),
                  "in-sample, out-of-sample (held-out latest rows) and walk-forward"),
        ]),
        dbc.Row([
            _card("In- vs out-of-sample", _graph(SAMPLES), width={"lg": 4}),
            _card("Segments", [_graph(SEGMENTS),
                               dcc.Loading(html.Div(empty, id=SEGMENT_TABLES, className="mt-2"),
                                           type="dot", delay_show=300)],
                  "each segment's parameters with CIs, and the test that they are equal", width={"lg": 8}),
        ]),
    ], className="execal-diagnostics-panel")


# --- callbacks ----------------------------------------------------------------------------------

OUTPUT_PROPS = {STATUS: "children", PARAMS: "children", METRICS: "children", SEGMENT_TABLES: "children",
                **{g: "figure" for g in GRAPHS}}


def register_callbacks(app) -> None:
    from execal.components.layout import LOCATION_ID, is_shown

    order = list(OUTPUT_PROPS)

    @app.callback(
        [Output(i, OUTPUT_PROPS[i]) for i in order] + [Output(SHOWN, "data")],
        Input(results_mod.ACTIVE_RESULT_ID, "data"), Input(LOCATION_ID, "pathname"),
        State(SHOWN, "data"),
    )
    def _render(active, pathname, shown):
        if not needs_render(is_shown(PANEL, pathname), ctx.triggered_id, active, shown, LOCATION_ID):
            raise PreventUpdate
        out = diagnostics_outputs(results_of(app), active)
        return [out[i] for i in order] + [active_key(active)]
