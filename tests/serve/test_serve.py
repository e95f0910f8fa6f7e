"""The embedded default under real gunicorn (`execal serve`'s own command, 2 gthread workers), over HTTP.

- The load test, small: N users × rounds of the full flow with locust: no failed or hung calibration
  (the full 20 × 3 with its p95 is bench/bench_load_test.py).
- Job processes hold no socket, stop on SIGTERM, die with the server, and a killed one (or one whose
  web worker died) is reported to the user at the next poll; a stopped server frees its port.
- A forged job request, a borrowed session id and a known dataset hash get nothing.
- A deleted cache directory is survived with a clear message.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import time

import psutil
import pytest
import requests

from bench import bench_load_test, servers
from bench.load_flow import ACTIVE_DATASET, ACTIVE_RESULT, JOB, RUN, SESSION, Browser, FlowError, RoundTimes
from execal.components import jobs
from execal.models.data.sample import generate_fills


def fills_bytes(n: int, seed: int) -> bytes:
    frame, _ = generate_fills(n, seed=seed)
    return frame.drop(columns=["cost_bps"]).to_csv(index=False).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    with servers.gunicorn(folder, env={"EXECAL_CACHE_DIR": folder / "cache"}) as srv:
        srv.folder = folder
        yield srv


def _long_job(browser: Browser):
    """Calibrate the session's sample fills with a 5,000-resample bootstrap: minutes of work."""
    c = browser.client
    c.set("bootstrap-n-calibrate", "value", 5000)
    c.set(RUN, "n_clicks", (c.value(RUN, "n_clicks") or 0) + 1)
    c.call(output=f"{JOB}.data", inputs=[f"{RUN}.n_clicks"], trigger=f"{RUN}.n_clicks")
    assert set(c.value(JOB, "data") or {}) == {"ticket"}, c.value("alert-calibrate", "children")
    call = c.begin(output=f"{ACTIVE_RESULT}.data", inputs=[f"{JOB}.data"], trigger=f"{JOB}.data")
    assert call.job_pid and psutil.pid_exists(call.job_pid)
    return call


def _error_after(call, within_s: float) -> tuple[str, float]:
    """Poll as the page does until the job card's alert opens; (message, seconds)."""
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        time.sleep(0.4)
        r = call.poll()
        assert r.status_code in (200, 204)
        data = r.json() if r.status_code == 200 else {}
        alert = (data.get("sideUpdate") or {}).get("alert-calibrate") or {}
        if alert.get("is_open"):
            return alert["children"], time.monotonic() - started
    raise AssertionError(f"the user was not told within {within_s} s")


def test_the_full_flow_under_load_holds(tmp_path):
    users, rounds = 5, 2
    files = bench_load_test.make_files(tmp_path / "files", users, rounds)
    with servers.gunicorn(tmp_path / "srv", env={"EXECAL_CACHE_DIR": tmp_path / "cache"}) as srv:
        records = bench_load_test.run_locust(srv.url, files, users, rounds, tmp_path / "load.jsonl", tmp_path)
        log = srv.log()
    s = bench_load_test.summarise(records, users, rounds)
    assert s["failed"] == 0 and s["missing"] == 0, s["errors"]
    assert s["cached"] == 0                      # every calibration was a real job
    assert "Timeout" not in log and "Traceback" not in log


def test_a_job_process_holds_no_socket_and_stops_on_sigterm(server):
    page = Browser(requests.Session(), server.url)
    page.open("/")
    call = _long_job(page)
    job = psutil.Process(call.job_pid)
    deadline = time.monotonic() + 30
    while "progress" not in call.poll().json():          # the job is running its own code
        assert time.monotonic() < deadline
        time.sleep(0.2)
    sockets = [f for f in os.listdir(f"/proc/{job.pid}/fd")
               if os.readlink(f"/proc/{job.pid}/fd/{f}").startswith("socket:")]
    assert sockets == [], "the job holds sockets (gunicorn's listening one, clients' keep-alive ones)"
    gunicorn_pids = {server.process.pid, *(p.pid for p in psutil.Process(server.process.pid).children())}
    assert job.ppid() not in gunicorn_pids                 # forked by the job server, not by a web worker
    job.send_signal(signal.SIGTERM)
    job.wait(10)
    message, seconds = _error_after(call, within_s=5)
    assert jobs.JOB_LOST_MARK in message and seconds < 2.5


def test_a_job_whose_web_worker_dies_is_reported(server):
    page = Browser(requests.Session(), server.url)
    page.open("/")
    call = _long_job(page)
    job = psutil.Process(call.job_pid)
    job_server = job.parent()
    worker = job_server.parent()              # the gunicorn worker that started it (its job server's parent)
    assert worker.ppid() == server.process.pid
    worker.kill()                             # gunicorn starts another; the job dies with its job server
    job.wait(15)
    message, _ = _error_after(call, within_s=10)
    assert jobs.JOB_LOST_MARK in message


