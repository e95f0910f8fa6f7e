"""Every volatility model of the registry through the one estimator contract (VolatilityCalibrator ->
VolatilityResult): settings, fit, fix of the same type, the one OptimizerReport, converged from the
report, summary() text, to_dict() JSON, to_config() that rebuilds the result; and what `--gaps skip`
drops is said on stderr and in the JSON (issue 10, item 9). A model added to the registry is covered here
without editing this file."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from execal.models.core.registry import models_of_kind
from execal.models.core.report import OptimizerReport
from execal.models.data.io import load
from execal.models.vol.base import VolatilityCalibrator, VolatilityResult

LIKELIHOOD = {"garch", "gjr", "egarch", "markov", "merton"}


@pytest.fixture(scope="module")
def btc(root):
    ds = load(root / "sample_data" / "bars_15m.csv")
    frame = ds.frame[ds.frame["symbol"] == "BTCUSDT"].reset_index(drop=True)
    return frame


@pytest.fixture(scope="module")
def fits(btc):
    return {name: VolatilityCalibrator(name).fit(btc) for name in models_of_kind("volatility")}


@pytest.mark.parametrize("name", list(models_of_kind("volatility")))
def test_every_model_follows_the_contract(name, btc, fits):
    cal = VolatilityCalibrator(name)
    params = cal.get_params()
    assert params["model"] == name and set(params) - {"model"} == set(cal.spec.defaults())
    assert VolatilityCalibrator(**params).get_params() == params
    res = fits[name]
    assert isinstance(res, VolatilityResult) and res.model == name and res.kind == "volatility"
    assert isinstance(res.report, OptimizerReport) and res.converged is bool(res.report.converged)
    assert set(res.std_errors) == set(res.params) and set(res.conf_int()) == set(res.params)
    for k, (lo, hi) in res.conf_int().items():
        se = res.std_errors[k]
        if se is not None and math.isfinite(se):
            assert lo == pytest.approx(res.params[k] - 1.959963984540054 * se)
    if name in LIKELIHOOD:
        assert res.status == "fitted" and res.report.loss == "mle" and res.report.method not in ("closed_form", "fixed")
        assert res.loglikelihood is not None and math.isfinite(res.loglikelihood)
    else:
        assert res.status == "closed_form" and res.report.method == "closed_form" and res.report.loss == "none"
    text = res.summary()
    assert isinstance(text, str) and res.label in text and all(f"warning: {w}" in text for w in res.warnings)
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["converged"] == res.converged and d["warnings"] == list(res.warnings)
    assert d["report"]["method"] == res.report.method and set(d["params"]) == set(res.params)
    # the config rebuilds the estimator; fix() at the fitted parameters gives the same type and values
    cfg = json.loads(json.dumps(res.to_config({"file": "bars_15m.csv"}), allow_nan=False))
    assert cfg["kind"] == "volatility" and cfg["model"] == name and cfg["data"]["file"] == "bars_15m.csv"
    again = VolatilityCalibrator.from_config(cfg).fix(cfg["params"], btc)
    assert type(again) is type(res) and again.status == "fixed" and again.report.method == "fixed"
    assert again.converged and all(math.isnan(v) for v in again.std_errors.values())
    np.testing.assert_allclose([again.params[k] for k in res.params], list(res.params.values()), rtol=1e-12)
    if res.loglikelihood is not None:
        assert again.loglikelihood == pytest.approx(res.loglikelihood, rel=1e-9, abs=1e-6)
    if cal.spec.forecasts:
        np.testing.assert_allclose(again.forecast(5)["sigma_daily"], res.forecast(5)["sigma_daily"], rtol=1e-6)
    with pytest.raises(ValueError, match="has no setting"):
        VolatilityCalibrator(name, no_such_setting=1)


def test_set_params_is_a_copy_and_validates():
    cal = VolatilityCalibrator("gjr", dist="t")
    other = cal.set_params(dist="normal")
    assert cal.get_params()["dist"] == "t" and other.get_params()["dist"] == "normal"
    with pytest.raises(ValueError, match="dist must be one of normal, t"):
        cal.set_params(dist="skewt")
    with pytest.raises(ValueError, match="unknown volatility model"):
        VolatilityCalibrator("figarch")


def weekday_bars(days: int = 400, seed: int = 0) -> pd.DataFrame:
    """Daily bars of an equity-like market: Monday to Friday only (weekend gaps)."""
    rng = np.random.default_rng(seed)
    t = pd.bdate_range("2024-01-01", periods=days, tz="UTC")
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.012, days)))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame({"timestamp": t, "open": open_, "high": np.maximum(open_, close) * 1.002,
                         "low": np.minimum(open_, close) * 0.998, "close": close, "volume": 1e6})


def test_gaps_skip_says_what_was_dropped(tmp_path, capsys):
    from execal import cli

    frame = weekday_bars()
    path = tmp_path / "equity_daily.csv"
    frame.to_csv(path, index=False)
    weekends = int((frame["timestamp"].diff() > pd.Timedelta("1D")).sum())
    assert weekends == 79
    # refused without --gaps skip, with the way out in the message
    assert cli.main(["vol", str(path), "--model", "garch"]) == 2
    err = capsys.readouterr().err
    assert "gaps in the 1D bars: 79 gap(s), 158 missing bar(s)" in err and "--gaps skip" in err
    out = tmp_path / "g.json"
    assert cli.main(["vol", str(path), "--model", "garch", "--gaps", "skip", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    note = (f"gaps skipped: {weekends} return(s) across {weekends} gap(s) in the 1D bars were dropped "
            f"(158 1D bar(s) missing); first gaps: 2024-01-05 (Fri) → 2024-01-08 (Mon), "
            f"2024-01-12 (Fri) → 2024-01-15 (Mon), 2024-01-19 (Fri) → 2024-01-22 (Mon), ... (data rows 6, 11, 16, 21, 26)")
    assert f"execal: warning: {note}" in err
    doc = json.loads(out.read_text())
    assert note in doc["warnings"]
    assert doc["n_obs"] == len(frame) - 1 - weekends
    dropped = doc["validation"]["dropped"]
    assert dropped[0]["count"] == weekends and dropped[0]["first_rows"] == [6, 11, 16, 21, 26]
    # the Python result carries the same warning, whatever the model
    for name, settings in (("realized", {"estimator": "parkinson"}), ("markov", {}), ("merton", {})):
        res = VolatilityCalibrator(name, gaps="skip", **settings).fit(frame)
        assert any(w.startswith(f"gaps skipped: {weekends} return(s)") for w in res.warnings), name


def test_cli_exit_code_comes_from_result_converged(root, tmp_path, capsys):
    from execal import cli

    out = tmp_path / "merton.json"
    code = cli.main(["vol", str(root / "sample_data" / "bars_15m.csv"), "--model", "merton", "--symbol", "BTCUSDT",
                     "--max-iter", "1", "--out", str(out)])
    err = capsys.readouterr().err
    doc = json.loads(out.read_text())                    # written although the fit did not converge
    assert code == 3 and doc["converged"] is False and doc["report"]["converged"] is False
    assert "status: NOT CONVERGED" in err and "warning: not converged" in err
    assert any(w.startswith("not converged") for w in doc["warnings"])
    code = cli.main(["vol", str(root / "sample_data" / "bars_15m.csv"), "--model", "merton", "--symbol", "BTCUSDT",
                     "--out", str(out), "--quiet"])
    assert code == 0 and json.loads(out.read_text())["converged"] is True
