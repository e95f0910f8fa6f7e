"""Pure builders for the Diagnostics and Tweak panels: a calibration result (or its arrays) in, go.Figure out.

Nothing here imports Dash. A result is first shaped into a `ResultView` (flat arrays: observed,
predicted, participation, time, weights, venue and segment codes), once per result; every figure
builder then reads a view and returns a `go.Figure`, and every table builder returns plain rows, so
both are tested without a server. The numerics are limited to shaping data for display: binned means,
histograms, quantiles and the downsampling of scatters.

Scale: a million fills never reach the browser. Scatters draw at most `MAX_SCATTER_POINTS` rows chosen
by `downsample_index` (a random sample plus the extremes of the arrays that matter, so outliers stay
visible) and switch to WebGL (`Scattergl`) beyond `SCATTERGL_THRESHOLD` points; coordinates travel as
float32 typed arrays (plotly serialises numpy arrays as base64), times as epoch milliseconds. Binned
statistics, histograms and QQ quantiles use every row, server-side.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from execal.components.figures import empty_figure, plain_verdict, user_text, user_texts

SCATTERGL_THRESHOLD = 10_000          # points in one figure beyond which scatters use WebGL
MAX_SCATTER_POINTS = 20_000           # rows a scatter draws at most
EXTREME_SHARE = 0.2                   # share of the scatter budget reserved for the extremes
PARTICIPATION_BINS = 24
RESIDUAL_BINS = 30                    # bins of the binned-mean line on residual scatters
HISTOGRAM_BINS = 80
HISTOGRAM_TAIL = 0.005                # histogram range: [0.5 %, 99.5 %] quantiles; the rest is counted
MIXTURE_SAMPLE = 4_000                # rows whose noise scales make the noise-model mixture
QQ_POINTS = 400
MIN_BIN_COUNT = 10                    # bins with fewer rows are not drawn (their mean is noise)
MAD_TO_SD = 1.482602218505602         # 1/Φ⁻¹(3/4): MAD of a normal sample → its standard deviation
FIGURE_HEIGHT = 330
PALETTE = ("#0d6efd", "#fd7e14", "#198754", "#6f42c1", "#d63384", "#20c997", "#dc3545", "#6c757d",
           "#0dcaf0", "#ffc107")
NO_COST = "No observed costs: the data has no cost_bps (or side, arrival and execution prices)"
METRIC_LABELS = (
    ("n", "Orders"),
    ("rmse_bps", "RMSE (bps)"),
    ("mae_bps", "MAE (bps)"),
    ("median_abs_error_bps", "Median |error| (bps)"),
    ("bias_bps", "Bias (bps, + = over-predicts)"),
    ("r2", "R²"),
    ("z_mean", "z mean"),
    ("z_std", "z std"),
    ("z_rms", "z RMS"),
)


# plotly_white's look, reduced to what these figures use: assigning the full template deep-copies it
# (~10 ms a figure), which is most of a figure's build time
TEMPLATE = go.layout.Template(layout={
    "paper_bgcolor": "white", "plot_bgcolor": "white", "font": {"color": "#2a3f5f"},
    "hoverlabel": {"align": "left"}, "colorway": list(PALETTE),
    "xaxis": {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "zerolinecolor": "#EBF0F8", "automargin": True,
              "ticks": "", "zerolinewidth": 2},
    "yaxis": {"gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "zerolinecolor": "#EBF0F8", "automargin": True,
              "ticks": "", "zerolinewidth": 2},
})


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def format_number(value: Any, digits: int = 4) -> str:
    """A table cell: '—' for missing / NaN, integers with thousands separators, floats to `digits`."""
    if value is None:
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    v = float(value)
    if not math.isfinite(v):
        return "—"
    return f"{v:.{digits}g}"


# --- downsampling -----------------------------------------------------------------------------


def downsample_index(n: int, max_points: int = MAX_SCATTER_POINTS, *,
                     extremes: Sequence[np.ndarray] = (), extreme_share: float = EXTREME_SHARE,
                     seed: int = 0) -> np.ndarray:
    """Sorted row positions (int64) a scatter draws: all rows when n ≤ max_points, else the lowest and
    highest values of each array in `extremes` (NaN ignored) plus a seeded uniform sample of the rest.

    The extremes are what a quant looks for in a scatter (the worst misses, the largest orders); a
    plain random sample would drop them first.
    """
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    picked = []
    if extremes:
        k = max(1, int(max_points * extreme_share) // (2 * len(extremes)))
        for values in extremes:
            a = np.asarray(values, dtype=np.float64)
            if a.shape[0] != n:
                raise ValueError(f"extremes array has {a.shape[0]} values for {n} rows")
            finite = np.isfinite(a)
            n_finite = int(finite.sum()) if not finite.all() else n
            kk = min(k, n_finite // 2)
            if kk == 0:
                continue
            if n_finite < n:   # NaN is no extreme: park it at an ordinary value
                a = np.where(finite, a, a[np.argmax(finite)])
            # one partition puts the kk smallest first and the kk largest last
            part = np.argpartition(a, (kk - 1, n - kk))
            picked += [part[:kk], part[n - kk:]]
    chosen = np.unique(np.concatenate(picked)) if picked else np.empty(0, dtype=np.int64)
    budget = max_points - chosen.size
    if budget > 0:
        rng = np.random.default_rng(seed)
        # draw a few more than needed, so enough remain after removing rows already chosen
        draw = rng.choice(n, size=min(n, budget + chosen.size), replace=False)
        draw = draw[~np.isin(draw, chosen)][:budget]
        chosen = np.concatenate([chosen, draw])
    return np.sort(chosen.astype(np.int64))


# --- the view of a result ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ResultView:
    """What the diagnostics read from a result, as flat arrays over the result's usable rows."""
    observed_bps: np.ndarray
    predicted_bps: np.ndarray
    participation: np.ndarray
    is_train: np.ndarray
    residual_weights: np.ndarray | None          # multiplies a residual (1/expected noise, a column)
    weights: str                                  # "noise" | "none" | "column"
    expected_noise_bps: np.ndarray | None = None
    time_ns: np.ndarray | None = None
    quantity: np.ndarray | None = None
    order_id: Any = None                          # array-like of strings, or None
    venue: tuple[np.ndarray, tuple[str, ...]] | None = None      # (codes, labels), -1 = missing
    segment: tuple[np.ndarray, tuple[str, ...]] | None = None    # (codes, labels) of fitted segments
    participation_kind: str = "adv"
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return int(self.observed_bps.shape[0])

    @property
    def residual_bps(self) -> np.ndarray:
        """observed − predicted (the result's sign convention)."""
        if "residual" not in self._cache:
            self._cache["residual"] = self.observed_bps - self.predicted_bps
        return self._cache["residual"]

    def _cached(self, key: str, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def weighted_residual(self) -> np.ndarray:
        """residual × weight (the quantity the fit's loss sees; NaN where the weight is not > 0)."""
        def make():
            if self.residual_weights is None:
                return self.residual_bps
            w = self.residual_weights
            with np.errstate(invalid="ignore"):
                return np.where(np.isfinite(w) & (w > 0), self.residual_bps * w, np.nan)
        return self._cached("weighted", make)

    @property
    def noise_scale(self) -> float:
        """Robust common scale s of the weighted residuals (see `noise_scale`)."""
        return self._cached("noise_scale", lambda: noise_scale(self.weighted_residual))

    @property
    def residual_tails(self) -> tuple[float, float] | None:
        """The [HISTOGRAM_TAIL, 1 − HISTOGRAM_TAIL] quantiles of the finite residuals (None: none)."""
        def make():
            r = self.residual_bps[np.isfinite(self.residual_bps)]
            return tuple(float(q) for q in np.quantile(r, [HISTOGRAM_TAIL, 1 - HISTOGRAM_TAIL])) if r.size else None
        return self._cached("tails", make)

    def with_predicted(self, predicted_bps: np.ndarray) -> "ResultView":
        """The same rows with other predictions (a tweak): shares every other array, no copy."""
        return ResultView(self.observed_bps, predicted_bps, self.participation, self.is_train,
                          self.residual_weights, self.weights, self.expected_noise_bps, self.time_ns,
                          self.quantity, self.order_id, self.venue, self.segment,
                          self.participation_kind)


def _residual_weights(result) -> np.ndarray | None:
    f = result.features
    if result.weights == "noise":
        return 1.0 / f.expected_noise_bps
    if result.weights == "column":
        column = (result.settings or {}).get("weight_column")
        return f.extra.get(column) if column else None
    return None


def result_view(result, *, predicted_bps: np.ndarray | None = None,
                is_train: np.ndarray | None = None) -> ResultView:
    """The view of a `CalibrationResult` (optionally with other predictions or another train mask:
    a hand-set result from `Calibrator.fix` marks every row as training)."""
    f = result.features
    observed = f.cost_bps if f.cost_bps is not None else np.full(f.n, np.nan)
    return ResultView(
        observed_bps=observed,
        predicted_bps=result.predicted_bps if predicted_bps is None else predicted_bps,
        participation=f.participation,
        is_train=result.is_train if is_train is None else is_train,
        residual_weights=_residual_weights(result), weights=result.weights,
        expected_noise_bps=f.expected_noise_bps, time_ns=f.timestamp_ns, quantity=f.quantity,
        order_id=f.labels.get("order_id"), venue=f.group("venue"),
        participation_kind=result.participation)


def segmented_view(segmented) -> ResultView:
    """The view of a `SegmentedResult`: the pooled rows, each predicted by its own segment's fit
    (and split into train / test as that segment's fit split it)."""
    pooled = segmented.pooled
    rows = pooled.features.row_index
    predicted = np.array(pooled.predicted_bps, dtype=np.float64)
    is_train = np.array(pooled.is_train, dtype=bool)
    codes = np.full(rows.shape[0], -1, dtype=np.int64)
    labels = []
    for j, seg in enumerate(segmented.segments):
        labels.append(segment_name(seg.key))
        seg_rows = seg.result.features.row_index
        pos = np.searchsorted(rows, seg_rows)
        pos = np.clip(pos, 0, max(rows.shape[0] - 1, 0))
        found = rows[pos] == seg_rows if rows.shape[0] else np.zeros(seg_rows.shape[0], dtype=bool)
        predicted[pos[found]] = np.asarray(seg.result.predicted_bps)[found]
        is_train[pos[found]] = np.asarray(seg.result.is_train)[found]
        codes[pos[found]] = j
    base = result_view(pooled, predicted_bps=predicted, is_train=is_train)
    return ResultView(base.observed_bps, predicted, base.participation, is_train, base.residual_weights,
                      base.weights, base.expected_noise_bps, base.time_ns, base.quantity, base.order_id,
                      base.venue, (codes, tuple(labels)), base.participation_kind)


def participation_label(kind: str) -> str:
    """The axis name of participation: Q/ADV, or Q/V with the market volume during the order."""
    return "participation Q/ADV" if kind == "adv" else "participation Q/V (volume during the order)"


def segment_name(key: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in dict(key).items())


def view_of(result) -> ResultView:
    """`segmented_view` for a SegmentedResult, `result_view` for anything else."""
    return segmented_view(result) if hasattr(result, "segments") else result_view(result)


def scatter_index(view: ResultView, max_points: int = MAX_SCATTER_POINTS, seed: int = 0) -> np.ndarray:
    """The rows the scatters of `view` draw: extremes of observed, predicted, residual and participation
    kept. Computed once per result (a tweak moves predictions, not the choice of rows)."""
    return downsample_index(view.n, max_points, seed=seed,
                            extremes=(view.observed_bps, view.predicted_bps, view.residual_bps,
                                      view.participation))


# --- binned statistics ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bins:
    """Rows assigned to bins: `codes` (-1 outside / invalid), bin `centres` and `edges`."""
    codes: np.ndarray
    edges: np.ndarray
    centres: np.ndarray

    @property
    def count(self) -> int:
        return int(self.centres.shape[0])


def log_bins(values: np.ndarray, n_bins: int = PARTICIPATION_BINS) -> Bins:
    """Log-spaced bins over the positive finite values (geometric centres)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v) & (v > 0)
    if not ok.any():
        return Bins(np.full(v.shape[0], -1, dtype=np.int64), np.empty(0), np.empty(0))
    lo, hi = float(v[ok].min()), float(v[ok].max())
    if hi <= lo:
        hi = lo * (1 + 1e-9) + 1e-300
    edges = np.geomspace(lo, hi, n_bins + 1)
    return _assign(v, ok, edges, np.sqrt(edges[:-1] * edges[1:]), log=True)


def linear_bins(values: np.ndarray, n_bins: int = RESIDUAL_BINS) -> Bins:
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return Bins(np.full(v.shape[0], -1, dtype=np.int64), np.empty(0), np.empty(0))
    lo, hi = float(v[ok].min()), float(v[ok].max())
    if hi <= lo:
        hi = lo + max(abs(lo), 1.0) * 1e-9
    edges = np.linspace(lo, hi, n_bins + 1)
    return _assign(v, ok, edges, 0.5 * (edges[:-1] + edges[1:]))


def _assign(v, ok, edges, centres, log: bool = False) -> Bins:
    """Bin codes by arithmetic on equal-width edges (log-width for `log`): a searchsorted over a
    million rows costs several times more."""
    codes = np.full(v.shape[0], -1, dtype=np.int64)
    n_bins = edges.shape[0] - 1
    lo, hi = (np.log(edges[0]), np.log(edges[-1])) if log else (edges[0], edges[-1])
    x = np.log(v[ok]) if log else v[ok]
    position = (x - lo) * (n_bins / (hi - lo))
    codes[ok] = np.clip(position.astype(np.int64), 0, n_bins - 1)   # the last edge belongs to the last bin
    return Bins(codes, edges, centres)


def binned_mean(codes: np.ndarray, values: np.ndarray, n_bins: int,
                mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, mean, standard error of the mean) of `values` per bin, over rows with a bin, a finite
    value and (optionally) `mask`; NaN mean / s.e. where a bin is empty (s.e. NaN below 2 rows)."""
    ok = (codes >= 0) & np.isfinite(values)
    if mask is not None:
        ok &= mask
    c, v = codes[ok], values[ok]
    count = np.bincount(c, minlength=n_bins).astype(np.float64)
    s1 = np.bincount(c, v, minlength=n_bins)
    s2 = np.bincount(c, v * v, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / count
        var = (s2 - s1 * mean) / (count - 1)
        se = np.sqrt(np.clip(var, 0.0, None) / count)
    se[count < 2] = np.nan
    return count, mean, se


@dataclass(frozen=True)
class CurveSeries:
    """One segment's binned observed costs (mean ± s.e.) and model curve(s) over participation bins."""
    name: str
    centres: np.ndarray
    count: np.ndarray
    observed_mean: np.ndarray
    observed_se: np.ndarray
    curves: Mapping[str, np.ndarray]              # label -> mean prediction per bin


def participation_series(view: ResultView, bins: Bins,
                         predictions: Mapping[str, np.ndarray] | None = None) -> list[CurveSeries]:
    """Per segment (or one 'all orders' series): binned observed cost and the binned mean of each
    prediction array in `predictions` (default {"fitted": view.predicted_bps}).

    The model curve is the mean prediction of the orders in each bin, not the formula at one
    'typical' order: the models also depend on volatility, duration and spread, which vary with
    size, so only the bin mean is comparable with the binned observed mean.
    """
    predictions = {"fitted": view.predicted_bps} if predictions is None else predictions
    groups: list[tuple[str, np.ndarray | None]]
    if view.segment is not None and len(view.segment[1]) > 0:
        codes, labels = view.segment
        groups = [(label, codes == j) for j, label in enumerate(labels)]
    else:
        groups = [("all orders", None)]
    out = []
    for name, mask in groups:
        count, mean, se = binned_mean(bins.codes, view.observed_bps, bins.count, mask)
        curves = {label: binned_mean(bins.codes, pred, bins.count, mask)[1]
                  for label, pred in predictions.items()}
        out.append(CurveSeries(name, bins.centres, count, mean, se, curves))
    return out


# --- figures ----------------------------------------------------------------------------------


def _layout(fig: go.Figure, *, x_title: str, y_title: str, height: int = FIGURE_HEIGHT,
            legend: bool = True) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE, height=height, margin={"l": 60, "r": 12, "t": 30, "b": 48},
        xaxis_title=x_title, yaxis_title=y_title, showlegend=legend,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0,
                "font": {"size": 11}},
        hovermode="closest", uirevision="keep")   # keep the user's zoom when a tweak redraws
    return fig


