"""dgml_viz: interpretability and visualization for deep metric learning with attentive grouping."""
from __future__ import annotations

__version__ = "0.1.0"

from dgml_viz.model import GroupOutput, create_model  # noqa: E402
from dgml_viz.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402

__all__ = ["GroupOutput", "create_model", "load_checkpoint", "save_checkpoint", "__version__"]
