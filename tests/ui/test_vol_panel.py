"""The Volatility & regimes panel's callback bodies, without a browser: registry-generated pickers, sources,
settings validation, the Data filters, fitting the sample bars (regimes against the sample's ground truth),
the cache, per-model failures, bad input, and the designed empty states."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from execal.components import results as R
from execal.components import shell
from execal.components.figures import empty_message
from execal.components import store as S
from execal.components import vol_figures as V
from execal.components import vol_panel as P
from execal.models.data.io import load
from execal.models.vol.realized import bar_series
from execal.models.core.registry import models_of_kind
from ui_fixtures import text_of


@pytest.fixture(scope="module")
def stores(module_stores):
    return module_stores     # the fits are shared by the module's tests


def settings(**kw) -> dict:
    base = dict(symbol="BTCUSDT", bar="data", period="1D", garch="garch", dist="normal", k_regimes=2,
                switching_mean=False, merton=False)
    base.update(kw)
    return P.build_settings(**base)


def fit(stores, sample_dir, source=P.sample_value("bars_15m.csv"), filters=None, session_id=None, active=None,
        **kw) -> tuple[dict, list]:
    st, rs = stores
    plan = P.plan_fit(st, rs, sample_dir, session_id=session_id or S.new_session_id(), source=source,
                      filters=filters or {}, settings=settings(**kw), active=active)
    if plan["job"] is None:
        return plan["view"], []
    stages: list = []
    out = P.run_fit(st, rs, plan["job"], lambda p, s: stages.append((p, s)))
    assert out["alert"] == ("", False), out["alert"]
    return out["view"], stages


def find(component, component_id):
    """The component with `component_id` inside a layout tree."""
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, (list, tuple)) else [children]:
        if child is not None and not isinstance(child, (str, int, float)):
            hit = find(child, component_id)
            if hit is not None:
                return hit
    return None


# --- registry and settings -------------------------------------------------------------------------


def test_pickers_come_from_the_registry():
    # the forecasting picker lists every registry model that forecasts: the GARCH family and HAR-RV
    assert set(P.garch_models()) == {n for n, m in models_of_kind("volatility").items() if m.forecasts}
    assert {"garch", "gjr", "egarch", "har"} <= set(P.garch_models())
    assert P.estimator_names() == tuple(models_of_kind("volatility")["realized"].options["estimator"])
    assert P.regime_choices() == (2, 3)
    page = P.layout(None)
    garch = find(page, P.GARCH_PICK)
    assert [o["value"] for o in garch.options] == list(P.garch_models())
    assert [o["label"] for o in garch.options] == [m.label for m in P.garch_models().values()]
    assert [o["value"] for o in find(page, P.ESTIMATOR_PICK).options] == list(P.estimator_names())
    assert [o["value"] for o in find(page, P.REGIMES_PICK).options] == [2, 3]
    assert find(page, P.PERIOD).value == models_of_kind("volatility")["realized"].options["freq"]
    assert [o["value"] for o in find(page, P.IMPACT_MODEL).options] == list(models_of_kind("impact"))


def test_build_settings_validates_each_control():
    s = settings()
    assert s == {"symbol": "BTCUSDT", "bar": "data", "period": "1D", "garch": "garch", "dist": "normal",
                 "k_regimes": 2, "switching_mean": False, "merton": False, "impact": False,
                 "impact_model": "power_law"}
    for bad, match in ((dict(garch="figarch"), "GARCH variant"), (dict(dist="skewt"), "error distribution"),
                       (dict(k_regimes=4), "number of regimes"), (dict(k_regimes="two"), "number of regimes"),
                       (dict(bar="7min"), "bar length"), (dict(period="soon"), "not a frequency"),
                       (dict(impact_model="garch"), "impact model")):
        with pytest.raises(P.SettingsError, match=match):
            settings(**bad)


def test_display_settings_clamp_and_order():
    d = P.display_settings(["yang_zhang", "nonsense", "parkinson"], "5000")
    assert d == {"estimators": ["parkinson", "yang_zhang"], "horizon": P.MAX_HORIZON}
    assert P.display_settings(None, None)["horizon"] == P.DEFAULT_HORIZON


def test_each_model_has_its_own_cache_key():
    a = P.view_keys("k", {}, settings())
    b = P.view_keys("k", {}, settings(garch="gjr"))
    assert a["markov"] == b["markov"] and a["garch"] != b["garch"] and a["merton"] is None
    c = P.view_keys("k", {"start": "2024-09-01T00:00:00+00:00"}, settings())
    assert c["markov"] != a["markov"]
    assert all(R.is_result_key(k) for k in a.values() if k)


# --- sources and filters ---------------------------------------------------------------------------


def test_sources_default_to_the_sample_bars_then_follow_loaded_bars(stores, sample_dir):
    st, _ = stores
    sid = S.new_session_id()
    fills_key = st.load_bytes((sample_dir / "fills.csv").read_bytes(), name="fills.csv", session_id=sid)
    options, default = P.source_options(st, sample_dir, sid, {"key": fills_key})
    assert default == P.sample_value("bars_15m.csv")
    assert fills_key not in [o["value"] for o in options]            # fills are not a price series
    bars_key = st.load_bytes((sample_dir / "bars_15m.csv").read_bytes(), name="my_bars.csv", session_id=sid)
    options, value, seen = P.choose_source(st, sample_dir, sid, {"key": bars_key}, P.sample_value("bars_15m.csv"),
                                           fills_key)
    assert value == bars_key and seen == bars_key and options[0]["label"].startswith("active dataset: my_bars.csv")
    # the same active dataset again (a reload) does not override the user's pick
    _, value, _ = P.choose_source(st, sample_dir, sid, {"key": bars_key}, P.sample_value("bars_15m.csv"), bars_key)
    assert value == P.sample_value("bars_15m.csv")


def test_resolve_source_rejects_what_it_cannot_use(stores, sample_dir):
    st, _ = stores
    with pytest.raises(S.DataError, match="no such bundled sample"):
        P.resolve_source(st, sample_dir, P.SAMPLE_PREFIX + "../app.py")
    with pytest.raises(S.DataError, match="choose the bars"):
        P.resolve_source(st, sample_dir, None)
    with pytest.raises(S.DataError, match="no longer in the server's cache"):
        P.resolve_source(st, sample_dir, "0" * 64 + "-bars")


def test_describe_data_and_symbol_filter(sample_dir):
    ds = load(str(sample_dir / "bars_15m.csv"))
    d = P.describe_data(ds, {})
    assert d["symbols"] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"] and "23,328 bars rows" in d["note"]
    d = P.describe_data(ds, {"symbol": ["SOLUSDT", "XRPUSDT"], "size_min": 3})
    assert d["symbols"] == ["SOLUSDT"] and "Data filters applied: symbol" in d["note"]
    assert P.vol_filters({"size_min": 3, "venue": ["okx"], "start": "2024-09-01"}) == {
        "venue": ["okx"], "start": "2024-09-01"}


def test_slice_bars_keeps_file_rows_and_breaks_the_first_return(sample_dir):
    bars = bar_series(load(str(sample_dir / "bars_15m.csv")), symbol="ETHUSDT")
    cut = P.slice_bars(bars, {"start": "2024-09-01T00:00:00+00:00", "end": "2024-09-03T00:00:00+00:00"})
    assert cut.n == 2 * 96 and not cut.contiguous[0] and cut.contiguous[1:].all()
    assert pd.Timestamp(int(cut.t_ns[0]), tz="UTC") == pd.Timestamp("2024-09-01", tz="UTC")
    first = int(np.searchsorted(bars.t_ns, cut.t_ns[0]))
    assert cut.rows[0] == bars.rows[first] and cut.close[0] == bars.close[first]
    assert P.slice_bars(bars, {}) is bars


# --- fitting ---------------------------------------------------------------------------------------


def test_fit_sample_bars_recovers_the_regimes(stores, sample_dir, truth):
    st, rs = stores
    view, stages = fit(stores, sample_dir)
    assert [round(p) for p, _ in stages][:2] == [5, 15] and stages[-1] == (100, "done")
    assert view["errors"] == {} and view["settings"]["symbol"] == "BTCUSDT"
    markov = rs.get(view["keys"]["markov"])
    btc = truth["market"]["symbols"]["BTCUSDT"]
    calm, stressed = markov.regimes
    assert calm["sigma_daily"] == pytest.approx(btc["sigma_calm"], rel=0.1)
    assert stressed["sigma_daily"] == pytest.approx(btc["sigma_stressed"], rel=0.1)
    # the shaded regime (most probable, smoothed) agrees with the true regime of most days
    path = markov.regime_path()
    day = (path["timestamp"] - pd.Timestamp(truth["market"]["start"])).dt.days.to_numpy()
    majority = np.bincount(day, weights=path["regime"].to_numpy(float)) / np.bincount(day) > 0.5
    true_days = np.asarray(btc["regime_by_day"])[: majority.shape[0]]
    assert np.mean(majority == true_days) > 0.95
    assert rs.get(view["keys"]["garch"]).converged and rs.get(view["keys"]["realized"]) is not None
    series = rs.get(view["keys"]["series"])
    assert series.n == 81 * 96 and series.symbol == "BTCUSDT"


def test_a_repeat_is_answered_from_the_cache(stores, sample_dir):
    fit(stores, sample_dir)
    st, rs = stores
    plan = P.plan_fit(st, rs, sample_dir, session_id=S.new_session_id(), source=P.sample_value("bars_15m.csv"),
                      filters={}, settings=settings())
    assert plan["job"] is None and plan["view"]["keys"]["markov"]
    # only the new GARCH variant is missing; the job would fit nothing else
    plan = P.plan_fit(st, rs, sample_dir, session_id=None, source=P.sample_value("bars_15m.csv"), filters={},
                      settings=settings(garch="gjr", dist="t"))
    missing = [n for n, k in plan["job"]["keys"].items() if k and rs.get(k) is None]
    assert missing == ["garch", "garch_forecast"]


def test_har_is_a_forecasting_choice_with_its_own_outputs(stores, sample_dir):
    """HAR-RV reached the panel through its registry line only: pick it, fit, and the forecasting card
    draws its fitted σ path and recursion forecast, its table its persistence, half-life and R²."""
    s = settings(garch="har", dist="normal")
    assert s["garch"] == "har" and s["dist"] is None          # HAR has no error distribution
    view, _ = fit(stores, sample_dir, garch="har", dist="normal")
    assert view["errors"] == {}, view["errors"]
    st, rs = stores
    har = rs.get(view["keys"]["garch"])
    assert har.model == "har" and har.status == "closed_form" and har.report.method == "closed_form"
    out = P.garch_outputs(rs, view, 5)
    fig = out[P.GARCH].to_plotly_json()
    names = [t.get("name", "") for t in fig["data"]]
    assert any("HAR-RV" in n for n in names) and any(n.startswith("forecast, 5 periods") for n in names)
    body = text_of(out[P.GARCH_TABLE])
    assert "β_d + β_w + β_m" in body and "R² in sample" in body
    statuses = dict(P.model_statuses(P._fits(rs, view), view))
    assert statuses["garch"]["model"].startswith("HAR-RV") and statuses["garch"]["badge"] == "Closed form"


def test_main_outputs_show_status_figures_and_tables(stores, sample_dir):
    view, _ = fit(stores, sample_dir)
    out = P.main_outputs(stores[1], view)
    assert set(out) == set(P.MAIN_OUTPUTS)
    status = out[P.STATUS].to_plotly_json()["props"]
    assert status["data-level"] in ("success", "warning")
    text = text_of(out[P.STATUS])
    assert "GARCH(1,1): Converged — " in " ".join(text.split())
    assert "Markov regimes" in text and "Merton jump-diffusion" in text and "not requested" in text
    names = [tr.name for tr in out[P.PRICE].data]
    assert names[0].startswith("regime 0 · calm") and "close" in names
    assert len(out[P.PROBABILITIES].data) == 2
    regimes = text_of(out[P.REGIME_TABLE])
    assert "expected duration" in regimes and "regime 1 · stressed" in regimes
    assert "log-likelihood" in text_of(out[P.PARAMS]) and "sigma2[1]" in text_of(out[P.PARAMS])


def test_display_changes_redraw_without_refitting(stores, sample_dir):
    view, _ = fit(stores, sample_dir)
    st, rs = stores
    before = len(rs.cache)
    two = P.realized_outputs(rs, view, ["parkinson", "yang_zhang"])
    assert [tr.name for tr in two[P.REALIZED].data] == ["Parkinson", "Yang–Zhang"]
    one = P.realized_outputs(rs, view, ["bipower"])
    assert [tr.name for tr in one[P.REALIZED].data] == ["bipower"]
    g = P.garch_outputs(rs, view, 7, ["yang_zhang"])
    forecast = next(tr for tr in g[P.GARCH].data if tr.name.startswith("forecast"))
    assert forecast.name == "forecast, 7 periods ahead"
    # the stored long forecast sliced equals a fresh 7-period forecast of the fit
    fresh = rs.get(view["keys"]["garch"]).forecast(7)
    stored = rs.get(view["keys"]["garch_forecast"])
    assert len(stored) == P.MAX_HORIZON
    assert np.allclose(stored["sigma_annualized"].to_numpy()[:7], fresh["sigma_annualized"].to_numpy(), rtol=1e-10)
    assert np.allclose(100 * fresh["sigma_annualized"].to_numpy(), np.asarray(forecast.y, dtype=float)[1:], rtol=1e-6)
    assert "forecast σ annualised, 7 periods ahead" in text_of(g[P.GARCH_TABLE])
    assert len(rs.cache) == before


def test_filters_cut_the_bars_and_a_model_failure_is_reported(stores, sample_dir):
    # two days of hourly bars: 47 returns, too few for a Markov or GARCH fit; the rest is shown
    view, _ = fit(stores, sample_dir, filters={"start": "2024-09-01T00:00:00+00:00",
                                               "end": "2024-09-03T00:00:00+00:00", "size_max": 1},
                  bar="1h", symbol="SOLUSDT", merton=True)
    assert view["filters"] == {"start": "2024-09-01T00:00:00+00:00", "end": "2024-09-03T00:00:00+00:00"}
    assert set(view["errors"]) == {"garch", "garch_forecast", "markov", "merton", "merton_jumps"}
    assert "too few observations" in view["errors"]["markov"]
    assert view["errors"]["merton_jumps"] == view["errors"]["merton"]
    out = P.main_outputs(stores[1], view)
    assert out[P.STATUS].to_plotly_json()["props"]["data-level"] == "danger"
    status = text_of(out[P.STATUS])
    assert "Failed" in status and "keeps 48 of" in status
    assert "could not be fitted: " in empty_message(out[P.PROBABILITIES])
    assert len(out[P.PRICE].data) >= 1            # the price is still drawn
    assert len(P.realized_outputs(stores[1], view, ["parkinson"])[P.REALIZED].data) == 1


def test_symbol_filter_without_match_is_a_clear_error(stores, sample_dir):
    st, rs = stores
    with pytest.raises(S.DataError, match="symbol"):
        P.plan_fit(st, rs, sample_dir, session_id=None, source=P.sample_value("bars_15m.csv"),
                   filters={"symbol": ["DOGEUSDT"]}, settings=settings())


def test_constant_prices_are_one_clear_alert(stores, tmp_path):
    st, rs = stores
    ts = pd.date_range("2024-01-01", periods=300, freq="1h", tz="UTC")
    text = "timestamp,open,high,low,close,volume\n" + "".join(
        f"{t:%Y-%m-%dT%H:%M:%SZ},100,100,100,100,5\n" for t in ts)
    key = st.load_bytes(text.encode(), name="flat.csv")
    plan = P.plan_fit(st, rs, tmp_path, session_id=None, source=key, filters={}, settings=settings(symbol=None))
    out = P.run_fit(st, rs, plan["job"])
    assert out["view"] is None and out["alert"][1]
    assert out["alert"][0].startswith("Cannot fit: flat.csv: column 'close': constant prices (100 in all 300 bars)")
    assert "Traceback" not in out["alert"][0]


def test_fills_are_not_a_price_series(stores, sample_dir):
    st, rs = stores
    key = st.load_bytes((sample_dir / "fills.csv").read_bytes(), name="fills.csv")
    with pytest.raises(S.DataError, match="volatility needs bars or trades, not fills"):
        P.plan_fit(st, rs, sample_dir, session_id=None, source=key, filters={}, settings=settings())


def test_trades_become_one_minute_bars_and_merton_marks_jumps(stores, sample_dir):
    view, _ = fit(stores, sample_dir, source=P.sample_value("trades_BTCUSDT.csv.gz"), merton=True, period="4h")
    st, rs = stores
    series = rs.get(view["keys"]["series"])
    assert series.bar_ns == 60 * 10**9 and series.n == 1440
    assert view["errors"] == {}
    merton = rs.get(view["keys"]["merton"])
    out = P.main_outputs(rs, view)
    names = [tr.name for tr in out[P.PRICE].data]
    n_jumps = int(merton.jump_probabilities()["jump"].sum())
    flagged = rs.get(view["keys"]["merton_jumps"])
    assert len(flagged) == n_jumps and (flagged["p_jump"] > 0.5).all()
    assert (f"Merton jump posterior > ½: {n_jumps:,}" in names) == (n_jumps > 0)
    assert "Merton jump-diffusion" in text_of(out[P.FITS_TABLE])


# --- views, reload and empty states ----------------------------------------------------------------


def test_saved_view_round_trip(stores):
    st, _ = stores
    sid = S.new_session_id()
    view = {"keys": {"series": "result:" + "a" * 32}, "settings": {}, "errors": {}}
    P.save_view(st.cache, sid, view)
    assert P.saved_view(st.cache, sid) == view
    assert P.saved_view(st.cache, "not-a-session") is None
    st.cache.set(shell.memory_key(P.PANEL, sid), "{not json")
    assert P.saved_view(st.cache, sid) is None


def test_empty_and_evicted_views(stores):
    rs = stores[1]
    out = P.main_outputs(rs, None)
    assert empty_message(out[P.PRICE]) == P.EMPTY_MESSAGE and len(out[P.PRICE].data) == 0
    assert P.EMPTY_MESSAGE in text_of(out[P.STATUS])
    gone = {"keys": {"series": R.result_key("gone", {}, {"x": 1})}, "settings": settings(), "errors": {}}
    assert empty_message(P.main_outputs(rs, gone)[P.PRICE]) == P.EVICTED
    assert empty_message(P.realized_outputs(rs, gone, ["parkinson"])[P.REALIZED]) == P.EVICTED
    assert empty_message(P.garch_outputs(rs, {"garbage": 1}, 5)[P.GARCH]) == P.EMPTY_MESSAGE
    # a key that is not a result key is treated as gone, never looked up
    bad = {"keys": {"series": "../../etc/passwd"}, "settings": settings(), "errors": {}}
    assert empty_message(P.main_outputs(rs, bad)[P.PRICE]) == P.EVICTED


def test_renders_wait_until_the_panel_is_shown():
    view = {"keys": {"series": "result:" + "a" * 32}, "settings": {}, "errors": {}}
    sig = P.view_signature(view)
    here, url = "/" + P.PANEL, shell.LOCATION_ID
    assert not P.needs_render("/", P.VIEW, view, None)                       # hidden: no work
    assert P.needs_render(here, url, view, None)                             # opened, never drawn
    assert not P.needs_render(here, url, view, sig)                          # reopened, same fits
    assert P.needs_render(here, P.VIEW, view, sig)                           # a new fit on screen
    assert P.needs_render(here, P.ESTIMATOR_PICK, view, sig)                 # a display change
    assert P.view_signature(None) is None and not P.needs_render(here, url, None, None)


def test_bar_label():
    assert [P.bar_label(n * 10**9) for n in (900, 3600, 86400, 1.5)] == ["15 min", "1 h", "1 d", "1.5 s"]


def test_status_of_a_not_converged_fit_is_red(stores, sample_dir):
    view, _ = fit(stores, sample_dir)
    rs = stores[1]
    garch = rs.get(view["keys"]["garch"])
    import dataclasses
    report = dataclasses.replace(garch.report, converged=False, success=False, message="Iteration limit reached")
    broken = dataclasses.replace(garch, report=report)
    fits = {"series": rs.get(view["keys"]["series"]), "garch": broken, "realized": None, "markov": None,
            "merton": None}
    comp = P.status_component(fits, view)
    assert comp.to_plotly_json()["props"]["data-level"] == "danger"
    assert "NOT CONVERGED — Iteration limit reached" in text_of(comp)
    assert math.isfinite(garch.loglikelihood)
    assert V.status_summary("garch", broken)["level"] == "danger"


# --- impact over time and by regime (models/timevarying.py) ------------------------------------------


@pytest.fixture(scope="module")
def impact_view(stores, sample_dir):
    st, _ = stores
    sid = S.new_session_id()
    fills_key = st.load_bytes((sample_dir / "fills.csv").read_bytes(), name="fills.csv", session_id=sid)
    view, stages = fit(stores, sample_dir, session_id=sid, active={"key": fills_key}, impact=True)
    return view, stages, fills_key


def test_impact_fits_use_the_session_fills(stores, impact_view, truth):
    view, stages, fills_key = impact_view
    rs = stores[1]
    assert view["fills"] == fills_key and view["errors"] == {}
    assert any("the impact coefficient's path" in label and label.endswith("on the fills") for _, label in stages)
    paths = rs.get(view["keys"]["paths"])
    assert set(paths.status) == {"kalman", "sgd"} and paths.errors == {}
    kalman = paths.path[paths.path["method"] == "Kalman"]
    assert set(kalman["parameter"]) == {"Y"}
    assert (kalman["lower"] <= kalman["value"]).all() and (kalman["value"] <= kalman["upper"]).all()
    assert len(kalman) <= V.MAX_LINE_POINTS
    sgd = paths.path[paths.path["method"] == "SGD"]
    assert set(sgd["parameter"]) == {"Y", "delta"} and sgd["lower"].isna().all()
    assert paths.batch["delta"] == pytest.approx(truth["fills"]["params"]["delta"], abs=0.03)
    by = rs.get(view["keys"]["by_regime"])
    names = [c["regime"] for c in by.cost]
    assert names == ["calm", "stressed"] and sum(c["n"] for c in by.cost) == 20_000
    # the sample's impact coefficient does not depend on the regime; the cost does, through sigma
    assert by.test["wald"]["p_value"] > 0.05
    calm, stressed = by.cost
    assert stressed["mean_bps"] > calm["mean_bps"]
    y = {r["key"]["regime"]: r["value"] for r in by.coefficients["Y"]}
    assert 0.6 < y["calm"] < 1.0 and 0.6 < y["stressed"] < 1.0


def test_impact_outputs_and_status(stores, impact_view):
    view, _, _ = impact_view
    rs = stores[1]
    out = P.impact_outputs(rs, view)
    assert set(out) == set(P.IMPACT_OUTPUTS)
    assert [tr.name for tr in out[P.PATHS].data] == [None, "Y (Kalman) band", "Y (Kalman)", "Y (SGD)", "delta (SGD)"]
    assert "LR test of a constant coefficient" in text_of(out[P.PATHS_TABLE])
    assert [tr.name for tr in out[P.BY_REGIME].data] == ["regime 0 · calm", "regime 1 · stressed"]
    assert list(out[P.BY_REGIME].data[0].x) == ["Y", "delta"]
    table = text_of(out[P.BY_REGIME_TABLE])
    assert "Wald χ²" in table and "mean cost (bps)" in table and "×" in table
    statuses = dict(P.model_statuses(P._fits(rs, view), view))
    assert {"paths-kalman", "paths-sgd", "by_regime"} <= set(statuses)
    assert statuses["paths-sgd"]["badge"] == "Converged" and statuses["by_regime"]["badge"] == "Converged"


def test_impact_without_fills_is_reported_not_hidden(stores, sample_dir):
    view, _ = fit(stores, sample_dir, impact=True)        # a fresh session: no fills
    assert view["errors"] == {"paths": P.NO_FILLS, "by_regime": P.NO_FILLS} and view["keys"]["paths"] is None
    rs = stores[1]
    statuses = dict(P.model_statuses(P._fits(rs, view), view))
    assert statuses["paths-kalman"]["level"] == "danger" and statuses["by_regime"]["badge"] == "Failed"
    out = P.impact_outputs(rs, view)
    assert empty_message(out[P.PATHS]).endswith(P.NO_FILLS)
    # the volatility models are unaffected
    assert P.main_outputs(rs, view)[P.PRICE].data


def test_impact_off_says_how_to_turn_it_on(stores, sample_dir):
    view, _ = fit(stores, sample_dir)
    out = P.impact_outputs(stores[1], view)
    assert empty_message(out[P.BY_REGIME]) == P.IMPACT_OFF
    assert "paths-kalman" not in dict(P.model_statuses(P._fits(stores[1], view), view))


def test_kalman_needs_a_drifting_coefficient(sample_dir, monkeypatch):
    fills = load(str(sample_dir / "fills.csv")).frame.iloc[:3000]
    monkeypatch.setattr(P, "DRIFT_PARAMETER", {})
    paths = P.impact_paths(fills, "power_law")
    assert "Kalman filter needs a model linear in one coefficient" in paths.errors["kalman"]
    assert set(paths.path["method"]) == {"SGD"} and "sgd" in paths.status


def test_regime_coefficient_rows_intervals():
    by = P.ImpactByRegime(model="power_law", k_regimes=2, cost=[], test={}, status={},
                          coefficients={"Y": [{"key": {"regime": "stressed"}, "value": 1.0, "std_error": 0.1,
                                               "rows": 5},
                                              {"key": {"regime": "calm"}, "value": 0.8, "std_error": float("nan"),
                                               "rows": 9}]})
    rows = P.regime_coefficient_rows(by)
    assert rows[0]["regime"] == 1 and rows[0]["lower"] == pytest.approx(1.0 - 1.959964 * 0.1, rel=1e-6)
    assert rows[1]["regime"] == 0 and rows[1]["lower"] is None
