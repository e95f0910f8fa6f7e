"""Run a monitor: sockets, fills, the consumer, status, control, record; one asyncio loop.

`run(...)` is what `execal monitor` and the dashboard's background process execute:

* the sources' `StreamClient`s put messages on one bounded `FeedQueue`; the consumer takes them in
  batches and calls the `Monitor` (one thread: the monitor's state needs no locks); after each batch
  it asks the clients for the snapshots the monitor needs (new connection, update-id gap);
* fills come from a `FileTail` or `RedisFills` straight into the monitor (which queues them until
  their market has caught up);
* a status line every `status_every_s` seconds (a callable: stderr for the CLI);
* a state directory (optional) that a reader in another process — the dashboard — follows:
  status.json (atomically replaced), ticks.jsonl and fills.jsonl (appended, one object a line),
  events.jsonl (the event log), history/ (config versions), and control.json which this loop
  polls: {"paused": bool, "stop": bool, "switch": version, "refit": reason, "seq": n};
* `Recorder` (optional): every message as received, in the capture format, rotated hourly.

The cyclic garbage collector is paused while messages are processed (parsed JSON has no cycles;
a collection pass over the books costs more than the messages) and run explicitly every
`gc_every_s` seconds, so memory stays bounded.
"""
from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from execal.live.engine import Monitor
from execal.live.record import Recorder
from execal.live.sources import FeedQueue, FileTail, RedisFills, ReplayServer, StreamClient, VenueSource
from execal.models.core.jsonable import clean


@dataclass
class RunOptions:
    status_every_s: float = 5.0
    max_queue: int = 100_000
    batch: int = 2000
    gc_every_s: float = 10.0
    duration_s: float | None = None          # stop after this many seconds (None: run until stopped)
    stop_when_replay_done: bool = True
    state_dir: Path | None = None
    tick_every: int = 1                       # write one tick in N to ticks.jsonl (per market)
    backoff_s: tuple[float, float] = (0.2, 10.0)


