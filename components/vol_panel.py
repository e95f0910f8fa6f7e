"""The Volatility & regimes panel: how volatile the market was, how it switched between calm and stress, and
what comes next.

Input: the active dataset when it is bars or trades, else a bars/trades dataset of the session or a bundled
sample (`bars_15m.csv` has known regimes: sample_data/ground_truth.json), picked in the panel; the sample is
loaded into the server's store without changing the session's active dataset, so the impact panels keep
theirs. The Data panel's filters apply: the date range cuts the bars, a symbol filter narrows the symbol
picker, a venue filter applies when the data has venues; size filters do not apply to a price series.

Pressing Fit looks every model up in the `ResultStore` by (dataset key, filters, settings), so a repeat is
instant; what is missing is fitted in a Dash background callback (the app's DiskcacheManager) with honest
progress stages and a Cancel button: the bars (validated, gap-aware, from `execal.models.vol.realized.bar_series`) and
the Lee–Mykland / BNS jump tests, every realised estimator per period, the chosen forecasting model (GARCH family, HAR-RV), the Markov
regimes, Merton's jump-diffusion when ticked, and (ticked by default) the impact model on the session's fills:
its coefficient's path over time (Kalman smoothed path with bands, online SGD iterates; models/timevarying.py)
and its fit per volatility regime of the fills with the mean cost per regime. A model that fails (too few
returns for 3 regimes, no fills in the session, ...) is reported as failed while the others are shown; bad data
(constant prices) is one clear alert. Every model's convergence status is shown first, never hidden. The
browser holds only keys (`VIEW` = {dataset, filters, settings, keys, errors}); the session's last view comes
back after a reload, and is drawn when the panel is opened (a hidden panel does no work at page load).

Pickers come from the registry (`execal.models.core.registry`: volatility models' options); the estimators ticked and the
forecast horizon are display settings (redrawn from the cached fits, no refit). `plan_fit`, `run_fit` and the
`*_outputs` functions are the callbacks' bodies as plain functions (tests call them); `register_callbacks`
only wires them.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from scipy import stats

from execal.components import impact_figures as F
from execal.components import results as results_mod
from execal.components import shell
from execal.components import store as store_mod
from execal.components import vol_figures as V
from execal.components.shell import sample_value  # noqa: F401  (the picker's values, for callers)
from execal.models.data.bars import TRADE_BAR, check_not_constant
from execal.models.vol.realized import BarSeries, bar_series, jump_test, parse_freq, returns_of_bars
from execal.models.impact.fit import CalibrationError, Calibrator
from execal.models.core.registry import MODELS, models_of_kind
from execal.models.data.schema import DataError, Dataset
from execal.models.impact.timevarying import DRIFT_PARAMETER, calibrate_time_varying, regime_table
from execal.models.vol.regimes import REGIME_NAMES, with_regimes

log = logging.getLogger(__name__)

PANEL = "volatility"
TITLE = "Volatility & regimes"
_id = shell.ids_for(PANEL)

# the settings form: data, realised estimators, GARCH, regimes and jumps, impact
SOURCE, SYMBOL, BAR, DATA_NOTE = _id("source", "symbol", "bar", "data-note")
ESTIMATOR_PICK, PERIOD = _id("estimators", "period")
GARCH_PICK, DIST, HORIZON = _id("garch", "dist", "horizon")
REGIMES_PICK, SWITCHING_MEAN, MERTON_PICK = _id("regimes", "switching-mean", "merton")
IMPACT_PICK, IMPACT_MODEL = _id("impact", "impact-model")
# running: Run / Cancel / progress / note / alert / the job store
JOB_IDS = shell.JobIds.of(_id)
RUN, CANCEL, PROGRESS, PROGRESS_WRAP, NOTE, ALERT, JOB = JOB_IDS
VIEW = _id("view")              # dcc.Store: {dataset, filters, settings, keys, errors}: the fits on screen
SEEN = _id("seen-active")      # dcc.Store: the active dataset key this panel last saw
SHOWN = _id("shown")            # dcc.Store: the signature of the view the figures were drawn for
# what the fits show: figures and their tables
STATUS, PRICE, PROBABILITIES, REGIME_TABLE = _id("status", "price", "probabilities", "regime-table")
REALIZED, REALIZED_TABLE = _id("realized", "realized-table")
GARCH, GARCH_TABLE = _id("garch-figure", "garch-table")
FITS_TABLE, PARAMS = _id("fits-table", "params")
PATHS, PATHS_TABLE, BY_REGIME, BY_REGIME_TABLE = _id("paths", "paths-table", "by-regime", "by-regime-table")

SAMPLE_PREFIX = shell.SAMPLE_PREFIX
# bundled files this panel offers (bars first: the one with known regimes)
VOL_SAMPLES = ("bars_15m.csv", "trades_BTCUSDT.csv.gz")
PICKER = shell.DatasetPicker(kinds=("bars", "trades"),
                             samples={VOL_SAMPLES[0]: " — known regimes", VOL_SAMPLES[1]: ""},
                             missing="choose the bars or trades to analyse first")
source_options, choose_source, resolve_source = PICKER.options, PICKER.choose, PICKER.resolve
DATA_BARS = "data"                    # the bar length of the data (1-minute bars for trades)
BAR_CHOICES = (DATA_BARS, "5min", "15min", "1h", "4h", "1D")
PERIOD_CHOICES = ("1h", "4h", "1D", "7D")
DEFAULT_ESTIMATORS = ("close_to_close", "parkinson", "garman_klass", "yang_zhang")
DEFAULT_HORIZON = 24
MAX_HORIZON = 1000
VOL_FILTER_KEYS = ("symbol", "venue", "start", "end")
CACHE_ITEMS = 16
EMPTY_MESSAGE = "No volatility fit yet: pick the data and the models on the left, then press Fit"
EVICTED = "These fits are no longer in the server's cache: press Fit again"
MODEL_ORDER = ("realized", "garch", "markov", "merton", "paths", "by_regime")
# what the job derives from another fit (made once there, not per redraw): name -> the fit it needs
DERIVED = {"garch_forecast": "garch", "merton_jumps": "merton"}
IMPACT_LABELS = {"paths": "Impact coefficient path (Kalman, SGD)", "by_regime": "Impact by volatility regime"}
NO_FILLS = ("no fills in this session: load a fills file (parent orders) in the Data panel to see the impact "
            "coefficient over time and by regime")


class SettingsError(ValueError):
    """A control holds a value the panel cannot use (named in the message)."""


# --- registry-generated choices -----------------------------------------------------------------


def garch_models() -> dict:
    """The forecasting volatility models of the registry (GARCH family, HAR-RV, ...: those with a
    conditional volatility path and forecasts), name -> model."""
    return {n: m for n, m in models_of_kind("volatility").items() if m.forecasts}


def estimator_names() -> tuple[str, ...]:
    return tuple(MODELS["realized"].options["estimator"])


def dist_choices(garch: str) -> tuple[str, ...]:
    return tuple(garch_models()[garch].options.get("dist", ()))


def regime_choices() -> tuple[int, ...]:
    return tuple(int(k) for k in MODELS["markov"].options["k_regimes"])


def impact_models() -> dict:
    return models_of_kind("impact")


def default_impact_model() -> str:
    """The Calibrator's default model (as the Calibrate panel), else the registry's first."""
    model = Calibrator().get_params().get("model")
    return model if model in impact_models() else next(iter(impact_models()))


def default_period() -> str:
    return str(MODELS["realized"].options.get("freq") or "1D")


# --- the bars shown, and the settings -----------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PriceSeries:
    """The bars a view was fitted on (close path) and their jump tests: what the price figure draws."""
    t_ns: np.ndarray
    close: np.ndarray
    bar_ns: int
    symbol: str | None
    source: str
    jumps: pd.DataFrame                  # Lee–Mykland flagged bars: timestamp, return, statistic, ...
    jump_summary: Mapping[str, Any]
    notes: tuple[str, ...] = ()          # validation drops / warnings and what the filters kept

    @property
    def n(self) -> int:
        return int(self.t_ns.shape[0])


@dataclass(frozen=True, eq=False)
class ImpactPaths:
    """The impact coefficients' paths over time (Kalman smoothed with bands, SGD iterates), thinned for
    the browser, and what each method's optimizer said."""
    model: str
    path: pd.DataFrame                   # method, timestamp, parameter, value, lower, upper
    batch: Mapping[str, float]           # the batch fit's parameters (the dotted lines)
    status: Mapping[str, dict]           # method -> impact_figures.status_summary
    facts: Mapping[str, list]            # method -> plain lines (q, LR test, final vs batch)
    errors: Mapping[str, str]            # method -> why it could not run


