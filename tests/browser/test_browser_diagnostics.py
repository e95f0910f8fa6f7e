"""Diagnostics and Tweak in a real browser (Debian chromium via Playwright) against the app under gunicorn.

A result is seeded the way the Calibrate panel leaves one: put in the server's ResultStore (the gunicorn
fixture's private cache directory) and made the browser session's active result; the page then restores
it. One test also runs a calibration through the Calibrate panel itself.
"""
from __future__ import annotations

import re

import diskcache
import pytest

from browser_utils import browser, gunicorn_app, page  # noqa: F401  (fixtures)
from browser_utils import expect_text, save_screenshot, session_of
from execal.components import calibrate_panel, data_panel
from execal.components import diagnostics_panel as D
from execal.components import results as R
from execal.components import store as store_mod
from execal.components import tweak_panel as T

pytestmark = pytest.mark.browser

DIAGNOSTIC_GRAPHS = (D.PRED_ACTUAL, D.COST_PARTICIPATION, D.RESID_FITTED, D.RESID_TIME, D.RESID_PARTICIPATION,
                     D.HISTOGRAM, D.QQ, D.SAMPLES)


def open_app(pg, base_url: str) -> str:
    """Load the app (the sample fills become the session's dataset); returns the page."""
    pg.goto(base_url + "/")
    pg.locator(f"#{data_panel.SUMMARY} [data-field=file]").wait_for()
    return pg


def seed(server, pg, result, sample, label: str = "seed") -> str:
    """Store `result` in the server's ResultStore and make it the active result of the page's session."""
    session_id = session_of(pg, server)
    secret = store_mod.server_secret(server.cache_dir)
    dataset = store_mod.dataset_key(sample.sha256, sample.kind, secret=secret, name=sample.source)
    run = {"calibrator": dict(getattr(result, "pooled", result).settings), "segments": [], "bootstrap": None,
           "label": label}
    key = R.result_key(dataset, {}, run, secret=secret)
    with diskcache.Cache(str(server.cache_dir)) as cache:
        results = R.ResultStore(cache)
        results.put(key, result, meta={"origin": "fit", "dataset": dataset, "filters": {}, "settings": run,
                                       "source": "fills.csv", "rows": int(len(sample.frame))})
        results.set_active(session_id, key)
    return key


GRAPH_JS = "document.querySelector('#' + id + ' .js-plotly-plot')"


def trace_count(pg, graph_id: str) -> int:
    return pg.evaluate(f"(id) => {{ const g = {GRAPH_JS}; return g && g.data ? g.data.length : -1; }}", graph_id)


def wait_for_traces(pg, graph_id: str, timeout: float = 30_000) -> None:
    pg.wait_for_function(f"(id) => {{ const g = {GRAPH_JS}; return !!(g && g.data && g.data.length > 0); }}",
                         arg=graph_id, timeout=timeout)


def graph_x(pg, graph_id: str, trace: int = 0) -> list[float]:
    """The x values plotly.js draws for a trace (its typed arrays decoded), first 50."""
    return pg.evaluate(f"([id, i]) => {{ const g = {GRAPH_JS}; return Array.from(g._fullData[i].x).slice(0, 50); }}",
                       [graph_id, trace])


def box_value(pg, param: str) -> float:
    return float(pg.locator(f"[data-param={param}] input.execal-tweak-box").input_value())


def badge(pg, name: str):
    return pg.locator(f"#{T._id(name)}")


def slider_thumb(pg, param: str):
    return pg.locator(f"[data-param={param}] [role=slider]").first


def box(pg, param: str):
    return pg.locator(f"[data-param={param}] input.execal-tweak-box")


def test_diagnostics_populated_after_a_calibration(page, gunicorn_app, fitted, sample):
    open_app(page, gunicorn_app.url)
    seed(gunicorn_app, page, fitted, sample)
    page.goto(gunicorn_app.url + "/diagnostics")
    status = page.locator(f"#{D._id('status-alert')}")
    expect_text(status, r"^Converged")
    assert status.get_attribute("data-level") == "success"
    for graph_id in DIAGNOSTIC_GRAPHS:
        wait_for_traces(page, graph_id)
    # predicted vs actual: one trace per venue + the 45° line, WebGL for 20,000 points
    assert trace_count(page, D.PRED_ACTUAL) == 4
    assert page.locator(f"#{D.PRED_ACTUAL} canvas").count() > 0
    expect_text(page.locator(f"#{D._id('params-table')}"), r"delta")
    assert f"{fitted.params['Y']:.6g}" in page.locator(f"#{D._id('params-table')}").inner_text()
    assert f"{fitted.out_of_sample['rmse_bps']:.4g}" in page.locator(f"#{D._id('metrics-table')}").inner_text()
    # no segments in this fit: the segment card says why it is empty
    assert "No segments" in page.locator(f"#{D.SEGMENTS}").inner_text()
    save_screenshot(page, "diagnostics", settle_ms=800)   # let WebGL finish drawing
    # a reload keeps the session's result
    page.reload()
    page.goto(gunicorn_app.url + "/diagnostics")
    expect_text(page.locator(f"#{D._id('status-alert')}"), r"^Converged")
    wait_for_traces(page, D.QQ)
    assert page.errors == []


