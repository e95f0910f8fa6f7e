"""The estimator contract of the impact results, and every warning a result carries reaching the user.

`CalibrationResult`, `SegmentedResult` (and `TimeVaryingResult`, tests/impact/test_timevarying.py) have params,
std_errors, conf_int(), report, converged, warnings, summary(), to_dict(), to_config(). A segment's
warning (a parameter at its bound, few observations, a non-positive-definite Hessian) reaches the
Python result, the config / CLI JSON segment, the CLI's stderr and the Calibrate panel's segment
table. The few-observations warning fires below MIN_ROWS_PER_PARAMETER rows per free parameter, the
minimum the coverage study (bench/study_coverage.py) gives; the small-sample coverage it warns about
is re-measured here on a smaller run.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from execal import cli
from execal.models.core.errors import CalibrationError, CalibrationWarning
from execal.models.impact import fit as fit_mod
from execal.models.impact.fit import MIN_ROWS_PER_PARAMETER, Calibrator
from execal.models.impact.result import CalibrationResult, SegmentedResult
from execal.models.impact.simulate import simulate_fills

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_FILLS = ROOT / "sample_data" / "fills.csv"
BOUND_WARNING = "parameter(s) at a bound: Y at upper bound 20"


def _fills_with_a_tiny_venue(n_big: int = 4000) -> pd.DataFrame:
    """Two well-populated venues and a 12-fill venue whose costs push Y to its upper bound 20 (the
    degenerate segment of issue 10, item 7)."""
    big, _ = simulate_fills(n_big, params={"Y": 0.8, "delta": 0.5}, seed=5, venues=("binance", "okx"))
    tiny, _ = simulate_fills(12, params={"Y": 60.0, "delta": 0.5}, seed=1, venues=("tiny",),
                             participation_range=(1e-4, 1e-3))
    return pd.concat([big, tiny], ignore_index=True).drop(columns="cost_bps")


@pytest.fixture(scope="module")
def tiny_venue():
    return _fills_with_a_tiny_venue()


@pytest.fixture(scope="module")
def segmented(tiny_venue) -> SegmentedResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        return Calibrator().fit_segments(tiny_venue, by="venue")


# --- the Python results --------------------------------------------------------------------------

def test_a_degenerate_segment_carries_its_warnings(segmented):
    tiny = segmented.segment(venue="tiny")
    assert tiny.params["Y"] == pytest.approx(20.0) and tiny.n_train == 12
    assert tiny.std_errors["Y"] > 5 and tiny.converged          # "converged", yet meaningless
    assert any(w.startswith(BOUND_WARNING) for w in tiny.warnings)
    assert any(w.startswith("few observations: 12 row(s) for 2 free parameter(s)") for w in tiny.warnings)
    # aggregated with the segment's name; the populated venues carry none of it
    assert any(w.startswith(f"segment venue=tiny: {BOUND_WARNING}") for w in segmented.warnings)
    assert not any("venue=binance" in w or "venue=okx" in w for w in segmented.warnings)
    assert segmented.converged is True
    text = segmented.summary()
    for needle in ("pooled fit (every row)", "segment venue=binance", "segment venue=okx",
                   "segment venue=tiny: 12 rows", f"warning: {BOUND_WARNING}", "Wald test", "Chow F test",
                   "std err", "95% CI"):
        assert needle in text, needle


def test_segmented_result_follows_the_contract(segmented):
    pooled = segmented.pooled
    assert segmented.params == pooled.params and segmented.std_errors == pooled.std_errors
    assert segmented.conf_int(0.1)["Y"] == pooled.conf_int(0.1)["Y"] and segmented.report is pooled.report
    d = segmented.to_dict()
    json.dumps(d, allow_nan=False)
    assert [s["key"] for s in d["segments"]] == [{"venue": v} for v in ("binance", "okx", "tiny")]
    tiny = d["segments"][2]
    assert any(w.startswith(BOUND_WARNING) for w in tiny["warnings"]) and tiny["rows"]["in_sample"] == 12
    cfg = segmented.to_config({"file": "x.csv"})
    seg = {s["key"]["venue"]: s for s in cfg["segments"]}
    assert any(w.startswith(BOUND_WARNING) for w in seg["tiny"]["warnings"])
    assert seg["tiny"]["active_bounds"] == ["Y at upper bound 20"] and seg["binance"]["warnings"] == []
    assert cfg["converged"] is True and cfg["warnings"] == list(segmented.warnings)


def test_converged_is_every_fit_converged(tiny_venue):
    """One segment that does not converge makes the segmented result not converged."""
    df = _fills_with_a_tiny_venue(600)
    cal = Calibrator(max_nfev=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CalibrationWarning)
        seg = cal.fit_segments(df, by="venue")
    states = [s.result.converged for s in seg.segments]
    assert not all(states) and seg.converged is False
    assert "NOT every fit converged" in seg.summary()


def test_calibration_result_contract_and_few_rows_threshold():
    k = 2
    n_ok = MIN_ROWS_PER_PARAMETER * k
    df, _ = simulate_fills(n_ok, params={"Y": 0.8, "delta": 0.5}, seed=3)
    res = Calibrator().fit(df)
    assert not any("few observations" in w for w in res.warnings)
    small = Calibrator().fit(df.iloc[: n_ok - 1])
    assert any(w.startswith(f"few observations: {n_ok - 1} row(s) for 2 free") for w in small.warnings)
    assert small.warnings == tuple(small.report.warnings) and small.converged
    d = small.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["warnings"] == list(small.warnings) and d["converged"] is True
    assert set(d["conf_int"]) == {"h", "Y", "delta"} and d["rows"]["in_sample"] == n_ok - 1
    assert "warning: few observations" in small.summary()
    # the sqrt law has one free parameter: its minimum is MIN_ROWS_PER_PARAMETER rows
    one = Calibrator(model="sqrt").fit(df.iloc[:MIN_ROWS_PER_PARAMETER])
    assert not any("few observations" in w for w in one.warnings)
    # hand-set parameters: nothing was estimated, nothing to warn about
    assert Calibrator().fix({"Y": 1.0}, df.iloc[:10]).warnings == ()


def test_small_samples_under_cover_as_the_warning_says():
    """The reason for the warning, re-measured (smaller than bench/study_coverage.py: 300 samples a
    cell): at 15 rows per parameter the nominal 95 % interval of Y covers clearly less than 95 %
    (study: 0.878), at MIN_ROWS_PER_PARAMETER rows per parameter it is within ~5 points."""
    from bench.study_coverage import coverage

    few = coverage("power_law", 30, 300)
    enough = coverage("power_law", 2 * MIN_ROWS_PER_PARAMETER, 300)
    assert few["coverage"]["Y"] < 0.92
    assert enough["coverage"]["Y"] > 0.88
    assert enough["coverage"]["Y"] > few["coverage"]["Y"]


def test_non_positive_definite_hessian_is_a_warning():
    """cauchy can make the robust Hessian indefinite: the sandwich falls back to the IRLS form and
    says so (a direct check of the note on a problem built to trigger it)."""
    df, _ = simulate_fills(400, params={"Y": 0.8, "delta": 0.5}, seed=8, outlier_share=0.3)
    cal = Calibrator(loss="cauchy", f_scale=0.05)
    prob = cal._problem(cal.features(df), "none")
    x = np.array([0.8, 0.5])
    _, notes = fit_mod.sandwich_covariance(prob, x)
    assert notes and "not positive definite" in notes[0]


# --- the command line ----------------------------------------------------------------------------

def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_segment_warnings_reach_stderr_and_json(tmp_path, capsys, tiny_venue):
    path = tmp_path / "fills.csv"
    tiny_venue.to_csv(path, index=False)
    cfg_path = tmp_path / "config.json"
    code, _, err = run(["calibrate", path, "--model", "power_law", "--by", "venue", "--out", cfg_path], capsys)
    assert code == 0, err
    assert f"segment venue=tiny: 12 rows" in err and f"warning: {BOUND_WARNING}" in err
    cfg = json.loads(cfg_path.read_text())
    tiny = next(s for s in cfg["segments"] if s["key"] == {"venue": "tiny"})
    assert any(w.startswith(BOUND_WARNING) for w in tiny["warnings"])
    assert any(w.startswith("few observations") for w in tiny["warnings"])
    # --quiet: no summary, but every warning still reaches stderr
    code, _, err = run(["calibrate", path, "--model", "power_law", "--by", "venue", "--out", cfg_path,
                        "--quiet"], capsys)
    assert code == 0 and "pooled fit" not in err
    assert f"execal: warning: segment venue=tiny: {BOUND_WARNING}" in err


def test_cli_by_venue_prints_segments_tests_and_bootstrap(tmp_path, capsys):
    cfg_path = tmp_path / "config.json"
    code, _, err = run(["calibrate", SAMPLE_FILLS, "--model", "power_law", "--by", "venue", "--bootstrap", "10",
                        "--out", cfg_path], capsys)
    assert code == 0, err
    cfg = json.loads(cfg_path.read_text())
    for s in cfg["segments"]:
        venue = s["key"]["venue"]
        assert f"segment venue={venue}: {s['rows']} rows" in err
        assert f"{s['params']['Y']:.6g}" in err and f"{s['std_errors']['Y']:.4g}" in err
    wald = cfg["segment_test"]["wald"]
    assert f"Wald test (sandwich covariances): chi2 = {wald['statistic']:.4g}" in err
    assert "Chow F test" in err
    assert "bootstrap: 10 resamples of whole days" in err
    lo, hi = cfg["model"]["bootstrap"]["conf_int"]["Y"]
    assert f"[{lo:.5g}, {hi:.5g}]" in err


def test_cli_exit_code_is_the_results_converged(tmp_path, capsys):
    cfg_path = tmp_path / "config.json"
    code, _, err = run(["calibrate", SAMPLE_FILLS, "--model", "power_law", "--by", "venue", "--option", "max_nfev=2",
                        "--out", cfg_path], capsys)
    assert code == 3 and cfg_path.exists()
    cfg = json.loads(cfg_path.read_text())
    assert cfg["converged"] is False and "NOT CONVERGED" in err


def test_cli_kalman_uses_the_time_varying_estimator(tmp_path, capsys):
    cfg_path = tmp_path / "kalman.json"
    code, _, err = run(["calibrate", SAMPLE_FILLS, "--model", "sqrt", "--optimizer", "kalman", "--out", cfg_path],
                       capsys)
    assert code == 0, err
    cfg = json.loads(cfg_path.read_text())
    block = cfg["time_varying"]
    assert block["method"] == "kalman" and block["converged"] is True and "std_errors" in block
    assert "kalman (fitted)" in err and "final state" in err and "std err" in err
    code, _, err = run(["calibrate", SAMPLE_FILLS, "--model", "sqrt", "--optimizer", "sgd", "--bootstrap", "5"],
                       capsys)
    assert code == 2 and "path" in err


# --- the UI --------------------------------------------------------------------------------------

def test_the_calibrate_panel_shows_segment_warnings(segmented):
    from execal.components import calibrate_panel as cp
    from execal.components import impact_figures as F

    rows = {r["segment"]: r for r in F.segment_rows(segmented)}
    assert BOUND_WARNING in rows["venue=tiny"]["warnings"] and "few observations" in rows["venue=tiny"]["warnings"]
    assert rows["venue=binance"]["warnings"] == "—"
    view = cp.result_view(segmented, {})
    tiny = next(r for r in view["segments"] if r["segment"] == "venue=tiny")
    assert BOUND_WARNING in tiny["warnings"]
    json.dumps(view)                                   # the cached view stays JSON
    banner = F.status_summary(segmented)
    assert banner["level"] == "warning"
    assert any(d.startswith(f"segment venue=tiny: {BOUND_WARNING}") for d in banner["details"])


def test_the_calibrate_panel_runs_a_kalman_fit(tmp_path):
    """Choosing the Kalman optimizer in the panel fits through TimeVaryingCalibrator and shows the
    final state; segments or a bootstrap with it are refused with the reason."""
    from execal.components import calibrate_panel as cp
    from execal.components import results as results_mod
    from execal.components import store

    st = store.SessionStore(store.open_cache(tmp_path / "cache"))
    results = results_mod.ResultStore(st.cache)
    session = "0b9f6f1e-2a8e-4b51-9d64-3f1c2a7b8e90"
    df, _ = simulate_fills(3000, model="sqrt", params={"Y": 0.8}, seed=9)
    key = st.load_bytes(df.drop(columns="cost_bps").to_csv(index=False).encode(), name="f.csv", session_id=session)
    c = cp.controls_from_settings(None)
    c.update(model="sqrt", optimizer="kalman", options={})
    settings = cp.build_settings(**c)
    job = cp.plan_calibration(st, results, session_id=session, active_dataset={"key": key}, filters={},
                              run_settings=settings)["job"]
    got = results.get(cp.run_calibration(st, results, job))
    assert isinstance(got, CalibrationResult) and got.report.method == "kalman"
    from execal.models.impact.timevarying import TimeVaryingCalibrator
    direct = TimeVaryingCalibrator(model="sqrt", method="kalman").fit(st.get_dataset(key).frame)
    assert got.params["Y"] == pytest.approx(direct.params["Y"], rel=1e-9)
    for extra, needle in (({"segments": ["venue"]}, "no segments"), ({"bootstrap_n": 10}, "bootstrap a batch fit")):
        with pytest.raises(CalibrationError, match=needle):
            cp.build_settings(**{**c, **extra})
    st.cache.close()


# --- the surface ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def noisy_chain():
    """The sample chain with its mid IVs perturbed by 1 % (multiplicative, seeded): the sample
    quotes lie exactly on the generator's surface, where every standard error is ~0."""
    import dataclasses as dc

    from execal.models.data.io import load
    from execal.models.surface.options import prepare_chain

    chain = prepare_chain(load(ROOT / "sample_data" / "options_chain.csv"))
    rng = np.random.default_rng(7)
    pts = chain.points.copy()
    pts["iv_mid"] = pts["iv_mid"] * (1.0 + 0.01 * rng.standard_normal(len(pts)))
    return dc.replace(chain, points=pts)


