"""Pure figure and table builders of the Diagnostics and Tweak panels: no Dash, no browser.

Checked against independent computations (pandas groupby, numpy on the full arrays, scipy), not against
themselves: what a figure draws must be what the data says.
"""
from __future__ import annotations

import base64
import warnings

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from plotly.io.json import to_json_plotly
from scipy import stats

from execal.components import impact_figures as F
from execal.models.impact.fit import Calibrator, CalibrationWarning
from execal.models.impact.simulate import simulate_fills


@pytest.fixture(scope="module")
def big():
    """30,000 simulated fills: more than a scatter draws, so downsampling and WebGL kick in."""
    fills, _ = simulate_fills(30_000, params={"Y": 0.7, "delta": 0.5}, seed=3, outlier_share=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return fills, Calibrator().fit(fills)


def decode(spec) -> np.ndarray:
    """Values of a trace array as the browser gets them (typed-array spec or list)."""
    if isinstance(spec, dict) and "bdata" in spec:
        return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
    return np.asarray(spec, dtype=np.float64)


# --- downsampling -------------------------------------------------------------------------------


def test_downsample_keeps_everything_when_small():
    idx = F.downsample_index(50, 100, extremes=(np.arange(50.0),))
    assert np.array_equal(idx, np.arange(50))


def test_downsample_keeps_the_extremes_and_respects_the_budget():
    rng = np.random.default_rng(0)
    n = 200_000
    a, b = rng.standard_normal(n), rng.standard_t(2, n)
    b[17] = np.nan
    idx = F.downsample_index(n, 5_000, extremes=(a, b), seed=1)
    assert idx.size == 5_000
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < n
    # the largest and smallest values of each array are among the drawn rows (NaN is not an extreme)
    for values in (a, b):
        order = np.argsort(np.where(np.isfinite(values), values, np.nan))
        finite_order = order[np.isfinite(values[order])]
        k = 5_000 // 5 // 4
        assert set(finite_order[:k]) <= set(idx)
        assert set(finite_order[-k:]) <= set(idx)
    # seeded: the same call draws the same rows, another seed other rows
    assert np.array_equal(idx, F.downsample_index(n, 5_000, extremes=(a, b), seed=1))
    assert not np.array_equal(idx, F.downsample_index(n, 5_000, extremes=(a, b), seed=2))


def test_downsample_rejects_misaligned_extremes():
    with pytest.raises(ValueError, match="10 values for 100 rows"):
        F.downsample_index(100, 10, extremes=(np.zeros(10),))


# --- views --------------------------------------------------------------------------------------


def test_result_view_matches_the_result(fitted):
    v = F.result_view(fitted)
    assert v.n == fitted.features.n
    np.testing.assert_array_equal(v.residual_bps, fitted.residuals_bps)
    np.testing.assert_allclose(v.residual_weights, 1.0 / fitted.features.expected_noise_bps)
    assert v.weights == "noise" and v.venue[1] == ("binance", "coinbase", "okx")
    tweaked = v.with_predicted(v.predicted_bps + 1.0)
    np.testing.assert_allclose(tweaked.residual_bps, fitted.residuals_bps - 1.0)
    assert tweaked.observed_bps is v.observed_bps     # shared, not copied


def test_segmented_view_predicts_each_order_with_its_segment(segmented, sample):
    v = F.segmented_view(segmented)
    rows = segmented.pooled.features.row_index
    np.testing.assert_allclose(v.predicted_bps, segmented.predict(sample.frame)[rows], rtol=1e-12)
    codes, labels = v.segment
    assert labels == ("venue=binance", "venue=coinbase", "venue=okx")
    venue = sample.frame["venue"].to_numpy()[rows]
    for j, label in enumerate(labels):
        assert set(venue[codes == j]) == {label.split("=")[1]}
    assert (codes >= 0).all()


# --- binned statistics --------------------------------------------------------------------------


def test_log_bins_and_binned_mean_match_pandas(fitted):
    v = F.result_view(fitted)
    bins = F.log_bins(v.participation, 12)
    assert bins.count == 12 and (bins.codes >= 0).all() and bins.codes.max() == 11
    assert bins.codes[np.argmax(v.participation)] == 11      # the largest value is in the last bin
    np.testing.assert_allclose(bins.centres, np.sqrt(bins.edges[:-1] * bins.edges[1:]))
    count, mean, se = F.binned_mean(bins.codes, v.observed_bps, bins.count)
    g = pd.Series(v.observed_bps).groupby(bins.codes)
    np.testing.assert_allclose(count, g.count().reindex(range(12), fill_value=0))
    np.testing.assert_allclose(mean, g.mean().reindex(range(12)), rtol=1e-10)
    np.testing.assert_allclose(se, g.sem().reindex(range(12)), rtol=1e-8)


def test_binned_mean_with_mask_and_empty_bins():
    codes = np.array([0, 0, 1, 2, -1])
    values = np.array([1.0, 3.0, 5.0, np.nan, 100.0])
    count, mean, se = F.binned_mean(codes, values, 4, mask=np.array([True, True, False, True, True]))
    np.testing.assert_array_equal(count, [2, 0, 0, 0])
    assert mean[0] == 2.0 and np.isnan(mean[1:]).all()
    assert se[0] == pytest.approx(1.0) and np.isnan(se[1:]).all()


def test_participation_series_curve_is_the_mean_prediction_per_bin(segmented):
    v = F.segmented_view(segmented)
    bins = F.log_bins(v.participation, 10)
    series = F.participation_series(v, bins)
    assert [s.name for s in series] == list(v.segment[1])
    for j, s in enumerate(series):
        m = v.segment[0] == j
        want = pd.Series(v.predicted_bps[m]).groupby(bins.codes[m]).mean().reindex(range(10))
        np.testing.assert_allclose(s.curves["fitted"], want, rtol=1e-10)
        assert s.count.sum() == m.sum()


# --- predicted vs actual ------------------------------------------------------------------------


def test_predicted_vs_actual_small_draws_every_order_by_venue(fitted):
    v = F.result_view(fitted)
    fig = F.predicted_vs_actual_figure(v)
    names = [t.name for t in fig.data]
    assert names == ["binance", "coinbase", "okx", "45° (perfect)"]
    assert sum(len(t.x) for t in fig.data[:-1]) == v.n
    assert all(isinstance(t, go.Scattergl) for t in fig.data[:-1])     # 20,000 points > 10k: WebGL
    # each point is (predicted, actual) of an order of that venue, and its hover names the order
    t0 = fig.data[0]
    rows = np.flatnonzero(v.venue[0] == 0)
    np.testing.assert_allclose(np.asarray(t0.x, dtype=np.float64), v.predicted_bps[rows], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(t0.y, dtype=np.float64), v.observed_bps[rows], rtol=1e-6)
    ids = np.asarray(v.order_id)[rows]
    assert list(t0.customdata[:3, 0]) == list(ids[:3])
    assert "order %{customdata[0]}" in t0.hovertemplate and "size" in t0.hovertemplate
    line = fig.data[-1]
    assert line.x == (v.predicted_bps.min(), v.predicted_bps.max()) and line.x == line.y


def test_predicted_vs_actual_downsamples_large_results(big):
    _, result = big
    v = F.result_view(result)
    idx = F.scatter_index(v, 4_000)
    fig = F.predicted_vs_actual_figure(v, idx)
    drawn = sum(len(t.x) for t in fig.data[:-1])
    assert drawn == idx.size == 4_000
    assert all(isinstance(t, go.Scatter) for t in fig.data)             # ≤ 10k points: SVG
    # the worst miss is drawn
    worst = np.argmax(np.abs(v.residual_bps))
    assert worst in idx
    assert "4,000 of 30,000 orders drawn" in fig.layout.annotations[0].text
    # coordinates travel as float32 typed arrays, not as JSON number lists
    assert '"dtype":"f4"' in to_json_plotly(fig)


def test_predicted_vs_actual_update_moves_only_the_predictions(fitted):
    v = F.result_view(fitted)
    plan = F.scatter_plan(v, F.downsample_index(v.n, 3_000, seed=4))
    new_pred = v.predicted_bps * 1.5 + 2.0
    update = F.predicted_vs_actual_update(new_pred, plan)
    full = F.predicted_vs_actual_figure(v.with_predicted(new_pred), plan=plan)
    assert sorted(update) == list(range(len(full.data)))
    for i in range(len(plan.rows)):
        np.testing.assert_allclose(decode(update[i]["x"]), np.asarray(full.data[i].x, dtype=np.float32))
    assert update[len(plan.rows)]["x"] == list(full.data[-1].x)


def test_predicted_vs_actual_empty_states():
    fig = F.predicted_vs_actual_figure(None)
    assert "No calibration result" in fig.layout.annotations[0].text and len(fig.data) == 0


# --- residuals ----------------------------------------------------------------------------------


def test_residual_scatter_over_time_uses_epoch_ms_and_binned_mean(fitted):
    v = F.result_view(fitted)
    idx = np.arange(0, v.n, 7)
    bins = F.linear_bins(v.time_ns.astype(np.float64), 10)
    fig = F.residual_scatter_figure(v.time_ns, v.residual_bps, idx, x_title="time", bins=bins, time_x=True)
    assert fig.layout.xaxis.type == "date"
    np.testing.assert_allclose(np.asarray(fig.data[0].x), v.time_ns[idx] / 1e6)
    binned = fig.data[1]
    want = pd.Series(v.residual_bps).groupby(bins.codes).mean()
    np.testing.assert_allclose(np.asarray(binned.y), want.to_numpy(), rtol=1e-9)
    lo, hi = fig.layout.yaxis.range
    assert lo < np.quantile(v.residual_bps, 0.01) and hi > np.quantile(v.residual_bps, 0.99)


def test_residual_scatter_empty_without_timestamps(fitted):
    v = F.result_view(fitted)
    fig = F.residual_scatter_figure(None, v.residual_bps, np.arange(5), x_title="t",
                                    empty_message="No timestamps in the data")
    assert fig.layout.annotations[0].text == "No timestamps in the data"


def _normal_view(n=50_000, scale=3.0, weights=None, seed=0):
    rng = np.random.default_rng(seed)
    noise = scale / (weights if weights is not None else 1.0) * rng.standard_normal(n)
    zeros = np.zeros(n)
    return F.ResultView(observed_bps=noise, predicted_bps=zeros, participation=np.full(n, 0.01),
                        is_train=np.ones(n, bool), residual_weights=weights,
                        weights="none" if weights is None else "column")


def test_histogram_noise_model_matches_normal_residuals():
    v = _normal_view()
    fig = F.residual_histogram_figure(v)
    bars, model = fig.data
    counts = np.asarray(bars.y)
    expected = np.asarray(model.y)
    assert counts.sum() == pytest.approx(v.n * (1 - 2 * F.HISTOGRAM_TAIL), rel=0.01)
    assert "s = 3" in model.name          # MAD scale recovers the true sigma
    # the model's expected counts agree with the histogram (chi-square per bin ~ 1)
    chi2 = np.sum((counts - expected) ** 2 / np.maximum(expected, 1.0)) / counts.size
    assert chi2 < 3.0


def test_histogram_noise_model_is_a_mixture_under_weights():
    rng = np.random.default_rng(1)
    w = np.exp(rng.uniform(np.log(0.2), np.log(5.0), 60_000))   # per-order noise scales 3/w
    v = _normal_view(60_000, weights=w, seed=2)
    fig = F.residual_histogram_figure(v)
    counts, expected = np.asarray(fig.data[0].y), np.asarray(fig.data[1].y)
    assert "mixture" in fig.data[1].name
    # a heteroskedastic histogram is peaked and heavy-tailed: a single normal would miss it badly,
    # the mixture the weights imply does not
    def chi2(model):
        return np.sum((counts - model) ** 2 / np.maximum(model, 1.0)) / counts.size
    assert chi2(expected) < 3.0
    width = float(np.diff(np.asarray(fig.data[0].x))[0])
    single = stats.norm.pdf(np.asarray(fig.data[0].x), scale=np.std(v.residual_bps)) * v.n * width
    assert chi2(single) > 10 * chi2(expected)
    assert F.noise_scale(v.residual_bps * w) == pytest.approx(3.0, rel=0.03)


def test_qq_points_normal_sample_lies_on_the_line_and_keeps_the_extremes():
    z = np.random.default_rng(5).standard_normal(100_000)
    theo, sample = F.qq_points(z, 300)
    assert theo.size == 300 and np.all(np.diff(theo) > 0)
    body = np.abs(theo) < 3     # beyond, order statistics scatter by ~0.1 even for a normal sample
    assert np.max(np.abs(sample[body] - theo[body])) < 0.1
    assert sample[0] == pytest.approx(z.min()) and sample[-1] == pytest.approx(z.max())
    theo_small, sample_small = F.qq_points(z[:50], 300)
    np.testing.assert_array_equal(sample_small, np.sort(z[:50]))
    np.testing.assert_allclose(theo_small, stats.norm.ppf((np.arange(1, 51) - 0.5) / 50))


def test_qq_figure_shows_heavy_tails(fitted):
    fig = F.qq_figure(F.result_view(fitted))
    y = np.asarray(fig.data[0].y)
    x = np.asarray(fig.data[0].x)
    assert y[-1] > 3 * x[-1]      # the sample's outliers: far beyond a normal's largest quantile
    assert fig.data[1].name.startswith("normal")


# --- tables -------------------------------------------------------------------------------------


def test_parameter_rows(fitted):
    rows = {r["parameter"]: r for r in F.parameter_rows(fitted)}
    assert rows["h"]["status"] == "fixed" and rows["h"]["std err"] == "—"
    se, ci = fitted.std_errors["Y"], fitted.conf_int()["Y"]
    assert rows["Y"]["std err"] == f"{se:.4g}" and rows["Y"]["status"] == "fitted"
    assert rows["Y"]["95% CI"] == f"[{ci[0]:.4g}, {ci[1]:.4g}]"
    assert "bootstrap 95% CI" not in rows["Y"]


def test_parameter_rows_bootstrap_and_bounds(sample):
    cal = Calibrator(bounds={"delta": (0.05, 0.45)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        res = cal.bootstrap(sample, n=5, by="day", seed=1)
    rows = {r["parameter"]: r for r in F.parameter_rows(res)}
    assert rows["delta"]["status"] == "at bound"
    lo, hi = res.bootstrap.conf_int()["Y"]
    assert rows["Y"]["bootstrap 95% CI"] == f"[{lo:.4g}, {hi:.4g}]"


def test_metrics_rows_in_and_out_of_sample(fitted, segmented):
    rows = {r["metric"]: r for r in F.metrics_rows(F.result_metric_columns(fitted))}
    assert rows["Orders"]["in-sample"] == "16,000" and rows["Orders"]["out-of-sample"] == "4,000"
    assert rows["RMSE (bps)"]["out-of-sample"] == f"{fitted.out_of_sample['rmse_bps']:.4g}"
    rows = {r["metric"]: r for r in F.metrics_rows(F.result_metric_columns(segmented))}
    assert rows["RMSE (bps)"]["out-of-sample"] == "—"


def test_delta_rows_are_tweaked_minus_fitted():
    fitted = {"in-sample": {"rmse_bps": 10.0, "bias_bps": 1.0, "n": 5}, "out-of-sample": None}
    tweaked = {"in-sample": {"rmse_bps": 12.5, "bias_bps": -0.5, "n": 5}, "out-of-sample": None}
    rows = {r["key"]: r for r in F.delta_rows(fitted, tweaked)}
    assert rows["rmse_bps"]["in: Δ"] == "+2.5" and rows["bias_bps"]["in: Δ"] == "-1.5"
    assert rows["rmse_bps"]["in: fitted"] == "10" and rows["rmse_bps"]["in: tweaked"] == "12.5"
    assert rows["r2"]["in: Δ"] == "—"
    assert not any(k.startswith("out") for k in rows["rmse_bps"])     # no held-out rows: no columns


def test_segment_tables_and_figure(segmented):
    rows = F.segment_rows(segmented)
    assert [r["segment"] for r in rows] == ["pooled", "venue=binance", "venue=coinbase", "venue=okx"]
    y = segmented.segment(venue="okx").params["Y"]
    assert rows[3]["Y"].startswith(f"{y:.4g} [")
    tests = F.segment_test_rows(segmented.test)
    assert tests[0]["p-value"] == f"{segmented.test['wald']['p_value']:.3g}"
    fig = F.segment_parameter_figure(segmented)
    assert len(fig.data) == 2 and list(fig.data[0].x) == ["venue=binance", "venue=coinbase", "venue=okx"]
    np.testing.assert_allclose(fig.data[0].y, [s.result.params["Y"] for s in segmented.segments])
    assert "Wald p" in fig.layout.title.text


def test_segment_figure_empty_without_segments(fitted):
    assert "No segments" in F.segment_parameter_figure(None).layout.annotations[0].text


def test_status_summary_flags_non_convergence(sample):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        bad = Calibrator(max_nfev=2).fit(sample)
    s = F.status_summary(bad)
    assert s["level"] == "danger" and s["headline"].startswith("NOT CONVERGED")
    good = F.status_summary(Calibrator().fit(sample))
    assert good["level"] == "success" and good["headline"].startswith("Converged")
    fixed = F.status_summary(Calibrator().fix({"Y": 0.8, "delta": 0.5}, sample))
    assert fixed["level"] == "info"


def test_sample_comparison(fitted, segmented):
    fig = F.sample_comparison_figure(F.result_metric_columns(fitted))
    assert [t.name.split(" (")[0] for t in fig.data] == ["in-sample", "out-of-sample"]
    assert fig.data[1].y[0] == pytest.approx(fitted.out_of_sample["rmse_bps"])
    empty = F.sample_comparison_figure(F.result_metric_columns(segmented))
    assert "No out-of-sample rows" in empty.layout.annotations[0].text


def test_cost_vs_participation_figure(segmented):
    v = F.segmented_view(segmented)
    fig = F.cost_vs_participation_figure(F.participation_series(v, F.log_bins(v.participation)))
    assert fig.layout.xaxis.type == "log"
    markers = [t for t in fig.data if t.mode == "markers"]
    assert [t.name for t in markers] == list(v.segment[1])
    assert all(t.error_y.array is not None for t in markers)
    assert F.cost_vs_participation_figure([]).layout.annotations[0].text.startswith("No calibration")


def test_format_number():
    assert F.format_number(None) == "—" and F.format_number(float("nan")) == "—"
    assert F.format_number(12345) == "12,345" and F.format_number(0.000123456) == "0.0001235"
