"""Where the monitor's data comes from: exchange sockets (live or replayed) and our own fills.

* `VenueSource`: one Binance market (spot, USD-M, COIN-M) and its symbols, with configurable
  endpoints (the defaults are Binance's public ones): the combined-stream websocket URL
  `{ws_base}/stream?streams=<sym>@<depth>/<sym>@bookTicker/<sym>@trade/...` and the REST depth
  snapshot `{rest_base}{/fapi/v1|/api/v3|/dapi/v1}/depth?symbol=<SYM>&limit=1000`.
* `StreamClient`: the `websockets` client of one venue: connects, subscribes, puts every message on
  the monitor's bounded queue (a full queue drops the message and counts it: a slow consumer never
  grows memory; a dropped diff becomes a book gap and a resync), reconnects with exponential
  backoff and jitter after a drop (the venue's books then wait for fresh snapshots), and fetches
  REST snapshots when the monitor asks (`request_snapshot`).
* `ReplayServer`: a local websocket + HTTP server (`websockets`, one port) that serves any Binance
  raw capture at 1×, N× or full speed under the same URL scheme (`ws://host:port/<market>` and
  `http://host:port/<market>`), so the client above is exercised end to end without internet.
  All captures share one timeline (the recorder's receive times). The server keeps each symbol's
  book (`OrderBook`, fed from the capture's own snapshot and diffs) and answers snapshot requests
  from it, with a lastUpdateId the next streamed diff straddles, as a live exchange would after a
  reconnect. Faults for tests: `drop_clients()` (socket drop), `skip_diffs()` (an update-id gap),
  `inject()` (a malformed message), `pause()`.
* `FileTail`: our fills from a CSV or JSON-lines file that another process appends to; survives
  rotation (rename + new file, or truncation: the rest of the old file is read first).
* `RedisFills`: our fills from a Redis stream (XREAD, one JSON field or one field per column).
"""
from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import heapq
import json
import logging
import os
import random
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson

from execal.models.data.binance import market_from_name
from execal.models.data.orderbook import OrderBook
from execal.models.data.schema import DataError

log = logging.getLogger("execal.live")

VENUE_NAMES = {"usdm": "binance-usdm", "spot": "binance-spot", "coinm": "binance-coinm"}
DEFAULT_ENDPOINTS = {
    "usdm": ("wss://fstream.binance.com", "https://fapi.binance.com"),
    "spot": ("wss://stream.binance.com:9443", "https://api.binance.com"),
    "coinm": ("wss://dstream.binance.com", "https://dapi.binance.com"),
}
DEPTH_PATHS = {"usdm": "/fapi/v1/depth", "spot": "/api/v3/depth", "coinm": "/dapi/v1/depth"}
MARKET_OF_VENUE = {v: k for k, v in VENUE_NAMES.items()}


@dataclass
class VenueSource:
    """One venue's streams and endpoints."""
    market: str                                   # "usdm" | "spot" | "coinm"
    symbols: list[str]
    ws_base: str | None = None
    rest_base: str | None = None
    depth_stream: str = "depth@100ms"
    channels: tuple[str, ...] = ("depth", "bookTicker", "trade")
    venue: str | None = None

    def __post_init__(self):
        if self.market not in DEPTH_PATHS:
            raise ValueError(f"unknown market {self.market!r} (usdm, spot or coinm)")
        ws, rest = DEFAULT_ENDPOINTS[self.market]
        self.ws_base = (self.ws_base or ws).rstrip("/")
        self.rest_base = (self.rest_base or rest).rstrip("/")
        self.venue = self.venue or VENUE_NAMES[self.market]
        self.symbols = [s.lower() for s in self.symbols]

    def streams(self) -> list[str]:
        out = []
        for s in self.symbols:
            for c in self.channels:
                out.append(f"{s}@{self.depth_stream}" if c == "depth" else f"{s}@{c}")
        return out

    @property
    def ws_url(self) -> str:
        return f"{self.ws_base}/stream?streams=" + "/".join(self.streams())

    def snapshot_url(self, symbol: str) -> str:
        return f"{self.rest_base}{DEPTH_PATHS[self.market]}?symbol={symbol.upper()}&limit=1000"


