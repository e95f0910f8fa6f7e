"""The app without a browser: pure builders, callback bodies as plain functions, the session store, and
the app served by gunicorn."""
from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import os
import re
import stat
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from dash import no_update
from dash.exceptions import PreventUpdate

from browser_utils import fills_csv, serve_gunicorn
from execal.components import data_panel, figures, layout, shell, store
from execal.models.data.schema import DataError, Dataset, DropRecord, ValidationReport


def data_url(text: str | bytes, mime: str = "text/csv") -> str:
    raw = text.encode() if isinstance(text, str) else text
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


@pytest.fixture
def settings(cache_dir, tmp_path) -> layout.Settings:
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "fills.csv").write_text(fills_csv(5, symbol="SOLUSDT", venue="bybit"))
    (samples / "notes.md").write_text("not a data file")
    return layout.Settings(cache_dir=cache_dir, sample_dir=samples, max_upload_bytes=2**20)


def make_dataset(n: int = 3, *, kind: str = "fills") -> Dataset:
    frame = pd.DataFrame({
        "timestamp": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 06:00", "2024-01-02 00:00"][:n], utc=True),
        "symbol": ["BTCUSDT", "ETHUSDT", None][:n],
        "side": np.array([1, -1, 1][:n], dtype=np.int8),
        "quantity": [1.0, 2.5, np.nan][:n],
        "arrival_price": [100.0, 200.0, 300.0][:n],
        "exec_price": [100.1, 199.9, 300.3][:n],
    })
    report = ValidationReport(rows_read=n + 2, rows_kept=n,
                              dropped=[DropRecord("not positive", "quantity", 2, [4, 5])],
                              warnings=["timestamps were not sorted; sorted them"])
    return Dataset(kind=kind, frame=frame, source="my_fills.csv", sha256="ab" * 32, report=report)


# --- figures: pure builders ---------------------------------------------------------------------


def test_format_span_and_duration():
    assert figures.format_duration_s(45) == "45 s"
    assert figures.format_duration_s(750) == "12.5 min"
    assert figures.format_duration_s(3 * 3600) == "3.0 h"
    assert figures.format_duration_s(6 * 86400) == "6.0 d"
    assert figures.format_span("2024-01-01T00:00:00+00:00", "2024-01-02T12:00:00+00:00") == (
        "2024-01-01 00:00:00 → 2024-01-02 12:00:00 UTC (36.0 h)")
    assert figures.format_span(None, None) == "–"


def test_summary_rows_from_dataset_summary():
    rows = dict(figures.summary_rows(make_dataset().summary()))
    assert rows["File"] == "my_fills.csv"
    assert rows["Kind"].startswith("fills")
    assert rows["Rows"] == "3"
    assert rows["Columns"].startswith("6: timestamp, symbol, side")
    assert rows["Time span"] == "2024-01-01 00:00:00 → 2024-01-02 00:00:00 UTC (24.0 h)"
    assert rows["Symbols"] == "BTCUSDT, ETHUSDT"
    assert rows["Venues"] == "–"


def test_long_symbol_lists_are_truncated():
    names = [f"S{i:02d}" for i in range(15)]
    assert figures.format_names(names, limit=12).endswith("S11 (+3 more)")
    assert figures.format_names([]) == "–"


def test_report_headline_and_drop_rows():
    report = make_dataset().report.to_dict()
    assert figures.report_headline(report) == "Read 5 rows, kept 3, dropped 2."
    assert figures.drop_rows(report) == [{"reason": "not positive", "column": "quantity", "count": "2",
                                          "first rows": "4, 5"}]
    clean = ValidationReport(rows_read=7, rows_kept=7).to_dict()
    assert figures.report_headline(clean) == "Read 7 rows, kept all 7."
    assert figures.drop_rows(clean) == []


def test_preview_table_is_json_ready_and_capped():
    frame = pd.concat([make_dataset().frame] * 100, ignore_index=True)   # 300 rows
    columns, rows = figures.preview_table(frame, n_rows=200)
    assert len(rows) == 200
    assert [c["field"] for c in columns] == list(frame.columns)
    assert {c["field"] for c in columns if c.get("type") == "numericColumn"} == {
        "side", "quantity", "arrival_price", "exec_price"}
    assert rows[0]["timestamp"] == "2024-01-01 00:00:00.000"
    assert rows[0]["side"] == 1 and type(rows[0]["side"]) is int
    assert rows[2]["quantity"] is None and rows[2]["symbol"] is None
    json.dumps(rows, allow_nan=False)   # NaN would be invalid JSON in the browser


