"""Realised volatility: what the bars (or trades) say the volatility was, period by period.

This room also holds the plumbing the other volatility rooms share (`garch.py`, `regimes.py`,
`jumps.py`): turning bars or trades into a validated, gap-aware series (`bar_series`,
`returns_from`), the volatility model descriptor the registry lists (`VolatilityModel`) and the
immutable result every volatility fit returns (`VolatilityResult`).

Estimators (`ESTIMATORS`), each a per-bar variance averaged over the bars of a period (a UTC day by
default) and scaled to a day: sigma_daily = sqrt(mean per-bar variance × bars per day). Using the
mean rather than the sum keeps a partial day (first / last day of a file) unbiased; `complete`
flags the periods with every bar present. Crypto trades 24/7: annualised = daily × sqrt(365).

- close_to_close: sample variance (mean removed, ddof 1) of bar-to-bar log returns ln(C_i/C_{i-1}).
- realized_variance: mean of squared bar-to-bar log returns (no mean removed).
- bipower: (π/2)·mean |r_i||r_{i-1}| (Barndorff-Nielsen & Shephard 2004): robust to jumps.
- parkinson: ln(H/L)² / (4 ln 2) (Parkinson 1980).
- garman_klass: ½ ln(H/L)² − (2 ln 2 − 1) ln(C/O)² (Garman & Klass 1980, no opening jump).
- rogers_satchell: ln(H/C)ln(H/O) + ln(L/C)ln(L/O) (Rogers & Satchell 1991): drift-robust.
- yang_zhang: V_open + k·V_close + (1−k)·V_RS, k = 0.34 / (1.34 + (n+1)/(n−1)) over the period's
  n bars (Yang & Zhang 2000); V_open = sample variance of ln(O_i/C_{i-1}).

`window=w` pools w consecutive periods (daily bars with window=20 give the classic 20-day
estimators). Range estimators on bars built from a discrete path are biased low (the high and low
are only seen at the sampled points); tests/test_realized.py measures this bias.

Jump tests (`jump_test`): Barndorff-Nielsen–Shephard per period (ratio statistic with tri-power
quarticity, Huang & Tauchen 2005) and Lee–Mykland per bar (return / local bipower volatility from
the K bars strictly before it, Gumbel critical value), which flags jump *times*.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import special, stats

from models.impact import Param
from models.result import freeze_arrays
from models.schema import DataError, Dataset, DropRecord, ValidationReport

DAYS_PER_YEAR = 365.0            # crypto trades 24/7
SECONDS_PER_DAY = 86_400.0
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S
LN2 = math.log(2.0)
MU1 = math.sqrt(2.0 / math.pi)   # E|Z|
MU43 = 2.0 ** (2.0 / 3.0) * math.gamma(7.0 / 6.0) / math.gamma(0.5)   # E|Z|^(4/3)

ESTIMATORS: dict[str, str] = {
    "close_to_close": "sample variance of bar-to-bar log returns (mean removed)",
    "realized_variance": "mean squared bar-to-bar log return",
    "bipower": "bipower variation (π/2)·|r_i||r_{i-1}|: robust to jumps",
    "parkinson": "high-low range: ln(H/L)²/(4 ln 2)",
    "garman_klass": "½ln(H/L)² − (2ln2−1)ln(C/O)²",
    "rogers_satchell": "ln(H/C)ln(H/O) + ln(L/C)ln(L/O): drift-robust range estimator",
    "yang_zhang": "open-jump + open-to-close + Rogers–Satchell mix (Yang–Zhang)",
}
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
    td = pd.Timedelta(ns, unit="ns")
    for unit, label in ((NS_PER_DAY, "D"), (3600 * NS_PER_S, "h"), (60 * NS_PER_S, "min"), (NS_PER_S, "s")):
        if ns % unit == 0:
            return f"{ns // unit}{label}"
    return str(td)


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
        from models.io import load
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
            raise DataError("timestamps could not be parsed (load the file through models.io.load)",
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


# --- the shared model descriptor and result --------------------------------------------------

@dataclass(frozen=True)
class VolatilityModel:
    """A volatility model as the registry, the UI and the CLI see it (metadata + `fit`).

    `fit(data, **options)` is the model module's fit function; `options` lists its settings with
    their choices (the UI pickers and CLI flags are generated from them).
    """
    name: str
    label: str
    formula: str
    params: tuple[Param, ...]
    options: Mapping[str, Any]
    reference: str
    fit_path: str                 # "module:function", imported on use (arch/statsmodels load lazily)
    kind: str = "volatility"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def fit(self, data, **options):
        module, func = self.fit_path.split(":")
        import importlib
        return getattr(importlib.import_module(module), func)(data, **options)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "label": self.label, "formula": self.formula,
                "reference": self.reference, "params": [p.to_dict() for p in self.params],
                "options": {k: (list(v) if isinstance(v, (tuple, list)) else v)
                            for k, v in self.options.items()}}


def _num(x) -> float | None:
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _num(obj)
    if isinstance(obj, pd.Timestamp):
        return obj.isoformat()
    return obj


@dataclass(frozen=True, eq=False)
class VolatilityResult:
    """A fitted (or hand-set) volatility model: immutable, JSON-ready via `to_dict()`.

    `params` / `std_errors` are in the units `units` names; `loglikelihood` is of the returns as
    fractions (log returns, not ×100), so GARCH, Markov and Merton fits on the same returns compare.
    `converged` / `status` / `message` are the optimizer's own report: a fit that did not converge
    says so here and in `warnings`, never silently.
    """
    model: str
    params: Mapping[str, float]
    std_errors: Mapping[str, float]
    loglikelihood: float | None
    n_obs: int
    converged: bool
    status: str                      # "fitted" | "fixed" | "closed_form"
    message: str
    units: Mapping[str, str] = field(default_factory=dict)
    summary: Mapping[str, Any] = field(default_factory=dict)     # model-specific headline numbers
    settings: Mapping[str, Any] = field(default_factory=dict)
    optimizer: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)        # source, symbol, span, frequency
    validation: ValidationReport | None = None

    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def aic(self) -> float | None:
        return None if self.loglikelihood is None else 2 * self.n_params - 2 * self.loglikelihood

    @property
    def bic(self) -> float | None:
        if self.loglikelihood is None:
            return None
        return self.n_params * math.log(max(self.n_obs, 1)) - 2 * self.loglikelihood

    def conf_int(self, alpha: float = 0.05) -> dict[str, tuple[float, float]]:
        z = float(stats.norm.ppf(1 - alpha / 2))
        return {k: (v - z * self.std_errors.get(k, np.nan), v + z * self.std_errors.get(k, np.nan))
                for k, v in self.params.items()}

    def to_dict(self) -> dict:
        out = {"model": self.model, "status": self.status, "converged": bool(self.converged),
               "message": self.message, "n_obs": self.n_obs,
               "params": {k: _num(v) for k, v in self.params.items()},
               "std_errors": {k: _num(v) for k, v in self.std_errors.items()},
               "loglikelihood": _num(self.loglikelihood), "aic": _num(self.aic), "bic": _num(self.bic),
               "units": dict(self.units), "summary": _jsonable(self.summary),
               "settings": _jsonable(self.settings), "optimizer": _jsonable(self.optimizer),
               "warnings": list(self.warnings), "data": _jsonable(self.data)}
        if self.validation is not None:
            out["validation"] = self.validation.to_dict()
        return out


def data_info(source: str, symbol: str | None, t_ns: np.ndarray, period_ns: int) -> dict:
    ts = pd.to_datetime(t_ns[[0, -1]], unit="ns", utc=True) if t_ns.shape[0] else None
    return {"source": source, "symbol": symbol, "frequency": _freq_label(period_ns),
            "period_s": period_ns / NS_PER_S,
            "start": ts[0].isoformat() if ts is not None else None,
            "end": ts[1].isoformat() if ts is not None else None}


def to_daily(sigma_per_period, period_ns: int):
    """Per-period sigma → daily sigma (square-root-of-time, 24/7 calendar)."""
    return np.asarray(sigma_per_period) * math.sqrt(NS_PER_DAY / period_ns)


def annualize(sigma_daily):
    return np.asarray(sigma_daily) * math.sqrt(DAYS_PER_YEAR)


# --- realised estimators -----------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class _BarTerms:
    """Per-bar ingredients of every estimator; NaN where a bar has no previous close."""
    r: np.ndarray          # ln(C_i / C_{i-1})
    o: np.ndarray          # ln(O_i / C_{i-1})
    c: np.ndarray          # ln(C_i / O_i)
    park: np.ndarray
    gk: np.ndarray
    rs: np.ndarray
    bp: np.ndarray         # |r_i||r_{i-1}|
    tq: np.ndarray         # |r_i r_{i-1} r_{i-2}|^(4/3)


def _bar_terms(b: BarSeries) -> _BarTerms:
    lo_, lh, ll, lc = np.log(b.open), np.log(b.high), np.log(b.low), np.log(b.close)
    u = lh - lo_
    d = ll - lo_
    c = lc - lo_
    hl = lh - ll
    park = hl * hl
    park *= 1.0 / (4.0 * LN2)
    gk = 0.5 * hl * hl - (2.0 * LN2 - 1.0) * c * c
    rs = u * (u - c) + d * (d - c)
    prev = np.empty_like(lc)
    prev[0] = np.nan
    prev[1:] = lc[:-1]
    prev[~b.contiguous] = np.nan
    r = lc - prev
    o = lo_ - prev
    a = np.abs(r)
    bp = np.full_like(a, np.nan)
    bp[1:] = a[1:] * a[:-1]
    a43 = a ** (4.0 / 3.0)
    tq = np.full_like(a, np.nan)
    tq[2:] = a43[2:] * a43[1:-1] * a43[:-2]
    return _BarTerms(r, o, c, park, gk, rs, bp, tq)


def _period_sums(period_idx: np.ndarray, n_periods: int, values: np.ndarray, mask=None):
    """(count, sum, sum of squares) of `values` per period over finite entries (and `mask`)."""
    ok = np.isfinite(values)
    if mask is not None:
        ok &= mask
    idx = period_idx[ok]
    v = values[ok]
    return (np.bincount(idx, minlength=n_periods).astype(np.float64),
            np.bincount(idx, v, minlength=n_periods),
            np.bincount(idx, v * v, minlength=n_periods))


def _pool(x: np.ndarray, window: int) -> np.ndarray:
    """Sum over the `window` periods ending at each period (a rolling sum via cumsum)."""
    if window == 1:
        return x
    cs = np.concatenate([[0.0], np.cumsum(x)])
    out = cs[window:] - cs[:-window]
    return np.concatenate([np.full(min(window - 1, x.shape[0]), np.nan), out])[: x.shape[0]]


def _sample_var(n, s, s2):
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (s2 - s * s / n) / (n - 1)
    v[n < 2] = np.nan
    return np.maximum(v, 0.0)


def _mean(n, s):
    with np.errstate(invalid="ignore", divide="ignore"):
        m = s / n
    m[n < 1] = np.nan
    return m


@dataclass(frozen=True, eq=False)
class RealizedResult(VolatilityResult):
    """Realised volatility per period for every estimator, and the chosen estimator's average."""
    table: pd.DataFrame | None = None       # wide: one row per period, sigma_daily per estimator
    estimator: str = "yang_zhang"

    def tidy(self) -> pd.DataFrame:
        """Long frame for a figure: period, estimator, sigma_daily, sigma_annualized, n_bars, complete."""
        t = self.table
        long = t.melt(id_vars=["period", "n_bars", "complete"], value_vars=list(ESTIMATORS),
                      var_name="estimator", value_name="sigma_daily")
        long["sigma_annualized"] = long["sigma_daily"] * math.sqrt(DAYS_PER_YEAR)
        return long[["period", "estimator", "sigma_daily", "sigma_annualized", "n_bars", "complete"]]

    def to_dict(self) -> dict:
        out = super().to_dict()
        t = self.table
        out["periods"] = [
            {"period": p.isoformat(), "n_bars": int(n), "complete": bool(c),
             **{e: _num(t[e].iat[i]) for e in ESTIMATORS}}
            for i, (p, n, c) in enumerate(zip(t["period"], t["n_bars"], t["complete"]))]
        return out


