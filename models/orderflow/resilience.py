"""Resilience: how fast depth and spread come back after an order sweeps the book, per venue.

A *sweep* is a taker order (the prints of one order merged) larger than `share` of the depth on
the side it hits, summed over the first `levels` levels of the book state in force just before it.
Sweeps less than `cluster_s` apart form one cluster and the first of each is kept (a recovery cut
short by the next sweep would measure the next sweep).

Depth is measured against its *usual* level, not against the state just before the sweep: on
these books the top levels flicker (cancelled and re-posted many times a second), and an order
is most likely to take half the visible depth exactly when the depth happens to be low, so the
state before is a biased reference (measured on the real captures: the depth "after" is on average
above the depth "before"). For a sweep at T, with D_ref the median of the hit side's depth over the
`ref_s` before T, z(τ) = D(T + τ)/D_ref on a grid τ = 0, grid_s, ..., horizon_s (state in force at
T + τ); the median over sweeps m(τ) (robust to the heavy tails of depth) dips to m_min at τ_min ≤
`settle_s` (the diff carrying the sweep arrives up to ~100 ms later); the recovered share of the
dip is x(τ) = (m(τ) − m_min)/(1 − m_min). The spread: excess e(τ) = (s(T + τ) − s_ref)/mid in bps,
s_ref the median spread over `ref_s` before, averaged over the sweeps that widened it; peak e_max at
τ_max ≤ settle_s; the share of the widening left is y(τ) = e(τ)/e_max.

Reported: the model-free half-lives (first τ − τ_min where x ≥ ½; first τ − τ_max where y ≤ ½)
and least-squares fits of exponential recovery, g = 2^(−(τ−τ0)/h): x = a·(1 − g) with a the level
the depth settles at (`depth_recovery`, 1 = back to usual; the real books overshoot), and
y = g + b·(1 − g) with b the share of the widening that stays (`spread_residual`) (scipy
least_squares, trf, analytic Jacobian): the half-lives h (`depth_half_life_s`, `spread_half_life_s`)
are those of the approach to the settled level. The spread view uses the sweeps that widened it.
Standard errors: moving-block bootstrap over consecutive sweeps (neighbouring recovery windows
overlap in time); each resample by a profile over a log grid of h, the amplitude in closed form.

*Liquidity evaporation* is flagged apart from sweeps: a run of book states in which a side's depth
stays below (1 − `evaporation_share`) of its median over the previous `evaporation_ref_s` for at
least `evaporation_min_s`, while the volume traded on that side from `evaporation_min_s` before the
run to its end is less than `evaporation_traded_share` of the fall (the depth was cancelled, not
taken). Each episode is listed (start, end, side, usual depth, low, traded).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from execal.models.core.errors import CalibrationError
from execal.models.core.params import BPS, Param
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.orderflow.data import VenueData, taker_orders
from execal.models.orderflow.result import OrderFlowResult, data_info
from execal.models.orderflow.spec import OrderFlowModel

LN2 = math.log(2.0)
MIN_SWEEPS = 10
AMPLITUDE = {"depth": "depth_recovery", "spread": "spread_residual"}


def _crossing(tau: np.ndarray, curve: np.ndarray, rising: bool) -> float:
    """First τ where the curve reaches ½ (rising) or falls to ½, linearly interpolated; NaN never."""
    ok = np.isfinite(curve)
    hit = (curve >= 0.5 if rising else curve <= 0.5) & ok
    if not hit.any():
        return math.nan
    k = int(np.argmax(hit))
    if k == 0 or not ok[k - 1]:
        return float(tau[k])
    x0, x1 = curve[k - 1], curve[k]
    return float(tau[k]) if x1 == x0 else float(tau[k - 1] + (0.5 - x0) / (x1 - x0) * (tau[k] - tau[k - 1]))


def recovery_model(tau, amplitude: float, half_life_s: float, rising: bool) -> np.ndarray:
    """Exponential recovery with half-life h, g = 2^(−τ/h). Rising (the recovered share of the depth
    dip): a·(1 − g), a the level it settles at (1 = back to the usual depth). Falling (the share of
    the spread widening left): g + b·(1 − g), b the share that stays (0 = back to the usual spread)."""
    g = np.exp(-LN2 * np.asarray(tau, dtype=np.float64) / half_life_s)
    return amplitude * (1.0 - g) if rising else g + amplitude * (1.0 - g)


def _amplitude_bounds(rising: bool) -> tuple[float, float]:
    return (0.0, 3.0) if rising else (-1.0, 1.0)


def fit_recovery(tau, curve, *, rising: bool, horizon_s: float):
    """Least squares of `recovery_model` on (τ, curve) over (amplitude, h) (scipy least_squares,
    trf, analytic Jacobian; h in [1 ms, 100·horizon]); (OptimizeResult, names at a bound) or None
    with fewer than four finite points."""
    ok = np.isfinite(curve)
    t, y = np.asarray(tau)[ok], np.asarray(curve)[ok]
    if t.size < 4:
        return None

    def resid(p):
        return recovery_model(t, p[0], p[1], rising) - y

    def jac(p):
        a, h = p
        g = np.exp(-LN2 * t / h)
        dg = g * LN2 * t / (h * h)
        return np.column_stack([1.0 - g, -a * dg if rising else (1.0 - a) * dg])

    a_lo, a_hi = _amplitude_bounds(rising)
    lo, hi = np.array([a_lo, 1e-3]), np.array([a_hi, 100.0 * horizon_s])
    # start from the model-free crossing when there is one (keeps trf away from flat regions)
    h0 = _crossing(t, y, rising)
    h0 = float(np.clip(h0 if math.isfinite(h0) and h0 > 0 else horizon_s / 20, 2e-3, hi[1] / 2))
    late = y[t >= t.max() / 2]
    a0 = float(np.clip(np.median(late) if late.size else (1.0 if rising else 0.0), a_lo + 1e-3, a_hi - 1e-3))
    sol = least_squares(resid, [a0, h0], jac=jac, bounds=(lo, hi), method="trf", x_scale="jac")
    at_bound = tuple(name for name, v, l, u in zip(("amplitude", "half_life_s"), sol.x, lo, hi)
                     if math.isclose(v, l, rel_tol=1e-6, abs_tol=1e-9) or math.isclose(v, u, rel_tol=1e-6))
    return sol, at_bound


HALF_LIFE_GRID = np.geomspace(1e-3, 1e4, 500)


def profile_half_lives(tau, curves: np.ndarray, rising: bool, horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares h of each row of `curves` (B, K; NaN = not observed) over a log grid of 500
    values in [1 ms, 100·horizon] (3.3 % apart), the amplitude profiled out in closed form (the model
    is linear in it for a given h): the sums of squares of every row against every grid model are a
    few matrix products, no loop over rows; the minimum is refined by a parabola in log h.
    Returns (h, amplitude at the nearest grid h) per row."""
    grid = HALF_LIFE_GRID[HALF_LIFE_GRID <= 100.0 * horizon_s]
    g = np.exp(-LN2 * tau[None, :] / grid[:, None])                    # (H, K)
    slope = 1.0 - g
    base = np.zeros_like(g) if rising else g
    w = np.isfinite(curves).astype(np.float64)
    c = np.where(w > 0, curves, 0.0)
    # Σw(c − base)² and Σw(c − base)·slope per (row, h); the optimal amplitude removes (·)²/Σw·slope²
    sum_cc = (w * c * c).sum(axis=1)[:, None]
    r2 = sum_cc - 2.0 * (c @ base.T) + w @ (base * base).T
    rs = c @ slope.T - w @ (base * slope).T
    ss = w @ (slope * slope).T
    with np.errstate(invalid="ignore", divide="ignore"):
        sse = r2 - np.where(ss > 0, rs * rs / ss, 0.0)
    k = np.clip(np.argmin(sse, axis=1), 1, grid.size - 2)
    rows = np.arange(sse.shape[0])
    y0, y1, y2 = sse[rows, k - 1], sse[rows, k], sse[rows, k + 1]
    curvature = y0 - 2.0 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(curvature > 0, 0.5 * (y0 - y2) / curvature, 0.0)
    step = math.log(grid[1] / grid[0])
    best = np.exp(np.log(grid[k]) + np.clip(shift, -1.0, 1.0) * step)
    with np.errstate(invalid="ignore", divide="ignore"):
        amp = rs[rows, k] / ss[rows, k]
    best[w.sum(axis=1) < 4] = np.nan
    amp[w.sum(axis=1) < 4] = np.nan
    return best, amp


