"""Hayashi–Yoshida covariance of asynchronous ticks, and the lead–lag scan built on it.

Hayashi & Yoshida (2005): with x observed at t_0 < … < t_n (returns r_i over (t_{i-1}, t_i]) and y at
u_0 < … < u_m (returns s_j over (u_{j-1}, u_j]),

    HY = Σ_i Σ_j r_i s_j 1{(t_{i-1}, t_i] ∩ (u_{j-1}, u_j] ≠ ∅},

every pair of overlapping intervals counted once, no grid, so no synchronisation (Epps) bias.

Vectorised, not a double loop: the y intervals overlapping x's interval i are one contiguous run
j = lo_i … hi_i with lo_i = #{u ≤ t_{i-1}} (first u_j > t_{i-1}) and hi_i = #{u < t_i} (last
u_{j-1} < t_i), two `searchsorted` calls; the sum of s_j over the run is a difference of y's log
prices, Y(u_{hi}) − Y(u_{lo−1}). So HY = Σ_i r_i (Y[hi_i] − Y[lo_i − 1]) in O((n + m) log m), and
the same with squared returns gives Σ_i r_i² Σ_{j~i} s_j², the variance of HY under independence.

Lead–lag (Hoffmann, Rosenbaum & Yoshida 2013): HY(θ) pairs x's interval with y's intervals shifted
by θ. Convention: at θ > 0, x's move at t goes with y's move at t + θ, so a peak at θ > 0 means x
leads. The correlation at each lag is HY(θ)/√(RV_x RV_y) (tick realised variances over the common
window). Significance band, pointwise, under the null of no cross-dependence:

* "asymptotic" (default): Var₀[HY(θ)] = Σ_i r_i² Σ_{j~i(θ)} s_j², the exact conditional variance of
  HY when x and y have independent, serially uncorrelated increments (the cross terms vanish); the
  band is ± z_{1−α/2} √Var₀ / √(RV_x RV_y) at each lag.
* "shift": y's (duration, increment) sequence is rotated circularly by a random number of ticks
  (a time shift far beyond the lags scanned, at least 5 × the largest lag and 5 % of the window),
  which keeps each series' own dynamics and tick-time pattern but breaks any alignment with x; the
  band is the (1 − α) quantile of |ρ| over `n_shifts` rotations (seeded).

Both bands are pointwise: with L lags about α·L lags leave the band by chance (`n_exceed` counts
them). A peak is called significant when it leaves the band AND is the largest |ρ| on the grid.

Standard errors of the HY correlation (lag 0): the window is cut into `blocks` equal blocks; each
block's share of HY (by the end time of x's interval) and of the two realised variances gives the
delta-method influence of the ratio, whose Newey–West variance over blocks is the s.e. (hac.py).
"""
from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from execal.models.core.params import NS_PER_S
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.corr.epps import default_epps_intervals, epps_curve, finest_spacing_s
from execal.models.corr.hac import ratio_corr_se
from execal.models.corr.result import (CorrelationResult, LeadLag, matrix_from_pairs, pair_name, pairs_of,
                                       psd_warning)
from execal.models.corr.ticks import (TickSeries, as_series, calendar_grid, common_window, need_two,
                                      previous_tick)

BANDS = ("asymptotic", "shift")
_CHUNK_ELEMENTS = 2_000_000          # lags × ticks per searchsorted call (memory ~16 MB an array)
NOISE_RATIO_WARN = 2.0
MIN_TICKS_WARN = 100


# --- the vectorised core ----------------------------------------------------------------------------

