"""Pure builders for the Monitor panel: rows of a monitor run in, go.Figure / extendData payloads /
table rows out.

A run writes one-second market ticks, fill records and events as JSON lines (execal.live.runner);
the panel draws each figure once from what exists (`*_figure`) and then only appends what is new
with Dash's `extendData` (`*_extend`: `[{"x": [[...], ...], "y": [[...], ...]}, trace_indices,
MAX_POINTS]`), never redrawing the whole figure per tick. Trace order is fixed by the builders so
the two agree: market figures have one trace per market (in the run's market order); the cost figure
[lower, upper, predicted, realised]; the coefficient figure [Kalman lower, Kalman upper, Kalman,
SGD, live config]; the events timeline one trace per kind (EVENT_KINDS). Times travel as ISO text
(a date axis); at most MAX_POINTS points stay per trace.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import pandas as pd
import plotly.graph_objects as go

MAX_POINTS = 5_000
HEIGHT = 260
EVENT_KINDS = ("alarm", "recalibration", "switch", "resync")
EVENT_SYMBOLS = {"alarm": "x", "recalibration": "diamond", "switch": "star", "resync": "circle-open"}
EVENT_COLOURS = {"alarm": "#dc3545", "recalibration": "#0d6efd", "switch": "#198754", "resync": "#6c757d"}
COLOURS = ("#0d6efd", "#fd7e14", "#198754", "#6f42c1", "#d63384", "#20c997")


def iso(t_ns) -> str | None:
    if t_ns is None:
        return None
    return pd.Timestamp(int(t_ns), unit="ns").isoformat(sep=" ", timespec="milliseconds")


def _layout(fig: go.Figure, title: str, ytitle: str, **kw) -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.01, "font": {"size": 13}}, height=HEIGHT,
                      margin={"l": 55, "r": 20, "t": 36, "b": 30}, template="plotly_white",
                      legend={"orientation": "h", "y": -0.18, "font": {"size": 10}},
                      uirevision="monitor", **kw)
    fig.update_yaxes(title_text=ytitle)
    fig.update_xaxes(type="date")
    return fig


def market_key(row: dict) -> str:
    return f"{row.get('venue')}:{row.get('symbol')}"


def depth_total(row: dict) -> float | None:
    """Bid + ask depth of a tick (the state writer's `depth` block, or a market tick's own keys)."""
    depth = row.get("depth") or {k: v for k, v in row.items() if k.startswith("depth_")}
    values = [v for v in depth.values() if v is not None]
    return sum(values) if values else None


def _regime_p(row: dict) -> float | None:
    p = row.get("p_regime")
    return float(p[-1]) if p else None


# what each market figure plots of a tick
MARKET_SERIES = {
    "mid": lambda r: r.get("mid"),
    "spread": lambda r: r.get("spread_bps"),
    "depth": depth_total,
    "regime": _regime_p,
    "vol": lambda r: (r.get("sigma_ewma") * 100) if r.get("sigma_ewma") is not None else None,
}
MARKET_TITLES = {
    "mid": ("Mid price", "price"), "spread": ("Spread", "bps"),
    "depth": ("Depth near the mid (bid + ask)", "base units"),
    "regime": ("Probability of the most volatile regime", "probability"),
    "vol": ("Realised volatility (EWMA, one-second mid returns)", "% a day"),
}


def market_figure(kind: str, markets: Sequence[str], ticks: Iterable[dict]) -> go.Figure:
    """One line per market of `MARKET_SERIES[kind]` over the ticks."""
    get = MARKET_SERIES[kind]
    xs = {m: [] for m in markets}
    ys = {m: [] for m in markets}
    for row in ticks:
        m = market_key(row)
        if m in xs:
            xs[m].append(iso(row["t_ns"]))
            ys[m].append(get(row))
    fig = go.Figure([go.Scattergl(x=xs[m][-MAX_POINTS:], y=ys[m][-MAX_POINTS:], mode="lines", name=m,
                                  line={"width": 1.4, "color": COLOURS[i % len(COLOURS)]},
                                  connectgaps=False)
                     for i, m in enumerate(markets)])
    title, ytitle = MARKET_TITLES[kind]
    return _layout(fig, title, ytitle)


def market_extend(kind: str, markets: Sequence[str], ticks: Iterable[dict]):
    """extendData for `market_figure` with new ticks, or None when there is nothing new."""
    get = MARKET_SERIES[kind]
    xs = {m: [] for m in markets}
    ys = {m: [] for m in markets}
    for row in ticks:
        m = market_key(row)
        if m in xs:
            xs[m].append(iso(row["t_ns"]))
            ys[m].append(get(row))
    idx = [i for i, m in enumerate(markets) if xs[m]]
    if not idx:
        return None
    return [{"x": [xs[markets[i]] for i in idx], "y": [ys[markets[i]] for i in idx]}, idx, MAX_POINTS]


def _cost_columns(fills: Iterable[dict]):
    cols = {"t": [], "lo": [], "hi": [], "pred": [], "real": []}
    for f in fills:
        cols["t"].append(iso(f["t_ns"]))
        cols["lo"].append(f.get("lower_bps"))
        cols["hi"].append(f.get("upper_bps"))
        cols["pred"].append(f.get("predicted_bps"))
        cols["real"].append(f.get("realised_bps"))
    return cols


def cost_figure(fills: Sequence[dict]) -> go.Figure:
    """Predicted cost with its interval and the realised cost of every fill."""
    c = _cost_columns(fills[-MAX_POINTS:])
    fig = go.Figure([
        go.Scatter(x=c["t"], y=c["lo"], mode="markers", marker={"size": 3, "color": "rgba(13,110,253,0.25)"},
                   name="interval low"),
        go.Scatter(x=c["t"], y=c["hi"], mode="markers", marker={"size": 3, "color": "rgba(13,110,253,0.25)"},
                   name="interval high"),
        go.Scatter(x=c["t"], y=c["pred"], mode="markers", marker={"size": 4, "color": "#0d6efd"},
                   name="predicted"),
        go.Scatter(x=c["t"], y=c["real"], mode="markers", marker={"size": 4, "color": "#212529", "opacity": 0.6},
                   name="realised"),
    ])
    return _layout(fig, "Cost of each fill: predicted (with interval) vs realised", "bps")


def cost_extend(fills: Sequence[dict]):
    if not fills:
        return None
    c = _cost_columns(fills)
    return [{"x": [c["t"]] * 4, "y": [c["lo"], c["hi"], c["pred"], c["real"]]}, [0, 1, 2, 3], MAX_POINTS]


def _coef_columns(fills: Iterable[dict], name: str | None):
    cols = {"t": [], "klo": [], "khi": [], "k": [], "sgd": [], "live": []}
    for f in fills:
        cols["t"].append(iso(f["t_ns"]))
        cols["klo"].append(f.get("kalman_lower"))
        cols["khi"].append(f.get("kalman_upper"))
        cols["k"].append(f.get("kalman_value"))
        cols["sgd"].append((f.get("sgd") or {}).get(name) if name else None)
        cols["live"].append(f.get("live_coef"))
    return cols


def drift_name(fills: Sequence[dict]) -> str | None:
    return next((f.get("drift_parameter") for f in fills if f.get("drift_parameter")), None)


def coef_figure(fills: Sequence[dict], name: str | None = None) -> go.Figure:
    """The drifting coefficient: the Kalman filter's path with its band, the SGD iterate and the
    live config's value (a step when the config switches)."""
    name = name or drift_name(fills)
    c = _coef_columns(fills[-MAX_POINTS:], name)
    fig = go.Figure([
        go.Scatter(x=c["t"], y=c["klo"], mode="lines", line={"width": 0}, showlegend=False, name="band low"),
        go.Scatter(x=c["t"], y=c["khi"], mode="lines", line={"width": 0}, fill="tonexty",
                   fillcolor="rgba(253,126,20,0.18)", name="Kalman band"),
        go.Scatter(x=c["t"], y=c["k"], mode="lines", line={"color": "#fd7e14", "width": 1.6}, name="Kalman"),
        go.Scatter(x=c["t"], y=c["sgd"], mode="lines", line={"color": "#6f42c1", "width": 1.2, "dash": "dot"},
                   name="SGD"),
        go.Scatter(x=c["t"], y=c["live"], mode="lines", line={"color": "#198754", "width": 2, "shape": "hv"},
                   name="live config"),
    ])
    return _layout(fig, f"Impact coefficient{' ' + name if name else ''}: online paths and the live config",
                   name or "")


