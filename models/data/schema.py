"""The data contract: dataset kinds, their canonical columns, and the error a bad file raises.

Every reader in `models/` turns a file into a `Dataset` whose frame has exactly the canonical
column names and dtypes below, so the rest of execal (features, models, UI, CLI) never sees a
vendor's spelling. Timestamps are tz-aware UTC `datetime64[ns, UTC]`; prices and sizes are
float64; `side` is int8 (+1 buy / -1 sell, 0 unknown for trades without an aggressor flag).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# --- kinds and canonical columns -------------------------------------------------------------

KINDS = ("fills", "trades", "quotes", "book", "options", "bars", "ticker")

REQUIRED: dict[str, tuple[str, ...]] = {
    # parent orders / metaorders: the execution-cost calibration input
    "fills": ("timestamp", "symbol", "side", "quantity", "arrival_price", "exec_price"),
    # exchange prints; side = aggressor (+1 buyer-initiated, -1 seller-initiated, 0 unknown)
    "trades": ("timestamp", "symbol", "price", "quantity"),
    # top of book
    "quotes": ("timestamp", "symbol", "bid_price", "bid_size", "ask_price", "ask_size"),
    # N levels a side, wide: bid_price_0..bid_price_{N-1}, bid_size_i, ask_price_i, ask_size_i
    # (level 0 is the best); see book_levels()
    "book": ("timestamp", "symbol"),
    # one row per option quote
    "options": ("timestamp", "symbol", "expiry", "strike", "option_type"),
    "bars": ("timestamp", "open", "high", "low", "close", "volume"),
    # derivatives ticker (mark / index / last price, funding, open interest), e.g. Tardis
    # `derivative_ticker`; no bid/ask, so neither quotes nor trades
    "ticker": ("timestamp", "symbol"),
}

OPTIONAL: dict[str, tuple[str, ...]] = {
    "fills": ("venue", "duration_s", "adv", "market_volume", "volatility", "spread_bps",
              "fee_bps", "order_id"),
    "trades": ("venue", "side", "trade_id"),
    "quotes": ("venue",),
    "book": ("venue",),
    # prices in `price_unit` ("quote" currency, or "base" = coin-margined / inverse like Deribit);
    # implied vols are fractions (0.55 = 55 %)
    "options": ("venue", "underlying", "underlying_price", "futures_price", "bid_price",
                "ask_price", "mark_price", "bid_iv", "ask_iv", "mark_iv", "bid_size", "ask_size",
                "price_unit", "open_interest"),
    "bars": ("symbol", "venue", "quote_volume", "trades"),
    # funding_rate is a fraction per funding interval (0.0001 = 1 bp)
    "ticker": ("venue", "mark_price", "index_price", "last_price", "funding_rate",
               "predicted_funding_rate", "open_interest"),
}

# Columns derived by the loader, never read from the file.
DERIVED: dict[str, tuple[str, ...]] = {
    "fills": ("cost_bps",),
}

# Positive-valued numeric columns (a value <= 0 is a validation error for the row).
POSITIVE: dict[str, tuple[str, ...]] = {
    "fills": ("quantity", "arrival_price", "exec_price"),
    "trades": ("price", "quantity"),
    "quotes": ("bid_price", "ask_price"),
    "book": (),
    "options": ("strike",),
    "bars": ("open", "high", "low", "close"),
    "ticker": (),
}

STRING_COLUMNS = ("symbol", "venue", "order_id", "trade_id", "underlying", "option_type",
                  "price_unit")


def canonical_columns(kind: str) -> tuple[str, ...]:
    """All canonical column names of a kind (required, optional, derived), in display order."""
    return REQUIRED[kind] + OPTIONAL[kind] + DERIVED.get(kind, ())


def book_levels(frame: pd.DataFrame) -> int:
    """Number of levels a side in a wide book frame."""
    n = 0
    while f"bid_price_{n}" in frame.columns and f"ask_price_{n}" in frame.columns:
        n += 1
    return n


def side_sign(side: Any) -> int:
    """+1 for buy, -1 for sell, from the spellings users have: buy/sell, B/S, 1/-1, any case."""
    s = str(side).strip().lower()
    if s in ("buy", "b", "1", "+1", "1.0", "bid", "long"):
        return 1
    if s in ("sell", "s", "-1", "-1.0", "ask", "short", "offer"):
        return -1
    raise ValueError(f"unknown side {side!r}")


# --- errors and reports ----------------------------------------------------------------------


MAX_NAME_CHARS = 120     # a user's column or file name shown longer than this is cut (a 1 MB header)


def short_name(name) -> str:
    """A user-supplied name as shown in messages and summaries: cut past MAX_NAME_CHARS."""
    text = str(name)
    if len(text) <= MAX_NAME_CHARS:
        return text
    return f"{text[:MAX_NAME_CHARS]}… ({len(text):,} characters)"


class DataError(ValueError):
    """A file that cannot be used, with where it went wrong.

    `str(err)` is the user-facing message: it names the file, and the column and first offending
    rows (1-based data rows, header excluded) where they are known. Never a traceback.
    """

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None,
                 rows: list[int] | None = None):
        self.file = file
        self.column = column
        self.rows = list(rows or [])
        parts = []
        if file:
            parts.append(f"{short_name(file)}:")
        if column:
            parts.append(f"column '{short_name(column)}':")
        parts.append(message)
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:5])
            more = f" (+{len(self.rows) - 5} more)" if len(self.rows) > 5 else ""
            parts.append(f"(rows {shown}{more})")
        super().__init__(" ".join(parts))


@dataclass
class DropRecord:
    """Rows removed during validation: never silently."""
    reason: str
    column: str | None
    count: int
    first_rows: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"reason": self.reason, "column": self.column, "count": self.count,
                "first_rows": self.first_rows[:5]}


@dataclass
class ValidationReport:
    rows_read: int = 0
    rows_kept: int = 0
    dropped: list[DropRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"rows_read": self.rows_read, "rows_kept": self.rows_kept,
                "dropped": [d.to_dict() for d in self.dropped], "warnings": list(self.warnings)}


@dataclass(frozen=True)
class Dataset:
    """A validated frame of one kind, with where it came from."""
    kind: str
    frame: pd.DataFrame
    source: str            # file name as the user knows it
    sha256: str            # of the raw bytes read
    report: ValidationReport

    def summary(self) -> dict:
        """JSON-ready summary (what `execal inspect` prints and the Data panel shows)."""
        f = self.frame
        ts = f["timestamp"] if "timestamp" in f.columns else None
        def uniq(col):
            return [short_name(v) for v in sorted(map(str, f[col].dropna().unique()))[:200]] if col in f.columns else []
        return {
            "file": short_name(self.source),
            "kind": self.kind,
            "rows": int(len(f)),
            "columns": [short_name(c) for c in f.columns],
            "start": ts.min().isoformat() if ts is not None and len(f) else None,
            "end": ts.max().isoformat() if ts is not None and len(f) else None,
            "symbols": uniq("symbol"),
            "venues": uniq("venue"),
            "sha256": self.sha256,
            "warnings": self.report.warnings
            + [f"dropped {d.count} rows: {d.reason}" + (f" (column '{d.column}')" if d.column else "")
               for d in self.report.dropped],
            "report": self.report.to_dict(),
        }
