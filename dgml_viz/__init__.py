"""dgml_viz: interpretability and visualization for deep metric learning with attentive grouping.

The top-level names are resolved on first use (:mod:`dgml_viz.utils.lazy`): ``import dgml_viz`` (and so the
``dgml-viz`` console script's ``from dgml_viz.cli import main``) does not import torch, so the command line
can turn a Ctrl-C during the heavy imports into its one-line "interrupted" like any other.
"""
from __future__ import annotations

from dgml_viz.utils.lazy import lazy_getattr

__version__ = "0.1.0"

__all__ = ["GroupOutput", "create_model", "load_checkpoint", "save_checkpoint", "__version__"]
__getattr__ = lazy_getattr(__name__, {"GroupOutput": "dgml_viz.model", "create_model": "dgml_viz.model",
                                      "load_checkpoint": "dgml_viz.model.checkpoint",
                                      "save_checkpoint": "dgml_viz.model.checkpoint"}, submodules=True)
