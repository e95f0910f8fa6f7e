"""The app shell: navbar, one nav link per panel, the app-level stores, and the settings panels read.

A panel is a module with `PANEL` (url slug), `TITLE`, `layout(app) -> Component` and
`register_callbacks(app)`; it owns its ids (built from its module constants) and callbacks. Adding one is
one line in `PANELS`. Every panel is in the page at once and the URL path picks which one is visible, so
switching panels keeps each panel's state and no callback targets a component that is missing.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html, set_props
from dash.exceptions import PreventUpdate

from execal.components import calibrate_panel, data_panel, diagnostics_panel, export_panel, results, store, tweak_panel
from execal.components import vol_panel
from execal.components import surface_panel
from execal.components import datasets_panel

log = logging.getLogger(__name__)

APP_TITLE = "execal"
APP_SUBTITLE = "execution-cost & volatility calibration"

# The panels, in nav order. One line per panel.
PANELS: list[ModuleType] = [
    data_panel,
    calibrate_panel,
    diagnostics_panel,
    tweak_panel,
    export_panel,
    vol_panel,
    surface_panel,
    datasets_panel,
]

LOCATION_ID = "execal-url"
APP_ALERT_ID = "execal-app-alert"
NAV_ID = "execal-nav"

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MAX_UPLOAD_MB = 200.0
# the rest of an upload's callback request: JSON framing, file name, the other inputs and states
REQUEST_OVERHEAD_BYTES = 64 * 2**10


def nav_link_id(panel: ModuleType) -> str:
    return f"nav-{panel.PANEL}"


def panel_container_id(panel: ModuleType) -> str:
    return f"panel-{panel.PANEL}"


def panel_path(panel: ModuleType) -> str:
    return f"/{panel.PANEL}"


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the panels need to know about this server."""
    cache_dir: Path
    sample_dir: Path
    max_upload_bytes: int

    @property
    def max_upload_mb(self) -> float:
        return self.max_upload_bytes / 2**20

    @property
    def max_request_bytes(self) -> int:
        """Flask's MAX_CONTENT_LENGTH: the upload travels base64 (4/3) inside a JSON callback request."""
        return int(self.max_upload_bytes * 4 / 3) + REQUEST_OVERHEAD_BYTES


def max_upload_bytes(max_upload_mb: float | None = None) -> int:
    """The upload limit: the argument, else env EXECAL_MAX_UPLOAD_MB, else 200 MB."""
    if max_upload_mb is None:
        text = os.environ.get("EXECAL_MAX_UPLOAD_MB", "").strip()
        try:
            max_upload_mb = float(text) if text else DEFAULT_MAX_UPLOAD_MB
        except ValueError:
            raise ValueError(f"EXECAL_MAX_UPLOAD_MB must be a number of megabytes, got {text!r}") from None
    if not max_upload_mb > 0:
        raise ValueError(f"the upload limit must be positive, got {max_upload_mb} MB")
    return int(max_upload_mb * 2**20)


def attach_settings(app, settings: Settings) -> None:
    app.server.extensions["execal_settings"] = settings


def get_settings(app) -> Settings:
    return app.server.extensions["execal_settings"]


# --- layout -------------------------------------------------------------------------------------


def navbar() -> dbc.Navbar:
    links = [dbc.NavItem(dbc.NavLink(p.TITLE, href=panel_path(p), id=nav_link_id(p), active=i == 0))
             for i, p in enumerate(PANELS)]
    return dbc.Navbar(
        dbc.Container([
            dbc.NavbarBrand([html.Span(APP_TITLE, className="execal-brand"),
                             html.Small(APP_SUBTITLE, className="execal-subtitle ms-2")], href="/"),
            dbc.Nav(links, id=NAV_ID, navbar=True, className="ms-auto", pills=True),
        ], fluid=True),
        color="dark", dark=True, className="mb-3", role="navigation",
    )


def build_layout(app) -> html.Div:
    """The whole page. Called per page load: a fresh session id is offered to the browser, and the
    localStorage one (if any) wins inside dcc.Store, so a reload keeps its session."""
    return html.Div([
        dcc.Location(id=LOCATION_ID, refresh=False),
        dcc.Store(id=store.SESSION_STORE_ID, storage_type="local", data=store.new_session_id()),
        dcc.Store(id=store.ACTIVE_DATASET_ID, storage_type="memory"),
        # keys only: the active result ({"key": result key}) and the data filters every later panel applies
        dcc.Store(id=results.ACTIVE_RESULT_ID, storage_type="memory"),
        dcc.Store(id=results.FILTERS_ID, storage_type="memory", data={}),
        navbar(),
        dbc.Container([
            dbc.Alert(id=APP_ALERT_ID, is_open=False, color="danger", dismissable=True,
                      className="execal-app-alert"),
            html.Main([html.Section(p.layout(app), id=panel_container_id(p), hidden=i != 0,
                                    **{"aria-label": p.TITLE})
                       for i, p in enumerate(PANELS)]),
        ], fluid=True, className="execal-main"),
    ])


def visible_panel(pathname: str | None) -> int:
    """Index of the panel a URL path shows (the first panel for '/' and unknown paths)."""
    slug = (pathname or "/").strip("/").split("/")[0]
    for i, p in enumerate(PANELS):
        if p.PANEL == slug:
            return i
    return 0


def is_shown(panel_slug: str, pathname: str | None) -> bool:
    """Whether the URL path shows the panel `panel_slug`: a hidden panel's heavy render waits until the
    user opens it (a new worker's first page would otherwise draw every panel of a 1M-row result)."""
    return PANELS[visible_panel(pathname)].PANEL == panel_slug


def register_callbacks(app) -> None:
    @app.callback(
        [Output(panel_container_id(p), "hidden") for p in PANELS]
        + [Output(nav_link_id(p), "active") for p in PANELS],
        Input(LOCATION_ID, "pathname"),
    )
    def _route(pathname):
        shown = visible_panel(pathname)
        return [i != shown for i in range(len(PANELS))] + [i == shown for i in range(len(PANELS))]

    @app.callback(
        Output(store.SESSION_STORE_ID, "data"),
        Input(store.SESSION_STORE_ID, "modified_timestamp"),
        State(store.SESSION_STORE_ID, "data"),
    )
    def _repair_session(ts, session_id):
        # only a tampered or foreign localStorage value lands here; the layout offers a valid id
        if ts is None or ts < 0 or store.is_session_id(session_id):
            raise PreventUpdate
        return store.new_session_id()

    for panel in PANELS:
        panel.register_callbacks(app)


def on_callback_error(err: Exception) -> None:
    """Last line of defence for every callback: log the traceback, show one short line, change nothing else.

    Panels catch the errors they expect (DataError) themselves; this catches the rest, so no traceback
    ever reaches the browser.
    """
    log.error("callback failed", exc_info=err)
    set_props(APP_ALERT_ID, {"children": f"Something went wrong ({type(err).__name__}); "
                                         "the details are in the server log.", "is_open": True})
