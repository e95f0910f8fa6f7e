"""The `execal` command line end to end: inspect, models, calibrate -> config -> predict."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from execal import cli

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_FILLS = ROOT / "sample_data" / "fills.csv"


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _shared_files(shared_data):
    return sorted(p for p in shared_data.rglob("*") if p.suffix in (".csv", ".gz"))


def test_inspect_every_shared_file(shared_data, capsys):
    files = _shared_files(shared_data)
    assert len(files) >= 14
    for path in files:
        code, out, err = run(["inspect", path], capsys)
        assert code == 0, f"{path.name}: {err}"
        summary = json.loads(out)
        assert {"kind", "rows", "columns", "start", "end", "symbols", "venues", "warnings"} <= set(summary)
        assert summary["rows"] > 0 and summary["start"] <= summary["end"], path.name


def test_inspect_bad_input_exits_2_without_traceback(tmp_path, capsys):
    bad = tmp_path / "fills.csv"
    bad.write_text("timestamp,symbol,side,quantity\n2024-01-01,BTC,buy,1\n")
    code, out, err = run(["inspect", bad, "--kind", "fills"], capsys)
    assert code == 2 and out == ""
    assert "fills.csv" in err and "arrival_price" in err and "Traceback" not in err
    code, _, err = run(["inspect", tmp_path / "nope.csv"], capsys)
    assert code == 2 and "no such file" in err


def test_console_script_subprocess(tmp_path):
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"PAR1" + bytes(range(256)) * 4)
    proc = subprocess.run([sys.executable, "-m", "execal.cli", "inspect", str(garbage)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "garbage.parquet" in proc.stderr and "Traceback" not in proc.stderr


def test_models_lists_the_registry(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0
    reg = json.loads(out)
    assert set(reg["models"]) >= {"sqrt", "power_law", "almgren", "istar", "linear"}
    names = {p["name"] for m in reg["models"].values() if m.get("kind", "impact") == "impact" for p in m["params"]}
    assert names == {"h", "Y", "delta", "gamma", "eta", "beta", "a1", "a2", "a3", "a4", "b1", "lambda"}
    assert {"lm_normal", "trf", "dogbox", "lm", "differential_evolution", "multistart"} <= set(reg["optimizers"])
    assert set(reg["losses"]) == {"linear", "huber", "soft_l1", "cauchy", "arctan"}


def test_calibrate_config_predict_round_trip_on_sample(tmp_path, capsys):
    cfg_path = tmp_path / "config.json"
    code, _, err = run(["calibrate", SAMPLE_FILLS, "--model", "power_law", "--by", "venue",
                        "--test-fraction", "0.2", "--bootstrap", "20", "--out", cfg_path], capsys)
    assert code == 0, err
    cfg = json.loads(cfg_path.read_text())
    assert cfg["model"]["name"] == "power_law" and set(cfg["model"]["params"]) == {"h", "Y", "delta"}
    assert {"std_errors", "conf_int"} <= set(cfg["model"])
    assert cfg["optimizer"]["report"]["success"] is True
    assert cfg["data"]["rows"] == 20_000 and len(cfg["data"]["sha256"]) == 64
    assert {"in_sample", "out_of_sample"} <= set(cfg["metrics"])
    assert cfg["metrics"]["out_of_sample"]["n"] == 4000

    # the generator's truth, per venue (sample_data/ground_truth.json): Y within 12 %, delta within 0.03
    truth = json.loads((ROOT / "sample_data" / "ground_truth.json").read_text())
    y_true = truth["fills"]["params"]["Y"]
    segs = {s["key"]["venue"]: s["params"] for s in cfg["segments"]}
    assert set(segs) == set(y_true)
    for venue, params in segs.items():
        assert abs(params["Y"] / y_true[venue] - 1) < 0.12, (venue, params)
        assert abs(params["delta"] - 0.5) < 0.03
    assert cfg["segment_test"]["wald"]["p_value"] < 1e-6   # the venues really differ

    preds = tmp_path / "preds.csv"
    code, _, err = run(["predict", "--config", cfg_path, SAMPLE_FILLS, "--out", preds], capsys)
    assert code == 0, err
    out = pd.read_csv(preds)
    assert len(out) == 20_000 and {"predicted_cost_bps", "residual_bps"} <= set(out.columns)
    # each venue's rows use that venue's parameters
    from execal.models.data.io import load
    from execal.models.core.registry import get_model
    from execal.models.impact.features import impact_features
    fills = load(SAMPLE_FILLS).frame
    model = get_model("power_law")
    for venue, params in segs.items():
        rows = (fills["venue"] == venue).to_numpy()
        expect = model.predict(model.theta(params), impact_features(fills[rows].reset_index(drop=True)))
        np.testing.assert_allclose(out.loc[rows, "predicted_cost_bps"].to_numpy(), expect, rtol=1e-12)


def test_user_fills_with_own_column_names(tmp_path, capsys):
    """A user's own export: other column names (mapped), B/S sides, ms epoch timestamps, YAML out."""
    from execal.models.data.sample import generate_fills

    frame, truth = generate_fills(3000, seed=11, params={"Y": 0.9, "delta": 0.6}, venues=("desk",),
                                  outlier_share=0.0)
    user = pd.DataFrame({
        "ts_ms": frame["timestamp"].astype("int64") // 10**6,
        "instrument": frame["symbol"], "dir": np.where(frame["side"] > 0, "B", "S"),
        "qty": frame["quantity"], "arrival_mid": frame["arrival_price"], "avg_px": frame["exec_price"],
        "secs": frame["duration_s"], "adv_base": frame["adv"], "vol_d": frame["volatility"],
        "spr": frame["spread_bps"],
    })
    path = tmp_path / "my_fills.csv"
    user.to_csv(path, index=False)
    mapping = ("ts_ms=timestamp,instrument=symbol,dir=side,qty=quantity,arrival_mid=arrival_price,"
               "avg_px=exec_price,secs=duration_s,adv_base=adv,vol_d=volatility,spr=spread_bps")
    cfg_path = tmp_path / "cfg.yaml"
    code, _, err = run(["calibrate", path, "--model", "power_law", "--map", mapping, "--out", cfg_path], capsys)
    assert code == 0, err
    import yaml
    cfg = yaml.safe_load(cfg_path.read_text())
    lo, hi = cfg["model"]["conf_int"]["delta"]
    assert lo <= 0.6 <= hi
    lo, hi = cfg["model"]["conf_int"]["Y"]
    assert lo <= 0.9 <= hi
    code, out, err = run(["predict", "--config", cfg_path, path, "--map", mapping], capsys)
    assert code == 0, err
    preds = pd.read_csv(__import__("io").StringIO(out))
    assert len(preds) == 3000 and preds["predicted_cost_bps"].gt(0).all()