class StateWriter:
    """The files a dashboard follows (see the module docstring)."""

    TICK_FIELDS = ("t_ns", "venue", "symbol", "mid", "spread_bps", "sigma_ewma", "sigma_bipower",
                   "p_regime", "regime", "walk_buy_bps", "walk_sell_bps", "adv")

    def __init__(self, directory: Path, tick_every: int = 1):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ticks = open(self.dir / "ticks.jsonl", "a", encoding="utf-8")
        self.fills = open(self.dir / "fills.jsonl", "a", encoding="utf-8")
        self.tick_every = max(1, int(tick_every))
        self._n: dict[tuple, int] = {}

    def tick(self, tick: dict) -> None:
        key = (tick["venue"], tick["symbol"])
        n = self._n.get(key, 0)
        self._n[key] = n + 1
        if n % self.tick_every:
            return
        row = {k: tick[k] for k in self.TICK_FIELDS if k in tick}
        row["wall"] = time.time()             # when it was processed: the dashboard's display lag
        row["depth"] = {k: v for k, v in tick.items() if k.startswith("depth_")}
        self.ticks.write(json.dumps(clean(row), separators=(",", ":")) + "\n")

    def fill(self, record: dict) -> None:
        record = {**record, "wall": time.time()}
        self.fills.write(json.dumps(clean(record), separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self.ticks.flush()
        self.fills.flush()

    def status(self, status: dict) -> None:
        tmp = self.dir / "status.json.tmp"
        tmp.write_text(json.dumps(clean(status)), encoding="utf-8")
        os.replace(tmp, self.dir / "status.json")

    def control(self) -> dict:
        p = self.dir / "control.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def close(self) -> None:
        self.ticks.close()
        self.fills.close()


@dataclass
class Runner:
    monitor: Monitor
    sources: list[VenueSource]
    options: RunOptions = field(default_factory=RunOptions)
    fills: list[str] = field(default_factory=list)            # paths or redis:// URLs
    replay: ReplayServer | None = None
    recorder: Recorder | None = None
    status_out: Callable[[str], None] | None = None

    def __post_init__(self):
        self.stop_event: asyncio.Event | None = None
        self.paused = False
        self.clients: dict[str, StreamClient] = {}
        self.fill_sources: list = []
        self.queue: FeedQueue | None = None
        self.writer: StateWriter | None = None
        self.started = time.time()
        self.processed = 0
        self._control_seq = None

    def request_stop(self) -> None:
        if self.stop_event is not None:
            self.stop_event.set()

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        opts = self.options
        mon = self.monitor
        self.queue = FeedQueue(opts.max_queue)
        if opts.state_dir is not None:
            self.writer = StateWriter(opts.state_dir, opts.tick_every)
            mon.tick_sinks.append(self.writer.tick)
            mon.fill_sinks.append(self.writer.fill)
            (Path(opts.state_dir) / "pid").write_text(str(os.getpid()))
        for src in self.sources:
            for sym in src.symbols:
                if (src.venue, sym.upper()) not in mon.markets:
                    mon.add_market(src.venue, sym, src.market)
            self.clients[src.venue] = StreamClient(src, self.queue, backoff_s=opts.backoff_s)
        for spec in self.fills:
            if str(spec).startswith(("redis://", "rediss://", "unix://")):
                self.fill_sources.append(RedisFills(spec, mon.on_fill, on_error=self._fill_error))
            else:
                self.fill_sources.append(FileTail(spec, mon.on_fill, on_error=self._fill_error))
        tasks = [loop.create_task(c.run(), name=f"client:{v}") for v, c in self.clients.items()]
        tasks += [loop.create_task(f.run(), name="fills") for f in self.fill_sources]
        consumer = loop.create_task(self._consume(), name="consumer")
        housekeeping = loop.create_task(self._housekeeping(), name="housekeeping")
        mon.emit("start", sources=[{"venue": s.venue, "symbols": s.symbols, "url": s.ws_url} for s in self.sources],
                 fills=[str(f) for f in self.fills])
        gc_was = gc.isenabled()
        gc.collect()
        gc.freeze()          # what exists now (modules, the captures) is never scanned again
        gc.disable()
        try:
            waiters = [loop.create_task(self.stop_event.wait())]
            if self.replay is not None and opts.stop_when_replay_done:
                waiters.append(loop.create_task(self._replay_finished()))
            if opts.duration_s:
                waiters.append(loop.create_task(asyncio.sleep(opts.duration_s)))
            done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()
        finally:
            for c in self.clients.values():
                await c.stop()
            for f in self.fill_sources:
                if isinstance(f, FileTail):
                    f.read_available()          # fills already written are not lost at the end
                f.stopping = True
            for t in tasks + [housekeeping]:
                t.cancel()
            await asyncio.gather(*tasks, housekeeping, return_exceptions=True)
            # what is queued is still processed: a clean end
            self._drain_all()
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            mon.finish()
            mon.emit("stop", counts=mon.counts)
            gc.unfreeze()
            if gc_was:
                gc.enable()
            if self.writer is not None:
                self.writer.flush()
                self.writer.status(self.status())
                self.writer.close()
            if self.recorder is not None:
                self.recorder.close()
        return self.summary()

    async def _replay_finished(self) -> None:
        await self.replay.done.wait()
        # every sent message reaches the consumer, then the fills that wait for them
        while True:
            await asyncio.sleep(0.05)
            clients_empty = all(c.queue.empty() for c in self.replay.clients)
            if clients_empty and self.queue.items.empty():
                await asyncio.sleep(0.2)
                if all(c.queue.empty() for c in self.replay.clients) and self.queue.items.empty():
                    return

    def _fill_error(self, message: str) -> None:
        self.monitor.emit("fill_source", error=message)

    def _handle(self, item: tuple) -> None:
        mon = self.monitor
        kind = item[0]
        if kind == "msg":
            if self.recorder is not None:
                self.recorder.message(item[1], item[2], mon)
            mon.on_message(item[1], item[2])
        elif kind == "snapshot":
            _, venue, symbol, snap = item
            if self.recorder is not None:
                self.recorder.snapshot(venue, symbol, snap)
            mon.on_snapshot(venue, symbol, snap)
        elif kind == "reset":
            mon.reset_venue(item[1])
            mon.emit("resync", venue=item[1], reason="connected: waiting for fresh snapshots")

    def _after_batch(self) -> None:
        mon = self.monitor
        mon.counts["queue_dropped"] = self.queue.dropped
        for venue, sym in list(mon.resync_needed):
            client = self.clients.get(venue)
            if client is not None and sym.lower() not in client.in_flight:
                mon.counts["resyncs"] += 1
                client.request_snapshot(sym)
        mon.poll()

    def _drain_all(self) -> None:
        q = self.queue.items
        while not q.empty():
            self._handle(q.get_nowait())
        self._after_batch()

    async def _consume(self) -> None:
        q = self.queue.items
        batch = self.options.batch
        while True:
            if self.paused:
                await asyncio.sleep(0.05)
                continue
            item = await q.get()
            self.monitor.wall = time.monotonic()
            self._handle(item)
            n = 1
            while n < batch and not q.empty():
                self._handle(q.get_nowait())
                n += 1
            self.processed += n
            self._after_batch()
            await asyncio.sleep(0)

    async def _housekeeping(self) -> None:
        opts = self.options
        last_status = last_gc = time.monotonic()
        while True:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            self.monitor.poll()
            if self.writer is not None:
                self.writer.flush()
                self.writer.status(self.status())
                self._control(self.writer.control())
            if self.recorder is not None:
                self.recorder.flush()
            if now - last_status >= opts.status_every_s:
                last_status = now
                if self.status_out is not None:
                    self.status_out(self.status_line())
            if now - last_gc >= opts.gc_every_s:
                last_gc = now
                gc.collect()

    def _control(self, ctl: dict) -> None:
        seq = ctl.get("seq")
        if seq is None or seq == self._control_seq:
            return
        self._control_seq = seq
        mon = self.monitor
        if "paused" in ctl and bool(ctl["paused"]) != self.paused:
            self.paused = bool(ctl["paused"])
            if self.replay is not None:
                (self.replay.pause if self.paused else self.replay.resume)()
            mon.emit("paused" if self.paused else "resumed", by="user")
        if ctl.get("switch") is not None:
            try:
                mon.switch_to(ctl["switch"], by="user", reason=ctl.get("reason") or "user confirmed")
            except ValueError as exc:
                mon.emit("switch_failed", version=ctl["switch"], error=str(exc))
        if ctl.get("refit"):
            mon.start_refit(str(ctl["refit"]))
        if ctl.get("stop"):
            self.request_stop()

    def status(self) -> dict:
        st = self.monitor.status()
        st["runner"] = {"paused": self.paused, "queue": self.queue.items.qsize() if self.queue else 0,
                        "queue_high_water": self.queue.high_water if self.queue else 0,
                        "queue_dropped": self.queue.dropped if self.queue else 0,
                        "processed": self.processed, "wall_s": time.time() - self.started,
                        "clients": {v: {"connections": c.connections, "failures": c.failures,
                                        "messages": c.messages, "snapshot_failures": c.snapshot_failures}
                                    for v, c in self.clients.items()},
                        "fills": [{"source": str(getattr(f, "path", getattr(f, "url", "?"))),
                                   "lines": getattr(f, "lines", getattr(f, "entries", 0)),
                                   "bad": getattr(f, "bad_lines", getattr(f, "bad_entries", 0)),
                                   "rotations": getattr(f, "rotations", 0)} for f in self.fill_sources]}
        if self.replay is not None:
            st["replay"] = {"position": self.replay.position, "total": self.replay.total,
                            "speed": self.replay.speed, "loops": self.replay.loops,
                            "done": self.replay.done.is_set()}
        return st

    def status_line(self) -> str:
        line = self.monitor.status_line()
        if self.replay is not None:
            line += f" | replay {self.replay.position}/{self.replay.total}"
        if self.paused:
            line += " | PAUSED"
        return line

    def summary(self) -> dict:
        out = self.monitor.summary()
        out["runner"] = self.status()["runner"]
        out["wall_s"] = time.time() - self.started
        if self.replay is not None:
            out["replay"] = self.status()["replay"]
        return clean(out)


async def run_with_replay(monitor: Monitor, captures, *, speed: float | None = None, fills=(),
                          options: RunOptions | None = None, loop: bool = False,
                          status_out=None, recorder: Recorder | None = None,
                          on_ready: Callable[["Runner"], None] | None = None) -> dict:
    """Serve `captures` locally and monitor them through the websocket client (one code path)."""
    server = ReplayServer(captures, speed=speed, loop=loop)
    await server.start()
    sources = server.sources()
    server.wait_clients = len(sources)
    runner = Runner(monitor, sources, options or RunOptions(), list(fills), replay=server,
                    recorder=recorder, status_out=status_out)
    if on_ready is not None:
        on_ready(runner)
    try:
        return await runner.run()
    finally:
        await server.stop()