def test_preview_table_of_empty_frame():
    columns, rows = figures.preview_table(make_dataset().frame.iloc[:0])
    assert rows == [] and len(columns) == 6


def test_coverage_counts_show_gaps():
    ts = pd.Series(pd.to_datetime(["2024-01-01 00:00"] * 3 + ["2024-01-01 00:30"] + ["2024-01-01 09:59"] * 2,
                                  utc=True))
    edges, counts = figures.coverage_counts(ts, bins=10)
    assert counts.sum() == 6
    assert counts[0] == 4 and counts[-1] == 2 and (counts[1:-1] == 0).all()
    assert edges[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")


def test_coverage_counts_single_instant_and_empty():
    one = pd.Series(pd.to_datetime(["2024-01-01"] * 4, utc=True))
    _, counts = figures.coverage_counts(one)
    assert counts.tolist() == [4]
    _, counts = figures.coverage_counts(one.iloc[:0])
    assert counts.size == 0


def test_coverage_figure_and_empty_state():
    fig = figures.coverage_figure(make_dataset().frame)
    assert isinstance(fig, go.Figure) and fig.data[0].type == "bar"
    assert int(np.sum(fig.data[0].y)) == 3
    empty = figures.coverage_figure(pd.DataFrame({"x": [1]}))
    assert len(empty.data) == 0 and "No timestamps" in empty.layout.annotations[0].text


# --- store ------------------------------------------------------------------------------------


def test_cache_dir_is_created_private(tmp_path):
    d = store.private_cache_dir(tmp_path / "a" / "cache")
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_cache_dir_permissions_are_tightened(tmp_path):
    d = tmp_path / "loose"
    d.mkdir()
    os.chmod(d, 0o755)
    store.private_cache_dir(d)
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("EXECAL_CACHE_DIR", str(tmp_path / "from_env"))
    assert store.private_cache_dir() == (tmp_path / "from_env").resolve()


def test_shared_sticky_dirs_are_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    with pytest.raises(store.CacheDirError, match="shared"):
        store.private_cache_dir(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777   # left alone
    import tempfile
    with pytest.raises(store.CacheDirError):
        store.private_cache_dir(tempfile.gettempdir())


def test_dataset_round_trip_across_processes_view(st, cache_dir):
    ds = make_dataset()
    sid = store.new_session_id()
    key = st.put_dataset(sid, ds)
    # keyed with the server secret: the content hash (printed in exported configs) is not the key
    assert key == store.dataset_key("ab" * 32, "fills", secret=st.secret, name="my_fills.csv") and not key.startswith("ab" * 32)
    assert key.endswith("-fills") and store.is_dataset_key(key)
    # a second store on the same directory stands for another gunicorn worker (no shared memory)
    other = store.SessionStore(store.open_cache(cache_dir))
    for got in (other.get_dataset(key), other.get_dataset(sid)):
        pd.testing.assert_frame_equal(got.frame, ds.frame)
        assert (got.kind, got.source, got.sha256) == (ds.kind, ds.source, ds.sha256)
        assert got.report.to_dict() == ds.report.to_dict()
    assert other.active_key(sid) == key
    other.cache.close()


def test_the_same_bytes_under_another_name_are_another_dataset(st):
    """Datasets are de-duplicated by content *and* file name: a second uploader of the same bytes
    under another name gets a dataset of their own and never sees the first uploader's file name;
    the same bytes under the same name are stored once."""
    raw = fills_csv(40).encode()
    alice, bob, carol = (store.new_session_id() for _ in range(3))
    a = st.load_bytes(raw, name="alice-desk-q3.csv", session_id=alice)
    b = st.load_bytes(raw, name="fills.csv", session_id=bob)
    assert a != b and st.get_dataset(a).sha256 == st.get_dataset(b).sha256
    assert st.get_dataset(bob).source == "fills.csv" and st.info(b)["source"] == "fills.csv"
    assert "alice" not in json.dumps(st.info(b)) + st.cache.get(f"execal:ds:{b}:meta")
    assert st.load_bytes(raw, name="alice-desk-q3.csv", session_id=carol) == a
    assert st.session_keys(bob) == [b]


def test_store_keeps_no_pickles(st):
    key = st.put_dataset(store.new_session_id(), make_dataset())
    parquet = st.cache.get(f"execal:ds:{key}:parquet")
    meta = st.cache.get(f"execal:ds:{key}:meta")
    assert isinstance(parquet, bytes) and parquet[:4] == b"PAR1"
    assert isinstance(meta, str) and json.loads(meta)["kind"] == "fills"
    # diskcache writes pickles in mode 4 (MODE_PICKLE); ours must be raw bytes / text
    modes = dict(st.cache._sql("SELECT key, mode FROM Cache").fetchall())
    assert {m for k, m in modes.items() if str(k).startswith("execal:")} <= {1, 2, 3}


def test_callers_cannot_alter_the_cached_frame(st):
    key = st.put_dataset(None, make_dataset())
    got = st.get_dataset(key)
    got.frame["quantity"] = 0.0
    assert st.get_dataset(key).frame["quantity"].iloc[0] == 1.0


def test_unknown_or_malformed_keys_give_none(st):
    assert st.get_dataset(None) is None
    assert st.get_dataset("../../etc/passwd") is None
    assert st.get_dataset("cd" * 32 + "-fills") is None
    assert st.get_dataset(store.new_session_id()) is None


def test_session_keeps_its_datasets_and_active_one(st):
    sid = store.new_session_id()
    k1 = st.put_dataset(sid, make_dataset())
    k2 = st.put_dataset(sid, make_dataset(kind="trades"))
    assert st.active_key(sid) == k2
    assert st.session_keys(sid) == [k1, k2]
    st.set_active(sid, k1)
    assert st.session_keys(sid) == [k2, k1] and st.active_key(sid) == k1
    with pytest.raises(ValueError):
        st.set_active("not-a-session", k1)


def test_same_bytes_load_once(st):
    calls = []

    def loader(raw, **kw):
        from execal.models.data.io import load

        calls.append(kw["name"])
        return load(raw, **kw)

    raw = fills_csv(4).encode()
    k1 = st.load_bytes(raw, name="a.csv", loader=loader)
    k2 = st.load_bytes(raw, name="a.csv", loader=loader)
    assert k1 == k2 and calls == ["a.csv"]
    # a different mapping or kind override is a different request, and with a mapping a different key
    k3 = st.load_bytes(raw.replace(b"exec_price", b"px"), name="b.csv", mapping={"px": "exec_price"},
                       loader=loader)
    assert k3.endswith("-fills-m" + store.mapping_digest({"px": "exec_price"}))
    assert len(calls) == 2
    pd.testing.assert_frame_equal(st.get_dataset(k3).frame, st.get_dataset(k1).frame)


def test_oversize_is_refused_before_parsing(st):
    with pytest.raises(DataError, match=r"big.csv: file is .*\(1,048,577 bytes\), over the 1 MB upload limit"):
        st.load_bytes(b"x" * (2**20 + 1), name="big.csv", max_bytes=2**20,
                      loader=lambda *a, **k: pytest.fail("must not parse"))


# --- callback bodies ----------------------------------------------------------------------------


def test_upload_sets_active_dataset_and_renders_summary(st, settings):
    sid = store.new_session_id()
    out = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=sid,
                                  contents=data_url(fills_csv(7)), filename="mine.csv")
    assert out["alert"] == ("", False)
    assert out["source"] == {"type": "upload", "name": "mine.csv"}
    assert st.active_key(sid) == out["active"]["key"]
    view = data_panel.render_dataset(st, out["active"])
    rows = dict(figures.summary_rows(st.get_dataset(sid).summary()))
    assert rows["Rows"] == "7" and rows["File"] == "mine.csv"
    assert "mine.csv" in str(view["summary"]) and len(view["rows"]) == 7
    assert view["preview_title"] == "Preview (first 7 of 7 rows)"


def test_bad_upload_shows_error_and_keeps_previous(st, settings):
    sid = store.new_session_id()
    good = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=sid,
                                   contents=data_url(fills_csv(3)), filename="good.csv")
    bad = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=sid,
                                  contents=data_url("price;;\n\x00\x01garbage"), filename="bad.csv")
    message, is_open = bad["alert"]
    assert is_open and message.startswith("bad.csv") and "Traceback" not in message
    assert message.endswith(data_panel.KEPT_NOTE)
    assert bad["active"] is no_update and st.active_key(sid) == good["active"]["key"]
    # Reload applies to the refused file, not to the dataset still shown
    assert bad["source"] == {"type": "upload", "name": "bad.csv"}