def test_calibrate_filters_are_recorded(tmp_path, capsys):
    cfg_path = tmp_path / "c.json"
    code, _, err = run(["calibrate", SAMPLE_FILLS, "--model", "sqrt", "--venue", "okx", "--symbol", "BTCUSDT",
                        "--start", "2024-09-10", "--out", cfg_path, "--quiet"], capsys)
    assert code == 0, err
    data = json.loads(cfg_path.read_text())["data"]
    assert data["filters"]["venue"] == ["okx"] and data["filters"]["symbol"] == ["BTCUSDT"]
    assert data["start"] >= "2024-09-10" and 0 < data["rows"] < 20_000


def test_non_converged_fit_exits_3_with_status(tmp_path, capsys):
    cfg_path = tmp_path / "c.json"
    code, _, err = run(["calibrate", SAMPLE_FILLS, "--model", "power_law", "--option", "max_nfev=1",
                        "--out", cfg_path, "--quiet"], capsys)
    assert code == 3 and "did not converge" in err
    report = json.loads(cfg_path.read_text())["optimizer"]["report"]
    assert report["success"] is False and report["status"] == 0


@pytest.mark.parametrize("argv, needle", [
    (["--model", "nope"], "invalid choice"),
    (["--model", "sqrt", "--fix", "Y"], "expected name=value"),
    (["--model", "sqrt", "--fix", "zeta=1"], "zeta"),
    (["--model", "sqrt", "--bound", "Y=2:1"], "lower < upper"),
    (["--model", "sqrt", "--venue", "nowhere"], "no rows left"),
])
def test_calibrate_usage_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) if needle == "invalid choice" else _nullcontext():
        code, _, err = run(["calibrate", SAMPLE_FILLS, *argv], capsys)
        assert code == 2 and needle in err and "Traceback" not in err
    if needle == "invalid choice":
        assert needle in capsys.readouterr().err


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- the rough edges of a first hour (issue 10, item 13) ----------------------------------------

