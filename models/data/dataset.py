"""Datasets, not files: a directory of Parquet files partitioned by day (and symbol / venue) with a
manifest, for data that does not fit in memory.

Layout (hive partitions, readable by any Parquet tool; files starting with '_' are not data):

    DIR/_manifest.json                                   what is here (see below)
    DIR/day=2024-09-01/symbol=BTCUSDT/venue=binance/part-<sha16>-<n>.parquet

Each data file holds the canonical columns of one kind (as `execal.models.data.io` makes them)
except the partition keys, which are in the path. `ingest` turns CSV / Parquet / captures into such
a directory chunk by chunk (memory stays bounded by the chunk, not the file), through the same
validation as `load`; ingesting another file adds its partitions and updates the manifest, and a
file already ingested (same sha256) is skipped. The manifest records, per source file, its sha256,
rows read and kept, span and validation report; per partition, its rows, bytes, files, span and
column statistics (min, max, sum, count), so a summary, coverage and the filter choices never read
a row.

Reading: `open_dataset(DIR).select(start=, end=, symbols=, venues=, min_quantity=, ...)` gives a
`DatasetView`: partitions pruned from the manifest, the rest of the filter handed to
`pyarrow.dataset` (row-group statistics skip what they can). A view splits into `ScanTask`s
(picklable: a list of files and a filter) that `read_task` turns into record batches in a fixed
order, so the same per-task work gives the same numbers in this process or on a Dask worker.
The impact area streams these batches (execal.models.impact.outofcore); nothing here knows models.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from execal.models.data.io import ColumnTypeError, load_chunks
from execal.models.data.schema import (DERIVED, OPTIONAL, REQUIRED, DataError, Dataset, DropRecord,
                                       ValidationReport)

MANIFEST = "_manifest.json"
FORMAT = "execal-dataset"
SCHEMA_VERSION = 1
PARTITION_KEYS = ("day", "symbol", "venue")       # day always; symbol and venue where present
NS_PER_DAY = 86_400 * 10**9
DEFAULT_CHUNK_ROWS = 1_000_000
# a row group this size is what a scan reads at once (and what a one-day filter can skip)
ROW_GROUP_ROWS = 262_144
# rows buffered across partitions before the biggest buffers are written out
MAX_BUFFERED_ROWS = 2_000_000
MAX_OPEN_WRITERS = 64
# lz4: decompresses at ~1.5 GB/s on one core, 2-3x faster than snappy, files ~same size
COMPRESSION = "lz4"
DEFAULT_TASK_ROWS = 4_000_000


# --- filesystem that counts what is read ---------------------------------------------------------

class _CountingFile:
    """A random-access file that adds every byte read to its counter."""

    def __init__(self, fh, counter: "ReadCounter", path: str):
        self._fh, self._counter, self.path = fh, counter, path
        self.closed = False
        self.mode = "rb"

    def read(self, n=-1):
        data = self._fh.read(n)
        self._counter.add(self.path, len(data))
        return data

    def seek(self, pos, whence=0):
        return self._fh.seek(pos, whence)

    def tell(self):
        return self._fh.tell()

    def seekable(self):
        return True

    def readable(self):
        return True

    def writable(self):
        return False

    def close(self):
        self.closed = True
        self._fh.close()


class ReadCounter(pafs.FileSystemHandler):
    """A local pyarrow filesystem that counts the bytes and files read through it (for tests and
    benchmarks of filter pushdown): `fs = ReadCounter.filesystem()`, then `fs.handler.bytes_read`."""

    def __init__(self):
        self._local = pafs.LocalFileSystem()
        self.bytes_read = 0
        self.files: dict[str, int] = {}

    @classmethod
    def filesystem(cls) -> pafs.PyFileSystem:
        return pafs.PyFileSystem(cls())

    def add(self, path: str, n: int) -> None:
        self.bytes_read += n
        self.files[path] = self.files.get(path, 0) + n

    def reset(self) -> None:
        self.bytes_read = 0
        self.files = {}

    # FileSystemHandler interface: reads are counted, everything else is the local filesystem
    def get_type_name(self):
        return "execal-counting"

    def normalize_path(self, path):
        return path

    def get_file_info(self, paths):
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._local.get_file_info(selector)

    def open_input_file(self, path):
        return pa.PythonFile(_CountingFile(open(path, "rb"), self, path), mode="r")

    def open_input_stream(self, path):
        return self.open_input_file(path)

    def create_dir(self, path, recursive):   # pragma: no cover - read-only use
        raise OSError("read-only")

    def delete_dir(self, path):   # pragma: no cover
        raise OSError("read-only")

    def delete_dir_contents(self, path, missing_dir_ok=False):   # pragma: no cover
        raise OSError("read-only")

    def delete_root_dir_contents(self):   # pragma: no cover
        raise OSError("read-only")

    def delete_file(self, path):   # pragma: no cover
        raise OSError("read-only")

    def move(self, src, dest):   # pragma: no cover
        raise OSError("read-only")

    def copy_file(self, src, dest):   # pragma: no cover
        raise OSError("read-only")

    def open_output_stream(self, path, metadata):   # pragma: no cover
        raise OSError("read-only")

    def open_append_stream(self, path, metadata):   # pragma: no cover
        raise OSError("read-only")


# --- manifest ---------------------------------------------------------------------------------

def is_dataset(path: str | os.PathLike) -> bool:
    """True when `path` is a directory with an execal manifest."""
    p = Path(path)
    return p.is_dir() and (p / MANIFEST).is_file()


def _iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat()


def _empty_manifest(kind: str) -> dict:
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "kind": kind,
            "partitioning": [], "schema": {}, "rows": 0, "bytes": 0, "start_ns": None,
            "end_ns": None, "sources": [], "partitions": {}, "updated_at": None}


def _read_manifest(root: Path) -> dict:
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise DataError(f"not an execal dataset (no {MANIFEST}); make one with `execal ingest`",
                        file=str(root)) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"unreadable {MANIFEST} ({exc})", file=str(root)) from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{MANIFEST} is not an execal dataset manifest", file=str(root))
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"dataset schema version {manifest.get('schema_version')!r}; this execal reads "
                        f"version {SCHEMA_VERSION}", file=str(root))
    return manifest


def _write_manifest(root: Path, manifest: dict) -> None:
    manifest["updated_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    tmp = root / f"_manifest.{uuid.uuid4().hex}.tmp"
    # compact: json's C encoder only runs without indent (a year of partitions is ~2 MB of JSON)
    tmp.write_text(json.dumps(manifest, separators=(",", ":"), allow_nan=False) + "\n")
    os.replace(tmp, root / MANIFEST)   # readers see the old or the new manifest, never half


@contextlib.contextmanager
def _lock(root: Path):
    """One writer at a time per dataset (an advisory lock next to the manifest)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "_lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def partition_path(values: Mapping[str, str]) -> str:
    """'day=2024-09-01/symbol=BTCUSDT/venue=binance' (values URI-escaped, as pyarrow's hive reads)."""
    return "/".join(f"{k}={quote(str(v), safe='')}" for k, v in values.items())


