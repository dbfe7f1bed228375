"""Retrieval metrics: Recall@K, MAP@R, NMI and per-group Recall@1 (pure functions).

Conventions follow pytorch-metric-learning's ``AccuracyCalculator`` (tests
check equality on the same embeddings):

* similarity is the dot product of L2-normalised embeddings (same ranking as
  Euclidean distance);
* *query == gallery* mode (``gallery=None``) excludes each query from its own
  ranking; with a separate gallery (In-Shop) nothing is excluded;
* queries whose label has no other instance in the gallery ("lone" queries)
  are left out of Recall@K and MAP@R;
* Recall@K is the fraction of queries with at least one same-label item among
  their K nearest neighbours (Recall@1 == pml's ``precision_at_1``);
* MAP@R: with R the number of same-label gallery items,
  ``AP@R = 1/R * sum_{i<=R} P@i * rel(i)`` (pml ``mean_average_precision_at_r``);
* NMI between the labels and a k-means clustering with one cluster per class.

Nearest neighbours are found block-wise: queries in chunks of ``chunk`` rows
against the gallery in blocks of ``chunk`` columns, merging a running top-k,
so peak extra memory is ``O(chunk * (chunk + k))`` rather than ``O(N^2)``
(60k x 512 fits well under 2 GB). Per-query results are reduced chunk by chunk.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor


def _normalize(x: Tensor) -> Tensor:
    x = x.float()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _as_labels(labels: Tensor | Sequence[int] | np.ndarray, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(labels), device=device).long().reshape(-1)


def knn(query: Tensor, gallery: Tensor | None, k: int, chunk: int = 2048) -> tuple[Tensor, Tensor]:
    """Top-``k`` cosine neighbours, block-wise.

    Args:
        query: ``[Nq, d]``; gallery: ``[Ng, d]`` or ``None`` (query == gallery,
            self-matches excluded). Both are L2-normalised here.
        k: neighbours per query (``<= Ng``, or ``Ng - 1`` without a gallery).
        chunk: rows/columns per similarity block.

    Returns:
        ``(similarities [Nq, k], indices [Nq, k])`` sorted by decreasing similarity.
    """
    return _knn_blocks(_normalize(query), None if gallery is None else _normalize(gallery), k, chunk,
                       0, len(query))


def _knn_blocks(q_all: Tensor, g_all: Tensor | None, k: int, chunk: int, start: int,
                stop: int) -> tuple[Tensor, Tensor]:
    """Top-k of queries ``q_all[start:stop]`` (already normalised) against the gallery."""
    self_mode = g_all is None
    gallery = q_all if self_mode else g_all
    q = q_all[start:stop]
    n_g = len(gallery)
    best_s = torch.full((len(q), 0), float("-inf"), device=q.device)
    best_i = torch.zeros((len(q), 0), dtype=torch.long, device=q.device)
    rows = torch.arange(start, stop, device=q.device)
    for g0 in range(0, n_g, chunk):
        g1 = min(g0 + chunk, n_g)
        sims = q @ gallery[g0:g1].T  # [cq, cg]
        if self_mode:
            hit = (rows >= g0) & (rows < g1)
            sims[hit.nonzero(as_tuple=True)[0], rows[hit] - g0] = float("-inf")
        idx = torch.arange(g0, g1, device=q.device).expand(len(q), -1)
        cat_s = torch.cat([best_s, sims], dim=1)
        cat_i = torch.cat([best_i, idx], dim=1)
        top = min(k, cat_s.shape[1])
        best_s, pos = cat_s.topk(top, dim=1)
        best_i = cat_i.gather(1, pos)
    return best_s, best_i


def _label_counts(q_labels: Tensor, g_labels: Tensor, self_mode: bool) -> Tensor:
    """R per query: number of same-label gallery items (minus itself in self mode)."""
    uniq, inv = torch.unique(torch.cat([q_labels, g_labels]), return_inverse=True)
    g_counts = torch.bincount(inv[len(q_labels):], minlength=len(uniq))
    r = g_counts[inv[: len(q_labels)]]
    return r - 1 if self_mode else r


def _ranked_hits(query: Tensor, labels: Tensor, gallery: Tensor | None, gallery_labels: Tensor | None,
                 k: int, chunk: int) -> Iterator[Tensor]:
    """Yield, per query chunk, ``[cq, k]`` bool: does neighbour j share the query's label."""
    q = _normalize(query)
    g = None if gallery is None else _normalize(gallery).to(q.device)
    g_labels = labels if gallery_labels is None else gallery_labels
    for s in range(0, len(q), chunk):
        e = min(s + chunk, len(q))
        _, idx = _knn_blocks(q, g, k, chunk, s, e)
        yield g_labels[idx] == labels[s:e, None]


def _prepare(embedding: Tensor, labels, gallery: Tensor | None,
             gallery_labels) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor]:
    emb = torch.as_tensor(embedding)
    lab = _as_labels(labels, emb.device)
    if len(emb) != len(lab):
        raise ValueError(f"{len(emb)} embeddings but {len(lab)} labels")
    g = g_lab = None
    if gallery is not None:
        g = torch.as_tensor(gallery).to(emb.device)
        g_lab = _as_labels(gallery_labels, emb.device)
        if len(g) != len(g_lab):
            raise ValueError(f"{len(g)} gallery embeddings but {len(g_lab)} gallery labels")
    r = _label_counts(lab, lab if g_lab is None else g_lab, gallery is None)
    return emb, lab, g, g_lab, r