def central_range(values: np.ndarray, tail: float = HISTOGRAM_TAIL, extra: Sequence[float] = (),
                  pad: float = 0.05, quantiles: Sequence[float] | None = None) -> list[float]:
    """Axis range over the [tail, 1 − tail] quantiles of `values` (or the given `quantiles`) and the
    `extra` values, padded."""
    if quantiles is not None:
        lo, hi = quantiles
    else:
        lo, hi = np.quantile(values, [tail, 1 - tail]) if values.size else (0.0, 1.0)
    lo, hi = min([float(lo), *extra]), max([float(hi), *extra])
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return [lo - pad * span, hi + pad * span]


def typed_array(a) -> dict:
    """plotly.js's typed-array spec of float32 values ({"dtype": "f4", "bdata": base64}): what plotly
    makes of a numpy array in a figure, for values sent outside a figure (a Dash Patch)."""
    return {"dtype": "f4", "bdata": base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")}


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _scatter_class(points: int):
    return go.Scattergl if points > SCATTERGL_THRESHOLD else go.Scatter


def _shown_note(shown: int, total: int) -> str:
    if shown >= total:
        return f"{total:,} orders"
    return f"{shown:,} of {total:,} orders drawn (random sample + extremes); statistics use all"


def _note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=1, y=0, xanchor="right", yanchor="bottom",
                       showarrow=False, font={"size": 10, "color": "#6c757d"})