def _parse_partition(path: str) -> dict[str, str]:
    out = {}
    for seg in path.split("/"):
        k, _, v = seg.partition("=")
        out[k] = unquote(v)
    return out


# --- statistics ---------------------------------------------------------------------------------

def _column_stats(table: pa.Table) -> dict[str, dict]:
    """{column: {min, max, sum, count}} of the numeric columns (count = non-missing values)."""
    out = {}
    for name in table.column_names:
        col = table[name]
        t = col.type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            continue
        arr = col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        ok = np.isfinite(arr)
        if not ok.any():
            out[name] = {"min": None, "max": None, "sum": 0.0, "count": 0}
            continue
        v = arr[ok] if not ok.all() else arr
        out[name] = {"min": float(v.min()), "max": float(v.max()), "sum": float(v.sum()),
                     "count": int(v.size)}
    return out


def _merge_stats(a: dict, b: dict) -> dict:
    out = dict(a)
    for name, s in b.items():
        if name not in out or not out[name]["count"]:
            out[name] = dict(s)
            continue
        if not s["count"]:
            continue
        o = out[name]
        out[name] = {"min": min(o["min"], s["min"]), "max": max(o["max"], s["max"]),
                     "sum": o["sum"] + s["sum"], "count": o["count"] + s["count"]}
    return out


# --- writing --------------------------------------------------------------------------------------

def _type_name(t: pa.DataType) -> str:
    return str(t)


