"""Background jobs that hold under load: where a panel's long fit runs, and how its end is reported.

Why not Dash's DiskcacheManager as is: it starts each job with `multiprocess.Process` (fork) from the
gunicorn worker thread that handles the request, while the worker's other threads may be inside SQLite
(diskcache). POSIX locks are not inherited by a child, but SQLite's per-process table of open files and
their lock state is: a child forked while another thread holds a write transaction believes a connection
of its own holds that lock, and its first write waits in SQLite's busy handler until diskcache gives up
(`diskcache.core.Timeout`, 60 s, twice: progress then result), or it deadlocks on a mutex copied locked.
tests/test_jobs.py reproduces it in ten lines. The child also inherited the listening socket, the clients'
keep-alive sockets and gunicorn's signal handlers (so it ignored SIGTERM and kept the port after a stop).

What runs jobs here instead (`JobManager`, a DiskcacheManager):
- Jobs are forked by a *job server*: multiprocessing's forkserver, a fresh interpreter exec'd by the web
  worker (it inherits no socket, no thread, no SQLite connection) that imports execal once
  (`PRELOAD`) and forks one clean, single-threaded child per job. The child opens its own cache.
- A job process closes the fds it was handed, dies with its parent (PR_SET_PDEATHSIG, and the job server
  exits when the web worker that started it is gone), keeps the default SIGTERM (it stops), and stops
  itself after `EXECAL_JOB_TIMEOUT_S` (default 1800 s).
- A job whose process is gone without a result (killed, out of memory, over its time limit) is reported as
  failed on the next poll: `get_result` answers Dash's error record with `JOB_LOST`, and the panel's
  `on_error` (shell.job_callback_kwargs) shows it. A cancelled job stays quiet.
- A job handle is "pid:start time" (Dash signs it before the browser sees it), so a recycled pid is never
  mistaken for, or killed as, a job.

Job functions are module-level functions decorated with `background_job` (the job server imports them by
reference; the Celery worker finds them in `JOBS` by name). They read who asked (`job_owner()`, taken from
the request on the server, never from the browser) and their stores (`job_stores()`) from the job's
context. With EXECAL_REDIS_URL set, the Celery manager (components/scaleout.py) runs the same functions.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import json
import logging
import multiprocessing
import os
import secrets
import signal
import sys
import threading
import time
import traceback
from contextvars import copy_context
from dataclasses import dataclass
from multiprocessing import forkserver, popen_forkserver, resource_tracker, spawn
from multiprocessing.context import ForkServerProcess, reduction, set_spawning_popen
from typing import Any, Callable

import diskcache
import psutil
from dash import DiskcacheManager
from dash._callback_context import context_value
from dash._utils import AttributeDict
from dash.background_callback.managers.diskcache_manager import ProxySetProps
from dash.exceptions import PreventUpdate

from execal.components import results as results_mod
from execal.components import store as store_mod
from execal.components.rediscache import RedisCache
from execal.models.data.schema import DataError

log = logging.getLogger(__name__)

# what the job server imports once, so a job starts in milliseconds (every panel and its models)
PRELOAD = ["execal.components.layout"]
DEFAULT_TIME_LIMIT_S = 1800
JOB_LOST_MARK = "the job stopped without a result"
JOB_LOST = (JOB_LOST_MARK + ": its process ended (killed, out of memory, or over the {limit} s time "
            "limit). The result shown is the previous one; run it again.")
ERROR_KEY = "background_callback_error"
_ENDED = "execal:job-ended:"          # a job cancelled, or whose result was delivered: no error later
PR_SET_PDEATHSIG = 1


def default_time_limit_s() -> int:
    text = os.environ.get("EXECAL_JOB_TIMEOUT_S", "").strip()
    try:
        return max(1, int(float(text))) if text else DEFAULT_TIME_LIMIT_S
    except ValueError:
        raise ValueError(f"EXECAL_JOB_TIMEOUT_S must be a number of seconds, got {text!r}") from None


def lost_message(limit_s: int | None = None) -> str:
    return JOB_LOST.format(limit=limit_s or default_time_limit_s())


# --- job functions ------------------------------------------------------------------------------

JOBS: dict[str, Callable] = {}


def job_name(fn: Callable) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def background_job(fn: Callable) -> Callable:
    """Mark a module-level function as a background callback body the job processes can run."""
    if "<locals>" in fn.__qualname__:
        raise TypeError(f"{fn.__qualname__}: a background job must be a module-level function")
    JOBS[job_name(fn)] = fn
    fn.__execal_job__ = job_name(fn)
    return fn


@dataclass(frozen=True)
class Backend:
    """Where a job process finds the stores: the private cache directory (embedded default), or Redis
    plus the shared directory (scale-out). Small and picklable: it travels to the job."""
    kind: str                         # "diskcache" | "redis"
    cache_dir: str = ""
    redis_url: str = ""
    shared_dir: str = ""
    size_limit_bytes: int = store_mod.DEFAULT_CACHE_SIZE_BYTES


@dataclass
class _JobContext:
    owner: str | None
    backend: Backend
    cache: Any = None


_context: list[_JobContext] = []
_opened: dict[Backend, Any] = {}
_open_lock = threading.Lock()


def open_backend(backend: Backend):
    """The cache object of `backend` in this process (opened once per process)."""
    with _open_lock:
        cache = _opened.get(backend)
        if cache is None:
            if backend.kind == "diskcache":
                cache = store_mod.open_cache(backend.cache_dir, size_limit_bytes=backend.size_limit_bytes)
            else:
                cache = RedisCache(backend.redis_url, backend.shared_dir)
            _opened[backend] = cache
        return cache


@contextlib.contextmanager
def job_context(owner: str | None, backend: Backend | None = None, cache: Any = None):
    """Run a job body here (the job process does; tests may): who asked, and where its stores are."""
    ctx = _JobContext(owner=owner, backend=backend or Backend("diskcache"), cache=cache)
    _context.append(ctx)
    try:
        yield ctx
    finally:
        _context.pop()


def _current() -> _JobContext:
    if not _context:
        raise RuntimeError("not inside a background job")
    return _context[-1]


def job_owner() -> str | None:
    """Who started the running job: the server-side session (or user) of the request that started it."""
    return _current().owner


def job_cache():
    ctx = _current()
    if ctx.cache is None:
        ctx.cache = open_backend(ctx.backend)
    return ctx.cache


def job_stores() -> tuple[store_mod.SessionStore, results_mod.ResultStore]:
    """The stores of the running job, on the job process's own connection to the cache."""
    cache = job_cache()
    return store_mod.SessionStore(cache), results_mod.ResultStore(cache)


