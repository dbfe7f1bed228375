"""Metrics: retrieval (this package's ``retrieval`` module) and interpretability modules.

Submodules are imported lazily on attribute access so importing
``dgml_viz.metrics`` stays light and never pulls in optional modules.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "recall_at_k": "dgml_viz.metrics.retrieval",
    "map_at_r": "dgml_viz.metrics.retrieval",
    "nmi": "dgml_viz.metrics.retrieval",
    "per_group_recall_at_1": "dgml_viz.metrics.retrieval",
    "retrieval_metrics": "dgml_viz.metrics.retrieval",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"{__name__}.{name}":
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        raise


__all__ = list(_LAZY)
