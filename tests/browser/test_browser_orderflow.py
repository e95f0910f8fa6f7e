"""The Order flow panel in a real browser (Debian chromium via Playwright) against the app under gunicorn, as
a user would: analyse the bundled synthetic venue from the keyboard, read the table and the figures, download
the JSON and validate it, reload and find the analysis again; then upload the four real Binance captures
(USD-M BTC and ETH, spot, COIN-M) at once and compare the venues side by side."""
from __future__ import annotations

import json
import re

import pytest

from browser_utils import browser, gunicorn_app, page  # noqa: F401  (fixtures)
from browser_utils import expect_text, save_screenshot, unlabelled_controls
from execal.components import orderflow_panel as op

pytestmark = pytest.mark.browser

STATUS = f"#{op.STATUS} .execal-status"
CAPTURES = ("usdm_btcusdt_20240808.gz", "usdm_ethusdt_20240808.gz", "spot_btcusdt_20240808.gz",
            "cm_btcusd_perp_20240808.gz")


def table_rows(pg):
    return pg.locator(f"#{op._id('venues-table')} tbody tr")


def legend_entries(pg, graph_id: str) -> int:
    return pg.locator(f"#{graph_id} .legend .traces").count()


def test_analyse_the_synthetic_venue_download_and_reload(page, gunicorn_app, tmp_path):
    page.goto(f"{gunicorn_app.url}/{op.PANEL}")
    sample = page.get_by_label(op.SAMPLE_LABEL)
    from playwright.sync_api import expect
    expect(sample).to_be_checked(timeout=30_000)
    expect_text(page.locator(STATUS), re.escape(op.OF.NO_REPORT))
    assert page.locator(f"#{op.DOWNLOAD_BUTTON}").is_disabled()
    page.locator(f"#{op.RUN}").focus()
    page.keyboard.press("Enter")
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^Converged — 1 venue, every model fitted$", 120_000)
    assert page.locator(f"#{op._id('status-alert')}").get_attribute("data-level") == "success"
    expect_text(page.locator(f"#{op.NOTE}"), r"^(Analysed 1 venue\(s\) in [\d.,]+ s|Shown from the cache .*)\.$")
    rows = table_rows(page)
    assert rows.count() == 1
    assert rows.first.get_attribute("data-row") == "simulated SYNTH"
    cells = {f: page.locator(f"#{op._id('venues-table')} td[data-field='{f}']").inner_text()
             for f in ("R² 1s", "R² 10s", "R² 60s", "sign memory γ", "kernel β", "depth t½ (s)")}
    for field, text in cells.items():
        assert re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", text), (field, text)
    expect_text(page.locator(f"#{op._id('paper-note')}"), r"0\.65")
    # every figure is drawn, one legend entry per venue
    for graph in (op.OFI, op.DEPTH, op.SIGNS, op.PROPAGATOR, op.RESILIENCE):
        page.wait_for_function(f"document.querySelectorAll('#{graph} .legend .traces').length >= 1")
        assert legend_entries(page, graph) == 1, graph
    assert page.locator(f"#{op.OFI} .subplot").count() >= 3               # one panel per window
    assert page.locator(f"#{op.SIGNS} .xaxislayer-above .xtick").count() > 0
    # every control of the panel has a label
    assert unlabelled_controls(page, op.PANEL) == []
    # download the JSON: what `execal orderflow` writes
    with page.expect_download() as info:
        page.locator(f"#{op.DOWNLOAD_BUTTON}").click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    doc = json.loads(path.read_text())
    assert path.name == "orderflow.json" and doc["kind"] == "orderflow"
    assert doc["table"][0]["venue"] == "simulated" and doc["sources"] == [op.SAMPLE]
    assert set(doc["venues"][0]["results"]) == {"ofi", "kyle", "propagator", "resilience"}
    # a reload brings the analysis back from the server's cache
    page.reload()
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"^Converged — 1 venue", 60_000)
    expect_text(page.locator(f"#{op.NOTE}"), r"^Shown from the cache")
    assert table_rows(page).count() == 1
    assert page.errors == []


@pytest.mark.shared_data
def test_upload_four_real_captures_and_compare_the_venues(page, gunicorn_app, shared_data):
    page.goto(f"{gunicorn_app.url}/{op.PANEL}")
    from playwright.sync_api import expect
    expect(page.get_by_label(op.SAMPLE_LABEL)).to_be_checked(timeout=30_000)
    files = [{"name": c, "mimeType": "application/gzip", "buffer": (shared_data / "binance-raw" / c).read_bytes()}
             for c in CAPTURES]
    page.set_input_files(f"#{op.UPLOAD} input[type=file]", files=files)
    expect_text(page.locator(f"#{op.UPLOAD_NOTE}"), r"Kept 4 capture\(s\)", 120_000)
    for c in CAPTURES:
        # the order-flow checklist's own box (the Monitor panel lists the same capture in its picker)
        expect(page.get_by_role("checkbox", name=re.compile(re.escape(c)))).to_be_checked()
    expect(page.get_by_label(op.SAMPLE_LABEL)).not_to_be_checked()
    page.locator(f"#{op.RUN}").click()
    expect_text(page.locator(f"{STATUS} .execal-status-headline"), r"4 venues", 180_000)
    rows = table_rows(page)
    assert rows.count() == 4
    assert sorted(r.get_attribute("data-row") for r in rows.all()) == [
        "binance-coinm BTCUSD_PERP", "binance-spot BTCUSDT", "binance-usdm BTCUSDT", "binance-usdm ETHUSDT"]
    r2 = [float(t) for t in page.locator(f"#{op._id('venues-table')} td[data-field='R² 10s']").all_inner_texts()]
    assert all(0.3 < v < 0.8 for v in r2), r2
    for graph in (op.OFI, op.DEPTH, op.SIGNS, op.PROPAGATOR, op.RESILIENCE):
        page.wait_for_function(f"document.querySelectorAll('#{graph} .legend .traces').length >= 4")
    # the status lists the warnings (6 minutes make only five 60 s windows), folded
    expect_text(page.locator(f"#{op._id('warnings')} summary"), r"\d+ warning\(s\)")
    assert page.locator(f"#{op._id('evaporation-table')} tbody tr").count() > 0
    save_screenshot(page, "orderflow")
    assert page.errors == []
