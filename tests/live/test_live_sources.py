"""Sources end to end: the replay server and the websocket client on real captures, the faults
(socket drop, update-id gap, malformed message, slow consumer), the fills file tail (rotation),
the Redis stream (a real redis-server on a free port) and the recorder (read back by the file reader).

Replays use prefixes of the shared captures (the first N lines, snapshot included) written to a
temporary directory, so each test streams a few thousand messages through a real socket.
"""
from __future__ import annotations

import asyncio
import threading
import gzip
import json
import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

from execal.live.engine import Monitor, MonitorSettings
from execal.live.record import NS_PER_HOUR, Recorder
from execal.live.runner import RunOptions, Runner, run_with_replay
from execal.live.sources import FileTail, RedisFills, ReplayServer, read_fills_file
from execal.models.data.binance import read_capture
from execal.models.data.orderbook import OrderBook

pytestmark = pytest.mark.shared_data


def prefix(shared_data, tmp_path, name: str, lines: int) -> str:
    src = shared_data / "binance-raw" / name
    out = tmp_path / name
    with gzip.open(src, "rb") as fh, gzip.open(out, "wb") as dst:
        for i, line in enumerate(fh):
            if i >= lines:
                break
            dst.write(line)
    return str(out)


def offline_book(path) -> OrderBook:
    """The whole file through an offline book (the reference end state)."""
    book = None
    with gzip.open(path, "rb") as fh:
        for line in fh:
            msg = json.loads(line[line.index(b" ") + 1:])
            if "stream" not in msg:
                if book is None:
                    book = OrderBook("spot" if "spot" in str(path) else "usdm", resync=False)
                book.on_snapshot(msg)
            elif "@depth" in msg["stream"]:
                if book is None:
                    book = OrderBook("spot" if "pu" not in msg["data"] else "usdm", resync=False)
                book.on_diff(msg["data"])
    return book


def run(coro, timeout=240):
    """Run ``coro`` on a fresh event loop in its own thread.

    In the whole suite the browser tests' Playwright (sync API) keeps an
    event loop running on the main thread for the session, and
    ``asyncio.run`` refuses to start inside a running loop.
    """
    out = {}

    def target():
        try:
            out["value"] = asyncio.run(asyncio.wait_for(coro, timeout))
        except BaseException as exc:  # re-raised on the test's thread
            out["error"] = exc

    thread = threading.Thread(target=target, name="live-test-loop")
    thread.start()
    thread.join(timeout + 30)
    if thread.is_alive():
        raise TimeoutError(f"live test loop still running after {timeout + 30} s")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_replay_through_the_socket_equals_the_offline_rebuild(shared_data, tmp_path):
    files = [prefix(shared_data, tmp_path, "usdm_btcusdt_20240808.gz", 12_000),
             prefix(shared_data, tmp_path, "spot_btcusdt_20240808.gz", 8_000)]
    mon = Monitor(None, settings=MonitorSettings(levels=20, sample_levels=20, history=100_000), background=False)
    out = run(run_with_replay(mon, files, speed=None))
    assert out["counts"]["messages"] == 12_000 - 1 + 8_000 - 1          # every stream message, in order
    assert out["counts"]["gaps"] == 0 and out["counts"]["malformed"] == 0
    for path, key in zip(files, [("binance-usdm", "BTCUSDT"), ("binance-spot", "BTCUSDT")]):
        book = read_capture(path, levels=20).book
        # the live book starts at the server's snapshot (taken when the client asked: at full
        # speed, later than the capture's own); from there on it equals the offline rebuild
        ticks = [t for t in mon.markets[key].ticks if "levels" in t]
        t_on = np.array([t["t_ns"] for t in ticks])
        t_off = book["timestamp"].dt.tz_localize(None).to_numpy().astype(np.int64)
        assert len(ticks) >= 10 and t_on[-1] == t_off[-1]
        rows = np.searchsorted(t_off, t_on)
        np.testing.assert_array_equal(t_off[rows], t_on)
        on = np.array([t["levels"][0] for t in ticks])
        np.testing.assert_array_equal(on, book[[f"bid_price_{i}" for i in range(20)]].to_numpy()[rows])
        on = np.array([t["levels"][3] for t in ticks])
        np.testing.assert_array_equal(on, book[[f"ask_size_{i}" for i in range(20)]].to_numpy()[rows])


