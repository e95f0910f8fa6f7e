"""The Correlation panel: how several assets or venues move together, from ticks or from returns.

Input: any of the session's trades, quotes or bars datasets (several at once; a file with several
symbols or venues gives one series each), and the bundled samples (`trades_BTCUSDT.csv.gz` with
`quotes_BTCUSDT.csv.gz`: one asset's trades against its mid quotes; `bars_15m.csv`: BTC, ETH and SOL
15-minute bars). Methods come from the registry's correlation models (execal.models.corr.spec):
realised covariance + Epps curve and Hayashi–Yoshida + lead–lag on ticks; DCC-GARCH and Ledoit–Wolf
on returns, optionally with the correlation per volatility regime (calm / stressed: the volatility
area's Markov-switching model on the first asset labels the periods; the composition happens here,
the correlation area only takes labels).

Shown: the verdict first (a DCC fit that did not converge is red), the correlation heatmap, the Epps
curves, the lead–lag scans with their null bands and a table of peaks, the DCC path with its
forecast, the regime-conditional matrices with the calm/stressed differences, and the parameter table.

A computation is a plain callback looked up first in the app's `ResultStore` by (dataset keys,
settings), so a repeat or a reload is a lookup; the browser holds the result key only (`VIEW`). Built on
the shell (`execal.components.shell`: ids, settings and stores, the dataset picker's sources, the card /
graph / table frame, the session's memory); a hidden panel draws nothing until opened.

`fit_outputs` and `render_outputs` are the callbacks' bodies as plain functions (tests call them).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import dash_bootstrap_components as dbc
import numpy as np
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from execal.components import corr_figures as CF
from execal.components import results as results_mod
from execal.components import shell
from execal.components import store as store_mod
from execal.models.core.registry import models_of_kind
from execal.models.corr.regimes import RegimeCorrelations
from execal.models.corr.spec import CLI_METHODS
from execal.models.data.bars import Returns
from execal.models.data.schema import DataError, ValidationReport
from execal.models.vol.base import VolatilityCalibrator
from execal.models.vol.regimes import REGIME_NAMES

log = logging.getLogger(__name__)

PANEL = "corr"
TITLE = "Correlation"
_id = shell.ids_for(PANEL)

# the settings form, the Compute card and the stores
SOURCES, DATA_NOTE, METHOD, PRICE, INTERVAL = _id("sources", "data-note", "method", "price", "interval")
MAX_LAG, LAG_STEP, FREQ, REGIMES = _id("max-lag", "lag-step", "freq", "regimes")
RUN, NOTE, ALERT = _id("run", "note", "alert")
VIEW = _id("view")          # dcc.Store: {key, settings, sources}: the result on screen
SHOWN = _id("shown")        # dcc.Store: the result key the figures were drawn for
# what the panel shows
STATUS, HEATMAP, EPPS, LEAD_LAG, LEAD_LAG_TABLE = _id("status", "heatmap", "epps", "lead-lag", "lead-lag-table")
DCC_PATH, REGIME_FIG, REGIME_TABLE, PARAMS = _id("dcc-path", "regime-matrices", "regime-table", "params")

SAMPLE_PREFIX = shell.SAMPLE_PREFIX
SAMPLES = {"trades_BTCUSDT.csv.gz": ("trades", "BTCUSDT trades (sample)"),
           "quotes_BTCUSDT.csv.gz": ("quotes", "BTCUSDT quotes (sample)"),
           "bars_15m.csv": ("bars", "BTC, ETH, SOL 15-min bars (sample)")}
KINDS = ("trades", "quotes", "bars")
# the series picker: the session's ticks and bars (most recent first; the kind is read from the key, so a
# million fills are not decoded to learn they are no ticks), then the bundled samples, each loaded as its kind
PICKER = shell.DatasetPicker(kinds=KINDS, samples={n: label for n, (_, label) in SAMPLES.items()},
                             missing="a chosen dataset is no longer in the server's cache: load it again in the "
                                     "Data panel",
                             sample_kind={n: kind for n, (kind, _) in SAMPLES.items()}, sample_label="{note}")
METHOD_LABELS = {"realized": "Realised + Epps curve (ticks)", "hy": "Hayashi–Yoshida + lead–lag (ticks)",
                 "dcc": "DCC-GARCH (returns)", "shrinkage": "Ledoit–Wolf (returns)"}
TICK_METHODS = ("realized", "hy")
DEFAULTS = {"method": "hy", "price": "auto", "interval": "", "max_lag": 1.0, "lag_step": 0.01, "freq": "",
            "regimes": False}
EVICTED = "This result is no longer in the server's cache: press Compute again"


class SettingsError(ValueError):
    """A control holds a value the panel cannot use (named in the message)."""


# --- controls -------------------------------------------------------------------------------------


def method_choices() -> dict[str, str]:
    """CLI method name -> label, for the registry's correlation models the panel can compute."""
    have = models_of_kind("correlation")
    return {m: METHOD_LABELS[m] for m, entry in CLI_METHODS.items() if entry in have}


