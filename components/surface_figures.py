"""Pure builders of the Vol surface panel: a fitted `SurfaceResult` in, a `go.Figure` or table rows out.

What a quant checks after fitting a surface, one builder each: the smiles per expiry (market mid IV with
the bid/ask band as error bars, and the fitted curve), the fitted surface in 3D (k × T → implied vol,
drawn only over each expiry's quoted range: SVI wings extrapolated to a common k-grid say nothing about the
market), the ATM vol term structure and ATM skew against T, the residuals in vol points by k and expiry,
and the tables: every slice's optimizer status (never hidden), the parameters per expiry (plus the SSVI
globals), and the arbitrage report (butterfly per slice, calendar across slices, SSVI's sufficient
conditions). No Dash here; the panel wraps the rows in components. The numbers come from the result
(`smile_frame`, `curve_frame`, `implied_vol`, `arbitrage`) and the model's own formulas
(`execal.models.surface.svi.svi_derivatives` for the ATM level and slope): this module only shapes them for display.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from execal.components.figures import empty_figure, plain_verdict, user_texts
from execal.components.impact_figures import PALETTE, TEMPLATE, format_number
from execal.models.surface.svi import SVI_PARAMS, VOL_PTS, svi_derivatives

SMILE_COLUMNS = 3                 # small multiples per row (fits 1280 px wide)
SMILE_ROW_HEIGHT_PX = 240
DEFAULT_SMILES = 9                # expiries drawn before the user picks (a 3×3 grid)
MAX_SMILES = 12
SURFACE_K_POINTS = 61
SURFACE_HEIGHT_PX = 460
FIGURE_HEIGHT_PX = 330
CURVE_POINTS = 121                # fitted-curve points per smile
MARKET_SKEW_POINTS = 4            # quotes nearest k = 0 in the market ATM skew (few: a smile is no parabola)
NO_RESULT = "No surface fitted yet: pick the chain and the model on the left, then press Fit surface"
NO_FITTED = "No expiry could be fitted (see the status table): nothing to draw"

CONDITION_LABELS = {
    "theta_non_decreasing": "theta non-decreasing in T (calendar)",
    "calendar_dthetaphi_nonneg": "∂θ(θφ) ≥ 0 (calendar, GJ Thm 4.1)",
    "calendar_dthetaphi_upper": "∂θ(θφ) ≤ (1 + √(1−ρ²))/ρ²·φ (calendar, GJ Thm 4.1)",
    "butterfly_theta_phi": "θφ(1 + |ρ|) < 4 (butterfly, GJ Thm 4.2)",
    "butterfly_theta_phi2": "θφ²(1 + |ρ|) ≤ 4 (butterfly, GJ Thm 4.2)",
    "power_law_eta": "η(1 + |ρ|) ≤ 2 and 0 < γ ≤ ½ (power-law shortcut)",
}


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


# --- expiries -------------------------------------------------------------------------------------


def expiry_iso(expiry: Any) -> str:
    ts = pd.Timestamp(expiry)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).isoformat()


def expiry_label(expiry: Any, T_years: float | None = None) -> str:
    """'2024-11-29 08:00 · T 0.080 y' (the minutes matter: two expiries can share a day)."""
    ts = pd.Timestamp(expiry)
    text = f"{ts:%Y-%m-%d %H:%M}"
    return text if T_years is None else f"{text} · T {T_years:.3f} y"


def expiry_options(result) -> list[dict]:
    """Dropdown options of the smile selector: every expiry of the result, shortest first."""
    if result is None:
        return []
    return [{"label": f"{expiry_label(s.expiry, s.T_years)} · {s.n_points} quotes"
                      + ("" if s.params is not None else f" · {s.status}"),
             "value": expiry_iso(s.expiry)} for s in result.slices]


def default_expiries(result, limit: int = DEFAULT_SMILES) -> list[str]:
    """All expiries when there are at most `limit`, else `limit` of them spread evenly over the term
    structure (the first and the last always among them)."""
    values = [o["value"] for o in expiry_options(result)]
    if len(values) <= limit:
        return values
    picks = np.unique(np.round(np.linspace(0, len(values) - 1, limit)).astype(int))
    return [values[i] for i in picks]


def selected_expiries(result, chosen: Sequence[str] | None, limit: int = MAX_SMILES) -> list[str]:
    """The user's pick that exists in `result`, in expiry order, at most `limit`; the default when none does."""
    values = [o["value"] for o in expiry_options(result)]
    # the values are the options' own ISO strings: compared as text (the browser may send anything)
    wanted = {str(c) for c in (chosen or ()) if isinstance(c, str)} if isinstance(chosen, (list, tuple)) else set()
    kept = [v for v in values if v in wanted][:limit]
    return kept or default_expiries(result)


# --- the view: everything the figures draw, computed once per result ------------------------------


