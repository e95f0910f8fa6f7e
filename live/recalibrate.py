"""Recalibration on the trailing window: refit, compare out of sample, write a new config version.

The trailing fills (time order) are split: the oldest 1 − `holdout` are refitted with the live
config's own settings (model, loss, f_scale, weights, participation, fixed parameters and bounds),
the newest `holdout` are predicted by both the live config and the candidate, neither of which saw
them. `models.live.versions.compare_out_of_sample` applies the switch rule; the candidate is written
to the history whatever the decision (parent = the live config's hash, the data window, the reason,
the comparison), so a user can still switch to it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from execal.models.impact.config import predict_from_config
from execal.models.impact.fit import Calibrator
from execal.models.live.versions import ConfigHistory, compare_out_of_sample

_FRAME_COLUMNS = ("timestamp", "symbol", "venue", "side", "quantity", "arrival_price", "exec_price",
                  "cost_bps", "duration_s", "adv", "market_volume", "volatility", "spread_bps", "order_id")


def calibrator_of(config: Mapping) -> Calibrator:
    """A calibrator with the settings a config was fitted with."""
    model = config["model"]
    opt = config.get("optimizer") or {}
    fixed = {name: model["params"][name] for name in model.get("fixed") or []
             if name in model["params"] and name != "h"}
    bounds = {k: tuple(v) for k, v in (model.get("bounds") or {}).items()}
    free = tuple(n for n in model.get("free") or [] if n == "h")
    return Calibrator(model=model["name"], loss=opt.get("loss") or "soft_l1",
                      f_scale=float(opt.get("f_scale") or 1.0), weights=opt.get("weights") or "auto",
                      participation=model.get("participation", "adv"), fixed=fixed, bounds=bounds,
                      free=free, optimizer="lm_normal")


def refit(config: Mapping, fills: pd.DataFrame, *, reason: str, history: ConfigHistory | None = None,
          parent: str | None = None, holdout: float = 0.3, min_improvement: float = 0.05,
          alpha: float = 0.05) -> dict:
    """{config, version, params, window, comparison} of a refit on `fills` (the trailing window)."""
    frame = fills[[c for c in _FRAME_COLUMNS if c in fills.columns]].copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    n = len(frame)
    n_test = max(1, int(round(n * holdout)))
    train, test = frame.iloc[:n - n_test], frame.iloc[n - n_test:]
    result = calibrator_of(config).fit(train)
    window = {"fills": n, "train_fills": len(train), "test_fills": len(test),
              "start": train["timestamp"].iloc[0].isoformat(), "train_end": train["timestamp"].iloc[-1].isoformat(),
              "end": test["timestamp"].iloc[-1].isoformat()}
    candidate = result.to_config({"file": "live trailing window", "start": window["start"],
                                  "end": window["train_end"], "filters": {}})
    candidate["live"] = {"refit_of": parent, "reason": reason}
    realised = test["cost_bps"].to_numpy(dtype=np.float64)
    cmp = compare_out_of_sample(realised, predict_from_config(config, test, segments=False),
                                predict_from_config(candidate, test, segments=False),
                                min_improvement=min_improvement, alpha=alpha)
    cmp["converged"] = bool(result.report.converged)
    if not result.report.converged:
        cmp["switch"] = False
        cmp["why"] = "the refit did not converge"
    version = None
    if history is not None:
        entry = history.add(candidate, reason=reason, parent=parent, window=window, comparison=cmp)
        version = entry["version"]
        candidate = history.load(version)
    return {"config": candidate, "version": version, "params": result.params, "window": window,
            "comparison": cmp}
