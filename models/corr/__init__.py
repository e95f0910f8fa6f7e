"""Correlation structures: how assets and venues move together, and what that costs an execution.

Rooms: `ticks` (tick series from trades or mid quotes, previous-tick and refresh-time grids),
`hy` (Hayashi–Yoshida covariance and the lead–lag cross-correlation), `realized` (realised
covariance on synchronised grids and the Epps curve), `panel` (aligned multi-asset returns),
`dcc` (DCC-GARCH, Engle 2002, margins from `arch`), `shrinkage` (Ledoit–Wolf), `regimes`
(correlation per given regime label), `basket` (Almgren–Chriss cost of a basket with correlated
risk), `hac` (the long-run variance every standard error here uses), `spec` (the registry's view).

Imports only execal.models.core, execal.models.data and itself (tests/core/test_architecture.py).
"""
