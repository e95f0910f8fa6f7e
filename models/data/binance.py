"""Replay a raw Binance websocket capture into trades, quotes and a rebuilt order book.

A capture is what a recorder writes while subscribed to Binance streams (the format of
hftbacktest's examples, see SOURCES.md): gzip text, one message per line,
`<local receive ns> <websocket JSON>`. The streams are `<sym>@depth@<speed>` diffs,
`<sym>@bookTicker` and `<sym>@trade`; one line without a "stream" key is the REST depth
snapshot. This room turns such a file into canonical frames (see `models/schema.py`):

* `trades` from `@trade` (side = aggressor: `m` true means the buyer was the maker, so -1);
* `quotes` from `@bookTicker`;
* `events` (only with `event_levels=L`): the book after EVERY applied diff, first L levels a
  side (`execal.models.data.book.BookEvents`), for order-flow measures that need each event;
* `book`, the top `levels` levels a side sampled every `interval_s` of exchange time, rebuilt
  by Binance's documented procedure: buffer the diffs that arrive before the snapshot, drop the
  ones it already contains, check that the first applied diff straddles `lastUpdateId`, then
  check that every next diff chains (futures: `pu` == previous `u`; spot: `U` == previous
  `u` + 1). Offline we cannot fetch a new snapshot after a gap, so a gap is counted, warned
  about, and the replay goes on.

COIN-M quantities are contracts of `contract_size_usd` USD; they are converted to base units
(coins = contracts * contract_size_usd / price) everywhere, and `stats["size_unit"]` says so.

The replay is one pass in file order with orjson (~0.8 s for the 94k-message USD-M file, of
which ~0.25 s is decompressing and parsing). What keeps it there:
* the cyclic garbage collector is paused during the pass: parsing allocates ~500k small lists
  whose repeated scans by the collector cost more than the parsing (0.75 s vs 0.25 s);
* each side of the book is a dict price -> quantity plus a sorted list of its prices (bisect),
  so the best level after every diff and the top `levels` at each sample are slices, not sorts;
* prices are parsed once per distinct string, quantities only when sampled;
* tickers and trades are cut to a tuple of their fields while each dict is hot in the cache,
  and columns become numbers in bulk (Arrow's string -> float cast) at the end.
"""
from __future__ import annotations

import gc
import os
import re
import zlib
from bisect import bisect_left, insort
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from execal.models.data.book import BookEvents, levels_matrix
from execal.models.data.schema import DataError

MARKETS = ("usdm", "spot", "coinm")
VENUES = {"usdm": "binance-usdm", "spot": "binance-spot", "coinm": "binance-coinm"}
_MARKET_ALIASES = {
    "usdm": "usdm", "um": "usdm", "futures": "usdm", "binance-usdm": "usdm",
    "spot": "spot", "binance-spot": "spot",
    "coinm": "coinm", "cm": "coinm", "binance-coinm": "coinm", "delivery": "coinm",
}
_MAX_WARNINGS_PER_KIND = 5      # a broken capture can have thousands of gaps: say it, don't flood

_DEPTH, _TICKER, _TRADE, _OTHER = 0, 1, 2, 3
TICKER_FIELDS = ("u", "b", "B", "a", "A", "s")
TRADE_FIELDS = ("T", "p", "q", "m", "t", "s")
# how Binance spells a zero quantity (fixed decimals per symbol): "0", "0.0", ..., "0.00000000"
_ZERO_QTY = frozenset({"0", "0."} | {"0." + "0" * k for k in range(1, 19)})


def _qty(value) -> float:
    if value is None:
        return np.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"depth quantity {value!r} is not a number") from None


@dataclass(frozen=True)
class Capture:
    """What one capture file holds, as canonical frames plus the replay's bookkeeping.

    `top` and `quote_update_ids` exist to check the rebuilt book against the exchange's own
    best bid/offer stream: `top` is the rebuilt best bid/ask after every applied diff (with its
    last update id `update_id`), `quote_update_ids[i]` is the update id of `quotes` row i.
    """
    trades: pd.DataFrame
    quotes: pd.DataFrame
    book: pd.DataFrame
    stats: dict
    warnings: list[str]
    top: pd.DataFrame = field(default_factory=pd.DataFrame)
    quote_update_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    events: BookEvents | None = None      # read_capture(..., event_levels=L): one row per `top` row


# --- input -------------------------------------------------------------------------------------


