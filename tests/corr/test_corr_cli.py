"""`execal corr` end to end: every method on generated files, exit codes 0 / 2 / 3, JSON on stdout or --out,
summary and warnings on stderr, never a traceback; and the Binance captures' Epps curve and spot/perp
lead–lag from the one command docs/notes/NOTES-corr.md shows."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from execal import cli
from test_corr_dcc import R3, simulate_dcc
from test_corr_hy import correlated_ticks


def run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tick_file(tmp_path_factory):
    """Two symbols' trades in one CSV (ms timestamps), ETH following BTC by 30 ms."""
    x, y = correlated_ticks(0.8, 300_000, 0.03, 0.02, seed=3, lag_steps=30)
    start = pd.Timestamp("2024-03-01", tz="UTC").value
    rows = [pd.DataFrame({"timestamp": pd.to_datetime(start + np.asarray(s.t_ns), unit="ns", utc=True),
                          "symbol": sym, "price": base * np.exp(np.asarray(s.log_price)), "quantity": 1.0})
            for s, sym, base in ((x, "BTCUSDT", 60_000.0), (y, "ETHUSDT", 3_000.0))]
    path = tmp_path_factory.mktemp("ticks") / "trades.csv"
    pd.concat(rows).sort_values("timestamp").to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def bars_files(tmp_path_factory):
    """Hourly bars of three assets from a simulated DCC, one file each."""
    y = simulate_dcc(1500, R3, 0.05, 0.9, seed=2)
    t = pd.date_range("2023-01-01", periods=1501, freq="1h", tz="UTC")
    d = tmp_path_factory.mktemp("bars")
    paths = []
    for i, sym in enumerate(("BTC", "ETH", "SOL")):
        close = 100 * np.exp(np.concatenate([[0.0], np.cumsum(y[:, i])]))
        frame = pd.DataFrame({"timestamp": t, "symbol": sym, "open": close, "high": close * 1.0005,
                              "low": close * 0.9995, "close": close, "volume": 1.0})
        paths.append(d / f"{sym}.csv")
        frame.to_csv(paths[-1], index=False)
    return paths


def test_hy_with_epps_and_lead_lag(tick_file, tmp_path, capsys):
    out_path = tmp_path / "corr.json"
    code, out, err = run(["corr", tick_file, "--method", "hy", "--max-lag-s", "0.1", "--epps", "0.05,0.5,5",
                          "--out", out_path], capsys)
    assert code == 0, err
    assert out == "" and "hayashi_yoshida" in err and "Traceback" not in err
    d = json.loads(out_path.read_text())
    assert d["names"] == ["BTCUSDT", "ETHUSDT"] and d["kind"] == "correlation"
    (ll,) = d["lead_lag"]
    assert ll["best_lag_s"] == pytest.approx(0.03) and ll["leader"] == "BTCUSDT" and ll["significant"]
    (ep,) = d["epps"]
    assert [p["interval_s"] for p in ep["points"]] == [0.05, 0.5, 5.0]
    assert ep["points"][0]["rho"] < ep["points"][-1]["rho"]
    assert d["config"]["schema_version"] == 1 and d["inputs"][0]["file"] == "trades.csv"
    assert d["inputs"][0]["sha256"]