def test_unexpected_error_is_logged_not_shown(st, settings, monkeypatch, caplog):
    def boom(*a, **k):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(st, "load_bytes", boom)
    out = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=store.new_session_id(),
                                  contents=data_url(fills_csv(3)), filename="x.csv")
    message, is_open = out["alert"]
    assert is_open and "RuntimeError" in message and "secret" not in message
    assert "secret internal detail" in caplog.text   # the traceback went to the server log


def test_first_visit_preloads_sample_fills(st, settings):
    sid = store.new_session_id()
    out = data_panel.load_dataset(st, settings, trigger=store.SESSION_STORE_ID, session_id=sid)
    assert out["source"] == {"type": "sample", "name": "fills.csv"}
    assert st.get_dataset(sid).summary()["symbols"] == ["SOLUSDT"]
    # the next visit of the same session finds its dataset, and does not reload the sample
    st.put_dataset(sid, make_dataset())
    again = data_panel.load_dataset(st, settings, trigger=None, session_id=sid)
    assert again["active"] == {"key": store.dataset_key("ab" * 32, "fills", secret=st.secret, name="my_fills.csv")}
    assert again["source"] is no_update


def test_first_visit_without_samples_is_an_empty_state(st, settings, tmp_path):
    empty = layout.Settings(cache_dir=settings.cache_dir, sample_dir=tmp_path / "none", max_upload_bytes=2**20)
    out = data_panel.load_dataset(st, empty, trigger=store.SESSION_STORE_ID, session_id=store.new_session_id())
    assert out["active"] is None
    view = data_panel.render_dataset(st, out["active"])
    assert data_panel.EMPTY_MESSAGE in str(view["summary"]) and view["rows"] == []