class DatasetWriter:
    """Write canonical frames of one kind into partitions, in bounded memory.

    Rows are split by partition (day from the timestamp; symbol and venue when the kind has them),
    buffered per partition and written as row groups of ROW_GROUP_ROWS; at most MAX_OPEN_WRITERS
    files are open (a partition evicted and written again gets a new file). Files are written in
    place under names no manifest lists yet (readers go by the manifest, so they are invisible);
    `commit` records them in the manifest in one atomic replace, `abort` deletes them.
    """

    def __init__(self, root: str | os.PathLike, kind: str, source: Mapping[str, Any], *,
                 manifest: dict | None = None, row_group_rows: int = ROW_GROUP_ROWS):
        self.root = Path(root)
        self.kind = kind
        self.source = dict(source)
        self.tag = f"{str(self.source.get('sha256') or uuid.uuid4().hex)[:16]}-{uuid.uuid4().hex[:6]}"
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest = manifest
        self.row_group_rows = int(row_group_rows)
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered: dict[str, int] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._seq: dict[str, int] = {}
        self._parts: dict[str, dict] = {}       # partition path -> {rows, files, stats, start, end}
        self._schema: pa.Schema | None = None
        self.keys: tuple[str, ...] | None = None
        self.rows = 0

    # -- input
    def write_frame(self, frame: pd.DataFrame) -> None:
        """Add canonical rows (a `Dataset.frame` of this writer's kind)."""
        if len(frame) == 0:
            return
        if self.keys is None:
            self.keys = ("day",) + tuple(k for k in ("symbol", "venue") if k in frame.columns)
        missing = [k for k in self.keys[1:] if k not in frame.columns]
        if missing:
            raise DataError(f"this chunk has no '{missing[0]}' column but earlier rows of the "
                            f"dataset are partitioned by it", column=missing[0])
        ts = frame["timestamp"]
        ns = ts.to_numpy("datetime64[ns]").view(np.int64)
        day = ns // NS_PER_DAY
        codes = [pd.factorize(day, sort=True)]
        for k in self.keys[1:]:
            codes.append(pd.factorize(frame[k].astype(str).to_numpy(), sort=True))
        combined = np.zeros(len(frame), dtype=np.int64)
        for c, u in codes:
            combined = combined * (len(u) + 1) + c
        groups, inverse = np.unique(combined, return_inverse=True)
        data_cols = [c for c in frame.columns if c not in self.keys]
        table = pa.Table.from_pandas(frame[data_cols], preserve_index=False)
        table = table.cast(self._unify(table.schema))
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(groups) + 1))
        for g in range(len(groups)):
            idx = order[bounds[g]:bounds[g + 1]]
            first = idx[0]
            values = {"day": str(np.datetime64(int(day[first]), "D"))}
            for k, (c, u) in zip(self.keys[1:], codes[1:]):
                values[k] = str(u[c[first]])
            part = partition_path(values)
            sub = table.take(pa.array(idx))
            self._add(part, sub, int(ns[idx].min()), int(ns[idx].max()))
        self.rows += len(frame)
        # input in time order (the usual export, the generator): days before this chunk are done
        self.flush_days_before(str(np.datetime64(int(day.min()), "D")))
        self._flush_if_needed()

    def flush_days_before(self, day: str | None) -> None:
        """Write out and close the partitions of days before `day` (every partition when None)."""
        for part in set(self._buffers) | set(self._writers):
            if day is None or part[len("day="):len("day=") + 10] < day:
                self._flush(part)
                self._close(part)

    def _unify(self, schema: pa.Schema) -> pa.Schema:
        """The data files' schema: the first chunk's, widened by later chunks' new columns; a
        column whose type changes is refused."""
        if self._schema is None:
            known = {} if not self.manifest else self.manifest.get("schema", {})
            for f in schema:
                if f.name in known and known[f.name] != _type_name(f.type):
                    if pa.types.is_null(f.type):
                        continue
                    raise DataError(f"type {f.type} differs from the dataset's {known[f.name]}",
                                    column=f.name)
            self._schema = schema
            return schema
        fields = {f.name: f for f in self._schema}
        for f in schema:
            if f.name in fields and fields[f.name].type != f.type:
                if pa.types.is_null(f.type):
                    continue
                if pa.types.is_null(fields[f.name].type):
                    fields[f.name] = f
                    continue
                raise DataError(f"type {f.type} differs from earlier rows' {fields[f.name].type}",
                                column=f.name)
            fields.setdefault(f.name, f)
        self._schema = pa.schema(list(fields.values()))
        return pa.schema([fields[f.name] for f in schema])

    def _add(self, part: str, table: pa.Table, start: int, end: int) -> None:
        self._buffers.setdefault(part, []).append(table)
        self._buffered[part] = self._buffered.get(part, 0) + table.num_rows
        info = self._parts.setdefault(part, {"rows": 0, "files": [], "stats": {}, "start_ns": start,
                                             "end_ns": end})
        info["rows"] += table.num_rows
        info["start_ns"] = min(info["start_ns"], start)
        info["end_ns"] = max(info["end_ns"], end)
        info["stats"] = _merge_stats(info["stats"], _column_stats(table))

    def _flush_if_needed(self) -> None:
        for part in [p for p, n in self._buffered.items() if n >= self.row_group_rows]:
            self._flush(part)
        total = sum(self._buffered.values())
        while total > MAX_BUFFERED_ROWS:
            part = max(self._buffered, key=self._buffered.get)
            total -= self._buffered[part]
            self._flush(part)

    def _flush(self, part: str) -> None:
        tables = self._buffers.pop(part, [])
        self._buffered.pop(part, None)
        if not tables:
            return
        table = pa.concat_tables(tables, promote_options="default")
        writer = self._writers.get(part)
        if writer is not None and not writer.schema.equals(table.schema):
            self._close(part)
            writer = None
        if writer is None:
            if len(self._writers) >= MAX_OPEN_WRITERS:
                self._close(next(iter(self._writers)))
            seq = self._seq.get(part, 0)
            self._seq[part] = seq + 1
            rel = f"{part}/part-{self.tag}-{seq}.parquet"
            (self.root / part).mkdir(parents=True, exist_ok=True)
            writer = pq.ParquetWriter(self.root / rel, table.schema, compression=COMPRESSION)
            self._writers[part] = writer
            self._parts[part]["files"].append(rel)
        writer.write_table(table, row_group_size=self.row_group_rows)

    def _close(self, part: str) -> None:
        writer = self._writers.pop(part, None)
        if writer is not None:
            writer.close()

    # -- output
    def close(self) -> None:
        for part in list(self._buffers):
            self._flush(part)
        for part in list(self._writers):
            self._close(part)

    def abort(self) -> None:
        for part in list(self._writers):
            with contextlib.suppress(Exception):
                self._close(part)
        for info in self._parts.values():
            for rel in info["files"]:
                with contextlib.suppress(FileNotFoundError):
                    (self.root / rel).unlink()

    def commit(self, report: ValidationReport | None = None) -> dict:
        """Move the files into place and record them in the manifest (under the dataset lock)."""
        self.close()
        with _lock(self.root):
            manifest = (_read_manifest(self.root) if (self.root / MANIFEST).exists()
                        else _empty_manifest(self.kind))
            if manifest["kind"] != self.kind:
                self.abort()
                raise DataError(f"the dataset holds {manifest['kind']}, this source is {self.kind}",
                                file=self.source.get("file"))
            if self.source.get("sha256") and any(s.get("sha256") == self.source["sha256"]
                                                 for s in manifest["sources"]):
                self.abort()
                return manifest
            keys = list(self.keys or ("day",))
            if manifest["partitioning"] and manifest["partitioning"] != keys:
                self.abort()
                raise DataError(f"the dataset is partitioned by {', '.join(manifest['partitioning'])}, "
                                f"this source by {', '.join(keys)} (it has other columns)",
                                file=self.source.get("file"))
            manifest["partitioning"] = keys
            schema = dict(manifest.get("schema") or {})
            for f in (self._schema or []):
                if f.name not in schema or schema[f.name] == "null":
                    schema[f.name] = _type_name(f.type)
            manifest["schema"] = schema
            files, overlaps = [], []
            for part, info in sorted(self._parts.items()):
                sizes = []
                for rel in info["files"]:
                    sizes.append((self.root / rel).stat().st_size)
                    files.append(rel)
                old = manifest["partitions"].get(part)
                if old is not None:
                    overlaps.append(part)
                    old["rows"] += info["rows"]
                    old["files"] += info["files"]
                    old["bytes"] += sum(sizes)
                    old["start_ns"] = min(old["start_ns"], info["start_ns"])
                    old["end_ns"] = max(old["end_ns"], info["end_ns"])
                    old["stats"] = _merge_stats(old["stats"], info["stats"])
                else:
                    manifest["partitions"][part] = {**_parse_partition(part), "rows": info["rows"],
                                                    "bytes": sum(sizes), "files": list(info["files"]),
                                                    "start_ns": info["start_ns"], "end_ns": info["end_ns"],
                                                    "stats": info["stats"]}
            manifest["partitions"] = dict(sorted(manifest["partitions"].items()))
            starts = [p["start_ns"] for p in self._parts.values()]
            ends = [p["end_ns"] for p in self._parts.values()]
            entry = {**self.source, "rows": self.rows, "files": files,
                     "start": _iso(min(starts)) if starts else None,
                     "end": _iso(max(ends)) if ends else None,
                     "ingested_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            if report is not None:
                entry["report"] = report.to_dict()
            if overlaps:
                entry.setdefault("warnings", []).append(
                    f"{len(overlaps)} partition(s) already held rows from other sources (e.g. "
                    f"{overlaps[0]}): rows in both files are counted twice")
            manifest["sources"].append(entry)
            parts = manifest["partitions"].values()
            manifest["rows"] = sum(p["rows"] for p in parts)
            manifest["bytes"] = sum(p["bytes"] for p in parts)
            manifest["start_ns"] = min((p["start_ns"] for p in parts), default=None)
            manifest["end_ns"] = max((p["end_ns"] for p in parts), default=None)
            _write_manifest(self.root, manifest)
        return manifest


# --- ingest ---------------------------------------------------------------------------------------

@dataclass
class IngestReport:
    """What `ingest` did with each source."""
    out: str
    sources: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"out": self.out, "sources": self.sources}


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def _merge_report(total: ValidationReport, part: ValidationReport) -> None:
    total.rows_read += part.rows_read
    total.rows_kept += part.rows_kept
    for d in part.dropped:
        for t in total.dropped:
            if (t.reason, t.column) == (d.reason, d.column):
                t.count += d.count
                t.first_rows = (t.first_rows + d.first_rows)[:5]
                break
        else:
            total.dropped.append(DropRecord(d.reason, d.column, d.count, list(d.first_rows[:5])))
    for w in part.warnings:
        if w not in total.warnings and len(total.warnings) < 50:
            total.warnings.append(w)


