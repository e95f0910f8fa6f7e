"""Fill enrichment: exact values on hand-made frames, no look-ahead, pro-rata bars, matching by
symbol/venue, missing data counted, bad input, and closeness to the generator's truth on the
committed sample (tolerances documented at each assert)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from execal.models.data.enrich import enrich
from execal.models.data.schema import DataError

DAY0 = pd.Timestamp("2024-03-01", tz="UTC")
FIELDS = ("market_volume", "adv", "volatility", "spread_bps")


def ts(*offsets: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([DAY0 + pd.Timedelta(o) for o in offsets])


def fills_at(*offsets: str, symbol="XUSD", venue=None, duration_s=None) -> pd.DataFrame:
    n = len(offsets)
    f = pd.DataFrame({"timestamp": ts(*offsets), "symbol": symbol, "side": 1,
                      "quantity": 1.0, "arrival_price": 100.0, "exec_price": 100.1})
    if venue is not None:
        f["venue"] = venue
    if duration_s is not None:
        f["duration_s"] = np.broadcast_to(np.asarray(duration_s, float), (n,)).copy()
    return f


def hourly_bars(day_volume=(1.0, 2.0, 3.0, 4.0), day_log_close=(0.0, 0.01, -0.02, 0.03),
                symbol="XUSD") -> pd.DataFrame:
    """24 hourly bars a day; every bar of day d has volume day_volume[d] and close e^c_d."""
    n_days = len(day_volume)
    start = DAY0 + pd.to_timedelta(np.arange(24 * n_days), unit="h")
    d = np.repeat(np.arange(n_days), 24)
    close = 100 * np.exp(np.asarray(day_log_close)[d])
    return pd.DataFrame({"timestamp": start, "symbol": symbol, "open": close, "high": close,
                         "low": close, "close": close, "volume": np.asarray(day_volume)[d]})


# --- exact values ------------------------------------------------------------------------------


def test_adv_and_daily_volatility_exact_values():
    bars = hourly_bars()
    fills = fills_at("0D10h", "1D10h", "2D10h", "3D10h", "4D10h", "6D0h")
    out, rep = enrich(fills, bars=bars, adv_window_days=2, vol_window_days=2)
    # daily volumes 24, 48, 72, 96; daily log returns (day 1..3) 0.01, -0.03, 0.05
    np.testing.assert_allclose(out["adv"], [np.nan, np.nan, 36.0, 60.0, 84.0, np.nan])
    np.testing.assert_allclose(out["volatility"],
                               [np.nan, np.nan, np.nan, np.std([0.01, -0.03], ddof=1),
                                np.std([-0.03, 0.05], ddof=1), np.nan], rtol=1e-12)
    # fills with no (or not enough) prior data stay NaN and are counted
    assert rep["adv"] == {**rep["adv"], "filled": 3, "missing_after": 3, "source": "bars"}
    assert rep["volatility"]["filled"] == 2 and rep["volatility"]["missing_after"] == 4
    assert rep["volatility"]["method"] == "daily"


def test_intraday_volatility_exact_value():
    bars = hourly_bars()
    fills = fills_at("3D10h")
    out, _ = enrich(fills, bars=bars, vol_window_days=2, vol_method="intraday")
    # bar-to-bar returns of days 1 and 2: the day's jump on its first bar, then 23 zeros each
    returns = np.zeros(48)
    returns[0], returns[24] = 0.01, -0.03
    np.testing.assert_allclose(out["volatility"], [np.std(returns, ddof=1) * np.sqrt(24)],
                               rtol=1e-12)


def test_incomplete_day_breaks_the_window():
    bars = hourly_bars().drop(index=30)          # one bar missing on day 1
    fills = fills_at("2D10h", "3D10h")
    out, rep = enrich(fills, bars=bars, adv_window_days=2, vol_window_days=1 + 1)
    assert np.isnan(out["adv"]).all()            # both windows contain day 1
    assert rep["adv"]["missing_after"] == 2 and rep["adv"]["source"] is None
    out, _ = enrich(fills, bars=bars, adv_window_days=1)
    np.testing.assert_allclose(out["adv"], [np.nan, 72.0])


def test_market_volume_pro_rata_over_partial_bars():
    bars = pd.DataFrame({"timestamp": ts("10h", "11h", "12h"), "symbol": "XUSD",
                         "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                         "volume": [60.0, 120.0, 30.0]})
    fills = fills_at("10h30min", "11h45min", "10h", "12h30min", "9h59min", duration_s=0)
    fills["duration_s"] = [5400.0, 1800.0, 10800.0, 3600.0, 120.0]
    out, rep = enrich(fills, bars=bars)
    # [10:30, 12:00] = half of 60 + 120; [11:45, 12:15] = 120/4 + 30/4; [10:00, 13:00] = all;
    # windows leaving the bars' span ([12:30, 13:30], [9:59, 10:01]) stay NaN
    np.testing.assert_allclose(out["market_volume"], [150.0, 37.5, 210.0, np.nan, np.nan])
    assert rep["market_volume"]["filled"] == 3 and rep["market_volume"]["missing_after"] == 2


def test_market_volume_from_trades_exact_and_preferred_over_bars():
    trades = pd.DataFrame({"timestamp": ts("10h", "10h5min", "10h10min", "10h20min", "11h"),
                           "symbol": "XUSD", "price": 100.0, "quantity": [1.0, 2.0, 4.0, 8.0, 16.0]})
    bars = pd.DataFrame({"timestamp": ts("10h", "11h"), "symbol": "XUSD", "open": 1.0,
                         "high": 1.0, "low": 1.0, "close": 1.0, "volume": [15.0, 16.0]})
    fills = fills_at("10h5min", "10h", "10h30min", duration_s=[600.0, 3600.0, 3600.0])
    out, rep = enrich(fills, trades=trades, bars=bars)
    # both window ends are inclusive; the third window ends after the last print -> bars
    np.testing.assert_allclose(out["market_volume"], [6.0, 31.0, 7.5 + 8.0])
    assert rep["market_volume"]["by_source"] == {"trades": 2, "bars": 1}
    assert rep["market_volume"]["source"] == "trades+bars"


def test_trades_only_give_adv_over_their_complete_days():
    # prints every hour over days 0..3 (days 0 and 3 are the recording's edges: not complete)
    t = DAY0 + pd.to_timedelta(np.arange(6, 24 * 3 + 20), unit="h")
    day = (t - DAY0).days
    trades = pd.DataFrame({"timestamp": t, "symbol": "XUSD", "price": 100.0 + day,
                           "quantity": np.where(day == 1, 1.0, 2.0)})
    fills = fills_at("3D12h", "2D12h")
    out, rep = enrich(fills, trades=trades, adv_window_days=2, vol_window_days=2)
    np.testing.assert_allclose(out["adv"], [(24.0 + 48.0) / 2, np.nan])
    assert rep["adv"]["source"] == "trades"
    assert np.isnan(out["volatility"]).all()     # two complete days give one daily return only


def test_spread_last_quote_at_or_before_arrival():
    quotes = pd.DataFrame({"timestamp": ts("10h", "10h1min", "10h2min", "10h3min"), "symbol": "XUSD",
                           "bid_price": [99.99, 99.98, 100.02, 99.90],
                           "ask_price": [100.01, 100.02, 99.98, 100.10],    # third is crossed
                           "bid_size": 1.0, "ask_size": 1.0})
    fills = fills_at("9h59min", "10h", "10h1min30s", "10h2min30s", "10h3min", "11h")
    out, rep = enrich(fills, quotes=quotes, quote_max_age_s=600)
    np.testing.assert_allclose(
        out["spread_bps"],
        [np.nan, 2.0, 4.0, 4.0, 0.2 / 100 * 1e4, np.nan], rtol=1e-9)
    assert rep["spread_bps"]["ignored_rows"] == {"quotes": 1}
    assert rep["spread_bps"]["missing_after"] == 2
    out, _ = enrich(fills, quotes=quotes, quote_max_age_s=None)   # no age limit
    assert out["spread_bps"].iloc[-1] == pytest.approx(20.0)


def test_spread_from_book_level_zero_and_venue_matching():
    book = pd.DataFrame({"timestamp": ts("10h", "10h"), "symbol": "XUSD", "venue": ["a", "b"],
                         "bid_price_0": [99.99, 99.95], "ask_price_0": [100.01, 100.05],
                         "bid_size_0": 1.0, "ask_size_0": 1.0})
    fills = fills_at("10h1min", "10h1min", "10h1min", venue=["a", "b", "c"])
    out, rep = enrich(fills, book=book)
    np.testing.assert_allclose(out["spread_bps"], [2.0, 10.0, np.nan], rtol=1e-9)
    assert rep["spread_bps"]["source"] == "book"


def test_matching_by_symbol_and_venue():
    trades = pd.DataFrame({"timestamp": ts("10h", "10h10min", "10h", "10h10min"),
                           "symbol": ["XUSD", "XUSD", "YUSD", "YUSD"], "venue": "a",
                           "price": 1.0, "quantity": [1.0, 1.0, 5.0, 5.0]})
    fills = pd.concat([fills_at("10h", symbol="XUSD", venue="a", duration_s=600),
                       fills_at("10h", symbol="YUSD", venue="a", duration_s=600),
                       fills_at("10h", symbol="XUSD", venue="b", duration_s=600)],
                      ignore_index=True)
    out, _ = enrich(fills, trades=trades)
    np.testing.assert_allclose(out["market_volume"], [2.0, 10.0, np.nan])
    # without a venue column on the fills, prints of every venue of the symbol count
    out, _ = enrich(fills.drop(columns="venue").iloc[:1], trades=trades)
    np.testing.assert_allclose(out["market_volume"], [2.0])


def test_bars_without_symbol_column():
    bars = hourly_bars().drop(columns="symbol")
    out, _ = enrich(fills_at("3D10h"), bars=bars, adv_window_days=2)
    np.testing.assert_allclose(out["adv"], [60.0])
    two = pd.concat([fills_at("3D10h"), fills_at("3D10h", symbol="YUSD")], ignore_index=True)
    with pytest.raises(DataError, match="bars.*no symbol column"):
        enrich(two, bars=bars)


# --- fill-only-missing / overwrite / report ----------------------------------------------------


def test_only_missing_values_are_filled_unless_overwrite():
    bars = hourly_bars()
    fills = fills_at("3D10h", "3D11h")
    fills["adv"] = [np.nan, 999.0]
    before = fills.copy()
    out, rep = enrich(fills, bars=bars, adv_window_days=2)
    np.testing.assert_allclose(out["adv"], [60.0, 999.0])
    assert rep["adv"]["filled"] == 1
    pd.testing.assert_frame_equal(fills, before)            # the input is not modified
    out, rep = enrich(fills, bars=bars, adv_window_days=2, overwrite=True)
    np.testing.assert_allclose(out["adv"], [60.0, 60.0])
    assert rep["adv"]["filled"] == 2


def test_report_without_data_names_what_is_needed():
    fills = fills_at("3D10h")
    out, rep = enrich(fills)
    assert set(rep) == set(FIELDS)
    for field in FIELDS:
        assert rep[field]["filled"] == 0 and rep[field]["missing_after"] == 1
        assert rep[field]["source"] is None and "pass" in rep[field]["note"]
        assert field not in out.columns
    _, rep = enrich(fills, bars=hourly_bars())
    assert "duration_s" in rep["market_volume"]["note"]
    json.dumps(rep)                                            # JSON-ready


# --- no look-ahead -----------------------------------------------------------------------------


def test_no_look_ahead_on_the_sample(sample_frames):
    fills, bars = sample_frames["fills"], sample_frames["bars"]
    bare = fills.drop(columns=["adv", "volatility"])
    cutoff = pd.Timestamp("2024-10-01T13:17:00Z")
    later = (bars["timestamp"] >= cutoff).to_numpy()
    rng = np.random.default_rng(0)
    scrambled = bars.copy()
    scrambled.loc[later, "volume"] = rng.uniform(0, 1e6, later.sum())
    scrambled.loc[later, "close"] = rng.uniform(1, 1e5, later.sum())
    early = (fills["timestamp"] <= cutoff).to_numpy()
    for method in ("daily", "intraday"):
        a, _ = enrich(bare, bars=bars, vol_method=method)
        b, _ = enrich(bare, bars=scrambled, vol_method=method)
        for field in ("adv", "volatility"):
            assert a.loc[early, field].notna().all()
            np.testing.assert_array_equal(a.loc[early, field], b.loc[early, field])
            # the scramble is strong enough to show: fills after the cutoff day do change
            after = (fills["timestamp"] >= cutoff.normalize() + pd.Timedelta("1D")).to_numpy()
            assert (a.loc[after, field] != b.loc[after, field]).mean() > 0.9


# --- bad input ---------------------------------------------------------------------------------


def test_bad_input_raises_data_error():
    fills = fills_at("3D10h")
    with pytest.raises(DataError, match=r"fills: column 'symbol'.*missing"):
        enrich(fills.drop(columns="symbol"), bars=hourly_bars())
    with pytest.raises(DataError, match=r"bars: column 'volume'"):
        enrich(fills, bars=hourly_bars().drop(columns="volume"))
    bad = fills_at("3D10h", "3D11h")
    bad["timestamp"] = ["2024-03-04T10:00:00Z", "yesterday-ish"]
    with pytest.raises(DataError, match=r"fills: column 'timestamp'.*unparseable.*rows 2"):
        enrich(bad, bars=hourly_bars())
    with pytest.raises(DataError, match="bar length"):
        enrich(fills, bars=hourly_bars().iloc[:1])
    with pytest.raises(ValueError, match="vol_method"):
        enrich(fills, bars=hourly_bars(), vol_method="garch")


def test_string_timestamps_and_nat_rows():
    fills = fills_at("3D10h", "3D11h")
    fills["timestamp"] = ["2024-03-04T10:00:00Z", None]
    out, rep = enrich(fills, bars=hourly_bars(), adv_window_days=2)
    np.testing.assert_allclose(out["adv"], [60.0, np.nan])
    assert rep["adv"]["missing_after"] == 1


# --- the generated sample: close to the generator's truth --------------------------------------


@pytest.fixture(scope="module")
def sample_frames(root) -> dict:
    d = root / "sample_data"

    def read(name):
        f = pd.read_csv(d / name)
        f["timestamp"] = pd.to_datetime(f["timestamp"], utc=True)
        return f

    return {"fills": read("fills.csv"), "bars": read("bars_15m.csv"),
            "trades": read("trades_BTCUSDT.csv.gz"), "quotes": read("quotes_BTCUSDT.csv.gz"),
            "truth": json.loads((d / "ground_truth.json").read_text())}


def rel_err(a, b) -> pd.Series:
    return (pd.Series(np.asarray(a, float)) / pd.Series(np.asarray(b, float)) - 1).abs()


def window_sigma(fills: pd.DataFrame, truth: dict, window: int) -> np.ndarray:
    """Root mean square of the true regime sigmas over the window before each arrival day: what a
    trailing estimator measures."""
    m = truth["market"]
    day = ((fills["timestamp"] - pd.Timestamp(m["start"])) // pd.Timedelta("1D")).to_numpy()
    out = np.empty(len(fills))
    for s, v in m["symbols"].items():
        sig = np.where(np.array(v["regime_by_day"]) == 1, v["sigma_stressed"], v["sigma_calm"])
        cs = np.concatenate([[0.0], np.cumsum(sig ** 2)])
        sel = (fills["symbol"] == s).to_numpy()
        out[sel] = np.sqrt((cs[day[sel]] - cs[day[sel] - window]) / window)
    return out


def test_sample_enrichment_recovers_truth(sample_frames):
    fills, truth = sample_frames["fills"], sample_frames["truth"]
    bare = fills.drop(columns=list(FIELDS))
    out, rep = enrich(bare, bars=sample_frames["bars"], trades=sample_frames["trades"],
                      quotes=sample_frames["quotes"])
    # every fill has 21 warm-up days of bars: adv, volatility and market_volume are complete
    for field in ("market_volume", "adv", "volatility"):
        assert rep[field]["missing_after"] == 0, field
    # adv: the generator's definition exactly (bars volumes are rounded to 1e-4)
    assert rel_err(out["adv"], fills["adv"]).max() < 1e-6
    # market_volume: bars are pro-rata inside 15 minutes while the truth has minute detail and
    # minute volumes vary (log-sd 0.5), so short windows miss: median < 15 %, 90 % < 60 %
    err = rel_err(out["market_volume"], fills["market_volume"])
    assert err.median() < 0.15 and err.quantile(0.9) < 0.6
    # from the prints (BTCUSDT binance on the tape day): median < 10 %
    tape = rep["market_volume"]["by_source"]["trades"]
    assert tape >= 30
    from_trades, _ = enrich(bare, trades=sample_frames["trades"])
    ok = from_trades["market_volume"].notna()
    assert ok.sum() == tape
    assert rel_err(from_trades.loc[ok, "market_volume"], fills.loc[ok, "market_volume"]).median() < 0.10
    # spread from quotes at arrival (same fills): median < 5 %
    ok = out["spread_bps"].notna()
    assert ok.sum() >= 30
    assert rel_err(out.loc[ok, "spread_bps"], fills.loc[ok, "spread_bps"]).median() < 0.05
    # volatility (daily close-to-close, 20 returns): its sampling error alone is ~16 %, so
    # against the window's true RMS sigma: median < 20 %
    daily = rel_err(out["volatility"], window_sigma(fills, truth, 20))
    assert daily.median() < 0.20


def test_sample_intraday_volatility_against_regime_truth(sample_frames):
    fills, truth = sample_frames["fills"], sample_frames["truth"]
    bare = fills.drop(columns=list(FIELDS))
    out, _ = enrich(bare, bars=sample_frames["bars"], vol_method="intraday")
    # 1,920 fifteen-minute returns: against the window's RMS sigma, median < 5 %
    assert rel_err(out["volatility"], window_sigma(fills, truth, 20)).median() < 0.05
    # against the arrival day's own regime sigma (the `volatility` column) a trailing window lags
    # regime switches: median < 30 %
    assert rel_err(out["volatility"], fills["volatility"]).median() < 0.30