def parse_source(text: str, *, endpoints: dict | None = None, depth_stream: str = "depth@100ms") -> VenueSource:
    """A live source from `market:sym1,sym2` (market: usdm, spot, coinm or binance-usdm, ...);
    `endpoints` maps a market to (ws_base, rest_base) overriding Binance's defaults."""
    market, sep, symbols = text.partition(":")
    market = MARKET_OF_VENUE.get(market, market)
    if not sep or market not in DEPTH_PATHS or not symbols.strip():
        raise ValueError(f"source {text!r}: expected a capture file or MARKET:SYMBOL[,SYMBOL] "
                         "(MARKET: usdm, spot, coinm)")
    ws, rest = (endpoints or {}).get(market, (None, None))
    return VenueSource(market, [s.strip() for s in symbols.split(",") if s.strip()], ws_base=ws,
                       rest_base=rest, depth_stream=depth_stream)


def fetch_json(url: str, timeout: float = 10.0) -> dict:
    """GET a JSON document (the REST snapshot); no proxy for local endpoints."""
    host = urllib.parse.urlsplit(url).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if host in ("127.0.0.1", "localhost", "::1") else []
    opener = urllib.request.build_opener(*handlers)
    with opener.open(url, timeout=timeout) as resp:
        return orjson.loads(resp.read())


# --- the queue between sockets and the monitor -------------------------------------------------------

class FeedQueue:
    """Bounded queue of ("msg", venue, raw) / ("snapshot", venue, symbol, snap) / ("reset", venue)
    items. Market messages that find it full are dropped and counted; control items always go in
    (they are a handful per connection)."""

    def __init__(self, maxsize: int = 100_000):
        self.maxsize = int(maxsize)
        self.items: asyncio.Queue = asyncio.Queue()      # size enforced here, not by asyncio
        self.dropped = 0
        self.high_water = 0

    def put_message(self, venue: str, raw) -> bool:
        q = self.items
        if q.qsize() >= self.maxsize:
            self.dropped += 1
            return False
        q.put_nowait(("msg", venue, raw))
        n = q.qsize()
        if n > self.high_water:
            self.high_water = n
        return True

    def put_control(self, item: tuple) -> None:
        self.items.put_nowait(item)


# --- the client ---------------------------------------------------------------------------------------

