"""The Monitor panel in a real browser (Debian chromium via Playwright) against the app under
gunicorn: replay a capture at 10× with the demonstration fills (the impact coefficient doubles at a
known time), see the figures fill in incrementally, the alarm and the recalibration appear in the
events and the config history, reload the page and find the run again (the monitor kept running
server-side), diff two versions, and stop it."""
from __future__ import annotations

import gzip
import re

import pytest

from browser_utils import ARTIFACTS, browser, gunicorn_app, page  # noqa: F401  (fixtures)
from execal.components import monitor_panel as mp

pytestmark = [pytest.mark.browser, pytest.mark.shared_data]


def expect_text(locator, pattern: str, timeout: float = 120_000):
    from playwright.sync_api import expect

    expect(locator).to_have_text(re.compile(pattern), timeout=timeout)


def points(pg, graph_id: str) -> list[int]:
    """Number of points of each trace a dcc.Graph holds (plotly's own data on the element)."""
    return pg.evaluate("""id => {
        const el = document.querySelector('#' + id + ' .js-plotly-plot');
        return el && el.data ? el.data.map(t => (t.x || []).length) : null; }""", graph_id)


@pytest.fixture
def capture(shared_data, tmp_path_factory):
    """The first 20,000 messages of the USD-M capture (77 s of market, 8 s at 10×)."""
    out = tmp_path_factory.mktemp("capture") / "usdm_btcusdt_20240808.gz"
    with gzip.open(shared_data / "binance-raw" / out.name, "rb") as fh, gzip.open(out, "wb") as dst:
        for i, line in enumerate(fh):
            if i >= 20_000:
                break
            dst.write(line)
    return str(out)


def test_monitor_replay_alarm_recalibration_reattach(page, gunicorn_app, capture):
    page.goto(f"{gunicorn_app.url}/{mp.PANEL}")
    expect_text(page.locator(f"#{mp.STATUS}"), r"^No monitor running\.$")
    page.locator(f"#{mp.SOURCE_PATH}").fill(capture)
    page.locator(f"#{mp.SOURCE_PATH}").press("Enter")
    page.get_by_label("10×", exact=True).check()
    page.locator(f"#{mp.START}").click()
    expect_text(page.locator(f"#{mp.NOTE}"), r"^Started run \d{8}T\d{6}-[0-9a-f]{6} \(demo")
    expect_text(page.locator(f"#{mp.STATUS}"), r"^running · replay")
    # the figures grow tick by tick (extendData), the lag of the display is reported
    page.wait_for_function("""id => { const el = document.querySelector('#' + id + ' .js-plotly-plot');
        return el && el.data && el.data.length && el.data[0].x.length > 5; }""", arg=mp.MID, timeout=120_000)
    first = points(page, mp.MID)[0]
    page.wait_for_timeout(1500)
    assert points(page, mp.MID)[0] > first
    lags = []
    for _ in range(6):
        text = page.locator(f"#{mp.LAG}").inner_text()
        m = re.search(r"shown ([\d.]+) s after", text)
        if m:
            lags.append(float(m.group(1)))
        page.wait_for_timeout(400)
    assert lags and sorted(lags)[len(lags) // 2] <= 1.0, lags
    # the change in impact: an alarm, then a recalibration that becomes the live config
    events = page.locator(f"#{mp.EVENTS}")
    expect_text(events.locator("tr", has_text="alarm").first, r"(cusum|page_hinkley)")
    expect_text(events.locator("tr", has_text="recalibration").first, r"v2 .*→ switch")
    history = page.locator(f"#{mp.HISTORY} tbody tr")
    expect_text(history.first.locator("td").first, r"^v2$")
    expect_text(history.first.locator("td").nth(1), r"^live$")
    assert points(page, mp.COST)[3] > 50 and max(points(page, mp.EVENTS_GRAPH)) >= 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "monitor.png"), full_page=True)
    # a reload: the run is found again (the browser only kept its id), figures redrawn from its files
    n_cost = points(page, mp.COST)[3]
    page.reload()
    expect_text(page.locator(f"#{mp.HISTORY} tbody tr").first.locator("td").first, r"^v2$")
    page.wait_for_function("""([id, n]) => { const el = document.querySelector('#' + id + ' .js-plotly-plot');
        return el && el.data && el.data.length > 3 && el.data[3].x.length >= n; }""",
                           arg=[mp.COST, n_cost], timeout=60_000)
    # diff the two versions: the impact coefficient differs
    page.locator(f"#{mp.DIFF_A}").click()
    page.get_by_role("option", name=re.compile(r"^v1 ")).click()
    page.locator(f"#{mp.DIFF_B}").click()
    page.get_by_role("option", name=re.compile(r"^v2 ")).click()
    expect_text(page.locator(f"#{mp.DIFF} tr", has_text="model.params.Y").first, r"model\.params\.Y")
    # stop (or it has finished): the status says so
    if not page.locator(f"#{mp.STOP}").is_disabled():
        page.locator(f"#{mp.STOP}").click()
    expect_text(page.locator(f"#{mp.STATUS}"), r"^(finished|stopped)")
    assert page.errors == []
