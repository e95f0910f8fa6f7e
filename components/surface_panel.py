"""The Vol surface panel: fit raw SVI per expiry or an SSVI surface to an option chain, see how well it fits
and whether it admits static arbitrage, and take the surface parameters away as a config file.

Input: the active dataset when it is an options chain, else a picker of the session's option datasets and the
bundled sample chain (`options_chain.csv`, generated from a known SSVI surface: sample_data/ground_truth.json);
the sample is loaded into the server's store without becoming the session's active dataset, so the impact
panels keep theirs. A file with several underlyings (BTC and ETH) is fitted one underlying at a time. The Data
panel's filters apply when the chain *is* the active dataset (they were chosen on it); otherwise they belong to
another file and are not applied (the note under Fit says which).

Controls (model, weights, no-arbitrage fit) come from the registry (`execal.models.core.registry.models_of_kind("surface")`
and each model's `describe()`). A fit is a plain callback (SVI ≤ 100 ms, SSVI ≤ 300 ms on a chain of a few
hundred quotes: bench/bench_surface_panel.py), looked up first in the app's `ResultStore` by
(dataset key, filters, settings), so a repeat or a reload is a lookup. The browser holds keys only (`VIEW` =
{key, dataset, source, settings, filters}); the session's last view is kept server-side and comes back after a
reload. Once a surface is shown, changing a control refits at once.

Pricing models beside the fit: ticking Heston or Bates (registry models of family "pricing") calibrates them to
the same quotes (`execal.models.surface.heston.StochasticVolCalibrator`, price target, the panel's weights), each
cached under its own key; their smiles are drawn dashed beside the market and the fit, with a table of their
parameters (± HAC standard errors), the Feller condition and optimizer status, and their residuals per expiry.

Shown: the optimizer's verdict first (a slice or SSVI fit that did not converge is red, never hidden), every
slice's optimizer status, the parameters per expiry (a, b, rho, m, sigma; for SSVI also theta and the shared rho,
eta, gamma), RMSE in vol points, the smiles (mid IV, bid/ask bars, fit), the 3D surface, the ATM term structure
and skew, the residuals, and the arbitrage tables (butterfly: k ranges and min g; calendar: where and by how
much; SSVI's sufficient conditions). "Download surface config" writes `SurfaceResult.to_config()` with the
data's provenance (`execal.models.impact.config.make_provenance`): the surface parameters in the exported config. The Export
panel serves impact calibrations only (its route and import speak the impact config schema), so the surface
config is downloaded here.

`choose_source`, `fit_outputs`, `render_outputs`, `smiles_output` and `download_output` are the callbacks'
bodies as plain functions (tests call them); `register_callbacks` only wires them.
"""
from __future__ import annotations

import copyreg
import dataclasses
import io
import json
import logging
import pickle
import re
import time
import warnings
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from execal.components import figures
from execal.components import results as results_mod
from execal.components import shell
from execal.components import store as store_mod
from execal.components import surface_figures as SF
from execal.components.shell import sample_value  # noqa: F401  (the picker's values, for callers)
from execal.models.core.errors import CalibrationError
from execal.models.core.registry import models_of_kind
from execal.models.data.schema import DataError, Dataset
from execal.models.impact.config import make_provenance
from execal.models.surface.heston import StochasticVolCalibrator
from execal.models.surface.options import prepare_chain
from execal.models.surface.options import prepare_chain as prepare_pricing_chain
from execal.models.surface.svi import SurfaceCalibrator

log = logging.getLogger(__name__)

PANEL = "surface"
TITLE = "Vol surface"
_id = shell.ids_for(PANEL)

# the settings form, the Fit / Download card and the stores
SOURCE, UNDERLYING, DATA_NOTE, MODEL, WEIGHTS, NO_ARB = _id("source", "underlying", "data-note", "model", "weights",
                                                            "no-arbitrage")
RUN, DOWNLOAD_BUTTON, DOWNLOAD, NOTE, ALERT = _id("run", "download-button", "download", "note", "alert")
VIEW = _id("view")                 # dcc.Store: {key, dataset, source, settings, filters}: the surface on screen
SEEN = _id("seen-active")          # dcc.Store: the active dataset key this panel last saw
# what the surface shows: status and tables, figures, the arbitrage report
STATUS, SLICES, PARAMS, SSVI = _id("status", "slices", "params", "ssvi")
EXPIRIES, SMILES, SURFACE, TERM, RESIDUALS = _id("expiries", "smiles", "surface-3d", "term", "residuals")
ARB_HEADLINE, BUTTERFLY, CALENDAR, CONDITIONS = _id("arbitrage-headline", "butterfly", "calendar", "conditions")
# pricing models (Heston, Bates) calibrated beside the fit: checklist, table, residuals
PRICING, PRICING_TABLE, PRICING_FIGURE = _id("pricing", "pricing-table-slot", "pricing-residuals")

