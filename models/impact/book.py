"""execal's power law fitted to the walk-the-book cost curve of real order books (`data.book`)."""
from __future__ import annotations

import numpy as np
import pandas as pd  # noqa: F401

from execal.models.impact.features import Features
from execal.models.impact.fit import Calibrator


def fit_book_power_law(curve: pd.DataFrame, *, reference_size: float = 1.0, loss: str = "soft_l1",
                       f_scale_bps: float = 1.0):
    """Fit execal's `power_law` impact model to a walk-the-book curve (`market_impact_curve`).

    The book has no volatility or ADV, so the model's units are pinned to the book's own:
    sigma = 1e-4 (so 1e4·Y·sigma = Y bps) and participation = size / `reference_size`. The fitted
    `Y` is then the cost over the half spread (bps) of an order of `reference_size` base units,
    `delta` the curvature of the book, and h·spread/2 the quoted half spread (h fixed at 1).
    Rows where the order exhausts the visible depth are left out. Returns a CalibrationResult.
    """
    ok = curve["cost_bps"].notna().to_numpy() & curve["half_spread_bps"].notna().to_numpy()
    used = curve.loc[ok]
    n = len(used)
    features = Features.from_arrays(
        participation=used["size"].to_numpy() / float(reference_size),
        sigma=np.full(n, 1e-4), spread_bps=2.0 * used["half_spread_bps"].to_numpy(),
        cost_bps=used["cost_bps"].to_numpy(), source="walk-the-book curve",
        labels={k: used[k].astype(str).to_numpy() for k in ("venue", "symbol") if k in used.columns},
    )
    calibrator = Calibrator(model="power_law", loss=loss, f_scale=f_scale_bps, weights="none")
    return calibrator.fit(features)
