"""Heston and Bates in the Vol surface panel, as plain functions (the callbacks' bodies) on a real store:
the pricing-model choice from the registry, calibration beside the smile fit and its cache, the smiles with
the model lines, the parameter table (± standard errors, Feller) and the residuals per expiry; plus the pure
figure builders without Dash."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from execal.components import results as results_mod
from execal.components import store as store_mod
from execal.components import surface_figures as SF
from execal.components import surface_panel as sp
from execal.models.surface import heston as H
from execal.models.surface.svi import SurfaceCalibrator

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_DIR = ROOT / "sample_data"
SAMPLE = sp.sample_value(sp.SAMPLE_CHAIN)


@pytest.fixture
def stores(tmp_path):
    cache = store_mod.open_cache(tmp_path / "cache")
    yield store_mod.SessionStore(cache), results_mod.ResultStore(cache)
    cache.close()


@pytest.fixture(autouse=True)
def fresh_process_caches():
    sp._results.clear()
    sp._prepared.clear()
    yield
    sp._results.clear()
    sp._prepared.clear()


def fit(st, rs, session, *, pricing=None, source=SAMPLE, underlying="BTC", view=None, trigger=sp.RUN):
    return sp.fit_outputs(st, rs, SAMPLE_DIR, trigger=trigger, session_id=session, source=source,
                          underlying=underlying, model="svi", weights="vega", no_arbitrage=False, filters={},
                          active=None, view=view, pricing=pricing)


def lines(fig) -> list:
    return [t for t in go.Figure(fig).data if t.mode == "lines"]


def test_pricing_models_come_from_the_registry_apart_from_the_smile_fits():
    assert list(sp.surface_models()) == ["svi", "ssvi"]
    assert list(sp.pricing_models()) == ["heston", "bates"]
    assert sp.build_pricing(["bates", "heston"]) == ["heston", "bates"] and sp.build_pricing(None) == []
    with pytest.raises(sp.SettingsError, match="pricing model 'sabr'"):
        sp.build_pricing(["sabr"])


def test_heston_beside_the_fit_cached_rendered_and_dropped(stores):
    st, rs = stores
    session = store_mod.new_session_id()
    out = fit(st, rs, session, pricing=["heston"])
    view = out["view"]
    assert out["alert"] == ("", False) and "Heston calibrated in" in out["note"]
    result = sp.get_result(rs, view["pricing"]["heston"])
    assert isinstance(result, H.StochasticVolResult) and result.converged and result.weights == "vega"
    # the smile fit is the same one as without the pricing model (same key)
    assert view["key"] == fit(st, rs, store_mod.new_session_id())["view"]["key"]
    # a repeat is a lookup; another worker reads the calibration back
    again = fit(st, rs, session, pricing=["heston"], view=view)
    assert again["view"] == view and again["note"].startswith("Shown from the cache")
    sp._results.clear()
    back = sp.get_result(results_mod.ResultStore(rs.cache), view["pricing"]["heston"])
    assert dict(back.params) == dict(result.params)
    # rendered: the table row, the residuals per expiry, the model line in every smile
    rendered = sp.render_outputs(rs, view)
    table = rendered[sp.PRICING_TABLE].children
    assert table.id == sp._id("pricing-table") and len(table.children[-1].children) == 1    # caption, head, body
    fig = go.Figure(rendered[sp.PRICING_FIGURE])
    assert [t.name for t in fig.data[:2]] == ["fit (SVI)", "Heston (calibrated)"] and len(fig.data) == 2 + 8
    smiles = sp.smiles_output(rs, view, rendered["expiry_value"])
    names = [t.name for t in lines(smiles)]
    assert names.count("fit (SVI)") == 8 and names.count("Heston (calibrated)") == 8
    # unticked: the smile fit alone
    plain = fit(st, rs, session, pricing=[], view=view)["view"]
    assert "pricing" not in plain and plain["key"] == view["key"]
    assert sp.render_outputs(rs, plain)[sp.PRICING_TABLE].children == SF.NO_PRICING
    text = str(go.Figure(sp.render_outputs(rs, plain)[sp.PRICING_FIGURE]).layout.annotations[0].text)
    assert SF.NO_PRICING == text.replace("<br>", " ")        # empty states wrap their message


def test_too_few_quotes_for_heston_is_one_line_and_keeps_the_surface(stores, shared_data):
    st, rs = stores
    session = store_mod.new_session_id()
    path = shared_data / "tardis" / "format-examples" / "deribit_options_chain.csv"
    key = st.load_bytes(path.read_bytes(), name=path.name, session_id=session)
    shown = fit(st, rs, session)["view"]
    out = fit(st, rs, session, pricing=["heston"], source=key, underlying="BTC", view=shown)
    text, is_open = out["alert"]
    assert is_open and text.startswith("heston: 3 quote(s) cannot pin down the 5 parameters")
    assert "The surface shown is unchanged" in text


# --- the figure builders ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chain():
    T = np.array([7, 30, 91, 365]) / 365.0
    return H.model_chain(dict(v0=0.36, kappa=2.0, theta=0.4, sigma=1.5, rho=-0.3), T,
                         [np.linspace(-2, 2, 15) * np.sqrt(0.4 * t) for t in T], noise_vol_pts=0.2, seed=2)


@pytest.fixture(scope="module")
def views(chain):
    svi = SF.surface_view(SurfaceCalibrator("svi", "vega").fit(chain))
    heston = SF.pricing_view(H.StochasticVolCalibrator("heston", "price", "vega", starts=1, polish=1).fit(chain))
    bates = SF.pricing_view(H.StochasticVolCalibrator("bates", "price", "vega", starts=1, polish=1).fit(chain))
    return svi, heston, bates


def test_pricing_rows_show_values_errors_and_feller(views):
    _, heston, bates = views
    rows = SF.pricing_rows([heston, bates])
    assert [r["key"] for r in rows] == ["heston", "bates"]
    h = rows[0]
    assert h["converged"] == "yes" and " ± " in h["v0"] and h["lambda"] == "—"
    assert h["Feller 2κθ/σ²"].endswith("(violated)")        # 2·2·0.4/1.5² = 0.71
    assert h["warnings"] == "none" and any("Feller" in w for w in heston.result.warnings)   # in its own column
    assert rows[1]["lambda"] != "—" and "evaluations" in h["optimizer"]
    v0, se = (float(x) for x in h["v0"].split(" ± "))
    assert abs(v0 - 0.36) < 4 * se


def test_smiles_and_residuals_with_pricing_models(views):
    svi, heston, bates = views
    fig = SF.smiles_figure(svi, None, [heston, bates])
    dashed = [t for t in fig.data if t.mode == "lines" and t.line.dash == "dash"]
    assert len(dashed) == 8 and {t.name for t in dashed} == {"Heston (calibrated)", "Bates (calibrated)"}
    # each model line is the model's implied vol on its curve
    first = dashed[0]
    iso = SF.expiry_iso(heston.result.expiries[0].expiry)
    k = np.asarray(first.x)
    np.testing.assert_allclose(np.asarray(first.y) / 100, heston.result.implied_vol(k, iso), atol=1e-10)
    res = SF.pricing_residuals_figure(svi, [heston, bates])
    rmse = [t for t in res.data if t.mode == "lines+markers"]
    assert [t.name for t in rmse] == ["fit (SVI)", "Heston (calibrated)", "Bates (calibrated)"]
    np.testing.assert_allclose(rmse[1].y, [e.rmse_vol_pts for e in heston.result.expiries])
    scatter = [t for t in res.data if t.mode == "markers"]
    assert len(scatter) == 2 * 4 and scatter[0].xaxis == "x2" and scatter[-1].xaxis == "x3"
    errs = np.concatenate([np.asarray(t.y) for t in scatter[:4]])
    np.testing.assert_allclose(np.sort(errs), np.sort(heston.quotes["error_vol_pts"].to_numpy()))
    assert "No pricing model" in SF.pricing_residuals_figure(svi, []).layout.annotations[0].text
