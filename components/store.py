"""The server-side session store: where datasets live between callbacks, so frames never ride through the browser.

The browser holds only dataset keys. The session (its owner id) is decided by the server from a signed cookie
or the signed-in user (components/identity.py): the page's session store holds a placeholder that the server
replaces with the caller's own id in every callback request. Everything else lives in ONE private diskcache directory (mode 0700) shared by all gunicorn workers:

    execal:ds:<key>:parquet   the frame as Parquet bytes (diskcache stores bytes raw: nothing is pickled)
    execal:ds:<key>:meta      JSON text: kind, source, sha256, validation report, mapping
    execal:load:<request>     JSON text: the dataset key a (raw-bytes sha256, file name, kind override, mapping) request made,
                              so loading the same file twice is a lookup, not a parse
    execal:session:<id>       JSON text: {"active": key, "datasets": [keys, most recent last]}
    execal:upload:<id>:raw / :name   the session's last uploaded file as it arrived (bytes) and its name, so a
                              column mapping typed after a refusal applies to that file (never to the
                              browser, which keeps no copy)
    execal:ds:<key>:view:<name>  JSON text: a small view of the dataset (`register_view`), so a page shows
                              a 1M-row dataset's summary, preview and choices without reading the frame

A dataset key is `<HMAC(server secret, content sha256 and file name)>-<kind>`, with `-m<digest>` appended when a
column mapping shaped the frame: the content hash (printed in an exported config) is a de-duplication detail, never
a key, and keys differ between servers. The file name is part of the identity, so the same bytes uploaded under two
names are two datasets: nobody sees another uploader's file name (or results filed under it); the same bytes
under the same name are stored once, which tells the second uploader nothing they did not hold. The server secret is EXECAL_SECRET_KEY, else generated once and kept 0600 in the
private directory (`server_secret`).
Dash's DiskcacheManager (background callbacks) shares the same `diskcache.Cache`; our keys are prefixed `execal:`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import stat
import tempfile
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import diskcache
import pandas as pd

from execal.models.data import io as model_io
from execal.models.data.schema import DataError, Dataset, DropRecord, ValidationReport

log = logging.getLogger(__name__)

# ids of the app-level stores (layout.py places them; every panel reads them)
SESSION_STORE_ID = "execal-session"          # a placeholder the server replaces with the caller's owner id
ACTIVE_DATASET_ID = "execal-active-dataset"  # {"key": dataset key} or None, memory

DEFAULT_CACHE_DIR = Path("~/.cache/execal")
# LRU over everything in the cache (datasets and background-callback results): a busy server trims
# the least recently used datasets instead of filling the disk.
DEFAULT_CACHE_SIZE_BYTES = 4 * 2**30
# decoded frames kept per process (each gunicorn worker has its own)
MEMORY_BUDGET_BYTES = 512 * 2**20
SESSION_TTL_S = 30 * 24 * 3600
LOAD_INDEX_TTL_S = 30 * 24 * 3600
UPLOAD_TTL_S = 24 * 3600
MAX_SESSION_DATASETS = 20

_PREFIX = "execal:"
_KEY_RE = re.compile(r"^[0-9a-f]{64}-[a-z_]+(-m[0-9a-f]{12})?$")
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


class CacheDirError(RuntimeError):
    """The cache directory cannot be made private (wrong owner, shared temp dir, not a directory)."""


class StorageUnavailable(RuntimeError):
    """The server's storage cannot be reached right now (Redis down or restarting): one line for the user."""


SECRET_FILE = "execal-secret-key"
MIN_SECRET_CHARS = 16


def server_secret(directory: str | os.PathLike | None) -> bytes:
    """The server secret: EXECAL_SECRET_KEY, else 32 random bytes generated once and kept (hex, mode 0600)
    in `directory` (the private cache directory, or the shared directory of a scaled-out deployment).

    It signs the session cookie and keys datasets and results, so keys differ between servers. Several
    workers starting at once agree: the file appears whole or not at all (written aside, then linked)."""
    text = os.environ.get("EXECAL_SECRET_KEY", "").strip()
    if text:
        if len(text) < MIN_SECRET_CHARS:
            raise ValueError(f"EXECAL_SECRET_KEY must have at least {MIN_SECRET_CHARS} characters")
        return text.encode("utf-8")
    if directory is None:
        raise ValueError("no directory to keep the server secret in (set EXECAL_SECRET_KEY)")
    path = Path(directory) / SECRET_FILE
    if not path.exists():
        tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass                       # another worker won: use its secret
        finally:
            os.unlink(tmp)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 or (hasattr(os, "geteuid") and st.st_uid != os.geteuid()):
        raise CacheDirError(f"{path} must be owned by this user with mode 0600")
    value = path.read_text().strip()
    if len(value) < MIN_SECRET_CHARS:
        raise CacheDirError(f"{path} is damaged (too short): delete it to generate a new server secret")
    return value.encode("utf-8")