def _gunzip(raw: bytes, label: str) -> tuple[bytes, bool]:
    """Decompress every gzip member; a stream cut short (recorder killed) yields what it has
    and True, so the replay can keep the complete lines."""
    parts = []
    while raw:
        unzip = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            parts.append(unzip.decompress(raw))
        except zlib.error as exc:
            raise DataError(f"the gzip stream is corrupt ({exc})", file=label) from None
        if not unzip.eof:
            return b"".join(parts), True
        raw = unzip.unused_data.lstrip(b"\0")
    return b"".join(parts), False


def _read_source(source, name: str | None) -> tuple[bytes, str, bool]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw = bytes(source)
        label = name or "<bytes>"
    else:
        path = Path(source)
        label = name or path.name
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read the file: {exc.strerror or exc}", file=label) from None
    cut = False
    if raw[:2] == b"\x1f\x8b":
        raw, cut = _gunzip(raw, label)
    return raw, label, cut


def _normalise_market(market: str) -> str:
    key = str(market).strip().lower()
    if key not in _MARKET_ALIASES:
        raise ValueError(f"unknown Binance market {market!r}; use one of {', '.join(MARKETS)}")
    return _MARKET_ALIASES[key]


def market_from_name(name: str) -> str | None:
    """usdm / spot / coinm from a capture's file name (hftbacktest's naming), else None."""
    stem = Path(name).name.lower()
    if re.search(r"(^|[^a-z])(usdm|um|fapi)([^a-z]|$)", stem):
        return "usdm"
    if re.search(r"(^|[^a-z])(cm|coinm|dapi)([^a-z]|$)", stem):
        return "coinm"
    if re.search(r"(^|[^a-z])spot([^a-z]|$)", stem):
        return "spot"
    return None


def _market_from_diff(diff: dict) -> str:
    # futures diffs carry the previous final update id `pu`; COIN-M ones also the pair `ps`
    if "pu" not in diff:
        return "spot"
    return "coinm" if "ps" in diff else "usdm"


@contextmanager
def _gc_paused():
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


# --- the replay --------------------------------------------------------------------------------


