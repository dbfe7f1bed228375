"""FAISS search over an index, on the whole embedding or on any subset of groups.

With K L2-normalised groups, the vector searched for a subset ``S`` of groups is the
concatenation of the ``S`` slices, renormalised as a whole (``/ sqrt(|S|)``), so the
inner product is ``sim_S(q, n) = sum_{g in S} <f_g(q), f_g(n)> / |S|`` — the mean of
the chosen groups' cosines; ``S`` = all groups is the model's own embedding. The
contribution of group ``g`` to that similarity is its term ``<f_g(q), f_g(n)> / |S|``
(:class:`Neighbour`), and the Euclidean distance of the normalised vectors is
``sqrt(2 - 2 sim)``. This is the one retrieval on group subsets: the CLI's ``search``,
the app's Compare page on an on-disk index and on an in-memory gallery (anything with
``groups [N, K, d]``, searched with an exact flat index) all go through :class:`Searcher`.

Index kinds (``method``):

* ``"flat"`` (default) — ``faiss.IndexFlatIP``, exact;
* ``"hnsw"`` — ``faiss.IndexHNSWFlat`` (inner product; ``M=32``, ``efSearch`` 128), approximate,
  for millions of images; scores of the hits are still exact inner products;
* ``"ivf"`` — ``faiss.IndexIVFFlat`` (``nlist ~ sqrt(N)``, trained on ``64 nlist`` rows, ``nprobe`` 16),
  approximate.

Example:
    >>> idx = open_index("runs/test_index")                     # doctest: +SKIP
    >>> s = Searcher(idx)                                        # doctest: +SKIP
    >>> res = s.search(idx.groups[:2], k=5, groups=[0, 2])      # doctest: +SKIP
    >>> res.similarity.shape, res.group_similarity.shape         # doctest: +SKIP
    ((2, 5), (2, 5, 3))
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dgml_viz.errors import CheckpointError, ConfigError, GroupSelectionError
from dgml_viz.index.store import EmbeddingIndex, file_sha256

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("flat", "hnsw", "ivf")
_ADD_ROWS = 65536


def _faiss() -> Any:
    """``import faiss`` without its INFO lines about which SIMD build it picked."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def subset_vectors(groups: np.ndarray, sel: Sequence[int]) -> np.ndarray:
    """``[N, K, d]`` -> float32 ``[N, |S| d]``: the ``sel`` slices concatenated and L2-renormalised."""
    x = np.ascontiguousarray(np.asarray(groups)[:, list(sel)], dtype=np.float32).reshape(len(groups), -1)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def check_groups(groups: Sequence[int] | None, k: int) -> list[int]:
    """Sorted unique group indices (all when None); GroupSelectionError (a ConfigError and a
    ValueError) when empty or out of ``0..k-1``."""
    if groups is None:
        return list(range(k))
    sel = sorted({int(g) for g in groups})
    if not sel or any(not 0 <= g < k for g in sel):
        raise GroupSelectionError(f"groups {list(groups)}: the index has groups 0..{k - 1}")
    return sel


