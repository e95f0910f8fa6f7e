"""Server-side calibration results and the data filters every panel after Data applies.

Results are keyed by what produced them: (dataset key, filters, calibrator settings), so repeating a
fit is a lookup. They live in the app's private diskcache (our own objects, pickled by diskcache in
the 0700 directory; nothing here comes from an upload) plus a small per-worker memory cache.
The browser only holds keys: `ACTIVE_RESULT_ID` = {"key": result key} and `FILTERS_ID` = filters.

Hand-set parameters: the Tweak panel keeps the parameters it shows in `HAND_SET_ID` = {"key": the
result tweaked, "target": "pooled" or a segment's name, "params": {name: value}}. When they differ from
that result's fitted values, "what is on screen" is a hand-set result (`Calibrator.fix`, arch's rule: a
hand-set parameter set is just a fixed result), stored like a fit under its own key with meta origin
"hand-set" (`shown_result`): the Export panel writes that, labelled, never the fit silently.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
from collections import OrderedDict
from typing import Any, Callable, Mapping

import diskcache
import numpy as np
import pandas as pd

from execal.components.impact_figures import segment_name
from execal.models.impact.fit import Calibrator
from execal.components import store as store_mod

ACTIVE_RESULT_ID = "execal-active-result"   # dcc.Store (memory): {"key": result key} or None
FILTERS_ID = "execal-filters"               # dcc.Store (memory): filters dict, see apply_filters
HAND_SET_ID = "execal-hand-set"             # dcc.Store (memory): {"key", "target", "params"} from Tweak
POOLED = "pooled"                           # the hand-set target of an unsegmented result, or the pooled fit

# What Calibrator.fit_segments and Calibrator.bootstrap accept (tests check both lists against them):
# the vocabulary of an impact run's settings, which the Calibrate panel builds and the Export panel
# restores from an imported config.
SEGMENT_BY = ("venue", "symbol", "side")
BOOTSTRAP_BY = ("day", "order_id")

FILTER_KEYS = ("symbol", "venue", "start", "end", "size_min", "size_max")
_PREFIX = "result:"
_MEMORY_ITEMS = 8


def clean_filters(filters: dict | None) -> dict:
    """Only known keys with a value; lists sorted (so equal selections give equal keys)."""
    out = {}
    for k in FILTER_KEYS:
        v = (filters or {}).get(k)
        if v in (None, "", []):
            continue
        out[k] = sorted(map(str, v)) if isinstance(v, (list, tuple)) else v
    return out


def apply_filters(frame: pd.DataFrame, filters: dict | None) -> pd.DataFrame:
    """Rows of `frame` that pass the filters: symbol / venue lists, [start, end) UTC times,
    size_min <= quantity <= size_max. Unknown columns are ignored (a bars file has no venue)."""
    f = clean_filters(filters)
    keep = np.ones(len(frame), dtype=bool)
    for col in ("symbol", "venue"):
        if col in f and col in frame.columns:
            keep &= frame[col].astype(str).isin(f[col]).to_numpy()
    if "timestamp" in frame.columns:
        for name, op in (("start", "ge"), ("end", "lt")):
            if name in f:
                ts = pd.Timestamp(f[name])
                ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
                keep &= getattr(frame["timestamp"], op)(ts).to_numpy()
    if "quantity" in frame.columns:
        if "size_min" in f:
            keep &= (frame["quantity"] >= float(f["size_min"])).to_numpy()
        if "size_max" in f:
            keep &= (frame["quantity"] <= float(f["size_max"])).to_numpy()
    return frame if keep.all() else frame.loc[keep].reset_index(drop=True)


# the server secret result keys are made with (set by this process's ResultStore, see result_key)
_key_secret: list[bytes] = []


def result_key(dataset_key: str, filters: dict | None, settings: dict[str, Any], *,
               secret: bytes | None = None) -> str:
    """Key of a calibration, derived on the server: same data, filters and settings -> same key on this
    server, a different key on another (keyed with the server secret: `secret`, else that of the process's
    ResultStore). Nothing a client sends is used as a key."""
    secret = secret if secret is not None else (_key_secret[-1] if _key_secret else b"")
    blob = json.dumps({"data": dataset_key, "filters": clean_filters(filters), "settings": settings},
                      sort_keys=True, default=str)
    return _PREFIX + hmac.new(secret, blob.encode(), hashlib.sha256).hexdigest()[:32]


def is_result_key(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(_PREFIX) and len(value) == len(_PREFIX) + 32


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):       # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


class ResultStore:
    """Results by key (diskcache, shared by workers) and each session's active result."""

    def __init__(self, cache: diskcache.Cache, *, secret: bytes | None = None):
        self.cache = cache
        self.secret = secret if secret is not None else store_mod.server_secret(cache.directory)
        if self.secret not in _key_secret:
            _key_secret.append(self.secret)
        else:                            # the latest store's secret is the default
            _key_secret.remove(self.secret)
            _key_secret.append(self.secret)
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, result: Any, *, meta: dict | None = None) -> str:
        self.cache.set(key, result)
        self.cache.set(key + ":meta", json.dumps(meta or {}, default=str))
        self.cache.delete(key + ":views")    # views of what was stored under this key before
        self._remember(key, result)
        return key

    def view(self, key: str | None, name: str, build: Callable[[Any, dict], Any]) -> Any | None:
        """A small JSON view `build(result, meta)` of result `key`, kept in the cache beside it: a new
        worker shows a panel's tables without unpickling a 1M-row result (~1 s). Callers always get the
        JSON round trip, so a fresh view and a cached one are the same. None when the result is gone."""
        if not is_result_key(key):
            return None
        views = self.cache.get(key + ":views")
        views = json.loads(views) if isinstance(views, str) else {}
        if name in views and key in self.cache:
            return views[name]
        result = self.get(key)
        if result is None:
            return None
        views[name] = json.loads(json.dumps(build(result, self.meta(key)), default=_jsonable))
        self.cache.set(key + ":views", json.dumps(views))
        return views[name]

    def get(self, key: str | None) -> Any | None:
        if not is_result_key(key):
            return None
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        result = self.cache.get(key)
        if result is not None:
            self._remember(key, result)
        return result

    def meta(self, key: str | None) -> dict:
        raw = self.cache.get(key + ":meta") if is_result_key(key) else None
        return json.loads(raw) if raw else {}

    def _remember(self, key: str, result: Any) -> None:
        with self._lock:
            self._memory[key] = result
            self._memory.move_to_end(key)
            while len(self._memory) > _MEMORY_ITEMS:
                self._memory.popitem(last=False)

    def set_active(self, session_id: str, key: str) -> None:
        self.cache.set(f"session:{session_id}:result", key)

    def active(self, session_id: str | None) -> str | None:
        return self.cache.get(f"session:{session_id}:result") if session_id else None