# --- running one job (in the job process, or in a Celery worker) -----------------------------------


def run_job_body(fn: Callable, cache, *, progress: bool, result_key: str, progress_key: str, args: Any,
                 context: dict, owner: str | None, backend: Backend) -> None:
    """Dash's job semantics (progress key, set_props key, the result or an error record under the
    result key) around `fn`, with the job context set."""
    def set_progress(value):
        cache.set(progress_key, list(value) if isinstance(value, (list, tuple)) else [value])

    def set_props(_id, props):
        cache.set(f"{result_key}-set_props", {_id: props})

    def run():
        c = AttributeDict(**context)
        c.ignore_register_page = False
        c.updated_props = ProxySetProps(set_props)
        context_value.set(c)
        extra = [set_progress] if progress else []
        with job_context(owner, backend, cache):
            try:
                if isinstance(args, dict):
                    out = fn(*extra, **args)
                elif isinstance(args, (list, tuple)):
                    out = fn(*extra, *args)
                else:
                    out = fn(*extra, args)
            except PreventUpdate:
                out = {"_dash_no_update": "_dash_no_update"}
            except Exception as err:      # the job's own bug: reported, never a hang
                log.exception("background job %s failed", job_name(fn))
                out = {ERROR_KEY: {"msg": f"{type(err).__name__}: {err}", "tb": traceback.format_exc()}}
        cache.set(result_key, out)

    copy_context().run(run)


def _become_job_process(limit_s: int) -> None:
    """First thing in a job process: hold nothing of the web worker, die with the job server, stop on
    SIGTERM (the default action), stop itself after the time limit."""
    parent = os.getppid()
    # the job server handed us its liveness pipe; holding it would keep the job server alive after the
    # web worker is gone
    fd = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)
        forkserver._forkserver._forkserver_alive_fd = None
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    else:   # pragma: no cover - a watchdog where prctl does not exist
        def watch():
            while os.getppid() == parent:
                time.sleep(1)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:      # the job server died before prctl took effect
        os._exit(1)
    signal.alarm(int(limit_s))      # SIGALRM's default action ends the process: reported as lost


def _job_process_main(fn: Callable, backend: Backend, progress: bool, result_key: str, progress_key: str,
                      args: Any, context: dict, owner: str | None, limit_s: int) -> None:
    _become_job_process(limit_s)
    cache = open_backend(backend)
    run_job_body(fn, cache, progress=progress, result_key=result_key, progress_key=progress_key, args=args,
                 context=context, owner=owner, backend=backend)
    cache.close()


# --- isolated work: a web request's heavy step in a clean process ----------------------------------


def _isolated_main(fn: Callable, backend: Backend, args: tuple, kwargs: dict, reply_key: str, limit_s: int) -> None:
    _become_job_process(limit_s)
    cache = open_backend(backend)
    try:
        out = {"value": fn(cache, *args, **kwargs)}
    except DataError as err:
        out = {"data_error": str(err)}
    except Exception as err:        # logged here (the job server's stderr is the server log)
        log.exception("isolated %s failed", job_name(fn))
        out = {"error": type(err).__name__}
    cache.set(reply_key, json.dumps(out, default=str), expire=600)
    cache.close()