def coef_extend(fills: Sequence[dict], name: str | None):
    if not fills:
        return None
    c = _coef_columns(fills, name)
    return [{"x": [c["t"]] * 5, "y": [c["klo"], c["khi"], c["k"], c["sgd"], c["live"]]}, [0, 1, 2, 3, 4],
            MAX_POINTS]


def _event_label(e: dict) -> str:
    if e["kind"] == "alarm":
        return str(e.get("detector"))
    return e["kind"]


def _event_columns(events: Iterable[dict]):
    cols = {k: {"x": [], "y": [], "text": []} for k in EVENT_KINDS}
    for e in events:
        k = e.get("kind")
        if k not in cols or e.get("t_ns") is None:
            continue
        cols[k]["x"].append(iso(e["t_ns"]))
        cols[k]["y"].append(_event_label(e))
        cols[k]["text"].append(event_text(e))
    return cols


def events_figure(events: Sequence[dict]) -> go.Figure:
    """A timeline: every alarm (by detector), recalibration, switch and resync at its market time."""
    cols = _event_columns(events)
    fig = go.Figure([go.Scatter(x=cols[k]["x"], y=cols[k]["y"], text=cols[k]["text"], mode="markers", name=k,
                                hovertemplate="%{x}<br>%{text}<extra></extra>",
                                marker={"symbol": EVENT_SYMBOLS[k], "size": 11, "color": EVENT_COLOURS[k],
                                        "line": {"width": 1.5, "color": EVENT_COLOURS[k]}})
                     for k in EVENT_KINDS])
    fig = _layout(fig, "Alarms, recalibrations and switches", "")
    fig.update_yaxes(type="category", categoryorder="array",
                     categoryarray=["cusum", "page_hinkley", "kalman_innovation", "liquidity", "regime",
                                    "recalibration", "switch", "resync"])
    return fig


