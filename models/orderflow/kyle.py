"""Kyle's lambda and Amihud illiquidity per venue: how far the mid moves per unit of signed volume.

Over the same windows as the OFI regression (exchange time, half-open, the mid in force before
each edge): Δmid_bps = α + λ·V_signed + ε with V_signed = Σ side·qty of the trades inside (base
units; +1 buyer-initiated), Newey–West HAC standard errors (consecutive windows), and Amihud's
ILLIQ = mean over windows that traded of |Δmid_bps| / (traded notional / 1e6): bps per million of
quote currency, its standard error HAC of the mean (Kyle 1985; Amihud 2002; Hasbrouck 2009).
"""
from __future__ import annotations

import math

import numpy as np

from execal.models.core.errors import CalibrationError
from execal.models.core.params import Param
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator
from execal.models.orderflow.data import VenueData
from execal.models.orderflow.ofi import WINDOWS_S, window_series
from execal.models.orderflow.result import OrderFlowResult, data_info, window_label
from execal.models.orderflow.spec import OrderFlowModel
from execal.models.orderflow.stats import MIN_OBS, hac_mean, ols_hac

NOTIONAL_UNIT = 1e6


def window_flow(trades, start_ns: np.ndarray, window_ns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signed volume, traded notional, number of prints) of the trades in each window."""
    t = trades.t_ns
    i0 = np.searchsorted(t, start_ns, side="left")
    i1 = np.searchsorted(t, start_ns + window_ns, side="left")
    signed = np.concatenate([[0.0], np.cumsum(trades.side * trades.qty)])
    notional = np.concatenate([[0.0], np.cumsum(trades.price * trades.qty)])
    return signed[i1] - signed[i0], notional[i1] - notional[i0], i1 - i0


class KyleLambda(Estimator):
    """λ (bps per base unit of signed volume) and Amihud illiquidity per window."""

    name = "kyle"
    label = "Kyle's lambda & Amihud"

    def __init__(self, windows_s=WINDOWS_S, step_s: float | None = None, hac_lags: int | None = None):
        self.windows_s = tuple(float(w) for w in windows_s)
        self.step_s = step_s
        self.hac_lags = hac_lags

    def _rows(self, data: VenueData, w_s: float):
        if len(data.trades) == 0:
            raise CalibrationError(f"{data.label}: no trades: Kyle's lambda needs signed volume")
        s = window_series(data.events, w_s, step_s=self.step_s, levels=1)
        sv, notional, n_tr = window_flow(data.trades, s.start_ns, int(round(w_s * 1e9)))
        return s, sv, notional, n_tr

    def fit(self, data: VenueData) -> OrderFlowResult:
        if not self.windows_s or min(self.windows_s) <= 0:
            raise CalibrationError(f"windows must be positive seconds, got {self.windows_s}")
        params, se, metrics, curves, warnings, failed = {}, {}, {}, {}, list(data.warnings), []
        for w_s in self.windows_s:
            lab = window_label(w_s)
            s, sv, notional, n_tr = self._rows(data, w_s)
            stride = max(int(round(w_s / (self.step_s or w_s))), 1)
            fit = ols_hac(s.dmid_bps, sv, lags=self.hac_lags, min_lags=stride - 1)
            traded = notional > 0
            with np.errstate(invalid="ignore", divide="ignore"):
                illiq = np.abs(s.dmid_bps[traded]) / (notional[traded] / NOTIONAL_UNIT)
            a_mean, a_se, a_n = hac_mean(illiq, lags=self.hac_lags)
            params[f"lambda_{lab}"], se[f"lambda_{lab}"] = fit.coef[1], fit.se[1]
            params[f"amihud_{lab}"], se[f"amihud_{lab}"] = a_mean, a_se
            metrics.update({f"r2_{lab}": fit.r2, f"n_{lab}": fit.n, f"traded_windows_{lab}": a_n,
                            f"alpha_bps_{lab}": fit.coef[0]})
            curves.update({f"start_ns_{lab}": s.start_ns, f"signed_volume_{lab}": sv,
                           f"dmid_bps_{lab}": s.dmid_bps, f"notional_{lab}": notional})
            if not math.isfinite(fit.coef[1]):
                failed.append(lab)
                warnings.append(f"{lab}: too few windows ({fit.n}) for Kyle's lambda")
            elif fit.n < MIN_OBS:
                warnings.append(f"{lab}: only {fit.n} windows: λ is rough")
        metrics["prints"] = len(data.trades)
        report = OptimizerReport(
            method="closed_form", loss="none", status=None, success=not failed, converged=not failed,
            message=("ordinary least squares; Newey–West HAC standard errors; Amihud: HAC mean"
                     if not failed else f"no estimate for window(s) {', '.join(failed)}"),
            settings={"step_s": self.step_s, "hac_lags": self.hac_lags or "newey-west",
                      "amihud_unit": "bps per 1e6 quote currency"})
        return OrderFlowResult(name=self.name, label=self.label, venue=data.venue, symbol=data.symbol,
                               params=params, std_errors=se, report=report, warnings=tuple(warnings),
                               metrics=metrics, curves=curves, settings=self.get_params(),
                               data_info=data_info(data))

    def fix(self, params, data: VenueData) -> OrderFlowResult:
        """R² of hand-set λ's on `data`'s windows (intercept = the mean residual)."""
        fixed, metrics = {}, {}
        for w_s in self.windows_s:
            lab = window_label(w_s)
            s, sv, _, _ = self._rows(data, w_s)
            lam = float(params.get(f"lambda_{lab}", math.nan))
            fixed[f"lambda_{lab}"] = lam
            ok = np.isfinite(sv) & np.isfinite(s.dmid_bps)
            y = s.dmid_bps[ok]
            r = y - lam * sv[ok]
            r = r - r.mean() if r.size else r
            tot = float(((y - y.mean()) ** 2).sum()) if y.size else math.nan
            metrics[f"r2_{lab}"] = 1.0 - float(r @ r) / tot if tot and tot > 0 else math.nan
        return OrderFlowResult(name=self.name, label=self.label, venue=data.venue, symbol=data.symbol,
                               params=fixed, std_errors={k: math.nan for k in fixed},
                               report=OptimizerReport.fixed(**fixed), metrics=metrics,
                               settings=self.get_params(), data_info=data_info(data))


KYLE_MODEL = OrderFlowModel(
    name="kyle", label="Kyle's lambda & Amihud illiquidity",
    formula="Δmid_bps = α + λ·Σ side·qty per window; ILLIQ = mean |Δmid_bps| / (notional/1e6)",
    params=(Param("lambda_10s", 1.0, -1e9, 1e9, "bps per base unit", "mid move per unit of signed "
                  "volume over 10 s windows (one per window)"),
            Param("amihud_10s", 1.0, 0, 1e9, "bps per 1e6 quote", "Amihud illiquidity over 10 s windows")),
    reference="Kyle 1985; Amihud 2002; Hasbrouck 2009",
    estimator_path="execal.models.orderflow.kyle:KyleLambda",
    options={"windows_s": WINDOWS_S})
