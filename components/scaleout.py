"""Scale out: several app servers and Celery workers on one Redis (set EXECAL_REDIS_URL).

- Storage every app server and worker reaches: `RedisCache` (components/rediscache.py), the part of
  diskcache's interface the stores use (get/set/add/pop/delete/touch/transact/in), keeps small values (sessions, dataset metadata and
  views, result metadata, job tickets, progress) in Redis and values of `BLOB_MIN_BYTES` or more (the
  Parquet bytes, pickled results) as files in the shared directory EXECAL_SHARED_DIR (Redis holds a
  pointer). Values are pickled like diskcache's, so Redis must be as private as the cache directory:
  bind it to a private network, with a password in the URL.
- Background callbacks run on Celery (`CeleryJobManager`, a Dash background-callback manager): the app
  server sends task "execal.job" (the job function by name, its arguments, the owner decided on the
  server); `execal worker` runs them (`make_celery` + `worker_main`), in prefork pool processes.
- A job that dies without a result is reported, never a hang: the task stamps "started" and keeps a
  heartbeat key alive (`HEARTBEAT_S`, expiring after `HEARTBEAT_TTL_S`); a poll that finds no result, a
  start stamp and no heartbeat answers the job card's error (`jobs.JOB_LOST`). Cancel revokes the task
  (terminating its process) and stays quiet.
- Redis down, or restarted empty: every storage call raises `store.StorageUnavailable` with one clear
  line, which the panels' error handlers show; when Redis is back the app serves again (Celery
  reconnects by itself); a session whose records were lost starts empty and says so. A blob file
  missing from the shared directory (deleted) reads as an evicted value: "no longer in the server's
  cache, load it again".
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import Any, Callable

from dash.background_callback.managers import BaseBackgroundCallbackManager

from execal.components import jobs
from execal.components import store as store_mod
from execal.components.rediscache import BLOB_MIN_BYTES, STORAGE_DOWN, RedisCache

log = logging.getLogger(__name__)

TASK_NAME = "execal.job"
HEARTBEAT_S = 0.5
HEARTBEAT_TTL_S = 1.5
QUEUED_TTL_S = 24 * 3600
_ALIVE = "execal:job-alive:"
_STARTED = "execal:job-started:"
_QUEUED = "execal:job-queued:"
_ENDED = "execal:job-ended:"


def redis_url() -> str | None:
    return os.environ.get("EXECAL_REDIS_URL", "").strip() or None


def shared_dir(path: str | os.PathLike | None = None) -> Path:
    """EXECAL_SHARED_DIR (or `path`): the directory every app server and worker mounts, made 0700."""
    raw = path or os.environ.get("EXECAL_SHARED_DIR", "").strip()
    if not raw:
        raise ValueError("EXECAL_REDIS_URL needs EXECAL_SHARED_DIR: a directory every app server and worker "
                         "can reach, for the Parquet bytes")
    return store_mod.private_cache_dir(raw)


def backend_from_env() -> jobs.Backend:
    url = redis_url()
    if not url:
        raise ValueError("EXECAL_REDIS_URL is not set")
    if not os.environ.get("EXECAL_SECRET_KEY", "").strip():
        raise ValueError("EXECAL_REDIS_URL needs EXECAL_SECRET_KEY: the same secret on every app server and "
                         "worker (it signs sessions and keys the data)")
    return jobs.Backend("redis", redis_url=url, shared_dir=str(shared_dir()))


# --- Celery -------------------------------------------------------------------------------------

_celery: dict[str, Any] = {}


def make_celery(url: str):
    """The Celery app of execal on `url` (broker only: results, progress and heartbeats go through the
    RedisCache), with the one task `execal.job`."""
    if url in _celery:
        return _celery[url]
    from celery import Celery

    app = Celery("execal", broker=url)
    app.conf.update(
        task_serializer="json", accept_content=["json"], task_ignore_result=True,
        worker_prefetch_multiplier=1, task_acks_late=False, broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False, worker_send_task_events=False,
        task_time_limit=jobs.default_time_limit_s(),
        broker_transport_options={"socket_timeout": 10, "socket_connect_timeout": 3},
    )
    app.task(name=TASK_NAME, bind=True)(_run_task)
    _celery[url] = app
    return app


@contextlib.contextmanager
def _heartbeat(cache: RedisCache, task_id: str):
    cache.set(_STARTED + task_id, 1, expire=QUEUED_TTL_S)
    stop = threading.Event()

    def beat():
        while not stop.is_set():
            with contextlib.suppress(Exception):
                cache.set(_ALIVE + task_id, 1, expire=HEARTBEAT_TTL_S)
            stop.wait(HEARTBEAT_S)

    cache.set(_ALIVE + task_id, 1, expire=HEARTBEAT_TTL_S)
    thread = threading.Thread(target=beat, name="execal-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(2)
        with contextlib.suppress(Exception):
            cache.delete(_ALIVE + task_id)


def _run_task(task, name: str, progress: bool, result_key: str, progress_key: str, args: Any, context: dict,
              owner: str | None, backend_fields: dict) -> None:
    """Celery task body (in a worker's pool process): the job function by name, with the job context."""
    backend = jobs.Backend(**backend_fields)
    cache = jobs.open_backend(backend)
    fn = jobs.JOBS.get(name)
    with _heartbeat(cache, task.request.id):
        if fn is None:
            cache.set(result_key, {jobs.ERROR_KEY: {"msg": f"this worker has no job {name!r}", "tb": ""}})
            return
        jobs.run_job_body(fn, cache, progress=progress, result_key=result_key, progress_key=progress_key,
                          args=args, context=context, owner=owner, backend=backend)


class CeleryJobManager(BaseBackgroundCallbackManager):
    """Dash background callbacks on Celery + Redis (see the module docstring)."""

    def __init__(self, cache: RedisCache, backend: jobs.Backend, *,
                 owner_of: Callable[[], str | None] = lambda: None, time_limit_s: int | None = None):
        super().__init__(None)
        self.handle = cache
        self.backend = backend
        self.owner_of = owner_of
        self.celery = make_celery(backend.redis_url)
        self.time_limit_s = int(time_limit_s or jobs.default_time_limit_s())

    def make_job_fn(self, fn, progress, key=None):
        return jobs.JobRef(name=getattr(fn, "__execal_job__", None), progress=bool(progress),
                           label=getattr(fn, "__qualname__", str(fn)))

    def call_job_fn(self, key, job_fn, args, context):
        if not isinstance(job_fn, jobs.JobRef) or job_fn.name not in jobs.JOBS:
            raise RuntimeError(f"background callback {getattr(job_fn, 'label', job_fn)} is not a module-level "
                               "@background_job function")
        task_id = "job-" + secrets.token_hex(16)
        clean = json.loads(json.dumps(jobs.safe_context(context), default=str))
        self.handle.set(_QUEUED + task_id, 1, expire=QUEUED_TTL_S)
        try:
            self.celery.send_task(TASK_NAME, task_id=task_id, args=[
                job_fn.name, job_fn.progress, key, self._make_progress_key(key),
                json.loads(json.dumps(args, default=str)), clean, self.owner_of(),
                {"kind": "redis", "redis_url": self.backend.redis_url, "shared_dir": self.backend.shared_dir}])
        except Exception as err:       # kombu's connection errors: the broker is Redis
            log.warning("cannot queue a job: %s", err)
            raise store_mod.StorageUnavailable(STORAGE_DOWN) from None
        return task_id

    # state
    def job_running(self, job):
        if not job:
            return False
        if self.handle.get(_ALIVE + str(job)) is not None:
            return True
        # queued and not started yet: still coming
        return self.handle.get(_STARTED + str(job)) is None and self.handle.get(_QUEUED + str(job)) is not None

    def terminate_job(self, job):
        if not job:
            return
        self.handle.set(_ENDED + str(job), 1, expire=3600)
        with contextlib.suppress(Exception):
            self.celery.control.revoke(str(job), terminate=True, signal="SIGKILL")

    def terminate_unhealthy_job(self, job):
        return False

    def get_progress(self, key):
        progress_key = self._make_progress_key(key)
        value = self.handle.get(progress_key)
        if value:
            self.handle.delete(progress_key)
        return value

    def result_ready(self, key):
        return self.handle.get(key) is not None

    def get_result(self, key, job):
        result = jobs.wait_for_result(self.handle, key, lambda: self.job_running(job), self.UNDEFINED)
        if result is self.UNDEFINED:
            if job and not self.job_running(job) and self.handle.get(_ENDED + str(job)) is None:
                result = self.handle.get(key, self.UNDEFINED)
                if result is self.UNDEFINED:
                    log.warning("job %s ended without a result", job)
                    self.handle.delete(self._make_progress_key(key))
                    return {jobs.ERROR_KEY: {"msg": jobs.lost_message(self.time_limit_s), "tb": ""}}
            return self.UNDEFINED
        self.handle.delete(key)
        self.handle.delete(self._make_progress_key(key))
        if job:
            self.handle.set(_ENDED + str(job), 1, expire=3600)
        return result

    def get_updated_props(self, key):
        props_key = self._make_set_props_key(key)
        value = self.handle.get(props_key, self.UNDEFINED)
        if value is self.UNDEFINED:
            return {}
        self.handle.delete(props_key)
        return value

    def clear_cache_entry(self, key):
        self.handle.delete(key)

    def get_or_create_signing_secret(self, generate):
        self.handle.add(self.SIGNING_SECRET_KEY, generate())
        return self.handle.get(self.SIGNING_SECRET_KEY)


def worker_main(concurrency: int = 2, name: str | None = None, loglevel: str = "INFO") -> None:
    """`execal worker`: Celery workers (prefork) for the background jobs of every app server on this Redis."""
    backend_from_env()            # refuse early without the settings every worker needs
    app = make_celery(redis_url())
    argv = ["worker", "--pool", "prefork", "--concurrency", str(concurrency), "--loglevel", loglevel,
            "--without-gossip", "--without-mingle", "--without-heartbeat"]
    if name:
        argv += ["-n", f"{name}@%h"]
    app.worker_main(argv)


__all__ = ["RedisCache", "CeleryJobManager", "make_celery", "worker_main", "backend_from_env", "shared_dir",
           "BLOB_MIN_BYTES"]