def _direct_ls_std_errors(resid, p, h=1e-6):
    """Unvectorised reference: central-difference Jacobian column by column, s²·(JᵀJ)⁻¹."""
    p = np.asarray(p, dtype=float)
    r0 = resid(p)
    J = np.empty((r0.size, p.size))
    for j in range(p.size):
        step = h * max(abs(p[j]), 1e-3)
        up, down = p.copy(), p.copy()
        up[j] += step
        down[j] -= step
        J[:, j] = (resid(up) - resid(down)) / (2 * step)
    s2 = sum(float(r) ** 2 for r in r0) / (r0.size - p.size)
    return np.sqrt(np.diag(s2 * np.linalg.inv(J.T @ J)))


def test_svi_standard_errors_match_a_direct_least_squares_computation(noisy_chain):
    from execal.models.surface.svi import SVI_PARAMS, SurfaceCalibrator, _slices, svi_total_variance

    res = SurfaceCalibrator("svi").fit(noisy_chain)
    slices, _ = _slices(noisy_chain, "vega")
    for sl, fitted in zip(slices, res.slices):
        p = [fitted.params[n] for n in SVI_PARAMS]

        def resid(q, sl=sl):
            w = svi_total_variance(sl.k, *q)
            return np.sqrt(sl.u) * (np.sqrt(w / sl.T) - sl.iv)
        expect = _direct_ls_std_errors(resid, p)
        got = [fitted.std_errors[n] for n in SVI_PARAMS]
        np.testing.assert_allclose(got, expect, rtol=1e-4)
        assert all(v > 0 for v in got)
    key = res.slices[0].expiry.isoformat()
    lo, hi = res.conf_int()[key]["b"]
    b, se = res.params[key]["b"], res.std_errors[key]["b"]
    assert lo == pytest.approx(b - 1.959963984540054 * se) and hi == pytest.approx(b + 1.959963984540054 * se)


