"""One registry for adapters: a name → an unfitted scikit-learn estimator and its default search grid.

Adapters *are* scikit-learn estimators (pipelines with standardisation inside), so anything that
works with sklearn works with them; the registry only records how to build each and what to search.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from sklearn.base import BaseEstimator

Builder = Callable[[str, int], BaseEstimator]  # (task, seed) -> unfitted estimator


@dataclass(frozen=True)
class AdapterDef:
    name: str
    description: str
    build: Builder
    grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])  # candidate set_params() dicts

    def candidates(self) -> list[dict[str, Any]]:
        return self.grid or [{}]


_REGISTRY: dict[str, AdapterDef] = {}


def register_adapter(name: str, *, description: str, grid: list[dict[str, Any]] | None = None
                     ) -> Callable[[Builder], Builder]:
    def deco(build: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"adapter {name!r} is registered twice")
        _REGISTRY[name] = AdapterDef(name, description, build, list(grid or [{}]))
        return build
    return deco


def get_adapter(name: str) -> AdapterDef:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown adapter {name!r}; available: {', '.join(sorted(_REGISTRY))}") from None


def available_adapters() -> list[str]:
    return sorted(_REGISTRY)
