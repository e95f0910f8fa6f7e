"""How an order-flow model appears in the registry, the CLI and the UI: metadata plus its estimator."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from execal.models.core.params import Param


@dataclass(frozen=True)
class OrderFlowModel:
    """Registry entry of one order-flow estimator (`estimator_path` = "module:Class")."""
    name: str
    label: str
    formula: str
    params: tuple[Param, ...]
    reference: str
    estimator_path: str
    options: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "orderflow"

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def estimator(self, **settings):
        module, attr = self.estimator_path.split(":")
        return getattr(importlib.import_module(module), attr)(**settings)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "label": self.label, "formula": self.formula,
                "reference": self.reference, "params": [p.to_dict() for p in self.params],
                "options": {k: (list(v) if isinstance(v, (tuple, list)) else v)
                            for k, v in self.options.items()}}
