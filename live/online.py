"""The calibrated impact model, live: a prediction with its interval for each fill as it arrives,
the realised cost against it, and the Kalman and SGD coefficient updates.

This module composes areas (the impact model from the registry, its features and time-varying
kernels) with the live state, so it sits outside `models/` (an area never imports another): the
`execal.live` layer, next to the command line and the dashboard.

Per fill, in arrival order:

* features: the fill's own columns (quantity, adv, volatility, duration_s, spread_bps, ...) through
  `impact_features`, the same function the calibration uses; a column the fill lacks is filled in
  from the market state by the caller (volatility from the realised estimate, spread from the book,
  adv from the traded volume);
* prediction of the live config: `model.predict(theta, features)`; its interval
  pred ± z·sd with sd² = s²·r + x²·Var(β): s² the config's noise scale (the Kalman fit's, else the
  in-sample z_std² with weights "noise", RMSE² with "none"), r the calibrator's noise model
  (1/w², w the residual weight: 1/expected noise with weights "noise"), x the sensitivity to the
  drifting coefficient and Var(β) its squared standard error;
* standardised residual z = (realised − pred)/sd, what the drift detectors read;
* Kalman: y = cost − (the model without the drifting coefficient), x = d cost / d β, one step of
  `timevarying.kf_step` (the same compiled function the offline filter runs), with the config's q
  and s²; its standardised innovation feeds the innovation test;
* SGD: one step of `timevarying.sgd_step` on the fill (the offline pass's own kernel), from the
  config's parameters (or the model defaults, as the offline pass starts).

tests/live/test_live_online.py checks that the online paths equal `calibrate_time_varying` (kalman with
outlier_k = 0, sgd) on the same fills to 1e-9.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from execal.models.core.params import NS_PER_DAY
from execal.models.core.registry import get_model
from execal.models.data.schema import side_sign
from execal.models.impact.config import validate_config
from execal.models.impact.features import impact_features
from execal.models.impact.timevarying import DRIFT_PARAMETER, LOSS_CODES, kf_step, sgd_inputs, sgd_step

FILL_COLUMNS = ("timestamp", "symbol", "venue", "side", "quantity", "arrival_price", "exec_price",
                "cost_bps", "duration_s", "adv", "market_volume", "volatility", "spread_bps",
                "order_id", "weight")


def noise_scale_of(config: Mapping) -> float:
    """s: the config's residual scale in units of the weighted residual."""
    tv = config.get("time_varying") or {}
    if tv.get("noise_scale"):
        return float(tv["noise_scale"])
    live = config.get("live") or {}
    if live.get("noise_scale"):
        return float(live["noise_scale"])
    m = (config.get("metrics") or {}).get("in_sample") or {}
    weights = (config.get("optimizer") or {}).get("weights")
    if weights == "noise" and m.get("z_std"):
        return float(m["z_std"])
    if m.get("rmse_bps"):
        return float(m["rmse_bps"])
    return 1.0