def events_extend(events: Sequence[dict]):
    cols = _event_columns(events)
    idx = [i for i, k in enumerate(EVENT_KINDS) if cols[k]["x"]]
    if not idx:
        return None
    kinds = [EVENT_KINDS[i] for i in idx]
    return [{"x": [cols[k]["x"] for k in kinds], "y": [cols[k]["y"] for k in kinds],
             "text": [cols[k]["text"] for k in kinds]}, idx, MAX_POINTS]


# --- tables and text ----------------------------------------------------------------------------------

def _fmt(x, spec=".3g") -> str:
    if x is None:
        return "–"
    try:
        return format(float(x), spec)
    except (TypeError, ValueError):
        return str(x)


def event_text(e: dict) -> str:
    k = e.get("kind")
    where = " ".join(str(v) for v in (e.get("venue"), e.get("symbol")) if v)
    if k == "alarm":
        return (f"{e.get('detector')} {e.get('direction', '')} {where}: statistic {_fmt(e.get('statistic'))} "
                f"> {_fmt(e.get('threshold'))}").strip()
    if k == "recalibration":
        cmp = e.get("comparison") or {}
        cur, cand = (cmp.get("current") or {}).get("rmse_bps"), (cmp.get("candidate") or {}).get("rmse_bps")
        return (f"v{e.get('version')} ({e.get('reason')}): out-of-sample RMSE {_fmt(cand)} vs live {_fmt(cur)} "
                f"bps → {e.get('decision')}")
    if k == "switch":
        return f"live config v{e.get('version')} ({e.get('by')}: {e.get('reason')})"
    if k == "resync":
        return f"resync {where}: {e.get('reason')}"
    if k == "recalibration_planned":
        return f"refit planned ({e.get('reason')}): on the fills since {str(e.get('since'))[11:23]}, " \
               f"after {e.get('after_fills')} of them"
    if k in ("stop", "start"):
        c = e.get("counts") or {}
        return f"{k}: {c.get('messages', 0):,} messages, {c.get('fills_used', 0):,} fills" if c else k
    return " ".join(f"{a}={b}" for a, b in e.items() if a not in ("time", "t_ns", "wall_time", "kind"))[:160]


