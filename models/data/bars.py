"""Bars and returns: turning bars or trades into a validated, gap-aware series.

The plumbing every area that works on prices over time shares (volatility, correlation, regimes):
`bar_series` (OHLC bars from a bars file or built from trades), `returns_from` / `returns_of_bars`
(log returns at a chosen frequency), frequency parsing and the gap policy (24/7 markets: a missing
bar is an error unless the caller says `gaps="skip"`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from execal.models.core.frozen import freeze_arrays
from execal.models.core.params import DAYS_PER_YEAR, NS_PER_DAY, NS_PER_S, SECONDS_PER_DAY  # noqa: F401
from execal.models.data.io import load
from execal.models.data.schema import DataError, Dataset, DropRecord, ValidationReport

GAP_POLICIES = ("error", "skip")
TRADE_BAR = "1min"               # default bar length of bars built from trades


# --- time helpers ----------------------------------------------------------------------------

def parse_freq(freq: str | pd.Timedelta | None, what: str = "freq") -> int | None:
    """A frequency string ("1D", "1h", "15min", "1s") as integer nanoseconds (None stays None).

    A bad value raises DataError (a ValueError): the CLI reports it as bad input, exit 2."""
    if freq is None:
        return None
    try:
        ns = int(pd.Timedelta(freq).value)
    except (ValueError, TypeError):
        try:
            ns = int(pd.Timedelta(pd.tseries.frequencies.to_offset(freq)).value)
        except (ValueError, TypeError):
            raise DataError(f"{what} {freq!r} is not a frequency (examples: 1D, 1h, 15min, 1s)") from None
    if ns <= 0:
        raise DataError(f"{what} must be positive, got {freq!r}")
    return ns


def _freq_label(ns: int) -> str:
    """A bar length as the shortest exact label: 1D, 4h, 5min, 1s, 250ms, 10us, 7ns."""
    for unit, label in ((NS_PER_DAY, "D"), (3600 * NS_PER_S, "h"), (60 * NS_PER_S, "min"), (NS_PER_S, "s"),
                        (10**6, "ms"), (10**3, "us")):
        if ns % unit == 0:
            return f"{ns // unit}{label}"
    return f"{ns}ns"


def _rows_text(rows: np.ndarray) -> list[int]:
    return [int(r) for r in rows[:5]]


# --- bars: validated, gap-aware ----------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class BarSeries:
    """One instrument's OHLC bars on a regular grid, validated; arrays are read-only.

    `t_ns` are bar open times (ns since epoch, UTC); a bar covers [t, t + bar_ns).
    `contiguous[i]` is True when bar i directly follows bar i-1 (no missing bar between them), so
    ln(C_i/C_{i-1}) is a one-bar return; False for the first bar and after a gap.
    `rows` are the 1-based data rows of the input frame (None for bars built from trades).
    """
    t_ns: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    bar_ns: int
    contiguous: np.ndarray
    source: str
    symbol: str | None
    report: ValidationReport
    rows: np.ndarray | None = None
    from_trades: bool = False

    def __post_init__(self):
        freeze_arrays(self, ("t_ns", "open", "high", "low", "close", "contiguous", "rows"))

    @property
    def n(self) -> int:
        return int(self.t_ns.shape[0])

    @property
    def bar_s(self) -> float:
        return self.bar_ns / NS_PER_S

    @property
    def bars_per_day(self) -> float:
        return NS_PER_DAY / self.bar_ns

    @property
    def timestamps(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(self.t_ns, unit="ns", utc=True))


def _as_dataset(data, kind_hint: str | None = None) -> tuple[pd.DataFrame, str, ValidationReport, str | None]:
    """(frame, source name, report copy, kind) from a Dataset, a frame or a path."""
    if isinstance(data, (str, os.PathLike)):
        data = load(data)
    if isinstance(data, Dataset):
        rep = ValidationReport(rows_read=data.report.rows_read, rows_kept=data.report.rows_kept,
                               dropped=list(data.report.dropped), warnings=list(data.report.warnings))
        return data.frame, data.source, rep, data.kind
    if isinstance(data, pd.DataFrame):
        return data, "data", ValidationReport(rows_read=len(data), rows_kept=len(data)), kind_hint
    raise TypeError(f"expected a Dataset, a DataFrame or a path, got {type(data).__name__}")


def _kind_of(frame: pd.DataFrame, kind: str | None, source: str) -> str:
    if kind in ("bars", "trades"):
        return kind
    cols = set(map(str, frame.columns))
    if {"open", "high", "low", "close"} <= cols:
        return "bars"
    if "price" in cols:
        return "trades"
    raise DataError(f"volatility needs bars (timestamp, open, high, low, close) or trades "
                    f"(timestamp, price); found columns {sorted(cols)}", file=source)


def _pick_symbol(frame: pd.DataFrame, symbol: str | None, source: str) -> tuple[pd.DataFrame, np.ndarray, str | None]:
    """Rows of one symbol (all rows when the frame has no symbol column) and their 1-based rows."""
    rows = np.arange(1, len(frame) + 1)
    if "symbol" not in frame.columns:
        return frame, rows, symbol
    sym = frame["symbol"].astype("string")
    present = sorted(map(str, sym.dropna().unique()))
    if symbol is None:
        if len(present) > 1:
            raise DataError(f"the data holds several symbols ({', '.join(present[:10])}); choose one "
                            f"(symbol=... / --symbol)", file=source, column="symbol")
        return frame, rows, present[0] if present else None
    mask = (sym == symbol).fillna(False).to_numpy(bool)
    if not mask.any():
        raise DataError(f"no rows for symbol {symbol!r} (symbols present: {', '.join(present[:10])})",
                        file=source, column="symbol")
    return frame.loc[mask], rows[mask], symbol


def _time_ns(frame: pd.DataFrame, source: str, rows: np.ndarray) -> np.ndarray:
    if "timestamp" not in frame.columns:
        raise DataError("missing column 'timestamp'", file=source, column="timestamp")
    col = frame["timestamp"]
    if not isinstance(col.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(col.dtype):
        try:
            col = pd.to_datetime(col, utc=True)
        except (ValueError, TypeError):
            raise DataError("timestamps could not be parsed (load the file through execal.models.data.io.load)",
                            file=source, column="timestamp") from None
    t = col.dt.as_unit("ns").array.asi8 if isinstance(col.dtype, pd.DatetimeTZDtype) else \
        col.to_numpy("datetime64[ns]").astype(np.int64)
    bad = t == np.iinfo(np.int64).min
    if bad.any():
        raise DataError("missing timestamps", file=source, column="timestamp", rows=_rows_text(rows[bad]))
    return t


def _price_column(frame: pd.DataFrame, name: str, source: str, rows: np.ndarray) -> np.ndarray:
    if name not in frame.columns:
        raise DataError(f"missing column '{name}'", file=source, column=name)
    try:
        v = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    except (ValueError, TypeError):
        raise DataError("not numeric", file=source, column=name) from None
    bad = ~np.isfinite(v)
    if bad.any():
        raise DataError(f"{int(bad.sum())} missing or non-numeric prices", file=source, column=name,
                        rows=_rows_text(rows[bad]))
    bad = v <= 0
    if bad.any():
        raise DataError(f"{int(bad.sum())} zero or negative prices: a log return needs prices > 0",
                        file=source, column=name, rows=_rows_text(rows[bad]))
    return v


def _grid(t: np.ndarray, source: str, rows: np.ndarray, gaps: str,
          report: ValidationReport, bar_ns: int | None = None) -> tuple[int, np.ndarray]:
    """Bar length (the most common spacing unless given) and the contiguity mask; gaps either
    raise or are recorded."""
    if t.shape[0] < 2:
        return bar_ns or NS_PER_DAY, np.zeros(t.shape[0], bool)
    dt = np.diff(t)
    if (dt <= 0).any():
        i = np.flatnonzero(dt <= 0)
        raise DataError("timestamps are not strictly increasing (duplicate or unsorted bars)",
                        file=source, column="timestamp", rows=_rows_text(rows[i + 1]))
    if bar_ns is None:
        vals, counts = np.unique(dt, return_counts=True)
        bar_ns = int(vals[np.argmax(counts)])
    if (dt < bar_ns).any():
        i = np.flatnonzero(dt < bar_ns)
        raise DataError(f"irregular bars: spacing shorter than the bar length {_freq_label(bar_ns)}",
                        file=source, column="timestamp", rows=_rows_text(rows[i + 1]))
    gap = dt > bar_ns
    contiguous = np.concatenate([[False], ~gap])
    if gap.any():
        missing = int(((dt[gap] // bar_ns) - 1).sum()) + int((dt[gap] % bar_ns != 0).sum())
        first = rows[np.flatnonzero(gap) + 1]
        if gaps == "error":
            raise DataError(f"gaps in the {_freq_label(bar_ns)} bars: {int(gap.sum())} gap(s), "
                            f"{missing} missing bar(s); the rows listed follow a gap (gaps='skip' / "
                            f"--gaps skip drops the returns across them)",
                            file=source, column="timestamp", rows=_rows_text(first))
        report.dropped.append(DropRecord("return across a gap in the bars (not used)", "timestamp",
                                         int(gap.sum()), _rows_text(first)))
    return bar_ns, contiguous


def _bars_from_trades(frame: pd.DataFrame, source: str, rows: np.ndarray, bar_ns: int,
                      report: ValidationReport) -> tuple:
    """OHLC bars of trade prices; an interval without trades is a flat bar at the last price."""
    t = _time_ns(frame, source, rows)
    price = _price_column(frame, "price", source, rows)
    if t.shape[0] and (np.diff(t) < 0).any():
        order = np.argsort(t, kind="stable")
        t, price = t[order], price[order]
        report.warnings.append("trades sorted by time")
    if t.shape[0] == 0:
        raise DataError("no trades", file=source)
    slot = t // bar_ns
    first_slot = slot[0]
    idx = slot - first_slot
    n = int(idx[-1]) + 1
    starts = np.flatnonzero(np.concatenate([[True], idx[1:] != idx[:-1]]))
    occupied = idx[starts]
    o = price[starts]
    c = price[np.concatenate([starts[1:], [price.shape[0]]]) - 1]
    h = np.maximum.reduceat(price, starts)
    lo = np.minimum.reduceat(price, starts)
    open_ = np.empty(n)
    high, low, close = np.empty(n), np.empty(n), np.empty(n)
    # carry the last close into empty intervals (no trade = no price change)
    last = np.full(n, -1)
    last[occupied] = np.arange(occupied.shape[0])
    last = np.maximum.accumulate(last)
    prev_close = c[last]
    open_[:], high[:], low[:], close[:] = prev_close, prev_close, prev_close, prev_close
    open_[occupied], high[occupied], low[occupied], close[occupied] = o, h, lo, c
    empty = n - occupied.shape[0]
    if empty:
        report.warnings.append(f"{empty} of {n} {_freq_label(bar_ns)} intervals had no trade: "
                               f"flat bars at the last price")
    t_bars = (first_slot + np.arange(n)) * bar_ns
    contiguous = np.concatenate([[False], np.ones(n - 1, bool)])
    return t_bars, open_, high, low, close, contiguous


def bar_series(data, *, symbol: str | None = None, bar: str | None = None,
               gaps: str = "error", kind: str | None = None) -> BarSeries:
    """Validated OHLC bars of one instrument from bars or trades (a Dataset, a frame or a path).

    Trades become `bar`-long bars of their prices (1 minute when `bar` is None); bars are
    aggregated to `bar` when it is given (a multiple of their length, e.g. 5min from 1min bars:
    fewer microstructure effects). Bars: prices must be finite and > 0, high ≥
    max(open, close) and low ≤ min(open, close), timestamps strictly increasing; the bar length is
    the most common spacing. A missing bar raises `DataError` unless `gaps="skip"`, which drops the
    returns across each gap and counts them in the report.
    """
    if gaps not in GAP_POLICIES:
        raise ValueError(f"gaps must be one of {GAP_POLICIES}, got {gaps!r}")
    frame, source, report, kind = _as_dataset(data, kind)
    kind = _kind_of(frame, kind, source)
    frame, rows, symbol = _pick_symbol(frame, symbol, source)
    if kind == "trades":
        bar_ns = parse_freq(bar or TRADE_BAR, "bar")
        t, o, h, lo, c, contiguous = _bars_from_trades(frame, source, rows, bar_ns, report)
        return BarSeries(t, o, h, lo, c, bar_ns, contiguous, source, symbol, report, None, True)
    t = _time_ns(frame, source, rows)
    o, h, lo, c = (_price_column(frame, name, source, rows) for name in ("open", "high", "low", "close"))
    if t.shape[0] and (np.diff(t) < 0).any():
        order = np.argsort(t, kind="stable")
        t, o, h, lo, c, rows = t[order], o[order], h[order], lo[order], c[order], rows[order]
        report.warnings.append("bars sorted by time")
    tol = 1e-12 * c
    bad = (h + tol < np.maximum(o, c)) | (lo - tol > np.minimum(o, c)) | (h + tol < lo)
    if bad.any():
        raise DataError(f"{int(bad.sum())} inconsistent bars: high must be ≥ open, close and low; "
                        f"low ≤ open, close", file=source, column="high", rows=_rows_text(rows[bad]))
    bar_ns, contiguous = _grid(t, source, rows, gaps, report)
    series = BarSeries(t, o, h, lo, c, bar_ns, contiguous, source, symbol, report, rows, False)
    want = parse_freq(bar, "bar") if bar else None
    if want is not None and want != bar_ns:
        series = resample_bars(series, want)
    return series


def resample_bars(bars: BarSeries, bar_ns: int) -> BarSeries:
    """Coarser bars (a multiple of the bar length): first open, max high, min low, last close.

    A coarse bar missing some of its fine bars (after a gap) is kept but not counted contiguous
    with its neighbours when the missing bars are at its edges."""
    if bar_ns < bars.bar_ns or bar_ns % bars.bar_ns:
        raise DataError(f"bar {_freq_label(bar_ns)} must be a multiple of the data's bar length "
                        f"{_freq_label(bars.bar_ns)}", file=bars.source)
    slot = bars.t_ns // bar_ns
    starts = np.flatnonzero(np.concatenate([[True], slot[1:] != slot[:-1]]))
    ends = np.concatenate([starts[1:], [bars.n]]) - 1
    t = slot[starts] * bar_ns
    o = bars.open[starts]
    c = bars.close[ends]
    h = np.maximum.reduceat(bars.high, starts)
    lo = np.minimum.reduceat(bars.low, starts)
    # contiguous: both coarse bars close at the end of their slots, the slots are consecutive and
    # no fine bar is missing inside this one, so ln(C_i/C_{i-1}) spans exactly one coarse bar
    last_ok = bars.t_ns[ends] + bars.bar_ns == t + bar_ns
    inner = np.ones(bars.n, bool)
    inner[starts] = False
    coarse = np.repeat(np.arange(starts.shape[0]), np.diff(np.concatenate([starts, [bars.n]])))
    holes = np.bincount(coarse, inner & ~bars.contiguous, minlength=starts.shape[0]) > 0
    contiguous = np.zeros(t.shape[0], bool)
    contiguous[1:] = (np.diff(slot[starts]) == 1) & last_ok[:-1] & last_ok[1:] & ~holes[1:]
    rows = None if bars.rows is None else bars.rows[ends]
    report = bars.report
    report.warnings.append(f"{_freq_label(bars.bar_ns)} bars aggregated to {_freq_label(bar_ns)} bars")
    return BarSeries(t, o, h, lo, c, bar_ns, contiguous, bars.source, bars.symbol, report, rows,
                     bars.from_trades)


def check_not_constant(bars: BarSeries) -> None:
    if bars.n and np.all(bars.high == bars.low) and np.all(bars.close == bars.close[0]):
        raise DataError(f"constant prices ({bars.close[0]:g} in all {bars.n} bars): volatility is zero "
                        f"and no model can be fitted", file=bars.source, column="close")


# --- returns -----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Returns:
    """Log returns (fractions) on a regular grid, for the conditional-volatility models.

    `t_ns[i]` labels the period of return i (the bar's open time: the return is known at
    `t_ns[i] + period_ns`). Returns across gaps are not in the series (see `report`).
    """
    values: np.ndarray
    t_ns: np.ndarray
    period_ns: int
    source: str
    symbol: str | None
    report: ValidationReport
    rows: np.ndarray | None = None       # 1-based input row of the bar that closes each return

    def __post_init__(self):
        freeze_arrays(self, ("values", "t_ns", "rows"))

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def period_s(self) -> float:
        return self.period_ns / NS_PER_S

    @property
    def periods_per_day(self) -> float:
        return NS_PER_DAY / self.period_ns

    @property
    def known_at_ns(self) -> np.ndarray:
        return self.t_ns + self.period_ns

    @property
    def timestamps(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(self.t_ns, unit="ns", utc=True))

    def require(self, n_min: int, what: str) -> None:
        """Raise DataError when there are fewer than `n_min` returns or they are all zero."""
        if self.n < n_min:
            raise DataError(f"too few observations for {what}: {self.n} returns at "
                            f"{_freq_label(self.period_ns)}, need at least {n_min} (use a longer file "
                            f"or a shorter --freq)", file=self.source)
        if not np.any(self.values != self.values[0]):
            raise DataError(f"constant returns ({self.values[0]:g} in all {self.n}): prices do not "
                            f"move, volatility cannot be estimated", file=self.source)


def returns_from(data, *, freq: str | None = None, symbol: str | None = None,
                 bar: str | None = None, gaps: str = "error",
                 period: str | None = None) -> Returns:
    """Log returns of one instrument from bars, trades, a path, or given returns.

    Bars / trades: close-to-close log returns at the bar length, or at `freq` (a multiple of the
    bar length: the last close of each period; a period whose last bar is missing is dropped and
    counted). Given returns (a Series with a DatetimeIndex, or an array): used as they are (simple
    or log, as given), NaN dropped and counted; `period` (default: the index spacing, else "1D")
    sets the unit of time of one return.
    """
    if isinstance(data, (pd.Series, np.ndarray, list, tuple)):
        return _given_returns(data, period)
    bars = bar_series(data, symbol=symbol, bar=bar, gaps=gaps)
    check_not_constant(bars)
    return returns_of_bars(bars, freq)


def returns_of_bars(bars: BarSeries, freq: str | None = None) -> Returns:
    report = bars.report
    freq_ns = parse_freq(freq) if freq else None
    rows = bars.rows if bars.rows is not None else np.arange(1, bars.n + 1)
    if freq_ns is None or freq_ns == bars.bar_ns:
        ok = bars.contiguous
        r = np.log(bars.close[1:] / bars.close[:-1])[ok[1:]]
        return Returns(r, bars.t_ns[ok], bars.bar_ns, bars.source, bars.symbol, report,
                       rows[ok] if bars.rows is not None else None)
    if freq_ns < bars.bar_ns or freq_ns % bars.bar_ns:
        raise DataError(f"freq {_freq_label(freq_ns)} must be a multiple of the bar length "
                        f"{_freq_label(bars.bar_ns)}", file=bars.source)
    period = bars.t_ns // freq_ns
    last = np.flatnonzero(np.concatenate([period[1:] != period[:-1], [True]]))
    # the period's close is its last bar's close only if that bar is the period's final slot
    full = (bars.t_ns[last] + bars.bar_ns) == (period[last] + 1) * freq_ns
    if (~full).any():
        report.dropped.append(DropRecord(f"{_freq_label(freq_ns)} period without its last bar "
                                         f"(partial period, no close)", "timestamp", int((~full).sum()),
                                         _rows_text(rows[last[~full]])))
    last = last[full]
    p = period[last]
    close = bars.close[last]
    consecutive = np.diff(p) == 1
    if (~consecutive).any() and not any("gap" in d.reason for d in report.dropped):
        report.dropped.append(DropRecord(f"{_freq_label(freq_ns)} return across missing periods",
                                         "timestamp", int((~consecutive).sum()),
                                         _rows_text(rows[last[1:][~consecutive]])))
    r = np.log(close[1:] / close[:-1])[consecutive]
    t = (p[1:] * freq_ns)[consecutive]
    return Returns(r, t, freq_ns, bars.source, bars.symbol, report,
                   rows[last[1:]][consecutive] if bars.rows is not None else None)


def _given_returns(data, period: str | None) -> Returns:
    report = ValidationReport()
    if isinstance(data, pd.Series):
        values = pd.to_numeric(data, errors="coerce").to_numpy(np.float64, na_value=np.nan)
        index = data.index
        name = str(data.name) if data.name is not None else "returns"
    else:
        values = np.asarray(data, dtype=np.float64).reshape(-1)
        index = None
        name = "returns"
    report.rows_read = int(values.shape[0])
    rows = np.arange(1, values.shape[0] + 1)
    bad = ~np.isfinite(values)
    if bad.any():
        report.dropped.append(DropRecord("missing or non-finite return", name, int(bad.sum()),
                                         _rows_text(rows[bad])))
    keep = ~bad
    period_ns = parse_freq(period) if period else None
    t_ns = None
    if isinstance(index, pd.DatetimeIndex):
        idx = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
        t_ns = idx.as_unit("ns").asi8[keep]
        if period_ns is None and t_ns.shape[0] > 1:
            period_ns = int(np.median(np.diff(t_ns)))
    period_ns = period_ns or NS_PER_DAY
    if t_ns is None:
        t_ns = np.arange(int(keep.sum()), dtype=np.int64) * period_ns
    report.rows_kept = int(keep.sum())
    return Returns(values[keep], t_ns, period_ns, name, None, report, rows[keep])