def _positive(value: Any, what: str, default: float) -> float:
    if value in (None, ""):
        return default
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{what}: {value!r} is not a number") from None
    if not v > 0:
        raise SettingsError(f"{what} must be > 0, got {value}")
    return v


def build_settings(*, method: Any, price: Any, interval: Any, max_lag: Any, lag_step: Any, freq: Any,
                   regimes: Any) -> dict:
    """The settings of the form, validated and normalised (equal forms give equal dicts)."""
    if method not in method_choices():
        raise SettingsError(f"method {method!r}: choose one of {', '.join(method_choices())}")
    if price not in ("auto", "trade", "mid"):
        raise SettingsError(f"price {price!r}: choose auto, trade or mid")
    out: dict[str, Any] = {"method": method}
    if method in TICK_METHODS:
        out["price"] = price
        if method == "realized":
            out["interval"] = str(interval).strip() or None
        else:
            out["max_lag_s"] = _positive(max_lag, "largest lag (s)", DEFAULTS["max_lag"])
            out["lag_step_s"] = _positive(lag_step, "lag step (s)", DEFAULTS["lag_step"])
            if out["max_lag_s"] / out["lag_step_s"] > 2000:
                raise SettingsError("more than 4,000 lags: raise the lag step or lower the largest lag")
    else:
        out["freq"] = str(freq).strip() or None
        out["regimes"] = bool(regimes)
    return out


# --- sources --------------------------------------------------------------------------------------


def source_options(st: store_mod.SessionStore, sample_dir: Path, session_id: Any) -> list[dict]:
    """The session's trades / quotes / bars datasets (most recent first), then the bundled samples."""
    return PICKER.options(st, sample_dir, session_id, None)[0]


def sample_options(sample_dir: Path) -> list[dict]:
    return PICKER.sample_options(sample_dir)


def default_sources(method: str) -> list[str]:
    if method in TICK_METHODS:
        return [shell.sample_value("trades_BTCUSDT.csv.gz"), shell.sample_value("quotes_BTCUSDT.csv.gz")]
    return [shell.sample_value("bars_15m.csv")]


