"""CSV outputs a spreadsheet cannot execute (issue 11 item 7): text cells that start a formula are
neutralised in the CLI's predictions and the dashboard's predictions download; numbers are not."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from execal import cli
from execal.models.data.csvsafe import neutralise
from execal.models.data.io import load
from execal.models.impact.fit import Calibrator

EVIL = ("=cmd|' /C calc'!A0", "+1+2", "-2+3", "@SUM(A1)", "\t=1", "|x")


def _fills(tmp_path, n=400):
    rng = np.random.default_rng(2)
    q = rng.uniform(1, 10, n)
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2024-03-01", periods=n, freq="37min", tz="UTC"),
        "symbol": "BTCUSDT", "venue": "binance", "side": np.where(np.arange(n) % 2, "buy", "sell"),
        "quantity": q, "arrival_price": 60000.0, "adv": 1000.0, "volatility": 0.03, "duration_s": 600.0,
        "order_id": [EVIL[i % len(EVIL)] if i % 10 == 0 else f"o{i}" for i in range(n)]})
    sign = np.where(frame["side"] == "buy", 1, -1)
    cost = 1e4 * 0.03 * 0.7 * (q / 1000) ** 0.5 + rng.normal(0, 1, n)
    frame["exec_price"] = 60000.0 * (1 + sign * cost / 1e4)
    path = tmp_path / "fills.csv"
    frame.to_csv(path, index=False)
    return path


def test_neutralise_prefixes_formula_text_only():
    frame = pd.DataFrame({"order_id": list(EVIL) + ["ok", None], "x": [-1.0] * 6 + [2.0, 3.0],
                          "side": np.array([-1] * 8, dtype=np.int8)})
    out = neutralise(frame)
    assert out["order_id"].tolist()[:6] == ["'" + e for e in EVIL]
    assert out["order_id"].iloc[6] == "ok" and pd.isna(out["order_id"].iloc[7])
    assert (out["x"] == frame["x"]).all() and (out["side"] == -1).all()      # numbers untouched
    assert neutralise(pd.DataFrame({"a": ["x"]})) is not None


def test_cli_predictions_csv_is_neutralised(tmp_path, capsys):
    path = _fills(tmp_path)
    cfg, preds = tmp_path / "config.json", tmp_path / "preds.csv"
    assert cli.main(["calibrate", str(path), "--model", "sqrt", "--out", str(cfg), "--quiet"]) in (0, 3)
    assert cli.main(["predict", "--config", str(cfg), str(path), "--out", str(preds)]) == 0
    text = preds.read_text()
    for evil in EVIL:
        assert f",{evil}" not in text.replace('"', "")
    back = pd.read_csv(preds, keep_default_na=False)
    ids = back["order_id"].astype(str)
    assert not ids.str.match(r"^[=+\-@|\t]").any() and ids.str.startswith("'=cmd").any()
    assert np.isfinite(back["predicted_cost_bps"]).all()


def test_dashboard_predictions_download_is_neutralised(tmp_path):
    from execal.components.export_panel import predictions_chunks
    ds = load(_fills(tmp_path))
    result = Calibrator(model="sqrt").fit(ds)
    text = "".join(predictions_chunks(result, chunk_rows=97))
    frame = pd.read_csv(io.StringIO(text), keep_default_na=False)
    ids = frame["order_id"].astype(str)
    assert not ids.str.match(r"^[=+\-@|\t]").any() and ids.str.startswith("'=cmd").any()
    assert "=cmd|' /C calc'!A0" not in text.replace("'=cmd", "")