# --- the private directory ----------------------------------------------------------------------


def private_cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The cache directory (`path`, else env EXECAL_CACHE_DIR, else ~/.cache/execal), created 0700.

    An existing directory with group/other permission bits is tightened to 0700 (the cached frames are
    users' data). A directory owned by another user, or a shared sticky temp directory such as /tmp, is
    refused rather than chmod-ed: that would either fail or take the directory away from its other users.
    """
    raw = path if path is not None else (os.environ.get("EXECAL_CACHE_DIR") or DEFAULT_CACHE_DIR)
    p = Path(raw).expanduser().resolve()
    if p == Path(tempfile.gettempdir()).resolve():
        raise CacheDirError(f"cache directory {p} is the shared temp directory; use a private directory")
    try:
        p.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise CacheDirError(f"cannot create cache directory {p}: {err.strerror}") from err
    st = p.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise CacheDirError(f"cache path {p} is not a directory")
    if st.st_mode & stat.S_ISVTX:
        raise CacheDirError(f"cache directory {p} is a shared (sticky) directory; use a private directory")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise CacheDirError(f"cache directory {p} is owned by uid {st.st_uid}, not by this user")
    if stat.S_IMODE(st.st_mode) != 0o700:
        log.warning("cache directory %s had mode %o; setting 0700", p, stat.S_IMODE(st.st_mode))
        os.chmod(p, 0o700)
    return p


class ServerCache(diskcache.Cache):
    """The server's diskcache, which notices when its directory was deleted (or replaced) under it.

    A worker's open SQLite connections would go on using the deleted file while new job processes create a
    new one: each would see a different cache. `revive_if_gone()` (the app calls it before each request; a
    stat) recreates the private directory, the database and the server secret file (the same secret, so
    running workers and new job processes agree) and drops every thread's old connection. What the
    deleted directory held is gone: panels then say "no longer in the server's cache, load it again"."""

    def __init__(self, directory: str, **settings):
        super().__init__(directory, **settings)
        self._open_settings = settings
        self._revive_lock = threading.Lock()
        self._db_inode = self._inode()
        secret = Path(directory) / SECRET_FILE
        self._secret_text = secret.read_text() if secret.exists() else None

    def _inode(self) -> int | None:
        try:
            return os.stat(os.path.join(self.directory, diskcache.core.DBNAME)).st_ino
        except OSError:
            return None

    def remember_secret(self) -> None:
        """Keep the server secret file's text, to write it back if the directory is deleted."""
        secret = Path(self.directory) / SECRET_FILE
        if secret.exists():
            self._secret_text = secret.read_text()

    def revive_if_gone(self) -> bool:
        if self._db_inode is not None and self._inode() == self._db_inode:
            return False
        with self._revive_lock:
            if self._db_inode is not None and self._inode() == self._db_inode:
                return False
            log.warning("the cache directory %s was deleted or replaced: starting an empty cache", self.directory)
            private_cache_dir(self.directory)
            if self._secret_text and not os.environ.get("EXECAL_SECRET_KEY", "").strip():
                path = Path(self.directory) / SECRET_FILE
                tmp = path.with_name(f"{SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(self._secret_text)
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, path)
                os.unlink(tmp)
            # a fresh database and fresh per-thread connections (the old ones are dropped with the old local)
            diskcache.Cache.__init__(self, self.directory, **self._open_settings)
            self._db_inode = self._inode()
            return True


def open_cache(path: str | os.PathLike | None = None, *,
               size_limit_bytes: int = DEFAULT_CACHE_SIZE_BYTES) -> ServerCache:
    """The one `diskcache.Cache` of this server, in `private_cache_dir(path)`.

    Every gunicorn worker opens the same directory; diskcache (SQLite + files) is safe across processes.
    """
    directory = private_cache_dir(path)
    return ServerCache(str(directory), size_limit=int(size_limit_bytes), eviction_policy="least-recently-used")


# --- helpers ------------------------------------------------------------------------------------


def new_session_id() -> str:
    return str(uuid.uuid4())


def is_session_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_UUID_RE.match(value))


