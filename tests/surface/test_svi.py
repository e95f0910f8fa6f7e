"""Volatility surfaces (models/svi.py): recovery of known raw SVI and SSVI parameters, the
butterfly-arbitrage slice from the literature flagged, calendar arbitrage located, no-arbitrage
fits that remove it, optimizer reports for every slice, immutable results and JSON configs."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from execal.models.data import sample as sample_mod
from execal.models.data.io import load
from execal.models.surface.options import chain_from_vols, prepare_chain
from execal.models.core.registry import describe, get_model, models_of_kind
from execal.models.data.schema import DataError
from execal.models.surface.svi import (SVI_PARAMS, SurfaceCalibrator, butterfly_report, calendar_report,
                        default_k_grid, durrleman_g, fit_surface, ssvi_conditions, ssvi_to_raw_svi,
                        ssvi_total_variance, svi_derivatives, svi_total_variance)

# Gatheral & Jacquier (2014), Example 3.1 (Axel Vogt's slice): raw SVI with butterfly arbitrage.
VOGT = {"a": -0.0410, "b": 0.1331, "rho": 0.3060, "m": 0.3586, "sigma": 0.4153}


@pytest.fixture(scope="module")
def sample_chain(root):
    return prepare_chain(load(root / "sample_data" / "options_chain.csv"))


@pytest.fixture(scope="module")
def truth(root):
    return json.loads((root / "sample_data" / "ground_truth.json").read_text())["options"]


def _svi_chain(params_by_T, n=60, reach_sd=3.0, noise_vol=0.0, seed=0, band=None):
    """A chain whose mid IVs are exactly raw SVI slices (one per T), optional Gaussian noise."""
    rng = np.random.default_rng(seed)
    ks, Ts, ivs = [], [], []
    for T, p in params_by_T.items():
        atm = np.sqrt(svi_total_variance(0.0, *p) / T)
        k = np.linspace(-reach_sd, reach_sd, n) * atm * np.sqrt(T)
        iv = np.sqrt(svi_total_variance(k, *p) / T)
        ks.append(k), Ts.append(np.full(n, T)), ivs.append(iv + rng.normal(0.0, noise_vol, n))
    k, T, iv = np.concatenate(ks), np.concatenate(Ts), np.concatenate(ivs)
    kw = {} if band is None else {"iv_bid": iv - band, "iv_ask": iv + band}
    return chain_from_vols(k, T, iv, **kw)


def _known_svi_slices():
    """Twelve slices, 1 day to 2 years, skews both ways, one with a < 0 (but w > 0 everywhere)."""
    rng = np.random.default_rng(42)
    out = {}
    for T in np.geomspace(1 / 365, 2.0, 12):
        sd = 0.6 * np.sqrt(T)
        out[float(T)] = (0.5 * 0.36 * T, 0.5 * sd, float(rng.uniform(-0.7, 0.4)),
                         float(rng.uniform(-0.4, 0.4) * sd), float(rng.uniform(0.4, 1.5) * sd))
    T0 = min(out)
    a, b, rho, m, sig = out[T0]
    out[T0] = (-0.3 * b * sig, b, rho, m, sig)      # negative a, positive minimum variance
    return out


# --- formulas -----------------------------------------------------------------------------------------

def test_ssvi_slice_is_the_raw_svi_it_claims_and_matches_the_sample_generator():
    k = np.linspace(-2, 2, 101)
    for theta in (0.001, 0.05, 0.4):
        raw = ssvi_to_raw_svi(theta, -0.35, 1.1, 0.42)
        np.testing.assert_allclose(svi_total_variance(k, *(raw[p] for p in SVI_PARAMS)),
                                   ssvi_total_variance(k, theta, -0.35, 1.1, 0.42), rtol=1e-13)
        np.testing.assert_allclose(ssvi_total_variance(k, theta, -0.35, 1.1, 0.42),
                                   sample_mod.ssvi_total_variance(k, theta, -0.35, 1.1, 0.42), rtol=1e-14)
        assert raw == pytest.approx(sample_mod.ssvi_to_raw_svi(theta, -0.35, 1.1, 0.42), rel=1e-14)


def test_svi_derivatives_match_finite_differences():
    k = np.linspace(-1, 1, 41)
    p = tuple(VOGT.values())
    w, w1, w2 = svi_derivatives(k, *p)
    h = 1e-5
    np.testing.assert_allclose(w1, (svi_total_variance(k + h, *p) - svi_total_variance(k - h, *p)) / (2 * h), rtol=1e-8)
    np.testing.assert_allclose(w2, (svi_total_variance(k + h, *p) - 2 * w + svi_total_variance(k - h, *p)) / h ** 2,
                               rtol=1e-4)


# --- the butterfly slice from the literature ------------------------------------------------------------

def test_vogts_slice_is_flagged_with_where_and_how_much():
    rep = butterfly_report(VOGT, np.linspace(-1.5, 1.5, 3001))
    assert rep["ok"] is False and len(rep["violations"]) == 1
    v = rep["violations"][0]
    # g < 0 on about k ∈ (0.64, 1.26), minimum ≈ −0.0329 near k = 0.88 (GJ 2014, Figure 3.1)
    assert v["k_from"] == pytest.approx(0.643, abs=2e-3) and v["k_to"] == pytest.approx(1.256, abs=2e-3)
    assert v["min_g"] == pytest.approx(-0.03286, abs=2e-4) and v["k_at_min_g"] == pytest.approx(0.88, abs=0.01)
    assert rep["min_w"] > 0          # the total variance itself stays positive: only the density fails
    # an SSVI slice within GJ's conditions is clean
    assert butterfly_report(ssvi_to_raw_svi(0.04, -0.2, 1.2, 0.45))["ok"] is True


def test_negative_total_variance_counts_as_a_butterfly_violation():
    k = np.array([-0.1, 0.0, 0.1])
    g = durrleman_g(k, np.array([0.01, -0.001, 0.01]), np.zeros(3), np.zeros(3))
    assert g[1] == -np.inf and g[0] > 0


def test_fitting_vogts_quotes_flags_them_and_the_no_arbitrage_fit_removes_the_arbitrage():
    k = np.linspace(-1.5, 1.5, 61)
    chain = chain_from_vols(k, 1.0, np.sqrt(svi_total_variance(k, *VOGT.values())))
    free = SurfaceCalibrator("svi", "uniform").fit(chain)
    s = free.slices[0]
    assert s.params == pytest.approx(VOGT, abs=1e-9)          # the quotes are exactly Vogt's slice
    assert s.butterfly["ok"] is False and s.butterfly["violations"][0]["in_quoted_range"] is True
    assert free.arbitrage["free_of_static_arbitrage_on_grid"] is False
    fixed = SurfaceCalibrator("svi", "uniform", no_arbitrage=True).fit(chain)
    s2 = fixed.slices[0]
    assert s2.butterfly["ok"] is True and s2.butterfly["min_g"] >= -1e-9
    g = fixed.curve_frame(k_grid=np.linspace(-3, 3, 4001))["g"].to_numpy()
    assert g.min() > -1e-6
    assert s2.optimizer.method == "slsqp_no_arbitrage" and s2.optimizer.success
    assert s2.optimizer.starts[0]["stage"] == "quasi_explicit"      # what it refitted, reported
    # the price of removing the arbitrage: a visible but modest misfit
    assert 0.05 < s2.rmse_vol_pts < 3.0
    assert fixed.arbitrage["free_of_static_arbitrage_on_grid"] is True


# --- recovery -------------------------------------------------------------------------------------------------

def test_recovers_known_raw_svi_slices_exactly():
    truth = _known_svi_slices()
    chain = _svi_chain(truth, n=100)
    res = SurfaceCalibrator("svi", "uniform").fit(chain)
    assert len(res.slices) == 12
    for s, (T, p) in zip(res.slices, sorted(truth.items())):
        assert s.T_years == pytest.approx(T, rel=1e-9)
        np.testing.assert_allclose([s.params[n] for n in SVI_PARAMS], p, rtol=1e-7, atol=1e-10)
        assert s.rmse_vol_pts < 1e-7
        assert s.optimizer.success and s.optimizer.status > 0 and s.optimizer.iterations > 0
        assert s.optimizer.message and s.optimizer.method == "quasi_explicit"
    assert min(s.params["a"] for s in res.slices) < 0


def test_noisy_quotes_give_nearby_parameters_and_rmse_at_the_noise_level():
    truth = _known_svi_slices()
    noise = 0.005                                             # half a vol point
    chain = _svi_chain(truth, n=100, noise_vol=noise, seed=3, band=0.01)
    res = SurfaceCalibrator("svi", "spread").fit(chain)
    for s in res.slices:
        assert 0.35 < s.rmse_vol_pts < 0.6                      # fitting 5 parameters to 100 noisy points
        assert s.inside_band_fraction > 0.9                     # the band is ±2 noise sd
    smile = res.smile_frame()
    err = smile["iv_model"].to_numpy() - np.concatenate(
        [np.sqrt(svi_total_variance(g["k"].to_numpy(), *truth[min(truth, key=lambda t: abs(t - T))]) / T)
         for T, g in smile.groupby("T_years", sort=True)])
    assert np.sqrt(np.mean(err ** 2)) < 0.25 * noise            # the fit averages the noise out


def test_recovers_the_sample_chains_svi_slices_and_ssvi_surface(sample_chain, truth):
    svi = SurfaceCalibrator("svi", "vega").fit(sample_chain)
    for s, e in zip(svi.slices, truth["expiries"]):
        assert s.expiry == pd.Timestamp(e["expiry"])
        for p in SVI_PARAMS:   # quotes rounded to 1e-6 in IV: parameters to ~1e-5 relative
            assert s.params[p] == pytest.approx(e["raw_svi"][p], rel=2e-4, abs=1e-7), (s.expiry, p)
        assert s.rmse_vol_pts < 1e-3
    ssvi = SurfaceCalibrator("ssvi", "vega").fit(sample_chain)
    gp = ssvi.global_params
    assert gp["rho"] == pytest.approx(truth["rho"], abs=1e-5)
    assert gp["eta"] == pytest.approx(truth["eta"], rel=1e-5)
    assert gp["gamma"] == pytest.approx(truth["gamma"], abs=1e-5)
    for s, e in zip(ssvi.slices, truth["expiries"]):
        assert s.theta == pytest.approx(e["theta"], rel=1e-5)
        assert s.params["b"] == pytest.approx(e["raw_svi"]["b"], rel=1e-4)
    assert ssvi.optimizer.success and ssvi.optimizer.nfev > 0
    assert ssvi.ssvi_conditions["free_of_static_arbitrage"] is True
    assert ssvi.arbitrage["free_of_static_arbitrage_on_grid"] is True
    assert not svi.calendar_violations and not ssvi.calendar_violations


def test_least_squares_path_recovers_too():
    truth = dict(list(_known_svi_slices().items())[4:7])
    res = SurfaceCalibrator("svi", "uniform", method="least_squares").fit(_svi_chain(truth, n=80))
    for s, (T, p) in zip(res.slices, sorted(truth.items())):
        np.testing.assert_allclose([s.params[n] for n in SVI_PARAMS], p, rtol=1e-4, atol=1e-7)
        assert s.optimizer.method == "least_squares_soft_l1"


# --- calendar and SSVI conditions -----------------------------------------------------------------------------

def test_calendar_arbitrage_is_located():
    k = np.linspace(-1, 1, 201)
    short = svi_total_variance(k, 0.02, 0.2, -0.5, 0.0, 0.2)
    long_ = svi_total_variance(k, 0.03, 0.05, 0.0, 0.0, 0.2)     # flatter: crosses below in the wings
    viol = calendar_report(["e1", "e2"], [0.25, 0.5], np.vstack([short, long_]), k)
    assert viol and all(v["expiry_short"] == "e1" and v["expiry_long"] == "e2" for v in viol)
    left = viol[0]
    crossing = k[np.flatnonzero(short > long_)]
    assert left["k_from"] == pytest.approx(crossing.min()) and left["max_excess_w"] == pytest.approx(
        (short - long_).max(), rel=1e-12)
    assert calendar_report(["e1", "e2"], [0.25, 0.5], np.vstack([short, short + 0.01]), k) == []


def test_calendar_violation_appears_in_a_surface_and_the_no_arbitrage_fit_removes_it():
    p1 = (0.02, 0.2, -0.6, 0.0, 0.15)
    p2 = (0.03, 0.06, 0.0, 0.0, 0.2)
    chain = _svi_chain({0.25: p1, 0.5: p2}, n=60, reach_sd=4.0)
    free = SurfaceCalibrator("svi", "uniform").fit(chain)
    assert free.calendar_violations and free.arbitrage["free_of_static_arbitrage_on_grid"] is False
    fixed = SurfaceCalibrator("svi", "uniform", no_arbitrage=True).fit(chain)
    assert not fixed.calendar_violations
    assert "calendar" in fixed.slices[1].message
    assert fixed.slices[0].status == "fitted" and fixed.slices[0].message == ""   # first slice untouched


def test_ssvi_conditions_report_margins():
    good = ssvi_conditions(-0.2, 1.2, 0.45, [0.01, 0.05, 0.2])
    assert good["free_of_static_arbitrage"] and good["power_law_eta"]["ok"]
    assert good["power_law_eta"]["margin"] == pytest.approx(2 - 1.2 * 1.2)
    bad = ssvi_conditions(0.5, 6.0, 0.1, [0.5, 0.4, 2.0])
    assert not bad["free_of_static_arbitrage"]
    assert bad["theta_non_decreasing"]["where"] == [1]
    assert not bad["butterfly_theta_phi"]["ok"] and bad["butterfly_theta_phi"]["margin"] < 0


def test_ssvi_no_arbitrage_fit_stays_inside_the_conditions():
    # quotes from an SSVI with eta(1+|rho|) = 3.5 > 2 and a theta that dips: arbitrageable
    Ts = [0.05, 0.1, 0.2, 0.4]
    thetas = [0.02, 0.018, 0.06, 0.12]
    k, T, iv = [], [], []
    for t, th in zip(Ts, thetas):
        kk = np.linspace(-0.6, 0.6, 41)
        k.append(kk), T.append(np.full(kk.size, t))
        iv.append(np.sqrt(ssvi_total_variance(kk, th, -0.4, 2.5, 0.3) / t))
    chain = chain_from_vols(np.concatenate(k), np.concatenate(T), np.concatenate(iv))
    free = SurfaceCalibrator("ssvi", "uniform").fit(chain)
    assert free.global_params["eta"] == pytest.approx(2.5, rel=1e-5)
    assert not free.ssvi_conditions["free_of_static_arbitrage"]
    constrained = SurfaceCalibrator("ssvi", "uniform", no_arbitrage=True).fit(chain)
    gp = constrained.global_params
    assert gp["eta"] * (1 + abs(gp["rho"])) <= 2 + 1e-9 and 0 < gp["gamma"] <= 0.5 + 1e-12
    th = [s.theta for s in constrained.slices]
    assert all(b >= a - 1e-12 for a, b in zip(th, th[1:]))
    assert constrained.ssvi_conditions["free_of_static_arbitrage"]
    assert constrained.arbitrage["free_of_static_arbitrage_on_grid"]
    assert constrained.rmse_vol_pts > free.rmse_vol_pts


# --- shape of the results ---------------------------------------------------------------------------------------

def test_every_slice_reports_its_optimizer_and_short_slices_are_skipped_not_dropped():
    truth = {0.1: (0.004, 0.05, -0.3, 0.0, 0.05), 0.3: (0.01, 0.08, -0.3, 0.0, 0.1)}
    chain = _svi_chain(truth, n=30)
    pts = chain.points
    short = pts[pts["T_years"] < 0.2].iloc[::10]                 # 3 strikes left on the first expiry
    thin = chain_from_vols(np.concatenate([short["k"], pts.loc[pts["T_years"] > 0.2, "k"]]),
                           np.concatenate([short["T_years"], pts.loc[pts["T_years"] > 0.2, "T_years"]]),
                           np.concatenate([short["iv_mid"], pts.loc[pts["T_years"] > 0.2, "iv_mid"]]))
    res = SurfaceCalibrator("svi").fit(thin)
    first, second = res.slices
    assert first.status == "skipped" and first.params is None and "at least 5" in first.message
    assert second.status == "fitted" and second.optimizer is not None
    out = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert out["expiries"][0]["status"] == "skipped"
    assert res.smile_frame()["iv_model"].isna().sum() == 3


def test_result_is_immutable_and_exports_json(sample_chain):
    res = fit_surface(sample_chain, "svi", "uniform")
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.weights = "vega"
    with pytest.raises(ValueError):
        res.k_grid[0] = 1.0
    cfg = res.to_config({"note": "test"})
    text = json.dumps(cfg, allow_nan=False)
    back = json.loads(text)
    assert back["kind"] == "surface" and back["schema_version"] == 1 and back["data"]["note"] == "test"
    assert len(back["model"]["expiries"]) == 8
    assert set(back["model"]["expiries"][0]["params"]) == set(SVI_PARAMS)
    assert back["data"]["sha256"] == sample_chain.sha256 and back["data"]["rows"] == 572
    out = res.to_dict()
    e0 = out["expiries"][0]
    assert {"params", "rmse_vol_pts", "butterfly_violations", "min_g"} <= set(e0)
    assert "calendar_violations" in out
    summary = res.summary()
    assert "rho" in summary and "2025-10-31" in summary


def test_fix_reproduces_a_fit_and_frames_are_tidy(sample_chain):
    fitted = SurfaceCalibrator("svi", "vega").fit(sample_chain)
    fixed = SurfaceCalibrator("svi", "vega").fix(
        {s.expiry.isoformat(): dict(s.params) for s in fitted.slices}, sample_chain)
    assert fixed.status == "fixed"
    for a, b in zip(fitted.slices, fixed.slices):
        assert a.rmse_vol_pts == pytest.approx(b.rmse_vol_pts, rel=1e-12) and b.optimizer is None
    smile = fitted.smile_frame()
    assert len(smile) == 286 and {"expiry", "k", "iv_mid", "iv_bid", "iv_ask", "iv_model",
                                  "error_vol_pts", "weight", "in_band"} <= set(smile.columns)
    assert smile.groupby("expiry")["weight"].mean().to_numpy() == pytest.approx(np.ones(8))
    curves = fitted.curve_frame(points=51)
    assert len(curves) == 8 * 51 and {"w_model", "iv_model", "g"} <= set(curves.columns)
    ssvi = SurfaceCalibrator("ssvi").fix({"rho": -0.2, "eta": 1.2, "gamma": 0.45}, sample_chain)
    assert ssvi.rmse_vol_pts < 0.5          # ATM thetas from the quotes, truth otherwise
    assert ssvi.ssvi_conditions["free_of_static_arbitrage"]


def test_settings_are_validated_and_spread_weights_need_a_band():
    for bad in ({"model": "sabr"}, {"weights": "volume"}, {"method": "newton"}):
        with pytest.raises(ValueError):
            SurfaceCalibrator(**bad)
    chain = chain_from_vols(np.linspace(-0.2, 0.2, 11), 0.2, 0.5)
    with pytest.raises(DataError, match="weights='spread'"):
        SurfaceCalibrator("svi", "spread").fit(chain)
    assert SurfaceCalibrator("ssvi", "uniform", True).get_params()["no_arbitrage"] is True


def test_registered_in_the_registry():
    surface = models_of_kind("surface")
    assert set(surface) == {"svi", "ssvi", "heston", "bates"}     # heston, bates: tests/surface/test_heston.py
    d = json.loads(json.dumps(describe()))
    svi = d["models"]["svi"]
    assert svi["kind"] == "surface" and [p["name"] for p in svi["params"]] == list(SVI_PARAMS)
    assert d["models"]["ssvi"]["per_expiry"] == ["theta"]
    assert get_model("ssvi", "surface").label.startswith("SSVI")
    for m in surface.values():
        for p in m.params:
            assert p.lower < p.upper and p.lower <= p.default <= p.upper


def test_default_grid_covers_the_quotes_and_beyond():
    g = default_k_grid([-2.0, 0.5])
    assert g[0] == -3.0 and g[-1] == 1.5 and g.size == 2001
    assert default_k_grid()[0] == -1.5


# --- the command line ------------------------------------------------------------------------------------------

def test_cli_surface_writes_parameters_rmse_and_arbitrage(root, tmp_path, capsys):
    from execal import cli
    out = tmp_path / "surface.json"
    code = cli.main(["surface", str(root / "sample_data" / "options_chain.csv"), "--model", "svi",
                     "--weights", "spread", "--out", str(out), "--quiet"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["model"] == "svi" and data["weights"] == "spread" and len(data["expiries"]) == 8
    for e in data["expiries"]:
        assert set(e["params"]) == set(SVI_PARAMS) and e["rmse_vol_pts"] < 1e-3
        assert e["butterfly_violations"] == [] and e["min_g"] > 0
        assert e["optimizer"]["success"] is True
    assert data["calendar_violations"] == [] and data["config"]["kind"] == "surface"
    code = cli.main(["surface", str(root / "sample_data" / "options_chain.csv"), "--model", "ssvi",
                     "--no-arbitrage", "--out", str(out), "--quiet"])
    assert code == 0
    data = json.loads(out.read_text())
    assert data["ssvi"]["eta"] == pytest.approx(1.2, rel=1e-4) and data["no_arbitrage"] is True
    assert data["arbitrage"]["ssvi_conditions"]["free_of_static_arbitrage"] is True


def test_cli_surface_bad_input_is_one_line_exit_2(shared_data, capsys):
    from execal import cli
    code = cli.main(["surface", str(shared_data / "tardis" / "format-examples" / "deribit_options_chain.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "several underlyings (BTC, ETH)" in err and "Traceback" not in err
    code = cli.main(["surface", str(shared_data / "tardis" / "format-examples" / "deribit_options_chain.csv"),
                     "--underlying", "BTC", "--quiet"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    # every expiry skipped (too few strikes): the JSON is written, nothing was fitted -> exit 3
    assert code == 3 and [e["status"] for e in out["expiries"]] == ["skipped", "skipped"]
    assert out["converged"] is False and "no expiry could be fitted" in captured.err


# --- constraints and the no-arbitrage refit on a realistic surface ---------------------------------------------

def test_durrleman_jacobian_matches_finite_differences():
    from execal.models.surface.svi import svi_g_and_jacobian
    k = np.linspace(-1.2, 1.6, 29)
    p = np.array(list(VOGT.values()))
    g, dg, w, dw = svi_g_and_jacobian(k, *p)
    fd_g = np.empty_like(dg)
    fd_w = np.empty_like(dw)
    for j in range(5):
        h = np.zeros(5)
        h[j] = 1e-6
        fd_g[:, j] = (svi_g_and_jacobian(k, *(p + h))[0] - svi_g_and_jacobian(k, *(p - h))[0]) / 2e-6
        fd_w[:, j] = (svi_total_variance(k, *(p + h)) - svi_total_variance(k, *(p - h))) / 2e-6
    np.testing.assert_allclose(dg, fd_g, atol=1e-6 * np.abs(dg).max())
    np.testing.assert_allclose(dw, fd_w, atol=1e-8)
    w_, w1, w2 = svi_derivatives(k, *p)
    np.testing.assert_allclose(g, durrleman_g(k, w_, w1, w2), rtol=1e-14)


def test_fitted_wings_respect_lees_bound():
    """Quotes whose best unconstrained SVI has wing slope b(1+|rho|) = 3: the quasi-explicit
    domain stops at Lee's 2 (steeper wings make g < 0 far out, g → 1/4 − slope²/16)."""
    k = np.linspace(-0.5, 0.5, 41)
    steep = (0.02, 2.0, 0.5, 0.0, 0.1)                      # b(1 + |rho|) = 3
    chain = chain_from_vols(k, 1.0, np.sqrt(svi_total_variance(k, *steep)))
    res = SurfaceCalibrator("svi", "uniform").fit(chain)
    p = res.slices[0].params
    assert p["b"] * (1 + abs(p["rho"])) <= 2.0 + 1e-9
    assert res.slices[0].rmse_vol_pts > 0.1                 # it cannot reproduce the steep quotes
    rep = butterfly_report(steep, np.linspace(-30, 30, 6001))
    assert rep["ok"] is False and rep["violations"][-1]["k_to"] == pytest.approx(30.0)


