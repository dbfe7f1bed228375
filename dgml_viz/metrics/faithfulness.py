"""Faithfulness: does removing what a saliency map ranks first hurt the group's similarity most?

Deletion / insertion curves (Petsiuk et al., RISE) of one scalar per group:
``s_k(x') = cos(f_k(x'), f_k(x))`` — the similarity of group ``k`` of a perturbed
image ``x'`` to the same group of the clean image. Pixels are ordered by a
saliency map (most salient first); at fraction ``t`` of the pixels:

* deletion: the first ``round(t * H * W)`` pixels are replaced by the baseline;
  a faithful map makes the curve fall fast (low AUC is good);
* insertion: only those pixels come from the image, the rest is baseline;
  a faithful map makes the curve rise fast (high AUC is good).

Baselines (:func:`make_baseline`): ``"blur"`` (default) — a Gaussian blur of the
image (sigma = ``size / 16``, :func:`gaussian_blur`), which removes the
detail without adding out-of-distribution edges or colours; ``"mean"`` — every
pixel set to the image's per-channel mean. The endpoints are shared by all
orderings: deletion starts at the clean image (``s = 1``) and ends at the
baseline, insertion the reverse. AUC is the trapezoid rule over ``t`` in [0, 1].

Orderings compared in the report: the group's attention (bilinearly upsampled,
:func:`attention_saliency`), captum Integrated Gradients and Grad-CAM
(:mod:`dgml_viz.explain`) and a random order (:func:`random_saliency`).

Everything is batched: the (image, ordering, step) combinations are built as one
vectorised mask tensor (``rank < k_t``) and pushed through the model in chunks
of ``batch_size`` under ``torch.inference_mode``; every forward scores all K groups.
Perturbed batches are laid out ``channels_last`` (CPU convolutions run markedly
faster that way; values are the same up to float re-association).
"""
from __future__ import annotations

import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgml_viz.metrics.localisation import upsample_attention

logger = logging.getLogger(__name__)

BASELINES = ("blur", "mean")


def gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur of ``[N, C, H, W]`` (kernel ``2*ceil(3 sigma)+1``, reflect padding)."""
    radius = max(1, min(int(math.ceil(3 * sigma)), min(images.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def make_baseline(images: Tensor, kind: str = "blur", sigma: float | None = None) -> Tensor:
    """The "removed" version of each image: ``[N, 3, H, W] -> [N, 3, H, W]`` (see module docstring)."""
    if kind == "mean":
        return images.mean(dim=(-2, -1), keepdim=True).expand_as(images).clone()
    if kind == "blur":
        return gaussian_blur(images, float(sigma) if sigma is not None else max(images.shape[-2:]) / 16.0)
    raise ValueError(f"unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}")


#: The attention ordering: bilinearly upsampled attention (``align_corners=False``),
#: ``[N, K, h, w] -> [N, K, H, W]`` (:func:`dgml_viz.metrics.localisation.upsample_attention`).
attention_saliency = upsample_attention


def random_saliency(n: int, size: tuple[int, int], seed: int = 0) -> Tensor:
    """``[N, 1, H, W]`` i.i.d. uniform scores: a random pixel order per image (seeded)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.rand((n, 1, *size), generator=gen)


def pixel_ranks(saliency: Tensor) -> Tensor:
    """Rank of every pixel, 0 = most salient: ``[..., H, W] -> [..., H*W]`` long (stable for ties)."""
    flat = saliency.flatten(-2).float()
    order = flat.argsort(dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(flat.shape[-1], device=flat.device).expand_as(order).contiguous())
    return ranks


