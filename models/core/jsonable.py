"""The one JSON cleaner: every result's `to_dict()` and every config go through `clean`."""
from __future__ import annotations

import datetime as _dt
import math
from typing import Mapping

import numpy as np


def num(x) -> float | None:
    """JSON-ready float: NaN/inf (and what is not a number) become None."""
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def clean(value):
    """JSON/YAML-ready: numpy scalars → Python, NaN/inf → None, tuples → lists, times → ISO text,
    objects with `to_dict()` → their dict."""
    if isinstance(value, Mapping):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [clean(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, (_dt.datetime, _dt.date)):      # pandas Timestamps are datetimes
        return value.isoformat()
    if isinstance(value, np.datetime64):
        return str(value)
    if hasattr(value, "to_dict") and callable(value.to_dict) and not isinstance(value, type):
        return clean(value.to_dict())
    return value