SAMPLE_CHAIN = "options_chain.csv"
SAMPLE_PREFIX = shell.SAMPLE_PREFIX
WHOLE_CHAIN = "*"                  # underlying picker value of a chain that names no underlying
DEFAULT_WEIGHTS = "vega"
CACHE_ITEMS = 6
PICKER = shell.DatasetPicker(kinds=("options",), samples={SAMPLE_CHAIN: " — known SSVI surface"},
                             missing="choose the option chain to fit first", label="{source} ({rows:,} quotes)",
                             sample_kind="options")
source_options, choose_source, resolve_source = PICKER.options, PICKER.choose, PICKER.resolve
EMPTY_MESSAGE = SF.NO_RESULT
EVICTED = "This surface is no longer in the server's cache: press Fit surface again"
_SYMBOL_ASSET = re.compile(r"^\s*([A-Za-z0-9_]+)-")


class SettingsError(ValueError):
    """A control holds a value the panel cannot use (named in the message)."""


# --- registry-generated choices -----------------------------------------------------------------


def surface_models() -> dict:
    """The registry's smile / surface fits (name -> model spec), in registry order: the Model choice."""
    return {n: m for n, m in models_of_kind("surface").items() if getattr(m, "family", "smile") != "pricing"}


def pricing_models() -> dict:
    """The registry's pricing models of the underlying (Heston, Bates): calibrated beside the fit."""
    return {n: m for n, m in models_of_kind("surface").items() if getattr(m, "family", "smile") == "pricing"}


def build_pricing(pricing: Any) -> list[str]:
    """The ticked pricing models, validated, in registry order."""
    chosen = set(pricing or ()) if isinstance(pricing, (list, tuple)) else set()
    models = pricing_models()
    unknown = chosen - set(models)
    if unknown:
        raise SettingsError(f"pricing model {sorted(unknown)[0]!r}: choose among {', '.join(models)}")
    return [n for n in models if n in chosen]


def weight_choices(model: str | None = None) -> dict[str, str]:
    """Weightings a surface model accepts (name -> description), from its `describe()`."""
    models = surface_models()
    spec = models.get(model) or next(iter(models.values()))
    return dict(spec.describe()["weights"])


def build_settings(*, model: Any, weights: Any, no_arbitrage: Any, underlying: Any) -> dict:
    """The fit settings of the form, validated and normalised (equal forms give equal dicts)."""
    models = surface_models()
    if model not in models:
        raise SettingsError(f"surface model {model!r}: choose one of {', '.join(models)}")
    choices = weight_choices(model)
    if weights not in choices:
        raise SettingsError(f"weights {weights!r}: choose one of {', '.join(choices)}")
    und = None if underlying in (None, "", WHOLE_CHAIN) else str(underlying).strip().upper()
    return {"model": str(model), "weights": str(weights), "no_arbitrage": bool(no_arbitrage), "underlying": und}


# --- sources ------------------------------------------------------------------------------------


def load_chain_dataset(st: store_mod.SessionStore, key: str) -> Dataset:
    dataset = st.get_dataset(key)
    if dataset is None:
        raise DataError("this dataset is no longer in the server's cache: load it again in the Data panel")
    if dataset.kind != "options":
        raise DataError(f"this is a {dataset.kind} dataset, not an option chain: a surface needs option quotes",
                        file=dataset.source)
    return dataset


def underlyings_of(frame: pd.DataFrame) -> list[str]:
    """The coins a chain quotes options on: each symbol's prefix (BTC-27DEC24-60000-C), else the
    `underlying` column (the rule `execal.models.surface.options.prepare_chain` applies, so a pick is always valid)."""
    found = pd.Series(pd.NA, index=frame.index, dtype="string")
    if "underlying" in frame.columns:
        found = frame["underlying"].astype("string").str.strip().str.upper()
    if "symbol" in frame.columns:
        prefix = frame["symbol"].astype("string").str.extract(_SYMBOL_ASSET, expand=False).str.upper()
        found = prefix.fillna(found)
    return sorted(str(u) for u in found.dropna().unique() if str(u))


def underlying_choice(values: list[str], current: Any, saved: Any) -> str:
    if current in values:
        return current
    if saved in values:
        return saved
    return values[0]


