"""The Monitor panel without a browser: the pure figure builders and their extendData payloads, and
the attach / poll functions on a run directory written by the monitor's own state writer."""
from __future__ import annotations

import json

import pytest

from execal.components import monitor_figures as MF
from execal.components import monitor_panel as mp
from execal.live.runner import StateWriter
from execal.models.live.events import EventLog, make_event
from execal.models.live.versions import ConfigHistory

T0 = 1_723_161_300_000_000_000


def tick(i, venue="binance-usdm", symbol="BTCUSDT", mid=61000.0):
    return {"t_ns": T0 + i * 10**9, "venue": venue, "symbol": symbol, "mid": mid + i, "spread_bps": 0.5,
            "sigma_ewma": 0.03, "depth_bid_10bps": 5.0, "depth_ask_10bps": 7.0, "p_regime": [0.9, 0.1]}


def fill(i, y=0.7):
    return {"t_ns": T0 + i * 10**9 + 5, "venue": "binance-usdm", "symbol": "BTCUSDT", "predicted_bps": 3.0,
            "lower_bps": 1.0, "upper_bps": 5.0, "realised_bps": 3.5 + i, "z": 0.2, "kalman_value": y,
            "kalman_lower": y - 0.1, "kalman_upper": y + 0.1, "sgd": {"Y": y + 0.01}, "live_coef": 0.7,
            "drift_parameter": "Y", "version": 1}


def test_market_figure_and_extend_keep_one_trace_per_market():
    markets = ["binance-usdm:BTCUSDT", "binance-spot:BTCUSDT"]
    ticks = [tick(0), tick(1), tick(0, venue="binance-spot", mid=62000.0)]
    fig = MF.market_figure("mid", markets, ticks)
    assert [t.name for t in fig.data] == markets
    assert list(fig.data[0].y) == [61000.0, 61001.0] and list(fig.data[1].y) == [62000.0]
    ext = MF.market_extend("depth", markets, [tick(2)])
    assert ext[1] == [0] and ext[0]["y"] == [[12.0]] and ext[2] == MF.MAX_POINTS
    assert ext[0]["x"] == [[MF.iso(T0 + 2 * 10**9)]]
    assert MF.market_extend("mid", markets, []) is None
    assert MF.market_extend("regime", markets, [tick(3)])[0]["y"] == [[0.1]]


def test_cost_coef_and_events_payloads_match_their_figures():
    fills = [fill(0), fill(1, y=0.8)]
    fig = MF.cost_figure(fills)
    assert [t.name for t in fig.data] == ["interval low", "interval high", "predicted", "realised"]
    ext = MF.cost_extend([fill(2)])
    assert ext[1] == [0, 1, 2, 3] and ext[0]["y"] == [[1.0], [5.0], [3.0], [5.5]]
    coef = MF.coef_figure(fills)
    assert "Y" in coef.layout.title.text and list(coef.data[2].y) == [0.7, 0.8] and list(coef.data[3].y) == [0.71, 0.81]
    assert MF.coef_extend([fill(3, y=0.9)], "Y")[0]["y"][4] == [0.7]
    events = [make_event("alarm", T0, detector="cusum", statistic=6.0, threshold=5.75, direction="up"),
              make_event("recalibration", T0 + 10**9, version=2, reason="cusum alarm", decision="switch",
                         comparison={"current": {"rmse_bps": 20.0}, "candidate": {"rmse_bps": 12.0}}),
              make_event("stop", None)]
    fig = MF.events_figure(events)
    assert list(fig.data[0].y) == ["cusum"] and list(fig.data[1].y) == ["recalibration"]
    ext = MF.events_extend(events[1:])
    assert ext[1] == [1] and "out-of-sample RMSE 12 vs live 20" in ext[0]["text"][0][0]
    rows = MF.event_rows(events)
    assert rows[0]["kind"] == "stop" and rows[-1]["what"].startswith("cusum up")


def test_tables_and_status_text():
    versions = [{"version": 1, "params": {"h": 1.0, "Y": 0.7}, "reason": "start", "created_at": "2024-08-08T23:54:00",
                 "comparison": {}, "active": False},
                {"version": 2, "params": {"h": 1.0, "Y": 1.39}, "reason": "cusum alarm", "active": True,
                 "created_at": "2024-08-08T23:57:20",
                 "comparison": {"switch": True, "current": {"rmse_bps": 20.0}, "candidate": {"rmse_bps": 12.0}}}]
    rows = MF.history_rows(versions, "Y")
    assert rows[0]["version"] == "v2" and rows[0]["active"] == "live" and rows[0]["coefficient"] == "Y = 1.39"
    assert rows[0]["rule"] == "switch" and rows[1]["oos_rmse_new"] == "–"
    diff = MF.diff_rows([{"key": "model.params.Y", "a": 0.7, "b": 1.39}, {"key": "x", "a": "a" * 100, "b": None}])
    assert diff[0] == {"key": "model.params.Y", "a": "0.7", "b": "1.39"} and diff[1]["a"].endswith("...")
    text = MF.status_text({"alive": True, "counts": {"messages": 1234, "fills_used": 5, "alarms": 1,
                                                     "recalibrations": 1, "gaps": 2},
                           "metrics": {"all": {"n": 5, "rmse_bps": 3.2, "bias_bps": -0.5, "coverage": 0.8}},
                           "replay": {"position": 10, "total": 100, "speed": 10.0}, "live_version": 2})
    assert text.startswith("running · replay 10/100 at 10.0×") and "1,234 messages" in text and "gaps 2" in text
    assert MF.status_text({}) == "No monitor running."


