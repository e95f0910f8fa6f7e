"""Option-chain preparation (models/options.py): inverse (coin) price conversion, forwards from
futures and from put–call parity, snapshotting a Tardis stream, one point per strike, and every
dropped row counted."""
import json

import numpy as np
import pandas as pd
import pytest

from execal.models.data.io import load
from execal.models.surface.iv import black76
from execal.models.surface.options import (Chain, chain_from_vols, parity_forward, prepare_chain, to_base_units,
                            to_quote_units)
from execal.models.data.schema import DataError


@pytest.fixture(scope="module")
def sample(root):
    return load(root / "sample_data" / "options_chain.csv")


@pytest.fixture(scope="module")
def truth(root):
    return json.loads((root / "sample_data" / "ground_truth.json").read_text())["options"]


@pytest.fixture(scope="module")
def deribit(shared_data):
    return load(shared_data / "tardis" / "format-examples" / "deribit_options_chain.csv")


def _generic_chain(F=60000.0, T_days=30, vol=0.6, discount=1.0, strikes=None):
    """A USD-quoted chain (no futures column) priced by Black-76, optionally discounted."""
    strikes = np.arange(40000.0, 85000.0, 2500.0) if strikes is None else strikes
    T = T_days / 365.0
    asof = pd.Timestamp("2024-05-01T00:00:00Z")
    expiry = asof + pd.Timedelta(days=T_days)
    K = np.repeat(strikes, 2)
    call = np.tile([True, False], strikes.size)
    price = discount * black76(F, K, T, vol, call)
    return pd.DataFrame({"timestamp": asof, "symbol": [f"X-{int(k)}-{'C' if c else 'P'}" for k, c in zip(K, call)],
                         "expiry": expiry, "strike": K, "option_type": np.where(call, "C", "P"),
                         "bid_price": price * 0.99, "ask_price": price * 1.01, "mark_price": price,
                         "underlying_price": F * 0.995})


# --- inverse prices ---------------------------------------------------------------------------------

def test_inverse_price_conversion_round_trips():
    rng = np.random.default_rng(0)
    price_usd = rng.uniform(1, 5000, 1000)
    F = rng.uniform(1e3, 1e5, 1000)
    back = to_quote_units(to_base_units(price_usd, F), F)
    np.testing.assert_allclose(back, price_usd, rtol=1e-15)
    assert to_base_units(600.0, 60000.0) == pytest.approx(0.01)


def test_coin_prices_convert_to_the_vols_they_were_made_from(sample):
    """The sample's coin prices are Black-76(F, K, T, IV)/F rounded to 1e-8 BTC: converted back
    with the forward and inverted, they give the file's IVs (to the rounding)."""
    chain = prepare_chain(sample, iv_source="prices")
    q = chain.quotes
    raw = sample.frame
    for col, iv_col in (("iv_mark", "mark_iv"), ("iv_bid", "bid_iv"), ("iv_ask", "ask_iv")):
        given = raw[iv_col].to_numpy()[q["row"].to_numpy() - 1]
        assert np.nanmax(np.abs(q[col].to_numpy() - given)) < 2e-5
    assert (q["iv_flag"] == "ok").all()
    # and the prices the chain carries are in USD: coin price × forward
    rows = q["row"].to_numpy() - 1
    np.testing.assert_allclose(q["mark_price"], raw["mark_price"].to_numpy()[rows] * q["forward"], rtol=1e-15)


def test_real_deribit_rows_reproduce_deribits_own_ivs(deribit):
    """The first row of the Tardis example is an untouched Deribit quote: its coin prices,
    converted with Deribit's underlying price (the expiry's synthetic forward), give Deribit's
    bid/ask/mark IVs to a few hundredths of a vol point."""
    chain = prepare_chain(deribit, underlying="BTC", as_of="2020-06-07T23:59:59.413Z")
    assert len(chain.quotes) == 1
    q = chain.quotes.iloc[0]
    assert q["symbol"] == "BTC-9JUN20-9875-P" and q["forward"] == pytest.approx(9756.36)
    assert chain.forwards["forward_source"].tolist() == ["underlying"]
    for ours, theirs in ((q["iv_bid"], 0.5591), (q["iv_ask"], 0.6894), (q["iv_mark"], 0.6289)):
        assert abs(ours - theirs) < 5e-4


# --- forwards ----------------------------------------------------------------------------------------