def step_fractions(steps: int) -> Tensor:
    """``steps + 1`` fractions ``0, 1/steps, ..., 1``."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(0.0, 1.0, steps + 1)


def _group_scores(model: nn.Module, x: Tensor, reference: Tensor) -> Tensor:
    """``[M, K]`` cosine of each group of ``x`` to ``reference [M, K, d]``."""
    g = model(x).groups
    ref = reference / reference.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return (g.float() * ref.float()).sum(dim=-1)


def perturbation_scores(model: nn.Module | Callable[[Tensor], object], images: Tensor, saliency: Tensor,
                        steps: int = 8, baseline: str | Tensor = "blur", reference: Tensor | None = None,
                        batch_size: int = 256) -> dict[str, Tensor]:
    """Deletion and insertion scores of all K groups for each ordering.

    Args:
        model: grouping model in eval mode (``model(x).groups`` ``[M, K, d]``).
        images: ``[N, 3, H, W]``.
        saliency: ``[N, S, H, W]`` — S orderings per image (e.g. one per group, or 1 random).
        steps: the curve has ``steps + 1`` points at :func:`step_fractions`.
        baseline: ``"blur"``, ``"mean"`` or a ``[N, 3, H, W]`` tensor.
        reference: ``[N, K, d]`` clean groups (default: computed here).
        batch_size: perturbed images per forward pass.

    Returns:
        ``{"fractions": [T+1], "deletion": [N, S, T+1, K], "insertion": [N, S, T+1, K]}``:
        the similarity of every group ``K`` under every ordering ``S`` at every step.
    """
    n, _, hgt, wid = images.shape
    if saliency.shape[0] != n or saliency.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"saliency {tuple(saliency.shape)} does not match images {tuple(images.shape)}")
    s = saliency.shape[1]
    fractions = step_fractions(steps)
    base = make_baseline(images, baseline) if isinstance(baseline, str) else baseline
    ranks = pixel_ranks(saliency.to(images.device))  # [N, S, HW]
    counts = (fractions * hgt * wid).round().long().to(images.device)  # pixels touched per step
    with torch.inference_mode():
        if reference is None:
            reference = model(images).groups
        k = reference.shape[1]
        clean = _group_scores(model, images, reference)  # [N, K] (~1)
        empty = _group_scores(model, base, reference)  # [N, K]
        inner = torch.arange(1, steps, device=images.device)
        # every (mode, image, ordering, inner step) combination, image-major
        mode_i, n_i, s_i, t_i = (t.reshape(-1) for t in torch.meshgrid(
            torch.arange(2, device=images.device), torch.arange(n, device=images.device),
            torch.arange(s, device=images.device), inner, indexing="ij"))
        scores = torch.empty(len(n_i), k, device=images.device)
        for c in range(0, len(n_i), batch_size):
            sl = slice(c, c + batch_size)
            first = ranks[n_i[sl], s_i[sl]] < counts[t_i[sl]][:, None]  # [M, HW] True = top-t pixels
            from_base = torch.where(mode_i[sl, None] == 0, first, ~first).view(-1, 1, hgt, wid)
            x = torch.where(from_base, base[n_i[sl]], images[n_i[sl]]).contiguous(memory_format=torch.channels_last)
            scores[sl] = _group_scores(model, x, reference[n_i[sl]])
        scores = scores.view(2, n, s, steps - 1, k)
    clean_s = clean[:, None, None, :].expand(n, s, 1, k)
    empty_s = empty[:, None, None, :].expand(n, s, 1, k)
    deletion = torch.cat([clean_s, scores[0], empty_s], dim=2)
    insertion = torch.cat([empty_s, scores[1], clean_s], dim=2)
    return {"fractions": fractions, "deletion": deletion.cpu(), "insertion": insertion.cpu()}


def own_group_curves(scores: Tensor) -> Tensor:
    """Pick each ordering's own group: ``[N, S, T+1, K] -> [N, K, T+1]``.

    With ``S == K`` (one ordering per group) ordering ``k`` is scored on group ``k``;
    with ``S == 1`` (a group-independent ordering, e.g. random) every group is
    scored under the same ordering.
    """
    n, s, t, k = scores.shape
    if s == 1:
        return scores[:, 0].transpose(1, 2)
    if s != k:
        raise ValueError(f"need one ordering per group (S == K) or a shared one (S == 1), got S={s}, K={k}")
    idx = torch.arange(k)
    return scores[:, idx, :, idx].permute(1, 0, 2)


def curve_auc(curves: Tensor, fractions: Tensor) -> Tensor:
    """Trapezoid area under ``[..., T+1]`` curves over ``fractions`` ``[T+1]`` -> ``[...]``."""
    return torch.trapezoid(curves, fractions.to(curves.dtype), dim=-1)


def faithfulness_curves(model: nn.Module, images: Tensor, saliency: Tensor, steps: int = 8,
                        baseline: str | Tensor = "blur", reference: Tensor | None = None,
                        batch_size: int = 256) -> dict[str, Tensor]:
    """Own-group deletion/insertion curves and AUCs of one ordering method.

    Args: as :func:`perturbation_scores` (``saliency`` ``[N, K, H, W]`` or ``[N, 1, H, W]``).

    Returns:
        ``{"fractions": [T+1], "deletion": [N, K, T+1], "insertion": [N, K, T+1],
        "deletion_auc": [N, K], "insertion_auc": [N, K]}``.
    """
    raw = perturbation_scores(model, images, saliency, steps, baseline, reference, batch_size)
    fr = raw["fractions"]
    dele, ins = own_group_curves(raw["deletion"]), own_group_curves(raw["insertion"])
    return {"fractions": fr, "deletion": dele, "insertion": ins,
            "deletion_auc": curve_auc(dele, fr), "insertion_auc": curve_auc(ins, fr)}


__all__ = ["BASELINES", "make_baseline", "attention_saliency", "random_saliency", "pixel_ranks",
           "step_fractions", "gaussian_blur", "perturbation_scores", "own_group_curves", "curve_auc", "faithfulness_curves"]