def ingest(sources: Sequence[str | os.PathLike], out: str | os.PathLike, *, kind: str | None = None,
           mapping: dict[str, str] | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS,
           progress: Callable[[str, int], None] | None = None) -> IngestReport:
    """Add each source file (CSV, CSV.gz, Parquet, Binance capture, Tardis CSV) to the partitioned
    dataset `out` (created when missing). A file whose sha256 is already in the manifest is
    skipped. Each file is read in chunks of `chunk_rows` through `io.load_chunks` (the validation
    of `load`), and committed in one step: a file that fails leaves the dataset unchanged."""
    out = Path(out)
    report = IngestReport(str(out))
    for src in sources:
        path = Path(src)
        if not path.is_file():
            raise DataError("no such file", file=str(src))
        sha = _file_sha256(path)
        manifest = _read_manifest(out) if is_dataset(out) else None
        if manifest and any(s.get("sha256") == sha for s in manifest["sources"]):
            report.sources.append({"file": path.name, "sha256": sha, "status": "skipped",
                                   "reason": "already ingested (same sha256)"})
            continue
        column_types: dict[str, pa.DataType] = {}
        for _attempt in range(50):
            writer = None
            total = ValidationReport()
            try:
                source_kind = kind or (manifest["kind"] if manifest else None)
                for chunk in load_chunks(path, kind=source_kind, mapping=mapping, chunk_rows=chunk_rows,
                                         column_types=column_types, sha256=sha):
                    if writer is None:
                        writer = DatasetWriter(out, chunk.kind, {"file": path.name, "path": str(path.resolve()),
                                                                 "sha256": sha, "kind": chunk.kind},
                                               manifest=manifest)
                    _merge_report(total, chunk.report)
                    writer.write_frame(chunk.frame)
                    if progress:
                        progress(path.name, writer.rows)
            except ColumnTypeError as err:
                if writer is not None:
                    writer.abort()
                if err.bad_column in column_types:
                    raise
                column_types[err.bad_column] = pa.string()
                continue
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
            break
        if writer is None:   # pragma: no cover - load_chunks raises on a file without rows
            raise DataError("has no data rows", file=path.name)
        total.rows_kept = writer.rows
        writer.commit(total)
        report.sources.append({"file": path.name, "sha256": sha, "status": "ingested",
                               "kind": writer.kind, "rows_read": total.rows_read,
                               "rows": writer.rows, "partitions": len(writer._parts),
                               "dropped": [d.to_dict() for d in total.dropped],
                               "warnings": total.warnings})
    return report


