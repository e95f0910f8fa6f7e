"""execal: calibrate execution-cost, volatility and option-surface models for crypto markets.

The public API, small on purpose (each name is imported on first use, so `import execal` is cheap)::

    import execal
    data = execal.load("sample_data/fills.csv")                     # any file execal reads
    result = execal.Calibrator(model="power_law").fit(data)         # impact: fit -> CalibrationResult
    print(result.summary())
    tweaked = execal.Calibrator(model="power_law").fix({"Y": 0.7, "delta": 0.5}, data)
    execal.write_config(result, data, "config.json")                # JSON or YAML by suffix, with provenance
    cost_bps = execal.predict(execal.read_config("config.json"), data.frame)
    path = execal.TimeVaryingCalibrator(model="sqrt", method="kalman").fit(data)   # a drifting Y

The README's "Python API" example is run by tests/core/test_api_example.py.

Every estimator follows one contract: settings in `__init__`, `get_params()`, `fit(data) -> Result`,
`fix(params, data) -> Result` of the same type; every result has `params`, `std_errors`,
`conf_int()`, `report` (an `OptimizerReport`), `converged`, `warnings`, `summary()`, `to_dict()`,
`to_config()`.
"""
from __future__ import annotations

import importlib

from execal.models.core import __version__

_API = {
    "load": "execal.models.data.io:load",
    "Dataset": "execal.models.data.schema:Dataset",
    "DataError": "execal.models.data.schema:DataError",
    "Calibrator": "execal.models.impact.fit:Calibrator",
    "TimeVaryingCalibrator": "execal.models.impact.timevarying:TimeVaryingCalibrator",
    "CalibrationError": "execal.models.core.errors:CalibrationError",
    "VolatilityCalibrator": "execal.models.vol.base:VolatilityCalibrator",
    "SurfaceCalibrator": "execal.models.surface.svi:SurfaceCalibrator",
    "StochasticVolCalibrator": "execal.models.surface.heston:StochasticVolCalibrator",
    "prepare_chain": "execal.models.surface.options:prepare_chain",
    "read_config": "execal.models.impact.config:load_config",
    "write_config": "execal.models.impact.config:dump_config",
    "predict": "execal.models.impact.config:predict_from_config",
    "OptimizerReport": "execal.models.core.report:OptimizerReport",
    "registry": "execal.models.core.registry:",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    path = _API.get(name)
    if path is None:
        raise AttributeError(f"module 'execal' has no attribute {name!r}")
    module, _, attr = path.partition(":")
    value = importlib.import_module(module)
    value = getattr(value, attr) if attr else value
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
