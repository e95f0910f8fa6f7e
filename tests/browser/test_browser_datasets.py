"""The Datasets panel in a real browser (Debian chromium via Playwright) against gunicorn with a data root:
pick a dataset the server offers, read its manifest summary and coverage, calibrate it as a background job
(progress bar, then the result), and find the diagnostics drawn from exact aggregates plus labelled
sample points."""
from __future__ import annotations

import re

import pytest

from browser_utils import ARTIFACTS, VIEWPORT, browser, serve_gunicorn  # noqa: F401  (fixtures)
from execal.components import datasets_panel as P
from execal.models.data.sample import generate_fills_dataset

pytestmark = pytest.mark.browser


def test_pick_summarise_and_calibrate_a_dataset(browser, tmp_path):
    from playwright.sync_api import expect

    root = tmp_path / "data"
    generate_fills_dataset(root / "fills-2024", 60_000, days=10, seed=3)
    with serve_gunicorn(tmp_path, env={P.ENV_ROOTS: str(root)}) as server:
        context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
        context.set_default_timeout(30_000)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            pg.goto(f"{server.url}/{P.PANEL}")
            pg.locator(f"#{P.DATASET}").click()
            pg.get_by_text("data/fills-2024", exact=True).click()
            expect(pg.locator(f"#{P.SUMMARY}")).to_contain_text("60,000", timeout=30_000)
            expect(pg.locator(f"#{P.SUMMARY}")).to_contain_text("binance, coinbase, okx")
            pg.wait_for_function("""id => { const el = document.querySelector('#' + id + ' .js-plotly-plot');
                                    return el && el.data && el.data.length === 3; }""", arg=P.COVERAGE)
            pg.locator(f"#{P.RUN}").click()
            expect(pg.locator(f"#{P.PROGRESS_WRAP}")).to_be_visible(timeout=30_000)
            expect(pg.locator(f"#{P.RESULT} .alert")).to_contain_text(re.compile("converged"), timeout=180_000)
            expect(pg.locator(f"#{P.RESULT}")).to_contain_text("stratified sample")
            names = pg.evaluate("""id => { const el = document.querySelector('#' + id + ' .js-plotly-plot');
                                   return el.data.map(t => t.name); }""", P.RESULT)
            assert any("exact" in n for n in names) and any("stratified sample" in n for n in names)
            expect(pg.locator(f"#{P.PROGRESS_WRAP}")).to_be_hidden()
            ARTIFACTS.mkdir(exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / "datasets_panel.png"), full_page=True)
            assert not errors, errors
        finally:
            context.close()
