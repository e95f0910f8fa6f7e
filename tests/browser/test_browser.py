"""The Data panel in a real browser (Debian chromium via Playwright) against the app under gunicorn."""
from __future__ import annotations


import pytest

from browser_utils import browser, fills_csv, gunicorn_app, page  # noqa: F401  (fixtures)
from browser_utils import expect_text, save_screenshot, session_cookie, session_of
from execal.components import data_panel

pytestmark = pytest.mark.browser

UPLOAD_INPUT = f"#{data_panel.UPLOAD} input[type=file]"
ERROR_ALERT = f"#{data_panel.ALERT}"


def field(pg, name: str):
    return pg.locator(f"#{data_panel.SUMMARY} [data-field={name}]")


def open_app(pg, base_url: str):
    pg.goto(base_url + "/")
    # the panel starts with its empty state; the session callback replaces it with the dataset
    field(pg, "file").wait_for()


def upload(pg, name: str, text: str):
    pg.set_input_files(UPLOAD_INPUT, files=[{"name": name, "mimeType": "text/csv", "buffer": text.encode()}])


def test_page_loads_with_sample_fills(page, gunicorn_app):
    open_app(page, gunicorn_app.url)
    expect_text(field(page, "file"), r"^fills\.csv$")
    expect_text(field(page, "kind"), r"^fills")
    rows = int(field(page, "rows").inner_text().replace(",", ""))
    assert rows > 0
    # the preview grid shows the first rows, the report says what was read
    page.locator(f"#{data_panel.GRID} .ag-row").first.wait_for()
    expect_text(page.locator(f"#{data_panel.REPORT}"), r"Read [\d,]+ rows")
    assert page.locator("[role=alert]:visible").count() == 0
    assert page.title() == "execal"
    # every form control is labelled
    for control_id in (data_panel.SAMPLE, data_panel.KIND, data_panel.MAPPING):
        assert page.locator(f"label[for={control_id}]").count() == 1
    save_screenshot(page, "data_panel", settle_ms=500, full_page=False)   # let the chart finish drawing
    assert page.errors == []


def test_upload_csv_shows_its_summary(page, gunicorn_app):
    open_app(page, gunicorn_app.url)
    upload(page, "uploaded_fills.csv", fills_csv(9, symbol="XRPUSDT", venue="kraken"))
    expect_text(field(page, "file"), r"^uploaded_fills\.csv$")
    expect_text(field(page, "rows"), r"^9$")
    expect_text(field(page, "kind"), r"^fills")
    expect_text(field(page, "symbols"), r"^XRPUSDT$")
    expect_text(page.locator(f"#{data_panel.PREVIEW_TITLE}"), r"first 9 of 9 rows")
    assert page.errors == []


def test_malformed_upload_shows_alert_and_keeps_previous(page, gunicorn_app):
    open_app(page, gunicorn_app.url)
    upload(page, "kept.csv", fills_csv(4, symbol="ADAUSDT"))
    expect_text(field(page, "file"), r"^kept\.csv$")
    upload(page, "broken.csv", "who,knows\n1,2\n3,4\n")
    alert = page.locator(ERROR_ALERT)
    expect_text(alert, r"^broken\.csv")
    assert alert.get_attribute("role") == "alert" and alert.is_visible()
    assert "Traceback" not in alert.inner_text()
    # the previous dataset is still the active one, and still displayed
    expect_text(field(page, "file"), r"^kept\.csv$")
    expect_text(field(page, "rows"), r"^4$")
    # a good file afterwards clears the alert
    upload(page, "after.csv", fills_csv(2))
    expect_text(field(page, "file"), r"^after\.csv$")
    page.locator(ERROR_ALERT).wait_for(state="hidden")


def test_reload_keeps_the_session_dataset(page, gunicorn_app):
    open_app(page, gunicorn_app.url)
    expect_text(field(page, "file"), r"^fills\.csv$")
    cookie = session_cookie(page)
    # the session is a signed HttpOnly SameSite=Lax cookie the page's scripts cannot read; nothing in storage
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert page.evaluate("localStorage.getItem('execal-session')") is None
    session_before = session_of(page, gunicorn_app)
    upload(page, "survives_reload.csv", fills_csv(6, symbol="DOGEUSDT"))
    expect_text(field(page, "file"), r"^survives_reload\.csv$")
    for _ in range(2):   # twice: the second reload must not fall back to the sample either
        page.reload()
        field(page, "file").wait_for()
        expect_text(field(page, "file"), r"^survives_reload\.csv$")
        expect_text(field(page, "rows"), r"^6$")
    assert session_of(page, gunicorn_app) == session_before     # (the cookie is re-signed, the session kept)


def test_bundled_sample_can_be_picked(page, gunicorn_app):
    open_app(page, gunicorn_app.url)
    upload(page, "first.csv", fills_csv(3))
    expect_text(field(page, "file"), r"^first\.csv$")
    page.locator(f"#{data_panel.SAMPLE}").click()
    page.get_by_role("option", name="fills.csv", exact=True).click()
    expect_text(field(page, "file"), r"^fills\.csv$")


def test_other_paths_show_the_app_not_an_error(page, gunicorn_app):
    page.goto(gunicorn_app.url + "/no-such-panel")
    field(page, "file").wait_for()
    # Dash 4's dcc.Upload puts no id on its drop zone: check its label and the Data panel instead
    page.locator(f"#{data_panel.UPLOAD_LABEL}").wait_for(state="visible")
    assert page.locator("#panel-data").is_visible()
    # other panels have upload zones too (hidden): look inside the Data panel only
    page.locator("#panel-data").get_by_text("choose a file").first.wait_for(state="visible")
