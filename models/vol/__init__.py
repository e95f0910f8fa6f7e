"""Volatility: realised estimators and jump tests, GARCH family, Markov regimes, Merton jumps, HAR-RV.

One estimator for every model: `execal.models.vol.base.VolatilityCalibrator(model, **settings)`
(`fit(data)`, `fix(params, data)`), one result type (`VolatilityResult`); the models are listed in
`execal.models.core.registry.ENTRIES` and imported on first use.
"""
