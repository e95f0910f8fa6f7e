"""Rolling error metrics of predicted vs realised cost, per key (a venue, a symbol, "all").

Over the last `window` fills of each key: RMSE, bias (mean of predicted − realised, the sign
convention of the calibration metrics: positive = the model over-predicts cost), mean absolute
error, and the coverage of the prediction interval (the share of realised costs inside it,
against its nominal level). Each key keeps a bounded deque; the numbers are computed on demand
(a status line every few seconds), not per fill.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np


class RollingErrors:
    def __init__(self, window: int = 200, nominal: float = 0.95):
        self.window = int(window)
        self.nominal = float(nominal)
        self.rows: dict[str, deque] = {}
        self.totals: dict[str, int] = {}

    def add(self, key: str, realised: float, predicted: float, lower: float, upper: float) -> None:
        if not (math.isfinite(realised) and math.isfinite(predicted)):
            return
        q = self.rows.get(key)
        if q is None:
            q = self.rows[key] = deque(maxlen=self.window)
            self.totals[key] = 0
        q.append((realised, predicted, lower <= realised <= upper))
        self.totals[key] += 1

    def metrics(self, key: str) -> dict:
        q = self.rows.get(key)
        if not q:
            return {"n": 0, "rmse_bps": None, "bias_bps": None, "mae_bps": None, "coverage": None,
                    "nominal": self.nominal, "total": 0}
        a = np.array(q, dtype=np.float64)
        err = a[:, 1] - a[:, 0]
        return {"n": int(a.shape[0]), "rmse_bps": float(np.sqrt(np.mean(err * err))),
                "bias_bps": float(err.mean()), "mae_bps": float(np.abs(err).mean()),
                "coverage": float(a[:, 2].mean()), "nominal": self.nominal,
                "total": self.totals[key]}

    def all(self) -> dict[str, dict]:
        return {k: self.metrics(k) for k in self.rows}
