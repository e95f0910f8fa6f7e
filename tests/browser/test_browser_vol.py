"""The Volatility & regimes panel in a real browser (Debian chromium via Playwright) against the app under
gunicorn, as a user would: open the panel on the sample bars, run the regime fit from the keyboard, read the
status and the regime table, see every figure populated (the impact coefficient's path and the impact by regime
on the session's sample fills too), change the display without refitting, reload and
find the fits again; and upload bars with a constant price, see one clear alert, carry on with the sample, and find the last fits drawn
when the panel is opened after a page load elsewhere."""
from __future__ import annotations

import re

import pytest

from browser_utils import browser, gunicorn_app, page  # noqa: F401  (fixtures)
from browser_utils import expect_text as expect_text_within
from browser_utils import save_screenshot, unlabelled_controls
from execal.components import data_panel as dp
from execal.components import vol_panel as vp

pytestmark = pytest.mark.browser

REGIME_ROWS = f"#{vp._id('regime-rows')} tbody tr"
SAMPLE_LABEL = "sample: bars_15m.csv — known regimes"


def expect_text(locator, pattern: str, timeout: float = 60_000):
    expect_text_within(locator, pattern, timeout)      # the fits take longer than the other panels' waits


def open_panel(pg, base_url: str):
    pg.goto(f"{base_url}/{vp.PANEL}")
    # the session's sample fills load first (Data panel); the panel then offers the sample bars
    expect_text(pg.locator(f"#{dp.SUMMARY} [data-field=file]"), r"^fills\.csv$")
    expect_text(pg.locator(f"#{vp.SOURCE}"), re.escape(SAMPLE_LABEL))
    expect_text(pg.locator(f"#{vp.DATA_NOTE}"), r"^bars_15m\.csv: 23,328 bars rows")


def traces(pg, graph_id: str) -> list[str]:
    """Names of the traces a dcc.Graph drew (plotly's own data on the plot element)."""
    return pg.evaluate("""id => {
        const el = document.querySelector('#' + id + ' .js-plotly-plot');
        return el && el.data ? el.data.map(t => t.name || '') : null; }""", graph_id)


def wait_traces(pg, graph_id: str, count: int | None = None, timeout: float = 60_000):
    """Until the graph has drawn traces (exactly `count` of them when given)."""
    pg.wait_for_function("""([id, n]) => {
        const el = document.querySelector('#' + id + ' .js-plotly-plot');
        return el && el.data && (n === null ? el.data.length > 0 : el.data.length === n); }""",
                         arg=[graph_id, count], timeout=timeout)


def fit(pg):
    pg.locator(f"#{vp.RUN}").focus()
    pg.keyboard.press("Enter")
    expect_text(pg.locator(f"#{vp.NOTE}"), r"^(Fitted in [\d.]+ s\.|Shown from the cache)")


