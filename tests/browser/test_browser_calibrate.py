"""The Calibrate and Export panels in a real browser (Debian chromium via Playwright) against the app under
gunicorn, as a user would: load the sample, calibrate, read the status and parameters, export the config and
import it back, cancel a slow fit, and upload a broken file while a result is on screen."""
from __future__ import annotations

import re
import time
from pathlib import Path

import psutil
import pytest

from browser_utils import ARTIFACTS, browser, gunicorn_app, page  # noqa: F401  (fixtures)
from browser_utils import css_id, expect_text, live, save_screenshot, unlabelled_controls
from execal.components import calibrate_panel as cp
from execal.components import data_panel as dp
from execal.components import export_panel as ep
from execal.models.impact.config import load_config

pytestmark = pytest.mark.browser

STATUS_BADGE = "#status-badge-calibrate"
RESULT_PARAMS = "#param-results-calibrate"


def open_panel(pg, base_url: str, panel: str = "calibrate"):
    pg.goto(f"{base_url}/{panel}")
    # the session callback loads the sample fills (the Data panel's summary shows the file)
    pg.locator(f"#{dp.SUMMARY} [data-field=file]").wait_for(state="attached")
    expect_text(pg.locator(f"#{dp.SUMMARY} [data-field=file]"), r"^fills\.csv$")


def calibrate(pg) -> None:
    pg.locator(f"#nav-{cp.PANEL}").click()
    pg.locator(f"#{cp.RUN}").click()
    pg.locator(STATUS_BADGE).wait_for()


def shown_params(pg) -> dict[str, str]:
    rows = pg.locator(f"{RESULT_PARAMS} tbody tr")
    rows.first.wait_for()
    return {rows.nth(i).get_attribute("data-row"): rows.nth(i).locator("[data-field=value]").inner_text()
            for i in range(rows.count())}


def pick(pg, dropdown_id: str, option: str) -> None:
    pg.locator(f"#{dropdown_id}").click()
    pg.get_by_role("option", name=option, exact=True).click()


def test_calibrate_shows_status_and_parameters(page, gunicorn_app):
    open_panel(page, gunicorn_app.url)
    # from the keyboard: focus the button, press Enter
    page.locator(f"#{cp.RUN}").focus()
    page.keyboard.press("Enter")
    page.locator(STATUS_BADGE).wait_for()
    expect_text(page.locator(STATUS_BADGE), r"^Converged$")
    expect_text(page.locator(f"#{cp.STATUS} [data-field=rows]"), r"^20,000 in-sample, 0 held out")
    assert "termination condition is satisfied" in page.locator(f"#{cp.STATUS}").inner_text()
    params = shown_params(page)
    assert set(params) == {"h", "Y", "delta"} and params["h"] == "1"
    # the sample's true delta is 0.5; the pooled Y sits between the venues' 0.6 and 1
    assert 0.45 < float(params["delta"]) < 0.55 and 0.6 < float(params["Y"]) < 1.0
    # the parameter table shows the active result's values next to the controls
    fitted = page.locator(f"#{cp.PARAMS} tr[data-param=delta] [data-field=fitted]")
    expect_text(fitted, "^" + re.escape(params["delta"]) + "$")
    # a repeat is answered from the cache, without a job
    page.locator(f"#{cp.RUN}").click()
    expect_text(page.locator(f"#{cp.NOTE}"), r"shown from the cache")
    # every control of the panel has a label
    assert unlabelled_controls(page, cp.PANEL, "button[id][aria-labelledby]") == []
    save_screenshot(page, "calibrate")
    assert page.errors == []


def test_filters_and_segments_reach_the_fit_and_survive_a_reload(page, gunicorn_app):
    open_panel(page, gunicorn_app.url, "data")
    pick(page, dp.FILTER_VENUE, "okx")
    expect_text(page.locator(f"#{dp.FILTER_STATUS}"), r"^[\d,]+ of 20,000 rows pass the filters\.$")
    kept = int(page.locator(f"#{dp.FILTER_STATUS}").inner_text().split(" of ")[0].replace(",", ""))
    page.locator(f"#nav-{cp.PANEL}").click()
    page.get_by_label("symbol", exact=True).check()
    page.locator(f"#{cp.RUN}").click()
    page.locator(STATUS_BADGE).wait_for()
    expect_text(page.locator(f"#{cp.STATUS} [data-field=rows]"), rf"^{kept:,} in-sample, 0 held out, 3 segments$")
    assert page.locator("#segments-table-calibrate tr[data-row='symbol=BTCUSDT']").count() == 1
    before = shown_params(page)
    page.reload()
    page.locator(STATUS_BADGE).wait_for()
    assert shown_params(page) == before
    assert page.get_by_label("symbol", exact=True).is_checked()
    page.locator(f"#nav-{dp.PANEL}").click()
    expect_text(page.locator(f"#{dp.FILTER_STATUS}"), rf"^{kept:,} of 20,000 rows pass")


