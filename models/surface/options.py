"""Option chains made ready for a volatility surface: snapshot, forwards, moneyness, vols.

The room between a loaded "options" dataset (a Tardis/Deribit `options_chain` stream or a generic
chain) and the smile fits in `models/svi.py`. `prepare_chain` takes the latest quote of every
option at a snapshot time, works out one forward per expiry, converts coin-quoted (inverse)
prices to the quote currency, inverts prices to Black-76 implied vols (`execal.models.surface.iv`), and returns
a `Chain`: every quote with its flags, one smile point per strike, and the forwards table.

Conventions
- T_years: ACT/365 from the snapshot to the expiry timestamp (the sample data's convention).
- Log-moneyness k = ln(K/F); total implied variance w = σ²·T.
- Prices are undiscounted (crypto venues mark options on undiscounted Black-76; Deribit does).
- Inverse options (price_unit "base", Deribit): the coin price is the quote-currency Black-76
  price divided by the forward, c = C/F (Deribit converts with the expiry's underlying price,
  which is its futures or synthetic forward). So C = c·F and, by put–call parity,
  c − p = 1 − K/F in coin terms (C − P = F − K in the quote currency).
- Forward per expiry: the futures price where the data has one; else put–call parity on the
  call/put pairs nearest the money; else the rows' `underlying_price` (for Deribit that is the
  expiry's futures or synthetic forward), with a warning.
- Fitting points: one quote per strike, the out-of-the-money one (call for K ≥ F, put below),
  falling back to the other when the OTM quote has no usable vol. Mid IV = mean of bid and ask
  IV where both exist, else the IV of the mark; bid/ask IVs are kept as the band.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from execal.models.surface import iv as ivmod
from execal.models.data.schema import DataError, Dataset, DropRecord, ValidationReport

SECONDS_PER_YEAR = 365.0 * 86400.0
FORWARD_METHODS = ("auto", "futures", "parity", "underlying")
IV_SOURCES = ("auto", "prices", "given")
PRICE_UNITS = ("auto", "usd", "base")   # usd: quote currency (USD, USDT, USDC); base: the coin (inverse)
MAX_BELOW_INTRINSIC_SHARE = 0.05  # more quotes than this below intrinsic: the prices are misread, refuse
FUTURES_SPREAD_WARN_BPS = 1.0     # several futures prices of one expiry further apart than this: say so
_QUOTE_CURRENCIES = ("usd", "usdt", "usdc", "quote", "fiat", "busd", "dai", "eur")
_BASE_WORDS = ("base", "coin", "inverse")
PARITY_PAIRS = 5                 # call/put pairs nearest the money used for a parity forward
PARITY_WARN_BPS = 25.0           # parity vs futures disagreement worth a warning
_SYMBOL_ASSET = re.compile(r"^\s*([A-Za-z0-9_]+)-")


# --- unit conversion ------------------------------------------------------------------------------

def to_quote_units(price_base, forward) -> np.ndarray:
    """Coin-quoted (inverse) option price → quote currency: C = c·F."""
    return np.asarray(price_base, dtype=np.float64) * np.asarray(forward, dtype=np.float64)


def to_base_units(price_quote, forward) -> np.ndarray:
    """Quote-currency option price → coin units (inverse quoting): c = C/F."""
    return np.asarray(price_quote, dtype=np.float64) / np.asarray(forward, dtype=np.float64)


def parity_forward(strike, call_price, put_price, *, price_unit: str = "quote",
                   pairs: int = PARITY_PAIRS) -> tuple[float, int, float | None]:
    """Forward from put–call parity on the pairs nearest the money, as (F, pairs used, D).

    Undiscounted parity gives one forward per pair: F = K + (C − P) in the quote currency,
    F = K / (1 − (c − p)) in coin units. The median over the `pairs` pairs with the smallest
    |ln(K/F_i)| is robust to one bad quote. D is the discount factor a straight-line fit of
    (c − p) on K implies (intercept D·F, slope −D in the quote currency; intercept D, slope −D/F in
    coin units): a diagnostic (≈ 1 for undiscounted marks), None with fewer than 3 pairs.
    """
    K = np.asarray(strike, dtype=np.float64)
    y = np.asarray(call_price, dtype=np.float64) - np.asarray(put_price, dtype=np.float64)
    ok = np.isfinite(K) & np.isfinite(y) & (K > 0)
    K, y = K[ok], y[ok]
    if K.size == 0:
        return float("nan"), 0, None
    with np.errstate(all="ignore"):
        per_pair = K / (1.0 - y) if price_unit == "base" else K + y
    good = np.isfinite(per_pair) & (per_pair > 0)
    K, y, per_pair = K[good], y[good], per_pair[good]
    if K.size == 0:
        return float("nan"), 0, None
    # nearest the money: c − p changes sign at K = F
    near = np.argsort(np.abs(np.log(K / np.median(per_pair))), kind="stable")[:pairs]
    F = float(np.median(per_pair[near]))
    discount = None
    if near.size >= 3 and np.ptp(K[near]) > 0:
        slope, intercept = np.polyfit(K[near], y[near], 1)
        discount = float(intercept if price_unit == "base" else -slope)
    return F, int(near.size), discount


# --- the prepared chain ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Chain:
    """A chain at one snapshot, ready for smile fits. Frames are tidy (one row per item).

    `quotes`: every quote kept after the snapshot (calls and puts), with forward, k, T_years,
    quote-currency prices, bid/ask/mark/mid IVs and the IV flag names. `points`: one row per
    (expiry, strike), what the fits use. `forwards`: one row per expiry with the forward, where it
    came from and the parity/futures diagnostics.
    """
    quotes: pd.DataFrame
    points: pd.DataFrame
    forwards: pd.DataFrame
    as_of: pd.Timestamp
    underlying: str | None
    source: str
    iv_source: str
    forward_method: str
    report: ValidationReport
    sha256: str | None = None
    price_unit: str = "usd"          # what the prices were read as: "usd", "base" or "mixed"
    price_unit_reason: str = ""

    @property
    def expiries(self) -> list[pd.Timestamp]:
        return list(self.forwards["expiry"])

    def slice_points(self, expiry) -> pd.DataFrame:
        return self.points[self.points["expiry"] == pd.Timestamp(expiry)]

    def summary(self) -> dict:
        """JSON-ready description (what the CLI writes next to the fit)."""
        fw = self.forwards
        return {
            "source": self.source, "underlying": self.underlying,
            "as_of": self.as_of.isoformat(), "iv_source": self.iv_source,
            "price_unit": self.price_unit, "price_unit_reason": self.price_unit_reason,
            "forward_method": self.forward_method, "expiries": int(len(fw)),
            "points": int(len(self.points)), "quotes": int(len(self.quotes)),
            "forwards": [
                {"expiry": r.expiry.isoformat(), "T_years": float(r.T_years), "forward": float(r.forward),
                 "forward_source": r.forward_source,
                 "futures_price": _num(r.futures_price), "futures_count": int(r.futures_count),
                 "futures_min": _num(r.futures_min), "futures_max": _num(r.futures_max),
                 "futures_spread_bps": _num(r.futures_spread_bps),
                 "underlying_price": _num(r.underlying_price),
                 "parity_forward": _num(r.parity_forward),
                 "parity_pairs": int(r.parity_pairs), "parity_discount": _num(r.parity_discount),
                 "parity_vs_futures_bps": _num(r.parity_vs_futures_bps)}
                for r in fw.itertuples(index=False)],
            "validation": self.report.to_dict(),
        }


def _num(v):
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


class _Drops:
    """Rows removed on the way, each counted once under its first reason."""

    def __init__(self, n: int):
        self.alive = np.ones(n, dtype=bool)
        self.records: list[DropRecord] = []

    def drop(self, mask: np.ndarray, reason: str, column: str | None = None) -> None:
        bad = self.alive & mask
        count = int(bad.sum())
        if count:
            self.records.append(DropRecord(reason, column, count, (np.flatnonzero(bad)[:5] + 1).tolist()))
            self.alive &= ~bad


def _float_col(frame: pd.DataFrame, col: str) -> np.ndarray:
    if col not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[col], errors="coerce").to_numpy(np.float64, na_value=np.nan)


def _utc(series: pd.Series) -> pd.Series:
    out = pd.to_datetime(series, utc=True, errors="coerce")
    return out.dt.tz_convert("UTC") if out.dt.tz is not None else out


def _asset(frame: pd.DataFrame) -> np.ndarray:
    """The traded coin of each row: the symbol's prefix (BTC-27DEC24-60000-C), else `underlying`."""
    n = len(frame)
    out = np.full(n, "", dtype=object)
    if "underlying" in frame.columns:
        und = frame["underlying"].astype("str").fillna("").to_numpy(dtype=object)
        out = und
    if "symbol" in frame.columns:
        pref = frame["symbol"].astype("str").str.extract(_SYMBOL_ASSET, expand=False)
        pref = pref.str.upper().to_numpy(dtype=object, na_value=None)
        has = np.array([p is not None for p in pref], dtype=bool)
        out = np.where(has, pref, out)
    return np.asarray(out, dtype=object)


