"""Benchmarks of the order-flow area.

1. OFI and the regressions on the four shared Binance captures (USD-M BTC and ETH, spot, COIN-M;
   replayed once beforehand, 10 levels a side after every diff): `OFIRegression` with 1 s, 10 s
   and 60 s windows (best-level, 10-level and integrated OFI, the predictive regression, HAC
   errors, β vs depth) plus `KyleLambda` on the same windows, all four captures together, against
   a per-event Python loop on the same events doing the same arithmetic (CKS contributions level by
   level, window sums and mid edges by walking the events, then the same OLS) — checked equal
   (β to 1e-9) before the timing counts. Floor: all four under 1 s together.
2. The replay itself with the event-level book (event_levels=10) against the replay without it,
   on usdm_btcusdt (what recording every event's levels costs).
3. Propagator calibration on 1,000,000 simulated orders (long-memory signs, power-law kernel):
   sign autocorrelation and response by FFT, the Toeplitz kernel by Levinson, the power-law fits,
   against the direct implementation (one dot product per lag, a dense solve), checked equal
   (kernel to 1e-9 bps) first. Floor 2 s. And the same with the 200-resample block bootstrap.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from bench.common import best_of, row
from execal.models.data.binance import read_capture
from execal.models.orderflow.data import from_capture
from execal.models.orderflow.kyle import KyleLambda
from execal.models.orderflow.ofi import OFIRegression
from execal.models.orderflow.propagator import Propagator
from execal.models.orderflow.simulate import simulate_tape

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EXECAL_SHARED_DATA", ROOT.parent / "shared" / "data"))
CAPTURES = ("usdm_btcusdt_20240808.gz", "usdm_ethusdt_20240808.gz", "spot_btcusdt_20240808.gz",
            "cm_btcusd_perp_20240808.gz")
WINDOWS = (1.0, 10.0, 60.0)
LEVELS = 10
OFI_FLOOR_S = 1.0
PROPAGATOR_FLOOR_S = 2.0


def ofi_fast(venues):
    out = []
    for data in venues:
        out.append((OFIRegression(windows_s=WINDOWS, levels=LEVELS).fit(data),
                    KyleLambda(windows_s=WINDOWS).fit(data)))
    return out


def ofi_loop(venues):
    """Baseline: the same numbers event by event in Python, then the same least squares."""
    out = []
    for data in venues:
        ev = data.events
        t = ev.t_ns.tolist()
        bp, bq = ev.bid_px[:, :LEVELS].tolist(), np.nan_to_num(ev.bid_sz[:, :LEVELS]).tolist()
        ap, aq = ev.ask_px[:, :LEVELS].tolist(), np.nan_to_num(ev.ask_sz[:, :LEVELS]).tolist()
        mids = [(b[0] + a[0]) / 2 for b, a in zip(bp, ap)]
        e = [[0.0] * LEVELS]
        for i in range(1, len(t)):
            row_e = []
            for m in range(LEVELS):
                v = 0.0
                if bp[i][m] >= bp[i - 1][m]:
                    v += bq[i][m]
                if bp[i][m] <= bp[i - 1][m]:
                    v -= bq[i - 1][m]
                if ap[i][m] <= ap[i - 1][m]:
                    v -= aq[i][m]
                if ap[i][m] >= ap[i - 1][m]:
                    v += aq[i - 1][m]
                row_e.append(v)
            e.append(row_e)
        tr_t, tr_sv = data.trades.t_ns.tolist(), (data.trades.side * data.trades.qty).tolist()
        betas = {}
        for w in WINDOWS:
            w_ns = int(w * 1e9)
            start = (t[0] // w_ns + 1) * w_ns
            xs, ys, svs, i, j = [], [], [], 0, 0
            while start + w_ns <= t[-1] + 1:
                while i < len(t) and t[i] < start:
                    i += 1
                mid0 = mids[i - 1]
                acc = [0.0] * LEVELS
                k = i
                while k < len(t) and t[k] < start + w_ns:
                    for m in range(LEVELS):
                        acc[m] += e[k][m]
                    k += 1
                while j < len(tr_t) and tr_t[j] < start:
                    j += 1
                sv, jj = 0.0, j
                while jj < len(tr_t) and tr_t[jj] < start + w_ns:
                    sv += tr_sv[jj]
                    jj += 1
                xs.append(acc)
                ys.append(1e4 * math.log(mids[k - 1] / mid0))
                svs.append(sv)
                start += w_ns
            X, y = np.array(xs), np.array(ys)
            ones = np.ones((len(y), 1))
            beta = np.linalg.lstsq(np.hstack([ones, X[:, :1]]), y, rcond=None)[0][1]
            np.linalg.lstsq(np.hstack([ones, X]), y, rcond=None)
            lam = np.linalg.lstsq(np.hstack([ones, np.array(svs)[:, None]]), y, rcond=None)[0][1]
            betas[w] = (beta, lam)
        out.append(betas)
    return out


def direct_propagator(sign, mid, L):
    """Baseline: one dot product per lag for C and S, a dense solve, the cumulative kernel."""
    r = np.diff(mid)
    s = sign[:r.size]
    n, m = sign.size, r.size
    C = np.array([np.dot(sign[:n - lag], sign[lag:]) / (n - lag) for lag in range(L + 1)])
    S = np.array([np.dot(s[:m - lag], r[lag:]) / (m - lag) for lag in range(L)])
    idx = np.abs(np.subtract.outer(np.arange(L), np.arange(L)))
    g = np.linalg.solve(C[idx], S)
    return np.concatenate([[0.0], np.cumsum(g)])


def run(quick: bool = False) -> list[dict]:
    rows = []
    repeat = 2 if quick else 3

    # 1. OFI + regressions on the four captures
    venues = [from_capture(read_capture(SHARED / "binance-raw" / c, levels=1, interval_s=60.0,
                                        event_levels=LEVELS)) for c in CAPTURES]
    fast = ofi_fast(venues)
    slow = ofi_loop(venues)
    for (ofi, kyle), ref in zip(fast, slow):
        for w in WINDOWS:
            lab = f"{int(w)}s"
            if not (math.isclose(ofi.params[f"beta_{lab}"], ref[w][0], rel_tol=1e-9)
                    and math.isclose(kyle.params[f"lambda_{lab}"], ref[w][1], rel_tol=1e-9)):
                raise AssertionError(f"{ofi.venue} {lab}: vectorised and loop estimates differ")
    fast_s, _ = best_of(lambda: ofi_fast(venues), repeat)
    loop_s, _ = best_of(lambda: ofi_loop(venues), 1)
    n_events = sum(len(v.events) for v in venues)
    rows.append(row(
        "OFI (best, 10-level, integrated, predictive) + Kyle λ, 1/10/60 s, 4 shared captures", fast_s,
        floor_s=OFI_FLOOR_S, baseline="per-event Python loop, same OLS", baseline_s=loop_s,
        note=f"{n_events:,} book events, {sum(len(v.trades) for v in venues):,} prints; replay not timed (row 2)"))

    # 2. the replay with and without the event-level book
    cap = SHARED / "binance-raw" / CAPTURES[0]
    with_s, c = best_of(lambda: read_capture(cap, levels=20, interval_s=1.0, event_levels=LEVELS), repeat)
    without_s, _ = best_of(lambda: read_capture(cap, levels=20, interval_s=1.0), repeat)
    rows.append(row(f"binance replay usdm_btcusdt with the book after every diff ({LEVELS} levels)", with_s,
                    baseline="the same replay without it", baseline_s=without_s,
                    note=f"{len(c.events):,} event states recorded"))

    # 3. propagator on 1,000,000 orders
    n = 200_000 if quick else 1_000_000
    L = 1000
    tape = simulate_tape(n, seed=1, support=200).data
    prop = Propagator(max_lag=L, fit_lags=(1, 200), n_boot=0)
    res = prop.fit(tape)
    G_direct = direct_propagator(tape.sign, tape.mid_bps, L)
    if not np.allclose(res.curves["G"], G_direct, rtol=0, atol=1e-9):
        raise AssertionError("propagator: FFT/Levinson kernel differs from the direct implementation")
    fast_s, _ = best_of(lambda: prop.fit(tape), repeat)
    direct_s, _ = best_of(lambda: direct_propagator(tape.sign, tape.mid_bps, L), 1)
    rows.append(row(f"propagator calibration {n:,} orders, L={L} (C, S, Toeplitz kernel, power laws)", fast_s,
                    floor_s=PROPAGATOR_FLOOR_S if not quick else None,
                    baseline="direct: a dot product per lag + dense solve", baseline_s=direct_s,
                    note=f"kernel β {res.params['kernel_beta']:.3f} (truth 0.3), γ {res.params['gamma']:.3f}"))
    boot = Propagator(max_lag=500, fit_lags=(1, 200), n_boot=200)
    boot_s, b = best_of(lambda: boot.fit(tape), 1 if not quick else 1)
    rows.append(row(f"propagator calibration {n:,} orders, L=500, + 200-resample block bootstrap", boot_s,
                    floor_s=PROPAGATOR_FLOOR_S if not quick else None,
                    note=f"se(kernel β) {b.std_errors['kernel_beta']:.4f}, se(γ) {b.std_errors['gamma']:.4f}"))
    return rows
