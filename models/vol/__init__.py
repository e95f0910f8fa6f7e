"""Volatility: realised estimators and jump tests, GARCH family, Markov regimes, Merton jumps."""
