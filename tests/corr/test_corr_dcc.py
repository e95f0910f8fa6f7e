"""DCC-GARCH: the vectorised likelihood against a plain loop written here from Engle (2002), the analytic
gradient against finite differences, the margins against arch called directly, recovery of known (a, b)
from simulated series, forecasts and hand-set parameters."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from execal.models.corr.dcc import DCC, dcc_loglik, loglik_terms
from execal.models.corr.panel import from_frame, returns_panel


def loop_dcc_loglik(z: np.ndarray, a: float, b: float) -> float:
    """Engle (2002) eq. (26) second stage, one period at a time: Q_1 = Q̄, Q_t = (1−a−b)Q̄ + a z z' + b Q."""
    T, k = z.shape
    Qbar = sum(np.outer(z[t], z[t]) for t in range(T)) / T
    Q = Qbar.copy()
    total = 0.0
    for t in range(T):
        if t > 0:
            Q = (1 - a - b) * Qbar + a * np.outer(z[t - 1], z[t - 1]) + b * Q
        d = np.diag(1 / np.sqrt(np.diag(Q)))
        R = d @ Q @ d
        sign, logdet = np.linalg.slogdet(R)
        assert sign > 0
        total += -0.5 * (logdet + z[t] @ np.linalg.inv(R) @ z[t] - z[t] @ z[t])
    return total


def simulate_dcc(T: int, R0: np.ndarray, a: float, b: float, seed: int, garch=(0.05, 0.08, 0.90)) -> np.ndarray:
    """DCC(1,1) with GARCH(1,1) margins (returns in %, then /100 as fractions)."""
    rng = np.random.default_rng(seed)
    k = R0.shape[0]
    omega, alpha, beta = garch
    Q = R0.copy()
    h = np.full(k, omega / (1 - alpha - beta))
    out = np.empty((T, k))
    z_prev = eps_prev = None
    for t in range(T):
        if t > 0:
            Q = (1 - a - b) * R0 + a * np.outer(z_prev, z_prev) + b * Q
            h = omega + alpha * eps_prev ** 2 + beta * h
        d = 1 / np.sqrt(np.diag(Q))
        R = Q * np.outer(d, d)
        z = np.linalg.cholesky(R) @ rng.standard_normal(k)
        eps = np.sqrt(h) * z
        out[t], z_prev, eps_prev = eps, z, eps
    return out / 100


R3 = np.array([[1.0, 0.5, 0.3], [0.5, 1.0, 0.4], [0.3, 0.4, 1.0]])


@pytest.mark.parametrize("a,b", [(0.05, 0.90), (0.0, 0.0), (0.2, 0.5), (0.01, 0.985)])
def test_loglik_equals_the_loop(a, b):
    z = np.random.default_rng(0).standard_normal((300, 3)) @ np.linalg.cholesky(R3).T
    assert dcc_loglik(z, a, b) == pytest.approx(loop_dcc_loglik(z, a, b), rel=1e-10, abs=1e-9)


def test_analytic_gradient_equals_finite_differences():
    z = np.random.default_rng(1).standard_normal((400, 4))
    for a, b in ((0.05, 0.9), (0.2, 0.6), (0.001, 0.3)):
        _, scores, _ = loglik_terms(z, a, b, gradient=True)
        h = 1e-6
        num = [(dcc_loglik(z, a + h, b) - dcc_loglik(z, a - h, b)) / (2 * h),
               (dcc_loglik(z, a, b + h) - dcc_loglik(z, a, b - h)) / (2 * h)]
        assert scores.sum(0) == pytest.approx(num, rel=1e-5, abs=1e-5)


@pytest.fixture(scope="module")
def simulated():
    y = simulate_dcc(4000, R3, 0.05, 0.90, seed=11)
    return y, DCC().fit(y)


def test_recovers_known_parameters(simulated):
    _, res = simulated
    assert res.converged and res.report.success
    for name, true in (("a", 0.05), ("b", 0.90)):
        assert abs(res.params[name] - true) < 0.03
        assert abs(res.params[name] - true) < 4 * res.std_errors[name]
    # the unconditional correlation of the standardised residuals is R0's
    assert np.allclose(res.unconditional_correlation(), R3, atol=0.05)
    # the path moves around it, and stays a correlation matrix
    R = np.asarray(res.correlation_path)
    assert R.shape == (4000, 3, 3)
    assert np.allclose(np.diagonal(R, axis1=1, axis2=2), 1.0)
    assert np.all(np.linalg.eigvalsh(R) > 0)
    assert R[:, 0, 1].std() > 0.05


def test_margins_equal_arch_and_the_likelihood_adds_up(simulated):
    from arch import arch_model

    y, res = simulated
    ref = arch_model(100 * y[:, 0], rescale=False).fit(disp="off")
    assert res.margins[0].scale == 100.0
    assert [res.params[f"asset1.{k}"] for k in ("mu", "omega", "alpha[1]", "beta[1]")] == pytest.approx(
        ref.params.to_numpy(), rel=1e-8)
    assert res.std_errors["asset1.omega"] == pytest.approx(ref.std_err["omega"], rel=1e-8)
    z = np.column_stack([m.arch_result.std_resid for m in res.margins])
    llc = loop_dcc_loglik(z, res.params["a"], res.params["b"])
    assert res.loglikelihood_correlation == pytest.approx(llc, rel=1e-10)
    llm = sum(m.arch_result.loglikelihood + 4000 * math.log(100) for m in res.margins)
    assert res.loglikelihood == pytest.approx(llm + llc, rel=1e-12)


