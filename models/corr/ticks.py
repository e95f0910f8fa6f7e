"""Tick series for asynchronous correlation: one instrument's log prices at its own observation times.

A `TickSeries` is what the Hayashi–Yoshida estimator, the previous-tick grids and the lead–lag scan
read: strictly increasing times `t_ns` (ns since epoch, UTC) and log prices. It is built from trades
(the trade price) or quotes (the mid, (bid + ask) / 2) of one symbol on one venue.

Choices that change answers, and why they are made this way:
* several ticks at the same timestamp (Binance stamps trades to the millisecond; one aggressive
  order prints many trades) keep the LAST in file order: the price the market stood at after that
  instant. HY and the grids need strictly increasing times; the count collapsed is reported.
* a quote with ask < bid (a crossed book, seen briefly in captures) has no meaningful mid: it is
  dropped and counted; a non-positive price is bad input (DataError naming file, column, rows).
* a file with several symbols or venues is split into one series per (symbol, venue), so the four
  Binance captures, or one Tardis file with two symbols, give their series by name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from execal.models.core.frozen import freeze_arrays
from execal.models.core.params import NS_PER_S
from execal.models.data.io import load
from execal.models.data.schema import DataError, Dataset, DropRecord, ValidationReport

PRICES = ("auto", "trade", "mid")
MIN_TICKS = 3


def _rows(rows: np.ndarray) -> list[int]:
    return [int(r) for r in rows[:5]]


@dataclass(frozen=True, eq=False)
class TickSeries:
    """One instrument's log prices at strictly increasing times (read-only arrays)."""
    name: str
    t_ns: np.ndarray
    log_price: np.ndarray
    source: str
    symbol: str | None = None
    venue: str | None = None
    price: str = "trade"                 # "trade" | "mid"
    report: ValidationReport = field(default_factory=ValidationReport)

    def __post_init__(self):
        freeze_arrays(self, ("t_ns", "log_price"))

    @property
    def n(self) -> int:
        return int(self.t_ns.shape[0])

    @property
    def start_ns(self) -> int:
        return int(self.t_ns[0])

    @property
    def end_ns(self) -> int:
        return int(self.t_ns[-1])

    @property
    def span_s(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_S if self.n else 0.0

    def returns(self) -> np.ndarray:
        """Tick-to-tick log returns (n − 1)."""
        return np.diff(self.log_price)

    def info(self) -> dict:
        return {"name": self.name, "source": self.source, "symbol": self.symbol, "venue": self.venue,
                "price": self.price, "ticks": self.n,
                "start": pd.Timestamp(self.start_ns, unit="ns", tz="UTC").isoformat() if self.n else None,
                "end": pd.Timestamp(self.end_ns, unit="ns", tz="UTC").isoformat() if self.n else None,
                "median_spacing_s": float(np.median(np.diff(self.t_ns))) / NS_PER_S if self.n > 1 else None,
                "report": self.report.to_dict()}

    def window(self, start_ns: int, end_ns: int) -> "TickSeries":
        """The ticks inside [start_ns, end_ns], starting from the last tick at or before start_ns
        (the price in force at the start: a previous-tick start, not a later one)."""
        i0 = max(int(np.searchsorted(self.t_ns, start_ns, side="right")) - 1, 0)
        i1 = int(np.searchsorted(self.t_ns, end_ns, side="right"))
        return TickSeries(self.name, self.t_ns[i0:i1], self.log_price[i0:i1], self.source, self.symbol,
                          self.venue, self.price, self.report)


def from_arrays(t_ns, price, *, name: str = "series", log: bool = False, source: str = "data",
                collapse: bool = True) -> TickSeries:
    """A TickSeries from times (ns, or datetimes) and prices (or log prices with `log=True`).

    Unsorted times are sorted (stable); equal times keep the last price (see module docstring)."""
    t = np.asarray(pd.to_datetime(t_ns, utc=True).as_unit("ns").asi8 if not np.issubdtype(
        np.asarray(t_ns).dtype, np.integer) else t_ns, dtype=np.int64)
    p = np.asarray(price, dtype=np.float64)
    if t.shape != p.shape or t.ndim != 1:
        raise DataError(f"times and prices must be 1-D of the same length ({t.shape} vs {p.shape})", file=source)
    rows = np.arange(1, t.shape[0] + 1)
    report = ValidationReport(rows_read=int(t.shape[0]))
    if not log:
        bad = ~np.isfinite(p) | (p <= 0)
        if bad.any():
            raise DataError(f"{int(bad.sum())} missing, zero or negative prices: a log price needs a price > 0",
                            file=source, column="price", rows=_rows(rows[bad]))
        p = np.log(p)
    elif (~np.isfinite(p)).any():
        bad = ~np.isfinite(p)
        raise DataError(f"{int(bad.sum())} non-finite log prices", file=source, column="price", rows=_rows(rows[bad]))
    return _finish(t, p, rows, name=name, source=source, report=report, price="trade", collapse=collapse)


def _finish(t, logp, rows, *, name, source, report, price, symbol=None, venue=None, collapse=True) -> TickSeries:
    if t.shape[0] > 1 and (np.diff(t) < 0).any():
        order = np.argsort(t, kind="stable")
        t, logp, rows = t[order], logp[order], rows[order]
        report.warnings.append(f"{name}: ticks sorted by time")
    if collapse and t.shape[0] > 1:
        last = np.concatenate([t[1:] != t[:-1], [True]])
        n_same = int((~last).sum())
        if n_same:
            report.dropped.append(DropRecord(
                f"{name}: tick at the same timestamp as the next one (the last price of each instant is kept)",
                "timestamp", n_same, _rows(rows[~last])))
            t, logp, rows = t[last], logp[last], rows[last]
    report.rows_kept = int(t.shape[0])
    if t.shape[0] < MIN_TICKS:
        raise DataError(f"{name}: {t.shape[0]} distinct tick time(s); a correlation needs at least {MIN_TICKS}",
                        file=source)
    return TickSeries(name, t, logp, source, symbol, venue, price, report)


def _as_frame(data) -> tuple[pd.DataFrame, str, str | None, ValidationReport]:
    if isinstance(data, (str, os.PathLike)):
        data = load(data)
    if isinstance(data, Dataset):
        rep = ValidationReport(rows_read=data.report.rows_read, rows_kept=data.report.rows_kept,
                               dropped=list(data.report.dropped), warnings=list(data.report.warnings))
        return data.frame, data.source, data.kind, rep
    if isinstance(data, pd.DataFrame):
        return data, "data", None, ValidationReport(rows_read=len(data), rows_kept=len(data))
    raise TypeError(f"expected a Dataset, a DataFrame or a path, got {type(data).__name__}")


def _price_kind(frame: pd.DataFrame, kind: str | None, price: str, source: str) -> str:
    if price not in PRICES:
        raise ValueError(f"price must be one of {PRICES}, got {price!r}")
    cols = set(map(str, frame.columns))
    has_mid = {"bid_price", "ask_price"} <= cols
    has_trade = "price" in cols
    if price == "auto":
        if kind == "quotes" or (has_mid and not has_trade):
            return "mid"
        if has_trade:
            return "trade"
        raise DataError(f"a tick series needs trades (timestamp, price) or quotes (timestamp, bid_price, "
                        f"ask_price); found columns {sorted(cols)}", file=source)
    if price == "mid" and not has_mid:
        raise DataError("mid prices need bid_price and ask_price (a quotes file)", file=source,
                        column="bid_price" if "bid_price" not in cols else "ask_price")
    if price == "trade" and not has_trade:
        raise DataError("trade prices need a 'price' column (a trades file)", file=source, column="price")
    return price


def _times(frame: pd.DataFrame, source: str, rows: np.ndarray) -> np.ndarray:
    if "timestamp" not in frame.columns:
        raise DataError("missing column 'timestamp'", file=source, column="timestamp")
    col = frame["timestamp"]
    try:
        if not isinstance(col.dtype, pd.DatetimeTZDtype):
            col = pd.to_datetime(col, utc=True)
        t = col.dt.as_unit("ns").array.asi8.astype(np.int64)
    except (ValueError, TypeError, AttributeError):
        raise DataError("timestamps could not be parsed (load the file through execal.models.data.io.load)",
                        file=source, column="timestamp") from None
    bad = t == np.iinfo(np.int64).min
    if bad.any():
        raise DataError("missing timestamps", file=source, column="timestamp", rows=_rows(rows[bad]))
    return t


def _numeric(frame: pd.DataFrame, name: str, source: str, rows: np.ndarray) -> np.ndarray:
    v = pd.to_numeric(frame[name], errors="coerce").to_numpy(np.float64, na_value=np.nan)
    bad = ~np.isfinite(v) | (v <= 0)
    if bad.any():
        raise DataError(f"{int(bad.sum())} missing, zero or negative prices", file=source, column=name,
                        rows=_rows(rows[bad]))
    return v


def _label(symbol, venue, price) -> str:
    parts = [str(symbol) if symbol else "series"]
    if venue:
        parts.append(f"@{venue}")
    return "".join(parts) + (" mid" if price == "mid" else "")


def tick_series(data, *, price: str = "auto", symbol: str | None = None, venue: str | None = None,
                name: str | None = None) -> list[TickSeries]:
    """Every (symbol, venue) series of a trades or quotes file (a Dataset, a frame or a path), or only
    those matching `symbol` / `venue`. `price`: "trade", "mid" or "auto" (mid for quotes)."""
    frame, source, kind, report = _as_frame(data)
    price = _price_kind(frame, kind, price, source)
    rows = np.arange(1, len(frame) + 1)
    sym = frame["symbol"].astype("string").fillna("") if "symbol" in frame.columns else pd.Series("", index=frame.index)
    ven = frame["venue"].astype("string").fillna("") if "venue" in frame.columns else pd.Series("", index=frame.index)
    keep = np.ones(len(frame), bool)
    if symbol is not None:
        keep &= (sym == symbol).to_numpy(bool)
    if venue is not None:
        keep &= (ven == venue).to_numpy(bool)
    if not keep.any():
        present = sorted(set(zip(sym.astype(str), ven.astype(str))))[:10]
        raise DataError(f"no rows for symbol={symbol!r} venue={venue!r} (present: "
                        f"{', '.join(f'{s}@{v}' if v else s for s, v in present)})", file=source, column="symbol")
    groups = pd.DataFrame({"s": sym.to_numpy(object)[keep], "v": ven.to_numpy(object)[keep]})
    pairs = list(dict.fromkeys(zip(groups["s"], groups["v"])))
    t_all = _times(frame, source, rows)
    if price == "mid":
        bid = _numeric(frame, "bid_price", source, rows)
        ask = _numeric(frame, "ask_price", source, rows)
        value = 0.5 * (bid + ask)
        crossed = ask < bid
    else:
        value = _numeric(frame, "price", source, rows)
        crossed = np.zeros(len(frame), bool)
    out = []
    for s, v in pairs:
        mine = keep & (sym == s).to_numpy(bool) & (ven == v).to_numpy(bool)
        rep = ValidationReport(rows_read=int(mine.sum()), warnings=list(report.warnings),
                               dropped=list(report.dropped))
        label = name if (name and len(pairs) == 1) else _label(s or None, v or None, price)
        if (mine & crossed).any():
            rep.dropped.append(DropRecord(f"{label}: crossed quote (ask < bid), no mid", "ask_price",
                                          int((mine & crossed).sum()), _rows(rows[mine & crossed])))
            mine &= ~crossed
        out.append(_finish(t_all[mine], np.log(value[mine]), rows[mine], name=label, source=source,
                           report=rep, price=price, symbol=s or None, venue=v or None))
    return out


def unique_names(series: list[TickSeries]) -> list[TickSeries]:
    """The same list with names made unique (a suffix #2, #3 ... on repeats)."""
    seen: dict[str, int] = {}
    out = []
    for s in series:
        k = seen.get(s.name, 0) + 1
        seen[s.name] = k
        out.append(s if k == 1 else TickSeries(f"{s.name} #{k}", s.t_ns, s.log_price, s.source, s.symbol,
                                                 s.venue, s.price, s.report))
    return out


def common_window(series: list[TickSeries]) -> tuple[int, int]:
    """[latest start, earliest end] of the series: where all of them are observed."""
    start = max(s.start_ns for s in series)
    end = min(s.end_ns for s in series)
    if end <= start:
        names = ", ".join(f"{s.name} [{pd.Timestamp(s.start_ns, tz='UTC')} – {pd.Timestamp(s.end_ns, tz='UTC')}]"
                          for s in series)
        raise DataError(f"the series do not overlap in time: {names}", file=series[0].source, column="timestamp")
    return start, end


# --- synchronisation -------------------------------------------------------------------------------

def previous_tick(s: TickSeries, grid_ns: np.ndarray) -> np.ndarray:
    """Log price in force at each grid time: the last tick at or before it (NaN before the first)."""
    i = np.searchsorted(s.t_ns, grid_ns, side="right") - 1
    out = np.asarray(s.log_price)[np.maximum(i, 0)].copy()
    out[i < 0] = np.nan
    return out


def calendar_grid(start_ns: int, end_ns: int, interval_ns: int) -> np.ndarray:
    """start, start + Δ, ... ≤ end."""
    n = (end_ns - start_ns) // interval_ns
    return start_ns + np.arange(n + 1, dtype=np.int64) * interval_ns


def refresh_times(series: list[TickSeries], start_ns: int | None = None, end_ns: int | None = None) -> np.ndarray:
    """Refresh-time sampling (Barndorff-Nielsen, Hansen, Lunde & Shephard 2011): the first time at
    which every series has ticked at least once since the previous refresh time.

    τ₁ = the latest first tick; τ_{k+1} = max over series of the first tick strictly after τ_k.
    A loop over refresh times (each step one searchsorted per series)."""
    start = max(s.start_ns for s in series) if start_ns is None else start_ns
    end = min(s.end_ns for s in series) if end_ns is None else end_ns
    times = [np.asarray(s.t_ns) for s in series]
    tau = start
    out = [tau]
    while True:
        nxt = -1
        for t in times:
            i = np.searchsorted(t, tau, side="right")
            if i >= t.shape[0]:
                return np.asarray(out, dtype=np.int64)
            nxt = max(nxt, int(t[i]))
        if nxt > end:
            return np.asarray(out, dtype=np.int64)
        out.append(nxt)
        tau = nxt


def as_series(data, *, price: str = "auto") -> list[TickSeries]:
    """TickSeries from a TickSeries, a trades/quotes Dataset, frame or path (one series per symbol and
    venue), or a list of those; names made unique."""
    if isinstance(data, TickSeries):
        return [data]
    if isinstance(data, (list, tuple)):
        out: list[TickSeries] = []
        for d in data:
            out += as_series(d, price=price)
        return unique_names(out)
    return tick_series(data, price=price)


def need_two(series: list[TickSeries]) -> list[TickSeries]:
    if len(series) < 2:
        names = ", ".join(s.name for s in series)
        raise DataError(f"a correlation needs at least two series; got {len(series)} ({names}): give several "
                        f"files, or one file with several symbols or venues",
                        file=series[0].source if series else None)
    return series