@dataclass(frozen=True, eq=False)
class ImpactByRegime:
    """The impact model fitted per volatility regime of the fills (labels without look-ahead)."""
    model: str
    k_regimes: int
    coefficients: Mapping[str, list]     # execal.models.impact.timevarying.regime_table
    cost: list                           # per regime: regime, n, mean_bps, se_bps
    test: Mapping                        # Wald / Chow test of equal coefficients
    status: dict                         # impact_figures.status_summary of the segmented fit
    notes: tuple[str, ...] = ()          # fills dropped, symbols without bars, unconverged regime fits


def vol_filters(filters: Mapping | None) -> dict:
    """The Data filters that apply to a price series (time, symbol, venue; not order sizes)."""
    f = results_mod.clean_filters(dict(filters or {}))
    return {k: v for k, v in f.items() if k in VOL_FILTER_KEYS}


def _utc_ns(text: str) -> int:
    ts = pd.Timestamp(text)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value)


def slice_bars(bars: BarSeries, filters: Mapping | None) -> BarSeries:
    """The bars whose open time is in the filters' [start, end); the first kept bar starts a new run
    (its return would span the cut). Row numbers stay those of the file."""
    f = vol_filters(filters)
    if "start" not in f and "end" not in f:
        return bars
    keep = np.ones(bars.n, dtype=bool)
    if "start" in f:
        keep &= bars.t_ns >= _utc_ns(f["start"])
    if "end" in f:
        keep &= bars.t_ns < _utc_ns(f["end"])
    if keep.all():
        return bars
    contiguous = bars.contiguous[keep].copy()
    if contiguous.shape[0]:
        contiguous[0] = False
    return BarSeries(bars.t_ns[keep], bars.open[keep], bars.high[keep], bars.low[keep], bars.close[keep],
                     bars.bar_ns, contiguous, bars.source, bars.symbol, bars.report,
                     None if bars.rows is None else bars.rows[keep], bars.from_trades)


def bars_dataset(bars: BarSeries, dataset: Dataset) -> Dataset:
    """A bars Dataset of a (validated, filtered) bar series, named as the file it came from."""
    frame = pd.DataFrame({"timestamp": bars.timestamps, "open": np.asarray(bars.open), "high": np.asarray(bars.high),
                          "low": np.asarray(bars.low), "close": np.asarray(bars.close)})
    return Dataset(kind="bars", frame=frame, source=bars.source, sha256=dataset.sha256, report=bars.report)


def data_symbols(frame: pd.DataFrame, filters: Mapping | None) -> list[str]:
    """Symbols of the data a user may pick: those present, narrowed by a symbol filter if it leaves any."""
    if "symbol" not in frame.columns:
        return []
    present = sorted(map(str, frame["symbol"].dropna().unique()))
    wanted = vol_filters(filters).get("symbol")
    return [s for s in present if s in wanted] if wanted else present


def _bar_arg(bar: str | None) -> str | None:
    return None if bar in (None, "", DATA_BARS) else bar


def build_settings(*, symbol: str | None, bar: str | None, period: str | None, garch: str | None,
                   dist: str | None, k_regimes: Any, switching_mean: Any, merton: Any, impact: Any = False,
                   impact_model: str | None = None) -> dict:
    """The fit settings of the form, validated and normalised (equal forms give equal dicts)."""
    bar = bar or DATA_BARS
    if bar not in BAR_CHOICES:
        raise SettingsError(f"bar length {bar!r}: choose one of {', '.join(BAR_CHOICES)}")
    period = period or default_period()
    try:
        parse_freq(period, "realised period")
    except DataError as err:
        raise SettingsError(str(err)) from None
    if garch not in garch_models():
        raise SettingsError(f"GARCH variant / forecasting model {garch!r}: choose one of {', '.join(garch_models())}")
    if dist_choices(garch) and dist not in dist_choices(garch):
        raise SettingsError(f"error distribution {dist!r}: choose one of {', '.join(dist_choices(garch))}")
    dist = dist if dist_choices(garch) else None          # a model without error distributions (HAR)
    try:
        k = int(k_regimes)
    except (TypeError, ValueError):
        raise SettingsError(f"number of regimes {k_regimes!r}: choose one of {regime_choices()}") from None
    if k not in regime_choices():
        raise SettingsError(f"number of regimes {k}: choose one of {regime_choices()}")
    impact_model = impact_model or default_impact_model()
    if impact_model not in impact_models():
        raise SettingsError(f"impact model {impact_model!r}: choose one of {', '.join(impact_models())}")
    return {"symbol": symbol or None, "bar": bar, "period": period, "garch": garch, "dist": dist,
            "k_regimes": k, "switching_mean": bool(switching_mean), "merton": bool(merton),
            "impact": bool(impact), "impact_model": impact_model}


def display_settings(estimators: Any, horizon: Any) -> dict:
    """What is drawn without refitting: the estimators ticked and the forecast horizon (periods)."""
    names = estimator_names()
    chosen = [e for e in names if e in set(estimators or ())]
    try:
        h = int(float(horizon))
    except (TypeError, ValueError):
        h = DEFAULT_HORIZON
    return {"estimators": chosen, "horizon": min(max(h, 1), MAX_HORIZON)}


def model_specs(settings: Mapping) -> dict[str, dict | None]:
    """What identifies each fit (with the dataset key and filters): the cache key's settings part."""
    base = {"panel": PANEL, "symbol": settings["symbol"], "bar": settings["bar"]}
    return {
        "series": {**base, "what": "series"},
        "realized": {**base, "what": "realized", "period": settings["period"]},
        "garch": {**base, "what": "garch", "vol": settings["garch"], "dist": settings["dist"]},
        # forecasts to the longest horizon, made once in the job: a horizon change is then a slice
        "garch_forecast": {**base, "what": "garch_forecast", "vol": settings["garch"], "dist": settings["dist"],
                           "horizon": MAX_HORIZON},
        "markov": {**base, "what": "markov", "k_regimes": settings["k_regimes"],
                   "switching_mean": settings["switching_mean"]},
        "merton": {**base, "what": "merton"} if settings["merton"] else None,
        # Merton's flagged returns, computed once in the job (a million returns' posterior is seconds)
        "merton_jumps": {**base, "what": "merton_jumps"} if settings["merton"] else None,
    }


def impact_specs(settings: Mapping, dataset_key: str) -> dict[str, dict | None]:
    """What identifies the impact fits (with the fills key and the fills' filters)."""
    if not settings.get("impact"):
        return {"paths": None, "by_regime": None}
    model = settings.get("impact_model")
    return {"paths": {"panel": PANEL, "what": "paths", "model": model},
            "by_regime": {"panel": PANEL, "what": "by_regime", "model": model, "bars": dataset_key,
                          "symbol_bars": settings["bar"], "k_regimes": settings["k_regimes"]}}


def view_keys(dataset_key: str, filters: Mapping, settings: Mapping, fills_key: str | None = None,
              fills_filters: Mapping | None = None) -> dict[str, str | None]:
    keys = {name: (results_mod.result_key(dataset_key, filters, spec) if spec is not None else None)
            for name, spec in model_specs(settings).items()}
    for name, spec in impact_specs(settings, dataset_key).items():
        keys[name] = (results_mod.result_key(fills_key, fills_filters, spec)
                      if spec is not None and fills_key else None)
    return keys


# --- sources ------------------------------------------------------------------------------------


def fills_source(st: store_mod.SessionStore, session_id: Any, active: Mapping | None) -> str | None:
    """The fills the impact views use: the active dataset when it is fills, else the session's most
    recent fills; None when the session has none."""
    active_key = shell.key_of(active)
    keys = st.session_keys(session_id) if store_mod.is_session_id(session_id) else []
    for key in ([active_key] if active_key else []) + list(reversed(keys)):
        ds = st.info(key)
        if ds is not None and ds["kind"] == "fills":
            return key
    return None


