"""The attention timeline of a training run: how each group's map on a few probe images evolves.

Pure functions on arrays (no model, no files except :func:`save_timeline_figure`):

* :func:`probe_overlays` — one overlay per group for each probe image, drawn on the
  model's own input (identity geometry) with :func:`~dgml_viz.render.panels.render_panels`;
* :func:`select_rows` — which evaluations to show when there are more than fit;
* :func:`timeline_figure` — rows = evaluations (a header row shows the probe inputs),
  columns = groups x probe images, as a :func:`~dgml_viz.render.figures.grid_figure`.

Groups are numbered from 0, as in the metrics (``group0_recall@1``) and the app.

Example:
    >>> images = np.zeros((2, 32, 32, 3), np.uint8)
    >>> attention = np.full((3, 2, 2, 4, 4), 1 / 16, np.float32)   # [E, P, K, h, w]
    >>> fig = timeline_figure(images, attention, epochs=[1, 2, 3])
    >>> len(fig.axes)   # (1 header + 3 evaluations) x (2 groups x 2 probes)
    16
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from dgml_viz.data.transforms import Geometry
from dgml_viz.render.figures import Row, grid_figure, save_figure
from dgml_viz.render.panels import RenderOptions, render_panels

#: default number of evaluation rows drawn (first and last always included)
MAX_ROWS: int = 12


def _check(images: np.ndarray, attention: np.ndarray) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [P, S, S, 3], got {images.dtype} {images.shape}")
    if attention.ndim != 5 or attention.shape[1] != images.shape[0]:
        raise ValueError(f"attention must be [E, P, K, h, w] with P={images.shape[0]}, got {attention.shape}")


def probe_overlays(images: np.ndarray, maps: np.ndarray, options: RenderOptions = RenderOptions(composite=False),
                   ) -> list[list[np.ndarray]]:
    """Overlays of each group's map on each probe image.

    Args:
        images: ``uint8 [P, S, S, 3]`` the model inputs as RGB (not modified).
        maps: ``[P, K, h, w]`` attention on the model grid.
        options: how overlays are drawn (``composite`` is ignored).

    Returns:
        ``out[p][k]``: ``uint8 [S, S, 3]`` overlay of group ``k`` on probe ``p``.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 4 or maps.shape[0] != images.shape[0]:
        raise ValueError(f"maps must be [P, K, h, w] with P={images.shape[0]}, got {maps.shape}")
    out = []
    for img, m in zip(images, maps):
        h, w = img.shape[:2]
        geometry = Geometry((w, h), (w, h), (0, 0), h, "full")  # maps live on the input tensor itself
        panels = render_panels(img, m, geometry, options=replace(options, composite=False))
        out.append([panels[f"group{k}"] for k in range(m.shape[0])])
    return out


def select_rows(num: int, max_rows: int = MAX_ROWS) -> list[int]:
    """Indices of at most ``max_rows`` of ``num`` evaluations, evenly spaced, first and last included."""
    if num <= 0:
        return []
    if max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if num <= max_rows:
        return list(range(num))
    if max_rows == 1:
        return [num - 1]
    return sorted({int(round(i * (num - 1) / (max_rows - 1))) for i in range(max_rows)})


def timeline_figure(images: np.ndarray, attention: np.ndarray, epochs: Sequence[int], *,
                    probes: Sequence[int] | None = None, max_rows: int = MAX_ROWS, width: str | float = "double",
                    dpi: int = 200, cmap: str = "jet",
                    ) -> "matplotlib.figure.Figure":  # type: ignore[name-defined]  # noqa: F821
    """The timeline figure.

    Args:
        images: ``uint8 [P, S, S, 3]`` probe inputs.
        attention: ``[E, P, K, h, w]`` the probes' maps at each of E evaluations.
        epochs: ``[E]`` epoch of each evaluation (row labels).
        probes: which probe images to show (default all).
        max_rows: at most this many evaluation rows (:func:`select_rows`).
        width, dpi: see :func:`~dgml_viz.render.figures.grid_figure`.
        cmap: colormap of the overlays (each map min-max normalised on its own).

    Returns:
        A matplotlib Figure: a header row with the probe images, then one row per evaluation;
        column blocks of one group each (``group 0`` first), one column per probe image.
    """
    images = np.asarray(images)
    attention = np.asarray(attention, dtype=np.float32)
    _check(images, attention)
    if len(epochs) != attention.shape[0]:
        raise ValueError(f"{len(epochs)} epochs for {attention.shape[0]} evaluations")
    if attention.shape[0] == 0:
        raise ValueError("the timeline has no evaluations yet")
    sel = list(range(images.shape[0])) if probes is None else [int(p) for p in probes]
    if not sel or any(p < 0 or p >= images.shape[0] for p in sel):
        raise ValueError(f"probes {sel} out of range for {images.shape[0]} probe images")
    k = attention.shape[2]
    options = RenderOptions(cmap=cmap, composite=False)
    header = Row([images[p] for _ in range(k) for p in sel], label="input")
    rows = [header]
    for e in select_rows(attention.shape[0], max_rows):
        ovl = probe_overlays(images[sel], attention[e][sel], options)  # [P][K]
        rows.append(Row([ovl[i][g] for g in range(k) for i in range(len(sel))], label=f"epoch {int(epochs[e])}"))
    titles = [f"group {g}" if i == (len(sel) - 1) // 2 else "" for g in range(k) for i in range(len(sel))]
    return grid_figure(rows, column_titles=titles, width=width, dpi=dpi)


def save_timeline_figure(fig: "matplotlib.figure.Figure",  # type: ignore[name-defined]  # noqa: F821
                         stem: str | os.PathLike[str], formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.pdf`` atomically (deterministic bytes, see ``save_figure``)."""
    return save_figure(fig, stem, formats=formats)


__all__ = ["probe_overlays", "select_rows", "timeline_figure", "save_timeline_figure", "MAX_ROWS"]
