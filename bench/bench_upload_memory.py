"""What an upload costs a gunicorn worker: the page's streamed upload route against dcc.Upload's base64 callback.

`execal serve`'s command with ONE worker (so the worker that served the upload is known) on 127.0.0.1.
For each input the worker's RSS is read before, its high-water mark (VmHWM) and RSS after, and the RSS of
every process under the server is sampled every 20 ms during the upload (the clean process that parses a
streamed upload shows there). Inputs:

- a 195 MB fills CSV (2.2 M rows; quick: 50 MB), through the route and through the callback (baseline);
- a 3.4 MB gzip file that expands to 900 MB of CSV (the loader refuses it at 5x the upload limit);
- a 400 MB chunked body (no Content-Length), and a 400 MB body that says its length: both refused.

    python -m bench.bench_upload_memory [--quick]
"""
from __future__ import annotations

import gzip
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv
import requests

from bench import servers
from bench.bench_load import make_fills
from bench.common import row
from bench.load_flow import Browser, FlowError

ROUTE_HEADERS = {"X-Execal-Upload": "1", "Content-Type": "application/octet-stream"}


def _status_mb(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS", "VmHWM")):
                name, value = line.split(":")
                out[name] = int(value.split()[0]) / 1024
    return out


class _Sampler:
    """Peak RSS of the processes the web worker's job server forks (the one that parses a streamed upload):
    the grandchildren of `worker`; the job server itself (its preloaded interpreter) is not counted."""

    def __init__(self, worker: int):
        self.worker, self.peak_mb = worker, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                for server in psutil.Process(self.worker).children():
                    for p in server.children():
                        try:
                            self.peak_mb = max(self.peak_mb, p.memory_info().rss / 2**20)
                        except psutil.Error:
                            pass
            except psutil.Error:
                pass
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(2)


def write_csv(path: Path, n_rows: int) -> Path:
    if not path.exists():
        table = make_fills(n_rows)
        iso = pa.array(np.datetime_as_string(table["timestamp"].to_numpy(), unit="ms", timezone="UTC"))
        pacsv.write_csv(table.set_column(0, "timestamp", iso), path, pacsv.WriteOptions(quoting_style="none"))
    return path


def write_bomb(path: Path) -> Path:
    if not path.exists():
        head = b"timestamp,symbol,venue,side,quantity,arrival_price,exec_price\n"
        head += b"2024-03-01T00:00:00Z,BTCUSDT,binance,buy,1,50000,50001\n"
        with gzip.open(path, "wb", compresslevel=9) as gz:
            gz.write(head)
            block = b"\n" * 2**20
            for _ in range(900):
                gz.write(block)
    return path


def measure(srv, worker: int, send) -> dict:
    """Run `send()` against the server; the worker's memory and the other processes' peak around it."""
    before = _status_mb(worker)
    started = time.perf_counter()
    with _Sampler(worker) as others:
        outcome = send()
    seconds = time.perf_counter() - started
    after = _status_mb(worker)
    return {"outcome": outcome, "seconds": seconds, "worker_before_mb": before["VmRSS"],
            "worker_peak_added_mb": after["VmHWM"] - before["VmRSS"],
            "worker_kept_mb": after["VmRSS"] - before["VmRSS"], "other_processes_peak_mb": others.peak_mb}


def run_all(folder: Path, quick: bool = False) -> list[dict]:
    big = write_csv(folder / ("fills_50mb.csv" if quick else "fills_195mb.csv"), 560_000 if quick else 2_200_000)
    bomb = write_bomb(folder / "bomb.csv.gz")
    size_mb = big.stat().st_size / 2**20
    out = []

    def one(name: str, send_factory):
        # a fresh server per input: each worker high-water mark starts from a page load only
        with servers.gunicorn(folder / name, env={"EXECAL_CACHE_DIR": folder / name / "cache"}, workers=1) as srv:
            worker = psutil.Process(srv.process.pid).children()[0].pid
            page = Browser(requests.Session(), srv.url, timeout_s=900)
            page.open("/")
            time.sleep(0.5)
            m = measure(srv, worker, send_factory(page, srv))
            m["input"] = name
            out.append(m)

    def route_upload(path):
        def factory(page, srv):
            def send():
                try:
                    with open(path, "rb") as fh:
                        page.upload_stream(fh, path.name)
                    return "loaded"
                except FlowError as err:
                    return "refused: " + str(err)[:140]
            return send
        return factory

    def callback_upload(path):
        def factory(page, srv):
            def send():
                try:
                    page.upload(path.read_bytes(), path.name)
                    return "loaded"
                except FlowError as err:
                    return "refused: " + str(err)[:140]
            return send
        return factory

    def raw_post(n_bytes: int, chunked: bool):
        def factory(page, srv):
            def send():
                def body():
                    block = b"z" * 2**20
                    for _ in range(n_bytes // 2**20):
                        yield block
                data = body() if chunked else b"z" * n_bytes
                r = page.client.http.post(srv.url + "/_execal/upload", data=data, timeout=600,
                                          headers={**ROUTE_HEADERS, "X-Execal-Filename": "big.bin"})
                return f"HTTP {r.status_code}"
            return send
        return factory

    one(f"csv {size_mb:.0f} MB, streamed route", route_upload(big))
    one(f"csv {size_mb:.0f} MB, dcc.Upload callback", callback_upload(big))
    one("gzip bomb 900 MB, streamed route", route_upload(bomb))
    one("gzip bomb 900 MB, dcc.Upload callback", callback_upload(bomb))
    one("400 MB chunked body, route", raw_post(400 * 2**20, chunked=True))
    one("400 MB with Content-Length, route", raw_post(400 * 2**20, chunked=False))
    return out


def run(quick: bool = False) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="execal-upload-mem-") as tmp:
        m = run_all(Path(tmp), quick)
    rows = []
    streamed = next(x for x in m if x["input"].endswith("streamed route") and x["input"].startswith("csv"))
    callback = next(x for x in m if x["input"].endswith("callback") and x["input"].startswith("csv"))
    rows.append(row(f"upload: {streamed['input']}", streamed["seconds"], baseline="dcc.Upload base64 callback",
                    baseline_s=callback["seconds"],
                    note=f"worker peak +{streamed['worker_peak_added_mb']:.0f} MB (callback: "
                         f"+{callback['worker_peak_added_mb']:.0f} MB), kept +{streamed['worker_kept_mb']:.0f} MB "
                         f"(callback +{callback['worker_kept_mb']:.0f} MB); parse process peak "
                         f"{streamed['other_processes_peak_mb']:.0f} MB"))
    for x in m:
        if x is streamed or x is callback:
            continue
        rows.append(row(f"upload: {x['input']}", x["seconds"],
                        note=f"{x['outcome'][:90]}; worker peak +{x['worker_peak_added_mb']:.0f} MB, kept "
                             f"+{x['worker_kept_mb']:.0f} MB; parse process peak {x['other_processes_peak_mb']:.0f} MB"))
    return rows


def main(argv=None) -> int:
    quick = "--quick" in (argv or sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="execal-upload-mem-", dir="/tmp") as tmp:
        for m in run_all(Path(tmp), quick):
            print(json.dumps(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
