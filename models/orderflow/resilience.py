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
`settle_s` (the diff carrying the sweep arrives up to ~100 ms later) and the recovered share is
x(τ) = (m(τ) − m_min)/(1 − m_min). The spread: excess e(τ) = (s(T + τ) − s_ref)/mid in bps, s_ref
the median spread over `ref_s` before, averaged over sweeps; peak e_max at τ_max ≤ settle_s;
y(τ) = e(τ)/e_max.

Reported: the model-free half-lives (first τ − τ_min where x ≥ ½; first τ − τ_max where y ≤ ½)
and least-squares fits of exponential recovery x = 1 − 2^(−(τ−τ_min)/h), y = 2^(−(τ−τ_max)/h_s)
(scipy least_squares, trf, analytic Jacobian): h and h_s in seconds. The spread view uses the sweeps
that widened the spread. Standard errors: moving-block bootstrap over consecutive sweeps
(neighbouring recovery windows overlap in time); each resample's h by a profile over a log grid.

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


def recovery_model(tau, half_life_s, rising: bool) -> np.ndarray:
    """1 − 2^(−τ/h) (rising: the recovered share of the depth dip) or 2^(−τ/h) (the spread excess)."""
    decay = np.exp(-LN2 * np.asarray(tau, dtype=np.float64) / half_life_s)
    return 1.0 - decay if rising else decay


def fit_half_life(tau, curve, *, rising: bool, horizon_s: float):
    """Least squares of `recovery_model` on (τ, curve) over h (scipy least_squares, trf, analytic
    Jacobian, h in [1 ms, 100·horizon]); (OptimizeResult, at_bound) or None with < 3 points."""
    ok = np.isfinite(curve)
    t, y = np.asarray(tau)[ok], np.asarray(curve)[ok]
    if t.size < 3:
        return None

    def resid(p):
        return recovery_model(t, p[0], rising) - y

    def jac(p):
        h = p[0]
        d_h = np.exp(-LN2 * t / h) * LN2 * t / (h * h)
        return (-d_h if rising else d_h)[:, None]

    lo, hi = 1e-3, 100.0 * horizon_s
    # start from the model-free crossing when there is one (keeps trf away from flat regions)
    start = _crossing(t, y, rising)
    start = float(np.clip(start if math.isfinite(start) and start > 0 else horizon_s / 20, 2e-3, hi / 2))
    sol = least_squares(resid, [start], jac=jac, bounds=([lo], [hi]), method="trf", x_scale="jac")
    h = float(sol.x[0])
    at_bound = math.isclose(h, lo, rel_tol=1e-6) or math.isclose(h, hi, rel_tol=1e-6)
    return sol, at_bound


HALF_LIFE_GRID = np.geomspace(1e-3, 1e4, 500)


