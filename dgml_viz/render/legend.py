"""Colour bar and group legend as small images (for the CLI's contact sheet and the app).

Paper figures use matplotlib's own colour bar (:mod:`dgml_viz.render.figures`);
these are plain ``uint8`` RGB arrays drawn with OpenCV, fast and dependency-light.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from dgml_viz.render.heatmap import colormap_lut

_FONT = cv2.FONT_HERSHEY_SIMPLEX


def colorbar_image(height: int = 256, cmap: str = "jet", vmin: float = 0.0, vmax: float = 1.0,
                   bar_width: int = 20, ticks: int = 5, label: str | None = None) -> np.ndarray:
    """A vertical colour bar (``vmax`` at the top) with ``ticks`` labelled values: ``uint8 [H, W, 3]``."""
    if height < 16 or ticks < 2:
        raise ValueError("height must be >= 16 and ticks >= 2")
    pad = 8
    lut = colormap_lut(cmap)
    idx = np.linspace(255, 0, height - 2 * pad).round().astype(np.int64)
    width = bar_width + 70 + (18 if label else 0)
    img = np.full((height, width, 3), 255, np.uint8)
    img[pad:height - pad, 4:4 + bar_width] = lut[idx][:, None, :]
    cv2.rectangle(img, (4, pad), (4 + bar_width, height - pad - 1), (0, 0, 0), 1)
    for i in range(ticks):
        frac = i / (ticks - 1)
        y = int(round(height - pad - 1 - frac * (height - 2 * pad - 1)))
        cv2.line(img, (4 + bar_width, y), (8 + bar_width, y), (0, 0, 0), 1)
        value = vmin + frac * (vmax - vmin)
        cv2.putText(img, f"{value:.3g}", (12 + bar_width, y + 4), _FONT, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    if label:
        text = np.full((18, height, 3), 255, np.uint8)
        cv2.putText(text, label[:40], (4, 13), _FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        img[:, width - 18:] = np.rot90(text, k=-1)
    return img


def legend_image(colors: np.ndarray, names: Sequence[str], row_height: int = 22) -> np.ndarray:
    """A legend: one colour swatch + name per row, ``uint8 [K * row_height, W, 3]``."""
    cols = np.asarray(colors, dtype=np.uint8)
    if cols.ndim != 2 or cols.shape[1] != 3 or len(names) != cols.shape[0]:
        raise ValueError(f"colors must be [K, 3] with K names, got {cols.shape} and {len(names)} names")
    width = 30 + 8 * max((len(n) for n in names), default=1)
    img = np.full((row_height * len(names) + 4, width, 3), 255, np.uint8)
    for k, name in enumerate(names):
        y = 2 + k * row_height
        cv2.rectangle(img, (4, y + 3), (20, y + row_height - 4), tuple(int(c) for c in cols[k]), -1)
        cv2.putText(img, str(name), (26, y + row_height - 7), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img


__all__ = ["colorbar_image", "legend_image"]
