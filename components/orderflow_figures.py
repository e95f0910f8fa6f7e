"""Pure builders of the Order flow panel: an `OrderFlowReport` (execal.models.orderflow.analysis) in,
a `go.Figure` or table rows out. No Dash here.

One figure per question a quant asks of a venue's order flow, every venue on the same axes:
- does the book's imbalance move the price? OFI against the mid change per window with each venue's
  fit (OFI in multiples of the venue's average best depth, so BTC and ETH venues share an axis);
- is impact inversely proportional to depth (CKS)? β against average depth per interval, log–log,
  with the fitted power law;
- how long do order signs remember? the sign autocorrelation, log–log, with its power law;
- how does price respond to an order and how does impact decay? the response function R(ℓ) and the
  propagator kernel G(ℓ) with its power-law fit;
- how fast does the book come back after a sweep? the recovered share of the depth dip and the
  spread excess after sweeps, with the fitted exponential recovery;
- and one comparison table (β, R² beside the paper's 0.65 at 10 s, λ, Amihud, sign memory, kernel
  decay, half-lives, evaporation episodes).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from execal.components.figures import empty_figure, user_text
from execal.components.impact_figures import PALETTE, TEMPLATE, format_number
from execal.models.orderflow.analysis import PAPER_R2_10S, OrderFlowReport
from execal.models.orderflow.result import window_label

FIGURE_HEIGHT_PX = 340
NO_REPORT = "No order flow analysed yet: pick the captures on the left, then press Analyse"
MAX_POINTS = 2_000          # points per venue and window in the scatter


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _layout(fig: go.Figure, **kw) -> go.Figure:
    fig.update_layout(template=TEMPLATE, height=kw.pop("height", FIGURE_HEIGHT_PX),
                      margin={"l": 60, "r": 20, "t": 40, "b": 50},
                      legend={"orientation": "h", "y": -0.22, "x": 0}, **kw)
    return fig


def _finite(*arrays):
    ok = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        ok &= np.isfinite(np.asarray(a, dtype=np.float64))
    return [np.asarray(a, dtype=np.float64)[ok] for a in arrays]


def venue_name(v) -> str:
    """'usdm BTCUSDT': the venue and symbol as the capture names them (tables; figures use `legend_name`)."""
    return f"{v.venue.removeprefix('binance-')} {v.symbol}"


def legend_name(v) -> str:
    """`venue_name` escaped for plotly (a capture's symbol is the user's text). A trace carries it as its
    `meta` too, so a hover shows it by '%{meta}', never by pasting it into the template."""
    return user_text(venue_name(v))


def legend_group(v) -> str:
    """The venue's legend group (its label, escaped like any user text in a figure)."""
    return user_text(v.label)


EXTRA = "<extra>%{meta}</extra>"     # the hover's side box: the trace's venue


# --- the comparison table ------------------------------------------------------------------------


def status_summary(report: OrderFlowReport) -> dict:
    """Headline, level (success / warning / danger) and the details listed under it."""
    failed = [f"{v.label}: {m} not fitted — {err}" for v in report.venues for m, err in v.errors.items()]
    not_conv = [f"{v.label}: {m} did not converge ({r.report.message})"
                for v in report.venues for m, r in v.results.items() if not r.converged]
    n = len(report.venues)
    if failed or not_conv:
        level = "danger" if len(failed) + len(not_conv) >= n * 2 else "warning"
        headline = f"{len(failed) + len(not_conv)} model fit(s) missing on {n} venue(s)"
    else:
        level = "success"
        headline = f"Converged — {n} venue{'s' if n != 1 else ''}, every model fitted"
    return {"headline": headline, "level": level, "details": failed + not_conv,
            "warnings": list(report.warnings)}