@dataclass(frozen=True, eq=False)
class SurfaceView:
    """A result's figure data, prepared once (the panel keeps it per result key): the quotes with the
    model's IV (`result.smile_frame()`, sorted by T then k), the fitted curves, the ATM table, and
    where each expiry's rows are (`spans`: expiry ISO -> (start, stop) into `smile` and `curves`)."""
    result: Any
    smile: pd.DataFrame
    curves: pd.DataFrame
    atm: pd.DataFrame
    smile_spans: Mapping[str, tuple[int, int]]
    curve_spans: Mapping[str, tuple[int, int]]
    rmse_vol_pts: float | None

    def quotes(self, iso: str) -> pd.DataFrame:
        a, b = self.smile_spans.get(iso, (0, 0))
        return self.smile.iloc[a:b]

    def curve(self, iso: str) -> pd.DataFrame:
        a, b = self.curve_spans.get(iso, (0, 0))
        return self.curves.iloc[a:b]


def _spans(expiry: pd.Series) -> dict[str, tuple[int, int]]:
    """(start, stop) of each expiry's run of rows (the frame is sorted by expiry)."""
    if expiry.empty:
        return {}
    ns = expiry.to_numpy("datetime64[ns]").astype(np.int64)
    cut = np.flatnonzero(np.diff(ns)) + 1
    starts = np.concatenate(([0], cut))
    stops = np.concatenate((cut, [ns.size]))
    return {expiry_iso(pd.Timestamp(int(ns[a]), tz="UTC")): (int(a), int(b)) for a, b in zip(starts, stops)}


def surface_view(result, curve_points: int = CURVE_POINTS) -> SurfaceView | None:
    """The figure data of `result` (None for no result)."""
    if result is None:
        return None
    smile = result.smile_frame()
    if not smile.empty:
        smile = smile.sort_values(["T_years", "k"], kind="stable").reset_index(drop=True)
    curves = result.curve_frame(points=curve_points)
    if not curves.empty:
        curves = curves.sort_values(["T_years", "k"], kind="stable").reset_index(drop=True)
    err = smile["error_vol_pts"].to_numpy(np.float64) if not smile.empty else np.zeros(0)
    err = err[np.isfinite(err)]
    rmse = float(np.sqrt(np.mean(err * err))) if err.size else None
    smile_spans = _spans(smile["expiry"]) if not smile.empty else {}
    return SurfaceView(result=result, smile=smile, curves=curves, atm=_atm_frame(result, smile, smile_spans),
                       smile_spans=smile_spans,
                       curve_spans=_spans(curves["expiry"]) if not curves.empty else {}, rmse_vol_pts=rmse)


# --- subplot grids without make_subplots (it validates every axis one property at a time) ---------


def _grid_layout(n: int, cols: int, titles: Sequence[str], *, x_title: str, y_title: str | None,
                 h_space: float = 0.06, v_space_px: float = 62.0, row_px: float = SMILE_ROW_HEIGHT_PX,
                 top_px: float = 64.0, bottom_px: float = 50.0) -> tuple[dict, list[tuple[str, str]], int]:
    """Layout axes + title annotations of an n-panel grid; returns (layout dict, [(xref, yref)], height)."""
    rows = math.ceil(n / cols)
    height = int(top_px + bottom_px + rows * row_px + (rows - 1) * v_space_px)
    plot_px = height - top_px - bottom_px
    width = (1.0 - (cols - 1) * h_space) / cols
    cell = row_px / plot_px
    gap = v_space_px / plot_px if rows > 1 else 0.0
    # the margins are the ones assumed above, so paper y = 1 is the top row's top edge; the titles sit just
    # above it and the legend above them
    layout: dict = {"annotations": [], "margin": {"l": 60, "r": 12, "t": top_px, "b": bottom_px},
                    "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0 + 22.0 / plot_px,
                               "xanchor": "left", "x": 0, "font": {"size": 11}}}
    refs = []
    for i in range(n):
        r, c = divmod(i, cols)
        suffix = "" if i == 0 else str(i + 1)
        x0 = c * (width + h_space)
        y1 = 1.0 - r * (cell + gap)
        layout[f"xaxis{suffix}"] = {"domain": [x0, x0 + width], "anchor": f"y{suffix}",
                                    "title": {"text": x_title if r == rows - 1 or i + cols >= n else None,
                                              "font": {"size": 11}}}
        layout[f"yaxis{suffix}"] = {"domain": [max(y1 - cell, 0.0), y1], "anchor": f"x{suffix}",
                                    "title": {"text": y_title if c == 0 else None, "font": {"size": 11}}}
        layout["annotations"].append({"text": titles[i], "x": x0 + width / 2, "y": y1, "xref": "paper",
                                      "yref": "paper", "xanchor": "center", "yanchor": "bottom",
                                      "showarrow": False, "font": {"size": 11}})
        refs.append((f"x{suffix}", f"y{suffix}"))
    return layout, refs, height


def _figure(traces: list[dict], layout: dict, *, height: int, legend: bool = True) -> go.Figure:
    base = {"template": TEMPLATE, "height": height, "margin": {"l": 60, "r": 12, "t": 40, "b": 48},
            "showlegend": legend, "hovermode": "closest", "uirevision": "keep",
            "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0,
                       "font": {"size": 11}}}
    return go.Figure(data=traces, layout={**base, **layout})   # `layout` wins (grid margins, legend)


# --- smiles ---------------------------------------------------------------------------------------

