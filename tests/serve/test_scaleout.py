"""Scale-out (issue 11, Celery + Redis): real redis-server (Debian), real gunicorn, real Celery workers.

Two app servers and two `execal worker`s on one Redis serve one user's session across both servers; a
worker killed mid-fit gives the user an error within the poll interval (plus the heartbeat's lapse); a
Redis restart and a deleted shared directory are survived with a clear message. Everything listens on
127.0.0.1 only and is stopped by its own process id.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import psutil
import pytest
import requests

from bench import servers
from bench.load_flow import ACTIVE_DATASET, ACTIVE_RESULT, JOB, RUN, Browser, FlowError, RoundTimes
from execal.components import jobs, scaleout
from execal.models.data.sample import generate_fills

pytestmark = pytest.mark.skipif(not Path(servers.REDIS_SERVER).exists(), reason="Debian's redis-server is needed")


def fills_bytes(n: int, seed: int) -> bytes:
    frame, _ = generate_fills(n, seed=seed)
    return frame.drop(columns=["cost_bps"]).to_csv(index=False).encode()


class Cluster:
    """redis-server, two app servers (gunicorn, 1 worker each) and two Celery workers, restartable."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.stack = contextlib.ExitStack()
        self.redis = servers.start_redis(folder / "redis")
        self.env = {"EXECAL_REDIS_URL": self.redis.url, "EXECAL_SHARED_DIR": folder / "shared",
                    "EXECAL_SECRET_KEY": "test-cluster-secret-" + "k" * 24, "EXECAL_CACHE_DIR": folder / "cache",
                    "EXECAL_LOG": "INFO"}
        self.apps = [self.stack.enter_context(servers.gunicorn(folder / f"app{i}", env=self.env, workers=1,
                                                               name=f"app{i}")) for i in (1, 2)]
        self.workers: list = []
        for i in (1, 2):
            self.start_worker(i)

    def start_worker(self, i: int):
        cm = servers.celery_worker(self.folder / f"worker{i}", env=self.env, concurrency=1, name=f"w{i}")
        proc, log = cm.__enter__()
        self.workers.append((cm, proc, log))
        return proc

    def wait_workers_ready(self, timeout_s: float = 90):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all("ready." in log.read_text(errors="replace") for _, proc, log in self.workers if proc.poll() is None):
                return
            time.sleep(0.3)
        raise RuntimeError("celery workers not ready:\n" + "\n".join(
            log.read_text(errors="replace")[-2000:] for _, _, log in self.workers))

    def kill_workers(self):
        """SIGKILL every worker: its main process and its pool processes (no chance to report)."""
        for _, proc, _ in self.workers:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(proc.pid)
                for child in parent.children(recursive=True):
                    child.kill()
                parent.kill()
            proc.wait(10)
        self.workers.clear()

    def restart_redis(self):
        servers.stop(self.redis.process)
        time.sleep(0.5)
        self.redis = servers.start_redis(self.folder / "redis", port=self.redis.port)

    def close(self):
        self.kill_workers()
        self.stack.close()
        servers.stop(self.redis.process)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.wait_workers_ready()
        yield c
    finally:
        c.close()


def user(cluster) -> tuple[requests.Session, Browser, Browser]:
    """One user: one cookie jar, a page on each app server."""
    http = requests.Session()
    return http, Browser(http, cluster.apps[0].url), Browser(http, cluster.apps[1].url)


def test_two_servers_and_two_workers_serve_one_session(cluster):
    http, page, _ = user(cluster)
    one, two = (a.url for a in cluster.apps)
    # one browser page behind a load balancer: each request may land on either server
    page.open("/")                                     # server 1
    key = page.upload_stream(fills_bytes(1500, seed=31), "mine.csv")   # as the page sends it: streamed
    page.client.base = two
    result = page.calibrate(RoundTimes())              # planned on server 2, fitted by a Celery worker
    page.client.base = one
    page.diagnostics()                                 # drawn by server 1 from the shared result
    assert "Converged" in str(page.client.value("status-diagnostics", "children"))
    page.client.base = two
    page.open("/")                                     # a reload, on server 2
    assert page.client.value(ACTIVE_DATASET, "data") == {"key": key}
    assert page.client.value(ACTIVE_RESULT, "data") == {"key": result}
    # the Parquet bytes are files in the shared directory, the metadata in Redis
    assert list((cluster.folder / "shared" / "blobs").rglob("*.bin"))
    # and someone else, on either server, sees none of it
    _, other, other2 = user(cluster)
    for b in (other, other2):
        b.open("/")
        assert b.client.value(ACTIVE_DATASET, "data") != {"key": key}
        assert b.client.value(ACTIVE_RESULT, "data") is None


def test_a_big_streamed_upload_is_parsed_off_the_web_worker(cluster, tmp_path):
    from bench.bench_upload_memory import write_csv
    from execal.components import uploads

    path = write_csv(tmp_path / "big.csv", 260_000)          # ~23 MB: parsed in a clean process
    assert path.stat().st_size >= uploads.ISOLATE_BYTES
    http, page, _ = user(cluster)
    page.open("/")
    with open(path, "rb") as fh:
        key = page.upload_stream(fh, "big.csv")
    page.client.base = cluster.apps[1].url
    page.open("/")
    assert page.client.value(ACTIVE_DATASET, "data") == {"key": key}