def data_bar_ns(frame: pd.DataFrame, kind: str, symbol: str | None = None) -> int | None:
    """The bar length "as in the data" means: bars built from trades are TRADE_BAR long; bars have the
    most common spacing of one symbol's timestamps (the rule `bar_series` applies). None: unknown."""
    if kind == "trades":
        return parse_freq(TRADE_BAR, "bar")
    if "timestamp" not in frame.columns or len(frame) < 2:
        return None
    ts = frame["timestamp"]
    if "symbol" in frame.columns:
        names = frame["symbol"].astype(str)
        ts = ts[(names == (symbol if symbol in set(names) else names.iloc[0])).to_numpy()]
    t = np.unique(pd.DatetimeIndex(ts.dropna()).as_unit("ns").asi8)
    spacing = np.diff(t)
    if not spacing.size:
        return None
    values, counts = np.unique(spacing, return_counts=True)
    return int(values[np.argmax(counts)])


def bar_options(data_ns: int | None = None, kind: str | None = None) -> list[dict]:
    """The bar-length choices; the first says what "as in the data" is for the data on screen."""
    if data_ns is None:
        first = "as in the data"
    elif kind == "trades":
        first = f"as in the data ({bar_label(data_ns)} bars of the trades)"
    else:
        first = f"as in the data ({bar_label(data_ns)})"
    return [{"label": first if b == DATA_BARS else b, "value": b} for b in BAR_CHOICES]


def describe_data(dataset: Dataset | None, filters: Mapping | None, symbol: str | None = None) -> dict:
    """What the symbol picker offers, the bar-length choices, and the one-line description of the data
    under the pickers."""
    if dataset is None:
        return {"symbols": [], "note": "No data chosen.", "bars": bar_options()}
    if dataset.kind not in ("bars", "trades"):
        return {"symbols": [], "note": f"{dataset.source} is {dataset.kind}: volatility needs bars or trades.",
                "bars": bar_options()}
    frame = dataset.frame
    symbols = data_symbols(frame, filters)
    f = vol_filters(filters)
    ts = frame["timestamp"] if "timestamp" in frame.columns else None
    span = (f"{ts.min():%Y-%m-%d %H:%M} → {ts.max():%Y-%m-%d %H:%M} UTC" if ts is not None and len(frame)
            else "no rows")
    parts = [f"{dataset.source}: {len(frame):,} {dataset.kind} rows, {span}"]
    if symbols:
        parts.append(f"{len(symbols)} symbol{'s' if len(symbols) != 1 else ''}")
    applied = [k for k in ("start", "end", "symbol", "venue") if k in f]
    if applied:
        parts.append("Data filters applied: " + ", ".join(applied))
    if "symbol" in frame.columns and f.get("symbol") and not symbols:
        parts.append("no symbol of the data passes the symbol filter")
    chosen = symbol if symbol in symbols else (symbols[0] if symbols else None)
    return {"symbols": symbols, "note": "; ".join(parts) + ".",
            "bars": bar_options(data_bar_ns(frame, dataset.kind, chosen), dataset.kind)}


# --- fitting --------------------------------------------------------------------------------------


def _table(rows: list[dict], table_id: str, caption: str | None = None) -> html.Div:
    return shell.rows_table(rows, table_id=table_id, caption=caption)


def save_view(cache, session_id: Any, view: Mapping) -> None:
    shell.remember(cache, PANEL, session_id, view)


def saved_view(cache, session_id: Any) -> dict | None:
    view = shell.recall(cache, PANEL, session_id)
    return view if view is not None and isinstance(view.get("keys"), dict) else None


def plan_fit(st: store_mod.SessionStore, results: results_mod.ResultStore, sample_dir: Path, *,
             session_id: Any, source: Any, filters: Mapping | None, settings: Mapping,
             display: Mapping | None = None, active: Mapping | None = None) -> dict:
    """What pressing Fit does: {"view": a complete view answered from the cache, or None;
    "job": the work for the background callback, or None}. Raises DataError / SettingsError."""
    dataset_key = resolve_source(st, sample_dir, source)
    dataset = st.get_dataset(dataset_key)
    if dataset is None:
        raise DataError("this dataset is no longer in the server's cache: load it again")
    if dataset.kind not in ("bars", "trades"):
        raise DataError(f"volatility needs bars or trades, not {dataset.kind}", file=dataset.source)
    f = vol_filters(filters)
    settings = dict(settings)
    symbols = data_symbols(dataset.frame, f)
    if "symbol" in dataset.frame.columns:
        if not symbols:
            raise DataError("no symbol of the data passes the Data filters' symbol choice", file=dataset.source,
                            column="symbol")
        if settings.get("symbol") not in symbols:
            settings["symbol"] = symbols[0]
    else:
        settings["symbol"] = None
    fills_key = fills_source(st, session_id, active) if settings.get("impact") else None
    fills_filters = results_mod.clean_filters(dict(filters or {}))
    keys = view_keys(dataset_key, f, settings, fills_key, fills_filters)
    errors = {}
    if settings.get("impact") and fills_key is None:
        errors = {"paths": NO_FILLS, "by_regime": NO_FILLS}
    view = {"source": source, "dataset": dataset_key, "filters": f, "settings": settings, "keys": keys,
            "fills": fills_key, "fills_filters": fills_filters, "errors": errors, "display": dict(display or {})}
    if all(k is None or results.get(k) is not None for k in keys.values()):
        return {"view": view, "job": None}
    return {"view": None, "job": view}


def _series_of(dataset: Dataset, settings: Mapping, filters: Mapping) -> tuple[BarSeries, PriceSeries]:
    frame = dataset.frame
    f = vol_filters(filters)
    if "venue" in f and "venue" in frame.columns:
        frame = results_mod.apply_filters(frame, {"venue": f["venue"]})
        dataset = Dataset(dataset.kind, frame, dataset.source, dataset.sha256, dataset.report)
    bars = bar_series(dataset, symbol=settings.get("symbol"), bar=_bar_arg(settings.get("bar")), gaps="skip")
    full_n = bars.n
    bars = slice_bars(bars, f)
    if bars.n < 2:
        raise DataError(f"{bars.n} bar(s) pass the Data filters' date range: volatility needs at least 2",
                        file=bars.source)
    check_not_constant(bars)
    notes = [f"dropped {d.count:,}: {d.reason}" for d in bars.report.dropped] + list(bars.report.warnings)
    if bars.n < full_n:
        notes.append(f"the Data filters' date range keeps {bars.n:,} of {full_n:,} bars")
    jt = jump_test(bars)
    series = PriceSeries(t_ns=np.asarray(bars.t_ns).copy(), close=np.asarray(bars.close).copy(), bar_ns=bars.bar_ns,
                         symbol=bars.symbol, source=bars.source, jumps=jt.times, jump_summary=jt.summary(),
                         notes=tuple(dict.fromkeys(notes)))
    return bars, series


def _fit_one(name: str, fit: Callable[[], Any], errors: dict) -> Any:
    """Run one model's fit: bad input or too few data is that model's error, shown with the others."""
    try:
        return fit()
    except (DataError, CalibrationError, ValueError) as err:
        errors[name] = str(err)
    except Exception as err:   # never a traceback in the browser: log it, say one line
        log.exception("volatility fit %s failed", name)
        errors[name] = f"the fit failed ({type(err).__name__}); the details are in the server log"
    return None


def merton_jumps(merton, threshold: float = 0.5) -> pd.DataFrame:
    """The returns Merton's fit says contain a jump: timestamp, return, p_jump (posterior > threshold)."""
    jp = merton.jump_probabilities(threshold)
    return jp.loc[jp["jump"].to_numpy(bool), ["timestamp", "return", "p_jump"]].reset_index(drop=True)


def _impact_status(result) -> dict:
    s = F.status_summary(result)
    return {**s, "badge": "NOT converged" if s["level"] == "danger" else
            ("Set by hand" if s["level"] == "info" else "Converged")}