def comparison_rows(report: OrderFlowReport) -> list[dict]:
    """The per-venue table: β and R² per window, λ, Amihud, sign memory γ, kernel decay β_G and
    half-lives (formatted cells; `key` = venue label)."""
    labs = [window_label(w) for w in report.windows_s]
    mid = labs[min(1, len(labs) - 1)]
    rows = []
    for v, r in zip(report.venues, report.table()):
        row: dict[str, Any] = {"key": v.label, "venue": venue_name(v)}
        row[f"β {mid} (bps/unit)"] = format_number(r[f"beta_{mid}"])
        row[f"β×depth {mid} (bps)"] = format_number(r[f"beta_x_depth_{mid}"], 3)
        for lab in labs:
            row[f"R² {lab}"] = format_number(r[f"r2_{lab}"], 2)
        row[f"λ {mid} (bps/unit)"] = format_number(r[f"lambda_{mid}"])
        row[f"Amihud {mid} (bps/1e6)"] = format_number(r[f"amihud_{mid}"], 3)
        row["β ∝ depth^−x: x"] = format_number(r["depth_exponent"], 2)
        row["sign memory γ"] = format_number(r["gamma"], 2)
        row["kernel β"] = format_number(r["kernel_beta"], 2)
        row["depth t½ (s)"] = format_number(r["depth_half_life_s"], 3)
        row["spread t½ (s)"] = format_number(r["spread_half_life_s"], 3)
        row["sweeps"] = format_number(_int(r["sweeps"]))
        row["evaporation"] = format_number(_int(r["evaporation_episodes"]))
        row["status"] = "converged" if r["converged"] else "incomplete"
        rows.append(row)
    return rows


def _int(v):
    return None if v is None or not math.isfinite(float(v)) else int(v)


def paper_note(report: OrderFlowReport) -> str:
    labs = [window_label(w) for w in report.windows_s]
    r2 = [r.get("r2_10s") for r in report.table()] if "10s" in labs else []
    got = ", ".join(f"{x:.2f}" for x in r2 if x is not None and math.isfinite(x))
    tail = f" (here at 10 s: {got})" if got else ""
    return (f"Cont, Kukanov & Stoikov (2014) report an average R² ≈ {PAPER_R2_10S} for 10 s windows on US "
            f"equities{tail}. β: bps of mid per base unit of OFI; β×depth: per average best depth of OFI, "
            "comparable across symbols.")


# --- figures -----------------------------------------------------------------------------------------


