"""Who is asking: the session, a server-signed HttpOnly SameSite=Lax cookie; and, when authentication is
on, the user. Everything a request reads or writes in the stores is scoped to this one owner.

The owner of a request is decided here, on the server, before any callback runs:
- authentication by a users file (EXECAL_USERS_FILE: one `name:werkzeug-password-hash` a line, written by
  `execal users add NAME`): HTTP Basic, checked against the hash (a verified header is remembered for a
  few minutes per worker, so polls do not pay the hash each time); the owner is the user;
- or a trusted reverse-proxy header (EXECAL_AUTH_HEADER, e.g. X-Forwarded-User), honoured only when
  configured and only from the proxy (the server must not be reachable around it); the owner is the user;
- otherwise the session: a random id in Flask's signed session cookie (`execal_session`, HttpOnly,
  SameSite=Lax, Secure with EXECAL_SECURE_COOKIES=1), signed with the server secret
  (`store.server_secret`: EXECAL_SECRET_KEY, else generated once, 0600, in the private directory).
A user's owner id is derived from the name with the server secret (uuid-shaped, like a session id), so
one user sees their own datasets and results from any browser, and nobody else's.

The browser never holds the owner id. The page's session store (`store.SESSION_STORE_ID`) holds a
placeholder, and every callback request has its value replaced by the request's owner before Dash reads
it (`_bind_request`): whatever a client sends there, a callback sees its caller. The two app-level keys
the browser holds (the active dataset and the active result) are checked the same way: a key the owner
has no right to becomes None. A dataset's content hash is never a key (store.dataset_key is keyed with
the server secret) and never a way in.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from flask import Flask, Response, g, has_request_context, request, session
from werkzeug.security import check_password_hash, generate_password_hash

from execal.components import results as results_mod
from execal.components import security
from execal.components import store as store_mod

log = logging.getLogger(__name__)

COOKIE_NAME = "execal_session"
SESSION_FIELD = "sid"
PLACEHOLDER = "server"              # what the page's session store holds: the real id stays on the server
SESSION_DAYS = 30
AUTH_CACHE_S = 300
CALLBACK_PATH = "/_dash-update-component"
REALM = "execal"


class UsersFileError(ValueError):
    """The users file cannot be read or has a bad line."""


# --- the users file -----------------------------------------------------------------------------


def read_users(path: str | os.PathLike) -> dict[str, str]:
    """{name: password hash} of a users file (`name:hash` lines; blank lines and # comments skipped)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise UsersFileError(f"cannot read the users file {p}: {err.strerror}") from None
    users: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not valid_user_name(name) or "$" not in hashed:
            raise UsersFileError(f"{p}, line {n}: expected name:password-hash (written by `execal users add`)")
        users[name] = hashed
    return users


def valid_user_name(name: str) -> bool:
    return bool(name) and len(name) <= 128 and all(c.isalnum() or c in "._-@" for c in name)


def _write_users(p: Path, users: dict[str, str]) -> None:
    text = "# execal users: name:password-hash (werkzeug); edit with `execal users`\n" + "".join(
        f"{n}:{h}\n" for n, h in sorted(users.items()))
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)     # a new ~/.config/execal: owner only
    tmp = p.with_name(p.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, p)


def add_user(path: str | os.PathLike, name: str, password: str) -> None:
    """Add or replace `name` in the users file (created 0600), storing only a salted hash."""
    if not valid_user_name(name):
        raise UsersFileError(f"user name {name!r}: use letters, digits and . _ - @ (at most 128)")
    if len(password) < 8:
        raise UsersFileError("the password must have at least 8 characters")
    p = Path(path)
    users = read_users(p) if p.exists() else {}
    users[name] = generate_password_hash(password)
    _write_users(p, users)