def impact_paths(fills: pd.DataFrame, model: str, max_points: int = V.MAX_LINE_POINTS) -> ImpactPaths:
    """Kalman (the model's drifting coefficient) and online SGD paths of the impact model on `fills`,
    each against the same batch fit; a method that cannot run on this model is that method's error."""
    calibrator = Calibrator(model=model)
    batch = calibrator.fit(fills)
    frames, status, facts, errors = [], {}, {}, {}
    for method in ("kalman", "sgd"):
        if method == "kalman" and model not in DRIFT_PARAMETER:
            errors[method] = f"the Kalman filter needs a model linear in one coefficient ({', '.join(DRIFT_PARAMETER)})"
            continue
        try:
            tv = calibrate_time_varying(calibrator.set_params(optimizer=method), fills, batch=batch)
        except (CalibrationError, DataError, ValueError) as err:
            errors[method] = str(err)
            continue
        path = tv.path
        # the browser gets each parameter's envelope (value and band), not every fill
        parts = []
        for name in tv.parameters:
            one = path[(path["parameter"] == name).to_numpy()]
            idx = V.line_index(len(one), (one["value"].to_numpy(), one["lower"].to_numpy(), one["upper"].to_numpy()),
                               max_points)
            parts.append(one.iloc[idx])
        thinned = pd.concat(parts, ignore_index=True)
        thinned["parameter"] = thinned["parameter"].astype(str)
        thinned.insert(0, "method", "Kalman" if method == "kalman" else "SGD")
        frames.append(thinned)
        status[method] = _impact_status(tv.result)
        lines = []
        if tv.q is not None:
            lr = tv.lr_test or {}
            lines.append(f"drift variance q = {F.format_number(tv.q)} {tv.parameters[0]}² per day"
                         + (f" ± {F.format_number(tv.q_std_error, 2)}" if tv.q_std_error is not None else "")
                         + (f"; LR test of a constant coefficient: p = {F.format_number(lr.get('p_value'), 3)}"
                            if lr else ""))
        if tv.fixed_at_batch:
            lines.append("fixed at the batch fit: " + ", ".join(f"{k} = {F.format_number(v)}"
                                                               for k, v in tv.fixed_at_batch.items()))
        for name, c in (tv.comparison or {}).items():
            if isinstance(c, Mapping) and "final" in c:
                lines.append(f"{name}: final {F.format_number(c['final'])} vs batch {F.format_number(c['batch'])}"
                             f" ± {F.format_number(c.get('batch_std_error'), 2)}")
        facts[method] = lines
    path = pd.concat(frames, ignore_index=True) if frames else None
    return ImpactPaths(model=model, path=path, batch={k: float(v) for k, v in batch.params.items()},
                       status=status, facts=facts, errors=errors)


def impact_by_regime(fills: pd.DataFrame, bars: Dataset, model: str, k_regimes: int,
                     freq: str | None) -> ImpactByRegime:
    """Label each fill with its volatility regime (Markov per symbol on `bars`, filtered probability at
    arrival) and fit the impact model per regime, with the test that the regimes share it."""
    labelled, info = with_regimes(fills, bars, k_regimes=k_regimes, freq=freq)
    seg = Calibrator(model=model).fit_segments(labelled, by=("regime",))
    cost = []
    for s in seg.segments:
        c = np.asarray(s.result.features.cost_bps, dtype=np.float64)
        c = c[np.isfinite(c)]
        cost.append({"regime": s.key.get("regime"), "n": int(c.shape[0]),
                     "mean_bps": float(c.mean()) if c.size else None,
                     "se_bps": float(c.std(ddof=1) / math.sqrt(c.shape[0])) if c.shape[0] > 1 else None})
    notes = list(info.get("warnings", ()))
    for d in info.get("dropped", ()):
        notes.append(f"{d['count']:,} fills dropped: {d['reason']}")
    return ImpactByRegime(model=model, k_regimes=k_regimes, coefficients=regime_table(seg), cost=cost,
                          test=dict(seg.test or {}), status=_impact_status(seg), notes=tuple(notes))


def run_fit(st: store_mod.SessionStore, results: results_mod.ResultStore, job: Mapping,
            progress: Callable[[float, str], None] = lambda p, s: None) -> dict:
    """The background job: fit what the cache lacks, store each fit under its key. Returns
    {"view": the view (with per-model errors) | None, "alert": (message, open)}."""
    keys = dict(job["keys"])
    settings = dict(job["settings"])
    filters = dict(job.get("filters") or {})
    errors: dict[str, str] = dict(job.get("errors") or {})
    cached = {name: (results.get(k) if k else None) for name, k in keys.items()}
    dataset = st.get_dataset(job["dataset"])
    if dataset is None:
        return {"view": None, "alert": ("This dataset is no longer in the server's cache: load it again.", True)}
    progress(5, "validating the bars")
    try:
        bars, series = _series_of(dataset, settings, filters)
    except DataError as err:
        return {"view": None, "alert": (f"Cannot fit: {err}", True)}
    if cached["series"] is None:
        results.put(keys["series"], series, meta={"origin": PANEL, "what": "series", "dataset": job["dataset"]})
    returns = returns_of_bars(bars)
    fills_cache: dict = {}

    def _fills() -> pd.DataFrame:
        if "frame" not in fills_cache:
            fills_ds = st.get_dataset(job.get("fills"))
            if fills_ds is None:
                raise DataError("the fills are no longer in the server's cache: load them again")
            frame = results_mod.apply_filters(fills_ds.frame, job.get("fills_filters"))
            if not len(frame):
                raise DataError("no fill passes the Data filters", file=fills_ds.source)
            fills_cache["frame"] = frame
        return fills_cache["frame"]

    stages = [
        ("realized", 15, "realised estimators",
         lambda: MODELS["realized"].fit(bars_dataset(bars, dataset), estimator="yang_zhang", freq=settings["period"],
                                        gaps="skip")),
        ("garch", 30, f"{V.model_label(settings['garch'])}",
         lambda: garch_models()[settings["garch"]].fit(
             returns, **({"dist": settings["dist"]} if settings.get("dist") else {}))),
        ("garch_forecast", 35, f"forecasts up to {MAX_HORIZON} periods ahead",
         lambda: done["garch"].forecast(MAX_HORIZON)),
        ("markov", 50, f"Markov regimes (k = {settings['k_regimes']})",
         lambda: MODELS["markov"].fit(returns, k_regimes=settings["k_regimes"],
                                      switching_mean=settings["switching_mean"])),
        ("merton", 70, "Merton jump-diffusion", lambda: MODELS["merton"].fit(returns)),
        ("merton_jumps", 80, "Merton's jump probabilities", lambda: merton_jumps(done["merton"])),
        ("paths", 85, "the impact coefficient's path (Kalman, SGD)",
         lambda: impact_paths(_fills(), settings["impact_model"])),
        ("by_regime", 92, "impact by volatility regime",
         lambda: impact_by_regime(_fills(), dataset, settings["impact_model"], settings["k_regimes"],
                                  _bar_arg(settings["bar"]))),
    ]
    done = dict(cached)
    for name, percent, label, fit in stages:
        if keys.get(name) is None or cached.get(name) is not None:
            continue
        parent = DERIVED.get(name)
        if parent is not None and done.get(parent) is None:
            errors[name] = errors.get(parent, f"{parent} was not fitted")
            continue
        on = "the fills" if name in ("paths", "by_regime") else f"{returns.n:,} returns"
        progress(percent, f"fitting {label} on {on}")
        result = _fit_one(name, fit, errors)
        done[name] = result
        if result is not None:
            results.put(keys[name], result, meta={"origin": PANEL, "what": name, "dataset": job["dataset"],
                                                  "filters": filters, "settings": settings})
    progress(100, "done")
    view = {**job, "errors": errors}
    return {"view": view, "alert": ("", False)}


# --- rendering -----------------------------------------------------------------------------------


_prepared = shell.LRU(CACHE_ITEMS)


def _fits(results: results_mod.ResultStore, view: Mapping) -> dict | None:
    """{name: result or None} of a view; None when a fit it names has left the cache."""
    out = {}
    errors = view.get("errors") or {}
    for name, key in (view.get("keys") or {}).items():
        if key is None or name in errors:
            out[name] = None
            continue
        if not results_mod.is_result_key(key):
            return None
        res = results.get(key)
        if res is None:
            return None
        out[name] = res
    return out