SMILE_HOVER = ("K %{customdata[0]:,.0f} %{customdata[1]} · k %{x:.4f}<br>mid %{y:.2f} % "
               "(bid %{customdata[2]:.2f}, ask %{customdata[3]:.2f})<br>fit %{customdata[4]:.2f} % · "
               "error %{customdata[5]:+.2f} vol pts<extra>%{fullData.name}</extra>")


def smiles_figure(view: SurfaceView | None, expiries: Sequence[str] | None = None,
                  pricing: Sequence["PricingView"] = ()) -> go.Figure:
    """Small multiples, one per chosen expiry: mid IV markers, bid/ask IVs as asymmetric error bars,
    the fitted curve over the quoted range and a little beyond, and the smile of each calibrated pricing
    model (`pricing`: Heston, Bates; dashed) beside it. Vols in % (1 % = 1 vol point)."""
    if view is None:
        return empty_figure(NO_RESULT)
    result = view.result
    chosen = selected_expiries(result, expiries)
    by_iso = {expiry_iso(s.expiry): s for s in result.slices}
    slices = [by_iso[c] for c in chosen if c in by_iso]
    if not slices:
        return empty_figure("No expiry selected: pick one or more in 'Smiles of'")
    titles = []
    for s in slices:
        title = expiry_label(s.expiry, s.T_years)
        if s.params is None:
            title += f" — {s.status}"
        elif s.rmse_vol_pts is not None:
            # two significant digits: a near-perfect fit reads 2.5e-05 vp, never a misleading 0.00
            title += f" — RMSE {format_number(s.rmse_vol_pts, 2)} vp"
        titles.append(title)
    cols = min(SMILE_COLUMNS, len(slices))
    layout, refs, height = _grid_layout(len(slices), cols, titles, x_title="k = ln(K/F)", y_title="implied vol (%)")
    traces: list[dict] = []
    for i, (s, (xref, yref)) in enumerate(zip(slices, refs)):
        iso = expiry_iso(s.expiry)
        pts = view.quotes(iso)
        mid = VOL_PTS * pts["iv_mid"].to_numpy(np.float64)
        bid = VOL_PTS * pts["iv_bid"].to_numpy(np.float64)
        ask = VOL_PTS * pts["iv_ask"].to_numpy(np.float64)
        model = VOL_PTS * pts["iv_model"].to_numpy(np.float64)
        custom = np.column_stack([pts["strike"].to_numpy(np.float64),
                                  user_texts(pts["option_type"].astype(str)),
                                  bid, ask, model, pts["error_vol_pts"].to_numpy(np.float64)])
        traces.append({"type": "scatter", "x": pts["k"].to_numpy(np.float64), "y": mid, "mode": "markers",
                       "xaxis": xref, "yaxis": yref, "name": "market mid (bars: bid/ask IV)",
                       "legendgroup": "mid", "showlegend": i == 0, "customdata": custom,
                       "hovertemplate": SMILE_HOVER, "marker": {"size": 5, "color": PALETTE[0]},
                       "error_y": {"type": "data", "symmetric": False, "array": ask - mid, "arrayminus": mid - bid,
                                   "thickness": 1, "width": 0, "color": "#9ec5fe"}})
        curve = view.curve(iso)
        if len(curve):
            traces.append({"type": "scatter", "x": curve["k"].to_numpy(np.float64),
                           "y": VOL_PTS * curve["iv_model"].to_numpy(np.float64), "mode": "lines",
                           "xaxis": xref, "yaxis": yref, "name": f"fit ({result.model.name.upper()})",
                           "legendgroup": "fit", "showlegend": i == 0, "line": {"color": PALETTE[1], "width": 2},
                           "hovertemplate": "k %{x:.4f}<br>fit %{y:.2f} %<extra></extra>"})
        for j, pv in enumerate(pricing):
            curve = pv.curve(iso)
            if len(curve):
                traces.append({"type": "scatter", "x": curve["k"].to_numpy(np.float64),
                               "y": VOL_PTS * curve["iv_model"].to_numpy(np.float64), "mode": "lines",
                               "xaxis": xref, "yaxis": yref, "name": pv.name, "legendgroup": pv.result.model.name,
                               "showlegend": i == 0, "line": {"color": pricing_colour(j), "width": 2, "dash": "dash"},
                               "hovertemplate": f"k %{{x:.4f}}<br>{pv.result.model.name} %{{y:.2f}} %<extra></extra>"})
    return _figure(traces, layout, height=height)


# --- 3D surface ----------------------------------------------------------------------------------


def surface_grid(view: SurfaceView, k_points: int = SURFACE_K_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k grid, T per fitted expiry, model IV (fraction) of shape (expiries, k)) with NaN outside each
    expiry's quoted k-range (padded by 5 % of its width): the surface shows where it was fitted."""
    result = view.result
    fitted = sorted(result.fitted_slices, key=lambda s: s.T_years)
    if not fitted:
        return np.zeros(0), np.zeros(0), np.zeros((0, 0))
    ranges = []
    for s in fitted:
        kq = view.quotes(expiry_iso(s.expiry))["k"].to_numpy(np.float64)
        pad = 0.05 * max(float(np.ptp(kq)), 1e-3)
        ranges.append((float(kq.min()) - pad, float(kq.max()) + pad))
    lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
    k = np.linspace(lo, hi, k_points)
    z = np.full((len(fitted), k.size), np.nan)
    for i, (s, (a, b)) in enumerate(zip(fitted, ranges)):
        inside = (k >= a) & (k <= b)
        z[i, inside] = result.implied_vol(k[inside], s.expiry)
    return k, np.array([s.T_years for s in fitted]), z


