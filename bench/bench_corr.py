"""Correlation area speed: Hayashi–Yoshida on two series of 1,000,000 ticks each (floor 1 s) against the
definition's double loop, and DCC-GARCH on 5 assets × 20,000 hourly returns (floor 5 s) against the
textbook implementation.

Baselines, on the same data in the same run:
* HY: the brute-force double loop over interval pairs (pure Python, the definition), timed on the first
  2,000 ticks of each series and scaled by (n / 2,000)² to 1,000,000 ticks (the loop is Θ(n·m); it is not
  run at full size: ~10¹² pair checks); the two agree on the subsample to 1e-12 (checked here).
* DCC: the same arch margins, then the second step as usually written: a per-period Python loop for
  the likelihood (Q_t, R_t, ln|R_t|, R_t⁻¹ one t at a time) maximised by SLSQP with finite-difference
  gradients from the same start; its (a, b) must match execal's.
`quick` shrinks the sizes (smoke run; no floors).
"""
from __future__ import annotations

import time

import numpy as np
from scipy import optimize

from bench.common import best_of, row


def _ticks(n: int, seed: int, span_s: float = 86_400.0):
    """Two correlated random walks, each observed at its own n Poisson times over `span_s` seconds."""
    from execal.models.corr.ticks import from_arrays

    rng = np.random.default_rng(seed)
    out = []
    common = rng.standard_normal(2 * n) * 1e-4
    for k in range(2):
        t = np.sort(rng.choice(int(span_s * 1e3), n, replace=False)).astype(np.int64) * 1_000_000   # ms clock
        p = np.cumsum(0.7 * common[:n] + 0.3 * rng.standard_normal(n) * 1e-4)
        out.append(from_arrays(t, p, log=True, name=f"s{k}", collapse=False))
    return out


def _brute_hy(tx, px, ty, py) -> float:
    total = 0.0
    for i in range(1, len(tx)):
        a, b, r = tx[i - 1], tx[i], px[i] - px[i - 1]
        for j in range(1, len(ty)):
            if max(a, ty[j - 1]) < min(b, ty[j]):
                total += r * (py[j] - py[j - 1])
    return total


def _loop_loglik(z: np.ndarray, a: float, b: float) -> float:
    T, k = z.shape
    Qbar = z.T @ z / T
    Q = Qbar.copy()
    total = 0.0
    for t in range(T):
        if t > 0:
            Q = (1 - a - b) * Qbar + a * np.outer(z[t - 1], z[t - 1]) + b * Q
        d = 1 / np.sqrt(np.diag(Q))
        R = Q * np.outer(d, d)
        _, logdet = np.linalg.slogdet(R)
        total += -0.5 * (logdet + z[t] @ np.linalg.solve(R, z[t]) - z[t] @ z[t])
    return total


def _simulated_returns(T: int, k: int, seed: int = 0) -> np.ndarray:
    from execal.models.corr.dcc import correlation_of

    rng = np.random.default_rng(seed)
    R0 = np.full((k, k), 0.4) + 0.6 * np.eye(k)
    a, b, omega, alpha, beta = 0.04, 0.93, 0.05, 0.08, 0.9
    Q, h = R0.copy(), np.full(k, omega / (1 - alpha - beta))
    out = np.empty((T, k))
    z_prev = eps_prev = None
    for t in range(T):                     # simulation only, not timed
        if t > 0:
            Q = (1 - a - b) * R0 + a * np.outer(z_prev, z_prev) + b * Q
            h = omega + alpha * eps_prev ** 2 + beta * h
        z = np.linalg.cholesky(correlation_of(Q)) @ rng.standard_normal(k)
        out[t] = eps_prev = np.sqrt(h) * z
        z_prev = z
    return out / 100


