"""Shared helpers for the app tests: a gunicorn server in a subprocess and a Debian-chromium Playwright browser.

Import the fixtures into a test module (`from tests.browser_utils import gunicorn_app, browser, page`);
`serve_gunicorn` is also usable directly as a context manager. Never runs `playwright install`: the
browser is /usr/bin/chromium (Debian package).
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from execal.components import identity
from execal.components import store as store_mod
from execal.components.shell import dom_id

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1280, "height": 800}

FILLS_HEADER = "timestamp,symbol,venue,side,quantity,arrival_price,exec_price\n"


def fills_csv(n_rows: int, *, symbol: str = "BTCUSDT", venue: str = "binance", start_hour: int = 0) -> str:
    """A small valid fills CSV with `n_rows` rows, one an hour."""
    rows = [f"2024-03-01T{(start_hour + i) % 24:02d}:00:00Z,{symbol},{venue},{'buy' if i % 2 == 0 else 'sell'},"
            f"{1 + i},{50000 + i},{50000 + i + (5 if i % 2 == 0 else -5)}\n" for i in range(n_rows)]
    return FILLS_HEADER + "".join(rows)


# --- page helpers ---------------------------------------------------------------------------------


def expect_text(locator, pattern: str, timeout: float = 30_000) -> None:
    """Wait until `locator`'s text matches the regular expression `pattern`."""
    from playwright.sync_api import expect

    expect(locator).to_have_text(re.compile(pattern), timeout=timeout)


def css_id(component_id) -> str:
    """A CSS selector for a Dash id (dict ids are JSON in the DOM)."""
    return f"[id='{dom_id(component_id)}']"


def unlabelled_controls(page, panel: str, extra: str = "") -> list[str]:
    """Ids of the inputs and selects of panel `panel` (plus the `extra` selector's elements, inside the
    panel) that no <label> names: every control must have one."""
    selector = ", ".join(f"#panel-{panel} {s}" for s in ("input[id]", "select[id]", *([extra] if extra else [])))
    return page.evaluate("""(selector) => Array.from(document.querySelectorAll(selector))
        .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length)).map(el => el.id)""", selector)


def save_screenshot(page, name: str, *, settle_ms: int = 300, full_page: bool = True) -> Path:
    """A screenshot of the page in test-artifacts/<name>.png, once the page has settled for `settle_ms`."""
    page.wait_for_timeout(settle_ms)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def session_cookie(page) -> dict | None:
    """The browser's execal session cookie (name, value, httpOnly, sameSite, ...), or None."""
    return next((c for c in page.context.cookies() if c["name"] == identity.COOKIE_NAME), None)


def session_of(page, server) -> str | None:
    """The session id the browser's signed cookie names (the server decides the session from it)."""
    from flask import Flask

    cookie = session_cookie(page)
    signer = Flask("browser-tests")
    signer.secret_key = store_mod.server_secret(server.cache_dir)
    return identity.owner_of_cookie(signer, cookie["value"]) if cookie else None


def live(processes) -> list:
    """The processes of `processes` (psutil) that are still running (neither gone nor zombies)."""
    out = []
    for proc in processes:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    cache_dir: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _wait_ready(url: str, proc: subprocess.Popen, log_path: Path, timeout_s: float, probe: bool) -> None:
    """Until gunicorn answers. With `probe=False` only the listening socket is checked, so no HTTP
    request warms a worker before the test's own requests do."""
    host, port = url.rsplit("/", 1)[-1].split(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            if not probe:
                # connections queue in the listen backlog until a worker accepts them
                with socket.create_connection((host, int(port)), timeout=5):
                    return
            else:
                with urllib.request.urlopen(url + "/_dash-layout", timeout=5) as r:
                    if r.status == 200:
                        return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn not ready after {timeout_s} s:\n{log_path.read_text(errors='replace')}")


@contextlib.contextmanager
def serve_gunicorn(tmp_dir: Path, *, workers: int = 2, env: dict | None = None, ready_timeout_s: float = 60,
                   probe: bool = True):
    """Run `python -m gunicorn -w N app:server` with a private cache in `tmp_dir`; stop it with SIGTERM."""
    port = free_port()
    cache_dir = tmp_dir / "cache"
    log_path = tmp_dir / "gunicorn.log"
    # hermetic: the caller's EXECAL_* settings do not leak into the server under test
    base = {k: v for k, v in os.environ.items() if not k.startswith("EXECAL_")}
    full_env = {**base, "EXECAL_CACHE_DIR": str(cache_dir), **(env or {})}
    cmd = [sys.executable, "-m", "gunicorn", "-w", str(workers), "--threads", "2", "-b", f"127.0.0.1:{port}",
           "--timeout", "120", "--graceful-timeout", "10",
           # gunicorn's control socket defaults to one path in $HOME: parallel servers would fight over it
           "--no-control-socket", "execal.app:server"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(url=f"http://127.0.0.1:{port}", process=proc, cache_dir=cache_dir, log_path=log_path)
    try:
        _wait_ready(server.url, proc, log_path, ready_timeout_s, probe)
        yield server
    finally:
        stop(proc)


def stop(proc: subprocess.Popen, timeout_s: float = 20) -> int:
    """SIGTERM (gunicorn's graceful shutdown), then SIGKILL if it hangs; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    return proc.returncode


# --- fixtures -----------------------------------------------------------------------------------


# Test modules import these fixtures by name, and pytest then treats each module's import as its own
# session-scoped definition: without sharing, every browser-test module would start its own gunicorn and
# its own Playwright, and a second sync Playwright in one process fails ("Sync API inside the asyncio
# loop"). So each resource is created once per process and closed once, whichever definition asks first.
_SHARED: dict = {}


def _close_shared() -> None:
    browser_pair = _SHARED.pop("browser", None)
    if browser_pair is not None:
        pw, b = browser_pair
        with contextlib.suppress(Exception):
            b.close()
        with contextlib.suppress(Exception):
            pw.stop()
    server_cm = _SHARED.pop("server_cm", None)
    _SHARED.pop("server", None)
    if server_cm is not None:
        server_cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def gunicorn_app(tmp_path_factory, request):
    """The app under gunicorn (2 workers), with a private cache and the bundled sample_data/ (default)."""
    if "server" not in _SHARED:
        if not (ROOT / "sample_data" / "fills.csv").is_file():
            pytest.fail("sample_data/fills.csv is missing: regenerate it with models/sample.py")
        cm = serve_gunicorn(tmp_path_factory.mktemp("gunicorn"))
        _SHARED["server"] = cm.__enter__()
        _SHARED["server_cm"] = cm
        request.addfinalizer(_close_shared)
    return _SHARED["server"]


@pytest.fixture(scope="session")
def browser(request):
    if "browser" not in _SHARED:
        if not Path(CHROMIUM).exists():
            pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (tests/run.sh does)")
        from playwright.sync_api import sync_playwright

        pw = sync_playwright().start()
        _SHARED["browser"] = (pw, pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                     args=CHROMIUM_ARGS))
        request.addfinalizer(_close_shared)
    return _SHARED["browser"][1]


@pytest.fixture
def page(browser, gunicorn_app):
    """A fresh browser context (so a fresh localStorage session) at 1280×800, failing on page errors."""
    # Playwright's string predicates (wait_for_function("...")) run through eval, which the app's own
    # Content-Security-Policy refuses; tests/ui/test_security_http.py checks the page under the policy
    context = browser.new_context(viewport=VIEWPORT, base_url=gunicorn_app.url, bypass_csp=True)
    context.set_default_timeout(30_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.errors = errors
    try:
        yield pg
    finally:
        context.close()
