"""Out-of-core calibration (execal.models.impact.outofcore) against the in-memory Calibrator on the
same rows: parameters to 1e-10 relative for several models and losses, standard errors, the
usable-row report, metrics, the exact time split, filters pushed down, segments, the day
bootstrap from reweighted day sums, and a two-process Dask LocalCluster giving identical numbers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from execal.models.core.errors import CalibrationError
from execal.models.data.dataset import ingest, open_dataset
from execal.models.data.sample import _to_file_fills, generate_fills
from execal.models.impact.config import predict_from_config
from execal.models.impact.fit import Calibrator
from execal.models.impact.outofcore import fit_dataset, fit_segments_dataset

SMALL = {"task_rows": 15_000, "batch_rows": 4_000}    # many tasks and batches on small data


def rel(a: dict, b: dict, names=None) -> float:
    names = names or a.keys()
    return max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-300) for k in names)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """64,000 fills over 8 days with rows the models must drop (missing or bad volatility,
    negative spread, zero duration), ingested in chunks."""
    tmp = tmp_path_factory.mktemp("ooc")
    frame, _ = generate_fills(64_000, seed=21, days=8)
    out = _to_file_fills(frame)
    rng = np.random.default_rng(0)
    out["volatility"] = out["volatility"].astype(object)
    out.loc[rng.choice(len(out), 40, replace=False), "volatility"] = ""
    out.loc[rng.choice(len(out), 25, replace=False), "volatility"] = -0.01
    out.loc[rng.choice(len(out), 30, replace=False), "spread_bps"] = -1.0
    out.loc[rng.choice(len(out), 20, replace=False), "duration_s"] = 0
    path = tmp / "fills.csv"
    out.to_csv(path, index=False)
    ingest([path], tmp / "ds", chunk_rows=20_000)
    return open_dataset(tmp / "ds")


@pytest.fixture(scope="module")
def frame(dataset):
    return dataset.all().to_frame()


CASES = [("power_law", "soft_l1", 0.0), ("power_law", "huber", 0.25), ("sqrt", "soft_l1", 0.0),
         ("almgren", "cauchy", 0.1), ("linear", "linear", 0.0), ("istar", "arctan", 0.0)]


@pytest.mark.parametrize("model,loss,test_fraction", CASES)
def test_streamed_fit_equals_the_in_memory_fit(dataset, frame, model, loss, test_fraction):
    cal = Calibrator(model, loss=loss, test_fraction=test_fraction)
    ref = cal.fit(frame)
    got = fit_dataset(cal, dataset, **SMALL)
    assert got.source["tasks"] >= 4
    assert rel(got.params, ref.params) < 1e-10
    assert rel(got.std_errors, ref.std_errors, ref.free) < 1e-8
    assert got.report.status == ref.report.status and got.report.nfev == ref.report.nfev
    assert got.report.cost == pytest.approx(ref.report.cost, rel=1e-12)
    assert got.n_train == ref.n_train and got.rows_used == ref.features.n
    # the same rows dropped for the same reasons, with the same first row numbers
    assert [d.to_dict() for d in got.validation.dropped] == [d.to_dict() for d in ref.validation.dropped]
    assert got.validation.rows_read == ref.validation.rows_read == len(frame)
    for key in ("n", "rmse_bps", "mae_bps", "bias_bps", "r2", "z_mean", "z_std", "z_rms"):
        assert got.in_sample[key] == pytest.approx(ref.in_sample[key], rel=1e-9, abs=1e-12), key
    if test_fraction:
        for key in ("n", "rmse_bps", "bias_bps", "r2", "z_std"):
            assert got.out_of_sample[key] == pytest.approx(ref.out_of_sample[key], rel=1e-9), key
        assert got.n_test == int(round(test_fraction * ref.features.n))


def test_group_metrics_and_the_config(dataset, frame):
    cal = Calibrator("power_law", loss="soft_l1")
    ref = cal.fit(frame)
    got = fit_dataset(cal, dataset, group_metrics=True, **SMALL)
    for name in ("venue", "symbol", "side", "size_bucket"):
        want, have = ref.metrics[f"by_{name}"], got.metrics[f"by_{name}"]
        assert set(want) == set(have), name
        for label in want:
            for key in ("n", "rmse_bps", "bias_bps", "mae_bps"):
                assert have[label][key] == pytest.approx(want[label][key], rel=1e-9), (name, label, key)
    config = got.to_config({"file": dataset.name})
    assert config["data"]["rows_used"] == ref.features.n
    assert config["data"]["start"] == frame["timestamp"].min().isoformat()
    np.testing.assert_allclose(predict_from_config(config, frame), ref.predict(frame), rtol=1e-9)
    assert "out of core" in got.summary()


def test_filters_are_pushed_down_and_fit_the_filtered_rows(dataset, frame):
    view = dataset.select(venues=["okx"], start="2024-09-02", end="2024-09-07")
    ts = frame["timestamp"]
    sub = frame[(frame["venue"] == "okx") & (ts >= pd.Timestamp("2024-09-02", tz="UTC"))
                & (ts < pd.Timestamp("2024-09-07", tz="UTC"))].reset_index(drop=True)
    cal = Calibrator("power_law", loss="soft_l1")
    ref = cal.fit(sub)
    got = fit_dataset(cal, view, **SMALL)
    assert rel(got.params, ref.params) < 1e-10
    assert got.validation.rows_read == len(sub)
    assert all("/venue=okx/" in f for f in view.files)
    assert got.source["filters"]["venues"] == ["okx"]


def test_segments_by_venue(dataset, frame):
    cal = Calibrator("power_law", loss="soft_l1")
    ref = cal.fit_segments(frame, by=("venue",))
    got = fit_segments_dataset(cal, dataset, by=("venue",), **SMALL)
    assert rel(got.pooled.params, ref.pooled.params) < 1e-10
    assert [dict(s.key) for s in got.segments] == [dict(s.key) for s in ref.segments]
    for a, b in zip(got.segments, ref.segments):
        assert rel(a.result.params, b.result.params) < 1e-10
    assert got.test["wald"]["statistic"] == pytest.approx(ref.test["wald"]["statistic"], rel=1e-7)
    assert got.test["chow"]["statistic"] == pytest.approx(ref.test["chow"]["statistic"], rel=1e-7)
    assert got.test["chow"]["df2"] == ref.test["chow"]["df2"]


def test_bootstrap_by_day_one_step_is_the_refit_for_a_linear_least_squares_model(dataset, frame):
    # linear in its one free parameter under the linear loss: one Newton step from the estimate
    # lands on each resample's optimum, so the day-sum bootstrap is the in-memory refit bootstrap
    cal = Calibrator("linear", loss="linear", tol=1e-15)
    ref = cal.bootstrap(frame, n=25, seed=5)
    got = fit_dataset(cal, dataset, bootstrap=25, bootstrap_seed=5, **SMALL)
    assert got.bootstrap.clusters == ref.bootstrap.clusters == 8
    np.testing.assert_allclose(got.bootstrap.samples, ref.bootstrap.samples, rtol=1e-7)
    # and the one-step is not the refit for a nonlinear robust fit, but k steps converge to it
    cal = Calibrator("power_law", loss="soft_l1", tol=1e-15)
    ref = cal.bootstrap(frame, n=12, seed=3)
    one = fit_dataset(cal, dataset, bootstrap=12, bootstrap_seed=3, **SMALL)
    many = fit_dataset(cal, dataset, bootstrap=12, bootstrap_seed=3, bootstrap_steps=6, **SMALL)
    err_one = np.max(np.abs(one.bootstrap.samples - ref.bootstrap.samples) / np.abs(ref.bootstrap.samples))
    err_many = np.max(np.abs(many.bootstrap.samples - ref.bootstrap.samples) / np.abs(ref.bootstrap.samples))
    # (the in-memory refits themselves stop at ~4e-8 from each resample's optimum)
    assert err_many < 1e-7 < 1e-4 < err_one < 1e-2
    assert many.bootstrap.std_errors["delta"] == pytest.approx(ref.bootstrap.std_errors["delta"], rel=1e-6)


def test_what_does_not_run_out_of_core_is_refused(dataset):
    with pytest.raises(CalibrationError, match="lm_normal"):
        fit_dataset(Calibrator("power_law", optimizer="trf"), dataset)
    with pytest.raises(CalibrationError, match="walk_forward"):
        fit_dataset(Calibrator("power_law", walk_forward=2), dataset)
    with pytest.raises(CalibrationError, match="select no partition"):
        fit_dataset(Calibrator("power_law"), dataset.select(venues=["nowhere"]))
    with pytest.raises(CalibrationError, match="venue or symbol"):
        fit_segments_dataset(Calibrator("power_law"), dataset, by=("side",))


def test_a_two_process_dask_cluster_gives_identical_numbers(dataset):
    from dask.distributed import LocalCluster

    from execal.models.data.compute import close_clients

    cal = Calibrator("power_law", loss="soft_l1", test_fraction=0.2)
    here = fit_dataset(cal, dataset, bootstrap=6, bootstrap_seed=1, **SMALL)
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        try:
            there = fit_dataset(cal, dataset, scheduler=cluster.scheduler_address, bootstrap=6,
                                bootstrap_seed=1, **SMALL)
            workers = len(cluster.scheduler_info["workers"])
        finally:
            close_clients()
    assert workers == 2 and there.source["executor"].startswith("dask tcp://")
    assert here.params == there.params
    assert np.array_equal(here.covariance, there.covariance)
    assert np.array_equal(here.bootstrap.samples, there.bootstrap.samples)
    assert here.in_sample == there.in_sample and here.out_of_sample == there.out_of_sample


def test_threads_in_process_give_identical_numbers(dataset):
    cal = Calibrator("almgren", loss="soft_l1")
    one = fit_dataset(cal, dataset, **SMALL)
    two = fit_dataset(cal, dataset, threads=2, **SMALL)
    assert one.params == two.params and np.array_equal(one.covariance, two.covariance)


# --- the command line on a dataset directory -------------------------------------------------------

def run(argv, capsys):
    from execal import cli

    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_ingest_inspect_calibrate_predict(tmp_path, capsys):
    import json

    frame, _ = generate_fills(9_000, seed=31, days=4)
    src = tmp_path / "fills.csv"
    _to_file_fills(frame).to_csv(src, index=False)
    out = tmp_path / "ds"
    code, text, err = run(["ingest", src, "--out", out, "--chunk-rows", 2_000, "--quiet"], capsys)
    assert code == 0, err
    report = json.loads(text)
    assert report["sources"][0]["status"] == "ingested" and report["dataset"]["rows"] == 9_000
    code, text, _ = run(["ingest", src, "--out", out, "--quiet"], capsys)
    assert json.loads(text)["sources"][0]["status"] == "skipped"
    code, text, _ = run(["inspect", out], capsys)
    summary = json.loads(text)
    assert code == 0 and summary["rows"] == 9_000 and summary["partitions"] == 4 * 9
    # calibrate streams the directory with the filters pushed down; same numbers as in memory
    cfg = tmp_path / "cfg.json"
    code, _, err = run(["calibrate", out, "--model", "power_law", "--venue", "okx", "--venue", "binance",
                        "--start", "2024-09-02", "--min-quantity", "0.5", "--out", cfg, "--quiet"], capsys)
    assert code == 0, err
    config = json.loads(cfg.read_text())
    ds = open_dataset(out)
    sub = ds.select(venues=["okx", "binance"], start="2024-09-02", min_quantity=0.5).to_frame()
    ref = Calibrator("power_law").fit(sub)
    assert rel(config["model"]["params"], ref.params) < 1e-10
    assert config["data"]["rows"] == len(sub) and config["data"]["filters"]["venues"] == ["okx", "binance"]
    assert config["data"]["out_of_core"]["passes"] >= 4
    # predict streams batch by batch: the same numbers as predicting the frame
    preds = tmp_path / "preds.csv"
    code, _, err = run(["predict", out, "--config", cfg, "--out", preds], capsys)
    assert code == 0, err
    got = pd.read_csv(preds)
    whole = ds.all().to_frame()
    assert len(got) == len(whole)
    np.testing.assert_allclose(got["predicted_cost_bps"], predict_from_config(config, whole), rtol=1e-12)
    # what is not out of core says so and exits 2
    code, _, err = run(["calibrate", out, "--model", "power_law", "--optimizer", "trf"], capsys)
    assert code == 2 and "lm_normal" in err and "Traceback" not in err
    code, _, err = run(["calibrate", out, "--model", "power_law", "--venue", "nowhere"], capsys)
    assert code == 2 and "no rows" in err
    code, _, err = run(["calibrate", src, "--model", "power_law", "--min-quantity", "1"], capsys)
    assert code == 2 and "dataset directory" in err


def test_where_passes_run(monkeypatch):
    from execal.models.data import compute

    monkeypatch.delenv(compute.ENV_SCHEDULER, raising=False)
    assert compute.scheduler_address() is None and compute.executor().name == "in-process"
    monkeypatch.setenv(compute.ENV_SCHEDULER, "tcp://10.0.0.5:8786")
    assert compute.scheduler_address() == "tcp://10.0.0.5:8786"
    assert compute.scheduler_address("") is None          # --scheduler '' forces this process
    assert compute.scheduler_address("local") is None
    assert compute.executor("", threads=2).name == "in-process (2 threads)"
