"""Fill enrichment: the market context of each fill (horizon volume, ADV, volatility, spread at
arrival), derived from the market data the quant has instead of by hand in a notebook.

`enrich(fills, trades=..., bars=..., quotes=..., book=...)` fills the NaN or absent columns
`market_volume`, `adv`, `volatility` and `spread_bps` of a canonical fills frame and reports, per
column, how many rows it filled, from which source, and how many are still missing. Definitions
(all in UTC; bars are labelled by their open time and cover [t, t + bar length)):

- `market_volume`: volume traded in [arrival, arrival + duration_s]. From trades (sum of the prints
  in the window) when the trades of the fill's symbol/venue span the whole window, else from bars,
  pro-rata for the partly covered first and last bars (volume spread evenly inside a bar; a gap
  between bars counts as no volume). A window not inside the data stays NaN.
- `adv`: mean daily volume of the `adv_window_days` UTC days strictly before the arrival day; each of
  them must be complete (all its bars present), otherwise the fill stays NaN.
- `volatility`: daily sigma (fraction) from data strictly before the arrival day, no look-ahead.
  `vol_method="daily"` (default): sample std (ddof=1) of the `vol_window_days` daily close-to-close
  log returns ending the day before arrival (needs `vol_window_days + 1` complete days).
  `vol_method="intraday"`: std of all bar-to-bar log returns of those days times sqrt(bars per day);
  more precise for the same window, but biased upwards when bars carry bid-ask bounce.
  adv and volatility come from bars; where bars do not cover a fill's symbol, from trades turned
  into 15-minute bars (only days strictly between the first and the last trade day are complete:
  the edges of a recording are usually partial days).
- `spread_bps`: (ask - bid) / mid * 1e4 of the last quote at or before arrival (backward as-of
  match) no older than `quote_max_age_s`; from book level 0 where quotes do not cover it. Crossed
  quotes (ask < bid) are ignored and counted.

Data is matched to fills by symbol, and by venue too when both frames have a venue column. The work
is vectorised per (symbol, venue) group: cumulative sums + searchsorted, no loop over fills.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .schema import DataError

FIELDS = ("market_volume", "adv", "volatility", "spread_bps")
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
VOL_METHODS = ("daily", "intraday")
TRADE_BAR_S = 900   # bars built from trades (adv/volatility without bars) are 15 minutes


# --- input normalisation -----------------------------------------------------------------------


def _require(frame: pd.DataFrame, name: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {[str(c) for c in frame.columns]}",
                        file=name, column=missing[0])


def _time_ns(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Timestamps as int64 ns since epoch UTC; NaT as the int64 minimum (callers mask it)."""
    col = frame["timestamp"]
    if not isinstance(col.dtype, pd.DatetimeTZDtype):
        try:
            col = pd.to_datetime(col, utc=True, format="ISO8601")
        except (ValueError, TypeError):
            parsed = pd.to_datetime(col, utc=True, errors="coerce", format="ISO8601")
            bad = np.flatnonzero(parsed.isna().to_numpy() & col.notna().to_numpy()) + 1
            raise DataError("unparseable timestamps", file=name, column="timestamp",
                            rows=bad[:5].tolist()) from None
    col = col.dt.tz_convert("UTC").dt.as_unit("ns")
    return col.array.asi8.copy()


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


