"""Pure builders for what the panels show: summaries, tables and figures from data, without Dash.

Every function here takes plain data (a `Dataset.summary()` dict, a validation report dict, a frame) and
returns plain data or a `go.Figure`, so it is tested without a server or a browser; the panel modules only
wrap the results in components. No numerics beyond shaping data for display.
"""
from __future__ import annotations

import copy
import functools
import html
import textwrap
from datetime import datetime
from typing import Any, Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PREVIEW_ROWS = 200
MAX_LISTED = 12          # symbols / venues listed by name before "+N more"
COVERAGE_BINS = 120
# AG Grid evaluates this string client-side (d3-format is in dash-ag-grid's function namespace)
FLOAT_FORMAT_JS = "params.value == null ? '' : d3.format(',.10~g')(params.value)"

KIND_LABELS = {
    "fills": "Fills (parent orders)",
    "trades": "Trades",
    "quotes": "Quotes (top of book)",
    "book": "Order book snapshots",
    "options": "Options chain",
    "bars": "OHLCV bars",
    "ticker": "Derivative ticker",
}


# --- summary ------------------------------------------------------------------------------------


def format_count(n: int | None) -> str:
    return "–" if n is None else f"{int(n):,}"


def format_duration_s(seconds: float) -> str:
    """A human span: '45 s', '12.5 min', '3.2 h', '6.0 d'."""
    s = float(seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def format_span(start_iso: str | None, end_iso: str | None) -> str:
    """'2024-01-02 00:00:00 → 2024-01-05 12:00:00 UTC (3.5 d)', or '–' without timestamps."""
    if not start_iso or not end_iso:
        return "–"
    start, end = datetime.fromisoformat(start_iso), datetime.fromisoformat(end_iso)
    fmt = "%Y-%m-%d %H:%M:%S"
    return f"{start:{fmt}} → {end:{fmt}} UTC ({format_duration_s((end - start).total_seconds())})"


def format_names(names: list[str], limit: int = MAX_LISTED) -> str:
    if not names:
        return "–"
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit} more)" if len(names) > limit else "")


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """(label, value) pairs for the dataset card, from `Dataset.summary()`."""
    kind = summary.get("kind", "")
    columns = summary.get("columns", [])
    return [
        ("File", str(summary.get("file", ""))),
        ("Kind", f"{kind} · {KIND_LABELS[kind]}" if kind in KIND_LABELS else str(kind)),
        ("Rows", format_count(summary.get("rows"))),
        ("Columns", f"{len(columns)}: {', '.join(columns)}"),
        ("Time span", format_span(summary.get("start"), summary.get("end"))),
        ("Symbols", format_names(summary.get("symbols", []))),
        ("Venues", format_names(summary.get("venues", []))),
    ]


# --- validation report --------------------------------------------------------------------------


def report_headline(report: dict) -> str:
    read, kept = int(report.get("rows_read", 0)), int(report.get("rows_kept", 0))
    dropped = sum(int(d.get("count", 0)) for d in report.get("dropped", []))
    if not dropped:
        return f"Read {read:,} rows, kept all {kept:,}."
    return f"Read {read:,} rows, kept {kept:,}, dropped {dropped:,}."


def drop_rows(report: dict) -> list[dict]:
    """One row per drop reason: reason, column, count, first data rows (1-based)."""
    return [{"reason": d.get("reason", ""), "column": d.get("column") or "–",
             "count": f"{int(d.get('count', 0)):,}",
             "first rows": ", ".join(str(r) for r in d.get("first_rows", [])[:5]) or "–"}
            for d in report.get("dropped", [])]


# --- preview grid -------------------------------------------------------------------------------


