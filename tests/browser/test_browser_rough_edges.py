"""Issue 10 items 10-12 in a real browser (Debian chromium via Playwright) against the app under gunicorn:
a column mapping typed after a refused upload applies to that file, and the same file can be chosen
again; the rough edges a new user saw (clipped empty states, literal backticks, "RMSE 0.00 vp", a bar
length that is not the data's, a cut table, an empty sample picker); and Export writes the parameters on
screen, labelled fitted or hand-set. Screenshots go to test-artifacts/ (rough_edges_*.png)."""
from __future__ import annotations

import io
import json
import re

import pandas as pd
import pytest

from browser_utils import browser, fills_csv, gunicorn_app, page  # noqa: F401  (fixtures)
from browser_utils import expect_text, save_screenshot
from execal.components import calibrate_panel as cp
from execal.components import data_panel as dp
from execal.components import diagnostics_panel as D
from execal.components import export_panel as ep
from execal.components import surface_panel as sp
from execal.components import tweak_panel as T
from execal.components import vol_panel as vp

pytestmark = pytest.mark.browser

UPLOAD_INPUT = f"#{dp.UPLOAD} input[type=file]"
RENAMED = fills_csv(6).replace("timestamp,symbol,venue,side,quantity,arrival_price,exec_price",
                               "Time,Instrument,Exchange,Side,Qty,Arrival,Fill_PX")
# every annotation of a figure (an empty state's lines, subplot titles) inside the figure's own box
ANNOTATIONS_INSIDE = """(id) => {
    const svg = document.querySelector('#' + id + ' .main-svg');
    if (!svg) { return null; }
    const box = svg.getBoundingClientRect();
    const texts = Array.from(document.querySelectorAll('#' + id + ' .annotation-text'));
    if (!texts.length) { return null; }
    return texts.every(t => { const r = t.getBoundingClientRect();
        return r.left >= box.left - 0.5 && r.right <= box.right + 0.5 && r.width > 0; });
}"""


def summary_file(pg):
    return pg.locator(f"#{dp.SUMMARY} [data-field=file]")


def open_app(pg, url: str, path: str = "/") -> None:
    pg.goto(url + path)
    expect_text(summary_file(pg), r"^fills\.csv$")


def upload(pg, name: str, text: str) -> None:
    pg.set_input_files(UPLOAD_INPUT, files=[{"name": name, "mimeType": "text/csv", "buffer": text.encode()}])


def annotations_inside(pg, graph_id: str) -> None:
    pg.wait_for_function(f"(id) => ({ANNOTATIONS_INSIDE})(id) !== null", arg=graph_id, timeout=60_000)
    assert pg.evaluate(ANNOTATIONS_INSIDE, graph_id), f"an annotation of {graph_id} is cut by its figure"


def calibrate(pg) -> None:
    pg.locator(f"#nav-{cp.PANEL}").click()
    pg.locator(f"#{cp.RUN}").click()
    expect_text(pg.locator("#status-badge-calibrate"), r"^Converged$")


# --- item 10 ------------------------------------------------------------------------------------


def test_a_mapping_applies_to_the_file_just_uploaded_and_the_same_file_loads_again(page, gunicorn_app):
    open_app(page, gunicorn_app.url)
    sample_picker = page.locator(f"#{dp.SAMPLE}")
    expect_text(sample_picker, r"fills\.csv")                          # the sample on screen is named
    upload(page, "desk.csv", RENAMED)
    alert = page.locator(f"#{dp.ALERT}")
    expect_text(alert, r"^desk\.csv")
    text = alert.inner_text()
    # the refusal lists the file's own column names, and says where the mapping goes
    assert "Found columns: Time, Instrument, Exchange, Side, Qty, Arrival, Fill_PX" in text
    assert "apply to desk.csv" in text and "quantity" not in text.split("Found columns:")[1]
    expect_text(summary_file(page), r"^fills\.csv$")                   # the sample is still shown
    page.locator(f"#{dp.MAPPING}").fill("Fill_PX=exec_price")
    page.locator(f"#{dp.APPLY}").click()
    expect_text(summary_file(page), r"^desk\.csv$")                    # the mapping applied to desk.csv
    expect_text(page.locator(f"#{dp.SUMMARY} [data-field=rows]"), r"^6$")
    assert not alert.is_visible()
    expect_text(sample_picker, r"Choose a sample file")                # the picker names no sample now
    # back to the sample (the mapping box emptied: it applies to every file loaded), then the same file
    # again: it loads again (the upload box was emptied after the first time)
    page.locator(f"#{dp.MAPPING}").fill("")
    sample_picker.click()
    page.get_by_role("option", name="fills.csv", exact=True).click()
    expect_text(summary_file(page), r"^fills\.csv$")
    page.locator(f"#{dp.MAPPING}").fill("Fill_PX=exec_price")
    upload(page, "desk.csv", RENAMED)
    expect_text(summary_file(page), r"^desk\.csv$")
    assert page.evaluate(f"() => document.querySelector('{UPLOAD_INPUT}') !== null")
    save_screenshot(page, "rough_edges_data")
    assert page.errors == []


# --- item 11 ------------------------------------------------------------------------------------