def is_dataset_key(value: Any) -> bool:
    return isinstance(value, str) and bool(_KEY_RE.match(value))


def kind_of_key(key: Any) -> str | None:
    """The dataset kind a key names (`<sha256>-<kind>[-m<mapping digest>]`), read without the frame."""
    if not is_dataset_key(key):
        return None
    return key[65:].split("-", 1)[0]


def mapping_digest(mapping: dict[str, str] | None) -> str:
    """Short stable digest of a column mapping ("" for none): part of a dataset's identity."""
    if not mapping:
        return ""
    text = json.dumps(sorted((str(k), str(v)) for k, v in mapping.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def dataset_key(sha256: str, kind: str, mapping: dict[str, str] | None = None, *, secret: bytes,
                name: str | None = None) -> str:
    """The key of a dataset on this server: the content hash and the file name (the dataset's
    `source`) keyed with the server secret."""
    material = sha256 if name is None else f"{sha256}\x00{name}"
    keyed = hmac.new(secret, material.encode("utf-8"), hashlib.sha256).hexdigest()
    digest = mapping_digest(mapping)
    return f"{keyed}-{kind}" + (f"-m{digest}" if digest else "")


def _name_digest(name: str) -> str:
    """A file name as a fixed-length, key-safe part of a load request."""
    return hashlib.sha256(str(name).encode("utf-8")).hexdigest()[:16]


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, engine="pyarrow")
    return buf.getvalue()


def frame_from_parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data), engine="pyarrow")


def report_from_dict(d: dict) -> ValidationReport:
    return ValidationReport(
        rows_read=int(d.get("rows_read", 0)), rows_kept=int(d.get("rows_kept", 0)),
        dropped=[DropRecord(reason=x["reason"], column=x.get("column"), count=int(x["count"]),
                            first_rows=list(x.get("first_rows", []))) for x in d.get("dropped", [])],
        warnings=list(d.get("warnings", [])))


# --- small JSON views of a dataset ---------------------------------------------------------------

# name -> build(dataset) -> JSON-ready dict. A panel registers what it shows of a dataset; the views are
# built when the dataset is stored (the frame is in hand then) and kept beside its Parquet, so a new
# worker draws them without decoding the whole frame. "info" is the store's own: kind, source, rows, dtypes.
_VIEWS: dict[str, Callable[[Dataset], dict]] = {}


def register_view(name: str, build: Callable[[Dataset], dict]) -> None:
    """Register a view: `build(dataset)` returns a JSON-ready dict (its JSON round trip is what callers get)."""
    _VIEWS[name] = build


def _info_view(dataset: Dataset) -> dict:
    return {"kind": dataset.kind, "source": dataset.source, "rows": int(len(dataset.frame)),
            "dtypes": {str(c): str(t) for c, t in dataset.frame.dtypes.items()}}


register_view("info", _info_view)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):       # numpy / pandas scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


# --- the store ----------------------------------------------------------------------------------


