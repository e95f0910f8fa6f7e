"""execal's numerical core: data contract, readers, features, models, optimizers, results.

Never imports Dash or plotly (tests/test_architecture.py checks it).
"""
__version__ = "0.1.0"
