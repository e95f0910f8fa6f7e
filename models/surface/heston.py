"""Stochastic-volatility and jump models calibrated to an option chain: Heston (1993) and Bates (1996).

The room where a prepared chain (`execal.models.surface.options.Chain`: one underlying at one
snapshot, a forward per expiry, one out-of-the-money quote per strike) becomes the parameters of a
pricing model, with the same house shape as the SVI fits: registered specs (`HESTON`, `BATES`), an
estimator holding the settings (`StochasticVolCalibrator`: `get_params`, `fit(chain)`,
`fix(params, chain)`) and an immutable result (`StochasticVolResult`) with the parameters, their
standard errors, the optimizer's own report, the Feller condition, per-quote and per-expiry errors,
figure-ready frames, `summary()`, `to_dict()` and `to_config()`. Prices come from
`execal.models.surface.fourier` (characteristic function, Lewis formula, analytic gradient).

The objective: ½·Σ r_i² over the chain's quotes, with r_i by `target` and `weights`:

| target | weights   | r_i                                                           | unit               |
|--------|-----------|---------------------------------------------------------------|--------------------|
| price  | uniform   | 1e4·(P_model − P_mid)/F                                        | bps of the forward |
| price  | vega      | 100·(P_model − P_mid)/vega_mid (vega ≥ 1e-6 of the slice's largest)  | ≈ vol points       |
| price  | spread    | (P_model − P_mid)/(P_ask − P_bid)                              | bid–ask spreads    |
| vol    | uniform   | 100·(σ_model − σ_mid)                                           | vol points         |
| vol    | vega      | 100·sqrt(u)·(σ_model − σ_mid), u = vega / slice's max vega (*)    | vol points         |
| vol    | spread    | 100·sqrt(u)·(σ_model − σ_mid), u = 1/(σ_ask − σ_bid) (*)          | vol points         |

(*) normalised to mean 1 per expiry, as the SVI fits weight their quotes.

P are out-of-the-money undiscounted prices divided by the forward (for a coin-margined, inverse
option that is its coin price; for a USD option its price in units of the forward), P_mid the
Black-76 price of the mid implied vol (the chain's mid IV averages the bid and ask IVs, so "price"
and "vol" fit the same market quantity), P_bid/P_ask those of the bid/ask IVs. Quotes without a
two-sided IV take their slice's median spread weight. In the vol target a quote whose model price
has no implied vol (a wing priced at 1e-17) falls back to the linearised residual (price − mid)/vega.

Optimizer: Levenberg–Marquardt (MINPACK through `scipy.optimize.least_squares(method="lm")`) with
the analytic Jacobian (the price gradient from the characteristic function; in the vol target
divided by the model's Black vega). The parameters live in bounded coordinates p = lo + (hi −
lo)·s(z) (in log space for the positive ones; s the logistic function), so the unbounded LM stays
inside the bounds of `HESTON.params` / `BATES.params`. The logistic coordinate flattens near a
bound, where LM stops short of it; a solution within 1e-2 (in s) of a bound is finished by a
bounded trust-region-reflective polish in natural coordinates (same Jacobian), and a parameter
that ends within 1e-6 (in s) of a bound is reported in `report.active_bounds` with a warning.
Multistart: the data-driven start
(ATM variance of the shortest and longest expiries, short-dated ATM skew ≈ rho·sigma/(4·sqrt(v0)))
or the caller's `start`, plus `starts` Sobol points in a plausible box, are scored by one objective
evaluation each; LM runs from the best `polish` of them and the lowest cost wins (every stage is in
`report.starts`). Bates without a `start` begins from the Heston fit of the same chain plus candidate
jump parameters.

Standard errors: a sandwich (JᵀJ)⁻¹·Ω·(JᵀJ)⁻¹·n/(n − p) with Ω a Newey–West (Bartlett) sum of the
scores J_i·r_i along the strikes of each expiry (lags floor(4·(n_e/100)^(2/9))), added over expiries:
residuals of neighbouring strikes are correlated (a smile the model cannot bend the same way), so
independence is not assumed. A singular or badly conditioned JᵀJ gives NaN standard errors and a
warning. The Feller ratio 2·kappa·theta/sigma² is reported; below 1 the variance can touch zero
(prices stay valid; simulation schemes need care) and the result carries a warning.

`fit_snapshots` fits one result per (underlying, snapshot) of a dataset.
"""
from __future__ import annotations

import datetime as _dt
import math
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.stats import qmc

from execal.models.core import __version__
from execal.models.core.errors import CalibrationError
from execal.models.core.jsonable import clean, num
from execal.models.core.params import Param
from execal.models.core.report import OptimizerReport
from execal.models.core.result import Estimator, ResultMixin, params_table, report_line
from execal.models.data.schema import DataError
from execal.models.surface import fourier
from execal.models.surface.iv import OK as IV_OK, black76, black76_vega, implied_vol
from execal.models.surface.options import Chain, chain_from_vols, prepare_chain

VOL_PTS = 100.0
TARGETS = ("price", "vol")
WEIGHTS = ("uniform", "vega", "spread")
WEIGHT_DESCRIPTIONS = {
    "uniform": "price target: price errors in bps of the forward; vol target: vol errors, every quote alike",
    "vega": "price target: price error / vega, its vol-point equivalent (the usual Heston weighting); "
            "vol target: vol errors weighted by vega relative to the slice's largest (as SVI)",
    "spread": "price target: price error in bid-ask spreads; vol target: vol errors weighted by "
              "1/(ask IV - bid IV) (as SVI); one-sided quotes get the slice's median weight",
}
TARGET_DESCRIPTIONS = {
    "price": "out-of-the-money prices / forward (the coin price of an inverse option)",
    "vol": "Black-76 implied vols of the model prices (one implied-vol inversion per quote and evaluation)",
}
FELLER_NOTE = ("Feller condition 2*kappa*theta >= sigma^2 violated: the variance process can reach zero "
               "(prices from the characteristic function stay valid; simulation schemes need care)")
_AT_BOUND = 1e-6                 # in the logistic coordinate s: at a bound
_NEAR_BOUND = 1e-2               # in s: LM's step has flattened; a bounded polish finishes the fit
_VEGA_FLOOR = 1e-6               # relative to the slice's largest vega
_CONDITION_MAX = 1e12