def _valid_view(view: Any) -> bool:
    return isinstance(view, dict) and isinstance(view.get("keys"), dict) and isinstance(view.get("settings"), dict)


def _empty_message(name: str, view: Mapping, what: str) -> str:
    errors = view.get("errors") or {}
    if name in errors:
        return f"{what} could not be fitted: {errors[name]}"
    return f"{what} was not requested"


def model_statuses(fits: Mapping[str, Any], view: Mapping) -> list[tuple[str, dict]]:
    """(data-model, verdict) per model of the view, in display order; the impact views only when asked."""
    errors = view.get("errors") or {}
    settings = view["settings"]
    out = []
    for name in ("realized", "garch", "markov", "merton"):
        model = settings.get("garch") if name == "garch" else name
        out.append((name, V.status_summary(model, fits.get(name), errors.get(name),
                                           requested=not (name == "merton" and not settings.get("merton")))))
    if not settings.get("impact"):
        return out
    model = settings.get("impact_model")
    paths: ImpactPaths | None = fits.get("paths")
    for method, label in (("kalman", "Kalman"), ("sgd", "online SGD")):
        title = f"Impact path, {label} ({model})"
        error = errors.get("paths") or (paths.errors.get(method) if paths is not None else None)
        if error or paths is None or method not in paths.status:
            out.append((f"paths-{method}", {"model": title, "level": "danger" if error else "secondary",
                                            "badge": "Failed" if error else "Not fitted",
                                            "headline": error or "not fitted yet", "details": []}))
        else:
            out.append((f"paths-{method}", {"model": title, **paths.status[method]}))
    by: ImpactByRegime | None = fits.get("by_regime")
    title = f"Impact by regime ({model})"
    if errors.get("by_regime") or by is None:
        error = errors.get("by_regime")
        out.append(("by_regime", {"model": title, "level": "danger" if error else "secondary",
                                  "badge": "Failed" if error else "Not fitted",
                                  "headline": error or "not fitted yet", "details": []}))
    else:
        out.append(("by_regime", {"model": title, **by.status}))
    return out


def status_component(fits: Mapping[str, Any], view: Mapping) -> html.Div:
    """Every model's convergence verdict, first and prominent: one coloured line per model."""
    series = fits.get("series")
    items = []
    worst = "success"
    for name, s in model_statuses(fits, view):
        if shell.LEVEL_RANK[s["level"]] > shell.LEVEL_RANK[worst]:
            worst = s["level"]
        body = [dbc.Badge(s["badge"], color=s["level"], className="me-2 execal-vol-badge"),
                html.Strong(s["model"] + ": ", className="me-1"), html.Span(s["headline"])]
        if s["details"]:
            body.append(html.Ul([html.Li(d) for d in s["details"]], className="small mb-0"))
        items.append(html.Li(body, className="mb-1", **{"data-model": name, "data-level": s["level"]}))
    facts = ""
    if series is not None:
        sym = f"{series.symbol}, " if series.symbol else ""
        facts = (f"{series.source}: {sym}{series.n:,} bars of {bar_label(series.bar_ns)}, "
                 f"{pd.Timestamp(int(series.t_ns[0]), tz='UTC'):%Y-%m-%d %H:%M} → "
                 f"{pd.Timestamp(int(series.t_ns[-1]), tz='UTC'):%Y-%m-%d %H:%M} UTC")
    children = [html.Ul(items, className="list-unstyled mb-1 execal-vol-status")]
    if facts:
        children.append(html.Div(facts, className="small text-muted", id=_id("facts")))
    for note in (series.notes if series is not None else ()):
        children.append(html.Div(note, className="small text-muted"))
    return shell.status_banner(PANEL, children, {"danger": "danger", "warning": "warning"}.get(worst, "light"),
                               data_level=worst)


def bar_label(ns: int) -> str:
    """'15 min', '1 h', '1 d' for a bar length in ns."""
    s = ns / 1e9
    if s % 86400 == 0:
        return f"{int(s // 86400)} d"
    if s % 3600 == 0:
        return f"{int(s // 3600)} h"
    if s % 60 == 0:
        return f"{int(s // 60)} min"
    return f"{s:g} s"


def _main(fits: Mapping[str, Any], view: Mapping) -> dict:
    series: PriceSeries | None = fits.get("series")
    markov = fits.get("markov")
    merton = fits.get("merton")
    garch = fits.get("garch")
    realized = fits.get("realized")
    regimes = markov.regimes if markov is not None else None
    js = series.jump_summary if series is not None else {}
    jump_note = (f"no jump flagged (Lee–Mykland, α = {js.get('alpha', 0.01):g}, {js.get('returns_tested', 0):,} "
                 f"returns tested)") if series is not None else ""
    model_jumps = fits.get("merton_jumps") if merton is not None else None
    price = V.price_regime_figure(
        series.t_ns if series is not None else None, series.close if series is not None else None,
        bar_ns=series.bar_ns if series is not None else 0, symbol=series.symbol if series is not None else None,
        regime_path=markov.regime_path() if markov is not None else None, regimes=regimes,
        period_ns=markov.returns.period_ns if markov is not None else None,
        jumps=series.jumps if series is not None else None, jump_note=jump_note, model_jumps=model_jumps)
    probs = V.regime_probabilities_figure(markov.returns.t_ns if markov is not None else None,
                                          markov.smoothed if markov is not None else None, regimes,
                                          empty_message=_empty_message("markov", view, "The regime model"))
    regime_body: Any
    if markov is not None:
        regime_body = html.Div([
            _table(V.regime_rows(regimes), table_id=_id("regime-rows")),
            html.Div(className="mb-2"),
            _table(V.transition_rows(markov.transition), table_id=_id("transition"),
                       caption="Transition probabilities per period: row = regime now, column = next"),
        ])
    else:
        regime_body = shell.empty_text(_empty_message("markov", view, "The regime model"))
    param_blocks = []
    for name, res in (("garch", garch), ("markov", markov), ("merton", merton)):
        if res is None:
            continue
        title = V.model_label(res.model)
        param_blocks.append(html.H3(f"{title} — log-likelihood {V.format_number(res.loglikelihood, 8)}",
                                    className="h6 mt-2"))
        param_blocks.append(_table(V.parameter_rows(res), table_id=_id(f"params-{name}")))
    if merton is not None:
        param_blocks.append(_table(V.merton_summary_rows(merton), table_id=_id("merton-summary")))
    params = html.Div(param_blocks) if param_blocks else shell.empty_text("No fitted parameters yet.")
    fits_table = _table(V.fit_rows({n: fits.get(n) for n in ("realized", "garch", "markov", "merton")}),
                            table_id=_id("fits"),
                            caption="Log-likelihoods are of the same returns (fractions), so they compare")
    return {STATUS: status_component(fits, view), PRICE: price, PROBABILITIES: probs, REGIME_TABLE: regime_body,
            PARAMS: params, FITS_TABLE: fits_table}


MAIN_OUTPUTS = {STATUS: "children", PRICE: "figure", PROBABILITIES: "figure", REGIME_TABLE: "children",
                PARAMS: "children", FITS_TABLE: "children"}


def empty_main(message: str, level: str = "secondary") -> dict:
    return shell.empty_outputs(message, graphs=(PRICE, PROBABILITIES), texts=(REGIME_TABLE, PARAMS, FITS_TABLE),
                               status=(STATUS, PANEL), level=level)


def _view_signature(view: Mapping) -> str:
    return json.dumps({"keys": view.get("keys"), "errors": view.get("errors")}, sort_keys=True, default=str)


def main_outputs(results: results_mod.ResultStore, view: Any) -> dict:
    """The status, price/regime figure, probabilities and tables of a view (or designed empty states)."""
    if not _valid_view(view):
        return empty_main(EMPTY_MESSAGE)
    fits = _fits(results, view)
    if fits is None:
        return empty_main(EVICTED, "warning")
    try:
        return _prepared.get_or_make("main:" + _view_signature(view), lambda: _main(fits, view))
    except Exception as err:   # never a traceback in the browser
        log.exception("volatility view failed")
        return empty_main(f"The figures could not be drawn ({type(err).__name__}); the details are in the "
                          "server log.", "danger")


