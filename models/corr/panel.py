"""Aligned returns of several assets: the input of DCC-GARCH, Ledoit–Wolf and regime correlations.

A `ReturnPanel` is a (T, k) matrix of log returns on ONE grid (timestamps), one column per asset,
built from bars or trades per asset (through `execal.models.data.bars.returns_from`, the same
plumbing as the volatility area) or from given return columns. Assets are joined on their period
labels (inner join): a period missing for any asset is dropped and counted, never filled, since a
filled zero return would bias every covariance toward zero.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from execal.models.core.frozen import freeze_arrays
from execal.models.core.params import NS_PER_DAY
from execal.models.data.bars import Returns, _freq_label, returns_from
from execal.models.data.io import load
from execal.models.data.schema import DataError, Dataset, DropRecord, ValidationReport


@dataclass(frozen=True, eq=False)
class ReturnPanel:
    """(T, k) log returns (fractions) on a common grid; `t_ns[i]` labels period i (its open time)."""
    values: np.ndarray
    t_ns: np.ndarray
    names: tuple[str, ...]
    period_ns: int
    sources: tuple[str, ...] = ()
    report: ValidationReport = field(default_factory=ValidationReport)

    def __post_init__(self):
        freeze_arrays(self, ("values", "t_ns"))

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    @property
    def k(self) -> int:
        return int(self.values.shape[1])

    @property
    def periods_per_day(self) -> float:
        return NS_PER_DAY / self.period_ns

    @property
    def timestamps(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.to_datetime(self.t_ns, unit="ns", utc=True))

    @property
    def freq(self) -> str:
        return _freq_label(self.period_ns)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(np.asarray(self.values), index=self.timestamps, columns=list(self.names))

    def column(self, name: str) -> np.ndarray:
        return np.asarray(self.values)[:, self.names.index(name)]

    def subset(self, mask: np.ndarray) -> "ReturnPanel":
        return ReturnPanel(np.asarray(self.values)[mask], np.asarray(self.t_ns)[mask], self.names, self.period_ns,
                           self.sources, self.report)

    def require(self, n_min: int, what: str) -> None:
        if self.n < n_min:
            raise DataError(f"too few aligned returns for {what}: {self.n} at {self.freq} across {self.k} assets, "
                            f"need at least {n_min} (longer files, a shorter --freq, or fewer assets)",
                            file=", ".join(self.sources) or None)
        flat = [nm for nm, c in zip(self.names, np.asarray(self.values).T) if not np.any(c != c[0])]
        if flat:
            raise DataError(f"constant returns for {', '.join(flat)}: prices do not move, no correlation "
                            f"can be estimated", file=", ".join(self.sources) or None)

    def info(self) -> dict:
        return {"names": list(self.names), "returns": self.n, "freq": self.freq, "sources": list(self.sources),
                "start": self.timestamps[0].isoformat() if self.n else None,
                "end": self.timestamps[-1].isoformat() if self.n else None, "report": self.report.to_dict()}


def _symbols(data) -> tuple[Dataset | pd.DataFrame, list[str | None]]:
    if isinstance(data, (str, os.PathLike)):
        data = load(data)
    frame = data.frame if isinstance(data, Dataset) else data
    if isinstance(frame, pd.DataFrame) and "symbol" in frame.columns:
        syms = sorted(map(str, frame["symbol"].astype("string").dropna().unique()))
        return data, (syms if syms else [None])
    return data, [None]


def _name(ret: Returns, fallback: str) -> str:
    return ret.symbol or fallback


def from_frame(frame: pd.DataFrame, *, period: str | None = None, source: str = "returns") -> ReturnPanel:
    """A panel from a frame of returns (one column per asset, a DatetimeIndex or none); rows with a
    NaN are dropped and counted."""
    values = frame.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    ok = np.isfinite(values).all(axis=1)
    report = ValidationReport(rows_read=len(frame), rows_kept=int(ok.sum()))
    if (~ok).any():
        report.dropped.append(DropRecord("row with a missing or non-finite return", None, int((~ok).sum()),
                                         [int(i) + 1 for i in np.flatnonzero(~ok)[:5]]))
    if isinstance(frame.index, pd.DatetimeIndex):
        idx = frame.index.tz_localize("UTC") if frame.index.tz is None else frame.index.tz_convert("UTC")
        t = idx.as_unit("ns").asi8
        period_ns = int(pd.Timedelta(period).value) if period else (int(np.median(np.diff(t))) if len(t) > 1
                                                                     else NS_PER_DAY)
    else:
        period_ns = int(pd.Timedelta(period).value) if period else NS_PER_DAY
        t = np.arange(len(frame), dtype=np.int64) * period_ns
    return ReturnPanel(values[ok], t[ok], tuple(map(str, frame.columns)), period_ns, (source,), report)


def returns_panel(data: Sequence, *, freq: str | None = None, names: Sequence[str] | None = None,
                  bar: str | None = None, gaps: str = "skip") -> ReturnPanel:
    """Aligned log returns of several assets: `data` is a list of bars/trades files, Datasets, frames
    or `Returns`; a file with several symbols gives one asset per symbol. Joined on period labels."""
    if isinstance(data, ReturnPanel):
        return data
    if isinstance(data, np.ndarray) and data.ndim == 2:
        cols = list(names) if names is not None else [f"asset{i + 1}" for i in range(data.shape[1])]
        return from_frame(pd.DataFrame(data, columns=cols), period=freq)
    if isinstance(data, pd.DataFrame) and not ({"open", "close"} <= set(data.columns) or "price" in data.columns):
        return from_frame(data, period=freq)
    items = list(data) if isinstance(data, (list, tuple)) else [data]
    series: list[Returns] = []
    labels: list[str] = []
    for k, item in enumerate(items):
        if isinstance(item, Returns):
            series.append(item)
            labels.append(_name(item, f"asset{k + 1}"))
            continue
        ds, syms = _symbols(item)
        for sym in syms:
            ret = returns_from(ds, freq=freq, symbol=sym, bar=bar, gaps=gaps)
            series.append(ret)
            labels.append(_name(ret, getattr(ds, "source", f"asset{k + 1}")))
    if len(series) < 2:
        raise DataError(f"a correlation needs at least two assets; got {len(series)}: give several files or a file "
                        f"with several symbols", file=getattr(series[0], "source", None) if series else None)
    periods = {r.period_ns for r in series}
    if len(periods) > 1:
        raise DataError("the assets' returns have different periods (" + ", ".join(
            f"{lab}: {_freq_label(r.period_ns)}" for lab, r in zip(labels, series)) + "): give --freq")
    if names is not None:
        if len(names) != len(series):
            raise ValueError(f"{len(names)} names for {len(series)} assets")
        labels = list(map(str, names))
    seen: dict[str, int] = {}
    unique = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        unique.append(lab if seen[lab] == 1 else f"{lab} #{seen[lab]}")
    common = series[0].t_ns
    for r in series[1:]:
        common = np.intersect1d(common, r.t_ns, assume_unique=True)
    report = ValidationReport(rows_read=max(r.n for r in series), rows_kept=int(common.shape[0]))
    for lab, r in zip(unique, series):
        for d in r.report.dropped:
            report.dropped.append(DropRecord(f"{lab}: {d.reason}", d.column, d.count, d.first_rows))
        report.warnings.extend(f"{lab}: {w}" for w in r.report.warnings)
        lost = r.n - common.shape[0]
        if lost:
            report.dropped.append(DropRecord(f"{lab}: period without a return of every other asset (inner join)",
                                             "timestamp", int(lost)))
    if common.shape[0] == 0:
        raise DataError("the assets share no return period: check that the files cover the same dates",
                        column="timestamp")
    cols = [np.asarray(r.values)[np.searchsorted(r.t_ns, common)] for r in series]
    return ReturnPanel(np.column_stack(cols), common, tuple(unique), series[0].period_ns,
                       tuple(dict.fromkeys(r.source for r in series)), report)