# --- specs ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PricingModel:
    """A stochastic-volatility pricing model: metadata for the registry, the UI and the config file."""
    name: str
    label: str
    formula: str
    reference: str
    params: tuple[Param, ...]
    log_scale: tuple[bool, ...]       # bounded coordinates in log space (positive parameters)
    kind: str = "surface"
    family: str = "pricing"           # "pricing" (a model of the underlying) vs SVI's smile fits
    per_expiry: tuple[str, ...] = ()

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @property
    def jumps(self) -> bool:
        return self.name == "bates"

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([p.lower for p in self.params]), np.array([p.upper for p in self.params]))

    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "family": self.family, "label": self.label,
                "formula": self.formula, "reference": self.reference,
                "params": [p.to_dict() for p in self.params], "per_expiry": [],
                "weights": dict(WEIGHT_DESCRIPTIONS), "targets": dict(TARGET_DESCRIPTIONS),
                "methods": {"levenberg_marquardt": "MINPACK LM with the analytic Jacobian of the "
                                                   "characteristic-function prices, multistart"},
                "pricing": "Lewis (2001) Fourier integral of the little-trap characteristic function "
                           "(Albrecher et al. 2007), trapezoid rule sized from the moment strip, "
                           f"absolute error target {fourier.DEFAULT_TOL:g} of the forward",
                "no_arbitrage": "prices of a martingale model: free of static arbitrage by construction "
                                "(the switch has no effect)"}


_HESTON_PARAMS = (
    Param("v0", 0.25, 1e-4, 25.0, "variance (1/yr)", "instantaneous variance now (sqrt: spot vol)"),
    Param("kappa", 2.0, 1e-3, 50.0, "1/yr", "speed of mean reversion of the variance"),
    Param("theta", 0.25, 1e-4, 25.0, "variance (1/yr)", "long-run variance (sqrt: long-run vol)"),
    Param("sigma", 1.0, 1e-2, 20.0, "1/sqrt(yr)", "volatility of the variance (vol of vol)"),
    Param("rho", -0.3, -0.999, 0.999, "", "correlation of price and variance shocks (skew)"),
)
HESTON = PricingModel(
    "heston", "Heston (stochastic volatility)",
    "dv = kappa·(theta − v)·dt + sigma·sqrt(v)·dW_v, dS/S = sqrt(v)·dW_S (forward measure), "
    "corr(dW_S, dW_v) = rho, v(0) = v0",
    "Heston (1993); little-trap characteristic function: Albrecher, Mayer, Schoutens & Tistaert (2007)",
    _HESTON_PARAMS, (True, True, True, True, False))
BATES = PricingModel(
    "bates", "Bates (Heston + log-normal jumps)",
    "Heston plus jumps in ln S at rate lambda with sizes N(nu, delta²), compensated: "
    "E[dS/S] = 0 (QuantLib's BatesModel convention)",
    "Bates (1996); little-trap characteristic function: Albrecher et al. (2007)",
    _HESTON_PARAMS + (
        Param("lambda", 0.5, 1e-4, 50.0, "1/yr", "jump intensity: expected jumps per year"),
        Param("nu", -0.05, -2.0, 2.0, "log-return", "mean log jump size"),
        Param("delta", 0.1, 1e-3, 2.0, "log-return", "standard deviation of the log jump size")),
    (True, True, True, True, False, True, False, True))
PRICING_MODELS = (HESTON, BATES)
_MODELS = {m.name: m for m in PRICING_MODELS}


# --- bounded coordinates ---------------------------------------------------------------------------------

class _Coordinates:
    """p = lo + (hi − lo)·s(z) (or exp of it in log space), s the logistic function."""

    def __init__(self, spec: PricingModel):
        lo, hi = spec.bounds()
        self.log = np.array(spec.log_scale)
        self.a = np.where(self.log, np.log(np.where(self.log, lo, 1.0)), lo)
        self.b = np.where(self.log, np.log(np.where(self.log, hi, 1.0)), hi)

    def s(self, z):
        return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))

    def to_p(self, z) -> np.ndarray:
        y = self.a + (self.b - self.a) * self.s(z)
        return np.where(self.log, np.exp(y), y)

    def dp_dz(self, z) -> np.ndarray:
        s = self.s(z)
        dy = (self.b - self.a) * s * (1.0 - s)
        return np.where(self.log, self.to_p(z) * dy, dy)

    def to_z(self, p) -> np.ndarray:
        y = np.where(self.log, np.log(np.maximum(np.asarray(p, dtype=np.float64), 1e-300)), p)
        s = np.clip((y - self.a) / (self.b - self.a), 1e-12, 1.0 - 1e-12)
        return np.log(s / (1.0 - s))


# --- the chain as a least-squares problem ---------------------------------------------------------------