def preview_table(frame: pd.DataFrame, n_rows: int = PREVIEW_ROWS) -> tuple[list[dict], list[dict]]:
    """(column definitions, JSON-ready rows) of the first `n_rows` rows.

    Timestamps become ISO-like UTC text (the grid would otherwise show epoch numbers), missing values
    become None (JSON null, never NaN which JSON lacks), numbers stay numbers so the grid sorts them.
    """
    head = frame.head(n_rows)
    columns: list[dict] = []
    data: dict[str, list] = {}
    for name in head.columns:
        col = head[name]
        field = str(name)
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        is_time = isinstance(col.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(col)
        if is_time:
            text = col.dt.strftime("%Y-%m-%d %H:%M:%S.%f").str.slice(0, 23)
            values = text.astype(object).where(col.notna(), None).tolist()
        elif numeric or pd.api.types.is_bool_dtype(col):
            # object dtype turns numpy scalars into Python ones; NaN / NA become None
            values = col.astype(object).where(col.notna(), None).tolist()
        else:
            text = col.astype(str).astype(object)
            values = text.where(col.notna(), None).tolist()
        data[field] = values
        # widths from the header and the kind of value: the grid's own auto-size runs before rows arrive
        base_px = 210 if is_time else (110 if numeric else 120)
        spec = {"field": field, "headerName": field, "width": max(base_px, 8 * len(field) + 56)}
        if numeric:
            spec["type"] = "numericColumn"
            if pd.api.types.is_float_dtype(col):
                # 10 significant digits: float noise such as 2.500000000000835 reads as 2.5
                spec["valueFormatter"] = {"function": FLOAT_FORMAT_JS}
        columns.append(spec)
    rows = [dict(zip(data, vals)) for vals in zip(*data.values())] if data else []
    return columns, rows


# --- verdicts ------------------------------------------------------------------------------------


def plain(text: str) -> str:
    """An optimizer's words as plain text: scipy quotes option names in reStructuredText backticks
    ("`ftol` termination condition is satisfied."), which a web page would show literally."""
    return text.replace("`", "") if isinstance(text, str) else text


def plain_verdict(build):
    """Decorate a status builder (result in, dict of text out): every string, and every string in a
    list, of its dict is made `plain`."""
    @functools.wraps(build)
    def wrapper(*args, **kwargs):
        out = build(*args, **kwargs)
        return {k: plain(v) if isinstance(v, str) else [plain(x) for x in v] if isinstance(v, list) else v
                for k, v in out.items()}
    return wrapper


# --- user text in figures ---------------------------------------------------------------------------
# plotly.js draws legends, titles, annotations, tick labels and hover text through its own HTML-like
# markup (<b>, <i>, <br>, <sup>, <span style=...>, <a href=...>): a symbol, venue, order id, segment or file
# name from a user's file must reach it escaped, or it is read as markup (a link, a style) instead of text.


def user_text(value: Any) -> str:
    """A user's value made into plain text for plotly: & < > become &amp; &lt; &gt;, which plotly shows
    as the characters. Quotes are left alone: plotly decodes no &quot; (it would show as such) and with
    no '<' left no tag can form. Escape once, where a user value becomes a trace `name`, `text`, `meta`,
    `customdata`, a category, a title or an annotation, never execal's own markup. A user value is never
    concatenated into a `hovertemplate` either: plotly would read a '%{...}' in it as a variable; put it in
    `meta` (shown by '%{meta}') or `customdata` instead."""
    return html.escape(str(value), quote=False)


_user_texts = np.frompyfunc(user_text, 1, 1)


def user_texts(values: Iterable[Any]) -> np.ndarray:
    """`user_text` of every value, as an object array (hover columns, category labels)."""
    return np.asarray(_user_texts(np.asarray(values if isinstance(values, np.ndarray) else list(values),
                                             dtype=object)), dtype=object)


# --- figures ------------------------------------------------------------------------------------


# an empty state's message is broken into lines of at most this many characters: plotly never wraps
# an annotation, and a long message in a narrow card (a third of the page) was cut on both sides
EMPTY_LINE_CHARS = 44


def wrap_message(message: str, width: int = EMPTY_LINE_CHARS) -> str:
    """`message` in lines of at most `width` characters (plotly's <br>), broken at spaces only, so
    `unwrap_message` gives it back exactly."""
    return "<br>".join(textwrap.wrap(str(message), width, break_long_words=False, break_on_hyphens=False,
                                     replace_whitespace=False, drop_whitespace=True)) or str(message)


def unwrap_message(text: str) -> str:
    return str(text).replace("<br>", " ")


def empty_message(figure) -> str:
    """The message of a designed empty state (a go.Figure or its JSON), as it was given."""
    layout = figure.get("layout", {}) if isinstance(figure, dict) else figure.to_plotly_json()["layout"]
    notes = layout.get("annotations") or [{}]
    return unwrap_message(notes[0].get("text", ""))


def empty_figure(message: str) -> go.Figure:
    """The designed empty state of a chart: a blank plot area that says why it is blank (the message is
    plain text, escaped for plotly since it may quote a user's file, and wrapped to fit a third of the page;
    `empty_message(fig)` reads it back)."""
    # A validated go.Figure expands and checks plotly's whole template (~0.1 s each) and a page holds
    # ~25 empty states: the layout is validated once per process, each call copies that checked JSON
    # and only sets its own text (a plain string: nothing left to validate).
    spec = copy.deepcopy(_empty_figure_json())
    spec["layout"]["annotations"][0]["text"] = wrap_message(user_text(message))
    return go.Figure(spec, _validate=False)


@functools.lru_cache(maxsize=1)
def _empty_figure_json() -> dict:
    fig = go.Figure()
    fig.update_layout(
        xaxis={"visible": False}, yaxis={"visible": False}, height=220,
        margin={"l": 10, "r": 10, "t": 10, "b": 10}, template="plotly_white",
        annotations=[{"text": "", "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5,
                      "showarrow": False, "font": {"size": 14, "color": "#6c757d"}}])
    return fig.to_plotly_json()


def coverage_counts(timestamps: pd.Series, bins: int = COVERAGE_BINS) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """Rows per equal time bucket (bucket left edges, counts): gaps in the data show as zeros."""
    ts = timestamps.dropna()
    if ts.empty:
        return pd.DatetimeIndex([], tz="UTC"), np.zeros(0, dtype=np.int64)
    ns = ts.astype("datetime64[ns, UTC]").to_numpy(dtype="datetime64[ns]").astype(np.int64)
    lo, hi = int(ns.min()), int(ns.max())
    if hi == lo:   # one instant: one bucket (histogram cannot split a zero-width range)
        return pd.to_datetime(np.array([lo]), utc=True), np.array([ns.size], dtype=np.int64)
    # relative to the first instant: float64 keeps ns resolution there, not at ~1.7e18 ns since 1970
    counts, edges = np.histogram(ns - lo, bins=int(bins), range=(0, hi - lo))
    return pd.to_datetime(edges[:-1].astype(np.int64) + lo, utc=True), counts


def coverage_figure(frame: pd.DataFrame, bins: int = COVERAGE_BINS) -> go.Figure:
    """Bar chart of rows per time bucket, so gaps and bursts are visible before calibrating."""
    if "timestamp" not in frame.columns or frame["timestamp"].notna().sum() == 0:
        return empty_figure("No timestamps to chart")
    edges, counts = coverage_counts(frame["timestamp"], bins)
    return coverage_figure_of_counts(edges, counts)


def coverage_figure_of_counts(edges: pd.DatetimeIndex, counts: np.ndarray) -> go.Figure:
    """`coverage_figure` from `coverage_counts` (kept as a small JSON view of the dataset)."""
    if len(edges) == 0:
        return empty_figure("No timestamps to chart")
    fig = go.Figure(go.Bar(x=edges, y=counts, marker_color="#0d6efd", name="rows",
                           hovertemplate="%{x|%Y-%m-%d %H:%M:%S}<br>%{y:,} rows<extra></extra>"))
    fig.update_layout(height=220, margin={"l": 50, "r": 10, "t": 10, "b": 40}, template="plotly_white",
                      bargap=0.05, yaxis_title="rows per bucket", showlegend=False)
    return fig