def hover_columns(view: ResultView, index: np.ndarray) -> np.ndarray:
    """customdata of the drawn rows: [order id, time (UTC, to the second), size]; strings, so a hover
    names the order as the user knows it (the id escaped: plotly reads markup in hover text)."""
    k = index.shape[0]
    if view.order_id is not None:
        ids = np.asarray(view.order_id.take(index) if hasattr(view.order_id, "take")
                         else np.asarray(view.order_id)[index], dtype=object)
        ids = user_texts(np.where(ids == None, "—", ids))   # noqa: E711  (elementwise)
    else:
        ids = np.full(k, "—", dtype=object)
    if view.time_ns is not None:
        times = np.char.replace(np.datetime_as_string(view.time_ns[index].astype("datetime64[ns]"),
                                                      unit="s"), "T", " ")
    else:
        times = np.full(k, "—")
    sizes = (np.char.mod("%.6g", view.quantity[index]) if view.quantity is not None
             else np.full(k, "—"))
    return np.column_stack([ids, times, sizes]).astype(object)


HOVER_ORDER = ("order %{customdata[0]}<br>%{customdata[1]} UTC<br>size %{customdata[2]}<br>"
               "predicted %{x:.3g} bps<br>actual %{y:.3g} bps<extra>%{fullData.name}</extra>")


