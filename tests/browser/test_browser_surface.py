"""The Vol surface panel in a real browser (Debian chromium via Playwright) against the app under gunicorn, as
a user would: open the panel on the bundled sample chain, fit SVI from the keyboard, read the smiles, the
parameter and arbitrage tables, switch to SSVI, download the surface config and validate it, reload and find
the surface again; then upload the real 7-row Deribit chain (two underlyings, too few strikes for raw SVI) and
see every slice's status instead of a silent blank."""
from __future__ import annotations

import hashlib
import json
import re

import pytest

from browser_utils import ROOT, browser, gunicorn_app, page  # noqa: F401  (fixtures)
from browser_utils import expect_text, save_screenshot, unlabelled_controls
from execal.components import data_panel as dp
from execal.components import surface_panel as sp

pytestmark = pytest.mark.browser

STATUS = f"#{sp.STATUS} .execal-status"
SVI_KEYS = {"a", "b", "rho", "m", "sigma"}


def open_surface(pg, base_url: str):
    pg.goto(f"{base_url}/{sp.PANEL}")
    # the chain picker offers the bundled sample (the Data panel preloads fills, which are no chain)
    expect_text(pg.locator(f"#{sp.SOURCE}"), r"sample: options_chain\.csv")
    expect_text(pg.locator(f"#{sp.DATA_NOTE}"), r"^options_chain\.csv: 572 quotes on BTC$")


def smile_panels(pg) -> int:
    return pg.locator(f"#{sp.SMILES} .cartesianlayer .subplot").count()


def table_rows(pg, table_id: str):
    return pg.locator(f"#{table_id} tbody tr")


def test_fit_svi_then_ssvi_download_and_reload(page, gunicorn_app, tmp_path):
    open_surface(page, gunicorn_app.url)
    # designed empty states before any fit
    expect_text(page.locator(STATUS), re.escape(sp.EMPTY_MESSAGE))
    assert page.locator(f"#{sp.DOWNLOAD_BUTTON}").is_disabled()
    # fit from the keyboard
    page.locator(f"#{sp.RUN}").focus()
    page.keyboard.press("Enter")
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^Converged — all 8 fitted expiries$")
    assert page.locator(f"#{sp._id('status-alert')}").get_attribute("data-level") == "success"
    # (the server is shared by every browser-test module: another test may have fitted the sample already)
    expect_text(page.locator(f"#{sp.NOTE}"), r"^(Fitted in [\d,]+ ms|Shown from the cache \(same chain, filters "
                                             r"and settings\))\.$")
    assert "Raw SVI" in page.locator(STATUS).inner_text()
    # smiles: one panel per expiry, each with mid markers (bid/ask bars) and the fitted line
    page.wait_for_function(f"document.querySelectorAll('#{sp.SMILES} .cartesianlayer .subplot').length === 8")
    assert smile_panels(page) == 8
    assert page.locator(f"#{sp.SMILES} .scatterlayer .points path").count() == 286
    assert page.locator(f"#{sp.SMILES} .scatterlayer .js-line").count() == 8
    assert page.locator(f"#{sp.SMILES} .errorbar").count() == 286
    # parameter table per expiry with a, b, rho, m, sigma and RMSE in vol points
    params = table_rows(page, sp._id("params-table"))
    assert params.count() == 8
    headers = page.locator(f"#{sp._id('params-table')} thead th").all_inner_texts()
    assert {"a", "b", "rho", "m", "sigma", "RMSE (vol pts)"} <= set(headers)
    # the arbitrage report: free of butterfly and calendar arbitrage on the grid
    assert page.locator(f"#{sp._id('arbitrage-verdict')}").get_attribute("data-level") == "success"
    bf = table_rows(page, sp._id("butterfly-table"))
    assert bf.count() == 8
    assert set(page.locator(f"#{sp._id('butterfly-table')} tbody td[data-field=butterfly]").all_inner_texts()) == {"ok"}
    expect_text(page.locator(f"#{sp._id('calendar-none')}"), r"never falls")
    # every expiry's optimizer status is shown
    assert set(page.locator(f"#{sp._id('slices-table')} tbody td[data-field=converged]").all_inner_texts()) == {"yes"}
    # the other figures are drawn
    assert page.locator(f"#{sp.SURFACE} .gl-container, #{sp.SURFACE} canvas").count() >= 1
    assert page.locator(f"#{sp.TERM} .scatterlayer .trace").count() == 4
    assert page.locator(f"#{sp.RESIDUALS} .scatterlayer .trace").count() == 8
    # every control of the panel has a label
    assert unlabelled_controls(page, sp.PANEL) == []

    # switch to SSVI: the surface is refitted at once
    page.get_by_label("SSVI surface (power-law phi)").check()
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^Converged — SSVI surface over 8 of 8 expiries")
    ssvi_rows = table_rows(page, sp._id("ssvi-table"))
    assert ssvi_rows.count() == 3
    assert "theta" in page.locator(f"#{sp._id('params-table')} thead th").all_inner_texts()
    assert table_rows(page, sp._id("conditions-table")).count() == 6
    save_screenshot(page, "surface")

    # download the surface config and validate it
    with page.expect_download() as info:
        page.locator(f"#{sp.DOWNLOAD_BUTTON}").click()
    download = info.value
    assert re.fullmatch(r"surface_ssvi_BTC_20241031T0000\.json", download.suggested_filename)
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    config = json.loads(path.read_text())
    assert config["kind"] == "surface" and config["schema_version"] == 1
    assert config["model"]["name"] == "ssvi"
    assert set(config["model"]["global_params"]) == {"rho", "eta", "gamma"}
    expiries = config["model"]["expiries"]
    assert len(expiries) == 8
    by_expiry = config["metrics"]["by_expiry"]
    for e in expiries:
        assert set(e["params"]) == SVI_KEYS and all(isinstance(v, float) for v in e["params"].values())
        assert e["theta"] > 0
        assert 0 <= by_expiry[e["expiry"]]["rmse_vol_pts"] < 0.01     # vol points, on exact SSVI data
    sample = (ROOT / "sample_data" / "options_chain.csv").read_bytes()
    assert config["data"]["sha256"] == hashlib.sha256(sample).hexdigest()
    assert config["data"]["file"] == "options_chain.csv" and config["data"]["underlying"] == "BTC"
    assert config["arbitrage"]["free_of_static_arbitrage_on_grid"] is True

    # a reload brings the session's surface back (from the server's cache)
    page.reload()
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^Converged — SSVI surface over 8 of 8 expiries")
    expect_text(page.locator(f"#{sp.NOTE}"), r"^Shown from the cache")
    assert page.locator(f"#{sp.MODEL} input[value=ssvi]").is_checked()
    page.wait_for_function(f"document.querySelectorAll('#{sp.SMILES} .cartesianlayer .subplot').length === 8")
    assert page.errors == []


