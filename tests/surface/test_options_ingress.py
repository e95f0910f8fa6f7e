"""Option chains that used to give confident wrong answers (issue 10 items 1-3).

The chains are generated from the bundled sample (an SSVI surface quoted like Deribit: prices in BTC,
futures in USD) and reshaped into the real layouts the issue names: a generic Deribit snapshot
(`instrument_name, option_type, strike, expiry_datetime, bid_price, ask_price, mark_price` in BTC,
`futures_price` in USD, `implied_volatility` as a decimal), a `currency` column, a Tardis chain with
empty price columns, and two futures prices per expiry.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from execal.models.data.io import load
from execal.models.data.schema import DataError
from execal.models.surface.options import prepare_chain
from execal.models.surface.svi import SurfaceCalibrator


@pytest.fixture(scope="module")
def sample_frame(root):
    return pd.read_csv(root / "sample_data" / "options_chain.csv")


def _deribit_generic(frame: pd.DataFrame, *, percent_iv: bool = False) -> pd.DataFrame:
    """The generic Deribit snapshot layout: no price_unit column, coin prices, USD futures."""
    return pd.DataFrame({
        "timestamp": frame["timestamp"], "instrument_name": frame["symbol"],
        "option_type": frame["option_type"].map({"C": "call", "P": "put"}), "strike": frame["strike"],
        "expiry_datetime": frame["expiry"], "bid_price": frame["bid_price"], "ask_price": frame["ask_price"],
        "mark_price": frame["mark_price"], "futures_price": frame["futures_price"],
        "implied_volatility": frame["mark_iv"] * (100.0 if percent_iv else 1.0)})


def test_generic_deribit_snapshot_is_read_in_coin_without_hand_edits(tmp_path, sample_frame):
    path = tmp_path / "deribit_snapshot.csv"
    _deribit_generic(sample_frame).to_csv(path, index=False)
    ds = load(path)                                   # aliases: instrument_name, expiry_datetime, implied_volatility
    assert ds.kind == "options" and {"symbol", "expiry", "mark_iv"} <= set(ds.frame.columns)
    chain = prepare_chain(ds)
    assert chain.price_unit == "base" and "coin" in chain.price_unit_reason
    assert chain.underlying == "BTC"                  # from the instrument name
    # the vols are the generator's (not the 0.12 a USD reading gives)
    truth = sample_frame.groupby(["expiry", "strike"])["mark_iv"].first()
    got = chain.points.set_index([chain.points["expiry"].dt.strftime("%Y-%m-%dT%H:%M:%SZ"), "strike"])["iv_mark"]
    np.testing.assert_allclose(got.to_numpy(), truth.loc[got.index].to_numpy(), rtol=2e-4)
    assert not any("below intrinsic" in d.reason for d in chain.report.dropped)
    result = SurfaceCalibrator("ssvi").fit(chain)
    assert result.global_params["rho"] == pytest.approx(-0.2, abs=0.02)


def test_coin_prices_read_as_usd_are_refused_not_fitted(tmp_path, sample_frame):
    path = tmp_path / "deribit_snapshot.csv"
    _deribit_generic(sample_frame).to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        prepare_chain(load(path), price_unit="usd")
    text = str(err.value)
    assert "deribit_snapshot.csv" in text and "another unit" in text and "--price-unit base" in text
    # without the checks it still says so, loudly
    lenient = prepare_chain(load(path), price_unit="usd", strict=False)
    assert any("at or below intrinsic value" in w or "parity" in w for w in lenient.report.warnings)


def test_a_currency_column_naming_the_coin_means_coin_prices(tmp_path, sample_frame):
    frame = _deribit_generic(sample_frame)
    frame["currency"] = "BTC"
    path = tmp_path / "with_currency.csv"
    frame.to_csv(path, index=False)
    chain = prepare_chain(load(path))                  # `currency` is an alias of price_unit
    assert chain.price_unit == "base" and "column" in chain.price_unit_reason
    mapped = prepare_chain(load(path, mapping={"currency": "price_unit"}))
    assert mapped.price_unit == "base"
    frame["currency"] = "USD"                          # says USD but the prices are BTC: refused
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="another unit"):
        prepare_chain(load(path))


def test_percent_implied_vols_are_detected(tmp_path, sample_frame):
    frame = _deribit_generic(sample_frame, percent_iv=True).drop(columns=["bid_price", "ask_price", "mark_price"])
    path = tmp_path / "iv_percent.csv"
    frame.to_csv(path, index=False)
    chain = prepare_chain(load(path))
    assert chain.iv_source == "given"
    assert any("percent" in w for w in chain.report.warnings)
    assert chain.points["iv_mid"].between(0.3, 1.5).all()


def test_auto_iv_source_chooses_per_row_by_values_present(sample_frame):
    """A Tardis-shaped chain whose price columns exist but are empty, IVs filled: 'auto' uses the
    IVs (it used to pick prices by column presence and fail); half empty: prices where present."""
    frame = sample_frame.copy()
    frame[["bid_price", "ask_price", "mark_price"]] = np.nan
    chain = prepare_chain(frame)
    assert chain.iv_source == "given" and len(chain.points) > 50
    half = sample_frame.copy()
    gone = half.index % 2 == 0
    half.loc[gone, ["bid_price", "ask_price", "mark_price"]] = np.nan
    mixed = prepare_chain(half)
    assert mixed.iv_source == "mixed"
    np.testing.assert_allclose(mixed.quotes["iv_mark"], prepare_chain(sample_frame).quotes["iv_mark"], rtol=2e-4)


def test_several_futures_prices_per_expiry_are_reported(sample_frame):
    frame = sample_frame.copy()
    first = frame["expiry"] == frame["expiry"].iloc[0]
    bump = first & (frame.index % 2 == 1)
    frame.loc[bump, "futures_price"] += 30.0            # ~5 bps apart
    chain = prepare_chain(frame, strict=False)
    row = chain.forwards.iloc[0]
    assert row["futures_count"] == 2 and row["futures_spread_bps"] == pytest.approx(1e4 * 30 / row["futures_price"], rel=1e-9)
    assert any("2 different futures prices" in w for w in chain.report.warnings)
    summary = chain.summary()["forwards"][0]
    assert summary["futures_count"] == 2 and summary["forward_source"] == "futures"
    json.dumps(chain.summary())                         # JSON-ready
    # every other expiry has one futures price
    assert (chain.forwards["futures_count"].iloc[1:] == 1).all()


def test_parity_far_from_futures_is_refused(sample_frame):
    frame = sample_frame.copy()
    frame["futures_price"] *= 1.01                     # 100 bps off every parity forward
    with pytest.raises(DataError, match="put–call parity forward"):
        prepare_chain(frame)


def test_real_tardis_chain_still_loads(shared_data):
    ds = load(shared_data / "tardis" / "format-examples" / "deribit_options_chain.csv")
    chain = prepare_chain(ds, underlying="BTC", strict=False)
    assert chain.price_unit == "base"


def test_cli_price_unit_choice_and_refusal(tmp_path, sample_frame, capsys):
    from execal import cli
    path = tmp_path / "deribit_snapshot.csv"
    _deribit_generic(sample_frame).to_csv(path, index=False)
    out = tmp_path / "surface.json"
    assert cli.main(["surface", str(path), "--model", "ssvi", "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "option prices read as base" in err
    assert json.loads(out.read_text())["ssvi"]["rho"] == pytest.approx(-0.2, abs=0.02)
    assert cli.main(["surface", str(path), "--price-unit", "usd", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--price-unit base" in err and "Traceback" not in err