# --- reading --------------------------------------------------------------------------------------

_ARROW_TYPES = {"double": pa.float64(), "float": pa.float32(), "int8": pa.int8(), "int16": pa.int16(),
                "int32": pa.int32(), "int64": pa.int64(), "string": pa.string(),
                "large_string": pa.large_string(), "bool": pa.bool_(), "null": pa.null()}


def _arrow_type(name: str) -> pa.DataType:
    if name in _ARROW_TYPES:
        return _ARROW_TYPES[name]
    if name.startswith("timestamp["):
        unit, _, tz = name[len("timestamp["):-1].partition(", tz=")
        return pa.timestamp(unit, tz or None)
    raise DataError(f"unsupported column type {name!r} in the manifest")


@dataclass(frozen=True)
class ScanTask:
    """A picklable unit of work: some data files of one dataset, read in order with a filter."""
    index: int
    root: str
    files: tuple[str, ...]                     # relative paths, dataset order
    partitions: tuple[tuple[tuple[str, str], ...], ...]   # per file: ((key, value), ...)
    schema: tuple[tuple[str, str], ...]        # data columns (name, arrow type name)
    row_filter: Any                            # pyarrow Expression on data columns, or None
    rows: int                                  # rows in these files before the row filter
    days: tuple[str, ...]                      # days these files cover
    bounds: tuple = ()                         # (column, lower, upper, upper_inclusive): row groups
                                               # whose statistics fall outside are not read


_LOCAL = pafs.LocalFileSystem()


def _row_group_may_match(meta, index: dict[str, int], bounds) -> bool:
    """False when a row group's min/max statistics exclude every row of the filter."""
    for column, lower, upper, upper_inclusive in bounds:
        i = index.get(column)
        if i is None:
            continue
        st = meta.column(i).statistics
        if st is None or not st.has_min_max:
            continue
        lo, hi = st.min_raw, st.max_raw
        if lower is not None and hi < lower:
            return False
        if upper is not None and (lo > upper or (lo == upper and not upper_inclusive)):
            return False
    return True


def _filter_by_bounds(batch: pa.RecordBatch, bounds) -> pa.RecordBatch:
    """Rows with lower <= column < upper (<= when upper_inclusive); a numpy mask, not an Acero
    expression (which costs ~1 ms a call to set up)."""
    keep = None
    for column, lower, upper, upper_inclusive in bounds:
        if column not in batch.schema.names:
            continue
        col = batch.column(column)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        v = col.to_numpy(zero_copy_only=False)
        with np.errstate(invalid="ignore"):
            m = np.ones(v.shape[0], dtype=bool) if lower is None else v >= lower
            if upper is not None:
                m &= (v <= upper) if upper_inclusive else (v < upper)
        keep = m if keep is None else keep & m
    if keep is None or keep.all():
        return batch
    return batch.filter(pa.array(keep))