def event_rows(events: Sequence[dict], limit: int = 30) -> list[dict]:
    """The latest events, newest first, for the panel's table."""
    shown = [e for e in events if e.get("kind") not in ("start",)]
    return [{"time": (e.get("time") or e.get("wall_time") or "")[11:23], "kind": e.get("kind"),
             "what": event_text(e)} for e in reversed(shown[-limit:])]


def history_rows(versions: Sequence[dict], name: str | None = None) -> list[dict]:
    """Config versions, newest first: version, when, why, the coefficient, out-of-sample RMSE."""
    out = []
    for v in reversed(list(versions)):
        params = v.get("params") or {}
        cmp = v.get("comparison") or {}
        key = name if name in params else next((k for k in params if k != "h"), None)
        out.append({"version": f"v{v['version']}", "active": "live" if v.get("active") else "",
                    "created": (v.get("created_at") or "")[11:19],
                    "reason": v.get("reason") or "",
                    "coefficient": f"{key} = {_fmt(params.get(key), '.4g')}" if key else "",
                    "oos_rmse_live": _fmt((cmp.get("current") or {}).get("rmse_bps")),
                    "oos_rmse_new": _fmt((cmp.get("candidate") or {}).get("rmse_bps")),
                    "rule": ("switch" if cmp.get("switch") else cmp.get("why", "")) if cmp else ""})
    return out


def diff_rows(diff: Sequence[dict], limit: int = 200) -> list[dict]:
    """A config diff (ConfigHistory.diff) as rows; long values are cut."""
    def short(v):
        text = _fmt(v, ".6g") if isinstance(v, float) else str(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return [{"key": d["key"], "a": short(d["a"]), "b": short(d["b"])} for d in diff[:limit]]


def status_text(status: dict) -> str:
    """One line: state, replay position, messages, fills, error metrics, alarms, live version."""
    if not status:
        return "No monitor running."
    c = status.get("counts") or {}
    run = status.get("runner") or {}
    rep = status.get("replay") or {}
    m = (status.get("metrics") or {}).get("all") or {}
    state = ("finished" if status.get("finished") else "paused" if run.get("paused") else
             "running" if status.get("alive") else "stopped")
    parts = [state]
    if rep:
        parts.append(f"replay {rep.get('position', 0):,}/{rep.get('total', 0):,} at "
                     f"{'max' if rep.get('speed') is None else str(rep.get('speed')) + '×'}")
    parts.append(f"{c.get('messages', 0):,} messages")
    parts.append(f"{c.get('fills_used', 0):,} fills")
    if m.get("n"):
        parts.append(f"RMSE {_fmt(m.get('rmse_bps'))} bps, bias {_fmt(m.get('bias_bps'))}, "
                     f"coverage {_fmt(m.get('coverage'), '.2f')}")
    parts.append(f"{c.get('alarms', 0)} alarms, {c.get('recalibrations', 0)} recalibrations, "
                 f"live config v{status.get('live_version')}")
    faults = [f"{k} {c[k]}" for k in ("gaps", "malformed", "queue_dropped") if c.get(k)]
    if faults:
        parts.append(", ".join(faults))
    return " · ".join(parts)