class _Replay:
    """One pass over the lines; holds the book (dicts keyed by float price + sorted key lists)."""

    def __init__(self, label: str, market: str | None, market_source: str, interval_s: float,
                 levels: int, event_levels: int = 0):
        self.label = label
        self.event_levels = event_levels
        # per applied diff, flat: the first event_levels prices, their quantities as sent, and how
        # many levels each side had (flat lists: no small list per event for the collector to scan)
        self.ev_bid_px: list[float] = []
        self.ev_bid_q: list[str] = []
        self.ev_bid_n: list[int] = []
        self.ev_ask_px: list[float] = []
        self.ev_ask_q: list[str] = []
        self.ev_ask_n: list[int] = []
        self.market = market
        self.market_source = market_source
        self.step_ns = int(round(interval_s * 1e9))
        self.levels = levels
        self.warnings: list[str] = []
        self._warn_counts: dict[str, int] = {}
        # messages kept as parsed; their fields become arrays once, at the end
        self.lines: list[bytes] = []
        self.tickers: list[tuple] = []          # ([time], *TICKER_FIELDS)
        self.ticker_time_key: str | None = None
        self.ticker_lines: list[bytes] = []
        self.trade_msgs: list[tuple] = []       # TRADE_FIELDS
        self.trade_lines: list[bytes] = []
        self.diff_lines: list[bytes] = []
        self.diff_time_ms: list[int] = []
        # book state
        self.bids: dict[float, str] = {}     # price -> quantity as sent (parsed when sampled)
        self.asks: dict[float, str] = {}
        self.price_cache: dict[str, float] = {}
        self.zeros: frozenset = _ZERO_QTY
        self.bid_keys: list[float] = []     # ascending; best bid is the last
        self.ask_keys: list[float] = []     # ascending; best ask is the first
        self.snapshot_seen = False
        self.last_update_id: int | None = None
        self.synced = False
        self.prev_u: int | None = None
        self.pending: list[tuple[int, dict]] = []   # diffs received before the snapshot
        self.next_grid_ns: int | None = None
        self.last_diff_ns: int | None = None
        self.grid_ns: list[int] = []
        self.grid_rows: list[list[float]] = []
        self.dirty = True
        self.top_rows: list[tuple] = []
        self.depth_symbol: str | None = None
        # consecutive files: where each starts and whether its update ids join the previous file's
        self.files: list[dict] = []
        self.file_snapshot: dict | None = None     # a later file's own snapshot, used if ids do not join
        self.n = dict(messages=0, diffs=0, book_tickers=0, trades=0, snapshots=0,
                      other_messages=0, diffs_applied=0, diffs_dropped_before_snapshot=0,
                      diffs_buffered_before_snapshot=0, diffs_out_of_order=0, gaps=0,
                      level_updates=0, crossed_after_diff=0, empty_lines=0, resyncs=0)

    def warn(self, kind: str, text: str) -> None:
        count = self._warn_counts.get(kind, 0) + 1
        self._warn_counts[kind] = count
        if count <= _MAX_WARNINGS_PER_KIND:
            self.warnings.append(text)

    # -- dispatch

    def start_file(self, label: str) -> None:
        """The next file of a run of consecutive captures: errors and warnings name it."""
        self.label = label
        self.files.append({"file": label, "first_update_id": None, "snapshot": False,
                           "joined": None if not self.files else False})
        self.file_snapshot = None

    def run(self, raw: bytes) -> None:
        empty_before, truncated_before = self.n["empty_lines"], self.n.get("truncated_last_line", 0)
        self.n.setdefault("messages", 0)
        lines = raw.split(b"\n")
        truncated_last = False
        if lines and lines[-1] == b"":
            lines.pop()
        elif lines and raw and not raw.endswith(b"\n"):
            truncated_last = True      # the recorder may have been killed mid-line
        self.lines = self.lines + lines if self.lines else lines
        kinds: dict[str, tuple] = {}
        loads = orjson.loads
        n_lines = len(lines)
        # hot loop: bound methods in locals; a ticker or trade becomes one tuple of its fields,
        # taken by an itemgetter while the freshly parsed dict is still in the CPU cache
        ticker_append, ticker_line_append = self.tickers.append, self.ticker_lines.append
        trade_append, trade_line_append = self.trade_msgs.append, self.trade_lines.append
        diff_line_append = self.diff_lines.append
        depth = self._depth
        n_other = n_depth = 0
        lineno = 0
        try:
            with _gc_paused():
                for lineno, line in enumerate(lines, 1):
                    sp = line.find(b" ")
                    try:
                        msg = loads(line[sp + 1:]) if sp > 0 and line[:sp].isdigit() else None
                    except orjson.JSONDecodeError as exc:
                        if truncated_last and lineno == n_lines:
                            self._truncated(lineno)
                            break
                        raise DataError(f"line {lineno} is not valid JSON ({exc})", file=self.label,
                                        rows=[lineno]) from None
                    if msg is None:
                        if not line.strip():
                            self.n["empty_lines"] += 1
                            continue
                        if truncated_last and lineno == n_lines:
                            self._truncated(lineno)
                            break
                        raise DataError(f"line {lineno} is not '<receive ns> <json>'",
                                        file=self.label, rows=[lineno])
                    stream = msg.get("stream") if type(msg) is dict else None
                    if stream is None:
                        self._other(msg, lineno)
                        continue
                    kind_getter = kinds.get(stream)
                    if kind_getter is None:
                        kind_getter = kinds[stream] = self._stream(stream, msg["data"])
                    kind, getter = kind_getter
                    if kind == _TICKER:
                        ticker_append(getter(msg["data"]))
                        ticker_line_append(line)
                    elif kind == _TRADE:
                        trade_append(getter(msg["data"]))
                        trade_line_append(line)
                    elif kind == _DEPTH:
                        n_depth += 1
                        diff_line_append(line)
                        depth(msg["data"], lineno)
                    else:
                        n_other += 1
                        self.warn("stream", f"ignored stream '{stream}' (line {lineno})")
        except DataError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise DataError(f"line {lineno}: malformed message ({_describe(exc)})", file=self.label,
                            rows=[lineno]) from None
        self.n["messages"] += lineno - (self.n["empty_lines"] - empty_before) - (
            self.n.get("truncated_last_line", 0) - truncated_before)
        self.n["diffs"] += n_depth
        self.n["book_tickers"] = len(self.tickers)
        self.n["trades"] = len(self.trade_msgs)
        self.n["other_messages"] += n_other

    def _stream(self, stream: str, first: dict) -> tuple[int, object]:
        """Kind of a stream and the getter of its fields, from its name and first message."""
        kind = _stream_kind(stream)
        if kind == _TICKER:
            # spot bookTicker has no exchange time: its time is filled in from the receive time
            self.ticker_time_key = next((k for k in ("T", "E") if k in first), None)
            keys = ((self.ticker_time_key,) if self.ticker_time_key else ()) + TICKER_FIELDS
            return kind, itemgetter(*keys)
        if kind == _TRADE:
            return kind, itemgetter(*TRADE_FIELDS)
        return kind, None

    def line_of(self, kind: int, index: int) -> int:
        """1-based file line of the `index`-th message of `kind` (error path only)."""
        lines = {_TICKER: self.ticker_lines, _TRADE: self.trade_lines, _DEPTH: self.diff_lines}
        target = lines[kind][index]
        for lineno, line in enumerate(self.lines, 1):
            if line is target:
                return lineno
        return 0

    def _truncated(self, lineno: int) -> None:
        self.n["truncated_last_line"] = 1
        self.warn("truncated", f"last line ({lineno}) is incomplete and was skipped "
                               "(capture cut mid-write)")

    def _other(self, msg, lineno: int) -> None:
        if type(msg) is dict and "lastUpdateId" in msg and "bids" in msg and "asks" in msg:
            self.n["snapshots"] += 1
            if self.files:
                self.files[-1]["snapshot"] = True
            if self.snapshot_seen and len(self.files) > 1 and self.files[-1]["first_update_id"] is None:
                # a later file's own snapshot: kept in case its diffs do not join the previous file's
                self.file_snapshot = msg
                return
            if self.snapshot_seen:
                # a resync would need the diffs between this REST request and its reply, which
                # are already applied to the old book: keep the first snapshot
                self.warn("snapshot", f"extra depth snapshot on line {lineno} ignored")
                return
            self._snapshot(msg)
        else:
            self.n["other_messages"] += 1
            self.warn("other", f"ignored a message without 'stream' on line {lineno}")

    # -- book

    def _snapshot(self, snap: dict) -> None:
        self.snapshot_seen = True
        self.last_update_id = snap["lastUpdateId"]
        zeros = self.zeros
        self.bids = {float(p): q for p, q in snap["bids"] if q not in zeros}
        self.asks = {float(p): q for p, q in snap["asks"] if q not in zeros}
        self.bid_keys = sorted(self.bids)
        self.ask_keys = sorted(self.asks)
        pending, self.pending = self.pending, []
        for lineno, diff in pending:
            self._process(diff, lineno)

    def _depth(self, diff: dict, lineno: int) -> None:
        symbol = diff["s"]
        self.diff_time_ms.append(diff["E"])
        if self.depth_symbol is None:
            self.depth_symbol = symbol
            if self.market is None:
                self.market = _market_from_diff(diff)
                self.market_source = "message fields"
            elif self.market_source == "file name":
                fields = _market_from_diff(diff)
                if (fields == "spot") != (self.market == "spot"):
                    self.warn("market", f"file name says '{self.market}' but the depth messages "
                                        f"look like '{fields}': using '{fields}'")
                    self.market, self.market_source = fields, "message fields"
        elif symbol != self.depth_symbol:
            raise DataError(f"line {lineno}: depth diffs for several symbols "
                            f"({self.depth_symbol}, {symbol}); one book per capture: "
                            "split the file by symbol", file=self.label, rows=[lineno])
        if not self.snapshot_seen:
            self.n["diffs_buffered_before_snapshot"] += 1
            self.pending.append((lineno, diff))
            return
        self._process(diff, lineno)

    def _process(self, diff: dict, lineno: int) -> None:
        u = diff["u"]
        spot = self.market == "spot"
        if self.files and self.files[-1]["first_update_id"] is None:
            self._join(diff, spot)
        luid = self.last_update_id
        if not self.synced:
            # the snapshot already contains these updates
            if (u <= luid) if spot else (u < luid):
                self.n["diffs_dropped_before_snapshot"] += 1
                return
            first_u = diff["U"]
            target = luid + 1 if spot else luid
            if not (first_u <= target <= u):
                self.n["gaps"] += 1
                self.warn("gap", f"gap: first diff after the snapshot (line {lineno}) covers "
                                 f"updates {first_u}..{u}, snapshot lastUpdateId is {luid}; "
                                 "kept applying (no snapshot to resync from offline)")
            self.synced = True
        else:
            prev = self.prev_u
            if u <= prev:
                self.n["diffs_out_of_order"] += 1
                self.warn("order", f"diff on line {lineno} (u={u}) is not newer than the "
                                   f"previous one (u={prev}); dropped")
                return
            chained = (diff["U"] == prev + 1) if spot else (diff["pu"] == prev)
            if not chained:
                self.n["gaps"] += 1
                got = f"U={diff['U']}" if spot else f"pu={diff['pu']}"
                self.warn("gap", f"gap before line {lineno}: previous u={prev}, this diff has "
                                 f"{got}; kept applying (no snapshot to resync from offline)")
        self.prev_u = u
        t_ns = (diff.get("T") or diff["E"]) * 1_000_000
        if self.next_grid_ns is None:
            step = self.step_ns
            self.next_grid_ns = -(-t_ns // step) * step
        elif t_ns > self.next_grid_ns:
            self._emit_until(t_ns)
        if self.last_diff_ns is None or t_ns > self.last_diff_ns:
            self.last_diff_ns = t_ns
        n_updates = self._apply(diff["b"], self.bids, self.bid_keys)
        n_updates += self._apply(diff["a"], self.asks, self.ask_keys)
        self.n["level_updates"] += n_updates
        self.n["diffs_applied"] += 1
        self.dirty = True
        bids, asks, bk, ak = self.bids, self.asks, self.bid_keys, self.ask_keys
        bb = bk[-1] if bk else np.nan
        ba = ak[0] if ak else np.nan
        if bb >= ba:
            self.n["crossed_after_diff"] += 1
        self.top_rows.append((t_ns, u, bb, _qty(bids.get(bb)), ba, _qty(asks.get(ba))))
        if self.event_levels:
            # slices of the sorted key lists: the first L levels cost O(L), never a sort
            L = self.event_levels
            bp, ap = bk[-1:-L - 1:-1], ak[:L]
            self.ev_bid_px.extend(bp)
            self.ev_bid_q.extend(map(bids.__getitem__, bp))
            self.ev_bid_n.append(len(bp))
            self.ev_ask_px.extend(ap)
            self.ev_ask_q.extend(map(asks.__getitem__, ap))
            self.ev_ask_n.append(len(ap))

    def _join(self, diff: dict, spot: bool) -> None:
        """First diff of a file: does it continue the previous file's ids? If not and the file
        brought its own snapshot, rebuild the book from that snapshot (a resync)."""
        this = self.files[-1]
        this["first_update_id"] = diff["U"]
        if len(self.files) == 1 or not self.synced:
            return
        prev = self.prev_u
        joined = (diff["U"] == prev + 1) if spot else (diff["pu"] == prev)
        this["joined"] = bool(joined)
        this["previous_last_update_id"] = prev
        if not joined and self.file_snapshot is not None:
            snap, self.file_snapshot = self.file_snapshot, None
            self.n["resyncs"] += 1
            self.synced, self.prev_u = False, None
            self._snapshot(snap)
            this["resynced_from_own_snapshot"] = True
        elif not joined:
            self.warn("join", f"{this['file']}: its first diff (U={diff['U']}) does not continue the "
                              f"previous file (last u={prev}) and the file has no snapshot: a gap")

    def _apply(self, updates: list, book: dict, keys: list) -> int:
        # The hot loop (~440k updates a file). Prices are parsed once per distinct string;
        # quantities stay strings until a level is sampled, zero is recognised by its spelling
        # (Binance writes fixed decimals; `_top_row` catches any spelling not in the set).
        prices, zeros = self.price_cache, self.zeros
        for price, qty in updates:
            p = prices.get(price)
            if p is None:
                p = prices[price] = float(price)
            if qty in zeros:
                if p in book:
                    del book[p]
                    del keys[bisect_left(keys, p)]
            else:
                if p not in book:
                    insort(keys, p)
                book[p] = qty
        return len(updates)

    def _emit_until(self, t_ns: int) -> None:
        """Record the book at every grid time before `t_ns` (state as of the last diff <= g)."""
        g, step = self.next_grid_ns, self.step_ns
        row = None
        while g < t_ns:
            if row is None:
                row = self._top_row()
            self.grid_ns.append(g)
            self.grid_rows.append(row)
            g += step
        self.next_grid_ns = g

    def _top_row(self) -> list[float]:
        if not self.dirty and self.grid_rows:
            return self.grid_rows[-1]
        L = self.levels
        while True:
            bp = self.bid_keys[-1:-L - 1:-1]
            ap = self.ask_keys[:L]
            bq = [_qty(self.bids[p]) for p in bp]
            aq = [_qty(self.asks[p]) for p in ap]
            if all(bq) and all(aq):
                break
            self._purge_zeros()
        pad_b = [np.nan] * (L - len(bp))
        pad_a = [np.nan] * (L - len(ap))
        row = bp + pad_b + bq + pad_b + ap + pad_a + aq + pad_a
        self.dirty = False
        return row

    def _purge_zeros(self) -> None:
        """Drop levels whose quantity is zero in a spelling `_apply` did not know; learn it."""
        for book, keys in ((self.bids, self.bid_keys), (self.asks, self.ask_keys)):
            dead = [p for p, q in book.items() if _qty(q) == 0.0]
            for p in dead:
                if isinstance(book[p], str):
                    self.zeros = self.zeros | {book[p]}
                del book[p]
                del keys[bisect_left(keys, p)]

    def _finish(self) -> None:
        if self.last_diff_ns is not None and self.next_grid_ns is not None:
            self._emit_until(self.last_diff_ns + 1)
        if self.pending:
            self.warn("nosnap", f"{len(self.pending)} depth diffs but no REST depth snapshot: "
                                "the book cannot be rebuilt")


def _stream_kind(stream: str) -> int:
    channel = stream.partition("@")[2]
    if channel.startswith("depth"):
        return _DEPTH
    if channel == "bookTicker":
        return _TICKER
    if channel == "trade":
        return _TRADE
    return _OTHER


# --- frames ------------------------------------------------------------------------------------


def _utc(ns: np.ndarray) -> pd.Series:
    return pd.Series(np.asarray(ns, dtype=np.int64).astype("datetime64[ns]")).dt.tz_localize("UTC")


def _const(value: str, n: int) -> pd.Series:
    return pd.Series([value] * n, dtype="str")


def _describe(exc: Exception) -> str:
    return f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)


