"""Read-only arrays: results are immutable, arrays included."""
from __future__ import annotations

import numpy as np


def readonly(a: np.ndarray | None) -> np.ndarray | None:
    """A read-only view of `a` (None stays None)."""
    if a is None:
        return None
    a = np.asarray(a)
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def freeze_arrays(obj, names) -> None:
    """Replace the array fields `names` of a frozen dataclass with read-only views."""
    for name in names:
        object.__setattr__(obj, name, readonly(getattr(obj, name)))
