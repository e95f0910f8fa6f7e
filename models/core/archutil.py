"""What the two areas that fit `arch` models share (volatility's GARCH family and the DCC margins of
correlation): the rescaling rule and the standard errors read on first use. `arch` itself is imported
by the areas, never here."""
from __future__ import annotations

from typing import Mapping

import numpy as np

DEFAULT_SCALE = 100.0


def choose_scale(values: np.ndarray, scale) -> float:
    """The factor returns are multiplied by before arch sees them: `scale` when given (> 0), else
    arch's rescale rule — ×100, or the power of ten that brings the scaled variance into [1, 1000]."""
    if scale not in (None, "auto"):
        s = float(scale)
        if not s > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        return s
    var = float(np.var(values))
    s = DEFAULT_SCALE
    if var > 0:
        while var * s * s < 1.0:
            s *= 10.0
        while var * s * s > 1000.0:
            s /= 10.0
    return s


def arch_std_errors(res) -> Mapping:
    """arch's standard errors of a fit (its robust covariance from a numerical Hessian: a large share
    of a fit's time that a forecast or a correlation path never needs); give it to
    `core.result.LazyMapping` through functools.partial so they are computed on first access."""
    return res.std_err
