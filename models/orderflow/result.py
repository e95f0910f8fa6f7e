"""The one result type of the order-flow area (each model subclasses it for its own helpers).

A result is immutable: `params` / `std_errors` (name -> float; the units are in the names: `_bps`,
`_s`, per coin = per base unit), `report` (the one OptimizerReport: OLS is `closed_form`, a
least-squares or bootstrap step says what it did), `warnings`, and beside the contract:
`metrics` (R², counts, ... : numbers that are not estimated parameters), `curves` (named read-only
arrays the figures draw: window series, correlation functions, recovery curves) and `tables`
(lists of rows: flagged events). `to_dict()` is JSON-ready and carries the curves; `to_config()`
carries parameters, metrics and provenance only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from execal.models.core.frozen import readonly
from execal.models.core.jsonable import clean, num
from execal.models.core.report import OptimizerReport
from execal.models.core.result import ResultMixin, params_table, report_line

KIND = "orderflow"


@dataclass(frozen=True, eq=False)
class OrderFlowResult(ResultMixin):
    name: str                                   # registry name: ofi, kyle, propagator, resilience, book_cost
    label: str
    venue: str
    symbol: str
    params: Mapping[str, float]
    std_errors: Mapping[str, float]
    report: OptimizerReport
    warnings: tuple[str, ...] = ()
    metrics: Mapping[str, float] = field(default_factory=dict)
    curves: Mapping[str, np.ndarray] = field(default_factory=dict)
    tables: Mapping[str, list] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    data_info: Mapping[str, Any] = field(default_factory=dict)
    kind: str = KIND

    def __post_init__(self):
        object.__setattr__(self, "params", {k: float(v) for k, v in self.params.items()})
        object.__setattr__(self, "std_errors", {k: float(v) for k, v in self.std_errors.items()})
        object.__setattr__(self, "warnings", tuple(self.warnings))
        object.__setattr__(self, "curves", {k: readonly(np.asarray(v)) for k, v in self.curves.items()})

    def title(self) -> str:
        return f"{self.label} — {self.venue} {self.symbol}".strip(" —")

    def summary(self) -> str:
        lines = [self.title(), report_line(self.report),
                 *params_table(self.params, self.std_errors, self.conf_int())]
        if self.metrics:
            lines.append("  ".join(f"{k} {_fmt(v)}" for k, v in self.metrics.items()))
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self, curves: bool = True) -> dict:
        out = super().to_dict()
        out.update(name=self.name, kind=self.kind, venue=self.venue, symbol=self.symbol,
                   metrics={k: num(v) for k, v in self.metrics.items()},
                   settings=clean(dict(self.settings)), data=clean(dict(self.data_info)),
                   tables=clean(dict(self.tables)))
        if curves:
            out["curves"] = clean({k: v for k, v in self.curves.items()})
        return clean(out)

    def to_config(self, provenance: Mapping | None = None) -> dict:
        body = self.to_dict(curves=False)
        body.pop("tables", None)
        return clean({"schema_version": 1, **body, "data": {**dict(self.data_info), **dict(provenance or {})}})


def _fmt(v) -> str:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(v):
        return "—"
    return f"{v:.4g}"


def window_label(seconds: float) -> str:
    """1.0 -> "1s", 0.5 -> "500ms", 60 -> "60s" (the suffix of window parameters)."""
    if seconds >= 1 and float(seconds).is_integer():
        return f"{int(seconds)}s"
    if seconds < 1 and float(seconds * 1000).is_integer():
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def data_info(data) -> dict:
    """Provenance of a VenueData (or of a synthetic input without one)."""
    info = {"venue": getattr(data, "venue", ""), "symbol": getattr(data, "symbol", ""),
            "source": getattr(data, "source", ""), "size_unit": getattr(data, "size_unit", "base")}
    ev = getattr(data, "events", None)
    if ev is not None and len(ev):
        info.update(events=len(ev), start_ns=int(ev.t_ns[0]), end_ns=int(ev.t_ns[-1]))
    tr = getattr(data, "trades", None)
    if tr is not None:
        info["prints"] = len(tr)
    return info