def test_evicted_dataset_says_so(st):
    view = data_panel.render_dataset(st, {"key": "cd" * 32 + "-fills"})
    assert "no longer in the server's cache" in str(view["summary"])


def test_sample_picker_only_opens_listed_files(st, settings):
    assert data_panel.sample_files(settings.sample_dir) == ["fills.csv"]
    sid = store.new_session_id()
    out = data_panel.load_dataset(st, settings, trigger=data_panel.SAMPLE, session_id=sid,
                                  sample="../../cache/x.csv")
    assert out["alert"][1] and "no such bundled sample" in out["alert"][0]
    assert st.active_key(sid) is None


def test_reload_applies_kind_and_mapping(st, settings):
    sid = store.new_session_id()
    contents = data_url(fills_csv(3).replace("exec_price", "fill_px"))
    first = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=sid,
                                    contents=contents, filename="renamed.csv")
    assert first["alert"][1] and "renamed.csv" in first["alert"][0]
    fixed = data_panel.load_dataset(st, settings, trigger=data_panel.APPLY, session_id=sid, contents=contents,
                                    filename="renamed.csv", mapping_text="fill_px=exec_price", kind="fills",
                                    source={"type": "upload", "name": "renamed.csv"})
    assert fixed["alert"] == ("", False)
    assert "exec_price" in st.get_dataset(sid).frame.columns
    nothing = data_panel.load_dataset(st, settings, trigger=data_panel.APPLY, session_id=sid, source=None)
    assert nothing["alert"][1] and "Load a file first" in nothing["alert"][0]


RENAMED_FILLS = fills_csv(4).replace("timestamp,symbol,venue,side,quantity,arrival_price,exec_price",
                                     "Time,Instrument,Exchange,Side,Qty,Arrival,Fill_PX")