async def _replay_with(files, mon, fault, *, speed, options=None):
    server = ReplayServer(files, speed=speed)
    await server.start()
    sources = server.sources()
    server.wait_clients = len(sources)
    runner = Runner(mon, sources, options or RunOptions(backoff_s=(0.05, 0.5)), replay=server)
    task = asyncio.get_running_loop().create_task(runner.run())
    await server.started.wait()
    await fault(server, runner)
    out = await task
    await server.stop()
    return out, server, runner


def _assert_same_book(mon, key, path, depth=200):
    """The live book's top `depth` levels a side equal the offline rebuild's (a REST snapshot has
    1000 levels a side: what lies deeper is not known after a resync, on Binance as here)."""
    ref = offline_book(path)
    book = mon.markets[key].book
    assert book.ready
    for side in range(4):
        np.testing.assert_array_equal(book.levels(depth)[side], ref.levels(depth)[side])


def test_socket_drop_reconnects_with_backoff_and_a_fresh_snapshot(shared_data, tmp_path):
    path = prefix(shared_data, tmp_path, "usdm_btcusdt_20240808.gz", 15_000)
    mon = Monitor(None, background=False)

    async def drop(server, runner):
        while server.position < 5_000:
            await asyncio.sleep(0.05)
        assert await server.drop_clients() == 1

    out, server, runner = run(_replay_with([path], mon, drop, speed=30))
    client = runner.clients["binance-usdm"]
    assert client.connections == 2 and client.failures == 1
    assert mon.counts["connections"] == 2 and mon.counts["snapshots"] == 2
    assert server.snapshot_requests == 2
    # messages lost during the drop, yet the book is whole again: equal to the offline rebuild
    assert mon.counts["messages"] < 15_000 - 1
    _assert_same_book(mon, ("binance-usdm", "BTCUSDT"), path)
    kinds = [e["kind"] for e in mon.events.recent]
    assert kinds.count("resync") == 2


def test_update_id_gap_resyncs_and_is_counted(shared_data, tmp_path):
    path = prefix(shared_data, tmp_path, "usdm_btcusdt_20240808.gz", 15_000)
    mon = Monitor(None, background=False)

    async def gap(server, runner):
        while server.position < 4_000:
            await asyncio.sleep(0.02)
        server.skip_diffs("usdm", "BTCUSDT", 2)

    run(_replay_with([path], mon, gap, speed=40))
    assert mon.counts["gaps"] == 1 and mon.markets[("binance-usdm", "BTCUSDT")].book.counts["gaps"] == 1
    assert mon.counts["snapshots"] == 2 and mon.counts["resyncs"] >= 2
    assert any(e["kind"] == "resync" and e.get("reason") == "update-id gap" for e in mon.events.recent)
    _assert_same_book(mon, ("binance-usdm", "BTCUSDT"), path)


def test_malformed_messages_are_counted_and_skipped(shared_data, tmp_path):
    path = prefix(shared_data, tmp_path, "usdm_btcusdt_20240808.gz", 8_000)
    mon = Monitor(None, background=False)

    async def garbage(server, runner):
        while server.position < 2_000:
            await asyncio.sleep(0.02)
        server.inject("usdm", "this is not json")
        server.inject("usdm", '{"stream":"btcusdt@trade","data":{"p":"oops","q":"1","T":1}}')
        server.inject("usdm", '{"stream":"btcusdt@bookTicker"}')

    run(_replay_with([path], mon, garbage, speed=60))
    assert mon.counts["malformed"] == 3
    assert mon.counts["messages"] == 8_000 - 1 + 3
    errors = [e for e in mon.events.recent if e["kind"] == "malformed"]
    assert len(errors) == 3 and "JSONDecodeError" in errors[0]["error"]
    _assert_same_book(mon, ("binance-usdm", "BTCUSDT"), path)