def test_a_stopped_server_leaves_no_job_and_frees_its_port(tmp_path):
    port = servers.free_port()
    with servers.gunicorn(tmp_path / "a", env={"EXECAL_CACHE_DIR": tmp_path / "cache"}, port=port) as srv:
        page = Browser(requests.Session(), srv.url)
        page.open("/")
        call = _long_job(page)
        job = psutil.Process(call.job_pid)
    # gunicorn was stopped with SIGTERM (graceful): its jobs went with it
    job.wait(15)
    assert not job.is_running()
    listening = [c for c in psutil.net_connections("tcp") if c.laddr and c.laddr.port == port
                 and c.status == psutil.CONN_LISTEN]
    assert listening == [], f"something still listens on {port}: {listening}"
    with socket.socket() as s:               # as gunicorn binds (TIME_WAIT connections do not count)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    with servers.gunicorn(tmp_path / "b", env={"EXECAL_CACHE_DIR": tmp_path / "cache"}, port=port) as again:
        assert requests.get(again.url + "/", timeout=10).status_code == 200


def test_forged_borrowed_and_hashed_requests_get_nothing(server):
    alice = Browser(requests.Session(), server.url)
    alice.open("/")
    raw = fills_bytes(1200, seed=61)
    dataset = alice.upload(raw, "alice.csv")
    result = alice.calibrate(RoundTimes())
    assert alice.client.http.cookies.get("execal_session")

    mallory = Browser(requests.Session(), server.url)
    mallory.open("/")
    c = mallory.client
    # a borrowed session: alice's cookie value is not something mallory has; her session id in the
    # page's store is replaced by mallory's own
    c.set(SESSION, "data", "alice's session id, whatever it is")
    c.call(output=f"{ACTIVE_RESULT}.data", inputs=[f"{SESSION}.modified_timestamp"],
           trigger=f"{SESSION}.modified_timestamp")
    assert c.value(ACTIVE_RESULT, "data") is None
    # a known content hash, and alice's real keys: no preview, no calibration, no download
    for key in (hashlib.sha256(raw).hexdigest() + "-fills", dataset):
        c.set(ACTIVE_DATASET, "data", {"key": key})
        c.call(output="summary-data.children", inputs=[f"{ACTIVE_DATASET}.data"], trigger=f"{ACTIVE_DATASET}.data")
        assert c.value("grid-data", "rowData") == []
    for name in ("predictions.csv", "config.json", "report.html"):
        assert mallory.client.http.get(f"{server.url}/_execal/export/{name}?key={result}", timeout=10).status_code == 404
    assert alice.client.http.get(f"{server.url}/_execal/export/predictions.csv?key={result}",
                                 timeout=10).status_code == 200
    # a forged job payload straight to the background callback: nothing runs, nothing is stored
    forged = {"key": "result:" + "0" * 32, "dataset": dataset, "filters": {}, "session": "x",
              "settings": {"calibrator": {"model": "power_law"}, "segments": [], "bootstrap": {"n": 1_000_000, "by": "day"}}}
    c.set(JOB, "data", forged)
    started = time.monotonic()
    out = c.call(output=f"{ACTIVE_RESULT}.data", inputs=[f"{JOB}.data"], trigger=f"{JOB}.data", interval_s=0.2)
    assert out.status == 204 and time.monotonic() - started < 15
    alice.open("/")
    assert alice.client.value(ACTIVE_RESULT, "data") == {"key": result}


def test_a_deleted_cache_directory_is_survived_with_a_clear_message(tmp_path):
    cache = tmp_path / "cache"
    with servers.gunicorn(tmp_path / "srv", env={"EXECAL_CACHE_DIR": cache}) as srv:
        page = Browser(requests.Session(), srv.url)
        page.open("/")
        page.upload(fills_bytes(900, seed=62), "soon-gone.csv")
        shutil.rmtree(cache)
        # the page still shows the dataset; Calibrate says it is gone, and nothing hangs
        with pytest.raises(FlowError, match="(no longer in|left) the server's cache"):
            page.calibrate(RoundTimes())
        assert (cache / "cache.db").exists() and (cache.stat().st_mode & 0o777) == 0o700
        page.upload(fills_bytes(900, seed=62), "soon-gone.csv")
        page.calibrate(RoundTimes())             # a job process and the web workers see the same new cache
        page.open("/")
        assert page.client.value(ACTIVE_RESULT, "data")
        assert "Traceback" not in srv.log()

