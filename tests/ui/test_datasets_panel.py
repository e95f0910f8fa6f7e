"""The Datasets panel's server side: the data-roots allow-list (the browser sends keys the server
offered, never paths), the manifest-only summary, the background job's body (streamed fit, exact
aggregates, a stratified sample) with progress, and the rendered result's size."""
from __future__ import annotations

import json
import os

import numpy as np
import plotly.io as pio
import pytest

from execal.components import dataset_figures as D
from execal.components import datasets_panel as P
from execal.models.core.errors import CalibrationError
from execal.models.data.dataset import ingest, open_dataset
from execal.models.data.sample import generate_fills_dataset, random_walk_trades
from execal.models.data.schema import DataError
from execal.models.impact.fit import Calibrator


class DictCache(dict):
    def set(self, key, value):
        self[key] = value


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("roots")
    root = base / "data"
    generate_fills_dataset(root / "desk" / "fills", 30_000, days=6, seed=5)
    (root / "empty").mkdir()
    outside = base / "outside"
    generate_fills_dataset(outside, 1_000, days=2, seed=6)
    (root / "link").symlink_to(outside, target_is_directory=True)
    return [root.resolve()], outside


def test_only_datasets_under_the_roots_are_offered_and_resolved(roots, tmp_path):
    rts, outside = roots
    offered = P.list_datasets(rts)
    assert [d["key"] for d in offered] == ["0:desk/fills"]
    assert P.resolve("0:desk/fills", rts) == rts[0] / "desk" / "fills"
    for key in (str(outside), "0:../outside", "0:link", "0:empty", "1:desk/fills", None, 3):
        with pytest.raises(DataError, match="data roots"):
            P.resolve(key, rts)
    assert P.data_roots({P.ENV_ROOTS: f"{rts[0]}{os.pathsep}{tmp_path / 'missing'}"}) == rts
    assert P.data_roots({}) == []


def test_summary_and_filters_come_from_the_manifest(roots):
    rts, _ = roots
    out = P.dataset_summary("0:desk/fills", {"venues": ["okx"], "start": "2024-09-03"}, rts)
    s = out["summary"]
    frame = open_dataset(rts[0] / "desk" / "fills").select(venues=["okx"], start="2024-09-03").to_frame()
    assert s["venues"] == ["okx"] and s["days"] == 4
    assert s["rows"] >= len(frame)        # partitions touched; the time filter applies when reading
    assert out["coverage"]["rows"].sum() == s["rows"]
    facts = dict(D.summary_rows(s))
    assert facts["Venues"] == "okx" and "partitions touched" in facts["Rows"]
    fig = D.coverage_figure(out["coverage"])
    assert sum(sum(t.y) for t in fig.data) == s["rows"]
    choices = D.filter_choices(out["all"])
    assert [c["value"] for c in choices["venues"]] == ["binance", "coinbase", "okx"]


def test_job_runs_the_streamed_fit_and_exact_aggregates_with_progress(roots):
    rts, _ = roots
    cache = DictCache()
    job = P.job_for("0:desk/fills", P._filters(None, ["okx", "binance"], None, None), "power_law",
                    "soft_l1", 0, "local", rts)
    with pytest.raises(Exception, match="no Dask cluster"):
        P.job_for("0:desk/fills", {}, "power_law", "soft_l1", 0, "cluster", rts)
    seen = []
    key = P.run_job(cache, job, lambda pct, label: seen.append(pct), rts)
    assert seen == sorted(seen) and seen[-1] == 100 and len(seen) > 5
    payload = json.loads(cache[key])
    frame = open_dataset(rts[0] / "desk" / "fills").select(venues=["okx", "binance"]).to_frame()
    ref = Calibrator("power_law", loss="soft_l1").fit(frame)
    assert payload["result"]["params"]["delta"] == pytest.approx(ref.params["delta"], rel=1e-10)
    agg = payload["diagnostics"]
    assert agg["rows"] == ref.features.n
    res = ref.residuals_bps
    for q, v in agg["quantiles"]["residual_bps"].items():
        assert v == pytest.approx(float(np.quantile(res, float(q))), rel=1e-12, abs=1e-12)
    assert sum(b["n"] for b in agg["bins"]) == ref.features.n
    assert 0 < agg["sample"]["rows"] <= 2 * 5 * 300 and "stratified sample" in agg["note"]
    # rendered: exact lines and sampled points, labelled, well inside the 5 MB response limit
    parts = P.render_result(cache, key)
    fig = next(p.figure for p in parts if getattr(p, "figure", None) is not None)
    names = [t.name for t in fig.data]
    assert any("stratified sample" in n for n in names) and any("exact" in n for n in names)
    assert len(pio.to_json(fig)) < 5 * 2**20
    assert "No streamed fit" in str(P.render_result(cache, None))


def test_the_app_shows_the_panel_with_the_servers_datasets(roots, tmp_path, monkeypatch):
    rts, _ = roots
    monkeypatch.setenv(P.ENV_ROOTS, str(rts[0]))
    monkeypatch.delenv("EXECAL_DASK_SCHEDULER", raising=False)
    from execal.app import create_app

    app = create_app(cache_dir=str(tmp_path / "cache"))
    page = json.dumps(json.loads(app.server.test_client().get("/_dash-layout").get_data(as_text=True)))
    assert "0:desk/fills" in page and "Dask cluster (none configured)" in page
