"""One attribution method by name: the explain method a user picks (the app's Attributions page).

Example:
    >>> from dgml_viz.model import create_model
    >>> model = create_model("small_cnn", groups=3, dim=48, width=8).eval()
    >>> x = torch.randn(1, 3, 32, 32)
    >>> ref = model(torch.randn(1, 3, 32, 32)).groups[0].detach().numpy()
    >>> attribution_map(model, x, ref, group=1, method="grad_cam").shape
    (32, 32)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from dgml_viz.explain.gradcam import grad_cam
from dgml_viz.explain.integrated_gradients import integrated_gradients

#: Names accepted by :func:`attribution_map`.
ATTRIBUTION_METHODS: tuple[str, ...] = ("integrated_gradients", "grad_cam")


def attribution_map(model: nn.Module, x: Tensor, reference_groups: np.ndarray, group: int,
                    method: str = "integrated_gradients", n_steps: int = 16) -> np.ndarray:
    """Attribution ``float32 [S, S]`` of ``cos(f_group(x), reference_groups[group])`` to the pixels of ``x``.

    Args:
        model: grouping model in eval mode; x: ``[1, 3, S, S]``.
        reference_groups: ``[K, d]`` the reference image's groups.
        group: which group's similarity to explain.
        method: ``"integrated_gradients"`` (:func:`~dgml_viz.explain.integrated_gradients`: signed,
            summed over colour, ``n_steps`` points) or ``"grad_cam"`` (:func:`~dgml_viz.explain.grad_cam`:
            on the last feature map, upsampled, non-negative).

    Raises:
        ValueError: an unknown ``method``.
    """
    ref = torch.as_tensor(reference_groups, dtype=x.dtype, device=x.device)[None]
    if method == "integrated_gradients":
        maps = integrated_gradients(model, x, groups=[group], reference=ref, n_steps=n_steps)
    elif method == "grad_cam":
        maps = grad_cam(model, x, groups=[group], reference=ref)
    else:
        raise ValueError(f"method must be one of {', '.join(ATTRIBUTION_METHODS)}, got {method!r}")
    return maps[0, 0].detach().cpu().numpy()


__all__ = ["ATTRIBUTION_METHODS", "attribution_map"]