def test_a_mapping_applies_to_the_file_just_uploaded(st, settings):
    """Issue 10 item 10: upload a file the loader cannot map, type the mapping, press Reload: the
    mapping applies to that file (kept server-side), not to the dataset shown before."""
    sid = store.new_session_id()
    shown = data_panel.load_dataset(st, settings, trigger=store.SESSION_STORE_ID, session_id=sid)
    assert shown["source"] == {"type": "sample", "name": "fills.csv"}
    refused = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=sid,
                                      contents=data_url(RENAMED_FILLS), filename="desk.csv")
    message, is_open = refused["alert"]
    # the refusal names the file's own columns (the ones a mapping must name), not the renamed ones
    assert is_open and "Found columns: Time, Instrument, Exchange, Side, Qty, Arrival, Fill_PX" in message
    assert "quantity" not in message.split("Found columns:")[1]
    assert "they apply to desk.csv" in message and message.endswith(data_panel.KEPT_NOTE)
    assert refused["active"] is no_update and st.active_key(sid) == shown["active"]["key"]
    assert refused["source"] == {"type": "upload", "name": "desk.csv"} and refused["clear_upload"]
    assert st.last_upload(sid) == (RENAMED_FILLS.encode(), "desk.csv")
    # the browser no longer holds the file (the box was emptied): Reload reads the server's copy
    fixed = data_panel.load_dataset(st, settings, trigger=data_panel.APPLY, session_id=sid, contents=None,
                                    mapping_text="Fill_PX=exec_price", source=refused["source"])
    assert fixed["alert"] == ("", False)
    ds = st.get_dataset(sid)
    assert ds.source == "desk.csv" and len(ds.frame) == 4 and "exec_price" in ds.frame.columns
    assert ds.frame["venue"].tolist() == ["binance"] * 4          # "Exchange" read through its alias
    assert fixed["sample"] is None                                 # the picker no longer names a sample
    # a session whose kept upload is gone is told to choose the file again
    other = store.new_session_id()
    gone = data_panel.load_dataset(st, settings, trigger=data_panel.APPLY, session_id=other,
                                   mapping_text="Fill_PX=exec_price", source=refused["source"])
    assert gone["alert"][1] and "choose it again" in gone["alert"][0]


def test_choosing_the_same_file_again_loads_it_again(st, settings):
    """The upload box is emptied after each upload, so the browser sends the same file again (dcc.Upload
    fires only when its contents change); the emptying itself is not an upload."""
    sid = store.new_session_id()
    contents = data_url(RENAMED_FILLS)
    first = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=sid,
                                    contents=contents, filename="desk.csv", mapping_text="Fill_PX=exec_price")
    assert first["clear_upload"] and first["alert"] == ("", False)
    with pytest.raises(PreventUpdate):
        data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=sid, contents=None,
                                filename="desk.csv")
    again = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=sid,
                                    contents=contents, filename="desk.csv", mapping_text="Fill_PX=exec_price")
    assert again["active"] == first["active"] and again["clear_upload"]


def test_the_sample_picker_names_the_sample_on_screen(st, settings):
    sid = store.new_session_id()
    first = data_panel.load_dataset(st, settings, trigger=store.SESSION_STORE_ID, session_id=sid)
    assert first["sample"] == "fills.csv"                          # preloaded: the picker says so
    # a reload of the page finds the same dataset and names it again
    again = data_panel.load_dataset(st, settings, trigger=None, session_id=sid)
    assert again["active"] == first["active"] and again["sample"] == "fills.csv"
    # an upload that happens to be called fills.csv is not the sample
    up = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=sid,
                                 contents=data_url(fills_csv(3)), filename="fills.csv")
    assert up["sample"] is None
    assert data_panel.load_dataset(st, settings, trigger=None, session_id=sid)["sample"] is None
    # picking the sample keeps the picker as the user set it
    picked = data_panel.load_dataset(st, settings, trigger=data_panel.SAMPLE, session_id=sid, sample="fills.csv")
    assert picked["sample"] is no_update and picked["active"] == first["active"]


def test_bad_mapping_text_is_a_data_error(st, settings):
    out = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id=store.new_session_id(),
                                  contents=data_url(fills_csv(3)), filename="f.csv", mapping_text="nonsense")
    assert out["alert"][1] and "mapping" in out["alert"][0]