def test_real_deribit_chain_shows_each_slice_status(page, gunicorn_app, shared_data):
    path = shared_data / "tardis" / "format-examples" / "deribit_options_chain.csv"
    page.goto(f"{gunicorn_app.url}/{dp.PANEL}")
    expect_text(page.locator(f"#{dp.SUMMARY} [data-field=file]"), r"^fills\.csv$")
    page.set_input_files(f"#{dp.UPLOAD} input[type=file]",
                         files=[{"name": path.name, "mimeType": "text/csv", "buffer": path.read_bytes()}])
    expect_text(page.locator(f"#{dp.SUMMARY} [data-field=file]"), r"^deribit_options_chain\.csv$")
    page.locator(f"#nav-{sp.PANEL}").click()
    # the newly active chain becomes the panel's data; it holds two underlyings
    expect_text(page.locator(f"#{sp.SOURCE}"), r"active dataset: deribit_options_chain\.csv")
    expect_text(page.locator(f"#{sp.DATA_NOTE}"), r"7 quotes on BTC, ETH \(one underlying is fitted at a time\)")
    page.locator(f"#{sp.RUN}").click()
    # raw SVI needs 5 strikes: nothing fitted, said in red, every slice listed with why
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^No expiry fitted \(2 skipped\)$")
    assert page.locator(f"#{sp._id('status-alert')}").get_attribute("data-level") == "danger"
    assert "raw SVI needs at least 5" in page.locator(STATUS).inner_text()
    statuses = page.locator(f"#{sp._id('slices-table')} tbody td[data-field=status]").all_inner_texts()
    assert statuses == ["skipped", "skipped"]
    expect_text(page.locator(f"#{sp.SURFACE} .annotation-text"), r"No expiry could be fitted")
    # SSVI fits the two expiries, and says eta and gamma are not identified from two
    page.get_by_label("SSVI surface (power-law phi)").check()
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^Converged — SSVI surface over 2 of 2 expiries")
    assert "not separately identified" in page.locator(STATUS).inner_text()
    assert page.errors == []