def test_empty_states_tables_labels_and_messages_fit(page, gunicorn_app):
    # the Vol surface before a fit: its empty states fit their half-page cards
    open_app(page, gunicorn_app.url, f"/{sp.PANEL}")
    for graph_id in (sp.SURFACE, sp.TERM, sp.RESIDUALS):
        annotations_inside(page, graph_id)
    save_screenshot(page, "rough_edges_surface_empty")
    # a fit with no held-out rows: Diagnostics' "In- vs out-of-sample" says why in a third of the page
    calibrate(page)
    assert "`" not in page.locator(f"#{cp.STATUS}").inner_text()
    page.locator(f"#nav-{D.PANEL}").click()
    expect_text(page.locator(f"#{D.STATUS}"), r"^Converged — ftol termination")
    annotations_inside(page, D.SAMPLES)
    save_screenshot(page, "rough_edges_diagnostics")
    # the Vol surface fitted: each smile's RMSE is a real number, the subplot titles fit
    page.locator(f"#nav-{sp.PANEL}").click()
    page.locator(f"#{sp.RUN}").click()
    expect_text(page.locator(f"#{sp.STATUS} .execal-status-headline"), r"^Converged")
    page.wait_for_function("() => document.querySelectorAll('#smiles-surface .annotation-text').length >= 8")
    titles = page.locator(f"#{sp.SMILES} .annotation-text").all_text_contents()
    rmse = [t for t in titles if "RMSE" in t]
    assert len(rmse) == 8 and not any("0.00 vp" in t for t in rmse)
    assert all(re.search(r"RMSE \d(\.\d)?e-0\d vp$", t) for t in rmse), rmse   # the sample fits to ~1e-5
    save_screenshot(page, "rough_edges_surface", settle_ms=1500)             # the 3D z unit: look at it
    # Volatility on the 15-minute sample bars: the bar length names 15 min, the tables are not cut
    page.locator(f"#nav-{vp.PANEL}").click()
    expect_text(page.locator(f"#{vp.BAR}"), r"as in the data \(15 min\)", timeout=60_000)
    page.locator(f"#{vp.RUN}").click()
    table = page.locator(f"#{vp.FITS_TABLE} table")
    table.wait_for(timeout=120_000)
    assert "`" not in page.locator(f"#{vp.STATUS}").inner_text()
    for slot in (vp.FITS_TABLE, vp.PARAMS):
        cut = page.evaluate("(id) => Array.from(document.querySelectorAll('#' + id + ' .table-responsive'))"
                            ".filter(w => w.scrollWidth > w.clientWidth + 1).length", slot)
        assert cut == 0, f"a table of {slot} is wider than its card"
    save_screenshot(page, "rough_edges_volatility", settle_ms=800)
    assert page.errors == []


# --- item 12 ------------------------------------------------------------------------------------


def download(pg, link_id: str, tmp_path) -> str:
    with pg.expect_download() as info:
        pg.locator(f"#{link_id}").click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    return path.read_text()


def test_export_writes_the_parameters_on_screen(page, gunicorn_app, tmp_path):
    open_app(page, gunicorn_app.url)
    calibrate(page)
    page.locator(f"#nav-{ep.PANEL}").click()
    badge = page.locator(f"#{ep._id('parameters-badge')}")
    expect_text(badge, r"^Fitted parameters$")
    fitted = json.loads(download(page, ep.CONFIG_JSON, tmp_path))
    assert fitted["parameters"]["source"] == "fitted"
    # set delta by hand in Tweak: Export now writes those values, and says so
    page.locator(f"#nav-{T.PANEL}").click()
    box = page.locator("[data-param=delta] input.execal-tweak-box")
    box.wait_for()
    box.fill("0.61")
    box.press("Enter")
    expect_text(page.locator(f"#{T._id('delta-bias-in')}"), r"Δ bias \(in-sample\) -[\d.]+")
    page.locator(f"#nav-{ep.PANEL}").click()
    expect_text(badge, r"^Hand-set parameters$")
    expect_text(page.locator(f"#{ep.SUMMARY} [data-field=parameters]"), r"^Parameters hand-set: set by hand")
    name = page.locator(f"#{ep.CONFIG_JSON}").get_attribute("download")
    assert "_hand-set_" in name
    config = json.loads(download(page, ep.CONFIG_JSON, tmp_path))
    assert config["parameters"]["source"] == "hand-set" and config["model"]["params"]["delta"] == 0.61
    assert config["parameters"]["fitted"] == fitted["model"]["params"]
    assert {k: v for k, v in config["model"]["params"].items() if k != "delta"} == \
        {k: v for k, v in fitted["model"]["params"].items() if k != "delta"}
    predictions = pd.read_csv(io.StringIO(download(page, ep.PREDICTIONS, tmp_path)))
    assert set(predictions["parameters"]) == {"hand-set"}
    save_screenshot(page, "rough_edges_export")
    # back to the fit: Export writes the fit again
    page.locator(f"#nav-{T.PANEL}").click()
    page.locator(f"#{T.RESET}").click()
    expect_text(page.locator(f"#{T._id('delta-rmse-in')}"), r"Δ RMSE \(in-sample\) \+0 bps$")
    page.locator(f"#nav-{ep.PANEL}").click()
    expect_text(badge, r"^Fitted parameters$")
    assert json.loads(download(page, ep.CONFIG_JSON, tmp_path))["parameters"]["source"] == "fitted"
    assert page.errors == []
