"""Calibration configs: export a result to JSON / YAML, import it back with validation, predict.

A config is what a quant hands to production: the model and its formula, the parameters with
standard errors and confidence intervals, the optimizer's settings and report, where the data came
from (sha256 of the input, rows, start, end, filters), the metrics, and the per-segment parameter
sets. Importing validates every key it uses (a clear error says which key and what was expected)
and reproduces the exported predictions bit for bit: floats are written with Python's repr, which
round-trips exactly through both JSON and YAML.

Layout (schema_version 1):
    {schema_version, kind: "impact", execal_version, created_at (UTC ISO),
     model: {name, label, formula, participation, params {name: value}, std_errors, conf_int
             {name: [lo, hi]}, free, fixed, bounds, bootstrap?},
     optimizer: {method, loss, f_scale, weights, weight_column, settings, report},
     data: {file, sha256, rows, rows_used, start, end, filters, dropped},
     metrics: {in_sample, out_of_sample, walk_forward, by_venue, by_symbol, by_side, by_size_bucket},
     converged, warnings (the pooled fit's, then each segment's prefixed "segment venue=...: "),
     segments: [{key {venue: ...}, params, std_errors, conf_int, rows, status, converged, message,
                 active_bounds, warnings, metrics}],
     segment_test}
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from execal.models.core import __version__
from execal.models.core.jsonable import clean as _clean
from execal.models.core.registry import MODELS, get_model
from execal.models.impact.features import Features, impact_features

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = (1,)


class ConfigError(ValueError):
    """A config file that cannot be used: names the key and what was expected."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        self.key, self.source = key, source
        parts = [f"{source}:" if source else "", f"config key '{key}':" if key else "", message]
        super().__init__(" ".join(p for p in parts if p))


# --- building --------------------------------------------------------------------------------

def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_provenance(source=None, *, filters: Mapping | None = None, frame=None) -> dict:
    """Provenance of the input: a `Dataset` (sha256 of its raw bytes, rows, start, end) or a file
    path (hashed here); `filters` records what the user selected (e.g. {"venue": ["okx"]})."""
    out: dict[str, Any] = {"file": None, "sha256": None, "rows": None, "start": None, "end": None,
                           "filters": dict(filters or {})}
    if source is not None and hasattr(source, "sha256"):
        out["file"], out["sha256"] = source.source, source.sha256
        frame = source.frame if frame is None else frame
    elif source is not None:
        out["file"], out["sha256"] = Path(source).name, file_sha256(source)
    if frame is not None:
        out["rows"] = int(len(frame))
        if "timestamp" in frame.columns and len(frame):
            out["start"], out["end"] = frame["timestamp"].min().isoformat(), frame["timestamp"].max().isoformat()
    return out


def _model_block(result, alpha: float = 0.05) -> dict:
    model = result.model
    ci = result.conf_int(alpha)
    block = {"name": model.name, "label": model.label, "formula": model.formula,
             "participation": result.participation, "status": result.status,
             "params": result.params, "std_errors": result.std_errors,
             "conf_int": {k: list(v) for k, v in ci.items()}, "alpha": alpha,
             "free": list(result.free), "fixed": list(result.fixed),
             "bounds": {k: list(v) for k, v in result.bounds.items()}}
    if result.bootstrap is not None:
        block["bootstrap"] = result.bootstrap.to_dict(alpha)
    return block


def _span(result) -> tuple[str | None, str | None]:
    if getattr(result, "span", None) is not None:      # a streamed (out-of-core) result
        return tuple(result.span)
    ts = result.features.timestamp_ns
    if ts is None or not ts.size:
        return None, None
    def iso(v):
        return _dt.datetime.fromtimestamp(int(v) / 1e9, tz=_dt.timezone.utc).isoformat()
    return iso(ts.min()), iso(ts.max())


def _rows_used(result) -> int:
    """Usable rows (train and test) of a result: from its features, or its count when streamed."""
    rows = getattr(result, "rows_used", None)
    return int(rows) if rows is not None else int(result.features.n)


