"""The UI shell (components/shell.py) on its own: the pieces every panel builds on."""
from __future__ import annotations

import json

import plotly.graph_objects as go

from execal.components import figures
from execal.components import layout
from execal.components import shell
from execal.components import store as store_mod


def test_ids_come_from_the_panel_slug():
    _id = shell.ids_for("orderflow")
    assert _id("graph") == "graph-orderflow"
    assert _id("a", "b-c") == ("a-orderflow", "b-c-orderflow")
    assert shell.JobIds.of(_id).progress_wrap == "progress-wrap-orderflow"
    assert shell.dom_id({"type": "t", "param": "delta"}) == '{"param":"delta","type":"t"}'


def test_store_keys_are_read_defensively():
    key = "result:" + "a" * 32
    assert shell.key_of({"key": "x"}) == "x" and shell.key_of({"key": 3}) is None and shell.key_of(None) is None
    assert shell.result_key_of({"key": key}) == key and shell.result_key_of({"key": "x"}) is None


def test_routing_follows_the_layouts_panel_order():
    first = layout.PANELS[0].PANEL
    assert shell.visible_slug("/") == first and shell.visible_slug("/nowhere/else") == first
    assert shell.visible_slug("/volatility/") == "volatility"
    assert shell.is_shown("surface", "/surface") and not shell.is_shown("surface", "/")


def test_the_lru_keeps_the_most_recent_and_all_of_them_clear():
    cache = shell.LRU(2)
    made = []

    def make(v):
        return lambda: made.append(v) or v

    assert cache.get_or_make("a", make(1)) == 1 and cache.get_or_make("b", make(2)) == 2
    assert cache.get_or_make("a", make(99)) == 1            # a hit: not made again, and now most recent
    cache.get_or_make("c", make(3))                          # evicts b, the least recently used
    assert cache.get_or_make("b", make(4)) == 4 and made == [1, 2, 3, 4]
    shell.clear_process_caches()
    assert cache.get_or_make("a", make(5)) == 5


def test_rows_table_marks_rows_and_cells():
    rows = [{"key": "k1", "expiry": "2024-11-01 08:00", "value": 1.5, "note": None},
            {"key": "k2", "expiry": "2024-11-02 08:00", "value": 2, "note": {"x": 1}}]
    table = shell.rows_table(rows, table_id="t", caption="cap", nowrap=("expiry",), small=True)
    assert table.className == "table-responsive"
    inner = table.children
    assert inner.id == "t" and "small" in inner.className and "execal-table" in inner.className
    caption, head, body = inner.children
    assert caption.children == "cap" and [th.children for th in head.children.children] == ["expiry", "value", "note"]
    first, second = body.children
    assert first.to_plotly_json()["props"]["data-row"] == "k1"
    cells = [td.to_plotly_json()["props"] for td in second.children]
    assert [c["data-field"] for c in cells] == ["expiry", "value", "note"]
    assert cells[0]["className"] == "text-nowrap" and cells[2]["children"] == "{'x': 1}"
    assert shell.rows_table([], caption="nothing yet").children == "nothing yet"


def test_empty_outputs_are_designed_states():
    out = shell.empty_outputs("why it is blank", graphs=("g",), texts=("t",), blanks=("b",), status=("s", "demo"),
                              level="warning")
    assert isinstance(out["g"], go.Figure) and figures.empty_message(out["g"]) == "why it is blank"
    assert out["t"].children == "why it is blank" and out["b"] is None
    banner = out["s"].to_plotly_json()["props"]
    assert banner["id"] == "status-alert-demo" and banner["data-level"] == "warning"
    as_json = shell.empty_outputs("m", graphs=("g",), as_json=True)["g"]
    assert isinstance(as_json, dict) and figures.empty_message(as_json) == "m"
    # each call gets its own copy of the cached JSON
    as_json["layout"]["height"] = 1
    assert shell.empty_figure("m")["layout"]["height"] == 220
    assert shell.empty_status("demo", "nothing").to_plotly_json()["props"]["data-level"] == "empty"


def test_session_memory_round_trip(tmp_path):
    cache = store_mod.open_cache(tmp_path / "cache")
    sid = store_mod.new_session_id()
    shell.remember(cache, "demo", sid, {"keys": {"a": 1}})
    assert shell.recall(cache, "demo", sid) == {"keys": {"a": 1}}
    assert shell.recall(cache, "other", sid) is None and shell.recall(cache, "demo", "not-a-session") is None
    shell.remember(cache, "demo", "not-a-session", {"x": 1})          # ignored, never raises
    cache.set(shell.memory_key("demo", sid), json.dumps([1, 2]))       # not a dict: no memory
    assert shell.recall(cache, "demo", sid) is None
    cache.close()