class _Problem:
    """The chain's quotes (sorted by expiry, then k), their targets and weights; residuals and the
    Jacobian in natural parameters."""

    def __init__(self, chain: Chain, spec: PricingModel, target: str, weights: str, pricing_tol: float):
        pts = chain.points.sort_values(["T_years", "k"], kind="stable").reset_index(drop=True)
        if pts.empty:
            raise DataError("the chain has no quotes to fit", file=chain.source)
        self.chain, self.spec, self.target, self.weights, self.tol = chain, spec, target, weights, pricing_tol
        self.points = pts
        self.F = pts["forward"].to_numpy(np.float64)
        self.K = pts["strike"].to_numpy(np.float64)
        self.T = pts["T_years"].to_numpy(np.float64)
        self.kf = self.K / self.F
        self.call = self.kf >= 1.0
        self.iv = pts["iv_mid"].to_numpy(np.float64)
        self.iv_bid = pts["iv_bid"].to_numpy(np.float64)
        self.iv_ask = pts["iv_ask"].to_numpy(np.float64)
        self.expiry_code, self.expiries = pd.factorize(pts["expiry"], sort=True)
        with np.errstate(all="ignore"):
            self.p_mid = black76(1.0, self.kf, self.T, self.iv, self.call)
            self.vega_mid = black76_vega(1.0, self.kf, self.T, self.iv)
            self.p_bid = black76(1.0, self.kf, self.T, self.iv_bid, self.call)
            self.p_ask = black76(1.0, self.kf, self.T, self.iv_ask, self.call)
        self.notes: list[str] = []
        self.omega = self._weights()

    @property
    def n(self) -> int:
        return self.F.size

    def _per_slice(self, values: np.ndarray, fn) -> np.ndarray:
        out = np.empty_like(values)
        for e in range(len(self.expiries)):
            m = self.expiry_code == e
            out[m] = fn(values[m])
        return out

    def _weights(self) -> np.ndarray:
        w, t = self.weights, self.target
        if w == "spread":
            spread = (self.p_ask - self.p_bid) if t == "price" else (self.iv_ask - self.iv_bid)
            good = np.isfinite(spread) & (spread > 0)
            if not good.any():
                raise DataError("weights='spread' needs bid and ask implied vols (or prices) for at least "
                                "some quotes; this chain has none", file=self.chain.source, column="bid_price")
            inv = np.where(good, 1.0 / np.where(good, spread, 1.0), np.nan)

            def fill(v):
                ok = np.isfinite(v)
                return np.where(ok, v, np.median(v[ok])) if ok.any() else np.full(v.shape, np.nan)
            inv = self._per_slice(inv, fill)
            missing = ~np.isfinite(inv)
            if missing.any():
                self.notes.append(f"{int(missing.sum())} quote(s) in expiries without two-sided quotes: "
                                  "given the median weight of the chain")
                inv = np.where(missing, np.nanmedian(inv), inv)
            if t == "price":
                return inv
            u = self._per_slice(inv, lambda v: v / v.mean())
            return VOL_PTS * np.sqrt(u)
        if w == "vega":
            if t == "price":
                floor = self._per_slice(self.vega_mid, lambda v: np.full(v.shape, _VEGA_FLOOR * np.max(v)))
                return VOL_PTS / np.maximum(self.vega_mid, floor)
            u = self._per_slice(self.vega_mid, lambda v: (v / v.max()) if v.max() > 0 else np.ones(v.shape))
            u = self._per_slice(u, lambda v: v / v.mean())
            return VOL_PTS * np.sqrt(u)
        return np.full(self.n, 1e4 if t == "price" else VOL_PTS)

    def evaluate(self, p: np.ndarray, *, grad: bool = False, with_iv: bool = False,
                 max_nodes: int = fourier.MAX_NODES) -> dict:
        """Model prices (and implied vols) at natural parameters `p`, the residuals and, with
        `grad`, their Jacobian in natural parameters."""
        res = fourier.otm_prices(p, self.F, self.K, self.T, model=self.spec.name, grad=grad, tol=self.tol,
                                 max_nodes=max_nodes)
        otm = res.otm
        out = {"otm": otm, "flags": res.flags, "plan": res.plan}
        need_iv = with_iv or self.target == "vol"
        if need_iv:
            ivr = implied_vol(otm, 1.0, self.kf, self.T, self.call)
            iv_model = np.where(ivr.flag == IV_OK, ivr.vol, np.nan)
            out["iv_model"] = iv_model
        if self.target == "price":
            r = self.omega * (otm - self.p_mid)
            if grad:
                out["jac"] = self.omega[:, None] * res.jac
        else:
            has_iv = np.isfinite(iv_model)
            with np.errstate(all="ignore"):
                vega_model = black76_vega(1.0, self.kf, self.T, iv_model)
            usable = has_iv & (vega_model > 0)
            lin = (otm - self.p_mid) / np.maximum(self.vega_mid, 1e-300)
            r = self.omega * np.where(usable, iv_model - self.iv, lin)
            out["fallback"] = int((~usable).sum())
            if grad:
                denom = np.where(usable, vega_model, np.maximum(self.vega_mid, 1e-300))
                out["jac"] = (self.omega / denom)[:, None] * res.jac
        out["r"] = np.where(np.isfinite(r), r, 1e10)
        return out


# --- results ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExpiryFit:
    """One expiry's fit quality under the model (the parameters are global)."""
    expiry: pd.Timestamp
    T_years: float
    forward: float
    forward_source: str
    n_points: int
    rmse_vol_pts: float | None
    weighted_rmse_vol_pts: float | None
    max_abs_error_vol_pts: float | None
    inside_band_fraction: float | None
    rmse_price_bps: float | None
    nodes: int | None

    def to_dict(self, status: str) -> dict:
        return {"expiry": self.expiry.isoformat(), "T_years": self.T_years, "forward": self.forward,
                "forward_source": self.forward_source, "points": self.n_points, "status": status,
                "message": "", "params": None, "std_errors": None, "theta": None,
                "rmse_vol_pts": self.rmse_vol_pts, "weighted_rmse_vol_pts": self.weighted_rmse_vol_pts,
                "max_abs_error_vol_pts": self.max_abs_error_vol_pts,
                "inside_band_fraction": self.inside_band_fraction, "rmse_price_bps": self.rmse_price_bps,
                "butterfly_ok": True, "min_g": None, "k_at_min_g": None, "butterfly_violations": [],
                "quadrature_nodes": self.nodes, "optimizer": None}