# --- the session's last view (server-side, survives a reload) --------------------------------------


def save_session_view(cache, session_id: Any, view: Mapping) -> None:
    shell.remember(cache, PANEL, session_id, view)


def saved_view(cache, session_id: Any) -> dict | None:
    view = shell.recall(cache, PANEL, session_id)
    return view if view is not None and results_mod.is_result_key(view.get("key")) else None


# --- results in the app's cache ------------------------------------------------------------------
# A SurfaceResult keeps its parameters and reports read-only (MappingProxyType), which pickle refuses. It is
# stored as bytes pickled with a private dispatch table that writes a mapping proxy as its dict (read back as
# a proxy again); the global copyreg table is left alone. Our own objects in the 0700 cache, never uploads.


def _mappingproxy(items: dict) -> MappingProxyType:
    return MappingProxyType(items)


def _reduce_mappingproxy(proxy: MappingProxyType):
    return _mappingproxy, (dict(proxy),)


def result_bytes(result) -> bytes:
    buf = io.BytesIO()
    pickler = pickle.Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = {**copyreg.dispatch_table, MappingProxyType: _reduce_mappingproxy}
    pickler.dump(result)
    return buf.getvalue()


_results = shell.LRU(CACHE_ITEMS)      # unpickled results of this process


def put_result(rs: results_mod.ResultStore, key: str, result, meta: Mapping) -> None:
    rs.put(key, result_bytes(result), meta=dict(meta))
    _results.get_or_make(key, lambda: result)


class _Missing(LookupError):
    pass


def get_result(rs: results_mod.ResultStore, key: str | None):
    """The SurfaceResult stored under `key`, or None (unknown, evicted, or not a surface)."""
    if not results_mod.is_result_key(key):
        return None

    def load():
        raw = rs.get(key)
        if not isinstance(raw, bytes):   # evicted, or another panel's result
            raise _Missing(key)
        result = pickle.loads(raw)
        if not hasattr(result, "to_config") or not (hasattr(result, "slices") or hasattr(result, "expiries")):
            raise _Missing(key)
        return result

    try:
        return _results.get_or_make(key, load)
    except _Missing:        # not remembered: another worker may store it later
        return None


# --- fitting ------------------------------------------------------------------------------------


def applicable_filters(filters: Mapping | None, dataset_key: str, active: Mapping | None) -> dict:
    """The Data panel's filters, when they were chosen on this chain (it is the active dataset)."""
    return results_mod.clean_filters(dict(filters or {})) if dataset_key == shell.key_of(active) else {}


def surface_key(dataset_key: str, filters: Mapping, settings: Mapping) -> str:
    return results_mod.result_key(dataset_key, dict(filters), {"panel": PANEL, **dict(settings)})


def compute_surface(dataset: Dataset, settings: Mapping, filters: Mapping | None = None):
    """The SurfaceResult of `settings` on `dataset` (rows passing `filters`). Raises DataError."""
    if filters:
        frame = results_mod.apply_filters(dataset.frame, filters)
        if frame.empty:
            raise DataError("no quote passes the Data panel's filters", file=dataset.source)
        dataset = dataclasses.replace(dataset, frame=frame)
    try:
        chain = prepare_chain(dataset, underlying=settings.get("underlying"))
    except DataError as err:
        if filters:   # row numbers count the filtered rows: say so
            raise DataError(f"{err} (row numbers count the rows passing the Data panel's filters)") from None
        raise
    calibrator = SurfaceCalibrator(settings["model"], settings["weights"], settings["no_arbitrage"])
    with warnings.catch_warnings():
        # a non-converged SSVI fit warns; the result carries the same message and the panel shows it
        warnings.simplefilter("ignore", RuntimeWarning)
        return calibrator.fit(chain)


def compute_pricing(dataset: Dataset, model: str, settings: Mapping, filters: Mapping | None = None):
    """Heston / Bates calibrated to the chain the smile fit used (same rows, underlying and weights; price
    target). Raises DataError, or CalibrationError on too few quotes."""
    if filters:
        dataset = dataclasses.replace(dataset, frame=results_mod.apply_filters(dataset.frame, filters))
    chain = prepare_pricing_chain(dataset, underlying=settings.get("underlying"))
    return StochasticVolCalibrator(model, "price", settings["weights"]).fit(chain)