def overlap_bounds(t_x: np.ndarray, t_y: np.ndarray, shift_ns=0) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): for each x interval i = 1..n, the run of y intervals j = lo..hi (1-based, y shifted
    earlier by `shift_ns`, i.e. y's u becomes u − shift) that overlap it; empty when hi < lo.
    `shift_ns` may be an array of shifts (one row of bounds per shift)."""
    shift = np.asarray(shift_ns, dtype=np.int64)
    a = t_x[:-1] if shift.ndim == 0 else t_x[None, :-1]
    b = t_x[1:] if shift.ndim == 0 else t_x[None, 1:]
    s = shift if shift.ndim == 0 else shift[:, None]
    lo = np.searchsorted(t_y, a + s, side="right")
    hi = np.searchsorted(t_y, b + s, side="left")
    np.maximum(lo, 1, out=lo)
    np.minimum(hi, t_y.shape[0] - 1, out=hi)
    return lo, hi


def _run_sums(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Σ_{j=lo}^{hi} v_j from cum[k] = Σ_{j ≤ k} v_j (cum[0] = 0); 0 for empty runs."""
    out = cum[hi] - cum[lo - 1]
    out[hi < lo] = 0.0
    return out


def hy_covariance(x: TickSeries, y: TickSeries, lag_s: float = 0.0) -> float:
    """The Hayashi–Yoshida covariance of x and y (y shifted by `lag_s`, see the module docstring)."""
    r = np.diff(np.asarray(x.log_price))
    Y = np.asarray(y.log_price) - y.log_price[0]
    lo, hi = overlap_bounds(np.asarray(x.t_ns), np.asarray(y.t_ns), int(round(lag_s * NS_PER_S)))
    return float(r @ _run_sums(Y, lo, hi))


def hy_terms(x: TickSeries, y: TickSeries, *, squares: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per x interval: r_i, Σ_{j~i} s_j and (with `squares`) Σ_{j~i} s_j² (lag 0)."""
    r = np.diff(np.asarray(x.log_price))
    Y = np.asarray(y.log_price) - y.log_price[0]
    lo, hi = overlap_bounds(np.asarray(x.t_ns), np.asarray(y.t_ns))
    if not squares:
        return r, _run_sums(Y, lo, hi), None
    s = np.diff(np.asarray(y.log_price))
    Q = np.concatenate([[0.0], np.cumsum(s * s)])
    return r, _run_sums(Y, lo, hi), _run_sums(Q, lo, hi)


def cross_covariances(x: TickSeries, y: TickSeries, lags_ns: np.ndarray, *, null_variance: bool = True
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """HY(θ) for every lag θ (ns), and Var₀[HY(θ)] under independence; lags in chunks so that the
    index arrays stay a few MB."""
    t_x, t_y = np.asarray(x.t_ns), np.asarray(y.t_ns)
    r = np.diff(np.asarray(x.log_price))
    r2 = r * r
    s = np.diff(np.asarray(y.log_price))
    Y = np.concatenate([[0.0], np.cumsum(s)])
    Q = np.concatenate([[0.0], np.cumsum(s * s)]) if null_variance else None
    lags = np.asarray(lags_ns, dtype=np.int64)
    cov = np.empty(lags.shape[0])
    var0 = np.empty(lags.shape[0]) if null_variance else None
    step = max(1, _CHUNK_ELEMENTS // max(r.shape[0], 1))
    for k0 in range(0, lags.shape[0], step):
        chunk = lags[k0:k0 + step]
        lo, hi = overlap_bounds(t_x, t_y, chunk)
        empty = hi < lo
        S = Y[hi] - Y[lo - 1]
        S[empty] = 0.0
        cov[k0:k0 + step] = S @ r
        if null_variance:
            V = Q[hi] - Q[lo - 1]
            V[empty] = 0.0
            var0[k0:k0 + step] = V @ r2
    return cov, var0


def realized_variance(s: TickSeries) -> float:
    r = np.diff(np.asarray(s.log_price))
    return float(r @ r)


# --- lead–lag ---------------------------------------------------------------------------------------

def lag_grid(max_lag_s: float, step_s: float) -> np.ndarray:
    if not (step_s > 0 and max_lag_s >= 0):
        raise ValueError("the lag step must be > 0 and the largest lag ≥ 0")
    k = int(round(max_lag_s / step_s))
    return np.arange(-k, k + 1) * step_s


def _rotated(y: TickSeries, k: int) -> TickSeries:
    """y with its (duration, increment) sequence rotated by k intervals (starts at the same time)."""
    t, p = np.asarray(y.t_ns), np.asarray(y.log_price)
    d = np.roll(np.diff(t), -k)
    s = np.roll(np.diff(p), -k)
    return TickSeries(y.name, t[0] + np.concatenate([[0], np.cumsum(d)]), p[0] + np.concatenate([[0.0], np.cumsum(s)]),
                      y.source, y.symbol, y.venue, y.price)


def shift_null(x: TickSeries, y: TickSeries, *, max_lag_s: float, n_shifts: int, seed: int,
               rv_x: float, rv_y: float) -> tuple[np.ndarray, str]:
    """|ρ| at lag 0 of x against circular rotations of y (far from every scanned lag)."""
    t = np.asarray(y.t_ns)
    span = t[-1] - t[0]
    min_shift = max(5 * max_lag_s * NS_PER_S, 0.05 * span)
    offset = t[1:-1] - t[0]
    ok = np.flatnonzero((offset >= min_shift) & (offset <= span - min_shift)) + 1
    if ok.shape[0] < 10:
        return np.array([]), "the window is too short for rotations beyond the lags scanned"
    rng = np.random.default_rng(seed)
    ks = rng.choice(ok, size=n_shifts, replace=ok.shape[0] < n_shifts)
    denom = math.sqrt(rv_x * rv_y)
    return np.array([abs(hy_covariance(x, _rotated(y, int(k)))) / denom for k in ks]), ""


def lead_lag(x: TickSeries, y: TickSeries, *, lags_s: Sequence[float] | None = None, max_lag_s: float = 2.0,
             step_s: float = 0.01, band: str = "asymptotic", alpha: float = 0.05, n_shifts: int = 200,
             seed: int = 0, window: tuple[int, int] | None = None) -> LeadLag:
    """The HY cross-correlation of x and y over lags, its peak and a pointwise null band."""
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    start, end = window or common_window([x, y])
    x, y = x.window(start, end), y.window(start, end)
    lags = np.asarray(lags_s, dtype=np.float64) if lags_s is not None else lag_grid(max_lag_s, step_s)
    lags_ns = np.round(lags * NS_PER_S).astype(np.int64)
    rv_x, rv_y = realized_variance(x), realized_variance(y)
    denom = math.sqrt(rv_x * rv_y) if rv_x > 0 and rv_y > 0 else float("nan")
    cov, var0 = cross_covariances(x, y, lags_ns, null_variance=True)
    rho = cov / denom
    note = ""
    if band == "asymptotic":
        half = stats.norm.ppf(1 - alpha / 2) * np.sqrt(var0) / denom
        lo_band, hi_band = -half, half
    else:
        null, note = shift_null(x, y, max_lag_s=float(np.max(np.abs(lags))) if lags.size else 0.0,
                                n_shifts=n_shifts, seed=seed, rv_x=rv_x, rv_y=rv_y)
        if null.size:
            q = float(np.quantile(null, 1 - alpha))
            lo_band, hi_band = np.full(lags.shape, -q), np.full(lags.shape, q)
            note = f"{null.size} circular rotations of {y.name} (seed {seed})"
        else:
            half = stats.norm.ppf(1 - alpha / 2) * np.sqrt(var0) / denom
            lo_band, hi_band = -half, half
            note += "; the asymptotic band is shown instead"
            band = "asymptotic"
    finite = np.isfinite(rho)
    if not finite.any():
        return LeadLag(x.name, y.name, lags, rho, lo_band, hi_band, band, alpha, float("nan"), float("nan"),
                       float("nan"), False, None, 0, "no finite correlation (a constant price?)")
    k = int(np.nanargmax(np.abs(rho)))
    outside = finite & ((rho > hi_band) | (rho < lo_band))
    zero = np.flatnonzero(lags_ns == 0)
    rho0 = float(rho[zero[0]]) if zero.size else float(hy_covariance(x, y) / denom)
    pos, neg = lags > 0, lags < 0
    den = float(np.nansum(rho[neg] ** 2))
    llr = float(np.nansum(rho[pos] ** 2)) / den if den > 0 else None
    return LeadLag(x.name, y.name, lags, rho, np.asarray(lo_band, float), np.asarray(hi_band, float), band, alpha,
                   float(lags[k]), float(rho[k]), rho0, bool(outside[k]), llr, int(outside.sum()), note)


# --- the estimator ----------------------------------------------------------------------------------

def _blocks(t_end: np.ndarray, start: int, end: int, n_blocks: int) -> np.ndarray:
    span = max(end - start, 1)
    return np.clip(((t_end - start) * n_blocks) // span, 0, n_blocks - 1).astype(np.int64)


def hy_correlation(x: TickSeries, y: TickSeries, *, blocks: int = 30, window: tuple[int, int] | None = None
                   ) -> dict:
    """HY covariance and correlation of one pair over its common window, with the block HAC s.e."""
    start, end = window or common_window([x, y])
    x, y = x.window(start, end), y.window(start, end)
    r, S, _ = hy_terms(x, y, squares=False)
    s = np.diff(np.asarray(y.log_price))
    bx = _blocks(np.asarray(x.t_ns)[1:], start, end, blocks)
    by = _blocks(np.asarray(y.t_ns)[1:], start, end, blocks)
    c = np.bincount(bx, r * S, minlength=blocks)
    a = np.bincount(bx, r * r, minlength=blocks)
    b = np.bincount(by, s * s, minlength=blocks)
    rho, se = ratio_corr_se(c, a, b)
    return {"cov": float(r @ S), "rv_x": float(r @ r), "rv_y": float(s @ s), "rho": rho, "se": se,
            "ticks_x": x.n, "ticks_y": y.n}


def _sparse_rv(s: TickSeries, start: int, end: int, n: int = 30) -> float:
    grid = calendar_grid(start, end, max((end - start) // n, 1))
    p = previous_tick(s, grid)
    r = np.diff(p[np.isfinite(p)])
    return float(r @ r)


def _noise_warning(s: TickSeries, start: int, end: int) -> tuple[str | None, float]:
    w = s.window(start, end)
    tick = realized_variance(w)
    sparse = _sparse_rv(w, start, end)
    ratio = tick / sparse if sparse > 0 else float("nan")
    step = (end - start) / 30 / NS_PER_S
    if ratio > NOISE_RATIO_WARN:
        return (f"{s.name}: the tick realised variance is {ratio:.1f}× that of {step:.3g}-s returns: "
                f"microstructure noise (bid–ask bounce) dominates tick returns, so the HY correlation, "
                f"normalised by tick variances, is biased toward 0; 'rho_sparse_denominator' uses the "
                f"{step:.3g}-s variances instead, and the Epps curve's plateau is the other reading"), ratio
    if ratio < 1 / NOISE_RATIO_WARN:
        return (f"{s.name}: the tick realised variance is only {ratio:.2f}× that of {step:.3g}-s returns: tick "
                f"returns are positively autocorrelated (stale or smoothed prices), so tick variances understate "
                f"the variance and the HY correlation, normalised by them, is biased away from 0 (it can leave "
                f"[−1, 1]); read 'rho_sparse_denominator' and the Epps curve's plateau instead"), ratio
    return None, ratio


class HayashiYoshida(Estimator):
    """Hayashi–Yoshida correlation matrix of tick series, with lead–lag scans for every pair.

    Settings: `price` ("auto", "trade", "mid") when given files; `lead_lag` (scan every pair);
    `max_lag_s`, `lag_step_s` (or explicit `lags_s`); `band` ("asymptotic" | "shift"), `alpha`,
    `n_shifts`, `seed`; `blocks` for the HAC standard errors; `epps` adds the Epps curve of every pair
    (previous-tick grids at `epps_intervals`, automatic when None) beside the HY level, so one fit shows
    both the synchronisation bias and the lead–lag."""

    name = "hayashi_yoshida"

    def __init__(self, price: str = "auto", lead_lag: bool = True, max_lag_s: float = 2.0,
                 lag_step_s: float = 0.01, lags_s: Sequence[float] | None = None, band: str = "asymptotic",
                 alpha: float = 0.05, n_shifts: int = 200, seed: int = 0, blocks: int = 30, epps: bool = False,
                 epps_intervals: Sequence[float] | None = None):
        self.price = price
        self.lead_lag = lead_lag
        self.max_lag_s = max_lag_s
        self.lag_step_s = lag_step_s
        self.lags_s = lags_s
        self.band = band
        self.alpha = alpha
        self.n_shifts = n_shifts
        self.seed = seed
        self.blocks = blocks
        self.epps = epps
        self.epps_intervals = epps_intervals

    def _series(self, data) -> list[TickSeries]:
        series = as_series(data, price=self.price)
        return need_two(series)

    def fit(self, data) -> CorrelationResult:
        t0 = time.perf_counter()
        series = self._series(data)
        start, end = common_window(series)
        names = tuple(s.name for s in series)
        k = len(series)
        windowed = [s.window(start, end) for s in series]
        cov = np.zeros((k, k))
        for i, s in enumerate(windowed):
            cov[i, i] = realized_variance(s)
        params, ses, alt = {}, {}, {}
        warn: list[str] = []
        noise = {}
        for s in series:
            w, ratio = _noise_warning(s, start, end)
            noise[s.name] = ratio
            if w:
                warn.append(w)
        sparse = {s.name: _sparse_rv(s.window(start, end), start, end) for s in series}
        for i, j in pairs_of(names):
            out = hy_correlation(series[i], series[j], blocks=self.blocks, window=(start, end))
            cov[i, j] = cov[j, i] = out["cov"]
            key = pair_name(names[i], names[j])
            params[key], ses[key] = out["rho"], out["se"]
            den = math.sqrt(sparse[names[i]] * sparse[names[j]])
            alt[key] = out["cov"] / den if den > 0 else float("nan")
            if abs(out["rho"]) > 1:
                warn.append(f"{key} = {out['rho']:.3f} is outside [−1, 1] (HY covariances and tick variances "
                            f"are separate estimates)")
        for s in windowed:
            if s.n < MIN_TICKS_WARN:
                warn.append(f"{s.name}: only {s.n} ticks in the common window: the correlation is imprecise")
        corr = matrix_from_pairs(names, params)
        w = psd_warning(corr, "HY correlation")
        if w:
            warn.append(w)
        scans = ()
        if self.lead_lag:
            scans = tuple(lead_lag(series[i], series[j], lags_s=self.lags_s, max_lag_s=self.max_lag_s,
                                   step_s=self.lag_step_s, band=self.band, alpha=self.alpha,
                                   n_shifts=self.n_shifts, seed=self.seed, window=(start, end))
                          for i, j in pairs_of(names))
        for ll in scans:
            if ll.significant and ll.best_lag_s != 0 and abs(ll.best_rho) > 1.5 * abs(ll.rho_at_zero):
                warn.append(f"{pair_name(ll.x, ll.y)}: the co-movement is lagged ({ll.verdict()}): the lag-0 HY "
                            f"correlation counts only overlapping intervals and misses most of it at this tick "
                            f"density; the Epps curve's plateau (or the lead–lag peak) is the better reading")
        curves = ()
        if self.epps:
            intervals = (list(map(float, self.epps_intervals)) if self.epps_intervals is not None
                         else default_epps_intervals((end - start) / NS_PER_S, finest_spacing_s(windowed)))
            curves = tuple(epps_curve(series[i], series[j], intervals, window=(start, end),
                                      hy=params[pair_name(names[i], names[j])]) for i, j in pairs_of(names))
        settings = {**self.get_params(), "lags_s": None if self.lags_s is None else list(self.lags_s),
                    "epps_intervals": None if self.epps_intervals is None else list(self.epps_intervals)}
        report = OptimizerReport.closed_form(
            "Hayashi–Yoshida sums over overlapping intervals (no optimizer)",
            seconds=round(time.perf_counter() - t0, 4), se="block delta method, Newey–West over "
            f"{self.blocks} blocks")
        return CorrelationResult(
            model=self.name, names=names, correlation=corr, covariance=cov, params=params, std_errors=ses,
            report=report, warnings=tuple(dict.fromkeys(warn)), window_ns=(start, end),
            series=tuple(s.info() for s in series), settings=settings, lead_lag=scans, epps=curves,
            n_obs={s.name: s.n for s in windowed},
            extras={"rho_sparse_denominator": alt, "noise_ratio": noise})

    def fix(self, params: Mapping[str, float], data) -> CorrelationResult:
        """Hand-set correlations (`rho[A|B]` for every pair) on these series: the covariance is
        ρ·√(RV_A RV_B) with the series' own tick variances over the common window."""
        return fixed_result(self.name, params, self._series(data), self.get_params())


def fixed_result(model: str, params: Mapping[str, float], series: list[TickSeries], settings: Mapping
                 ) -> CorrelationResult:
    start, end = common_window(series)
    names = tuple(s.name for s in series)
    need = [pair_name(names[i], names[j]) for i, j in pairs_of(names)]
    missing = [n for n in need if n not in params]
    unknown = [n for n in params if n not in need]
    if missing or unknown:
        raise ValueError(f"hand-set correlations need exactly {need}"
                         + (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else ""))
    bad = [n for n in need if not -1 <= float(params[n]) <= 1]
    if bad:
        raise ValueError(f"correlations must be in [−1, 1]: {bad}")
    rv = np.array([realized_variance(s.window(start, end)) for s in series])
    corr = matrix_from_pairs(names, {n: float(params[n]) for n in need})
    cov = corr * np.sqrt(np.outer(rv, rv))
    warn = [w for w in (psd_warning(corr, "hand-set correlation"),) if w]
    return CorrelationResult(
        model=model, names=names, correlation=corr, covariance=cov, params={n: float(params[n]) for n in need},
        std_errors={n: float("nan") for n in need}, report=OptimizerReport.fixed(**dict(settings)),
        warnings=tuple(warn), window_ns=(start, end), series=tuple(s.info() for s in series),
        settings=dict(settings), n_obs={s.name: s.window(start, end).n for s in series})