def test_slow_consumer_drops_at_the_bounded_queue(shared_data, tmp_path):
    path = prefix(shared_data, tmp_path, "usdm_btcusdt_20240808.gz", 6_000)
    mon = Monitor(None, background=False)
    inner = mon.on_message
    calls = {"n": 0}

    def slow(venue, raw):
        calls["n"] += 1
        if calls["n"] % 50 == 0:
            time.sleep(0.005)              # the consumer falls behind the socket
        inner(venue, raw)

    mon.on_message = slow

    async def nothing(server, runner):
        pass

    out, server, runner = run(_replay_with([path], mon, nothing, speed=None,
                                           options=RunOptions(max_queue=300, batch=100)))
    q = runner.queue
    client = runner.clients["binance-usdm"]
    assert q.dropped > 0 and q.high_water <= 300
    # every message the socket delivered was either processed or dropped and counted
    assert mon.counts["messages"] + q.dropped == client.messages
    assert out["counts"]["queue_dropped"] == q.dropped
    # a dropped diff after the book synced is a gap, and each gap asks for a fresh snapshot
    book = mon.markets[("binance-usdm", "BTCUSDT")].book
    assert mon.counts["gaps"] == book.counts["gaps"]
    assert mon.counts["snapshots"] >= 1 + mon.counts["gaps"] - int(book.needs_snapshot)


def test_file_tail_reads_appends_and_survives_rotation(tmp_path):
    path = tmp_path / "fills.csv"
    got = []
    tail = FileTail(path, got.append)
    assert tail.read_available() == 0                      # no file yet
    path.write_text("timestamp,symbol,side,quantity\n2024-01-01T00:00:00Z,BTCUSDT,buy,1.5\n2024-01-01T00:00:01Z,BT")
    assert tail.read_available() == 1 and got[0]["quantity"] == 1.5 and got[0]["side"] == "buy"
    with open(path, "a") as fh:
        fh.write("CUSDT,sell,2\n")                          # the partial line completes
    assert tail.read_available() == 1 and got[1]["symbol"] == "BTCUSDT"
    # rotation: the old file is renamed after one more line; a new file (new header) appears
    with open(path, "a") as fh:
        fh.write("2024-01-01T00:00:02Z,BTCUSDT,buy,3\n")
    os.rename(path, tmp_path / "fills.csv.1")
    path.write_text("timestamp,side,quantity,symbol\n2024-01-01T00:00:03Z,sell,4,ETHUSDT\n")
    assert tail.read_available() == 2
    assert [f["quantity"] for f in got] == [1.5, 2.0, 3.0, 4.0] and got[3]["symbol"] == "ETHUSDT"
    assert tail.rotations == 1
    # truncation (copytruncate): read from the start again; JSON lines and a bad line
    path.write_text('{"timestamp": "2024-01-01T00:00:04Z", "symbol": "X", "quantity": "5"}\n[1, 2]\n')
    assert tail.read_available() == 1 and got[4]["quantity"] == 5.0 and tail.bad_lines == 1
    assert tail.rotations == 2
    tail.close()
    assert len(read_fills_file(tmp_path / "fills.csv.1")) == 3