def test_forecast_reverts_to_the_unconditional_correlation(simulated):
    _, res = simulated
    f = res.forecast(400)
    R = f["correlation"]
    Rbar = res.unconditional_correlation()
    assert np.allclose(R[0], np.asarray(res.correlation_path)[-1], atol=0.3)    # one step from the last R_T
    assert np.abs(R[-1] - Rbar).max() < 1e-6
    gaps = np.abs(R[:, 0, 1] - Rbar[0, 1])
    assert np.all(np.diff(gaps) <= 1e-15)
    H = f["covariance"]
    assert np.allclose(np.diagonal(H, axis1=1, axis2=2), f["sigma"] ** 2)
    frame = res.forecast_frame(5)
    assert set(frame["pair"]) == {"rho[asset1|asset2]", "rho[asset1|asset3]", "rho[asset2|asset3]"}


def test_contract_summary_dict_and_fix(simulated):
    y, res = simulated
    assert "a + b" in res.summary() and res.report.method.startswith("two_step")
    d = res.to_dict(horizon=3, path_points=100)
    assert d["kind"] == "correlation" and len(d["forecast"]["h"]) == 3 and d["path"]["every"] == 40
    assert "estimation error of the margins" in d["se_note"] and set(d["std_errors_conditional"]) == {"a", "b"}
    assert res.conf_int()["a"][0] < res.params["a"] < res.conf_int()["a"][1]
    hand = {k: v for k, v in res.params.items()}
    fixed = DCC().fix(hand, y)
    assert type(fixed) is type(res) and fixed.report.method == "fixed"
    assert fixed.loglikelihood == pytest.approx(res.loglikelihood, rel=1e-9)
    only_ab = DCC().fix({"a": 0.02, "b": 0.95}, y)               # margins fitted by arch as in fit
    assert only_ab.params["asset1.omega"] == pytest.approx(res.params["asset1.omega"])
    assert only_ab.loglikelihood_correlation == pytest.approx(loop_dcc_loglik(only_ab.z, 0.02, 0.95), rel=1e-10)
    with pytest.raises(ValueError, match="a \\+ b < 1"):
        DCC().fix({"a": 0.5, "b": 0.6}, y)
    with pytest.raises(ValueError, match="missing"):
        DCC().fix({"a": 0.02, "b": 0.95, "asset1.omega": 0.1}, y)


def test_constant_correlation_is_not_found_dynamic():
    # i.i.d. returns with a constant correlation: the likelihood-ratio test of CCC (a = 0) against DCC does
    # not reject (χ² with ~1 degree of freedom at the boundary: 2·ΔL < 3.84), and a stays small
    rng = np.random.default_rng(4)
    y = (rng.standard_normal((1500, 2)) @ np.linalg.cholesky(np.array([[1, 0.6], [0.6, 1]])).T) / 100
    res = DCC(mean="zero").fit(y)
    ccc = dcc_loglik(np.asarray(res.z), 0.0, 0.0)
    assert 0 <= 2 * (res.loglikelihood_correlation - ccc) < 3.84
    assert res.params["a"] < 0.05


def test_panel_alignment_from_bars_with_different_symbols():
    t = pd.date_range("2024-01-01", periods=300, freq="1h", tz="UTC")
    rng = np.random.default_rng(2)
    rows = []
    for sym, drop in (("BTC", {5, 6}), ("ETH", {100})):
        close = np.exp(np.cumsum(0.01 * rng.standard_normal(300)) + 5)
        for i in range(300):
            if i not in drop:
                rows.append({"timestamp": t[i], "symbol": sym, "open": close[i], "high": close[i] * 1.001,
                             "low": close[i] * 0.999, "close": close[i], "volume": 1.0})
    panel = returns_panel([pd.DataFrame(rows)], gaps="skip")
    assert panel.names == ("BTC", "ETH")
    # a return is labelled by its closing bar: BTC has none at bars 5, 6 (missing) and 7 (across the gap),
    # ETH none at 100 and 101: 5 of the 299 periods are not common
    assert panel.n == 299 - 5
    assert any("inner join" in d.reason for d in panel.report.dropped)
    frame = pd.DataFrame(rng.standard_normal((50, 2)), columns=["x", "y"],
                         index=pd.date_range("2024-01-01", periods=50, freq="1D", tz="UTC"))
    frame.iloc[3, 1] = np.nan
    p2 = from_frame(frame)
    assert p2.n == 49 and p2.freq == "1D"


def test_two_step_standard_errors_match_the_monte_carlo_spread():
    """40 simulated DCC datasets: the spread of â and b̂ against the average two-step standard error
    (margins' and Q̄'s estimation error included), which is at least the conditional one on average."""
    R2 = np.array([[1.0, 0.5], [0.5, 1.0]])
    a_hat, b_hat, se_a, se_b, cond_a = [], [], [], [], []
    for s in range(40):
        res = DCC().fit(simulate_dcc(1500, R2, 0.05, 0.90, seed=100 + s))
        a_hat.append(res.params["a"])
        b_hat.append(res.params["b"])
        se_a.append(res.std_errors["a"])
        se_b.append(res.std_errors["b"])
        cond_a.append(res.se_conditional["a"])
    assert 0.7 < np.nanmean(se_a) / np.std(a_hat, ddof=1) < 1.4
    assert 0.7 < np.nanmean(se_b) / np.std(b_hat, ddof=1) < 1.4
    assert np.nanmean(se_a) >= np.nanmean(cond_a)
    assert np.mean(a_hat) == pytest.approx(0.05, abs=0.01)


def test_a_result_pickles_with_its_standard_errors(simulated):
    import pickle

    _, res = simulated
    back = pickle.loads(pickle.dumps(res))
    assert back.std_errors["a"] == res.std_errors["a"] and back.std_errors["asset2.omega"] == res.std_errors[
        "asset2.omega"]
    assert np.array_equal(back.correlation_path, res.correlation_path)