def _retrieval_core(embedding: Tensor, labels, ks: Sequence[int], gallery: Tensor | None, gallery_labels,
                    chunk: int, with_map: bool) -> dict[str, float]:
    emb, lab, g, g_lab, r = _prepare(embedding, labels, gallery, gallery_labels)
    n_gallery = len(emb) - 1 if g is None else len(g)
    valid = r > 0
    k_needed = max([*ks, int(r.max().item()) if with_map and len(r) else 1])
    k = max(1, min(k_needed, n_gallery))
    hits_chunks = _ranked_hits(emb, lab, g, g_lab, k, chunk)
    recall_hits = {kk: 0.0 for kk in ks}
    ap_sum = 0.0
    pos = torch.arange(1, k + 1, device=emb.device, dtype=torch.float64)
    start = 0
    for hits in hits_chunks:
        stop = start + len(hits)
        v = valid[start:stop]
        h = hits[v]
        for kk in ks:
            recall_hits[kk] += h[:, :kk].any(dim=1).sum().item()
        if with_map and len(h):
            rr = r[start:stop][v]
            within_r = pos[None, :] <= rr[:, None]
            rel = (h & within_r).double()
            precision = rel.cumsum(1) / pos
            ap_sum += ((precision * rel).sum(1) / rr.double()).sum().item()
        start = stop
    n_valid = int(valid.sum().item())
    if n_valid == 0:
        res = {f"recall@{kk}": float("nan") for kk in ks}
        if with_map:
            res["map@r"] = float("nan")
        return res
    res = {f"recall@{kk}": recall_hits[kk] / n_valid for kk in ks}
    if with_map:
        res["map@r"] = ap_sum / n_valid
    return res


def recall_at_k(embedding: Tensor, labels, ks: Sequence[int] = (1, 2, 4, 8), gallery: Tensor | None = None,
                gallery_labels=None, chunk: int = 2048) -> dict[int, float]:
    """Recall@K for each K in ``ks``.

    Args:
        embedding: ``[N, d]`` query embeddings (normalised here).
        labels: ``[N]`` int labels.
        gallery, gallery_labels: ``[M, d]``, ``[M]``; ``None`` = query == gallery.
        chunk: block size of the blocked similarity search.

    Returns:
        ``{K: recall}``.
    """
    res = _retrieval_core(embedding, labels, ks, gallery, gallery_labels, chunk, with_map=False)
    return {kk: res[f"recall@{kk}"] for kk in ks}


def map_at_r(embedding: Tensor, labels, gallery: Tensor | None = None, gallery_labels=None,
             chunk: int = 2048) -> float:
    """MAP@R (Musgrave et al. 2020), same arguments as :func:`recall_at_k`."""
    return _retrieval_core(embedding, labels, (1,), gallery, gallery_labels, chunk, with_map=True)["map@r"]


def kmeans_labels(embedding: Tensor | np.ndarray, num_clusters: int, seed: int = 0) -> np.ndarray:
    """k-means cluster ids ``[N]`` of the normalised embeddings (sklearn, one init, fixed seed)."""
    from sklearn.cluster import KMeans

    x = _normalize(torch.as_tensor(embedding)).cpu().numpy()
    return KMeans(n_clusters=num_clusters, n_init=1, random_state=seed).fit_predict(x)


def nmi(embedding: Tensor, labels, seed: int = 0,
        kmeans: Callable[[Tensor | np.ndarray, int], np.ndarray] | None = None) -> float:
    """NMI of ``labels`` vs a k-means clustering with one cluster per class.

    ``kmeans(embedding, num_clusters) -> cluster ids`` defaults to :func:`kmeans_labels`.
    """
    from sklearn.metrics import normalized_mutual_info_score

    lab = np.asarray(torch.as_tensor(np.asarray(labels)).reshape(-1).cpu())
    n_clusters = len(np.unique(lab))
    fn = kmeans or (lambda x, n: kmeans_labels(x, n, seed))
    clusters = np.asarray(fn(embedding, n_clusters))
    return float(normalized_mutual_info_score(lab, clusters))


def per_group_recall_at_1(groups: Tensor, labels, gallery_groups: Tensor | None = None, gallery_labels=None,
                          chunk: int = 2048) -> list[float]:
    """Recall@1 of each group's embedding alone: ``groups [N, K, d] -> [K]`` floats."""
    k = groups.shape[1]
    return [
        recall_at_k(groups[:, g], labels, (1,), None if gallery_groups is None else gallery_groups[:, g],
                    gallery_labels, chunk)[1]
        for g in range(k)
    ]


def retrieval_metrics(embedding: Tensor, labels, *, groups: Tensor | None = None, ks: Sequence[int] = (1, 2, 4, 8),
                      gallery: Tensor | None = None, gallery_labels=None, gallery_groups: Tensor | None = None,
                      compute_nmi: bool = True, seed: int = 0, chunk: int = 2048) -> dict[str, float]:
    """All evaluation numbers as a flat dict.

    Keys: ``recall@K`` for K in ``ks``, ``map@r``, ``nmi`` (if ``compute_nmi``;
    on the queries), and ``group{g}_recall@1`` for each group when ``groups``
    (``[N, K, d]``) is given.
    """
    out = _retrieval_core(embedding, labels, ks, gallery, gallery_labels, chunk, with_map=True)
    if compute_nmi:
        out["nmi"] = nmi(embedding, labels, seed=seed)
    if groups is not None and groups.shape[1] > 1:
        for g, v in enumerate(per_group_recall_at_1(groups, labels, gallery_groups, gallery_labels, chunk)):
            out[f"group{g}_recall@1"] = v
    return out


__all__ = ["knn", "recall_at_k", "map_at_r", "nmi", "kmeans_labels", "per_group_recall_at_1", "retrieval_metrics"]