@pytest.mark.parametrize("no_arbitrage", [False, True])
def test_ssvi_standard_errors_match_a_direct_computation_in_the_natural_parameters(noisy_chain, no_arbitrage):
    """The no-arbitrage fit works in (rho, u, gamma, theta increments): its errors are carried to
    (rho, eta, gamma, theta) by the delta method, which must equal the least-squares errors computed
    directly in the natural parameters (invariance under a smooth reparametrisation)."""
    from execal.models.surface.svi import SurfaceCalibrator, _slices, ssvi_total_variance

    res = SurfaceCalibrator("ssvi", no_arbitrage=no_arbitrage).fit(noisy_chain)
    assert res.converged and not res.report.active_bounds
    slices, _ = _slices(noisy_chain, "vega")
    g = res.global_params
    thetas = [s.theta for s in res.slices]
    p = [g["rho"], g["eta"], g["gamma"], *thetas]

    def resid(q):
        out = []
        for i, sl in enumerate(slices):
            w = ssvi_total_variance(sl.k, q[3 + i], q[0], q[1], q[2])
            out.append(np.sqrt(sl.u) * (np.sqrt(w / sl.T) - sl.iv))
        return np.concatenate(out)
    expect = _direct_ls_std_errors(resid, p)
    se = res.std_errors["ssvi"]
    got = [se["rho"], se["eta"], se["gamma"], *[se["theta"][s.expiry.isoformat()] for s in res.slices]]
    np.testing.assert_allclose(got, expect, rtol=1e-3)