def run(quick: bool = False) -> list[dict]:
    from arch import arch_model

    from execal.models.corr.dcc import DCC, STARTS, EPS
    from execal.models.corr.hy import hy_correlation, hy_covariance, lead_lag

    rows = []
    repeat = 1 if quick else 3

    # --- Hayashi–Yoshida, 1,000,000 ticks each -------------------------------------------------------
    n = 100_000 if quick else 1_000_000
    x, y = _ticks(n, seed=1)
    t_hy, cov = best_of(lambda: hy_covariance(x, y), repeat)
    t_full, _ = best_of(lambda: hy_correlation(x, y), repeat)
    m = 2_000
    xs, ys = _ticks(m, seed=2, span_s=m * 0.0864)           # same tick density as the full series
    tx, px = np.asarray(xs.t_ns).tolist(), np.asarray(xs.log_price).tolist()
    ty, py = np.asarray(ys.t_ns).tolist(), np.asarray(ys.log_price).tolist()
    t0 = time.perf_counter()
    ref = _brute_hy(tx, px, ty, py)
    t_brute = time.perf_counter() - t0
    same = abs(ref - hy_covariance(xs, ys)) < 1e-12
    scaled = t_brute * (n / m) ** 2
    rows.append(row(f"Hayashi–Yoshida covariance, 2 × {n:,} ticks (equals the double loop on 2 × {m:,}: {same})",
                    t_hy, floor_s=None if quick else 1.0,
                    baseline=f"brute-force double loop, {t_brute:.2f} s on 2 × {m:,} ticks × ({n:,}/{m:,})²",
                    baseline_s=scaled, note="baseline extrapolated quadratically (not run at full size)"))
    rows.append(row(f"HY correlation + block HAC s.e., 2 × {n:,} ticks", t_full, floor_s=None if quick else 1.0,
                    baseline="same extrapolated double loop", baseline_s=scaled))
    k_lags = 201
    sub = min(100_000, n - 1)
    xw, yw = x.window(x.start_ns, x.t_ns[sub]), y.window(y.start_ns, x.t_ns[sub])
    t_ll, _ = best_of(lambda: lead_lag(xw, yw, max_lag_s=1.0, step_s=0.01), 1)
    rows.append(row(f"lead–lag scan, {k_lags} lags × 2 × ~{sub:,} ticks (+ asymptotic band)", t_ll,
                    note=f"{k_lags} HY sums; {1e3 * t_ll / k_lags:.1f} ms per lag"))

    # --- DCC, 5 assets × 20,000 hourly returns --------------------------------------------------------
    T = 4_000 if quick else 20_000
    k = 5
    r = _simulated_returns(T, k)
    t_dcc, res = best_of(lambda: DCC(freq=None).fit(r), 1 if quick else 2)

    def textbook():
        zs = []
        for i in range(k):
            fit = arch_model(100 * r[:, i], rescale=False).fit(disp="off")
            zs.append(np.asarray(fit.std_resid))
        z = np.column_stack(zs)
        tried = [(_loop_loglik(z, a0, b0), a0, b0) for a0, b0 in STARTS[:1]]
        x0 = np.array(max(tried)[1:])
        cons = ({"type": "ineq", "fun": lambda th: 1.0 - EPS - th[0] - th[1]},)
        return optimize.minimize(lambda th: -_loop_loglik(z, th[0], th[1]) / T, x0, method="SLSQP",
                                 bounds=[(0.0, 1.0), (0.0, 1.0)], constraints=cons, options={"ftol": 1e-12})
    t_base, base = best_of(textbook, 1)
    agree = abs(base.x[0] - res.params["a"]) < 1e-3 and abs(base.x[1] - res.params["b"]) < 1e-3
    rows.append(row(f"DCC-GARCH two-step, {k} assets × {T:,} hourly returns (a, b match the baseline: {agree})",
                    t_dcc, floor_s=None if quick else 5.0,
                    baseline="arch margins + per-period loop likelihood, SLSQP with numerical gradient",
                    baseline_s=t_base,
                    note=f"execal: margins {res.report.settings['margins_s']:.2f} s, correlation step "
                         f"{res.report.settings['correlation_s']:.2f} s, {res.report.nfev} likelihood evaluations; "
                         f"a = {res.params['a']:.4f} vs {base.x[0]:.4f}, b = {res.params['b']:.4f} vs {base.x[1]:.4f}"))
    t_fc, _ = best_of(lambda: (res.to_dict(horizon=10), res.summary()), 1)
    rows.append(row(f"DCC result: standard errors + 10-step forecast + JSON + summary ({T:,} × {k})", t_fc,
                    note="includes the two-step standard errors of (a, b) and arch's of the margins (both "
                         "computed on first use, not in the fit)"))
    return rows


if __name__ == "__main__":            # python -m bench.bench_corr [--quick]
    import sys

    for r_ in run(quick="--quick" in sys.argv):
        print(r_)
