"""execal's numerical core, in areas over a small shared base.

`core` (parameters, the optimizer report, frozen results, JSON cleaning, errors, the registry) imports
nothing of execal; `data` (schema, readers, captures, bars, enrichment, sample generator) imports only
`core`; each area (`impact`, `vol`, `surface`) imports `core` and `data` and never another area.
Nothing here imports Dash, plotly or `execal.components` (tests/core/test_architecture.py holds all this).
"""
