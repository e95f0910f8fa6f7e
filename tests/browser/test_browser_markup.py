"""User strings are drawn as text, not markup, in a real browser (Debian chromium via Playwright, the app
under gunicorn): a fills file whose venue is `<b>x</b><a href="javascript:alert(1)">y</a>` and whose order
ids carry markup is uploaded in the Data panel and calibrated in the Calibrate panel; the Diagnostics legend
shows the venue's literal text, and plotly creates no <a> element and no bold text in the plot's SVG. A
control in the same page (plotly.js given the raw string) shows what the escaping prevents."""
from __future__ import annotations

import pandas as pd
import pytest
from ui_fixtures import SAMPLE_FILLS

from browser_utils import browser, gunicorn_app, page  # noqa: F401  (fixtures)
from browser_utils import expect_text, save_screenshot
from execal.components import calibrate_panel, data_panel
from execal.components import diagnostics_panel as D

pytestmark = pytest.mark.browser

MARKUP = '<b>x</b><a href="javascript:alert(1)">y</a>'
GRAPH = f"#{D.PRED_ACTUAL}"


def markup_fills_csv(rows: int = 4000) -> str:
    frame = pd.read_csv(SAMPLE_FILLS, nrows=rows)
    frame.loc[frame["venue"] == "okx", "venue"] = MARKUP
    frame["order_id"] = "<i>" + frame["order_id"] + '</i><span style="color:red">!</span>'
    return frame.to_csv(index=False)


def svg_report(pg, selector: str) -> dict:
    """What plotly drew inside `selector`'s SVG: legend texts, <a> elements, bold or styled text spans."""
    return pg.evaluate("""(sel) => {
        const root = document.querySelector(sel);
        const svgs = Array.from(root.querySelectorAll('svg'));
        const all = (q) => svgs.flatMap(s => Array.from(s.querySelectorAll(q)));
        return {legend: all('.legend .legendtext').map(t => t.textContent),
                anchors: all('a').length,
                styled: all('tspan[style]').map(t => t.getAttribute('style'))};
    }""", selector)


def test_a_venue_with_markup_is_drawn_as_text(page, gunicorn_app):
    page.goto(gunicorn_app.url + "/")
    page.locator(f"#{data_panel.SUMMARY} [data-field=file]").wait_for()
    page.set_input_files(f"#{data_panel.UPLOAD} input[type=file]",
                         files=[{"name": "markup_fills.csv", "mimeType": "text/csv",
                                 "buffer": markup_fills_csv().encode()}])
    expect_text(page.locator(f"#{data_panel.SUMMARY} [data-field=file]"), r"^markup_fills\.csv$", 60_000)
    page.goto(gunicorn_app.url + "/calibrate")
    page.locator(f"#{calibrate_panel.RUN}").click()
    # the job starts from the page: stay until it is done
    expect_text(page.locator(f"#{calibrate_panel.NOTE}"), r"^Calibrated", 120_000)
    page.goto(gunicorn_app.url + "/diagnostics")
    expect_text(page.locator(f"#{D._id('status-alert')}"), r"^Converged", 120_000)
    page.wait_for_function("(sel) => document.querySelectorAll(sel + ' .legend .legendtext').length >= 3", arg=GRAPH)
    drawn = svg_report(page, GRAPH)
    # the legend says the venue as the file wrote it, character for character
    assert MARKUP in drawn["legend"], drawn["legend"]
    assert drawn["anchors"] == 0 and not any("bold" in s for s in drawn["styled"]), drawn
    save_screenshot(page, "markup_legend", settle_ms=500)

    # the control: handed the raw string, plotly.js makes markup of it (bold text, a link element)
    page.evaluate("""(name) => { const d = document.createElement('div'); d.id = 'markup-control';
        document.body.appendChild(d);
        return Plotly.newPlot(d, [{x: [1], y: [1], name: name, showlegend: true}], {showlegend: true}); }""", MARKUP)
    control = svg_report(page, "#markup-control")
    assert MARKUP not in control["legend"] and control["legend"] == ["xy"], control
    assert control["anchors"] >= 1 and any("bold" in s for s in control["styled"]), control
    assert page.errors == []
