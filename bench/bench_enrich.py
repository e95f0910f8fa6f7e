"""Enrichment speed: execal.models.data.enrich.enrich on the sample and on 1,000,000 generated fills.

Baselines on the same data in the same run: a per-fill Python loop (the notebook way, searchsorted
per fill) on the sample's 20,000 fills, and pandas idioms (merge_asof for the spread, a daily
groupby + rolling mean for adv) on the 1,000,000 fills.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import best_of, row
from execal.models.data.enrich import enrich
from execal.models.data.sample import build_sample, generate_fills, simulate_market, make_bars, make_quotes

ROOT = Path(__file__).resolve().parents[1]


def _read(path):
    f = pd.read_csv(path)
    f["timestamp"] = pd.to_datetime(f["timestamp"], utc=True)
    return f


def _loop_baseline(fills, bars, quotes):
    """The notebook way: one fill at a time, for adv, market_volume and spread_bps."""
    day_ns = 86_400 * 10**9
    by_sym = {}
    for s, g in bars.groupby("symbol"):
        t = g["timestamp"].dt.as_unit("ns").array.asi8
        by_sym[s] = (t, g["volume"].to_numpy(), np.cumsum(g["volume"].to_numpy()))
    qt = quotes["timestamp"].dt.as_unit("ns").array.asi8
    qb, qa = quotes["bid_price"].to_numpy(), quotes["ask_price"].to_numpy()
    adv, mv, spread = [], [], []
    ts = fills["timestamp"].dt.as_unit("ns").array.asi8
    for a, s, v, dur in zip(ts, fills["symbol"], fills["venue"], fills["duration_s"]):
        t, vol, cum = by_sym[s]
        d = a // day_ns
        lo, hi = np.searchsorted(t, [(d - 20) * day_ns, d * day_ns])
        adv.append(vol[lo:hi].sum() / 20)
        b = a + int(dur * 1e9)
        bar = 900 * 10**9
        i0, i1 = np.searchsorted(t, [a, b], side="right") - 1
        full = vol[i0:i1 + 1].sum()
        full -= vol[i0] * (a - t[i0]) / bar
        full -= vol[i1] * (t[i1] + bar - b) / bar
        mv.append(full)
        if s == "BTCUSDT" and v == "binance":
            j = np.searchsorted(qt, a, side="right") - 1
            spread.append((qa[j] - qb[j]) / ((qa[j] + qb[j]) / 2) * 1e4 if j >= 0 and a - qt[j] <= 300e9 else np.nan)
        else:
            spread.append(np.nan)
    return np.array(adv), np.array(mv), np.array(spread)


def _pandas_baseline(fills, bars, quotes):
    """Vectorised pandas idioms for spread_bps (merge_asof) and adv (daily groupby + rolling)."""
    quotes = quotes.assign(timestamp=quotes["timestamp"].dt.as_unit("ns"))
    q = quotes.assign(spread_bps=(quotes["ask_price"] - quotes["bid_price"])
                      / ((quotes["ask_price"] + quotes["bid_price"]) / 2) * 1e4)
    left = fills[["timestamp", "symbol", "venue"]].reset_index()
    left["timestamp"] = left["timestamp"].dt.as_unit("ns")
    m = pd.merge_asof(left.sort_values("timestamp"), q[["timestamp", "symbol", "venue", "spread_bps"]],
                      on="timestamp", by=["symbol", "venue"],
                      tolerance=pd.Timedelta("300s"), direction="backward")
    daily = (bars.assign(day=bars["timestamp"].dt.floor("D")).groupby(["symbol", "day"])["volume"]
             .sum().groupby(level=0).transform(lambda s: s.rolling(20).mean().shift(1)))
    key = pd.MultiIndex.from_arrays([fills["symbol"], fills["timestamp"].dt.floor("D")])
    return m.sort_values("index")["spread_bps"].to_numpy(), daily.reindex(key).to_numpy()


def run(quick: bool = False) -> list[dict]:
    rows = []
    d = ROOT / "sample_data"
    fills, bars = _read(d / "fills.csv"), _read(d / "bars_15m.csv")
    trades, quotes = _read(d / "trades_BTCUSDT.csv.gz"), _read(d / "quotes_BTCUSDT.csv.gz")
    bare = fills.drop(columns=["adv", "market_volume", "volatility", "spread_bps"])
    fields = ["adv", "market_volume", "spread_bps"]
    t_enrich, (out, _) = best_of(lambda: enrich(bare, bars=bars, quotes=quotes), 3)
    n_loop = 2_000 if quick else len(fills)
    t_loop, (adv, mv, sp) = best_of(lambda: _loop_baseline(bare.iloc[:n_loop], bars, quotes), 1)
    same = (np.allclose(adv, out["adv"].iloc[:n_loop]) and np.allclose(mv, out["market_volume"].iloc[:n_loop])
            and np.allclose(sp, out["spread_bps"].iloc[:n_loop], equal_nan=True))
    t_loop_full = t_loop * len(fills) / n_loop
    rows.append(row(f"enrich sample ({len(fills):,} fills, bars+quotes, 4 fields)", t_enrich,
                    baseline="per-fill Python loop (adv, market_volume, spread only)"
                    + (" extrapolated" if quick else ""), baseline_s=t_loop_full,
                    note=f"loop results equal enrich: {same}"))

    n = 100_000 if quick else 1_000_000
    market = simulate_market(7)
    big, _ = generate_fills(n, seed=7, market=market)
    bars_big = make_bars(market)
    bars_big["timestamp"] = pd.to_datetime(bars_big["timestamp"], utc=True)
    quotes_big = make_quotes(market)
    quotes_big["timestamp"] = pd.to_datetime(quotes_big["timestamp"], utc=True)
    bare_big = big.drop(columns=["adv", "market_volume", "volatility", "spread_bps"])
    t_big, (out_big, _) = best_of(lambda: enrich(bare_big, bars=bars_big, quotes=quotes_big), 3)
    t_pd, (sp_pd, adv_pd) = best_of(lambda: _pandas_baseline(bare_big, bars_big, quotes_big), 3)
    same = (np.allclose(sp_pd, out_big["spread_bps"], equal_nan=True)
            and np.allclose(adv_pd, out_big["adv"]))
    rows.append(row(f"enrich {n:,} fills (bars+quotes, 4 fields)", t_big,
                    baseline="pandas merge_asof (spread) + groupby/rolling (adv) only",
                    baseline_s=t_pd, note=f"baseline does 2 of 4 fields; equal: {same}"))
    return rows