def test_regime_fit_on_the_sample_bars(page, gunicorn_app):
    open_panel(page, gunicorn_app.url)
    fit(page)
    rows = page.locator(REGIME_ROWS)
    rows.first.wait_for()
    assert rows.count() == 2
    assert rows.nth(0).locator("td").first.inner_text() == "regime 0 · calm"
    assert rows.nth(1).locator("td").first.inner_text() == "regime 1 · stressed"
    # the sample's BTCUSDT regimes: 2.5 % and 5.5 % a day
    calm = float(rows.nth(0).locator("td").nth(1).inner_text().rstrip(" %"))
    stressed = float(rows.nth(1).locator("td").nth(1).inner_text().rstrip(" %"))
    assert 2.2 < calm < 2.8 and 4.9 < stressed < 6.1
    # every model's status is on screen, none hidden
    status = page.locator(f"#{vp.STATUS}")
    for model, badge in (("realized", "Closed form"), ("garch", "Converged"), ("markov", "Converged"),
                         ("merton", "Not fitted"), ("paths-kalman", "Converged"), ("paths-sgd", "Converged"),
                         ("by_regime", "Converged")):
        expect_text(status.locator(f"li[data-model={model}] .badge"), f"^{badge}$")
    # every figure is populated
    wait_traces(page, vp.PRICE)
    names = traces(page, vp.PRICE)
    assert names[0].startswith("regime 0 · calm") and names[1].startswith("regime 1 · stressed") and "close" in names
    assert len(traces(page, vp.PROBABILITIES)) == 2
    assert traces(page, vp.REALIZED) == ["close-to-close", "Parkinson", "Garman–Klass", "Yang–Zhang"]
    assert any(n.startswith("forecast, 24 periods ahead") for n in traces(page, vp.GARCH))
    # the impact model on the session's sample fills: its coefficient over time and per regime
    wait_traces(page, vp.PATHS)
    assert {"Y (Kalman)", "Y (SGD)"} <= set(traces(page, vp.PATHS))
    assert traces(page, vp.BY_REGIME) == ["regime 0 · calm", "regime 1 · stressed"]
    expect_text(page.locator(f"#{vp.BY_REGIME_TABLE} caption"), r"^Do the regimes share the parameters\? Wald")
    # the display changes without a refit: untick an estimator
    page.get_by_label("Parkinson", exact=True).uncheck()
    wait_traces(page, vp.REALIZED, 3)
    assert "Parkinson" not in traces(page, vp.REALIZED)
    # every control of the panel has a label
    assert unlabelled_controls(page, vp.PANEL) == []
    save_screenshot(page, "volatility", settle_ms=500)
    # three regimes, then a reload brings the last fits back
    page.get_by_label("3", exact=True).check()
    fit(page)
    expect_text(page.locator(REGIME_ROWS).nth(2).locator("td").first, r"^regime 2 · stressed$")
    page.reload()
    expect_text(page.locator(REGIME_ROWS).nth(2).locator("td").first, r"^regime 2 · stressed$")
    assert page.get_by_label("3", exact=True).is_checked()
    wait_traces(page, vp.PROBABILITIES, 3)
    assert page.errors == []


def test_constant_prices_show_an_alert_and_the_sample_still_works(page, gunicorn_app):
    open_panel(page, gunicorn_app.url)
    hours = [f"2024-01-01T{h:02d}:00:00Z" for h in range(24)] + [f"2024-01-02T{h:02d}:00:00Z" for h in range(24)]
    flat = "timestamp,open,high,low,close,volume\n" + "".join(f"{t},100,100,100,100,5\n" for t in hours)
    page.locator(f"#nav-{dp.PANEL}").click()
    page.set_input_files(f"#{dp.UPLOAD} input[type=file]",
                         files=[{"name": "flat_bars.csv", "mimeType": "text/csv", "buffer": flat.encode()}])
    expect_text(page.locator(f"#{dp.SUMMARY} [data-field=file]"), r"^flat_bars\.csv$")
    page.locator(f"#nav-{vp.PANEL}").click()
    # the newly loaded bars become the panel's data
    expect_text(page.locator(f"#{vp.SOURCE}"), r"active dataset: flat_bars\.csv")
    page.locator(f"#{vp.RUN}").click()
    alert = page.locator(f"#{vp.ALERT}")
    expect_text(alert, r"^Cannot fit: flat_bars\.csv: column 'close': constant prices \(100 in all 48 bars\)")
    assert alert.get_attribute("role") == "alert" and "Traceback" not in alert.inner_text()
    # everything else keeps working: pick the sample bars and fit
    page.locator(f"#{vp.SOURCE}").click()
    page.get_by_role("option", name=SAMPLE_LABEL, exact=True).click()
    expect_text(page.locator(f"#{vp.DATA_NOTE}"), r"^bars_15m\.csv")
    fit(page)
    page.locator(REGIME_ROWS).first.wait_for()
    alert.wait_for(state="hidden")
    # a page load on another panel leaves this one undrawn until it is opened, then shows the last fits
    page.goto(f"{gunicorn_app.url}/{dp.PANEL}")
    expect_text(page.locator(f"#{dp.SUMMARY} [data-field=file]"), r"^flat_bars\.csv$")
    assert page.locator(REGIME_ROWS).count() == 0
    page.locator(f"#nav-{vp.PANEL}").click()
    expect_text(page.locator(REGIME_ROWS).first.locator("td").first, r"^regime 0 · calm$")
    assert page.errors == []