def ofi_scatter_figure(report: OrderFlowReport) -> go.Figure:
    """One panel per window: Δmid (bps) against OFI in multiples of the venue's average best depth,
    each venue's points and its fitted line."""
    labs = [window_label(w) for w in report.windows_s]
    venues = [v for v in report.venues if "ofi" in v.results]
    if not venues:
        return empty_figure("No OFI regression to draw")
    fig = make_subplots(rows=1, cols=len(labs), subplot_titles=[f"{lab} windows" for lab in labs],
                        horizontal_spacing=0.06)
    for i, v in enumerate(venues):
        res = v.results["ofi"]
        for c, lab in enumerate(labs, start=1):
            depth = res.metrics.get(f"mean_best_depth_{lab}", math.nan)
            x, y = _finite(res.curves[f"ofi_{lab}"] / depth, res.curves[f"dmid_bps_{lab}"])
            if x.size == 0:
                continue
            step = max(1, x.size // MAX_POINTS)
            fig.add_trace(go.Scattergl(
                x=x[::step], y=y[::step], mode="markers", name=legend_name(v), meta=legend_name(v),
                legendgroup=legend_group(v), showlegend=c == 1, marker={"size": 4, "opacity": 0.45, "color": colour(i)},
                hovertemplate="OFI %{x:.2f} × depth<br>Δmid %{y:.2f} bps" + EXTRA), row=1, col=c)
            slope = res.params.get(f"beta_{lab}", math.nan) * depth
            alpha = res.metrics.get(f"alpha_bps_{lab}", 0.0)
            if math.isfinite(slope):
                xs = np.array([x.min(), x.max()])
                r2 = res.metrics.get(f"r2_{lab}", math.nan)
                fig.add_trace(go.Scatter(
                    x=xs, y=alpha + slope * xs, mode="lines", legendgroup=legend_group(v), showlegend=False,
                    line={"color": colour(i), "width": 2}, name=f"{legend_name(v)} fit", meta=legend_name(v),
                    hovertemplate=f"%{{meta}}: β×depth {slope:.3g} bps, R² {r2:.2f}<extra></extra>"),
                    row=1, col=c)
            fig.update_xaxes(title_text="OFI / avg best depth", row=1, col=c)
    fig.update_yaxes(title_text="Δmid (bps)", row=1, col=1)
    return _layout(fig)


def _log_log_figure(report: OrderFlowReport, model: str, points, law, *, hover: str, size: int, empty: str,
                    x_title: str, y_title: str) -> go.Figure:
    """Per venue with a `model` result: its points `points(res)` = (x, y) where both are positive (markers,
    in the legend) and its fitted power law `law(res, x)` = (x, y, hover) or None (a line in its group)."""
    fig = go.Figure()
    drawn = False
    for i, v in enumerate(report.venues):
        res = v.results.get(model)
        if res is None:
            continue
        x, y = (np.asarray(a, dtype=np.float64) for a in points(res))
        keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        if not keep.any():
            continue
        drawn = True
        fig.add_trace(go.Scatter(x=x[keep], y=y[keep], mode="markers", name=legend_name(v), meta=legend_name(v),
                                 legendgroup=legend_group(v), marker={"color": colour(i), "size": size},
                                 hovertemplate=hover + EXTRA))
        fitted = law(res, x[keep])
        if fitted is not None:
            fig.add_trace(go.Scatter(x=fitted[0], y=fitted[1], mode="lines", legendgroup=legend_group(v),
                                     showlegend=False, line={"color": colour(i)}, name=f"{legend_name(v)} fit",
                                     meta=legend_name(v), hovertemplate=fitted[2] + EXTRA))
    if not drawn:
        return empty_figure(empty)
    fig.update_xaxes(type="log", title_text=x_title)
    fig.update_yaxes(type="log", title_text=y_title)
    return _layout(fig)


def beta_depth_figure(report: OrderFlowReport) -> go.Figure:
    """β_j against average best depth AD_j per interval, log–log, with β = c·AD^(−λ) per venue."""
    def law(res, depth):
        lam, c = res.params.get("depth_exponent", math.nan), res.params.get("depth_coef", math.nan)
        if not (math.isfinite(lam) and math.isfinite(c)):
            return None
        xs = np.geomspace(depth.min(), depth.max(), 20)
        return xs, c * xs ** (-lam), f"β ∝ depth^−{lam:.2f}"

    return _log_log_figure(report, "ofi", lambda res: (res.curves["interval_depth"], res.curves["interval_beta"]),
                           law, hover="depth %{x:.3g}<br>β %{y:.3g} bps/unit", size=7,
                           empty="No interval with a positive β to draw",
                           x_title="average best depth (base units)", y_title="β (bps per unit of OFI)")


def sign_memory_figure(report: OrderFlowReport) -> go.Figure:
    """The centred trade-sign autocorrelation ρ(ℓ) (positive lags), log–log, with ρ ∝ ℓ^(−γ)."""
    def law(res, _lags):
        gamma = res.params.get("gamma", math.nan)
        return (res.curves["lag"][1:], res.curves["rho_fit"], f"ρ ∝ ℓ^−{gamma:.2f}") if math.isfinite(gamma) else None

    return _log_log_figure(report, "propagator", lambda res: (res.curves["lag"][1:], res.curves["rho"][1:]), law,
                           hover="lag %{x}<br>ρ %{y:.3f}", size=5, empty="No sign autocorrelation to draw",
                           x_title="lag ℓ (orders)", y_title="sign autocorrelation ρ(ℓ)")


def propagator_figure(report: OrderFlowReport) -> go.Figure:
    """Left: the response R(ℓ) with its bootstrap band; right: the kernel G(ℓ) with its power law."""
    venues = [v for v in report.venues if "propagator" in v.results]
    if not venues:
        return empty_figure("No propagator to draw")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("response R(ℓ) (bps)", "propagator kernel G(ℓ) (bps)"),
                        horizontal_spacing=0.1)
    for i, v in enumerate(venues):
        res = v.results["propagator"]
        lag = res.curves["lag"]
        for c, (name, fit) in enumerate((("R", None), ("G", "G_fit")), start=1):
            y = res.curves[name]
            lo, hi = res.curves.get(f"{name}_lo"), res.curves.get(f"{name}_hi")
            if lo is not None and hi is not None:
                fig.add_trace(go.Scatter(x=np.concatenate([lag[1:], lag[1:][::-1]]),
                                         y=np.concatenate([hi[1:], lo[1:][::-1]]), fill="toself",
                                         fillcolor=colour(i), opacity=0.15, line={"width": 0}, hoverinfo="skip",
                                         legendgroup=legend_group(v), showlegend=False, name=f"{legend_name(v)} band"),
                              row=1, col=c)
            fig.add_trace(go.Scatter(x=lag[1:], y=y[1:], mode="lines", name=legend_name(v), meta=legend_name(v),
                                     legendgroup=legend_group(v), showlegend=c == 1,
                                     line={"color": colour(i), "width": 2},
                                     hovertemplate=f"lag %{{x}}<br>{name} %{{y:.3f}} bps" + EXTRA), row=1, col=c)
            if fit and math.isfinite(res.params.get("kernel_beta", math.nan)):
                fig.add_trace(go.Scatter(x=lag[1:], y=res.curves[fit], mode="lines", legendgroup=legend_group(v),
                                         showlegend=False, line={"color": colour(i), "dash": "dot"},
                                         name=f"{legend_name(v)} power law", meta=legend_name(v),
                                         hovertemplate=f"G ∝ ℓ^−{res.params['kernel_beta']:.2f}" + EXTRA),
                              row=1, col=c)
    fig.update_xaxes(type="log", title_text="lag ℓ (orders)")
    return _layout(fig)