def config_dict(result_or_segmented, provenance=None) -> dict:
    """The config of a `CalibrationResult` or `SegmentedResult` as a plain dict. `provenance` is a
    mapping (see `make_provenance`), or the `Dataset` / file path the result was fitted on."""
    if provenance is not None and not isinstance(provenance, Mapping):
        provenance = make_provenance(provenance)
    segmented = hasattr(result_or_segmented, "segments") and hasattr(result_or_segmented, "pooled")
    result = result_or_segmented.pooled if segmented else result_or_segmented
    start, end = _span(result)
    data = {"file": None, "sha256": None, "rows": result.validation.rows_read, "start": start,
            "end": end, "filters": {}}
    data.update({k: v for k, v in dict(provenance or {}).items() if v is not None or k not in data})
    data["rows_used"] = _rows_used(result)
    data["dropped"] = [d.to_dict() for d in result.validation.dropped]
    settings = dict(result.settings)
    config = {
        "schema_version": SCHEMA_VERSION,
        "kind": "impact",
        "execal_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": _model_block(result),
        "optimizer": {"method": result.report.method, "loss": result.report.loss,
                      "f_scale": result.report.f_scale, "weights": result.weights,
                      "weight_column": settings.get("weight_column"), "settings": settings,
                      "report": result.report.to_dict()},
        "data": data,
        "metrics": result.metrics,
        "converged": result_or_segmented.converged,
        "warnings": list(result_or_segmented.warnings),    # the pooled fit's, then every segment's
        "segments": [],
        "segment_test": None,
    }
    if segmented:
        config["segment_by"] = list(result_or_segmented.by)
        config["segments"] = [
            {"key": dict(s.key), "params": s.result.params, "std_errors": s.result.std_errors,
             "conf_int": {k: list(v) for k, v in s.result.conf_int().items()},
             "rows": _rows_used(s.result), "status": s.result.report.status,
             "converged": s.result.report.converged, "message": s.result.report.message,
             "active_bounds": list(s.result.report.active_bounds), "warnings": list(s.result.warnings),
             "metrics": {"in_sample": s.result.in_sample, "out_of_sample": s.result.out_of_sample}}
            for s in result_or_segmented.segments]
        config["segment_test"] = dict(result_or_segmented.test)
    return _clean(config)


# --- writing and reading ---------------------------------------------------------------------

def _to_text(config: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def dump_config(result_or_segmented, provenance=None, path_or_format: str | Path = "json") -> str:
    """Write the config as JSON or YAML. `provenance`: a mapping, or the `Dataset` / path the result
    was fitted on (hashed: file, sha256, rows, span). `path_or_format` is "json", "yaml" (the text
    is only returned) or a file path whose suffix (.json, .yaml, .yml) picks the format. Returns
    the text."""
    config = config_dict(result_or_segmented, provenance) if not isinstance(result_or_segmented, Mapping) \
        else _clean(result_or_segmented)
    target = str(path_or_format)
    if target.lower() in ("json", "yaml", "yml"):
        return _to_text(config, "json" if target.lower() == "json" else "yaml")
    path = Path(target)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"cannot tell the format of {path.name!r}: use a .json, .yaml or .yml file")
    text = _to_text(config, "json" if suffix == ".json" else "yaml")
    path.write_text(text, encoding="utf-8")
    return text


