"""The app frame: navbar, one nav link per panel, the app-level stores, routing and the error handler.

A panel is a module with `PANEL` (url slug), `TITLE`, `layout(app) -> Component` and
`register_callbacks(app)`; it owns its ids (built from its module constants) and callbacks, and takes
what panels share from `execal.components.shell`. Adding one is one line in `PANELS`: this is the only
module that imports the panels, and no panel imports it. Every panel is in the page at once and the URL
path picks which one is visible, so switching panels keeps each panel's state and no callback targets a
component that is missing.

The settings and routing names (`Settings`, `get_settings`, `max_upload_bytes`, `LOCATION_ID`,
`is_shown`, ...) live in the shell and are re-exported here for `app.py` and the tests.
"""
from __future__ import annotations

import logging
from types import ModuleType

import dash_bootstrap_components as dbc
from dash import Input, Output, State, dcc, html, set_props
from dash.exceptions import PreventUpdate

from execal.components import calibrate_panel, data_panel, diagnostics_panel, export_panel, results, store, tweak_panel
from execal.components import identity, shell
from execal.components import surface_panel
from execal.components import orderflow_panel
from execal.components import vol_panel
from execal.components.shell import (DEFAULT_MAX_UPLOAD_MB, LOCATION_ID, REQUEST_OVERHEAD_BYTES,  # noqa: F401
                                     Settings, attach_settings, get_settings, is_shown, max_upload_bytes)
from execal.components import corr_panel
from execal.components import monitor_panel
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
    orderflow_panel,
    corr_panel,
    monitor_panel,
    datasets_panel,
]
# the shell answers "is this panel on screen?" for the panels, which never import this module
shell.set_panel_order(p.PANEL for p in PANELS)

APP_ALERT_ID = "execal-app-alert"
NAV_ID = "execal-nav"


def nav_link_id(panel: ModuleType) -> str:
    return f"nav-{panel.PANEL}"


def panel_container_id(panel: ModuleType) -> str:
    return f"panel-{panel.PANEL}"


def panel_path(panel: ModuleType) -> str:
    return f"/{panel.PANEL}"


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
    """The whole page, the same for everyone: the session is a server-signed cookie, and the session
    store holds only a placeholder that the server replaces with the caller's id (components/identity.py)."""
    return html.Div([
        dcc.Location(id=LOCATION_ID, refresh=False),
        dcc.Store(id=store.SESSION_STORE_ID, storage_type="memory", data=identity.PLACEHOLDER),
        dcc.Store(id=store.ACTIVE_DATASET_ID, storage_type="memory"),
        # keys only: the active result ({"key": result key}) and the data filters every later panel applies
        dcc.Store(id=results.ACTIVE_RESULT_ID, storage_type="memory"),
        dcc.Store(id=results.FILTERS_ID, storage_type="memory", data={}),
        # the parameters the Tweak panel shows ({"key", "target", "params"}): Export writes what is on screen
        dcc.Store(id=results.HAND_SET_ID, storage_type="memory"),
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
    return [p.PANEL for p in PANELS].index(shell.visible_slug(pathname))


def register_callbacks(app) -> None:
    @app.callback(
        [Output(panel_container_id(p), "hidden") for p in PANELS]
        + [Output(nav_link_id(p), "active") for p in PANELS],
        Input(LOCATION_ID, "pathname"),
    )
    def _route(pathname):
        shown = visible_panel(pathname)
        return [i != shown for i in range(len(PANELS))] + [i == shown for i in range(len(PANELS))]

    for panel in PANELS:
        panel.register_callbacks(app)


def on_callback_error(err: Exception) -> None:
    """Last line of defence for every callback: log the traceback, show one short line, change nothing else.

    Panels catch the errors they expect (DataError) themselves; this catches the rest, so no traceback
    ever reaches the browser.
    """
    if isinstance(err, store.StorageUnavailable):
        log.warning("callback failed: %s", err)
        set_props(APP_ALERT_ID, {"children": f"Not now: {err}", "is_open": True})
        return
    log.error("callback failed", exc_info=err)
    set_props(APP_ALERT_ID, {"children": f"Something went wrong ({type(err).__name__}); "
                                         "the details are in the server log.", "is_open": True})
