"""The monitor loop without sockets: a real capture fed line by line and fills with a known change in
impact. Checks: fills wait for their market and are priced on its state, missing inputs come from
the market, the change is detected after it happens, the refit on the fills since the estimated
change point becomes live by the out-of-sample rule (or waits for the user), events and history."""
from __future__ import annotations

import gzip
import json

import numpy as np
import orjson
import pandas as pd
import pytest

from execal.live.engine import Monitor, MonitorSettings
from execal.live.synthetic import change_point_fills, to_records
from execal.models.impact.fit import Calibrator
from execal.models.live.events import EventLog
from execal.models.live.versions import ConfigHistory

pytestmark = pytest.mark.shared_data
START = pd.Timestamp("2024-08-08T23:54:20Z").value
END = pd.Timestamp("2024-08-08T23:59:55Z").value
CHANGE = pd.Timestamp("2024-08-08T23:57:00Z").value


@pytest.fixture(scope="module")
def lines(shared_data):
    with gzip.open(shared_data / "binance-raw" / "usdm_btcusdt_20240808.gz", "rb") as fh:
        return [line[line.index(b" ") + 1:] for line in fh if line.strip()]


@pytest.fixture(scope="module")
def config():
    pre, _ = change_point_fills(2000, START - 86_400 * 10**9, START, seed=1)
    return Calibrator(model="sqrt", loss="linear").fit(pre).to_config()


def replay(mon, lines, fills):
    """Market lines in order; all fills queued up front (they wait for the market)."""
    for rec in fills:
        mon.on_fill(rec)
    assert mon.counts["fills_used"] == 0 and len(mon.pending) == len(fills)
    for raw in lines:
        if raw.startswith(b'{"stream"'):
            mon.on_message("binance-usdm", raw)
        else:
            mon.on_snapshot("binance-usdm", "BTCUSDT", orjson.loads(raw))
        if mon.pending and mon.markets[("binance-usdm", "BTCUSDT")].last_time_ns >= mon.pending[0].t_ns:
            mon.poll()
    mon.finish()


def test_change_is_detected_refitted_and_switched(lines, config, tmp_path):
    fills, truth = change_point_fills(800, START, END, change_ns=CHANGE, params_after={"Y": 1.4}, seed=2)
    mon = Monitor(config, events=EventLog(tmp_path / "ev.jsonl"), history=ConfigHistory(tmp_path / "h"),
                  background=False)
    mon.add_market("binance-usdm", "BTCUSDT", "usdm")
    seen_at = []
    mon.fill_sinks.append(lambda r: seen_at.append((r["t_ns"], mon.markets[("binance-usdm", "BTCUSDT")].last_time_ns)))
    replay(mon, lines, to_records(fills))
    assert mon.counts["fills_used"] == 800
    # each fill was priced once its market had reached its time (never against a future state)
    assert all(m is not None and m >= t for t, m in seen_at[:-5])
    events = [json.loads(x) for x in (tmp_path / "ev.jsonl").read_text().splitlines()]
    alarms = [e for e in events if e["kind"] == "alarm" and e["detector"] in ("cusum", "page_hinkley")]
    first = alarms[0]
    assert CHANGE <= first["t_ns"] < CHANGE + 30 * 10**9               # no false alarm before the change
    assert abs(first["changepoint_ns"] - CHANGE) < 30 * 10**9          # the change point is located
    recal = [e for e in events if e["kind"] == "recalibration"]
    assert recal and recal[0]["decision"] == "switch" and recal[0]["comparison"]["switch"]
    assert recal[0]["params"]["Y"] == pytest.approx(1.4, rel=0.15)      # the new impact is recovered
    assert recal[0]["window"]["start"] >= pd.Timestamp(first["changepoint_ns"], tz="UTC").isoformat()
    sw = [e for e in events if e["kind"] == "switch"]
    assert [e["by"] for e in sw[:2]] == ["start", "rule"] and mon.live_version >= 2
    # after the switch the model fits again: the rolling error is back near the noise floor
    m = mon.metrics.metrics("binance-usdm")
    assert abs(m["bias_bps"]) < 3 and 0.85 < m["coverage"] <= 1.0
    history = ConfigHistory(tmp_path / "h")
    v2 = history.load(2)
    assert v2["versioning"]["parent"] == history.full_hash(1) and v2["versioning"]["reason"].endswith("alarm")