def _unit_of_values(frame: pd.DataFrame, asset: np.ndarray) -> np.ndarray:
    """Per row "base", "quote" or "" (unknown) from a `price_unit` column (a `currency` column maps
    to it): base/coin/inverse or the row's own coin (BTC for a BTC option) -> base; USD, USDT, USDC,
    quote -> quote."""
    n = len(frame)
    if "price_unit" not in frame.columns:
        return np.full(n, "", dtype=object)
    raw = frame["price_unit"].astype("str").str.strip().str.lower().to_numpy(dtype=object, na_value="")
    coin = np.char.lower(np.asarray(asset, dtype=str))
    out = np.full(n, "", dtype=object)
    out[np.isin(raw, _QUOTE_CURRENCIES)] = "quote"
    out[np.isin(raw, _BASE_WORDS) | ((raw == coin) & (coin != ""))] = "base"
    return out


def _detect_unit(mid: np.ndarray, strike: np.ndarray, is_call: np.ndarray, reference_forward: float
                 ) -> tuple[str, str]:
    """Coin or quote currency for one expiry's prices, from the evidence, with the reason.

    Read the wrong way, coin prices fall below intrinsic value in the money (0.1 BTC against
    thousands of USD of intrinsic value) and quote-currency prices exceed the coin bound; when no
    quote is in the money, coin prices are all tiny next to a forward worth thousands."""
    ok = np.isfinite(mid) & (mid > 0)
    if not np.isfinite(reference_forward) or not ok.any():
        return "", "no futures or underlying price to judge the price unit by"
    F = reference_forward
    intrinsic = np.where(is_call, np.maximum(F - strike, 0.0), np.maximum(strike - F, 0.0))
    upper = np.where(is_call, F, strike)           # a call is worth less than F, a put less than K
    itm = ok & (intrinsic > 1e-3 * F)
    wrong_quote = int((mid[itm] < 0.98 * intrinsic[itm]).sum() + (mid[ok] > upper[ok]).sum())
    wrong_base = int((mid[itm] * F < 0.98 * intrinsic[itm]).sum() + (mid[ok] * F > upper[ok]).sum())
    if wrong_quote != wrong_base:
        unit = "base" if wrong_base < wrong_quote else "quote"
        return unit, (f"read as {'the coin' if unit == 'base' else 'the quote currency'}, "
                      f"{min(wrong_base, wrong_quote)} of {int(ok.sum())} quotes break the no-arbitrage "
                      f"bounds (intrinsic value, F or K) against {max(wrong_base, wrong_quote)} the other way")
    top = float(np.max(mid[ok]))
    if F >= 1000 and top <= 1.5:
        return "base", (f"every price is at most {top:.4g} while the forward is {F:.6g}: coin-quoted "
                        "(inverse) prices")
    return "quote", f"prices up to {top:.6g} against a forward of {F:.6g}: quote-currency prices"