def run_isolated(backend: Backend, cache, fn: Callable, *args, timeout_s: float | None = None, **kwargs) -> Any:
    """`fn(cache, *args, **kwargs)` in a clean job process, waited for: what it allocates (parsing a 200 MB
    upload into a frame) never lives in this web worker, which only sleeps meanwhile. `fn` is module-level
    and returns JSON; a DataError it raises is raised here with the same message."""
    start_job_server()
    limit = int(timeout_s or default_time_limit_s())
    reply = "execal:isolated:" + secrets.token_hex(16)
    proc = JobProcess(target=_isolated_main, name=f"execal-isolated {job_name(fn)}",
                      args=(fn, backend, args, kwargs, reply, limit))
    proc.start()
    proc.join(limit + 5)
    if proc.exitcode is None:
        proc.kill()
        proc.join(5)
    proc.close()
    text = cache.pop(reply, None)
    if not isinstance(text, str):
        raise DataError("the file could not be read: its process ended before it finished (out of memory, "
                        f"or over the {limit} s limit)")
    out = json.loads(text)
    if "data_error" in out:
        raise DataError(out["data_error"])
    if "error" in out:
        raise RuntimeError(f"{job_name(fn)} failed ({out['error']}); the details are in the server log")
    return out["value"]


# --- the job server -------------------------------------------------------------------------------

_server_lock = threading.Lock()


