"""The Volatility & regimes panel's pure builders, without Dash: downsampling that keeps a line's envelope,
the regime step function, every figure (what it draws, where, and its designed empty state) and the tables."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.io as pio
import pytest

from execal.components import vol_figures as V
from execal.models.core.report import OptimizerReport
from execal.models.vol.base import VolatilityCalibrator, VolatilityResult


def fit_markov(data, **settings):
    return VolatilityCalibrator("markov", **settings).fit(data)

MIN15_NS = 15 * 60 * 10**9
T0_NS = int(pd.Timestamp("2024-01-01", tz="UTC").value)


def annotation(fig) -> str:
    return " ".join(a.text for a in fig.layout.annotations)


def values(a) -> np.ndarray:
    """A trace's coordinates as numbers (plotly may hold them as numpy arrays or typed-array dicts)."""
    if isinstance(a, dict) and "bdata" in a:
        import base64
        return np.frombuffer(base64.b64decode(a["bdata"]), dtype=np.dtype(a["dtype"]))
    return np.asarray(a, dtype=np.float64)


# --- shaping helpers --------------------------------------------------------------------------


def test_line_index_keeps_everything_when_small():
    assert np.array_equal(V.line_index(50, (np.arange(50.0),), 100), np.arange(50))


def test_line_index_keeps_the_envelope_of_a_long_line():
    rng = np.random.default_rng(1)
    n = 200_000
    y = np.cumsum(rng.standard_normal(n))
    y[123_457] += 500.0      # one spike, and one dip: a plain sample would lose both
    y[7_001] -= 500.0
    idx = V.line_index(n, (y,), 2_000)
    assert idx.shape[0] <= 2_000 and np.all(np.diff(idx) > 0)
    assert {0, n - 1, 123_457, 7_001} <= set(idx.tolist())
    # every bucket's max is kept: the drawn line's running max equals the data's at bucket resolution
    assert y[idx].max() == y.max() and y[idx].min() == y.min()


def test_line_index_ignores_nan_and_checks_lengths():
    y = np.full(10_000, np.nan)
    y[5_000] = 1.0
    idx = V.line_index(10_000, (y,), 100)
    assert 5_000 in idx
    with pytest.raises(ValueError, match="values array"):
        V.line_index(10_000, (np.zeros(3),), 100)


def test_regime_steps_are_the_change_points():
    t = T0_NS + np.arange(6) * MIN15_NS
    x, y, bucket = V.regime_steps(t, np.array([0, 0, 1, 1, 1, 0]), MIN15_NS)
    assert bucket == 1
    assert np.array_equal(x, T0_NS + np.array([0, 2, 5, 6]) * MIN15_NS)   # last: end of the last period
    assert y.tolist() == [0, 1, 0, 0]


