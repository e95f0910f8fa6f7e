"""Reading user files: from bytes on disk or in an upload to a validated, canonical `Dataset`.

This is the only door data comes in by. `load` sniffs the container (CSV, gzip, Parquet, raw
Binance capture) from magic bytes, reads it with pyarrow, renames the user's columns to the
canonical ones of `execal.models.data.schema` (an explicit mapping first, then Tardis' native layouts, then a
small alias table), detects the dataset kind, and `validate` turns the columns into canonical
dtypes and removes bad rows, counting every removal in the `ValidationReport`.

Policy: structural problems (unreadable, empty, binary, too big, missing columns, nothing
parseable) raise `DataError`; row-level problems drop the row and are reported with 1-based data
row numbers in the user's file order; if more than half the rows would go, it is a `DataError`.
Nothing here unpickles or evaluates user input.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io as _stdio
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from execal.models.data import binance, tardis
from execal.models.data.schema import (DERIVED, KINDS, OPTIONAL, POSITIVE, REQUIRED, STRING_COLUMNS,
                           DataError, Dataset, DropRecord, ValidationReport, short_name, side_sign)

DEFAULT_MAX_BYTES = 200 * 1024**2
# a .gz may expand to at most this multiple of the upload limit (guards against gzip bombs)
GZIP_EXPANSION_LIMIT = 5
# market data compresses 4-15x (Binance captures ~7x, CSV fills ~4x); past this ratio, once the
# output is past GZIP_RATIO_FROM_BYTES, the archive is a bomb or rows repeated: refused while
# decompressing, long before the memory it would take
GZIP_MAX_RATIO = 100
GZIP_RATIO_FROM_BYTES = 64 * 1024**2
# rows a single file may hold (pandas needs ~275 bytes a fill: 20M rows ~ 5.5 GB); bigger data
# belongs in a partitioned dataset. EXECAL_MAX_ROWS overrides.
DEFAULT_MAX_ROWS = 20_000_000
# more than this fraction of rows dropped means the file, not a few rows, is wrong
MAX_DROP_FRACTION = 0.5
# a fill whose exec and arrival prices differ by this factor is a unit error or a typo, not a cost
MAX_PRICE_RATIO = 10.0
_HEAD_BYTES = 64 * 1024
# pyarrow infers column types from the first block; a later bad cell triggers a re-read
_CSV_BLOCK_BYTES = 4 * 1024**2
_MB = 1024**2

# canonical name -> spellings users have (compared lower-case). First spelling wins when a file
# has several (e.g. Coinbase bars have both `date` and `unix`).
ALIASES: dict[str, tuple[str, ...]] = {
    "timestamp": ("time", "ts", "datetime", "date", "unix", "timestamp_utc"),
    "symbol": ("instrument", "instrument_name", "ticker", "pair", "market"),
    "venue": ("exchange",),
    "quantity": ("qty", "size", "amount"),
    "price": ("px",),
    "arrival_price": ("arrival", "arrival_mid", "arrival_px"),
    "exec_price": ("avg_price", "fill_price", "execution_price", "avg_px"),
    "bid_price": ("bid", "best_bid"),
    "ask_price": ("ask", "best_ask", "offer"),
    "bid_size": ("bid_qty", "bid_amount"),
    "ask_size": ("ask_qty", "ask_amount"),
    "trade_id": ("id",),
    "expiry": ("expiration", "expiry_datetime", "expiration_datetime", "expiry_date", "expiration_date",
               "maturity"),
    "mark_iv": ("implied_volatility", "implied_vol", "mark_implied_volatility"),
    "price_unit": ("currency", "price_currency"),
    "strike": ("strike_price",),
    "option_type": ("type", "put_call"),
    "quote_volume": ("vol_fiat",),
}
_ALIAS_OF = {alias: canon for canon, spellings in ALIASES.items() for alias in spellings}

_LEVEL_RE = re.compile(r"^(bid|ask)_(price|size)_(\d+)$")
_TIME_COLUMNS = ("timestamp", "expiry")
_TEXT_COLUMNS = frozenset(STRING_COLUMNS) | {"side"}

# a kind is recognised when all of these are present (book/ticker need more than their
# required timestamp+symbol, which every file has)
_SIGNATURE: dict[str, tuple[str, ...]] = {
    **REQUIRED,
    "book": ("timestamp", "symbol", "bid_price_0", "ask_price_0"),
    # funding makes it a derivatives ticker; mark_price alone is also in option chains
    "ticker": ("timestamp", "symbol", "mark_price", "funding_rate"),
}

# binary formats people upload by mistake: magic -> what it is
_BINARY_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a zip archive (an .xlsx workbook is one too): export or unzip it to CSV",
    b"\xd0\xcf\x11\xe0": "an old Excel/Office document: export it to CSV",
    b"BZh": "a bzip2 archive",
    b"\xfd7zXZ": "an xz archive",
    b"\x28\xb5\x2f\xfd": "a zstd archive",
    b"\x80\x04": "a Python pickle (never loaded)",
    b"\x80\x05": "a Python pickle (never loaded)",
}
_BINANCE_LINE = re.compile(rb"^\d{16,19} \{")


# --- public API ---------------------------------------------------------------------------------


def load(source, *, name: str | None = None, kind: str | None = None,
         mapping: dict[str, str] | None = None, max_bytes: int | None = None) -> Dataset:
    """Read a CSV (plain or gzip), Parquet or raw Binance capture into a validated Dataset.

    `source` is a path or the raw bytes of an upload (then `name` is the user's file name, used
    in messages), or a list of them: consecutive raw Binance captures replayed as one (the book
    continues across files by the update-id rules; `stats["files"]` of the replay and the
    report's warnings say where each file starts and whether its ids joined). `mapping` =
    {their_column: canonical_column} is applied before anything else. `kind` forces the dataset
    kind instead of detecting it from the columns.
    """
    if kind is not None and kind not in KINDS:
        raise DataError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    if isinstance(source, (list, tuple)):
        return _load_captures(list(source), names=name, kind=kind, max_bytes=max_bytes)
    raw = _Raw.open(source, name, _limit_bytes(max_bytes))
    label = raw.label
    if raw.size == 0:
        raise DataError("the file is empty (0 bytes)", file=label)

    head = raw.head
    if head[:2] == b"\x1f\x8b":
        raw = raw.gunzipped()
        head = raw.head
        if raw.size == 0:
            raise DataError("the file is empty (the gzip archive holds 0 bytes)", file=label)
    if _BINANCE_LINE.match(head):
        return _load_binance_capture(raw, kind)
    if head[:4] == b"PAR1":
        parsed = _Parsed(_read_parquet(raw))
    else:
        _check_text(head, label)
        parsed = _read_csv(raw)
    return _from_table(parsed, label=label, sha256=raw.sha256, kind=kind, mapping=mapping)


# a stateful Tardis format cannot be converted chunk by chunk (the book is replayed row by row)
_WHOLE_FILE_FORMATS = ("incremental_book_L2",)


def load_chunks(source: str | os.PathLike, *, name: str | None = None, kind: str | None = None,
                mapping: dict[str, str] | None = None, chunk_rows: int = 1_000_000,
                column_types: dict[str, "pa.DataType"] | None = None,
                max_bytes: int | None = None, sha256: str | None = None) -> Iterator[Dataset]:
    """`load` for files bigger than memory: validated `Dataset`s of consecutive chunks of about
    `chunk_rows` rows of one CSV (plain or gzip) or Parquet file, each through the same renaming,
    kind detection and validation as `load`. Rows in the reports are numbered from the start of
    the file. The kind is detected on the first chunk and held for the rest.

    Row checks that need the whole file work per chunk: duplicates are found within a chunk and
    rows are sorted by time within a chunk (both said in the first chunk's warnings). Binance
    captures and Tardis `incremental_book_L2` (a book replayed row by row) are read whole by
    `load` and given as one chunk. A CSV column whose type the first block got wrong raises
    `ColumnTypeError` naming it: read again with `column_types={column: pa.string()}`.
    `max_bytes` = None means no size limit (this is the path for big files). `sha256`, when the
    caller has hashed the file already, saves reading it once more.
    """
    if kind is not None and kind not in KINDS:
        raise DataError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    limit = max_bytes if max_bytes is not None else 1 << 62
    if sha256 is not None and Path(os.fspath(source)).is_file():
        path = Path(os.fspath(source))
        with open(path, "rb") as fh:
            head = fh.read(_HEAD_BYTES)
        raw = _Raw(name or path.name, path.stat().st_size, sha256, head, limit, path=str(path))
    else:
        raw = _Raw.open(source, name, limit)
    label = raw.label
    if raw.size == 0:
        raise DataError("the file is empty (0 bytes)", file=label)
    gz = raw.head[:2] == b"\x1f\x8b"
    head = raw.head
    if gz:
        try:
            with gzip.open(raw.path, "rb") as fh:
                head = fh.read(_HEAD_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"is a corrupt or truncated gzip file ({exc})", file=label) from None
    if _BINANCE_LINE.match(head):
        yield load(source, name=name, kind=kind, mapping=mapping, max_bytes=limit)
        return
    chunk_rows = max(int(chunk_rows), 1)
    if head[:4] == b"PAR1":
        try:
            pf = pq.ParquetFile(raw.path)
            tables = (pa.Table.from_batches([b]) for b in pf.iter_batches(batch_size=chunk_rows))
        except Exception as exc:   # pyarrow raises several types for corrupt files
            raise DataError(f"unreadable Parquet file ({str(exc).splitlines()[0]})", file=label) from None
        parsed_chunks = (_Parsed(t) for t in tables)
    else:
        _check_text(head, label)
        parsed_chunks = _csv_chunks(raw, head, gz, chunk_rows, dict(column_types or {}))
    first_row = 1
    notes = [f"read in chunks of {chunk_rows:,} rows: duplicate rows are found, and rows sorted "
             f"by time, within a chunk"]
    for parsed in parsed_chunks:
        n = parsed.table.num_rows
        if parsed.rows is None:
            parsed.rows = np.arange(first_row, first_row + n, dtype=np.int64)
            parsed.rows_read = n
        if n == 0:
            continue
        if first_row == 1:
            fmt = tardis.detect_format(c.strip().lower() for c in parsed.table.column_names)
            if fmt in _WHOLE_FILE_FORMATS:
                yield load(source, name=name, kind=kind, mapping=mapping, max_bytes=limit)
                return
        parsed.warnings = notes + parsed.warnings
        notes = []
        ds = _from_table(parsed, label=label, sha256=raw.sha256, kind=kind, mapping=mapping)
        kind = ds.kind
        first_row = int(parsed.rows[-1]) + 1 if len(parsed.rows) else first_row
        yield ds
    if first_row == 1:
        raise DataError("has no data rows", file=label)


class ColumnTypeError(DataError):
    """A CSV column that the first block read as numbers holds text further down."""

    def __init__(self, column: str, message: str, *, file: str | None = None):
        self.bad_column = column
        super().__init__(message, file=file, column=column)


def _csv_chunks(raw: "_Raw", head: bytes, gz: bool, chunk_rows: int,
                column_types: dict) -> Iterator["_Parsed"]:
    """Consecutive chunks of a CSV as `_Parsed` tables with 1-based file row numbers."""
    delim, skip = _sniff_delimiter(head)
    warnings: list[str] = []
    if delim != ",":
        word = {"\t": "tab", ";": "';'", "|": "'|'"}[delim]
        warnings.append(f"the file looks {word}-delimited, not comma-delimited; read it as such")
    if skip:
        warnings.append(f"skipped {skip} line(s) before the header")
    bad_lines: list[int] = []

    def on_invalid(row):
        bad_lines.append(row.number)
        return "skip"
    stream = pa.input_stream(raw.path, compression="gzip" if gz else None)
    try:
        reader = pacsv.open_csv(
            stream,
            # one thread: pyarrow numbers the malformed lines it skips only when parsing serially
            read_options=pacsv.ReadOptions(skip_rows=skip, block_size=_CSV_BLOCK_BYTES,
                                           use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter=delim, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types=column_types, strings_can_be_null=True))
    except pa.ArrowInvalid as exc:
        if "Empty CSV file" in str(exc):
            raise DataError("the file is empty (no header line)", file=raw.label) from None
        raise DataError(f"unreadable CSV ({str(exc).splitlines()[0]})", file=raw.label) from None
    names = reader.schema.names
    state = {"next_row": 1, "unnumbered": 0}
    pending: list = []

    def emit() -> _Parsed:
        table = pa.Table.from_batches(pending, schema=reader.schema)
        n, first = table.num_rows, state["next_row"]
        # the next n data rows the parser did not skip as malformed (pyarrow numbers lines with
        # the header as line 1; a multithreaded parse may not number them: counted, not located)
        bad = np.asarray(sorted(b - 1 for b in bad_lines if b is not None and b - 1 >= first),
                         dtype=np.int64)
        span = np.arange(first, first + n + bad.size, dtype=np.int64)
        rows = np.setdiff1d(span, bad, assume_unique=True)[:n]
        last = int(rows[-1]) if n else first - 1
        skipped = bad[bad <= last]
        unnumbered = sum(1 for b in bad_lines if b is None) - state["unnumbered"]
        state["unnumbered"] += unnumbered
        drops = []
        if skipped.size or unnumbered:
            drops.append(DropRecord(f"wrong number of fields (the header has {len(names)})", None,
                                    int(skipped.size) + unnumbered, skipped[:5].tolist()))
        state["next_row"] = last + 1
        return _Parsed(table, rows, n + int(skipped.size) + unnumbered, drops, list(warnings))
    rows_pending = 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            msg = str(exc)
            conv = _CONVERSION_ERR.search(msg)
            if conv:
                col = names[int(conv.group(1))]
                raise ColumnTypeError(col, f"holds values that are not of the type its first "
                                           f"rows have ({msg.splitlines()[0]})", file=raw.label) from None
            raise DataError(f"unreadable CSV ({msg.splitlines()[0]})", file=raw.label) from None
        pending.append(batch)
        rows_pending += batch.num_rows
        if rows_pending >= chunk_rows:
            parsed = emit()
            warnings = []
            pending, rows_pending = [], 0
            yield parsed
    if rows_pending:
        yield emit()
    elif state["next_row"] == 1:
        raise DataError("has a header but no data rows", file=raw.label)


def detect_kind(columns: Iterable[str], *, shown: Iterable[str] | None = None) -> str:
    """The dataset kind whose required columns are all present (aliases understood).

    Raises DataError listing the columns found when no kind fits or several do: `shown`, the file's own
    column names, when `columns` were already renamed (a user maps the names they see in their file).
    """
    names = [str(c) for c in columns]
    cols = set(_alias_rename(names).values())
    shown = names if shown is None else [str(c) for c in shown]
    fits = [k for k in KINDS if set(_SIGNATURE[k]) <= cols]
    if len(fits) == 1:
        return fits[0]
    found = ", ".join(shown) or "(none)"
    if len(fits) > 1:
        raise DataError(f"the columns fit several kinds ({', '.join(fits)}); choose the kind "
                        f"explicitly. Found columns: {found}")
    # closest kind: largest share of its signature present
    scored = sorted(KINDS, key=lambda k: -len(set(_SIGNATURE[k]) & cols) / len(_SIGNATURE[k]))
    best = scored[0]
    missing = [c for c in _SIGNATURE[best] if c not in cols]
    share = 1 - len(missing) / len(_SIGNATURE[best])
    if share >= 0.5:
        raise DataError(f"looks like '{best}' data but required column(s) missing: "
                        f"{', '.join(missing)}. Found columns: {found}. Rename them or give a "
                        f"column mapping such as 'your_column={missing[0]}'")
    expected = "; ".join(f"{k}: {', '.join(_SIGNATURE[k])}" for k in KINDS)
    raise DataError(f"cannot tell what kind of data this is. Found columns: {found}. "
                    f"Expected one of: {expected}")


def parse_mapping(text: str) -> dict[str, str]:
    """'their=canonical, other=canonical2' -> {'their': 'canonical', 'other': 'canonical2'}."""
    out: dict[str, str] = {}
    if text is None or not str(text).strip():
        return out
    for i, part in enumerate(re.split(r"[,\n;]", str(text)), start=1):
        part = part.strip()
        if not part:
            continue
        if part.count("=") != 1:
            raise DataError(f"column mapping item {i} {part!r} is not of the form "
                            f"'their_column=canonical_column'")
        theirs, canon = (p.strip() for p in part.split("="))
        if not theirs or not canon:
            raise DataError(f"column mapping item {i} {part!r} has an empty side")
        if theirs.lower() in {k.lower() for k in out}:
            raise DataError(f"column mapping names {theirs!r} twice")
        _check_canonical_name(canon)
        out[theirs] = canon
    return out


def validate(frame: pd.DataFrame, kind: str, *, source: str) -> tuple[pd.DataFrame, ValidationReport]:
    """Canonical dtypes and row checks for a frame whose columns already have canonical names.

    Returns the clean frame (sorted by timestamp, index 0..n-1, canonical columns only) and the
    report of what was dropped or changed. Row numbers in the report are 1-based positions in
    `frame`.
    """
    if kind not in KINDS:
        raise DataError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}", file=source)
    return _validate(frame, kind, source=source)


# --- reading bytes ------------------------------------------------------------------------------


def _limit_bytes(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return int(max_bytes)
    env = os.environ.get("EXECAL_MAX_UPLOAD_MB")
    if env:
        try:
            return int(float(env) * _MB)
        except ValueError:
            pass   # a bad environment value must not make every upload fail
    return DEFAULT_MAX_BYTES


def _mb(n: int) -> str:
    """Bytes as MB for messages: 2 decimals, fewer when they are zeros (tiny limits keep 2 digits)."""
    x = n / _MB
    return f"{x:.2f}".rstrip("0").rstrip(".") if x >= 0.01 else f"{x:.2g}"


@dataclass
class _Raw:
    """The bytes of one input: either a path (read by pyarrow directly) or an in-memory buffer."""
    label: str
    size: int
    sha256: str
    head: bytes
    limit: int
    path: str | None = None
    data: bytes | None = None

    @classmethod
    def open(cls, source, name: str | None, limit: int) -> "_Raw":
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            label = name or "upload"
            if len(data) > limit:
                raise DataError(f"file is {_mb(len(data))} MB, over the limit of {_mb(limit)} MB",
                                file=label)
            return cls(label, len(data), hashlib.sha256(data).hexdigest(), data[:_HEAD_BYTES],
                       limit, data=data)
        path = Path(os.fspath(source))
        label = name or path.name
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DataError(f"cannot open: {exc.strerror or exc}", file=label) from None
        if not path.is_file():
            if (path / "_manifest.json").is_file():
                raise DataError("is a dataset directory (execal ingest): open it with "
                                "execal.models.data.dataset.open_dataset, or give it to an execal command",
                                file=label)
            raise DataError("is not a file", file=label)
        if size > limit:   # checked before reading a single byte
            raise DataError(f"file is {_mb(size)} MB, over the limit of {_mb(limit)} MB",
                            file=label)
        digest = hashlib.sha256()
        head = b""
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(4 * _MB):
                    if not head:
                        head = chunk[:_HEAD_BYTES]
                    digest.update(chunk)
        except OSError as exc:
            raise DataError(f"cannot read: {exc.strerror or exc}", file=label) from None
        return cls(label, size, digest.hexdigest(), head, limit, path=str(path))

    def source(self):
        """What pyarrow reads: the path, or a zero-copy buffer."""
        return self.path if self.path is not None else pa.BufferReader(self.data)

    def gunzipped(self) -> "_Raw":
        """The decompressed content (same label and sha256 of the original bytes)."""
        cap = self.limit * GZIP_EXPANSION_LIMIT
        fileobj = open(self.path, "rb") if self.path else _stdio.BytesIO(self.data)
        parts, total = [], 0
        try:
            with gzip.GzipFile(fileobj=fileobj) as gz:
                while chunk := gz.read(8 * _MB):
                    total += len(chunk)
                    if total > cap:
                        raise DataError(f"decompresses to more than {_mb(cap)} MB "
                                        f"({GZIP_EXPANSION_LIMIT}x the {_mb(self.limit)} MB limit)",
                                        file=self.label)
                    consumed = max(fileobj.tell(), 1)        # compressed bytes read so far
                    if total > GZIP_RATIO_FROM_BYTES and total > GZIP_MAX_RATIO * consumed:
                        raise DataError(f"expands more than {GZIP_MAX_RATIO}:1 ({_mb(consumed)} MB of "
                                        f"gzip became {_mb(total)} MB): a gzip bomb or endlessly "
                                        "repeated rows, not market data", file=self.label)
                    parts.append(chunk)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"is a corrupt or truncated gzip file ({exc})", file=self.label) from None
        finally:
            fileobj.close()
        data = b"".join(parts)
        return _Raw(self.label, len(data), self.sha256, data[:_HEAD_BYTES], self.limit, data=data)


def _check_text(head: bytes, label: str) -> None:
    """Binary content is refused with a message saying what it looks like."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if start in (b"{", b"["):
        raise DataError("is JSON, not CSV: execal reads CSV (plain or gzip), Parquet and raw Binance "
                        "captures; convert it first (e.g. pandas.read_json(path).to_csv(...))", file=label)
    for magic, what in _BINARY_MAGIC.items():
        if head.startswith(magic):
            raise DataError(f"is not a CSV or Parquet file: it looks like {what}", file=label)
    sample = head[:8192]
    controls = sum(sample.count(bytes([b])) for b in range(32) if b not in (9, 10, 13))
    if b"\x00" in sample or controls > len(sample) * 0.01:
        raise DataError("is not a CSV or Parquet file: it contains binary data", file=label)
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4 or len(head) < _HEAD_BYTES:   # a character cut by the head is fine
            raise DataError("is not UTF-8 text (save it as 'CSV UTF-8')", file=label) from None


def _sniff_delimiter(head: bytes) -> tuple[str, int]:
    """(delimiter, number of preamble lines to skip), from the first lines of the file.

    A delimiter wins when it splits the header and the next lines into the same number (> 1)
    of fields; a reading without preamble beats one with, more fields beat fewer, ',' wins ties. Leading one-field lines before a consistent table
    (e.g. a 'https://www.cryptodatadownload.com' banner) are a preamble.
    """
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(head) >= _HEAD_BYTES and len(lines) > 1:
        lines = lines[:-1]          # last line may be cut
    lines = lines[:50]
    best, best_key, best_skip = ",", None, 0
    for delim in (",", ";", "\t", "|"):
        counts = [len(r) for r in csv.reader(lines, delimiter=delim)]
        skip = 0
        while skip < len(counts) - 1 and counts[skip] == 1 and skip < 5:
            skip += 1
        body = counts[skip:]
        if not body or body[0] < 2:
            continue
        consistent = sum(c == body[0] for c in body) / len(body)
        # consistent first, then no preamble, then more fields; ',' breaks ties
        key = (consistent >= 0.9, skip == 0, consistent, body[0], delim == ",")
        if best_key is None or key > best_key:
            best, best_key, best_skip = delim, key, skip
    return best, best_skip


_CONVERSION_ERR = re.compile(r"In CSV column #(\d+): CSV conversion error")
_FIELDS_ERR = re.compile(r"Expected (\d+) columns, got (\d+)")


@dataclass
class _Parsed:
    """A table as read, before any column is interpreted."""
    table: pa.Table
    rows: np.ndarray | None = None    # 1-based file data row of each table row (None = 1..n)
    rows_read: int | None = None      # data rows in the file, including rows the parser skipped
    drops: list[DropRecord] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _max_rows() -> int:
    value = os.environ.get("EXECAL_MAX_ROWS")
    try:
        return int(value) if value else DEFAULT_MAX_ROWS
    except ValueError:
        raise DataError(f"EXECAL_MAX_ROWS must be a whole number, got {value!r}") from None


def _read_csv(raw: _Raw) -> _Parsed:
    """pyarrow's multithreaded CSV reader, with the retries that keep bad rows row-level."""
    max_rows = _max_rows()
    delim, skip = _sniff_delimiter(raw.head)
    warnings: list[str] = []
    drops: list[DropRecord] = []
    if delim != ",":
        name = {"\t": "tab", ";": "';'", "|": "'|'"}[delim]
        warnings.append(f"the file looks {name}-delimited, not comma-delimited; read it as such")
    if skip:
        warnings.append(f"skipped {skip} line(s) before the header")
    forced: dict[str, pa.DataType] = {}
    bad_lines: list[int] = []
    handler = None
    for _attempt in range(200):
        def on_invalid(row):
            bad_lines.append(row.number)
            return "skip"
        try:
            # the streaming reader peaks at about half the memory of read_csv (which parses all
            # blocks at once) for ~0.1 s more on 1M rows; see bench/bench_load.py
            reader = pacsv.open_csv(
                raw.source(),
                read_options=pacsv.ReadOptions(skip_rows=skip, use_threads=handler is None,
                                               block_size=_CSV_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(delimiter=delim, invalid_row_handler=handler),
                convert_options=pacsv.ConvertOptions(column_types=forced, strings_can_be_null=True))
            batches, n_rows = [], 0
            for batch in reader:
                n_rows += batch.num_rows
                if n_rows > max_rows:
                    raise DataError(f"has more than {max_rows:,} rows (EXECAL_MAX_ROWS): ingest it as a "
                                    "partitioned dataset instead", file=raw.label)
                batches.append(batch)
            table = pa.Table.from_batches(batches, schema=reader.schema)
            break
        except pa.ArrowInvalid as exc:
            msg = str(exc)
            conv = _CONVERSION_ERR.search(msg)
            if "Empty CSV file" in msg:
                raise DataError("the file is empty (no header line)", file=raw.label) from None
            if conv:
                # type inferred from the first block failed later: read that column as text and
                # let validation report the rows that are not numbers / times
                header = _header_names(raw, delim, skip)
                col = header[int(conv.group(1))]
                if col in forced:
                    raise DataError(f"unreadable column ({msg.splitlines()[0]})", file=raw.label,
                                    column=col) from None
                forced[col] = pa.string()
                continue
            if _FIELDS_ERR.search(msg) and handler is None:
                # only now pay for a single-threaded read: it numbers the rows it skips
                bad_lines.clear()
                handler = on_invalid
                continue
            raise DataError(f"unreadable CSV ({msg.splitlines()[0]})", file=raw.label) from None
    else:   # pragma: no cover - a file would need 200 bad columns
        raise DataError("unreadable CSV (too many column type errors)", file=raw.label)
    n_ok = table.num_rows
    rows = None
    if bad_lines and any(b is None for b in bad_lines):   # pragma: no cover - pyarrow numbers them single-threaded
        raise DataError(f"{len(bad_lines)} rows have the wrong number of fields", file=raw.label)
    n_read = n_ok + len(bad_lines)
    if bad_lines:
        bad_rows = np.asarray(sorted(bad_lines), dtype=np.int64) - 1   # pyarrow counts the header
        rows = np.setdiff1d(np.arange(1, n_read + 1, dtype=np.int64), bad_rows)
        expected = table.num_columns
        if len(bad_rows) > MAX_DROP_FRACTION * n_read:
            raise DataError(f"{len(bad_rows)} of {n_read} rows do not have the {expected} fields "
                            f"of the header (wrong delimiter or a broken export?)",
                            file=raw.label, rows=bad_rows[:5].tolist())
        drops.append(DropRecord(f"wrong number of fields (the header has {expected})", None,
                                len(bad_rows), bad_rows[:5].tolist()))
    if table.num_columns == 0 or n_read == 0:
        raise DataError("has a header but no data rows", file=raw.label)
    _check_cells_are_text(table, raw, rows)
    _check_no_swallowed_lines(raw, delim, skip, n_read, table.column_names)
    return _Parsed(table, rows, n_read, drops, warnings)


def _raw_bytes(raw: _Raw) -> bytes:
    """The whole content (error paths and the line count only; a path is read again)."""
    if raw.data is not None:
        return raw.data
    with open(raw.path, "rb") as fh:
        return fh.read()


def _check_cells_are_text(table: pa.Table, raw: _Raw, rows: np.ndarray | None) -> None:
    """pyarrow reads a column with bytes that are not UTF-8 as binary: refuse it, naming the
    column and the first rows (Latin-1 text or binary data past the sniffed head)."""
    for name, column in zip(table.column_names, table.columns):
        if not pa.types.is_binary(column.type) and not pa.types.is_large_binary(column.type):
            continue
        bad, binary = [], False
        for i, value in enumerate(column.to_pylist()):
            if value is None:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(i)
                binary = binary or any(b < 9 or 13 < b < 32 for b in value)
                if len(bad) >= 5:
                    break
        if bad:
            data_rows = [int(rows[i]) if rows is not None else i + 1 for i in bad]
            what = ("binary data" if binary else
                    "text that is not UTF-8 (Latin-1 or Windows-1252?): save the file as 'CSV UTF-8'")
            raise DataError(f"holds {what}", file=raw.label, column=name, rows=data_rows)


def _check_no_swallowed_lines(raw: _Raw, delim: str, skip: int, n_read: int, columns: list[str]) -> None:
    """A stray quote makes the parser read every following line into one cell: the file has
    more lines than rows read. Refuse it naming the row and column where the quote opens."""
    data = _raw_bytes(raw)
    if b'"' not in data:
        return
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    blank = data.count(b"\n\n") + data.count(b"\n\r\n")
    expected = lines - 1 - skip - blank
    if n_read >= expected:
        return
    text_lines = data.split(b"\n")
    open_at = None
    for index, line in enumerate(text_lines[1 + skip:], start=1):
        if line.count(b'"') % 2:
            open_at = (index, line)
            break
    if open_at is None:
        return
    row, line = open_at
    before = line[:line.index(b'"')]
    field = before.count(delim.encode())
    column = columns[field] if field < len(columns) else None
    raise DataError(f"a quote (\") opens and never closes: the parser would read the next "
                    f"{expected - n_read:,} line(s) into one cell (remove the stray quote or quote the "
                    "whole field)", file=raw.label, column=column, rows=[row])


def _header_names(raw: _Raw, delim: str, skip: int) -> list[str]:
    text = raw.head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return next(csv.reader([lines[skip]], delimiter=delim))


def _read_parquet(raw: _Raw) -> pa.Table:
    max_rows = _max_rows()
    try:
        rows = pq.ParquetFile(raw.source()).metadata.num_rows     # the footer: nothing decoded yet
    except Exception as exc:   # pyarrow raises several types for corrupt files
        raise DataError(f"unreadable Parquet file ({str(exc).splitlines()[0]})", file=raw.label) from None
    if rows > max_rows:
        raise DataError(f"has {rows:,} rows, more than {max_rows:,} (EXECAL_MAX_ROWS): ingest it as a "
                        "partitioned dataset instead", file=raw.label)
    try:
        table = pq.read_table(raw.source())
    except Exception as exc:   # pyarrow raises several types for corrupt files
        raise DataError(f"unreadable Parquet file ({str(exc).splitlines()[0]})", file=raw.label) from None
    if table.num_rows == 0:
        raise DataError("the Parquet file has no rows", file=raw.label)
    return table


# --- columns -------------------------------------------------------------------------------------


def _known_canonical() -> set[str]:
    names = set()
    for kind in KINDS:
        names.update(REQUIRED[kind], OPTIONAL[kind])
    return names


def _check_canonical_name(canon: str) -> None:
    if canon not in _known_canonical() and not _LEVEL_RE.match(canon):
        valid = ", ".join(sorted(_known_canonical()))
        raise DataError(f"column mapping target {canon!r} is not a canonical column name; "
                        f"valid names: {valid}, or bid_price_N/bid_size_N/ask_price_N/ask_size_N")


def _alias_rename(columns: list[str]) -> dict[str, str]:
    """{column: canonical name} for the columns an alias or exact name identifies."""
    known = _known_canonical()
    cols = [c.strip().lower() for c in columns]
    taken = {c for c in cols if c in known or _LEVEL_RE.match(c)}
    out = {c: c for c in cols if c in taken}
    for canon, spellings in ALIASES.items():
        if canon in taken:
            continue
        for alias in spellings:          # first spelling present wins
            if alias in cols and alias not in out:
                out[alias] = canon
                taken.add(canon)
                break
    return out


def _from_table(parsed: _Parsed, *, label: str, sha256: str, kind: str | None,
                mapping: dict[str, str] | None) -> Dataset:
    table, rows, rows_read = parsed.table, parsed.rows, parsed.rows_read
    pre_drops, warnings = list(parsed.drops), list(parsed.warnings)
    parsed.table = None   # let to_pandas(self_destruct) free the Arrow buffers
    original = [str(c) for c in table.column_names]
    lower = [c.strip().lower() or f"unnamed_{i}" for i, c in enumerate(original)]
    dup = sorted({c for c in lower if lower.count(c) > 1})
    if dup:
        raise DataError(f"duplicate column name(s): {', '.join(dup)}", file=label)
    table = table.rename_columns(lower)
    frame = table.to_pandas(date_as_object=False, split_blocks=True, self_destruct=True)
    del table
    if rows is None:
        rows = np.arange(1, len(frame) + 1, dtype=np.int64)
    rows_read = rows_read if rows_read is not None else len(frame)

    if mapping:
        renames = {}
        for theirs, canon in mapping.items():
            key = str(theirs).strip().lower()
            if key not in frame.columns:
                raise DataError(f"column mapping refers to column {theirs!r}, which is not in the "
                                f"file. Found columns: {', '.join(original)}", file=label)
            _check_canonical_name(canon)
            renames[key] = canon
        # a mapped-to name that already exists is replaced by the user's choice
        clash = [c for c in renames.values() if c in frame.columns and c not in renames]
        frame = frame.drop(columns=clash).rename(columns=renames)
        if clash:
            warnings.append(f"column(s) {', '.join(clash)} replaced by the column mapping")

    fmt = tardis.detect_format(frame.columns)
    if fmt is not None:
        conv = tardis.to_canonical(frame, fmt, rows=rows)
        if kind is not None and kind != conv.kind:
            raise DataError(f"this is a Tardis '{fmt}' file, i.e. kind '{conv.kind}', not '{kind}'",
                            file=label)
        warnings = warnings + [f"read as Tardis.dev '{fmt}' CSV"] + conv.warnings
        frame, rows, kind = conv.frame, conv.rows, conv.kind
        pre_drops += conv.drops
    else:
        renames = _alias_rename(list(frame.columns))
        aliased = [f"{c}→{n}" for c, n in renames.items() if c != n]
        frame = frame.rename(columns=renames)
        if aliased:
            warnings.append(f"columns renamed: {', '.join(aliased)}")
        if kind is None:
            try:
                kind = detect_kind(frame.columns, shown=original)
            except DataError as exc:
                raise DataError(str(exc), file=label) from None
    clean, report = _validate(frame, kind, source=label, rows=rows, rows_read=rows_read,
                              pre_drops=pre_drops, warnings=warnings, file_columns=original)
    return Dataset(kind, clean, label, sha256, report)


def _load_captures(sources: list, *, names, kind: str | None, max_bytes: int | None) -> Dataset:
    """Several consecutive raw Binance captures (time order by first receive time) as one."""
    if not sources:
        raise DataError("no files given")
    names = list(names) if isinstance(names, (list, tuple)) else [None] * len(sources)
    if len(names) != len(sources):
        raise DataError(f"{len(sources)} files but {len(names)} names")
    limit = _limit_bytes(max_bytes)
    raws = []
    for src, nm in zip(sources, names):
        raw = _Raw.open(src, nm, limit)
        if raw.size and raw.head[:2] == b"\x1f\x8b":
            raw = raw.gunzipped()
        if not _BINANCE_LINE.match(raw.head):
            raise DataError("several files are read as one only when they are consecutive raw Binance "
                            "captures; this one is not (load it on its own)", file=raw.label)
        raws.append(raw)
    if len(raws) == 1:
        return _load_binance_capture(raws[0], kind)
    return _load_binance_capture(raws, kind)


def _load_binance_capture(raw, kind: str | None) -> Dataset:
    """Raw Binance websocket capture(s): parsed by execal.models.data.binance, validated here.
    `raw` is one `_Raw` or a list of consecutive ones."""
    streams = ("trades", "quotes", "book")
    raws = raw if isinstance(raw, list) else [raw]
    label = raws[0].label if len(raws) == 1 else " + ".join(r.label for r in raws)
    sha256 = raws[0].sha256 if len(raws) == 1 else hashlib.sha256(
        "".join(r.sha256 for r in raws).encode()).hexdigest()
    kind = kind or "trades"
    if kind not in streams:
        raise DataError(f"a raw Binance capture holds {', '.join(streams)}, not {kind!r}",
                        file=label)
    # hand over the bytes already decompressed for sniffing rather than reading the file again
    srcs = [r.data if r.data is not None else r.path for r in raws]
    try:
        capture = binance.read_capture(srcs if len(srcs) > 1 else srcs[0],
                                       name=[r.label for r in raws] if len(raws) > 1 else raws[0].label)
    except DataError:
        raise
    except Exception as exc:   # the user gets a sentence; the chained traceback stays for logs
        raise DataError(f"could not read the raw Binance capture ({type(exc).__name__}: {exc})",
                        file=label) from exc
    frames = {s: getattr(capture, s, None) for s in streams}
    frame = frames[kind]
    if frame is None or len(frame) == 0:
        have = [s for s, f in frames.items() if f is not None and len(f)]
        raise DataError(f"the capture has no {kind} stream; it has: {', '.join(have) or 'nothing'}",
                        file=label)
    others = [f"{s} ({len(f):,} rows)" for s, f in frames.items()
              if s != kind and f is not None and len(f)]
    warnings = [f"raw Binance capture: loaded the {kind} stream; rows are numbered in stream order"]
    for f in capture.stats.get("files", []):
        start = "first file" if f["joined"] is None else (
            "ids joined the previous file" if f["joined"] else
            "ids did NOT join the previous file" + (" (rebuilt from its own snapshot)"
                                                    if f.get("resynced_from_own_snapshot") else " (a gap)"))
        warnings.append(f"{f['file']}: starts at update id {f['first_update_id']}; {start}")
    warnings += [str(w) for w in getattr(capture, "warnings", []) or []]
    if others:
        warnings.append(f"also available in this file: {', '.join(others)} "
                        f"(load with kind={' or '.join(repr(o.split()[0]) for o in others)})")
    clean, report = _validate(frame, kind, source=label, warnings=warnings)
    return Dataset(kind, clean, label, sha256, report)


# --- validation ----------------------------------------------------------------------------------


class _Drops:
    """Row-level removals, each row attributed to the first reason that hit it."""

    def __init__(self, n: int, rows: np.ndarray):
        self.mask = np.zeros(n, dtype=bool)
        self.rows = rows
        self.records: list[DropRecord] = []

    def add(self, bad: np.ndarray, reason: str, column: str | None) -> None:
        new = bad & ~self.mask
        count = int(new.sum())
        if count:
            self.records.append(DropRecord(reason, column, count, self.rows[new][:5].tolist()))
            self.mask |= new


def _first_values(series: pd.Series, bad: np.ndarray, k: int = 3) -> str:
    vals = series[bad].head(k).tolist()
    return ", ".join(repr(v) for v in vals)


def _is_bool(series: pd.Series) -> bool:
    return pd.api.types.is_bool_dtype(series.dtype)


def _is_text(series: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(series.dtype) or series.dtype == object


def _to_float(series: pd.Series, column: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values, mask of cells that hold something that is not a number)."""
    if _is_bool(series):
        raise DataError("holds true/false values where numbers are expected", file=source,
                        column=column)
    if pd.api.types.is_numeric_dtype(series.dtype):
        return series.to_numpy(np.float64, na_value=np.nan), np.zeros(len(series), dtype=bool)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        raise DataError("holds dates where numbers are expected", file=source, column=column)
    text = series.astype("str").str.strip()
    values = pd.to_numeric(text, errors="coerce")
    present = text.notna() & (text != "")
    failed = (values.isna() & present).to_numpy()
    if failed.any():
        # decimal commas ('1,5') from ';'-delimited European exports
        alt = pd.to_numeric(text.str.replace(",", ".", regex=False), errors="coerce")
        alt_failed = (alt.isna() & present).to_numpy()
        if alt_failed.sum() < failed.sum():
            values, failed = alt, alt_failed
    return values.to_numpy(np.float64, na_value=np.nan), failed


# epoch magnitude -> unit: 1.7e9 s, 1.7e12 ms, 1.7e15 us, 1.7e18 ns; boundaries halfway in log
_EPOCH_UNITS = ((1e11, "s", 10**9), (1e14, "ms", 10**6), (1e17, "us", 10**3), (np.inf, "ns", 1))


def _epoch_to_utc(values: np.ndarray, ok: np.ndarray) -> tuple[pd.Series, np.ndarray, str]:
    """Numbers since the epoch -> (datetime64[ns, UTC] series, mask of unusable values, unit).

    The unit is read from each value's magnitude (s ~1.7e9, ms ~1.7e12, us ~1.7e15, ns ~1.7e18
    for dates of this era: three orders of magnitude apart), so a column mixing seconds and
    milliseconds is read right value by value; `unit` is then "mixed: 120 s, 80 ms"."""
    mag = np.abs(values).astype(np.float64)
    ok = ok & np.isfinite(mag)
    classes = np.searchsorted(np.array([u[0] for u in _EPOCH_UNITS[:-1]]), np.where(ok, mag, 0.0), side="right")
    present = np.unique(classes[ok])
    if present.size > 1:
        ts = pd.Series(pd.NaT, index=range(len(values)), dtype="datetime64[ns, UTC]")
        bad = ~ok
        parts = []
        for c in present:
            mine = ok & (classes == c)
            sub_vals = values.astype(np.float64) if values.dtype.kind == "f" else values
            t_c, b_c, unit_c = _epoch_to_utc(np.where(mine, sub_vals, sub_vals.dtype.type(0)), mine)
            ts[mine] = t_c[mine]
            bad = bad | (mine & b_c)
            parts.append(f"{int(mine.sum())} {unit_c}")
        return ts, bad, "mixed: " + ", ".join(parts)
    med = float(np.median(mag[ok])) if ok.any() else 0.0
    unit, factor = next((u, f) for limit, u, f in _EPOCH_UNITS if med < limit)
    if values.dtype.kind in "iu":
        vals = values.astype(np.int64)
        bound = np.iinfo(np.int64).max // factor
        ok = ok & (np.abs(vals) < bound)
        ns = np.where(ok, vals, 0) * factor
    else:
        # a float epoch near 1.7e9 s (or 1.7e12 ms, 1.7e15 us) carries ~0.2 us of precision:
        # scale whole and fractional parts separately and round to the microsecond, so that
        # 1709294401.25 s is exactly ...:01.25 and not ...:01.249999872
        ok = ok & np.isfinite(values) & (np.abs(values) * factor < 9.2e18)
        safe = np.where(ok, values, 0.0)
        whole = np.floor(safe)
        frac_ns = (safe - whole) * factor
        if factor >= 1000:
            frac_ns = np.round(frac_ns / 1000.0) * 1000.0
        ns = whole.astype(np.int64) * factor + np.round(frac_ns).astype(np.int64)
    ts = pd.Series(pd.to_datetime(ns, unit="ns", utc=True))
    ts[~ok] = pd.NaT
    return ts, ~ok, unit


def _to_utc(series: pd.Series, column: str, source: str, notes: list[str],
            rows: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Any timestamp spelling -> (datetime64[ns, UTC] series, mask of unparseable cells).

    Accepts datetimes (naive = UTC), epoch numbers in s/ms/us/ns (by magnitude), numeric text,
    and ISO-8601 text with or without an offset.
    """
    index = series.index
    n = len(series)
    if _is_bool(series):
        raise DataError("holds true/false values, not timestamps", file=source, column=column)
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        if getattr(series.dt, "tz", None) is None:
            series = series.dt.tz_localize("UTC")
        try:
            out = series.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        except (OverflowError, pd.errors.OutOfBoundsDatetime, ValueError):
            lo, hi = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
            inside = (series >= lo) & (series <= hi)
            out = series.where(inside).dt.tz_convert("UTC").astype("datetime64[ns, UTC]")
        return out.reset_index(drop=True).set_axis(index), out.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(series.dtype):
        values = series.to_numpy()
        if values.dtype.kind == "f":
            ok = np.isfinite(values)
        else:
            values = series.to_numpy(np.int64, na_value=0)
            ok = series.notna().to_numpy()
        return _epoch_checked(values, ok, column, source, notes, rows, index)
    if not _is_text(series):
        raise DataError(f"has type {series.dtype}, not timestamps", file=source, column=column)
    text = series.astype("str").str.strip()
    present = (text.notna() & (text != "")).to_numpy()
    numbers = pd.to_numeric(text, errors="coerce")
    is_number = numbers.notna().to_numpy()
    if is_number.sum() > 0.5 * max(present.sum(), 1):
        vals = numbers.to_numpy(np.float64, na_value=np.nan)
        if numbers.dtype.kind in "iu":
            vals = numbers.to_numpy(np.int64)
        ts, bad = _epoch_checked(vals, np.isfinite(vals.astype(np.float64)), column, source, notes,
                                 rows, index)
        other = present & ~is_number
        if other.any():             # the rest may be ISO text: read it as such, say so
            iso = _iso_to_utc(text[other])
            got = iso.notna().to_numpy()
            if got.any():
                ts = ts.copy()
                ts.iloc[np.flatnonzero(other)[got]] = iso[got].astype("datetime64[ns, UTC]").to_numpy()
                bad = bad.copy()
                bad[np.flatnonzero(other)[got]] = False
                notes.append(f"column '{column}': {int(got.sum())} ISO-8601 text value(s) among the epoch "
                             f"numbers, each read as written")
        return ts, bad
    ts = _iso_to_utc(text)
    if is_number.any() and ts.isna().any():   # a minority of epoch numbers among ISO text
        mixed = is_number & ts.isna().to_numpy()
        vals = numbers.to_numpy(np.float64, na_value=np.nan)
        try:
            epoch_ts, epoch_bad = _epoch_checked(np.where(mixed, vals, np.nan), mixed, column, source, [],
                                                 rows, index)
        except DataError:            # numbers that are no epoch at all: those rows stay unparseable
            epoch_ts, epoch_bad = ts, np.ones(n, dtype=bool)
        fill = mixed & ~epoch_bad
        if fill.any():
            ts = ts.astype("datetime64[ns, UTC]").copy()
            ts.iloc[np.flatnonzero(fill)] = epoch_ts.iloc[np.flatnonzero(fill)].to_numpy()
            notes.append(f"column '{column}': {int(fill.sum())} epoch number(s) among the ISO-8601 text, "
                         f"each read by its magnitude")
    bad = ts.isna().to_numpy()
    if bad.all() and n:
        first = _first_values(series, np.ones(n, dtype=bool))
        raise DataError(f"no value could be read as a timestamp (e.g. {first}); use ISO-8601 "
                        f"such as 2024-01-31T12:00:00Z or numbers since the epoch",
                        file=source, column=column, rows=rows[:5].tolist())
    return ts.astype("datetime64[ns, UTC]").set_axis(index), bad


_UNIT_WORD = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# epoch numbers whose typical value lands before this are not epoch timestamps (e.g. 20240301
# read as seconds is 1970-08-23): refuse rather than guess
_EPOCH_PLAUSIBLE_FROM = pd.Timestamp("1990-01-01", tz="UTC")


def _iso_to_utc(text: pd.Series) -> pd.Series:
    """ISO-8601 text -> UTC; what does not start like a date ('2024-...') or falls outside pandas'
    range (year 1677-2262) is NaT rather than an exception."""
    dated = text.str.match(r"^\d{4}-?\d{2}", na=False)
    try:
        return pd.to_datetime(text.where(dated), format="ISO8601", utc=True, errors="coerce")
    except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError):
        out = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
        for i in np.flatnonzero(dated.to_numpy()):
            try:
                out.iloc[i] = pd.to_datetime(text.iloc[i], format="ISO8601", utc=True)
            except (pd.errors.OutOfBoundsDatetime, OverflowError, ValueError):
                pass
        return out


def _epoch_checked(values: np.ndarray, ok: np.ndarray, column: str, source: str,
                   notes: list[str], rows: np.ndarray, index) -> tuple[pd.Series, np.ndarray]:
    ts, bad, unit = _epoch_to_utc(values, ok)
    if (~bad).any():
        typical = ts[~bad].iloc[int((~bad).sum()) // 2]
        if typical < _EPOCH_PLAUSIBLE_FROM:
            example = values[ok][0] if ok.any() else values[0]
            raise DataError(f"numbers such as {example!r} do not look like seconds, milliseconds, "
                            f"microseconds or nanoseconds since 1970 (they would mean "
                            f"{typical:%Y-%m-%d}); use ISO-8601 text such as 2024-01-31T12:00:00Z",
                            file=source, column=column, rows=rows[:5].tolist())
    if unit.startswith("mixed"):
        notes.append(f"column '{column}': epoch numbers in mixed units, each read by its magnitude "
                     f"({unit.split(': ', 1)[1]})")
    else:
        notes.append(f"column '{column}': epoch numbers read as {_UNIT_WORD[unit]}")
    if (~bad).any():                 # single values that land before 1990 are not timestamps
        early = ~bad & (ts < _EPOCH_PLAUSIBLE_FROM).to_numpy()
        if early.any():
            ts = ts.where(~early)
            bad = bad | early
    return ts.set_axis(index), bad


def _side_codes(series: pd.Series, kind: str, source: str, rows: np.ndarray) -> np.ndarray:
    """Vectorised `schema.side_sign`: factorize, map the few distinct spellings, take."""
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    lookup = np.zeros(len(uniques) + 1, dtype=np.int8)   # last slot: missing
    unknown = np.zeros(len(uniques) + 1, dtype=bool)
    for i, value in enumerate(uniques):
        try:
            lookup[i] = side_sign(value)
        except ValueError:
            # trades may say they do not know the aggressor; fills must know their side
            if kind == "trades" and str(value).strip().lower() in ("unknown", "", "0", "none", "nan"):
                lookup[i] = 0
            else:
                unknown[i] = True
    unknown[-1] = kind != "trades"
    codes = np.where(codes < 0, len(uniques), codes)
    bad = unknown[codes]
    if bad.any():
        shown = _first_values(series.reset_index(drop=True), bad)
        raise DataError(f"unknown side value(s) {shown}; use buy/sell, B/S or 1/-1",
                        file=source, column="side", rows=rows[bad][:5].tolist())
    return lookup[codes]


def _option_type(series: pd.Series) -> tuple[pd.Series, np.ndarray]:
    text = series.astype("str").str.strip().str.lower()
    out = text.map({"call": "call", "c": "call", "put": "put", "p": "put"})
    return out.astype("str"), out.isna().to_numpy()


def _duplicates(frame: pd.DataFrame, keys: list[np.ndarray]) -> np.ndarray:
    """Rows identical in every column to an earlier row.

    A hash of the parsed timestamp and numeric columns picks the candidates first (equal rows
    have equal hashes), so the exact all-column comparison only runs on the few collisions.
    """
    n = len(frame)
    if n < 2:
        return np.zeros(n, dtype=bool)
    if keys:
        h = np.zeros(n, dtype=np.uint64)
        for arr in keys:
            if arr.dtype.kind == "f":
                arr = np.where(np.isnan(arr), 0.0, arr) + 0.0    # one NaN, no -0.0
            with np.errstate(over="ignore"):
                h = h * np.uint64(1_000_003) + arr.view(np.uint64)
        candidates = pd.Series(h).duplicated(keep=False).to_numpy()
        if not candidates.any():
            return np.zeros(n, dtype=bool)
    else:
        candidates = np.ones(n, dtype=bool)
    out = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(candidates)
    sub = frame.iloc[idx]
    try:
        out[idx] = sub.duplicated(keep="first").to_numpy()
    except TypeError:   # unhashable cells (lists from Parquet): compare their text
        out[idx] = sub.astype("str").duplicated(keep="first").to_numpy()
    return out


def _sorted_within(symbol: pd.Series, ts_ns: np.ndarray) -> bool:
    """True when each symbol's rows, in file order, have non-decreasing timestamps."""
    codes, _ = pd.factorize(symbol)
    order = np.argsort(codes, kind="stable")
    same = codes[order][1:] == codes[order][:-1]
    ts = ts_ns[order]
    return not (same & (ts[1:] < ts[:-1])).any()


def _column_order(kind: str, columns: Iterable[str]) -> list[str]:
    present = set(columns)
    order = [c for c in REQUIRED[kind] + OPTIONAL[kind] + DERIVED.get(kind, ()) if c in present]
    if kind == "book":
        levels = sorted({int(m.group(3)) for c in present if (m := _LEVEL_RE.match(c))})
        for lvl in levels:
            order += [c for c in (f"bid_price_{lvl}", f"bid_size_{lvl}", f"ask_price_{lvl}",
                                  f"ask_size_{lvl}") if c in present]
    return order


def _validate(frame: pd.DataFrame, kind: str, *, source: str, rows: np.ndarray | None = None,
              rows_read: int | None = None, pre_drops: list[DropRecord] | None = None,
              warnings: list[str] | None = None,
              file_columns: list[str] | None = None) -> tuple[pd.DataFrame, ValidationReport]:
    n = len(frame)
    rows = np.arange(1, n + 1, dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    report = ValidationReport(rows_read=rows_read if rows_read is not None else n,
                              dropped=list(pre_drops or []), warnings=list(warnings or []))
    frame = frame.reset_index(drop=True)
    found = list(frame.columns) if file_columns is None else file_columns    # the names the user sees
    missing = [c for c in REQUIRED[kind] if c not in frame.columns]
    if missing:
        raise DataError(f"required column(s) for '{kind}' missing: {', '.join(missing)}. "
                        f"Found columns: {', '.join(map(short_name, found)) or '(none)'}", file=source)
    if n == 0:
        raise DataError("has no data rows", file=source)
    keep_cols = _column_order(kind, frame.columns)
    ignored = [short_name(c) for c in frame.columns if c not in keep_cols]
    if ignored:
        report.warnings.append(f"ignored columns (not used for {kind}): {', '.join(ignored)}")

    drops = _Drops(n, rows)
    out: dict[str, object] = {}
    hash_keys: list[np.ndarray] = []
    notes: list[str] = []

    for col in _TIME_COLUMNS:
        if col not in keep_cols:
            continue
        ts, bad = _to_utc(frame[col], col, source, notes, rows)
        if col == "timestamp" or col in REQUIRED[kind]:
            drops.add(bad, f"unparseable or missing {col}", col)
        if col == "timestamp":      # market data cannot come from the future: a unit error
            horizon = pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)
            future = (ts > horizon).to_numpy()
            if future.any():
                drops.add(future, f"timestamp in the future (after {horizon:%Y-%m-%d}; e.g. "
                                  f"{ts[future].iloc[0]:%Y-%m-%d}): a wrong time unit?", col)
        out[col] = ts
        hash_keys.append(ts.to_numpy("datetime64[ns]").view(np.int64))

    required = set(REQUIRED[kind])
    positive = set(POSITIVE.get(kind, ()))
    for col in keep_cols:
        if col in _TIME_COLUMNS or col in _TEXT_COLUMNS:
            continue
        values, not_number = _to_float(frame[col], col, source)
        finite = np.isfinite(values)
        if col in required:
            drops.add(not_number, "not a number", col)
            drops.add(~finite, "missing, NaN or infinite value", col)
        else:
            if not_number.any():
                report.warnings.append(
                    f"column '{col}': {int(not_number.sum())} value(s) that are not numbers set "
                    f"to missing (rows {', '.join(map(str, rows[not_number][:5]))})")
            if (~finite & ~np.isnan(values)).any():
                values = np.where(np.isinf(values), np.nan, values)
                report.warnings.append(f"column '{col}': infinite values set to missing")
        if col in positive:
            drops.add(finite & (values <= 0), "not positive", col)
        out[col] = values
        hash_keys.append(values)

    for col in keep_cols:
        if col == "side":
            out[col] = _side_codes(frame[col], kind, source, rows)
            hash_keys.append(out[col].astype(np.int64))
        elif col == "option_type":
            text, bad = _option_type(frame[col])
            drops.add(bad, "option type is not call/put (or C/P)", col)
            out[col] = text
        elif col in _TEXT_COLUMNS:
            text = frame[col] if pd.api.types.is_string_dtype(frame[col].dtype) else \
                frame[col].astype("str")
            if col in required:
                empty = (text.isna() | (text.str.strip() == "")).to_numpy()
                drops.add(empty, "missing value", col)
            out[col] = text.astype("str")

    drops.add(_duplicates(frame, hash_keys), "duplicate row (identical to an earlier row)", None)
    report.warnings.extend(notes)

    dropped = int(drops.mask.sum())
    total_read = report.rows_read
    total_dropped = dropped + sum(d.count for d in report.dropped)
    if total_dropped > MAX_DROP_FRACTION * total_read:
        worst = max(drops.records, key=lambda d: d.count) if drops.records else None
        why = "; ".join(f"{d.count} {d.reason}" + (f" in '{d.column}'" if d.column else "")
                        for d in report.dropped + drops.records)
        raise DataError(f"{total_dropped} of {total_read} rows would be dropped (over "
                        f"{MAX_DROP_FRACTION:.0%}), so the file is probably not what it seems: {why}",
                        file=source, column=worst.column if worst else None,
                        rows=worst.first_rows if worst else None)
    report.dropped.extend(drops.records)

    keep = ~drops.mask
    if keep.all():   # the usual case: no boolean-index copy of every column
        clean = pd.DataFrame({c: out[c] for c in keep_cols}, copy=False)
    else:
        clean = pd.DataFrame({c: (out[c][keep] if isinstance(out[c], np.ndarray)
                                  else out[c][keep].reset_index(drop=True)) for c in keep_cols})
    kept_rows = rows[keep]
    if kind == "fills":
        ratio = clean["exec_price"].to_numpy() / clean["arrival_price"].to_numpy()
        absurd = ~((ratio > 1.0 / MAX_PRICE_RATIO) & (ratio < MAX_PRICE_RATIO))
        if absurd.any():
            where = np.flatnonzero(absurd)
            rec = DropRecord(f"exec_price and arrival_price differ by more than {MAX_PRICE_RATIO:g}x "
                             "(a price in another unit or a typo)", "exec_price", int(where.size),
                             kept_rows[where[:5]].tolist())
            report.dropped.append(rec)
            if sum(d.count for d in report.dropped) > MAX_DROP_FRACTION * report.rows_read:
                raise DataError(f"{where.size} of {report.rows_read} fills have exec_price and arrival_price "
                                f"more than {MAX_PRICE_RATIO:g}x apart: prices in different units?",
                                file=source, column="exec_price", rows=rec.first_rows)
            clean = clean.loc[~absurd].reset_index(drop=True)
            kept_rows = kept_rows[~absurd]
        clean["cost_bps"] = (clean["side"].to_numpy(np.float64)
                             * (clean["exec_price"].to_numpy() / clean["arrival_price"].to_numpy() - 1.0)
                             * 1e4)
    ts_ns = clean["timestamp"].to_numpy("datetime64[ns]").view(np.int64)
    backwards = np.flatnonzero(ts_ns[1:] < ts_ns[:-1]) + 1
    if len(backwards):
        first = ", ".join(map(str, kept_rows[backwards][:5]))
        if "symbol" in clean.columns and _sorted_within(clean["symbol"], ts_ns):
            # several symbols one after the other, each in time order: normal, just merged
            report.warnings.append(f"rows were in time order per symbol, one symbol after "
                                   f"another (new symbol at rows {first}); merged by timestamp")
        else:
            report.warnings.append(f"{len(backwards)} row(s) earlier than the row before them "
                                   f"(first at rows {first}); sorted by timestamp")
        order = np.argsort(ts_ns, kind="stable")
        clean = clean.take(order).reset_index(drop=True)
    report.rows_kept = len(clean)
    return clean, report
