"""The app's in-memory embeddings, as numpy for the pages (no UI; ``app/state.py`` caches them).

* :class:`Encoded` / :func:`embed_tensors` — one image's model outputs (the one inference loop,
  :func:`dgml_viz.inference.infer`);
* :class:`GalleryIndex` / :func:`build_gallery_index` — a gallery (the held-out demo set, a
  folder) embedded once, with the model-input views the pages draw as thumbnails; it is searched
  like an on-disk index, by :func:`dgml_viz.index.search.neighbours` (its :attr:`GalleryIndex.searcher`);
* :func:`gallery_health` — dead / duplicated groups of a model over such a gallery (no part masks).

The analysis itself lives in the library: retrieval on group subsets in
:mod:`dgml_viz.index.search`, per-group numbers in :func:`dgml_viz.metrics.localisation.group_stats`,
invariance probes in :mod:`dgml_viz.metrics.invariance`, attributions in :mod:`dgml_viz.explain`.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dgml_viz.index.search import Searcher
from dgml_viz.inference import batched, infer


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

    @functools.cached_property
    def searcher(self) -> Searcher:
        """An exact (flat) FAISS :class:`Searcher` over :attr:`groups`, built on first use and kept."""
        return Searcher(self)


def build_gallery_index(model: nn.Module, tensors: Tensor, views: np.ndarray, labels: Sequence[int],
                        names: Sequence[str], batch_size: int = 128) -> GalleryIndex:
    """Embed ``tensors`` ``[N, 3, S, S]`` once; keep their views ``[N, S, S, 3]``, labels and names."""
    enc = embed_tensors(model, tensors, batch_size)
    return GalleryIndex(groups=enc.groups, attention=enc.attention, views=np.asarray(views),
                        labels=np.asarray(labels, dtype=np.int64), names=list(names))


def gallery_health(index: GalleryIndex, use_labels: bool = True, seed: int = 0) -> Any:
    """Mask-free group health (:func:`dgml_viz.metrics.group_health.group_health`) of a gallery's
    stored outputs; its labels are used only when ``use_labels`` (and known, i.e. ``>= 0``)."""
    from dgml_viz.metrics.group_health import group_health

    att = None if index.attention is None else torch.as_tensor(index.attention)
    labels = torch.as_tensor(index.labels) if use_labels else None
    return group_health(torch.as_tensor(index.groups), att, labels, seed=seed)
