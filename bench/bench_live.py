"""Benchmarks of the live monitor (execal.live) on the USD-M BTCUSDT capture (93,953 messages).

1. End to end, the monitor's own code path from a raw websocket message on: parse (orjson), route,
   incremental book by update-id rules, one-second features (mid, spread, depth within 10 bps,
   walk-the-book cost of 1 and 10 BTC, EWMA and bipower volatility), and 1,000 of our fills with a
   known change in impact through the online model (prediction and interval, Kalman and SGD steps),
   the rolling metrics and the drift detectors (the refits run in the background thread). Rate in
   messages per second against the parse-only rate of the same file in the same run (orjson.loads
   of every message, nothing kept). Floor: 100,000 messages per second (the floor is a time: the
   messages / 100,000). The cyclic GC is paused as the runner pauses it. Rows 1 and 2 are CPU
   seconds of this process (the machine is shared with other jobs; a core's time is the floor's
   unit), the wall time is in the note.
2. p99 of the per-message processing time over the same replay (perf_counter_ns around each
   `Monitor.on_message`), floor 1 ms; the mean is in the note.
3. Through the socket: the replay server and the websockets client in one process at full speed
   (the path of `execal monitor capture.gz --speed max`), against the engine-only rate above.
4. Memory over a looped replay: the capture ten times in a row (an hour of market time; each loop
   shifted later in time with higher update ids so the book and the clock run on), RSS after the
   first loop and after the last (flat: growth under 10 %).
"""
from __future__ import annotations

import asyncio
import gc
import gzip
import os
import time
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from bench.common import row
from execal.live.engine import Monitor, MonitorSettings
from execal.live.runner import RunOptions, run_with_replay
from execal.live.sources import _shift
from execal.live.synthetic import change_point_fills, to_records
from execal.models.data.binance import read_capture
from execal.models.impact.fit import Calibrator

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EXECAL_SHARED_DATA", ROOT.parent / "shared" / "data"))
CAPTURE = SHARED / "binance-raw" / "usdm_btcusdt_20240808.gz"
FLOOR_MSG_S = 100_000
FLOOR_P99_S = 1e-3
VENUE = "binance-usdm"


def _lines() -> list[bytes]:
    return [line[line.index(b" ") + 1:] for line in gzip.decompress(CAPTURE.read_bytes()).split(b"\n") if line]


def parse_only(raws: list[bytes]) -> float:
    """CPU seconds to parse every message (see `engine_pass` on CPU time)."""
    loads = orjson.loads
    t0 = time.process_time()
    for r in raws:
        loads(r)
    return time.process_time() - t0


def _scenario(n_fills: int):
    start = pd.Timestamp("2024-08-08T23:54:20Z").value
    end = pd.Timestamp("2024-08-08T23:59:55Z").value
    pre, _ = change_point_fills(2000, start - 86_400 * 10**9, start, seed=1)
    config = Calibrator(model="sqrt", loss="linear").fit(pre).to_config()
    fills, _ = change_point_fills(n_fills, start, end, change_ns=start + (end - start) // 2,
                                  params_after={"Y": 1.4}, seed=2)
    return config, to_records(fills)


def _monitor(config) -> Monitor:
    mon = Monitor(config, settings=MonitorSettings(walk_sizes=(1.0, 10.0)), background=True)
    mon.add_market(VENUE, "BTCUSDT", "usdm")
    return mon


def engine_pass(raws, config, fills, *, timed: bool = False):
    """(CPU seconds, per-message ns or None, monitor) of one pass of the monitor over the capture.

    CPU time of this process (`time.process_time`), not wall time: the benchmark machine is shared,
    and "messages per second on one core" is what one core spends; the refit worker is another
    process and is not counted (it runs beside the loop, not in it)."""
    mon = _monitor(config)
    for f in fills:
        mon.on_fill(f)
    state = mon.markets[(VENUE, "BTCUSDT")]
    on = mon.on_message
    pending = mon.pending
    per = np.empty(len(raws), dtype=np.int64) if timed else None
    clock = time.perf_counter_ns
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        t0 = time.process_time()
        w0 = time.perf_counter()
        for i, raw in enumerate(raws):
            if raw[:9] != b'{"stream"':
                mon.on_snapshot(VENUE, "BTCUSDT", orjson.loads(raw))
                continue
            if timed:
                a = clock()
                on(VENUE, raw)
                per[i] = clock() - a
            else:
                on(VENUE, raw)
            if pending and state.last_time_ns is not None and state.last_time_ns >= pending[0].t_ns:
                mon.poll()
        seconds = time.process_time() - t0
        mon.wall_s = time.perf_counter() - w0
        mon.finish()          # waits for the refit process (not the monitor's own time)
    finally:
        gc.enable()
        gc.unfreeze()
    mon.close()
    if timed:
        per = per[[i for i, r in enumerate(raws) if r[:9] == b'{"stream"']]
    return seconds, per, mon


