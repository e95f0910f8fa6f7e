"""The Correlation panel's pure figure and table builders, without Dash: results from simulated data in,
figures whose traces carry exactly the result's numbers out; designed empty states otherwise."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from execal.components import corr_figures as CF
from execal.models.corr.dcc import DCC
from execal.models.corr.hy import HayashiYoshida
from execal.models.corr.regimes import RegimeCorrelations
from execal.models.corr.shrinkage import LedoitWolf
from test_corr_dcc import R3, simulate_dcc
from test_corr_hy import correlated_ticks


def message(fig) -> str:
    return go.Figure(fig).layout.annotations[0].text.replace("<br>", " ")      # empty states wrap


@pytest.fixture(scope="module")
def hy_result():
    x, y = correlated_ticks(0.8, 100_000, 0.03, 0.02, seed=3, lag_steps=20)
    return HayashiYoshida(max_lag_s=0.1, lag_step_s=0.01, epps=True, epps_intervals=[0.05, 0.5, 2]).fit([x, y])


@pytest.fixture(scope="module")
def dcc_result():
    return DCC().fit(simulate_dcc(800, R3, 0.05, 0.9, seed=1))


def test_heatmap_holds_the_matrix(hy_result, dcc_result):
    fig = CF.result_heatmap(hy_result)
    (hm,) = fig.data
    assert np.allclose(np.asarray(hm.z, float), hy_result.correlation)
    assert list(hm.x) == ["x", "y"] and hm.zmin == -1 and hm.zmax == 1
    assert "Hayashi–Yoshida" in fig.layout.title.text
    dfig = CF.result_heatmap(dcc_result)
    assert np.allclose(np.asarray(dfig.data[0].z, float), np.asarray(dcc_result.correlation_path)[-1])
    assert "R_T" in dfig.layout.title.text
    lw = LedoitWolf(n_boot=0).fit(simulate_dcc(300, R3, 0.05, 0.9, seed=2))
    assert "Ledoit–Wolf" in CF.result_heatmap(lw).layout.title.text
    assert message(CF.result_heatmap(None)) == CF.NO_RESULT


def test_epps_figure(hy_result):
    fig = CF.epps_figure(hy_result.epps)
    curve, hy_line = fig.data
    assert list(curve.x) == [0.05, 0.5, 2.0] and np.allclose(curve.y, hy_result.epps[0].rho)
    assert np.allclose(hy_line.y, [hy_result.params["rho[x|y]"]] * 2) and hy_line.line.dash == "dash"
    assert fig.layout.xaxis.type == "log"
    assert "tick methods only" in message(CF.epps_figure(()))


def test_lead_lag_figure_and_rows(hy_result):
    (scan,) = hy_result.lead_lag
    fig = CF.lead_lag_figure(hy_result.lead_lag)
    band, line, peak = fig.data
    assert np.allclose(line.x, 1e3 * scan.lags_s) and np.allclose(line.y, scan.rho)
    assert band.fill == "toself" and len(band.x) == 2 * len(scan.lags_s)
    assert peak.x[0] == pytest.approx(20.0) and peak.y[0] == pytest.approx(scan.best_rho)
    (row,) = CF.lead_lag_rows(hy_result.lead_lag)
    assert row["peak lag (ms)"] == "+20" and row["leader"] == "x" and row["significant"] == "yes"
    assert "Hayashi–Yoshida method" in message(CF.lead_lag_figure(()))


def test_dcc_path_figure(dcc_result):
    fig = CF.dcc_path_figure(dcc_result, horizon=10)
    assert len(fig.data) == 3 * 3                      # path, unconditional level, forecast per pair
    path = fig.data[0]
    assert np.allclose(np.asarray(path.y, float), np.asarray(dcc_result.correlation_path)[:, 0, 1])
    assert len(fig.data[2].x) == 10
    assert "a = " in fig.layout.title.text
    assert "DCC-GARCH method" in message(CF.dcc_path_figure(None))
    rows = CF.forecast_rows(dcc_result, 2)
    assert len(rows) == 6 and rows[0]["h"] == 1


def test_regime_figure_and_rows():
    y = simulate_dcc(600, R3, 0.05, 0.9, seed=4)
    labels = np.where(np.arange(600) % 3 == 0, "stressed", "calm")
    res = RegimeCorrelations(order=["calm", "stressed"]).fit(y, labels)
    fig = CF.regime_figure(res)
    assert len(fig.data) == 2
    assert np.allclose(np.asarray(fig.data[1].z, float), res.regime("stressed").correlation)
    assert [a.text for a in fig.layout.annotations] == ["calm (400 periods)", "stressed (200 periods)"]
    rows = CF.regime_rows(res)
    assert len(rows) == 3 and rows[0]["low"] == "calm" and rows[0]["high"] == "stressed"
    assert "calm vs stressed" in message(CF.regime_figure(None))


def test_params_rows_and_status(hy_result, dcc_result):
    rows = CF.params_rows(dcc_result)
    assert rows[0]["param"] == "a" and rows[0]["value"] == f"{dcc_result.params['a']:.6g}"
    s = CF.status_summary(hy_result)
    assert s["level"] in ("success", "warning") and s["headline"].startswith("Hayashi–Yoshida")
    bad = DCC(maxiter=1).fit(simulate_dcc(300, R3, 0.05, 0.9, seed=5))
    s = CF.status_summary(bad)
    assert s["level"] == "danger" and "NOT converged" in s["headline"]
    assert CF.status_summary(None)["headline"] == CF.NO_RESULT