class _Columns:
    """One stream's field tuples as columns; a bad value becomes a DataError naming its line."""

    def __init__(self, rp: _Replay, kind: int, rows: list[tuple], names: tuple, stream: str):
        self.rp, self.kind, self.stream = rp, kind, stream
        self.rows, self.names = rows, names
        self.n = len(rows)
        self.cols: dict[str, list] = {}

    def _fail(self, index: int, what: str):
        line = self.rp.line_of(self.kind, index)
        raise DataError(f"line {line}: {self.stream} message: {what}", file=self.rp.label,
                        rows=[line])

    def raw(self, key: str) -> list:
        if key not in self.cols:
            i = self.names.index(key)
            self.cols[key] = [r[i] for r in self.rows]
        return self.cols[key]

    def floats(self, key: str) -> np.ndarray:
        values = self.raw(key)
        if not values:
            return np.zeros(0)
        try:
            # Arrow's C++ cast parses several times faster than float() per string
            return pc.cast(pa.array(values, type=pa.string()), pa.float64()).to_numpy(
                zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            for i, v in enumerate(values):
                try:
                    float(v)
                except (TypeError, ValueError):
                    self._fail(i, f"field '{key}' is not a number: {v!r}")
            raise

    def ints(self, key: str) -> np.ndarray:
        values = self.raw(key)
        try:
            return np.array(values, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            for i, v in enumerate(values):
                if type(v) is not int:
                    self._fail(i, f"field '{key}' is not an integer: {v!r}")
            raise


def read_capture(source, *, name: str | None = None,
                 interval_s: float = 1.0, levels: int = 20, market: str | None = None,
                 contract_size_usd: float = 100.0, event_levels: int = 0) -> Capture:
    """Replay a Binance raw capture (`<receive ns> <json>` lines, gzip or plain).

    `market` ("usdm", "spot" or "coinm") overrides detection from the file name or, failing
    that, from the diff messages. `interval_s` is the book sampling step in exchange time;
    `levels` the number of book levels kept a side. `contract_size_usd` is the COIN-M contract
    face value used to convert contracts to coins. `event_levels` > 0 also records the first
    `event_levels` levels a side after every applied diff (`Capture.events`; costs ~2 µs a diff).
    Raises `DataError` naming the line (1-based) of the first message that cannot be read.
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
    if int(levels) < 1:
        raise ValueError(f"levels must be >= 1, got {levels!r}")
    levels = int(levels)
    if int(event_levels) < 0:
        raise ValueError(f"event_levels must be >= 0, got {event_levels!r}")
    sources = list(source) if isinstance(source, (list, tuple)) else [source]
    if not sources:
        raise DataError("no capture files given")
    names = list(name) if isinstance(name, (list, tuple)) else [name] * len(sources)
    read = [_read_source(src, nm if len(sources) == 1 else (nm or None)) for src, nm in zip(sources, names)]
    if len(read) > 1:               # consecutive captures in time order (first receive time)
        read.sort(key=lambda r: _first_receive_ns(r[0]))
    label = read[0][1] if len(read) == 1 else f"{read[0][1]} (+{len(read) - 1} more)"
    if market is not None:
        mkt, msrc = _normalise_market(market), "argument"
    else:
        mkt = market_from_name(read[0][1])
        msrc = "file name" if mkt else "message fields"
    rp = _Replay(label, mkt, msrc, interval_s, levels, int(event_levels))
    for raw, file_label, cut in read:
        rp.start_file(file_label)
        if cut:
            rp.warn("truncated", f"{file_label}: the gzip stream ends early (capture cut mid-write): "
                                 "replayed the complete lines before the cut")
        rp.run(raw)
    rp.label = label
    rp._finish()
    if rp.n["messages"] == 0:
        raise DataError("no messages: the capture is empty", file=label)
    if rp.market is None:           # no depth diffs: trades/quotes only
        rp.market = "usdm"
        rp.market_source = "default (no depth diffs to tell)"
        rp.warn("market", "market type unknown (no depth diffs, no hint in the name): "
                          "assumed USD-M; pass market=")
    tick = _Columns(rp, _TICKER, rp.tickers,
                    ((rp.ticker_time_key,) if rp.ticker_time_key else ()) + TICKER_FIELDS,
                    "bookTicker")
    trade = _Columns(rp, _TRADE, rp.trade_msgs, TRADE_FIELDS, "trade")
    symbols = set(tick.raw("s")) | set(trade.raw("s"))
    if rp.depth_symbol:
        symbols.add(rp.depth_symbol)
    if len(symbols) > 1:
        rp.warn("symbols", f"several symbols in one capture: {sorted(symbols)}; "
                           "the book is for the depth stream's symbol only")
    venue = VENUES[rp.market]
    symbol = rp.depth_symbol or (sorted(symbols)[0] if symbols else "")
    coinm = rp.market == "coinm"
    contract = float(contract_size_usd) if coinm else None
    stats = dict(rp.n)

    # trades
    tr_price = trade.floats("p")
    tr_qty = trade.floats("q")
    if coinm:
        tr_qty = tr_qty * contract / tr_price
    tr_ns = trade.ints("T") * 1_000_000
    trades = pd.DataFrame({
        "timestamp": _utc(tr_ns),
        "symbol": pd.Series(trade.raw("s"), dtype="str"),
        "price": tr_price,
        "quantity": tr_qty,
        # m = buyer is maker: the aggressor sold
        "side": np.where(np.array(trade.raw("m"), dtype=bool), -1, 1).astype(np.int8),
        "venue": _const(venue, len(tr_ns)),
        "trade_id": pd.Series([str(t) for t in trade.raw("t")], dtype="str"),
    })

    # quotes; spot bookTicker carries no exchange time: local receive time shifted by the median
    # (exchange - local) offset of the trades (else diffs), so all frames share one clock
    q_ns = (tick.ints(rp.ticker_time_key) if rp.ticker_time_key
            else np.full(tick.n, -1, dtype=np.int64)) * 1_000_000
    missing = q_ns < 0
    if missing.any():
        offset_ns = _clock_offset_ns(rp)
        q_ns[missing] = _local_ns(rp.ticker_lines, np.flatnonzero(missing)) + offset_ns
        stats["quote_time_source"] = "local receive time + median exchange clock offset"
        stats["clock_offset_ms"] = offset_ns / 1e6
    else:
        stats["quote_time_source"] = "exchange transaction time (T)"
    q_bid, q_ask = tick.floats("b"), tick.floats("a")
    q_bsz, q_asz = tick.floats("B"), tick.floats("A")
    if coinm:
        q_bsz = q_bsz * contract / q_bid
        q_asz = q_asz * contract / q_ask
    quotes = pd.DataFrame({
        "timestamp": _utc(q_ns),
        "symbol": pd.Series(tick.raw("s"), dtype="str"),
        "bid_price": q_bid, "bid_size": q_bsz, "ask_price": q_ask, "ask_size": q_asz,
        "venue": _const(venue, len(q_ns)),
    })
    quote_update_ids = tick.ints("u")

    # book
    L = levels
    grid = np.asarray(rp.grid_ns, dtype=np.int64)
    mat = (np.array(rp.grid_rows, dtype=np.float64) if rp.grid_rows
           else np.zeros((0, 4 * L)))
    bid_px, bid_sz = mat[:, :L], mat[:, L:2 * L]
    ask_px, ask_sz = mat[:, 2 * L:3 * L], mat[:, 3 * L:]
    if coinm:
        bid_sz = bid_sz * contract / bid_px
        ask_sz = ask_sz * contract / ask_px
    cols: dict[str, object] = {"timestamp": _utc(grid), "symbol": _const(symbol, len(grid)),
                               "venue": _const(venue, len(grid))}
    for prefix, block in (("bid_price", bid_px), ("bid_size", bid_sz),
                          ("ask_price", ask_px), ("ask_size", ask_sz)):
        for i in range(L):
            cols[f"{prefix}_{i}"] = block[:, i]
    book = pd.DataFrame(cols)

    top_ns = np.array([r[0] for r in rp.top_rows], dtype=np.int64)
    top_arr = (np.array([r[2:] for r in rp.top_rows], dtype=np.float64) if rp.top_rows
               else np.zeros((0, 4)))
    t_bid, t_bsz, t_ask, t_asz = top_arr.T
    if coinm:
        t_bsz = t_bsz * contract / t_bid
        t_asz = t_asz * contract / t_ask
    top = pd.DataFrame({
        "timestamp": _utc(top_ns),
        "update_id": np.array([r[1] for r in rp.top_rows], dtype=np.int64),
        "bid_price": t_bid, "bid_size": t_bsz, "ask_price": t_ask, "ask_size": t_asz,
    })

    size_unit = (f"base (coins; converted from contracts of {contract:g} USD)" if coinm
                 else "base")
    events = None
    if rp.event_levels:
        E = rp.event_levels
        e_bpx, e_bsz = levels_matrix(rp.ev_bid_px, rp.ev_bid_q, rp.ev_bid_n, E)
        e_apx, e_asz = levels_matrix(rp.ev_ask_px, rp.ev_ask_q, rp.ev_ask_n, E)
        if coinm:
            e_bsz = e_bsz * contract / e_bpx
            e_asz = e_asz * contract / e_apx
        events = BookEvents(t_ns=top_ns, update_id=top["update_id"].to_numpy(), bid_px=e_bpx,
                            bid_sz=e_bsz, ask_px=e_apx, ask_sz=e_asz, size_unit=size_unit,
                            meta={"venue": venue, "symbol": symbol, "market": rp.market,
                                  "source": label})
    for frame in (trades, quotes, book, top):
        frame.attrs["size_unit"] = size_unit
        if coinm:
            frame.attrs["contract_size_usd"] = contract
    warnings = list(rp.warnings)
    if stats["gaps"]:
        warnings.append(f"{stats['gaps']} sequence gap(s) in the depth stream: the rebuilt book "
                        "may hold stale levels after them")
    if stats["crossed_after_diff"]:
        warnings.append(f"rebuilt book crossed (best bid >= best ask) after "
                        f"{stats['crossed_after_diff']} diff(s)")
    spans = [a for a in (tr_ns, q_ns, grid) if len(a)]
    stats.update(
        market=rp.market, market_source=rp.market_source, venue=venue, symbol=symbol,
        size_unit=size_unit, contract_size_usd=contract, levels=L, interval_s=float(interval_s),
        book_snapshots=len(grid), snapshot_last_update_id=rp.last_update_id,
        synced=rp.synced,
        start=_iso(min(int(a.min()) for a in spans)) if spans else None,
        end=_iso(max(int(a.max()) for a in spans)) if spans else None,
        warnings_suppressed={k: v - _MAX_WARNINGS_PER_KIND for k, v in rp._warn_counts.items()
                             if v > _MAX_WARNINGS_PER_KIND},
    )
    if len(rp.files) > 1:
        stats["files"] = rp.files
        for f in rp.files[1:]:
            if f["joined"]:
                continue
            how = ("rebuilt from its own snapshot" if f.get("resynced_from_own_snapshot")
                   else "a gap in the book")
            warnings.append(f"{f['file']} does not continue the previous file's update ids: {how}")
    return Capture(trades=trades, quotes=quotes, book=book, stats=stats, warnings=warnings,
                   top=top, quote_update_ids=quote_update_ids, events=events)


def _first_receive_ns(raw: bytes) -> int:
    """Receive time of the first message (orders consecutive files); unknown sorts last."""
    head = raw[:64].split(b" ", 1)[0]
    return int(head) if head.isdigit() else 2**63 - 1


def _local_ns(lines: list[bytes], index: np.ndarray) -> np.ndarray:
    """The recorder's receive time (ns) that starts each of the given lines."""
    return np.array([int(lines[i][:lines[i].find(b" ")]) for i in index], dtype=np.int64)


def _clock_offset_ns(rp: _Replay) -> int:
    """Median (exchange time - local receive time) over trades, else diffs; 0 if neither."""
    if rp.trade_msgs:
        ms = [m[0] for m in rp.trade_msgs]
        lines = rp.trade_lines
    else:
        ms, lines = rp.diff_time_ms, rp.diff_lines
    if not ms:
        return 0
    delta = (np.asarray(ms, np.int64) * 1_000_000
             - _local_ns(lines, np.arange(len(lines))))
    return int(np.median(delta))


def _iso(ns: int) -> str:
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat()