def test_realized_to_stdout(tick_file, capsys):
    code, out, err = run(["corr", tick_file, "--method", "realized", "--interval", "2s", "--quiet"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["extras"]["interval_s"] == 2.0 and len(d["epps"]) == 1 and err == ""


def test_dcc_shrinkage_regimes_and_basket(bars_files, capsys):
    code, out, err = run(["corr", *bars_files, "--method", "dcc", "--horizon", "3", "--basket", "BTC=10,ETH=-20",
                          "--prices", "BTC=100,ETH=100", "--adv", "BTC=1000,ETH=1000"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert d["names"] == ["BTC", "ETH", "SOL"] and abs(d["params"]["a"] - 0.05) < 0.05
    assert len(d["forecast"]["h"]) == 3 and d["basket"]["params"]["saving_usd"] >= 0
    assert "saving of executing together" in err
    code, out, err = run(["corr", *bars_files, "--method", "shrinkage", "--boot", "20", "--regimes", "2"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert 0 <= d["params"]["shrinkage"] <= 1
    assert d["regimes"]["asset"] == "BTC" and [r["regime"] for r in d["regimes"]["regimes"]] in (
        ["calm", "stressed"], ["calm"], ["stressed"])


def test_not_converged_exits_3_with_the_json_written(bars_files, tmp_path, capsys):
    out_path = tmp_path / "dcc.json"
    code, _, err = run(["corr", *bars_files, "--method", "dcc", "--maxiter", "1", "--out", out_path], capsys)
    assert code == 3
    d = json.loads(out_path.read_text())
    assert d["converged"] is False and d["report"]["success"] is False
    assert "did not converge" in err


@pytest.mark.parametrize("argv,needle", [
    (["corr", "nope.csv", "--method", "hy"], "no such file"),
    (["corr", "{bars}", "--method", "hy"], "trades"),
    (["corr", "{ticks}", "--method", "hy", "--symbol", "BTCUSDT"], "at least two series"),
    (["corr", "{ticks}", "--method", "realized", "--interval", "1h"], "shorter interval"),
    (["corr", "{ticks}", "--method", "hy", "--regimes", "2"], "--regimes needs returns"),
    (["corr", "{ticks}", "--method", "hy", "--lag-step-s", "0"], "lag step"),
    (["corr", "{bars}", "{bars2}", "--method", "dcc", "--basket", "BTC=1"], "--prices"),
    (["corr", "{bars}", "{bars}", "--method", "dcc"], "perfectly correlated"),
])
def test_bad_input_exits_2_with_one_line(argv, needle, tick_file, bars_files, capsys):
    argv = [a.replace("{bars}", str(bars_files[0])).replace("{bars2}", str(bars_files[1]))
            .replace("{ticks}", str(tick_file)) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2, err
    assert needle in err and "Traceback" not in err and out == ""
    assert len(err.strip().splitlines()) == 1


@pytest.mark.shared_data
def test_binance_captures_epps_and_spot_perp_lead_lag(shared_data, tmp_path, capsys):
    """The command of docs/notes/NOTES-corr.md: spot vs USD-M vs COIN-M BTC and USD-M ETH, mid quotes."""
    raw = shared_data / "binance-raw"
    files = [raw / f"{n}_20240808.gz" for n in ("spot_btcusdt", "usdm_btcusdt", "cm_btcusd_perp", "usdm_ethusdt")]
    out_path = tmp_path / "corr.json"
    code, _, err = run(["corr", *files, "--method", "hy", "--kind", "quotes", "--epps", "auto", "--max-lag-s", "1",
                        "--out", out_path], capsys)
    assert code == 0, err
    d = json.loads(out_path.read_text())
    spot, perp = "BTCUSDT@binance-spot mid", "BTCUSDT@binance-usdm mid"
    assert spot in d["names"] and perp in d["names"]
    ll = next(x for x in d["lead_lag"] if {x["x"], x["y"]} == {spot, perp})
    assert ll["significant"] and ll["leader"] == perp            # the perpetual leads spot
    assert 0 < abs(ll["best_lag_s"]) <= 0.2
    assert ll["best_rho"] > ll["rho_at_zero"]
    ep = next(x for x in d["epps"] if {x["x"], x["y"]} == {spot, perp})
    rho = [p["rho"] for p in ep["points"]]
    assert rho[0] < 0.5 < rho[-1]                                 # the Epps effect: 10 ms vs seconds
    assert all(math.isfinite(r) for r in rho)
    eth = next(x for x in d["epps"] if {x["x"], x["y"]} == {perp, "ETHUSDT@binance-usdm mid"})
    assert eth["points"][-1]["rho"] < ep["points"][-1]["rho"]   # two assets correlate less than two venues
