"""Basket cost: the closed-form trajectories against Almgren & Chriss's single-asset formulas and against a
direct minimisation of the discrete objective; together never worse than apart; correlation in the risk term."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from execal.models.corr.basket import BasketCost, ac_moments, ac_trajectory


def test_single_asset_equals_almgren_chriss_closed_forms():
    # Almgren & Chriss (2000), section 3's example: X = 1e6 shares at $50, σ = 0.95 $/share/√day, T = 5 days,
    # N = 5, η = 2.5e-6, γ = 2.5e-7, ε = 0.0625, λ = 2e-6
    X, sigma, T, N, lam, eta, gamma, eps = 1e6, 0.95, 5.0, 5, 2e-6, 2.5e-6, 2.5e-7, 0.0625
    tau = T / N
    Ht = eta - 0.5 * gamma * tau
    C = np.array([[sigma ** 2]])
    x = ac_trajectory(np.array([X]), np.array([Ht]), C, T=T, N=N, lam=lam)[:, 0]
    kappa = math.acosh(0.5 * lam * sigma ** 2 / Ht * tau ** 2 + 1) / tau
    ref = [math.sinh(kappa * (T - k * tau)) / math.sinh(kappa * T) * X for k in range(N + 1)]
    assert x == pytest.approx(ref, rel=1e-12)
    E, V = ac_moments(x[:, None], H=np.array([Ht]), C=C, gamma=np.array([gamma]), eps=np.array([eps]), T=T)
    E_ref = 0.5 * gamma * X ** 2 + eps * X + Ht * X ** 2 * math.tanh(0.5 * kappa * tau) * (
        tau * math.sinh(2 * kappa * T) + 2 * T * math.sinh(kappa * tau)) / (2 * tau ** 2 * math.sinh(kappa * T) ** 2)
    V_ref = 0.5 * sigma ** 2 * X ** 2 * (tau * math.sinh(kappa * T) * math.cosh(kappa * (T - tau))
                                          - T * math.sinh(kappa * tau)) / (math.sinh(kappa * T) ** 2 * math.sinh(kappa * tau))
    assert E == pytest.approx(E_ref, rel=1e-12)
    assert V == pytest.approx(V_ref, rel=1e-12)


def test_joint_trajectory_minimises_the_discrete_objective():
    rng = np.random.default_rng(0)
    m, N, T, lam = 3, 12, 2.0, 1e-5
    A = rng.standard_normal((m, m))
    C = A @ A.T * 10
    H = np.array([0.5, 1.0, 2.0])
    X = np.array([100.0, -50.0, 80.0])
    x = ac_trajectory(X, H, C, T=T, N=N, lam=lam)
    assert np.allclose(x[0], X) and np.allclose(x[-1], 0, atol=1e-9)
    tau = T / N

    def U(inner):
        xs = np.vstack([X, inner.reshape(N - 1, m), np.zeros(m)])
        n = xs[:-1] - xs[1:]
        return float(np.sum(n * n * H)) / tau + lam * tau * float(np.einsum("ki,ij,kj->", xs[1:], C, xs[1:]))

    direct = optimize.minimize(U, np.linspace(X, 0, N + 1)[1:-1].ravel(), method="BFGS", options={"gtol": 1e-10})
    assert U(x[1:-1].ravel()) <= direct.fun + 1e-8 * abs(direct.fun)
    assert np.allclose(x[1:-1].ravel(), direct.x, rtol=1e-4, atol=1e-4)


BASE = dict(prices={"BTC": 60_000.0, "ETH": 2_600.0}, adv={"BTC": 20_000.0, "ETH": 300_000.0},
            eta_bps=50.0, gamma_bps=10.0, half_spread_bps=0.5, horizon_days=1.0, steps=48, risk_aversion=1e-6)


def cov_input(rho):
    return {"names": ["BTC", "ETH"], "correlation": [[1, rho], [rho, 1]], "sigma_daily": {"BTC": 0.03, "ETH": 0.04}}


def test_together_vs_apart():
    same_side = {"BTC": 100.0, "ETH": 1500.0}
    zero = BasketCost(quantities=same_side, **BASE).fit(cov_input(0.0))
    assert zero.params["saving_usd"] == pytest.approx(0.0, abs=1e-6)
    assert zero.params["sd_apart_usd"] == pytest.approx(zero.params["sd_apart_naive_usd"], rel=1e-12)
    pos = BasketCost(quantities=same_side, **BASE).fit(cov_input(0.8))
    assert pos.params["saving_usd"] > 0
    assert pos.params["sd_apart_usd"] > pos.params["sd_apart_naive_usd"]      # correlation adds risk apart
    assert pos.params["expected_cost_together_usd"] > pos.params["expected_cost_apart_usd"]   # trades faster
    hedge = BasketCost(quantities={"BTC": 100.0, "ETH": -1500.0}, **BASE).fit(cov_input(0.8))
    assert hedge.params["sd_apart_usd"] < hedge.params["sd_apart_naive_usd"]  # a hedged pair is less risky
    assert hedge.params["expected_cost_together_usd"] < hedge.params["expected_cost_apart_usd"]  # trades slower
    assert hedge.params["saving_usd"] > 0
    assert "saving of executing together" in hedge.summary()
    d = hedge.to_dict()
    assert len(d["trajectory"]["t_days"]) == 49 and d["report"]["method"] == "closed_form"
    again = BasketCost(quantities={"BTC": 100.0, "ETH": -1500.0}, **BASE).fix({"risk_aversion": 0.0},
                                                                                 cov_input(0.8))
    assert again.params["saving_usd"] == pytest.approx(0.0, abs=1e-6)          # λ = 0: both linear (TWAP)


def test_inputs_are_checked_and_a_non_psd_matrix_is_flagged():
    with pytest.raises(ValueError, match="no value for"):
        BasketCost(quantities={"BTC": 1.0, "ETH": 1.0}, prices={"BTC": 1.0}, adv={"BTC": 1.0, "ETH": 1.0}).fit(
            cov_input(0.5))
    with pytest.raises(ValueError, match="does not cover"):
        BasketCost(quantities={"SOL": 1.0}, **{k: v for k, v in BASE.items()}).fit(cov_input(0.5))
    data = {"names": ["A", "B", "C"], "covariance_per_day": [[1e-4, 1.2e-4, 0], [1.2e-4, 1e-4, 0], [0, 0, 1e-4]]}
    res = BasketCost(quantities={"A": 1.0, "B": 1.0, "C": 1.0}, prices={"A": 1.0, "B": 1.0, "C": 1.0},
                     adv={"A": 1e3, "B": 1e3, "C": 1e3}).fit(data)
    assert any("not positive semi-definite" in w for w in res.warnings)