def prepare_chain(data: Dataset | pd.DataFrame, *, underlying: str | None = None,
                  as_of: Any = None, forward: str = "auto", iv_source: str = "auto",
                  price_unit: str = "auto", strict: bool = True,
                  source: str | None = None) -> Chain:
    """Snapshot, forwards, moneyness and implied vols of an "options" dataset (see module doc).

    `underlying` picks one coin when the file holds several (BTC, ETH); `as_of` is the snapshot
    time (default: the latest timestamp); `forward` one of FORWARD_METHODS; `iv_source` "prices"
    (invert bid/ask/mark prices), "given" (the file's IV columns) or "auto" (per row: the prices
    where a row has any, else its given IVs). `price_unit` "usd" (quote currency), "base" (coin,
    inverse options) or "auto": a `price_unit` / `currency` column where it says, else detected per
    expiry (`_detect_unit`) and reported. With `strict` a chain whose prices cannot be right is
    refused (`DataError`): more than MAX_BELOW_INTRINSIC_SHARE of the priced quotes at or below
    intrinsic value, or a put–call parity forward that disagrees with the futures price by more
    than the quotes' spread; without it these are warnings. Raises `DataError` when nothing usable
    is left, naming the column and rows.
    """
    if forward not in FORWARD_METHODS:
        raise ValueError(f"forward must be one of {FORWARD_METHODS}, got {forward!r}")
    if iv_source not in IV_SOURCES:
        raise ValueError(f"iv_source must be one of {IV_SOURCES}, got {iv_source!r}")
    price_unit = {"quote": "usd", "coin": "base", "inverse": "base"}.get(price_unit, price_unit)
    if price_unit not in PRICE_UNITS:
        raise ValueError(f"price_unit must be one of {PRICE_UNITS}, got {price_unit!r}")
    sha = None
    if isinstance(data, Dataset):
        frame, source, sha = data.frame, source or data.source, data.sha256
        upstream = data.report
    else:
        frame, source, upstream = data, source or "chain", None
    source = source or "chain"
    n = len(frame)
    for col in ("expiry", "strike", "option_type"):
        if col not in frame.columns:
            raise DataError(f"an option chain needs column '{col}'", file=source, column=col)
    price_cols = [c for c in ("bid_price", "ask_price", "mark_price") if c in frame.columns]
    iv_cols = [c for c in ("bid_iv", "ask_iv", "mark_iv") if c in frame.columns]
    if not price_cols and not iv_cols:
        raise DataError("an option chain needs prices (bid_price/ask_price/mark_price) or implied "
                        "vols (bid_iv/ask_iv/mark_iv)", file=source)
    if n == 0:
        raise DataError("the chain is empty", file=source)
    if iv_source == "prices" and not price_cols:
        raise DataError("iv_source='prices' needs bid_price, ask_price or mark_price", file=source)
    if iv_source == "given" and not iv_cols:
        raise DataError("iv_source='given' needs bid_iv, ask_iv or mark_iv", file=source)

    drops = _Drops(n)
    warnings: list[str] = []
    # -- option type, underlying, snapshot -----------------------------------------------------
    kind = frame["option_type"].astype("str").str.strip().str.lower().to_numpy(dtype=object, na_value="")
    is_call = np.isin(kind, ("call", "c"))
    drops.drop(~(is_call | np.isin(kind, ("put", "p"))), "option type is not call/put", "option_type")
    asset = _asset(frame)
    assets = sorted({a for a in asset[drops.alive] if a})
    if underlying is None:
        if len(assets) > 1:
            raise DataError(f"the chain holds several underlyings ({', '.join(assets)}): choose one "
                            f"(underlying=..., CLI --underlying)", file=source, column="symbol")
        underlying = assets[0] if assets else None
    else:
        wanted = str(underlying).strip().upper()
        match = np.array([str(a).upper() == wanted for a in asset], dtype=bool)
        if not (match & drops.alive).any():
            raise DataError(f"no options on underlying {underlying!r} (found: {', '.join(assets) or 'none'})",
                            file=source, column="symbol")
        drops.drop(~match, f"other underlying than {wanted}", "symbol")
        underlying = wanted
    expiry = _utc(frame["expiry"])
    expiry_ns = expiry.to_numpy("datetime64[ns]").astype(np.int64)
    drops.drop(expiry.isna().to_numpy(), "expiry missing or not a date", "expiry")
    strike = _float_col(frame, "strike")
    drops.drop(~(np.isfinite(strike) & (strike > 0)), "strike missing or not positive", "strike")
    if "timestamp" in frame.columns:
        ts = _utc(frame["timestamp"])
        ts_ns = ts.to_numpy("datetime64[ns]").astype(np.int64)
        drops.drop(ts.isna().to_numpy(), "timestamp missing", "timestamp")
    else:
        ts_ns = np.zeros(n, dtype=np.int64)
        if as_of is None:
            raise DataError("a chain without a 'timestamp' column needs an explicit as_of time",
                            file=source, column="timestamp")
    if as_of is None:
        as_of_ts = pd.Timestamp(int(ts_ns[drops.alive].max()) if drops.alive.any() else 0, tz="UTC")
    else:
        as_of_ts = pd.Timestamp(as_of)
        as_of_ts = as_of_ts.tz_localize("UTC") if as_of_ts.tzinfo is None else as_of_ts.tz_convert("UTC")
        drops.drop((ts_ns > as_of_ts.value) & ("timestamp" in frame.columns),
                   f"quoted after the snapshot {as_of_ts.isoformat()}", "timestamp")
    drops.drop(expiry_ns <= as_of_ts.value, f"expired at the snapshot {as_of_ts.isoformat()}", "expiry")
    # latest quote per option (a Tardis chain is a stream of updates)
    alive = np.flatnonzero(drops.alive)
    if alive.size == 0:
        raise DataError("no usable option rows: " + "; ".join(
            f"{d.count} {d.reason}" for d in drops.records), file=source)
    order = alive[np.lexsort((alive, ts_ns[alive]))]   # by time, file order among equal times
    key = pd.DataFrame({"e": expiry_ns[order], "k": strike[order], "c": is_call[order]})
    later = key.duplicated(keep="last").to_numpy()
    superseded = np.zeros(n, dtype=bool)
    superseded[order[later]] = True
    drops.drop(superseded, "superseded by a later quote of the same option")

    # -- prices and forwards -------------------------------------------------------------------
    bid, ask, mark = (_float_col(frame, c) for c in ("bid_price", "ask_price", "mark_price"))
    bid = np.where(bid > 0, bid, np.nan)        # a zero bid is "no bid"
    ask = np.where(ask > 0, ask, np.nan)
    mark = np.where(mark > 0, mark, np.nan)
    crossed = bid > ask
    if (crossed & drops.alive).any():
        rows = (np.flatnonzero(crossed & drops.alive)[:5] + 1).tolist()
        warnings.append(f"{int((crossed & drops.alive).sum())} quote(s) with bid above ask: their "
                        f"bid/ask ignored, mark used (rows {', '.join(map(str, rows))})")
        bid = np.where(crossed, np.nan, bid)
        ask = np.where(crossed, np.nan, ask)
    mid = np.where(np.isfinite(bid) & np.isfinite(ask), 0.5 * (bid + ask), mark)
    if price_unit == "auto":
        unit = _unit_of_values(frame, asset)
    else:
        unit = np.full(n, "base" if price_unit == "base" else "quote", dtype=object)
    futures = _float_col(frame, "futures_price")
    unit_reasons: list[str] = []
    spreads = np.where(np.isfinite(bid) & np.isfinite(ask), ask - bid, np.nan)
    und_price = _float_col(frame, "underlying_price")

    idx = np.flatnonzero(drops.alive)
    exp_codes, exp_values = pd.factorize(expiry_ns[idx], sort=True)
    fw_rows = []
    forward_of = np.empty(len(exp_values))
    for e, e_ns in enumerate(exp_values):
        rows = idx[exp_codes == e]
        T = (int(e_ns) - as_of_ts.value) / 1e9 / SECONDS_PER_YEAR
        label = pd.Timestamp(int(e_ns), tz="UTC").isoformat()
        fut_all = futures[rows]
        fut_all = np.unique(fut_all[np.isfinite(fut_all) & (fut_all > 0)])
        fut = float(np.median(fut_all)) if fut_all.size else np.nan
        fut_spread_bps = 1e4 * (fut_all[-1] - fut_all[0]) / fut if fut_all.size > 1 else 0.0
        if fut_spread_bps > FUTURES_SPREAD_WARN_BPS:
            warnings.append(f"expiry {label}: {fut_all.size} different futures prices from {fut_all[0]:.8g} "
                            f"to {fut_all[-1]:.8g} ({fut_spread_bps:.2f} bps apart); their median "
                            f"{fut:.8g} is the futures candidate")
        und = und_price[rows]
        und = float(np.median(und[np.isfinite(und) & (und > 0)])) if (np.isfinite(und) & (und > 0)).any() else np.nan
        units = set(unit[rows]) - {""}
        if len(units) > 1:
            raise DataError(f"expiry {label} mixes coin-quoted and quote-currency prices",
                            file=source, column="price_unit", rows=(rows[:5] + 1).tolist())
        if units:
            row_unit = units.pop()
            if (unit[rows] == "").any():
                unit[rows] = row_unit
            if price_unit == "auto":
                unit_reasons.append(f"{label}: {'coin' if row_unit == 'base' else 'quote currency'} "
                                    "(the price_unit/currency column)")
        else:
            row_unit, why = _detect_unit(mid[rows], strike[rows], is_call[rows],
                                         fut if np.isfinite(fut) else und)
            if not row_unit:
                row_unit = "quote"
                warnings.append(f"expiry {label}: price unit unknown ({why}); prices read as quote "
                                "currency: say --price-unit base if they are in the coin")
            unit[rows] = row_unit
            unit_reasons.append(f"{label}: {why}")
        calls, puts = rows[is_call[rows]], rows[~is_call[rows]]
        c_by_k = pd.Series(mid[calls], index=strike[calls])
        p_by_k = pd.Series(mid[puts], index=strike[puts])
        both = c_by_k.index.intersection(p_by_k.index)
        par_F, par_n, par_D = parity_forward(both.to_numpy(np.float64), c_by_k[both].to_numpy(),
                                             p_by_k[both].to_numpy(), price_unit=row_unit)
        candidates = {"futures": fut, "parity": par_F, "underlying": und}
        if forward == "auto":
            chosen = next((m for m in ("futures", "parity", "underlying")
                           if np.isfinite(candidates[m]) and candidates[m] > 0), None)
            if chosen == "underlying":
                warnings.append(f"expiry {label}: no futures price and no call/put pair; forward = "
                                f"underlying_price {und:g} (Deribit's futures or synthetic forward)")
        else:
            chosen = forward if np.isfinite(candidates[forward]) and candidates[forward] > 0 else None
        if chosen is None:
            need = {"futures": "a 'futures_price' column", "parity": "calls and puts at the same strike "
                    "with prices", "underlying": "an 'underlying_price' column",
                    "auto": "futures_price, call/put pairs with prices, or underlying_price"}[forward]
            raise DataError(f"expiry {label}: cannot work out the forward (forward='{forward}' needs {need})",
                            file=source, column="futures_price" if forward in ("auto", "futures") else None,
                            rows=(rows[:5] + 1).tolist())
        F = float(candidates[chosen])
        vs_bps = 1e4 * (par_F / fut - 1.0) if np.isfinite(par_F) and np.isfinite(fut) else np.nan
        # what the quotes' spreads allow the parity forward to miss by: half the call's and the
        # put's spread (in the quote currency) at the pairs nearest the money
        sp = (pd.Series(spreads[calls], index=strike[calls]).reindex(both)
              + pd.Series(spreads[puts], index=strike[puts]).reindex(both)).to_numpy(np.float64)
        sp = sp[np.isfinite(sp)]
        tol_bps = (1e4 * 0.5 * float(np.median(sp)) * (fut if row_unit == "base" else 1.0) / fut
                   if sp.size and np.isfinite(fut) else PARITY_WARN_BPS)
        if np.isfinite(vs_bps) and abs(vs_bps) > max(tol_bps, PARITY_WARN_BPS):
            text = (f"expiry {label}: put–call parity forward {par_F:.8g} differs from the futures "
                    f"price {fut:.8g} by {vs_bps:.1f} bps, more than the quotes' spread allows "
                    f"({tol_bps:.1f} bps)")
            if strict:
                raise DataError(text + ": the prices are probably in another unit (try --price-unit "
                                f"{'usd' if row_unit == 'base' else 'base'}) or not of this futures' expiry", file=source, column="futures_price",
                                rows=(rows[:5] + 1).tolist())
            warnings.append(text)
        if par_D is not None and abs(par_D - 1.0) > 0.01 and chosen == "parity":
            warnings.append(f"expiry {label}: the call/put prices imply a discount factor {par_D:.4f}; "
                            "execal treats prices as undiscounted (Black-76 on the forward)")
        forward_of[e] = F
        fw_rows.append({"expiry": pd.Timestamp(int(e_ns), tz="UTC"), "T_years": T, "forward": F,
                        "forward_source": chosen, "price_unit": row_unit, "futures_price": fut,
                        "futures_count": int(fut_all.size),
                        "futures_min": float(fut_all[0]) if fut_all.size else np.nan,
                        "futures_max": float(fut_all[-1]) if fut_all.size else np.nan,
                        "futures_spread_bps": fut_spread_bps,
                        "parity_forward": par_F, "parity_pairs": par_n,
                        "parity_discount": np.nan if par_D is None else par_D,
                        "parity_vs_futures_bps": vs_bps, "underlying_price": und,
                        "quotes": int(rows.size)})
    forwards = pd.DataFrame(fw_rows)

    # -- implied vols ------------------------------------------------------------------------------
    F_row = forward_of[exp_codes]
    T_row = forwards["T_years"].to_numpy()[exp_codes]
    K_row = strike[idx]
    call_row = is_call[idx]
    scale = np.where(unit[idx] == "base", F_row, 1.0)
    q_bid, q_ask, q_mark = bid[idx] * scale, ask[idx] * scale, mark[idx] * scale
    q_mid = mid[idx] * scale
    has_price = np.isfinite(q_bid) | np.isfinite(q_ask) | np.isfinite(q_mark)
    given = [_float_col(frame, c)[idx] for c in ("bid_iv", "ask_iv", "mark_iv")]
    has_iv = np.zeros(idx.size, dtype=bool)
    for arr in given:
        has_iv |= np.isfinite(arr) & (arr > 0)
    if iv_cols and has_iv.any():
        typical = float(np.nanmedian(np.concatenate([a[np.isfinite(a) & (a > 0)] for a in given])))
        if typical > 3.0:        # 300 % as a fraction is absurd; 3 % as a percentage too
            given = [a / 100.0 for a in given]
            warnings.append(f"implied vols read as percent (median {typical:g}) and divided by 100")
    if iv_source == "auto":      # per row: invert the prices where a row has any, else its given IVs
        use_prices = has_price if price_cols else np.zeros(idx.size, dtype=bool)
        iv_source = "given" if not use_prices.any() else "prices" if use_prices.all() else "mixed"
    else:
        use_prices = np.full(idx.size, iv_source == "prices")
    res = {name: ivmod.implied_vol(p, F_row, K_row, T_row, call_row)
           for name, p in (("bid", q_bid), ("ask", q_ask), ("mark", q_mark))}
    flag_of = {}
    vols = []
    for (name, r), arr in zip(res.items(), given):
        f_given = np.where(np.isfinite(arr) & (arr > 0), ivmod.OK, ivmod.BAD_INPUT).astype(np.int8)
        flag_of[name] = np.where(use_prices, r.flag, f_given).astype(np.int8)
        vols.append(np.where(flag_of[name] == ivmod.OK, np.where(use_prices, r.vol, arr), np.nan))
    iv_bid, iv_ask, iv_mark = vols
    # quotes at or below intrinsic value: a few are stale marks; many mean misread prices
    priced = use_prices & has_price
    below = priced & ((res["mark"].flag == ivmod.BELOW_INTRINSIC) | (res["bid"].flag == ivmod.BELOW_INTRINSIC)
                      & ~np.isfinite(q_mark))
    if priced.sum() and below.sum() > MAX_BELOW_INTRINSIC_SHARE * priced.sum():
        unit_read = "/".join(sorted({"coin" if u == "base" else "quote currency" for u in unit[idx][priced]}))
        text = (f"{int(below.sum())} of {int(priced.sum())} priced quotes "
                f"({100 * below.sum() / priced.sum():.0f} %) are at or below intrinsic value with prices "
                f"read in {unit_read}")
        if strict:
            raise DataError(text + ": the prices are probably in another unit (try --price-unit "
                            f"{'usd' if 'coin' in unit_read else 'base'}) or the forward is wrong",
                            file=source, column="mark_price", rows=(idx[below][:5] + 1).tolist())
        warnings.append(text)
    two_sided = np.isfinite(iv_bid) & np.isfinite(iv_ask)
    iv_mid = np.where(two_sided, 0.5 * (iv_bid + iv_ask), iv_mark)
    mid_from = np.where(two_sided, "bid/ask", np.where(np.isfinite(iv_mark), "mark", ""))
    # why a row has no vol: the flag of the mark, else of the bid, else of the ask
    why = np.where(flag_of["mark"] != ivmod.OK, flag_of["mark"],
                   np.where(flag_of["bid"] != ivmod.OK, flag_of["bid"], flag_of["ask"]))
    no_price = np.where(use_prices, ~has_price, ~has_iv)
    quotes = pd.DataFrame({
        "row": idx + 1, "symbol": frame["symbol"].astype("str").to_numpy()[idx] if "symbol" in frame.columns
        else "", "expiry": pd.to_datetime(expiry_ns[idx], utc=True), "T_years": T_row,
        "strike": K_row, "option_type": np.where(call_row, "call", "put"), "forward": F_row,
        "k": np.log(K_row / F_row), "bid_price": q_bid, "ask_price": q_ask, "mark_price": q_mark,
        "mid_price": q_mid, "iv_bid": iv_bid, "iv_ask": iv_ask, "iv_mark": iv_mark, "iv_mid": iv_mid,
        "iv_mid_from": mid_from,
        "iv_flag": np.where(np.isfinite(iv_mid), "ok",
                            np.where(no_price, "no_price", pd.Series(why).map(ivmod.FLAGS).to_numpy())),
        "otm": np.where(call_row, K_row >= F_row, K_row < F_row),
    })
    # rows without a vol: dropped under the IV flag's description
    usable = np.isfinite(iv_mid)
    for code in np.unique(why[~usable]) if (~usable).any() else []:
        rows_c = np.zeros(n, dtype=bool)
        rows_c[idx[~usable & ~no_price & (why == code)]] = True
        drops.drop(rows_c, f"no implied vol: {ivmod.FLAG_DESCRIPTIONS[int(code)]}",
                   "mark_iv" if iv_source == "given" else "mark_price")
    rows_np = np.zeros(n, dtype=bool)
    rows_np[idx[~usable & no_price]] = True
    drops.drop(rows_np, "no price and no implied vol", "mark_iv" if iv_source == "given" else "mark_price")

    # -- one point per strike: the OTM quote, else its twin ----------------------------------------
    q = quotes[usable]
    pref = q.sort_values(["expiry", "strike", "otm"], ascending=[True, True, False], kind="stable")
    twin = pref.duplicated(["expiry", "strike"], keep="first").to_numpy()
    twin_rows = np.zeros(n, dtype=bool)
    twin_rows[pref["row"].to_numpy()[twin] - 1] = True
    drops.drop(twin_rows, "in-the-money twin of a quote at the same strike (one quote per strike is fitted)")
    points = pref[~twin].reset_index(drop=True)
    points = points.drop(columns=["otm"])
    points["w"] = points["iv_mid"] ** 2 * points["T_years"]
    points["iv_spread"] = points["iv_ask"] - points["iv_bid"]
    points["vega"] = ivmod.black76_vega(points["forward"].to_numpy(), points["strike"].to_numpy(),
                                        points["T_years"].to_numpy(), points["iv_mid"].to_numpy())
    if points.empty:
        raise DataError("no option has a usable implied vol: " + "; ".join(
            f"{d.count} {d.reason}" for d in drops.records), file=source)
    counts = points.groupby("expiry").size()
    forwards["points"] = forwards["expiry"].map(counts).fillna(0).astype(int)

    report = ValidationReport(rows_read=n, rows_kept=int(len(points)),
                              dropped=list(drops.records),
                              warnings=(list(upstream.warnings) if upstream else []) + warnings)
    return Chain(quotes=quotes.drop(columns=["otm"]), points=points, forwards=forwards,
                 as_of=as_of_ts, underlying=underlying, source=source, iv_source=iv_source,
                 forward_method=forward, report=report, sha256=sha,
                 price_unit=("mixed" if len(set(forwards["price_unit"])) > 1
                             else {"base": "base", "quote": "usd"}[forwards["price_unit"].iloc[0]]),
                 price_unit_reason="; ".join(unit_reasons) if price_unit == "auto"
                 else f"set by the caller (price_unit='{price_unit}')")