def _nan_quantile(a: np.ndarray, q: float) -> np.ndarray:
    """Per-column q-quantile of `a` ignoring NaN (nearest rank), NaN where a column is empty: one
    sort instead of numpy's column-by-column nanpercentile."""
    s = np.sort(a, axis=0)                       # NaN sort last
    n = np.isfinite(a).sum(axis=0)
    idx = np.clip(np.rint(q * (n - 1)).astype(np.int64), 0, None)
    out = s[idx, np.arange(a.shape[1])]
    out[n == 0] = np.nan
    return out


def _median_rows(z: np.ndarray) -> np.ndarray:
    """Median over rows (sweeps) per column; the transpose is copied so the partition runs on
    contiguous memory (5x faster than along axis 0)."""
    if np.isfinite(z).all():
        return np.median(np.ascontiguousarray(z.T), axis=1)
    return _nan_quantile(z, 0.5)


def _trailing_median(t_ns: np.ndarray, values: np.ndarray, window_s: float) -> np.ndarray:
    """Median of `values` over the states in (t − window, t) strictly before each state (time-based
    rolling window, pandas' C implementation); NaN for the first state."""
    s = pd.Series(values, index=pd.to_datetime(t_ns, unit="ns")).shift(1)
    return s.rolling(f"{int(window_s * 1e9)}ns", min_periods=1).median().to_numpy()