def _batches_of_fragment(path: str, partition: Mapping[str, str], schema: pa.Schema,
                         columns: Sequence[str], row_filter, bounds, batch_rows: int,
                         filesystem) -> Iterator[pa.RecordBatch]:
    """Batches of one data file: row groups pruned by their statistics, rows by `row_filter`,
    columns the file lacks (added to the dataset after it was written) as nulls, partition keys
    from the path. pyarrow.parquet directly: a dataset Scanner costs ~2 ms a file to set up, which
    on 10⁴ files and a dozen passes is minutes."""
    data_cols = [c for c in columns if c not in partition]
    source = filesystem.open_input_file(path) if filesystem is not None else path
    pf = pq.ParquetFile(source)
    try:
        names = pf.schema_arrow.names
        filter_cols = [b[0] for b in bounds if b[0] in names and b[0] not in data_cols]
        read_cols = [c for c in data_cols if c in names] + filter_cols
        meta = pf.metadata
        groups = list(range(meta.num_row_groups))
        if bounds and groups:
            rg0 = meta.row_group(0)
            index = {rg0.column(i).path_in_schema: i for i in range(rg0.num_columns)}
            groups = [g for g in groups if _row_group_may_match(meta.row_group(g), index, bounds)]
        if not groups:
            return
        for batch in pf.iter_batches(batch_size=batch_rows, row_groups=groups, columns=read_cols,
                                     use_threads=False):
            if bounds:
                batch = _filter_by_bounds(batch, bounds)
            n = batch.num_rows
            if n == 0:
                continue
            arrays = []
            for c in columns:
                if c in partition:
                    arrays.append(pa.repeat(pa.scalar(partition[c], pa.string()), n))
                elif c in names:
                    col = batch.column(c)
                    want = schema.field(c).type
                    arrays.append(col if col.type == want else col.cast(want))
                else:
                    arrays.append(pa.nulls(n, schema.field(c).type))
            yield pa.RecordBatch.from_arrays(arrays, names=list(columns))
    finally:
        if filesystem is not None:
            source.close()


def read_task(task: ScanTask, columns: Sequence[str], *, batch_rows: int = 1_000_000,
              filesystem=None) -> Iterator[pa.RecordBatch]:
    """The record batches of `task` (only `columns`; partition keys such as 'symbol' may be
    among them), in file order then row order: the same batches wherever it runs."""
    for _, batch in read_task_parts(task, columns, batch_rows=batch_rows, filesystem=filesystem):
        yield batch


def read_task_parts(task: ScanTask, columns: Sequence[str], *, batch_rows: int = 1_000_000,
                    filesystem=None) -> Iterator[tuple[dict[str, str], pa.RecordBatch]]:
    """`read_task` with each batch's partition values ({'day': ..., 'symbol': ..., ...}, and
    '_file': the data file's path relative to the dataset root): every row of a batch shares them,
    so per-symbol / per-venue sums need no per-row work, and a bad value can name its file."""
    schema = pa.schema([(n, _arrow_type(t)) for n, t in task.schema])
    known = set(schema.names) | {k for p in task.partitions for k, _ in p}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise DataError(f"the dataset has no column(s) {', '.join(unknown)}", file=task.root,
                        column=unknown[0])
    for rel, part, day in zip(task.files, task.partitions, _file_days(task)):
        path = os.path.join(task.root, rel)
        values = {"day": day, **dict(part), "_file": rel}
        for batch in _batches_of_fragment(path, dict(part), schema, list(columns), task.row_filter,
                                          task.bounds, batch_rows, filesystem):
            yield values, batch


def _file_days(task: ScanTask) -> list[str]:
    return [rel.split("/", 1)[0][len("day="):] for rel in task.files]


class PartitionedDataset:
    """An execal dataset directory (see the module docstring); `select` gives filtered views."""

    def __init__(self, root: str | os.PathLike, *, filesystem=None):
        self.root = Path(root).resolve()
        self.manifest = _read_manifest(self.root)
        self.filesystem = filesystem

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def columns(self) -> list[str]:
        keys = [k for k in self.manifest["partitioning"] if k != "day"]
        return list(self.manifest["schema"]) + keys

    @property
    def sha256(self) -> str:
        """Identity of the content: hash of the sources' sha256 in ingest order and row counts."""
        h = hashlib.sha256()
        for s in self.manifest["sources"]:
            h.update(f"{s.get('sha256')}:{s.get('rows')};".encode())
        return h.hexdigest()

    def all(self) -> "DatasetView":
        return self.select()

    def select(self, *, start=None, end=None, days: Iterable[str] | None = None,
               symbols: Iterable[str] | None = None, venues: Iterable[str] | None = None,
               min_quantity: float | None = None, max_quantity: float | None = None) -> "DatasetView":
        """A view of the rows with start <= timestamp < end (UTC), on these days / symbols /
        venues and with min_quantity <= quantity <= max_quantity (each filter optional)."""
        return DatasetView(self, Filters.make(start=start, end=end, days=days, symbols=symbols,
                                              venues=venues, min_quantity=min_quantity,
                                              max_quantity=max_quantity))

    def summary(self) -> dict:
        return self.all().summary()


