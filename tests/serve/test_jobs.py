"""Background jobs that hold (issue 11 items 1 and 4): the cause of the failures under load, proved, and
the job runner that removes it (components/jobs.py).

The cause: a process forked from a thread while another thread of the parent holds a SQLite write
transaction inherits SQLite's per-process lock table (POSIX locks themselves are not inherited): its
first write waits in the busy handler for a lock that no process holds, and diskcache raises Timeout —
even long after the parent's transaction has ended and the parent itself writes again. Dash's
DiskcacheManager forks job processes from the threaded gunicorn worker in exactly this way.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

import diskcache
import multiprocess
import psutil
import pytest

from execal.components import jobs

# --- job functions the tests run (module level: the job server imports them by reference) ---------


@jobs.background_job
def echo_job(set_progress, value):
    set_progress((50, "half"))
    return {"value": value, "owner": jobs.job_owner(), "pid": os.getpid(), "sockets": _sockets()}


@jobs.background_job
def sleepy_job(set_progress, seconds):
    set_progress((1, "sleeping"))
    time.sleep(seconds)
    return "woke up"


@jobs.background_job
def broken_job(set_progress, _):
    raise ValueError("a bug in the job")


def _sockets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.append(target)
    return out


# --- the cause, proved --------------------------------------------------------------------------


def _child_write(cache, q):
    time.sleep(1.0)       # the parent's transaction ended long ago, and the parent writes again
    started = time.time()
    try:
        cache.set("from-child", 1)
        q.put(("ok", time.time() - started))
    except diskcache.Timeout:
        q.put(("Timeout", time.time() - started))


def _fork_while_a_thread_writes(tmp_path, hold: bool):
    cache = diskcache.Cache(str(tmp_path / "c"), timeout=1)
    cache.set("warm", 1)
    inside, release = threading.Event(), threading.Event()

    def writer():
        if hold:
            with cache.transact():
                cache.set("held", 1)
                inside.set()
                release.wait(5)
        else:
            inside.set()

    t = threading.Thread(target=writer)
    t.start()
    inside.wait(5)
    q = multiprocess.Queue()
    proc = multiprocess.Process(target=_child_write, args=(cache, q))   # what Dash's manager does
    proc.start()
    release.set()
    t.join()
    cache.set("parent-after", 1)         # the parent is not blocked: no process holds a lock
    outcome = q.get(timeout=30)
    proc.join(10)
    cache.close()
    return outcome


def test_the_cause_a_fork_during_another_threads_transaction_cannot_write(tmp_path):
    outcome, seconds = _fork_while_a_thread_writes(tmp_path, hold=True)
    assert outcome == "Timeout", "a child forked while another thread held a SQLite write lock could write"
    assert seconds >= 0.9     # it waited the whole busy timeout for a lock nobody holds


def test_the_same_fork_without_an_open_transaction_writes(tmp_path):
    outcome, _ = _fork_while_a_thread_writes(tmp_path, hold=False)
    assert outcome == "ok"


# --- the job runner -----------------------------------------------------------------------------


@pytest.fixture()
def manager(tmp_path):
    cache = diskcache.Cache(str(tmp_path / "cache"))
    owner = {"id": "owner-a"}
    mgr = jobs.JobManager(cache, owner_of=lambda: owner["id"])
    mgr.owner = owner
    jobs.start_job_server()
    yield mgr
    cache.close()


def _start(mgr, fn, args, key="k1", progress=True):
    ref = mgr.make_job_fn(fn, progress)
    return mgr.call_job_fn(key, ref, args, {"inputs_list": [], "cookies": {"session": "secret"},
                                            "headers": {"Cookie": "session=secret"}})


def _wait_result(mgr, key, handle, timeout_s=60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = mgr.get_result(key, handle)
        if out is not mgr.UNDEFINED:
            return out
        time.sleep(0.05)
    raise AssertionError("no result")


def test_a_job_started_while_a_thread_holds_a_transaction_writes(manager):
    # the situation that failed under load, with the job runner: no Timeout, the result arrives
    cache = manager.handle
    inside, release = threading.Event(), threading.Event()

    def writer():
        with cache.transact():
            cache.set("held", 1)
            inside.set()
            release.wait(5)

    t = threading.Thread(target=writer)
    t.start()
    inside.wait(5)
    handle = _start(manager, echo_job, [7])
    release.set()
    t.join()
    out = _wait_result(manager, "k1", handle, timeout_s=30)
    assert out["value"] == 7


def test_a_job_runs_clean_and_reports_progress_and_its_owner(manager):
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()               # the web worker's listening socket, open when the job starts
    try:
        handle = _start(manager, echo_job, [42])
        pid = int(handle.split(":")[0])
        assert pid != os.getpid() and psutil.Process(pid).ppid() != os.getpid()   # forked by the job server
        out = _wait_result(manager, "k1", handle)
    finally:
        listening.close()
    assert out["value"] == 42 and out["pid"] == pid
    assert out["owner"] == "owner-a"           # taken from the server side at start, not from args
    assert out["sockets"] == [], f"the job inherited sockets: {out['sockets']}"
    assert manager.get_result("k1", handle) is manager.UNDEFINED    # read once, then cleared


def test_the_job_context_carries_no_cookies_or_headers():
    ctx = jobs.safe_context({"cookies": {"session": "x"}, "headers": {"Cookie": "x"}, "inputs_list": [1],
                             "args": {"cacheKey": "k", "endId": "e", "other": "1"}})
    assert "cookies" not in ctx and "headers" not in ctx and ctx["inputs_list"] == [1]
    assert ctx["args"] == {"other": "1"}


def test_a_failing_job_is_an_error_record_not_a_hang(manager):
    handle = _start(manager, broken_job, [None])
    out = _wait_result(manager, "k1", handle)
    assert "a bug in the job" in out[jobs.ERROR_KEY]["msg"]


def _wait_gone(pid, timeout_s=10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_job_is_reported_failed_at_the_next_poll(manager, sig):
    handle = _start(manager, sleepy_job, [60])
    pid = int(handle.split(":")[0])
    time.sleep(0.3)
    assert manager.get_result("k1", handle) is manager.UNDEFINED and manager.job_running(handle)
    os.kill(pid, sig)                                    # SIGTERM stops it: the default action is kept
    assert _wait_gone(pid), f"the job ignored signal {sig}"
    started = time.monotonic()
    out = manager.get_result("k1", handle)               # the next poll
    assert time.monotonic() - started < 1.0
    assert jobs.JOB_LOST_MARK in out[jobs.ERROR_KEY]["msg"]
    assert jobs.error_message(RuntimeError(out[jobs.ERROR_KEY]["msg"])).startswith("Failed: the job stopped")


def test_a_cancelled_job_stays_quiet(manager):
    handle = _start(manager, sleepy_job, [60])
    pid = int(handle.split(":")[0])
    manager.terminate_job(handle)                        # Cancel
    assert _wait_gone(pid)
    assert manager.get_result("k1", handle) is manager.UNDEFINED


def test_a_handle_never_names_a_recycled_pid(manager):
    me = psutil.Process()
    assert jobs.process_of(f"{me.pid}:{me.create_time():.3f}") is not None
    assert jobs.process_of(f"{me.pid}:{me.create_time() - 5:.3f}") is None   # same pid, other process
    manager.terminate_job(f"{me.pid}:{me.create_time() - 5:.3f}")            # must not kill the test
    assert me.is_running()


def test_a_job_over_its_time_limit_is_stopped_and_reported(tmp_path):
    cache = diskcache.Cache(str(tmp_path / "cache"))
    mgr = jobs.JobManager(cache, time_limit_s=1)
    handle = _start(mgr, sleepy_job, [30])
    assert _wait_gone(int(handle.split(":")[0]), timeout_s=15)
    out = mgr.get_result("k1", handle)
    assert jobs.ERROR_KEY in out
    cache.close()


def test_a_job_dies_with_its_job_server(tmp_path):
    # the job server exits when the web worker that started it is gone; its jobs die with it
    code = f"""
import sys, time, diskcache
sys.path[:0] = {sys.path!r}
from execal.components import jobs
import test_jobs
cache = diskcache.Cache({str(tmp_path / 'c2')!r})
mgr = jobs.JobManager(cache)
jobs.start_job_server()
ref = mgr.make_job_fn(test_jobs.sleepy_job, True)
print(mgr.call_job_fn('k', ref, [120], {{}}), flush=True)
time.sleep(120)
"""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(__file__))
    try:
        handle = proc.stdout.readline().strip()
        pid = int(handle.split(":")[0])
        assert psutil.pid_exists(pid)
        proc.kill()                                       # the "web worker" dies hard
        proc.wait(10)
        assert _wait_gone(pid, timeout_s=10), "the job outlived the process that started it"
    finally:
        if proc.poll() is None:
            proc.kill()