def test_put_call_parity_forwards_agree_with_futures(sample, truth):
    chain = prepare_chain(sample)
    fw = chain.forwards
    assert fw["forward_source"].eq("futures").all()
    np.testing.assert_allclose(fw["forward"], [e["futures_price"] for e in truth["expiries"]], rtol=0)
    assert (fw["parity_pairs"] == 5).all()
    # prices rounded to 1e-8 BTC: parity recovers the futures price to well under a basis point
    assert np.abs(fw["parity_vs_futures_bps"]).max() < 0.01
    np.testing.assert_allclose(fw["parity_discount"], 1.0, atol=1e-5)
    by_parity = prepare_chain(sample, forward="parity")
    assert by_parity.forwards["forward_source"].eq("parity").all()
    np.testing.assert_allclose(by_parity.forwards["forward"], fw["futures_price"], rtol=1e-6)


def test_parity_forward_in_quote_and_coin_units_and_with_a_bad_pair():
    F, T = 2500.0, 0.2
    K = np.arange(2000.0, 3050.0, 50.0)
    c, p = black76(F, K, T, 0.7, True), black76(F, K, T, 0.7, False)
    Fq, n, D = parity_forward(K, c, p)
    assert Fq == pytest.approx(F, rel=1e-12) and n == 5 and D == pytest.approx(1.0, abs=1e-9)
    Fb, _, Db = parity_forward(K, c / F, p / F, price_unit="base")
    assert Fb == pytest.approx(F, rel=1e-12) and Db == pytest.approx(1.0, abs=1e-9)
    # one absurd pair near the money does not move the median
    c_bad = c.copy()
    c_bad[np.argmin(np.abs(K - F))] *= 3.0
    assert parity_forward(K, c_bad, p)[0] == pytest.approx(F, rel=1e-12)
    # discounted prices: the forward is still right and the discount factor shows it
    Fd, _, Dd = parity_forward(K, 0.97 * c, 0.97 * p)
    assert Dd == pytest.approx(0.97, rel=1e-9)
    assert parity_forward([], [], [])[1] == 0


def test_generic_usd_chain_gets_parity_forwards_and_right_vols():
    frame = _generic_chain()
    chain = prepare_chain(frame)
    fw = chain.forwards.iloc[0]
    assert fw["forward_source"] == "parity" and fw["forward"] == pytest.approx(60000.0, rel=1e-12)
    assert fw["price_unit"] == "quote"
    np.testing.assert_allclose(chain.points["iv_mid"], 0.6, atol=2e-3)     # mid of a ±1 % price band
    np.testing.assert_allclose(chain.quotes["iv_mark"], 0.6, rtol=1e-10)
    # discounted quotes: a quarter of the in-the-money quotes fall below (undiscounted) intrinsic
    # value, so the chain is refused by default; without the checks, forward still from parity
    with pytest.raises(DataError, match="at or below intrinsic value"):
        prepare_chain(_generic_chain(discount=0.95))
    warned = prepare_chain(_generic_chain(discount=0.95), strict=False)
    assert warned.forwards["forward"].iloc[0] == pytest.approx(60000.0, rel=1e-9)
    assert any("discount factor 0.95" in w for w in warned.report.warnings)


def test_forward_choices_fail_clearly():
    frame = _generic_chain().drop(columns=["underlying_price"])
    with pytest.raises(DataError, match="futures_price"):
        prepare_chain(frame, forward="futures")
    only_calls = frame[frame["option_type"] == "C"]
    with pytest.raises(DataError, match="cannot work out the forward") as err:
        prepare_chain(only_calls)
    assert "2024-05-31" in str(err.value)
    with_underlying = _generic_chain()[lambda f: f["option_type"] == "C"]
    chain = prepare_chain(with_underlying)
    assert chain.forwards["forward_source"].iloc[0] == "underlying"
    assert any("underlying_price" in w for w in chain.report.warnings)


# --- snapshot, selection and drops -------------------------------------------------------------------

