"""Errors and warnings every area raises (data errors live with the data contract)."""


class CalibrationError(ValueError):
    """A calibration that cannot be run on this data or with these settings; says why."""


class CalibrationWarning(UserWarning):
    """A calibration that ran but whose result needs care (not converged, at a bound, ...)."""
