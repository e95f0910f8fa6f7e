"""Fixtures the UI tests share (loaded by conftest.py as a pytest plugin): the bundled sample fills and
their fits, server-side stores on a private cache, and session ids. Defined once here, never per module.

Scopes: the sample data and its fits are built once per test session (they are read-only); stores are
fresh per test (`module_stores` once per module, for tests that share expensive fits). Every per-process
cache of the panels (`shell.LRU`) is emptied around every test: result keys are deterministic (same data,
same settings, same key), so a result one test prepared would otherwise answer for another test's cache.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Mapping

import pytest

from execal.components import results as results_mod
from execal.components import shell
from execal.components import store as store_mod
from execal.models.data.io import load
from execal.models.impact.fit import Calibrator

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "sample_data"
SAMPLE_FILLS = SAMPLE_DIR / "fills.csv"
# the session the calibrate / export tests act as (a second one for "not this session's result")
SESSION = "0b9f6f1e-2a8e-4b51-9d64-3f1c2a7b8e90"
OTHER_SESSION = "5d1c0a34-7f2e-4e0b-a1c9-2b8f9e6d4c11"


def open_stores(cache_dir: Path) -> tuple[store_mod.SessionStore, results_mod.ResultStore]:
    """A SessionStore and a ResultStore on one private cache directory (as create_app makes them)."""
    cache = store_mod.open_cache(cache_dir)
    return store_mod.SessionStore(cache), results_mod.ResultStore(cache)


def text_of(component) -> str:
    """All text inside a Dash component tree."""
    if component is None:
        return ""
    if isinstance(component, (str, int, float)):
        return str(component)
    if isinstance(component, (list, tuple)):
        return " ".join(text_of(c) for c in component)
    return text_of(getattr(component, "children", None))


def post_callback(client, output_prefix: str, values: Mapping[str, Any], *, changed: str) -> tuple[dict, Any]:
    """Call the app's callback whose output starts with `output_prefix` (e.g. "..view-corr.data") through
    Dash's own endpoint, as the browser would: each input and state takes its value from `values` by
    component id (None when absent) and `changed` ("id.property") is what fired it.
    Returns (the callback's record in /_dash-dependencies, the response)."""
    deps = client.get("/_dash-dependencies").get_json()
    callback = next(d for d in deps if d["output"].startswith(output_prefix))
    outputs = [{"id": i, "property": p} for i, p in re.findall(r"\.\.?([\w-]+)\.(\w+)", callback["output"])]
    body = {"output": callback["output"], "outputs": outputs, "changedPropIds": [changed],
            **{part: [{"id": d["id"], "property": d["property"], "value": values.get(d["id"])}
                      for d in callback[part]] for part in ("inputs", "state")}}
    return callback, client.post("/_dash-update-component", json=body)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def truth() -> dict:
    """The generator's ground truth for the bundled samples (sample_data/ground_truth.json)."""
    return json.loads((SAMPLE_DIR / "ground_truth.json").read_text())


@pytest.fixture(scope="session")
def sample():
    """The bundled sample fills (20,000 parent orders on two venues), loaded and validated."""
    return load(str(SAMPLE_FILLS))


@pytest.fixture(scope="session")
def fitted(sample):
    """The default impact model fitted to the sample, the latest 20 % of rows held out."""
    return Calibrator(test_fraction=0.2).fit(sample)


@pytest.fixture(scope="session")
def segmented(sample):
    """The default impact model fitted per venue of the sample."""
    return Calibrator().fit_segments(sample, by=("venue",))


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def fresh_process_caches():
    shell.clear_process_caches()
    yield
    shell.clear_process_caches()


@pytest.fixture
def stores(cache_dir):
    """(SessionStore, ResultStore) on a fresh private cache."""
    st, results = open_stores(cache_dir)
    yield st, results
    st.cache.close()


@pytest.fixture
def st(stores) -> store_mod.SessionStore:
    return stores[0]


@pytest.fixture
def results(stores) -> results_mod.ResultStore:
    return stores[1]


@pytest.fixture(scope="module")
def module_stores(tmp_path_factory):
    """(SessionStore, ResultStore) shared by one test module (fits too slow to repeat per test)."""
    st, results = open_stores(tmp_path_factory.mktemp("module-stores") / "cache")
    yield st, results
    st.cache.close()


@pytest.fixture
def session() -> str:
    """A fresh session id."""
    return store_mod.new_session_id()


@pytest.fixture
def fills_key(st) -> str:
    """The sample fills loaded as `SESSION`'s active dataset."""
    return st.load_bytes(SAMPLE_FILLS.read_bytes(), name="fills.csv", session_id=SESSION)