@pytest.fixture
def redis_url(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed (Debian package redis-server)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_redis_stream_fills(redis_url):
    import redis

    r = redis.Redis.from_url(redis_url)
    r.xadd("execal:fills", {"json": json.dumps({"timestamp": "2024-08-08T23:55:00Z", "symbol": "BTCUSDT",
                                                 "side": "buy", "quantity": 0.5, "exec_price": 61000.5})})
    r.xadd("execal:fills", {"timestamp": "2024-08-08T23:55:01Z", "symbol": "BTCUSDT", "side": "sell",
                            "quantity": "0.25"})
    r.xadd("execal:fills", {"json": "{broken"})
    got = []

    async def main():
        src = RedisFills(redis_url, got.append, block_ms=100)
        task = asyncio.get_running_loop().create_task(src.run())
        deadline = time.monotonic() + 20
        while len(got) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if len(got) == 2:
                r.xadd("execal:fills", {"json": json.dumps({"symbol": "ETHUSDT", "quantity": 7})})
        src.stopping = True
        await asyncio.wait_for(task, 5)
        return src

    src = run(main(), 30)
    assert [g["quantity"] for g in got] == [0.5, 0.25, 7.0] and got[1]["side"] == "sell"
    assert src.bad_entries == 1 and src.entries == 4


def test_recorder_writes_captures_the_reader_reads_rotated_hourly(shared_data, tmp_path):
    path = prefix(shared_data, tmp_path, "usdm_btcusdt_20240808.gz", 6_000)
    rec_dir = tmp_path / "rec"
    clock = {"n": 0}
    hour0 = 480_000 * NS_PER_HOUR

    def fake_clock():
        clock["n"] += 1
        # the first 3,000 lines in one hour, the rest in the next
        return hour0 + (NS_PER_HOUR if clock["n"] > 3_000 else 0) + clock["n"]

    recorder = Recorder(rec_dir, clock=fake_clock)
    mon = Monitor(None, background=False)
    run(run_with_replay(mon, [path], speed=None, recorder=recorder))
    files = sorted(p.name for p in rec_dir.iterdir())
    assert len(files) == 2 and all(f.startswith("binance-usdm_btcusdt_") for f in files)
    caps = [read_capture(rec_dir / f, levels=10) for f in files]
    src = read_capture(path, levels=10)
    # every trade and ticker recorded, split across the hour boundary
    assert sum(len(c.trades) for c in caps) == len(src.trades)
    assert sum(len(c.quotes) for c in caps) == len(src.quotes)
    # the second file rebuilds its book on its own (the recorder wrote the book as its snapshot)
    second = caps[1]
    assert second.stats["synced"] and second.stats["gaps"] == 0 and second.warnings == []
    np.testing.assert_array_equal(second.book.iloc[-1][[f"ask_price_{i}" for i in range(10)]].to_numpy(float),
                                  src.book.iloc[-1][[f"ask_price_{i}" for i in range(10)]].to_numpy(float))


def test_control_file_pauses_resumes_and_stops_a_run(shared_data, tmp_path):
    from execal.live import runs

    path = prefix(shared_data, tmp_path, "usdm_btcusdt_20240808.gz", 15_000)
    state = tmp_path / "state"
    mon = Monitor(None, background=False)
    seen = {}

    async def steer(server, runner):
        while server.position < 2_000:
            await asyncio.sleep(0.05)
        runs.control(state, paused=True)
        await asyncio.sleep(1.0)                      # the runner polls the control file every 0.25 s
        seen["paused_at"] = server.position
        await asyncio.sleep(1.0)
        seen["still"] = server.position
        seen["status"] = json.loads((state / "status.json").read_text())["runner"]["paused"]
        runs.control(state, paused=False)
        await asyncio.sleep(1.0)
        seen["resumed"] = server.position
        runs.control(state, stop=True)

    out, server, runner = run(_replay_with([path], mon, steer, speed=20,
                                           options=RunOptions(state_dir=state, backoff_s=(0.05, 0.5))))
    assert seen["status"] is True and seen["still"] == seen["paused_at"]
    assert seen["resumed"] > seen["still"]
    assert server.position < 15_000 - 1                 # stopped before the end of the replay
    kinds = [json.loads(x)["kind"] for x in (state / "events.jsonl").read_text().splitlines()] \
        if (state / "events.jsonl").exists() else [e["kind"] for e in mon.events.recent]
    assert "paused" in kinds and "resumed" in kinds and kinds[-1] == "stop"
    assert (state / "ticks.jsonl").stat().st_size > 0 and json.loads((state / "status.json").read_text())["counts"]
