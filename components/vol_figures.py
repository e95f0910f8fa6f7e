"""Pure builders for the Volatility & regimes panel: arrays, frames and volatility results in, go.Figure or rows out.

Nothing here imports Dash and nothing here estimates anything: the fits come from `models/` (realised
estimators, GARCH, Markov regimes, Merton, jump tests), and these functions only shape what they return
for the eye: the price with the most probable regime shaded and the jumps marked, every realised estimator
per period side by side, the GARCH conditional volatility with its forecast, the stacked regime
probabilities, and the tables (convergence, parameters with standard errors, log-likelihoods, regimes).

Scale: a year of 1-minute bars is half a million points a line. Lines keep their shape with
`line_index` (per bucket of consecutive points: the first, last, lowest and highest value, the "M4"
rule, so every spike survives), scatters of markers use `impact_figures.downsample_index` (a sample plus
the extremes), and the regime shading is a step function drawn at its change points only. Values travel
as float32 typed arrays, times as float64 epoch milliseconds on a date axis (never one ISO string per
point).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from execal.components.figures import empty_figure, plain_verdict, user_text
from execal.components.impact_figures import PALETTE, downsample_index, format_number
from execal.models.core.registry import MODELS
from execal.models.vol.regimes import REGIME_NAMES

MAX_LINE_POINTS = 4_000        # points one line sends to the browser at most
MAX_MARKERS = 2_000            # jump markers drawn at most (the largest returns are always kept)
MAX_REGIME_STEPS = 4_000       # change points of the regime shading drawn at most
FIGURE_HEIGHT = 330
PRICE_HEIGHT = 380
DAYS_PER_YEAR = 365.0          # crypto trades 24/7 (as models/realized.py)
NS_PER_MS = 1_000_000
# regimes are sorted by volatility in models/regimes.py (0 the calmest) and named by REGIME_NAMES
REGIME_COLOURS = ("#198754", "#fd7e14", "#dc3545")
REGIME_FILL_ALPHA = 0.16
ESTIMATOR_LABELS = {
    "close_to_close": "close-to-close",
    "realized_variance": "realised variance",
    "bipower": "bipower",
    "parkinson": "Parkinson",
    "garman_klass": "Garman–Klass",
    "rogers_satchell": "Rogers–Satchell",
    "yang_zhang": "Yang–Zhang",
}
MODEL_LABELS = {"realized": "Realised volatility", "garch": "GARCH(1,1)", "gjr": "GJR-GARCH(1,1,1)",
                "egarch": "EGARCH(1,1,1)", "markov": "Markov regimes", "merton": "Merton jump-diffusion"}


def model_label(name: str) -> str:
    """The short label of a volatility model (the registry's for a model not listed above)."""
    if name in MODEL_LABELS:
        return MODEL_LABELS[name]
    return MODELS[name].label if name in MODELS else name


# --- shaping helpers --------------------------------------------------------------------------


def epoch_ms(t: Any) -> np.ndarray:
    """Epoch milliseconds (float64) of int64 ns, a DatetimeIndex or a datetime Series (UTC)."""
    if isinstance(t, pd.Series):
        t = pd.DatetimeIndex(t)
    if isinstance(t, pd.DatetimeIndex):
        t = (t.tz_convert("UTC") if t.tz is not None else t).as_unit("ns").asi8
    return np.asarray(t, dtype=np.int64).astype(np.float64) / NS_PER_MS


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def line_index(n: int, values: Sequence[np.ndarray] = (), max_points: int = MAX_LINE_POINTS) -> np.ndarray:
    """Sorted positions of the points a line of `n` points draws: all when n ≤ max_points, else per
    bucket of consecutive points its first and last point and, for each array in `values`, the
    position of its lowest and highest finite value (M4). The line keeps its envelope (every spike
    and dip) at a few points per pixel column. (Scatters use `impact_figures.downsample_index`.)
    """
    if n <= max_points:
        return np.arange(n, dtype=np.int64)
    per_bucket = 2 + 2 * len(values)
    buckets = max(1, max_points // per_bucket)
    size = -(-n // buckets)
    buckets = -(-n // size)
    starts = np.arange(buckets, dtype=np.int64) * size
    ends = np.minimum(starts + size, n) - 1
    picked = [starts, ends]
    pad = buckets * size - n
    for v in values:
        a = np.asarray(v, dtype=np.float64)
        if a.shape[0] != n:
            raise ValueError(f"values array has {a.shape[0]} points for a line of {n}")
        finite = np.isfinite(a)
        low = np.concatenate([np.where(finite, a, np.inf), np.full(pad, np.inf)]).reshape(buckets, size)
        high = np.concatenate([np.where(finite, a, -np.inf), np.full(pad, -np.inf)]).reshape(buckets, size)
        picked.append(np.minimum(starts + low.argmin(axis=1), n - 1))
        picked.append(np.minimum(starts + high.argmax(axis=1), n - 1))
    return np.unique(np.concatenate(picked))


def regime_steps(t_ns: np.ndarray, regime: np.ndarray, period_ns: int,
                 max_steps: int = MAX_REGIME_STEPS) -> tuple[np.ndarray, np.ndarray, int]:
    """The most probable regime as a step function: (x in ns at each change and at the end, the
    regime from each x on, bucket size in periods). Period i covers [t_i, t_i + period_ns).

    With more changes than `max_steps` the regime of each bucket of consecutive periods is its most
    common one (bucket size > 1 is then returned, so the figure can say so).
    """
    t = np.asarray(t_ns, dtype=np.int64)
    s = np.asarray(regime, dtype=np.int64)
    n = t.shape[0]
    if n == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), 1
    bucket = 1
    change = np.flatnonzero(s[1:] != s[:-1]) + 1
    if change.shape[0] + 1 > max_steps:
        bucket = -(-n // max_steps)
        b = np.arange(n) // bucket
        k = int(s.max()) + 1
        counts = np.bincount(b * k + s, minlength=(int(b[-1]) + 1) * k).reshape(-1, k)
        major = counts.argmax(axis=1)
        t = t[::bucket]
        s = major
        change = np.flatnonzero(s[1:] != s[:-1]) + 1
    starts = np.concatenate([[0], change])
    x = np.concatenate([t[starts], [int(t_ns[-1]) + int(period_ns)]])
    y = np.concatenate([s[starts], [s[-1]]])
    return x, y, bucket


def regime_label(j: int, k: int, regime: Mapping | None = None) -> str:
    """'regime 1 · stressed (σ 5.5 %/day)': index, name by volatility rank, daily sigma when known."""
    names = REGIME_NAMES.get(k, ())
    name = f" · {names[j]}" if j < len(names) else ""
    sig = (regime or {}).get("sigma_daily")
    sig_text = f" (σ {100 * float(sig):.2f} %/day)" if sig is not None and math.isfinite(float(sig)) else ""
    return f"regime {j}{name}{sig_text}"


def regime_colour(j: int, k: int) -> str:
    if k == 2:
        return REGIME_COLOURS[0] if j == 0 else REGIME_COLOURS[2]
    return REGIME_COLOURS[j % len(REGIME_COLOURS)]


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _layout(fig: go.Figure, *, y_title: str, height: int = FIGURE_HEIGHT, legend: bool = True) -> go.Figure:
    fig.update_layout(
        template="plotly_white", height=height, margin={"l": 60, "r": 12, "t": 30, "b": 40},
        yaxis_title=y_title, showlegend=legend, hovermode="x unified",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0,
                "font": {"size": 11}},
        uirevision="keep")
    fig.update_xaxes(type="date")
    return fig


def _note(fig: go.Figure, text: str) -> None:
    fig.add_annotation(text=text, xref="paper", yref="paper", x=1, y=0, xanchor="right", yanchor="bottom",
                       showarrow=False, font={"size": 10, "color": "#6c757d"}, bgcolor="rgba(255,255,255,0.7)")


def _drawn_note(drawn: int, total: int, what: str) -> str:
    if drawn >= total:
        return f"{total:,} {what}"
    return f"{drawn:,} of {total:,} {what} drawn (each bucket's first, last, low and high)"


# --- price, regimes and jumps -----------------------------------------------------------------


def jump_positions(t_ns: np.ndarray, jump_t_ns: np.ndarray) -> np.ndarray:
    """Positions in the bars (open times `t_ns`) of the bars whose return was flagged (-1 if absent)."""
    t = np.asarray(t_ns, dtype=np.int64)
    j = np.asarray(jump_t_ns, dtype=np.int64)
    pos = np.searchsorted(t, j)
    ok = (pos < t.shape[0]) & (t[np.minimum(pos, t.shape[0] - 1)] == j) if t.shape[0] else np.zeros(j.shape, bool)
    return np.where(ok, pos, -1)


def _marked_bars(t: np.ndarray, flagged: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where flagged returns (timestamp, return) sit among the bars `t`: (bar positions of the markers
    drawn, returns of the flagged rows found, which flagged rows were found, which of those are drawn:
    at most MAX_MARKERS, the largest moves kept)."""
    pos = jump_positions(t, pd.DatetimeIndex(flagged["timestamp"]).as_unit("ns").asi8)
    ok = pos >= 0
    ret = flagged["return"].to_numpy(np.float64)[ok]
    keep = downsample_index(int(ok.sum()), MAX_MARKERS, extremes=(np.abs(ret),)) if ok.any() else np.empty(0, int)
    return pos[ok][keep], ret, ok, keep


def price_regime_figure(t_ns: np.ndarray | None, close: np.ndarray | None, *, bar_ns: int = 0,
                        symbol: str | None = None, regime_path: pd.DataFrame | None = None,
                        regimes: Sequence[Mapping] | None = None, period_ns: int | None = None,
                        jumps: pd.DataFrame | None = None, jump_note: str = "",
                        model_jumps: pd.DataFrame | None = None,
                        empty_message: str = "No prices to draw",
                        max_points: int = MAX_LINE_POINTS) -> go.Figure:
    """The close price, the most probable regime (smoothed) shaded behind it, and jump markers.

    `regime_path`: timestamp (period label), regime (int) as `MarkovResult.regime_path()`;
    `regimes`: the fit's regime summaries (legend σ); `jumps`: Lee–Mykland times (timestamp, return,
    statistic); `model_jumps`: returns Merton calls jumps (timestamp, return, p_jump).
    Shading lives on the hidden base y axis [0, 1] and the price on an overlaying axis, so the line is
    drawn above the shading.
    """
    if t_ns is None or close is None or len(close) == 0:
        return empty_figure(empty_message)
    t = np.asarray(t_ns, dtype=np.int64)
    c = np.asarray(close, dtype=np.float64)
    fig = go.Figure()
    shading_note = ""
    if regime_path is not None and len(regime_path):
        k = int(len(regimes)) if regimes else int(regime_path["regime"].max()) + 1
        rt = pd.DatetimeIndex(regime_path["timestamp"]).as_unit("ns").asi8
        x, y, bucket = regime_steps(rt, regime_path["regime"].to_numpy(), int(period_ns or bar_ns))
        for j in range(k):
            colour = regime_colour(j, k)
            fig.add_trace(go.Scatter(
                x=epoch_ms(x), y=_f32(y == j), mode="lines", line={"width": 0, "shape": "hv", "color": colour},
                fill="tozeroy", fillcolor=_rgba(colour, REGIME_FILL_ALPHA), yaxis="y",
                name=regime_label(j, k, regimes[j] if regimes and j < len(regimes) else None),
                legendgroup="regimes", hoverinfo="skip"))
        if bucket > 1:
            shading_note = f"regime shading: most common regime per {bucket:,} periods"
    idx = line_index(t.shape[0], (c,), max_points)
    fig.add_trace(go.Scatter(x=epoch_ms(t[idx]), y=c[idx].astype(np.float64), mode="lines", name="close",
                             yaxis="y2", line={"color": "#212529", "width": 1.2},
                             hovertemplate="close %{y:,.6g}<extra></extra>"))
    marked = 0
    if jumps is not None and len(jumps):
        p, ret, ok, keep = _marked_bars(t, jumps)
        marked = int(ok.sum())
        fig.add_trace(go.Scatter(
            x=epoch_ms(t[p]), y=c[p], mode="markers", yaxis="y2", name=f"jumps (Lee–Mykland): {marked:,}",
            marker={"symbol": "triangle-up", "size": 10, "color": "#dc3545", "line": {"width": 1, "color": "#fff"}},
            customdata=np.round(100 * ret[keep], 4),
            hovertemplate="jump: return %{customdata:.3f} %<extra></extra>"))
    if model_jumps is not None and len(model_jumps):
        p, ret, ok, keep = _marked_bars(t, model_jumps)
        fig.add_trace(go.Scatter(
            x=epoch_ms(t[p]), y=c[p], mode="markers", yaxis="y2", name=f"Merton jump posterior > ½: {int(ok.sum()):,}",
            marker={"symbol": "circle-open", "size": 8, "color": "#6f42c1"},
            customdata=np.column_stack([np.round(100 * ret[keep], 4),
                                        np.round(model_jumps["p_jump"].to_numpy(np.float64)[ok][keep], 3)]),
            hovertemplate="Merton: return %{customdata[0]:.3f} %, Pr(jump) %{customdata[1]}<extra></extra>"))
    _layout(fig, y_title="", height=PRICE_HEIGHT)
    fig.update_layout(
        yaxis={"range": [0, 1], "visible": False, "fixedrange": True},
        yaxis2={"overlaying": "y", "side": "left",
                "title": {"text": f"close{f' ({user_text(symbol)})' if symbol else ''}"},
                "showgrid": True},
        hovermode="x unified")
    notes = [_drawn_note(int(idx.shape[0]), int(t.shape[0]), "bars")]
    if jumps is not None and not marked:
        notes.append(jump_note or "no jump flagged")
    if shading_note:
        notes.append(shading_note)
    _note(fig, " · ".join(notes))
    return fig


# --- realised estimators ----------------------------------------------------------------------


def realized_figure(tidy: pd.DataFrame | None, estimators: Sequence[str], *, freq: str = "1D",
                    empty_message: str = "No realised volatility to draw",
                    max_points: int = MAX_LINE_POINTS) -> go.Figure:
    """Each chosen estimator's volatility per period (annualised, %), side by side; periods with
    missing bars drawn as open markers (their estimate rests on fewer bars)."""
    if tidy is None or not len(tidy):
        return empty_figure(empty_message)
    chosen = [e for e in estimators if e in set(tidy["estimator"].astype(str))]
    if not chosen:
        return empty_figure("Tick at least one estimator to draw it")
    fig = go.Figure()
    total = 0
    drawn = 0
    for i, est in enumerate(chosen):
        part = tidy[tidy["estimator"].astype(str) == est]
        sig = 100 * part["sigma_annualized"].to_numpy(np.float64)
        t = pd.DatetimeIndex(part["period"]).as_unit("ns").asi8
        complete = part["complete"].to_numpy(bool)
        idx = line_index(sig.shape[0], (sig,), max(10, max_points // len(chosen)))
        total += sig.shape[0]
        drawn += idx.shape[0]
        fig.add_trace(go.Scatter(
            x=epoch_ms(t[idx]), y=_f32(sig[idx]), mode="lines+markers", name=ESTIMATOR_LABELS.get(est, est),
            line={"color": PALETTE[i % len(PALETTE)], "width": 1.5},
            # symbol codes, not names: 0 = circle, 100 = circle-open (a number array skips per-name checks)
            marker={"size": 5, "symbol": np.where(complete[idx], 0, 100).astype(np.int16)},
            hovertemplate=f"{ESTIMATOR_LABELS.get(est, est)}: %{{y:.1f}} %<extra></extra>"))
    _layout(fig, y_title=f"σ annualised (%), per {freq} period")
    fig.update_yaxes(rangemode="tozero")
    _note(fig, "open marker = period with missing bars" + ("" if drawn >= total
                                                          else f" · {drawn:,} of {total:,} points drawn"))
    return fig


# --- GARCH ------------------------------------------------------------------------------------


def garch_figure(vol_frame: pd.DataFrame | None, forecast: pd.DataFrame | None = None, *, label: str = "GARCH",
                 long_run_annualized: float | None = None, realized: pd.DataFrame | None = None,
                 realized_label: str = "", empty_message: str = "No GARCH fit to draw",
                 max_points: int = MAX_LINE_POINTS, n_total: int | None = None) -> go.Figure:
    """The conditional volatility (annualised, %) over the sample, the forecast after it, the long-run
    level, and (optionally) one realised estimator per period for comparison.

    `vol_frame`: `GarchResult.volatility_frame()` (or rows of it already thinned: `n_total` then says
    how many periods it stands for); `forecast`: `GarchResult.forecast(h)`; `realized`: period,
    sigma_annualized of one estimator (a step over each period)."""
    if vol_frame is None or not len(vol_frame):
        return empty_figure(empty_message)
    fig = go.Figure()
    if realized is not None and len(realized):
        rt = pd.DatetimeIndex(realized["period"]).as_unit("ns").asi8
        rs = 100 * realized["sigma_annualized"].to_numpy(np.float64)
        ridx = line_index(rs.shape[0], (rs,), max_points)
        fig.add_trace(go.Scatter(x=epoch_ms(rt[ridx]), y=_f32(rs[ridx]), mode="lines",
                                 name=realized_label or "realised",
                                 line={"color": "#adb5bd", "width": 1.5, "shape": "hv"},
                                 hovertemplate="realised %{y:.1f} %<extra></extra>"))
    t = pd.DatetimeIndex(vol_frame["timestamp"]).as_unit("ns").asi8
    sig = 100 * vol_frame["sigma_annualized"].to_numpy(np.float64)
    idx = line_index(sig.shape[0], (sig,), max_points)
    fig.add_trace(go.Scatter(x=epoch_ms(t[idx]), y=_f32(sig[idx]), mode="lines", name=f"{label} conditional σ",
                             line={"color": PALETTE[0], "width": 1.3},
                             hovertemplate="conditional σ %{y:.1f} %<extra></extra>"))
    if forecast is not None and len(forecast):
        ft = pd.DatetimeIndex(forecast["timestamp"]).as_unit("ns").asi8
        fs = 100 * forecast["sigma_annualized"].to_numpy(np.float64)
        # the forecast starts from the last fitted point, so the two lines join
        fx = np.concatenate([[t[-1]], ft])
        fy = np.concatenate([[sig[-1]], fs])
        fig.add_trace(go.Scatter(x=epoch_ms(fx), y=_f32(fy), mode="lines+markers",
                                 name=f"forecast, {len(forecast)} period{'s' if len(forecast) != 1 else ''} ahead",
                                 line={"color": "#fd7e14", "width": 2, "dash": "dash"}, marker={"size": 4},
                                 hovertemplate="forecast σ %{y:.1f} %<extra></extra>"))
    if long_run_annualized is not None and math.isfinite(long_run_annualized):
        fig.add_hline(y=100 * long_run_annualized, line={"color": "#6c757d", "width": 1, "dash": "dot"},
                      annotation_text=f"long run {100 * long_run_annualized:.1f} %", annotation_position="top left",
                      annotation_font={"size": 10, "color": "#6c757d"})
    _layout(fig, y_title="σ annualised (%)")
    fig.update_yaxes(rangemode="tozero")
    _note(fig, _drawn_note(int(idx.shape[0]), int(n_total or sig.shape[0]), "periods"))
    return fig


# --- regime probabilities ---------------------------------------------------------------------


def probabilities_arrays(prob_frame: pd.DataFrame, which: str = "smoothed") -> tuple[np.ndarray, np.ndarray]:
    """(period times in ns, (n, k) probabilities) of a tidy `MarkovResult.probabilities_frame()`
    (timestamp, regime, filtered, smoothed; one row per period and regime, periods in order)."""
    k = int(prob_frame["regime"].max()) + 1
    n = len(prob_frame) // k
    p = prob_frame[which].to_numpy(np.float64).reshape(n, k)
    t = pd.DatetimeIndex(prob_frame["timestamp"].iloc[::k]).as_unit("ns").asi8
    return t, p


def regime_probabilities_figure(t_ns: np.ndarray | None, probabilities: np.ndarray | None,
                                regimes: Sequence[Mapping] | None = None, *, which: str = "smoothed",
                                empty_message: str = "No regime fit to draw",
                                max_points: int = MAX_LINE_POINTS) -> go.Figure:
    """Pr(regime j) per period as a stacked area. `t_ns`: period labels (ns); `probabilities`: (n, k),
    `MarkovResult.smoothed` (uses all data) or `.filtered` (only the past), named by `which`.
    (A tidy probabilities frame: `probabilities_arrays`.)"""
    if t_ns is None or probabilities is None or len(t_ns) == 0:
        return empty_figure(empty_message)
    p = np.asarray(probabilities, dtype=np.float64)
    t = np.asarray(t_ns, dtype=np.int64)
    n, k = p.shape
    # the same points for every regime (a stack needs them), keeping each one's peaks and troughs
    idx = line_index(n, [p[:, j] for j in range(k)], max_points)
    fig = go.Figure()
    x = epoch_ms(t[idx])
    for j in range(k):
        colour = regime_colour(j, k)
        fig.add_trace(go.Scatter(
            x=x, y=_f32(p[idx, j]), mode="lines", stackgroup="regimes",
            name=regime_label(j, k, regimes[j] if regimes and j < len(regimes) else None),
            line={"width": 0.5, "color": colour}, fillcolor=_rgba(colour, 0.55),
            hovertemplate=f"Pr(regime {j}) %{{y:.2f}}<extra></extra>"))
    _layout(fig, y_title=f"Pr(regime), {which}")
    fig.update_yaxes(range=[0, 1])
    _note(fig, _drawn_note(int(idx.shape[0]), n, "periods"))
    return fig


# --- time-varying coefficients and cost by regime (models/timevarying.py) ----------------------


def coefficient_path_figure(path: pd.DataFrame | None, *, batch: Mapping[str, float] | None = None,
                            empty_message: str = "No coefficient path to draw",
                            max_points: int = MAX_LINE_POINTS) -> go.Figure:
    """Each (method, parameter) path over time with its band (lower–upper), and the batch estimate as
    a dotted line. `path`: tidy timestamp, parameter, value, lower, upper (+ optional method)."""
    if path is None or not len(path):
        return empty_figure(empty_message)
    fig = go.Figure()
    method_col = path["method"].astype(str) if "method" in path.columns else pd.Series("path", index=path.index)
    groups = list(dict.fromkeys(zip(method_col, path["parameter"].astype(str))))
    total = drawn = 0
    for i, (method, param) in enumerate(groups):
        part = path[(method_col == method).to_numpy() & (path["parameter"].astype(str) == param).to_numpy()]
        t = pd.DatetimeIndex(part["timestamp"]).as_unit("ns").asi8
        v = part["value"].to_numpy(np.float64)
        lo = part["lower"].to_numpy(np.float64) if "lower" in part.columns else np.full(v.shape, np.nan)
        hi = part["upper"].to_numpy(np.float64) if "upper" in part.columns else np.full(v.shape, np.nan)
        idx = line_index(v.shape[0], (v, lo, hi), max(10, max_points // max(1, len(groups))))
        total += v.shape[0]
        drawn += idx.shape[0]
        colour = PALETTE[i % len(PALETTE)]
        name = f"{param} ({method})" if method != "path" else param
        x = epoch_ms(t[idx])
        if np.isfinite(lo).any() and np.isfinite(hi).any():
            fig.add_trace(go.Scatter(x=x, y=_f32(hi[idx]), mode="lines", line={"width": 0}, showlegend=False,
                                     legendgroup=name, hoverinfo="skip"))
            fig.add_trace(go.Scatter(x=x, y=_f32(lo[idx]), mode="lines", line={"width": 0}, fill="tonexty",
                                     fillcolor=_rgba(colour, 0.18), name=f"{name} band", legendgroup=name,
                                     hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=_f32(v[idx]), mode="lines", name=name, legendgroup=name,
                                 line={"color": colour, "width": 1.5},
                                 hovertemplate=f"{name} %{{y:.4g}}<extra></extra>"))
    for name, value in (batch or {}).items():
        if value is not None and math.isfinite(float(value)):
            fig.add_hline(y=float(value), line={"color": "#6c757d", "width": 1, "dash": "dot"},
                          annotation_text=f"batch {name} = {float(value):.4g}", annotation_position="top left",
                          annotation_font={"size": 10, "color": "#6c757d"})
    _layout(fig, y_title="coefficient")
    _note(fig, "band = the path's interval" + ("" if drawn >= total else f" · {drawn:,} of {total:,} points drawn"))
    return fig


def cost_by_regime_figure(rows: Sequence[Mapping] | None, *, value: str = "value", lower: str = "lower",
                          upper: str = "upper", y_title: str = "", empty_message: str = "No cost by regime to draw"
                          ) -> go.Figure:
    """One bar per (regime, parameter or statistic) with its interval: `rows` carry regime (int),
    label (what the bar measures), value, lower, upper, n (fills)."""
    rows = [r for r in (rows or []) if r.get(value) is not None and math.isfinite(float(r[value]))]
    if not rows:
        return empty_figure(empty_message)
    labels = list(dict.fromkeys(str(r.get("label", "")) for r in rows))
    k = max(int(r["regime"]) for r in rows) + 1
    fig = go.Figure()
    for j in range(k):
        mine = {str(r.get("label", "")): r for r in rows if int(r["regime"]) == j}
        if not mine:
            continue
        vals = np.array([float(mine[x][value]) if x in mine else np.nan for x in labels])
        lo = np.array([float(mine[x].get(lower, np.nan)) if x in mine and mine[x].get(lower) is not None
                       else np.nan for x in labels])
        hi = np.array([float(mine[x].get(upper, np.nan)) if x in mine and mine[x].get(upper) is not None
                       else np.nan for x in labels])
        n = [mine[x].get("n") if x in mine else None for x in labels]
        fig.add_trace(go.Bar(
            x=labels, y=vals, name=regime_label(j, k), marker_color=regime_colour(j, k),
            error_y={"type": "data", "symmetric": False, "array": np.nan_to_num(hi - vals),
                     "arrayminus": np.nan_to_num(vals - lo), "visible": bool(np.isfinite(lo).any())},
            customdata=[format_number(x) for x in n],
            hovertemplate="%{x}: %{y:.4g} (fills %{customdata})<extra>" + f"regime {j}</extra>"))
    fig.update_layout(template="plotly_white", height=FIGURE_HEIGHT, barmode="group", yaxis_title=y_title,
                      margin={"l": 60, "r": 12, "t": 30, "b": 40},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0})
    return fig


# --- tables -----------------------------------------------------------------------------------


@plain_verdict
def status_summary(model: str, result: Any = None, error: str | None = None, *,
                   requested: bool = True) -> dict:
    """A model's verdict for the status card: {"model", "level", "badge", "headline", "details"}.

    level: success (converged / closed form), warning (converged with warnings), danger (NOT
    converged or failed), secondary (not requested). A non-converged fit is never shown as fine."""
    label = model_label(model)
    if error:
        return {"model": label, "level": "danger", "badge": "Failed", "headline": error, "details": []}
    if result is None:
        return {"model": label, "level": "secondary", "badge": "Not fitted",
                "headline": "not requested" if not requested else "not fitted yet", "details": []}
    details = list(getattr(result, "warnings", ()) or ())
    rep = result.report
    extra = dict(rep.settings or {})
    facts = []
    if rep.method and rep.method not in ("closed_form", "fixed"):
        facts.append(str(rep.method))
    for key, what in (("em_iterations", "EM iterations"), ("newton_iterations", "Newton steps"),
                      ("bfgs_iterations", "BFGS iterations")):
        if extra.get(key) is not None:
            facts.append(f"{extra[key]} {what}")
    if rep.iterations and "em_iterations" not in extra:
        facts.append(f"{rep.iterations} iterations")
    if rep.nfev:
        facts.append(f"{rep.nfev} evaluations")
    if extra.get("gradient_max_abs") is not None:
        facts.append(f"largest score component {format_number(extra['gradient_max_abs'], 3)}")
    if rep.active_bounds:
        facts.append("on the boundary: " + "; ".join(rep.active_bounds))
    where = f" ({', '.join(facts)})" if facts else ""
    if result.status == "closed_form":
        return {"model": label, "level": "warning" if details else "success", "badge": "Closed form",
                "headline": f"Closed form, no optimisation — {rep.message}", "details": details}
    if result.status == "fixed":
        return {"model": label, "level": "info", "badge": "Fixed", "headline": rep.message, "details": details}
    if not result.converged:
        return {"model": label, "level": "danger", "badge": "NOT converged",
                "headline": f"NOT CONVERGED — {rep.message}{where}. The parameters are where the "
                            "optimizer stopped, not an optimum.", "details": details}
    return {"model": label, "level": "warning" if details else "success", "badge": "Converged",
            "headline": f"Converged — {rep.message}{where}", "details": details}


def parameter_rows(result: Any, alpha: float = 0.05) -> list[dict]:
    """One row per parameter: value, unit, standard error and the (1 − alpha) interval."""
    if result is None:
        return []
    ci = result.conf_int(alpha)
    level = f"{1 - alpha:.0%} CI"
    rows = []
    for name, value in result.params.items():
        se = result.std_errors.get(name) if hasattr(result.std_errors, "get") else None
        lo, hi = ci.get(name, (None, None))
        rows.append({"parameter": name, "value": format_number(value, 6), "unit": result.units.get(name, ""),
                     "std err": format_number(se), level: f"[{format_number(lo)}, {format_number(hi)}]"
                     if se is not None and math.isfinite(float(se)) else "—"})
    return rows


def fit_rows(fits: Mapping[str, Any]) -> list[dict]:
    """Model comparison on the same returns: log-likelihood (of the returns as fractions), AIC, BIC,
    observations, parameters, converged. Models without a likelihood show '—'."""
    rows = []
    for name, res in fits.items():
        if res is None:
            continue
        rows.append({"model": model_label(res.model), "log-likelihood": format_number(res.loglikelihood, 8),
                     "AIC": format_number(res.aic, 8), "BIC": format_number(res.bic, 8),
                     "observations": format_number(int(res.n_obs)), "parameters": format_number(int(res.n_params)),
                     "converged": "closed form" if res.status == "closed_form" else ("yes" if res.converged else "NO")})
    return rows


def _pct(x: Any, digits: int = 3) -> str:
    if x is None or not math.isfinite(float(x)):
        return "—"
    return f"{100 * float(x):.{digits}g} %"


def regime_rows(regimes: Sequence[Mapping] | None) -> list[dict]:
    """The regimes table: σ per day and annualised, expected duration, share of time (smoothed
    probabilities), share in the stationary distribution."""
    rows = []
    k = len(regimes or ())
    for r in regimes or ():
        j = int(r["regime"])
        dur_d = r.get("expected_duration_days")
        dur_p = r.get("expected_duration_periods")
        rows.append({"regime": regime_label(j, k).split(" (")[0],
                     "σ daily": _pct(r.get("sigma_daily")), "σ annualised": _pct(r.get("sigma_annualized")),
                     "expected duration": (f"{format_number(dur_d, 3)} days ({format_number(dur_p, 4)} periods)"
                                           if dur_d is not None and math.isfinite(float(dur_d)) else "—"),
                     "share of time": _pct(r.get("share_of_time")),
                     "stationary share": _pct(r.get("share_stationary")),
                     "key": str(j)})
    return rows


def transition_rows(transition: Sequence[Sequence[float]] | None) -> list[dict]:
    """The transition matrix as rows: from regime i, Pr(next = j) per column."""
    if transition is None:
        return []
    P = np.asarray(transition, dtype=np.float64)
    k = P.shape[0]
    return [{"from \\ to": f"regime {i}", **{f"regime {j}": format_number(P[i, j], 4) for j in range(k)},
             "key": str(i)} for i in range(k)]


def realized_rows(realized: Any, estimators: Sequence[str]) -> list[dict]:
    """Each chosen estimator's average σ over the periods the fit used (the complete ones): per day
    and annualised."""
    if realized is None:
        return []
    by = (realized.stats or {}).get("by_estimator_sigma_daily", {})
    rows = []
    for e in estimators:
        s = by.get(e)
        rows.append({"estimator": ESTIMATOR_LABELS.get(e, e), "σ daily": _pct(s),
                     "σ annualised": _pct(None if s is None else s * math.sqrt(DAYS_PER_YEAR)), "key": e})
    return rows


def garch_summary_rows(garch: Any) -> list[dict]:
    """Persistence, half-life, long-run and last volatility of a forecasting fit (GARCH family,
    HAR); an undefined number says why."""
    if garch is None:
        return []
    s = garch.stats or {}
    half = (f"{format_number(s.get('half_life_days'), 3)} days ({format_number(s.get('half_life_periods'), 4)} "
            f"periods)" if s.get("half_life_periods") is not None else f"— ({s.get('half_life_note', 'undefined')})")
    long_run = s.get("sigma_annualized_long_run")
    rows = [
        {"quantity": f"persistence {s.get('persistence_formula', '')}".strip(),
         "value": format_number(s.get("persistence"), 4)},
        {"quantity": "half-life", "value": half},
        {"quantity": "long-run σ annualised", "value": _pct(long_run) if long_run is not None
         else f"— ({s.get('long_run_note', 'undefined')})"},
    ]
    if s.get("sigma_daily_last") is not None:
        rows.append({"quantity": "last σ daily", "value": _pct(s.get("sigma_daily_last"))})
    if s.get("r2") is not None:
        rows.append({"quantity": "R² in sample", "value": format_number(s.get("r2"), 4)})
    if getattr(garch, "scale", None) is not None:
        rows.append({"quantity": "returns scaled by", "value": format_number(garch.scale)})
    return rows


def merton_summary_rows(merton: Any) -> list[dict]:
    if merton is None:
        return []
    s = merton.stats or {}
    return [
        {"quantity": "total σ annualised", "value": _pct(s.get("total_sigma_annualized"))},
        {"quantity": "diffusion σ annualised", "value": _pct(s.get("diffusion_sigma_annualized"))},
        {"quantity": "jumps' share of variance", "value": _pct(s.get("jump_share_of_variance"))},
        {"quantity": "jumps per year", "value": format_number(s.get("jumps_per_year"), 4)},
        {"quantity": "jumps expected in the sample", "value": format_number(s.get("expected_jumps_in_sample"), 4)},
    ]


def regime_impact_rows(coefficients: Mapping[str, Sequence[Mapping]], cost: Sequence[Mapping]) -> list[dict]:
    """The by-regime table: per regime its fills, mean cost (bps) ± s.e., and each fitted parameter
    ± s.e. with its ratio to the calm regime's. `coefficients`: `execal.models.impact.timevarying.regime_table`
    (per parameter: key {"regime": name}, value, std_error, rows, ratio_to_calm); `cost`: per regime
    name, n, mean_bps, se_bps."""
    by_name: dict[str, dict] = {}
    for c in cost:
        mean = f"{format_number(c['mean_bps'])} ± {format_number(c['se_bps'], 2)}"
        by_name[str(c["regime"])] = {"regime": str(c["regime"]), "fills": format_number(int(c["n"])),
                                     "mean cost (bps)": mean}
    for param, rows in coefficients.items():
        for r in rows:
            name = str(r["key"].get("regime"))
            row = by_name.setdefault(name, {"regime": name, "fills": format_number(int(r.get("rows", 0)))})
            ratio = r.get("ratio_to_calm")
            row[param] = (f"{format_number(r['value'])} ± {format_number(r['std_error'], 2)}"
                          + ("" if ratio is None or name == "calm" else f" (×{format_number(ratio, 3)} calm)"))
    out = list(by_name.values())
    for row in out:
        row["key"] = row["regime"]
    return out
