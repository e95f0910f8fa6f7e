"""Uploads that never sit whole in a web worker: a plain Flask route streams the file to disk.

dcc.Upload reads the file in the browser into a base64 data URL and sends it inside one JSON callback
request: a 195 MB file costs a gunicorn worker about 1.3 GB at peak (the JSON body, the string, the
decoded bytes, the parse) and keeps ~360 MB (NOTES-serve.md has the measurements). Here instead:

- the browser posts the raw file to `ROUTE` (assets/execal_upload.js catches the file the Data panel's
  upload box was given before dcc.Upload reads it), which writes it in 1 MB pieces to a 0600 file in the
  private directory's `uploads/`, hashing and counting as it goes, and refuses it with 413 the moment it
  passes the upload limit; a request that names a Content-Length over the limit is refused unread;
- the request must come from this site's own page: the session (or user) of identity.py, the custom
  header `X-Execal-Upload` (a cross-site form cannot send it, and the route answers no CORS preflight),
  and, when the browser says so, Sec-Fetch-Site same-origin and an Origin equal to the host;
- the route answers {"token", "name", "bytes"}; the page puts it in the Data panel's `STREAMED` store and
  the Data panel's load callback parses the file from disk: from `ISOLATE_BYTES` (16 MB) on in a clean
  job process (`jobs.run_isolated`), so the frame is built, stored as Parquet and freed there while the
  web worker only sleeps; a smaller file in the worker itself;
- a token names an upload only for the owner who sent it (`execal:upload:<owner>:<token>`); the owner's
  previous upload file is deleted (the last one is kept, so "Reload" with another kind or mapping parses
  it again without a new upload).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import Response, request

from execal.components import identity
from execal.components import jobs
from execal.components import store as store_mod
from execal.models.data.schema import DataError

log = logging.getLogger(__name__)

ROUTE = "/_execal/upload"
HEADER = "X-Execal-Upload"
NAME_HEADER = "X-Execal-Filename"
CHUNK_BYTES = 2**20
UPLOAD_TTL_S = 24 * 3600
MAX_NAME_CHARS = 200
# from this size on a streamed upload is parsed in a clean process; below it, in the worker (the frame of a
# 16 MB CSV is ~40 MB for a moment, and a process per small upload would cost more than it saves)
ISOLATE_BYTES = 16 * 2**20
_KEY = "execal:upload:"
_LAST = "execal:upload-last:"


def _json(body: dict, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers={"Cache-Control": "no-store"})


def _refuse(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _same_origin() -> bool:
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("Origin")
    if origin:
        return urlsplit(origin).netloc.lower() == (request.host or "").lower()
    return True


def _clean_name(raw: str | None) -> str:
    name = unquote(raw or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    name = "".join(c for c in name if c.isprintable())[:MAX_NAME_CHARS]
    return name or "upload"


def upload_dir(cache) -> Path:
    path = Path(cache.directory) / "uploads"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def receive(cache, owner: str, max_bytes: int) -> Response:
    """The route's body: stream the request to a private file, then remember it for `owner`."""
    name = _clean_name(request.headers.get(NAME_HEADER))
    length = request.content_length
    if length is not None and length > max_bytes:
        return _refuse(f"{name}: the file is {length / 2**20:.3g} MB, over the {max_bytes / 2**20:.3g} MB "
                       "upload limit, and was not loaded", 413)
    token = secrets.token_urlsafe(18)
    folder = upload_dir(cache)
    part = folder / f"{token}.part"
    digest, total = hashlib.sha256(), 0
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            stream = request.stream
            while chunk := stream.read(CHUNK_BYTES):
                total += len(chunk)
                if total > max_bytes:
                    raise _TooBig()
                digest.update(chunk)
                fh.write(chunk)
    except _TooBig:
        part.unlink(missing_ok=True)
        return _refuse(f"{name}: the file is over the {max_bytes / 2**20:.3g} MB upload limit and was not "
                       "loaded", 413)
    except Exception:
        part.unlink(missing_ok=True)
        raise
    if total == 0:
        part.unlink(missing_ok=True)
        return _refuse(f"{name}: the file is empty (0 bytes)", 400)
    path = folder / f"{token}.bin"
    os.replace(part, path)
    record = {"path": str(path), "name": name, "bytes": total, "sha256": digest.hexdigest()}
    cache.set(f"{_KEY}{owner}:{token}", json.dumps(record), expire=UPLOAD_TTL_S)
    previous = cache.get(_LAST + owner)
    cache.set(_LAST + owner, token, expire=UPLOAD_TTL_S)
    if isinstance(previous, str) and previous != token:
        _forget(cache, owner, previous)
    return _json({"token": token, "name": name, "bytes": total})


class _TooBig(Exception):
    pass


def _forget(cache, owner: str, token: str) -> None:
    text = cache.pop(f"{_KEY}{owner}:{token}", None)
    if isinstance(text, str):
        Path(json.loads(text)["path"]).unlink(missing_ok=True)


def record(cache, owner: Any, token: Any) -> dict | None:
    """What the owner's upload `token` names (None for anyone else's, expired, or gone from disk)."""
    if not (store_mod.is_session_id(owner) and isinstance(token, str) and 8 <= len(token) <= 64):
        return None
    text = cache.get(f"{_KEY}{owner}:{token}")
    if not isinstance(text, str):
        return None
    rec = json.loads(text)
    return rec if Path(rec["path"]).is_file() else None


def _parse(cache, path: str, name: str, kind: str | None, mapping: dict | None, max_bytes: int) -> str:
    """In a clean job process: parse the file and store the dataset; returns its key."""
    return store_mod.SessionStore(cache).load_file(path, name=name, kind=kind, mapping=mapping,
                                                   max_bytes=max_bytes)


def load(st: store_mod.SessionStore, backend: jobs.Backend, owner: Any, token: Any, *, kind: str | None,
         mapping: dict | None, max_bytes: int) -> str:
    """The dataset key of the owner's streamed upload `token`, made the owner's active dataset: a file of
    `ISOLATE_BYTES` or more is parsed in a clean process (its frame never lives in this worker), a smaller
    one here (from disk: its raw bytes are never held). Raises DataError (unknown token, bad file)."""
    rec = record(st.cache, owner, token)
    if rec is None:
        raise DataError("this upload is no longer on the server: choose the file again")
    if rec["bytes"] < ISOLATE_BYTES:
        key = st.load_file(rec["path"], name=rec["name"], kind=kind, mapping=mapping, max_bytes=max_bytes)
    else:
        key = jobs.run_isolated(backend, st.cache, _parse, rec["path"], rec["name"], kind, mapping, max_bytes)
    if not store_mod.is_dataset_key(key):
        raise DataError("the file could not be stored; try again", file=rec["name"])
    st.set_active(owner, key)
    return key


def attach(app, cache, backend: jobs.Backend, max_bytes: int) -> None:
    """The upload route of `app` (a dash.Dash)."""
    server = app.server
    server.extensions["execal_backend"] = backend

    @server.route(ROUTE, methods=["POST"])
    def _upload():
        owner = identity.current_owner()
        if not store_mod.is_session_id(owner):
            return _refuse("no session: reload the page", 403)
        if request.headers.get(HEADER) != "1" or not _same_origin():
            return _refuse("uploads come from execal's own page", 403)
        try:
            return receive(cache, owner, max_bytes)
        except store_mod.StorageUnavailable as err:
            return _refuse(f"Not now: {err}", 503)


def backend_of(app) -> jobs.Backend:
    return app.server.extensions["execal_backend"]