def job_server_context():
    """multiprocessing's forkserver context, preloading execal (started on first use, once per process)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


class _JobPopen(popen_forkserver.Popen):
    """The forkserver's Popen (Python 3.11's `_launch`), except that a job never re-imports the main
    module: a script without a `__main__` guard would otherwise start a second server inside the job."""

    def _launch(self, process_obj):
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        buf = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, buf)
            reduction.dump(process_obj, buf)
        finally:
            set_spawning_popen(None)
        self.sentinel, w = forkserver.connect_to_new_process(self._fds)
        _parent_w = os.dup(w)
        self.finalizer = multiprocessing.util.Finalize(self, multiprocessing.util.close_fds, (_parent_w, self.sentinel))
        with open(w, "wb", closefd=True) as f:
            f.write(buf.getbuffer())
        self.pid = forkserver.read_signed(self.sentinel)


class JobProcess(ForkServerProcess):
    """A process forked by the job server (see `_JobPopen`)."""

    @staticmethod
    def _Popen(process_obj):
        job_server_context()
        return _JobPopen(process_obj)


def _ready() -> None:
    """A job that does nothing: it runs once the job server has imported execal."""


_started: list[bool] = []


def start_job_server(wait_s: float = 120.0) -> None:
    """Start the job server (once per process) and wait until it can fork jobs: a web worker does this at
    app creation, so it is ready for jobs when it starts serving, and the first job forks at once."""
    with _server_lock:
        if _started:
            return
        job_server_context()
        forkserver.ensure_running()
        resource_tracker.ensure_running()
        probe = JobProcess(target=_ready, name="execal-job-server-ready")
        probe.start()
        probe.join(wait_s)
        if probe.exitcode != 0:
            raise RuntimeError(f"the job server did not start (exit code {probe.exitcode})")
        probe.close()
        _started.append(True)


# --- handles ----------------------------------------------------------------------------------------


def handle_of(pid: int) -> str:
    try:
        return f"{pid}:{psutil.Process(pid).create_time():.3f}"
    except psutil.Error:     # already gone: a handle that names no live process (its result decides)
        return f"{pid}:0"


def process_of(handle: Any) -> psutil.Process | None:
    """The live process a handle names, or None (gone, a zombie, or a recycled pid)."""
    try:
        pid_text, _, started = str(handle).partition(":")
        proc = psutil.Process(int(pid_text))
        if not started or abs(proc.create_time() - float(started)) > 0.01:
            return None
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc
    except (ValueError, psutil.Error):
        return None


def safe_context(context: dict) -> dict:
    """What of Dash's callback context a job gets: no cookies or headers (the session cookie stays on
    the web server; with Celery the context crosses Redis)."""
    out = dict(context)
    for name in ("cookies", "headers", "dash_response", "background_callback_manager", "updated_props"):
        out.pop(name, None)
    if "args" in out and out["args"] is not None:
        out["args"] = {k: v for k, v in dict(out["args"]).items() if k not in ("cacheKey", "job", "endId")}
    return out


@dataclass(frozen=True)
class JobRef:
    """What `make_job_fn` returns for Dash to keep: the job function by name (picklable)."""
    name: str | None
    progress: bool
    label: str = ""


class JobManager(DiskcacheManager):
    """Dash's DiskcacheManager with jobs forked by the clean job server (see the module docstring)."""

    def __init__(self, cache: diskcache.Cache, *, owner_of: Callable[[], str | None] = lambda: None,
                 size_limit_bytes: int = store_mod.DEFAULT_CACHE_SIZE_BYTES, expire: float | None = None,
                 time_limit_s: int | None = None):
        super().__init__(cache, expire=expire)
        self.time_limit_s = int(time_limit_s or default_time_limit_s())
        self.backend = Backend("diskcache", cache_dir=str(cache.directory), size_limit_bytes=size_limit_bytes)
        self.owner_of = owner_of
        self._procs: dict[int, Any] = {}
        self._lock = threading.Lock()

    # Dash keeps what this returns and hands it back to call_job_fn
    def make_job_fn(self, fn, progress, key=None):
        name = getattr(fn, "__execal_job__", None)
        return JobRef(name=name, progress=bool(progress), label=getattr(fn, "__qualname__", str(fn)))

    def call_job_fn(self, key, job_fn, args, context):
        if not isinstance(job_fn, JobRef) or job_fn.name not in JOBS:
            raise RuntimeError(f"background callback {getattr(job_fn, 'label', job_fn)} is not a module-level "
                               "@background_job function")
        fn = JOBS[job_fn.name]
        owner = self.owner_of()        # who asks, from the request (server side), never from the body
        with self._lock:
            self._reap()
            proc = JobProcess(
                target=_job_process_main, name=f"execal-job {job_fn.name}",
                args=(fn, self.backend, job_fn.progress, key, self._make_progress_key(key), args,
                      safe_context(context), owner, self.time_limit_s))
            proc.start()
            self._procs[proc.pid] = proc
        return handle_of(proc.pid)

    def _reap(self) -> None:
        for pid, proc in list(self._procs.items()):
            if proc.exitcode is not None:
                proc.close()
                del self._procs[pid]

    def job_running(self, job):
        return process_of(job) is not None

    def terminate_job(self, job):
        if job is None:
            return
        proc = process_of(job)
        self.handle.set(_ENDED + str(job), 1, expire=3600)
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                proc.kill()
                proc.wait(1)

    def terminate_unhealthy_job(self, job):
        return False

    def get_result(self, key, job):
        result = wait_for_result(self.handle, key, lambda: self.job_running(job), self.UNDEFINED)
        if result is self.UNDEFINED and job and not self.job_running(job) \
                and self.handle.get(_ENDED + str(job)) is None:
            # gone without a result? look once more: it may have written it and exited in between
            result = self.handle.get(key, self.UNDEFINED)
            if result is self.UNDEFINED:
                log.warning("background job %s ended without a result", job)
                self.clear_cache_entry(self._make_progress_key(key))
                return {ERROR_KEY: {"msg": lost_message(self.time_limit_s), "tb": ""}}
        if result is self.UNDEFINED:
            return self.UNDEFINED
        if self.cache_by is None:
            self.clear_cache_entry(key)
        self.clear_cache_entry(self._make_progress_key(key))
        if job:
            self.handle.set(_ENDED + str(job), 1, expire=3600)
        if job and self.job_running(job):
            self.terminate_job(job)
        return result


# a poll waits up to this long for a running job's result, so a result reaches the page as soon as it is
# written instead of at the next poll (the waiting thread sleeps: it holds no CPU and no lock)
RESULT_WAIT_S = 1.0
RESULT_WAIT_STEP_S = 0.05


def wait_for_result(cache, key: str, running: Callable[[], bool], undefined: Any,
                    wait_s: float = RESULT_WAIT_S) -> Any:
    """The result under `key`, waiting up to `wait_s` while the job is still running."""
    deadline = time.monotonic() + wait_s
    checked = 0.0
    while True:
        result = cache.get(key, undefined)
        now = time.monotonic()
        if result is not undefined or now >= deadline:
            return result
        if now - checked >= 0.25:            # a job that died stops the wait (it is reported next)
            if not running():
                return cache.get(key, undefined)
            checked = now
        time.sleep(RESULT_WAIT_STEP_S)


def error_message(err: Exception) -> str:
    """The one line a user sees for a background callback that failed (Dash's BackgroundCallbackError)."""
    text = str(err)
    if JOB_LOST_MARK in text:
        return "Failed: " + text[text.index(JOB_LOST_MARK):].strip()
    if isinstance(err, store_mod.StorageUnavailable):
        return f"Not now: {err}"
    return ("Failed unexpectedly; the details are in the server log. The result shown is the previous one.")


__all__ = ["Backend", "JobManager", "JobRef", "background_job", "job_context", "job_owner", "job_stores",
           "job_cache", "start_job_server", "run_job_body", "error_message", "JOBS", "PRELOAD", "safe_context"]