class OnlineImpact:
    """One live config's predictions and its online coefficient updates."""

    def __init__(self, config: Mapping, *, alpha: float = 0.05, kalman_prior: str = "config",
                 sgd_start: str = "config", sgd_window: float | None = None, sgd_t0: float | None = None):
        cfg = validate_config(config)
        self.config = cfg
        self.model = model = get_model(cfg["model"]["name"])
        self.participation = cfg["model"]["participation"]
        self.theta = model.theta(cfg["model"]["params"])
        self.weights = (cfg.get("optimizer") or {}).get("weights") or "none"
        self.alpha = float(alpha)
        self.zcrit = float(stats.norm.ppf(1 - alpha / 2))
        self.s = noise_scale_of(cfg)
        self.s2 = self.s * self.s
        # the drifting coefficient of the Kalman filter
        name = ((cfg.get("time_varying") or {}).get("parameters") or [None])[0] \
            or DRIFT_PARAMETER.get(model.name)
        self.drift = name
        self.j = model.index(name) if name in model.param_names else None
        se = ((cfg["model"].get("std_errors") or {}).get(name) if name else None)
        self.beta_var = float(se) ** 2 if se is not None and math.isfinite(float(se)) else 0.0
        tv = cfg.get("time_varying") or {}
        q = float(tv.get("q") or (cfg.get("live") or {}).get("q") or 0.0)
        self.q_tilde = q / self.s2 if self.s2 > 0 else 0.0
        self.kf = (np.nan, np.inf, True)          # (m, P, diffuse)
        if kalman_prior == "config" and self.j is not None:
            # the config's estimate and standard error as the state before the first fill (the
            # same as a pseudo-fill y = beta·x, r = P0·x² in front of the offline filter)
            p0 = self.beta_var / self.s2 if self.beta_var > 0 else 1e6 * max(1.0, self.theta[self.j] ** 2)
            self.kf = (float(self.theta[self.j]), p0, False)
        elif kalman_prior != "diffuse" and kalman_prior != "config":
            raise ValueError("kalman_prior must be 'config' or 'diffuse'")
        self.last_ns: int | None = None
        # SGD: the free parameters of the config, its loss, a learning rate with memory
        opt = cfg.get("optimizer") or {}
        settings = opt.get("settings") or {}
        options = settings.get("options") or {}
        free_names = list(cfg["model"].get("free") or [p.name for p in model.params if not p.fixed])
        self.free = np.array([model.index(n) for n in free_names], dtype=np.int64)
        bounds = cfg["model"].get("bounds") or {}
        self.lo = np.array([(bounds.get(n) or [model.params[model.index(n)].lower])[0]
                            for n in free_names], dtype=np.float64)
        self.hi = np.array([(bounds.get(n) or [None, model.params[model.index(n)].upper])[1]
                            for n in free_names], dtype=np.float64)
        self.lo = np.where(np.isnan(self.lo), -np.inf, self.lo)
        self.hi = np.where(np.isnan(self.hi), np.inf, self.hi)
        self.loss = opt.get("loss") or "soft_l1"
        self.f_scale = float(opt.get("f_scale") or 1.0)
        self.sgd_window = float(sgd_window if sgd_window is not None else options.get("window", 500))
        self.sgd_t0 = float(sgd_t0 if sgd_t0 is not None else options.get("t0", 100))
        start = self.theta.copy() if sgd_start == "config" else model.defaults
        if sgd_start == "defaults":
            for i, p in enumerate(model.params):
                if i not in self.free:
                    start[i] = self.theta[i]
            start[self.free] = np.clip(start[self.free], self.lo, self.hi)
        self.sgd_full = start
        self.sgd_th = None          # the kernel's internal vector (built at the first fill)
        self.sgd_t = 0
        k = self.free.shape[0]
        self._H, self._L = np.zeros((k, k)), np.zeros((k, k))
        self._Jf, self._g, self._step = np.empty(k), np.empty(k), np.empty(k)
        self._J = None
        self.n = 0

    # -- one fill -----------------------------------------------------------------------------------

    def features(self, fill: Mapping):
        """The impact features of one fill (a mapping of the canonical fill columns)."""
        # the timestamp is not a model input (the Kalman step gets it as t_ns) and a text side
        # would cost pandas' mapping: both are handled here, the rest is the calibration's code
        row = {k: [fill[k]] for k in FILL_COLUMNS if k != "timestamp" and fill.get(k) is not None}
        if "side" in row:
            row["side"] = [side_sign(fill["side"])]
        extra = ("weight",) if self.weights == "column" and "weight" in row else ()
        # a fill without an input the model needs is refused (DataError naming the column), never
        # predicted as NaN: the monitor counts it and fills what it can from the market state first
        return impact_features(row, self.participation, extra_columns=extra, model=self.model,
                               source="fill")

    def weight(self, f) -> float:
        if self.weights == "noise":
            return float(1.0 / f.expected_noise_bps[0])
        if self.weights == "column":
            return float(f.extra["weight"][0]) if "weight" in f.extra else 1.0
        return 1.0

    def predict(self, f) -> dict:
        """Prediction of the live config and its interval, for features `f` (one row)."""
        pred = float(self.model.predict(self.theta, f)[0])
        w = self.weight(f)
        r = 1.0 / (w * w) if w > 0 else math.inf
        x = float(self.model.jacobian(self.theta, f, [self.j])[0, 0]) if self.j is not None else 0.0
        sd = math.sqrt(self.s2 * r + x * x * self.beta_var)
        return {"predicted_bps": pred, "sd_bps": sd, "lower_bps": pred - self.zcrit * sd,
                "upper_bps": pred + self.zcrit * sd, "x": x, "r": r, "w": w}

    def step(self, f, cost_bps: float | None = None, t_ns: int | None = None) -> dict:
        """Predict one fill, then learn from it (Kalman and SGD); `f` is its one-row features."""
        cost = float(f.cost_bps[0]) if cost_bps is None else float(cost_bps)
        if t_ns is None and f.timestamp_ns is not None:
            t_ns = int(f.timestamp_ns[0])
        out = self.predict(f)
        pred, sd = out["predicted_bps"], out["sd_bps"]
        out["realised_bps"] = cost
        out["residual_bps"] = cost - pred
        out["z"] = (cost - pred) / sd if sd > 0 else math.nan
        out["covered"] = bool(out["lower_bps"] <= cost <= out["upper_bps"])
        if self.j is not None:
            out.update(self._kalman(f, cost, out["x"], out["r"], t_ns))
        out.update(self._sgd(f, cost, out["w"]))
        self.n += 1
        return out

    def step_fill(self, fill: Mapping) -> dict:
        """`step` on a fill mapping (its timestamp: ISO text, a Timestamp or ns)."""
        ts = pd.Timestamp(fill["timestamp"]) if "timestamp" in fill else None
        t_ns = None if ts is None else int((ts.tz_localize("UTC") if ts.tzinfo is None else ts).value)
        return self.step(self.features(fill), t_ns=t_ns)

    def _kalman(self, f, cost, x, r, t_ns) -> dict:
        theta0 = self.theta.copy()
        theta0[self.j] = 0.0
        y = cost - float(self.model.predict(theta0, f)[0])
        dt = 0.0 if self.last_ns is None or t_ns is None else (t_ns - self.last_ns) / NS_PER_DAY
        if t_ns is not None:
            self.last_ns = t_ns
        m, P, diffuse = self.kf
        if not (x != 0.0 and math.isfinite(x) and math.isfinite(r) and math.isfinite(y)):
            r = math.inf      # no information about the coefficient: the filter only predicts
        mp, pp, m, P, diffuse, v, S = kf_step(m, P, diffuse, y, x if x != 0.0 else 1.0, r, dt,
                                              self.q_tilde)
        self.kf = (m, P, diffuse)
        e = v / math.sqrt(self.s2 * S) if math.isfinite(v) and S > 0 else math.nan
        sd = math.sqrt(self.s2 * P) if math.isfinite(P) else math.nan
        return {"kalman_pred": mp, "kalman_value": m, "kalman_sd": sd,
                "kalman_lower": m - self.zcrit * sd, "kalman_upper": m + self.zcrit * sd,
                "innovation_z": e}

    def _sgd(self, f, cost, w) -> dict:
        code, cols, th = sgd_inputs(self.model, f, self.sgd_full)
        if self.sgd_th is None:
            self.sgd_th = th
            self._J = np.empty(th.shape[0])
        c = cols[0]
        if not (np.isfinite(c).all() and math.isfinite(cost) and math.isfinite(w)):
            return {"sgd": dict(zip(self.free_names, self.sgd_th[self.free].tolist()))}
        eta_min = 1.0 / self.sgd_window if self.sgd_window > 0 else 0.0
        pred = sgd_step(code, c[0], c[1], c[2], c[3], cost, w, self.sgd_t, self.sgd_th, self.free,
                        self.lo, self.hi, LOSS_CODES[self.loss], self.f_scale, self.sgd_t0, eta_min,
                        self._H, self._L, self._J, self._Jf, self._g, self._step)
        self.sgd_t += 1
        self.sgd_full[:] = self.sgd_th[:self.sgd_full.shape[0]]
        return {"sgd_pred": float(pred), "sgd": dict(zip(self.free_names, self.sgd_th[self.free].tolist()))}

    @property
    def free_names(self) -> list[str]:
        return [self.model.params[i].name for i in self.free]

    def state(self) -> dict:
        m, P, diffuse = self.kf
        return {"model": self.model.name, "params": self.model.as_dict(self.theta),
                "drift_parameter": self.drift, "kalman": None if diffuse else
                {"value": m, "sd": math.sqrt(self.s2 * P)}, "q": self.q_tilde * self.s2,
                "noise_scale": self.s, "sgd": dict(zip(self.free_names, self.sgd_full[self.free].tolist())),
                "fills": self.n}