def resolve_sources(st: store_mod.SessionStore, sample_dir: Path, values: Any) -> list[str]:
    """Dataset keys of the picked sources (a bundled sample is loaded into the store once per cache,
    without becoming the session's active dataset). Raises DataError."""
    if not values:
        raise DataError("choose the series first (two or more, or one file with several symbols)")
    keys = [PICKER.resolve(st, sample_dir, v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    return list(dict.fromkeys(keys))


# --- computing ------------------------------------------------------------------------------------


def _regimes(panel) -> tuple[Any, dict]:
    """Calm / stressed correlations: Markov-switching variance of the first asset's returns (the
    volatility area), then the correlation area's per-label matrices."""
    asset = panel.names[0]
    ret = Returns(panel.column(asset), panel.t_ns, panel.period_ns, ", ".join(panel.sources), asset,
                  ValidationReport(rows_read=panel.n, rows_kept=panel.n))
    markov = VolatilityCalibrator("markov", k_regimes=2).fit(ret)
    names = REGIME_NAMES[2]
    labels = np.asarray(names, dtype=object)[np.asarray(markov.smoothed).argmax(1)]
    result = RegimeCorrelations(order=names).fit(panel, labels)
    return result, {"asset": asset, "converged": bool(markov.converged), "message": markov.report.message}


def compute(datasets: list, settings: Mapping) -> dict:
    """{"result", "regimes", "regime_info", "seconds"} for `settings` on `datasets`. Raises DataError /
    SettingsError."""
    from_spec = models_of_kind("correlation")[CLI_METHODS[settings["method"]]]
    t0 = time.perf_counter()
    m = settings["method"]
    try:
        if m == "realized":
            est = from_spec.estimator(price=settings["price"], interval=settings["interval"])
        elif m == "hy":
            est = from_spec.estimator(price=settings["price"], max_lag_s=settings["max_lag_s"],
                                      lag_step_s=settings["lag_step_s"], epps=True)
        elif m == "dcc":
            est = from_spec.estimator(freq=settings["freq"])
        else:
            est = from_spec.estimator(freq=settings["freq"], n_boot=100)
        if m in TICK_METHODS:
            result = est.fit(datasets)
            regimes, info = None, None
        else:
            panel = est.panel(datasets)
            result = est.fit(panel)
            regimes, info = _regimes(panel) if settings.get("regimes") else (None, None)
    except DataError:
        raise
    except ValueError as err:           # a setting the estimator refuses: the user's to fix
        raise SettingsError(str(err)) from None
    return {"result": result, "regimes": regimes, "regime_info": info, "seconds": time.perf_counter() - t0}


def corr_key(dataset_keys: list[str], settings: Mapping) -> str:
    return results_mod.result_key("+".join(dataset_keys), {}, {"panel": PANEL, **dict(settings)})


def get_entry(rs: results_mod.ResultStore, key: Any) -> dict | None:
    entry = rs.get(key) if results_mod.is_result_key(key) else None
    return entry if isinstance(entry, dict) and entry.get("panel") == PANEL else None


def save_session_view(cache, session_id: Any, view: Mapping) -> None:
    shell.remember(cache, PANEL, session_id, view)


def saved_view(cache, session_id: Any) -> dict | None:
    view = shell.recall(cache, PANEL, session_id)
    return view if view is not None and results_mod.is_result_key(view.get("key")) else None


def fit_outputs(st: store_mod.SessionStore, rs: results_mod.ResultStore, sample_dir: Path, *, trigger: Any,
                session_id: Any, sources: Any, form: Mapping, view: Any) -> dict:
    """The compute callback's body: {"view", "alert": (text, open), "note"}. Computes when Compute is
    pressed; on a page load brings the session's last result back. Raises PreventUpdate otherwise."""
    if trigger != RUN:
        saved = saved_view(rs.cache, session_id)
        if saved is None or (isinstance(view, dict) and view.get("key")):
            raise PreventUpdate
        if get_entry(rs, saved["key"]) is None:
            raise PreventUpdate
        return {"view": saved, "alert": ("", False), "note": "Shown from the cache (your last result)."}
    try:
        settings = build_settings(**form)
        keys = resolve_sources(st, sample_dir, sources)
        rkey = corr_key(keys, settings)
        entry = get_entry(rs, rkey)
        if entry is None:
            datasets = [st.get_dataset(k) for k in keys]
            if any(d is None for d in datasets):
                raise DataError("a chosen dataset is no longer in the server's cache: load it again")
            bad = [d.source for d in datasets if d.kind not in KINDS]
            if bad:
                raise DataError(f"{', '.join(bad)}: a correlation needs trades, quotes or bars")
            tick = settings["method"] in TICK_METHODS
            wrong = [d.source for d in datasets if (d.kind == "bars") == tick]
            if wrong:
                raise DataError(f"{', '.join(wrong)}: " + ("tick methods need trades or quotes, not bars" if tick
                                                           else "returns methods need bars or trades, not quotes"))
            out = compute(datasets, settings)
            entry = {"panel": PANEL, **out}
            rs.put(rkey, entry, meta={"panel": PANEL, "settings": settings, "datasets": keys})
            note = f"Computed in {1e3 * out['seconds']:,.0f} ms."
        else:
            note = "Shown from the cache (same series and settings)."
    except (DataError, SettingsError) as err:
        return {"view": no_update, "alert": (str(err).rstrip(".") + ".", True), "note": ""}
    except Exception as err:      # never a traceback in the browser
        log.exception("correlation failed")
        return {"view": no_update, "note": "",
                "alert": (f"The correlation could not be computed ({type(err).__name__}); the details are in the "
                          "server log.", True)}
    new_view = {"key": rkey, "settings": settings, "sources": list(sources)}
    save_session_view(rs.cache, session_id, new_view)
    return {"view": new_view, "alert": ("", False), "note": note}


# --- what the panel shows -------------------------------------------------------------------------


def rows_component(rows: list[dict], *, table_id: str, caption: str | None = None) -> html.Div:
    """A compact table of `rows` (`shell.rows_table`)."""
    return shell.rows_table(rows, table_id=table_id, caption=caption or ("Nothing to list." if not rows else None),
                            small=True)


def status_component(entry: Mapping | None, message: str = CF.NO_RESULT, level: str | None = None) -> html.Div:
    if entry is None:
        return shell.empty_status(PANEL, message, level or "secondary")
    s = CF.status_summary(entry["result"], entry.get("regimes"))
    info = entry.get("regime_info") or {}
    details = list(s["details"])
    if info and not info.get("converged", True):
        details.insert(0, f"the Markov regime fit of {info['asset']} did not converge ({info['message']}): the "
                          "regime labels are unreliable")
    return shell.verdict_banner(PANEL, {**s, "details": details}, s["facts"])


RENDER_CHILDREN = (STATUS, LEAD_LAG_TABLE, REGIME_TABLE, PARAMS)
RENDER_FIGURES = (HEATMAP, EPPS, LEAD_LAG, DCC_PATH, REGIME_FIG)


def empty_outputs(message: str = CF.NO_RESULT, level: str | None = None) -> dict:
    return shell.empty_outputs(message, graphs=RENDER_FIGURES, blanks=(LEAD_LAG_TABLE, REGIME_TABLE, PARAMS),
                               status=(STATUS, PANEL), level=level or "secondary", as_json=True)


def render_outputs(rs: results_mod.ResultStore, view: Any) -> dict:
    key = view.get("key") if isinstance(view, dict) else None
    if not results_mod.is_result_key(key):
        return empty_outputs()
    try:
        entry = get_entry(rs, key)
        if entry is None:
            return empty_outputs(EVICTED, "warning")
        result, regimes = entry["result"], entry.get("regimes")
        scans = getattr(result, "lead_lag", ())
        return {
            STATUS: status_component(entry),
            HEATMAP: CF.result_heatmap(result),
            EPPS: CF.epps_figure(getattr(result, "epps", ())),
            LEAD_LAG: CF.lead_lag_figure(scans),
            LEAD_LAG_TABLE: rows_component(CF.lead_lag_rows(scans), table_id=_id("lead-lag-rows")) if scans else None,
            DCC_PATH: CF.dcc_path_figure(result, horizon=48) if hasattr(result, "correlation_path")
            else CF.dcc_path_figure(None),
            REGIME_FIG: CF.regime_figure(regimes),
            REGIME_TABLE: (rows_component(CF.regime_rows(regimes), table_id=_id("regime-rows"),
                                          caption="stressed − calm, z-test (HAC s.e.)") if regimes is not None else None),
            PARAMS: rows_component(CF.params_rows(result), table_id=_id("params-table")),
        }
    except Exception as err:      # never a traceback in the browser
        log.exception("correlation view failed")
        return empty_outputs(f"The result could not be drawn ({type(err).__name__}); the details are in the server "
                             "log.", "danger")


# --- layout ---------------------------------------------------------------------------------------


def _field(text: str, control, control_id: str, help_text: Any = None) -> html.Div:
    return shell.field(text, control, control_id, help_text, compact=True)


def _graph(graph_id: str) -> dcc.Loading:
    return shell.graph(graph_id, CF.NO_RESULT, height=None)


_card = shell.card_col


def layout(app) -> dbc.Row:
    methods = method_choices()
    # the samples are offered from the start, so the default pick is a valid value before the
    # session's own datasets are listed
    initial = sample_options(shell.get_settings(app).sample_dir)
    settings_card = shell.card("Series and method", [
            _field("Series", dcc.Dropdown(id=SOURCES, options=initial, value=default_sources(DEFAULTS["method"]),
                                          multi=True, placeholder="two or more series"), SOURCES,
                   "trades or quotes for the tick methods, bars for the returns methods; a file with several "
                   "symbols or venues gives one series each"),
            html.P("", id=DATA_NOTE, className="small text-muted mb-3", role="status"),
            _field("Method", dbc.RadioItems(id=METHOD, value=DEFAULTS["method"],
                                            options=[{"label": v, "value": k} for k, v in methods.items()]), METHOD),
            _field("Price (ticks)", dbc.RadioItems(id=PRICE, value="auto", inline=True,
                                                   options=[{"label": p, "value": p} for p in ("auto", "trade", "mid")]),
                   PRICE, "auto: mid for quotes, trade price for trades"),
            _field("Sampling interval (realised)", dbc.Input(id=INTERVAL, type="text", placeholder="auto (e.g. 1s, 5min)",
                                                             value=""), INTERVAL),
            _field("Largest lag, s (lead–lag)", dbc.Input(id=MAX_LAG, type="number", min=0.001, step="any",
                                                          value=DEFAULTS["max_lag"]), MAX_LAG),
            _field("Lag step, s (lead–lag)", dbc.Input(id=LAG_STEP, type="number", min=0.001, step="any",
                                                       value=DEFAULTS["lag_step"]), LAG_STEP),
            _field("Return interval (returns methods)", dbc.Input(id=FREQ, type="text", value="",
                                                                  placeholder="the bar (e.g. 1h)"), FREQ),
            _field("Regimes", dbc.Switch(id=REGIMES, value=False, label="calm vs stressed correlation (Markov "
                                                                         "regimes of the first asset)"), REGIMES),
    ], class_name="mb-3 execal-corr-settings")
    run_card = shell.run_card(RUN, "Compute", note_id=NOTE, alert_id=ALERT, store_ids=(VIEW, SHOWN))
    status = shell.slot(STATUS, status_component(None))
    figures_col = [
        run_card, status, html.Div(className="mb-3"),
        dbc.Row([_card("Correlation matrix", _graph(HEATMAP), "ticks: over the common window; DCC: the latest R_t"),
                 _card("Epps curve", _graph(EPPS), "realised ρ against the sampling interval; dashed: Hayashi–Yoshida")]),
        dbc.Row([_card("Lead–lag", [_graph(LEAD_LAG), html.Div(id=LEAD_LAG_TABLE, className="mt-2")],
                       "Hayashi–Yoshida cross-correlation against the lag; shaded: the null band", {"lg": 12})]),
        dbc.Row([_card("DCC correlation path", _graph(DCC_PATH), "R_t per pair; dashed: unconditional; dotted: "
                                                                  "forecast", {"lg": 12})]),
        dbc.Row([_card("Correlation by regime", [_graph(REGIME_FIG), html.Div(id=REGIME_TABLE, className="mt-2")],
                       "calm vs stressed periods (Markov-switching variance of the first asset)", {"lg": 12})]),
        dbc.Row([_card("Parameters", html.Div(id=PARAMS), "values, HAC / sandwich standard errors, 95 % intervals",
                       {"lg": 12})]),
    ]
    return dbc.Row([dbc.Col(settings_card, md=4, lg=3), dbc.Col(figures_col, md=8, lg=9)],
                   className="execal-corr-panel")


# --- callbacks ------------------------------------------------------------------------------------


def register_callbacks(app) -> None:
    st, rs = shell.stores(app)

    def sample_dir() -> Path:
        return shell.get_settings(app).sample_dir

    @app.callback(Output(SOURCES, "options"), Output(DATA_NOTE, "children"),
                  Input(shell.SESSION_STORE_ID, "data"), Input(shell.ACTIVE_DATASET_ID, "data"))
    def _sources(session_id, _active):
        options = source_options(st, sample_dir(), session_id)
        return options, f"{len(options)} series source(s) available"

    @app.callback(Output(SOURCES, "value"), Input(METHOD, "value"), State(SOURCES, "value"),
                  prevent_initial_call=True)
    def _default_sources(method, current):
        # switching between tick and returns methods swaps the bundled samples, keeps the user's own picks
        own = [v for v in (current or []) if not str(v).startswith(SAMPLE_PREFIX)]
        if own:
            raise PreventUpdate
        return default_sources(method)

    @app.callback(Output(VIEW, "data"), Output(ALERT, "children"), Output(ALERT, "is_open"), Output(NOTE, "children"),
                  Input(RUN, "n_clicks"), Input(shell.SESSION_STORE_ID, "data"),
                  State(SOURCES, "value"), State(METHOD, "value"), State(PRICE, "value"), State(INTERVAL, "value"),
                  State(MAX_LAG, "value"), State(LAG_STEP, "value"), State(FREQ, "value"), State(REGIMES, "value"),
                  State(VIEW, "data"))
    def _fit(_clicks, session_id, sources, method, price, interval, max_lag, lag_step, freq, regimes, view):
        form = {"method": method, "price": price, "interval": interval, "max_lag": max_lag, "lag_step": lag_step,
                "freq": freq, "regimes": regimes}
        out = fit_outputs(st, rs, sample_dir(), trigger=ctx.triggered_id, session_id=session_id,
                          sources=sources, form=form, view=view)
        return out["view"], *out["alert"], out["note"]

    @app.callback([Output(i, "children") for i in RENDER_CHILDREN] + [Output(i, "figure") for i in RENDER_FIGURES]
                  + [Output(SHOWN, "data")],
                  Input(VIEW, "data"), Input(shell.LOCATION_ID, "pathname"), State(SHOWN, "data"))
    def _render(view, pathname, shown):
        key = shell.result_key_of(view)
        # hidden, the panel does no work; re-opened on what it already drew, it keeps it
        if key is None or not shell.needs_render(PANEL, pathname, ctx.triggered_id, key, shown):
            raise PreventUpdate
        out = render_outputs(rs, view)
        return [out[i] for i in RENDER_CHILDREN] + [out[i] for i in RENDER_FIGURES] + [key]