def test_regime_steps_take_the_majority_when_too_many_changes():
    n = 10_000
    rng = np.random.default_rng(3)
    regime = (np.arange(n) // 2_500 % 2).astype(int)         # four long runs ...
    flip = rng.random(n) < 0.2                              # ... with 20 % noise flips
    noisy = np.where(flip, 1 - regime, regime)
    x, y, bucket = V.regime_steps(T0_NS + np.arange(n) * MIN15_NS, noisy, MIN15_NS, max_steps=100)
    assert bucket > 1 and x.shape[0] <= 101
    # the majority per bucket recovers the four runs
    assert y[:-1].tolist() == [0, 1, 0, 1]


def test_epoch_ms_agrees_across_time_types():
    idx = pd.date_range("2024-03-01", periods=3, freq="1h", tz="UTC")
    ms = V.epoch_ms(idx)
    assert np.array_equal(ms, V.epoch_ms(pd.Series(idx))) and np.array_equal(ms, V.epoch_ms(idx.as_unit("ns").asi8))
    assert ms[1] - ms[0] == 3_600_000 and pd.Timestamp(ms[0], unit="ms", tz="UTC") == idx[0]


def test_jump_positions():
    t = T0_NS + np.arange(5) * MIN15_NS
    pos = V.jump_positions(t, np.array([t[3], t[0], T0_NS + 7]))
    assert pos.tolist() == [3, 0, -1]


# --- price, regimes and jumps -----------------------------------------------------------------


def _price(n=400, seed=0):
    rng = np.random.default_rng(seed)
    t = T0_NS + np.arange(n, dtype=np.int64) * MIN15_NS
    close = 100 * np.exp(np.cumsum(0.002 * rng.standard_normal(n)))
    return t, close


def test_price_figure_empty_state():
    fig = V.price_regime_figure(None, None, empty_message="Pick some bars")
    assert len(fig.data) == 0 and annotation(fig) == "Pick some bars"


def test_price_figure_shades_the_regimes_and_marks_jumps():
    t, close = _price()
    regime = np.zeros(399, dtype=int)
    regime[100:180] = 1
    path = pd.DataFrame({"timestamp": pd.to_datetime(t[1:], unit="ns", utc=True), "regime": regime})
    regimes = [{"regime": 0, "sigma_daily": 0.02}, {"regime": 1, "sigma_daily": 0.05}]
    jumps = pd.DataFrame({"timestamp": pd.to_datetime(t[[50, 250]], unit="ns", utc=True), "return": [0.03, -0.04],
                          "statistic": [9.0, 11.0]})
    fig = V.price_regime_figure(t, close, bar_ns=MIN15_NS, symbol="BTCUSDT", regime_path=path, regimes=regimes,
                                period_ns=MIN15_NS, jumps=jumps)
    names = [tr.name for tr in fig.data]
    assert names[0] == "regime 0 · calm (σ 2.00 %/day)" and names[1] == "regime 1 · stressed (σ 5.00 %/day)"
    shade = fig.data[1]
    assert shade.fill == "tozeroy" and shade.line.shape == "hv" and shade.yaxis == "y"
    xs, ys = values(shade.x), values(shade.y)
    # stressed from bar 101 (the regime path starts at the second bar) to the end of bar 180
    assert ys.tolist() == [0, 1, 0, 0]
    assert xs[1] == (t[101]) / 1e6 and xs[2] == t[181] / 1e6
    price = fig.data[2]
    assert price.yaxis == "y2" and values(price.y).shape[0] == 400
    markers = fig.data[3]
    assert markers.name.startswith("jumps (Lee–Mykland): 2")
    # the markers sit on the price of the flagged bars
    assert np.allclose(values(markers.y), close[[50, 250]]) and np.allclose(values(markers.x), t[[50, 250]] / 1e6)
    assert fig.layout.yaxis2.overlaying == "y" and fig.layout.yaxis.visible is False


def test_price_figure_says_when_no_jump_was_flagged():
    t, close = _price()
    fig = V.price_regime_figure(t, close, bar_ns=MIN15_NS, jumps=pd.DataFrame({"timestamp": [], "return": []}),
                                jump_note="no jump flagged (Lee–Mykland, α = 0.01)")
    assert "no jump flagged (Lee–Mykland" in annotation(fig) and len(fig.data) == 1


def test_price_figure_of_a_million_bars_stays_small():
    t, close = _price(1_000_000, seed=2)
    regime = (np.arange(999_999) // 50_000 % 2).astype(int)
    path = pd.DataFrame({"timestamp": pd.to_datetime(t[1:], unit="ns", utc=True), "regime": regime})
    fig = V.price_regime_figure(t, close, bar_ns=MIN15_NS, regime_path=path, period_ns=MIN15_NS)
    price = fig.data[-1]
    y = values(price.y)
    assert y.shape[0] <= V.MAX_LINE_POINTS and y.max() == close.max() and y.min() == close.min()
    assert len(pio.to_json(fig)) < 400_000
    assert "of 1,000,000 bars drawn" in annotation(fig)


def test_merton_jumps_are_marked_separately():
    t, close = _price()
    mj = pd.DataFrame({"timestamp": pd.to_datetime(t[[10]], unit="ns", utc=True), "return": [0.05], "p_jump": [0.9]})
    fig = V.price_regime_figure(t, close, bar_ns=MIN15_NS, model_jumps=mj)
    assert fig.data[-1].name.startswith("Merton jump posterior") and np.allclose(values(fig.data[-1].y), close[10])


# --- realised, GARCH, probabilities -------------------------------------------------------------


def _tidy():
    periods = pd.date_range("2024-01-01", periods=5, freq="1D", tz="UTC")
    rows = []
    for e, level in (("parkinson", 0.02), ("yang_zhang", 0.03), ("bipower", 0.025)):
        for i, p in enumerate(periods):
            rows.append({"period": p, "estimator": e, "sigma_daily": level + 0.001 * i,
                         "sigma_annualized": (level + 0.001 * i) * math.sqrt(365), "n_bars": 96,
                         "complete": i != 4})
    return pd.DataFrame(rows)


def test_realized_figure_draws_the_ticked_estimators_side_by_side():
    tidy = _tidy()
    fig = V.realized_figure(tidy, ["yang_zhang", "parkinson"])
    assert [tr.name for tr in fig.data] == ["Yang–Zhang", "Parkinson"]
    yz = tidy[tidy["estimator"] == "yang_zhang"]["sigma_annualized"].to_numpy()
    assert np.allclose(values(fig.data[0].y), 100 * yz, rtol=1e-6)
    # the incomplete last period is an open marker
    assert values(fig.data[0].marker.symbol).tolist() == [0] * 4 + [100]     # circle, circle-open


def test_realized_figure_empty_states():
    assert "Tick at least one" in annotation(V.realized_figure(_tidy(), []))
    assert annotation(V.realized_figure(None, ["parkinson"])) == "No realised volatility to draw"


def _vol_frame(n=300):
    ts = pd.date_range("2024-01-01", periods=n, freq="15min", tz="UTC")
    sig = 0.002 + 0.001 * np.sin(np.arange(n) / 20)
    daily = sig * math.sqrt(96)
    return pd.DataFrame({"timestamp": ts, "return": 0.0, "sigma": sig, "sigma_daily": daily,
                         "sigma_annualized": daily * math.sqrt(365)})


def test_garch_figure_joins_the_forecast_to_the_path():
    vf = _vol_frame()
    fc = pd.DataFrame({"h": [1, 2, 3], "timestamp": pd.date_range(vf["timestamp"].iloc[-1] + pd.Timedelta("15min"),
                                                                  periods=3, freq="15min"),
                       "sigma_annualized": [0.5, 0.52, 0.54]})
    real = pd.DataFrame({"period": pd.date_range("2024-01-01", periods=4, freq="1D", tz="UTC"),
                         "sigma_annualized": [0.4, 0.5, 0.45, 0.6]})
    fig = V.garch_figure(vf, fc, label="GARCH(1,1)", long_run_annualized=0.55, realized=real, realized_label="YZ")
    names = [tr.name for tr in fig.data]
    assert names == ["YZ", "GARCH(1,1) conditional σ", "forecast, 3 periods ahead"]
    f = fig.data[2]
    assert np.allclose(values(f.y)[1:], [50, 52, 54], rtol=1e-6)
    assert values(f.y)[0] == pytest.approx(100 * vf["sigma_annualized"].iloc[-1], rel=1e-6)
    assert values(f.x)[0] == V.epoch_ms(vf["timestamp"])[-1]
    assert any(abs(s.y0 - 55.0) < 1e-9 for s in fig.layout.shapes)       # the long-run level


def test_garch_figure_empty_state():
    assert annotation(V.garch_figure(None, empty_message="GARCH failed: too few returns")) == \
        "GARCH failed: too few returns"


def test_regime_probabilities_stack_to_one():
    n, k = 500, 3
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(k), size=n)
    ts = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    frame = pd.DataFrame({"timestamp": np.repeat(ts.to_numpy(), k), "regime": np.tile(np.arange(k), n),
                          "filtered": p.ravel(), "smoothed": p.ravel()})
    t, probs = V.probabilities_arrays(frame)
    assert np.array_equal(t, ts.as_unit("ns").asi8) and np.array_equal(probs, p)
    fig = V.regime_probabilities_figure(t, probs, max_points=10_000)
    assert [tr.stackgroup for tr in fig.data] == ["regimes"] * 3
    ys = np.column_stack([values(tr.y) for tr in fig.data])
    assert np.allclose(ys.sum(axis=1), 1.0, atol=1e-5) and np.allclose(ys, p, atol=1e-6)
    small = V.regime_probabilities_figure(t, probs, max_points=60)
    assert len(values(small.data[0].x)) < n and len({len(values(tr.x)) for tr in small.data}) == 1


def test_regime_probabilities_empty_state():
    assert annotation(V.regime_probabilities_figure(None, None, empty_message="no regimes")) == "no regimes"


def test_coefficient_path_figure_bands_and_batch_line():
    ts = pd.date_range("2024-01-01", periods=50, freq="1D", tz="UTC")
    path = pd.DataFrame({"timestamp": ts, "parameter": "Y", "value": np.linspace(0.5, 1.0, 50)})
    path["lower"], path["upper"] = path["value"] - 0.1, path["value"] + 0.1
    fig = V.coefficient_path_figure(path, batch={"Y": 0.7})
    assert [tr.name for tr in fig.data] == [None, "Y band", "Y"] and fig.data[1].fill == "tonexty"
    assert np.allclose(values(fig.data[0].y), path["upper"], atol=1e-6)
    assert any(abs(s.y0 - 0.7) < 1e-9 for s in fig.layout.shapes)
    assert annotation(V.coefficient_path_figure(None)) == "No coefficient path to draw"


def test_cost_by_regime_figure():
    rows = [{"regime": 0, "label": "Y", "value": 0.6, "lower": 0.5, "upper": 0.7, "n": 100},
            {"regime": 1, "label": "Y", "value": 0.9, "lower": 0.7, "upper": 1.1, "n": 20}]
    fig = V.cost_by_regime_figure(rows)
    assert [tr.name for tr in fig.data] == ["regime 0 · calm", "regime 1 · stressed"]
    assert list(fig.data[1].y) == [0.9] and np.allclose(fig.data[1].error_y.array, [0.2])
    assert annotation(V.cost_by_regime_figure([])) == "No cost by regime to draw"


# --- tables -----------------------------------------------------------------------------------


def _result(converged=True, message="ok", **kw) -> VolatilityResult:
    report = OptimizerReport(method="SLSQP", iterations=12, converged=converged, success=converged, message=message)
    if kw.get("status") == "closed_form":
        report = OptimizerReport.closed_form(message)
    base = dict(model="garch", params={"omega": 0.05, "beta[1]": 0.9}, std_errors={"omega": 0.01, "beta[1]": float("nan")},
                loglikelihood=1000.0, n_obs=500, status="fitted", report=report,
                units={"omega": "(return×100)²"})
    base.update(kw)
    return VolatilityResult(**base)


def test_status_summary_levels():
    assert V.status_summary("garch", _result())["level"] == "success"
    bad = V.status_summary("garch", _result(converged=False, message="Iteration limit reached"))
    assert bad["level"] == "danger" and bad["headline"].startswith("NOT CONVERGED — Iteration limit reached")
    assert bad["badge"] == "NOT converged"
    warn = V.status_summary("markov", _result(model="markov", warnings=("Hessian not negative definite",)))
    assert warn["level"] == "warning" and warn["details"] == ["Hessian not negative definite"]
    assert V.status_summary("markov", error="too few observations")["level"] == "danger"
    assert V.status_summary("merton", None, requested=False)["headline"] == "not requested"
    closed = V.status_summary("realized", _result(model="realized", status="closed_form", message="yz"))
    assert closed["badge"] == "Closed form" and closed["level"] == "success"
    assert "12 iterations" in V.status_summary("garch", _result())["headline"]


def test_parameter_rows_show_estimates_errors_and_intervals():
    res = _result()
    rows = {r["parameter"]: r for r in V.parameter_rows(res)}
    lo, hi = res.conf_int()["omega"]
    assert rows["omega"]["std err"] == "0.01" and rows["omega"]["95% CI"] == f"[{lo:.4g}, {hi:.4g}]"
    assert rows["beta[1]"]["std err"] == "—" and rows["beta[1]"]["95% CI"] == "—"
    assert rows["omega"]["unit"] == "(return×100)²"


def test_fit_rows_compare_likelihoods():
    rows = V.fit_rows({"garch": _result(), "markov": None,
                       "realized": _result(model="realized", loglikelihood=None, status="closed_form")})
    g = next(r for r in rows if r["model"] == "GARCH(1,1)")
    assert g["AIC"] == V.format_number(2 * 2 - 2 * 1000.0, 8) and g["converged"] == "yes"
    assert next(r for r in rows if r["model"] == "Realised volatility")["log-likelihood"] == "—"
    assert len(rows) == 2


def test_regime_rows_from_a_fit():
    rng = np.random.default_rng(5)
    n = 4000
    state = np.zeros(n, dtype=int)
    for i in range(1, n):
        state[i] = state[i - 1] if rng.random() < 0.98 else 1 - state[i - 1]
    r = rng.standard_normal(n) * np.where(state == 1, 0.004, 0.001)
    res = fit_markov(pd.Series(r, index=pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")))
    rows = V.regime_rows(res.regimes)
    assert [row["regime"] for row in rows] == ["regime 0 · calm", "regime 1 · stressed"]
    p00 = res.transition[0, 0]
    assert rows[0]["expected duration"].endswith(f"({V.format_number(1 / (1 - p00), 4)} periods)")
    share = res.regimes[1]["share_of_time"]
    assert rows[1]["share of time"] == f"{100 * share:.3g} %"
    trans = V.transition_rows(res.transition)
    assert trans[0]["regime 1"] == V.format_number(res.transition[0, 1], 4)


def test_realized_and_garch_summary_rows():
    class R:
        stats = {"by_estimator_sigma_daily": {"parkinson": 0.02}}
    rows = V.realized_rows(R(), ["parkinson", "bipower"])
    assert rows[0]["σ daily"] == "2 %" and rows[0]["σ annualised"] == f"{100 * 0.02 * math.sqrt(365):.3g} %"
    assert rows[1]["σ daily"] == "—"

    class G:
        scale = 100.0
        stats = {"persistence": 0.97, "half_life_days": 0.24, "half_life_periods": 22.8,
                   "sigma_annualized_long_run": 0.5, "sigma_daily_last": 0.03}
    g = {r["quantity"]: r["value"] for r in V.garch_summary_rows(G())}
    assert g["persistence"] == "0.97" and g["long-run σ annualised"] == "50 %"
    assert V.garch_summary_rows(None) == [] and V.merton_summary_rows(None) == []


def test_regime_impact_rows():
    coefficients = {"Y": [{"key": {"regime": "calm"}, "value": 0.76, "std_error": 0.046, "rows": 150, "ratio_to_calm": 1.0},
                          {"key": {"regime": "stressed"}, "value": 0.79, "std_error": 0.083, "rows": 50,
                           "ratio_to_calm": 0.79 / 0.76}]}
    cost = [{"regime": "calm", "n": 150, "mean_bps": 7.9, "se_bps": 0.48},
            {"regime": "stressed", "n": 50, "mean_bps": 16.3, "se_bps": 1.6}]
    rows = V.regime_impact_rows(coefficients, cost)
    assert [r["regime"] for r in rows] == ["calm", "stressed"]
    assert rows[0] == {"regime": "calm", "fills": "150", "mean cost (bps)": "7.9 ± 0.48", "Y": "0.76 ± 0.046",
                       "key": "calm"}
    assert rows[1]["Y"] == f"0.79 ± 0.083 (×{0.79 / 0.76:.3g} calm)"