def surface_figure(view: SurfaceView | None, k_points: int = SURFACE_K_POINTS) -> go.Figure:
    """The fitted surface (k × T → implied vol %) with the market mids as dots."""
    if view is None:
        return empty_figure(NO_RESULT)
    k, T, z = surface_grid(view, k_points)
    if T.size == 0:
        return empty_figure(NO_FITTED)
    smile = view.smile
    traces: list[dict] = []
    if T.size >= 2:
        traces.append({"type": "surface", "x": k, "y": T, "z": VOL_PTS * z, "colorscale": "Viridis",
                       "opacity": 0.9, "name": "fit",
                       "colorbar": {"title": {"text": "IV %"}, "len": 0.7, "thickness": 12},
                       "hovertemplate": "k %{x:.3f}<br>T %{y:.3f} y<br>fit %{z:.2f} %<extra></extra>"})
    else:   # one fitted expiry: a surface needs two rows, draw its curve
        traces.append({"type": "scatter3d", "x": k, "y": np.full(k.size, T[0]), "z": VOL_PTS * z[0],
                       "mode": "lines", "name": "fit", "line": {"color": PALETTE[1], "width": 5}})
    traces.append({"type": "scatter3d", "x": smile["k"].to_numpy(np.float64),
                   "y": smile["T_years"].to_numpy(np.float64), "z": VOL_PTS * smile["iv_mid"].to_numpy(np.float64),
                   "mode": "markers", "name": "market mid", "marker": {"size": 2.5, "color": "#212529"},
                   "hovertemplate": "k %{x:.3f}<br>T %{y:.3f} y<br>mid %{z:.2f} %<extra></extra>"})
    return _figure(traces, {"margin": {"l": 0, "r": 0, "t": 10, "b": 0},
                            "scene": {"xaxis": {"title": {"text": "k = ln(K/F)"}},
                                      "yaxis": {"title": {"text": "T (years)"}},
                                      # the unit on every tick, not as a title: plotly places a 3D axis
                                      # title past the tick labels, where a half-page card cuts it off
                                      "zaxis": {"title": {"text": ""}, "ticksuffix": "%"},
                                      # far enough, and looking a little right of centre, that the
                                      # ticks on the left stay inside the card
                                      "camera": {"eye": {"x": -1.9, "y": -1.75, "z": 0.95},
                                                 "center": {"x": 0.12, "y": 0.12, "z": -0.05}}}},
                   height=SURFACE_HEIGHT_PX, legend=False)


# --- ATM term structure and skew -----------------------------------------------------------------


def market_atm(k: np.ndarray, iv: np.ndarray, points: int = MARKET_SKEW_POINTS) -> tuple[float, float]:
    """(ATM vol, ATM slope dσ/dk) of quotes: a quadratic through the `points` quotes nearest k = 0. Only
    when the quotes straddle the money (no extrapolated market value): NaN otherwise; with 2 quotes the
    vol is interpolated and the slope is NaN."""
    ok = np.isfinite(k) & np.isfinite(iv)
    k, iv = k[ok], iv[ok]
    if k.size < 2 or not (k.min() <= 0.0 <= k.max()):
        return math.nan, math.nan
    if k.size < 3:
        order = np.argsort(k)
        return float(np.interp(0.0, k[order], iv[order])), math.nan
    near = np.argsort(np.abs(k), kind="stable")[:points]
    _, slope, level = np.polyfit(k[near], iv[near], 2)
    return float(level), float(slope)


def _atm_frame(result, smile: pd.DataFrame, spans: Mapping[str, tuple[int, int]]) -> pd.DataFrame:
    cols = ["expiry", "T_years", "atm_vol_model", "atm_skew_model", "atm_vol_market", "atm_skew_market"]
    rows = []
    for s in sorted(result.slices, key=lambda s: s.T_years):
        vol_m = skew_m = math.nan
        if s.params is not None:
            w, w1, _ = svi_derivatives(np.zeros(1), *(s.params[p] for p in SVI_PARAMS))
            if w[0] > 0:
                vol_m = math.sqrt(w[0] / s.T_years)
                skew_m = float(w1[0]) / (2.0 * math.sqrt(w[0] * s.T_years))
        a, b = spans.get(expiry_iso(s.expiry), (0, 0))
        pts = smile.iloc[a:b]
        vol_q, skew_q = market_atm(pts["k"].to_numpy(np.float64), pts["iv_mid"].to_numpy(np.float64)) \
            if b > a else (math.nan, math.nan)
        rows.append({"expiry": s.expiry, "T_years": s.T_years, "atm_vol_model": vol_m, "atm_skew_model": skew_m,
                     "atm_vol_market": vol_q, "atm_skew_market": skew_q})
    return pd.DataFrame(rows, columns=cols)


