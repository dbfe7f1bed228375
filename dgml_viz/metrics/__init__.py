"""Metrics: retrieval (this package's ``retrieval`` module) and interpretability modules.

Submodules are imported lazily on attribute access so importing
``dgml_viz.metrics`` stays light and never pulls in optional modules.
"""
from __future__ import annotations

from dgml_viz.utils.lazy import lazy_getattr

_LAZY = {
    "recall_at_k": "dgml_viz.metrics.retrieval",
    "map_at_r": "dgml_viz.metrics.retrieval",
    "nmi": "dgml_viz.metrics.retrieval",
    "per_group_recall_at_1": "dgml_viz.metrics.retrieval",
    "retrieval_metrics": "dgml_viz.metrics.retrieval",
}

__getattr__ = lazy_getattr(__name__, _LAZY, submodules=True)

__all__ = list(_LAZY)
