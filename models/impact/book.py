"""execal's power law fitted to the walk-the-book cost curve of real order books (`data.book`)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from execal.models.impact.features import Features
from execal.models.impact.fit import Calibrator


BLOCK_S = 30.0            # consecutive 1 s snapshots share their book: resample 30-second blocks
BOOTSTRAP_RESAMPLES = 200


def fit_book_power_law(curve: pd.DataFrame, *, reference_size: float = 1.0, loss: str = "soft_l1",
                       f_scale_bps: float = 1.0, block_s: float | None = BLOCK_S,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0):
    """Fit execal's `power_law` impact model to a walk-the-book curve (`market_impact_curve`).

    The book has no volatility or ADV, so the model's units are pinned to the book's own:
    sigma = 1e-4 (so 1e4·Y·sigma = Y bps) and participation = size / `reference_size`. The fitted
    `Y` is then the cost over the half spread (bps) of an order of `reference_size` base units,
    `delta` the curvature of the book, and h·spread/2 the quoted half spread (h fixed at 1).
    Rows where the order exhausts the visible depth are left out. Returns a CalibrationResult.

    Standard errors: the rows are serially dependent (the curve of each size at consecutive 1 s
    snapshots of a book that changes little), so the sandwich errors, which treat the ~24,000
    rows as independent, are 2-4 times too small on the real captures. With a `timestamp` column
    and `block_s`, the covariance is that of a block bootstrap (`resamples` refits on resampled
    `block_s`-second blocks of snapshots, Künsch 1989), and the report says so; the sandwich
    errors stay in `report.settings["sandwich_std_errors"]`. `block_s=None` keeps the sandwich.
    """
    ok = curve["cost_bps"].notna().to_numpy() & curve["half_spread_bps"].notna().to_numpy()
    used = curve.loc[ok]
    n = len(used)
    timestamp_ns = None
    if "timestamp" in used.columns and used["timestamp"].notna().all():
        timestamp_ns = pd.to_datetime(used["timestamp"], utc=True).to_numpy("datetime64[ns]").astype(np.int64)
    features = Features.from_arrays(
        participation=used["size"].to_numpy() / float(reference_size),
        sigma=np.full(n, 1e-4), spread_bps=2.0 * used["half_spread_bps"].to_numpy(),
        cost_bps=used["cost_bps"].to_numpy(), source="walk-the-book curve", timestamp_ns=timestamp_ns,
        labels={k: used[k].astype(str).to_numpy() for k in ("venue", "symbol") if k in used.columns},
    )
    calibrator = Calibrator(model="power_law", loss=loss, f_scale=f_scale_bps, weights="none", seed=seed)
    result = calibrator.fit(features)
    blocks = 0 if timestamp_ns is None or block_s is None else np.unique(timestamp_ns // int(block_s * 1e9)).size
    if blocks < 10 or not result.report.converged:
        if block_s is not None:
            note = (f"standard errors treat the {n} curve rows as independent ({blocks} blocks of "
                    f"{block_s:g} s: too few for a block bootstrap); consecutive snapshots are serially "
                    "dependent, so they are too small")
            result = replace(result, report=replace(result.report, warnings=result.report.warnings + (note,)))
        return result
    boot = calibrator.bootstrap(n=resamples, by="block", block_s=block_s, seed=seed, result=result)
    samples = boot.bootstrap.samples
    cov = np.cov(samples, rowvar=False, ddof=1).reshape(len(result.free), len(result.free))
    settings = {**dict(result.report.settings), "std_errors": f"block bootstrap: {resamples} resamples of "
                f"{blocks} blocks of {block_s:g} s (rows are serially dependent)",
                "sandwich_std_errors": dict(result.std_errors)}
    return replace(boot, covariance=cov, report=replace(result.report, settings=settings))