def _fits_with(results: results_mod.ResultStore, view: Any, name: str, what: str,
               outputs: tuple[str, str]) -> tuple[dict | None, dict | None]:
    """(the view's fits, None) when its fit `name` is there, else (None, the designed empty states of
    `outputs` = (figure id, table id) saying why `what` is missing)."""
    message = EMPTY_MESSAGE
    if _valid_view(view):
        fits = _fits(results, view)
        if fits is not None and fits.get(name) is not None:
            return fits, None
        message = EVICTED if fits is None else _empty_message(name, view, what)
    return None, shell.empty_outputs(message, graphs=outputs[:1], texts=outputs[1:])


def realized_outputs(results: results_mod.ResultStore, view: Any, estimators: Any) -> dict:
    """The realised-estimators figure and table for the ticked estimators."""
    fits, empty = _fits_with(results, view, "realized", "Realised volatility", (REALIZED, REALIZED_TABLE))
    if empty is not None:
        return empty
    realized = fits["realized"]
    chosen = display_settings(estimators, DEFAULT_HORIZON)["estimators"]
    tidy = _prepared.get_or_make("tidy:" + view["keys"]["realized"], realized.tidy)
    fig = V.realized_figure(tidy, chosen, freq=view["settings"].get("period", "1D"))
    table = _table(V.realized_rows(realized, chosen), table_id=_id("realized-rows"),
                   caption="Average σ over the complete periods (periods with every bar)")
    return {REALIZED: fig, REALIZED_TABLE: table}


def _garch_path(garch) -> dict:
    """The conditional volatility path thinned for the browser, once per fit and process."""
    frame = garch.volatility_frame()
    idx = V.line_index(len(frame), (frame["sigma_annualized"].to_numpy(),))
    return {"frame": frame.iloc[idx].reset_index(drop=True), "n": len(frame)}


def garch_outputs(results: results_mod.ResultStore, view: Any, horizon: Any, estimators: Any = ()) -> dict:
    """The GARCH figure (conditional σ, forecast `horizon` periods ahead, long-run level, the first ticked
    realised estimator for comparison) and its summary table."""
    fits, empty = _fits_with(results, view, "garch", "The GARCH model", (GARCH, GARCH_TABLE))
    if empty is not None:
        return empty
    garch = fits["garch"]
    d = display_settings(estimators, horizon)
    note = ""
    stored = fits.get("garch_forecast")
    if stored is not None and len(stored) >= d["horizon"]:
        forecast = stored.iloc[:d["horizon"]]
    else:
        try:
            forecast = garch.forecast(d["horizon"])
        except Exception as err:   # a forecast failing must not hide the fitted path
            log.exception("GARCH forecast failed")
            forecast = None
            note = f"forecast unavailable ({type(err).__name__})"
    realized = fits.get("realized")
    comparison = None
    label = ""
    if realized is not None and d["estimators"]:
        est = d["estimators"][-1] if "yang_zhang" not in d["estimators"] else "yang_zhang"
        tidy = _prepared.get_or_make("tidy:" + view["keys"]["realized"], realized.tidy)
        comparison = tidy[tidy["estimator"].astype(str) == est]
        label = f"realised ({V.ESTIMATOR_LABELS.get(est, est)}, per {view['settings'].get('period', '1D')})"
    path = _prepared.get_or_make("garch-path:" + view["keys"]["garch"], lambda: _garch_path(garch))
    fig = V.garch_figure(path["frame"], forecast, label=V.model_label(garch.model),
                         long_run_annualized=(garch.stats or {}).get("sigma_annualized_long_run"),
                         realized=comparison, realized_label=label, n_total=path["n"])
    rows = V.garch_summary_rows(garch)
    if forecast is not None and len(forecast):
        last = forecast.iloc[-1]
        rows.append({"quantity": f"forecast σ annualised, {d['horizon']} periods ahead",
                     "value": V._pct(last["sigma_annualized"])})
        rows.append({"quantity": f"σ daily of the next {d['horizon']} periods' cumulative return",
                     "value": V._pct(last["sigma_daily_horizon"])})
    elif note:
        rows.append({"quantity": "forecast", "value": note})
    return {GARCH: fig, GARCH_TABLE: _table(rows, table_id=_id("garch-rows"))}


IMPACT_OFF = "Tick “Impact over time and by regime” on the left and press Fit"
IMPACT_OUTPUTS = {PATHS: "figure", PATHS_TABLE: "children", BY_REGIME: "figure", BY_REGIME_TABLE: "children"}


def _empty_impact(message: str) -> dict:
    return shell.empty_outputs(message, graphs=(PATHS, BY_REGIME), texts=(PATHS_TABLE, BY_REGIME_TABLE))


def regime_coefficient_rows(by: ImpactByRegime, alpha: float = 0.05) -> list[dict]:
    """Bars of the by-regime figure: each parameter per regime with its (1 − alpha) interval."""
    z = float(stats.norm.ppf(1 - alpha / 2))
    names = list(REGIME_NAMES.get(by.k_regimes, ()))
    rows = []
    for param, entries in by.coefficients.items():
        for e in entries:
            name = str(e["key"].get("regime"))
            se = e.get("std_error")
            ok = se is not None and math.isfinite(float(se))
            rows.append({"regime": names.index(name) if name in names else len(names), "label": param,
                         "value": e["value"], "lower": e["value"] - z * se if ok else None,
                         "upper": e["value"] + z * se if ok else None, "n": e.get("rows")})
    return rows


def impact_outputs(results: results_mod.ResultStore, view: Any) -> dict:
    """The impact coefficient's paths and the impact by regime of a view (or why they are empty)."""
    if not _valid_view(view):
        return _empty_impact(EMPTY_MESSAGE)
    if not view["settings"].get("impact"):
        return _empty_impact(IMPACT_OFF)
    fits = _fits(results, view)
    if fits is None:
        return _empty_impact(EVICTED)
    out = {}
    paths: ImpactPaths | None = fits.get("paths")
    if paths is None or paths.path is None:
        message = _empty_message("paths", view, "The impact path") if paths is None else \
            "No path: " + "; ".join(f"{m}: {e}" for m, e in paths.errors.items())
        out.update(shell.empty_outputs(message, graphs=(PATHS,), texts=(PATHS_TABLE,)))
    else:
        moving = list(dict.fromkeys(paths.path["parameter"].astype(str)))
        out[PATHS] = V.coefficient_path_figure(paths.path, batch={p: paths.batch.get(p) for p in moving})
        items = []
        for method, label in (("kalman", "Kalman"), ("sgd", "SGD")):
            lines = paths.facts.get(method) or ([paths.errors[method]] if method in paths.errors else [])
            if lines:
                items.append(html.Li([html.Strong(f"{label}: "), "; ".join(lines)]))
        out[PATHS_TABLE] = html.Ul(items, className="small mb-0", id=_id("paths-facts"))
    by: ImpactByRegime | None = fits.get("by_regime")
    if by is None:
        message = _empty_message("by_regime", view, "The impact by regime")
        out.update(shell.empty_outputs(message, graphs=(BY_REGIME,), texts=(BY_REGIME_TABLE,)))
    else:
        out[BY_REGIME] = V.cost_by_regime_figure(regime_coefficient_rows(by), y_title=f"{by.model} parameter (95 % CI)")
        wald = (by.test or {}).get("wald") or {}
        caption = ("Do the regimes share the parameters? Wald χ² = "
                   f"{F.format_number(wald.get('statistic'), 4)}, df {wald.get('df', '—')}, "
                   f"p = {F.format_number(wald.get('p_value'), 3)}") if wald else None
        body = [_table(V.regime_impact_rows(by.coefficients, by.cost), table_id=_id("by-regime-rows"), caption=caption)]
        body += [html.Div(n, className="small text-muted") for n in by.notes]
        out[BY_REGIME_TABLE] = html.Div(body)
    return out


# --- layout ---------------------------------------------------------------------------------------


def _field(text: str, control, control_id: str, help_text: str | None = None) -> html.Div:
    return shell.field(text, control, control_id, help_text, compact=True)


def _graph(graph_id: str, height: int = V.FIGURE_HEIGHT):
    return shell.graph(graph_id, EMPTY_MESSAGE, height=height)


_card = shell.card_col


def _slot(slot_id: str):
    return shell.slot(slot_id, EMPTY_MESSAGE)