def test_surface_result_follows_the_contract(noisy_chain):
    from execal.models.core.report import OptimizerReport
    from execal.models.surface.svi import SurfaceCalibrator, SurfaceResult

    cal = SurfaceCalibrator("svi")
    res = cal.fit(noisy_chain)
    assert isinstance(res.report, OptimizerReport) and res.converged is True
    assert res.report.nfev == sum(s.optimizer.nfev for s in res.slices)
    assert [st["expiry"] for st in res.report.starts] == [s.expiry.isoformat() for s in res.slices]
    assert set(res.std_errors) == set(res.params) and set(res.conf_int()) == set(res.params)
    d = res.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["report"]["converged"] is True and d["converged"] is True
    assert all(isinstance(e["optimizer"], dict) for e in d["expiries"])
    cfg = res.to_config()
    assert cfg["optimizer"]["report"]["method"].startswith("svi per expiry")
    assert cfg["model"]["expiries"][0]["std_errors"]["a"] == pytest.approx(res.slices[0].std_errors["a"])
    text = res.summary()
    assert "status: converged" in text and "± s.e." in text
    # fix: same type, hand-set, no errors
    fixed = cal.fix({s.expiry.isoformat(): dict(s.params) for s in res.slices}, noisy_chain)
    assert isinstance(fixed, SurfaceResult) and fixed.report.method == "fixed" and fixed.converged
    assert all(np.isnan(v) for e in fixed.std_errors.values() for v in e.values())
    # a slice that did not converge makes the surface not converged, and says which
    import dataclasses as dc
    bad = dc.replace(res.slices[1], optimizer=dc.replace(res.slices[1].optimizer, success=False, converged=False))
    broken = dc.replace(res, slices=(res.slices[0], bad, *res.slices[2:]))
    assert broken.converged is False and "7 of 8" in broken.report.message