def group_similarities(query_groups: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``<f_g(q), f_g(n)>`` for every row and group: ``[K, d], [N, K, d] -> float32 [N, K]``."""
    return np.einsum("kd,nkd->nk", np.asarray(query_groups, dtype=np.float32), np.asarray(groups, dtype=np.float32))


@dataclass(frozen=True)
class SearchResult:
    """Neighbours of Q queries.

    Attributes:
        groups: the group subset searched.
        index: int64 ``[Q, k]`` rows of the index (``-1`` pads when fewer hits).
        similarity: float32 ``[Q, k]`` mean cosine over ``groups`` (the searched inner product).
        group_similarity: float32 ``[Q, k, K]`` cosine of every group (all K, whichever were searched).
    """

    groups: list[int]
    index: np.ndarray
    similarity: np.ndarray
    group_similarity: np.ndarray


class Searcher:
    """FAISS indexes over an :class:`EmbeddingIndex`, one per group subset (built on first use, cached).

    Args:
        index: an opened index.
        method: ``"flat"`` (exact), ``"hnsw"`` or ``"ivf"`` (approximate).
        ef_search: HNSW search depth; nprobe: IVF lists visited; hnsw_m: HNSW graph degree.
        threads: FAISS OpenMP threads (None: leave FAISS's default).
    """

    def __init__(self, index: EmbeddingIndex | Any, method: str = "flat", *, hnsw_m: int = 32,
                 ef_search: int = 128, nprobe: int = 16, threads: int | None = None) -> None:
        if method not in METHODS:
            raise ConfigError(f"search method must be one of {', '.join(METHODS)}, got {method!r}")
        self.index, self.method = index, method
        self.hnsw_m, self.ef_search, self.nprobe = hnsw_m, ef_search, nprobe
        self._faiss: dict[tuple[int, ...], Any] = {}
        if threads is not None:
            _faiss().omp_set_num_threads(int(threads))

    @property
    def num_groups(self) -> int:
        return int(self.index.groups.shape[1])

    def faiss_index(self, groups: Sequence[int] | None = None) -> Any:
        """The FAISS index of a group subset (built once)."""
        faiss = _faiss()

        sel = tuple(check_groups(groups, self.num_groups))
        if sel in self._faiss:
            return self._faiss[sel]
        n = len(self.index.groups)
        dim = len(sel) * int(self.index.groups.shape[2])
        if self.method == "flat":
            fi = faiss.IndexFlatIP(dim)
        elif self.method == "hnsw":
            fi = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            fi.hnsw.efSearch = self.ef_search
        else:
            nlist = max(1, min(int(math.sqrt(max(n, 1))), n // 39 if n >= 39 else 1))
            fi = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            train = np.sort(rng.choice(n, size=min(n, 64 * nlist), replace=False))
            fi.train(subset_vectors(self.index.groups[train], sel))
            fi.nprobe = min(self.nprobe, nlist)
        for s in range(0, n, _ADD_ROWS):
            fi.add(subset_vectors(self.index.groups[s:s + _ADD_ROWS], sel))
        self._faiss[sel] = fi
        return fi

    def search(self, query_groups: np.ndarray, k: int = 10, groups: Sequence[int] | None = None,
               exclude: Sequence[Sequence[int]] | None = None) -> SearchResult:
        """Top-``k`` rows for each query.

        Args:
            query_groups: ``[Q, K, d]`` (or ``[K, d]``) normalised group embeddings of the queries.
            k: neighbours per query.
            groups: subset of groups to search on (default all).
            exclude: per query, rows to leave out (e.g. the query's own row).

        Returns:
            :class:`SearchResult`, sorted by decreasing similarity.
        """
        q = np.asarray(query_groups, dtype=np.float32)
        if q.ndim == 2:
            q = q[None]
        if q.ndim != 3 or q.shape[1:] != tuple(self.index.groups.shape[1:]):
            raise ConfigError(f"query groups of shape {tuple(q.shape)} do not fit the index "
                              f"{tuple(self.index.groups.shape[1:])}")
        sel = check_groups(groups, self.num_groups)
        n = len(self.index.groups)
        k = max(1, int(k))
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        want = min(n, k + extra)
        sims = np.full((len(q), k), -np.inf, np.float32)
        rows = np.full((len(q), k), -1, np.int64)
        if want > 0:
            s_all, i_all = self.faiss_index(sel).search(subset_vectors(q, sel), want)
            for j in range(len(q)):
                drop = set(exclude[j]) if exclude else set()
                keep = [(s, i) for s, i in zip(s_all[j].tolist(), i_all[j].tolist()) if i >= 0 and i not in drop][:k]
                if keep:
                    sims[j, :len(keep)] = [s for s, _ in keep]
                    rows[j, :len(keep)] = [i for _, i in keep]
        gsim = np.zeros((len(q), k, self.num_groups), np.float32)
        for j in range(len(q)):
            valid = rows[j] >= 0
            if valid.any():
                g = np.asarray(self.index.groups[np.sort(rows[j][valid])], dtype=np.float32)
                order = np.argsort(np.argsort(rows[j][valid]))
                gsim[j, valid] = group_similarities(q[j], g[order])
        return SearchResult(groups=sel, index=rows, similarity=sims, group_similarity=gsim)


@dataclass(frozen=True)
class Neighbour:
    """One retrieved item: row ``index``, ``similarity`` over the chosen groups, Euclidean
    ``distance`` of the (subset) normalised embeddings, and ``contributions`` ``[K]`` (0 for groups
    outside the subset; they sum to ``similarity``)."""

    index: int
    similarity: float
    distance: float
    contributions: np.ndarray


def neighbours(query_groups: np.ndarray, gallery: Searcher | Any, k: int = 5, groups: Sequence[int] | None = None,
               exclude: int | None = None) -> list[Neighbour]:
    """Top-``k`` items for one query ``[K, d]``, searched on ``groups`` (default all).

    Args:
        query_groups: ``[K, d]`` normalised group embeddings.
        gallery: a :class:`Searcher` (e.g. over an on-disk index), or anything with
            ``groups [N, K, d]`` (searched exactly by a flat :class:`Searcher` made here).
        k: neighbours wanted (fewer when the gallery is smaller).
        groups: group subset (:func:`check_groups`).
        exclude: a row to leave out (the query itself when it comes from the gallery).

    Raises:
        GroupSelectionError: empty subset or a group out of range.
    """
    searcher = gallery if isinstance(gallery, Searcher) else Searcher(gallery)
    res = searcher.search(np.asarray(query_groups, dtype=np.float32)[None], k=k, groups=groups,
                          exclude=[[exclude]] if exclude is not None else None)
    mask = np.zeros(res.group_similarity.shape[-1], dtype=np.float32)
    mask[res.groups] = 1.0 / len(res.groups)
    return [Neighbour(index=int(i), similarity=float(s), distance=float(np.sqrt(max(0.0, 2 - 2 * s))),
                      contributions=gs * mask)
            for i, s, gs in zip(res.index[0], res.similarity[0], res.group_similarity[0]) if i >= 0]


# --------------------------------------------------------------------------- queries
def load_index_model(index: EmbeddingIndex, ckpt: str | Path | None = None, device: str | None = None) -> Any:
    """Load the checkpoint that built ``index`` (``ckpt`` overrides the recorded path) after checking its SHA-256.

    Raises:
        CheckpointError: the file is missing, unreadable or not the index's checkpoint (one line).
    """
    from dgml_viz.model.checkpoint import load_checkpoint

    path = Path(ckpt) if ckpt is not None else Path(index.checkpoint["path"])
    if not path.is_file():
        raise CheckpointError(f"{path}: the index's checkpoint is missing; pass --ckpt")
    try:
        sha = file_sha256(path)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    if sha != index.sha256:
        raise CheckpointError(f"{path}: sha256 {sha[:12]}... does not match the checkpoint that built the index "
                              f"{index.root} ({index.sha256[:12]}...)")
    return load_checkpoint(path, map_location=device or "cpu").eval()


def embed_paths(model: Any, paths: Sequence[str | Path], max_pixels: int | None = None) -> np.ndarray:
    """Group embeddings ``float32 [Q, K, d]`` of image files (one batched forward)."""
    from dgml_viz.inference import prepare_image, run_batch

    tensors = [prepare_image(p, dict(model.transform), max_pixels=max_pixels)[0] for p in paths]
    return run_batch(model, tensors).groups.detach().float().cpu().numpy()


def neighbours_json(query: str, result: SearchResult, index: EmbeddingIndex, row: int = 0) -> dict[str, Any]:
    """The ``search --json`` document of query ``row`` of ``result`` (see ``dgml-viz search --help``)."""
    hits = []
    for r, s, gs in zip(result.index[row].tolist(), result.similarity[row].tolist(),
                        result.group_similarity[row].tolist()):
        if r < 0:
            continue
        hits.append({"path": index.paths[r], "similarity": float(s), "group_similarity": [float(v) for v in gs]})
    return {"query": query, "groups": list(result.groups), "neighbours": hits}


__all__ = ["Searcher", "SearchResult", "Neighbour", "neighbours", "group_similarities", "subset_vectors",
           "check_groups", "load_index_model", "embed_paths", "neighbours_json", "METHODS"]
