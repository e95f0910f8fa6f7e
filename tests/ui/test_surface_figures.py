"""The Vol surface panel's pure builders: figures and tables from a SurfaceResult, checked against the result's
own numbers, the sample chain's known SSVI surface (sample_data/ground_truth.json) and hand-made surfaces that
break the butterfly, calendar and SSVI conditions, or whose optimizer did not converge."""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from execal.components import surface_figures as SF
from execal.components.figures import unwrap_message
from execal.models.data import io as model_io
from execal.models.surface.options import chain_from_vols, prepare_chain
from execal.models.surface.svi import SVI_PARAMS, VOL_PTS, SurfaceCalibrator, fit_surface, ssvi_phi, svi_total_variance

ROOT = Path(__file__).resolve().parents[2]
TRUTH = json.loads((ROOT / "sample_data" / "ground_truth.json").read_text())["options"]


@pytest.fixture(scope="module")
def chain():
    raw = (ROOT / "sample_data" / "options_chain.csv").read_bytes()
    return prepare_chain(model_io.load(raw, name="options_chain.csv"))


@pytest.fixture(scope="module")
def svi(chain):
    return fit_surface(chain, model="svi")


@pytest.fixture(scope="module")
def ssvi(chain):
    return fit_surface(chain, model="ssvi")


@pytest.fixture(scope="module")
def svi_view(svi):
    return SF.surface_view(svi)


@pytest.fixture(scope="module")
def ssvi_view(ssvi):
    return SF.surface_view(ssvi)


def annotation_texts(fig) -> list[str]:
    """The figure's annotations (subplot titles, or an empty state's message) as written."""
    return [unwrap_message(a.text) for a in fig.layout.annotations]


def small_chain(n_exp: int = 3, n_k: int = 15):
    """A synthetic chain on an SSVI surface with ±0.5 vol point bid/ask (quotes straddle the money)."""
    Ts = np.geomspace(0.05, 1.0, n_exp)
    ks, Tv, ivs = [], [], []
    for T in Ts:
        theta = 0.55 ** 2 * T
        k = np.linspace(-0.3, 0.3, n_k) * math.sqrt(T) * 2
        w = 0.5 * theta * (1 - 0.3 * ssvi_phi(theta, 1.0, 0.4) * k
                           + np.sqrt((ssvi_phi(theta, 1.0, 0.4) * k - 0.3) ** 2 + 1 - 0.09))
        ks.append(k), Tv.append(np.full(n_k, T)), ivs.append(np.sqrt(w / T))
    k, T, iv = np.concatenate(ks), np.concatenate(Tv), np.concatenate(ivs)
    return chain_from_vols(k, T, iv, iv_bid=iv - 0.005, iv_ask=iv + 0.005)


# --- empty states -----------------------------------------------------------------------------------


@pytest.mark.parametrize("builder", [SF.smiles_figure, SF.surface_figure, SF.term_structure_figure,
                                     SF.residuals_figure])
def test_no_result_is_a_designed_empty_state(builder):
    fig = builder(None)
    assert annotation_texts(fig) == [SF.NO_RESULT]
    assert len(fig.data) == 0
    assert SF.surface_view(None) is None and SF.expiry_options(None) == []


# --- the view --------------------------------------------------------------------------------------


def test_view_groups_quotes_and_curves_by_expiry(svi, svi_view):
    smile = svi.smile_frame()
    assert len(svi_view.smile) == len(smile) == len(svi.chain.points)
    assert set(svi_view.smile_spans) == {SF.expiry_iso(s.expiry) for s in svi.slices}
    for s in svi.slices:
        iso = SF.expiry_iso(s.expiry)
        q = svi_view.quotes(iso)
        assert (q["expiry"] == s.expiry).all() and len(q) == s.n_points
        assert np.all(np.diff(q["k"].to_numpy()) > 0)
        c = svi_view.curve(iso)
        assert (c["expiry"] == s.expiry).all() and len(c) == SF.CURVE_POINTS
    # the overall RMSE is the result's (computed once here)
    assert svi_view.rmse_vol_pts == pytest.approx(svi.rmse_vol_pts, rel=1e-12)