def pricing_fits(rs: results_mod.ResultStore, dataset_key: str, dataset: Dataset, settings: Mapping,
                 applied: Mapping, pricing: list[str]) -> dict[str, str]:
    """{model: result key} of the ticked pricing models, each looked up or fitted and stored."""
    keys = {}
    for model in pricing:
        p_settings = {"model": model, "weights": settings["weights"], "underlying": settings.get("underlying"),
                      "target": "price"}
        key = surface_key(dataset_key, applied, p_settings)
        if get_result(rs, key) is None:
            try:
                result = compute_pricing(dataset, model, p_settings, applied)
            except CalibrationError as err:          # too few quotes for the model
                raise DataError(f"{model}: {err}") from None
            put_result(rs, key, result, {"panel": PANEL, "dataset": dataset_key, "settings": p_settings,
                                         "filters": applied, "seconds": result.seconds})
        keys[model] = key
    return keys


def _filters_note(filters: Mapping, applicable: Mapping) -> str:
    given = results_mod.clean_filters(dict(filters or {}))
    if applicable:
        return " Data filters applied: " + "; ".join(f"{k} = {v}" for k, v in applicable.items()) + "."
    if given:
        return " The Data panel's filters belong to the active dataset, not to this chain: not applied."
    return ""


def fit_view(st: store_mod.SessionStore, rs: results_mod.ResultStore, sample_dir: Path, *, session_id: Any,
             source: Any, settings: Mapping, filters: Mapping | None, active: Mapping | None,
             pricing: list[str] | None = None) -> tuple[dict, str]:
    """Look the surface up (dataset key, filters, settings) or fit it; remember it as the session's view.
    Returns (view, note). Raises DataError."""
    key = resolve_source(st, sample_dir, source)
    dataset = load_chain_dataset(st, key)
    applied = applicable_filters(filters, key, active)
    rkey = surface_key(key, applied, settings)
    t0 = time.perf_counter()
    result = get_result(rs, rkey)
    if result is None:
        result = compute_surface(dataset, settings, applied)
        ms = 1e3 * (time.perf_counter() - t0)
        put_result(rs, rkey, result, {"panel": PANEL, "dataset": key, "settings": dict(settings),
                                      "filters": applied, "seconds": result.seconds})
        note = f"Fitted in {ms:,.0f} ms."
    else:
        note = "Shown from the cache (same chain, filters and settings)."
    view = {"key": rkey, "dataset": key, "source": source, "settings": dict(settings), "filters": applied}
    if pricing:
        t1 = time.perf_counter()
        view["pricing"] = pricing_fits(rs, key, dataset, settings, applied, pricing)
        note += f" {', '.join(m.capitalize() for m in pricing)} calibrated in {time.perf_counter() - t1:,.1f} s."
    save_session_view(rs.cache, session_id, view)
    return view, note + _filters_note(filters or {}, applied)


def fit_outputs(st: store_mod.SessionStore, rs: results_mod.ResultStore, sample_dir: Path, *,
                trigger: str | None, session_id: Any, source: Any, underlying: Any, model: Any, weights: Any,
                no_arbitrage: Any, filters: Mapping | None, active: Mapping | None, view: Any,
                pricing: Any = None) -> dict:
    """The fit callback's body: {"view", "alert": (text, open), "note"}.

    Fits when Fit is pressed, or when a control changes while a surface is shown; on a page load it brings
    the session's last surface back (a lookup for unchanged controls). Raises PreventUpdate otherwise."""
    shown = isinstance(view, dict) and results_mod.is_result_key(view.get("key"))
    if trigger != RUN and not shown and saved_view(rs.cache, session_id) is None:
        raise PreventUpdate
    if source is None and trigger != RUN:
        raise PreventUpdate      # the chain picker is still being filled in
    kept = " The surface shown is unchanged." if shown else ""
    try:
        settings = build_settings(model=model, weights=weights, no_arbitrage=no_arbitrage, underlying=underlying)
        new_view, note = fit_view(st, rs, sample_dir, session_id=session_id, source=source, settings=settings,
                                  filters=filters, active=active, pricing=build_pricing(pricing))
    except (DataError, SettingsError) as err:
        return {"view": no_update, "alert": (str(err).rstrip(".") + "." + kept, True), "note": ""}
    except Exception as err:   # never a traceback in the browser: log it, say one line
        log.exception("surface fit failed")
        return {"view": no_update, "note": "",
                "alert": (f"The surface could not be fitted ({type(err).__name__}); the details are in the "
                          "server log." + kept, True)}
    return {"view": new_view, "alert": ("", False), "note": note}


# --- what the panel shows, per result -----------------------------------------------------------

_prepared = shell.LRU(CACHE_ITEMS)


def view_key(view: Any) -> str | None:
    return shell.result_key_of(view)


