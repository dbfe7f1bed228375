"""UI-independent helpers for the Streamlit app (``app/``).

Nothing here imports streamlit: these are plain functions the app pages call
(and tests exercise directly).

* :mod:`~dgml_viz.appkit.settings` — environment-driven settings: checkpoint
  folder, default checkpoint, allowed folder roots, upload limits;
* :mod:`~dgml_viz.appkit.paths` — allowed-root checks and folder listing;
* :mod:`~dgml_viz.appkit.sources` — image sources (demo held-out set, sample
  photos, uploads, folders) decoded to uint8 RGB;
* :mod:`~dgml_viz.appkit.views` — preparing an image for a model and the
  overlay/figure calls the pages use (delegating to :mod:`dgml_viz.render`);
* :mod:`~dgml_viz.appkit.embeddings` — one image's outputs and an in-memory
  gallery as numpy (searched by :func:`dgml_viz.index.search.neighbours`).

The analysis the pages show lives in the library, not here: retrieval on group
subsets (:mod:`dgml_viz.index.search`), per-group numbers and attention upsampling
(:mod:`dgml_viz.metrics.localisation`), invariance probes
(:mod:`dgml_viz.metrics.invariance`), attributions (:mod:`dgml_viz.explain`).
"""
from __future__ import annotations