def test_decode_upload_rejects_garbage():
    assert shell.decode_upload(data_url(b"abc"), "f.csv") == b"abc"
    with pytest.raises(DataError, match="f.csv"):
        shell.decode_upload("data:text/csv;base64,@@@", "f.csv")
    with pytest.raises(DataError):
        shell.decode_upload("plain text", "f.csv")


def test_invalid_session_gets_a_message(st, settings):
    out = data_panel.load_dataset(st, settings, trigger=data_panel.UPLOAD, session_id="tampered",
                                  contents=data_url(fills_csv(3)), filename="f.csv")
    assert out["alert"][1] and out["active"] is no_update


# --- app ----------------------------------------------------------------------------------------


def test_routing_picks_panel_from_path():
    assert layout.visible_panel("/") == 0
    assert layout.visible_panel("/data") == layout.PANELS.index(data_panel)
    assert layout.visible_panel("/no-such-panel") == 0


def test_upload_limit_setting(monkeypatch):
    monkeypatch.setenv("EXECAL_MAX_UPLOAD_MB", "12.5")
    assert layout.max_upload_bytes() == int(12.5 * 2**20)
    assert layout.max_upload_bytes(3) == 3 * 2**20
    monkeypatch.setenv("EXECAL_MAX_UPLOAD_MB", "lots")
    with pytest.raises(ValueError, match="EXECAL_MAX_UPLOAD_MB"):
        layout.max_upload_bytes()
    monkeypatch.delenv("EXECAL_MAX_UPLOAD_MB")
    assert layout.max_upload_bytes() == 200 * 2**20


def test_create_app_wires_server(tmp_path, settings):
    from execal import app as app_module

    app = app_module.create_app(cache_dir=str(tmp_path / "c"), sample_dir=str(settings.sample_dir),
                                max_upload_mb=1)
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == 0o700
    client = app.server.test_client()
    page = client.get("/")
    assert page.status_code == 200 and b"<title>execal</title>" in page.data
    layout_json = client.get("/_dash-layout").get_json()
    text = json.dumps(layout_json)
    for panel in layout.PANELS:
        assert layout.nav_link_id(panel) in text and layout.panel_container_id(panel) in text
    assert store.SESSION_STORE_ID in text and data_panel.UPLOAD in text
    # server-side size limit: a request bigger than the base64 of 1 MB is refused before any callback
    assert app.server.config["MAX_CONTENT_LENGTH"] == int(2**20 * 4 / 3) + layout.REQUEST_OVERHEAD_BYTES
    big = client.post("/_dash-update-component", data=b"x" * (3 * 2**20), content_type="application/json")
    assert big.status_code == 413
    # no CDN: every stylesheet and script is served by the app itself
    assert b"cdn.jsdelivr" not in page.data and b"unpkg.com" not in page.data


def test_background_callbacks_share_the_private_cache(tmp_path):
    from execal import app as app_module

    app = app_module.create_app(cache_dir=str(tmp_path / "c"))
    assert store.get_store(app).cache is app._background_manager.handle
    assert Path(app._background_manager.handle.directory) == (tmp_path / "c").resolve()


