"""The seeded sample-data generator: determinism, the committed copy, size, and that the files
carry the truth that ground_truth.json claims (cost model, regimes, volumes, SSVI surface)."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from execal.models.data import sample
from execal.models.data.schema import canonical_columns

SIZE_BUDGET_BYTES = 6 * 1024 ** 2


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def built() -> dict[str, bytes]:
    return sample.build_sample(7)


@pytest.fixture(scope="module")
def truth(built) -> dict:
    return json.loads(built["ground_truth.json"])


def read_csv(built, name) -> pd.DataFrame:
    data = built[name]
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    return pd.read_csv(io.BytesIO(data))


# --- determinism and the committed copy --------------------------------------------------------


def test_same_seed_gives_byte_identical_files(built):
    again = sample.build_sample(7)
    assert sorted(again) == sorted(built) == sorted(sample.SAMPLE_FILES)
    for name in built:
        assert sha(again[name]) == sha(built[name]), name


def test_other_seed_gives_other_data(built):
    other = sample.build_sample(8)
    assert sha(other["fills.csv"]) != sha(built["fills.csv"])
    assert sha(other["bars_15m.csv"]) != sha(built["bars_15m.csv"])


def test_committed_sample_equals_generator_output(root, tmp_path):
    # the documented command, run into tmp_path, must reproduce every committed file
    assert sample.main(["--out", str(tmp_path), "--seed", "7"]) == 0
    committed = root / "sample_data"
    for name in sample.SAMPLE_FILES:
        assert (committed / name).is_file(), f"sample_data/{name} is not committed"
        assert sha((tmp_path / name).read_bytes()) == sha((committed / name).read_bytes()), (
            f"sample_data/{name} differs from `python -m execal.models.data.sample --out sample_data --seed 7`")


def test_sample_files_within_size_budget(root):
    files = [root / "sample_data" / n for n in sample.SAMPLE_FILES]
    total = sum(p.stat().st_size for p in files)
    assert total <= SIZE_BUDGET_BYTES, f"sample_data is {total:,} bytes"
    for p in files:
        if p.suffix == ".gz":
            assert p.read_bytes()[:2] == b"\x1f\x8b", f"{p.name} is not gzip"


def test_readme_documents_command_and_truth(built, truth):
    text = built["README.md"].decode()
    assert "python -m execal.models.data.sample --out sample_data --seed 7" in text
    for venue, y in truth["fills"]["params"]["Y"].items():
        assert f"{venue}: {y:g}" in text
    for name in sample.SAMPLE_FILES[:-2]:
        assert name in text


# --- ground truth ------------------------------------------------------------------------------


def test_ground_truth_has_every_key(truth):
    assert truth["seed"] == 7
    assert {"seed", "command", "fills", "market", "tape", "options", "rows"} <= set(truth)
    f = truth["fills"]
    assert {"model", "formula", "params", "participation", "noise", "outliers"} <= set(f)
    assert f["params"] == {"h": 1.0, "delta": 0.5,
                           "Y": {"binance": 0.6, "okx": 0.8, "coinbase": 1.0}}
    assert {"distribution", "dof", "scale"} <= set(f["noise"])
    assert {"share", "count", "noise_burst", "bad_print"} <= set(f["outliers"])
    m = truth["market"]
    assert np.allclose(np.sum(m["regime"]["transition"], axis=1), 1.0)
    for s in sample.SYMBOLS:
        v = m["symbols"][s]
        assert {"sigma_calm", "sigma_stressed", "regime_by_day", "daily_volume"} <= set(v)
        assert len(v["regime_by_day"]) == len(v["daily_volume"]) == m["days"]
    o = truth["options"]
    assert {"rho", "eta", "gamma", "theta_term_structure", "expiries"} <= set(o)
    assert len(o["expiries"]) == 8
    for e in o["expiries"]:
        assert {"expiry", "T_years", "theta", "futures_price", "raw_svi"} <= set(e)
        assert set(e["raw_svi"]) == {"a", "b", "rho", "m", "sigma"}


# --- fills -------------------------------------------------------------------------------------


def test_fills_file_is_canonical_and_realistic(built, truth):
    f = read_csv(built, "fills.csv")
    assert tuple(f.columns) == sample.FILL_COLUMNS
    assert set(f.columns) <= set(canonical_columns("fills"))
    assert len(f) == 20_000
    assert set(f["side"]) == {"buy", "sell"}
    assert set(f["symbol"]) == set(sample.SYMBOLS) and set(f["venue"]) == set(sample.VENUES)
    ts = pd.to_datetime(f["timestamp"], utc=True)
    assert ts.is_monotonic_increasing
    assert ts.min() >= pd.Timestamp("2024-09-01", tz="UTC")
    assert ts.max() < pd.Timestamp("2024-10-31", tz="UTC")
    participation = f["quantity"] / f["adv"]
    assert participation.min() >= 0.9e-5 and participation.max() <= 0.1
    assert participation.median() < 1e-3                      # most orders small
    assert f["duration_s"].between(60, 14_400).all()
    assert f["order_id"].is_unique
    spread = f.groupby("symbol")["spread_bps"].median()
    assert spread["BTCUSDT"] < spread["ETHUSDT"] < spread["SOLUSDT"]
    assert 0.5 < spread["BTCUSDT"] < 2 and 2 < spread["SOLUSDT"] < 6
    # volatility is one of the two regime sigmas of the symbol
    for s, v in truth["market"]["symbols"].items():
        vals = set(f.loc[f["symbol"] == s, "volatility"])
        assert vals <= {v["sigma_calm"], v["sigma_stressed"]}


@pytest.mark.parametrize("model", ["power_law", "sqrt", "almgren", "linear"])
@pytest.mark.parametrize("participation", ["adv", "horizon"])
def test_generate_fills_cost_is_the_model_without_noise(model, participation):
    frame, truth = sample.generate_fills(3_000, seed=3, model=model, noise_scale=0.0,
                                         outlier_share=0.0, participation=participation)
    p = truth["params"]
    V = frame["adv"] if participation == "adv" else frame["market_volume"]
    x = (frame["quantity"] / V).to_numpy()
    sigma = frame["volatility"].to_numpy()
    T = frame["duration_s"].to_numpy() / 86_400
    venue = frame["venue"].to_numpy()

    def par(name):
        v = p[name]
        return np.array([v[z] for z in venue]) if isinstance(v, dict) else v

    expected = p["h"] * frame["spread_bps"].to_numpy() / 2 + {
        "power_law": lambda: 1e4 * par("Y") * sigma * x ** par("delta"),
        "sqrt": lambda: 1e4 * par("Y") * sigma * np.sqrt(x),
        "almgren": lambda: 1e4 * sigma * (par("gamma") / 2 * x + par("eta") * (x / T) ** par("beta")),
        "linear": lambda: 1e4 * par("lambda") * sigma * x,
    }[model]()
    # exec prices are written with 6 decimals: < 1e-3 bps on these prices
    np.testing.assert_allclose(frame["cost_bps"].to_numpy(), expected, rtol=0, atol=1e-3)


def test_generate_fills_custom_params_and_noise_scale():
    frame, truth = sample.generate_fills(200_000, seed=5, params={"Y": 0.7, "delta": 0.6},
                                         noise_scale=0.5, outlier_share=0.0, dof=4.0)
    assert truth["params"] == {"h": 1.0, "delta": 0.6, "Y": 0.7}
    x = frame["quantity"] / frame["adv"]
    sigma, T = frame["volatility"], frame["duration_s"] / 86_400
    model = frame["spread_bps"] / 2 + 1e4 * 0.7 * sigma * x ** 0.6
    z = (frame["cost_bps"] - model) / (1e4 * sigma * np.sqrt(T) * 0.5)
    assert abs(z.std() - 1) < 0.05            # unit variance after scaling the t(4)
    assert abs(z.mean()) < 0.02
    assert ((z - z.mean()) ** 4).mean() / z.var() ** 2 > 5     # heavy tails (normal: 3)


def test_outliers_are_the_documented_share(built, truth):
    f = read_csv(built, "fills.csv")
    o = truth["fills"]["outliers"]
    assert o["count"] == round(0.01 * len(f))
    ids = set(o["noise_burst"]["order_ids"]) | set(o["bad_print"]["order_ids"])
    assert len(ids) == o["count"]
    side = np.where(f["side"] == "buy", 1, -1)
    cost = side * (f["exec_price"] / f["arrival_price"] - 1) * 1e4
    Y = f["venue"].map(truth["fills"]["params"]["Y"])
    resid = cost - f["spread_bps"] / 2 - 1e4 * Y * f["volatility"] * np.sqrt(f["quantity"] / f["adv"])
    noise_sd = 1e4 * f["volatility"] * np.sqrt(f["duration_s"] / 86_400) * 0.5
    bad = f["order_id"].isin(o["bad_print"]["order_ids"])
    burst = f["order_id"].isin(o["noise_burst"]["order_ids"])
    assert (resid[bad].abs() > 90).all()
    assert ((resid[burst] / noise_sd[burst]).abs() > 5).all()
    assert ((resid[~bad & ~burst] / noise_sd[~bad & ~burst]).abs() < 40).all()


def test_generate_fills_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        sample.generate_fills(10, seed=1, model="nope")
    with pytest.raises(ValueError, match="no value for"):
        sample.generate_fills(10, seed=1, params={"Y": {"binance": 0.5}})
    with pytest.raises(ValueError, match="has no parameters"):
        sample.generate_fills(10, seed=1, params={"gamma": 1.0})
    with pytest.raises(ValueError, match="dof"):
        sample.generate_fills(10, seed=1, dof=2.0)


def test_generate_fills_is_deterministic_and_seed_sensitive():
    a, _ = sample.generate_fills(1_000, seed=11)
    b, _ = sample.generate_fills(1_000, seed=11)
    c, _ = sample.generate_fills(1_000, seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert not a["exec_price"].equals(c["exec_price"])


# --- bars, trades, quotes: one market ----------------------------------------------------------


def test_bars_follow_regime_sigma_and_sum_to_adv(built, truth):
    bars = read_csv(built, "bars_15m.csv")
    f = read_csv(built, "fills.csv")
    m = truth["market"]
    assert len(bars) == m["days"] * 96 * 3
    assert (bars["high"] >= bars[["open", "close"]].max(axis=1)).all()
    assert (bars["low"] <= bars[["open", "close"]].min(axis=1)).all()
    ts = pd.to_datetime(bars["timestamp"], utc=True)
    day = ((ts - pd.Timestamp(m["start"])) // pd.Timedelta("1D")).to_numpy()
    for s, v in m["symbols"].items():
        sel = (bars["symbol"] == s).to_numpy()
        sigma_day = np.where(np.array(v["regime_by_day"]) == 1, v["sigma_stressed"],
                             v["sigma_calm"])
        r = np.diff(np.log(bars.loc[sel, "close"].to_numpy()))
        z = r / (sigma_day[day[sel][1:]] / np.sqrt(96))
        assert abs(z.std() - 1) < 0.03, s           # 15-minute returns scale with the regime
        daily = np.bincount(day[sel], weights=bars.loc[sel, "volume"].to_numpy())
        np.testing.assert_allclose(daily, v["daily_volume"], rtol=1e-6)
        # adv column = mean of the 20 days strictly before the arrival day
        fs = f[f["symbol"] == s]
        fday = ((pd.to_datetime(fs["timestamp"], utc=True) - pd.Timestamp(m["start"]))
                // pd.Timedelta("1D")).to_numpy()
        cs = np.concatenate([[0.0], np.cumsum(daily)])
        np.testing.assert_allclose(fs["adv"], (cs[fday] - cs[fday - 20]) / 20, rtol=1e-6)


def test_tape_matches_bars_and_quotes(built, truth):
    trades = read_csv(built, "trades_BTCUSDT.csv.gz")
    quotes = read_csv(built, "quotes_BTCUSDT.csv.gz")
    bars = read_csv(built, "bars_15m.csv")
    assert 20_000 <= len(trades) <= 90_000 and 1_000 <= len(quotes) <= 10_000
    assert list(trades.columns) == ["timestamp", "symbol", "venue", "price", "quantity", "side"]
    assert list(quotes.columns) == ["timestamp", "symbol", "venue", "bid_price", "bid_size",
                                    "ask_price", "ask_size"]
    day = truth["tape"]["day"]
    assert trades["timestamp"].str.startswith(day).all()
    assert (quotes["ask_price"] > quotes["bid_price"]).all()
    day_bars = bars[(bars["symbol"] == "BTCUSDT") & bars["timestamp"].str.startswith(day)]
    t_bar = pd.to_datetime(trades["timestamp"], utc=True).dt.floor("15min")
    per_bar = trades.groupby(t_bar)["quantity"].sum().to_numpy()
    np.testing.assert_allclose(per_bar, day_bars["volume"].to_numpy(), rtol=1e-3)
    spread_bps = (quotes["ask_price"] - quotes["bid_price"]) / quotes["bid_price"] * 1e4
    assert 0.3 < spread_bps.median() < 3


# --- options -----------------------------------------------------------------------------------


def test_option_chain_is_the_ssvi_surface(built, truth):
    o = read_csv(built, "options_chain.csv")
    t = truth["options"]
    assert {"timestamp", "symbol", "expiry", "strike", "option_type", "underlying_price",
            "futures_price", "bid_iv", "ask_iv", "mark_iv", "bid_price", "ask_price",
            "mark_price", "price_unit"} <= set(o.columns)
    assert set(o["price_unit"]) == {"base"} and set(o["option_type"]) == {"C", "P"}
    assert o["symbol"].str.fullmatch(r"BTC-\d{1,2}[A-Z]{3}\d{2}-\d+-[CP]").all()
    assert o["symbol"].is_unique
    assert o["expiry"].nunique() == 8
    counts = o.groupby("expiry")["strike"].nunique()
    assert counts.between(28, 40).all()
    for e in t["expiries"]:
        sl = o[o["expiry"] == e["expiry"]].sort_values(["option_type", "strike"])
        F, T = e["futures_price"], e["T_years"]
        k = np.log(sl["strike"] / F)
        w = sample.ssvi_total_variance(k.to_numpy(), e["theta"], t["rho"], t["eta"], t["gamma"])
        np.testing.assert_allclose(sl["mark_iv"], np.sqrt(w / T), atol=1e-6)
        r = e["raw_svi"]
        raw = r["a"] + r["b"] * (r["rho"] * (k - r["m"]) + np.sqrt((k - r["m"]) ** 2 + r["sigma"] ** 2))
        np.testing.assert_allclose(raw, w, rtol=1e-10)
        assert (sl["bid_iv"] < sl["mark_iv"]).all() and (sl["mark_iv"] < sl["ask_iv"]).all()
        assert (sl["bid_price"] <= sl["mark_price"]).all()
        assert (sl["mark_price"] <= sl["ask_price"]).all()
        calls = sl[sl["option_type"] == "C"]
        puts = sl[sl["option_type"] == "P"]
        usd = calls["mark_price"].to_numpy() * F
        assert (np.diff(usd) < 0).all()                       # call price falls with strike
        slope = np.diff(usd) / np.diff(calls["strike"].to_numpy())
        assert (np.diff(slope) > -1e-6).all()                 # and is convex: no butterfly arb
        # put-call parity in coin units, undiscounted: C - P = (F - K) / F
        parity = calls["mark_price"].to_numpy() - puts["mark_price"].to_numpy()
        np.testing.assert_allclose(parity, (F - calls["strike"].to_numpy()) / F, atol=2e-8)
    theta = [e["theta"] for e in t["expiries"]]
    assert (np.diff(theta) > 0).all()                         # no calendar arbitrage at the money


def test_raw_svi_conversion_matches_ssvi():
    k = np.linspace(-1, 1, 41)
    r = sample.ssvi_to_raw_svi(0.05, -0.3, 1.1, 0.4)
    raw = r["a"] + r["b"] * (r["rho"] * (k - r["m"]) + np.sqrt((k - r["m"]) ** 2 + r["sigma"] ** 2))
    np.testing.assert_allclose(raw, sample.ssvi_total_variance(k, 0.05, -0.3, 1.1, 0.4), rtol=1e-12)


def test_black76_put_call_parity_and_known_value():
    F, K, T, vol = np.array([100.0]), np.array([100.0]), np.array([1.0]), np.array([0.2])
    call = sample.black76(F, K, T, vol, np.array([True]))
    # ATM undiscounted Black: F*(2N(sigma*sqrt(T)/2) - 1) = 7.9655674554
    np.testing.assert_allclose(call, 7.965567455405804, rtol=1e-12)
    put = sample.black76(F, K * 1.1, T, vol, np.array([False]))
    call2 = sample.black76(F, K * 1.1, T, vol, np.array([True]))
    np.testing.assert_allclose(call2 - put, F - K * 1.1, rtol=1e-12)


def test_symbol_dates_are_deribit_style():
    assert sample._deribit_date(np.datetime64("2024-11-01")) == "1NOV24"
    assert sample._deribit_date(np.datetime64("2024-12-27")) == "27DEC24"
    assert re.fullmatch(r"\d{1,2}[A-Z]{3}\d{2}", sample._deribit_date(np.datetime64("2025-10-31")))


def test_sample_files_load_cleanly_with_the_readers(root):
    import execal.models.data.io as io_mod
    kinds = {"fills.csv": "fills", "bars_15m.csv": "bars", "trades_BTCUSDT.csv.gz": "trades",
             "quotes_BTCUSDT.csv.gz": "quotes", "options_chain.csv": "options"}
    for name, kind in kinds.items():
        ds = io_mod.load(root / "sample_data" / name)
        assert ds.kind == kind, name
        assert ds.report.dropped == [] and ds.report.warnings == [], (name, ds.report.to_dict())
    fills = io_mod.load(root / "sample_data" / "fills.csv").frame
    expected, _ = sample.generate_fills(20_000, seed=7)
    np.testing.assert_allclose(fills["cost_bps"], expected["cost_bps"], rtol=0, atol=1e-9)
