"""Interpretability reports: compute every metric for a model (:mod:`.analysis`), plot
(:mod:`.plots`) and write ``report.json`` + a self-contained ``report.html`` (:mod:`.writer`).

Importing this package does not import matplotlib, captum or streamlit; the
submodules import what they need.
"""
from __future__ import annotations

from dgml_viz.utils.lazy import lazy_getattr

_LAZY = {
    "analyse_model": "dgml_viz.report.analysis",
    "headline": "dgml_viz.report.analysis",
    "assemble_report": "dgml_viz.report.writer",
    "write_report": "dgml_viz.report.writer",
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = list(_LAZY)