def test_without_auto_switch_the_candidate_waits_for_the_user(lines, config, tmp_path):
    fills, _ = change_point_fills(600, START, END, change_ns=CHANGE, params_after={"Y": 1.4}, seed=3)
    mon = Monitor(config, settings=MonitorSettings(auto_switch=False), history=ConfigHistory(tmp_path / "h"),
                  background=False)
    mon.add_market("binance-usdm", "BTCUSDT", "usdm")
    replay(mon, lines, to_records(fills))
    rec = [e for e in mon.events.recent if e["kind"] == "recalibration"]
    assert rec and rec[0]["decision"] == "candidate" and mon.live_version == 1
    mon.switch_to(rec[0]["version"])
    assert mon.live_version == rec[0]["version"]
    assert mon.history.switches()[-1]["by"] == "user"


def test_fill_inputs_come_from_the_market_state(lines, config):
    fills, _ = change_point_fills(50, START + 60 * 10**9, START + 120 * 10**9, seed=4)
    recs = to_records(fills)
    for r in recs:
        del r["volatility"], r["spread_bps"], r["adv"]
    mon = Monitor(config, background=False)
    state = mon.add_market("binance-usdm", "BTCUSDT", "usdm")
    got = []
    mon.fill_sinks.append(got.append)
    replay(mon, lines, recs)
    assert mon.counts["fills_used"] == 50
    assert set(got[0]["filled_from_market"]) == {"volatility", "spread_bps", "adv"}
    # the volatility the fill was given is the market's realised estimate at that time
    assert np.isfinite([g["predicted_bps"] for g in got]).all()
    assert state.sigma_daily()[0] > 0


def test_unusable_fills_are_refused_and_counted(config):
    mon = Monitor(config, background=False)
    mon.on_fill({"symbol": "BTCUSDT"})                                   # no timestamp
    mon.on_fill({"timestamp": "2024-08-08T23:55:00Z", "symbol": "XYZ", "side": "buy", "quantity": 1.0})
    mon.poll(flush=True)
    assert mon.counts["fills_refused"] == 2 and mon.counts["fills_used"] == 0
    assert [e["kind"] for e in mon.events.recent].count("fill_refused") == 2


def test_regime_probability_each_period_equals_the_offline_filter_on_the_mids(lines):
    from execal.models.live.regime import HamiltonFilter
    from execal.models.vol import regimes

    block = {"transition": [[0.95, 0.05], [0.10, 0.90]], "mu": [0.0, 0.0],
             "sigma2": [(3e-5) ** 2, (3e-4) ** 2], "period_s": 5}
    mon = Monitor(None, settings=MonitorSettings(regime=block), background=False)
    state = mon.add_market("binance-usdm", "BTCUSDT", "usdm")
    replay(mon, lines, [])
    ticks = list(state.ticks)
    assert all("p_regime" in t for t in ticks)
    # the regime steps every 5 s of the one-second grid on the mid's log return over the period
    mids = np.array([t["mid"] for t in ticks])
    grid = np.array([t["t_ns"] for t in ticks])
    assert np.all(np.diff(grid) == 10**9)
    r = np.diff(np.log(mids[::5]))
    _, F, _, _ = regimes._filter(r, np.array(block["transition"]), np.zeros(2), np.array(block["sigma2"]))
    assert state.regime.steps == len(r)
    np.testing.assert_allclose(state.regime.probabilities, F[-1], atol=1e-9)
    assert HamiltonFilter.from_config(block).k == 2


def test_scheduled_recalibration_without_a_change_keeps_the_live_config(lines, config, tmp_path):
    fills, _ = change_point_fills(400, START, END, seed=5)
    mon = Monitor(config, settings=MonitorSettings(recalibrate_every_fills=150, recalibrate_on=()),
                  history=ConfigHistory(tmp_path / "h"), background=False)
    mon.add_market("binance-usdm", "BTCUSDT", "usdm")
    replay(mon, lines, to_records(fills))
    recal = [e for e in mon.events.recent if e["kind"] == "recalibration"]
    assert len(recal) == 2 and all(e["reason"] == "schedule" for e in recal)
    # no change in impact: the refits are not better out of sample, the live config stays v1
    assert all(e["decision"] == "candidate" for e in recal) and mon.live_version == 1
    assert [v["version"] for v in mon.history.versions()] == [1, 2, 3]