def _figure_card(title: str, graph_id: str, table_id: str, about: str) -> dbc.Col:
    """A card with a figure over its table."""
    return _card(title, [_graph(graph_id), _slot(table_id)], about)


def layout(app) -> html.Div:
    estimators = estimator_names()
    garch = garch_models()
    first_garch = next(iter(garch))
    data_section = [
        _field("Bars or trades", dcc.Dropdown(id=SOURCE, options=[], clearable=False,
                                              placeholder="choose the data"), SOURCE),
        _field("Symbol", dcc.Dropdown(id=SYMBOL, options=[], clearable=False, placeholder="one symbol"), SYMBOL),
        _field("Bar length", dcc.Dropdown(id=BAR, value=DATA_BARS, clearable=False, options=bar_options()), BAR,
               "returns for GARCH, regimes and jumps are bar to bar"),
        html.P("", id=DATA_NOTE, className="small text-muted mb-3", role="status"),
    ]
    realized_section = [
        _field("Realised estimators", dbc.Checklist(
            id=ESTIMATOR_PICK, value=[e for e in DEFAULT_ESTIMATORS if e in estimators],
            options=[{"label": V.ESTIMATOR_LABELS.get(e, e), "value": e} for e in estimators]), ESTIMATOR_PICK,
            "drawn side by side (no refit when you change them)"),
        _field("Realised period", dcc.Dropdown(id=PERIOD, value=default_period(), clearable=False,
                                               options=[{"label": p, "value": p} for p in PERIOD_CHOICES]), PERIOD),
    ]
    garch_section = [
        _field("Forecasting model", dcc.Dropdown(id=GARCH_PICK, value=first_garch, clearable=False,
                                             options=[{"label": m.label, "value": n} for n, m in garch.items()]),
               GARCH_PICK, garch[first_garch].formula),
        _field("Error distribution", dbc.RadioItems(id=DIST, value=dist_choices(first_garch)[0], inline=True,
                                                    options=[{"label": d, "value": d}
                                                             for d in dist_choices(first_garch)]), DIST),
        _field("Forecast horizon (periods)", dbc.Input(id=HORIZON, type="number", min=1, max=MAX_HORIZON, step=1,
                                                     value=DEFAULT_HORIZON, size="sm", debounce=True), HORIZON,
               "redrawn without refitting"),
    ]
    markov = MODELS["markov"]
    regime_section = [
        _field("Number of regimes", dbc.RadioItems(id=REGIMES_PICK, value=regime_choices()[0], inline=True,
                                                   options=[{"label": str(k), "value": k} for k in regime_choices()]),
               REGIMES_PICK, markov.formula),
        _field("Regime means", dbc.Checklist(id=SWITCHING_MEAN, value=[], options=[
            {"label": "a mean return per regime (switching mean)", "value": "yes"}]), SWITCHING_MEAN),
        _field("Jump-diffusion", dbc.Checklist(id=MERTON_PICK, value=[], options=[
            {"label": f"also fit {MODELS['merton'].label} (slower)", "value": "yes"}]), MERTON_PICK,
            MODELS["merton"].formula),
    ]

    impact = impact_models()
    first_impact = default_impact_model()
    impact_section = [
        _field("Impact over time and by regime", dbc.Checklist(id=IMPACT_PICK, value=["yes"], options=[
            {"label": "fit the impact coefficient's path (Kalman, SGD) and per volatility regime", "value": "yes"}]),
            IMPACT_PICK, "on the session's fills (the active dataset, else the latest fills loaded), with the "
                         "Data filters; regimes from the bars above, labelled without look-ahead"),
        _field("Impact model", dcc.Dropdown(id=IMPACT_MODEL, value=first_impact, clearable=False,
                                            options=[{"label": f"{m.label} ({n})", "value": n}
                                                     for n, m in impact.items()]), IMPACT_MODEL),
    ]

    section = shell.section
    settings_card = shell.card("Data and models", [
        section("Data", data_section), section("Realised volatility", realized_section),
        section("Conditional volatility and forecasts", garch_section), section("Regimes and jumps", regime_section),
        section("Impact", impact_section)], class_name="mb-3 execal-vol-settings")
    run_card = shell.job_card(JOB_IDS, "Fit", store_ids=(VIEW, SEEN, SHOWN))
    status = shell.slot(STATUS, shell.empty_status(PANEL, EMPTY_MESSAGE))
    figures_col = [
        run_card, status, html.Div(className="mb-3"),
        dbc.Row([_card("Price and regimes", _graph(PRICE, V.PRICE_HEIGHT),
                       "close price; shading = most probable regime (smoothed); ▲ = jumps (Lee–Mykland)",
                       {"lg": 12})]),
        dbc.Row([
            _figure_card("Realised volatility", REALIZED, REALIZED_TABLE,
                         "every ticked estimator per period, annualised"),
            _figure_card("Conditional volatility and forecast", GARCH, GARCH_TABLE,
                         "annualised; dashed = forecast; dotted = long-run level"),
        ]),
        dbc.Row([
            _card("Regime probabilities", _graph(PROBABILITIES), "smoothed Pr(regime | all returns), stacked"),
            _card("Regimes", _slot(REGIME_TABLE), "σ, expected duration and share of time per regime"),
        ]),
        dbc.Row([
            _figure_card("Impact coefficient over time", PATHS, PATHS_TABLE,
                         "Kalman: smoothed path with its 95 % band; SGD: fill-by-fill iterates; dotted = batch fit"),
            _figure_card("Impact by volatility regime", BY_REGIME, BY_REGIME_TABLE,
                         "the impact model fitted per regime of the fills (95 % CI), mean cost per regime"),
        ]),
        # full rows: their tables are wide (a half row cut them at the right edge)
        dbc.Row([_card("Model comparison", _slot(FITS_TABLE), "log-likelihood, AIC, BIC on the same returns",
                       {"lg": 12})]),
        dbc.Row([_card("Parameters", _slot(PARAMS), "estimates with standard errors and 95 % intervals",
                       {"lg": 12})]),
    ]
    return dbc.Row([dbc.Col(settings_card, md=4, lg=3), dbc.Col(figures_col, md=8, lg=9)],
                   className="execal-vol-panel")


# --- callbacks ------------------------------------------------------------------------------------


def _sample_dir(app) -> Path:
    return shell.get_settings(app).sample_dir


def view_signature(view: Any) -> str | None:
    """What identifies the drawn fits of a view (None for no view)."""
    return _view_signature(view) if _valid_view(view) else None


def needs_render(pathname: str | None, trigger: Any, view: Any, shown: Any) -> bool:
    """Whether a render callback draws (`shell.needs_render` on the view's signature): a new worker's first
    page must not unpickle a million-bar fit nobody looks at."""
    return shell.needs_render(PANEL, pathname, trigger, view_signature(view), shown)


@shell.background_job
def fit_job(set_progress, ticket):
    """The background callback: runs in a job process (components/jobs.py), on that process's stores,
    the job `_plan` built on the server for this owner (a forged payload runs nothing)."""
    job_st, job_results = shell.job_stores()
    job = shell.claim_job(job_st.cache, ticket)
    if job is None or not _valid_view(job):
        raise PreventUpdate
    progress = shell.JobProgress(set_progress)
    session_id = job.pop("session", None)
    out = run_fit(job_st, job_results, job, progress)
    if out["view"] is None:
        return no_update, out["alert"][0], True, ""
    save_view(job_st.cache, session_id, out["view"])
    failed = sorted(n for n in out["view"]["errors"] if n not in DERIVED)
    note = f"Fitted in {progress.seconds:.1f} s." + (
        f" Not fitted: {', '.join(failed)} (see the status above)." if failed else "")
    return out["view"], "", False, note