# --- smiles ----------------------------------------------------------------------------------------


def test_smiles_draw_mid_bid_ask_and_fit_per_expiry(svi, svi_view):
    fig = SF.smiles_figure(svi_view)
    n = len(svi.slices)
    assert n == 8 and len(fig.data) == 2 * n          # market + fit per expiry
    markets = [t for t in fig.data if t.mode == "markers"]
    fits = [t for t in fig.data if t.mode == "lines"]
    assert len(markets) == len(fits) == n
    # one subplot per expiry, each on its own axes, three per row
    assert len({t.xaxis for t in markets}) == n
    assert fig.layout.xaxis3.domain[0] > fig.layout.xaxis2.domain[0] > fig.layout.xaxis.domain[0]
    assert fig.layout.yaxis4.domain[1] < fig.layout.yaxis.domain[0]
    smile = svi.smile_frame()
    for s, t in zip(sorted(svi.slices, key=lambda s: s.T_years), markets):
        q = smile[smile["expiry"] == s.expiry].sort_values("k")
        np.testing.assert_allclose(t.y, VOL_PTS * q["iv_mid"].to_numpy())
        # asymmetric bars reach exactly the bid and the ask IV
        np.testing.assert_allclose(np.asarray(t.y) + np.asarray(t.error_y.array), VOL_PTS * q["iv_ask"].to_numpy())
        np.testing.assert_allclose(np.asarray(t.y) - np.asarray(t.error_y.arrayminus),
                                   VOL_PTS * q["iv_bid"].to_numpy())
        assert np.all(np.asarray(t.error_y.array) > 0) and np.all(np.asarray(t.error_y.arrayminus) > 0)
    # the fit line is the model: on the sample's exact SSVI data it goes through the mids
    t0 = fits[0]
    s0 = min(svi.slices, key=lambda s: s.T_years)
    np.testing.assert_allclose(t0.y, VOL_PTS * svi.implied_vol(np.asarray(t0.x), s0.expiry), rtol=1e-12)
    kq = smile.loc[smile["expiry"] == s0.expiry, "k"]
    assert min(t0.x) < kq.min() and max(t0.x) > kq.max()
    titles = annotation_texts(fig)
    assert titles[0].startswith(SF.expiry_label(s0.expiry, s0.T_years)) and "RMSE" in titles[0]
    # a legend entry for each kind of trace, not one per expiry
    assert sum(bool(t.showlegend) for t in fig.data) == 2


def test_smile_bars_reach_bid_and_ask_when_the_band_is_not_symmetric(svi_view):
    # prepare_chain's mid is the mean of bid and ask IV; a wider ask side must still end at the ask
    smile = svi_view.smile.copy()
    smile["iv_ask"] = smile["iv_ask"] + 0.01
    fig = SF.smiles_figure(dataclasses.replace(svi_view, smile=smile))
    t = fig.data[0]
    q = smile.iloc[slice(*svi_view.smile_spans[SF.expiry_iso(smile["expiry"].iloc[0])])]
    np.testing.assert_allclose(np.asarray(t.y) + np.asarray(t.error_y.array), VOL_PTS * q["iv_ask"].to_numpy())
    np.testing.assert_allclose(np.asarray(t.y) - np.asarray(t.error_y.arrayminus), VOL_PTS * q["iv_bid"].to_numpy())


def test_smile_selection(svi, svi_view):
    isos = [o["value"] for o in SF.expiry_options(svi)]
    fig = SF.smiles_figure(svi_view, [isos[5], isos[1], "2030-01-01T00:00:00+00:00"])
    markets = [t for t in fig.data if t.mode == "markers"]
    assert len(markets) == 2                        # unknown expiries are ignored, order follows T
    assert annotation_texts(fig)[0].startswith(SF.expiry_label(svi.slices[1].expiry))
    # nothing valid chosen: the default selection
    assert SF.selected_expiries(svi, ["nope"]) == SF.default_expiries(svi) == isos