def term_structure_figure(view: SurfaceView | None) -> go.Figure:
    """ATM implied vol (%) and ATM skew ∂σ/∂k (vol points per unit k) against T: the fit as a line,
    the market's near-the-money estimate as open dots.

    Model: σ_ATM = sqrt(w(0)/T), ∂σ/∂k(0) = w'(0)/(2·sqrt(w(0)·T)) (from σ = sqrt(w/T))."""
    if view is None:
        return empty_figure(NO_RESULT)
    atm = view.atm
    if not np.isfinite(atm["atm_vol_model"].to_numpy(np.float64)).any():
        return empty_figure(NO_FITTED)
    layout, refs, height = _grid_layout(2, 2, ["ATM implied vol", "ATM skew ∂σ/∂k at k = 0"], x_title="T (years)",
                                        y_title=None, h_space=0.14, row_px=FIGURE_HEIGHT_PX - 120,
                                        top_px=72, bottom_px=48)
    layout["yaxis"]["title"] = {"text": "ATM vol (%)", "font": {"size": 11}}
    layout["yaxis2"]["title"] = {"text": "vol pts per unit k", "font": {"size": 11}}
    T = atm["T_years"].to_numpy(np.float64)
    labels = [expiry_label(e) for e in atm["expiry"]]
    traces: list[dict] = []
    for i, ((model, market, unit), (xref, yref)) in enumerate(zip(
            (("atm_vol_model", "atm_vol_market", "%"), ("atm_skew_model", "atm_skew_market", "vol pts per unit k")),
            refs)):
        traces.append({"type": "scatter", "x": T, "y": VOL_PTS * atm[model].to_numpy(np.float64),
                       "mode": "lines+markers", "xaxis": xref, "yaxis": yref, "name": "fit", "legendgroup": "fit",
                       "showlegend": i == 0, "text": labels, "line": {"color": PALETTE[1], "width": 2},
                       "marker": {"size": 6},
                       "hovertemplate": f"%{{text}}<br>T %{{x:.3f}} y<br>fit %{{y:.3f}} {unit}<extra></extra>"})
        traces.append({"type": "scatter", "x": T, "y": VOL_PTS * atm[market].to_numpy(np.float64),
                       "mode": "markers", "xaxis": xref, "yaxis": yref, "name": "market (quotes near k = 0)",
                       "legendgroup": "market", "showlegend": i == 0, "text": labels,
                       "marker": {"size": 8, "color": PALETTE[0], "symbol": "circle-open"},
                       "hovertemplate": f"%{{text}}<br>T %{{x:.3f}} y<br>market %{{y:.3f}} {unit}<extra></extra>"})
    return _figure(traces, layout, height=height)


# --- residuals ------------------------------------------------------------------------------------


def residuals_figure(view: SurfaceView | None) -> go.Figure:
    """Fit − market mid in vol points against k, one colour per expiry; a filled dot is inside the
    quote's bid/ask IV band, an open one outside it (or without a two-sided quote)."""
    if view is None:
        return empty_figure(NO_RESULT)
    smile = view.smile
    if smile.empty or not np.isfinite(smile["error_vol_pts"].to_numpy(np.float64)).any():
        return empty_figure(NO_FITTED)
    traces: list[dict] = []
    for i, s in enumerate(sorted(view.result.fitted_slices, key=lambda s: s.T_years)):
        pts = view.quotes(expiry_iso(s.expiry))
        inside = pts["in_band"].to_numpy(bool)
        traces.append({"type": "scatter", "x": pts["k"].to_numpy(np.float64),
                       "y": pts["error_vol_pts"].to_numpy(np.float64), "mode": "markers",
                       "name": expiry_label(s.expiry), "text": np.where(inside, "inside bid/ask", "outside bid/ask"),
                       "customdata": pts["strike"].to_numpy(np.float64),
                       "marker": {"size": 7, "color": colour(i), "symbol": np.where(inside, "circle", "circle-open")},
                       "hovertemplate": "%{fullData.name}<br>K %{customdata:,.0f} · k %{x:.4f}<br>"
                                        "error %{y:+.3f} vol pts (%{text})<extra></extra>"})
    layout = {"xaxis": {"title": {"text": "k = ln(K/F)"}},
              "yaxis": {"title": {"text": "fit − mid (vol points)"}, "zeroline": True, "zerolinecolor": "#6c757d",
                        "exponentformat": "e"},   # not SI prefixes: "150µ" vol points reads as a unit
              "legend": {"orientation": "v", "y": 1, "yanchor": "top", "x": 1.01, "xanchor": "left",
                         "font": {"size": 11}}}
    return _figure(traces, layout, height=FIGURE_HEIGHT_PX)


# --- status and tables ----------------------------------------------------------------------------


def _converged(s) -> bool | None:
    if s.optimizer is None:
        return None
    return bool(s.optimizer.success)


