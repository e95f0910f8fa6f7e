"""execal's core: what every area shares and nothing else.

Parameters and units (`params`), the one optimizer report (`report`), read-only arrays for immutable
results (`frozen`), the one JSON cleaner (`jsonable`), the errors every area raises (`errors`), the
result contract (`result`) and the registry of models, losses and optimizers (`registry`).

Imports nothing of execal (tests/core/test_architecture.py holds this).
"""
__version__ = "0.2.0"