def test_tweak_slider_box_reset_and_refit(page, gunicorn_app, fitted, sample):
    open_app(page, gunicorn_app.url)
    seed(gunicorn_app, page, fitted, sample, label="tweak")
    page.goto(gunicorn_app.url + "/tweak")
    rmse = badge(page, "delta-rmse-in")
    expect_text(rmse, r"Δ RMSE \(in-sample\) \+0 bps$")
    wait_for_traces(page, T.PRED_ACTUAL)
    wait_for_traces(page, T.CURVE)
    x_before = graph_x(page, T.PRED_ACTUAL)
    assert len(x_before) == 50
    # keyboard: focus the Y handle and press ArrowRight
    thumb = slider_thumb(page, "Y")
    thumb.focus()
    value_before = float(thumb.get_attribute("aria-valuenow"))
    for _ in range(5):
        page.keyboard.press("ArrowRight")
    expect_text(rmse, r"Δ RMSE \(in-sample\) [+-](?!0 bps)[\d.e+-]+ bps$")
    assert float(thumb.get_attribute("aria-valuenow")) > value_before
    expect_text(badge(page, "delta-bias-in"), r"Δ bias \(in-sample\) \+[\d.]+")   # more impact: over-predicts
    # the box follows the slider, and predicted vs actual moved (patched x values)
    page.wait_for_function("(v) => parseFloat(document.querySelector('[data-param=Y] input.execal-tweak-box').value) > v",
                           arg=value_before)
    page.wait_for_function(f"([id, x0]) => {{ const g = {GRAPH_JS}; return Math.abs(g._fullData[0].x[0] - x0) > 1e-6; }}",
                           arg=[T.PRED_ACTUAL, x_before[0]])
    table = page.locator(f"#{T._id('metrics-table')}")
    assert "RMSE" in table.inner_text()
    # type in the number box: delta = 0.6, Enter
    bias_before = badge(page, "delta-bias-in").inner_text()
    delta_box = box(page, "delta")
    delta_box.fill("0.6")
    delta_box.press("Enter")
    # the slider moved to the typed value (or to its end, if the value is beyond its range)
    page.wait_for_function("() => { const t = document.querySelector('[data-param=delta] [role=slider]');"
                           " const v = parseFloat(t.getAttribute('aria-valuenow'));"
                           " return Math.abs(v - 0.6) < 0.02 || v >= parseFloat(t.getAttribute('aria-valuemax')); }")
    # a larger exponent on Q/V < 1 lowers every predicted cost: the bias turns negative
    expect_text(badge(page, "delta-bias-in"), r"Δ bias \(in-sample\) -[\d.]+")
    assert badge(page, "delta-bias-in").inner_text() != bias_before
    save_screenshot(page, "tweak", settle_ms=600)
    # reset to fitted
    page.locator(f"#{T.RESET}").click()
    expect_text(rmse, r"Δ RMSE \(in-sample\) \+0 bps$")
    page.wait_for_function("(y) => Math.abs(parseFloat(document.querySelector('[data-param=Y] input.execal-tweak-box')"
                           ".value) - y) < 1e-9", arg=fitted.params["Y"])
    # refit from here with Y fixed at a hand-set value: the new fit becomes the active result
    y_box = box(page, "Y")
    y_box.fill("0.9")
    y_box.press("Enter")
    expect_text(rmse, r"Δ RMSE \(in-sample\) [+-](?!0 bps)")
    page.locator("[data-param=Y] input[type=checkbox]").check()
    page.locator(f"#{T.REFIT}").click()
    expect_text(page.locator(f"#{T.REFIT_ALERT}"), r"Refitted with h, Y fixed: converged")
    # the controls restart from the new fit: Y = 0.9 exactly, and the change against it is zero
    page.wait_for_function("() => parseFloat(document.querySelector('[data-param=Y] input.execal-tweak-box').value)"
                           " === 0.9")
    expect_text(rmse, r"Δ RMSE \(in-sample\) \+0 bps$")
    page.goto(gunicorn_app.url + "/diagnostics")
    expect_text(page.locator(f"#{D._id('params-table')} tr[data-row=Y]"), r"^Y\s*0\.9\s*×.*fixed$")
    assert page.errors == []


def test_calibrate_panel_run_populates_diagnostics(page, gunicorn_app):
    open_app(page, gunicorn_app.url)
    page.goto(gunicorn_app.url + "/calibrate")
    run = page.locator(f"#{calibrate_panel.RUN}")
    run.wait_for()
    run.click()
    # the fit is this page's background job: leaving before it reports would drop its result on the floor
    expect_text(page.locator("#status-badge-calibrate"), r"Converged", timeout=120_000)
    page.goto(gunicorn_app.url + "/diagnostics")
    expect_text(page.locator(f"#{D._id('status-alert')}"), r"^Converged", timeout=90_000)
    for graph_id in (D.PRED_ACTUAL, D.COST_PARTICIPATION, D.HISTOGRAM):
        wait_for_traces(page, graph_id)
    assert page.errors == []


def test_empty_states_before_any_result(page, gunicorn_app):
    open_app(page, gunicorn_app.url)
    page.goto(gunicorn_app.url + "/diagnostics")
    expect_text(page.locator(f"#{D.STATUS}"), re.escape(D.NO_RESULT))
    # the blank figures say why they are blank
    for graph_id in (D.PRED_ACTUAL, D.QQ):
        page.wait_for_function(f"([id, msg]) => {{ const g = {GRAPH_JS}; return !!(g && g.layout && g.layout.annotations"
                               " && g.layout.annotations[0].text.replaceAll('<br>', ' ') === msg"
                               " && g.data.length === 0); }", arg=[graph_id, D.NO_RESULT])
    page.goto(gunicorn_app.url + "/tweak")
    expect_text(page.locator(f"#{T.CONTROLS}"), re.escape(T.NO_RESULT))
    assert page.errors == []

