"""Gradient attributions of a group's similarity (captum).

* :class:`GroupSimilarity` — the explained scalar: cosine of group ``k`` to a reference;
* :func:`integrated_gradients` — captum ``IntegratedGradients``, all (image, group) pairs batched;
* :func:`grad_cam` — captum ``LayerGradCam`` on ``model.backbone``'s output.

All return ``[N, G, H, W]`` maps aligned with the input tensor; none imports streamlit.
"""
from __future__ import annotations

from dgml_viz.explain.gradcam import grad_cam
from dgml_viz.explain.integrated_gradients import integrated_gradients
from dgml_viz.explain.similarity import GroupSimilarity, expand_for_groups

__all__ = ["GroupSimilarity", "expand_for_groups", "integrated_gradients", "grad_cam"]
