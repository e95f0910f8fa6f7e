"""Versioned configs: every recalibration is a new file, never an overwrite; switches are a log.

A directory holds `vNNNN-<hash12>.json` files (the full impact config plus a `versioning` block:
version, parent hash, reason, data window, out-of-sample comparison, created_at) and
`switches.jsonl`, one line per change of the live config (which version, when, why, by whom:
"start", "rule" or "user"). The hash is the sha256 of the config's canonical JSON (sorted keys),
checked when a version is read, so an edited file is refused. Files are created with O_EXCL
(a second writer gets the next number): two processes — the monitor and the dashboard — can share
a history.

The switch rule (`compare_out_of_sample`): the candidate (refitted on the trailing window without
its newest `holdout` fills) and the live config both predict those newest fills, which neither was
fitted on. The live model switches automatically only when the candidate's RMSE there is at least
`min_improvement` (default 5 %) lower AND a one-sided Diebold–Mariano test of the squared-error
differential (Newey–West variance, lags ⌊4·(n/100)^(2/9)⌋: consecutive fills are dependent) says the
improvement is significant at `alpha` (default 5 %). Otherwise the version is kept as a candidate
the user may switch to (`switch(..., by="user")`).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy import stats

from execal.models.core.jsonable import clean

SWITCHES = "switches.jsonl"


class HistoryError(ValueError):
    """A version that does not exist, or a file whose content no longer matches its hash."""


def canonical(config: Mapping) -> bytes:
    return json.dumps(clean(config), sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def config_hash(config: Mapping) -> str:
    return hashlib.sha256(canonical(config)).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class ConfigHistory:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    # -- writing ---------------------------------------------------------------------------------

    def add(self, config: Mapping, *, reason: str, parent: str | None = None,
            window: Mapping | None = None, comparison: Mapping | None = None) -> dict:
        """Store a new version (never overwrites); returns its index entry."""
        body = {k: v for k, v in dict(config).items() if k != "versioning"}
        while True:
            version = self._next_version()
            versioning = {"version": version, "parent": parent, "reason": reason,
                          "window": dict(window or {}), "comparison": dict(comparison or {}),
                          "created_at": _now()}
            full = clean({**body, "versioning": versioning})
            digest = config_hash(full)
            path = self.dir / f"v{version:04d}-{digest[:12]}.json"
            text = json.dumps(full, indent=2, sort_keys=True, allow_nan=False) + "\n"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue            # another writer took this number: take the next one
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            return self._entry(path, full)

    def switch(self, ref, *, reason: str, by: str = "user", t_ns: int | None = None) -> dict:
        """Make a version the live one (appends to the switch log)."""
        entry = self.entry(ref)
        line = {"time": _now(), "t_ns": t_ns, "version": entry["version"], "hash": entry["hash"],
                "reason": reason, "by": by}
        with open(self.dir / SWITCHES, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        return line

    # -- reading ---------------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("v[0-9][0-9][0-9][0-9]-*.json"))

    def _next_version(self) -> int:
        files = self._files()
        return int(files[-1].name[1:5]) + 1 if files else 1

    @staticmethod
    def _entry(path: Path, config: Mapping) -> dict:
        v = config.get("versioning", {})
        model = config.get("model", {})
        return {"version": v.get("version"), "hash": path.stem.split("-", 1)[1] if "-" in path.stem else "",
                "file": path.name, "created_at": v.get("created_at"), "parent": v.get("parent"),
                "reason": v.get("reason"), "window": v.get("window"),
                "comparison": v.get("comparison"), "model": model.get("name"),
                "params": model.get("params")}

    def load(self, ref) -> dict:
        """The config of a version: its number (3, "3", "v3"), or a hash prefix."""
        path = self._path(ref)
        config = json.loads(path.read_text(encoding="utf-8"))
        digest = config_hash(config)
        if not path.stem.endswith(digest[:12]):
            raise HistoryError(f"{path.name}: the content does not match its hash (edited?)")
        return config

    def _path(self, ref) -> Path:
        files = self._files()
        text = str(ref).strip().lower()
        if text.startswith("v") and text[1:].isdigit():
            text = text[1:]
        if text.isdigit():
            hits = [p for p in files if int(p.name[1:5]) == int(text)]
        else:
            hits = [p for p in files if p.stem.split("-", 1)[1].startswith(text[:12])] if text else []
        if len(hits) != 1:
            raise HistoryError(f"no single config version {ref!r} in {self.dir}"
                               + (f" ({len(hits)} match)" if hits else ""))
        return hits[0]

    def entry(self, ref) -> dict:
        path = self._path(ref)
        return self._entry(path, self.load(ref))

    def full_hash(self, ref) -> str:
        return config_hash(self.load(ref))

    def switches(self) -> list[dict]:
        p = self.dir / SWITCHES
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]

    def active(self) -> dict | None:
        """The live version: the last switch (None before any)."""
        sw = self.switches()
        return self.entry(sw[-1]["version"]) if sw else None

    def versions(self) -> list[dict]:
        """Every version, oldest first, with `active` marking the live one."""
        live = self.switches()
        live_v = live[-1]["version"] if live else None
        out = []
        for p in self._files():
            try:
                config = json.loads(p.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            e = self._entry(p, config)
            e["active"] = e["version"] == live_v
            out.append(e)
        return out

    def diff(self, a, b) -> list[dict]:
        """Every leaf that differs between two versions: {key (dotted), a, b}."""
        fa, fb = flatten(self.load(a)), flatten(self.load(b))
        keys = sorted(set(fa) | set(fb))
        return [{"key": k, "a": fa.get(k), "b": fb.get(k)} for k in keys if fa.get(k) != fb.get(k)]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf}; lists of numbers stay leaves, other lists are indexed."""
    out: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and not all(isinstance(x, (int, float)) or x is None for x in value):
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
    else:
        out[prefix] = value
    return out


