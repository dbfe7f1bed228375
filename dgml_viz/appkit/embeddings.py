"""What the app computes, as plain functions over a model and tensors (no UI).

* :func:`encode` — one forward pass, outputs as numpy;
* :func:`group_stats` — per-group attention entropy, peak share and share inside ground-truth parts;
* :class:`GalleryIndex` / :func:`build_gallery_index` — a gallery embedded once;
* :func:`group_similarities` / :func:`neighbours` — retrieval on a chosen subset of groups with the
  per-group contribution to each similarity;
* :func:`gallery_health` — dead / duplicated groups of a model over a gallery (no part masks);
* :func:`permutation_probe`, :func:`translate_probe`, :func:`translation_curve` — invariance checks;
* :func:`attribution_maps` — captum attributions of a group's similarity to a reference, and their
  rank correlation with the group's attention.

Similarity convention: with K L2-normalised groups concatenated, the embedding
cosine is ``sim = sum_g <f_g(q), f_g(n)> / K``; restricted to a subset ``S`` of
groups it is ``sum_{g in S} <f_g(q), f_g(n)> / |S|`` and the contribution of
group ``g`` is its term of that sum. Distance is the Euclidean distance of the
normalised embeddings, ``sqrt(2 - 2 sim)``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgml_viz.inference import batched, infer
from dgml_viz.metrics.diversity import attention_entropy
from dgml_viz.metrics.invariance import permute_positions, shift_images
from dgml_viz.metrics.localisation import part_attention_mass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """Model outputs for a batch, as numpy.

    Attributes:
        embedding: ``[B, K*d]``; groups: ``[B, K, d]``; attention: ``[B, K, h, w]`` or None.
    """

    embedding: np.ndarray
    groups: np.ndarray
    attention: np.ndarray | None


def embed_tensors(model: nn.Module, x: Tensor, batch_size: int = 128) -> Encoded:
    """Run ``model`` on ``[B, 3, S, S]`` in chunks (the one inference loop) -> :class:`Encoded` (numpy)."""
    out = infer(model, batched(x, batch_size))
    return Encoded(out.embedding.numpy(), out.groups.numpy(), None if out.attention is None else out.attention.numpy())


def group_stats(attention: np.ndarray, part_masks: np.ndarray | None = None,
                part_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per-group numbers for one image.

    Args:
        attention: ``[K, h, w]`` (each map sums to 1).
        part_masks: ``[P, S, S]`` bool masks aligned with the model input, or None.
        part_names: names of the P parts.

    Returns:
        K dicts: ``group``, ``entropy`` (normalised to [0, 1]), ``peak_share`` (mass of the
        strongest cell); with masks also ``best_part``, ``best_part_share`` (mass inside the
        part holding most of it) and ``inside_parts`` (mass inside the union of all parts).
    """
    att = torch.as_tensor(np.asarray(attention, dtype=np.float32))[None]  # [1, K, h, w]
    ent = attention_entropy(att)[0].tolist()
    peak = att.flatten(2).amax(dim=-1)[0].tolist()
    rows = [{"group": k, "entropy": float(e), "peak_share": float(p)} for k, (e, p) in enumerate(zip(ent, peak))]
    if part_masks is not None and len(part_masks):
        masks = torch.as_tensor(np.asarray(part_masks, dtype=bool))
        union = masks.any(dim=0, keepdim=True)
        mass = part_attention_mass(att, torch.cat([masks, union])[None])[0]  # [K, P+1]
        names = list(part_names) or [f"part {i}" for i in range(masks.shape[0])]
        per_part, inside = mass[:, :-1], mass[:, -1]
        best = per_part.argmax(dim=1)
        for row, b, share, ins in zip(rows, best.tolist(), per_part.max(dim=1).values.tolist(), inside.tolist()):
            row.update(best_part=names[b], best_part_share=float(share), inside_parts=float(ins))
    return rows


# ----------------------------------------------------------------------------- gallery
@dataclass(frozen=True)
class GalleryIndex:
    """A gallery embedded once.

    Attributes:
        groups: ``[N, K, d]`` normalised group embeddings.
        attention: ``[N, K, h, w]`` or None.
        views: ``[N, S, S, 3]`` uint8 model-input views (for thumbnails and overlays).
        labels: ``[N]`` int (``-1`` when unknown).
        names: N captions.
    """

    groups: np.ndarray
    attention: np.ndarray | None
    views: np.ndarray
    labels: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return int(self.groups.shape[0])


def build_gallery_index(model: nn.Module, tensors: Tensor, views: np.ndarray, labels: Sequence[int],
                        names: Sequence[str], batch_size: int = 128) -> GalleryIndex:
    """Embed ``tensors`` ``[N, 3, S, S]`` once; keep their views ``[N, S, S, 3]``, labels and names."""
    enc = embed_tensors(model, tensors, batch_size)
    return GalleryIndex(groups=enc.groups, attention=enc.attention, views=np.asarray(views),
                        labels=np.asarray(labels, dtype=np.int64), names=list(names))