@dataclass(frozen=True, eq=False)
class ScatterPlan:
    """What a predicted-vs-actual scatter draws, fixed per result (a tweak moves only the x values):
    the rows of each trace (one per venue), their hover columns, the y-axis range."""
    names: tuple[str, ...]
    rows: tuple[np.ndarray, ...]          # per trace: row positions in the view
    hover: tuple[np.ndarray, ...]         # per trace: customdata (order id, time, size)
    y_range: list[float]
    total: int                            # rows with an observed cost (all of them count, drawn or not)

    @property
    def drawn(self) -> int:
        return int(sum(r.shape[0] for r in self.rows))


def scatter_plan(view: ResultView, index: np.ndarray | None = None) -> ScatterPlan | None:
    """The plan of `predicted_vs_actual_figure` for the rows in `index` (None: no observed cost)."""
    observed_ok = np.isfinite(view.observed_bps)
    if not observed_ok.any():
        return None
    index = np.arange(view.n) if index is None else np.asarray(index)
    index = index[observed_ok[index]]
    custom = hover_columns(view, index)
    if view.venue is not None:
        codes = view.venue[0][index]
        groups = [(str(label), codes == j) for j, label in enumerate(view.venue[1])]
        groups.append(("(no venue)", codes < 0))
    else:
        groups = [("orders", np.ones(index.shape[0], dtype=bool))]
    groups = [(name, m) for name, m in groups if m.any()]
    # Axes open on the central 99 % of the costs: a few huge misses would otherwise squash the cloud
    # into a line; double-click autoscales to every drawn point, the extremes included.
    return ScatterPlan(names=tuple(n for n, _ in groups), rows=tuple(index[m] for _, m in groups),
                       hover=tuple(custom[m] for _, m in groups),
                       y_range=central_range(view.observed_bps[observed_ok]), total=int(observed_ok.sum()))


def _diagonal(predicted_bps: np.ndarray) -> tuple[float, float]:
    """Ends of the 45° line: the range of every row's prediction (not only the drawn ones), so it
    does not move with the sample."""
    with np.errstate(invalid="ignore"):
        lo, hi = float(np.nanmin(predicted_bps)), float(np.nanmax(predicted_bps))
    return (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else (0.0, 1.0)


def predicted_vs_actual_figure(view: ResultView | None, index: np.ndarray | None = None, *,
                               plan: ScatterPlan | None = None, title: str | None = None) -> go.Figure:
    """Predicted (x) vs actual (y) cost per order, one colour per venue, with the 45° line; hover names
    the order (id, time, size). Draws the rows in `index` (default: all), or those of `plan`."""
    if view is None:
        return empty_figure("No calibration result yet: run one in the Calibrate panel")
    plan = plan if plan is not None else scatter_plan(view, index)
    if plan is None:
        return empty_figure(NO_COST)
    if not np.isfinite(view.predicted_bps).any():
        return empty_figure("No order has a predicted cost")
    cls = _scatter_class(plan.drawn)
    fig = go.Figure()
    for i, (name, rows, custom) in enumerate(zip(plan.names, plan.rows, plan.hover)):
        fig.add_trace(cls(x=_f32(view.predicted_bps[rows]), y=_f32(view.observed_bps[rows]), mode="markers",
                          name=user_text(name), customdata=custom, hovertemplate=HOVER_ORDER,
                          marker={"size": 4, "opacity": 0.55, "color": colour(i)}))
    lo, hi = _diagonal(view.predicted_bps)
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="45° (perfect)",
                             line={"color": "#212529", "dash": "dash", "width": 1}, hoverinfo="skip"))
    _layout(fig, x_title="predicted cost (bps)", y_title="actual cost (bps)")
    fig.update_yaxes(range=plan.y_range)
    if title:
        fig.update_layout(title={"text": user_text(title), "font": {"size": 13}})
    _note(fig, _shown_note(plan.drawn, plan.total))
    return fig


