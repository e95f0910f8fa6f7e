"""execal's Dash app: `create_app()` wires the panels, the private cache, and background callbacks.

Run it:
    python app.py                     Dash's own server at http://127.0.0.1:8050, sample fills preloaded
    gunicorn -w 2 app:server          production; `server` is the Flask server of `create_app()` with the
                                      environment's settings, built on first access (each worker builds its
                                      own app; all of them share the one cache directory)

Settings (arguments of `create_app`, else environment, else default):
    EXECAL_CACHE_DIR       the private cache directory (created 0700), default ~/.cache/execal
    EXECAL_SAMPLE_DIR      bundled sample files, default sample_data/ beside this file
    EXECAL_MAX_UPLOAD_MB   upload limit in MB, default 200 (enforced by the server, not the browser)
    EXECAL_ALLOWED_HOSTS   host names requests may use, comma-separated (default: loopback only; * = any)
    EXECAL_SECRET_KEY      the server secret (session cookie, dataset and result keys); default: generated
                           once and kept 0600 in the cache directory
    EXECAL_USERS_FILE      sign-in with a users file (`execal users add NAME`); or
    EXECAL_AUTH_HEADER     trust a reverse proxy's user header (e.g. X-Forwarded-User), only when set
    EXECAL_SECURE_COOKIES  1: the session cookie is sent over HTTPS only
    EXECAL_JOB_TIMEOUT_S   a background job's time limit, default 1800
    EXECAL_REDIS_URL       scale out: Redis for sessions, metadata, results and the Celery queue
                           (`execal worker` runs the jobs); needs EXECAL_SHARED_DIR and EXECAL_SECRET_KEY
    EXECAL_SHARED_DIR      with EXECAL_REDIS_URL: the directory every server and worker mounts (Parquet bytes)

This module only wires: panels live in components/, numerics in models/.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import dash
import dash_bootstrap_components as dbc  # noqa: F401  (registers the component library)
from flask import Response

from execal.components import layout as shell
from execal.components import identity, jobs, results, scaleout, security, store, uploads

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("execal")


def create_app(*, cache_dir: str | None = None, sample_dir: str | None = None,
               max_upload_mb: float | None = None) -> dash.Dash:
    """A configured execal Dash app; `create_app().server` is its Flask (WSGI) server."""
    if scaleout.redis_url():
        # scaled out: sessions, metadata and results in Redis, Parquet bytes in EXECAL_SHARED_DIR, jobs on
        # Celery workers (`execal worker`); every app server and worker sees the same
        backend = scaleout.backend_from_env()
        cache = scaleout.RedisCache(backend.redis_url, backend.shared_dir)
        manager = scaleout.CeleryJobManager(cache, backend, owner_of=identity.current_owner)
    else:
        cache = store.open_cache(cache_dir)
        # jobs run in clean processes forked by a job server, never forked from a threaded web worker;
        # a job is told who asked from the request (server side), never from what the browser sent
        manager = jobs.JobManager(cache, owner_of=identity.current_owner)
    settings = shell.Settings(
        cache_dir=Path(cache.directory),
        sample_dir=Path(sample_dir or os.environ.get("EXECAL_SAMPLE_DIR") or ROOT / "sample_data").resolve(),
        max_upload_bytes=shell.max_upload_bytes(max_upload_mb),
        backend=manager.backend,
    )
    app = dash.Dash(
        __name__,
        title=shell.APP_TITLE,
        update_title=None,
        assets_folder=str(ROOT / "assets"),
        serve_locally=True,            # no CDN: the app works offline (Bootstrap CSS is in assets/)
        background_callback_manager=manager,
        on_error=shell.on_callback_error,
    )
    # the base64 upload travels inside one JSON request; bigger requests are refused before parsing
    app.server.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    security.attach(app, settings.max_request_bytes)    # CSP and friends, allowed hosts, chunked bodies
    secret = store.server_secret(cache.directory)
    if isinstance(cache, store.ServerCache):
        cache.remember_secret()
        # a deleted cache directory: every worker starts an empty one, the same for its jobs, and says so
        app_revive = cache.revive_if_gone
    else:
        app_revive = None
    store.attach(app, store.SessionStore(cache, secret=secret))
    results.attach(app, results.ResultStore(cache, secret=secret))
    if app_revive is not None:
        app.server.before_request(lambda: (app_revive(), None)[1])
    identity.attach(app, secret=secret, stores=lambda: (store.get_store(app), results.get_results(app)),
                    alert_id=shell.APP_ALERT_ID)
    shell.attach_settings(app, settings)
    # uploads stream to disk through a plain route, never whole in a worker (components/uploads.py)
    uploads.attach(app, cache, manager.backend, settings.max_upload_bytes)
    # the same page for everyone (the session is a cookie, not part of the page): built and serialised once
    app.layout = shell.build_layout(app)
    # before any request, so the first job (or big upload) forks at once; with Celery, the job server
    # parses big uploads on this host (components/uploads.py)
    jobs.start_job_server()
    shell.register_callbacks(app)
    # Dash finishes its setup (script registry) on the first request, and that is not thread-safe: two
    # concurrent first requests to a threaded gunicorn worker can 500 on the JS bundles ("not a
    # registered library"). One request here, before the worker serves anyone, does it single-threaded.
    client = app.server.test_client()
    warm = client.get("/", environ_overrides={security.WARMUP_KEY: True})
    layout = client.get("/_dash-layout", environ_overrides={security.WARMUP_KEY: True})
    if warm.status_code != 200 or layout.status_code != 200:
        raise RuntimeError(f"execal failed to start: GET / answered {warm.status_code}")
    _serve_layout_once(app, layout.get_data())
    return app


def _serve_layout_once(app, body: bytes) -> None:
    """/_dash-layout answers the layout serialised at start (Dash would serialise it on every page load)."""
    endpoint = app.config.routes_pathname_prefix + "_dash-layout"
    app.server.view_functions[endpoint] = lambda: Response(body, mimetype="application/json")


_server = None


def __getattr__(name: str):
    # `app:server` for gunicorn, built lazily so importing this module (tests, cli) has no side effects
    global _server
    if name == "server":
        if _server is None:
            _server = create_app().server
        return _server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(host: str = "127.0.0.1", port: int = 8050, debug: bool = False) -> None:
    logging.basicConfig(level=os.environ.get("EXECAL_LOG", "INFO"))
    app = create_app()
    log.info("execal: http://%s:%s", host, port)
    app.run(host=host, port=port, debug=debug)


if __name__ == "__main__":
    main()
