"""Diversity of groups: do the K groups of one image look at, and encode, different things?

Pure functions on a model's outputs (no model calls):

* :func:`histogram_intersection` — ``sum_p min(a_i(p), a_j(p))`` between two
  groups' attention maps of the same image (maps sum to 1, so this is the
  shared attention mass: 1 for identical maps, 0 for disjoint supports);
* :func:`top_mass_iou` — IoU of the *top-mass regions*: for each map the
  smallest set of cells holding at least ``mass`` (default 50 %) of the
  attention (cells taken in decreasing order; ties broken by position);
* :func:`group_cosine` — cosine between the group embeddings of the same image;
* :func:`attention_entropy` — entropy of each map divided by ``log(h*w)``:
  1 for a uniform map, 0 for a one-hot map;
* :func:`attention_spread` — spatial variance of each map around its own centre
  of mass, in units of the map side (0 for one cell, ~1/6 for a uniform map);
* :func:`pair_values` — the ``K(K-1)/2`` upper-triangle entries of ``[N, K, K]``
  pair matrices, in ``torch.triu_indices`` order (pair names from :func:`pair_names`).

Per-group Recall@1 comes from :func:`dgml_viz.metrics.retrieval.per_group_recall_at_1`;
:func:`per_query_hits` gives the per-query hits behind it (for bootstrap CIs).

Example:
    >>> a = torch.full((1, 2, 4, 4), 1 / 16)
    >>> histogram_intersection(a)[0, 0, 1].item()
    1.0
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dgml_viz.metrics.retrieval import knn

logger = logging.getLogger(__name__)


def _check_attention(attention: Tensor) -> None:
    if attention.dim() != 4:
        raise ValueError(f"need attention [N, K, h, w], got {tuple(attention.shape)}")


def histogram_intersection(attention: Tensor) -> Tensor:
    """Shared attention mass of every pair of groups.

    Args:
        attention: ``[N, K, h, w]``, each map summing to 1.

    Returns:
        ``[N, K, K]`` with ``out[n, i, j] = sum_p min(a_i(p), a_j(p))`` (diagonal = 1).
    """
    _check_attention(attention)
    a = attention.float().flatten(2)  # [N, K, P]
    return torch.minimum(a[:, :, None, :], a[:, None, :, :]).sum(dim=-1)


def neighbourhood_overlap(attention: Tensor, radius: int = 0) -> Tensor:
    """:func:`histogram_intersection` of the maps box-filtered over ``(2r+1) x (2r+1)`` cells first
    (``radius`` r; 0 = the maps themselves): two groups on neighbouring cells, whose receptive fields
    see the same object, share mass.

    Args:
        attention: ``[N, K, h, w]``, each map summing to 1 (near the edges the filter averages over
            the cells inside the grid, so a filtered map sums to about 1, exactly 1 away from the edges).

    Returns:
        ``[N, K, K]``.
    """
    att = attention.float()
    if radius > 0:
        att = F.avg_pool2d(att, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)
    return histogram_intersection(att)


def top_mass_mask(attention: Tensor, mass: float = 0.5) -> Tensor:
    """The smallest set of cells holding at least ``mass`` of each map.

    Cells are taken in decreasing attention order (stable sort, so ties go to
    the earlier cell in row-major order) until their cumulative mass reaches
    ``mass``.

    Args:
        attention: ``[N, K, h, w]`` (each map summing to 1).
        mass: fraction in ``(0, 1]``.

    Returns:
        ``[N, K, h, w]`` bool.
    """
    _check_attention(attention)
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    a = attention.float().flatten(2)
    a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    values, order = a.sort(dim=-1, descending=True, stable=True)
    before = values.cumsum(dim=-1) - values  # mass of the cells strictly before
    keep_sorted = before < mass - 1e-6
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return keep.view(attention.shape)


def top_mass_iou(attention: Tensor, mass: float = 0.5) -> Tensor:
    """IoU of the top-``mass`` regions of every pair of groups: ``[N, K, h, w] -> [N, K, K]``."""
    m = top_mass_mask(attention, mass).flatten(2).float()  # [N, K, P]
    inter = torch.einsum("nip,njp->nij", m, m)
    area = m.sum(dim=-1)
    union = area[:, :, None] + area[:, None, :] - inter
    return inter / union.clamp_min(1e-12)


def group_cosine(groups: Tensor) -> Tensor:
    """Cosine between the group embeddings of each image: ``[N, K, d] -> [N, K, K]``."""
    if groups.dim() != 3:
        raise ValueError(f"need groups [N, K, d], got {tuple(groups.shape)}")
    g = groups.float()
    g = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return g @ g.transpose(1, 2)


def attention_entropy(attention: Tensor) -> Tensor:
    """Entropy of each map normalised by ``log(h*w)``: ``[N, K, h, w] -> [N, K]`` in ``[0, 1]``.

    ``0 * log 0`` is taken as 0; a ``1 x 1`` map has entropy 0.
    """
    _check_attention(attention)
    a = attention.float().flatten(2)
    a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    ent = -torch.where(a > 0, a * a.clamp_min(1e-30).log(), torch.zeros_like(a)).sum(dim=-1)
    cells = a.shape[-1]
    return ent / math.log(cells) if cells > 1 else torch.zeros_like(ent)


def attention_centre(attention: Tensor) -> Tensor:
    """Centre of mass ``(y, x)`` of each map in units of the grid side, ``[N, K, h, w] -> [N, K, 2]``:
    cell centres at ``((i + 0.5) / h, (j + 0.5) / w)``, so a flip of the image maps ``x`` to ``1 - x``."""
    return _centre_and_spread(attention)[0]


def attention_spread(attention: Tensor) -> Tensor:
    """``sum_p a(p) * ||p - mu||^2`` with ``mu = sum_p a(p) * p``: ``[N, K, h, w] -> [N, K]``.

    Positions are cell centres ``((i + 0.5) / h, (j + 0.5) / w)``, so the value does not depend
    on the grid size: 0 when all mass is on one cell, ``(1 - 1/h^2)/12 + (1 - 1/w^2)/12`` for a
    uniform map, and large for mass split between distant places (a group reading two parts).
    """
    return _centre_and_spread(attention)[1]


def _centre_and_spread(attention: Tensor) -> tuple[Tensor, Tensor]:
    """``(centre [N, K, 2] as (y, x), spatial variance [N, K])`` of normalised maps, from their marginals."""
    _check_attention(attention)
    a = attention.float()
    a = a / a.flatten(2).sum(dim=-1).clamp_min(1e-12)[..., None, None]
    h, w = a.shape[-2:]
    ys = (torch.arange(h, device=a.device, dtype=a.dtype) + 0.5) / h
    xs = (torch.arange(w, device=a.device, dtype=a.dtype) + 0.5) / w
    row, col = a.sum(dim=-1), a.sum(dim=-2)  # marginals [N, K, h], [N, K, w]
    my, mx = (row * ys).sum(-1), (col * xs).sum(-1)
    vy = (row * ys ** 2).sum(-1) - my ** 2
    vx = (col * xs ** 2).sum(-1) - mx ** 2
    return torch.stack([my, mx], dim=-1), (vy + vx).clamp_min(0.0)


def pair_values(matrix: Tensor) -> Tensor:
    """Upper-triangle pairs ``i < j`` of ``[N, K, K]`` -> ``[N, K(K-1)/2]`` (``triu_indices`` order)."""
    k = matrix.shape[-1]
    i, j = torch.triu_indices(k, k, offset=1)
    return matrix[:, i, j]


def pair_names(k: int) -> list[str]:
    """``["0-1", "0-2", "1-2", ...]`` matching :func:`pair_values`."""
    i, j = torch.triu_indices(k, k, offset=1)
    return [f"{a}-{b}" for a, b in zip(i.tolist(), j.tolist())]


def per_query_hits(embedding: Tensor, labels: Tensor | np.ndarray | list[int]) -> tuple[Tensor, Tensor]:
    """Recall@1 per query (query == gallery, self excluded), as in :mod:`~dgml_viz.metrics.retrieval`.

    Args:
        embedding: ``[N, d]``; labels: ``[N]``.

    Returns:
        ``(hits [N] bool, valid [N] bool)``; ``valid`` is False for "lone" queries
        (no other item of their class), which Recall@K leaves out, so
        ``hits[valid].float().mean()`` equals ``recall_at_k(...)[1]``.
    """
    lab = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
    if len(lab) < 2:
        return torch.zeros(len(lab), dtype=torch.bool), torch.zeros(len(lab), dtype=torch.bool)
    _, idx = knn(embedding, None, 1)
    hits = lab[idx[:, 0].cpu()] == lab
    counts = torch.bincount(torch.unique(lab, return_inverse=True)[1])
    valid = counts[torch.unique(lab, return_inverse=True)[1]] > 1
    return hits, valid


def per_group_query_hits(groups: Tensor, labels: Tensor | np.ndarray | list[int]) -> tuple[Tensor, Tensor]:
    """:func:`per_query_hits` of each group's slice: ``[N, K, d] -> (hits [N, K], valid [N])``."""
    cols = [per_query_hits(groups[:, g], labels) for g in range(groups.shape[1])]  # K calls of a kNN
    return torch.stack([h for h, _ in cols], dim=1), cols[0][1]


__all__ = ["histogram_intersection", "top_mass_mask", "top_mass_iou", "group_cosine", "attention_entropy",
           "pair_values", "pair_names", "per_query_hits", "per_group_query_hits", "attention_centre", "attention_spread"]
