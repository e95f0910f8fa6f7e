"""HTTP hardening (issue 11 item 8 and the chunked-body part of item 5), against real gunicorn and
Debian chromium: headers on every response, allowed hosts, a body limit that holds without a
Content-Length, and a page that works under its own Content-Security-Policy."""
from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlparse

import pytest

from browser_utils import browser, gunicorn_app, page, serve_gunicorn  # noqa: F401  (fixtures)
from execal.components.security import _host_name, allowed_hosts, content_security_policy

HEADERS = ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy", "X-Frame-Options")


def _request(url: str, method: str = "GET", path: str = "/", body=None, headers=None):
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def test_host_names_and_policy_text():
    assert _host_name("127.0.0.1:8050") == "127.0.0.1" and _host_name("[::1]:80") == "[::1]"
    assert _host_name("Example.COM") == "example.com"
    assert allowed_hosts("") == ("127.0.0.1", "localhost", "::1", "[::1]")
    assert allowed_hosts("desk.example, *") == ("desk.example", "*")
    policy = content_security_policy(["'sha256-abc'"])
    assert "script-src 'self' 'sha256-abc'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy


def test_every_kind_of_response_carries_the_headers(gunicorn_app):
    url = gunicorn_app.url
    for method, path in (("GET", "/"), ("GET", "/_dash-layout"), ("GET", "/_dash-dependencies"),
                         ("GET", "/assets/execal.css"), ("GET", "/no-such-page")):
        status, headers, _ = _request(url, method, path)
        assert status in (200, 404), (path, status)
        for h in HEADERS:
            assert h in headers, (path, h)
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    status, headers, _ = _request(url, "POST", "/_dash-update-component", body=b"{}",
                                  headers={"Content-Type": "application/json"})
    assert "Content-Security-Policy" in headers


def test_a_foreign_host_header_is_refused(gunicorn_app):
    status, _, body = _request(gunicorn_app.url, headers={"Host": "attacker.example"})
    assert status == 400 and b"EXECAL_ALLOWED_HOSTS" in body
    assert _request(gunicorn_app.url, headers={"Host": "localhost"})[0] == 200


def test_allowed_hosts_setting_opens_a_name(tmp_path):
    with serve_gunicorn(tmp_path, workers=1, env={"EXECAL_ALLOWED_HOSTS": "desk.example"},
                        probe=False) as server:
        assert _request(server.url, headers={"Host": "desk.example:8050"})[0] == 200
        assert _request(server.url, headers={"Host": "127.0.0.1"})[0] == 400


def test_a_chunked_body_over_the_limit_is_refused_without_reading_it(tmp_path):
    """EXECAL_MAX_UPLOAD_MB=1: a chunked POST of 64 MB gets 413 after about the limit is read."""
    with serve_gunicorn(tmp_path, workers=1, env={"EXECAL_MAX_UPLOAD_MB": "1"}) as server:
        u = urlparse(server.url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        conn.putrequest("POST", "/_dash-update-component")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        chunk = b"x" * 65536
        sent, status = 0, None
        t0 = time.monotonic()
        try:
            for _ in range(1024):                      # up to 64 MB
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass                                        # the server stopped reading: what we want
        try:
            resp = conn.getresponse()
            status = resp.status
        except (ConnectionResetError, http.client.RemoteDisconnected, BrokenPipeError):
            status = "closed"
        finally:
            conn.close()
        assert status in (413, "closed"), status
        assert time.monotonic() - t0 < 30
        assert "request body over" in server.log() or status == 413 or sent < 64 * 1024**2
        # and the server still serves
        assert _request(server.url)[0] == 200


@pytest.mark.browser
def test_the_page_works_under_its_own_content_security_policy(browser, gunicorn_app):
    # a context that enforces the policy (the shared `page` fixture bypasses it for Playwright's own eval)
    context = browser.new_context(base_url=gunicorn_app.url)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    violations: list[str] = []
    page.on("console", lambda msg: violations.append(msg.text)
            if "Content Security Policy" in msg.text or "Refused to" in msg.text else None)
    page.goto("/")
    page.wait_for_selector("#_dash-app-content, #react-entry-point", state="attached")
    # (selectors, not JavaScript strings: the policy rightly refuses eval, Playwright's included)
    page.wait_for_selector("nav a >> nth=3")
    page.wait_for_timeout(1500)
    assert violations == [], violations
    assert page.errors == []
    # a framed copy is refused by the browser (frame-ancestors 'none')
    status, headers, _ = _request(page.url)
    assert json.dumps(headers).count("frame-ancestors 'none'") == 1
    context.close()
