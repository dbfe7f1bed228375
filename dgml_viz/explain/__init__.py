"""Gradient attributions of a group's similarity (captum).

* :class:`GroupSimilarity` — the explained scalar: cosine of group ``k`` to a reference;
* :func:`integrated_gradients` — captum ``IntegratedGradients``, all (image, group) pairs batched;
* :func:`grad_cam` — captum ``LayerGradCam`` on ``model.backbone``'s output;
* :func:`attribution_map` — one of them by name (:data:`ATTRIBUTION_METHODS`) for one image and group
  (their agreement with the attention: :func:`dgml_viz.metrics.agreement.rank_correlation`).

The attribution functions return ``[N, G, H, W]`` maps aligned with the input tensor
(:func:`attribution_map` one ``[H, W]``); none imports streamlit.
"""
from __future__ import annotations

from dgml_viz.explain.gradcam import grad_cam
from dgml_viz.explain.integrated_gradients import integrated_gradients
from dgml_viz.explain.similarity import GroupSimilarity, expand_for_groups
from dgml_viz.explain.methods import ATTRIBUTION_METHODS, attribution_map

__all__ = ["GroupSimilarity", "expand_for_groups", "integrated_gradients", "grad_cam", "ATTRIBUTION_METHODS",
           "attribution_map"]