def test_surface_fit_at_a_bound_or_on_few_quotes_warns(noisy_chain):
    import dataclasses as dc

    from execal.models.surface.svi import SurfaceCalibrator

    pts = noisy_chain.points
    first = pts["expiry"].min()
    keep = (pts["expiry"] != first) | (pts.groupby("expiry").cumcount() % 4 == 0)   # ~8 quotes left
    thin = dc.replace(noisy_chain, points=pts[keep].reset_index(drop=True))
    res = SurfaceCalibrator("svi").fit(thin)
    n = int((thin.points["expiry"] == first).sum())
    assert 5 <= n < 10
    assert any(w.startswith(f"expiry {first.isoformat()}: few quotes: {n} for 5 parameters") for w in res.warnings)
    # the SSVI fit's active bounds become a warning (eta pinned to a tiny upper bound by hand)
    ssvi = SurfaceCalibrator("ssvi").fit(noisy_chain)
    pinned = dc.replace(ssvi.optimizer, active_bounds=("eta at upper bound 1",))
    cal = SurfaceCalibrator("ssvi")
    again = cal._finish(noisy_chain, *_ssvi_inputs(cal, noisy_chain, pinned), status="fitted",
                        global_params=dict(ssvi.global_params), optimizer=pinned)
    assert any(w.startswith("SSVI parameter(s) at a bound: eta at upper bound 1") for w in again.warnings)


def _ssvi_inputs(cal, chain, opt):
    from execal.models.surface.svi import _slices

    slices, _ = _slices(chain, cal.weights)
    fits, _, _, _ = cal._fit_ssvi_slices(slices, cal._grid(chain))
    return slices, [(p, th, opt, st, msg) for p, th, _, st, msg in fits], cal._grid(chain)