def test_one_sided_quotes_are_flagged_and_still_fitted():
    k = np.linspace(0.02, 0.3, 20)
    chain = chain_from_vols(k, 0.1, np.sqrt(svi_total_variance(k, 0.004, 0.05, -0.3, 0.0, 0.05) / 0.1))
    res = SurfaceCalibrator("svi", "uniform").fit(chain)
    assert any("one side of the forward" in w for w in res.warnings)
    assert res.slices[0].rmse_vol_pts < 1e-3
    assert res.slices[0].optimizer.message


def _perturbed_ssvi_chain(seed=0):
    """Eight expiries from an SSVI surface with per-slice SVI perturbations and noise: realistic
    quotes whose fits cross in places (as in stress tests of the no-arbitrage refit)."""
    rng = np.random.default_rng(seed)
    ks, Ts, ivs = [], [], []
    for T in np.geomspace(2 / 365, 1.5, 8):
        atm = 0.5 + 0.2 * np.exp(-T / 0.2)
        raw = ssvi_to_raw_svi(atm * atm * T, -0.4, 1.6, 0.4)
        p = (raw["a"], raw["b"] * rng.uniform(0.8, 1.3), float(np.clip(raw["rho"] + rng.normal(0, 0.15), -0.9, 0.9)),
             raw["m"] * rng.uniform(0.5, 1.5), raw["sigma"] * rng.uniform(0.5, 1.5))
        n = int(rng.integers(12, 50))
        k = np.linspace(rng.uniform(-3.5, -1.5), rng.uniform(1.5, 3.5), n) * atm * np.sqrt(T)
        iv = np.sqrt(svi_total_variance(k, *p) / T) * (1 + rng.normal(0, 0.01, n))
        ks.append(k), Ts.append(np.full(n, T)), ivs.append(iv)
    iv = np.concatenate(ivs)
    return chain_from_vols(np.concatenate(ks), np.concatenate(Ts), iv, iv_bid=iv * 0.98, iv_ask=iv * 1.02)