class _FillKeys:
    """Integer codes of the fills' symbols (and venues), computed once for all data sources:
    grouping 1,000,000 fills by string keys per source would dominate the run time."""

    def __init__(self, fills: pd.DataFrame):
        self.n = len(fills)
        self.sym_code, uniques = pd.factorize(fills["symbol"])
        self.symbols = pd.Index(np.asarray(uniques, dtype=object).astype(str))
        self.has_venue = "venue" in fills.columns
        if self.has_venue:
            self.venue_code, uniques = pd.factorize(fills["venue"])
            self.venues = pd.Index(np.asarray(uniques, dtype=object).astype(str))
        self._rows: dict[bool, dict[int, np.ndarray]] = {}

    def _combine(self, sym: np.ndarray, venue: np.ndarray | None) -> np.ndarray:
        if venue is None:
            return sym
        return np.where((sym < 0) | (venue < 0), -1, sym * max(len(self.venues), 1) + venue)

    def rows(self, use_venue: bool) -> dict[int, np.ndarray]:
        """{key code: positions of the fills with that key}."""
        if use_venue not in self._rows:
            code = self._combine(self.sym_code, self.venue_code if use_venue else None)
            order = np.argsort(code, kind="stable")
            sorted_code = code[order]
            cuts = np.flatnonzero(np.diff(sorted_code)) + 1
            self._rows[use_venue] = {int(sorted_code[c[0]]): order[c]
                                     for c in np.split(np.arange(order.size), cuts)
                                     if c.size and sorted_code[c[0]] >= 0}
        return self._rows[use_venue]

    @staticmethod
    def _map(column: pd.Series, categories: pd.Index) -> np.ndarray:
        codes, uniques = pd.factorize(column)
        mapped = categories.get_indexer(pd.Index(np.asarray(uniques, dtype=object).astype(str)))
        return np.append(mapped, -1)[codes]          # -1 (missing value) stays -1

    def data_codes(self, data: pd.DataFrame, name: str, use_venue: bool) -> np.ndarray:
        """Key codes of a data frame's rows in the fills' coding (-1: a key no fill has)."""
        if "symbol" in data.columns:
            sym = self._map(data["symbol"], self.symbols)
        elif len(self.symbols) == 1:
            sym = np.zeros(len(data), dtype=np.intp)
        else:
            # a symbol-less file (e.g. bars of one instrument) is only unambiguous for one symbol
            raise DataError(f"has no symbol column but the fills have {len(self.symbols)} symbols "
                            f"({', '.join(self.symbols[:5])}); add a symbol column",
                            file=name, column="symbol")
        venue = self._map(data["venue"], self.venues) if use_venue else None
        return self._combine(sym, venue)


@dataclass
class _Grouped:
    """Rows of a data frame split by the fills' (symbol[, venue]) keys.

    `groups` maps a fill-key code to the positions of the data rows of that key (time-sorted);
    `fill_rows` maps the same code to the positions of the fills with that key.
    """
    groups: dict[int, np.ndarray]
    fill_rows: dict[int, np.ndarray]


def _group(keys: _FillKeys, data: pd.DataFrame, name: str, t_ns: np.ndarray,
           valid: np.ndarray) -> _Grouped:
    use_venue = keys.has_venue and "venue" in data.columns
    data_code = keys.data_codes(data, name, use_venue)
    keep = np.flatnonzero((data_code >= 0) & valid)
    # one sort by (key, time) instead of a sort per group
    keep = keep[np.lexsort((t_ns[keep], data_code[keep]))]
    codes = data_code[keep]
    cuts = np.flatnonzero(np.diff(codes)) + 1
    groups = {int(codes[c[0]]): keep[c] for c in np.split(np.arange(keep.size), cuts) if c.size}
    return _Grouped(groups, keys.rows(use_venue))


# --- per-group kernels -------------------------------------------------------------------------


@dataclass
class _Bars:
    """One group's bars, time-sorted, unique starts, no NaN close/volume."""
    start: np.ndarray    # int64 ns
    close: np.ndarray
    volume: np.ndarray
    bar_ns: int


def _bar_length_ns(starts: list[np.ndarray], name: str) -> int:
    diffs = np.concatenate([np.diff(s) for s in starts if s.size > 1] or [np.array([], np.int64)])
    diffs = diffs[diffs > 0]
    if not diffs.size:
        raise DataError("cannot infer the bar length: need at least two bars of one symbol",
                        file=name, column="timestamp")
    values, counts = np.unique(diffs, return_counts=True)
    return int(values[np.argmax(counts)])   # the most common spacing; gaps are rarer