def test_unexpected_callback_error_shows_a_line_not_a_traceback(tmp_path, monkeypatch, caplog):
    from execal import app as app_module

    def broken(*args, **kwargs):
        raise KeyError("internal-detail-xyz")

    monkeypatch.setattr(data_panel, "render_dataset", broken)
    app = app_module.create_app(cache_dir=str(tmp_path / "c"))
    client = app.server.test_client()
    callback = next(d for d in client.get("/_dash-dependencies").get_json()
                    if d["inputs"][0]["id"] == store.ACTIVE_DATASET_ID)
    outputs = [{"id": i, "property": p} for i, p in re.findall(r"\.\.?([\w-]+)\.(\w+)", callback["output"])]
    body = {"output": callback["output"], "outputs": outputs,
            "changedPropIds": [f"{store.ACTIVE_DATASET_ID}.data"],
            "inputs": [{"id": store.ACTIVE_DATASET_ID, "property": "data", "value": {"key": "x"}}], "state": []}
    response = client.post("/_dash-update-component", json=body)
    text = response.get_data(as_text=True)
    assert response.status_code == 200, text
    assert "internal-detail-xyz" not in text and "Traceback" not in text
    side = response.get_json()["sideUpdate"][layout.APP_ALERT_ID]
    assert side["is_open"] is True and "KeyError" in side["children"] and "server log" in side["children"]
    assert "internal-detail-xyz" in caplog.text


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _post_declaring(url: str, n_bytes: int, body: bytes = b"") -> int:
    """Status of a POST that declares `n_bytes` of body and sends none: a server enforcing its size
    limit answers from the header alone (a real upload sending the body races the server's close)."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.putrequest("POST", "/_dash-update-component")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(n_bytes))
        conn.endheaders(body or None)
        return conn.getresponse().status
    finally:
        conn.close()


def test_gunicorn_serves_the_app(tmp_path):
    from execal import app as app_module

    # the page's script and stylesheet URLs, from an in-process app, so no request warms a worker
    local = app_module.create_app(cache_dir=str(tmp_path / "local-cache"))
    index = local.server.test_client().get("/").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="(/[^"?]+\.(?:js|css)(?:\?[^"]*)?)"', index)
    assert any("dash_renderer" in a for a in assets) and any("bootstrap" in a for a in assets)

    with serve_gunicorn(tmp_path, workers=2, env={"EXECAL_MAX_UPLOAD_MB": "0.5"}, probe=False) as server:
        # first contact: every script and stylesheet at once, on cold workers (Dash's first-request
        # setup is not thread-safe; create_app() does it before the worker serves anyone)
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(lambda a: _status(server.url + a), assets * 4))
        assert set(codes) == {200}, [a for a, c in zip(assets * 4, codes) if c != 200]
        with urllib.request.urlopen(server.url + "/", timeout=30) as r:
            assert r.status == 200 and "<title>execal</title>" in r.read().decode()
        with urllib.request.urlopen(server.url + "/_dash-layout", timeout=30) as r:
            assert r.status == 200 and store.SESSION_STORE_ID in r.read().decode()
        # the upload limit from the environment is enforced by every worker
        limit = int(0.5 * 2**20 * 4 / 3) + layout.REQUEST_OVERHEAD_BYTES
        assert [_post_declaring(server.url, limit + 1) for _ in range(4)] == [413] * 4
        assert _post_declaring(server.url, 2, b"xx") == 400   # under the limit: read, then refused as bad JSON
        assert stat.S_IMODE(server.cache_dir.stat().st_mode) == 0o700
        proc = server.process
    assert proc.returncode == 0, server.log()
    assert "Traceback" not in server.log()


def test_upload_limit_applies_to_uploads_not_bundled_samples(st, settings):
    tiny = layout.Settings(cache_dir=settings.cache_dir, sample_dir=settings.sample_dir, max_upload_bytes=100)
    sid = store.new_session_id()
    up = data_panel.load_dataset(st, tiny, trigger=data_panel.UPLOAD, session_id=sid,
                                 contents=data_url(fills_csv(5)), filename="big.csv")
    assert up["alert"][1] and "upload limit" in up["alert"][0]
    sample = data_panel.load_dataset(st, tiny, trigger=data_panel.SAMPLE, session_id=sid, sample="fills.csv")
    assert sample["alert"] == ("", False) and st.active_key(sid) == sample["active"]["key"]


def test_memory_cache_respects_its_budget(cache_dir):
    ds = make_dataset()
    size = int(ds.frame.memory_usage(index=True, deep=False).sum())
    small = store.SessionStore(store.open_cache(cache_dir), memory_bytes=size * 2)
    k1 = small.put_dataset(None, ds)
    k2 = small.put_dataset(None, make_dataset(kind="trades"))
    k3 = small.put_dataset(None, make_dataset(kind="quotes"))
    assert list(small._memory) == [k2, k3]          # the oldest was let go
    pd.testing.assert_frame_equal(small.get_dataset(k1).frame, ds.frame)   # and comes back from disk
    tiny = store.SessionStore(small.cache, memory_bytes=size - 1)
    tiny.put_dataset(None, ds)
    assert not tiny._memory
    small.cache.close()
