"""The Correlation panel in a real browser (Debian chromium via Playwright) against the app under gunicorn, as a
user would: open the panel on the bundled tick samples, compute Hayashi–Yoshida from the keyboard and read the
heatmap, the Epps curve and the lead–lag scan; switch to DCC-GARCH with calm/stressed regimes on the bundled
bars and read the correlation path and the regime matrices; reload and find the result again."""
from __future__ import annotations

import re

import pytest

from browser_utils import browser, gunicorn_app, page  # noqa: F401  (fixtures)
from browser_utils import expect_text, save_screenshot, unlabelled_controls
from execal.components import corr_panel as cp

pytestmark = pytest.mark.browser

STATUS = f"#{cp.STATUS} .execal-status"


def test_hy_then_dcc_with_regimes_and_reload(page, gunicorn_app):
    page.goto(f"{gunicorn_app.url}/{cp.PANEL}")
    # the tick samples are picked by default; nothing is computed before the user asks
    expect_text(page.locator(f"#{cp.SOURCES}"), r"BTCUSDT trades \(sample\).*BTCUSDT quotes \(sample\)")
    expect_text(page.locator(STATUS), re.escape(cp.CF.NO_RESULT))
    # compute from the keyboard
    page.locator(f"#{cp.RUN}").focus()
    page.keyboard.press("Enter")
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^Hayashi–Yoshida: done", 60_000)
    # HY on this sample leaves [-1, 1] (stale tick prices): the status says why instead of a silent number
    assert page.locator(f"#{cp._id('status-alert')}").get_attribute("data-level") == "warning"
    assert "positively autocorrelated" in page.locator(STATUS).inner_text()
    expect_text(page.locator(f"#{cp.NOTE}"), r"^(Computed in [\d,]+ ms|Shown from the cache.*)\.$")
    # the heatmap, the Epps curve (a line and the dashed HY level) and the lead–lag scan are drawn
    page.wait_for_function(f"document.querySelectorAll('#{cp.HEATMAP} .heatmaplayer .hm').length >= 1")
    assert page.locator(f"#{cp.EPPS} .scatterlayer .trace").count() == 2
    assert page.locator(f"#{cp.LEAD_LAG} .scatterlayer .trace").count() == 3
    rows = page.locator(f"#{cp._id('lead-lag-rows')} tbody tr")
    assert rows.count() == 1
    assert page.locator(f"#{cp._id('lead-lag-rows')} tbody td[data-field=significant]").inner_text() in ("yes", "no")
    assert page.locator(f"#{cp._id('params-table')} tbody tr").count() == 1
    # every control of the panel has a label
    assert unlabelled_controls(page, cp.PANEL) == []

    # DCC-GARCH: the sources swap to the bundled bars; calm vs stressed on
    page.get_by_label("DCC-GARCH (returns)").check()
    expect_text(page.locator(f"#{cp.SOURCES}"), r"BTC, ETH, SOL 15-min bars \(sample\)")
    page.get_by_label("calm vs stressed correlation (Markov regimes of the first asset)").check()
    page.locator(f"#{cp.RUN}").click()
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^DCC-GARCH: ", 60_000)
    page.wait_for_function(f"document.querySelectorAll('#{cp.DCC_PATH} .legend .traces').length === 3")
    page.wait_for_function(f"document.querySelectorAll('#{cp.REGIME_FIG} .annotation-text').length >= 2")
    titles = page.locator(f"#{cp.REGIME_FIG} .annotation-text").all_text_contents()
    assert any(t.startswith("calm (") for t in titles) and any(t.startswith("stressed (") for t in titles)
    assert page.locator(f"#{cp._id('regime-rows')} tbody tr").count() == 3
    assert page.locator(f"#{cp._id('params-table')} tbody tr").count() == 2 + 3 * 4
    save_screenshot(page, "corr")

    # a reload brings the session's result back from the server's cache
    page.reload()
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^DCC-GARCH: ", 60_000)
    expect_text(page.locator(f"#{cp.NOTE}"), r"^Shown from the cache")
    assert page.errors == []
