"""An order book rebuilt message by message (live streams), by Binance's update-id rules.

`execal.models.data.binance.read_capture` rebuilds a book from a whole file in one pass. A live
stream needs the same rules one message at a time, plus what a file replay cannot do: fetch a
fresh REST snapshot after a gap. `OrderBook` is that incremental book, one symbol on one market:

* diffs that arrive before the snapshot are buffered (a bounded deque: `max_pending`; the
  oldest are dropped and counted when it is full, they are the ones a snapshot contains anyway);
* on the snapshot, the buffered diffs it already contains are dropped (spot: u <= lastUpdateId,
  futures: u < lastUpdateId), the first applied diff must straddle it (spot: U <= lastUpdateId + 1
  <= u, futures: U <= lastUpdateId <= u), and every later diff must chain (futures: pu == the
  previous u; spot: U == the previous u + 1);
* a diff that does not chain is a gap. With `resync=True` (live) the book stops applying, counts the
  gap, keeps the diff in the buffer and says `needs_snapshot`: the source fetches a new snapshot
  and calls `on_snapshot`, which replays the buffer. With `resync=False` (a file, where no new
  snapshot exists) it counts the gap and keeps applying, exactly as the file reader does;
* a diff not newer than the previous one is dropped and counted (`out_of_order`).

Each side is a dict price -> quantity plus a sorted list of its prices, as in the file reader;
prices are parsed once per distinct string. Unlike the file reader (which samples a few levels and keeps quantities as
text), quantities are parsed when they arrive: the live state sums hundreds of levels near the mid
every second, which would parse each of them again. tests/data/test_orderbook.py checks that this book, sampled on the file
reader's one-second grid, equals `read_capture(...).book` at every snapshot of every shared capture.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections import deque

import numpy as np

from execal.models.data.binance import _ZERO_QTY, _normalise_market

# what `on_diff` did with a diff
APPLIED, BUFFERED, DROPPED, OUT_OF_ORDER, GAP = 0, 1, 2, 3, 4
STATUS_NAMES = ("applied", "buffered", "dropped", "out_of_order", "gap")


class OrderBook:
    """One symbol's book on one Binance market ("usdm", "spot", "coinm"), rebuilt online."""

    __slots__ = ("market", "spot", "symbol", "resync", "bids", "asks", "bid_keys", "ask_keys",
                 "price_cache", "price_text", "zeros", "last_update_id", "synced", "prev_u",
                 "pending", "max_pending", "needs_snapshot", "time_ms", "counts")

    def __init__(self, market: str, symbol: str | None = None, *, resync: bool = True,
                 max_pending: int = 50_000):
        self.market = _normalise_market(market)
        self.spot = self.market == "spot"
        self.symbol = symbol
        self.resync = bool(resync)
        self.max_pending = int(max_pending)
        self.price_cache: dict[str, float] = {}
        self.price_text: dict[float, str] = {}
        self.zeros = _ZERO_QTY
        self.counts = dict(diffs=0, applied=0, buffered=0, dropped_before_snapshot=0,
                           pending_overflow=0, out_of_order=0, gaps=0, snapshots=0,
                           level_updates=0, crossed=0)
        self._clear()

    def _clear(self) -> None:
        self.bids: dict[float, str] = {}
        self.asks: dict[float, str] = {}
        self.bid_keys: list[float] = []     # ascending: the best bid is the last
        self.ask_keys: list[float] = []     # ascending: the best ask is the first
        self.last_update_id: int | None = None
        self.synced = False
        self.prev_u: int | None = None
        self.pending: deque = deque(maxlen=self.max_pending)
        self.needs_snapshot = True
        self.time_ms: int | None = None     # exchange time of the last applied diff

    def reset(self) -> None:
        """Forget the book (a new connection): diffs are buffered until the next snapshot."""
        self._clear()

    # -- messages ---------------------------------------------------------------------------------

    def on_snapshot(self, snap: dict, *, replay: bool = True) -> list:
        """Load a REST depth snapshot {lastUpdateId, bids, asks} and replay the buffered diffs;
        returns their statuses. With `replay=False` the buffered diffs are returned instead, for
        the caller to feed to `process` one by one (a caller that samples between diffs)."""
        self.counts["snapshots"] += 1
        zeros = self.zeros
        self.last_update_id = int(snap["lastUpdateId"])
        self.bids = {self._price(p): float(q) for p, q in snap["bids"] if q not in zeros}
        self.asks = {self._price(p): float(q) for p, q in snap["asks"] if q not in zeros}
        if any(q == 0.0 for q in self.bids.values()) or any(q == 0.0 for q in self.asks.values()):
            self._purge_zeros()
        self.bid_keys = sorted(self.bids)
        self.ask_keys = sorted(self.asks)
        self.synced = False
        self.prev_u = None
        self.needs_snapshot = False
        pending, self.pending = self.pending, deque(maxlen=self.max_pending)
        if not replay:
            return list(pending)
        out = []
        for diff in pending:
            if self.needs_snapshot:          # a gap inside the buffer: keep the rest for the next one
                self._buffer(diff)
                out.append(BUFFERED)
            else:
                out.append(self._process(diff))
        return out

    def process(self, diff: dict) -> int:
        """`on_diff` for a diff already counted (one returned by `on_snapshot(replay=False)`)."""
        if self.needs_snapshot:
            self._buffer(diff)
            return BUFFERED
        return self._process(diff)

    def on_diff(self, diff: dict) -> int:
        """Apply (or buffer, or drop) one depth diff; returns APPLIED, BUFFERED, DROPPED,
        OUT_OF_ORDER or GAP."""
        self.counts["diffs"] += 1
        if self.needs_snapshot:
            self._buffer(diff)
            return BUFFERED
        return self._process(diff)

    def _buffer(self, diff: dict) -> None:
        if len(self.pending) == self.max_pending:
            self.counts["pending_overflow"] += 1
        self.pending.append(diff)
        self.counts["buffered"] += 1

    def _price(self, text: str) -> float:
        p = self.price_cache.get(text)
        if p is None:
            p = self.price_cache[text] = float(text)
            self.price_text[p] = text
        return p

    def _process(self, diff: dict) -> int:
        u = diff["u"]
        if not self.synced:
            luid = self.last_update_id
            if (u <= luid) if self.spot else (u < luid):
                self.counts["dropped_before_snapshot"] += 1
                return DROPPED
            target = luid + 1 if self.spot else luid
            if not diff["U"] <= target:
                # the snapshot is older than the stream: this diff and the next need a newer one
                return self._gap(diff)
            self.synced = True
        else:
            prev = self.prev_u
            if u <= prev:
                self.counts["out_of_order"] += 1
                return OUT_OF_ORDER
            if not ((diff["U"] == prev + 1) if self.spot else (diff["pu"] == prev)):
                if self.resync:
                    return self._gap(diff)
                self.counts["gaps"] += 1      # offline: counted, and the book goes on
        self.prev_u = u
        self.time_ms = diff.get("T") or diff["E"]
        n = self._apply(diff["b"], self.bids, self.bid_keys)
        n += self._apply(diff["a"], self.asks, self.ask_keys)
        c = self.counts
        c["level_updates"] += n
        c["applied"] += 1
        bk, ak = self.bid_keys, self.ask_keys
        if bk and ak and bk[-1] >= ak[0]:
            c["crossed"] += 1
        return APPLIED

    def _gap(self, diff: dict) -> int:
        self.counts["gaps"] += 1
        if not self.resync and self.last_update_id is not None and not self.synced:
            # offline, the first diff does not straddle the snapshot: apply anyway (file reader)
            self.synced = True
            self.prev_u = diff["u"]
            self.time_ms = diff.get("T") or diff["E"]
            self._apply(diff["b"], self.bids, self.bid_keys)
            self._apply(diff["a"], self.asks, self.ask_keys)
            self.counts["applied"] += 1
            return GAP
        self.needs_snapshot = True
        self.synced = False
        self.pending = deque(maxlen=self.max_pending)
        self._buffer(diff)
        return GAP

    def _apply(self, updates: list, book: dict, keys: list) -> int:
        prices, texts = self.price_cache, self.price_text
        for price, qty in updates:
            p = prices.get(price)
            if p is None:
                p = prices[price] = float(price)
                texts[p] = price
            q = float(qty)
            if q == 0.0:                      # any spelling of zero deletes the level
                if p in book:
                    del book[p]
                    del keys[bisect_left(keys, p)]
            else:
                if p not in book:
                    insort(keys, p)
                book[p] = q
        return len(updates)

    # -- reading ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Synced to a snapshot and applying diffs."""
        return not self.needs_snapshot and self.last_update_id is not None

    @property
    def best_bid(self) -> float:
        return self.bid_keys[-1] if self.bid_keys else np.nan

    @property
    def best_ask(self) -> float:
        return self.ask_keys[0] if self.ask_keys else np.nan

    def _purge_zeros(self) -> None:
        """Levels whose quantity is zero in a spelling `_apply` did not know: drop, learn it."""
        for book, keys in ((self.bids, self.bid_keys), (self.asks, self.ask_keys)):
            dead = [p for p, q in book.items() if q == 0.0]
            for p in dead:
                del book[p]
                del keys[bisect_left(keys, p)]

    def levels(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Top `n` levels a side as (bid_px, bid_sz, ask_px, ask_sz), best first, NaN-padded,
        quantities as sent (contracts on COIN-M)."""
        while True:
            bp = self.bid_keys[-1:-n - 1:-1]
            ap = self.ask_keys[:n]
            bq = [self.bids[p] for p in bp]
            aq = [self.asks[p] for p in ap]
            if all(bq) and all(aq):
                break
            self._purge_zeros()
        out = np.full((4, n), np.nan)
        out[0, :len(bp)] = bp
        out[1, :len(bq)] = bq
        out[2, :len(ap)] = ap
        out[3, :len(aq)] = aq
        return out[0], out[1], out[2], out[3]

    def depth_within(self, bps: float, mid: float | None = None) -> tuple[float, float]:
        """(bid, ask) quantity resting within `bps` of the mid (as sent: contracts on COIN-M)."""
        if not (self.bid_keys and self.ask_keys):
            return np.nan, np.nan
        if mid is None:
            mid = 0.5 * (self.bid_keys[-1] + self.ask_keys[0])
        lo, hi = mid * (1.0 - bps * 1e-4), mid * (1.0 + bps * 1e-4)
        bids, asks = self.bids, self.asks
        b = sum([bids[p] for p in self.bid_keys[bisect_left(self.bid_keys, lo):]])
        a = sum([asks[p] for p in self.ask_keys[:bisect_right(self.ask_keys, hi)]])
        return b, a

    def snapshot(self, limit: int = 1000) -> dict:
        """The book as a REST depth snapshot {lastUpdateId, bids, asks} (prices as sent, quantities
        as the shortest text of their value), as a replay server answers a snapshot request."""
        bp = self.bid_keys[-1:-limit - 1:-1]
        ap = self.ask_keys[:limit]
        text = self.price_text
        return {"lastUpdateId": self.prev_u if self.prev_u is not None else self.last_update_id,
                "bids": [[text.get(p, repr(p)), repr(self.bids[p])] for p in bp],
                "asks": [[text.get(p, repr(p)), repr(self.asks[p])] for p in ap]}

    def __len__(self) -> int:
        return len(self.bid_keys) + len(self.ask_keys)