def _window_volume_bars(b: _Bars, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Volume in [t0, t1] with each bar's volume spread evenly over [start, start + bar)."""
    ends = b.start + b.bar_ns
    cum_before = np.concatenate([[0.0], np.cumsum(b.volume)[:-1]])
    x = np.concatenate([b.start, ends]).astype(np.float64)
    y = np.concatenate([cum_before, cum_before + b.volume])
    x, first = np.unique(x, return_index=True)   # a bar's end is the next bar's start
    y = y[first]
    out = np.interp(t1.astype(np.float64), x, y) - np.interp(t0.astype(np.float64), x, y)
    covered = (t0 >= b.start[0]) & (t1 <= ends[-1])
    return np.where(covered, out, np.nan)


def _window_volume_trades(t: np.ndarray, qty: np.ndarray, t0: np.ndarray,
                          t1: np.ndarray) -> np.ndarray:
    """Volume of the prints in [t0, t1]; NaN where the window is not inside the trades' span."""
    cum = np.concatenate([[0.0], np.cumsum(qty)])
    out = cum[np.searchsorted(t, t1, side="right")] - cum[np.searchsorted(t, t0, side="left")]
    covered = (t0 >= t[0]) & (t1 <= t[-1])
    return np.where(covered, out, np.nan)


@dataclass
class _DayTable:
    """Per-day sums of one group on a contiguous day range starting at day `d0`."""
    d0: int
    complete: np.ndarray      # all bars of the day present
    volume: np.ndarray
    ret_ok: np.ndarray        # the daily close-to-close return exists (day and day before complete)
    ret: np.ndarray
    intra_ok: np.ndarray      # complete, and all bars_per_day bar-to-bar returns exist
    intra_s1: np.ndarray
    intra_s2: np.ndarray
    bars_per_day: int


def _day_table(b: _Bars) -> _DayTable:
    bars_per_day = NS_PER_DAY // b.bar_ns
    day = b.start // NS_PER_DAY
    d0 = int(day[0])
    idx = day - d0
    nd = int(idx[-1]) + 1
    count = np.bincount(idx, minlength=nd)
    complete = (count == bars_per_day) & (NS_PER_DAY % b.bar_ns == 0)
    volume = np.bincount(idx, weights=b.volume, minlength=nd)
    last = np.searchsorted(idx, np.arange(nd), side="right") - 1
    log_close = np.log(b.close)
    day_close = np.where(complete, log_close[np.maximum(last, 0)], np.nan)
    ret_ok = np.zeros(nd, bool)
    ret_ok[1:] = complete[1:] & complete[:-1]
    ret = np.zeros(nd)
    ret[1:] = np.where(ret_ok[1:], day_close[1:] - day_close[:-1], 0.0)
    r = np.diff(log_close)
    contiguous = np.diff(b.start) == b.bar_ns
    r = np.where(contiguous, r, 0.0)
    intra_n = np.bincount(idx[1:], weights=contiguous, minlength=nd)
    intra_s1 = np.bincount(idx[1:], weights=r, minlength=nd)
    intra_s2 = np.bincount(idx[1:], weights=r * r, minlength=nd)
    intra_ok = complete & (intra_n == bars_per_day)
    return _DayTable(d0, complete, volume, ret_ok, ret, intra_ok, intra_s1, intra_s2,
                     int(bars_per_day))


def _window_sums(flags_and_values: list[np.ndarray], arrival_day: np.ndarray, d0: int,
                 window: int) -> list[np.ndarray]:
    """Sums over days [arrival_day - window, arrival_day - 1] via cumulative sums (outside = 0)."""
    nd = flags_and_values[0].size
    hi = np.clip(arrival_day - d0, 0, nd)
    lo = np.clip(arrival_day - d0 - window, 0, nd)
    out = []
    for a in flags_and_values:
        cs = np.concatenate([[0.0], np.cumsum(a, dtype=np.float64)])
        out.append(cs[hi] - cs[lo])
    return out


def _adv_from_days(tab: _DayTable, arrival_day: np.ndarray, window: int) -> np.ndarray:
    n_complete, vol = _window_sums([tab.complete, np.where(tab.complete, tab.volume, 0.0)],
                                   arrival_day, tab.d0, window)
    return np.where(n_complete == window, vol / window, np.nan)


def _vol_from_days(tab: _DayTable, arrival_day: np.ndarray, window: int,
                   method: str) -> np.ndarray:
    if method == "daily":
        n, s1, s2 = _window_sums([tab.ret_ok, tab.ret, tab.ret ** 2], arrival_day, tab.d0, window)
        var = (s2 - s1 * s1 / window) / (window - 1)
        return np.where(n == window, np.sqrt(np.maximum(var, 0.0)), np.nan)
    n_days, s1, s2 = _window_sums([tab.intra_ok, np.where(tab.intra_ok, tab.intra_s1, 0.0),
                                   np.where(tab.intra_ok, tab.intra_s2, 0.0)],
                                  arrival_day, tab.d0, window)
    n = window * tab.bars_per_day
    var = (s2 - s1 * s1 / n) / (n - 1) * tab.bars_per_day
    return np.where(n_days == window, np.sqrt(np.maximum(var, 0.0)), np.nan)


def _bars_from_trades(t: np.ndarray, price: np.ndarray, qty: np.ndarray) -> _Bars | None:
    """15-minute bars over the trades' complete days (strictly between the first and last day):
    the days at the edges of a recording are usually partial."""
    bar_ns = TRADE_BAR_S * NS_PER_S
    first_day, last_day = t[0] // NS_PER_DAY + 1, t[-1] // NS_PER_DAY - 1
    if last_day < first_day:
        return None
    start = np.arange(first_day * NS_PER_DAY, (last_day + 1) * NS_PER_DAY, bar_ns)
    inside = (t >= start[0]) & (t < start[-1] + bar_ns)
    k = (t[inside] - start[0]) // bar_ns
    volume = np.bincount(k, weights=qty[inside], minlength=start.size)
    # close = last print before the bar's end (there is always one: the first day is skipped)
    close = price[np.searchsorted(t, start + bar_ns, side="left") - 1]
    return _Bars(start, close, volume, bar_ns)


# --- sources -----------------------------------------------------------------------------------


class _Source:
    """One market-data frame prepared per group; `estimate(field)` gives a per-fill array."""

    def __init__(self, label: str, fills: pd.DataFrame, arrival: np.ndarray,
                 duration_s: np.ndarray):
        self.label = label
        self.fills = fills
        self.arrival = arrival
        self.arrival_ok = arrival != np.iinfo(np.int64).min
        self.duration_s = duration_s
        self.ignored_rows = 0
        self.note = ""

    def estimate(self, field: str, **options) -> np.ndarray:
        raise NotImplementedError


class _BarSource(_Source):
    def __init__(self, label, fills, arrival, duration_s, bars_by_group: dict[int, _Bars],
                 grouped: _Grouped):
        super().__init__(label, fills, arrival, duration_s)
        self.bars = bars_by_group
        self.grouped = grouped
        self._tables: dict[int, _DayTable] = {}

    def _table(self, code: int) -> _DayTable:
        if code not in self._tables:
            self._tables[code] = _day_table(self.bars[code])
        return self._tables[code]

    def estimate(self, field, *, adv_window_days, vol_window_days, vol_method, **_):
        out = np.full(len(self.fills), np.nan)
        for code, b in self.bars.items():
            rows = self.grouped.fill_rows.get(code)
            if rows is None:
                continue
            rows = rows[self.arrival_ok[rows]]
            t0 = self.arrival[rows]
            if field == "market_volume":
                dur = self.duration_s[rows]
                ok = np.isfinite(dur) & (dur >= 0)
                rows, t0, dur = rows[ok], t0[ok], dur[ok]
                t1 = t0 + np.round(dur * NS_PER_S).astype(np.int64)
                out[rows] = _window_volume_bars(b, t0, t1)
                continue
            day = np.floor_divide(t0, NS_PER_DAY)
            tab = self._table(code)
            if field == "adv":
                out[rows] = _adv_from_days(tab, day, adv_window_days)
            else:
                out[rows] = _vol_from_days(tab, day, vol_window_days, vol_method)
        return out


class _TradeSource(_Source):
    def __init__(self, label, fills, arrival, duration_s, trades: pd.DataFrame,
                 grouped: _Grouped, t_ns: np.ndarray):
        super().__init__(label, fills, arrival, duration_s)
        self.grouped = grouped
        qty = _numeric(trades, "quantity")
        price = _numeric(trades, "price")
        self.series = {}
        for code, rows in grouped.groups.items():
            self.series[code] = (t_ns[rows], price[rows], qty[rows])
        self._bars = None

    def bar_source(self) -> _BarSource:
        if self._bars is None:
            bars = {}
            for code, (t, p, q) in self.series.items():
                b = _bars_from_trades(t, p, q)
                if b is not None:
                    bars[code] = b
            self._bars = _BarSource(self.label, self.fills, self.arrival, self.duration_s, bars,
                                    self.grouped)
        return self._bars

    def estimate(self, field, **options):
        if field != "market_volume":
            return self.bar_source().estimate(field, **options)
        out = np.full(len(self.fills), np.nan)
        for code, (t, _p, q) in self.series.items():
            rows = self.grouped.fill_rows.get(code)
            if rows is None:
                continue
            rows = rows[self.arrival_ok[rows]]
            dur = self.duration_s[rows]
            ok = np.isfinite(dur) & (dur >= 0)
            rows = rows[ok]
            t0 = self.arrival[rows]
            t1 = t0 + np.round(dur[ok] * NS_PER_S).astype(np.int64)
            out[rows] = _window_volume_trades(t, q, t0, t1)
        return out


class _QuoteSource(_Source):
    def __init__(self, label, fills, arrival, duration_s, grouped: _Grouped, t_ns: np.ndarray,
                 bid: np.ndarray, ask: np.ndarray):
        super().__init__(label, fills, arrival, duration_s)
        self.grouped = grouped
        self.series = {code: (t_ns[rows], bid[rows], ask[rows])
                       for code, rows in grouped.groups.items()}

    def estimate(self, field, *, quote_max_age_s, **_):
        out = np.full(len(self.fills), np.nan)
        max_age = np.inf if quote_max_age_s is None else quote_max_age_s * NS_PER_S
        for code, (t, bid, ask) in self.series.items():
            rows = self.grouped.fill_rows.get(code)
            if rows is None:
                continue
            rows = rows[self.arrival_ok[rows]]
            t0 = self.arrival[rows]
            i = np.searchsorted(t, t0, side="right") - 1   # last quote at or before arrival
            found = i >= 0
            j = np.maximum(i, 0)
            fresh = found & ((t0 - t[j]) <= max_age)
            mid = (bid[j] + ask[j]) / 2
            out[rows] = np.where(fresh, (ask[j] - bid[j]) / mid * 1e4, np.nan)
        return out


def _valid_time(t_ns: np.ndarray) -> np.ndarray:
    return t_ns != np.iinfo(np.int64).min


def _prepare_bars(fills, keys, bars, arrival, duration_s) -> _BarSource:
    _require(bars, "bars", ("timestamp", "close", "volume"))
    t = _time_ns(bars, "bars")
    close, volume = _numeric(bars, "close"), _numeric(bars, "volume")
    valid = _valid_time(t) & np.isfinite(close) & (close > 0) & np.isfinite(volume) & (volume >= 0)
    grouped = _group(keys, bars, "bars", t, valid)
    series = {}
    for code, rows in grouped.groups.items():
        start = t[rows]
        # duplicated bar stamps: keep the last row (a later correction of the same bar)
        keep = np.concatenate([start[1:] != start[:-1], [True]])
        series[code] = (start[keep], close[rows][keep], volume[rows][keep])
    src = _BarSource("bars", fills, arrival, duration_s, {}, grouped)
    src.ignored_rows = int((~valid).sum())
    if series:
        bar_ns = _bar_length_ns([s[0] for s in series.values()], "bars")
        src.bars = {code: _Bars(s, c, v, bar_ns) for code, (s, c, v) in series.items()}
        if NS_PER_DAY % bar_ns:
            src.note = (f"bar length {bar_ns / NS_PER_S:g} s does not divide a day: "
                        "no complete days, so no adv/volatility from bars")
    return src


def _prepare_trades(fills, keys, trades, arrival, duration_s) -> _TradeSource:
    _require(trades, "trades", ("timestamp", "price", "quantity"))
    t = _time_ns(trades, "trades")
    price, qty = _numeric(trades, "price"), _numeric(trades, "quantity")
    valid = _valid_time(t) & np.isfinite(price) & (price > 0) & np.isfinite(qty) & (qty >= 0)
    grouped = _group(keys, trades, "trades", t, valid)
    src = _TradeSource("trades", fills, arrival, duration_s, trades, grouped, t)
    src.ignored_rows = int((~valid).sum())
    return src


def _prepare_quotes(fills, keys, frame, arrival, duration_s, *, label, bid_col,
                    ask_col) -> _QuoteSource:
    _require(frame, label, ("timestamp", bid_col, ask_col))
    t = _time_ns(frame, label)
    bid, ask = _numeric(frame, bid_col), _numeric(frame, ask_col)
    # a crossed or empty quote has no meaningful spread: skip it, the previous quote stands
    valid = _valid_time(t) & np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask >= bid)
    grouped = _group(keys, frame, label, t, valid)
    src = _QuoteSource(label, fills, arrival, duration_s, grouped, t, bid, ask)
    src.ignored_rows = int((~valid).sum())
    return src


