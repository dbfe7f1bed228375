"""Integrated Gradients (captum) of each group's similarity to its clean embedding."""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import Tensor, nn

from dgml_viz.explain.similarity import GroupSimilarity, expand_for_groups

logger = logging.getLogger(__name__)


def integrated_gradients(model: nn.Module, images: Tensor, groups: Sequence[int] | None = None,
                         reference: Tensor | None = None, baselines: Tensor | None = None,
                         n_steps: int = 16, internal_batch_size: int | None = 256) -> Tensor:
    """Per-pixel Integrated Gradients of group similarities.

    The explained scalar for group ``k`` of image ``n`` is
    ``cos(f_k(x), reference[n, k])`` (:class:`GroupSimilarity`); with the default
    ``reference`` (the clean image's own groups) it asks "which pixels make this
    group's embedding what it is". All ``N * G`` (image, group) pairs run in one
    batch (Gauss-Legendre rule, ``n_steps`` points), chunked so that a forward pass
    holds at most ``max(internal_batch_size, n_steps)`` scaled images.

    Args:
        model: a grouping model in eval mode (``model(x).groups`` ``[M, K, d]``).
        images: ``[N, 3, H, W]`` normalised.
        groups: group indices to explain (default all K).
        reference: ``[N, K, d]``; default ``model(images).groups``.
        baselines: ``[N, 3, H, W]`` IG baselines; default zeros (the dataset mean
            colour in normalised space).
        n_steps: integration points.
        internal_batch_size: most scaled images per forward pass: pairs are explained
            ``internal_batch_size // n_steps`` at a time (None = all at once).

    Returns:
        ``[N, G, H, W]`` attributions summed over colour channels (signed:
        positive pixels raise the similarity).
    """
    from captum.attr import IntegratedGradients

    n = images.shape[0]
    if reference is None:
        with torch.no_grad():
            reference = model(images).groups
    reference = reference.detach()
    k = reference.shape[1]
    groups = list(range(k)) if groups is None else list(groups)
    x, ref, target = expand_for_groups(images, reference, groups)
    base = torch.zeros_like(x) if baselines is None else baselines.repeat_interleave(len(groups), dim=0)
    ig = IntegratedGradients(GroupSimilarity(model))
    # chunk the (image, group) pairs so one forward holds <= internal_batch_size scaled images
    per_call = max(1, internal_batch_size // n_steps) if internal_batch_size else len(x)
    attr = torch.cat([
        ig.attribute(x[s:s + per_call], baselines=base[s:s + per_call], target=target[s:s + per_call],
                     additional_forward_args=(ref[s:s + per_call],), n_steps=n_steps).detach()
        for s in range(0, len(x), per_call)
    ])
    return attr.sum(dim=1).view(n, len(groups), *images.shape[-2:])


__all__ = ["integrated_gradients"]
