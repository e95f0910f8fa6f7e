"""Bars of a dataset directory aggregated out of core, for the volatility models.

A year of trades is 10⁸–10¹⁰ rows; the volatility models need its bars (a year of one-minute bars
is 525,600 rows). `dataset_bar_series(view, bar=...)` streams the view's record batches (only the
timestamp, the price and, where it is a column, the symbol), reduces each batch to per-bar partials
(first / last trade by time, high, low, count), merges the partials in dataset order, and returns
the same `BarSeries` that `bars.bar_series` builds from the rows in memory — array for array,
including the tie rule (trades at the same timestamp keep their dataset order: the first opens the
bar, the last closes it) and the flat bars carried over intervals without a trade. Memory is one
record batch plus the bars. Each `ScanTask` is a module-level function of picklable arguments, so
the per-partition work runs in this process or on a Dask cluster (`execal.models.data.compute`),
and the partials come back in task order: the same bars wherever they were computed.

A bars dataset (1-minute bars ingested from files) is read column by column into the same
validation as a file (`bar_series`: consistency of high/low, strictly increasing time, gaps,
aggregation to a coarser `bar`); it is capped at `MAX_BARS` rows.

Bad values refuse the whole series with the file (the partition file), the column and the 1-based
rows within that file, as a file's reader does: a volatility estimate on silently dropped prices
is a wrong answer that looks right.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from execal.models.data.bars import (GAP_POLICIES, TRADE_BAR, BarSeries, _freq_label, bar_series,
                                     parse_freq)
from execal.models.data.compute import executor
from execal.models.data.dataset import DatasetView, ScanTask, fmt_bytes, read_task_parts
from execal.models.data.schema import DataError, Dataset, ValidationReport

MAX_BARS = 20_000_000            # bars held in memory (a year of 1 s bars is 31.5M: choose a longer bar)
BATCH_ROWS = 1_000_000
_KEYS = ("slot", "first_t", "first_p", "last_t", "last_p", "high", "low", "count")


def _empty() -> dict:
    return {k: np.empty(0, np.int64 if k in ("slot", "first_t", "last_t", "count") else np.float64)
            for k in _KEYS}


def _batch_partial(t: np.ndarray, p: np.ndarray, bar_ns: int) -> dict:
    """Per-bar partials of one batch: trades in time order (stable, so equal timestamps keep
    their order), then first / last / max / min / count per bar slot."""
    n = t.shape[0]
    if n == 0:
        return _empty()
    if n > 1 and (np.diff(t) < 0).any():
        order = np.argsort(t, kind="stable")
        t, p = t[order], p[order]
    slot = t // bar_ns
    starts = np.flatnonzero(np.concatenate([[True], slot[1:] != slot[:-1]]))
    ends = np.concatenate([starts[1:], [n]]) - 1
    return {"slot": slot[starts], "first_t": t[starts], "first_p": p[starts], "last_t": t[ends],
            "last_p": p[ends], "high": np.maximum.reduceat(p, starts),
            "low": np.minimum.reduceat(p, starts), "count": np.diff(np.concatenate([starts, [n]]))}


def merge_partials(parts: list[dict]) -> dict:
    """Partials given in dataset order merged into one per slot (sorted by slot). The first
    trade of a slot is the earliest first_t, ties to the earlier partial; the last is the latest
    last_t, ties to the later partial: what a stable sort of all the rows would give."""
    parts = [p for p in parts if p["slot"].shape[0]]
    if not parts:
        return _empty()
    if len(parts) == 1:
        return parts[0]
    cat = {k: np.concatenate([p[k] for p in parts]) for k in _KEYS}
    seq = np.arange(cat["slot"].shape[0])
    order = np.lexsort((seq, cat["first_t"], cat["slot"]))
    slot = cat["slot"][order]
    starts = np.flatnonzero(np.concatenate([[True], slot[1:] != slot[:-1]]))
    first = order[starts]
    order_last = np.lexsort((seq, cat["last_t"], cat["slot"]))
    slot_last = cat["slot"][order_last]
    last = order_last[np.flatnonzero(np.concatenate([slot_last[1:] != slot_last[:-1], [True]]))]
    return {"slot": slot[starts], "first_t": cat["first_t"][first], "first_p": cat["first_p"][first],
            "last_t": cat["last_t"][last], "last_p": cat["last_p"][last],
            "high": np.maximum.reduceat(cat["high"][order], starts),
            "low": np.minimum.reduceat(cat["low"][order], starts),
            "count": np.add.reduceat(cat["count"][order], starts)}


def _time_ns(col: pa.Array, path: str, where) -> np.ndarray:
    if col.null_count:
        raise DataError(f"{col.null_count} missing timestamps", file=path, column="timestamp",
                        rows=_file_rows(col.is_null().to_numpy(zero_copy_only=False), where))
    if pa.types.is_timestamp(col.type):
        per = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[col.type.unit]
        return col.cast(pa.int64()).to_numpy() * per
    raise DataError(f"timestamps are {col.type}, not times", file=path, column="timestamp")


def _prices(col: pa.Array, name: str, path: str, where) -> np.ndarray:
    v = col.cast(pa.float64()).to_numpy(zero_copy_only=False) if col.null_count == 0 else \
        col.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(v)
    if bad.any():
        raise DataError(f"{int(bad.sum())} missing or non-numeric prices", file=path, column=name,
                        rows=_file_rows(bad, where))
    bad = v <= 0
    if bad.any():
        raise DataError(f"{int(bad.sum())} zero or negative prices: a log return needs prices > 0",
                        file=path, column=name, rows=_file_rows(bad, where))
    return v


def _symbol_rows(batch: pa.RecordBatch, values: dict, symbol: str | None, seen: set) -> pa.RecordBatch:
    """The rows of `symbol` (every row when None), noting the symbols present."""
    if "symbol" in values:
        seen.add(str(values["symbol"]))
        return batch if symbol is None or values["symbol"] == symbol else batch.slice(0, 0)
    if "symbol" not in batch.schema.names:
        return batch
    col = batch.column("symbol")
    seen.update(str(s) for s in pc.unique(col).to_pylist() if s is not None)
    if symbol is None:
        return batch
    return batch.filter(pc.fill_null(pc.equal(col, symbol), False))


def _columns(task: ScanTask, wanted: list[str]) -> list[str]:
    known = {n for n, _ in task.schema} | {k for part in task.partitions for k, _ in part}
    return wanted + (["symbol"] if "symbol" in known else [])


def _batches(task: ScanTask, wanted: list[str], symbol: str | None, seen: set, batch_rows: int):
    """(file path, where, batch of `symbol`'s rows) of a task, noting the symbols seen. `where`
    places the batch's rows in the file for messages: the file's rows before the batch (an int), or
    the 0-based file row of each row when a symbol column (not a partition) was filtered. Rows are
    counted among those read (after the time filter)."""
    per_file: dict[str, int] = {}
    for values, batch in read_task_parts(task, _columns(task, wanted), batch_rows=batch_rows):
        path = os.path.join(task.root, values["_file"])
        offset = per_file.get(path, 0)
        per_file[path] = offset + batch.num_rows
        where: int | np.ndarray = offset
        if "symbol" not in values and "symbol" in batch.schema.names and symbol is not None:
            _symbol_rows(batch, values, None, seen)
            keep = pc.fill_null(pc.equal(batch.column("symbol"), symbol), False).to_numpy(zero_copy_only=False)
            where = offset + np.flatnonzero(keep)
            batch = batch.filter(pa.array(keep))
        else:
            batch = _symbol_rows(batch, values, symbol, seen)
        if batch.num_rows:
            yield path, where, batch


def _file_rows(bad: np.ndarray, where: int | np.ndarray) -> list[int]:
    """1-based file rows of the first bad positions of a batch."""
    idx = np.flatnonzero(bad)[:5]
    return [int(r) + 1 for r in (idx + where if isinstance(where, int) else where[idx])]


def trade_partials(task: ScanTask, *, bar_ns: int, symbol: str | None = None,
                   batch_rows: int = BATCH_ROWS) -> dict:
    """One task's per-bar partials of trade prices, with the rows read and the symbols seen.
    Module level and of picklable arguments: runs in this process or on a Dask worker."""
    parts, seen, rows = [], set(), 0
    for path, where, batch in _batches(task, ["timestamp", "price"], symbol, seen, batch_rows):
        t = _time_ns(batch.column("timestamp"), path, where)
        p = _prices(batch.column("price"), "price", path, where)
        rows += batch.num_rows
        parts.append(_batch_partial(t, p, bar_ns))
        if len(parts) >= 8:
            parts = [merge_partials(parts)]
    return {"partial": merge_partials(parts), "rows": rows, "symbols": sorted(seen)}


def bar_rows(task: ScanTask, *, symbol: str | None = None, batch_rows: int = BATCH_ROWS) -> dict:
    """One task's bar rows (timestamp ns, open, high, low, close) of `symbol`."""
    cols = {k: [] for k in ("t", "open", "high", "low", "close")}
    seen: set = set()
    for path, where, batch in _batches(task, ["timestamp", "open", "high", "low", "close"], symbol, seen,
                                        batch_rows):
        cols["t"].append(_time_ns(batch.column("timestamp"), path, where))
        for name in ("open", "high", "low", "close"):
            cols[name].append(_prices(batch.column(name), name, path, where))
    return {k: (np.concatenate(v) if v else np.empty(0)) for k, v in cols.items()} | {"symbols": sorted(seen)}


def _one_symbol(symbols: list[str], symbol: str | None, source: str) -> str | None:
    present = sorted(set(symbols))
    if symbol is None and len(present) > 1:
        raise DataError(f"the data holds several symbols ({', '.join(present[:10])}); choose one "
                        f"(symbol=... / --symbol)", file=source, column="symbol")
    return symbol if symbol is not None else (present[0] if present else None)


def dataset_bar_series(view: DatasetView, *, symbol: str | None = None, bar: str | None = None,
                       gaps: str = "error", scheduler: str | None = None, threads: int = 1,
                       progress: Callable[[int, int], None] | None = None,
                       task_rows: int | None = None, batch_rows: int = BATCH_ROWS) -> BarSeries:
    """The bars of one instrument of a dataset view (trades or bars), aggregated out of core.

    Trades become `bar`-long bars (1 minute when None) exactly as `bar_series` builds them from
    the same rows in memory; bars are validated as a file's are and aggregated to `bar` when given.
    `scheduler` / `threads`: where the per-partition work runs (`compute.executor`);
    `task_rows` / `batch_rows`: rows per task and per record batch (memory, not results)."""
    if gaps not in GAP_POLICIES:
        raise ValueError(f"gaps must be one of {GAP_POLICIES}, got {gaps!r}")
    source = view.source
    if view.kind not in ("trades", "bars"):
        raise DataError(f"volatility needs a dataset of trades or bars; this one holds {view.kind}",
                        file=source)
    if symbol is not None and view.filters.symbols is not None and symbol not in view.filters.symbols:
        raise DataError(f"symbol {symbol!r} is not among the view's symbols ({', '.join(view.filters.symbols)})",
                        file=source, column="symbol")
    if symbol is not None and "symbol" in view.dataset.manifest["partitioning"]:
        view = DatasetView(view.dataset, dataclasses.replace(view.filters, symbols=(symbol,)))
    if not view.partitions:
        raise DataError(f"no rows in the dataset after the filters {view.filters.to_dict()}"
                        + (f" and symbol {symbol!r}" if symbol else ""), file=source)
    tasks = view.tasks(task_rows) if task_rows else view.tasks()
    run = executor(scheduler, threads=threads)
    if view.kind == "bars":
        return _bars_dataset(view, tasks, run, symbol, bar, gaps, progress, batch_rows)
    bar_ns = parse_freq(bar or TRADE_BAR, "bar")
    outs = run.map(trade_partials, tasks, progress=progress, bar_ns=bar_ns, symbol=symbol,
                   batch_rows=batch_rows)
    symbol = _one_symbol([s for o in outs for s in o["symbols"]], symbol, source)
    agg = merge_partials([o["partial"] for o in outs])
    rows = sum(o["rows"] for o in outs)
    if rows == 0:
        raise DataError("no trades" + (f" for symbol {symbol!r}" if symbol else ""), file=source)
    first_slot, last_slot = int(agg["slot"][0]), int(agg["slot"][-1])
    n = last_slot - first_slot + 1
    if n > MAX_BARS:
        raise DataError(f"{n:,} {_freq_label(bar_ns)} bars from {_iso(first_slot * bar_ns)} to "
                        f"{_iso(last_slot * bar_ns)} is more than {MAX_BARS:,}: choose a longer bar "
                        f"(--bar) or a shorter span (--start / --end)", file=source)
    report = ValidationReport(rows_read=rows, rows_kept=rows)
    occupied = agg["slot"] - first_slot
    last = np.full(n, -1)
    last[occupied] = np.arange(occupied.shape[0])
    last = np.maximum.accumulate(last)
    prev_close = agg["last_p"][last]
    open_, high, low, close = (prev_close.copy() for _ in range(4))
    open_[occupied], high[occupied], low[occupied], close[occupied] = (
        agg["first_p"], agg["high"], agg["low"], agg["last_p"])
    empty = n - occupied.shape[0]
    if empty:
        report.warnings.append(f"{empty} of {n} {_freq_label(bar_ns)} intervals had no trade: "
                               f"flat bars at the last price")
    report.warnings.append(f"{rows:,} trades aggregated out of core into {n:,} {_freq_label(bar_ns)} bars "
                           f"({len(view.files):,} files, {fmt_bytes(view.bytes)}; {run.name})")
    t_bars = (first_slot + np.arange(n)) * bar_ns
    contiguous = np.concatenate([[False], np.ones(n - 1, bool)])
    return BarSeries(t_bars, open_, high, low, close, bar_ns, contiguous, source, symbol, report, None, True)


def _bars_dataset(view, tasks, run, symbol, bar, gaps, progress, batch_rows) -> BarSeries:
    if view.rows_upper > MAX_BARS:
        raise DataError(f"{view.rows_upper:,} bars is more than {MAX_BARS:,} to validate in memory: filter "
                        f"the dataset (--start / --end / --symbol)", file=view.source)
    outs = run.map(bar_rows, tasks, progress=progress, symbol=symbol, batch_rows=batch_rows)
    symbol = _one_symbol([s for o in outs for s in o["symbols"]], symbol, view.source)
    frame = pd.DataFrame({"timestamp": pd.to_datetime(np.concatenate([o["t"] for o in outs]).astype(np.int64),
                                                      unit="ns", utc=True),
                          **{k: np.concatenate([o[k] for o in outs]) for k in ("open", "high", "low", "close")}})
    if frame.empty:
        raise DataError("no bars" + (f" for symbol {symbol!r}" if symbol else ""), file=view.source)
    report = ValidationReport(rows_read=len(frame), rows_kept=len(frame))
    series = bar_series(Dataset("bars", frame, view.source, view.dataset.sha256, report), bar=bar,
                        gaps=gaps, kind="bars")
    return BarSeries(series.t_ns, series.open, series.high, series.low, series.close, series.bar_ns,
                     series.contiguous, series.source, symbol, series.report, series.rows, False)


def _iso(ns: int) -> str:
    return pd.Timestamp(ns, unit="ns", tz="UTC").isoformat()