def resilience_figure(report: OrderFlowReport) -> go.Figure:
    """After sweeps: the recovered share of the depth dip (left) and of the spread widening (right)
    against the time since the low / the peak, with the fitted exponential recovery."""
    venues = [v for v in report.venues if "resilience" in v.results]
    if not venues:
        return empty_figure("No resilience to draw (no sweep on any venue)")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("depth: share of the dip recovered", "spread: share of the widening left"))
    for i, v in enumerate(venues):
        res = v.results["resilience"]
        tau = res.curves["tau_s"]
        for c, what in enumerate(("depth", "spread"), start=1):
            curve, fit = res.curves.get(f"{what}_curve"), res.curves.get(f"{what}_fit")
            if curve is None:
                continue
            t0 = res.metrics.get(f"{what}_t0_s", 0.0)
            x = tau - t0
            keep = np.isfinite(curve) & (x > 0)
            fig.add_trace(go.Scatter(x=x[keep], y=curve[keep], mode="lines", name=legend_name(v),
                                     meta=legend_name(v), legendgroup=legend_group(v), showlegend=c == 1,
                                     line={"color": colour(i), "width": 2},
                                     hovertemplate="%{x:.2f} s: %{y:.2f}" + EXTRA),
                          row=1, col=c)
            h = res.params.get(f"{what}_half_life_s", math.nan)
            if fit is not None and math.isfinite(h):
                fig.add_trace(go.Scatter(x=x[keep], y=fit[keep], mode="lines", legendgroup=legend_group(v),
                                         showlegend=False, line={"color": colour(i), "dash": "dot"},
                                         name=f"{legend_name(v)} fit", meta=legend_name(v),
                                         hovertemplate=f"half-life {h:.3g} s" + EXTRA), row=1, col=c)
    fig.add_hline(y=0.5, line={"color": "#adb5bd", "dash": "dash", "width": 1})
    fig.update_xaxes(type="log", title_text="seconds after the low / peak")
    return _layout(fig)


def evaporation_rows(report: OrderFlowReport, limit: int = 50) -> list[dict]:
    """Liquidity-evaporation episodes of every venue (the first `limit`), time order."""
    rows = []
    for v in report.venues:
        res = v.results.get("resilience")
        for ep in (res.tables.get("evaporation", []) if res else []):
            rows.append({"key": f"{v.label} {ep['start']}", "venue": venue_name(v), "start": ep["start"][11:23],
                         "side": ep["side"], "seconds": format_number(ep["duration_s"], 3),
                         "usual depth": format_number(ep["depth_usual"], 4),
                         "low": format_number(ep["depth_low"], 4), "fall": f"{100 * ep['fall_share']:.0f} %",
                         "traded": format_number(ep["traded"], 4)})
    rows.sort(key=lambda r: r["start"])
    return rows[:limit]
