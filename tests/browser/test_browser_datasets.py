"""The Datasets panel in a real browser (Debian chromium via Playwright) against gunicorn with a data root:
pick a dataset the server offers, read its manifest summary and coverage, calibrate it as a background job
(progress bar, then the result), and find the diagnostics drawn from exact aggregates plus labelled
sample points."""
from __future__ import annotations

import contextlib
import re

import pytest

from browser_utils import ARTIFACTS, VIEWPORT, browser, serve_gunicorn  # noqa: F401  (fixtures)
from execal.components import datasets_panel as P
from execal.models.data.sample import generate_fills_dataset

pytestmark = pytest.mark.browser


@contextlib.contextmanager
def panel_page(browser, tmp_path, root):
    """The Datasets panel of a gunicorn server whose data root is `root`, in a fresh context; the
    page's JavaScript errors are checked when the block ends."""
    with serve_gunicorn(tmp_path, env={P.ENV_ROOTS: str(root)}) as server:
        context = browser.new_context(viewport=VIEWPORT, base_url=server.url)
        context.set_default_timeout(30_000)
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            pg.goto(f"{server.url}/{P.PANEL}")
            yield pg
            assert not errors, errors
        finally:
            context.close()


def test_pick_summarise_and_calibrate_a_dataset(browser, tmp_path):
    from playwright.sync_api import expect

    root = tmp_path / "data"
    generate_fills_dataset(root / "fills-2024", 60_000, days=10, seed=3)
    with panel_page(browser, tmp_path, root) as pg:
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


def test_a_trades_dataset_fits_volatility_on_bars_aggregated_out_of_core(browser, tmp_path):
    """A trades dataset on the server: the panel offers volatility models, a bar length and one
    symbol; the fit runs as a background job and shows its parameters, warnings and the bars."""
    from playwright.sync_api import expect

    from execal.models.data.dataset import ingest
    from execal.models.data.sample import random_walk_trades

    root = tmp_path / "data"
    files = []
    for i, day in enumerate(("2024-03-01", "2024-03-02")):
        for sym, p0 in (("BTCUSDT", 60_000.0), ("ETHUSDT", 3_000.0)):
            path = tmp_path / f"{day}-{sym}.csv"
            random_walk_trades(day, 5_000, sym, p0, seed=i).to_csv(path, index=False)
            files.append(path)
    ingest(files, root / "trades-2024", kind="trades")
    with panel_page(browser, tmp_path, root) as pg:
        pg.locator(f"#{P.DATASET}").click()
        pg.get_by_text("data/trades-2024", exact=True).click()
        expect(pg.locator(f"#{P.SUMMARY}")).to_contain_text("trades", timeout=30_000)
        expect(pg.locator(f"#{P.BAR}")).to_be_enabled()
        expect(pg.locator(f"#{P.BOOT_N}")).to_be_disabled()
        expect(pg.locator(f"#{P.MODEL}")).to_contain_text("(volatility)")
        # two symbols and none chosen: one sentence, no traceback
        pg.locator(f"#{P.RUN}").click()
        expect(pg.locator(f"#{P.ALERT}")).to_contain_text("several symbols", timeout=60_000)
        pg.locator(f"#{P.SYMBOLS}").click()
        pg.get_by_text("ETHUSDT", exact=True).last.click()
        pg.locator(f"#{P.BAR}").fill("5min")
        pg.locator(f"#{P.RUN}").click()
        expect(pg.locator(f"#{P.RESULT} .alert")).to_contain_text(re.compile("converged|CONVERGED"),
                                                                  timeout=120_000)
        expect(pg.locator(f"#{P.RESULT}")).to_contain_text("aggregated out of core")
        expect(pg.locator(f"#{P.RESULT}")).to_contain_text("576 bars of ETHUSDT")