def predicted_vs_actual_update(predicted_bps: np.ndarray, plan: ScatterPlan) -> dict[int, dict]:
    """What changes in `predicted_vs_actual_figure(plan=plan)` when only the predictions change:
    {trace index: {property: values}} (the x of each venue's trace and the 45° line), so a tweak
    sends a few hundred kB instead of the whole figure with its hover texts."""
    out = {i: {"x": typed_array(predicted_bps[rows])} for i, rows in enumerate(plan.rows)}
    lo, hi = _diagonal(predicted_bps)
    out[len(plan.rows)] = {"x": [lo, hi], "y": [lo, hi]}
    return out


def cost_vs_participation_figure(series: Sequence[CurveSeries] | None, *,
                                 participation_label: str = "participation Q/V",
                                 curve_styles: Mapping[str, Mapping] | None = None) -> go.Figure:
    """Binned mean observed cost ± standard error (markers) against participation (log x), with each
    model curve (lines: the mean prediction per bin) of every segment in the segment's colour; curve
    styles by label (`curve_styles`, e.g. dotted 'fitted', solid 'tweaked'), named in the hover."""
    if not series:
        return empty_figure("No calibration result yet: run one in the Calibrate panel")
    styles = {"fitted": {"dash": "solid"}, **(curve_styles or {})}
    fig = go.Figure()
    drawn = 0
    for i, s, show in _drawn_series(series):
        drawn += 1
        c = colour(i)
        name = user_text(s.name)          # a segment: the user's venue, symbol, ...
        fig.add_trace(go.Scatter(
            x=s.centres[show], y=s.observed_mean[show], mode="markers", name=name, meta=name,
            legendgroup=name, marker={"color": c, "size": 7},
            error_y={"type": "data", "array": np.nan_to_num(s.observed_se[show]), "visible": True,
                     "color": c, "thickness": 1.2},
            customdata=s.count[show],
            hovertemplate="Q/V %{x:.3g}<br>mean cost %{y:.3g} bps<br>%{customdata:,} orders<extra>%{meta}</extra>"))
        for label, curve in s.curves.items():
            style = {"color": c, "width": 2, "dash": "dot", **styles.get(label, {})}
            fig.add_trace(go.Scatter(
                x=s.centres[show], y=curve[show], mode="lines", name=f"{name}: {label}", meta=name,
                legendgroup=name, showlegend=False, line=style,
                hovertemplate="Q/V %{x:.3g}<br>" + label + " %{y:.3g} bps<extra>%{meta}</extra>"))
    if drawn == 0:
        if all(not np.any(s.count) for s in series):
            return empty_figure(NO_COST)
        return empty_figure(f"Too few orders per participation bin (fewer than {MIN_BIN_COUNT})")
    _layout(fig, x_title=f"{participation_label} (log scale)", y_title="cost (bps)")
    fig.update_xaxes(type="log")
    return fig


def _drawn_series(series: Sequence[CurveSeries]):
    """(colour index, series, bins shown) of the series `cost_vs_participation_figure` draws, in order:
    each adds a markers trace, then one line per curve."""
    for i, s in enumerate(series):
        show = s.count >= MIN_BIN_COUNT
        if show.any():
            yield i, s, show


def cost_vs_participation_update(series: Sequence[CurveSeries], label: str) -> dict[int, dict]:
    """What changes in `cost_vs_participation_figure(series)` when only the curve `label` changes:
    {trace index: {"y": values}} (a tweak moves the tweaked curve; the binned costs stay)."""
    out, trace = {}, 0
    for _, s, show in _drawn_series(series):
        trace += 1                                   # the markers
        for name, curve in s.curves.items():
            if name == label:
                out[trace] = {"y": [None if not np.isfinite(v) else float(v) for v in curve[show]]}
            trace += 1
    return out


def bin_means(codes_or_dump: np.ndarray, n_bins: int, values: np.ndarray, count: np.ndarray) -> np.ndarray | None:
    """Mean of `values` per bin in one bincount pass, with out-of-range rows coded `n_bins` (a dump bin)
    and `count` the rows per bin; None when a value is not finite (use `binned_mean` then)."""
    sums = np.bincount(codes_or_dump, weights=values, minlength=n_bins + 1)[:n_bins]
    if not np.isfinite(sums).all():
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / count


