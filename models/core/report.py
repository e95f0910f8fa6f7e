"""The one optimizer report: what the optimizer said, in its own words, for every area's fits."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from execal.models.core.jsonable import num as _num


@dataclass(frozen=True)
class OptimizerReport:
    """What the optimizer said, verbatim where it speaks (scipy's status codes and messages).

    The one report type of every area: impact least squares, likelihood fits (GARCH, Markov,
    Merton, HAR), surface fits, closed forms (`method="closed_form"`) and hand-set parameters
    (`method="fixed"`). Build it with keywords."""
    method: str
    loss: str = "mle"            # impact: the robust loss; likelihood fits: "mle"; closed forms: "none"
    f_scale: float = 1.0
    weights: str = "none"
    status: int | str | None = None   # the optimizer's own code (scipy: 0 max_nfev, 1 gtol, 2 ftol, 3 xtol,
                                      # 4 ftol+xtol); None: fixed or closed form
    message: str = ""
    success: bool = True
    converged: bool = True
    nfev: int = 0
    njev: int | None = None
    iterations: int | None = None
    cost: float | None = None    # ½·Σ f_scale²·rho(z) at the solution, on the training rows
    active_bounds: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    starts: tuple[Mapping, ...] = ()   # multistart / global-search stages
    settings: Mapping = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "loss": self.loss, "f_scale": self.f_scale,
                "weights": self.weights, "status": self.status, "message": self.message,
                "success": self.success, "converged": self.converged, "nfev": self.nfev,
                "njev": self.njev, "iterations": self.iterations, "cost": _num(self.cost),
                "active_bounds": list(self.active_bounds), "warnings": list(self.warnings),
                "starts": [dict(s) for s in self.starts], "settings": dict(self.settings)}

    @classmethod
    def fixed(cls, **settings) -> "OptimizerReport":
        """The report of parameters set by hand (nothing was optimised)."""
        return cls(method="fixed", status=None, message="parameters set by hand", settings=settings)

    @classmethod
    def closed_form(cls, message: str = "closed-form estimate", **settings) -> "OptimizerReport":
        return cls(method="closed_form", loss="none", status=None, message=message, settings=settings)