def prepared_view(rs: results_mod.ResultStore, view: Any) -> SF.SurfaceView | None:
    """The figure data of the view's result (prepared once per result per process); None when the view is
    empty or the result was evicted."""
    key = view_key(view)
    if key is None:
        return None
    result = get_result(rs, key)
    if result is None:
        return None
    return _prepared.get_or_make(key, lambda: SF.surface_view(result))


def prepared_pricing(rs: results_mod.ResultStore, view: Any) -> list:
    """The figure data of the view's calibrated pricing models (those still in the cache)."""
    keys = view.get("pricing") if isinstance(view, dict) and isinstance(view.get("pricing"), dict) else {}
    out = []
    for key in keys.values():
        result = get_result(rs, key) if results_mod.is_result_key(key) else None
        if result is not None:
            out.append(_prepared.get_or_make(key, lambda result=result: SF.pricing_view(result)))
    return out


def pricing_component(views: list) -> Any:
    if not views:
        return shell.empty_text(SF.NO_PRICING)
    return rows_component(SF.pricing_rows(views), table_id=_id("pricing-table"),
                          caption="Calibrated to the same quotes (price target, the panel's weights); "
                                  "value ± HAC standard error")


def status_component(view: SF.SurfaceView) -> html.Div:
    return shell.verdict_banner(PANEL, SF.status_summary(view.result), SF.facts_line(view))


NOWRAP = ("expiry", "shorter expiry", "longer expiry", "k range", "T (y)")


def rows_component(rows: list[dict], *, table_id: str, caption: str | None = None) -> html.Div:
    """A compact table of `rows` (`shell.rows_table`); expiries never wrap."""
    return shell.rows_table(rows, table_id=table_id, caption=caption, nowrap=NOWRAP, small=True)


def empty_state_figure(message: str) -> dict:
    return shell.empty_figure(message)


def empty_status(message: str, *, level: str = "secondary") -> html.Div:
    return shell.empty_status(PANEL, message, level)


def empty_outputs(message: str, *, level: str = "secondary") -> dict:
    return {**shell.empty_outputs(message, graphs=(SURFACE, TERM, RESIDUALS, PRICING_FIGURE),
                                  texts=(SLICES, PARAMS, ARB_HEADLINE, PRICING_TABLE),
                                  blanks=(SSVI, BUTTERFLY, CALENDAR, CONDITIONS), status=(STATUS, PANEL),
                                  level=level, as_json=True),
            "expiry_options": [], "expiry_value": [], "download_disabled": True}


def render_outputs(rs: results_mod.ResultStore, view: Any, chosen: Any = None) -> dict:
    """Everything but the smiles for the view's surface, or designed empty states."""
    if view_key(view) is None:
        return empty_outputs(EMPTY_MESSAGE)
    try:
        sv = prepared_view(rs, view)
        if sv is None:
            return empty_outputs(EVICTED, level="warning")
        result = sv.result
        level, headline = SF.arbitrage_headline(result)
        ssvi = SF.ssvi_rows(result)
        conditions = SF.ssvi_condition_rows(result)
        calendar = SF.calendar_rows(result)
        return {
            STATUS: status_component(sv),
            SLICES: rows_component(SF.slice_status_rows(result), table_id=_id("slices-table")),
            PARAMS: rows_component(SF.parameter_rows(result), table_id=_id("params-table")),
            SSVI: (rows_component(ssvi, table_id=_id("ssvi-table"), caption="SSVI parameters shared by every expiry")
                   if ssvi else None),
            ARB_HEADLINE: html.Div(dbc.Alert(headline, color=level, className="mb-2 py-2 small"),
                                   id=_id("arbitrage-verdict"), **{"data-level": level}),
            BUTTERFLY: rows_component(SF.butterfly_rows(result), table_id=_id("butterfly-table"),
                                      caption="Butterfly: Durrleman's g(k) ≥ 0 per expiry"),
            CALENDAR: (rows_component(calendar, table_id=_id("calendar-table"),
                                      caption="Calendar: w(k, T) must not fall from one expiry to the next")
                       if calendar else html.P("Calendar: total variance never falls from one expiry to the next "
                                               "on the grid.", className="small mb-2", id=_id("calendar-none"))),
            CONDITIONS: (rows_component(conditions, table_id=_id("conditions-table"),
                                        caption="SSVI sufficient conditions (Gatheral & Jacquier 2014)")
                         if conditions else None),
            SURFACE: SF.surface_figure(sv), TERM: SF.term_structure_figure(sv), RESIDUALS: SF.residuals_figure(sv),
            PRICING_TABLE: pricing_component(prepared_pricing(rs, view)),
            PRICING_FIGURE: SF.pricing_residuals_figure(sv, prepared_pricing(rs, view)),
            "expiry_options": SF.expiry_options(result),
            "expiry_value": SF.selected_expiries(result, chosen),
            "download_disabled": False,
        }
    except Exception as err:   # never a traceback in the browser
        log.exception("surface view of %s failed", view_key(view))
        return empty_outputs(f"The surface could not be drawn ({type(err).__name__}); the details are in the "
                             "server log.", level="danger")


