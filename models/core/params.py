"""Model parameters as the UI slider, the CLI help and the config file see them, and the units
every area shares (crypto trades 24/7: a year is 365 days)."""
from __future__ import annotations

from dataclasses import dataclass

BPS = 1e4
DAYS_PER_YEAR = 365.0            # crypto trades 24/7: annualise daily vol with sqrt(365)
SECONDS_PER_DAY = 86_400.0
NS_PER_S = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_S


@dataclass(frozen=True)
class Param:
    """One model parameter, as the UI slider, the CLI help and the config file see it."""
    name: str
    default: float
    lower: float
    upper: float
    unit: str
    description: str
    fixed: bool = False     # fixed at `default` unless the user frees it (the spread coefficient h)

    def to_dict(self) -> dict:
        return {"name": self.name, "default": self.default, "lower": self.lower,
                "upper": self.upper, "unit": self.unit, "description": self.description,
                "fixed_by_default": self.fixed}
