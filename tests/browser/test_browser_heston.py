"""Heston and Bates in the Vol surface panel, in a real browser (Debian chromium via Playwright) against the app
under gunicorn: fit SVI on the bundled sample chain, tick Heston, then Bates, and read their smiles beside the
market and the fit, the parameter table (± standard errors, Feller condition) and the residuals per expiry."""
from __future__ import annotations

import re

import pytest

from browser_utils import ARTIFACTS, browser, gunicorn_app, page  # noqa: F401  (fixtures)
from execal.components import surface_panel as sp

pytestmark = pytest.mark.browser

STATUS = f"#{sp.STATUS} .execal-status"
PRICING_ROWS = f"#{sp._id('pricing-table')} tbody tr"


def expect_text(locator, pattern: str, timeout: float = 60_000):
    from playwright.sync_api import expect

    expect(locator).to_have_text(re.compile(pattern), timeout=timeout)


def wait_count(pg, selector: str, n: int, timeout: float = 60_000):
    # a function, not an expression string: the page's CSP forbids eval, which an expression would need
    pg.wait_for_function("([sel, n]) => document.querySelectorAll(sel).length === n", arg=[selector, n],
                         timeout=timeout)


def test_heston_and_bates_beside_the_svi_fit(page, gunicorn_app):
    page.goto(f"{gunicorn_app.url}/{sp.PANEL}")
    expect_text(page.locator(f"#{sp.DATA_NOTE}"), r"^options_chain\.csv: 572 quotes on BTC$")
    # the pricing models are offered beside the smile models, unticked
    heston = page.get_by_label("Heston (stochastic volatility)")
    bates = page.get_by_label("Bates (Heston + log-normal jumps)")
    assert not heston.is_checked() and not bates.is_checked()
    assert page.locator(f"#{sp.MODEL} input").count() == 2          # SVI and SSVI only
    page.locator(f"#{sp.RUN}").focus()
    page.keyboard.press("Enter")
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^Converged — all 8 fitted expiries$")
    expect_text(page.locator(f"#{sp.PRICING_TABLE}"), r"No pricing model calibrated")
    wait_count(page, f"#{sp.SMILES} .scatterlayer .js-line", 8)

    # Heston: calibrated at once (a control changed while a surface is shown), one dashed line per smile
    heston.check()
    expect_text(page.locator(f"#{sp.NOTE}"), r"Heston calibrated in [\d.,]+ s\.")
    wait_count(page, PRICING_ROWS, 1)
    row = page.locator(PRICING_ROWS).first
    assert row.locator("td[data-field=model]").inner_text() == "Heston (stochastic volatility)"
    assert row.locator("td[data-field=converged]").inner_text() == "yes"
    assert re.fullmatch(r"-?[\d.]+ ± [\d.e-]+", row.locator("td[data-field=rho]").inner_text())
    assert row.locator("td[data-field='Feller 2κθ/σ²']").inner_text().endswith("(violated)")
    wait_count(page, f"#{sp.SMILES} .scatterlayer .js-line", 16)
    # residuals per expiry: RMSE lines of the fit and Heston, Heston's residuals for the 8 expiries
    wait_count(page, f"#{sp.PRICING_FIGURE} .scatterlayer .trace", 10)

    # Bates too
    bates.check()
    expect_text(page.locator(f"#{sp.NOTE}"), r"Heston, Bates calibrated in [\d.,]+ s\.", timeout=120_000)
    wait_count(page, PRICING_ROWS, 2, timeout=120_000)
    assert page.locator(PRICING_ROWS).nth(1).locator("td[data-field=lambda]").inner_text() != "—"
    wait_count(page, f"#{sp.SMILES} .scatterlayer .js-line", 24)
    wait_count(page, f"#{sp.PRICING_FIGURE} .scatterlayer .trace", 19)
    unlabelled = page.evaluate("""() => Array.from(document.querySelectorAll(
        '#panel-surface input[id], #panel-surface select[id]'))
        .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length)).map(el => el.id)""")
    assert unlabelled == []
    page.wait_for_timeout(300)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "surface_heston.png"), full_page=True)

    # a reload brings the fit and both calibrations back from the server's cache
    page.reload()
    expect_text(page.locator(f"#{sp.NOTE}"), r"^Shown from the cache")
    wait_count(page, PRICING_ROWS, 2)
    assert page.errors == []
