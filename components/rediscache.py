"""RedisCache: the part of diskcache's interface the stores use, on Redis (small values) and a shared
directory (values of `BLOB_MIN_BYTES` or more: Parquet bytes, pickled results), for scaled-out servers
(components/scaleout.py). Values are pickled like diskcache's, so Redis must be as private as the cache
directory. A Redis outage is `store.StorageUnavailable` with one clear line (`STORAGE_DOWN`); a blob
file missing from the shared directory (deleted) reads as an evicted value.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import secrets
from pathlib import Path
from typing import Any

from execal.components import store as store_mod

log = logging.getLogger(__name__)

BLOB_MIN_BYTES = 64 * 1024
KEY_PREFIX = "execal-cache:"
STORAGE_DOWN = ("the server's storage (Redis) is not reachable right now; try again in a moment "
                "(nothing you had is lost on your side)")


def _blocking(fn):
    """A Redis call; a connection failure becomes StorageUnavailable with one clear line."""
    def call(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except self._redis_errors as err:
            log.warning("Redis unavailable: %s", err)
            raise store_mod.StorageUnavailable(STORAGE_DOWN) from None
    call.__name__, call.__doc__ = fn.__name__, fn.__doc__
    return call


class RedisCache:
    """diskcache's interface as the stores use it, on Redis (small values) and the shared directory (blobs)."""

    def __init__(self, url: str, directory: str | os.PathLike, *, prefix: str = KEY_PREFIX):
        import redis

        self.url = url
        self.redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=3,
                                          health_check_interval=15, retry_on_timeout=False)
        self._redis_errors = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)
        self.directory = str(Path(directory))
        self.prefix = prefix

    # keys and blobs
    def _k(self, key: str) -> str:
        return self.prefix + key

    def _blob(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return Path(self.directory) / "blobs" / digest[:2] / (digest + ".bin")

    def _encode(self, key: str, value: Any) -> bytes:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) < BLOB_MIN_BYTES:
            return b"V" + data
        path = self._blob(key)
        if not os.path.isdir(self.directory):        # deleted under us: made again, private
            store_mod.private_cache_dir(self.directory)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
        return b"B" + path.name.encode()

    def _decode(self, key: str, raw: bytes | None, default: Any) -> Any:
        if raw is None:
            return default
        if raw[:1] == b"B":
            try:
                data = self._blob(key).read_bytes()
            except FileNotFoundError:     # the shared directory lost it: an evicted value
                log.warning("blob of %s missing from %s", key, self.directory)
                return default
            return pickle.loads(data)
        return pickle.loads(raw[1:])

    # the interface
    @_blocking
    def get(self, key: str, default: Any = None, **_kw) -> Any:
        return self._decode(key, self.redis.get(self._k(key)), default)

    @_blocking
    def set(self, key: str, value: Any, expire: float | None = None, **_kw) -> bool:
        px = int(expire * 1000) if expire else None
        self.redis.set(self._k(key), self._encode(key, value), px=px)
        return True

    @_blocking
    def add(self, key: str, value: Any, expire: float | None = None, **_kw) -> bool:
        px = int(expire * 1000) if expire else None
        return bool(self.redis.set(self._k(key), self._encode(key, value), px=px, nx=True))

    @_blocking
    def pop(self, key: str, default: Any = None, **_kw) -> Any:
        raw = self.redis.getdel(self._k(key))
        value = self._decode(key, raw, default)
        if raw is not None and raw[:1] == b"B":
            self._blob(key).unlink(missing_ok=True)
        return value

    @_blocking
    def delete(self, key: str, **_kw) -> bool:
        raw = self.redis.getdel(self._k(key))
        if raw is not None and raw[:1] == b"B":
            self._blob(key).unlink(missing_ok=True)
        return raw is not None

    @_blocking
    def touch(self, key: str, expire: float | None = None, **_kw) -> bool:
        if expire is None:
            return bool(self.redis.persist(self._k(key)) or self.redis.exists(self._k(key)))
        return bool(self.redis.pexpire(self._k(key), int(expire * 1000)))

    @_blocking
    def __contains__(self, key: str) -> bool:
        head = self.redis.getrange(self._k(key), 0, 0)
        if not head:
            return False
        # a blob whose file left the shared directory is not there any more
        return head != b"B" or self._blob(key).exists()

    @contextlib.contextmanager
    def transact(self, retry: bool = True):
        """One writer at a time for a read-modify-write (a Redis lock, released after 10 s at worst)."""
        try:
            lock = self.redis.lock(self.prefix + "lock:transact", timeout=10, blocking_timeout=10)
            got = lock.acquire()
        except self._redis_errors:
            raise store_mod.StorageUnavailable(STORAGE_DOWN) from None
        try:
            yield
        finally:
            if got:
                with contextlib.suppress(Exception):
                    lock.release()

    @_blocking
    def ping(self) -> bool:
        return bool(self.redis.ping())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.redis.close()

    @_blocking
    def clear(self) -> int:
        n = 0
        for key in self.redis.scan_iter(self.prefix + "*", count=500):
            self.redis.delete(key)
            n += 1
        return n