def _every_option():
    """(command, action) for every option and positional of every parser."""
    import argparse

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from walk(sub, f"{name} {sub_name}")
            elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
                yield name, parser, action
    yield from walk(cli.build_parser(), "execal")


def test_every_option_has_help_naming_its_default():
    import argparse

    seen = 0
    for command, parser, action in _every_option():
        what = f"{command} {'/'.join(action.option_strings) or action.dest}"
        assert action.help and action.help.strip(), f"{what} has no help text"
        expanded = parser._get_formatter()._expand_help(action)
        if action.default not in (None, False, argparse.SUPPRESS) and not action.required:
            assert "default" in expanded and str(action.default) in expanded, f"{what}: {expanded!r}"
        seen += 1
    assert seen > 60            # the walk reached every subcommand
    names = {(c, "/".join(a.option_strings)) for c, _, a in _every_option()}
    for needle in [("execal calibrate", "--multistart"), ("execal calibrate", "--seed"),
                   ("execal serve", "--host"), ("execal serve", "--port"), ("execal serve", "--workers")]:
        assert needle in names


def test_version(capsys):
    from execal.models.core import __version__

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"execal {__version__}"


@pytest.mark.parametrize("host, warned", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                          ("0.0.0.0", True), ("192.168.1.5", True), ("example.org", True)])
def test_serve_warns_when_reachable_from_other_machines(host, warned, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(cli.os, "execvpe", lambda prog, argv, env: calls.append(argv))
    assert cli.main(["serve", "--host", host, "--port", "8123"]) == 0
    err = capsys.readouterr().err
    assert ("reachable from other machines" in err) is warned
    argv = calls[0]
    assert argv[-1] == "execal.app:server" and "--no-control-socket" in argv
    assert f"{host}:8123" in argv


def test_example_outputs_are_ignored_by_git():
    ignored = {line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()}
    readme = (ROOT / "README.md").read_text()
    for name in ("config.json", "preds.csv", "vol.json", "garch.json", "by_regime.json", "kalman.json",
                 "surface.json"):
        assert f"/{name}" in ignored, name
        assert name in readme            # an output the README's examples really write


def test_surface_json_writes_every_optimizer_report_as_an_object(tmp_path, capsys):
    """Each expiry's optimizer report (and the config's copy) is a JSON object, never a repr string;
    the surface's own report is one too."""
    out = tmp_path / "surface.json"
    for model in ("svi", "ssvi"):
        code, _, err = run(["surface", ROOT / "sample_data" / "options_chain.csv", "--model", model,
                            "--out", out], capsys)
        assert code == 0, err
        doc = json.loads(out.read_text())
        assert all(isinstance(e["optimizer"], dict) and e["optimizer"]["method"] for e in doc["expiries"])
        assert all(isinstance(r, dict) for r in doc["config"]["optimizer"]["slices"].values())
        assert isinstance(doc["report"], dict) and doc["report"]["converged"] is True
        assert "RMSE" in err and "status: converged" in err        # the summary on stderr


def test_json_output_refuses_what_it_cannot_write(tmp_path):
    """No silent repr strings: an object the JSON cleaner does not know is an error."""
    with pytest.raises(TypeError):
        cli._json_out({"x": object()}, str(tmp_path / "x.json"))
