"""`execal orderflow`: the four shared captures in one command (the per-venue table of
docs/notes/NOTES-orderflow.md), JSON like the other commands, exit codes 0 / 2 / 3."""
from __future__ import annotations

import json

import pytest

from execal.cli import main

CAPTURES = ("usdm_btcusdt_20240808.gz", "usdm_ethusdt_20240808.gz", "spot_btcusdt_20240808.gz",
            "cm_btcusd_perp_20240808.gz")


@pytest.fixture(scope="module")
def run_all(shared_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("of") / "orderflow.json"
    paths = [str(shared_data / "binance-raw" / c) for c in CAPTURES]
    code = main(["orderflow", *paths, "--out", str(out)])
    return code, json.loads(out.read_text())


@pytest.mark.shared_data
def test_four_venues_in_one_command(run_all, capsys):
    code, doc = run_all
    assert code == 0
    assert doc["kind"] == "orderflow" and doc["paper_r2_10s"] == 0.65
    table = {r["venue"] + " " + r["symbol"]: r for r in doc["table"]}
    assert set(table) == {"binance-usdm BTCUSDT", "binance-usdm ETHUSDT", "binance-spot BTCUSDT",
                          "binance-coinm BTCUSD_PERP"}
    for name, row in table.items():
        # OFI explains a good share of the 10 s mid moves on every venue (the paper: 0.65)
        assert 0.3 < row["r2_10s"] < 0.8, name
        assert row["beta_10s"] > 0 and row["lambda_10s"] > 0 and row["amihud_10s"] > 0, name
        assert row["depth_half_life_s"] > 0 and row["gamma"] > 0, name
        assert row["converged"] is True
    # R² grows with the window (the noise of single events averages out)
    for row in table.values():
        assert row["r2_1s"] < row["r2_60s"]
    v = doc["venues"][0]
    assert set(v["results"]) == {"ofi", "kyle", "propagator", "resilience"}
    assert v["results"]["ofi"]["report"]["method"] == "closed_form"
    assert "ofi_10s" in v["results"]["ofi"]["curves"]
    assert any("60s: only" in w for w in doc["warnings"])        # 6 minutes make five 60 s windows


def test_bad_input_exits_2(tmp_path, capsys, shared_data):
    assert main(["orderflow", str(tmp_path / "missing.gz")]) == 2
    assert "no such file" in capsys.readouterr().err
    spot = str(shared_data / "binance-raw" / "spot_btcusdt_20240808.gz")
    assert main(["orderflow", spot, "--windows", "ten seconds"]) == 2
    assert "not a frequency" in capsys.readouterr().err
    assert main(["orderflow", spot, "--models", "ofi,nope"]) == 2
    assert "unknown order-flow model" in capsys.readouterr().err
    assert main(["orderflow", spot, "--venue", "coinm"]) == 2
    bad = tmp_path / "not_a_capture.gz"
    bad.write_bytes(b"1723161256172216566 {not json\n")
    assert main(["orderflow", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not_a_capture.gz" in err and "Traceback" not in err


@pytest.mark.shared_data
def test_a_model_that_cannot_be_fitted_exits_3_and_still_writes(tmp_path, capsys, shared_data):
    out = tmp_path / "of.json"
    spot = str(shared_data / "binance-raw" / "spot_btcusdt_20240808.gz")
    code = main(["orderflow", spot, "--models", "ofi,resilience", "--share", "1000", "--windows", "1s,10s",
                 "--no-curves", "--out", str(out)])
    assert code == 3
    doc = json.loads(out.read_text())
    assert doc["converged"] is False
    assert "no sweep" in doc["venues"][0]["errors"]["resilience"]
    assert "curves" not in doc["venues"][0]["results"]["ofi"]
    err = capsys.readouterr().err
    assert "warning:" in err and "binance-spot BTCUSDT" in err