@dataclass(frozen=True, eq=False)
class StochasticVolResult(ResultMixin):
    """A fitted or hand-set Heston / Bates model on one chain (one underlying, one snapshot)."""
    model: PricingModel
    status: str                                # "fitted" | "fixed"
    params: Mapping[str, float]
    std_errors: Mapping[str, float]
    report: OptimizerReport
    warnings: tuple[str, ...]
    chain: Chain
    target: str
    weights: str
    quotes: pd.DataFrame                       # one row per fitted quote
    expiries: tuple[ExpiryFit, ...]
    cost: float
    settings: Mapping[str, Any]
    seconds: float | None = None
    kind: str = "surface"
    no_arbitrage: bool = False

    # -- access ---------------------------------------------------------------------------------------
    @property
    def param_vector(self) -> np.ndarray:
        return np.array([self.params[n] for n in self.model.param_names])

    @property
    def feller(self) -> dict:
        k, th, s = self.params["kappa"], self.params["theta"], self.params["sigma"]
        ratio = 2.0 * k * th / (s * s)
        return {"ratio": float(ratio), "satisfied": bool(ratio >= 1.0),
                "condition": "2*kappa*theta >= sigma^2"}

    @property
    def rmse_vol_pts(self) -> float | None:
        err = self.quotes["error_vol_pts"].to_numpy(np.float64)
        err = err[np.isfinite(err)]
        return float(np.sqrt(np.mean(err * err))) if err.size else None

    @property
    def validation(self):
        return self.chain.report

    def _expiry(self, expiry) -> ExpiryFit:
        ts = pd.Timestamp(expiry)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        for e in self.expiries:
            if e.expiry == ts:
                return e
        raise KeyError(f"no expiry {ts.isoformat()} in this fit")

    def prices(self, strike, expiry, is_call=None, *, unit: str = "quote") -> np.ndarray:
        """Model prices of `strike` at `expiry` (a chain expiry; its forward), calls where `is_call`
        (default: out of the money), in the quote currency or in coin units (`unit="base"`)."""
        e = self._expiry(expiry)
        K = np.asarray(strike, dtype=np.float64)
        call = K >= e.forward if is_call is None else np.asarray(is_call, dtype=bool)
        return fourier.option_prices(self.param_vector, e.forward, K, e.T_years, call, model=self.model.name,
                                     unit=unit)

    def implied_vol(self, k, expiry) -> np.ndarray:
        """Black-76 implied vols of the model at log-moneyness `k` = ln(K/F) for a chain expiry."""
        e = self._expiry(expiry)
        k = np.asarray(k, dtype=np.float64)
        kf = np.exp(k)
        otm = fourier.otm_prices(self.param_vector, 1.0, kf, e.T_years, model=self.model.name).otm
        ivr = implied_vol(otm, 1.0, kf, e.T_years, kf >= 1.0)
        return np.where(ivr.flag == IV_OK, ivr.vol, np.nan).reshape(k.shape)

    # -- figure-ready frames -----------------------------------------------------------------------------
    def smile_frame(self) -> pd.DataFrame:
        """One row per fitted quote: market mid/bid/ask IV, model IV, error (vol points), weight
        (the columns of `SurfaceResult.smile_frame`, plus prices and the price error)."""
        return self.quotes.copy()

    def curve_frame(self, points: int = 121, k_grid=None) -> pd.DataFrame:
        """Model smiles on a k-grid per expiry (the quoted range padded by a quarter of its width)."""
        parts = []
        ks, Ts, Fs, tags = [], [], [], []
        for e in self.expiries:
            if k_grid is None:
                kd = self.quotes.loc[self.quotes["expiry"] == e.expiry, "k"].to_numpy(np.float64)
                pad = 0.25 * max(float(np.ptp(kd)), 1e-3)
                k = np.linspace(kd.min() - pad, kd.max() + pad, points)
            else:
                k = np.asarray(k_grid, dtype=np.float64)
            ks.append(k), Ts.append(np.full(k.size, e.T_years)), Fs.append(np.full(k.size, e.forward))
            tags.append(e)
        if not tags:
            return pd.DataFrame()
        k_all = np.concatenate(ks)
        T_all = np.concatenate(Ts)
        kf = np.exp(k_all)
        otm = fourier.otm_prices(self.param_vector, 1.0, kf, T_all, model=self.model.name).otm
        ivr = implied_vol(otm, 1.0, kf, T_all, kf >= 1.0)
        iv = np.where(ivr.flag == IV_OK, ivr.vol, np.nan)
        at = 0
        for e, k, F in zip(tags, ks, Fs):
            sl = slice(at, at + k.size)
            at += k.size
            parts.append(pd.DataFrame({"expiry": e.expiry, "T_years": e.T_years, "k": k, "strike": F * np.exp(k),
                                       "iv_model": iv[sl], "w_model": iv[sl] ** 2 * e.T_years,
                                       "price_model_over_forward": otm[sl]}))
        return pd.concat(parts, ignore_index=True)

    # -- export -----------------------------------------------------------------------------------------
    def arbitrage(self) -> dict:
        return {"free_of_static_arbitrage_on_grid": True, "by_construction": True,
                "note": "prices of a martingale model (characteristic function): no butterfly or calendar "
                        "arbitrage by construction",
                "butterfly": [], "calendar_violations": [], "ssvi_conditions": None}

    def to_dict(self) -> dict:
        """JSON-ready: the shape `execal surface` writes for SVI (model, status, weights, rmse, optimizer,
        expiries, arbitrage, warnings, chain), plus the model's parameters, standard errors, confidence
        intervals, the Feller condition and the contract's keys."""
        base = ResultMixin.to_dict(self)
        status = self.status
        return clean({
            "model": self.model.name, "label": self.model.label, "status": status, "weights": self.weights,
            "target": self.target, "no_arbitrage": self.no_arbitrage, "underlying": self.chain.underlying,
            "as_of": self.chain.as_of.isoformat(), "source": self.chain.source,
            "rmse_vol_pts": self.rmse_vol_pts, "ssvi": None,
            "params": base["params"], "std_errors": base["std_errors"], "conf_int": base["conf_int"],
            "feller": self.feller, "cost": num(self.cost), "converged": self.converged,
            "report": base["report"], "optimizer": base["report"],
            "expiries": [e.to_dict(status) for e in self.expiries],
            "calendar_violations": [], "arbitrage": self.arbitrage(), "warnings": list(self.warnings),
            "seconds": self.seconds, "settings": dict(self.settings), "chain": self.chain.summary()})

    def to_config(self, provenance: Mapping | None = None) -> dict:
        """The exported config (schema_version 1, kind "surface"): the model and its parameters, how
        they were fitted, the data they came from and the fit quality."""
        ch = self.chain
        data = {"file": ch.source, "sha256": ch.sha256, "rows": ch.report.rows_read,
                "rows_used": ch.report.rows_kept, "as_of": ch.as_of.isoformat(),
                "underlying": ch.underlying, "iv_source": ch.iv_source, "forward_method": ch.forward_method,
                "dropped": [d.to_dict() for d in ch.report.dropped]}
        data.update({k: v for k, v in dict(provenance or {}).items() if v is not None})
        ci = self.conf_int()
        return clean({
            "schema_version": 1, "kind": "surface", "execal_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"name": self.model.name, "label": self.model.label, "formula": self.model.formula,
                      "family": self.model.family, "status": self.status,
                      "params": dict(self.params), "std_errors": dict(self.std_errors),
                      "conf_int": {k: list(v) for k, v in ci.items()}, "feller": self.feller,
                      "global_params": dict(self.params),
                      "expiries": [{"expiry": e.expiry.isoformat(), "T_years": e.T_years, "forward": e.forward,
                                    "theta": None, "params": None} for e in self.expiries]},
            "optimizer": {"target": self.target, "weights": self.weights, "no_arbitrage": False,
                          "settings": dict(self.settings), "report": self.report.to_dict(), "slices": {}},
            "data": data,
            "metrics": {"rmse_vol_pts": self.rmse_vol_pts, "cost": self.cost,
                        "by_expiry": {e.expiry.isoformat(): {"rmse_vol_pts": e.rmse_vol_pts,
                                                             "weighted_rmse_vol_pts": e.weighted_rmse_vol_pts,
                                                             "max_abs_error_vol_pts": e.max_abs_error_vol_pts,
                                                             "inside_band_fraction": e.inside_band_fraction,
                                                             "rmse_price_bps": e.rmse_price_bps,
                                                             "points": e.n_points}
                                      for e in self.expiries}},
            "arbitrage": self.arbitrage()})

    def summary(self) -> str:
        f = self.feller
        lines = [f"{self.model.label} ({self.model.name}), {self.status}; target {self.target}, weights "
                 f"{self.weights}; {self.chain.underlying or 'chain'} at {self.chain.as_of.isoformat()}",
                 report_line(self.report),
                 *params_table(self.params, self.std_errors, self.conf_int()),
                 f"Feller 2·kappa·theta/sigma² = {f['ratio']:.4g} ({'holds' if f['satisfied'] else 'violated'}); "
                 f"cost {self.cost:.6g}; RMSE {self.rmse_vol_pts or float('nan'):.3f} vol pts",
                 f"{'expiry':<27}{'T':>9}{'quotes':>8}{'RMSE vp':>10}{'max vp':>10}{'in band':>9}"]
        for e in self.expiries:
            band = "—" if e.inside_band_fraction is None else f"{e.inside_band_fraction:.2f}"
            lines.append(f"{e.expiry.isoformat():<27}{e.T_years:>9.4f}{e.n_points:>8d}"
                         f"{_fmt(e.rmse_vol_pts):>10}{_fmt(e.max_abs_error_vol_pts):>10}{band:>9}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _fmt(x) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.3f}"


# --- the estimator ---------------------------------------------------------------------------------------

class StochasticVolCalibrator(Estimator):
    """Settings of a Heston / Bates calibration; `fit(chain)` / `fix(params, chain)` →
    `StochasticVolResult` (see the module docstring for the objective, optimizer and errors).

    model: "heston" | "bates"; target: "price" | "vol"; weights: "uniform" | "vega" | "spread";
    starts: extra Sobol starting points scored before the LM runs; polish: LM runs from the best
    scored starts; start: a starting point (mapping) that replaces the data-driven one; seed: of the
    Sobol points; tol: LM's ftol = xtol = gtol; max_nfev: LM's budget per run (None: 100·(p + 1));
    pricing_tol: absolute error target of the prices (units of the forward); max_nodes: quadrature
    nodes per expiry while optimising (trial points far out, e.g. sigma = 20 with rho = -0.999, would
    want hundreds of thousands; the result is evaluated without the cap, and a solution that needs
    more carries a warning).
    """

    def __init__(self, model: str = "heston", target: str = "price", weights: str = "vega", *,
                 starts: int = 4, polish: int = 2, start: Mapping[str, float] | None = None, seed: int = 0,
                 tol: float = 1e-10, max_nfev: int | None = None, pricing_tol: float = fourier.DEFAULT_TOL,
                 max_nodes: int = 1024):
        if model not in _MODELS:
            raise ValueError(f"unknown pricing model {model!r} (available: {', '.join(_MODELS)})")
        if target not in TARGETS:
            raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
        if int(starts) < 0 or int(polish) < 1:
            raise ValueError("starts must be ≥ 0 and polish ≥ 1")
        if not (0 < float(pricing_tol) < 1e-3):
            raise ValueError("pricing_tol must be in (0, 1e-3)")
        self.model = model
        self.target = target
        self.weights = weights
        self.starts = int(starts)
        self.polish = int(polish)
        self.start = None if start is None else {k: float(v) for k, v in dict(start).items()}
        self.seed = int(seed)
        self.tol = float(tol)
        self.max_nfev = None if max_nfev is None else int(max_nfev)
        self.pricing_tol = float(pricing_tol)
        self.max_nodes = int(max_nodes)
        if self.max_nodes < fourier.MIN_NODES:
            raise ValueError(f"max_nodes must be at least {fourier.MIN_NODES}")
        if self.start is not None:
            fourier.param_vector(self.start, model)      # every parameter given

    @property
    def spec(self) -> PricingModel:
        return _MODELS[self.model]

    @staticmethod
    def _chain(chain) -> Chain:
        return chain if isinstance(chain, Chain) else prepare_chain(chain)

    def problem(self, chain) -> _Problem:
        return _Problem(self._chain(chain), self.spec, self.target, self.weights, self.pricing_tol)

    # -- starting points ------------------------------------------------------------------------------
    def data_start(self, prob: _Problem) -> np.ndarray:
        """ATM variance of the shortest and longest expiries, the short-dated ATM skew
        (∂σ/∂k ≈ rho·sigma/(4·sqrt(v0)), Heston's small-time limit), kappa = 2."""
        atm, skew = [], []
        for e in range(len(prob.expiries)):
            m = prob.expiry_code == e
            k, iv = prob.points["k"].to_numpy()[m], prob.iv[m]
            near = np.argsort(np.abs(k), kind="stable")[:5]
            if near.size >= 3 and np.ptp(k[near]) > 0:
                slope, level = np.polyfit(k[near], iv[near], 1)
            else:
                slope, level = 0.0, float(iv[near].mean())
            atm.append(level), skew.append(slope)
        v0 = max(atm[0], 0.05) ** 2
        theta = max(atm[-1], 0.05) ** 2
        rho_sigma = 4.0 * math.sqrt(v0) * skew[0]
        sigma = float(np.clip(max(1.0, abs(rho_sigma) / 0.7), 0.2, 5.0))
        rho = float(np.clip(rho_sigma / sigma, -0.9, 0.9))
        p = [v0, 2.0, theta, sigma, rho]
        if self.spec.jumps:
            p += [0.5, -0.05 if skew[0] <= 0 else 0.05, 0.1]
        return _inside(self.spec, np.array(p))

    def _candidates(self, first: np.ndarray, extra: Sequence[np.ndarray] = ()) -> list[tuple[str, np.ndarray]]:
        out = [("start", first)] + [(f"start {i + 1}", e) for i, e in enumerate(extra)]
        if self.starts:
            v_short, v_long = first[0], first[2]
            box_lo = [np.log(v_short / 4), np.log(0.2), np.log(v_long / 4), np.log(0.2), -0.9]
            box_hi = [np.log(v_short * 4), np.log(10.0), np.log(v_long * 4), np.log(4.0), 0.6]
            if self.spec.jumps:
                box_lo += [np.log(0.05), -0.4, np.log(0.02)]
                box_hi += [np.log(5.0), 0.2, np.log(0.6)]
            sob = qmc.Sobol(len(box_lo), scramble=True, seed=self.seed).random(self.starts)
            pts = np.array(box_lo) + sob * (np.array(box_hi) - np.array(box_lo))
            log = np.array(self.spec.log_scale)
            for i, row in enumerate(pts):
                out.append((f"sobol {i + 1}", _inside(self.spec, np.where(log, np.exp(row), row))))
        return out

    # -- one LM run ----------------------------------------------------------------------------------------
    def _fun_jac(self, prob: _Problem, to_p, dp_dx):
        """(fun, jac) for least_squares: every residual evaluation also computes the analytic Jacobian
        (≈ 1.7× the price alone) and keeps it, since MINPACK asks for the Jacobian at each accepted
        point right after its residuals: one pricing per accepted step instead of two."""
        last: dict = {}

        def fun(x):
            out = prob.evaluate(to_p(x), grad=True, max_nodes=self.max_nodes)
            last["x"], last["r"], last["jac"] = np.array(x, copy=True), out["r"], out["jac"]
            return out["r"]

        def jac(x):
            if "x" not in last or not np.array_equal(last["x"], x):
                fun(x)
            J = last["jac"] * dp_dx(x)[None, :]
            return np.where(np.isfinite(J), J, 0.0)
        return fun, jac

    def _lm(self, prob: _Problem, coords: _Coordinates, p0: np.ndarray):
        fun, jac = self._fun_jac(prob, coords.to_p, coords.dp_dz)
        budget = self.max_nfev if self.max_nfev else 100 * (p0.size + 1)
        with np.errstate(all="ignore"):
            return optimize.least_squares(fun, coords.to_z(p0), jac=jac, method="lm", ftol=self.tol, xtol=self.tol,
                                          gtol=self.tol, max_nfev=budget, x_scale=1.0)

    def _bounded_polish(self, prob: _Problem, p0: np.ndarray):
        lo, hi = self.spec.bounds()
        fun, jac = self._fun_jac(prob, lambda p: p, np.ones_like)
        with np.errstate(all="ignore"):
            return optimize.least_squares(fun, np.clip(p0, lo, hi), jac=jac, method="trf", bounds=(lo, hi),
                                          x_scale="jac", ftol=self.tol, xtol=self.tol, gtol=self.tol,
                                          max_nfev=self.max_nfev or 100 * (p0.size + 1))

    # -- public ---------------------------------------------------------------------------------------------
    def fit(self, chain) -> StochasticVolResult:
        """Calibrate the model to `chain` (a `Chain`, or a Dataset / frame prepared with defaults)."""
        t0 = time.perf_counter()
        prob = self.problem(chain)
        spec = self.spec
        n_par = len(spec.params)
        if prob.n <= n_par:
            raise CalibrationError(f"{prob.n} quote(s) cannot pin down the {n_par} parameters of {spec.label}")
        coords = _Coordinates(spec)
        extra: list[np.ndarray] = []
        heston_stage = None
        if self.start is not None:
            first = fourier.param_vector(self.start, spec.name)
            lo, hi = spec.bounds()
            if np.any(first < lo) or np.any(first > hi):
                raise ValueError(f"start {self.start} lies outside the bounds of {spec.name}")
        elif spec.jumps:
            # Bates from the Heston fit of the same chain plus candidate jumps
            h = StochasticVolCalibrator("heston", self.target, self.weights, starts=self.starts, polish=self.polish,
                                        seed=self.seed, tol=self.tol, max_nfev=self.max_nfev,
                                        pricing_tol=self.pricing_tol, max_nodes=self.max_nodes).fit(prob.chain)
            hv = h.param_vector
            heston_stage = {"stage": "heston fit", "cost": h.cost, "status": h.report.status,
                            "params": dict(h.params)}
            first = _inside(spec, np.concatenate([hv, [0.5, -0.05, 0.1]]))
            extra = [_inside(spec, np.concatenate([hv, jumps])) for jumps in ([2.0, -0.1, 0.2], [0.1, -0.3, 0.3])]
        else:
            first = self.data_start(prob)
        cands = self._candidates(first, extra)
        scored = []
        for label, p in cands:
            r = prob.evaluate(p, max_nodes=self.max_nodes)["r"]
            scored.append((0.5 * float(r @ r), label, p))
        order = sorted(range(len(scored)), key=lambda i: (not np.isfinite(scored[i][0]), scored[i][0]))
        stages = ([heston_stage] if heston_stage else []) + [
            {"stage": f"score {label}", "cost": num(c), "params": dict(zip(spec.param_names, map(float, p)))}
            for c, label, p in scored]
        best = None
        total_nfev = total_njev = 0
        for i in order[:self.polish]:
            c0, label, p = scored[i]
            res = self._lm(prob, coords, p)
            total_nfev += int(res.nfev)
            total_njev += int(res.njev or 0)
            stages.append({"stage": f"lm from {label}", "start_cost": num(c0), "cost": num(res.cost),
                           "status": int(res.status), "message": str(res.message), "nfev": int(res.nfev),
                           "params": dict(zip(spec.param_names, map(float, coords.to_p(res.x))))})
            if best is None or (np.isfinite(res.cost) and res.cost < best[0].cost):
                best = (res, label)
        res, label = best
        p_hat = coords.to_p(res.x)
        status, message, success, cost = int(res.status), str(res.message), bool(res.success), float(res.cost)
        method = "levenberg_marquardt"
        near = coords.s(res.x)
        if np.any((near < _NEAR_BOUND) | (near > 1.0 - _NEAR_BOUND)):
            # the logistic coordinate flattens at a bound and LM stops short of it: finish in natural
            # coordinates with the bounds as bounds (trust-region reflective, same analytic Jacobian)
            pol = self._bounded_polish(prob, p_hat)
            total_nfev += int(pol.nfev)
            total_njev += int(pol.njev or 0)
            stages.append({"stage": "bounded polish (trf) near a bound", "start_cost": num(cost),
                           "cost": num(pol.cost), "status": int(pol.status), "message": str(pol.message),
                           "nfev": int(pol.nfev), "params": dict(zip(spec.param_names, map(float, pol.x)))})
            if np.isfinite(pol.cost) and pol.cost <= cost:
                p_hat = np.asarray(pol.x, dtype=np.float64)
                status, message, success, cost = int(pol.status), str(pol.message), bool(pol.success), float(pol.cost)
                method = "levenberg_marquardt + trf polish at a bound"
        capped = prob.evaluate(p_hat, max_nodes=self.max_nodes)["flags"] & fourier.CAPPED
        s = coords.s(coords.to_z(p_hat))
        active = [f"{n} at {'lower' if si < 0.5 else 'upper'} bound "
                  f"{(spec.params[j].lower if si < 0.5 else spec.params[j].upper):g}"
                  for j, (n, si) in enumerate(zip(spec.param_names, s))
                  if si < _AT_BOUND or si > 1.0 - _AT_BOUND]
        converged = bool(status > 0 and np.isfinite(cost))
        report = OptimizerReport(
            method=method, loss="linear", f_scale=1.0, weights=f"{self.target}/{self.weights}",
            status=status, message=message, success=bool(success and converged),
            converged=converged, nfev=total_nfev, njev=total_njev, iterations=int(res.njev or 0),
            cost=cost, active_bounds=tuple(active), starts=tuple(stages),
            settings={**self.get_params(), "best_start": label,
                      "coordinates": "bounded logistic (log space for positive parameters)"})
        result_warn = [] if not capped.any() else [
            f"the solution needs more than max_nodes = {self.max_nodes} quadrature nodes for "
            f"{int(capped.sum())} quote(s): the optimizer saw less accurate prices there (raise max_nodes)"]
        return self._result(prob, p_hat, report, "fitted", t0, active=active, extra_warnings=result_warn)

    def fix(self, params: Mapping[str, float], chain) -> StochasticVolResult:
        """A result for hand-set parameters (same type as `fit`, status "fixed", no standard errors)."""
        t0 = time.perf_counter()
        prob = self.problem(chain)
        p = fourier.param_vector(params, self.spec.name)
        lo, hi = self.spec.bounds()
        if np.any(~np.isfinite(p)) or np.any(p < lo) or np.any(p > hi):
            raise ValueError(f"parameters {dict(params)} outside the bounds of {self.spec.name}")
        report = OptimizerReport.fixed(**self.get_params())
        return self._result(prob, p, report, "fixed", t0, active=[])

    def fit_snapshots(self, data, *, underlyings: Iterable[str] | None = None, as_of: Iterable[Any] | None = None,
                      **chain_options) -> dict[tuple[str | None, str], StochasticVolResult]:
        """One fit per (underlying, snapshot): `underlyings` (default: every coin of the data) × `as_of`
        (default: the latest quote of each). Keys are (underlying, as_of ISO)."""
        frame = data.frame if hasattr(data, "frame") else data
        if underlyings is None:
            found = pd.Series(pd.NA, index=frame.index, dtype="string")
            if "underlying" in frame.columns:
                found = frame["underlying"].astype("string").str.strip().str.upper()
            if "symbol" in frame.columns:     # the symbol's prefix wins (BTC-27DEC24-60000-C), as in prepare_chain
                prefix = frame["symbol"].astype("string").str.extract(r"^\s*([A-Za-z0-9_]+)-", expand=False)
                found = prefix.str.upper().fillna(found)
            underlyings = sorted(str(u) for u in found.dropna().unique() if str(u)) or [None]
        out = {}
        for u in underlyings:
            for t in (list(as_of) if as_of is not None else [None]):
                chain = prepare_chain(data, underlying=u, as_of=t, **chain_options)
                out[(chain.underlying, chain.as_of.isoformat())] = self.fit(chain)
        return out

    # -- the result ----------------------------------------------------------------------------------------
    def _result(self, prob: _Problem, p: np.ndarray, report: OptimizerReport, status: str, t0: float,
                *, active: Sequence[str], extra_warnings: Sequence[str] = ()) -> StochasticVolResult:
        spec = self.spec
        ev = prob.evaluate(p, grad=status == "fitted", with_iv=True)
        r = ev["r"]
        cost = 0.5 * float(r @ r)
        warn = list(prob.notes) + list(extra_warnings)
        names = spec.param_names
        se = {n: math.nan for n in names}
        if status == "fitted":
            se, se_warn = _sandwich(ev["jac"], r, prob.expiry_code, names)
            warn += se_warn
            if not report.converged:
                warn.append(f"the optimizer did not converge ({report.message}); the parameters are where it stopped")
            for a in active:
                warn.append(f"{a}: the fit is at the edge of the parameter space (its standard error is not "
                            "meaningful)")
            if prob.n < 3 * len(names):
                warn.append(f"{prob.n} quotes for {len(names)} parameters: weakly identified")
        params = dict(zip(names, map(float, p)))
        ratio = 2.0 * params["kappa"] * params["theta"] / params["sigma"] ** 2
        if ratio < 1.0:
            warn.append(f"{FELLER_NOTE}; 2·kappa·theta/sigma² = {ratio:.3g}")
        if len(prob.expiries) < 2:
            warn.append("one expiry: the term structure (kappa, theta against v0) is not identified")
        if ev.get("fallback"):
            warn.append(f"{ev['fallback']} quote(s) whose model price has no implied vol used the linearised "
                        "residual (price − mid)/vega")
        bad = ev["flags"] != fourier.OK
        if bad.any():
            names_f = sorted({fourier.FLAG_NAMES[b] for f in np.unique(ev["flags"][bad])
                              for b in fourier.FLAG_NAMES if f & b})
            warn.append(f"{int(bad.sum())} quote(s) priced with flags {', '.join(names_f)}: accuracy not guaranteed")
        quotes, expiries = _frames(prob, ev, r)
        if report.warnings != tuple(warn) and status == "fitted":
            report = _with_warnings(report, warn)
        return StochasticVolResult(
            model=spec, status=status, params=MappingProxyType(params), std_errors=MappingProxyType(se),
            report=report, warnings=tuple(warn), chain=prob.chain, target=self.target, weights=self.weights,
            quotes=quotes, expiries=expiries, cost=cost, settings=MappingProxyType(self.get_params()),
            seconds=time.perf_counter() - t0)


def _inside(spec: PricingModel, p: np.ndarray) -> np.ndarray:
    """`p` moved inside its bounds, off the flat ends of the logistic coordinates (a start there stalls)."""
    coords = _Coordinates(spec)
    return coords.to_p(np.clip(coords.to_z(p), -7.0, 7.0))


def _with_warnings(report: OptimizerReport, warn: Sequence[str]) -> OptimizerReport:
    d = {f: getattr(report, f) for f in report.__dataclass_fields__}
    d["warnings"] = tuple(warn)
    return OptimizerReport(**d)


def _sandwich(J: np.ndarray, r: np.ndarray, expiry_code: np.ndarray, names: Sequence[str]) -> tuple[dict, list[str]]:
    """HAC (Bartlett along strikes within each expiry) sandwich standard errors."""
    n, p = J.shape
    nan = {k: math.nan for k in names}
    if n <= p:
        return nan, [f"{n} quotes for {p} parameters: no standard errors"]
    H = J.T @ J
    if not np.all(np.isfinite(H)):
        return nan, ["the Jacobian is not finite at the solution: no standard errors"]
    eig = np.linalg.eigvalsh(H)
    if eig[0] <= 0 or eig[-1] / eig[0] > _CONDITION_MAX:
        return nan, [f"JᵀJ is singular or badly conditioned (condition {eig[-1] / max(eig[0], 1e-300):.2g}): the "
                     "parameters are not separately identified from this chain; no standard errors"]
    S = J * r[:, None]
    omega = np.zeros((p, p))
    for e in np.unique(expiry_code):
        s = S[expiry_code == e]
        m = s.shape[0]
        lags = int(np.floor(4.0 * (m / 100.0) ** (2.0 / 9.0)))
        omega += s.T @ s
        for lag in range(1, min(lags, m - 1) + 1):
            g = s[lag:].T @ s[:-lag]
            omega += (1.0 - lag / (lags + 1.0)) * (g + g.T)
    Hinv = np.linalg.inv(H)
    cov = Hinv @ omega @ Hinv * n / (n - p)
    var = np.diag(cov)
    se = {k: (float(np.sqrt(v)) if v >= 0 and np.isfinite(v) else math.nan) for k, v in zip(names, var)}
    return se, []


def _frames(prob: _Problem, ev: dict, r: np.ndarray) -> tuple[pd.DataFrame, tuple[ExpiryFit, ...]]:
    pts = prob.points
    iv_model = ev["iv_model"]
    err = VOL_PTS * (iv_model - prob.iv)
    band = np.isfinite(prob.iv_bid) & np.isfinite(prob.iv_ask)
    inside = (iv_model >= prob.iv_bid - 1e-12) & (iv_model <= prob.iv_ask + 1e-12)
    quotes = pts[["expiry", "T_years", "strike", "option_type", "forward", "k", "iv_mid", "iv_bid", "iv_ask"]].copy()
    quotes["iv_model"] = iv_model
    quotes["error_vol_pts"] = err
    quotes["weight"] = prob.omega
    quotes["residual"] = r
    quotes["in_band"] = inside
    quotes["price_mid_over_forward"] = prob.p_mid
    quotes["price_model_over_forward"] = ev["otm"]
    quotes["error_price_bps"] = 1e4 * (ev["otm"] - prob.p_mid)
    fw = prob.chain.forwards.set_index("expiry")
    plan = ev.get("plan")
    nodes_of = {}
    if plan is not None:
        for T, nn in zip(plan.T, plan.nodes):
            nodes_of[float(T)] = int(nn)
    out = []
    for e, expiry in enumerate(prob.expiries):
        m = prob.expiry_code == e
        ee = err[m]
        ok = np.isfinite(ee)
        w = prob.omega[m] ** 2
        T = float(prob.T[m][0])
        out.append(ExpiryFit(
            expiry=pd.Timestamp(expiry), T_years=T, forward=float(fw.loc[expiry, "forward"]),
            forward_source=str(fw.loc[expiry, "forward_source"]), n_points=int(m.sum()),
            rmse_vol_pts=float(np.sqrt(np.mean(ee[ok] ** 2))) if ok.any() else None,
            weighted_rmse_vol_pts=float(np.sqrt(np.sum(w[ok] * ee[ok] ** 2) / np.sum(w[ok]))) if ok.any() else None,
            max_abs_error_vol_pts=float(np.max(np.abs(ee[ok]))) if ok.any() else None,
            inside_band_fraction=float(inside[m][band[m]].mean()) if band[m].any() else None,
            rmse_price_bps=float(np.sqrt(np.mean((1e4 * (ev["otm"][m] - prob.p_mid[m])) ** 2))),
            nodes=nodes_of.get(T)))
    return quotes, tuple(out)


def model_chain(params, T_years: Sequence[float], k, *, model: str = "heston", forward: float = 100.0,
                noise_vol_pts: float = 0.0, half_spread_vol_pts: float = 0.5, seed: int = 0,
                as_of: str = "2024-01-01T00:00:00Z", source: str = "synthetic"):
    """A chain whose mid IVs are the model's (plus Gaussian noise of `noise_vol_pts`), bid/ask
    ± `half_spread_vol_pts`: for tests, benchmarks and what-if studies. `k` = ln(K/F) per expiry: an
    array (every expiry) or a list of arrays (one per expiry). Quotes whose model price has no implied
    vol (deep wings priced at zero) are left out."""
    from_list = not isinstance(k, np.ndarray) or k.ndim > 1
    Ts = np.asarray(T_years, dtype=np.float64)
    ks = [np.asarray(kk, dtype=np.float64) for kk in k] if from_list else [np.asarray(k, dtype=np.float64)] * Ts.size
    if len(ks) != Ts.size:
        raise ValueError("k needs one array per expiry")
    k_all = np.concatenate(ks)
    T_all = np.concatenate([np.full(kk.size, T) for kk, T in zip(ks, Ts)])
    kf = np.exp(k_all)
    otm = fourier.otm_prices(params, 1.0, kf, T_all, model=model).otm
    ivr = implied_vol(otm, 1.0, kf, T_all, kf >= 1.0)
    ok = ivr.flag == IV_OK
    rng = np.random.default_rng(seed)
    iv = ivr.vol[ok] + rng.normal(0.0, noise_vol_pts / VOL_PTS, int(ok.sum()))
    half = half_spread_vol_pts / VOL_PTS
    return chain_from_vols(k_all[ok], T_all[ok], iv, forward=forward, iv_bid=np.maximum(iv - half, 1e-4),
                           iv_ask=iv + half, as_of=as_of, source=source)


def fit_pricing_model(chain, model: str = "heston", target: str = "price", weights: str = "vega",
                      **options) -> StochasticVolResult:
    """Shortcut: `StochasticVolCalibrator(model, target, weights, **options).fit(chain)`."""
    return StochasticVolCalibrator(model, target, weights, **options).fit(chain)