def _timed(fn) -> float:
    """CPU seconds of `fn()`."""
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def socket_pass(config) -> tuple[float, dict]:
    mon = Monitor(config, settings=MonitorSettings(walk_sizes=(1.0, 10.0)), background=True)
    t0 = time.perf_counter()
    out = asyncio.run(run_with_replay(mon, [str(CAPTURE)], speed=None, options=RunOptions(status_every_s=3600)))
    mon.close()
    return time.perf_counter() - t0, out


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def looped(raws, config, loops: int) -> tuple[float, list[float], int]:
    """The capture `loops` times through one monitor (times and ids shifted per loop, each message
    re-encoded as it is fed: nothing per loop is kept by the bench itself)."""
    stream = [r for r in raws if r[:9] == b'{"stream"']
    snapshot = orjson.loads(next(r for r in raws if r[:9] != b'{"stream"'))
    diffs = [orjson.loads(r)["data"] for r in stream if b"@depth" in r[:40]]
    times = [d.get("T") or d["E"] for d in diffs]
    span_ms = max(times) - min(times) + 1000
    id_span = max(d["u"] for d in diffs) - min(d["U"] for d in diffs) + 10_000_000
    first_u = diffs[0]["U"]
    del diffs
    mon = _monitor(config)
    rss = []
    n = 0
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    gc.disable()
    loads, dumps = orjson.loads, orjson.dumps
    try:
        for k in range(loops):
            if k:
                # the stream jumps: the venue reconnects and resyncs from the book's own snapshot
                snap = mon.markets[(VENUE, "BTCUSDT")].book.snapshot()
                snap["lastUpdateId"] = first_u + k * id_span
                mon.reset_venue(VENUE)
                mon.on_snapshot(VENUE, "BTCUSDT", snap)
            else:
                mon.on_snapshot(VENUE, "BTCUSDT", snapshot)
            dt, did = k * span_ms, k * id_span
            for r in stream:
                if k:
                    m = loads(r)
                    r = dumps({"stream": m["stream"], "data": _shift(m["data"], dt, did)})
                mon.on_message(VENUE, r)
                n += 1
            gc.collect()          # the runner collects every few seconds
            rss.append(rss_mb())
    finally:
        gc.enable()
        gc.unfreeze()
    mon.close()
    return time.perf_counter() - t0, rss, n


def run(quick: bool = False) -> list[dict]:
    raws = _lines()
    n_msgs = sum(1 for r in raws if r[:9] == b'{"stream"')
    config, fills = _scenario(200 if quick else 1000)
    engine_pass(raws[:2000], config, fills[:10])                   # warm-up: numba, imports
    parse_s = min(parse_only(raws) for _ in range(3))
    best = None
    for _ in range(1 if quick else 3):
        s, _, mon = engine_pass(raws, config, fills)
        if best is None or s < best[0]:
            best = (s, mon)
    engine_s, mon = best
    offline_s = min(_timed(lambda: read_capture(CAPTURE, levels=20)) for _ in range(1 if quick else 3))
    nofill_s = min(engine_pass(raws, config, [])[0] for _ in range(1 if quick else 3))
    c = mon.counts
    rows = [row("live: monitor end to end, USD-M capture (93,953 msgs, 1,000 fills)", engine_s,
                floor_s=n_msgs / FLOOR_MSG_S, baseline="orjson.loads of every message (parse only)",
                baseline_s=parse_s,
                note=f"{n_msgs / engine_s:,.0f} msg/s (CPU time; wall {mon.wall_s:.2f} s) vs parse-only "
                     f"{len(raws) / parse_s:,.0f} msg/s; "
                     f"{c['ticks']} ticks, {c['fills_used']} fills, {c['alarms']} alarms, "
                     f"{c['recalibrations']} refits; floor {FLOOR_MSG_S:,} msg/s"),
            row("live: monitor without fills (market state only), same capture", nofill_s,
                floor_s=n_msgs / FLOOR_MSG_S, baseline="the offline reader read_capture (same book rules)",
                baseline_s=offline_s,
                note=f"{n_msgs / nofill_s:,.0f} msg/s; the offline reader {len(raws) / offline_s:,.0f} msg/s "
                     "(whole file, one pass, 20 levels a second)")]
    _, per, _ = engine_pass(raws, config, fills, timed=True)
    p99 = float(np.percentile(per, 99)) / 1e9
    rows.append(row("live: per-message processing p99 (same replay)", p99, floor_s=FLOOR_P99_S,
                    note=f"p99 {p99 * 1e6:.0f} µs, mean {per.mean() / 1e3:.1f} µs, p50 {np.percentile(per, 50) / 1e3:.1f} µs, "
                         f"p99.9 {np.percentile(per, 99.9) / 1e3:.0f} µs, max {per.max() / 1e6:.1f} ms "
                         "(the second-boundary ticks: depth, walk, vol)"))
    if not quick:
        sock_s, out = socket_pass(config)
        rows.append(row("live: through the socket (replay server + websockets client, full speed)", sock_s,
                        baseline="monitor end to end without the socket (row 1)", baseline_s=engine_s,
                        note=f"{out['counts']['messages'] / sock_s:,.0f} msg/s; "
                             f"{out['counts']['messages']:,} messages, gaps {out['counts']['gaps']}"))
    loops = 3 if quick else 10
    loop_s, rss, n = looped(raws, config, loops)
    growth = rss[-1] / rss[0] - 1
    rows.append(row(f"live: looped replay x{loops} ({loops * 6} min of market), memory", loop_s,
                    note=f"RSS {rss[0]:.0f} MB after loop 1, {rss[-1]:.0f} MB after loop {loops} "
                         f"({growth:+.1%}; {'flat' if growth < 0.10 else 'GROWS'}); {n / loop_s:,.0f} msg/s"))
    return rows


if __name__ == "__main__":
    for r in run(quick=bool(os.environ.get("QUICK"))):
        print(r)
