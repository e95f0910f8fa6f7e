"""The book-aware cost of a child-order schedule, calibrated on one venue's order flow.

A parent order of side s is cut into child market orders q_k sent at t_k after arrival. Its
expected cost against the arrival mid (bps, positive = paid) is the size-weighted mean of

    cost_k = walk_k + transient_k + drift_k
    walk_k      = the arrival book walked with q_k (`execal.models.data.book.walk_each`): the half
                  spread plus the levels beyond the touch (reported apart: half_spread + depth);
                  every child meets the arrival book again, i.e. the book is assumed refilled
                  between children (the measured depth half-lives are below a second, see
                  `resilience.py`), and a child larger than the visible depth has no prediction;
    transient_k = Σ_{j<k} Ĝ(ℓ_jk)·w_j: the propagator kernel (`propagator.py`) at the trade-time
                  lag ℓ_jk = round(μ̂·(t_k − t_j)), μ̂ the venue's orders per second, w_j =
                  (q_j/v̄)^ψ/mean the child's weight among the venue's orders (ψ by profile: the
                  exponent whose kernel predicts the returns best); Ĝ beyond its last lag L is the
                  power-law fit (held at Ĝ(L) when the fit does not decay);
    drift_k     = s·β̂_pred·OFI_now·min(t_k/h, 1): the mid move the order-flow imbalance of the
                  last h seconds before arrival predicts for the next h (`ofi.py`'s predictive
                  regression with overlapping windows), spread over the window.

`fit(data)` calibrates ψ, Ĝ, μ̂, v̄ and β̂_pred on a VenueData; `fix(params, data)` builds the same
model from hand-set parameters (a power-law kernel); `result.predict_parents(data, parents,
children)` prices schedules against the book and the order flow of `data` at each arrival.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from execal.models.core.errors import CalibrationError
from execal.models.core.params import BPS, Param
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.data.book import walk_each
from execal.models.orderflow.data import TradeTape, VenueData, trade_tape
from execal.models.orderflow.ofi import OFIRegression, ofi_contributions
from execal.models.orderflow.propagator import (Propagator, differential_response, propagate,
                                                 sign_correlation, solve_kernel, volume_weights)
from execal.models.orderflow.result import OrderFlowResult, data_info, window_label
from execal.models.orderflow.spec import OrderFlowModel

PSI_GRID = tuple(np.round(np.arange(0.0, 1.01, 0.1), 2))


def profile_volume_exponent(tape: TradeTape, max_lag: int, grid=PSI_GRID) -> tuple[float, np.ndarray]:
    """ψ whose TIM1 kernel (Toeplitz on x = ε·w_ψ) predicts the one-order returns best (in-sample
    R² of r̂_n = Σ_k g(k)·x_{n−k}); returns (ψ, R² per grid value)."""
    r = np.diff(tape.mid_bps)
    sst = float(((r - r.mean()) ** 2).sum())
    r2 = np.full(len(grid), np.nan)
    for i, psi in enumerate(grid):
        x = tape.sign * volume_weights(tape.qty, psi)
        try:
            g, _ = solve_kernel(sign_correlation(x, max_lag), differential_response(x, tape.mid_bps, max_lag))
        except (np.linalg.LinAlgError, ValueError):
            continue
        pred = propagate(x, np.concatenate([[0.0], g]))[1:][:r.size]    # r̂_n = Σ_{k<L} g(k)·x_{n−k}
        resid = r - pred
        r2[i] = 1.0 - float(resid @ resid) / sst if sst > 0 else np.nan
    if np.all(np.isnan(r2)):
        return 0.0, r2
    return float(grid[int(np.nanargmax(r2))]), r2


def kernel_at(G: np.ndarray, lags, g1: float, beta: float) -> np.ndarray:
    """Ĝ(ℓ) for ℓ ≥ 1: the estimated kernel up to its last lag, the power law beyond it (held at
    Ĝ(L) when the power law does not decay or is missing)."""
    lags = np.maximum(np.asarray(lags, dtype=np.int64), 1)
    L = G.size - 1
    inside = np.clip(lags, 0, L)
    out = G[inside].astype(np.float64)
    far = lags > L
    if far.any():
        if math.isfinite(beta) and beta > 0 and math.isfinite(g1):
            # continue from Ĝ(L) with the fitted decay: Ĝ(L)·(ℓ/L)^(−β)
            out[far] = G[L] * (lags[far] / L) ** (-beta)
        else:
            out[far] = G[L]
    return out


class BookCostResult(OrderFlowResult):
    """A calibrated (or hand-set) book-aware cost model; `predict_parents` prices schedules."""

    def kernel(self, lags) -> np.ndarray:
        return kernel_at(np.asarray(self.curves["G"]), lags, self.params["kernel_g1_bps"],
                         self.params["kernel_beta"])

    def child_weights(self, qty) -> np.ndarray:
        psi = self.params["volume_exponent"]
        if psi == 0:
            return np.ones_like(np.asarray(qty, dtype=np.float64))
        return (np.asarray(qty, dtype=np.float64) / self.metrics["median_order_qty"]) ** psi \
            / self.metrics["weight_norm"]

    def predict_parents(self, data: VenueData, parents: pd.DataFrame, children: pd.DataFrame) -> pd.DataFrame:
        """Predicted cost (bps) of each parent and its parts. `parents`: order_id, arrival_ns, side;
        `children`: order_id, offset_s (s after arrival), qty (base units). The book and the OFI are
        those of `data` at each arrival (state in force at the arrival time)."""
        ev = data.events
        par = parents.reset_index(drop=True)
        pos = pd.Series(np.arange(len(par)), index=par["order_id"].astype(str))
        ch = children.copy()
        ch["order_id"] = ch["order_id"].astype(str)
        ch = ch.sort_values(["order_id", "offset_s"], kind="stable")
        p = pos.reindex(ch["order_id"]).to_numpy()
        if np.isnan(p.astype(np.float64)).any():
            raise CalibrationError("children name parents that are not in `parents`")
        p = p.astype(np.int64)
        arrival = par["arrival_ns"].to_numpy(dtype=np.int64)
        side = np.sign(par["side"].to_numpy(dtype=np.float64))
        j0 = ev.asof(arrival)
        if (j0 < 0).any():
            raise CalibrationError("a parent arrives before the first book state of the data")
        mid0 = ev.mid[j0]
        s = side[p]
        q = ch["qty"].to_numpy(dtype=np.float64)
        px = np.where(s[:, None] > 0, ev.ask_px[j0[p]], ev.bid_px[j0[p]])
        sz = np.where(s[:, None] > 0, ev.ask_sz[j0[p]], ev.bid_sz[j0[p]])
        walk = walk_each(px, sz, q, mid0[p], s)
        half_spread = (ev.ask_px[j0, 0] - ev.bid_px[j0, 0]) / 2.0 / mid0 * BPS
        # transient impact of the parent's earlier children
        offset = ch["offset_s"].to_numpy(dtype=np.float64)
        w = self.child_weights(q)
        rate = self.params["orders_per_s"]
        order_in_parent = ch.groupby("order_id", sort=False).cumcount().to_numpy()
        transient = np.zeros(len(ch))
        for lag in range(1, int(order_in_parent.max()) + 1 if len(ch) else 1):
            later = np.flatnonzero(order_in_parent >= lag)
            earlier = later - lag
            ell = np.rint(rate * (offset[later] - offset[earlier]))
            transient[later] += self.kernel(ell) * w[earlier]
        # drift from the order-flow imbalance of the last h seconds
        h = float(self.settings["drift_window_s"])
        e = ofi_contributions(ev.bid_px[:, :1], ev.bid_sz[:, :1], ev.ask_px[:, :1], ev.ask_sz[:, :1])[:, 0]
        cum = np.concatenate([[0.0], np.cumsum(e)])
        hi = np.searchsorted(ev.t_ns, arrival, side="right")
        lo = np.searchsorted(ev.t_ns, arrival - int(h * 1e9), side="right")
        ofi_now = cum[hi] - cum[lo]
        drift = s * self.params["drift_bps_per_unit"] * ofi_now[p] * np.minimum(offset / h, 1.0)
        child_cost = walk + transient + drift
        frame = pd.DataFrame({"p": p, "q": q, "walk": walk * q, "transient": transient * q,
                              "drift": drift * q, "total": child_cost * q,
                              "beyond": np.isnan(walk)})
        g = frame.groupby("p", sort=True)
        sums = g[["q", "walk", "transient", "drift", "total"]].sum(min_count=1)
        beyond = g["beyond"].any()
        out = pd.DataFrame({"order_id": par["order_id"].astype(str)})
        Q = sums["q"].reindex(range(len(par))).to_numpy()
        for col in ("walk", "transient", "drift", "total"):
            out[f"{col}_bps"] = sums[col].reindex(range(len(par))).to_numpy() / Q
        out["half_spread_bps"] = half_spread
        out["depth_bps"] = out["walk_bps"] - half_spread
        out["ofi_now"] = ofi_now
        unknown = beyond.reindex(range(len(par))).fillna(True).to_numpy()
        out.loc[unknown, ["walk_bps", "depth_bps", "total_bps"]] = np.nan
        out.attrs["beyond_depth"] = int(beyond.sum())
        return out.rename(columns={"total_bps": "predicted_cost_bps"})


class BookAwareCost(Estimator):
    """Calibrates the book-aware schedule cost on one venue (see the module docstring).

    levels: book levels walked; max_lag: kernel length; drift_window_s: h of the OFI drift;
    drift_step_s: step of the overlapping windows of the predictive regression; aggregate:
    merge the prints of one taker order; volume_exponent: None to profile ψ, or a value."""

    name = "book_cost"
    label = "Book-aware schedule cost"

    def __init__(self, max_lag: int = 200, drift_window_s: float = 10.0, drift_step_s: float = 1.0,
                 aggregate: bool = True, volume_exponent: float | None = None, n_boot: int = 0, seed: int = 0):
        self.max_lag = int(max_lag)
        self.drift_window_s = float(drift_window_s)
        self.drift_step_s = float(drift_step_s)
        self.aggregate = bool(aggregate)
        self.volume_exponent = volume_exponent
        self.n_boot = int(n_boot)
        self.seed = int(seed)

    def fit(self, data: VenueData) -> BookCostResult:
        warnings = list(data.warnings)
        tape = trade_tape(data, aggregate=self.aggregate)
        ok = np.isfinite(tape.mid_bps)
        tape = TradeTape(tape.t_ns[ok], tape.sign[ok], tape.qty[ok], tape.mid_bps[ok])
        L = min(self.max_lag, max(len(tape) // 10, 2))
        if self.volume_exponent is None:
            psi, psi_r2 = profile_volume_exponent(tape, L)
        else:
            psi, psi_r2 = float(self.volume_exponent), np.full(len(PSI_GRID), np.nan)
        prop = Propagator(max_lag=L, aggregate=self.aggregate, volume_exponent=psi, n_boot=self.n_boot,
                          seed=self.seed).fit(tape)
        warnings += [f"propagator: {w}" for w in prop.warnings]
        h = self.drift_window_s
        lab = window_label(h)
        ofi = OFIRegression(windows_s=(h,), levels=1, step_s=self.drift_step_s).fit(data)
        warnings += [f"drift: {w}" for w in ofi.warnings if not w.startswith("β vs depth")]
        span_s = (tape.t_ns[-1] - tape.t_ns[0]) / 1e9 if len(tape) > 1 else math.nan
        median_q = float(np.median(tape.qty))
        norm = float(((tape.qty / median_q) ** psi).mean()) if psi else 1.0
        params = {"volume_exponent": psi, "kernel_g1_bps": prop.params["kernel_g1_bps"],
                  "kernel_beta": prop.params["kernel_beta"], "orders_per_s": len(tape) / span_s,
                  "drift_bps_per_unit": ofi.params[f"beta_pred_{lab}"]}
        se = {"volume_exponent": math.nan, "kernel_g1_bps": prop.std_errors["kernel_g1_bps"],
              "kernel_beta": prop.std_errors["kernel_beta"], "orders_per_s": math.nan,
              "drift_bps_per_unit": ofi.std_errors[f"beta_pred_{lab}"]}
        ok = prop.converged and ofi.converged
        report = OptimizerReport(
            method="closed_form", loss="none", status=None, success=ok, converged=ok,
            message=f"ψ by profile over {list(PSI_GRID)}; kernel: {prop.report.message}; drift: "
                    f"{ofi.report.message}",
            settings={"max_lag": L, "drift_window_s": h, "drift_step_s": self.drift_step_s})
        return BookCostResult(name=self.name, label=self.label, venue=data.venue, symbol=data.symbol,
                              params=params, std_errors=se, report=report, warnings=tuple(warnings),
                              metrics={"median_order_qty": median_q, "weight_norm": norm, "orders": len(tape),
                                       "drift_r2": ofi.metrics[f"r2_pred_{lab}"], "kernel_lags": L},
                              curves={"G": prop.curves["G"], "psi_grid": np.asarray(PSI_GRID), "psi_r2": psi_r2},
                              settings=self.get_params(), data_info=data_info(data))

    def fix(self, params, data: VenueData | None = None) -> BookCostResult:
        """The model from hand-set parameters: kernel_g1_bps, kernel_beta (a power-law kernel on
        max_lag lags), volume_exponent, orders_per_s, drift_bps_per_unit, and, for ψ ≠ 0,
        median_order_qty and weight_norm (else 1)."""
        need = ("kernel_g1_bps", "kernel_beta", "orders_per_s", "drift_bps_per_unit")
        missing = [k for k in need if k not in params]
        if missing:
            raise CalibrationError(f"fix needs {', '.join(missing)}")
        g1, beta = float(params["kernel_g1_bps"]), float(params["kernel_beta"])
        lags = np.arange(self.max_lag + 1, dtype=np.float64)
        G = np.concatenate([[0.0], g1 * lags[1:] ** (-beta)])
        fixed = {"volume_exponent": float(params.get("volume_exponent", 0.0)), "kernel_g1_bps": g1,
                 "kernel_beta": beta, "orders_per_s": float(params["orders_per_s"]),
                 "drift_bps_per_unit": float(params["drift_bps_per_unit"])}
        return BookCostResult(name=self.name, label=self.label, venue=getattr(data, "venue", ""),
                              symbol=getattr(data, "symbol", ""), params=fixed,
                              std_errors={k: math.nan for k in fixed}, report=OptimizerReport.fixed(**fixed),
                              metrics={"median_order_qty": float(params.get("median_order_qty", 1.0)),
                                       "weight_norm": float(params.get("weight_norm", 1.0))},
                              curves={"G": G}, settings=self.get_params(),
                              data_info=data_info(data) if data is not None else {})


BOOK_COST_MODEL = OrderFlowModel(
    name="book_cost", label="Book-aware schedule cost",
    formula=("cost = Σ_k q_k·[walk_k(arrival book) + Σ_{j<k} G(μ·Δt_jk)·w_j"
             " + s·β_pred·OFI_h·min(t_k/h, 1)] / Q"),
    params=(Param("kernel_g1_bps", 0.5, 0.0, 1e4, "bps", "propagator kernel at lag 1"),
            Param("kernel_beta", 0.3, -2.0, 2.0, "", "kernel decay exponent"),
            Param("volume_exponent", 0.5, 0.0, 1.0, "", "ψ: an order of size v counts (v/v̄)^ψ"),
            Param("orders_per_s", 5.0, 0.0, 1e5, "1/s", "taker orders per second (trade time)"),
            Param("drift_bps_per_unit", 0.0, -1e6, 1e6, "bps per base unit", "predicted move per unit of OFI")),
    reference="Bouchaud et al. 2004; Cont, Kukanov & Stoikov 2014; Obizhaeva & Wang 2013",
    estimator_path="execal.models.orderflow.cost:BookAwareCost",
    options={"max_lag": 200, "drift_window_s": 10.0})