def smiles_output(rs: results_mod.ResultStore, view: Any, expiries: Any):
    if view_key(view) is None:
        return empty_state_figure(EMPTY_MESSAGE)
    try:
        sv = prepared_view(rs, view)
        return empty_state_figure(EVICTED) if sv is None else SF.smiles_figure(sv, expiries,
                                                                              prepared_pricing(rs, view))
    except Exception as err:
        log.exception("smiles of %s failed", view_key(view))
        return figures.empty_figure(f"The smiles could not be drawn ({type(err).__name__})")


# --- the config download --------------------------------------------------------------------------


def surface_config(st: store_mod.SessionStore, rs: results_mod.ResultStore, view: Any) -> dict:
    """`SurfaceResult.to_config()` of the view's surface with the data's provenance. Raises DataError."""
    key = view_key(view)
    result = get_result(rs, key)
    if result is None:
        raise DataError("no surface to export: press Fit surface first" if key is None else EVICTED)
    filters = dict(view.get("filters") or {})
    dataset = st.get_dataset(view.get("dataset"))
    if dataset is not None:
        frame = results_mod.apply_filters(dataset.frame, filters) if filters else dataset.frame
        provenance = make_provenance(dataset, filters=filters, frame=frame)
    else:   # the file was evicted; the result still knows its source and sha256
        provenance = make_provenance(None, filters=filters)
    return result.to_config(provenance=provenance)


def config_filename(config: Mapping) -> str:
    data = config.get("data") or {}
    parts = ["surface", str((config.get("model") or {}).get("name") or "fit"),
             str(data.get("underlying") or "chain")]
    as_of = data.get("as_of")
    if as_of:
        parts.append(pd.Timestamp(as_of).strftime("%Y%m%dT%H%M"))
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts)) + ".json"


def download_output(st: store_mod.SessionStore, rs: results_mod.ResultStore, view: Any) -> dict:
    """{"download": dcc.Download data | no_update, "alert": (text, open)}."""
    try:
        config = surface_config(st, rs, view)
    except DataError as err:
        return {"download": no_update, "alert": (str(err), True)}
    except Exception as err:
        log.exception("surface config of %s failed", view_key(view))
        return {"download": no_update,
                "alert": (f"The config could not be written ({type(err).__name__}); the details are in the "
                          "server log.", True)}
    return {"download": {"content": json.dumps(config, indent=2, ensure_ascii=False),
                         "filename": config_filename(config), "type": "application/json"},
            "alert": ("", False)}


# --- layout -------------------------------------------------------------------------------------


def _field(text: str, control, control_id: str, help_text: Any = None) -> html.Div:
    return shell.field(text, control, control_id, help_text, compact=True)


def _details(summary: str, items: list[tuple[str, str]]) -> html.Details:
    """Help that stays folded until asked for (the registry's formulas and descriptions)."""
    return html.Details([html.Summary(summary, className="small text-muted"),
                         html.Ul([html.Li([html.Strong(name), f": {text}"]) for name, text in items],
                                 className="ps-3 mb-0 form-text")], className="mt-1")


def _graph(graph_id: str, height: int | None = SF.FIGURE_HEIGHT_PX, config: dict | None = None) -> dcc.Loading:
    return shell.graph(graph_id, EMPTY_MESSAGE, height=height, config=config)


_card = shell.card_col


def _slot(slot_id: str, empty: bool = True) -> dcc.Loading:
    return shell.slot(slot_id, EMPTY_MESSAGE if empty else None)