def realized_table(bars: BarSeries, freq: str = "1D", window: int = 1) -> pd.DataFrame:
    """Every estimator's daily sigma per `freq` period (pooling `window` periods), vectorised.

    Columns: period (UTC start), n_bars, n_returns, complete, and one sigma_daily column per
    estimator. Periods without data inside the span appear with n_bars 0 and NaN estimates.
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    freq_ns = parse_freq(freq)
    if freq_ns < bars.bar_ns or freq_ns % bars.bar_ns:
        raise DataError(f"freq {_freq_label(freq_ns)} must be a multiple of the bar length "
                        f"{_freq_label(bars.bar_ns)}", file=bars.source)
    if bars.n == 0:
        raise DataError("no bars", file=bars.source)
    terms = _bar_terms(bars)
    p_all = bars.t_ns // freq_ns
    p0 = int(p_all[0])
    idx = (p_all - p0).astype(np.intp)
    n_p = int(idx[-1]) + 1
    per_day = bars.bars_per_day

    n_b = np.bincount(idx, minlength=n_p).astype(np.float64)
    park = np.bincount(idx, terms.park, minlength=n_p)
    gk = np.bincount(idx, terms.gk, minlength=n_p)
    rs_all = np.bincount(idx, terms.rs, minlength=n_p)
    nr, sr, sr2 = _period_sums(idx, n_p, terms.r)
    nbp, sbp, _ = _period_sums(idx, n_p, terms.bp)
    has_prev = np.isfinite(terms.o)
    no, so, so2 = _period_sums(idx, n_p, terms.o)
    _, sc, sc2 = _period_sums(idx, n_p, terms.c, has_prev)
    rs_prev = np.bincount(idx[has_prev], terms.rs[has_prev], minlength=n_p)

    pooled = {name: _pool(x, window) for name, x in dict(
        n_b=n_b, park=park, gk=gk, rs_all=rs_all, nr=nr, sr=sr, sr2=sr2, nbp=nbp, sbp=sbp,
        no=no, so=so, so2=so2, sc=sc, sc2=sc2, rs_prev=rs_prev).items()}
    P = pooled
    var = {
        "close_to_close": _sample_var(P["nr"], P["sr"], P["sr2"]),
        "realized_variance": _mean(P["nr"], P["sr2"]),
        "bipower": (math.pi / 2.0) * _mean(P["nbp"], P["sbp"]),
        "parkinson": _mean(P["n_b"], P["park"]),
        "garman_klass": _mean(P["n_b"], P["gk"]),
        "rogers_satchell": _mean(P["n_b"], P["rs_all"]),
    }
    n = P["no"]
    with np.errstate(invalid="ignore", divide="ignore"):
        k = 0.34 / (1.34 + (n + 1.0) / (n - 1.0))
    yz = _sample_var(n, P["so"], P["so2"]) + k * _sample_var(n, P["sc"], P["sc2"]) \
        + (1.0 - k) * _mean(n, P["rs_prev"])
    yz[n < 2] = np.nan
    var["yang_zhang"] = yz

    expected = freq_ns // bars.bar_ns * window
    out = {"period": pd.to_datetime((p0 + np.arange(n_p)) * freq_ns, unit="ns", utc=True),
           "n_bars": P["n_b"].astype(np.float64), "n_returns": P["nr"],
           "complete": P["n_b"] == expected}
    for name in ESTIMATORS:
        v = var[name] * per_day
        with np.errstate(invalid="ignore"):
            out[name] = np.where(v >= 0, np.sqrt(v), np.nan)
    frame = pd.DataFrame(out)
    frame["n_bars"] = frame["n_bars"].fillna(0).astype(np.int64)
    frame["n_returns"] = frame["n_returns"].fillna(0).astype(np.int64)
    return frame


def fit_realized(data, *, estimator: str = "yang_zhang", freq: str = "1D", window: int = 1,
                 symbol: str | None = None, bar: str | None = None, gaps: str = "error",
                 **_ignored) -> RealizedResult:
    """Realised volatility of bars or trades: every estimator per period, the chosen one averaged.

    `params["sigma_daily"]` = sqrt(mean daily variance of `estimator` over the complete periods, or
    all periods when none is complete); its standard error is from the spread of the per-period
    variances (delta method, periods treated as independent).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    bars = bar_series(data, symbol=symbol, bar=bar, gaps=gaps)
    if bars.n < 2:
        raise DataError(f"too few observations: {bars.n} bar(s), a realised volatility needs at least 2",
                        file=bars.source)
    check_not_constant(bars)
    table = realized_table(bars, freq, window)
    warnings: list[str] = []
    use = table["complete"].to_numpy() & table[estimator].notna().to_numpy()
    if not use.any():
        use = table[estimator].notna().to_numpy()
        warnings.append("no complete period: the average uses partial periods")
    if not use.any():
        raise DataError(f"too few observations: no period has enough bars for {estimator}",
                        file=bars.source)
    var = table[estimator].to_numpy()[use] ** 2
    mean_var = float(var.mean())
    sigma = math.sqrt(mean_var)
    m = var.shape[0]
    se_var = float(var.std(ddof=1) / math.sqrt(m)) if m > 1 else float("nan")
    se_sigma = se_var / (2 * sigma) if sigma > 0 else float("nan")
    params = {"sigma_daily": sigma, "sigma_annualized": sigma * math.sqrt(DAYS_PER_YEAR)}
    std_errors = {"sigma_daily": se_sigma, "sigma_annualized": se_sigma * math.sqrt(DAYS_PER_YEAR)}
    freq_ns = parse_freq(freq)
    summary = {"estimator": estimator, "periods_used": int(m), "periods": int(len(table)),
               "by_estimator_sigma_daily": {
                   e: _num(math.sqrt(np.nanmean(table[e].to_numpy()[use] ** 2)))
                   if np.isfinite(table[e].to_numpy()[use]).any() else None for e in ESTIMATORS}}
    jt = jump_test(bars, freq=freq)
    summary["jumps"] = jt.summary()
    return RealizedResult(
        model="realized", params=params, std_errors=std_errors, loglikelihood=None,
        n_obs=bars.n, converged=True, status="closed_form",
        message=f"{estimator} over {m} {_freq_label(freq_ns)} period(s)",
        units={"sigma_daily": "fraction per day", "sigma_annualized": "fraction per year (365 days)"},
        summary=summary,
        settings={"estimator": estimator, "freq": freq, "window": window, "bar": bar if bars.from_trades else None,
                  "gaps": gaps},
        warnings=tuple(warnings), data=data_info(bars.source, bars.symbol, bars.t_ns, bars.bar_ns),
        validation=bars.report, table=table, estimator=estimator)