def _parse(text: str, source: str | None) -> Any:
    stripped = text.lstrip()
    try:
        if stripped.startswith("{"):
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        where = ""
        mark = getattr(err, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        elif isinstance(err, json.JSONDecodeError):
            where = f" at line {err.lineno}, column {err.colno}"
        raise ConfigError(f"not valid JSON or YAML{where}", source=source) from None


def load_config(path_or_text) -> dict:
    """Read and validate a config (a path, JSON/YAML text, or an already parsed dict)."""
    source = None
    if isinstance(path_or_text, Mapping):
        raw = path_or_text
    else:
        text = path_or_text
        if isinstance(path_or_text, Path) or (
                isinstance(path_or_text, str) and "\n" not in path_or_text
                and not path_or_text.lstrip().startswith("{") and len(path_or_text) < 4096
                and Path(path_or_text).suffix.lower() in (".json", ".yaml", ".yml")):
            path = Path(path_or_text)
            source = path.name
            if not path.is_file():
                raise ConfigError(f"no such config file: {path}")
            text = path.read_text(encoding="utf-8")
        raw = _parse(text, source)
    return validate_config(raw, source=source)


def _expect(cond: bool, key: str, what: str, got: Any, source) -> None:
    if not cond:
        shown = repr(got)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        raise ConfigError(f"expected {what}, got {shown}", key=key, source=source)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate_params(params, key: str, model, source) -> dict[str, float]:
    _expect(isinstance(params, Mapping), key, "a mapping of parameter name to number", params, source)
    names = model.param_names
    missing = [n for n in names if n not in params]
    unknown = [n for n in params if n not in names]
    _expect(not unknown, key, f"only the parameters of '{model.name}' ({', '.join(names)})",
            ", ".join(map(str, unknown)), source)
    _expect(not missing, key, f"a value for every parameter of '{model.name}' ({', '.join(names)})",
            "missing " + ", ".join(missing), source)
    out = {}
    for n in names:
        v = params[n]
        _expect(_is_number(v) and math.isfinite(v), f"{key}.{n}", "a finite number", v, source)
        out[n] = float(v)
    return out


def validate_config(raw: Any, *, source: str | None = None) -> dict:
    """Check every key a config's user relies on; return it (a shallow copy) when valid."""
    _expect(isinstance(raw, Mapping), "(top level)", "a mapping (a JSON object / YAML mapping)",
            type(raw).__name__, source)
    cfg = dict(raw)
    version = cfg.get("schema_version")
    _expect(isinstance(version, int) and not isinstance(version, bool), "schema_version",
            "an integer", version, source)
    _expect(version in SUPPORTED_VERSIONS, "schema_version",
            f"one of {', '.join(map(str, SUPPORTED_VERSIONS))} (this execal reads these versions)",
            version, source)
    _expect(cfg.get("kind", "impact") == "impact", "kind", "'impact'", cfg.get("kind"), source)
    model_block = cfg.get("model")
    _expect(isinstance(model_block, Mapping), "model", "a mapping with name and params", model_block, source)
    name = model_block.get("name")
    impact = {k: m for k, m in MODELS.items() if m.kind == "impact"}
    _expect(name in impact, "model.name", f"one of {', '.join(impact)}", name, source)
    model = impact[name]
    params = _validate_params(model_block.get("params"), "model.params", model, source)
    participation = model_block.get("participation", "adv")
    _expect(participation in ("adv", "horizon"), "model.participation", "'adv' or 'horizon'",
            participation, source)
    for opt_key in ("std_errors", "conf_int"):
        v = model_block.get(opt_key)
        _expect(v is None or isinstance(v, Mapping), f"model.{opt_key}", "a mapping or null", v, source)
    for n, ci in (model_block.get("conf_int") or {}).items():
        _expect(ci is None or (isinstance(ci, (list, tuple)) and len(ci) == 2
                               and all(c is None or _is_number(c) for c in ci)),
                f"model.conf_int.{n}", "[lower, upper]", ci, source)
    for section in ("optimizer", "data", "metrics"):
        v = cfg.get(section)
        _expect(v is None or isinstance(v, Mapping), section, "a mapping", v, source)
    metrics = cfg.get("metrics") or {}
    for part in ("in_sample", "out_of_sample"):
        v = metrics.get(part)
        _expect(v is None or isinstance(v, Mapping), f"metrics.{part}", "a mapping or null", v, source)
    created = cfg.get("created_at")
    if created is not None:
        try:
            _dt.datetime.fromisoformat(str(created))
        except ValueError:
            _expect(False, "created_at", "an ISO-8601 time", created, source)
    segments = cfg.get("segments") or []
    _expect(isinstance(segments, list), "segments", "a list", segments, source)
    clean_segments = []
    for i, seg in enumerate(segments):
        key = f"segments[{i}]"
        _expect(isinstance(seg, Mapping), key, "a mapping with key and params", seg, source)
        seg_key = seg.get("key")
        _expect(isinstance(seg_key, Mapping) and seg_key
                and all(k in ("venue", "symbol", "side", "regime") for k in seg_key), f"{key}.key",
                "a mapping of venue / symbol / side / regime to a value", seg_key, source)
        clean_segments.append({**seg, "key": {k: str(v) for k, v in seg_key.items()},
                               "params": _validate_params(seg.get("params"), f"{key}.params", model, source)})
    cfg["model"] = {**model_block, "params": params, "participation": participation}
    cfg["segments"] = clean_segments
    return cfg


# --- using -----------------------------------------------------------------------------------

def predict_from_config(config, fills, *, segments: bool = True) -> np.ndarray:
    """Expected cost (bps) of each row of `fills` with the config's parameters. With segments
    (and the segment columns in `fills`), a row of a fitted segment uses that segment's
    parameters and every other row the pooled ones."""
    cfg = load_config(config)
    model = get_model(cfg["model"]["name"])
    seg_list = [(seg["key"], model.theta(seg["params"])) for seg in cfg.get("segments") or []] \
        if segments else []
    return predict_segmented(model, model.theta(cfg["model"]["params"]), seg_list, fills,
                             cfg["model"]["participation"])


def predict_segmented(model, pooled_theta, segment_thetas, fills, participation: str) -> np.ndarray:
    """Pooled prediction, overwritten by each segment's own on the rows of that segment."""
    features = fills if isinstance(fills, Features) else impact_features(
        getattr(fills, "frame", fills), participation)
    model.check(features)
    predicted = model.predict(pooled_theta, features)
    if not segment_thetas:
        return predicted
    by = list(segment_thetas[0][0])
    groupings = [features.group(b) for b in by]
    if any(g is None for g in groupings):
        return predicted
    for key, theta in segment_thetas:
        rows = np.ones(features.n, dtype=bool)
        for b, (codes, labels) in zip(by, groupings):
            value = key.get(b)
            rows &= codes == (labels.index(value) if value in labels else -2)
        idx = np.flatnonzero(rows)
        if idx.size:
            predicted[idx] = model.predict(theta, features.take_rows(idx))
    return predicted