def profile_half_lives(tau, curves: np.ndarray, rising: bool, horizon_s: float) -> np.ndarray:
    """Least-squares h of each row of `curves` (B, K; NaN = not observed) over a log grid of
    500 values in [1 ms, 100·horizon] (3.3 % apart): the weighted sums of squares of every row
    against every grid model are three matrix products, no loop over rows."""
    grid = HALF_LIFE_GRID[HALF_LIFE_GRID <= 100.0 * horizon_s]
    M = recovery_model(tau[None, :], grid[:, None], rising)            # (H, K)
    w = np.isfinite(curves).astype(np.float64)
    c = np.where(w > 0, curves, 0.0)
    sse = (w * c * c).sum(axis=1)[:, None] - 2.0 * (c @ M.T) + w @ (M * M).T
    k = np.clip(np.argmin(sse, axis=1), 1, grid.size - 2)
    rows = np.arange(sse.shape[0])
    # parabola through the three grid points around the minimum, in log h (the grid is geometric)
    y0, y1, y2 = sse[rows, k - 1], sse[rows, k], sse[rows, k + 1]
    curvature = y0 - 2.0 * y1 + y2
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(curvature > 0, 0.5 * (y0 - y2) / curvature, 0.0)
    step = math.log(grid[1] / grid[0])
    best = np.exp(np.log(grid[k]) + np.clip(shift, -1.0, 1.0) * step)
    best[w.sum(axis=1) < 3] = np.nan
    return best


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
            key = f"{what}_half_life_s"
            if curve is None:
                params[key] = se[key] = math.nan
                warnings.append(f"{what}: the sweeps did not move it (no dip or widening within "
                                "settle_s on the median/mean): no recovery to measure")
                continue
            after = tau >= t0 - 1e-12
            metrics[f"{what}_half_life_empirical_s"] = _crossing(tau[after] - t0, curve[after], rising)
            fitted = fit_half_life(tau[after] - t0, curve[after], rising=rising, horizon_s=self.horizon_s)
            if fitted is None:
                params[key] = se[key] = math.nan
                continue
            sol, at_bound = fitted
            results[what] = (sol, at_bound)
            params[key] = float(sol.x[0])
            fit_curve = np.full(tau.size, np.nan)
            fit_curve[after] = recovery_model(tau[after] - t0, sol.x[0], rising)
            curves[f"{what}_curve"], curves[f"{what}_fit"] = curve, fit_curve
            metrics[f"{what}_t0_s"] = t0
            if at_bound:
                warnings.append(f"{what} half-life fit at a bound of [1 ms, {100 * self.horizon_s:g} s]")
            elif sol.x[0] < self.grid_s:
                warnings.append(f"{what} comes back within one grid step ({self.grid_s:g} s): its "
                                "half-life is below what the book updates resolve")
            if not math.isfinite(metrics[f"{what}_half_life_empirical_s"]):
                warnings.append(f"{what}: the typical sweep does not get half way back within "
                                f"{self.horizon_s:g} s")
            se[key], lo, hi = self._bootstrap(tau, z if rising else e_used, rising)
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
            active_bounds=tuple(f"{k}_half_life_s" for k, (_, at_bound) in results.items() if at_bound),
            settings={"share": self.share, "levels": self.levels, "n_boot": self.n_boot})
        return OrderFlowResult(name=self.name, label=self.label, venue=data.venue, symbol=data.symbol,
                               params=params, std_errors=se, report=report, warnings=tuple(warnings),
                               metrics=metrics, curves=curves, tables=tables,
                               settings=self.get_params(), data_info=data_info(data))

    def _bootstrap(self, tau, rows, rising):
        """Moving-block bootstrap over consecutive sweeps (blocks of ~n/20): (se of the half-life,
        2.5 % and 97.5 % bands of the normalised curve on τ − τ0)."""
        n = rows.shape[0]
        nan_band = np.full(tau.size, np.nan)
        if self.n_boot <= 0 or n < 4:
            return math.nan, nan_band, nan_band
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
        h = profile_half_lives(tau, shifted, rising, self.horizon_s)
        h = h[np.isfinite(h)]
        se = float(np.std(h, ddof=1)) if h.size >= 10 else math.nan
        seen = np.isfinite(shifted).sum(axis=0) >= 10
        lo, hi = _nan_quantile(shifted, 0.025), _nan_quantile(shifted, 0.975)
        lo[~seen] = hi[~seen] = np.nan
        return se, lo, hi

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
        """Hand-set half-lives (and amplitudes, default 1) against the measured curves: RMSE."""
        sw = self.sweeps(data)
        if len(sw) == 0:
            raise CalibrationError(f"{data.label}: no sweep to compare with")
        tau, z, e = self._curves(data, sw)
        fixed, metrics, curves = {}, {}, {"tau_s": tau}
        widened = np.nanmax(e[:, self._settle(tau)], axis=1) > 0
        spread_view = self._spread_view(tau, e[widened]) if widened.any() else (None, None, None, None)
        for what, view, rising in (("depth", self._depth_view(tau, z), True), ("spread", spread_view, False)):
            h = float(params.get(f"{what}_half_life_s", math.nan))
            fixed[f"{what}_half_life_s"] = h
            curve, t0 = view[1], view[2]
            if curve is None:
                continue
            model = np.full(tau.size, np.nan)
            after = tau >= t0 - 1e-12
            model[after] = recovery_model(tau[after] - t0, h, rising)
            metrics[f"{what}_rmse"] = float(np.sqrt(np.nanmean((curve - model) ** 2)))
            curves[f"{what}_curve"], curves[f"{what}_fit"] = curve, model
        return OrderFlowResult(name=self.name, label=self.label, venue=data.venue, symbol=data.symbol,
                               params=fixed, std_errors={k: math.nan for k in fixed},
                               report=OptimizerReport.fixed(**fixed), metrics=metrics, curves=curves,
                               settings=self.get_params(), data_info=data_info(data))


RESILIENCE_MODEL = OrderFlowModel(
    name="resilience", label="Resilience after sweeps",
    formula="recovered share of the depth dip x(τ) = 1 − 2^(−τ/h); spread excess y(τ) = 2^(−τ/h_s)",
    params=(Param("depth_half_life_s", 1.0, 1e-3, 1e4, "s", "time for half of the depth dip to come back"),
            Param("spread_half_life_s", 1.0, 1e-3, 1e4, "s", "time for the spread to close half its widening")),
    reference="Obizhaeva & Wang 2013; Large 2007; Dong, Kempf & Yadav 2007 (resiliency)",
    estimator_path="execal.models.orderflow.resilience:Resilience",
    options={"share": 0.5, "levels": 10, "horizon_s": 30.0})
