"""CSV that a spreadsheet cannot execute: text cells starting with a formula character are
neutralised (OWASP's CSV-injection advice: prefix a single quote), numbers are left untouched.

Every CSV execal writes from user data (the CLI's `predict`, the dashboard's predictions
download) goes through `neutralise`.
"""
from __future__ import annotations

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "|")


def neutralise(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot start a spreadsheet formula (numbers and times unchanged)."""
    out = None
    for name in frame.columns:
        col = frame[name]
        if not (pd.api.types.is_object_dtype(col.dtype) or pd.api.types.is_string_dtype(col.dtype)):
            continue
        text = col.astype("string")
        risky = text.str.startswith(FORMULA_STARTS).fillna(False).to_numpy(bool)
        if risky.any():
            out = frame.copy() if out is None else out
            out[name] = text.mask(risky, "'" + text)
    return frame if out is None else out
