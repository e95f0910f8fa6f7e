"""Order-flow imbalance: the book event by event against an independent replay written here, OFI
against a direct event-by-event computation, the regressions against statsmodels, and recovery of
a known β (and of the CKS depth exponent) from simulated books."""
from __future__ import annotations

import gzip
import heapq
import json
import math

import numpy as np
import pytest

from execal.models.data.binance import read_capture
from execal.models.orderflow.data import from_capture
from execal.models.orderflow.kyle import KyleLambda
from execal.models.orderflow.ofi import OFIRegression, ofi_contributions, window_series
from execal.models.orderflow.simulate import simulate_ofi_book
from execal.models.orderflow.stats import ols_hac

LEVELS = 5
CAPTURES = ("usdm_btcusdt_20240808.gz", "spot_btcusdt_20240808.gz")


def reference_replay(path, levels):
    """The book after every applied diff, rebuilt the plain way: dicts of float price -> float
    size, the snapshot's lastUpdateId rule (spot u <= id, futures u < id dropped), every later diff
    applied in file order, the first `levels` levels found by sorting. Returns (t_ns, bid_px,
    bid_sz, ask_px, ask_sz) lists."""
    snapshot, pending, synced = None, [], False
    bids, asks = {}, {}
    out = ([], [], [], [], [])

    def apply(diff):
        nonlocal synced
        spot = "pu" not in diff
        luid = snapshot["lastUpdateId"]
        if not synced:
            if (diff["u"] <= luid) if spot else (diff["u"] < luid):
                return
            synced = True
        for book, key in ((bids, "b"), (asks, "a")):
            for p, q in diff[key]:
                p, q = float(p), float(q)
                if q == 0.0:
                    book.pop(p, None)
                else:
                    book[p] = q
        bp = heapq.nlargest(levels, bids)
        ap = heapq.nsmallest(levels, asks)
        out[0].append((diff.get("T") or diff["E"]) * 1_000_000)
        out[1].append(bp + [math.nan] * (levels - len(bp)))
        out[2].append([bids[p] for p in bp] + [math.nan] * (levels - len(bp)))
        out[3].append(ap + [math.nan] * (levels - len(ap)))
        out[4].append([asks[p] for p in ap] + [math.nan] * (levels - len(ap)))

    for line in gzip.open(path).read().split(b"\n"):
        if not line.strip():
            continue
        msg = json.loads(line.split(b" ", 1)[1])
        if "stream" not in msg:
            snapshot = msg
            bids.update({float(p): float(q) for p, q in msg["bids"] if float(q) > 0})
            asks.update({float(p): float(q) for p, q in msg["asks"] if float(q) > 0})
            for d in pending:
                apply(d)
            pending = []
        elif "@depth" in msg["stream"]:
            if snapshot is None:
                pending.append(msg["data"])
            else:
                apply(msg["data"])
    return tuple(np.array(x) for x in out)


def reference_ofi(bp, bq, ap, aq):
    """e_n of Cont, Kukanov & Stoikov (2014), one event and one level at a time."""
    n, L = bp.shape
    e = np.zeros((n, L))
    for i in range(1, n):
        for m in range(L):
            v = 0.0
            if bp[i, m] >= bp[i - 1, m]:
                v += bq[i, m]
            if bp[i, m] <= bp[i - 1, m]:
                v -= bq[i - 1, m]
            if ap[i, m] <= ap[i - 1, m]:
                v -= aq[i, m]
            if ap[i, m] >= ap[i - 1, m]:
                v += aq[i - 1, m]
            e[i, m] = v
    return e


@pytest.fixture(scope="module", params=CAPTURES)
def replayed(request, shared_data):
    path = shared_data / "binance-raw" / request.param
    cap = read_capture(path, levels=1, interval_s=60.0, event_levels=LEVELS)
    return request.param, cap, reference_replay(path, LEVELS)


@pytest.mark.shared_data
def test_book_events_equal_an_independent_replay(replayed):
    name, cap, (t, bp, bq, ap, aq) = replayed
    ev = cap.events
    assert len(ev) == len(t) == cap.stats["diffs_applied"]
    np.testing.assert_array_equal(ev.t_ns, t)
    for ours, ref in ((ev.bid_px, bp), (ev.bid_sz, bq), (ev.ask_px, ap), (ev.ask_sz, aq)):
        np.testing.assert_array_equal(ours, ref)
    # and the best level is the replay's own `top` frame
    np.testing.assert_array_equal(ev.bid_px[:, 0], cap.top["bid_price"].to_numpy())
    np.testing.assert_array_equal(ev.ask_sz[:, 0], cap.top["ask_size"].to_numpy())


@pytest.mark.shared_data
def test_ofi_from_the_rebuilt_book_equals_the_event_by_event_reference(replayed):
    name, cap, (t, bp, bq, ap, aq) = replayed
    ev = cap.events
    ours = ofi_contributions(ev.bid_px, ev.bid_sz, ev.ask_px, ev.ask_sz)
    ref = reference_ofi(bp, bq, ap, aq)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    assert np.abs(ref[:, 0]).sum() > 0           # the book does move
    # window sums and mid changes, one event at a time
    w_ns = 10 * 10**9
    ws = window_series(ev, 10.0, levels=LEVELS)
    for k, start in enumerate(ws.start_ns):
        inside = [i for i in range(len(t)) if start <= t[i] < start + w_ns]
        before_start = max(i for i in range(len(t)) if t[i] < start)
        before_end = max(i for i in range(len(t)) if t[i] < start + w_ns)
        np.testing.assert_allclose(ws.ofi[k], ref[inside].sum(axis=0), rtol=0, atol=1e-8)
        mid = lambda i: (bp[i, 0] + ap[i, 0]) / 2          # noqa: E731
        assert ws.dmid_bps[k] == pytest.approx(1e4 * math.log(mid(before_end) / mid(before_start)), abs=1e-9)
        assert ws.n_events[k] == len(inside)


