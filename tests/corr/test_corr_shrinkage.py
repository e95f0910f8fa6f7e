"""Ledoit–Wolf against scikit-learn and against the paper's formulas written out as loops; regime
correlations recovered from simulated calm and stressed periods."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from execal.models.corr.regimes import RegimeCorrelations, labels_frame
from execal.models.corr.shrinkage import LedoitWolf, block_bootstrap_indices, ledoit_wolf
from execal.models.data.schema import DataError


def paper_ledoit_wolf(X: np.ndarray) -> tuple[np.ndarray, float]:
    """Ledoit & Wolf (2004), Lemmas 3.2–3.5, one element at a time: ⟨A, B⟩ = tr(AB')/p."""
    n, p = X.shape
    Xc = X - X.mean(0)
    S = np.zeros((p, p))
    for t in range(n):
        S += np.outer(Xc[t], Xc[t])
    S /= n

    def inner(A, B):
        return sum(A[i, j] * B[i, j] for i in range(p) for j in range(p)) / p

    I = np.eye(p)
    m = inner(S, I)
    d2 = inner(S - m * I, S - m * I)
    b2_bar = 0.0
    for t in range(n):
        D = np.outer(Xc[t], Xc[t]) - S
        b2_bar += inner(D, D)
    b2_bar /= n * n
    b2 = min(b2_bar, d2)
    return (b2 / d2) * m * I + (1 - b2 / d2) * S, b2 / d2


@pytest.mark.parametrize("n,p,seed", [(40, 5, 0), (200, 8, 1), (15, 10, 2), (500, 3, 3)])
def test_equals_the_paper_and_scikit_learn(n, p, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((p, p))
    X = rng.standard_normal((n, p)) @ A * 0.01
    cov, w, mu, S = ledoit_wolf(X)
    ref, w_ref = paper_ledoit_wolf(X)
    assert w == pytest.approx(w_ref, rel=1e-10)
    assert np.allclose(cov, ref, rtol=1e-10, atol=0)
    sk = pytest.importorskip("sklearn.covariance")
    sk_cov, sk_w = sk.ledoit_wolf(X)
    assert w == pytest.approx(sk_w, rel=1e-10)
    assert np.allclose(cov, sk_cov, rtol=1e-10, atol=0)
    assert np.linalg.eigvalsh(cov).min() > 0


def test_estimator_result_and_bootstrap():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((300, 4)) @ np.linalg.cholesky(np.full((4, 4), 0.5) + 0.5 * np.eye(4)).T / 100
    res = LedoitWolf(n_boot=100).fit(X)
    assert res.report.method == "closed_form" and res.converged
    assert 0 < res.shrinkage < 1
    assert set(res.params) >= {"shrinkage", "mu", "rho[asset1|asset2]"}
    assert all(np.isfinite(v) and v > 0 for v in res.std_errors.values())
    c_s, c_l = res.condition_numbers()
    assert c_l < c_s
    d = res.to_dict()
    assert d["kind"] == "correlation" and len(d["correlation"]) == 4
    hand = LedoitWolf().fix({"shrinkage": 1.0}, X)
    assert type(hand) is type(res) and hand.report.method == "fixed"
    assert np.allclose(hand.covariance, hand.params["mu"] * np.eye(4))
    with pytest.raises(ValueError):
        LedoitWolf().fix({"shrinkage": 1.5}, X)
    idx = block_bootstrap_indices(100, 3, seed=0, block=5)
    assert idx.shape == (3, 100) and idx.max() < 100
    assert np.all(np.diff(idx[:, :5], axis=1) == 1)          # blocks of consecutive rows


def test_regime_correlations_recover_calm_and_stressed():
    rng = np.random.default_rng(7)
    n = 4000
    stressed = (np.arange(n) // 250) % 4 == 3                 # runs of 250 periods, a quarter of the time
    rho = np.where(stressed, 0.85, 0.3)
    sig = np.where(stressed, 0.03, 0.01)
    z1, z2 = rng.standard_normal((2, n))
    x = sig * z1
    y = sig * (rho * z1 + np.sqrt(1 - rho ** 2) * z2)
    t = pd.date_range("2024-01-01", periods=n, freq="1h", tz="UTC")
    frame = pd.DataFrame({"BTC": x, "ETH": y}, index=t)
    labels = labels_frame(t.as_unit("ns").asi8, np.where(stressed, "stressed", "calm"))
    res = RegimeCorrelations().fit(frame, labels.iloc[10:])          # the first 10 periods have no label
    assert [r.regime for r in res.regimes] == ["calm", "stressed"]     # sorted by volatility
    calm, hot = res.regime("calm"), res.regime("stressed")
    assert calm.rho["rho[BTC|ETH]"] == pytest.approx(0.3, abs=0.05)
    assert hot.rho["rho[BTC|ETH]"] == pytest.approx(0.85, abs=0.05)
    assert hot.sigma_daily[0] == pytest.approx(0.03 * np.sqrt(24), rel=0.1)
    (diff,) = res.differences
    assert diff["difference"] > 0.4 and diff["p_value"] < 1e-6
    assert any("no regime label" in w for w in res.warnings)
    assert res.params["rho[BTC|ETH]@calm"] == calm.rho["rho[BTC|ETH]"]
    assert calm.n_obs + hot.n_obs == n - 10
    hand = RegimeCorrelations().fix({"rho[BTC|ETH]@calm": 0.2, "rho[BTC|ETH]@stressed": 0.9}, frame, labels)
    assert hand.regime("stressed").correlation[0, 1] == 0.9 and hand.report.method == "fixed"
    with pytest.raises(DataError, match="one label per return"):
        RegimeCorrelations().fit(frame, ["calm"] * 3)