def chain_from_vols(k, T_years, iv_mid, *, forward: float = 100.0, iv_bid=None, iv_ask=None,
                    as_of: str = "2024-01-01T00:00:00Z", source: str = "synthetic") -> Chain:
    """A `Chain` straight from (k, T, vol) arrays: for tests, benchmarks and what-if studies.

    Expiries are as_of + T (to the nanosecond); strikes K = F·e^k; calls for k ≥ 0, puts below.
    """
    k, T, v = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (k, T_years, iv_mid)))
    k, T, v = k.ravel(), T.ravel(), v.ravel()
    bid = np.full(k.shape, np.nan) if iv_bid is None else np.ravel(np.broadcast_to(iv_bid, k.shape))
    ask = np.full(k.shape, np.nan) if iv_ask is None else np.ravel(np.broadcast_to(iv_ask, k.shape))
    t0 = pd.Timestamp(as_of)
    t0 = t0.tz_localize("UTC") if t0.tzinfo is None else t0.tz_convert("UTC")
    expiry = t0 + pd.to_timedelta(np.round(T * SECONDS_PER_YEAR * 1e9).astype(np.int64), unit="ns")
    K = forward * np.exp(k)
    frame = pd.DataFrame({"timestamp": t0, "expiry": expiry, "strike": K,
                          "option_type": np.where(k >= 0, "call", "put"),
                          "futures_price": forward, "bid_iv": bid, "ask_iv": ask, "mark_iv": v})
    return prepare_chain(frame, iv_source="given", forward="futures", source=source)