def remove_user(path: str | os.PathLike, name: str) -> None:
    p = Path(path)
    users = read_users(p)
    users.pop(name, None)
    _write_users(p, users)


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthSettings:
    """How requests are authenticated: "none" (sessions only), "users" (a users file) or "header"."""
    mode: str = "none"
    users_file: str | None = None
    header: str | None = None
    secure_cookies: bool = False

    @classmethod
    def from_env(cls) -> AuthSettings:
        users_file = os.environ.get("EXECAL_USERS_FILE", "").strip() or None
        header = os.environ.get("EXECAL_AUTH_HEADER", "").strip() or None
        secure = os.environ.get("EXECAL_SECURE_COOKIES", "").strip().lower() in ("1", "true", "yes")
        if users_file and header:
            raise ValueError("set EXECAL_USERS_FILE or EXECAL_AUTH_HEADER, not both")
        if users_file:
            read_users(users_file)      # refuse to start on a bad file
            return cls("users", users_file=users_file, secure_cookies=secure)
        if header:
            return cls("header", header=header, secure_cookies=secure)
        return cls("none", secure_cookies=secure)

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


# --- owners ------------------------------------------------------------------------------------


def user_owner(secret: bytes, name: str) -> str:
    """The owner id of a user: uuid-shaped, derived from the name with the server secret."""
    digest = hmac.new(secret, b"user:" + name.encode("utf-8"), hashlib.sha256).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def current_owner() -> str | None:
    """The owner of the request being served (None outside a request or before `attach`'s hook ran)."""
    if not has_request_context():
        return None
    return getattr(g, "execal_owner", None)


def current_user() -> str | None:
    return getattr(g, "execal_user", None) if has_request_context() else None


@dataclass
class _Verified:
    """Basic-auth headers already checked against the users file (per worker, a few minutes)."""
    items: OrderedDict = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, key: str) -> str | None:
        with self.lock:
            hit = self.items.get(key)
            if hit is None or hit[1] < time.monotonic():
                return None
            return hit[0]

    def put(self, key: str, user: str) -> None:
        with self.lock:
            self.items[key] = (user, time.monotonic() + AUTH_CACHE_S)
            while len(self.items) > 256:
                self.items.popitem(last=False)


def owns_dataset(st: store_mod.SessionStore, owner: str | None, key: Any) -> bool:
    return store_mod.is_dataset_key(key) and owner is not None and key in st.session_keys(owner)


def owns_result(st: store_mod.SessionStore, results: results_mod.ResultStore, owner: str | None, key: Any) -> bool:
    """An owner may see its active result, and results of its own datasets."""
    if owner is None or not results_mod.is_result_key(key):
        return False
    if results.active(owner) == key:
        return True
    dataset = results.meta(key).get("dataset")
    return bool(dataset) and dataset in st.session_keys(owner)


def _key_value(value: Any) -> Any:
    return value.get("key") if isinstance(value, dict) else None