def attach(app, results: ResultStore) -> None:
    app.server.config["EXECAL_RESULTS"] = results


def get_results(app) -> ResultStore:
    return app.server.config["EXECAL_RESULTS"]


# --- hand-set parameters: what the Tweak panel shows, what the Export panel writes -----------------

FITTED, HAND_SET = "fitted", "hand-set"


def target_result(result, target: str | None):
    """The CalibrationResult behind a hand-set target of `result`: the result itself, or for a segmented
    result the segment named `target` (the pooled fit when unknown)."""
    if not hasattr(result, "segments"):
        return result
    for s in result.segments:
        if segment_name(s.key) == target:
            return s.result
    return result.pooled


def hand_set_params(result, record: Any, key: str | None) -> dict | None:
    """The hand-set parameters of `record` (the HAND_SET_ID store) when they are of result `key` and
    differ from its fitted values; None when what is on screen is the fit."""
    if not isinstance(record, Mapping) or key is None or record.get("key") != key:
        return None
    params = record.get("params")
    if not isinstance(params, Mapping) or not params:
        return None
    fitted = dict(target_result(result, record.get("target")).params)
    try:
        hand = {name: float(params[name]) for name in fitted}
    except (KeyError, TypeError, ValueError):
        return None
    return None if all(hand[n] == float(fitted[n]) for n in fitted) else hand


def hand_set_result(result, target: str | None, params: Mapping[str, float]):
    """`result` with the target's parameters set by hand (`Calibrator.fix` on the same prepared rows):
    the same type as `result`; a segmented result keeps its other segments and test."""
    part = target_result(result, target)
    fixed = Calibrator(**dict(part.settings)).fix(dict(params), part.features)
    if not hasattr(result, "segments"):
        return fixed
    if part is result.pooled:
        return dataclasses.replace(result, pooled=fixed)
    segments = tuple(dataclasses.replace(s, result=fixed) if s.result is part else s for s in result.segments)
    return dataclasses.replace(result, segments=segments)


def parameters_label(meta: Mapping) -> dict:
    """{"source": "fitted" | "hand-set", "note"}: what a stored result's parameters are, from its meta."""
    if meta.get("origin") == "hand-set":
        target = meta.get("target")
        where = "" if target in (None, POOLED) else f" (segment {target})"
        fitted = ", ".join(f"{k} = {float(v):.6g}" for k, v in dict(meta.get("fitted") or {}).items())
        return {"source": HAND_SET, "note": f"set by hand in the Tweak panel{where}, starting from the fitted "
                                            f"values ({fitted}): not an optimum"}
    if meta.get("origin") == "import":
        return {"source": FITTED, "note": f"imported from {meta.get('config_file', 'a config')}: the "
                                          "parameters of that config's fit"}
    return {"source": FITTED, "note": "as the optimizer left them"}


def shown_result(results: ResultStore, key: str | None, record: Any) -> tuple[str | None, Any]:
    """(key, result) of what is on screen for the active result `key`: the result itself, or, when the
    Tweak panel holds other parameters for it, the hand-set result (made once and stored under its own
    key with meta origin "hand-set", so a download link can name it). (None, None) when `key` is gone."""
    result = results.get(key) if key else None
    if result is None:
        return None, None
    params = hand_set_params(result, record, key)
    if params is None:
        return key, result
    target = record.get("target") or POOLED
    meta = results.meta(key)
    hkey = result_key(str(meta.get("dataset") or key), meta.get("filters"),
                      {"hand_set_of": key, "target": target, "params": params})
    stored = results.get(hkey)
    if stored is not None:
        return hkey, stored
    hand = hand_set_result(result, target, params)
    fitted = dict(target_result(result, target).params)
    results.put(hkey, hand, meta={**meta, "origin": "hand-set", "hand_set_of": key, "target": target,
                                  "params": params, "fitted": fitted})
    return hkey, hand