def test_tardis_stream_is_snapshotted_and_every_drop_counted(deribit):
    with pytest.raises(DataError, match=r"several underlyings \(BTC, ETH\)"):
        prepare_chain(deribit)
    chain = prepare_chain(deribit, underlying="btc")
    rep = chain.report
    reasons = {d.reason: d for d in rep.dropped}
    assert reasons["other underlying than BTC"].count == 2
    assert reasons["other underlying than BTC"].first_rows == [5, 6]
    assert reasons["superseded by a later quote of the same option"].count == 2
    assert reasons["superseded by a later quote of the same option"].first_rows == [1, 2]
    assert rep.rows_read == 7 and rep.rows_kept == 3
    assert rep.rows_kept + sum(d.count for d in rep.dropped) == rep.rows_read
    assert chain.as_of == pd.Timestamp("2020-06-08T00:01:00.454Z")
    assert len(chain.forwards) == 2 and chain.underlying == "BTC"
    with pytest.raises(DataError, match="no options on underlying 'SOL'"):
        prepare_chain(deribit, underlying="SOL")


def test_one_point_per_strike_the_out_of_the_money_one(sample, truth):
    chain = prepare_chain(sample)
    pts = chain.points
    assert not pts.duplicated(["expiry", "strike"]).any()
    otm = np.where(pts["option_type"] == "call", pts["strike"] >= pts["forward"], pts["strike"] < pts["forward"])
    assert otm.all()
    assert len(pts) == sum(e["strikes"] for e in truth["expiries"]) == 286
    np.testing.assert_allclose(pts["k"], np.log(pts["strike"] / pts["forward"]), rtol=1e-15)
    np.testing.assert_allclose(pts["w"], pts["iv_mid"] ** 2 * pts["T_years"], rtol=1e-15)
    rep = chain.report
    assert rep.rows_kept + sum(d.count for d in rep.dropped) == rep.rows_read == 572
    assert isinstance(chain, Chain) and chain.summary()["points"] == 286
    json.dumps(chain.summary(), allow_nan=False)


def test_bad_rows_are_dropped_with_their_reason():
    frame = _generic_chain()
    frame = pd.concat([frame, frame.iloc[[0]].assign(option_type="straddle")], ignore_index=True)
    n = len(frame)
    frame.loc[2, ["bid_price", "ask_price", "mark_price"]] = [0.0, 0.0, 0.0]           # no price at all
    frame.loc[4, ["bid_price", "ask_price", "mark_price"]] = [1e-3, 2e-3, 1.5e-3]      # an ITM call (K 45000, F 60000) below intrinsic
    frame.loc[5, "expiry"] = pd.Timestamp("2024-04-01T00:00:00Z")                      # expired
    chain = prepare_chain(frame)
    reasons = {d.reason: d for d in chain.report.dropped}
    assert reasons["option type is not call/put"].first_rows == [n]
    assert reasons["no price and no implied vol"].first_rows == [3]
    below = [d for r, d in reasons.items() if "below intrinsic" in r]
    assert below and below[0].first_rows == [5]
    assert any(r.startswith("expired") and d.first_rows == [6] for r, d in reasons.items())
    rep = chain.report
    assert rep.rows_kept + sum(d.count for d in rep.dropped) == rep.rows_read == n
    assert (chain.quotes.loc[chain.quotes["row"] == 5, "iv_flag"] == "below_intrinsic").all()


def test_missing_columns_and_empty_chains_are_data_errors():
    with pytest.raises(DataError, match="column 'strike'"):
        prepare_chain(pd.DataFrame({"expiry": [], "option_type": []}))
    with pytest.raises(DataError, match="needs prices"):
        prepare_chain(pd.DataFrame({"expiry": ["2024-01-01"], "strike": [1.0], "option_type": ["C"],
                                    "timestamp": ["2023-12-01"]}))
    with pytest.raises(DataError, match="iv_source='given'"):
        prepare_chain(_generic_chain(), iv_source="given")
    dead = _generic_chain().assign(expiry=pd.Timestamp("2020-01-01T00:00:00Z"))
    with pytest.raises(DataError, match="no usable option rows"):
        prepare_chain(dead)


def test_given_ivs_and_the_synthetic_builder():
    k = np.linspace(-0.3, 0.3, 13)
    chain = chain_from_vols(np.tile(k, 2), np.repeat([0.1, 0.5], 13), 0.55 + 0.1 * np.tile(k, 2) ** 2)
    assert chain.iv_source == "given" and len(chain.forwards) == 2
    np.testing.assert_allclose(chain.forwards["T_years"], [0.1, 0.5], rtol=1e-12)
    np.testing.assert_allclose(np.sort(chain.points["k"].unique()), k, atol=1e-12)
    np.testing.assert_allclose(chain.points["iv_mid"], 0.55 + 0.1 * chain.points["k"] ** 2, rtol=1e-12)