@plain_verdict
def status_summary(result) -> dict:
    """The optimizer's verdict for the banner: {"level": success|warning|danger|info, "headline", "details"}.
    Red when any fitted slice (or the SSVI surface) did not converge: never hidden behind a good RMSE."""
    details = list(result.warnings)
    skipped = [s for s in result.slices if s.params is None]
    for s in skipped:
        details.append(f"{expiry_label(s.expiry)}: {s.status} — {s.message}")
    n = len(result.slices)
    fitted = len(result.fitted_slices)
    if result.status == "fixed":
        return {"level": "info", "headline": "Parameters set by hand (no optimisation was run)", "details": details}
    if result.optimizer is not None:      # SSVI: one optimizer for the whole surface
        rep = result.optimizer
        where = f"{rep.method}, {rep.nfev} evaluations"
        if not rep.success:
            return {"level": "danger", "details": details,
                    "headline": f"NOT CONVERGED — the SSVI fit stopped: {rep.message} ({where}). "
                                "The parameters are where the optimizer stopped, not an optimum."}
        level = "warning" if details or rep.active_bounds else "success"
        if rep.active_bounds:
            details.append("at a bound: " + "; ".join(rep.active_bounds))
        return {"level": level, "headline": f"Converged — SSVI surface over {fitted} of {n} expiries: "
                                            f"{rep.message} ({where})", "details": details}
    failed = [s for s in result.slices if s.params is not None and _converged(s) is False]
    if failed:
        return {"level": "danger", "details": details,
                "headline": f"NOT CONVERGED — {len(failed)} of {fitted} fitted expiries: "
                            + ", ".join(expiry_label(s.expiry) for s in failed)
                            + ". Their parameters are where the optimizer stopped."}
    if not fitted:
        return {"level": "danger", "headline": f"No expiry fitted ({n} skipped)", "details": details}
    level = "warning" if details else "success"
    return {"level": level, "details": details,
            "headline": f"Converged — all {fitted} fitted expiries"
                        + (f" ({len(skipped)} skipped)" if skipped else "")}


def facts_line(view: SurfaceView) -> str:
    """Model, settings, data and overall fit quality in one line (under the banner)."""
    result = view.result
    ch = result.chain
    rmse = view.rmse_vol_pts
    arb = result.arbitrage
    n_bf = sum(len(b.get("violations", [])) for b in arb["butterfly"])
    n_cal = len(arb["calendar_violations"])
    verdict = ("free of static arbitrage on the grid" if arb["free_of_static_arbitrage_on_grid"] else
               f"arbitrage on the grid: {n_bf} butterfly, {n_cal} calendar interval(s)")
    return (f"{result.model.label}; weights {result.weights}; no-arbitrage fit "
            f"{'on' if result.no_arbitrage else 'off'} — {ch.underlying or 'chain'} at "
            f"{ch.as_of:%Y-%m-%d %H:%M} UTC, "
            f"{len(ch.points):,} quotes over {len(result.slices)} expiries; RMSE "
            f"{format_number(rmse, 3)} vol pts; {verdict}")


def slice_status_rows(result) -> list[dict]:
    """Every slice's optimizer status: converged or not, what it said, how hard it worked."""
    rows = []
    for s in result.slices:
        opt = s.optimizer
        conv = _converged(s)
        rows.append({
            "expiry": expiry_label(s.expiry), "T (y)": format_number(s.T_years, 4), "quotes": f"{s.n_points:,}",
            "status": s.status,
            "converged": "—" if conv is None else ("yes" if conv else "NO"),
            "optimizer": "—" if opt is None else opt.method,
            "evaluations": "—" if opt is None else format_number(opt.nfev),
            "message": s.message or ("" if opt is None else opt.message),
            "key": expiry_iso(s.expiry),
        })
    return rows


def parameter_rows(result) -> list[dict]:
    """Parameters per expiry (raw SVI a, b, rho, m, sigma; for SSVI also theta = ATM total variance) with
    the fit quality in vol points."""
    ssvi = result.global_params is not None
    rows = []
    for s in result.slices:
        p = s.params or {}
        row = {"expiry": expiry_label(s.expiry), "T (y)": format_number(s.T_years, 4),
               "forward": format_number(s.forward, 8)}
        if ssvi:
            row["theta"] = format_number(s.theta, 5)
        row.update({name: format_number(p.get(name), 5) for name in SVI_PARAMS})
        row.update({"RMSE (vol pts)": format_number(s.rmse_vol_pts, 3),
                    "max |error| (vol pts)": format_number(s.max_abs_error_vol_pts, 3),
                    "inside bid/ask": "—" if s.inside_band_fraction is None else f"{s.inside_band_fraction:.0%}",
                    "key": expiry_iso(s.expiry)})
        rows.append(row)
    return rows


def ssvi_rows(result) -> list[dict]:
    """The SSVI surface's shared parameters with their descriptions (from the model spec); [] for SVI."""
    if result.global_params is None:
        return []
    about = {p.name: p.description for p in result.model.params}
    return [{"parameter": name, "value": format_number(value, 6), "meaning": about.get(name, ""), "key": name}
            for name, value in result.global_params.items()]


def _k_range(a: float, b: float) -> str:
    return f"[{a:.3f}, {b:.3f}]"


