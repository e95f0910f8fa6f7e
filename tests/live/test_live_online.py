"""The online impact path (execal.live.online) against the offline time-varying calibration.

The online Kalman and SGD updates step through the offline kernels one fill at a time; fed the
same fills in the same order with the same settings, their coefficient paths must equal
`calibrate_time_varying` to 1e-9 (Kalman: the filtered path, outlier gate off; SGD: the iterates).
The prediction interval is checked by its coverage on fills simulated from the config's own model.
"""
from __future__ import annotations

import numpy as np
import pytest

from execal.live.online import OnlineImpact
from execal.models.impact import timevarying as tv
from execal.models.impact.fit import Calibrator
from execal.models.impact.simulate import simulate_fills
from execal.models.data.schema import DataError


def fills(n=600, seed=3, **kw):
    frame, truth = simulate_fills(n, model="power_law", params={"Y": 0.8, "delta": 0.55}, seed=seed,
                                  dof=None, noise_scale=0.5, **kw)
    return frame.sort_values("timestamp", kind="stable").reset_index(drop=True), truth


def rows(frame):
    for rec in frame.to_dict("records"):
        rec["timestamp"] = rec["timestamp"].isoformat()
        yield rec


def test_online_kalman_equals_offline_filtered_path():
    frame, _ = fills()
    # a drifting Y so q is positive
    frame["cost_bps"] = frame["cost_bps"] * np.linspace(1.0, 1.6, len(frame))
    cal = Calibrator(model="power_law", optimizer="kalman", loss="linear", options={"outlier_k": 0})
    res = tv.calibrate_time_varying(cal, frame)
    assert res.q > 0
    config = res.to_config()
    online = OnlineImpact(config, kalman_prior="diffuse")
    # the online filter uses the final config's other parameters: the offline Kalman fixes them at
    # the batch fit, which is what the config holds for every parameter but the drifting one
    assert online.theta[online.model.index("delta")] == pytest.approx(res.batch.params["delta"], abs=0)
    values, preds = [], []
    for rec in rows(frame):
        out = online.step_fill(rec)
        values.append(out["kalman_value"])
        preds.append(out["kalman_pred"])
    filtered = res.filtered[0][:, 0]
    np.testing.assert_allclose(values, filtered, rtol=0, atol=1e-9)
    # one-step-ahead: the offline one-step metric is built from the same predicted moments
    kp = tv.kalman_path(*_kalman_arrays(res, frame), res.q / res.noise_scale ** 2)
    np.testing.assert_allclose(preds[1:], kp.m_pred[1:], rtol=0, atol=1e-9)
    assert abs(values[-1] - values[0]) > 0.05          # it moved: the equality is not trivial


def _kalman_arrays(res, frame):
    model = res.model
    f = res.batch.features
    j = model.index("Y")
    theta = np.array(res.batch.theta)
    x = model.jacobian(theta, f, [j])[:, 0]
    t0 = theta.copy()
    t0[j] = 0.0
    y = f.cost_bps - model.predict(t0, f)
    r = f.expected_noise_bps ** 2
    dt = np.r_[0.0, np.diff(f.timestamp_ns) / 86_400e9]
    return y, x, r, dt


def test_online_kalman_with_config_prior_equals_offline_with_a_pseudo_fill():
    frame, _ = fills(n=200, seed=5)
    cal = Calibrator(model="power_law", optimizer="kalman", loss="linear", options={"outlier_k": 0})
    res = tv.calibrate_time_varying(cal, frame)
    config = res.to_config()
    config["time_varying"]["q"] = 0.05            # a hand-set state noise
    online = OnlineImpact(config, kalman_prior="config")
    got = [online.step_fill(rec)["kalman_value"] for rec in rows(frame)]
    y, x, r, dt = _kalman_arrays(res, frame)
    s2 = online.s2
    beta0, p0 = online.theta[1], online.beta_var / s2
    # the prior as a first observation y0 = beta0·1 with variance p0 (x0 = 1, dt0 = 0)
    kp = tv.kalman_path(np.r_[beta0, y], np.r_[1.0, x], np.r_[p0, r], np.r_[0.0, dt], 0.05 / s2)
    np.testing.assert_allclose(got, kp.m_filt[1:], rtol=0, atol=1e-9)


@pytest.mark.parametrize("model", ["power_law", "sqrt", "almgren"])
def test_online_sgd_equals_offline_sgd_path(model):
    frame, _ = fills(n=500, seed=11)
    cal = Calibrator(model=model, optimizer="sgd", loss="soft_l1", options={"window": 200, "t0": 20})
    res = tv.calibrate_time_varying(cal, frame)
    config = res.batch.to_config()
    online = OnlineImpact(config, sgd_start="defaults", sgd_window=200, sgd_t0=20)
    path = []
    for rec in rows(frame):
        out = online.step_fill(rec)
        path.append([out["sgd"][n] for n in res.parameters])
    np.testing.assert_allclose(np.array(path), res.values, rtol=0, atol=1e-9)
    assert np.ptp(np.array(path)[:, 0]) > 1e-3


def test_prediction_interval_covers_at_its_nominal_rate():
    frame, truth = fills(n=3000, seed=8)
    cal = Calibrator(model="power_law", loss="linear")
    res = cal.fit(frame.iloc[:1500])
    online = OnlineImpact(res.to_config(), alpha=0.1)
    covered, z = [], []
    for rec in rows(frame.iloc[1500:]):
        out = online.step_fill(rec)
        covered.append(out["covered"])
        z.append(out["z"])
    # Gaussian noise of known scale: 90 % intervals cover ~90 % of new fills; z is standard normal
    assert np.mean(covered) == pytest.approx(0.90, abs=0.025)
    assert np.std(z) == pytest.approx(1.0, abs=0.06) and abs(np.mean(z)) < 0.08


def test_a_fill_without_the_inputs_is_refused_naming_the_column():
    frame, _ = fills(n=50)
    cal = Calibrator(model="power_law", loss="linear")
    online = OnlineImpact(cal.fit(frame).to_config())
    rec = next(rows(frame))
    rec.pop("volatility")
    with pytest.raises(DataError, match="volatility"):
        online.features(rec)
    assert online.n == 0
