"""Pure builders for the Datasets panel: a partitioned dataset's summary and coverage from its
manifest, and the diagnostics of a streamed fit from exact aggregates plus a stratified sample
(data in, plain data or `go.Figure` out; no Dash, no rows read here)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from execal.components.figures import format_count, format_names, format_span, user_text

FIGURE_HEIGHT = 360


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"   # pragma: no cover


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) facts of `DatasetView.summary()`."""
    rows = [("Dataset", str(summary["file"])), ("Kind", str(summary["kind"])),
            ("Rows", format_count(summary["rows"]) + ("" if summary.get("rows_exact", True)
                                                      else " (partitions touched by the filter)")),
            ("Span", format_span(summary.get("start"), summary.get("end"))),
            ("Days", format_count(summary.get("days"))),
            ("Partitions", f"{format_count(summary.get('partitions'))} ({format_count(summary.get('files'))} "
                           f"files, {_fmt_bytes(summary.get('bytes') or 0)})"),
            ("Symbols", format_names(summary.get("symbols") or [])),
            ("Venues", format_names(summary.get("venues") or [])),
            ("Sources", format_names([s["file"] for s in summary.get("sources") or []]))]
    return rows


def coverage_figure(coverage: pd.DataFrame) -> go.Figure:
    """Rows per day, stacked by venue (else symbol), from the manifest's partition counts."""
    fig = go.Figure()
    if coverage.empty:
        fig.update_layout(title="no partitions")
        return fig
    by = "venue" if "venue" in coverage and coverage["venue"].notna().any() else (
        "symbol" if "symbol" in coverage and coverage["symbol"].notna().any() else None)
    if by is None:
        per_day = coverage.groupby("day")["rows"].sum()
        fig.add_bar(x=list(per_day.index), y=per_day.to_numpy().tolist(), name="rows")
    else:
        table = coverage.pivot_table(index="day", columns=by, values="rows", aggfunc="sum", fill_value=0)
        for name in table.columns:
            fig.add_bar(x=list(table.index), y=table[name].to_numpy().tolist(), name=str(name))
    fig.update_layout(barmode="stack", height=260, margin=dict(l=50, r=10, t=30, b=40),
                      title="Rows per day (from the manifest: no data read)",
                      yaxis_title="rows", legend=dict(orientation="h", y=-0.25))
    return fig


def filter_choices(summary: Mapping[str, Any]) -> dict:
    """Options for the filter controls, from the manifest."""
    return {"symbols": [{"label": s, "value": s} for s in summary.get("symbols") or []],
            "venues": [{"label": v, "value": v} for v in summary.get("venues") or []],
            "start": (summary.get("start") or "")[:10], "end": (summary.get("end") or "")[:10]}


def binned_figure(agg: Mapping[str, Any]) -> go.Figure:
    """Observed vs predicted cost against participation: exact binned means of every usable row
    (lines), over a stratified sample of the rows (points), each labelled as such."""
    fig = go.Figure()
    s = agg["sample"]
    if len(s["observed_bps"]):
        fig.add_scattergl(x=np.asarray(s["participation"]).tolist(), y=np.asarray(s["observed_bps"]).tolist(),
                          mode="markers", name=f"observed: stratified sample of {s['rows']:,} rows",
                          marker=dict(size=4, opacity=0.35, color="#888"))
    bins = agg["bins"]
    centre = [float(np.sqrt(max(b["lower"], 1e-9) * b["upper"])) if np.isfinite(b["upper"]) else b["lower"]
              for b in bins]
    fig.add_scatter(x=centre, y=[b["observed_mean_bps"] for b in bins], mode="lines+markers",
                    name=f"observed mean (exact, all {agg['rows']:,} rows)", line=dict(color="#1f77b4"))
    fig.add_scatter(x=centre, y=[b["predicted_mean_bps"] for b in bins], mode="lines+markers",
                    name="predicted mean (exact)", line=dict(color="#d62728", dash="dash"))
    fig.update_layout(height=FIGURE_HEIGHT, margin=dict(l=55, r=10, t=40, b=45),
                      title="Cost vs participation: binned means exact, points sampled",
                      xaxis=dict(type="log", title="participation Q/V"), yaxis_title="cost (bps)",
                      legend=dict(orientation="h", y=-0.2))
    return fig


def quantile_rows(agg: Mapping[str, Any]) -> list[dict]:
    qs = agg["quantiles"]["residual_bps"]
    return [{"quantile": f"{float(q):.0%}" if float(q) >= 0.1 else f"{float(q):.0%}".replace("%", " %"),
             "residual (bps)": f"{v:.4g}"} for q, v in qs.items()]


def bin_rows(agg: Mapping[str, Any]) -> list[dict]:
    return [{"participation": f"{b['lower']:.2g} – {b['upper']:.2g}", "rows": f"{b['n']:,}",
             "observed (bps)": f"{b['observed_mean_bps']:.3f}",
             "predicted (bps)": f"{b['predicted_mean_bps']:.3f}", "RMSE (bps)": f"{b['rmse_bps']:.3f}"}
            for b in agg["bins"]]


def param_rows(result: Mapping[str, Any]) -> list[dict]:
    """Rows of a streamed result's `to_dict()`."""
    out = []
    for name, value in result["params"].items():
        se = result["std_errors"].get(name)
        ci = result["conf_int"].get(name) or [None, None]
        out.append({"param": name, "value": f"{value:.6g}",
                    "std err": "—" if se is None else f"{se:.4g}",
                    "95% CI": "—" if ci[0] is None else f"[{ci[0]:.5g}, {ci[1]:.5g}]"})
    return out


def bars_figure(bars: Mapping[str, Any], symbol: str | None = None) -> go.Figure:
    """The closes of bars aggregated out of core: every bar, or per point the last close of a
    bucket of `step` bars with the bucket's exact min-max band (no spike is lost)."""
    fig = go.Figure()
    if "low" in bars:
        fig.add_scatter(x=bars["t"], y=bars["high"], mode="lines", line=dict(width=0), showlegend=False,
                        hoverinfo="skip")
        fig.add_scatter(x=bars["t"], y=bars["low"], mode="lines", line=dict(width=0), fill="tonexty",
                        fillcolor="rgba(31,119,180,0.25)", name=f"min-max of each {bars['step']} bars (exact)")
    fig.add_scatter(x=bars["t"], y=bars["close"], mode="lines", line=dict(width=1),
                    name="close" if bars["step"] == 1 else f"close, every {bars['step']}th bar")
    title = f"{format_count(bars['n'])} bars" + (f" of {user_text(symbol)}" if symbol else "")
    fig.update_layout(height=FIGURE_HEIGHT, margin=dict(l=60, r=10, t=40, b=40), title=title,
                      xaxis_title="time (UTC)", yaxis_title="close", legend=dict(orientation="h", y=-0.2))
    return fig