@pytest.mark.shared_data
def test_regressions_match_statsmodels_hac(replayed):
    sm = pytest.importorskip("statsmodels.api")
    name, cap, _ = replayed
    data = from_capture(cap)
    res = OFIRegression(windows_s=(1.0, 10.0), levels=LEVELS).fit(data)
    for lab in ("1s", "10s"):
        x, y = res.curves[f"ofi_{lab}"], res.curves[f"dmid_bps_{lab}"]
        lags = int(res.metrics[f"hac_lags_{lab}"])
        ref = sm.OLS(y, sm.add_constant(x)).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": True})
        assert res.params[f"beta_{lab}"] == pytest.approx(ref.params[1], rel=1e-10)
        assert res.std_errors[f"beta_{lab}"] == pytest.approx(ref.bse[1], rel=1e-8)
        assert res.metrics[f"r2_{lab}"] == pytest.approx(ref.rsquared, rel=1e-10)
        assert res.metrics[f"alpha_bps_{lab}"] == pytest.approx(ref.params[0], rel=1e-8, abs=1e-12)
    assert res.converged and res.report.method == "closed_form"
    # the 1 s regression explains a real share of the mid's moves on every venue
    assert 0.1 < res.metrics["r2_1s"] < 0.9


def test_ols_hac_against_statsmodels_on_autocorrelated_errors():
    sm = pytest.importorskip("statsmodels.api")
    rng = np.random.default_rng(1)
    n = 400
    X = rng.normal(size=(n, 2))
    u = np.convolve(rng.normal(size=n + 5), np.ones(6) / 6, mode="valid")[:n]
    y = 1.0 + X @ np.array([2.0, -1.0]) + u
    for lags in (0, 3, 12):
        ours = ols_hac(y, X, lags=lags)
        ref = sm.OLS(y, sm.add_constant(X)).fit(cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": True})
        np.testing.assert_allclose(ours.coef, ref.params, rtol=1e-10)
        np.testing.assert_allclose(ours.se, ref.bse, rtol=1e-8)
    # with serially dependent errors the HAC errors are larger than the i.i.d. ones
    assert ols_hac(y, X, lags=12).se[1] > ols_hac(y, X, lags=0).se[1]


def test_known_beta_is_recovered_from_a_simulated_book():
    """Every event moves the log-mid by β·e_n·ξ_n (E ξ = 1): Δmid = β·OFI + noise in every
    window, whatever its length. Tolerance: 4 HAC standard errors and 5 %."""
    sim = simulate_ofi_book(40_000, beta_bps=0.05, seed=3)
    res = OFIRegression(windows_s=(1.0, 10.0, 60.0)).fit(sim.data)
    for lab in ("1s", "10s", "60s"):
        beta, se = res.params[f"beta_{lab}"], res.std_errors[f"beta_{lab}"]
        assert abs(beta - 0.05) < 4 * se, lab
        assert beta == pytest.approx(0.05, rel=0.05), lab
    assert res.metrics["r2_10s"] > 0.5
    # a wrong β fixed by hand explains less
    assert OFIRegression(windows_s=(10.0,)).fix({"beta_10s": 0.025}, sim.data).metrics["r2_10s"] < res.metrics["r2_10s"]


def test_cks_depth_exponent_is_recovered():
    """β_j ∝ 1/depth_j across 30 s intervals of six depth levels: exponent 1 within 0.1."""
    sim = simulate_ofi_book(60_000, seed=4, depth_by_interval=(1, 2, 4, 8, 3, 6))
    res = OFIRegression(windows_s=(1.0, 10.0)).fit(sim.data)
    assert res.params["depth_exponent"] == pytest.approx(1.0, abs=0.1)
    assert abs(res.params["depth_exponent"] - 1.0) < 4 * res.std_errors["depth_exponent"] + 0.02
    assert res.metrics["intervals"] >= 50


def test_kyle_lambda_against_a_direct_window_loop():
    """λ: OLS of the window mid change on the window's signed volume; recomputed here with a
    loop over trades and numpy's least squares."""
    sim = simulate_ofi_book(20_000, seed=9)
    data = sim.data
    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(data.events.t_ns[0], data.events.t_ns[-1], 3000)).astype(np.int64)
    side = np.where(rng.random(t.size) < 0.5, 1, -1)
    qty = rng.lognormal(0, 1, t.size)
    from dataclasses import replace
    from execal.models.orderflow.data import Trades
    data = replace(data, trades=Trades(t, np.full(t.size, 60_000.0), qty, side))
    res = KyleLambda(windows_s=(5.0,)).fit(data)
    ws = window_series(data.events, 5.0, levels=1)
    sv = []
    for start in ws.start_ns:
        sv.append(sum(s * q for tt, s, q in zip(t, side, qty) if start <= tt < start + 5 * 10**9))
    A = np.column_stack([np.ones(len(sv)), sv])
    coef, *_ = np.linalg.lstsq(A, ws.dmid_bps, rcond=None)
    assert res.params["lambda_5s"] == pytest.approx(coef[1], rel=1e-9)
    np.testing.assert_allclose(res.curves["signed_volume_5s"], sv, rtol=1e-12)
