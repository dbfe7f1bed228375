"""Invariance certificates: permutation of feature positions and image translation.

* :func:`permutation_certificate` — the attentive head pools over positions with
  a softmax, so permuting the ``h*w`` positions of the feature map must leave
  every group embedding unchanged (and permute the attention the same way).
  We apply random permutations to real feature maps and report the largest
  absolute change of any group embedding entry (float precision, ~1e-7, for the
  attentive head; O(1) for a head with positional dependence).
* :func:`translation_curve` — cosine between the group embeddings of an image
  and of the image shifted by ``s`` pixels, as a function of ``s``. ``mode="wrap"``
  rolls the image (``torch.roll``; no content is lost, so with a circularly
  padded backbone and shifts that are multiples of its stride the cosine is
  exactly 1); ``mode="pad"`` shifts in zeros (the normalised mean colour) and
  loses the content that leaves the frame.

Both run under ``torch.inference_mode`` and are batched over images and
permutations/shifts.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)

MODES = ("wrap", "pad")


def permute_positions(features: Tensor, perm: Tensor) -> Tensor:
    """Reorder the ``h*w`` positions of ``[B, C, h, w]`` by ``perm`` ``[h*w]`` (shape kept)."""
    return features.flatten(2)[..., perm].view(features.shape)


def permutation_certificate(head: nn.Module, features: Tensor, num_permutations: int = 8,
                            seed: int = 0) -> dict[str, Any]:
    """Largest change of group embeddings under random position permutations.

    Args:
        head: a grouping head, ``head(features)`` -> ``GroupOutput``.
        features: ``[B, C, h, w]`` feature maps (e.g. ``model.features(images)``).
        num_permutations: random permutations tried (seeded).
        seed: generator seed.

    Returns:
        ``{"max_abs_delta": float, "per_group": [K] floats, "attention_max_abs_delta":
        float | None (attention compared after applying the same permutation),
        "num_permutations", "num_images"}``.
    """
    gen = torch.Generator().manual_seed(int(seed))
    b, c, h, w = features.shape
    perms = torch.stack([torch.randperm(h * w, generator=gen) for _ in range(num_permutations)])  # [P, hw]
    with torch.inference_mode():
        ref = head(features)
        x = features.flatten(2)[:, :, perms.to(features.device)]  # [B, C, P, hw]
        x = x.permute(2, 0, 1, 3).reshape(num_permutations * b, c, h, w)
        out = head(x)
        g = out.groups.view(num_permutations, b, *out.groups.shape[1:])
        delta = (g - ref.groups[None]).abs()  # [P, B, K, d]
        att_delta = None
        if ref.attention is not None and out.attention is not None:
            a_ref = ref.attention.flatten(2)[:, :, perms.to(features.device)].permute(2, 0, 1, 3)  # [P, B, K, hw]
            a_out = out.attention.flatten(2).view(num_permutations, b, -1, h * w)
            att_delta = float((a_out - a_ref).abs().max())
    return {
        "max_abs_delta": float(delta.max()),
        "per_group": delta.amax(dim=(0, 1, 3)).tolist(),
        "attention_max_abs_delta": att_delta,
        "num_permutations": int(num_permutations),
        "num_images": int(b),
    }


def shift_images(images: Tensor, shift: int, mode: str = "wrap", axis: str = "x") -> Tensor:
    """Translate ``[N, 3, H, W]`` by ``shift`` pixels along ``axis`` (``"x"``, ``"y"`` or ``"xy"``).

    ``wrap``: ``torch.roll``; ``pad``: content moves in from zeros (what leaves the frame is lost).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    dims = {"x": (-1,), "y": (-2,), "xy": (-2, -1)}[axis]
    if mode == "wrap":
        return torch.roll(images, shifts=(shift,) * len(dims), dims=dims)
    out = images
    for d in dims:
        size = images.shape[d]
        s = max(-size, min(size, shift))
        pad = [0, 0, 0, 0]  # (left, right, top, bottom)
        off = 0 if d == -1 else 2
        pad[off + (0 if s >= 0 else 1)] = abs(s)
        out = F.pad(out, pad)
        start = 0 if s >= 0 else abs(s)
        out = out.narrow(d, start, size)
    return out


def translation_curve(model: nn.Module, images: Tensor, shifts: Sequence[int], mode: str = "wrap",
                      axis: str = "x", batch_size: int = 256) -> dict[str, Any]:
    """Cosine between clean and shifted embeddings for every shift.

    Args:
        model: grouping model in eval mode.
        images: ``[N, 3, H, W]``.
        shifts: pixel shifts (0 is the identity: cosine 1).
        mode: ``"wrap"`` or ``"pad"`` (see :func:`shift_images`).
        axis: ``"x"``, ``"y"`` or ``"xy"`` (diagonal).
        batch_size: images per forward pass.

    Returns:
        ``{"shifts": [S], "mode", "axis", "group_cosine": [S][K] (mean over images),
        "embedding_cosine": [S] (whole embedding), "num_images": N, "raw": Tensor [N, S, K]}``
        (``raw``, per-image group cosines, is the only non-JSON entry).
    """
    shifts = [int(s) for s in shifts]
    with torch.inference_mode():
        ref = torch.cat([model(images[i:i + batch_size]).groups for i in range(0, len(images), batch_size)])
        shifted = torch.cat([shift_images(images, s, mode, axis) for s in shifts])  # [S*N, ...]
        outs = [model(shifted[i:i + batch_size]) for i in range(0, len(shifted), batch_size)]
        groups = torch.cat([o.groups for o in outs]).view(len(shifts), len(images), *ref.shape[1:])
        emb = torch.cat([o.embedding for o in outs]).view(len(shifts), len(images), -1)
    cos = (groups * ref[None]).sum(dim=-1)  # [S, N, K]
    ref_emb = ref.flatten(1) / ref.flatten(1).norm(dim=-1, keepdim=True).clamp_min(1e-12)
    emb_cos = (emb * ref_emb[None]).sum(dim=-1)  # [S, N]
    return {
        "shifts": shifts,
        "mode": mode,
        "axis": axis,
        "group_cosine": cos.mean(dim=1).tolist(),
        "embedding_cosine": emb_cos.mean(dim=1).tolist(),
        "raw": cos.permute(1, 0, 2).contiguous(),
        "num_images": int(len(images)),
    }


__all__ = ["MODES", "permute_positions", "permutation_certificate", "shift_images", "translation_curve"]