# --- the switch rule -------------------------------------------------------------------------------

def newey_west_variance(d: np.ndarray, lags: int | None = None) -> tuple[float, int]:
    """Long-run variance of a series (Bartlett kernel) and the lags used."""
    n = d.shape[0]
    if lags is None:
        lags = int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))
    lags = max(0, min(lags, n - 1))
    x = d - d.mean()
    v = float(np.dot(x, x)) / n
    for l in range(1, lags + 1):
        v += 2.0 * (1.0 - l / (lags + 1.0)) * float(np.dot(x[l:], x[:-l])) / n
    return v, lags


def compare_out_of_sample(realised, pred_current, pred_candidate, *, min_improvement: float = 0.05,
                          alpha: float = 0.05) -> dict:
    """Both configs on the same held-out fills; `switch` says whether the rule above holds."""
    y = np.asarray(realised, dtype=np.float64)
    a = np.asarray(pred_current, dtype=np.float64)
    b = np.asarray(pred_candidate, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(a) & np.isfinite(b)
    y, a, b = y[ok], a[ok], b[ok]
    n = int(y.shape[0])
    rule = (f"switch when the candidate's out-of-sample RMSE is ≥ {min_improvement:.0%} lower and the "
            f"one-sided Diebold–Mariano test (squared errors, Newey–West) has p < {alpha:g}")
    if n < 10:
        return {"n": n, "switch": False, "rule": rule, "why": "fewer than 10 held-out fills"}
    ea, eb = a - y, b - y
    rmse_a, rmse_b = float(np.sqrt(np.mean(ea * ea))), float(np.sqrt(np.mean(eb * eb)))
    d = ea * ea - eb * eb
    var, lags = newey_west_variance(d)
    dm = float(d.mean() / math.sqrt(var / n)) if var > 0 else (math.inf if d.mean() > 0 else 0.0)
    p = float(stats.norm.sf(dm))
    improvement = 1.0 - rmse_b / rmse_a if rmse_a > 0 else 0.0
    switch = bool(improvement >= min_improvement and p < alpha)
    why = ("the candidate is better out of sample" if switch else
           "improvement below the minimum" if improvement < min_improvement else
           "improvement not significant")
    return {"n": n, "current": {"rmse_bps": rmse_a, "bias_bps": float(ea.mean()),
                                "mae_bps": float(np.abs(ea).mean())},
            "candidate": {"rmse_bps": rmse_b, "bias_bps": float(eb.mean()),
                          "mae_bps": float(np.abs(eb).mean())},
            "improvement": improvement, "dm_statistic": dm, "p_value": p, "nw_lags": lags,
            "min_improvement": min_improvement, "alpha": alpha, "switch": switch, "why": why,
            "rule": rule}