def test_default_expiries_spread_over_the_term_structure():
    chain = small_chain(n_exp=14, n_k=7)
    result = fit_surface(chain, model="ssvi")
    isos = [o["value"] for o in SF.expiry_options(result)]
    picked = SF.default_expiries(result)
    assert len(picked) == SF.DEFAULT_SMILES and picked[0] == isos[0] and picked[-1] == isos[-1]
    assert picked == sorted(picked, key=isos.index)
    assert len(SF.selected_expiries(result, isos)) == SF.MAX_SMILES


# --- 3D surface --------------------------------------------------------------------------------------


def test_surface_grid_is_the_model_inside_each_quoted_range(svi, svi_view):
    k, T, z = SF.surface_grid(svi_view, k_points=81)
    assert z.shape == (8, 81) and np.all(np.diff(T) > 0)
    smile = svi.smile_frame()
    for i, s in enumerate(sorted(svi.slices, key=lambda s: s.T_years)):
        kq = smile.loc[smile["expiry"] == s.expiry, "k"].to_numpy()
        pad = 0.05 * np.ptp(kq)
        inside = (k >= kq.min() - pad) & (k <= kq.max() + pad)
        np.testing.assert_allclose(z[i, inside], svi.implied_vol(k[inside], s.expiry))
        assert np.isnan(z[i, ~inside]).all()
    # the shortest expiry is quoted on a much narrower k-range than the longest: holes, not extrapolation
    assert np.isnan(z[0]).sum() > np.isnan(z[-1]).sum()
    fig = SF.surface_figure(svi_view)
    assert [t.type for t in fig.data] == ["surface", "scatter3d"]
    np.testing.assert_allclose(fig.data[1].z, VOL_PTS * smile.sort_values(["T_years", "k"])["iv_mid"].to_numpy())


def test_surface_with_one_fitted_expiry_draws_its_curve():
    chain = small_chain(n_exp=1)
    fig = SF.surface_figure(SF.surface_view(fit_surface(chain, model="svi")))
    assert [t.type for t in fig.data] == ["scatter3d", "scatter3d"] and fig.data[0].mode == "lines"


# --- ATM term structure and skew ------------------------------------------------------------------------


def test_atm_vol_and_skew_of_the_model_against_the_truth(ssvi, ssvi_view):
    atm = ssvi_view.atm
    truth = {pd.Timestamp(e["expiry"]): e["atm_vol"] for e in TRUTH["expiries"]}
    np.testing.assert_allclose(atm["atm_vol_model"], [truth[e] for e in atm["expiry"]], atol=2e-4)
    # SSVI: dw/dk(0) = theta·rho·phi, so dσ/dk(0) = theta·rho·phi / (2·sqrt(theta·T))
    g = ssvi.global_params
    theta = np.array([s.theta for s in sorted(ssvi.slices, key=lambda s: s.T_years)])
    T = atm["T_years"].to_numpy()
    expected = theta * g["rho"] * ssvi_phi(theta, g["eta"], g["gamma"]) / (2 * np.sqrt(theta * T))
    np.testing.assert_allclose(atm["atm_skew_model"], expected, rtol=1e-9)
    # the market's near-the-money estimate agrees with the surface it was generated from
    np.testing.assert_allclose(atm["atm_vol_market"], atm["atm_vol_model"], atol=5e-4)
    np.testing.assert_allclose(atm["atm_skew_market"], atm["atm_skew_model"], rtol=0.03)
    fig = SF.term_structure_figure(ssvi_view)
    assert len(fig.data) == 4
    np.testing.assert_allclose(fig.data[0].y, VOL_PTS * atm["atm_vol_model"].to_numpy())
    np.testing.assert_allclose(fig.data[2].y, VOL_PTS * atm["atm_skew_model"].to_numpy())
    assert fig.data[2].xaxis == "x2" and fig.layout.xaxis2.domain[0] > fig.layout.xaxis.domain[1]