def layout(app) -> dbc.Row:
    models = surface_models()
    first = next(iter(models))
    weights = weight_choices(first)
    model_help = _details("formulas", [(m.name, m.formula) for m in models.values()])
    weight_help = _details("what each weighting does", list(weights.items()))
    arb_help = _details("what is enforced", [(m.name, m.describe()["no_arbitrage"]) for m in models.values()])
    settings_card = shell.card("Chain and model", [
        _field("Option chain", dcc.Dropdown(id=SOURCE, options=[], clearable=False,
                                            placeholder="choose the chain"), SOURCE),
        _field("Underlying", dcc.Dropdown(id=UNDERLYING, options=[], clearable=False,
                                          placeholder="one underlying"), UNDERLYING),
        html.P("", id=DATA_NOTE, className="small text-muted mb-3", role="status"),
        _field("Model", dbc.RadioItems(id=MODEL, value=first, persistence=True, persistence_type="local",
                                       options=[{"label": m.label, "value": n} for n, m in models.items()]),
               MODEL, model_help),
        _field("Weights", dbc.RadioItems(id=WEIGHTS, value=DEFAULT_WEIGHTS if DEFAULT_WEIGHTS in weights else
                                         next(iter(weights)), inline=True, persistence=True,
                                         persistence_type="local",
                                         options=[{"label": n, "value": n} for n in weights]),
               WEIGHTS, weight_help),
        _field("No-arbitrage fit", dbc.Switch(id=NO_ARB, value=False, label="fit under the no-arbitrage "
                                              "constraints", persistence=True, persistence_type="local"),
               NO_ARB, arb_help),
        _field("Pricing models beside the fit", dbc.Checklist(
            id=PRICING, value=[], persistence=True, persistence_type="local",
            options=[{"label": m.label, "value": n} for n, m in pricing_models().items()]),
            PRICING, _details("what is calibrated", [(m.name, m.formula) for m in pricing_models().values()])),
    ], class_name="mb-3 execal-surface-settings")
    run_card = shell.run_card(RUN, "Fit surface", note_id=NOTE, alert_id=ALERT,
                              download=(DOWNLOAD_BUTTON, DOWNLOAD, "Download surface config (JSON)"),
                              store_ids=(VIEW, SEEN))
    status = shell.slot(STATUS, empty_status(EMPTY_MESSAGE))
    smiles_body = [
        _field("Smiles of", dcc.Dropdown(id=EXPIRIES, options=[], value=[], multi=True,
                                         placeholder="expiries to draw"), EXPIRIES),
        _graph(SMILES, height=None, config={"displaylogo": False}),
    ]
    arbitrage_body = [_slot(ARB_HEADLINE), _slot(BUTTERFLY, empty=False), html.Div(className="mb-2"),
                      _slot(CALENDAR, empty=False), html.Div(className="mb-2"), _slot(CONDITIONS, empty=False)]
    figures_col = [
        run_card, status, html.Div(className="mb-3"),
        dbc.Row([_card("Smiles per expiry", smiles_body,
                       "dots: market mid IV; bars: bid/ask IV; line: the fit (vols in %, 1 % = 1 vol point)",
                       {"lg": 12})]),
        dbc.Row([
            _card("Fitted surface", _graph(SURFACE, SF.SURFACE_HEIGHT_PX),
                  "implied vol over k = ln(K/F) and T, drawn over each expiry's quoted range; dots: market mids"),
            _card("ATM term structure and skew", _graph(TERM),
                  "line: the fit; open dots: the market's quotes near k = 0"),
        ]),
        dbc.Row([_card("Residuals", _graph(RESIDUALS),
                       "fit − mid in vol points; open dots lie outside the bid/ask band", {"lg": 12})]),
        dbc.Row([_card("Pricing models (Heston, Bates) beside the fit",
                       [_slot(PRICING_TABLE), html.Div(className="mb-2"), _graph(PRICING_FIGURE)],
                       "stochastic volatility (and jumps) calibrated to the same quotes: parameters, Feller "
                       "condition, residuals per expiry; their smiles are the dashed lines above", {"lg": 12})]),
        dbc.Row([_card("Optimizer status per expiry", _slot(SLICES), "converged or not, as the optimizer said",
                       {"lg": 12})]),
        dbc.Row([_card("Parameters per expiry", [_slot(PARAMS), html.Div(className="mb-2"), _slot(SSVI, empty=False)],
                       "raw SVI a, b, rho, m, sigma (for SSVI: the equivalent slice and theta); RMSE in vol points",
                       {"lg": 12})]),
        dbc.Row([_card("Static arbitrage", arbitrage_body,
                       "butterfly per expiry, calendar across expiries, and SSVI's sufficient conditions",
                       {"lg": 12})]),
    ]
    return dbc.Row([dbc.Col(settings_card, md=4, lg=3), dbc.Col(figures_col, md=8, lg=9)],
                   className="execal-surface-panel")


# --- callbacks ----------------------------------------------------------------------------------

