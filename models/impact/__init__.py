"""Execution cost: impact models, the calibrator (local, global, multistart, bootstrap, segments),
results, configs, time-varying (Kalman / SGD) calibration."""
