"""Interpretability reports: compute every metric for a model (:mod:`.analysis`), plot
(:mod:`.plots`) and write ``report.json`` + a self-contained ``report.html`` (:mod:`.writer`).

Importing this package does not import matplotlib, captum or streamlit; the
submodules import what they need.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "analyse_model": "dgml_viz.report.analysis",
    "headline": "dgml_viz.report.analysis",
    "assemble_report": "dgml_viz.report.writer",
    "write_report": "dgml_viz.report.writer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