def test_market_atm_is_a_local_quadratic_and_never_extrapolates():
    k = np.linspace(-0.2, 0.3, 11)
    level, slope = SF.market_atm(k, 0.5 - 0.2 * k + 0.4 * k * k)
    assert level == pytest.approx(0.5) and slope == pytest.approx(-0.2)
    assert all(math.isnan(v) for v in SF.market_atm(np.linspace(0.05, 0.3, 6), np.full(6, 0.5)))
    vol, slope = SF.market_atm(np.array([0.1, -0.1]), np.array([0.4, 0.6]))
    assert vol == pytest.approx(0.5) and math.isnan(slope)


# --- residuals --------------------------------------------------------------------------------------------


def test_residuals_are_fit_minus_mid_with_band_markers(chain, svi):
    # parameters off the fit by hand: some quotes fall outside the bid/ask band
    # (+10 % of the ATM total variance: ≈ +5 % of the ATM vol, more than the band near the money)
    params = {s.expiry.isoformat(): dict(s.params) | {"a": s.params["a"] + 0.1 * float(
        svi_total_variance(0.0, *(s.params[p] for p in SVI_PARAMS)))} for s in svi.slices}
    shifted = SurfaceCalibrator("svi").fix(params, chain)
    view = SF.surface_view(shifted)
    fig = SF.residuals_figure(view)
    assert len(fig.data) == len(shifted.slices)
    smile = view.smile
    all_y = np.concatenate([np.asarray(t.y) for t in fig.data])
    np.testing.assert_allclose(all_y, smile["error_vol_pts"].to_numpy())
    symbols = np.concatenate([np.asarray(t.marker.symbol) for t in fig.data])
    inside = smile["in_band"].to_numpy(bool)
    assert inside.any() and (~inside).any()
    assert (symbols[inside] == "circle").all() and (symbols[~inside] == "circle-open").all()


# --- status and tables ------------------------------------------------------------------------------------


def test_status_converged(svi, ssvi):
    s = SF.status_summary(svi)
    assert s["level"] == "success" and s["headline"].startswith("Converged — all 8 fitted expiries")
    s = SF.status_summary(ssvi)
    assert s["level"] == "success" and "SSVI surface over 8 of 8 expiries" in s["headline"]


def test_a_slice_that_did_not_converge_is_red(svi):
    bad = svi.slices[3]
    opt = dataclasses.replace(bad.optimizer, success=False, converged=False, message="max iterations")
    result = dataclasses.replace(svi, slices=svi.slices[:3] + (dataclasses.replace(bad, optimizer=opt),)
                                 + svi.slices[4:])
    s = SF.status_summary(result)
    assert s["level"] == "danger" and s["headline"].startswith("NOT CONVERGED — 1 of 8")
    assert SF.expiry_label(bad.expiry) in s["headline"]
    rows = SF.slice_status_rows(result)
    assert [r["converged"] for r in rows].count("NO") == 1 and rows[3]["converged"] == "NO"
    assert rows[0]["converged"] == "yes" and rows[0]["optimizer"] == svi.slices[0].optimizer.method


def test_ssvi_not_converged_is_red(ssvi):
    opt = dataclasses.replace(ssvi.optimizer, success=False, converged=False, message="`max_nfev` exceeded")
    s = SF.status_summary(dataclasses.replace(ssvi, optimizer=opt))
    assert s["level"] == "danger" and "NOT CONVERGED" in s["headline"] and "max_nfev" in s["headline"]


def test_parameter_tables(svi, ssvi):
    rows = SF.parameter_rows(svi)
    assert len(rows) == 8 and "theta" not in rows[0]
    assert list(rows[0])[3:8] == ["a", "b", "rho", "m", "sigma"]
    assert rows[2]["b"] == SF.format_number(svi.slices[2].params["b"], 5)
    assert rows[2]["RMSE (vol pts)"] == SF.format_number(svi.slices[2].rmse_vol_pts, 3)
    assert SF.ssvi_rows(svi) == []
    rows = SF.parameter_rows(ssvi)
    assert rows[4]["theta"] == SF.format_number(ssvi.slices[4].theta, 5)
    glob = {r["parameter"]: float(r["value"]) for r in SF.ssvi_rows(ssvi)}
    assert glob == pytest.approx({"rho": TRUTH["rho"], "eta": TRUTH["eta"], "gamma": TRUTH["gamma"]}, abs=1e-4)