# --- jump tests --------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class JumpTestResult:
    """Jump times (Lee–Mykland) and jump periods (Barndorff-Nielsen–Shephard)."""
    times: pd.DataFrame       # flagged bars: timestamp, return, statistic, threshold, sigma_local
    periods: pd.DataFrame     # per period: period, n_returns, rv, bv, tq, z, p_value, jump
    alpha: float
    window: int
    n_tested: int

    def summary(self, max_times: int = 20) -> dict:
        t = self.times
        return {"alpha": self.alpha, "lee_mykland_window": self.window, "returns_tested": self.n_tested,
                "jump_times": int(len(t)),
                "first_jump_times": [ts.isoformat() for ts in t["timestamp"].iloc[:max_times]],
                "bns_periods_tested": int(self.periods["z"].notna().sum()),
                "bns_jump_periods": int(self.periods["jump"].sum())}


def lee_mykland_window(bars_per_day: float) -> int:
    """K = sqrt(bars per year), at least 10: Lee & Mykland's rule (K = sqrt(252·n) on 252 days;
    365 days here)."""
    return int(max(10, math.ceil(math.sqrt(DAYS_PER_YEAR * bars_per_day))))


def jump_test(data, *, alpha: float = 0.01, freq: str = "1D", window: int | None = None,
              symbol: str | None = None, bar: str | None = None, gaps: str = "error") -> JumpTestResult:
    """Flag jumps: Lee–Mykland per bar return and Barndorff-Nielsen–Shephard per period.

    Lee–Mykland: L_i = r_i / σ̂_i with σ̂_i² = mean of |r_j||r_{j-1}| over the `window` (K) returns
    strictly before i (no look-ahead); a jump when (|L_i| − C_n)/S_n > −ln(−ln(1 − alpha)), n = the
    number of returns tested (the family-wise level over the whole sample).
    BNS: z = ((RV − BV)/RV) / sqrt(((π/2)² + π − 5)·max(1, TQ/BV²)/n) per period; a jump period
    when 1 − Φ(z) < alpha.
    """
    bars = data if isinstance(data, BarSeries) else bar_series(data, symbol=symbol, bar=bar, gaps=gaps)
    terms = _bar_terms(bars)
    K = window or lee_mykland_window(bars.bars_per_day)
    # local bipower variance from products strictly before bar i: positions i-K+2 .. i-1
    bp = terms.bp
    ok = np.isfinite(bp)
    cs = np.concatenate([[0.0], np.cumsum(np.where(ok, bp, 0.0))])
    cn = np.concatenate([[0], np.cumsum(ok)])
    i = np.arange(bars.n)
    lo = np.maximum(i - K + 2, 0)
    cnt = cn[i] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        local_var = (cs[i] - cs[lo]) / cnt
    enough = (cnt >= (K - 2) / 2) & (i >= K - 1)
    sigma_local = np.sqrt(local_var)
    testable = enough & np.isfinite(terms.r) & (sigma_local > 0)
    n = int(testable.sum())
    L = np.full(bars.n, np.nan)
    L[testable] = terms.r[testable] / sigma_local[testable]
    if n >= 2:
        log_n = math.log(n)
        cst = math.sqrt(2 * log_n) / MU1 - (math.log(math.pi) + math.log(log_n)) / (2 * MU1 * math.sqrt(2 * log_n))
        s_n = 1.0 / (MU1 * math.sqrt(2 * log_n))
        beta = -math.log(-math.log(1 - alpha))
        stat = (np.abs(L) - cst) / s_n
        flag = testable & (stat > beta)
    else:
        beta, stat, flag = float("nan"), np.full(bars.n, np.nan), np.zeros(bars.n, bool)
    times = pd.DataFrame({
        "timestamp": pd.to_datetime(bars.t_ns[flag], unit="ns", utc=True),
        "return": terms.r[flag], "statistic": stat[flag], "threshold": beta,
        "sigma_local": sigma_local[flag]})

    freq_ns = parse_freq(freq)
    p = bars.t_ns // freq_ns
    p0 = int(p[0]) if bars.n else 0
    idx = (p - p0).astype(np.intp)
    n_p = int(idx[-1]) + 1 if bars.n else 0
    nr, _, rv = _period_sums(idx, n_p, terms.r)
    nbp, sbp, _ = _period_sums(idx, n_p, terms.bp)
    ntq, stq, _ = _period_sums(idx, n_p, terms.tq)
    with np.errstate(invalid="ignore", divide="ignore"):
        bv = (math.pi / 2) * sbp * nr / np.maximum(nr - 1, 1)
        tq = nr * MU43 ** -3 * nr / np.maximum(nr - 2, 1) * stq
        theta = (math.pi / 2) ** 2 + math.pi - 5
        z = ((rv - bv) / rv) / np.sqrt(theta * np.maximum(1.0, tq / (bv * bv)) / nr)
    z[(nr < 10) | ~np.isfinite(z)] = np.nan
    pval = special.ndtr(-z)
    periods = pd.DataFrame({
        "period": pd.to_datetime((p0 + np.arange(n_p)) * freq_ns, unit="ns", utc=True),
        "n_returns": nr.astype(np.int64), "rv": rv, "bv": bv, "tq": tq, "z": z, "p_value": pval,
        "jump": np.nan_to_num(pval, nan=1.0) < alpha})
    return JumpTestResult(times, periods, alpha, K, n)