def residual_scatter_figure(x: np.ndarray | None, residual: np.ndarray, index: np.ndarray, *,
                            x_title: str, bins: Bins | None = None, log_x: bool = False,
                            time_x: bool = False, empty_message: str = "No data",
                            y_range: Sequence[float] | None = None) -> go.Figure:
    """Residual (observed − predicted, bps) of the drawn rows against `x`, a zero line, and the binned
    mean residual over all rows (where a systematic miss shows)."""
    if x is None:
        return empty_figure(empty_message)
    xv = np.asarray(x, dtype=np.float64) if not time_x else np.asarray(x)
    ok_all = np.isfinite(residual) & (np.isfinite(xv) if not time_x else np.ones(residual.shape[0], bool))
    if log_x:
        ok_all &= xv > 0
    if not ok_all.any():
        return empty_figure(NO_COST if not np.isfinite(residual).any() else empty_message)
    index = index[ok_all[index]]
    if time_x:
        # epoch milliseconds on a date axis: an f8 typed array instead of one ISO string per point
        xs = xv[index].astype(np.float64) / 1e6
    else:
        xs = _f32(xv[index])
    cls = _scatter_class(index.shape[0])
    fig = go.Figure(cls(x=xs, y=_f32(residual[index]), mode="markers", name="orders",
                        marker={"size": 3, "opacity": 0.45, "color": PALETTE[0]},
                        hovertemplate="%{x}<br>residual %{y:.3g} bps<extra></extra>"))
    if bins is not None and bins.count:
        count, mean, _ = binned_mean(bins.codes, residual, bins.count, ok_all)
        show = count >= MIN_BIN_COUNT
        centres = bins.centres / 1e6 if time_x else bins.centres
        fig.add_trace(go.Scatter(x=centres[show], y=mean[show], mode="lines+markers", name="binned mean",
                                 line={"color": "#dc3545", "width": 2}, marker={"size": 5},
                                 hovertemplate="%{x}<br>mean residual %{y:.3g} bps<extra></extra>"))
    fig.add_hline(y=0, line={"color": "#212529", "width": 1, "dash": "dash"})
    _layout(fig, x_title=x_title, y_title="residual (bps)")
    # the central 99 % (as in predicted vs actual); double-click shows every drawn point
    fig.update_yaxes(range=list(y_range) if y_range is not None else central_range(residual[ok_all], extra=(0.0,)))
    if log_x:
        fig.update_xaxes(type="log")
    if time_x:
        fig.update_xaxes(type="date")
    _note(fig, _shown_note(index.shape[0], int(ok_all.sum())))
    return fig


# --- the noise model --------------------------------------------------------------------------


def noise_scale(weighted: np.ndarray) -> float:
    """Robust common scale s of the weighted residuals (1.4826·MAD): the noise model is
    residualᵢ ~ N(0, (s / wᵢ)²). MAD, because robust losses are chosen for data with outliers."""
    w = weighted[np.isfinite(weighted)]
    if w.size == 0:
        return float("nan")
    return float(MAD_TO_SD * np.median(np.abs(w - np.median(w))))