def group_similarities(query_groups: np.ndarray, gallery_groups: np.ndarray) -> np.ndarray:
    """``<f_g(q), f_g(n)>`` for every gallery item and group: ``[K, d], [N, K, d] -> [N, K]``."""
    q = torch.as_tensor(query_groups, dtype=torch.float32)
    g = torch.as_tensor(gallery_groups, dtype=torch.float32)
    return torch.einsum("kd,nkd->nk", q, g).numpy()


@dataclass(frozen=True)
class Neighbour:
    """One retrieved item: gallery ``index``, ``similarity`` over the chosen groups, Euclidean
    ``distance`` of the (subset) normalised embeddings, and ``contributions`` ``[K]`` (0 for groups
    outside the subset; they sum to ``similarity``)."""

    index: int
    similarity: float
    distance: float
    contributions: np.ndarray


def neighbours(query_groups: np.ndarray, index: GalleryIndex, k: int = 5,
               groups: Sequence[int] | None = None, exclude: int | None = None) -> list[Neighbour]:
    """Top-``k`` gallery items for a query, using only ``groups`` (default all).

    Ranking uses :func:`dgml_viz.metrics.retrieval.knn` on the concatenation of the chosen
    groups (equal to the mean of their cosines); ``exclude`` drops one gallery index (the
    query itself when it comes from the gallery).
    """
    from dgml_viz.metrics.retrieval import knn

    kk = query_groups.shape[0]
    sel = list(range(kk)) if groups is None else sorted({int(g) for g in groups})
    if not sel:
        raise ValueError("choose at least one group")
    if any(g < 0 or g >= kk for g in sel):
        raise ValueError(f"group indices must be in 0..{kk - 1}, got {sel}")
    q = torch.as_tensor(query_groups[sel], dtype=torch.float32).reshape(1, -1)
    gal = torch.as_tensor(index.groups[:, sel], dtype=torch.float32).reshape(len(index), -1)
    want = min(len(index), k + (1 if exclude is not None else 0))
    sims, idx = knn(q, gal, want)
    per_group = group_similarities(query_groups, index.groups)  # [N, K]
    mask = np.zeros(kk, dtype=np.float32)
    mask[sel] = 1.0 / len(sel)
    out = []
    for s, i in zip(sims[0].tolist(), idx[0].tolist()):
        if exclude is not None and i == exclude:
            continue
        out.append(Neighbour(index=int(i), similarity=float(s), distance=float(np.sqrt(max(0.0, 2 - 2 * s))),
                             contributions=per_group[i] * mask))
    return out[:k]


def index_neighbours(searcher: Any, query_groups: np.ndarray, k: int = 5, groups: Sequence[int] | None = None,
                     exclude: int | None = None) -> list[Neighbour]:
    """:func:`neighbours` on an on-disk index: ``searcher`` is a :class:`dgml_viz.index.search.Searcher`
    (FAISS on the stored group embeddings; same similarity, distance and contributions convention)."""
    res = searcher.search(np.asarray(query_groups, dtype=np.float32)[None], k=k, groups=groups,
                          exclude=[[exclude]] if exclude is not None else None)
    mask = np.zeros(res.group_similarity.shape[-1], dtype=np.float32)
    mask[res.groups] = 1.0 / len(res.groups)
    return [Neighbour(index=int(i), similarity=float(s), distance=float(np.sqrt(max(0.0, 2 - 2 * s))),
                      contributions=gs * mask)
            for i, s, gs in zip(res.index[0], res.similarity[0], res.group_similarity[0]) if i >= 0]


def gallery_health(index: GalleryIndex, use_labels: bool = True, seed: int = 0) -> Any:
    """Mask-free group health (:func:`dgml_viz.metrics.group_health.group_health`) of a gallery's
    stored outputs; its labels are used only when ``use_labels`` (and known, i.e. ``>= 0``)."""
    from dgml_viz.metrics.group_health import group_health

    att = None if index.attention is None else torch.as_tensor(index.attention)
    labels = torch.as_tensor(index.labels) if use_labels else None
    return group_health(torch.as_tensor(index.groups), att, labels, seed=seed)


# ----------------------------------------------------------------------------- invariance
def random_permutation(num_positions: int, seed: int) -> Tensor:
    """A seeded random permutation of ``num_positions`` feature positions."""
    return torch.randperm(num_positions, generator=torch.Generator().manual_seed(int(seed)))


