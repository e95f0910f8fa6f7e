"""Trade-sign memory, response and the propagator kernel: against a direct, unvectorised
implementation written here (priceprop does not import on Python 3), on exact population moments,
and recovery of a known kernel and sign-memory exponent from simulated order flow.

Documented tolerances (simulated TIM1, 200,000 orders, γ = 0.5, G(ℓ) = 0.5·min(ℓ, 60)^−0.3,
noise 0.3 bps a trade): kernel within 6 % at every lag ≤ 60, its exponent within 0.03 and its
amplitude within 3 %; the sign-memory exponent within 0.06 of the exponent a power law fitted to
the exact autocorrelation over the same lags has (the exact curve is not a pure power law at
short lags)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from execal.models.orderflow.cost import profile_volume_exponent
from execal.models.orderflow.data import TradeTape
from execal.models.orderflow.propagator import (Propagator, differential_response, propagate,
                                                 sign_correlation, solve_kernel)
from execal.models.orderflow.simulate import (long_memory_signs, power_law_kernel,
                                               sign_autocorrelation_truth, simulate_tape)
from execal.models.orderflow.stats import fit_power_law


# --- the direct implementation ------------------------------------------------------------------

def direct_moments(sign, mid, L):
    """C(ℓ) = mean ε_n ε_{n+ℓ}, S(ℓ) = mean ε_n r_{n+ℓ} with plain loops."""
    n = len(sign)
    r = [mid[i + 1] - mid[i] for i in range(n - 1)]
    C = []
    for lag in range(L + 1):
        C.append(sum(sign[i] * sign[i + lag] for i in range(n - lag)) / (n - lag))
    S = []
    for lag in range(L):
        m = len(r)
        S.append(sum(sign[i] * r[i + lag] for i in range(m - lag)) / (m - lag))
    return C, S


def direct_solve(C, S):
    """Gaussian elimination with partial pivoting on the dense L×L matrix C(|i−j|)."""
    L = len(S)
    A = [[C[abs(i - j)] for j in range(L)] + [S[i]] for i in range(L)]
    for col in range(L):
        piv = max(range(col, L), key=lambda r: abs(A[r][col]))
        A[col], A[piv] = A[piv], A[col]
        for r in range(col + 1, L):
            f = A[r][col] / A[col][col]
            for c in range(col, L + 1):
                A[r][c] -= f * A[col][c]
    g = [0.0] * L
    for r in range(L - 1, -1, -1):
        g[r] = (A[r][L] - sum(A[r][c] * g[c] for c in range(r + 1, L))) / A[r][r]
    return g


def test_correlations_and_kernel_equal_the_direct_implementation():
    sim = simulate_tape(3000, seed=21, support=10)
    tape = sim.data
    L = 15
    C_ref, S_ref = direct_moments(list(tape.sign), list(tape.mid_bps), L)
    np.testing.assert_allclose(sign_correlation(tape.sign, L), C_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(differential_response(tape.sign, tape.mid_bps, L), S_ref, rtol=0, atol=1e-10)
    g, G = solve_kernel(np.array(C_ref), np.array(S_ref))
    g_ref = direct_solve(C_ref, S_ref)
    np.testing.assert_allclose(g, g_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(G[1:], np.cumsum(g_ref), rtol=1e-9, atol=1e-12)
    # the estimator gives the same curves
    res = Propagator(max_lag=L, n_boot=0).fit(tape)
    np.testing.assert_allclose(res.curves["G"][1:], np.cumsum(g_ref), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.curves["R"][1:], np.cumsum(S_ref), rtol=1e-9, atol=1e-12)
    # the centred autocorrelation
    s = tape.sign - tape.sign.mean()
    rho_ref = [sum(s[i] * s[i + k] for i in range(len(s) - k)) / (len(s) - k) for k in range(L + 1)]
    np.testing.assert_allclose(res.curves["rho"], np.array(rho_ref) / rho_ref[0], rtol=1e-9, atol=1e-12)


def test_propagate_is_the_direct_sum():
    rng = np.random.default_rng(2)
    eps = np.where(rng.random(300) < 0.5, 1.0, -1.0)
    G = power_law_kernel(299, 0.7, 0.4)
    direct = [sum(G[k] * eps[n - k] for k in range(1, n + 1)) for n in range(300)]
    np.testing.assert_allclose(propagate(eps, G), direct, rtol=0, atol=1e-10)


def test_exact_moments_give_the_kernel_exactly():
    """With population C (exact sign autocorrelation) and S(ℓ) = Σ_k g(k)·C(ℓ−k) of a kernel
    whose increments vanish beyond its support, the Toeplitz solve returns the kernel."""
    L = 40
    C = sign_autocorrelation_truth(np.arange(L + 1), 0.4)
    G = power_law_kernel(L, 0.8, 0.25, support=30)
    g = np.diff(G)
    S = np.array([sum(g[k] * C[abs(ell - k)] for k in range(L)) for ell in range(L)])
    g_hat, G_hat = solve_kernel(C, S)
    np.testing.assert_allclose(G_hat, G, rtol=1e-10, atol=1e-12)


def test_long_memory_signs_have_the_exact_autocorrelation():
    rng = np.random.default_rng(3)
    s = long_memory_signs(400_000, 0.5, rng)
    rho = sign_correlation(s, 50, centred=True)
    truth = sign_autocorrelation_truth(np.arange(51), 0.5)
    assert np.abs(rho[1:11] - truth[1:11]).max() < 0.02


@pytest.fixture(scope="module")
def simulated():
    return simulate_tape(200_000, gamma=0.5, g1_bps=0.5, kernel_beta=0.3, support=60, seed=1)


def test_kernel_and_exponents_are_recovered(simulated):
    truth = simulated.truth
    res = Propagator(max_lag=100, fit_lags=(1, 60), n_boot=100).fit(simulated.data)
    G_true = truth["G"]
    rel = np.abs(res.curves["G"][1:61] / G_true[1:61] - 1)
    assert rel.max() < 0.06, rel.max()
    assert res.params["kernel_beta"] == pytest.approx(0.3, abs=0.03)
    assert res.params["kernel_g1_bps"] == pytest.approx(0.5, rel=0.03)
    lags = np.arange(1, 61)
    gamma_exact = fit_power_law(lags, truth["rho"][1:61]).exponent
    assert res.params["gamma"] == pytest.approx(gamma_exact, abs=0.06)
    assert gamma_exact == pytest.approx(0.5, abs=0.1)
    # the truth lies inside a few bootstrap standard errors
    assert abs(res.params["kernel_beta"] - 0.3) < 4 * res.std_errors["kernel_beta"] + 0.01
    assert abs(res.params["gamma"] - gamma_exact) < 4 * res.std_errors["gamma"] + 0.01
    assert res.converged and not [w for w in res.warnings if "grows" in w]
    # a hand-set kernel: the true one reproduces the measured response, a wrong one does not
    good = Propagator(max_lag=60, n_boot=0).fix({"kernel_g1_bps": 0.5, "kernel_beta": 0.3}, simulated.data)
    bad = Propagator(max_lag=60, n_boot=0).fix({"kernel_g1_bps": 0.5, "kernel_beta": 0.0}, simulated.data)
    assert good.metrics["response_rmse_bps"] < 0.05 < bad.metrics["response_rmse_bps"]
    assert type(good) is type(res)


def test_bootstrap_errors_are_the_size_of_the_sampling_spread():
    """Monte Carlo across eight independent tapes: the spread of the estimates and the mean
    block-bootstrap standard error agree within a factor of 2.5 (rows are long-memory: an i.i.d.
    bootstrap would understate the error of γ several times)."""
    est, se = {"gamma": [], "kernel_beta": []}, {"gamma": [], "kernel_beta": []}
    for seed in range(8):
        tape = simulate_tape(40_000, seed=100 + seed, support=30).data
        r = Propagator(max_lag=50, fit_lags=(1, 30), n_boot=100, seed=seed).fit(tape)
        for k in est:
            est[k].append(r.params[k])
            se[k].append(r.std_errors[k])
    for k in est:
        ratio = np.mean(se[k]) / np.std(est[k], ddof=1)
        assert 0.4 < ratio < 2.5, (k, ratio)


def test_volume_exponent_is_recovered_by_profile():
    sim = simulate_tape(100_000, volume_exponent=0.5, noise_bps=0.1, support=30, seed=4)
    psi, r2 = profile_volume_exponent(sim.data, 40)
    assert psi == pytest.approx(0.5, abs=0.15)
    assert np.nanargmax(r2) not in (0, len(r2) - 1)


def test_too_few_orders_is_refused():
    tape = TradeTape(np.arange(100), np.ones(100), np.ones(100), np.zeros(100))
    from execal.models.core.errors import CalibrationError
    with pytest.raises(CalibrationError, match="at least"):
        Propagator().fit(tape)
    assert math.isclose(Propagator().set_params(max_lag=7).max_lag, 7)
