"""One picture for all groups: every pixel coloured by its dominant group.

Each group gets a distinct colour (:func:`group_colors`); a pixel takes the
colour of the group with the highest (normalised) value there, blended over the
image with opacity ``alpha * value`` — strong attention shows bright, weak
attention lets the photo through.
"""
from __future__ import annotations

import cv2
import numpy as np

from dgml_viz.render.heatmap import _check_image, mark_invalid


def group_colors(k: int) -> np.ndarray:
    """``uint8 [K, 3]`` distinct RGB colours: matplotlib ``tab10`` for K <= 10, evenly spaced hues beyond."""
    import matplotlib

    if k <= 10:
        rgb = np.asarray(matplotlib.colormaps["tab10"].colors[:k], dtype=np.float64)
    else:
        hsv = np.stack([np.arange(k) / k, np.full(k, 0.85), np.full(k, 0.95)], axis=1)
        rgb = matplotlib.colors.hsv_to_rgb(hsv)
    return np.rint(rgb * 255.0).astype(np.uint8)


def dominant_group(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``[K, H, W]`` -> ``(argmax int64 [H, W], max float32 [H, W])`` over groups (first group wins ties)."""
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 3:
        raise ValueError(f"values must be [K, H, W], got shape {v.shape}")
    # K passes over contiguous [H, W] planes: much faster than a strided argmax over axis 0
    idx = np.zeros(v.shape[1:], dtype=np.int64)
    top = v[0].copy()
    for k in range(1, v.shape[0]):
        better = v[k] > top
        idx[better] = k
        np.maximum(top, v[k], out=top)
    return idx, top


def composite(
    image: np.ndarray,
    values: np.ndarray,
    colors: np.ndarray | None = None,
    alpha: float = 0.7,
    valid: np.ndarray | None = None,
    invalid: str = "hatch",
    background: np.ndarray | None = None,
    intensity: np.ndarray | None = None,
) -> np.ndarray:
    """Colour each pixel by its dominant group, intensity by its value.

    Args:
        image: ``uint8 [H, W, 3]`` RGB.
        values: ``float [K, H, W]`` in ``[0, 1]`` (e.g. shared-normalised maps).
        colors: ``uint8 [K, 3]``; default :func:`group_colors`.
        alpha: opacity at value 1.
        valid: optional ``bool [H, W]`` of pixels the model saw.
        invalid: how to draw the others (see :func:`dgml_viz.render.heatmap.mark_invalid`).
        background: precomputed :func:`~dgml_viz.render.heatmap.invalid_background`.
        intensity: optional ``float [K, H, W]`` in ``[0, 1]``: the opacity of the winning group
            is read here instead of from ``values``. Pass per-map normalised maps to pick the
            winner on a shared scale while showing every group at its own strength (otherwise
            a group whose peak is lower than another group's is barely visible).

    Returns:
        New ``uint8 [H, W, 3]``.
    """
    _check_image(image)
    v = np.asarray(values, dtype=np.float32)
    if v.ndim != 3 or v.shape[1:] != image.shape[:2]:
        raise ValueError(f"values must be [K, {image.shape[0]}, {image.shape[1]}], got {v.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    cols = group_colors(v.shape[0]) if colors is None else np.asarray(colors, dtype=np.uint8)
    if cols.shape != (v.shape[0], 3):
        raise ValueError(f"colors must be [{v.shape[0]}, 3], got {cols.shape}")
    if v.shape[0] > 256:
        raise ValueError(f"at most 256 groups, got {v.shape[0]}")
    idx, top = dominant_group(v)
    if intensity is not None:
        inten = np.asarray(intensity, dtype=np.float32)
        if inten.shape != v.shape:
            raise ValueError(f"intensity must have the shape of values {v.shape}, got {inten.shape}")
        top = np.take_along_axis(inten, idx[None], axis=0)[0]
    w = np.fmin(np.fmax(top, np.float32(0.0)), np.float32(1.0)) * np.float32(alpha)
    lut = np.zeros((256, 1, 3), np.uint8)
    lut[: cols.shape[0], 0] = cols
    coloured = cv2.applyColorMap(idx.astype(np.uint8), lut)  # group index -> its colour
    out = cv2.blendLinear(image, coloured, 1.0 - w, w)  # image * (1 - w) + colour * w
    return mark_invalid(out, image, valid, invalid, background)


__all__ = ["composite", "group_colors", "dominant_group"]