RENDER_OUTPUTS = (STATUS, SLICES, PARAMS, SSVI, ARB_HEADLINE, BUTTERFLY, CALENDAR, CONDITIONS, PRICING_TABLE)
RENDER_FIGURES = (SURFACE, TERM, RESIDUALS, PRICING_FIGURE)


def register_callbacks(app) -> None:
    def stores():
        return shell.stores(app)

    def sample_dir() -> Path:
        return shell.get_settings(app).sample_dir

    @app.callback(
        Output(SOURCE, "options"), Output(SOURCE, "value"), Output(SEEN, "data"),
        Input(shell.SESSION_STORE_ID, "data"), Input(shell.ACTIVE_DATASET_ID, "data"),
        State(SOURCE, "value"), State(SEEN, "data"),
    )
    def _sources(session_id, active, current, seen):
        st, rs = stores()
        return choose_source(st, sample_dir(), session_id, active, current, seen,
                             saved_view(rs.cache, session_id))

    @app.callback(
        Output(UNDERLYING, "options"), Output(UNDERLYING, "value"), Output(DATA_NOTE, "children"),
        Input(SOURCE, "value"),
        State(UNDERLYING, "value"), State(store_mod.SESSION_STORE_ID, "data"),
    )
    def _underlyings(source, current, session_id):
        if source is None:
            raise PreventUpdate
        st, rs = stores()
        try:
            key = resolve_source(st, sample_dir(), source)
            dataset = load_chain_dataset(st, key)
        except DataError as err:
            return [], None, html.Span(str(err), className="text-danger")
        found = underlyings_of(dataset.frame)
        if not found:
            options = [{"label": "the whole chain (no underlying named)", "value": WHOLE_CHAIN}]
            return options, WHOLE_CHAIN, f"{dataset.source}: {len(dataset.frame):,} quotes"
        saved = saved_view(rs.cache, session_id) or {}
        remembered = (saved.get("settings") or {}).get("underlying") if saved.get("source") == source else None
        note = f"{dataset.source}: {len(dataset.frame):,} quotes on {', '.join(found)}"
        if len(found) > 1:
            note += " (one underlying is fitted at a time)"
        return ([{"label": u, "value": u} for u in found], underlying_choice(found, current, remembered), note)

    @app.callback(
        Output(VIEW, "data"), Output(ALERT, "children"), Output(ALERT, "is_open"), Output(NOTE, "children"),
        Input(RUN, "n_clicks"), Input(SOURCE, "value"), Input(UNDERLYING, "value"), Input(MODEL, "value"),
        Input(WEIGHTS, "value"), Input(NO_ARB, "value"), Input(results_mod.FILTERS_ID, "data"), Input(PRICING, "value"),
        State(VIEW, "data"), State(store_mod.SESSION_STORE_ID, "data"), State(store_mod.ACTIVE_DATASET_ID, "data"),
    )
    def _fit(_clicks, source, underlying, model, weights, no_arb, filters, pricing, view, session_id, active):
        st, rs = stores()
        out = fit_outputs(st, rs, sample_dir(), trigger=ctx.triggered_id, session_id=session_id,
                          source=source, underlying=underlying, model=model, weights=weights, no_arbitrage=no_arb,
                          filters=filters, active=active, view=view, pricing=pricing)
        return out["view"], *out["alert"], out["note"]

    @app.callback(
        [Output(i, "children") for i in RENDER_OUTPUTS] + [Output(i, "figure") for i in RENDER_FIGURES]
        + [Output(EXPIRIES, "options"), Output(EXPIRIES, "value"), Output(DOWNLOAD_BUTTON, "disabled")],
        Input(VIEW, "data"),
        State(EXPIRIES, "value"),
    )
    def _render(view, chosen):
        if view_key(view) is None:
            raise PreventUpdate      # the layout already shows the empty states (no view is ever cleared)
        out = render_outputs(stores()[1], view, chosen)
        return ([out[i] for i in RENDER_OUTPUTS] + [out[i] for i in RENDER_FIGURES]
                + [out["expiry_options"], out["expiry_value"], out["download_disabled"]])

    @app.callback(Output(SMILES, "figure"), Input(VIEW, "data"), Input(EXPIRIES, "value"))
    def _smiles(view, expiries):
        if view_key(view) is None:
            raise PreventUpdate
        return smiles_output(stores()[1], view, expiries)

    shell.register_download(app, button_id=DOWNLOAD_BUTTON, download_id=DOWNLOAD, alert_id=ALERT, view_id=VIEW,
                            make=lambda view: download_output(*stores(), view))