def permutation_probe(model: nn.Module, x: Tensor, seed: int) -> dict[str, Any]:
    """Permute the feature map's positions and compare the head's outputs.

    Args:
        model: grouping model; x: ``[1, 3, S, S]``; seed: permutation seed.

    Returns:
        ``{"max_abs_group_delta", "embedding_cosine", "attention_before" [K,h,w] | None,
        "attention_after" [K,h,w] | None (of the permuted map), "attention_unpermuted" | None
        (after, positions put back), "attention_max_abs_delta" | None, "perm" [h*w]}``.
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
        inv = torch.argsort(perm)
        after = out.attention[0]
        unperm = after.flatten(1)[:, inv].view(after.shape)
        res.update(attention_before=ref.attention[0].cpu().numpy(), attention_after=after.cpu().numpy(),
                   attention_unpermuted=unperm.cpu().numpy(),
                   attention_max_abs_delta=float((unperm - ref.attention[0]).abs().max()))
    return res


def shift_xy(x: Tensor, dx: int, dy: int, mode: str = "wrap") -> Tensor:
    """Translate ``[N, 3, H, W]`` by ``dx`` (right) and ``dy`` (down) pixels (see :func:`shift_images`)."""
    return shift_images(shift_images(x, int(dx), mode, "x"), int(dy), mode, "y")


def translate_probe(model: nn.Module, x: Tensor, dx: int, dy: int, mode: str = "wrap") -> dict[str, Any]:
    """Embed ``x`` and its translation; cosine per group and of the whole embedding.

    Returns:
        ``{"shifted": [1,3,S,S] tensor, "group_cosine": [K], "embedding_cosine": float,
        "attention": [K,h,w] | None, "attention_shifted": [K,h,w] | None,
        "peaks" / "peaks_shifted": [K, 2] (x, y) input pixels of the upsampled attention peaks | None}``.
    """
    from dgml_viz.metrics.keypoints import peak_positions

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


def translation_curve(model: nn.Module, x: Tensor, shifts: Sequence[int], mode: str = "wrap",
                      axis: str = "x") -> dict[str, Any]:
    """Embedding and per-group cosine to the original vs shift (wraps
    :func:`dgml_viz.metrics.invariance.translation_curve`)."""
    from dgml_viz.metrics.invariance import translation_curve as curve

    res = curve(model, x, list(shifts), mode=mode, axis=axis)
    return {"shifts": list(res["shifts"]), "embedding_cosine": list(res["embedding_cosine"]),
            "group_cosine": [list(r) for r in res["group_cosine"]]}


# ----------------------------------------------------------------------------- attributions
ATTRIBUTION_METHODS: tuple[str, ...] = ("integrated_gradients", "grad_cam")


def attribution_maps(model: nn.Module, x: Tensor, reference_groups: np.ndarray, group: int,
                     method: str = "integrated_gradients", n_steps: int = 16) -> np.ndarray:
    """Attribution ``[S, S]`` of ``cos(f_group(x), reference_groups[group])`` to the pixels of ``x``.

    Args:
        model: grouping model in eval mode; x: ``[1, 3, S, S]``.
        reference_groups: ``[K, d]`` the reference image's groups.
        group: which group's similarity to explain.
        method: ``"integrated_gradients"`` (signed, summed over colour) or ``"grad_cam"``
            (on the last feature map, upsampled, non-negative).
    """
    from dgml_viz.explain import grad_cam, integrated_gradients

    ref = torch.as_tensor(reference_groups, dtype=x.dtype, device=x.device)[None]
    if method == "integrated_gradients":
        maps = integrated_gradients(model, x, groups=[group], reference=ref, n_steps=n_steps)
    elif method == "grad_cam":
        maps = grad_cam(model, x, groups=[group], reference=ref)
    else:
        raise ValueError(f"method must be one of {', '.join(ATTRIBUTION_METHODS)}, got {method!r}")
    return maps[0, 0].detach().cpu().numpy()


def upsample_attention(attention: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear (``align_corners=False``) upsampling of ``[h, w]`` to ``size = (H, W)``."""
    a = torch.as_tensor(np.asarray(attention, dtype=np.float32))[None, None]
    return F.interpolate(a, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def rank_correlation(attention: np.ndarray, attribution: np.ndarray, absolute: bool = True) -> float:
    """Spearman correlation between the upsampled ``[h, w]`` attention and an ``[H, W]`` attribution.

    ``absolute`` compares against ``|attribution|`` (signed IG maps count evidence both ways).
    Returns NaN for constant maps.
    """
    from scipy.stats import spearmanr

    up = upsample_attention(attention, attribution.shape[-2:])
    attr = np.abs(attribution) if absolute else attribution
    if np.ptp(up) == 0 or np.ptp(attr) == 0:
        return float("nan")
    return float(spearmanr(up.ravel(), attr.ravel()).statistic)