def test_arbitrage_free_sample(svi, ssvi):
    assert [r["butterfly"] for r in SF.butterfly_rows(svi)] == ["ok"] * 8
    assert SF.calendar_rows(svi) == [] and SF.ssvi_condition_rows(svi) == []
    level, text = SF.arbitrage_headline(ssvi)
    assert level == "success" and "free of static arbitrage everywhere" in text
    conds = SF.ssvi_condition_rows(ssvi)
    assert {r["holds"] for r in conds} == {"yes"} and len(conds) == 6


def test_butterfly_and_calendar_violations_are_listed(chain, svi):
    iso = [s.expiry.isoformat() for s in svi.slices]
    params = {e: dict(s.params) for e, s in zip(iso, svi.slices)}
    # steep wings beyond Lee's bound: g < 0 far out on the second expiry
    params[iso[1]] |= {"b": 2.0, "rho": 0.9}
    # the longest expiry well below the one before it: calendar arbitrage
    params[iso[7]] |= {"a": params[iso[6]]["a"] * 0.2}
    bad = SurfaceCalibrator("svi").fix(params, chain)
    rows = SF.butterfly_rows(bad)
    assert rows[1]["butterfly"] == "VIOLATED" and "[" in rows[1]["violations (k ranges)"]
    assert float(rows[1]["min g"]) < 0
    assert rows[0]["butterfly"] == "ok"
    cal = SF.calendar_rows(bad)
    assert cal and all(r["longer expiry"] == SF.expiry_label(iso[7]) for r in cal
                       if r["shorter expiry"] == SF.expiry_label(iso[6]))
    assert any(float(r["max excess w"]) > 0 for r in cal)
    level, text = SF.arbitrage_headline(bad)
    assert level == "danger" and "1 expiry(ies) with g < 0" in text and "No-arbitrage fit" in text


def test_ssvi_condition_that_fails_says_no(chain):
    bad = SurfaceCalibrator("ssvi").fix({"rho": -0.2, "eta": 3.0, "gamma": 0.45}, chain)
    rows = {r["key"]: r for r in SF.ssvi_condition_rows(bad)}
    assert rows["power_law_eta"]["holds"] == "NO" and float(rows["power_law_eta"]["margin"]) < 0
    assert SF.status_summary(bad)["level"] == "info"      # hand-set parameters: no optimizer ran


# --- the real Deribit example: too few strikes for raw SVI ----------------------------------------------


@pytest.mark.shared_data
def test_real_deribit_chain(shared_data):
    path = shared_data / "tardis" / "format-examples" / "deribit_options_chain.csv"
    ds = model_io.load(path.read_bytes(), name=path.name)
    chain = prepare_chain(ds, underlying="BTC")
    svi = fit_surface(chain, model="svi")
    view = SF.surface_view(svi)
    s = SF.status_summary(svi)
    assert s["level"] == "danger" and "No expiry fitted" in s["headline"]
    assert any("raw SVI needs at least 5" in d for d in s["details"])
    assert annotation_texts(SF.surface_figure(view)) == [SF.NO_FITTED]
    assert annotation_texts(SF.term_structure_figure(view)) == [SF.NO_FITTED]
    smiles = SF.smiles_figure(view)      # the market quotes are still drawn, titled "skipped"
    assert [t.mode for t in smiles.data] == ["markers", "markers"]
    assert all("skipped" in t for t in annotation_texts(smiles))
    assert {r["butterfly"] for r in SF.butterfly_rows(svi)} == {"not fitted"}
    ssvi = fit_surface(chain, model="ssvi")
    s = SF.status_summary(ssvi)
    assert s["level"] == "warning" and any("not separately identified" in d for d in s["details"])
    assert len(SF.parameter_rows(ssvi)) == 2 and len(SF.smiles_figure(SF.surface_view(ssvi)).data) == 4