def residual_histogram_figure(view: ResultView | None, *, bins: int = HISTOGRAM_BINS,
                              sample: int = MIXTURE_SAMPLE, seed: int = 0) -> go.Figure:
    """Histogram of the residuals (bps, all rows) with the noise model the weights imply: a mixture of
    N(0, (s/wᵢ)²) over the orders (one normal N(0, s²) without weights), as expected counts per bin."""
    if view is None:
        return empty_figure("No calibration result yet: run one in the Calibrate panel")
    wr = view.weighted_residual
    ok = np.isfinite(wr)
    w = view.residual_weights
    if ok.sum() < 2:
        return empty_figure(NO_COST if not ok.any() else "Too few residuals for a histogram")
    r_ok = view.residual_bps[ok]
    lo, hi = view.residual_tails
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    counts, edges = np.histogram(r_ok, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    width = float(edges[1] - edges[0])
    s = view.noise_scale
    fig = go.Figure(go.Bar(x=centres, y=counts, width=width, name="residuals", marker_color="#9ec5fe",
                           hovertemplate="%{x:.3g} bps: %{y:,} orders<extra></extra>"))
    if np.isfinite(s) and s > 0:
        if w is None:
            density = stats.norm.pdf(centres, scale=s)
            label = f"noise model N(0, s²), s = {s:.3g} bps"
        else:
            scales = s / w[ok]
            if scales.shape[0] > sample:
                scales = np.random.default_rng(seed).choice(scales, sample, replace=False)
            density = (stats.norm.pdf(centres[:, None] / scales[None, :]) / scales[None, :]).mean(axis=1)
            label = f"noise model: mixture of N(0, (s/wᵢ)²), s = {s:.3g}"
        fig.add_trace(go.Scatter(x=centres, y=density * r_ok.shape[0] * width, mode="lines", name=label,
                                 line={"color": "#dc3545", "width": 2},
                                 hovertemplate="%{x:.3g} bps: %{y:,.0f} expected<extra></extra>"))
    _layout(fig, x_title="residual = actual − predicted (bps)", y_title="orders")
    fig.update_layout(bargap=0)
    outside = int(((r_ok < lo) | (r_ok > hi)).sum())
    _note(fig, f"{outside:,} orders beyond the shown range ({HISTOGRAM_TAIL:.1%} each tail)")
    return fig


def qq_points(z: np.ndarray, points: int = QQ_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """(theoretical normal quantiles, sample quantiles) of z: every order up to `points`, else quantiles
    at probabilities evenly spaced on the normal scale (dense in the tails, where the misfit shows),
    the extreme orders included."""
    z = z[np.isfinite(z)]
    n = z.shape[0]
    if n == 0:
        return np.empty(0), np.empty(0)
    if n <= points:
        p = (np.arange(1, n + 1) - 0.5) / n
        return stats.norm.ppf(p), np.sort(z)
    lo, hi = stats.norm.ppf(0.5 / n), stats.norm.ppf(1 - 0.5 / n)
    p = stats.norm.cdf(np.linspace(lo, hi, points))
    # the sample quantile at plotting position p = (i − 0.5)/n is the i-th order statistic
    sample = np.quantile(z, np.clip((p * n - 0.5) / (n - 1), 0.0, 1.0))
    return stats.norm.ppf(p), sample


def qq_figure(view: ResultView | None) -> go.Figure:
    """Normal QQ plot of the standardised residuals (weighted residual / s): on the line if the noise
    is normal with the noise model's scale; heavy tails bend away at the ends."""
    if view is None:
        return empty_figure("No calibration result yet: run one in the Calibrate panel")
    wr = view.weighted_residual
    s = view.noise_scale
    if not np.isfinite(wr).any():
        return empty_figure(NO_COST)
    if not (np.isfinite(s) and s > 0):
        return empty_figure("The residuals have no spread: nothing to compare with a normal")
    theo, sample = qq_points(wr / s)
    fig = go.Figure(go.Scatter(x=theo, y=sample, mode="markers", name="standardised residuals",
                               marker={"size": 4, "color": PALETTE[0]},
                               hovertemplate="normal %{x:.3g}<br>sample %{y:.3g}<extra></extra>"))
    lim = float(np.max(np.abs(theo))) if theo.size else 1.0
    fig.add_trace(go.Scatter(x=[-lim, lim], y=[-lim, lim], mode="lines", name="normal (y = x)",
                             line={"color": "#dc3545", "dash": "dash", "width": 1}, hoverinfo="skip"))
    what = "z" if view.weights == "noise" else ("weighted residual" if view.residual_weights is not None
                                                 else "residual")
    _layout(fig, x_title="normal quantile", y_title=f"{what} / s quantile")
    return fig


# --- tables -----------------------------------------------------------------------------------


@plain_verdict
def status_summary(result) -> dict:
    """The optimizer's verdict, for the banner: {"level": success|warning|danger, "headline", "details"}."""
    pooled = getattr(result, "pooled", result)
    rep = pooled.report
    segments = getattr(result, "segments", ())
    not_converged = [segment_name(s.key) for s in segments if not s.result.report.converged]
    # every warning the result carries: the pooled fit's and each segment's (named)
    details = list(getattr(result, "warnings", rep.warnings))
    if pooled.status == "fixed":
        return {"level": "info", "headline": "Parameters set by hand (no optimisation was run)",
                "details": details}
    iters = f", {rep.iterations} iterations" if rep.iterations is not None else ""
    where = f"{rep.method}, loss {rep.loss}, weights {rep.weights}, {rep.nfev} evaluations{iters}"
    if not rep.converged:
        return {"level": "danger", "headline": f"NOT CONVERGED — status {rep.status}: {rep.message} ({where}). "
                "The parameters are where the optimizer stopped, not an optimum.", "details": details}
    if not_converged:
        details.insert(0, "segment(s) not converged: " + "; ".join(not_converged))
    level = "warning" if (details or rep.active_bounds) else "success"
    return {"level": level, "headline": f"Converged — {rep.message} ({where})", "details": details}


def parameter_rows(result, alpha: float = 0.05) -> list[dict]:
    """One row per model parameter: value, unit, s.e., CI, bootstrap CI (if any), and whether it was
    fixed or sits at a bound."""
    pooled = getattr(result, "pooled", result)
    se, ci = pooled.std_errors, pooled.conf_int(alpha)
    boot = pooled.bootstrap.conf_int(alpha) if pooled.bootstrap is not None else {}
    at_bound = {s.split(" at ")[0] for s in pooled.report.active_bounds}
    units = {p.name: p.unit for p in pooled.model.params}
    level = f"{1 - alpha:.0%}"
    rows = []
    for name, value in pooled.params.items():
        fixed = name not in pooled.free
        row = {"parameter": name, "value": format_number(value, 6), "unit": units.get(name, ""),
               "std err": "—" if fixed else format_number(se[name]),
               f"{level} CI": "—" if fixed else f"[{format_number(ci[name][0])}, {format_number(ci[name][1])}]",
               "status": "fixed" if fixed else ("at bound" if name in at_bound else "fitted")}
        if boot:
            b = boot.get(name)
            row[f"bootstrap {level} CI"] = "—" if b is None else f"[{format_number(b[0])}, {format_number(b[1])}]"
        rows.append(row)
    return rows


def metrics_rows(columns: Mapping[str, Mapping | None]) -> list[dict]:
    """Metric × column table ({"in-sample": metrics, "out-of-sample": metrics or None, ...}); a column
    with no metrics shows '—' (e.g. no held-out rows)."""
    rows = []
    for key, label in METRIC_LABELS:
        row = {"metric": label}
        for col, m in columns.items():
            row[col] = format_number((m or {}).get(key), 4)
        rows.append(row)
    return rows


def result_metric_columns(result) -> dict[str, Mapping | None]:
    pooled = getattr(result, "pooled", result)
    cols = {"in-sample": pooled.in_sample, "out-of-sample": pooled.out_of_sample}
    if pooled.walk_forward and pooled.walk_forward.get("out_of_sample"):
        cols["walk-forward"] = pooled.walk_forward["out_of_sample"]
    return cols


TWEAK_METRICS = ("rmse_bps", "mae_bps", "median_abs_error_bps", "bias_bps", "r2", "z_rms")


def delta_rows(fitted: Mapping[str, Mapping | None], tweaked: Mapping[str, Mapping | None],
               keys: Sequence[str] = TWEAK_METRICS) -> list[dict]:
    """The tweak table, one row per metric: for each sample ("in-sample", "out-of-sample") the fitted
    value, the tweaked value and Δ = tweaked − fitted. Samples without metrics are left out."""
    labels = dict(METRIC_LABELS)
    samples = [s for s in fitted if (fitted.get(s) or tweaked.get(s))]
    short = {"in-sample": "in", "out-of-sample": "out"}
    rows = []
    for key in keys:
        row = {"metric": labels.get(key, key)}
        for sample in samples:
            a, b = (fitted.get(sample) or {}).get(key), (tweaked.get(sample) or {}).get(key)
            tag = short.get(sample, sample)
            row[f"{tag}: fitted"] = format_number(a)
            row[f"{tag}: tweaked"] = format_number(b)
            row[f"{tag}: Δ"] = "—" if a is None or b is None else f"{b - a:+.4g}"
        row["key"] = key
        rows.append(row)
    return rows


def segment_rows(segmented, alpha: float = 0.05) -> list[dict]:
    """Per segment: orders, each free parameter as value [CI], in- and out-of-sample RMSE, converged,
    and the segment's own warnings (a parameter at a bound, few observations, ...)."""
    pooled = segmented.pooled
    out = []
    for name, res in [("pooled", pooled)] + [(segment_name(s.key), s.result) for s in segmented.segments]:
        ci = res.conf_int(alpha)
        row = {"segment": name, "orders": format_number(int(res.is_train.shape[0]))}
        for p in pooled.free:
            row[p] = f"{format_number(res.params[p])} [{format_number(ci[p][0])}, {format_number(ci[p][1])}]"
        row["RMSE in (bps)"] = format_number(res.in_sample.get("rmse_bps"))
        row["RMSE out (bps)"] = format_number((res.out_of_sample or {}).get("rmse_bps"))
        row["converged"] = "yes" if res.report.converged else "NO"
        row["warnings"] = "; ".join(getattr(res, "warnings", res.report.warnings)) or "—"
        out.append(row)
    return out


def segment_test_rows(test: Mapping) -> list[dict]:
    """The equal-coefficients tests (Wald χ², Chow F) as rows with their p-values."""
    rows = []
    wald, chow = test.get("wald"), test.get("chow")
    if wald:
        rows.append({"test": "Wald χ² (sandwich covariances)", "statistic": format_number(wald["statistic"]),
                     "df": str(wald["df"]), "p-value": format_number(wald["p_value"], 3)})
    if chow:
        rows.append({"test": "Chow F (weighted residual sums of squares)",
                     "statistic": format_number(chow["statistic"]), "df": f"{chow['df1']}, {chow['df2']}",
                     "p-value": format_number(chow["p_value"], 3)})
    return rows


def segment_parameter_figure(segmented, alpha: float = 0.05) -> go.Figure:
    """Each free parameter per segment with its CI (error bars), the pooled estimate as a dashed line and
    its CI as a band; the title carries the segment test's p-value."""
    if segmented is None or not hasattr(segmented, "segments"):
        return empty_figure("No segments: calibrate with a segmentation (e.g. by venue) to compare them")
    pooled = segmented.pooled
    names = list(pooled.free)
    if not names or not segmented.segments:
        return empty_figure("No free parameters or no segments to compare")
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names, horizontal_spacing=0.12)
    labels = [user_text(segment_name(s.key)) for s in segmented.segments]     # categories: the user's values
    pooled_ci = pooled.conf_int(alpha)
    for j, p in enumerate(names, start=1):
        values = np.array([s.result.params[p] for s in segmented.segments])
        ci = np.array([s.result.conf_int(alpha)[p] for s in segmented.segments])
        fig.add_trace(go.Scatter(
            x=labels, y=values, mode="markers", name=p, showlegend=False,
            marker={"size": 9, "color": [colour(i) for i in range(len(labels))]},
            error_y={"type": "data", "symmetric": False, "array": np.nan_to_num(ci[:, 1] - values),
                     "arrayminus": np.nan_to_num(values - ci[:, 0]), "thickness": 1.5},
            hovertemplate="%{x}<br>" + p + " = %{y:.4g}<extra></extra>"), row=1, col=j)
        lo, hi = pooled_ci[p]
        if np.isfinite(lo) and np.isfinite(hi):
            fig.add_hrect(y0=lo, y1=hi, fillcolor="#adb5bd", opacity=0.25, line_width=0, row=1, col=j)
        fig.add_hline(y=pooled.params[p], line={"color": "#212529", "dash": "dash", "width": 1}, row=1, col=j)
    test = segmented.test or {}
    parts = []
    if test.get("wald"):
        parts.append(f"Wald p = {format_number(test['wald']['p_value'], 3)}")
    if test.get("chow"):
        parts.append(f"Chow p = {format_number(test['chow']['p_value'], 3)}")
    title = ("H0: " + test.get("hypothesis", "segments share the parameters")
             + (" — " + ", ".join(parts) if parts else ""))
    fig.update_layout(template=TEMPLATE, height=FIGURE_HEIGHT, margin={"l": 50, "r": 12, "t": 70, "b": 60},
                      title={"text": user_text(title), "font": {"size": 12}}, uirevision="keep")
    _note(fig, f"dashed: pooled estimate; band: pooled {1 - alpha:.0%} CI; bars: segment {1 - alpha:.0%} CI")
    return fig


def sample_comparison_figure(columns: Mapping[str, Mapping | None]) -> go.Figure:
    """RMSE, MAE, median |error| and bias in-sample vs out-of-sample (and walk-forward): grouped bars.
    Empty (with the reason) when the calibration held no rows out."""
    held_out = {k: m for k, m in columns.items() if k != "in-sample" and m and m.get("n")}
    if not held_out:
        return empty_figure("No out-of-sample rows: set a test fraction or walk-forward folds in Calibrate")
    keys = (("rmse_bps", "RMSE"), ("mae_bps", "MAE"), ("median_abs_error_bps", "median |error|"),
            ("bias_bps", "bias"))
    fig = go.Figure()
    for i, (name, m) in enumerate(columns.items()):
        if not m or not m.get("n"):
            continue
        values = [m.get(k) for k, _ in keys]
        fig.add_trace(go.Bar(x=[label for _, label in keys], y=[np.nan if v is None else v for v in values],
                             name=f"{name} ({m['n']:,} orders)", marker_color=colour(i),
                             hovertemplate="%{x}: %{y:.4g} bps<extra>" + name + "</extra>"))
    _layout(fig, x_title="", y_title="bps")
    fig.update_layout(barmode="group")
    return fig
