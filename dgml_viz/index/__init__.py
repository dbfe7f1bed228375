"""Persistent embedding + attention index of an image collection, and FAISS search on group subsets.

* :mod:`~dgml_viz.index.store` — the on-disk format (``.npy`` memmaps + JSON manifest, atomic),
  :func:`open_index`, :func:`merge_indexes`;
* :mod:`~dgml_viz.index.builder` — :func:`build_index` (batched, incremental, resumable, sharded);
* :mod:`~dgml_viz.index.search` — :class:`Searcher` (exact ``IndexFlatIP`` or HNSW/IVF);
* :mod:`~dgml_viz.index.labels` — class labels of the indexed images (folder layout or a list file).

CLI: ``dgml-viz index``, ``dgml-viz search``, ``dgml-viz evaluate --index``.
"""
from __future__ import annotations

from dgml_viz.utils.lazy import lazy_getattr

_LAZY = {
    "EmbeddingIndex": "dgml_viz.index.store",
    "open_index": "dgml_viz.index.store",
    "write_index": "dgml_viz.index.store",
    "merge_indexes": "dgml_viz.index.store",
    "is_index": "dgml_viz.index.store",
    "build_index": "dgml_viz.index.builder",
    "merge_shards": "dgml_viz.index.builder",
    "BuildStats": "dgml_viz.index.builder",
    "Searcher": "dgml_viz.index.search",
    "SearchResult": "dgml_viz.index.search",
    "load_index_model": "dgml_viz.index.search",
    "index_labels": "dgml_viz.index.labels",
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = list(_LAZY)