# --- fills: volatility without look-ahead ------------------------------------------------------

def _fill_days(fills: pd.DataFrame) -> np.ndarray:
    if "timestamp" not in fills.columns:
        raise DataError("missing column 'timestamp'", file="fills", column="timestamp")
    t = _time_ns(fills, "fills", np.arange(1, len(fills) + 1))
    return t // NS_PER_DAY


def fill_volatility(fills: pd.DataFrame, bars, estimator: str = "yang_zhang", window_days: int = 20,
                    *, overwrite: bool = False, gaps: str = "skip",
                    bar: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Fill the `volatility` column (daily sigma, fraction) of a fills frame from `estimator`.

    For a fill arriving on UTC day d: sigma = sqrt(mean of the daily variances of days
    d−window_days .. d−1), each of which must be complete (all its bars present): only data
    strictly before the arrival day, so no look-ahead. Bars are matched by symbol when both frames
    carry one. Only NaN or absent values are filled unless `overwrite`. Returns (frame, report).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if window_days < 1:
        raise ValueError("window_days must be >= 1")
    if isinstance(bars, (str, os.PathLike)):
        from models.io import load
        bars = load(bars)            # once, not once per symbol
    frame, _, _, _ = _as_dataset(bars, "bars")
    day = _fill_days(fills)
    n = len(fills)
    new = np.full(n, np.nan)
    fill_sym = fills["symbol"].astype("string").to_numpy(object, na_value=None) \
        if "symbol" in fills.columns else None
    if fill_sym is not None and "symbol" in frame.columns:
        groups = [(s, np.flatnonzero(fill_sym == s)) for s in sorted(set(fill_sym) - {None})]
        available = set(map(str, frame["symbol"].astype("string").dropna().unique()))
        groups = [(s, rows) for s, rows in groups if s in available]
    else:
        groups = [(None, np.arange(n))]
    for sym, rows in groups:
        series = bar_series(bars, symbol=sym, bar=bar, gaps=gaps)
        table = realized_table(series, "1D", 1)
        v = table[estimator].to_numpy() ** 2
        ok = table["complete"].to_numpy() & np.isfinite(v)
        d0 = int(table["period"].iloc[0].value // NS_PER_DAY)
        cs = np.concatenate([[0.0], np.cumsum(np.where(ok, v, 0.0))])
        cn = np.concatenate([[0], np.cumsum(ok)])
        # window = days [d - window_days, d - 1] as table positions [a, b)
        b = np.clip(day[rows] - d0, 0, len(table))
        a = np.clip(day[rows] - d0 - window_days, 0, len(table))
        full = (cn[b] - cn[a] == window_days) & (day[rows] - d0 - window_days >= 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            sigma = np.sqrt((cs[b] - cs[a]) / window_days)
        new[rows[full]] = sigma[full]
    current = pd.to_numeric(fills["volatility"], errors="coerce").to_numpy(np.float64, na_value=np.nan) \
        if "volatility" in fills.columns else np.full(n, np.nan)
    need = np.ones(n, bool) if overwrite else np.isnan(current)
    take = need & np.isfinite(new)
    out = fills.copy()
    out["volatility"] = np.where(take, new, current)
    report = {"filled": int(take.sum()), "missing_after": int(np.isnan(out["volatility"].to_numpy()).sum()),
              "estimator": estimator, "window_days": window_days,
              "note": "daily sigma from complete UTC days strictly before each fill's arrival day"}
    return out, report


# --- registry entry ------------------------------------------------------------------------------

REALIZED_MODEL = VolatilityModel(
    name="realized", label="Realised volatility",
    formula="sigma_daily = sqrt(mean per-bar variance estimate × bars per day)",
    params=(Param("sigma_daily", 0.03, 0.0, 10.0, "fraction/day", "average daily volatility"),
            Param("sigma_annualized", 0.57, 0.0, 200.0, "fraction/year", "sigma_daily × sqrt(365)")),
    options={"estimator": tuple(ESTIMATORS), "freq": "1D", "window": 1, "gaps": GAP_POLICIES},
    reference="Parkinson 1980; Garman & Klass 1980; Rogers & Satchell 1991; Yang & Zhang 2000; "
              "Barndorff-Nielsen & Shephard 2004, 2006; Lee & Mykland 2008",
    fit_path="models.realized:fit_realized")