class SessionStore:
    """Datasets by key and each session's active dataset, on top of one `diskcache.Cache`.

    Decoded frames of the most recently used datasets (up to `memory_bytes` per process) are kept in
    memory too, so re-rendering a panel does not re-read Parquet; callers get a shallow copy
    (copy-on-write), so they cannot alter the cached frame.
    """

    def __init__(self, cache: diskcache.Cache, *, memory_bytes: int = MEMORY_BUDGET_BYTES,
                 secret: bytes | None = None):
        self.cache = cache
        self.secret = secret if secret is not None else server_secret(cache.directory)
        self._memory: OrderedDict[str, tuple[Dataset, int]] = OrderedDict()
        self._memory_bytes = memory_bytes
        self._lock = threading.Lock()

    # datasets ---------------------------------------------------------------------------------

    def put_dataset(self, session_id: str | None, dataset: Dataset, *,
                    mapping: dict[str, str] | None = None, activate: bool = True) -> str:
        """Store `dataset` (Parquet bytes + JSON metadata) and, with a session, make it its active one."""
        key = dataset_key(dataset.sha256, dataset.kind, mapping, secret=self.secret, name=dataset.source)
        if not self.has_dataset(key):
            meta = {"kind": dataset.kind, "source": dataset.source, "sha256": dataset.sha256,
                    "report": dataset.report.to_dict(), "mapping": dict(mapping or {})}
            # parquet first: a reader that finds the meta can rely on the frame being there
            self.cache.set(self._k("ds", key, "parquet"), frame_to_parquet(dataset.frame))
            self.cache.set(self._k("ds", key, "meta"), json.dumps(meta))
        self._remember(key, dataset)
        for name in _VIEWS:
            if self._k("ds", key, "view", name) not in self.cache:
                try:
                    self._build_view(key, name, dataset)
                except Exception:   # a view is a shortcut: a failure here is rebuilt (or shown) on use
                    log.exception("view %s of %s failed", name, key)
        if session_id is not None and activate:
            self.set_active(session_id, key)
        return key

    def has_dataset(self, key: str) -> bool:
        return (is_dataset_key(key) and self._k("ds", key, "meta") in self.cache
                and self._k("ds", key, "parquet") in self.cache)

    def get_dataset(self, session_or_key: str | None) -> Dataset | None:
        """The dataset for a key, or a session's active dataset; None when unknown or evicted."""
        if is_session_id(session_or_key):
            key = self.active_key(session_or_key)
        elif is_dataset_key(session_or_key):
            key = session_or_key
        else:
            return None
        if key is None:
            return None
        with self._lock:
            entry = self._memory.get(key)
            if entry is not None:
                self._memory.move_to_end(key)
        hit = entry[0] if entry is not None else None
        if hit is None:
            meta_text = self.cache.get(self._k("ds", key, "meta"))
            data = self.cache.get(self._k("ds", key, "parquet"))
            if meta_text is None or not isinstance(data, bytes):
                return None
            meta = json.loads(meta_text)
            hit = Dataset(kind=meta["kind"], frame=frame_from_parquet(data), source=meta["source"],
                          sha256=meta["sha256"], report=report_from_dict(meta["report"]))
            self._remember(key, hit)
        return dataclasses.replace(hit, frame=hit.frame.copy(deep=False))

    def view(self, key: str | None, name: str) -> dict | None:
        """The registered view `name` of dataset `key` (from the cache, else built from the frame and
        cached); None when the dataset is unknown or evicted."""
        if not is_dataset_key(key) or name not in _VIEWS:
            return None
        text = self.cache.get(self._k("ds", key, "view", name))
        if isinstance(text, str) and self.has_dataset(key):
            return json.loads(text)
        dataset = self.get_dataset(key)
        return None if dataset is None else self._build_view(key, name, dataset)

    def info(self, key: str | None) -> dict | None:
        """{"kind", "source", "rows", "dtypes"} of a dataset without reading its frame; None when gone."""
        return self.view(key, "info")

    def _build_view(self, key: str, name: str, dataset: Dataset) -> dict:
        text = json.dumps(_VIEWS[name](dataset), default=_jsonable)
        self.cache.set(self._k("ds", key, "view", name), text)
        return json.loads(text)

    def _remember(self, key: str, dataset: Dataset) -> None:
        size = int(dataset.frame.memory_usage(index=True, deep=False).sum())
        if size > self._memory_bytes:
            return   # a frame bigger than the budget is re-read from Parquet instead
        with self._lock:
            self._memory[key] = (dataset, size)
            self._memory.move_to_end(key)
            while sum(n for _, n in self._memory.values()) > self._memory_bytes:
                self._memory.popitem(last=False)

    # the per-content-hash load cache ------------------------------------------------------------

    def load_bytes(self, raw: bytes, *, name: str, kind: str | None = None,
                   mapping: dict[str, str] | None = None, max_bytes: int | None = None,
                   loader: Callable[..., Dataset] | None = None,
                   session_id: str | None = None) -> str:
        """Load `raw` into the store (or find it there) and return its dataset key.

        The same bytes with the same kind override and mapping are parsed once per cache, whichever
        worker or session asks. Raises `DataError` (from the loader, or for an over-size file).
        """
        if max_bytes is not None and len(raw) > max_bytes:
            raise DataError(f"file is {len(raw) / 2**20:.3g} MB ({len(raw):,} bytes), over the "
                            f"{max_bytes / 2**20:.3g} MB upload limit", file=name)
        raw_sha = hashlib.sha256(raw).hexdigest()
        request = self._k("load", raw_sha, _name_digest(name), kind or "auto", mapping_digest(mapping) or "nomap")
        key = self.cache.get(request)
        if not (isinstance(key, str) and self.has_dataset(key)):
            dataset = (loader or model_io.load)(raw, name=name, kind=kind, mapping=mapping, max_bytes=max_bytes)
            key = self.put_dataset(None, dataset, mapping=mapping)
            self.cache.set(request, key, expire=LOAD_INDEX_TTL_S)
        if session_id is not None:
            self.set_active(session_id, key)
        return key

    def load_file(self, path: str | os.PathLike, *, name: str, kind: str | None = None,
                  mapping: dict[str, str] | None = None, max_bytes: int | None = None,
                  session_id: str | None = None) -> str:
        """`load_bytes` for a file on disk (a streamed upload): hashed and parsed from the file, never
        read whole into memory here. Raises `DataError`."""
        size = os.path.getsize(path)
        if max_bytes is not None and size > max_bytes:
            raise DataError(f"file is {size / 2**20:.3g} MB ({size:,} bytes), over the "
                            f"{max_bytes / 2**20:.3g} MB upload limit", file=name)
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(4 * 2**20):
                digest.update(chunk)
        request = self._k("load", digest.hexdigest(), _name_digest(name), kind or "auto",
                          mapping_digest(mapping) or "nomap")
        key = self.cache.get(request)
        if not (isinstance(key, str) and self.has_dataset(key)):
            dataset = model_io.load(path, name=name, kind=kind, mapping=mapping, max_bytes=max_bytes)
            key = self.put_dataset(None, dataset, mapping=mapping)
            self.cache.set(request, key, expire=LOAD_INDEX_TTL_S)
        if session_id is not None:
            self.set_active(session_id, key)
        return key

    # sessions -----------------------------------------------------------------------------------

    def _session(self, session_id: str) -> dict:
        text = self.cache.get(self._k("session", session_id))
        return json.loads(text) if isinstance(text, str) else {"active": None, "datasets": []}

    def set_active(self, session_id: str, key: str) -> None:
        if not is_session_id(session_id):
            raise ValueError(f"not a session id: {session_id!r}")
        if not is_dataset_key(key):
            raise ValueError(f"not a dataset key: {key!r}")
        # a transaction: two workers updating one session must not lose each other's dataset
        with self.cache.transact():
            record = self._session(session_id)
            datasets = [k for k in record.get("datasets", []) if k != key] + [key]
            record = {"active": key, "datasets": datasets[-MAX_SESSION_DATASETS:]}
            self.cache.set(self._k("session", session_id), json.dumps(record), expire=SESSION_TTL_S)

    def keep_upload(self, session_id: str, raw: bytes, name: str) -> None:
        """Keep the session's last uploaded file (bytes as they arrived, and its name) for a day: a
        reload with another kind or column mapping reads it here, not from the browser."""
        if not is_session_id(session_id):
            raise ValueError(f"not a session id: {session_id!r}")
        with self.cache.transact():
            self.cache.set(self._k("upload", session_id, "raw"), bytes(raw), expire=UPLOAD_TTL_S)
            self.cache.set(self._k("upload", session_id, "name"), str(name), expire=UPLOAD_TTL_S)

    def last_upload(self, session_id: str) -> tuple[bytes, str] | None:
        """(bytes, file name) of the session's last upload, or None (none, expired or evicted)."""
        if not is_session_id(session_id):
            return None
        raw = self.cache.get(self._k("upload", session_id, "raw"))
        name = self.cache.get(self._k("upload", session_id, "name"))
        return (raw, name) if isinstance(raw, bytes) and isinstance(name, str) else None

    def active_key(self, session_id: str) -> str | None:
        """The session's active dataset key, if it is still in the cache."""
        if not is_session_id(session_id):
            return None
        key = self._session(session_id).get("active")
        return key if isinstance(key, str) and self.has_dataset(key) else None

    def session_keys(self, session_id: str) -> list[str]:
        """The session's datasets still in the cache, most recent last."""
        if not is_session_id(session_id):
            return []
        return [k for k in self._session(session_id).get("datasets", []) if self.has_dataset(k)]

    @staticmethod
    def _k(*parts: str) -> str:
        return _PREFIX + ":".join(parts)


# --- the store of a Dash app --------------------------------------------------------------------

_EXTENSION = "execal_store"


def attach(app, store: SessionStore) -> None:
    """Make `store` the app's session store (kept in Flask's per-app `extensions` registry)."""
    app.server.extensions[_EXTENSION] = store


def get_store(app) -> SessionStore:
    try:
        return app.server.extensions[_EXTENSION]
    except KeyError:
        raise RuntimeError("no session store attached to this app; build it with app.create_app()") from None
