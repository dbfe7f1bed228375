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
permutations/shifts. For one image, with the maps to draw (the app's Invariance page):

* :func:`permutation_probe` — one seeded permutation, the attention before/after and put back;
* :func:`translate_probe` — one ``(dx, dy)`` shift, per-group cosines and where the attention peaks moved.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgml_viz.metrics.keypoints import peak_positions

logger = logging.getLogger(__name__)

MODES = ("wrap", "pad")


def permute_positions(features: Tensor, perm: Tensor) -> Tensor:
    """Reorder the ``h*w`` positions of ``[B, C, h, w]`` by ``perm`` ``[h*w]`` (shape kept)."""
    return features.flatten(2)[..., perm].view(features.shape)


def random_permutations(num_positions: int, count: int, seed: int) -> Tensor:
    """``count`` random permutations of ``num_positions`` positions, ``[count, num_positions]`` long,
    drawn in turn from one generator seeded with ``seed`` (the first is :func:`random_permutation`)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.stack([torch.randperm(num_positions, generator=gen) for _ in range(count)])


def random_permutation(num_positions: int, seed: int) -> Tensor:
    """A seeded random permutation ``[num_positions]`` of feature positions."""
    return random_permutations(num_positions, 1, seed)[0]


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
    b, c, h, w = features.shape
    perms = random_permutations(h * w, num_permutations, seed)  # [P, hw]
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


def permutation_probe(model: nn.Module, x: Tensor, seed: int) -> dict[str, Any]:
    """Permute the feature map's positions of one image and compare the head's outputs.

    Args:
        model: grouping model (``model.features``, ``model.head``); x: ``[1, 3, S, S]``;
        seed: permutation seed (:func:`random_permutation`).

    Returns:
        ``{"max_abs_group_delta", "embedding_cosine", "attention_before" [K,h,w] | None,
        "attention_after" [K,h,w] | None (of the permuted map), "attention_unpermuted" | None
        (after, positions put back), "attention_max_abs_delta" | None, "perm" [h*w]}`` (numpy arrays).
    """
    with torch.inference_mode():
        feats = model.features(x)
        h, w = feats.shape[-2:]
        perm = random_permutation(h * w, seed).to(feats.device)
        ref = model.head(feats)
        out = model.head(permute_positions(feats, perm))
    res: dict[str, Any] = {
        "max_abs_group_delta": float((out.groups - ref.groups).abs().max()),
        "embedding_cosine": float(F.cosine_similarity(out.embedding, ref.embedding, dim=-1)[0]),
        "perm": perm.cpu().numpy(),
        "attention_before": None, "attention_after": None, "attention_unpermuted": None,
        "attention_max_abs_delta": None,
    }
    if ref.attention is not None and out.attention is not None:
        after = out.attention[0]
        unperm = permute_positions(out.attention, torch.argsort(perm))[0]
        res.update(attention_before=ref.attention[0].cpu().numpy(), attention_after=after.cpu().numpy(),
                   attention_unpermuted=unperm.cpu().numpy(),
                   attention_max_abs_delta=float((unperm - ref.attention[0]).abs().max()))
    return res


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


def shift_xy(x: Tensor, dx: int, dy: int, mode: str = "wrap") -> Tensor:
    """Translate ``[N, 3, H, W]`` by ``dx`` (right) and ``dy`` (down) pixels (see :func:`shift_images`)."""
    return shift_images(shift_images(x, int(dx), mode, "x"), int(dy), mode, "y")


def translate_probe(model: nn.Module, x: Tensor, dx: int, dy: int, mode: str = "wrap") -> dict[str, Any]:
    """Embed one image ``x`` ``[1, 3, S, S]`` and its translation by ``(dx, dy)`` (:func:`shift_xy`).

    Returns:
        ``{"shifted": [1,3,S,S] tensor, "group_cosine": [K], "embedding_cosine": float,
        "attention": [K,h,w] | None, "attention_shifted": [K,h,w] | None,
        "peaks" / "peaks_shifted": [K, 2] (x, y) input pixels of the upsampled attention peaks | None}``
        (numpy arrays but ``shifted``).
    """
    shifted = shift_xy(x, dx, dy, mode)
    with torch.inference_mode():
        out = model(torch.cat([x, shifted]))
    gcos = (out.groups[0] * out.groups[1]).sum(dim=-1)
    att = out.attention
    peaks = None if att is None else peak_positions(att.float().cpu(), tuple(x.shape[-2:])).numpy()
    return {
        "shifted": shifted,
        "group_cosine": gcos.cpu().numpy(),
        "embedding_cosine": float((out.embedding[0] * out.embedding[1]).sum()),
        "attention": None if att is None else att[0].cpu().numpy(),
        "attention_shifted": None if att is None else att[1].cpu().numpy(),
        "peaks": None if peaks is None else peaks[0],
        "peaks_shifted": None if peaks is None else peaks[1],
    }


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


__all__ = ["MODES", "permute_positions", "random_permutations", "random_permutation", "permutation_certificate",
           "permutation_probe", "shift_images", "shift_xy", "translate_probe", "translation_curve"]
