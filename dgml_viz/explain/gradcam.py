"""Grad-CAM (captum ``LayerGradCam``) of each group's similarity, on the backbone's feature map.

The default layer is ``model.backbone`` — the ``[B, C, h, w]`` map the grouping
head reads (for a ViT: the final patch tokens already laid out on their grid).
A layer *inside* a token backbone (e.g. ``model.backbone.model.blocks[i]`` of a
:class:`~dgml_viz.model.timm_backbone.TimmTokenGrid`) emits ``[B, P + h*w, C]``
tokens; :func:`token_grid_layer` reshapes them to ``[B, C, h, w]`` (prefix
tokens set aside, passed through unchanged) through an identity module that
captum attributes instead, so Grad-CAM's per-channel mean over positions is
taken over the patch grid.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgml_viz.explain.similarity import GroupSimilarity, expand_for_groups

logger = logging.getLogger(__name__)


class TokenGridView(nn.Module):
    """Identity on ``[B, C, h, w]``: the module captum attributes for a token-emitting layer."""

    def forward(self, grid: Tensor) -> Tensor:
        return grid


@contextlib.contextmanager
def token_grid_layer(backbone: nn.Module, layer: nn.Module, image_hw: tuple[int, int]) -> Iterator[nn.Module]:
    """While open, ``layer``'s output passes through a :class:`TokenGridView` on its patch grid.

    ``backbone`` declares ``grid_shape``, ``tokens_to_grid`` and ``grid_to_tokens``
    (:class:`~dgml_viz.model.timm_backbone.TimmTokenGrid`). A ``[B, P + h*w, C]``
    output is split, its patches viewed as ``[B, C, h, w]``, and put back (values
    unchanged); a ``[B, C, h, w]`` output goes through the view as it is. The hook
    is removed on exit.

    Yields:
        the view module, to hand to captum as the layer.
    """
    grid = backbone.grid_shape(tuple(image_hw))
    view = TokenGridView()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor:
        if isinstance(output, Tensor) and output.ndim == 4:
            return view(output)
        if not (isinstance(output, Tensor) and output.ndim == 3):
            raise ValueError(f"layer {type(layer).__name__} emits {type(output).__name__}, not tokens [B, N, C]")
        p = backbone.num_prefix_tokens
        return backbone.grid_to_tokens(view(backbone.tokens_to_grid(output, grid)), output[:, :p])

    handle = layer.register_forward_hook(hook)
    try:
        yield view
    finally:
        handle.remove()


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
        layer: module whose output is attributed (default ``model.backbone``); a layer inside a
            token backbone (a ViT block) is attributed on its patch grid (:func:`token_grid_layer`).
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
    backbone = model.backbone
    tokens = (layer is not None and layer is not backbone and hasattr(backbone, "tokens_to_grid")
              and any(m is layer for m in backbone.modules()))
    with (token_grid_layer(backbone, layer, images.shape[-2:]) if tokens
          else contextlib.nullcontext(layer if layer is not None else backbone)) as target_layer:
        cam = LayerGradCam(GroupSimilarity(model), target_layer)
        maps = torch.cat([
            cam.attribute(x[s:s + batch_size], target=target[s:s + batch_size],
                          additional_forward_args=(ref[s:s + batch_size],), relu_attributions=True).detach()
            for s in range(0, len(x), batch_size)
        ])  # [N*G, 1, h, w]
    if upsample:
        maps = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)
    return maps.view(n, len(groups), *maps.shape[-2:])


__all__ = ["grad_cam", "token_grid_layer", "TokenGridView"]