def make_run(tmp_path):
    run_id = "20240808T235400-abcdef"
    d = tmp_path / run_id
    w = StateWriter(d)
    log = EventLog(d / "events.jsonl")
    hist = ConfigHistory(d / "history")
    hist.add({"kind": "impact", "model": {"name": "sqrt", "params": {"h": 1.0, "Y": 0.7}}}, reason="start")
    hist.switch(1, reason="start", by="start")
    for i in range(3):
        w.tick(tick(i))
    w.fill(fill(0))
    log.write(make_event("switch", None, version=1, by="start", reason="start"))
    w.flush()
    (d / "status.json").write_text(json.dumps({"markets": {"binance-usdm:BTCUSDT": {}}, "counts": {}}))
    (d / "run.json").write_text(json.dumps({"pid": None}))
    return run_id, d, w, log, hist


def test_attach_then_poll_reads_only_what_is_new(tmp_path):
    run_id, d, w, log, hist = make_run(tmp_path)
    out = mp.attach(tmp_path, {"run_id": run_id})
    assert out["markets"] == ["binance-usdm:BTCUSDT"]
    assert len(out["figures"][mp.MID].data[0].y) == 3 and len(out["figures"][mp.COST].data[3].y) == 1
    assert out["history"][0]["version"] == "v1" and out["history"][0]["active"] == "live"
    offsets = out["offsets"]
    nothing = mp.poll(tmp_path, offsets)
    assert all(v is None for v in nothing["extend"].values()) and nothing["events"] is None
    # the run goes on: two ticks, a fill, an alarm and a new version
    w.tick(tick(3))
    w.tick(tick(4))
    w.fill(fill(1))
    w.flush()
    log.write(make_event("alarm", T0 + 4 * 10**9, detector="cusum", statistic=7.0, threshold=5.75))
    hist.add({"kind": "impact", "model": {"name": "sqrt", "params": {"h": 1.0, "Y": 1.4}}}, reason="cusum alarm")
    out = mp.poll(tmp_path, offsets)
    assert out["extend"][mp.MID][0]["y"] == [[61003.0, 61004.0]]
    assert out["extend"][mp.COST][0]["y"][3] == [4.5]
    assert out["extend"][mp.EVENTS_GRAPH][1] == [0]
    assert out["events"][0]["kind"] == "alarm" and [r["version"] for r in out["history"]] == ["v2", "v1"]
    assert out["offsets"]["ticks"] > offsets["ticks"] and out["lag_s"] is not None and out["lag_s"] < 60
    again = mp.poll(tmp_path, out["offsets"])
    assert again["extend"][mp.MID] is None and again["history"] is None and again["redraw"] is None
    # a market the figures did not know: they are redrawn (two traces), not extended
    w.tick(tick(5, venue="binance-spot"))
    w.flush()
    out = mp.poll(tmp_path, again["offsets"])
    assert out["extend"][mp.MID] is None and [t.name for t in out["redraw"][mp.MID].data] == \
        ["binance-usdm:BTCUSDT", "binance-spot:BTCUSDT"]
    assert out["offsets"]["markets"] == ["binance-usdm:BTCUSDT", "binance-spot:BTCUSDT"]


def test_start_run_refuses_what_does_not_exist(tmp_path):
    run, note = mp.start_run(tmp_path, None, None, mp.DEMO, None, None, "10")
    assert run is None and note == "Choose a capture to replay."
    run, note = mp.start_run(tmp_path, None, str(tmp_path / "nope.gz"), mp.DEMO, None, None, "10")
    assert run is None and "No such capture file" in note
    cap = tmp_path / "c.gz"
    cap.write_bytes(b"")
    run, note = mp.start_run(tmp_path, str(cap), None, "files", None, None, "10")
    assert run is None and note == "Give the fills file."
    assert mp.attach(tmp_path, {"run_id": "not-a-run"})["offsets"] is None
    assert mp.poll(tmp_path, None) is None


def test_layout_has_unique_ids():
    from execal.live import runs

    layout = mp.layout(None)
    ids = []

    def walk(c):
        if getattr(c, "id", None):
            ids.append(c.id)
        kids = getattr(c, "children", None)
        for ch in kids if isinstance(kids, (list, tuple)) else [kids]:
            if ch is not None and not isinstance(ch, (str, int, float)):
                walk(ch)
    walk(layout)
    assert len(ids) == len(set(ids))
    assert {mp.START, mp.PAUSE, mp.STOP, mp.COEF, mp.COST, mp.HISTORY, mp.SWITCH} <= set(ids)
    with pytest.raises(ValueError):
        runs.run_dir_of("x", "../etc")