def attach(app, *, secret: bytes, settings: AuthSettings | None = None,
           stores: Callable[[], tuple[store_mod.SessionStore, results_mod.ResultStore]] | None = None,
           public_paths: tuple[str, ...] = (), alert_id: str = "execal-app-alert") -> AuthSettings:
    """Identify every request of `app` (a dash.Dash): authentication, the session cookie, the owner."""
    settings = settings or AuthSettings.from_env()
    server: Flask = app.server
    server.secret_key = secret
    server.config.update(SESSION_COOKIE_NAME=COOKIE_NAME, SESSION_COOKIE_HTTPONLY=True,
                         SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=settings.secure_cookies,
                         PERMANENT_SESSION_LIFETIME=SESSION_DAYS * 24 * 3600)
    verified = _Verified()
    users_path = Path(settings.users_file) if settings.users_file else None
    users_cache: dict = {"mtime": None, "users": {}}

    def users() -> dict[str, str]:
        mtime = users_path.stat().st_mtime_ns
        if users_cache["mtime"] != mtime:      # `execal users add` while serving takes effect
            users_cache.update(mtime=mtime, users=read_users(users_path))
        return users_cache["users"]

    def _challenge() -> Response:
        return Response("login required\n", status=401, mimetype="text/plain",
                        headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'})

    def _authenticate() -> str | Response | None:
        if settings.mode == "header":
            name = (request.headers.get(settings.header or "") or "").strip()
            if not valid_user_name(name):
                return Response(f"not signed in (no {settings.header} header from the proxy)\n", status=401,
                                mimetype="text/plain")
            return name
        if settings.mode == "users":
            header = request.headers.get("Authorization", "")
            auth = request.authorization
            if not header or auth is None or auth.type != "basic" or not auth.username:
                return _challenge()
            cache_key = hashlib.sha256(secret + header.encode("utf-8", "replace")).hexdigest()
            name = verified.get(cache_key)
            if name is None:
                hashed = users().get(auth.username)
                if hashed is None or not check_password_hash(hashed, auth.password or ""):
                    log.warning("failed login for %r from %s", auth.username[:64], request.remote_addr)
                    return _challenge()
                name = auth.username
                verified.put(cache_key, name)
            return name
        return None

    @server.before_request
    def _identify():
        if request.path in public_paths or request.environ.get(security.WARMUP_KEY):
            return None
        user = _authenticate()
        if isinstance(user, Response):
            return user
        if user is not None:
            g.execal_user = user
            g.execal_owner = user_owner(secret, user)
        else:
            sid = session.get(SESSION_FIELD)
            if not store_mod.is_session_id(sid):
                sid = store_mod.new_session_id()
                session[SESSION_FIELD] = sid
                session.permanent = True
            g.execal_owner = sid
        if request.method == "POST" and request.path.endswith(CALLBACK_PATH):
            try:
                _bind_request(g.execal_owner)
            except store_mod.StorageUnavailable as err:
                # the ownership checks cannot run: no callback runs unchecked; the page says why
                return storage_down(err)
        return None

    def storage_down(err: Exception) -> Response:
        """A callback answer that changes nothing but the app's alert: one clear line."""
        body = {"multi": True, "response": {},
                "sideUpdate": {alert_id: {"children": f"Not now: {err}", "is_open": True}}}
        return Response(json.dumps(body), status=200, mimetype="application/json")

    def _bind_request(owner: str) -> None:
        """The owner's own session id for the session store, and only the owner's keys for the two
        app-level key stores, whatever the body says."""
        body = request.get_json(silent=True)    # Flask caches it: Dash reads this very dict
        if not isinstance(body, dict):
            return
        st, results = stores() if stores is not None else (None, None)
        for group in ("inputs", "state"):
            for dep in body.get(group) or []:
                for d in (dep if isinstance(dep, list) else [dep]):
                    if not isinstance(d, dict) or d.get("property") != "data":
                        continue
                    if d.get("id") == store_mod.SESSION_STORE_ID:
                        d["value"] = owner
                    elif st is not None and d.get("id") == store_mod.ACTIVE_DATASET_ID:
                        key = _key_value(d.get("value"))
                        if key is not None and not owns_dataset(st, owner, key):
                            d["value"] = None
                    elif st is not None and d.get("id") == results_mod.ACTIVE_RESULT_ID:
                        key = _key_value(d.get("value"))
                        if key is not None and not owns_result(st, results, owner, key):
                            d["value"] = None

    server.extensions["execal_auth"] = settings
    return settings


def session_cookie(app, session_id: str) -> str:
    """The signed cookie value of a session (what the browser of that session holds): for tests and tools
    that stand in for a browser which already has its session."""
    server = getattr(app, "server", app)      # a Dash app or its Flask server
    serializer = server.session_interface.get_signing_serializer(server)
    return serializer.dumps({SESSION_FIELD: session_id, "_permanent": True})


def owner_of_cookie(app, value: str | None) -> str | None:
    """The session id a cookie value signs, or None (missing, forged, signed by another server)."""
    server = getattr(app, "server", app)
    serializer = server.session_interface.get_signing_serializer(server)
    try:
        sid = serializer.loads(value or "").get(SESSION_FIELD)
    except Exception:          # itsdangerous.BadSignature and friends: not ours
        return None
    return sid if store_mod.is_session_id(sid) else None


def get_settings(app) -> AuthSettings:
    return app.server.extensions.get("execal_auth", AuthSettings())