def butterfly_rows(result) -> list[dict]:
    """Durrleman's g per expiry: ok or where (k ranges) and by how much (min g) it goes negative."""
    rows = []
    for s in result.slices:
        bf = s.butterfly or {}
        if s.params is None:
            rows.append({"expiry": expiry_label(s.expiry), "butterfly": "not fitted", "min g": "—",
                         "k at min g": "—", "violations (k ranges)": "—", "key": expiry_iso(s.expiry)})
            continue
        viol = bf.get("violations", [])
        where = "; ".join(
            _k_range(v["k_from"], v["k_to"]) + f" min g {format_number(v['min_g'], 3)}"
            + ("" if v.get("in_quoted_range") is None else
               (" (inside the quotes)" if v["in_quoted_range"] else " (beyond the quotes)"))
            for v in viol)
        rows.append({"expiry": expiry_label(s.expiry), "butterfly": "ok" if bf.get("ok") else "VIOLATED",
                     "min g": "−∞ (w ≤ 0)" if bf.get("min_g") is None else format_number(bf["min_g"], 4),
                     "k at min g": format_number(bf.get("k_at_min_g"), 4),
                     "violations (k ranges)": where or "none", "key": expiry_iso(s.expiry)})
    return rows


def calendar_rows(result) -> list[dict]:
    """Calendar arbitrage between consecutive expiries: where w(k, T₁) > w(k, T₂) and by how much."""
    rows = []
    for c in result.calendar_violations:
        rows.append({"shorter expiry": expiry_label(c["expiry_short"]), "longer expiry": expiry_label(c["expiry_long"]),
                     "k range": _k_range(c["k_from"], c["k_to"]),
                     "max excess w": format_number(c["max_excess_w"], 4),
                     "at k": format_number(c["k_at_max"], 4),
                     "inside the quotes": "—" if c.get("in_quoted_range") is None else
                     ("yes" if c["in_quoted_range"] else "no"),
                     "key": f"{c['expiry_short']}|{c['expiry_long']}|{c['k_from']:.4f}"})
    return rows


def ssvi_condition_rows(result) -> list[dict]:
    """Gatheral–Jacquier's sufficient conditions with their margins (positive = holds by that much)."""
    cond = result.ssvi_conditions
    if not cond:
        return []
    rows = []
    for name, c in cond.items():
        if not isinstance(c, dict):
            continue
        rows.append({"condition": CONDITION_LABELS.get(name, name), "holds": "yes" if c.get("ok") else "NO",
                     "margin": format_number(c.get("margin"), 4),
                     "where (expiry index)": ", ".join(map(str, c.get("where", []))) or "—", "key": name})
    return rows


def arbitrage_headline(result) -> tuple[str, str]:
    """(level, text) of the arbitrage verdict on the check grid."""
    arb = result.arbitrage
    grid = arb["grid"]
    on = f"on k ∈ [{grid['k_from']:.2f}, {grid['k_to']:.2f}] ({grid['points']:,} points)"
    if arb["free_of_static_arbitrage_on_grid"]:
        extra = ""
        if arb.get("ssvi_conditions") is not None:
            extra = (" SSVI's sufficient conditions hold: free of static arbitrage everywhere."
                     if arb["ssvi_conditions"].get("free_of_static_arbitrage") else
                     " SSVI's sufficient conditions do not all hold (see below).")
        return "success", f"No butterfly or calendar arbitrage {on}.{extra}"
    n_bf = sum(1 for b in arb["butterfly"] if not b.get("ok"))
    n_cal = len(arb["calendar_violations"])
    advice = ("The no-arbitrage SVI fit forces calendar order only where both expiries are quoted; for a "
              "surface free of static arbitrage everywhere, fit SSVI with the no-arbitrage option."
              if result.no_arbitrage else "Tick 'No-arbitrage fit' to refit under the constraints.")
    return "danger", (f"Static arbitrage {on}: {n_bf} expiry(ies) with g < 0, {n_cal} calendar interval(s). "
                      + advice)


# --- pricing models (Heston, Bates) beside the smile fit --------------------------------------------------


PRICING_PALETTE = ("#198754", "#6f42c1", "#d63384")
PRICING_PARAMS = ("v0", "kappa", "theta", "sigma", "rho", "lambda", "nu", "delta")
NO_PRICING = "No pricing model calibrated: tick Heston or Bates under 'Pricing models beside the fit'"


def pricing_colour(i: int) -> str:
    return PRICING_PALETTE[i % len(PRICING_PALETTE)]


@dataclass(frozen=True, eq=False)
class PricingView:
    """A calibrated pricing model's figure data, prepared once: its smiles on each expiry's quoted range
    (`result.curve_frame`) and its quotes with the model IV (`result.smile_frame`), sorted by T then k."""
    result: Any
    quotes: pd.DataFrame
    curves: pd.DataFrame
    curve_spans: Mapping[str, tuple[int, int]]
    quote_spans: Mapping[str, tuple[int, int]]

    @property
    def name(self) -> str:
        return f"{self.result.model.name.capitalize()} (calibrated)"

    def curve(self, iso: str) -> pd.DataFrame:
        a, b = self.curve_spans.get(iso, (0, 0))
        return self.curves.iloc[a:b]

    def quotes_of(self, iso: str) -> pd.DataFrame:
        a, b = self.quote_spans.get(iso, (0, 0))
        return self.quotes.iloc[a:b]