def _long_job(browser: Browser):
    """Press Calibrate with a 5,000-resample bootstrap on the session's sample fills: minutes of work."""
    c = browser.client
    c.set("bootstrap-n-calibrate", "value", 5000)
    c.set(RUN, "n_clicks", (c.value(RUN, "n_clicks") or 0) + 1)
    c.call(output=f"{JOB}.data", inputs=[f"{RUN}.n_clicks"], trigger=f"{RUN}.n_clicks")
    assert set(c.value(JOB, "data") or {}) == {"ticket"}, c.value("alert-calibrate", "children")
    return c.begin(output=f"{ACTIVE_RESULT}.data", inputs=[f"{JOB}.data"], trigger=f"{JOB}.data")


def test_a_worker_killed_mid_fit_is_an_error_within_the_poll_interval(cluster):
    http, on1, on2 = user(cluster)
    on1.open("/")                                        # the sample fills (20,000 rows)
    call = _long_job(on1)
    # wait until a worker has started it (progress arrives)
    deadline = time.monotonic() + 60
    started = False
    while time.monotonic() < deadline and not started:
        r = call.poll()
        assert r.status_code == 200
        started = "progress" in r.json() and "response" not in r.json()
    assert started, "no worker started the job"
    cluster.kill_workers()
    killed_at = time.monotonic()
    error = None
    while time.monotonic() - killed_at < 15:
        time.sleep(0.4)                                  # the page's poll interval
        r = call.poll()
        data = r.json() if r.status_code == 200 else {}
        alert = (data.get("sideUpdate") or {}).get("alert-calibrate") or {}
        if alert.get("is_open"):
            error = alert["children"], time.monotonic() - killed_at
            break
        assert "response" not in data or not data["response"].get(ACTIVE_RESULT)
    assert error is not None, "the user was never told"
    message, seconds = error
    assert jobs.JOB_LOST_MARK in message
    assert seconds <= 0.4 + scaleout.HEARTBEAT_TTL_S + jobs.RESULT_WAIT_S + 1.0, seconds
    for i in (1, 2):
        cluster.start_worker(i)
    cluster.wait_workers_ready()


def test_a_redis_restart_is_survived_with_a_clear_message(cluster):
    http, on1, on2 = user(cluster)
    on1.open("/")
    on1.upload(fills_bytes(800, seed=32), "before-restart.csv")
    servers.stop(cluster.redis.process)                  # Redis goes away
    try:
        c = on1.client
        c.set(RUN, "n_clicks", (c.value(RUN, "n_clicks") or 0) + 1)
        out = c.call(output=f"{JOB}.data", inputs=[f"{RUN}.n_clicks"], trigger=f"{RUN}.n_clicks")
        assert out.status == 200
        alert = out.side_updates.get("execal-app-alert") or {}
        assert alert.get("is_open") and "storage (Redis) is not reachable" in alert["children"]
        assert "Traceback" not in str(alert)
        assert requests.get(cluster.apps[1].url + "/", timeout=10).status_code == 200   # the page still loads
    finally:
        cluster.redis = servers.start_redis(cluster.folder / "redis", port=cluster.redis.port)
    # Redis is back (empty: nothing was persisted): the app and the workers serve again
    on2.open("/")
    key = on2.upload(fills_bytes(800, seed=33), "after-restart.csv")
    assert key
    deadline = time.monotonic() + 60
    while True:                                          # Celery reconnects to the broker by itself
        try:
            on2.calibrate(RoundTimes())
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    assert on2.client.value(ACTIVE_RESULT, "data")


def test_a_deleted_shared_directory_is_survived_with_a_clear_message(cluster):
    http, page, _ = user(cluster)
    page.open("/")
    page.upload(fills_bytes(6000, seed=34), "gone-soon.csv")    # big enough for a blob file
    shutil.rmtree(cluster.folder / "shared")
    page.client.base = cluster.apps[1].url
    # the page still shows the dataset; pressing Calibrate says what happened
    with pytest.raises(FlowError, match="(no longer in|left) the server's cache"):
        page.calibrate(RoundTimes())
    # loading the file again works: the directory is made again, private
    page.upload(fills_bytes(6000, seed=34), "gone-soon.csv")
    page.calibrate(RoundTimes())
    assert stat_mode(cluster.folder / "shared") == 0o700


def stat_mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_execal_worker_refuses_without_its_settings(tmp_path):
    import subprocess
    import sys

    env = servers.hermetic_env({"EXECAL_REDIS_URL": "redis://127.0.0.1:1/0"})
    r = subprocess.run([sys.executable, "-m", "execal.cli", "worker"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and ("EXECAL_SHARED_DIR" in r.stderr or "EXECAL_SECRET_KEY" in r.stderr)
    assert "Traceback" not in r.stderr