def test_export_configs_and_import_back(page, gunicorn_app, tmp_path):
    open_panel(page, gunicorn_app.url)
    calibrate(page)
    fitted = shown_params(page)
    page.locator(f"#nav-{ep.PANEL}").click()
    expect_text(page.locator(f"#{ep.SUMMARY} [data-field=params]"), r"Y = ")
    downloaded = {}
    for link in (ep.CONFIG_JSON, ep.CONFIG_YAML):
        with page.expect_download() as info:
            page.locator(f"#{link}").click()
        path = tmp_path / info.value.suggested_filename
        info.value.save_as(path)
        downloaded[link] = path
        config = load_config(path)          # the file validates
        assert {k: f"{v:.6g}" for k, v in config["model"]["params"].items()} == fitted
        assert config["data"]["file"] == "fills.csv" and len(config["data"]["sha256"]) == 64
    assert downloaded[ep.CONFIG_JSON].suffix == ".json" and downloaded[ep.CONFIG_YAML].suffix == ".yaml"
    assert downloaded[ep.CONFIG_YAML].read_text().startswith("schema_version: 1")
    with page.expect_download() as info:
        page.locator(f"#{ep.REPORT}").click()
    report = Path(info.value.path()).read_text()
    assert report.startswith("<!DOCTYPE html>") and "Converged" in report
    save_screenshot(page, "export", settle_ms=200)

    # a hand-changed fit replaces it, then the import brings the exported view back
    page.locator(f"#nav-{cp.PANEL}").click()
    page.locator(css_id(cp.param_id(cp.PARAM_MODE, "delta"))).select_option("fix")
    box = page.locator(css_id(cp.param_id(cp.PARAM_VALUE, "delta")))
    box.fill("0.7")
    box.press("Enter")
    page.locator(f"#{cp.RUN}").click()
    expect_text(page.locator(f"{RESULT_PARAMS} tr[data-row=delta] [data-field=value]"), r"^0\.7$")
    page.locator(f"#nav-{ep.PANEL}").click()
    page.set_input_files(f"#{ep.IMPORT} input[type=file]", files=[downloaded[ep.CONFIG_JSON]])
    expect_text(page.locator(f"#{ep.IMPORT_ALERT}"), r"^Imported execal_power_law_.*\.json: Power law")
    page.locator(f"#nav-{cp.PANEL}").click()
    expect_text(page.locator(STATUS_BADGE), r"^Parameters set by hand$")
    assert shown_params(page) == fitted
    # the controls show the settings of the imported config again (delta fitted, not fixed)
    assert page.locator(css_id(cp.param_id(cp.PARAM_MODE, "delta"))).input_value() == "fit"
    assert page.errors == []


def test_malformed_config_and_data_leave_the_result(page, gunicorn_app):
    open_panel(page, gunicorn_app.url)
    calibrate(page)
    fitted = shown_params(page)
    page.locator(f"#nav-{ep.PANEL}").click()
    page.set_input_files(f"#{ep.IMPORT} input[type=file]",
                         files=[{"name": "broken.json", "mimeType": "application/json", "buffer": b"{oops"}])
    expect_text(page.locator(f"#{ep.IMPORT_ALERT}"), r"^broken\.json: not valid JSON or YAML at line 1")
    page.locator(f"#nav-{dp.PANEL}").click()
    page.set_input_files(f"#{dp.UPLOAD} input[type=file]",
                         files=[{"name": "broken.csv", "mimeType": "text/csv", "buffer": b"who,knows\n1,2\n3,4\n"}])
    alert = page.locator(f"#{dp.ALERT}")
    expect_text(alert, r"^broken\.csv")
    assert "Traceback" not in alert.inner_text()
    page.locator(f"#nav-{cp.PANEL}").click()
    expect_text(page.locator(STATUS_BADGE), r"^Converged$")
    assert shown_params(page) == fitted
    # and the app still works: the same run is served again
    page.locator(f"#{cp.RUN}").click()
    expect_text(page.locator(f"#{cp.NOTE}"), r"shown from the cache")
    assert page.errors == []


def _job_processes(server) -> list[psutil.Process]:
    """Live processes below the gunicorn workers: the background fits (Dash's job processes)."""
    master = psutil.Process(server.process.pid)
    return live(child for worker in master.children() for child in worker.children(recursive=True))


def test_cancel_a_running_fit(page, gunicorn_app):
    open_panel(page, gunicorn_app.url)
    calibrate(page)
    fitted = shown_params(page)
    # a slow, honest setting: a global search with a large population over every generation
    pick(page, cp.OPTIMIZER, "Global search + polish")
    for name, value in (("maxiter", "10000"), ("popsize", "200")):
        box = page.locator(css_id(cp.option_id(name)))
        box.fill(value)
        box.press("Enter")
    # the global search may converge early (its population collapses), so add the most bootstrap
    # resamples the form allows: thousands of refits keep the job busy for many seconds
    boot = page.locator(f"#{cp.BOOT_N}")
    boot.fill(str(cp.MAX_BOOTSTRAP))
    boot.press("Enter")
    # the gunicorn server is shared by every browser-test module: other panels' jobs may still be
    # winding down, so follow only the process this fit starts
    before = {p.pid for p in _job_processes(gunicorn_app)}
    page.locator(f"#{cp.RUN}").click()
    cancel = page.locator(f"#{cp.CANCEL}")
    from playwright.sync_api import expect

    expect(cancel).to_be_enabled()
    expect(page.locator(f"#{cp.RUN}")).to_be_disabled()
    expect_text(page.locator(f"#{cp.PROGRESS}"), r"^(Fitting|Bootstrap)")
    deadline = time.monotonic() + 15
    while not (mine := [p for p in _job_processes(gunicorn_app) if p.pid not in before]) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert mine, "the fit should be running in a job process"
    cancel.click()
    expect(page.locator(f"#{cp.RUN}")).to_be_enabled()
    expect(cancel).to_be_disabled()
    expect_text(page.locator(f"#{cp.NOTE}"), r"^Calibration cancelled")
    # the job process is gone, and the previous result is still the one shown
    deadline = time.monotonic() + 15
    while live(mine) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live(mine) == []
    expect_text(page.locator(STATUS_BADGE), r"^Converged$")
    assert shown_params(page) == fitted
    assert page.errors == []