def pricing_view(result, curve_points: int = CURVE_POINTS) -> PricingView | None:
    if result is None:
        return None
    quotes = result.smile_frame().sort_values(["T_years", "k"], kind="stable").reset_index(drop=True)
    curves = result.curve_frame(points=curve_points).sort_values(["T_years", "k"], kind="stable").reset_index(drop=True)
    return PricingView(result=result, quotes=quotes, curves=curves,
                       curve_spans=_spans(curves["expiry"]) if not curves.empty else {},
                       quote_spans=_spans(quotes["expiry"]) if not quotes.empty else {})


def pricing_rows(views: Sequence[PricingView]) -> list[dict]:
    """One row per calibrated model: optimizer verdict, RMSE, every parameter as value ± standard error
    (HAC along strikes), the Feller ratio 2·kappa·theta/sigma² (below 1: violated) and the warnings."""
    rows = []
    for pv in views:
        res = pv.result
        rep = res.report
        row = {"model": res.model.label, "converged": "yes" if res.converged else "NO",
               "target / weights": f"{res.target} / {res.weights}",
               "RMSE (vol pts)": format_number(res.rmse_vol_pts, 3)}
        for name in PRICING_PARAMS:
            if name in res.params:
                se = res.std_errors.get(name)
                text = format_number(res.params[name], 4)
                if se is not None and math.isfinite(se):
                    text += f" ± {format_number(se, 2)}"
                row[name] = text
            else:
                row[name] = "—"
        f = res.feller
        row["Feller 2κθ/σ²"] = f"{format_number(f['ratio'], 3)} ({'holds' if f['satisfied'] else 'violated'})"
        row["optimizer"] = f"{rep.method}, {rep.nfev} evaluations"
        others = [w for w in res.warnings if not w.startswith("Feller")]   # Feller has its column
        row["warnings"] = "; ".join(others) or "none"
        row["key"] = res.model.name
        rows.append(row)
    return rows


def pricing_residuals_figure(view: SurfaceView | None, pricing: Sequence[PricingView]) -> go.Figure:
    """Residuals per expiry: the RMSE of every expiry (vol points, against T) for the smile fit and each
    pricing model, then, per pricing model, model − mid against k with one colour per expiry."""
    if not pricing:
        return empty_figure(NO_PRICING)
    titles = ["RMSE per expiry (vol points)"] + [f"{pv.result.model.label}: model − mid" for pv in pricing]
    layout, refs, height = _grid_layout(len(titles), min(len(titles), 3), titles, x_title="", y_title=None,
                                        h_space=0.08, row_px=FIGURE_HEIGHT_PX - 100, top_px=72, bottom_px=50)
    traces: list[dict] = []
    xref, yref = refs[0]
    layout["xaxis"]["title"] = {"text": "T (years)", "font": {"size": 11}}
    layout["xaxis"]["type"] = "log"
    layout["yaxis"]["title"] = {"text": "RMSE (vol pts)", "font": {"size": 11}}
    if view is not None and view.result is not None:
        fitted = sorted(view.result.fitted_slices, key=lambda s: s.T_years)
        traces.append({"type": "scatter", "x": [s.T_years for s in fitted], "y": [s.rmse_vol_pts for s in fitted],
                       "mode": "lines+markers", "xaxis": xref, "yaxis": yref,
                       "name": f"fit ({view.result.model.name.upper()})", "line": {"color": PALETTE[1], "width": 2},
                       "text": [expiry_label(s.expiry) for s in fitted],
                       "hovertemplate": "%{text}<br>RMSE %{y:.3f} vol pts<extra>%{fullData.name}</extra>"})
    for j, pv in enumerate(pricing):
        exp = pv.result.expiries
        traces.append({"type": "scatter", "x": [e.T_years for e in exp], "y": [e.rmse_vol_pts for e in exp],
                       "mode": "lines+markers", "xaxis": xref, "yaxis": yref, "name": pv.name,
                       "line": {"color": pricing_colour(j), "width": 2, "dash": "dash"},
                       "text": [expiry_label(e.expiry) for e in exp],
                       "hovertemplate": "%{text}<br>RMSE %{y:.3f} vol pts<extra>%{fullData.name}</extra>"})
    for j, (pv, (xr, yr)) in enumerate(zip(pricing, refs[1:])):
        axis = str(j + 2)
        layout[f"xaxis{axis}"]["title"] = {"text": "k = ln(K/F)", "font": {"size": 11}}
        layout[f"yaxis{axis}"]["title"] = {"text": "vol points", "font": {"size": 11}}
        layout[f"yaxis{axis}"]["zeroline"] = True
        for i, e in enumerate(pv.result.expiries):
            q = pv.quotes_of(expiry_iso(e.expiry))
            traces.append({"type": "scatter", "x": q["k"].to_numpy(np.float64),
                           "y": q["error_vol_pts"].to_numpy(np.float64), "mode": "markers", "xaxis": xr, "yaxis": yr,
                           "name": expiry_label(e.expiry), "legendgroup": f"expiry{i}", "showlegend": False,
                           "marker": {"size": 5, "color": colour(i)},
                           "customdata": q["strike"].to_numpy(np.float64),
                           "hovertemplate": f"{expiry_label(e.expiry)}<br>K %{{customdata:,.0f}} · k %{{x:.4f}}<br>"
                                            "model − mid %{y:+.3f} vol pts<extra></extra>"})
    return _figure(traces, layout, height=height)
