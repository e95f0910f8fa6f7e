"""Features of parent orders that the impact models read: participation, volatility, duration, spread.

This room turns canonical fills (a `Dataset.frame`, any frame with the canonical column names, or
a plain {name: array} mapping) into a frozen `Features` of float64 arrays. Models never look at a
frame: they read `Features`, whose derived arrays (logs, 1e4·sigma, half spread, ...) are computed
lazily once per dataset and cached, because `exp(delta·log x)` on a million rows is the hot path of
every fit and every slider move.

Units: `sigma` = daily volatility as a fraction; `T_days` = duration_s / 86400; participation
= quantity / adv ("adv", default) or quantity / market_volume ("horizon"); `cost_bps` =
side·(exec_price/arrival_price − 1)·1e4 when the frame has no `cost_bps` column (fees excluded).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import pandas as pd

from execal.models.core.registry import get_model
from execal.models.data.schema import DataError, side_sign

SECONDS_PER_DAY = 86_400.0
NS_PER_DAY = 86_400 * 10**9
PARTICIPATION_KINDS = {
    "adv": "quantity / adv (average daily volume)",
    "horizon": "quantity / market_volume (volume traded during the order)",
}
# What a model input is computed from, for error messages and `registry.describe()`.
NEEDS_COLUMNS: dict[str, list[str]] = {
    "participation": ["quantity", "adv"],    # or market_volume with horizon participation
    "sigma": ["volatility"],
    "T_days": ["duration_s"],
    "pov": ["market_volume"],                # or adv and duration_s
}
SIZE_BUCKET_EDGES = np.array([1e-4, 1e-3, 1e-2, 1e-1])
SIZE_BUCKET_LABELS = ("<0.01%", "0.01–0.1%", "0.1–1%", "1–10%", "≥10%")
GROUP_COLUMNS = ("venue", "symbol", "side", "order_id", "regime")


@dataclass(frozen=True, eq=False)
class Features:
    """Model inputs for n orders (float64 arrays; None when the data has no such column)."""
    participation: np.ndarray | None
    sigma: np.ndarray | None = None
    T_days: np.ndarray | None = None
    spread_bps: np.ndarray | None = None
    market_volume: np.ndarray | None = None
    quantity: np.ndarray | None = None
    adv: np.ndarray | None = None
    participation_kind: str = "adv"
    cost_bps: np.ndarray | None = None          # observed cost (the fit target), if known
    timestamp_ns: np.ndarray | None = None      # int64 ns since epoch (UTC)
    labels: Mapping[str, Any] = field(default_factory=dict)   # venue/symbol/side/order_id arrays
    row_index: np.ndarray | None = None         # 0-based position of each row in the input
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)   # e.g. a user weight column
    source: str | None = None                   # file name for error messages
    _cache: dict = field(default_factory=dict, repr=False)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, *, participation, sigma=None, T_days=None, spread_bps=None,
                    cost_bps=None, market_volume=None, quantity=None, adv=None,
                    participation_kind: str = "adv", timestamp_ns=None, labels=None,
                    source: str | None = None) -> "Features":
        """Features from plain arrays (e.g. a walk-the-book curve), no frame needed."""
        def arr(x):
            return None if x is None else np.ascontiguousarray(x, dtype=np.float64).reshape(-1)
        p = arr(participation)
        n = p.shape[0]
        out = cls(participation=p, sigma=arr(sigma), T_days=arr(T_days), spread_bps=arr(spread_bps),
                  market_volume=arr(market_volume), quantity=arr(quantity), adv=arr(adv),
                  participation_kind=participation_kind, cost_bps=arr(cost_bps),
                  timestamp_ns=None if timestamp_ns is None else np.asarray(timestamp_ns, dtype=np.int64),
                  labels=dict(labels or {}), row_index=np.arange(n, dtype=np.int64), source=source)
        for name in ("sigma", "T_days", "spread_bps", "market_volume", "quantity", "adv", "cost_bps"):
            a = getattr(out, name)
            if a is not None and a.shape[0] != n:
                raise DataError(f"array '{name}' has {a.shape[0]} values, participation has {n}")
        return out

    @property
    def n(self) -> int:
        return int(self.participation.shape[0])

    # -- derived arrays (lazy, cached) --------------------------------------------------------
    def _cached(self, key: str, make):
        value = self._cache.get(key)
        if value is None:
            value = make()
            self._cache[key] = value
        return value

    @property
    def log_participation(self) -> np.ndarray:
        return self._cached("log_participation", lambda: _log(self.participation))

    @property
    def sqrt_participation(self) -> np.ndarray:
        return self._cached("sqrt_participation", lambda: np.sqrt(self.participation))

    @property
    def sigma_bps(self) -> np.ndarray:
        """1e4·sigma: daily volatility in bps, the scale of every impact term."""
        return self._cached("sigma_bps", lambda: self.sigma * 1e4)

    @property
    def half_spread_bps(self) -> np.ndarray:
        return self._cached("half_spread_bps", lambda: self.spread_bps * 0.5)

    @property
    def expected_noise_bps(self) -> np.ndarray | None:
        """1e4·sigma·sqrt(T): the std of the price move during the order, i.e. the noise a cost
        measurement carries even with a perfect model."""
        if self.sigma is None or self.T_days is None:
            return None
        return self._cached("expected_noise_bps", lambda: self.sigma_bps * np.sqrt(self.T_days))

    @property
    def log_rate(self) -> np.ndarray:
        """log(Q/(V·T)): the trading rate of Almgren's temporary impact."""
        return self._cached("log_rate", lambda: self.log_participation - _log(self.T_days))

    @property
    def log_sigma_ann(self) -> np.ndarray:
        """log of annualised volatility (fraction, sqrt(365) for 24/7 markets): Kissell's sigma."""
        return self._cached("log_sigma_ann", lambda: _log(self.sigma) + 0.5 * np.log(365.0))

    @property
    def pov(self) -> np.ndarray | None:
        """Percentage of volume Q/(Q+market_volume); Q/(adv·T) capped at 1 without market_volume."""
        def make():
            if self.market_volume is not None and self.quantity is not None:
                return self.quantity / (self.quantity + self.market_volume)
            if self.participation_kind == "adv" and self.T_days is not None:
                return np.minimum(self.participation / self.T_days, 1.0)
            return None
        if "pov" not in self._cache:
            self._cache["pov"] = make()
        return self._cache["pov"]

    @property
    def log_pov(self) -> np.ndarray:
        return self._cached("log_pov", lambda: _log(self.pov))

    def available(self, need: str) -> bool:
        if need == "pov":
            return self.pov is not None
        return getattr(self, need) is not None

    # -- grouping -----------------------------------------------------------------------------
    def group(self, name: str) -> tuple[np.ndarray, tuple[str, ...]] | None:
        """(codes, labels) for venue / symbol / side / order_id / size_bucket / day; codes are
        int64 with -1 for a missing value. None when the data has no such column."""
        key = "group:" + name
        if key in self._cache:
            return self._cache[key]
        out = None
        if name == "size_bucket":
            codes = np.searchsorted(SIZE_BUCKET_EDGES, self.participation, side="right").astype(np.int64)
            codes[~np.isfinite(self.participation)] = -1
            out = (codes, SIZE_BUCKET_LABELS)
        elif name == "day":
            if self.timestamp_ns is not None:
                days = self.timestamp_ns // NS_PER_DAY
                codes, uniq = pd.factorize(days, sort=True)
                labels = tuple(str(np.datetime64(int(d), "D")) for d in uniq)
                out = (codes.astype(np.int64), labels)
        elif name in self.labels:
            values = self.labels[name]
            if name == "side":
                codes, uniq = pd.factorize(np.asarray(values, dtype=np.float64), sort=True)
                labels = tuple({1.0: "buy", -1.0: "sell"}.get(float(u), "unknown") for u in uniq)
            else:
                codes, uniq = pd.factorize(values, sort=True)
                labels = tuple(str(u) for u in uniq)
            out = (codes.astype(np.int64), labels)
        self._cache[key] = out
        return out

    # -- subsetting ---------------------------------------------------------------------------
    def take_rows(self, idx, *, labels: bool = True) -> "Features":
        """The same features for a subset of rows (index array, boolean mask or slice); cached
        derived arrays are carried over, not recomputed. `labels=False` leaves out the grouping
        columns (numerics only, for start values and inner loops)."""
        if isinstance(idx, slice) and idx == slice(None):
            return self
        if isinstance(idx, np.ndarray) and idx.dtype == bool:
            idx = np.flatnonzero(idx)

        def sub(a):
            return None if a is None else _take(a, idx)
        cache = {}
        for k, v in self._cache.items():
            if v is None or not isinstance(v, (np.ndarray, tuple)):
                cache[k] = v
            elif k.startswith("group:"):
                if labels and k != "group:size_bucket":
                    cache[k] = (_take(v[0], idx), v[1])
            else:
                cache[k] = _take(v, idx)
        labels = {k: _take(v, idx) for k, v in self.labels.items()} if labels else {}
        extra = {k: _take(v, idx) for k, v in self.extra.items()}
        row_index = self.row_index if self.row_index is not None else np.arange(self.n)
        return Features(participation=sub(self.participation), sigma=sub(self.sigma),
                        T_days=sub(self.T_days), spread_bps=sub(self.spread_bps),
                        market_volume=sub(self.market_volume), quantity=sub(self.quantity),
                        adv=sub(self.adv), participation_kind=self.participation_kind,
                        cost_bps=sub(self.cost_bps), timestamp_ns=sub(self.timestamp_ns),
                        labels=labels, row_index=sub(row_index), extra=extra, source=self.source,
                        _cache=cache)