def register_callbacks(app) -> None:
    st, results = shell.stores(app)
    LOCATION_ID = shell.LOCATION_ID

    @app.callback(
        Output(SOURCE, "options"), Output(SOURCE, "value"), Output(SEEN, "data"),
        Input(store_mod.ACTIVE_DATASET_ID, "data"), Input(store_mod.SESSION_STORE_ID, "data"),
        State(SOURCE, "value"), State(SEEN, "data"),
    )
    def _sources(active, session_id, current, seen):
        options, value, active_key = choose_source(st, _sample_dir(app), session_id, active, current, seen)
        return options, value, active_key

    @app.callback(
        Output(SYMBOL, "options"), Output(SYMBOL, "value"), Output(SYMBOL, "disabled"), Output(DATA_NOTE, "children"),
        Output(BAR, "options"),
        Input(SOURCE, "value"), Input(results_mod.FILTERS_ID, "data"), Input(LOCATION_ID, "pathname"),
        State(SYMBOL, "value"),
    )
    def _symbols(source, filters, pathname, current):
        # reads the frame (symbols, span): only for the panel on screen
        if not source or not shell.is_shown(PANEL, pathname):
            raise PreventUpdate
        try:
            dataset = st.get_dataset(resolve_source(st, _sample_dir(app), source))
        except DataError as err:
            return [], None, True, str(err), bar_options()
        d = describe_data(dataset, filters, current)
        symbols = d["symbols"]
        value = current if current in symbols else (symbols[0] if symbols else None)
        return [{"label": s, "value": s} for s in symbols], value, len(symbols) < 2, d["note"], d["bars"]

    @app.callback(
        Output(DIST, "options"), Output(DIST, "value"),
        Input(GARCH_PICK, "value"), State(DIST, "value"),
    )
    def _dists(garch, current):
        if garch not in garch_models():
            raise PreventUpdate
        choices = dist_choices(garch)
        return [{"label": d, "value": d} for d in choices], current if current in choices else (
            choices[0] if choices else None)

    @app.callback(
        Output(VIEW, "data"),
        Input(store_mod.SESSION_STORE_ID, "modified_timestamp"),
        State(store_mod.SESSION_STORE_ID, "data"),
    )
    def _restore(ts, session_id):
        if not shell.session_ready(ts, session_id):
            raise PreventUpdate
        view = saved_view(st.cache, session_id)
        if view is None:
            raise PreventUpdate
        return view

    @app.callback(
        Output(VIEW, "data", allow_duplicate=True), Output(JOB, "data"),
        Output(ALERT, "children"), Output(ALERT, "is_open"), Output(NOTE, "children"),
        Input(RUN, "n_clicks"),
        State(store_mod.SESSION_STORE_ID, "data"), State(SOURCE, "value"), State(results_mod.FILTERS_ID, "data"),
        State(SYMBOL, "value"), State(BAR, "value"), State(PERIOD, "value"), State(GARCH_PICK, "value"),
        State(DIST, "value"), State(REGIMES_PICK, "value"), State(SWITCHING_MEAN, "value"),
        State(MERTON_PICK, "value"), State(ESTIMATOR_PICK, "value"), State(HORIZON, "value"),
        State(IMPACT_PICK, "value"), State(IMPACT_MODEL, "value"), State(store_mod.ACTIVE_DATASET_ID, "data"),
        prevent_initial_call=True,
    )
    def _plan(clicks, session_id, source, filters, symbol, bar, period, garch, dist, k, switching, merton,
              estimators, horizon, impact, impact_model, active):
        if not clicks:
            raise PreventUpdate
        try:
            settings = build_settings(symbol=symbol, bar=bar, period=period, garch=garch, dist=dist, k_regimes=k,
                                      switching_mean=bool(switching), merton=bool(merton), impact=bool(impact),
                                      impact_model=impact_model)
            plan = plan_fit(st, results, _sample_dir(app), session_id=session_id, source=source, filters=filters,
                            settings=settings, display=display_settings(estimators, horizon), active=active)
        except (DataError, SettingsError) as err:
            return no_update, no_update, f"Cannot fit: {err}", True, ""
        if plan["job"] is None:
            save_view(st.cache, session_id, plan["view"])
            return plan["view"], no_update, "", False, "Shown from the cache: these fits were done before."
        plan["job"]["session"] = session_id
        # the job stays on the server; the browser gets a ticket that only this session can redeem
        return no_update, shell.submit_job(st.cache, session_id, plan["job"]), "", False, "Starting the fits…"

    app.callback(
        Output(VIEW, "data", allow_duplicate=True),
        Output(ALERT, "children", allow_duplicate=True), Output(ALERT, "is_open", allow_duplicate=True),
        Output(NOTE, "children", allow_duplicate=True),
        Input(JOB, "data"),
        **shell.job_callback_kwargs(JOB_IDS),
    )(fit_job)

    shell.register_cancel_note(app, JOB_IDS, "Fit cancelled: the figures show the previous fits.")

    main_order = list(MAIN_OUTPUTS)

    @app.callback([Output(i, MAIN_OUTPUTS[i]) for i in main_order] + [Output(SHOWN, "data")],
                  Input(VIEW, "data"), Input(LOCATION_ID, "pathname"), State(SHOWN, "data"))
    def _render_main(view, pathname, shown):
        if not needs_render(pathname, ctx.triggered_id, view, shown):
            raise PreventUpdate
        out = main_outputs(results, view)
        return [out[i] for i in main_order] + [view_signature(view)]

    @app.callback(Output(REALIZED, "figure"), Output(REALIZED_TABLE, "children"),
                  Input(VIEW, "data"), Input(ESTIMATOR_PICK, "value"), Input(LOCATION_ID, "pathname"),
                  State(SHOWN, "data"))
    def _render_realized(view, estimators, pathname, shown):
        if not needs_render(pathname, ctx.triggered_id, view, shown):
            raise PreventUpdate
        out = realized_outputs(results, view, estimators)
        return out[REALIZED], out[REALIZED_TABLE]

    @app.callback(Output(GARCH, "figure"), Output(GARCH_TABLE, "children"),
                  Input(VIEW, "data"), Input(HORIZON, "value"), Input(ESTIMATOR_PICK, "value"),
                  Input(LOCATION_ID, "pathname"), State(SHOWN, "data"))
    def _render_garch(view, horizon, estimators, pathname, shown):
        if not needs_render(pathname, ctx.triggered_id, view, shown):
            raise PreventUpdate
        out = garch_outputs(results, view, horizon, estimators)
        return out[GARCH], out[GARCH_TABLE]

    impact_order = list(IMPACT_OUTPUTS)

    @app.callback([Output(i, IMPACT_OUTPUTS[i]) for i in impact_order],
                  Input(VIEW, "data"), Input(LOCATION_ID, "pathname"), State(SHOWN, "data"))
    def _render_impact(view, pathname, shown):
        if not needs_render(pathname, ctx.triggered_id, view, shown):
            raise PreventUpdate
        try:
            out = impact_outputs(results, view)
        except Exception as err:   # never a traceback in the browser
            log.exception("impact views failed")
            out = _empty_impact(f"The impact views could not be drawn ({type(err).__name__}); the details are "
                                "in the server log.")
        return [out[i] for i in impact_order]

    sync_outputs = [Output(SOURCE, "value", allow_duplicate=True), Output(SYMBOL, "value", allow_duplicate=True),
                    Output(BAR, "value"), Output(PERIOD, "value"), Output(GARCH_PICK, "value"),
                    Output(DIST, "value", allow_duplicate=True), Output(REGIMES_PICK, "value"),
                    Output(SWITCHING_MEAN, "value"), Output(MERTON_PICK, "value"), Output(ESTIMATOR_PICK, "value"),
                    Output(HORIZON, "value"), Output(IMPACT_PICK, "value"), Output(IMPACT_MODEL, "value")]

    @app.callback(sync_outputs, Input(VIEW, "data"),
                  [State(o.component_id, o.component_property) for o in sync_outputs],
                  prevent_initial_call=True)
    def _sync_controls(view, *current):
        # the form shows the settings of the fits on screen (after a reload or a cached repeat)
        if not _valid_view(view):
            raise PreventUpdate
        s, d = view["settings"], view.get("display") or {}
        wanted = [view.get("source"), s.get("symbol"), s.get("bar"), s.get("period"), s.get("garch"), s.get("dist"),
                  s.get("k_regimes"), ["yes"] if s.get("switching_mean") else [], ["yes"] if s.get("merton") else [],
                  d.get("estimators", current[9]), d.get("horizon", current[10]),
                  ["yes"] if s.get("impact") else [], s.get("impact_model")]
        return [no_update if (w is None or w == c) else w for w, c in zip(wanted, current)]