def _utc(value) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise DataError(f"{value!r} is not a date/time") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class Filters:
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    days: tuple[str, ...] | None = None
    symbols: tuple[str, ...] | None = None
    venues: tuple[str, ...] | None = None
    min_quantity: float | None = None
    max_quantity: float | None = None

    @classmethod
    def make(cls, *, start=None, end=None, days=None, symbols=None, venues=None, min_quantity=None,
             max_quantity=None) -> "Filters":
        def tup(x):
            if x is None:
                return None
            return (x,) if isinstance(x, str) else tuple(str(v) for v in x)
        days_t = tup(days)
        if days_t is not None:
            days_t = tuple(str(_utc(d).date()) for d in days_t)
        return cls(None if start in (None, "") else _utc(start), None if end in (None, "") else _utc(end),
                   days_t, tup(symbols), tup(venues),
                   None if min_quantity is None else float(min_quantity),
                   None if max_quantity is None else float(max_quantity))

    def to_dict(self) -> dict:
        out = {}
        if self.start is not None:
            out["start"] = self.start.isoformat()
        if self.end is not None:
            out["end"] = self.end.isoformat()
        for k in ("days", "symbols", "venues"):
            v = getattr(self, k)
            if v is not None:
                out[k] = list(v)
        for k in ("min_quantity", "max_quantity"):
            v = getattr(self, k)
            if v is not None:
                out[k] = v
        return out

    def keeps_partition(self, p: Mapping[str, Any]) -> bool:
        day = p["day"]
        if self.days is not None and day not in self.days:
            return False
        if self.start is not None and p["end_ns"] < self.start.value:
            return False
        if self.end is not None and p["start_ns"] >= self.end.value:
            return False
        if self.symbols is not None and "symbol" in p and p["symbol"] not in self.symbols:
            return False
        if self.venues is not None and "venue" in p and p["venue"] not in self.venues:
            return False
        q = (p.get("stats") or {}).get("quantity")
        if q and q["count"]:
            if self.min_quantity is not None and q["max"] < self.min_quantity:
                return False
            if self.max_quantity is not None and q["min"] > self.max_quantity:
                return False
        return True

    def bounds(self, schema: Mapping[str, str]) -> tuple:
        """(column, lower, upper, upper_inclusive) in the columns' physical units (ns for
        timestamps), for skipping row groups by their statistics."""
        out = []
        if "timestamp" in schema and (self.start is not None or self.end is not None):
            unit = _arrow_type(schema["timestamp"]).unit
            per = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[unit]
            out.append(("timestamp", None if self.start is None else -(-self.start.value // per),
                        None if self.end is None else -(-self.end.value // per), False))
        if "quantity" in schema and (self.min_quantity is not None or self.max_quantity is not None):
            out.append(("quantity", self.min_quantity, self.max_quantity, True))
        return tuple(out)

    def row_expression(self, schema: Mapping[str, str]):
        """The part of the filter the partitions cannot decide: a pyarrow expression on data
        columns (row groups whose statistics exclude it are skipped), or None."""
        expr = None

        def add(e):
            nonlocal expr
            expr = e if expr is None else expr & e
        if "timestamp" in schema:
            ts_type = _arrow_type(schema["timestamp"])
            if self.start is not None:
                add(pc.field("timestamp") >= pa.scalar(self.start.value, pa.int64()).cast(ts_type))
            if self.end is not None:
                add(pc.field("timestamp") < pa.scalar(self.end.value, pa.int64()).cast(ts_type))
        if "quantity" in schema:
            if self.min_quantity is not None:
                add(pc.field("quantity") >= self.min_quantity)
            if self.max_quantity is not None:
                add(pc.field("quantity") <= self.max_quantity)
        return expr


class DatasetView:
    """Rows of a `PartitionedDataset` that pass `filters`: partitions chosen from the manifest,
    rows filtered by pyarrow while reading."""

    def __init__(self, dataset: PartitionedDataset, filters: Filters):
        self.dataset = dataset
        self.filters = filters
        m = dataset.manifest
        self.partitions = {k: p for k, p in m["partitions"].items() if filters.keeps_partition(p)}
        self.row_filter = filters.row_expression(m["schema"])
        self.bounds = filters.bounds(m["schema"])

    # -- cheap facts (manifest only)
    @property
    def kind(self) -> str:
        return self.dataset.kind

    @property
    def source(self) -> str:
        return self.dataset.name

    @property
    def rows_upper(self) -> int:
        """Rows in the chosen partitions (exact when the filter is partition-aligned)."""
        return sum(p["rows"] for p in self.partitions.values())

    @property
    def exact_rows(self) -> bool:
        return self.row_filter is None

    @property
    def files(self) -> list[str]:
        return [f for p in self.partitions.values() for f in p["files"]]

    @property
    def bytes(self) -> int:
        return sum(p["bytes"] for p in self.partitions.values())

    def values(self, key: str) -> list[str]:
        """Distinct symbols / venues / days in the chosen partitions."""
        return sorted({p[key] for p in self.partitions.values() if key in p})

    def column_stats(self, column: str) -> dict | None:
        out: dict = {}
        for p in self.partitions.values():
            s = (p.get("stats") or {}).get(column)
            if s:
                out = _merge_stats(out, {column: s})
        return out.get(column)

    def coverage(self) -> pd.DataFrame:
        """Rows per day × symbol × venue from the manifest (no data read)."""
        recs = [{k: p.get(k) for k in ("day", "symbol", "venue")} | {"rows": p["rows"],
                "start": _iso(p["start_ns"]), "end": _iso(p["end_ns"])}
                for p in self.partitions.values()]
        return pd.DataFrame.from_records(recs)

    def summary(self) -> dict:
        """What `Dataset.summary()` says of a file, from the manifest (no rows read)."""
        m = self.dataset.manifest
        parts = self.partitions.values()
        start = min((p["start_ns"] for p in parts), default=None)
        end = max((p["end_ns"] for p in parts), default=None)
        warnings = [w for s in m["sources"] for w in s.get("warnings", [])]
        warnings += [f"{s['file']}: dropped {d['count']} rows: {d['reason']}"
                     + (f" (column '{d['column']}')" if d.get("column") else "")
                     for s in m["sources"] for d in (s.get("report") or {}).get("dropped", [])]
        if not self.exact_rows:
            warnings.append("rows are those of the partitions the filter touches; the time / size "
                            "filter inside them is applied when rows are read")
        order = [c for c in REQUIRED[self.kind] + OPTIONAL[self.kind] + DERIVED.get(self.kind, ())
                 if c in self.dataset.columns]
        order += [c for c in self.dataset.columns if c not in order]
        return {"file": self.source, "dataset": str(self.dataset.root), "kind": self.kind,
                "rows": self.rows_upper, "rows_exact": self.exact_rows, "columns": order,
                "start": _iso(start), "end": _iso(end), "symbols": self.values("symbol"),
                "venues": self.values("venue"), "days": len(self.values("day")),
                "partitions": len(self.partitions), "files": len(self.files), "bytes": self.bytes,
                "sha256": self.dataset.sha256, "filters": self.filters.to_dict(),
                "sources": [{k: s.get(k) for k in ("file", "sha256", "rows", "start", "end")}
                            for s in m["sources"]],
                "warnings": warnings}

    # -- reading
    def tasks(self, target_rows: int = DEFAULT_TASK_ROWS) -> list[ScanTask]:
        """The chosen files grouped into tasks of about `target_rows` rows, in dataset order
        (partition path, then ingest order)."""
        schema = tuple(self.dataset.manifest["schema"].items())
        out, files, parts, days, rows = [], [], [], [], 0

        def flush():
            nonlocal files, parts, days, rows
            if files:
                out.append(ScanTask(len(out), str(self.dataset.root), tuple(files), tuple(parts),
                                    schema, self.row_filter, rows, tuple(dict.fromkeys(days)),
                                    self.bounds))
            files, parts, days, rows = [], [], [], 0
        for p in self.partitions.values():
            keys = tuple((k, p[k]) for k in self.dataset.manifest["partitioning"] if k != "day" and k in p)
            n_files = max(len(p["files"]), 1)
            for rel in p["files"]:
                files.append(rel)
                parts.append(keys)
                days.append(p["day"])
                rows += p["rows"] // n_files
                if rows >= target_rows:
                    flush()
        flush()
        return out

    def batches(self, columns: Sequence[str], *, batch_rows: int = 1_000_000) -> Iterator[pa.RecordBatch]:
        for task in self.tasks():
            yield from read_task(task, columns, batch_rows=batch_rows,
                                 filesystem=self.dataset.filesystem)

    def to_table(self, columns: Sequence[str] | None = None) -> pa.Table:
        columns = list(columns or self.dataset.columns)
        batches = list(self.batches(columns))
        if not batches:
            schema = pa.schema([(c, _arrow_type(self.dataset.manifest["schema"].get(c, "string")))
                                for c in columns])
            return schema.empty_table()
        return pa.Table.from_batches(batches)

    def to_frame(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows as a canonical frame (in dataset order); only for views that fit in memory."""
        cols = list(columns) if columns else self.summary()["columns"]
        frame = self.to_table(cols).to_pandas(split_blocks=True, self_destruct=True)
        for c in ("symbol", "venue"):
            if c in frame.columns:
                frame[c] = frame[c].astype(str)
        if "timestamp" in frame.columns:
            frame["timestamp"] = frame["timestamp"].astype("datetime64[ns, UTC]")
        frame.attrs["source"] = self.source
        return frame

    def to_dataset(self, max_rows: int | None = None) -> Dataset:
        """The rows as an in-memory `Dataset` (what `load` gives for a file); refuses a view of
        more than `max_rows` rows (the partitions' count) so nobody reads 10⁸ rows by accident."""
        if max_rows is not None and self.rows_upper > max_rows:
            raise DataError(f"{self.rows_upper:,} rows is more than {max_rows:,} to read into memory; "
                            f"filter it (dates, symbols, venues) or use a command that streams",
                            file=self.source)
        frame = self.to_frame()
        report = ValidationReport(rows_read=len(frame), rows_kept=len(frame))
        for s in self.dataset.manifest["sources"]:
            for w in s.get("warnings", []):
                report.warnings.append(f"{s['file']}: {w}")
        return Dataset(self.kind, frame, self.source, self.dataset.sha256, report)


def open_dataset(path: str | os.PathLike, *, filesystem=None) -> PartitionedDataset:
    """The dataset in directory `path` (made by `ingest` or the sample generator)."""
    return PartitionedDataset(path, filesystem=filesystem)


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TB"   # pragma: no cover