@pytest.mark.parametrize("seed", [0, 8, 15, 34])    # seeds whose free fits break butterfly or calendar
def test_no_arbitrage_svi_on_a_realistic_surface(seed):
    chain = _perturbed_ssvi_chain(seed)
    free = SurfaceCalibrator("svi", "spread").fit(chain)
    broken = sum(not s.butterfly["ok"] for s in free.slices) + \
        sum(bool(c["in_quoted_range"]) for c in free.calendar_violations)
    assert broken >= 1
    fixed = SurfaceCalibrator("svi", "spread", no_arbitrage=True).fit(chain)
    assert fixed.seconds < 10
    assert sum(s.optimizer.method != "quasi_explicit" for s in fixed.slices) >= 1
    for f, s in zip(free.slices, fixed.slices):
        assert s.butterfly["ok"], (s.expiry, s.butterfly["min_g"])
        if s.optimizer.method == "quasi_explicit":          # untouched slices keep their fit
            assert s.params == f.params
        else:
            assert s.message.startswith("refitted under the")
            assert s.rmse_vol_pts < f.rmse_vol_pts + 10.0   # a constrained, not a wrecked, fit
    # no calendar arbitrage where the longer expiry is quoted; outside, it is reported
    assert not [c for c in fixed.calendar_violations if c["in_quoted_range"]]
    assert all(c["in_quoted_range"] is False for c in fixed.calendar_violations)


def test_parameters_in_a_result_are_read_only(sample_chain):
    res = SurfaceCalibrator("ssvi", "uniform").fit(sample_chain)
    with pytest.raises(TypeError):
        res.slices[0].params["a"] = 1.0
    with pytest.raises(TypeError):
        res.global_params["rho"] = 0.0
    with pytest.raises(TypeError):
        res.slices[0].butterfly["ok"] = False
