"""Grad-CAM (captum ``LayerGradCam``) of each group's similarity, on the backbone's feature map."""
from __future__ import annotations

import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgml_viz.explain.similarity import GroupSimilarity, expand_for_groups

logger = logging.getLogger(__name__)


def grad_cam(model: nn.Module, images: Tensor, groups: Sequence[int] | None = None,
             reference: Tensor | None = None, layer: nn.Module | None = None, upsample: bool = True,
             batch_size: int = 256) -> Tensor:
    """Grad-CAM maps of group similarities.

    ``ReLU(sum_c mean_p(d s / d A_c) * A_c)`` on layer ``A`` — by default
    ``model.backbone`` (the last feature map, the one the grouping head reads).

    Args:
        model: grouping model in eval mode with a ``backbone`` attribute.
        images: ``[N, 3, H, W]``.
        groups: group indices (default all K).
        reference: ``[N, K, d]`` (default: the clean groups of ``images``).
        layer: module whose output is attributed (default ``model.backbone``).
        upsample: bilinearly upsample (``align_corners=False``) to ``H x W``.
        batch_size: (image, group) pairs per captum call.

    Returns:
        ``[N, G, H, W]`` if ``upsample`` else ``[N, G, h, w]`` (non-negative).
    """
    from captum.attr import LayerGradCam

    n = images.shape[0]
    if reference is None:
        with torch.no_grad():
            reference = model(images).groups
    reference = reference.detach()
    groups = list(range(reference.shape[1])) if groups is None else list(groups)
    x, ref, target = expand_for_groups(images, reference, groups)
    cam = LayerGradCam(GroupSimilarity(model), layer if layer is not None else model.backbone)
    maps = torch.cat([
        cam.attribute(x[s:s + batch_size], target=target[s:s + batch_size],
                      additional_forward_args=(ref[s:s + batch_size],), relu_attributions=True).detach()
        for s in range(0, len(x), batch_size)
    ])  # [N*G, 1, h, w]
    if upsample:
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return maps.view(n, len(groups), *maps.shape[-2:])


__all__ = ["grad_cam"]
