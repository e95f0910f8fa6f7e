"""The live area's pieces against independent references: the Hamilton step against the offline
Markov filter, the realised-volatility estimators against a direct computation, the detectors'
false-alarm rates and reaction to a known shift, the rolling metrics, the config history."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from execal.models.live.detectors import (Cusum, InnovationTest, LiquidityAlarm, PageHinkley, RegimeAlarm,
                                          RollingMedian, cusum_arl0, cusum_threshold)
from execal.models.live.events import EventLog, make_event, read_events
from execal.models.live.market import MarketState
from execal.models.live.metrics import RollingErrors
from execal.models.live.regime import HamiltonFilter
from execal.models.live.versions import ConfigHistory, HistoryError, compare_out_of_sample, config_hash
from execal.models.vol import regimes
from execal.models.vol.base import VolatilityCalibrator


def test_hamilton_step_equals_the_offline_filter():
    rng = np.random.default_rng(0)
    P = np.array([[0.97, 0.03], [0.08, 0.92]])
    sig2 = np.array([1e-6, 9e-6])
    s, y = 0, []
    for _ in range(500):
        s = rng.choice(2, p=P[s])
        y.append(rng.normal(0.0, math.sqrt(sig2[s])))
    y = np.array(y)
    _, F, _, _ = regimes._filter(y, P, np.zeros(2), sig2)
    hf = HamiltonFilter(P, 0.0, sig2, period_s=60)
    online = np.array([hf.step(r).copy() for r in y])
    np.testing.assert_allclose(online, F, atol=1e-10)
    assert 0.2 < online[:, 1].mean() < 0.5


def test_hamilton_from_a_fitted_markov_result():
    rng = np.random.default_rng(1)
    y = np.r_[rng.normal(0, 0.001, 400), rng.normal(0, 0.004, 200), rng.normal(0, 0.001, 400)]
    import pandas as pd
    bars = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=y.size + 1, freq="1min", tz="UTC"),
                         "symbol": "X", "close": 100 * np.exp(np.r_[0, np.cumsum(y)])})
    bars["open"] = bars["high"] = bars["low"] = bars["close"]
    bars["volume"] = 1.0
    res = VolatilityCalibrator("markov", k_regimes=2).fit(bars)
    hf = HamiltonFilter.from_config({"transition": res.transition.tolist(), "mu": res.mu.tolist(),
                                     "sigma2": res.sigma2.tolist(), "period_s": 60})
    r = np.asarray(res.returns.values)
    _, F = res.filter(r)
    online = np.array([hf.step(v).copy() for v in r])
    np.testing.assert_allclose(online, F, atol=1e-9)
    assert online[450:550, 1].mean() > 0.8 and online[:300, 1].mean() < 0.2


def test_realised_volatility_matches_a_direct_computation():
    st = MarketState("v", "X", "usdm", vol_halflife_s=30, bipower_window_s=100)
    rng = np.random.default_rng(2)
    mids = 100 * np.exp(np.cumsum(rng.normal(0, 2e-4, 400)))
    for i, m in enumerate(mids):
        st.on_ticker(m - 0.01, m + 0.01, (1_000 + i) * 1000)     # one ticker a second (ms)
    st.finish()
    r = np.diff(np.log(mids))
    lam = 0.5 ** (1 / 30)
    v = r[0] ** 2
    for x in r[1:]:
        v = lam * v + (1 - lam) * x * x
    ewma, bip = st.sigma_daily()
    assert ewma == pytest.approx(math.sqrt(v * 86400), rel=1e-9)
    a = np.abs(r)
    terms = (a[1:] * a[:-1])[-100:]
    assert bip == pytest.approx(math.sqrt(np.pi / 2 * terms.mean() * 86400), rel=1e-9)
    assert bip == pytest.approx(2e-4 * math.sqrt(86400), rel=0.25)


def test_walk_one_equals_the_vectorised_walk_book():
    from execal.models.data.book import walk_book
    from execal.models.live.market import walk_one
    rng = np.random.default_rng(9)
    px = 100 + np.cumsum(rng.uniform(0.01, 0.1, 30))
    sz = rng.uniform(0.1, 2.0, 30)
    px[-3:] = np.nan
    sizes = np.array([0.05, 1.0, 7.5, 20.0, 1000.0])
    want = walk_book(px[None], sz[None], sizes, np.array([99.9]), +1).cost_bps[0]
    np.testing.assert_allclose(walk_one(px, sz, sizes, 99.9, +1), want, rtol=1e-12)
    assert np.isnan(want[-1]) and np.isfinite(want[:-1]).all()


def test_cusum_threshold_and_false_alarm_rate():
    h = cusum_threshold(0.5, 1000)
    assert cusum_arl0(0.5, h) == pytest.approx(1000)
    assert cusum_arl0(0.5, 5.0) == pytest.approx(469, rel=0.01)        # the textbook one-sided 938 / 2
    rng = np.random.default_rng(3)
    det = Cusum(k=0.5, arl0=200)
    z = rng.standard_normal(200_000)
    alarms = sum(det.update(v) is not None for v in z)
    # Siegmund's approximation is close for k = 0.5: the rate within 20 % of 1/200
    assert alarms / z.size == pytest.approx(1 / 200, rel=0.2)


def test_detectors_fire_after_a_shift_and_not_before():
    rng = np.random.default_rng(4)
    z = np.r_[rng.standard_normal(300), rng.standard_normal(300) + 1.5]
    for det in (Cusum(), PageHinkley()):
        fired = [i for i, v in enumerate(z) if det.update(v) is not None]
        assert fired and 300 <= fired[0] < 340, det.name
    it = InnovationTest(window=20, alpha=1e-3)
    fired = [i for i, v in enumerate(z) if it.update(v) is not None]
    assert fired and 300 <= fired[0] < 360
    # one huge outlier moves CUSUM by at most clip - k
    det = Cusum()
    assert det.update(50.0) is None and det.statistic == pytest.approx(4.0 - 0.5)


def test_liquidity_alarm_and_rolling_median():
    rm = RollingMedian(5)
    for x in [5, 1, 4, 2, 3, 100]:
        rm.push(x)
    assert rm.median == 3 and len(rm) == 5
    alarm = LiquidityAlarm(ratio=0.3, recover=0.6, window_s=100, min_s=3, min_history_s=20)
    depth = [10.0] * 60 + [2.0] * 5 + [10.0] * 5
    events = [(i, e) for i, d in enumerate(depth) if (e := alarm.update(d))]
    assert [e["direction"] for _, e in events] == ["down", "recovered"]
    assert events[0][0] == 62 and events[1][0] == 65


def test_regime_alarm_needs_the_probability_threshold():
    ra = RegimeAlarm(p_min=0.8)
    seq = [[0.9, 0.1], [0.6, 0.4], [0.45, 0.55], [0.15, 0.85], [0.2, 0.8]]
    out = [ra.update(p) for p in seq]
    assert [o is not None for o in out] == [False, False, False, True, False]
    assert out[3]["from_regime"] == 0 and out[3]["to_regime"] == 1


def test_rolling_errors():
    re = RollingErrors(window=3, nominal=0.9)
    for y, p in [(1, 2), (2, 2), (3, 5), (10, 4)]:
        re.add("okx", y, p, p - 1.5, p + 1.5)
    m = re.metrics("okx")
    err = np.array([0, 2, -6])
    assert m["n"] == 3 and m["total"] == 4
    assert m["rmse_bps"] == pytest.approx(np.sqrt(np.mean(err ** 2)))
    assert m["bias_bps"] == pytest.approx(err.mean()) and m["coverage"] == pytest.approx(1 / 3)


def test_config_history_never_overwrites_and_diffs(tmp_path):
    h = ConfigHistory(tmp_path)
    base = {"kind": "impact", "model": {"name": "sqrt", "params": {"h": 1.0, "Y": 0.7}}}
    v1 = h.add(base, reason="start")
    v2 = h.add({**base, "model": {"name": "sqrt", "params": {"h": 1.0, "Y": 0.9}}}, reason="cusum alarm",
               parent=h.full_hash(1), window={"fills": 300})
    assert (v1["version"], v2["version"]) == (1, 2) and v1["file"] != v2["file"]
    assert h.load(2)["versioning"]["parent"] == config_hash(h.load(1))
    d = {r["key"]: (r["a"], r["b"]) for r in h.diff(1, 2)}
    assert d["model.params.Y"] == (0.7, 0.9) and "versioning.reason" in d
    assert h.active() is None
    h.switch(1, reason="start", by="start")
    h.switch(v2["hash"], reason="user", by="user")
    assert h.active()["version"] == 2 and [v["active"] for v in h.versions()] == [False, True]
    # an edited file is refused; a third add is version 3 whatever was deleted
    p = tmp_path / v1["file"]
    p.write_text(p.read_text().replace("0.7", "0.75"))
    with pytest.raises(HistoryError, match="does not match"):
        h.load(1)
    assert h.add(base, reason="schedule")["version"] == 3
    with pytest.raises(HistoryError):
        h.load("v9")


def test_switch_rule():
    rng = np.random.default_rng(5)
    y = rng.normal(10, 2, 400)
    good = y + rng.normal(0, 1, 400)
    bad = y + 3 + rng.normal(0, 1, 400)
    out = compare_out_of_sample(y, bad, good)
    assert out["switch"] and out["improvement"] > 0.5 and out["p_value"] < 1e-6
    same = compare_out_of_sample(y, good, good + rng.normal(0, 0.01, 400))
    assert not same["switch"]
    assert not compare_out_of_sample(y[:5], bad[:5], good[:5])["switch"]


def test_event_log_appends_lines(tmp_path):
    log = EventLog(tmp_path / "ev.jsonl")
    log.write(make_event("alarm", 1_723_161_300_000_000_000, detector="cusum", statistic=6.1, venue="x"))
    log.write(make_event("recalibration", None, version=2))
    events, off = read_events(tmp_path / "ev.jsonl")
    assert [e["kind"] for e in events] == ["alarm", "recalibration"]
    assert events[0]["time"].startswith("2024-08-08T23:55:00")
    log.write(make_event("stop", None))
    more, _ = read_events(tmp_path / "ev.jsonl", off)
    assert [e["kind"] for e in more] == ["stop"] and log.counts == {"cusum": 1, "recalibration": 1, "stop": 1}
    log.close()
    json.loads((tmp_path / "ev.jsonl").read_text().splitlines()[0])
