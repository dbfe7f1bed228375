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
* :mod:`~dgml_viz.appkit.analysis` — per-image numbers, gallery index,
  retrieval with group subsets, invariance probes and attributions.
"""
from __future__ import annotations