def _take(a, idx):
    """Rows of a numpy or pandas extension array by slice or integer positions."""
    return a[idx] if isinstance(idx, slice) else a.take(idx)


def _log(x: np.ndarray) -> np.ndarray:
    """log that gives NaN (not a warning) for x <= 0: such rows are dropped, and counted, by the fit."""
    out = np.full(x.shape, np.nan)
    np.log(x, out=out, where=x > 0)
    return out


def _float_column(fills, name: str, source: str | None) -> np.ndarray:
    values = fills[name]
    try:
        return np.ascontiguousarray(np.asarray(values, dtype=np.float64))
    except (TypeError, ValueError):
        series = pd.Series(values)
        bad = pd.to_numeric(series, errors="coerce").isna() & series.notna()
        rows = (np.flatnonzero(bad.to_numpy()) + 1).tolist()
        raise DataError("expected numbers", file=source, column=name, rows=rows) from None


def _side_array(values) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        series = pd.Series(values)
        uniq = series.dropna().unique()
        mapping = {}
        for u in uniq:
            try:
                mapping[u] = float(side_sign(u))
            except ValueError:
                mapping[u] = np.nan
        return series.map(mapping).to_numpy(dtype=np.float64, na_value=np.nan)


def _timestamps_ns(values) -> np.ndarray:
    ts = pd.to_datetime(pd.Series(values), utc=True)
    return np.asarray(ts.dt.tz_localize(None), dtype="datetime64[ns]").view(np.int64)