class Resilience(Estimator):
    """Depth and spread recovery after sweeps; liquidity-evaporation episodes (module docstring)."""

    name = "resilience"
    label = "Resilience"

    def __init__(self, share: float = 0.5, levels: int = 10, horizon_s: float = 30.0, grid_s: float = 0.05,
                 settle_s: float = 0.3, ref_s: float = 5.0, cluster_s: float = 1.0,
                 evaporation_share: float = 0.7, evaporation_ref_s: float = 10.0,
                 evaporation_min_s: float = 1.0, evaporation_traded_share: float = 0.25,
                 n_boot: int = 200, seed: int = 0):
        self.share = float(share)
        self.levels = int(levels)
        self.horizon_s = float(horizon_s)
        self.grid_s = float(grid_s)
        self.settle_s = float(settle_s)
        self.ref_s = float(ref_s)
        self.cluster_s = float(cluster_s)
        self.evaporation_share = float(evaporation_share)
        self.evaporation_ref_s = float(evaporation_ref_s)
        self.evaporation_min_s = float(evaporation_min_s)
        self.evaporation_traded_share = float(evaporation_traded_share)
        self.n_boot = int(n_boot)
        self.seed = int(seed)

    # -- sweeps and their curves

    def sweeps(self, data: VenueData) -> pd.DataFrame:
        """The sweeps kept (the first of each cluster) with the hit side's depth before, its usual
        level and the usual spread."""
        ev = data.events
        L = min(self.levels, ev.levels)
        orders = taker_orders(data.trades)
        i = ev.asof(orders.t_ns, strict=True)
        ok = i >= 0
        bid_d, ask_d = ev.depth(L)
        idx, side, qty, t = i[ok], orders.side[ok], orders.qty[ok], orders.t_ns[ok]
        hit = np.where(side > 0, ask_d[idx], bid_d[idx])
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = qty / hit
        big = np.flatnonzero(frac > self.share)
        first = np.ones(big.size, dtype=bool)
        first[1:] = np.diff(t[big]) > int(self.cluster_s * 1e9)
        keep = big[first]
        cluster = np.diff(np.append(np.flatnonzero(first), big.size))
        j = idx[keep]
        # the usual depth and spread: medians over ref_s up to and including the state before
        ref_b = _trailing_median(ev.t_ns, bid_d, self.ref_s)
        ref_a = _trailing_median(ev.t_ns, ask_d, self.ref_s)
        ref_s = _trailing_median(ev.t_ns, ev.spread, self.ref_s)
        nxt = np.minimum(j + 1, len(ev) - 1)     # the trailing median at j+1 covers state j
        usual = np.where(side[keep] > 0, ref_a[nxt], ref_b[nxt])
        return pd.DataFrame({"t_ns": t[keep], "side": side[keep], "qty": qty[keep],
                             "share_of_depth": frac[keep], "depth_pre": hit[keep], "depth_ref": usual,
                             "spread_ref": ref_s[nxt], "mid_pre": ev.mid[j], "cluster_size": cluster})

    def _curves(self, data: VenueData, sw: pd.DataFrame):
        """τ grid and per-sweep depth ratio z (n, K) and spread excess e in bps (n, K)."""
        ev = data.events
        L = min(self.levels, ev.levels)
        tau = np.arange(0.0, self.horizon_s + self.grid_s / 2, self.grid_s)
        at = sw["t_ns"].to_numpy()[:, None] + np.round(tau * 1e9).astype(np.int64)[None, :]
        j = ev.asof(at.ravel()).reshape(at.shape)
        bid_d, ask_d = ev.depth(L)
        depth = np.where(sw["side"].to_numpy()[:, None] > 0, ask_d[j], bid_d[j])
        with np.errstate(invalid="ignore", divide="ignore"):
            z = depth / sw["depth_ref"].to_numpy()[:, None]
            e = (ev.spread[j] - sw["spread_ref"].to_numpy()[:, None]) / sw["mid_pre"].to_numpy()[:, None] * BPS
        beyond = at > ev.t_ns[-1]                       # after the capture ends: unknown
        z[beyond] = np.nan
        e[beyond] = np.nan
        return tau, z, e

    def _settle(self, tau):
        return tau <= self.settle_s + 1e-12

    def _depth_view(self, tau, z):
        """(median ratio m, recovered share x (NaN before τ_min), τ_min, m_min) or Nones without a dip."""
        m = _median_rows(z)
        settle = self._settle(tau)
        k = int(np.nanargmin(np.where(settle, m, np.nan)))
        m_min = m[k]
        if not m_min < 1.0:
            return m, None, None, None
        x = (m - m_min) / (1.0 - m_min)
        x[:k] = np.nan
        return m, x, float(tau[k]), float(m_min)


    def _spread_view(self, tau, e):
        with np.errstate(all="ignore"):
            mean = np.nanmean(e, axis=0)
        settle = self._settle(tau)
        k = int(np.nanargmax(np.where(settle, mean, np.nan)))
        peak = mean[k]
        if not peak > 0:
            return mean, None, None, None
        y = mean / peak
        y[:k] = np.nan
        return mean, y, float(tau[k]), float(peak)

    def fit(self, data: VenueData) -> OrderFlowResult:
        if not self.share > 0:
            raise CalibrationError("share must be > 0")
        if not 0 < self.grid_s < self.horizon_s or not self.settle_s < self.horizon_s:
            raise CalibrationError("need 0 < grid_s < horizon_s and settle_s < horizon_s")
        warnings = list(data.warnings)
        sw = self.sweeps(data)
        if len(sw) == 0:
            raise CalibrationError(f"{data.label}: no order took more than {self.share:g} of the "
                                   f"depth on its side (first {self.levels} levels): no sweep to "
                                   "measure recovery from; lower `share`")
        tau, z, e = self._curves(data, sw)
        params, se, metrics = {}, {}, {"sweeps": len(sw)}
        curves = {"tau_s": tau}
        results = {}
        m, x, tau_min, m_min = self._depth_view(tau, z)
        widened = np.nanmax(e[:, self._settle(tau)], axis=1) > 0 if e.size else np.zeros(0, bool)
        e_used = e[widened]          # the spread view: sweeps that widened it
        metrics["spread_sweeps"] = int(widened.sum())
        s_mean, y, tau_max, peak = (self._spread_view(tau, e_used) if widened.any()
                                    else (np.full(tau.size, np.nan), None, None, None))
        curves.update(depth_ratio=m, spread_excess_bps=s_mean)
        for what, curve, t0, rising in (("depth", x, tau_min, True), ("spread", y, tau_max, False)):
            key, key_a = f"{what}_half_life_s", AMPLITUDE[what]
            if curve is None:
                params[key] = se[key] = params[key_a] = se[key_a] = math.nan
                warnings.append(f"{what}: the sweeps did not move it (no dip or widening within "
                                "settle_s on the median/mean): no recovery to measure")
                continue
            after = tau >= t0 - 1e-12
            metrics[f"{what}_half_life_empirical_s"] = _crossing(tau[after] - t0, curve[after], rising)
            fitted = fit_recovery(tau[after] - t0, curve[after], rising=rising, horizon_s=self.horizon_s)
            if fitted is None:
                params[key] = se[key] = params[key_a] = se[key_a] = math.nan
                continue
            sol, at_bound = fitted
            results[what] = (sol, at_bound)
            params[key], params[key_a] = float(sol.x[1]), float(sol.x[0])
            fit_curve = np.full(tau.size, np.nan)
            fit_curve[after] = recovery_model(tau[after] - t0, sol.x[0], sol.x[1], rising)
            curves[f"{what}_curve"], curves[f"{what}_fit"] = curve, fit_curve
            metrics[f"{what}_t0_s"] = t0
            if at_bound:
                warnings.append(f"{what} recovery fit at a bound ({', '.join(at_bound)})")
            elif sol.x[1] < self.grid_s:
                warnings.append(f"{what} comes back within one grid step ({self.grid_s:g} s): its "
                                "half-life is below what the book updates resolve")
            if not math.isfinite(metrics[f"{what}_half_life_empirical_s"]):
                warnings.append(f"{what}: the typical sweep does not get half way back within "
                                f"{self.horizon_s:g} s")
            se[key], se[key_a], lo, hi = self._bootstrap(tau, z if rising else e_used, rising)
            curves[f"{what}_lo"], curves[f"{what}_hi"] = lo, hi
        metrics["depth_dip"] = (1.0 - m_min) if m_min is not None else math.nan
        metrics["spread_peak_bps"] = peak if peak is not None else math.nan
        # per sweep: did its depth get half way back from its own low?
        settle = self._settle(tau)
        with np.errstate(all="ignore"):
            low = np.nanmin(z[:, settle], axis=1)
            k_low = np.nanargmin(np.where(settle[None, :], z, np.inf), axis=1)
        later = np.arange(tau.size)[None, :] >= k_low[:, None]
        back = np.where(later, z, np.nan) >= ((low + 1.0) / 2.0)[:, None]
        dipped = low < 1.0
        recovered = back.any(axis=1) & dipped
        first_back = np.where(recovered, tau[np.argmax(back, axis=1)] - tau[k_low], np.nan)
        tables = {"sweeps": [{"time": pd.Timestamp(int(t), unit="ns", tz="UTC").isoformat(),
                              "side": "buy" if s > 0 else "sell", "qty": q, "share_of_depth": f,
                              "depth_pre": d, "depth_usual": r, "cluster_size": int(c),
                              "dipped": bool(dp), "recovered": bool(rc), "half_life_s": h}
                             for t, s, q, f, d, r, c, dp, rc, h in zip(
                                 sw["t_ns"], sw["side"], sw["qty"], sw["share_of_depth"], sw["depth_pre"],
                                 sw["depth_ref"], sw["cluster_size"], dipped, recovered, first_back)],
                  "evaporation": self.evaporation(data)}
        metrics.update(not_recovered=int((dipped & ~recovered).sum()),
                       evaporation_episodes=len(tables["evaporation"]))
        if len(sw) < MIN_SWEEPS:
            warnings.append(f"only {len(sw)} sweeps (orders > {self.share:g} of the first "
                            f"{self.levels} levels): the half-lives are rough")
        ok = bool(results) and all(s.success for s, _ in results.values())
        first = results.get("depth") or results.get("spread")
        report = OptimizerReport(
            method="least_squares", loss="linear", status=int(first[0].status) if first else None,
            message="; ".join(f"{k}: {s.message}" for k, (s, _) in results.items()) or "nothing fitted",
            success=ok, converged=ok, nfev=sum(int(s.nfev) for s, _ in results.values()),
            active_bounds=tuple(f"{k}.{b}" for k, (_, bounds) in results.items() for b in bounds),
            settings={"share": self.share, "levels": self.levels, "n_boot": self.n_boot})
        return OrderFlowResult(name=self.name, label=self.label, venue=data.venue, symbol=data.symbol,
                               params=params, std_errors=se, report=report, warnings=tuple(warnings),
                               metrics=metrics, curves=curves, tables=tables,
                               settings=self.get_params(), data_info=data_info(data))

    def _bootstrap(self, tau, rows, rising):
        """Moving-block bootstrap over consecutive sweeps (blocks of ~n/20): (se of the half-life,
        se of the amplitude, 2.5 % and 97.5 % bands of the normalised curve on τ − τ0)."""
        n = rows.shape[0]
        nan_band = np.full(tau.size, np.nan)
        if self.n_boot <= 0 or n < 4:
            return math.nan, math.nan, nan_band, nan_band
        rng = np.random.default_rng(self.seed)
        block = max(1, n // 20)
        starts = rng.integers(0, n - block + 1, size=(self.n_boot, math.ceil(n / block)))
        pick = (starts[:, :, None] + np.arange(block)[None, None, :]).reshape(self.n_boot, -1)[:, :n]
        shifted = np.full((self.n_boot, tau.size), np.nan)
        for b, p in enumerate(pick):
            view = self._depth_view(tau, rows[p]) if rising else self._spread_view(tau, rows[p])
            curve, t0 = view[1], view[2]
            if curve is not None:
                k = int(round(t0 / self.grid_s))
                shifted[b, :tau.size - k] = curve[k:]               # aligned on τ − τ0
        h, amp = profile_half_lives(tau, shifted, rising, self.horizon_s)
        ok = np.isfinite(h) & np.isfinite(amp)
        se_h = float(np.std(h[ok], ddof=1)) if ok.sum() >= 10 else math.nan
        se_a = float(np.std(amp[ok], ddof=1)) if ok.sum() >= 10 else math.nan
        seen = np.isfinite(shifted).sum(axis=0) >= 10
        lo, hi = _nan_quantile(shifted, 0.025), _nan_quantile(shifted, 0.975)
        lo[~seen] = hi[~seen] = np.nan
        return se_h, se_a, lo, hi

    # -- evaporation

    def evaporation(self, data: VenueData) -> list[dict]:
        """Liquidity-evaporation episodes (module docstring), in time order."""
        ev = data.events
        L = min(self.levels, ev.levels)
        bid_d, ask_d = ev.depth(L)
        tr = data.trades
        min_ns = int(self.evaporation_min_s * 1e9)
        n = len(ev)
        out = []
        for side_name, depth, hit_by in (("bid", bid_d, -1), ("ask", ask_d, +1)):
            usual = _trailing_median(ev.t_ns, depth, self.evaporation_ref_s)
            low = depth < (1.0 - self.evaporation_share) * usual
            edges = np.diff(np.concatenate([[0], low.astype(np.int8), [0]]))
            start, stop = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)   # stop: first state after
            t_start = ev.t_ns[start]
            t_stop = np.where(stop < n, ev.t_ns[np.minimum(stop, n - 1)], ev.t_ns[-1])
            long = (t_stop - t_start) >= min_ns
            if not long.any():
                continue
            taken = np.concatenate([[0.0], np.cumsum(np.where(tr.side == hit_by, tr.qty, 0.0))])
            for a, b, t0, t1 in zip(start[long], stop[long], t_start[long], t_stop[long]):
                worst = a + int(np.argmin(depth[a:b]))
                ref = float(usual[a])
                traded = float(taken[np.searchsorted(tr.t_ns, t1, side="right")]
                               - taken[np.searchsorted(tr.t_ns, t0 - min_ns, side="left")])
                fall = ref - float(depth[worst])
                if traded >= self.evaporation_traded_share * fall:
                    continue                                 # taken by trades: a sweep, not evaporation
                out.append({"start": pd.Timestamp(int(t0), unit="ns", tz="UTC").isoformat(),
                            "end": pd.Timestamp(int(t1), unit="ns", tz="UTC").isoformat(),
                            "duration_s": (t1 - t0) / 1e9, "side": side_name, "depth_usual": ref,
                            "depth_low": float(depth[worst]), "fall_share": fall / ref if ref > 0 else math.nan,
                            "traded": traded, "states": int(b - a)})
        out.sort(key=lambda r: r["start"])
        return out

    def fix(self, params, data: VenueData) -> OrderFlowResult:
        """Hand-set half-lives (and amplitudes: depth_recovery default 1, spread_residual default 0)
        against the measured curves: RMSE of each."""
        sw = self.sweeps(data)
        if len(sw) == 0:
            raise CalibrationError(f"{data.label}: no sweep to compare with")
        tau, z, e = self._curves(data, sw)
        fixed, metrics, curves = {}, {}, {"tau_s": tau}
        widened = np.nanmax(e[:, self._settle(tau)], axis=1) > 0
        spread_view = self._spread_view(tau, e[widened]) if widened.any() else (None, None, None, None)
        for what, view, rising in (("depth", self._depth_view(tau, z), True), ("spread", spread_view, False)):
            h = float(params.get(f"{what}_half_life_s", math.nan))
            a = float(params.get(AMPLITUDE[what], 1.0 if rising else 0.0))
            fixed[f"{what}_half_life_s"] = h
            curve, t0 = view[1], view[2]
            if curve is None:
                continue
            model = np.full(tau.size, np.nan)
            after = tau >= t0 - 1e-12
            model[after] = recovery_model(tau[after] - t0, a, h, rising)
            metrics[f"{what}_rmse"] = float(np.sqrt(np.nanmean((curve - model) ** 2)))
            curves[f"{what}_curve"], curves[f"{what}_fit"] = curve, model
        return OrderFlowResult(name=self.name, label=self.label, venue=data.venue, symbol=data.symbol,
                               params=fixed, std_errors={k: math.nan for k in fixed},
                               report=OptimizerReport.fixed(**fixed), metrics=metrics, curves=curves,
                               settings=self.get_params(), data_info=data_info(data))


RESILIENCE_MODEL = OrderFlowModel(
    name="resilience", label="Resilience after sweeps",
    formula=("depth dip recovered x(τ) = a·(1 − 2^(−τ/h)); "
             "spread widening left y(τ) = g + b·(1 − g), g = 2^(−τ/h_s)"),
    params=(Param("depth_half_life_s", 1.0, 1e-3, 1e4, "s", "time for half of the depth dip to come back"),
            Param("spread_half_life_s", 1.0, 1e-3, 1e4, "s", "time for the spread to close half its widening")),
    reference="Obizhaeva & Wang 2013; Large 2007; Dong, Kempf & Yadav 2007 (resiliency)",
    estimator_path="execal.models.orderflow.resilience:Resilience",
    options={"share": 0.5, "levels": 10, "horizon_s": 30.0})
