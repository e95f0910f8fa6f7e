"""Order-flow imbalance (Cont, Kukanov & Stoikov 2014) and how it moves the mid, per venue.

Between two consecutive book states n−1 and n the best-level contribution is

    e_n = q^b_n·1{p^b_n ≥ p^b_{n−1}} − q^b_{n−1}·1{p^b_n ≤ p^b_{n−1}}
        − q^a_n·1{p^a_n ≤ p^a_{n−1}} + q^a_{n−1}·1{p^a_n ≥ p^a_{n−1}}

(limit orders and cancellations at the best, and market orders, in one number: positive = buying
pressure). The same formula on the m-th best level of each side is the multi-level OFI (Xu, Gould
& Howison 2018); the integrated OFI (Cont, Cucuringu & Zhang 2023) projects the multi-level OFI,
each window's divided by its average depth over the L levels, on its first principal component.

Over windows of `windows_s` (1 s, 10 s, 60 s by default; exchange time, half-open [start, end), the
events inside a window sum, the mid is the one in force before `start` and before `end`) the model
regresses Δmid (bps of log-mid) on OFI (base units):  Δmid = α + β·OFI + ε, and reports β, R², the
multi-level and integrated R², and the predictive coefficient of the NEXT window's Δmid on this
window's OFI (what a cost forecast can use). CKS's β ∝ 1/depth: the capture is cut into intervals
of `depth_interval_s`; β_j from the shortest window inside interval j and the average best-level
depth AD_j (event average of (q^b + q^a)/2) give log β_j = log c − λ·log AD_j (the paper: λ ≈ 1).

Everything is vectorised: contributions are differences of (n, L) arrays, window sums are
differences of one cumulative sum at `searchsorted` window edges (overlapping windows cost the
same), per-interval slopes are `bincount` moments. Standard errors are Newey–West HAC (rows are
consecutive windows of one market; see `stats.py`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from execal.models.core.errors import CalibrationError
from execal.models.core.params import BPS, Param
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.data.book import BookEvents
from execal.models.orderflow.data import VenueData
from execal.models.orderflow.result import OrderFlowResult, data_info, window_label
from execal.models.orderflow.spec import OrderFlowModel
from execal.models.orderflow.stats import MIN_OBS, ols_hac

WINDOWS_S = (1.0, 10.0, 60.0)
MIN_INTERVALS = 4


def ofi_contributions(bid_px, bid_sz, ask_px, ask_sz) -> np.ndarray:
    """e_n per level: (n, L) arrays of book states in, (n, L) contributions out (row 0 is 0).

    Level m compares the m-th best price of each side between consecutive states; a missing level
    (NaN price) contributes nothing, a NaN size counts as 0."""
    bp = np.atleast_2d(np.asarray(bid_px, dtype=np.float64))
    ap = np.atleast_2d(np.asarray(ask_px, dtype=np.float64))
    bq = np.nan_to_num(np.atleast_2d(np.asarray(bid_sz, dtype=np.float64)))
    aq = np.nan_to_num(np.atleast_2d(np.asarray(ask_sz, dtype=np.float64)))
    if not (bp.shape == ap.shape == bq.shape == aq.shape):
        raise ValueError("bid/ask price and size arrays must have the same shape")
    e = np.zeros(bp.shape)
    if bp.shape[0] < 2:
        return e
    b1, b0, a1, a0 = bp[1:], bp[:-1], ap[1:], ap[:-1]
    out = e[1:]
    np.copyto(out, bq[1:], where=b1 >= b0)
    out -= np.where(b1 <= b0, bq[:-1], 0.0)
    out -= np.where(a1 <= a0, aq[1:], 0.0)
    out += np.where(a1 >= a0, aq[:-1], 0.0)
    return e


@dataclass(frozen=True, eq=False)
class WindowSeries:
    """Per-window aggregates: start_ns (K,), ofi (K, L) per level, dmid_bps (K,), depth_best and
    depth_levels (K,) average depths (event average; the state in force when a window is empty),
    n_events (K,)."""
    window_s: float
    step_s: float
    start_ns: np.ndarray
    ofi: np.ndarray
    dmid_bps: np.ndarray
    depth_best: np.ndarray
    depth_levels: np.ndarray
    n_events: np.ndarray

    def __len__(self) -> int:
        return len(self.start_ns)


def _grid(t_ns: np.ndarray, window_ns: int, step_ns: int) -> np.ndarray:
    """Window starts on the multiples of `step_ns` with a state before the start and the whole
    window inside the span of the events."""
    first, last = int(t_ns[0]), int(t_ns[-1])
    start0 = (first // step_ns + 1) * step_ns
    if start0 + window_ns > last + 1:
        return np.zeros(0, dtype=np.int64)
    return np.arange(start0, last + 1 - window_ns + 1, step_ns, dtype=np.int64)


def window_series(events: BookEvents, window_s: float, *, step_s: float | None = None,
                  levels: int | None = None, contributions: np.ndarray | None = None) -> WindowSeries:
    """OFI per level, Δmid (bps) and average depth over windows of `window_s` every `step_s`
    (default: the window, non-overlapping)."""
    L = events.levels if levels is None else min(int(levels), events.levels)
    if window_s <= 0:
        raise ValueError(f"window_s must be > 0, got {window_s}")
    window_ns = int(round(window_s * 1e9))
    step_ns = int(round((step_s or window_s) * 1e9))
    t = events.t_ns
    e = (ofi_contributions(events.bid_px[:, :L], events.bid_sz[:, :L], events.ask_px[:, :L],
                           events.ask_sz[:, :L]) if contributions is None else contributions[:, :L])
    starts = _grid(t, window_ns, step_ns)
    i0 = np.searchsorted(t, starts, side="left")
    i1 = np.searchsorted(t, starts + window_ns, side="left")
    cum = np.zeros((len(t) + 1, L))
    np.cumsum(e, axis=0, out=cum[1:])
    ofi = cum[i1] - cum[i0]
    with np.errstate(invalid="ignore", divide="ignore"):
        log_mid = np.log(events.mid)
    dmid = BPS * (log_mid[i1 - 1] - log_mid[i0 - 1])
    bq = np.nan_to_num(events.bid_sz[:, :L])
    aq = np.nan_to_num(events.ask_sz[:, :L])
    best = (bq[:, 0] + aq[:, 0]) / 2.0
    deep = (bq.sum(axis=1) + aq.sum(axis=1)) / (2.0 * L)
    n_ev = i1 - i0
    out = []
    for d in (best, deep):
        c = np.concatenate([[0.0], np.cumsum(d)])
        with np.errstate(invalid="ignore", divide="ignore"):
            avg = (c[i1] - c[i0]) / n_ev
        out.append(np.where(n_ev > 0, avg, d[i0 - 1]))
    return WindowSeries(float(window_s), float(step_s or window_s), starts, ofi, dmid, out[0], out[1],
                        n_ev)


def integrated_weights(ofi_norm: np.ndarray) -> np.ndarray:
    """First principal component of depth-normalised multi-level OFI, signed to sum positive and
    scaled to unit L1 norm (Cont, Cucuringu & Zhang 2023)."""
    X = ofi_norm[np.all(np.isfinite(ofi_norm), axis=1)]
    if X.shape[0] < 2 or X.shape[1] == 0:
        return np.full(ofi_norm.shape[1], np.nan)
    if X.shape[1] == 1:
        return np.ones(1)
    vals, vecs = np.linalg.eigh(np.cov(X.T))
    w = vecs[:, -1]
    if w.sum() < 0:
        w = -w
    return w / np.abs(w).sum()


def interval_betas(series: WindowSeries, interval_s: float,
                   best_depth_t: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per interval of `interval_s`: (β_j by OLS of Δmid on best OFI over the series' windows
    starting inside it, AD_j event-average best depth, number of windows). `best_depth_t` is
    (t_ns, (q^b+q^a)/2) of every event."""
    interval_ns = int(round(interval_s * 1e9))
    if len(series) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64)
    origin = int(series.start_ns[0])
    g = (series.start_ns - origin) // interval_ns
    x, y = series.ofi[:, 0], series.dmid_bps
    ok = np.isfinite(x) & np.isfinite(y)
    g, x, y = g[ok], x[ok], y[ok]
    k = int(g.max()) + 1 if g.size else 0
    n = np.bincount(g, minlength=k).astype(np.float64)
    sx, sy = np.bincount(g, x, k), np.bincount(g, y, k)
    sxx, sxy = np.bincount(g, x * x, k), np.bincount(g, x * y, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        var_x = sxx - sx * sx / n
        beta = (sxy - sx * sy / n) / var_x
    beta[(n < 3) | ~(var_x > 0)] = np.nan
    t_ev, d_ev = best_depth_t
    ge = (t_ev - origin) // interval_ns
    inside = (ge >= 0) & (ge < k)
    cnt = np.bincount(ge[inside], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.bincount(ge[inside], d_ev[inside], k) / cnt
    return beta, depth, n.astype(np.int64)


class OFIRegression(Estimator):
    """Δmid on order-flow imbalance per window, per venue (see the module docstring).

    windows_s: window lengths (s); levels: levels of the multi-level / integrated OFI;
    step_s: None for non-overlapping windows, or a step (s) for overlapping ones (HAC lags then
    at least window/step − 1); depth_interval_s: interval of the β-vs-depth fit; hac_lags: None
    for the Newey–West plug-in."""

    name = "ofi"
    label = "Order-flow imbalance"

    def __init__(self, windows_s=WINDOWS_S, levels: int = 10, step_s: float | None = None,
                 depth_interval_s: float = 30.0, hac_lags: int | None = None):
        self.windows_s = tuple(float(w) for w in windows_s)
        self.levels = int(levels)
        self.step_s = step_s
        self.depth_interval_s = float(depth_interval_s)
        self.hac_lags = hac_lags

    def _check(self, data: VenueData) -> None:
        if not self.windows_s or min(self.windows_s) <= 0:
            raise CalibrationError(f"windows must be positive seconds, got {self.windows_s}")
        if self.levels < 1:
            raise CalibrationError("levels must be >= 1")
        if len(data.events) < 3:
            raise CalibrationError(f"{data.label}: fewer than three book events")

    def _series(self, data: VenueData) -> tuple[int, np.ndarray, dict[str, WindowSeries]]:
        ev = data.events
        L = min(self.levels, ev.levels)
        e = ofi_contributions(ev.bid_px[:, :L], ev.bid_sz[:, :L], ev.ask_px[:, :L], ev.ask_sz[:, :L])
        series = {window_label(w): window_series(ev, w, step_s=self.step_s, levels=L, contributions=e)
                  for w in self.windows_s}
        return L, e, series

    def fit(self, data: VenueData) -> OrderFlowResult:
        self._check(data)
        L, e, series = self._series(data)
        params, se, metrics, curves, warnings = {}, {}, {}, {}, list(data.warnings)
        failed = []
        for w_s in self.windows_s:
            lab = window_label(w_s)
            s = series[lab]
            stride = max(int(round(w_s / (self.step_s or w_s))), 1)
            min_lags = stride - 1
            x, y = s.ofi[:, 0], s.dmid_bps
            best = ols_hac(y, x, lags=self.hac_lags, min_lags=min_lags)
            multi = ols_hac(y, s.ofi, lags=self.hac_lags, min_lags=min_lags)
            with np.errstate(invalid="ignore", divide="ignore"):
                norm = s.ofi / s.depth_levels[:, None]
            w = integrated_weights(norm)
            integ = norm @ w
            intf = ols_hac(y, integ, lags=self.hac_lags, min_lags=min_lags)
            pred = (ols_hac(y[stride:], x[:-stride], lags=self.hac_lags, min_lags=min_lags)
                    if len(y) > stride else ols_hac(np.zeros(0), np.zeros(0)))
            params[f"beta_{lab}"], se[f"beta_{lab}"] = best.coef[1], best.se[1]
            params[f"beta_int_{lab}"], se[f"beta_int_{lab}"] = intf.coef[1], intf.se[1]
            params[f"beta_pred_{lab}"], se[f"beta_pred_{lab}"] = pred.coef[1], pred.se[1]
            mean_depth = float(np.nanmean(s.depth_best)) if len(s) else math.nan
            metrics.update({f"r2_{lab}": best.r2, f"r2_multi_{lab}": multi.r2, f"r2_int_{lab}": intf.r2,
                            f"r2_pred_{lab}": pred.r2, f"n_{lab}": best.n, f"hac_lags_{lab}": best.lags,
                            f"alpha_bps_{lab}": best.coef[0],
                            f"beta_x_depth_{lab}": best.coef[1] * mean_depth,
                            f"mean_best_depth_{lab}": mean_depth})
            curves.update({f"start_ns_{lab}": s.start_ns, f"ofi_{lab}": x, f"dmid_bps_{lab}": y,
                           f"ofi_int_{lab}": integ, f"int_weights_{lab}": w,
                           f"multi_coef_{lab}": multi.coef[1:]})
            if not math.isfinite(best.coef[1]):
                failed.append(lab)
                warnings.append(f"{lab}: too few windows ({best.n}) to regress Δmid on OFI")
            elif best.n < MIN_OBS:
                warnings.append(f"{lab}: only {best.n} windows: β and R² are rough "
                                f"(fewer than {MIN_OBS} observations)")
        # β against depth (CKS: β ∝ 1/depth), from the shortest window
        shortest = series[window_label(min(self.windows_s))]
        ev = data.events
        best_depth = (np.nan_to_num(ev.bid_sz[:, 0]) + np.nan_to_num(ev.ask_sz[:, 0])) / 2.0
        b_j, ad_j, n_j = interval_betas(shortest, self.depth_interval_s, (ev.t_ns, best_depth))
        usable = np.isfinite(b_j) & (b_j > 0) & np.isfinite(ad_j) & (ad_j > 0)
        dropped = int((np.isfinite(b_j) & ~(b_j > 0)).sum())
        if dropped:
            warnings.append(f"β vs depth: {dropped} interval(s) with β ≤ 0 left out of the log–log fit")
        if usable.sum() >= 3:
            dfit = ols_hac(np.log(b_j[usable]), np.log(ad_j[usable]), lags=self.hac_lags)
            params["depth_exponent"], se["depth_exponent"] = -dfit.coef[1], dfit.se[1]
            params["depth_coef"] = float(np.exp(dfit.coef[0]))
            se["depth_coef"] = float(np.exp(dfit.coef[0]) * dfit.se[0])    # delta method
            metrics["r2_depth"] = dfit.r2
            if usable.sum() < MIN_INTERVALS:
                warnings.append(f"β vs depth: only {int(usable.sum())} intervals; the exponent is rough")
        else:
            params["depth_exponent"] = params["depth_coef"] = math.nan
            se["depth_exponent"] = se["depth_coef"] = math.nan
            metrics["r2_depth"] = math.nan
            warnings.append(f"β vs depth: fewer than 3 intervals of {self.depth_interval_s:g} s with "
                            "a positive β: no power-law fit")
        metrics["intervals"] = int(usable.sum())
        curves.update(interval_beta=b_j, interval_depth=ad_j, interval_windows=n_j)
        metrics["events"] = len(data.events)
        report = OptimizerReport(
            method="closed_form", loss="none", status=None,
            message=("ordinary least squares; Newey–West HAC standard errors" if not failed else
                     f"no estimate for window(s) {', '.join(failed)}: too few windows"),
            success=not failed, converged=not failed,
            settings={"levels": L, "step_s": self.step_s, "hac_lags": self.hac_lags or "newey-west"})
        return OrderFlowResult(name=self.name, label=self.label, venue=data.venue, symbol=data.symbol,
                               params=params, std_errors=se, report=report, warnings=tuple(warnings),
                               metrics=metrics, curves=curves, settings=self.get_params(),
                               data_info=data_info(data))

    def fix(self, params, data: VenueData) -> OrderFlowResult:
        """R² of hand-set β's (best level; intercept = the mean residual) on `data`'s windows."""
        self._check(data)
        L, e, series = self._series(data)
        metrics, curves, fixed = {}, {}, {}
        for w_s in self.windows_s:
            lab = window_label(w_s)
            s = series[lab]
            beta = float(params.get(f"beta_{lab}", math.nan))
            fixed[f"beta_{lab}"] = beta
            x, y = s.ofi[:, 0], s.dmid_bps
            ok = np.isfinite(x) & np.isfinite(y)
            r = y[ok] - beta * x[ok]
            r = r - r.mean() if r.size else r
            tot = float(((y[ok] - y[ok].mean()) ** 2).sum()) if ok.any() else math.nan
            metrics[f"r2_{lab}"] = 1.0 - float(r @ r) / tot if tot and tot > 0 else math.nan
            metrics[f"n_{lab}"] = int(ok.sum())
            curves.update({f"start_ns_{lab}": s.start_ns, f"ofi_{lab}": x, f"dmid_bps_{lab}": y})
        return OrderFlowResult(name=self.name, label=self.label, venue=data.venue, symbol=data.symbol,
                               params=fixed, std_errors={k: math.nan for k in fixed},
                               report=OptimizerReport.fixed(**fixed), metrics=metrics, curves=curves,
                               settings=self.get_params(), data_info=data_info(data))


OFI_MODEL = OrderFlowModel(
    name="ofi", label="Order-flow imbalance (CKS 2014)",
    formula="Δmid_bps = α + β·OFI over each window; β = c·AD^(−λ) across intervals",
    params=(Param("beta_10s", 1.0, -1e9, 1e9, "bps per base unit", "price impact of one unit of OFI "
                  "over 10 s windows (one such parameter per window)"),
            Param("depth_exponent", 1.0, -10, 10, "", "λ in β ∝ depth^−λ (CKS: ≈ 1)")),
    reference="Cont, Kukanov & Stoikov 2014; Xu, Gould & Howison 2018; Cont, Cucuringu & Zhang 2023",
    estimator_path="execal.models.orderflow.ofi:OFIRegression",
    options={"windows_s": WINDOWS_S, "levels": 10, "depth_interval_s": 30.0})