def impact_features(fills: pd.DataFrame | Mapping[str, Any], participation: str = "adv", *,
                    model=None, source: str | None = None,
                    extra_columns: tuple[str, ...] = ()) -> Features:
    """Features of each fill (row). `participation` = "adv" (Q/adv) or "horizon" (Q/market_volume).

    With `model` (an `ImpactModel` or its name), raise `DataError` naming the column(s) it needs
    and the data lacks. A frame without quantity/adv may carry a precomputed `participation`
    column instead (e.g. a walk-the-book curve). `extra_columns` are read as floats into
    `Features.extra` (e.g. a user weight column).
    """
    if participation not in PARTICIPATION_KINDS:
        raise ValueError(f"participation must be one of {', '.join(PARTICIPATION_KINDS)}, "
                         f"got {participation!r}")
    if isinstance(fills, pd.DataFrame):
        columns = set(map(str, fills.columns))
        source = source or fills.attrs.get("source")
    else:
        columns = set(fills.keys())

    def col(name):
        return _float_column(fills, name, source) if name in columns else None

    quantity, adv, market_volume = col("quantity"), col("adv"), col("market_volume")
    denominator = adv if participation == "adv" else market_volume
    if quantity is not None and denominator is not None:
        part = quantity / denominator
    elif "participation" in columns:
        part = col("participation")
    else:
        part = None
    duration_s = col("duration_s")
    cost = col("cost_bps")
    if cost is None and {"side", "arrival_price", "exec_price"} <= columns:
        side = _side_array(fills["side"])
        side = np.where(side == 0, np.nan, side)   # unknown direction: no cost (dropped and counted)
        cost = side * (col("exec_price") / col("arrival_price") - 1.0) * 1e4
    labels = {}
    for name in GROUP_COLUMNS:
        if name in columns:
            values = fills[name]
            labels[name] = values.array if isinstance(values, pd.Series) else np.asarray(values)
    if "side" in labels:
        labels["side"] = _side_array(labels["side"])
    n = None
    for a in (part, quantity, cost):
        if a is not None:
            n = a.shape[0]
            break
    if part is None:
        n = n if n is not None else (len(fills) if isinstance(fills, pd.DataFrame) else 0)
        part = np.full(n, np.nan)
        missing_participation = True
    else:
        missing_participation = False
    features = Features(
        participation=part, sigma=col("volatility"),
        T_days=None if duration_s is None else duration_s / SECONDS_PER_DAY,
        spread_bps=col("spread_bps"), market_volume=market_volume, quantity=quantity, adv=adv,
        participation_kind=participation, cost_bps=cost,
        timestamp_ns=_timestamps_ns(fills["timestamp"]) if "timestamp" in columns else None,
        labels=labels, row_index=np.arange(part.shape[0], dtype=np.int64), source=source,
        extra={})
    for name in extra_columns:
        if name not in columns:
            raise DataError(f"no column '{name}' in the data (columns: {', '.join(sorted(columns))})",
                            file=source, column=name)
        features.extra[name] = col(name)
    if missing_participation:
        features._cache["missing_participation"] = True
    if model is not None:
        get_model(model).check(features)
    return features


def missing_inputs_message(features: Features, needs, *, model: str) -> str | None:
    """A sentence naming the columns `model` needs and `features` lacks, or None."""
    problems = []
    for need in needs:
        if need == "participation":
            if features._cache.get("missing_participation"):
                denom = "adv" if features.participation_kind == "adv" else "market_volume"
                problems.append(f"'quantity' and '{denom}' (participation = quantity / {denom})")
        elif need == "pov":
            if features.pov is None:
                problems.append("'market_volume' (POV = Q/(Q+market_volume)), or 'adv' and "
                                "'duration_s' (POV = Q/(adv·T))")
        elif getattr(features, need) is None:
            col = NEEDS_COLUMNS[need][0]
            what = {"sigma": "daily volatility as a fraction", "T_days": "order duration in seconds"}[need]
            problems.append(f"'{col}' ({what})")
    if not problems:
        return None
    return (f"model '{model}' needs column(s) " + "; ".join(problems)
            + " — the data has none; add the column(s) or enrich the fills")