class StreamClient:
    def __init__(self, source: VenueSource, queue: FeedQueue, *, backoff_s: tuple[float, float] = (0.2, 10.0),
                 open_timeout: float = 10.0, fetch: Callable[[str], dict] = fetch_json, seed: int | None = None):
        self.source = source
        self.queue = queue
        self.backoff_s = backoff_s
        self.open_timeout = open_timeout
        self.fetch = fetch
        self.rng = random.Random(seed)
        self.stopping = False
        self.connected = asyncio.Event()
        self.connections = 0
        self.failures = 0
        self.messages = 0
        self.snapshot_failures = 0
        self.in_flight: set[str] = set()
        self._ws = None
        self._tasks: set[asyncio.Task] = set()

    async def run(self) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

        attempt = 0
        while not self.stopping:
            try:
                async with connect(self.source.ws_url, proxy=None, compression=None,
                                   open_timeout=self.open_timeout, max_size=2**24, max_queue=4096,
                                   ping_interval=20, ping_timeout=20) as ws:
                    self._ws = ws
                    self.connections += 1
                    attempt = 0
                    # a new connection: every book of the venue waits for a fresh snapshot
                    self.queue.put_control(("reset", self.source.venue))
                    self.connected.set()
                    put = self.queue.put_message
                    venue = self.source.venue
                    async for raw in ws:
                        self.messages += 1
                        put(venue, raw)
            except (ConnectionClosed, InvalidHandshake, InvalidURI, OSError, asyncio.TimeoutError) as exc:
                self.failures += 1
                log.info("%s: connection lost (%s)", self.source.venue, exc)
            finally:
                self._ws = None
                self.connected.clear()
            if self.stopping:
                break
            lo, hi = self.backoff_s
            delay = min(hi, lo * 2 ** attempt) * (0.5 + 0.5 * self.rng.random())
            attempt += 1
            await asyncio.sleep(delay)

    def request_snapshot(self, symbol: str) -> None:
        """Fetch the REST snapshot of `symbol` (once at a time) and queue it for the monitor."""
        key = symbol.lower()
        if key in self.in_flight or self.stopping:
            return
        self.in_flight.add(key)
        task = asyncio.get_running_loop().create_task(self._snapshot(key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _snapshot(self, symbol: str) -> None:
        url = self.source.snapshot_url(symbol)
        attempt = 0
        try:
            while not self.stopping:
                # subscribe first, snapshot second (Binance's procedure): wait for the socket
                await self.connected.wait()
                try:
                    snap = await asyncio.to_thread(self.fetch, url)
                    if not isinstance(snap, dict) or "lastUpdateId" not in snap:
                        raise ValueError("not a depth snapshot")
                    self.queue.put_control(("snapshot", self.source.venue, symbol, snap))
                    return
                except (OSError, ValueError) as exc:
                    self.snapshot_failures += 1
                    log.info("%s %s: snapshot failed (%s)", self.source.venue, symbol, exc)
                    lo, hi = self.backoff_s
                    await asyncio.sleep(min(hi, lo * 2 ** attempt))
                    attempt += 1
        finally:
            self.in_flight.discard(symbol)

    async def stop(self) -> None:
        self.stopping = True
        if self._ws is not None:
            await self._ws.close()
        for t in list(self._tasks):
            t.cancel()


# --- the replay server --------------------------------------------------------------------------------

@dataclass
class Capture:
    """One capture file as a replay source: its messages with their receive times."""
    path: Path
    market: str
    symbol: str                                   # upper case
    recv_ns: list[int]
    streams: list[str]
    raws: list[bytes]
    snapshot: dict | None
    diff_u: dict[int, int] = field(default_factory=dict)    # message index -> U of that diff
    next_u: dict[int, int | None] = field(default_factory=dict)   # message index -> U of the next diff

    @property
    def depth_stream(self) -> str:
        for s in self.streams:
            if "@depth" in s:
                return s.partition("@")[2]
        return "depth@100ms"


def load_capture(path) -> Capture:
    """Read a Binance raw capture (`<recv ns> <json>` lines, gzip or plain) for replay."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    recv, streams, raws, diff_u = [], [], [], {}
    snapshot = None
    symbol = None
    market = market_from_name(path.name)
    for lineno, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        sp = line.find(b" ")
        if sp <= 0 or not line[:sp].isdigit():
            raise DataError(f"line {lineno} is not '<receive ns> <json>'", file=path.name, rows=[lineno])
        body = line[sp + 1:]
        if not body.startswith(b'{"stream":"'):
            try:
                msg = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise DataError(f"line {lineno} is not valid JSON", file=path.name, rows=[lineno]) from None
            if isinstance(msg, dict) and "lastUpdateId" in msg and snapshot is None:
                snapshot = msg
            continue
        end = body.index(b'"', 11)
        stream = body[11:end].decode()
        if "@depth" in stream:
            data = orjson.loads(body)["data"]
            diff_u[len(raws)] = data["U"]
            if market is None:
                market = "spot" if "pu" not in data else ("coinm" if "ps" in data else "usdm")
        if symbol is None:
            symbol = stream.partition("@")[0].upper()
        recv.append(int(line[:sp]))
        streams.append(stream)
        raws.append(body)
    if not raws:
        raise DataError("no stream messages in the capture", file=path.name)
    order = sorted(diff_u)
    next_u = {i: (diff_u[j] if j is not None else None) for i, j in zip(order, order[1:] + [None])}
    return Capture(path, market or "usdm", symbol or "", recv, streams, raws, snapshot, diff_u, next_u)


class _Client:
    def __init__(self, ws, market: str, streams: set[str], maxsize: int):
        self.ws = ws
        self.market = market
        self.streams = streams
        self.queue: asyncio.Queue = asyncio.Queue(maxsize)
        self.dropped = 0


class ReplayServer:
    """Serve captures over websockets (and their books over HTTP) at `speed` × real time (None:
    as fast as the clients take them)."""

    def __init__(self, paths, *, speed: float | None = 1.0, host: str = "127.0.0.1", port: int = 0,
                 wait_clients: int = 1, loop: bool = False, client_queue: int = 200_000):
        self.paths = [Path(p) for p in paths]
        self.speed = None if speed in (None, 0, float("inf")) else float(speed)
        self.host, self.port = host, port
        self.wait_clients = int(wait_clients)
        self.loop = bool(loop)
        self.client_queue = client_queue
        self.captures: list[Capture] = []
        self.books: dict[tuple[str, str], OrderBook] = {}
        self.next_u: dict[tuple[str, str], int | None] = {}
        self.clients: set[_Client] = set()
        self.sent = 0
        self.position = 0            # messages of the timeline replayed
        self.total = 0
        self.loops = 0
        self.done = asyncio.Event()
        self.started = asyncio.Event()
        self._enough_clients = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()
        self._skip: dict[tuple[str, str], int] = {}
        self._unapplied: dict[tuple[str, str], list] = {}
        self._server = None
        self._producer: asyncio.Task | None = None
        self.snapshot_requests = 0

    # -- setup ---------------------------------------------------------------------------------------

    async def start(self) -> "ReplayServer":
        from websockets.asyncio.server import serve

        self.captures = await asyncio.to_thread(lambda: [load_capture(p) for p in self.paths])
        self._reset_books()
        self.total = sum(len(c.raws) for c in self.captures)
        self._server = await serve(self._handler, self.host, self.port, process_request=self._http,
                                   compression=None, max_size=2**20, ping_interval=None)
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]
        self._producer = asyncio.get_running_loop().create_task(self._produce())
        return self

    def _reset_books(self) -> None:
        for c in self.captures:
            key = (c.market, c.symbol)
            book = self.books[key] = OrderBook(c.market, c.symbol, resync=False)
            if c.snapshot is not None:
                book.on_snapshot(c.snapshot)
            first = min(c.diff_u) if c.diff_u else None
            self.next_u[key] = c.diff_u[first] if first is not None else None

    def sources(self) -> list[VenueSource]:
        """One `VenueSource` per market served, pointing at this server."""
        by_market: dict[str, list[Capture]] = {}
        for c in self.captures:
            by_market.setdefault(c.market, []).append(c)
        out = []
        for market, caps in by_market.items():
            out.append(VenueSource(market, [c.symbol for c in caps], ws_base=f"ws://{self.host}:{self.port}/{market}",
                                   rest_base=f"http://{self.host}:{self.port}/{market}",
                                   depth_stream=caps[0].depth_stream))
        return out

    async def stop(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- HTTP: snapshots -------------------------------------------------------------------------------

    def _http(self, connection, request):
        parts = urllib.parse.urlsplit(request.path)
        segs = [s for s in parts.path.split("/") if s]
        if segs and segs[-1] == "stream":
            return None                                     # the websocket handshake goes on
        if len(segs) >= 2 and segs[0] in DEPTH_PATHS and "/" + "/".join(segs[1:]) == DEPTH_PATHS[segs[0]]:
            query = urllib.parse.parse_qs(parts.query)
            symbol = (query.get("symbol") or [""])[0].upper()
            book = self.books.get((segs[0], symbol))
            if book is None:
                return connection.respond(400, json.dumps({"code": -1121, "msg": "Invalid symbol."}))
            self._apply_pending((segs[0], symbol))
            self.snapshot_requests += 1
            snap = book.snapshot(int((query.get("limit") or ["1000"])[0]))
            nxt = self.next_u.get((segs[0], symbol))
            if segs[0] != "spot" and book.synced and nxt is not None:
                # futures: the first diff applied must straddle lastUpdateId; the book holds every
                # update before the next diff, so that diff's U is a lastUpdateId it straddles
                snap["lastUpdateId"] = nxt
            response = connection.respond(200, orjson.dumps(snap).decode())
            response.headers["Content-Type"] = "application/json"
            return response
        return connection.respond(404, "not found\n")

    def _apply_pending(self, key) -> None:
        book = self.books[key]
        for raw in self._unapplied.pop(key, ()):
            book.on_diff(orjson.loads(raw)["data"])

    # -- websocket -------------------------------------------------------------------------------------

    async def _handler(self, ws) -> None:
        parts = urllib.parse.urlsplit(ws.request.path)
        segs = [s for s in parts.path.split("/") if s]
        market = segs[0] if segs else ""
        streams = set(filter(None, (urllib.parse.parse_qs(parts.query).get("streams") or [""])[0].split("/")))
        client = _Client(ws, market, streams, self.client_queue)
        self.clients.add(client)
        if len(self.clients) >= self.wait_clients:
            self._enough_clients.set()
        closer = asyncio.get_running_loop().create_task(self._wake_on_close(client))
        try:
            while True:
                raw = await client.queue.get()
                if raw is None:
                    break
                await ws.send(raw)
        except Exception:       # a closed socket ends this client; the timeline goes on
            pass
        finally:
            self.clients.discard(client)
            closer.cancel()

    @staticmethod
    async def _wake_on_close(client: _Client) -> None:
        """The sender waits on its queue, not on the socket: wake it when the socket closes."""
        await client.ws.wait_closed()
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)

    async def _produce(self) -> None:
        await self._enough_clients.wait()
        self.started.set()
        shift_ms = 0
        shift_id = 0
        while True:
            timeline = heapq.merge(*[_indexed(c.recv_ns, k) for k, c in enumerate(self.captures)])
            t0_ns = None
            t0_wall = time.monotonic()
            n = 0
            for recv_ns, i, k in timeline:
                cap = self.captures[k]
                if not self._running.is_set():
                    paused = time.monotonic()
                    await self._running.wait()
                    t0_wall += time.monotonic() - paused
                if t0_ns is None:
                    t0_ns = recv_ns
                if self.speed is not None:
                    delay = t0_wall + (recv_ns - t0_ns) / 1e9 / self.speed - time.monotonic()
                    if delay > 0.002:
                        await asyncio.sleep(delay)
                n += 1
                if n % 512 == 0:
                    await asyncio.sleep(0)
                raw = cap.raws[i]
                stream = cap.streams[i]
                key = (cap.market, cap.symbol)
                if i in cap.diff_u:
                    if shift_ms or shift_id:
                        data = _shift(orjson.loads(raw)["data"], shift_ms, shift_id)
                        raw = orjson.dumps({"stream": stream, "data": data})
                    # the server's book is brought up to date when a snapshot is asked for (or
                    # every 10,000 diffs): a replay nobody resyncs costs no book work here
                    pend = self._unapplied.setdefault(key, [])
                    pend.append(raw)
                    if len(pend) >= 10_000:
                        self._apply_pending(key)
                    nxt = cap.next_u[i]
                    self.next_u[key] = nxt + shift_id if nxt is not None else None
                    if self._skip.get(key):
                        self._skip[key] -= 1
                        self.position += 1
                        continue
                elif shift_ms:
                    raw = orjson.dumps({"stream": stream, "data": _shift(orjson.loads(raw)["data"], shift_ms, 0)})
                self._broadcast(cap.market, stream, raw)
                self.position += 1
            self.loops += 1
            if not self.loop:
                break
            # loop: the same messages again, later in time and with higher update ids, so a
            # client's book and clock see one continuous (if repetitive) market
            span_ms = (max(c.recv_ns[-1] for c in self.captures) - min(c.recv_ns[0] for c in self.captures)) // 1_000_000 + 1000
            shift_ms += span_ms
            shift_id += max(max(c.diff_u.values(), default=0) for c in self.captures) - \
                min(min(c.diff_u.values(), default=0) for c in self.captures) + 10_000_000
            await asyncio.sleep(0)
        self.done.set()

    def _broadcast(self, market: str, stream: str, raw) -> None:
        text = raw.decode() if isinstance(raw, bytes) else raw
        for client in self.clients:
            if client.market == market and stream in client.streams:
                try:
                    client.queue.put_nowait(text)
                    self.sent += 1
                except asyncio.QueueFull:
                    client.dropped += 1

    # -- faults (tests) ------------------------------------------------------------------------------

    async def drop_clients(self) -> int:
        """Close every client socket abruptly (as a network drop would); returns how many."""
        n = 0
        for client in list(self.clients):
            client.ws.transport.abort()
            n += 1
        return n

    def skip_diffs(self, market: str, symbol: str, n: int = 1) -> None:
        """Do not send the next `n` diffs of a symbol (the server's book still applies them)."""
        key = (market, symbol.upper())
        self._skip[key] = self._skip.get(key, 0) + n

    def inject(self, market: str, text: str) -> None:
        """Send `text` to every client of `market` as if it were a stream message."""
        for client in self.clients:
            if client.market == market:
                client.queue.put_nowait(text)

    def pause(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()


def _indexed(recv_ns: list[int], k: int):
    for i, r in enumerate(recv_ns):
        yield r, i, k


def _shift(data: dict, shift_ms: int, shift_id: int) -> dict:
    out = dict(data)
    for k in ("E", "T"):
        if k in out and isinstance(out[k], int):
            out[k] += shift_ms
    if shift_id:
        for k in ("U", "u", "pu"):
            if k in out:
                out[k] += shift_id
    return out


# --- our fills ------------------------------------------------------------------------------------------

_NUMERIC = {"quantity", "arrival_price", "exec_price", "cost_bps", "duration_s", "adv", "market_volume",
            "volatility", "spread_bps", "fee_bps", "weight"}


def parse_fill_values(rec: dict) -> dict:
    """Text values of a CSV row / Redis entry to numbers where the column is numeric."""
    out = {}
    for k, v in rec.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        if isinstance(k, bytes):
            k = k.decode("utf-8", "replace")
        if v == "" or v is None:
            continue
        if k in _NUMERIC and isinstance(v, str):
            try:
                v = float(v)
            except ValueError:
                pass        # the monitor refuses it, naming the column
        out[k] = v
    return out


class FileTail:
    """Fills appended to a CSV (header line first) or JSON-lines file, read as they arrive."""

    def __init__(self, path, emit: Callable[[dict], None], *, poll_s: float = 0.2, from_start: bool = True,
                 on_error: Callable[[str], None] | None = None):
        self.path = Path(path)
        self.emit = emit
        self.poll_s = poll_s
        self.from_start = from_start
        self.on_error = on_error or (lambda msg: log.warning("%s", msg))
        self.fh = None
        self.inode = None
        self.head = b""
        self.buffer = b""
        self.header: list[str] | None = None
        self.format: str | None = None          # "csv" | "jsonl", from a file's first line
        self.lines = 0
        self.bad_lines = 0
        self.rotations = 0
        self.stopping = False

    def _open(self, at_end: bool) -> bool:
        try:
            fh = open(self.path, "rb")
        except FileNotFoundError:
            return False
        st = os.fstat(fh.fileno())
        self.fh, self.inode, self.buffer, self.header, self.format = fh, st.st_ino, b"", None, None
        if at_end:
            # skip what is there, but keep a CSV header
            first = fh.readline()
            if first.lstrip()[:1] != b"{" and first.strip():
                self.header = next(csv.reader([first.decode("utf-8", "replace")]))
                self.format = "csv"
            elif first.strip():
                self.format = "jsonl"
            fh.seek(0, os.SEEK_END)
        return True

    def _head(self) -> bytes:
        try:
            with open(self.path, "rb") as fh:
                return fh.read(64)
        except OSError:
            return b""

    def read_available(self) -> int:
        """Read every complete new line; handle rotation; returns the fills emitted."""
        n = 0
        if self.fh is None:
            if not self._open(at_end=not self.from_start):
                return 0
            self.head = self._head()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self._drain()                     # rotated away; the new file is not there yet
        pos = self.fh.tell()
        if st.st_ino == self.inode:
            head = self._head()
            k = min(len(head), len(self.head))
            if st.st_size < pos or head[:k] != self.head[:k]:
                # truncated (copytruncate) and maybe rewritten: start again from the top
                self.fh.close()
                self.rotations += 1
                self._open(at_end=False)
                self.head = head
            n += self._drain()
            if len(self.head) < 64:
                self.head = self._head()
            return n
        # rotated: a new file under the name; the rest of the old one first
        n += self._drain()
        self.fh.close()
        self.fh = None
        self.rotations += 1
        if self._open(at_end=False):
            self.head = self._head()
            n += self._drain()
        return n

    def _drain(self) -> int:
        data = self.fh.read()
        if not data:
            return 0
        data = self.buffer + data
        end = data.rfind(b"\n")
        if end < 0:
            self.buffer = data
            return 0
        self.buffer = data[end + 1:]
        n = 0
        for line in data[:end].split(b"\n"):
            if not line.strip():
                continue
            self.lines += 1
            rec = self._parse(line)
            if rec is not None:
                self.emit(rec)
                n += 1
        return n

    def _parse(self, line: bytes) -> dict | None:
        text = line.decode("utf-8", "replace").strip()
        if self.format is None:
            self.format = "jsonl" if text.startswith("{") else "csv"
        try:
            if self.format == "jsonl":
                rec = json.loads(text)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                return parse_fill_values(rec)
            row = next(csv.reader([text]))
            if self.header is None:
                self.header = [h.strip() for h in row]
                return None
            if len(row) != len(self.header):
                raise ValueError(f"{len(row)} fields, the header has {len(self.header)}")
            return parse_fill_values(dict(zip(self.header, row)))
        except (ValueError, csv.Error) as exc:
            self.bad_lines += 1
            self.on_error(f"{self.path.name}: line {self.lines} skipped ({exc})")
            return None

    async def run(self) -> None:
        while not self.stopping:
            self.read_available()
            await asyncio.sleep(self.poll_s)

    def close(self) -> None:
        self.stopping = True
        if self.fh is not None:
            self.fh.close()
            self.fh = None


class RedisFills:
    """Fills from a Redis stream: `XADD <key> * json '<fill as JSON>'` or one field per column."""

    def __init__(self, url: str, emit: Callable[[dict], None], *, key: str = "execal:fills",
                 start_id: str = "0", block_ms: int = 500, on_error: Callable[[str], None] | None = None):
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        self.key = (query.get("stream") or [key])[0]
        self.url = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
        self.emit = emit
        self.last_id = start_id
        self.block_ms = block_ms
        self.on_error = on_error or (lambda msg: log.warning("%s", msg))
        self.entries = 0
        self.bad_entries = 0
        self.stopping = False
        self.client = None

    async def run(self) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.from_url(self.url)
        attempt = 0
        try:
            while not self.stopping:
                try:
                    reply = await self.client.xread({self.key: self.last_id}, count=1000, block=self.block_ms)
                    attempt = 0
                except (OSError, aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                    self.on_error(f"redis {self.url}: {exc}; retrying")
                    await asyncio.sleep(min(5.0, 0.2 * 2 ** attempt))
                    attempt += 1
                    continue
                for _stream, entries in reply or []:
                    for entry_id, fields in entries:
                        self.last_id = entry_id
                        self.entries += 1
                        rec = self._parse(fields)
                        if rec is not None:
                            self.emit(rec)
        finally:
            await self.client.aclose()

    def _parse(self, fields: dict) -> dict | None:
        try:
            if b"json" in fields or "json" in fields:
                rec = json.loads(fields.get(b"json", fields.get("json")))
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                return parse_fill_values(rec)
            return parse_fill_values(dict(fields))
        except ValueError as exc:
            self.bad_entries += 1
            self.on_error(f"redis entry skipped ({exc})")
            return None


def read_fills_file(path) -> list[dict]:
    """Every fill of a CSV / JSON-lines file at once (the tail's parser, for tests and tools)."""
    out: list[dict] = []
    tail = FileTail(path, out.append)
    tail.read_available()
    tail.close()
    return out


