"""HTTP hardening of the Flask server behind the Dash app: headers, allowed hosts, body limit.

- Every response carries a Content-Security-Policy (scripts only from this server plus the exact
  SHA-256 hashes of Dash's own inline scripts, `dash.Dash.csp_hashes()`; no framing), together
  with `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`
  and `Cross-Origin-Opener-Policy: same-origin`.
- Requests whose Host header is not in the allowed hosts get 400 before Dash sees them
  (`EXECAL_ALLOWED_HOSTS`, comma-separated, `*` allows any; default: the loopback names, so a
  server bound to another address must list the names it is reached by).
- The request-size limit holds for bodies without a Content-Length (chunked): the body is counted
  as it is read and the request refused with 413 the moment it passes the limit, never read whole.
"""
from __future__ import annotations

import os
import tempfile

from flask import Flask, Response, request

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
WARMUP_KEY = "execal.warmup"      # the in-process request create_app makes before serving anyone


def allowed_hosts(value: str | None = None) -> tuple[str, ...]:
    """The hosts requests may name; ("*",) allows any."""
    text = os.environ.get("EXECAL_ALLOWED_HOSTS", "") if value is None else value
    hosts = tuple(h.strip().lower() for h in text.split(",") if h.strip())
    return hosts or LOOPBACK_HOSTS


def _host_name(header: str) -> str:
    header = header.strip().lower()
    if header.startswith("["):                      # [::1]:8050
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def content_security_policy(script_hashes) -> str:
    return "; ".join([
        "default-src 'self'",
        "script-src 'self' " + " ".join(script_hashes),
        # Dash and plotly set element styles at run time (inline style attributes)
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


class _BodyLimit:
    """WSGI middleware: 413 for any body over `limit` bytes, chunked or not.

    A chunked body (no Content-Length) is read here in 64 KB pieces into a spooled temporary file
    (memory up to 1 MB, then disk), counted as it comes, refused the moment it passes the limit,
    and handed on with its Content-Length: Flask then sees an ordinary request, and a worker never
    holds more than one piece of a body it refuses."""

    SPOOL_BYTES = 1024**2

    def __init__(self, wsgi_app, limit: int):
        self.wsgi_app, self.limit = wsgi_app, limit

    def __call__(self, environ, start_response):
        length = environ.get("CONTENT_LENGTH")
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower() or (
                not length and environ.get("REQUEST_METHOD") in ("POST", "PUT", "PATCH")):
            spool = tempfile.SpooledTemporaryFile(max_size=self.SPOOL_BYTES)
            stream, total = environ["wsgi.input"], 0
            while chunk := stream.read(64 * 1024):
                total += len(chunk)
                if total > self.limit:
                    spool.close()
                    return self._refuse(start_response)
                spool.write(chunk)
            spool.seek(0)
            environ["wsgi.input"] = spool
            environ["CONTENT_LENGTH"] = str(total)
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ.pop("wsgi.input_terminated", None)
        elif length and length.isdigit() and int(length) > self.limit:
            return self._refuse(start_response)
        return self.wsgi_app(environ, start_response)

    def _refuse(self, start_response):
        body = (f"request body over the {self.limit / 1024**2:.0f} MB limit\n").encode()
        start_response("413 Request Entity Too Large", [("Content-Type", "text/plain"),
                                                        ("Content-Length", str(len(body))),
                                                        ("Connection", "close")])
        return [body]


def attach(app, max_request_bytes: int, hosts: tuple[str, ...] | None = None) -> None:
    """Harden `app` (a dash.Dash): headers on every response, allowed hosts, body limit."""
    server: Flask = app.server
    allowed = hosts or allowed_hosts()
    policy: list[str] = []

    @server.before_request
    def _check_host():
        if "*" in allowed or request.environ.get(WARMUP_KEY):
            return None
        if _host_name(request.host or "") not in allowed:
            return Response("host not allowed (EXECAL_ALLOWED_HOSTS)\n", status=400, mimetype="text/plain")
        return None

    @server.after_request
    def _headers(response: Response) -> Response:
        if not policy:      # the inline scripts are known once every callback is registered
            policy.append(content_security_policy(app.csp_hashes()))
        response.headers["Content-Security-Policy"] = policy[0]
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        return response

    server.wsgi_app = _BodyLimit(server.wsgi_app, max_request_bytes)