# --- public API --------------------------------------------------------------------------------


def enrich(fills: pd.DataFrame, *, trades: pd.DataFrame | None = None,
           bars: pd.DataFrame | None = None, quotes: pd.DataFrame | None = None,
           book: pd.DataFrame | None = None, adv_window_days: int = 20,
           vol_window_days: int = 20, overwrite: bool = False, vol_method: str = "daily",
           quote_max_age_s: float | None = 300.0) -> tuple[pd.DataFrame, dict]:
    """Fill `market_volume`, `adv`, `volatility`, `spread_bps` of canonical fills (see module doc).

    Only NaN or absent values are filled unless `overwrite=True`, which recomputes every row the
    data covers (rows it cannot cover keep their value). The input frame is not modified.
    Returns (frame, report); report[field] = {"filled": rows filled, "missing_after": NaN rows
    left, "source": "trades" | "bars" | "quotes" | "book" | "trades+bars" ... | None,
    "by_source": {source: rows}, "ignored_rows": {source: unusable data rows}, "note": str}.
    """
    if adv_window_days < 1:
        raise ValueError("adv_window_days must be >= 1")
    if vol_window_days < 2:
        raise ValueError("vol_window_days must be >= 2 (a std needs two returns)")
    if vol_method not in VOL_METHODS:
        raise ValueError(f"vol_method must be one of {VOL_METHODS}")
    _require(fills, "fills", ("timestamp", "symbol"))
    arrival = _time_ns(fills, "fills")
    duration_s = _numeric(fills, "duration_s")
    keys = _FillKeys(fills)

    sources: dict[str, list[_Source]] = {f: [] for f in FIELDS}
    trade_src = bar_src = None
    if trades is not None:
        trade_src = _prepare_trades(fills, keys, trades, arrival, duration_s)
    if bars is not None:
        bar_src = _prepare_bars(fills, keys, bars, arrival, duration_s)
    # horizon volume: prints are exact, bars are pro-rata; adv/volatility: bars first
    sources["market_volume"] = [s for s in (trade_src, bar_src) if s is not None]
    daily = [s for s in (bar_src, trade_src) if s is not None]
    sources["adv"] = list(daily)
    sources["volatility"] = list(daily)
    if quotes is not None:
        sources["spread_bps"].append(_prepare_quotes(fills, keys, quotes, arrival, duration_s,
                                                     label="quotes", bid_col="bid_price",
                                                     ask_col="ask_price"))
    if book is not None:
        sources["spread_bps"].append(_prepare_quotes(fills, keys, book, arrival, duration_s,
                                                     label="book", bid_col="bid_price_0",
                                                     ask_col="ask_price_0"))
    options = {"adv_window_days": adv_window_days, "vol_window_days": vol_window_days,
               "vol_method": vol_method, "quote_max_age_s": quote_max_age_s}

    out = fills.copy()
    report: dict[str, dict] = {}
    n = len(fills)
    for field in FIELDS:
        current = _numeric(fills, field)
        need = np.ones(n, bool) if overwrite else np.isnan(current)
        new = np.full(n, np.nan)
        by_source: dict[str, int] = {}
        notes = []
        if field == "market_volume" and "duration_s" not in fills.columns and sources[field]:
            notes.append("fills have no duration_s: the horizon volume needs it")
        for src in sources[field]:
            est = src.estimate(field, **options)
            take = need & np.isnan(new) & np.isfinite(est)
            new[take] = est[take]
            if take.any():
                by_source[src.label] = int(take.sum())
            if src.note and field != "market_volume":
                notes.append(src.note)
        filled = np.isfinite(new)
        values = np.where(filled, new, current)
        if field in out.columns or sources[field]:
            out[field] = values
        if not sources[field]:
            notes.append("no data given for it: " + {
                "market_volume": "pass trades or bars", "adv": "pass bars or trades",
                "volatility": "pass bars or trades", "spread_bps": "pass quotes or a book"}[field])
        report[field] = {
            "filled": int(filled.sum()),
            "missing_after": int(np.isnan(values).sum()),
            "source": "+".join(by_source) or None,
            "by_source": by_source,
            "ignored_rows": {s.label: s.ignored_rows for s in sources[field] if s.ignored_rows},
            "note": "; ".join(dict.fromkeys(notes)),
        }
    report["volatility"]["method"] = vol_method
    report["volatility"]["window_days"] = vol_window_days
    report["adv"]["window_days"] = adv_window_days
    return out, report
