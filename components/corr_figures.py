"""Pure figure and table builders for the Correlation panel: a correlation-area result in, a `go.Figure`
or plain rows out (tested without Dash).

Figures: the correlation heatmap (any result), the Epps curves (realised correlation against the
sampling interval, with the Hayashi–Yoshida level beside them), the lead–lag scans (HY cross-correlation
against the lag, with the null band and the peak), the DCC correlation path (with its unconditional
level and forecast), and the regime-conditional matrices side by side.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from execal.components.figures import empty_figure, user_text

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
TEMPLATE = "plotly_white"
FIGURE_HEIGHT_PX = 340
MAX_LEAD_LAG_PANELS = 6
NO_RESULT = "No correlation computed yet: pick two or more series and a method on the left, then press Compute"
COLORSCALE = "RdBu_r"


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[:width - 1] + "…"


def series_label(name: str, width: int = 28) -> str:
    """A series name (the user's symbol or venue) shortened, then escaped for plotly: a category, a legend
    entry or a title (a hover shows it by '%{x}', '%{meta}' or '%{fullData.name}', never pasted into the
    template)."""
    return user_text(short(str(name), width))


def pair_label(x: str, y: str, width: int, sep: str = " / ") -> str:
    return f"{series_label(x, width)}{sep}{series_label(y, width)}"


def _layout(height: int = FIGURE_HEIGHT_PX, **extra) -> dict:
    # a title sits above the legend: more room on top when there is one
    top = 80 if extra.get("title") else 40
    base = {"template": TEMPLATE, "height": height, "margin": {"l": 60, "r": 16, "t": top, "b": 48},
            "hovermode": "closest", "uirevision": "keep",
            "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0, "font": {"size": 11}}}
    base.update(extra)
    return base


# --- what a result holds --------------------------------------------------------------------------


def matrix_of(result) -> tuple[list[str], np.ndarray, str]:
    """(names, correlation matrix, what it is) of any correlation-area result."""
    if hasattr(result, "correlation_path"):                     # DCC: the latest conditional matrix
        R = np.asarray(result.correlation_path)[-1]
        when = result.panel.timestamps[-1].strftime("%Y-%m-%d %H:%M")
        return list(result.names), R, f"DCC conditional correlation R_T at {when} UTC"
    if hasattr(result, "sample_covariance"):                    # Ledoit–Wolf
        return list(result.names), np.asarray(result.correlation), (
            f"Ledoit–Wolf shrunk correlation (weight {result.shrinkage:.3f} on μ·I)")
    label = {"hayashi_yoshida": "Hayashi–Yoshida correlation (no synchronisation)",
             "realized_cov": "realised correlation"}.get(getattr(result, "model", ""), "correlation")
    if getattr(result, "model", "") == "realized_cov":
        label += f" at {result.extras.get('interval_s', float('nan')):g} s"
    return list(result.names), np.asarray(result.correlation), label


def heatmap_figure(names: Sequence[str], matrix: np.ndarray, title: str = "", *, height: int = FIGURE_HEIGHT_PX
                   ) -> go.Figure:
    m = np.asarray(matrix, dtype=float)
    text = [[("" if not math.isfinite(v) else f"{v:.2f}") for v in row] for row in m]
    labels = [series_label(n) for n in names]
    fig = go.Figure(go.Heatmap(z=m, x=labels, y=labels, zmin=-1, zmax=1, colorscale=COLORSCALE, text=text,
                               texttemplate="%{text}", hovertemplate="%{y} / %{x}: ρ = %{z:.4f}<extra></extra>",
                               colorbar={"title": "ρ", "thickness": 12}))
    fig.update_layout(**_layout(height, title={"text": title, "font": {"size": 13}}))
    fig.update_yaxes(autorange="reversed")
    return fig


def result_heatmap(result) -> go.Figure:
    if result is None:
        return empty_figure(NO_RESULT)
    names, m, what = matrix_of(result)
    return heatmap_figure(names, m, what)


# --- Epps -----------------------------------------------------------------------------------------


def epps_figure(curves: Sequence) -> go.Figure:
    """Realised correlation against the sampling interval (log x), 95 % band, HY level dashed."""
    curves = [c for c in curves if np.isfinite(np.asarray(c.rho)).any()]
    if not curves:
        return empty_figure("No Epps curve: tick methods only")
    traces = []
    for i, c in enumerate(curves):
        f = c.frame()
        f = f[np.isfinite(f["rho"])]
        name = pair_label(c.x, c.y, 18)
        col = colour(i)
        traces.append(go.Scatter(x=f["interval_s"], y=f["rho"], mode="lines+markers", name=name, legendgroup=name,
                                 line={"color": col}, customdata=np.column_stack([f["ci_low"], f["ci_high"],
                                                                                 f["n_returns"]]),
                                 error_y={"type": "data", "symmetric": False, "array": f["ci_high"] - f["rho"],
                                          "arrayminus": f["rho"] - f["ci_low"], "thickness": 1, "width": 3},
                                 hovertemplate="Δ %{x:g} s: ρ %{y:.3f} [%{customdata[0]:.3f}, %{customdata[1]:.3f}], "
                                               "%{customdata[2]:,} returns<extra>%{fullData.name}</extra>"))
        if c.hy_rho is not None and math.isfinite(c.hy_rho):
            traces.append(go.Scatter(x=[f["interval_s"].min(), f["interval_s"].max()], y=[c.hy_rho, c.hy_rho],
                                     mode="lines", name=f"HY {name}", meta=name, legendgroup=name, showlegend=False,
                                     line={"color": col, "dash": "dash", "width": 1},
                                     hovertemplate=f"Hayashi–Yoshida ρ {c.hy_rho:.3f}<extra>%{{meta}}</extra>"))
    fig = go.Figure(traces)
    fig.update_layout(**_layout())
    fig.update_xaxes(type="log", title="sampling interval Δ (s)")
    fig.update_yaxes(title="realised correlation ρ(Δ)")
    return fig


# --- lead–lag -------------------------------------------------------------------------------------


def lead_lag_figure(scans: Sequence, limit: int = MAX_LEAD_LAG_PANELS) -> go.Figure:
    """One small panel per pair: ρ(θ) against the lag (ms), the null band shaded, the peak marked."""
    scans = list(scans)[:limit]
    if not scans:
        return empty_figure("No lead–lag scan: tick data, Hayashi–Yoshida method")
    n = len(scans)
    titles = [pair_label(s.x, s.y, 22, " → ") for s in scans]
    fig = make_subplots(rows=n, cols=1, shared_xaxes=False, subplot_titles=titles, vertical_spacing=0.5 / max(n, 1)
                        if n > 1 else 0.1)
    for k, s in enumerate(scans, start=1):
        lag_ms = 1e3 * np.asarray(s.lags_s)
        fig.add_trace(go.Scatter(x=np.concatenate([lag_ms, lag_ms[::-1]]),
                                 y=np.concatenate([np.asarray(s.band_high), np.asarray(s.band_low)[::-1]]),
                                 fill="toself", fillcolor="rgba(108,117,125,0.18)", line={"width": 0},
                                 name=f"{100 * (1 - s.alpha):.0f}% null band ({s.band_method})", hoverinfo="skip",
                                 showlegend=k == 1), row=k, col=1)
        fig.add_trace(go.Scatter(x=lag_ms, y=s.rho, mode="lines", line={"color": colour(0), "width": 1.5},
                                 name="HY ρ(θ)", showlegend=k == 1,
                                 hovertemplate="θ %{x:.0f} ms: ρ %{y:.4f}<extra></extra>"), row=k, col=1)
        if math.isfinite(s.best_lag_s):
            fig.add_trace(go.Scatter(x=[1e3 * s.best_lag_s], y=[s.best_rho], mode="markers",
                                     marker={"size": 9, "color": colour(1) if s.significant else "#6c757d",
                                             "symbol": "diamond"},
                                     name="peak", showlegend=k == 1, meta=user_text(s.verdict()),
                                     hovertemplate="%{meta}<extra></extra>"),
                          row=k, col=1)
        fig.update_xaxes(title_text="lag θ (ms): > 0 means the first series leads" if k == n else None, row=k, col=1)
        fig.update_yaxes(title_text="ρ", row=k, col=1)
    fig.update_layout(**_layout(max(FIGURE_HEIGHT_PX, 230 * n)))
    fig.update_annotations(font_size=12)
    return fig


def lead_lag_rows(scans: Sequence) -> list[dict]:
    return [{"key": f"{s.x}|{s.y}", "pair": f"{s.x} / {s.y}", "peak lag (ms)": f"{1e3 * s.best_lag_s:+.0f}",
             "peak ρ": f"{s.best_rho:.3f}", "ρ at 0": f"{s.rho_at_zero:.3f}",
             "significant": "yes" if s.significant else "no", "leader": s.leader or "—",
             "LLR": "—" if s.lead_lag_ratio is None else f"{s.lead_lag_ratio:.2f}", "verdict": s.verdict()}
            for s in scans]


# --- DCC ------------------------------------------------------------------------------------------


def dcc_path_figure(result, horizon: int = 0) -> go.Figure:
    """Each pair's conditional correlation over time, its unconditional level dashed, and (horizon > 0)
    the forecast beyond the last period."""
    if result is None or not hasattr(result, "correlation_path"):
        return empty_figure("No DCC path: choose the DCC-GARCH method")
    frame = result.path_frame()
    Rbar = result.unconditional_correlation()
    names = list(result.names)
    fig = go.Figure()
    fc = result.forecast_frame(horizon) if horizon > 0 else None
    for i, (pair, part) in enumerate(frame.groupby("pair", sort=False)):
        col = colour(i)
        x, y = part["x"].iloc[0], part["y"].iloc[0]
        name, group = pair_label(x, y, 14), user_text(pair)
        fig.add_trace(go.Scattergl(x=part["timestamp"], y=part["rho"], mode="lines", line={"color": col, "width": 1},
                                   name=name, meta=name, legendgroup=group,
                                   hovertemplate="%{x|%Y-%m-%d %H:%M}: ρ %{y:.3f}<extra>%{meta}</extra>"))
        level = float(Rbar[names.index(x), names.index(y)])
        fig.add_trace(go.Scatter(x=[part["timestamp"].iloc[0], part["timestamp"].iloc[-1]], y=[level, level],
                                 mode="lines", line={"color": col, "dash": "dash", "width": 1}, legendgroup=group,
                                 showlegend=False, meta=name,
                                 hovertemplate=f"unconditional ρ {level:.3f}<extra>%{{meta}}</extra>"))
        if fc is not None:
            f = fc[fc["pair"] == pair]
            fig.add_trace(go.Scatter(x=f["timestamp"], y=f["rho"], mode="lines", line={"color": col, "dash": "dot"},
                                     legendgroup=group, showlegend=False, meta=name,
                                     hovertemplate="forecast %{x|%Y-%m-%d %H:%M}: ρ %{y:.3f}<extra>%{meta}</extra>"))
    fig.update_layout(**_layout(title={"text": f"DCC(1,1): a = {result.a:.4f}, b = {result.b:.4f} "
                                                f"(half-life {result.half_life_periods:.3g} × "
                                                f"{user_text(result.panel.freq)})",
                                       "font": {"size": 13}, "y": 0.97, "yanchor": "top"}))
    fig.update_yaxes(title="conditional correlation R_t", range=[-1, 1])
    return fig


# --- regimes --------------------------------------------------------------------------------------


def regime_figure(regimes) -> go.Figure:
    """The correlation matrix of every regime, side by side (calm → stressed)."""
    if regimes is None or not getattr(regimes, "regimes", ()):
        return empty_figure("No regime matrices: switch on 'calm vs stressed' (DCC or Ledoit–Wolf)")
    rs = list(regimes.regimes)
    names = [series_label(n, 12) for n in regimes.names]
    fig = make_subplots(rows=1, cols=len(rs), subplot_titles=[f"{r.regime} ({r.n_obs:,} periods)" for r in rs],
                        horizontal_spacing=0.08)
    for k, r in enumerate(rs, start=1):
        m = np.asarray(r.correlation)
        fig.add_trace(go.Heatmap(z=m, x=names, y=names, zmin=-1, zmax=1, colorscale=COLORSCALE,
                                 text=[[f"{v:.2f}" for v in row] for row in m], texttemplate="%{text}",
                                 showscale=k == len(rs), colorbar={"title": "ρ", "thickness": 12},
                                 hovertemplate=f"{r.regime}: " + "%{y} / %{x}: ρ %{z:.3f}<extra></extra>"), row=1, col=k)
        fig.update_yaxes(autorange="reversed", row=1, col=k)
    fig.update_layout(**_layout())
    return fig


def regime_rows(regimes) -> list[dict]:
    if regimes is None:
        return []
    return [{"key": d["pair"], "pair": d["pair"], "low": d["low"], "high": d["high"],
             "difference": f"{d['difference']:+.3f}", "s.e.": f"{d['se']:.3f}",
             "p-value": "—" if d["p_value"] is None else f"{d['p_value']:.3g}"} for d in regimes.differences]


# --- tables and status ----------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "—" if not math.isfinite(f) else f"{f:.6g}"


def params_rows(result, limit: int = 60) -> list[dict]:
    """Parameter, value, s.e. and 95 % interval of any result (first `limit` parameters)."""
    if result is None:
        return []
    ci = result.conf_int()
    rows = []
    for name, value in list(result.params.items())[:limit]:
        lo, hi = ci.get(name, (math.nan, math.nan))
        rows.append({"key": name, "param": name, "value": _fmt(value), "std err": _fmt(result.std_errors.get(name)),
                     "95% CI": "—" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:.4g}, {hi:.4g}]"})
    return rows


def status_summary(result, regimes=None) -> dict:
    """{"level", "headline", "details"}: the verdict first (red when a fit did not converge)."""
    if result is None:
        return {"level": "secondary", "headline": NO_RESULT, "details": []}
    model = getattr(result, "model", "")
    label = {"realized_cov": "Realised covariance", "hayashi_yoshida": "Hayashi–Yoshida", "dcc": "DCC-GARCH",
             "ledoit_wolf": "Ledoit–Wolf"}.get(model, model)
    warnings = list(result.warnings) + (list(regimes.warnings) if regimes is not None else [])
    if not result.converged:
        level, head = "danger", f"{label}: NOT converged — {result.report.message}"
    elif warnings:
        level, head = "warning", f"{label}: done, with {len(warnings)} warning(s)"
    else:
        level, head = "success", f"{label}: done"
    facts = [f"{len(result.names)} series", result.report.message]
    return {"level": level, "headline": head, "facts": " · ".join(f for f in facts if f), "details": warnings}


def forecast_rows(result, horizon: int = 5) -> list[dict]:
    if result is None or not hasattr(result, "forecast_frame"):
        return []
    f = result.forecast_frame(horizon)
    return [{"key": f"{r.pair}|{r.h}", "pair": r.pair, "h": int(r.h),
             "time (UTC)": pd.Timestamp(r.timestamp).strftime("%Y-%m-%d %H:%M"), "ρ": f"{r.rho:.3f}"}
            for r in f.itertuples()]


def result_matrix_frame(result) -> pd.DataFrame:
    names, m, _ = matrix_of(result)
    return pd.DataFrame(m, index=names, columns=names)


def summary_facts(result) -> Mapping[str, Any]:
    names, m, what = matrix_of(result)
    return {"what": what, "names": names, "pairs": len(names) * (len(names) - 1) // 2}
