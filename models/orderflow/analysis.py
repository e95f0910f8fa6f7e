"""Every order-flow model on every venue, and the per-venue comparison table.

`analyse(venues, ...)` runs the registry's order-flow estimators (OFI, Kyle's lambda, the
propagator, resilience) on each `VenueData` with shared settings and returns an `OrderFlowReport`:
one `VenueReport` per venue (its results, and the models that could not be fitted with why) and
`table()`, the rows of the per-venue comparison (β, R², λ, sign memory, kernel decay, half-lives)
the CLI prints, the panel shows and docs/notes/NOTES-orderflow.md quotes. Cont, Kukanov & Stoikov (2014)
report an average R² of about 0.65 for 10 s windows on US equities: `PAPER_R2_10S`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from execal.models.core.errors import CalibrationError
from execal.models.core.jsonable import clean, num
from execal.models.core.registry import get_model
from execal.models.data.bars import parse_freq
from execal.models.data.schema import DataError
from execal.models.orderflow.data import VenueData
from execal.models.orderflow.ofi import WINDOWS_S
from execal.models.orderflow.result import OrderFlowResult, window_label

PAPER_R2_10S = 0.65
MODELS = ("ofi", "kyle", "propagator", "resilience")


@dataclass(frozen=True, eq=False)
class VenueReport:
    venue: str
    symbol: str
    source: str
    results: Mapping[str, OrderFlowResult]
    errors: Mapping[str, str] = field(default_factory=dict)
    size_unit: str = "base"

    @property
    def label(self) -> str:
        return f"{self.venue} {self.symbol}"

    @property
    def converged(self) -> bool:
        return not self.errors and all(r.converged for r in self.results.values())

    def value(self, model: str, name: str, where: str = "params") -> float:
        r = self.results.get(model)
        if r is None:
            return math.nan
        return float(getattr(r, where).get(name, math.nan))

    def row(self, windows_s: Sequence[float]) -> dict:
        """One row of the comparison table (NaN where a model could not be fitted)."""
        row = {"venue": self.venue, "symbol": self.symbol, "source": self.source}
        for w in windows_s:
            lab = window_label(w)
            row[f"beta_{lab}"] = self.value("ofi", f"beta_{lab}")
            row[f"r2_{lab}"] = self.value("ofi", f"r2_{lab}", "metrics")
            row[f"beta_x_depth_{lab}"] = self.value("ofi", f"beta_x_depth_{lab}", "metrics")
            row[f"lambda_{lab}"] = self.value("kyle", f"lambda_{lab}")
            row[f"amihud_{lab}"] = self.value("kyle", f"amihud_{lab}")
        row.update(depth_exponent=self.value("ofi", "depth_exponent"),
                   gamma=self.value("propagator", "gamma"),
                   kernel_beta=self.value("propagator", "kernel_beta"),
                   kernel_g1_bps=self.value("propagator", "kernel_g1_bps"),
                   depth_half_life_s=self.value("resilience", "depth_half_life_s"),
                   spread_half_life_s=self.value("resilience", "spread_half_life_s"),
                   sweeps=self.value("resilience", "sweeps", "metrics"),
                   evaporation_episodes=self.value("resilience", "evaporation_episodes", "metrics"),
                   converged=self.converged)
        return row

    def to_dict(self, curves: bool = True) -> dict:
        return clean({"venue": self.venue, "symbol": self.symbol, "source": self.source,
                      "size_unit": self.size_unit, "converged": self.converged,
                      "results": {k: r.to_dict(curves=curves) for k, r in self.results.items()},
                      "errors": dict(self.errors)})


@dataclass(frozen=True, eq=False)
class OrderFlowReport:
    venues: tuple[VenueReport, ...]
    settings: Mapping = field(default_factory=dict)

    @property
    def windows_s(self) -> tuple[float, ...]:
        return tuple(self.settings.get("windows_s", WINDOWS_S))

    @property
    def converged(self) -> bool:
        return all(v.converged for v in self.venues)

    @property
    def warnings(self) -> tuple[str, ...]:
        out = []
        for v in self.venues:
            out += [f"{v.label}: {name}: {err}" for name, err in v.errors.items()]
            for name, r in v.results.items():
                out += [f"{v.label}: {name}: {w}" for w in r.warnings]
        return tuple(out)

    def table(self) -> list[dict]:
        return [v.row(self.windows_s) for v in self.venues]

    def to_dict(self, curves: bool = True) -> dict:
        return clean({"kind": "orderflow", "converged": self.converged, "settings": dict(self.settings),
                      "paper_r2_10s": PAPER_R2_10S, "table": self.table(),
                      "venues": [v.to_dict(curves=curves) for v in self.venues],
                      "warnings": list(self.warnings)})

    def summary(self) -> str:
        """The comparison table as text (what the CLI prints on stderr)."""
        labs = [window_label(w) for w in self.windows_s]
        head = (f"{'venue':<28}" + "".join(f"{'β ' + l:>11}{'R² ' + l:>8}" for l in labs)
                + f"{'λ ' + labs[min(1, len(labs) - 1)]:>11}{'γ':>7}{'β_G':>7}{'depth t½':>10}{'spread t½':>10}")
        lines = [head]
        mid = labs[min(1, len(labs) - 1)]
        for r in self.table():
            cells = "".join(f"{_g(r[f'beta_{l}']):>11}{_f(r[f'r2_{l}']):>8}" for l in labs)
            lines.append(f"{(r['venue'] + ' ' + r['symbol'])[:27]:<28}{cells}{_g(r[f'lambda_{mid}']):>11}"
                         f"{_f(r['gamma']):>7}{_f(r['kernel_beta']):>7}{_s(r['depth_half_life_s']):>10}"
                         f"{_s(r['spread_half_life_s']):>10}")
        lines.append(f"β in bps of mid per base unit of OFI, λ in bps per base unit of signed volume; "
                     f"Cont, Kukanov & Stoikov (2014): R² ≈ {PAPER_R2_10S} at 10 s on US equities")
        return "\n".join(lines)


def _g(v) -> str:
    return "—" if num(v) is None else f"{v:.4g}"


def _f(v) -> str:
    return "—" if num(v) is None else f"{v:.2f}"


def _s(v) -> str:
    return "—" if num(v) is None else f"{v:.3g} s"


def analyse(venues: Sequence[VenueData], *, windows_s=WINDOWS_S, levels: int = 10,
            models: Sequence[str] = MODELS, settings: Mapping[str, Mapping] | None = None) -> OrderFlowReport:
    """Fit `models` (registry names of kind "orderflow") on each venue. `settings[name]` adds
    estimator settings; windows and levels are shared. A model that cannot be fitted on a venue
    (CalibrationError) is recorded in that venue's `errors`; the others still run."""
    settings = dict(settings or {})
    shared = {"ofi": {"windows_s": tuple(windows_s), "levels": levels},
              "kyle": {"windows_s": tuple(windows_s)}, "resilience": {"levels": levels}}
    out = []
    for data in venues:
        results, errors = {}, {}
        for name in models:
            spec = get_model(name, kind="orderflow")
            est = spec.estimator(**{**shared.get(name, {}), **settings.get(name, {})})
            try:
                results[name] = est.fit(data)
            except CalibrationError as err:
                errors[name] = str(err)
        out.append(VenueReport(data.venue, data.symbol, data.source, results, errors, data.size_unit))
    return OrderFlowReport(tuple(out), {"windows_s": list(windows_s), "levels": levels,
                                        "models": list(models), **{k: dict(v) for k, v in settings.items()}})


def parse_windows(text: str) -> tuple[float, ...]:
    """"1s,10s,60s" (any pandas frequency: 500ms, 1min) -> (1.0, 10.0, 60.0) seconds; a bad
    value raises DataError naming it."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise DataError("windows: give at least one window, e.g. 1s,10s,60s")
    return tuple(sorted({parse_freq(p, "window") / 1e9 for p in parts}))
