import os
from pathlib import Path

import pytest

# the UI tests' shared fixtures (sample fills and fits, stores, sessions): defined once, in ui_fixtures.py
pytest_plugins = ["ui_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EXECAL_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (set EXECAL_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
