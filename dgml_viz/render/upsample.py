"""Normalise ``[K, h, w]`` attention maps and upsample them onto the original image.

Normalisation choices (:data:`NORMS`), applied on the grid before upsampling
(bilinear/nearest interpolation cannot leave the grid's value range, bicubic is
clipped):

* ``"per_map"`` — each map min-max scaled to ``[0, 1]`` on its own (shape of each map);
* ``"shared"`` — one min-max over all K maps of the image, so groups are comparable;
* ``"absolute"`` — the attention probability itself, ``value / vmax`` clipped to
  ``[0, 1]`` (``vmax`` defaults to the uniform-attention level times
  ``uniform_factor``, so colours mean the same thing across images and models
  with the same grid size).
"""
from __future__ import annotations

import numpy as np

from dgml_viz.data.transforms import Geometry
from dgml_viz.render.geometry import INTERPOLATIONS, grid_to_original, valid_mask

NORMS: tuple[str, ...] = ("per_map", "shared", "absolute")


def absolute_vmax(grid_hw: tuple[int, int], uniform_factor: float = 8.0) -> float:
    """Default ``vmax`` of ``"absolute"``: ``uniform_factor / (h * w)``, capped at 1."""
    return float(min(1.0, uniform_factor / (grid_hw[0] * grid_hw[1])))


def norm_affine(maps: np.ndarray, norm: str = "per_map", vmax: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The affine map of a normalisation: ``(offset, gain)``, each ``float32 [K, 1, 1]``, such that
    ``clip((maps - offset) * gain, 0, 1)`` is :func:`normalize_maps`. Apply it to upsampled maps
    to normalise them exactly as their grid (constant maps get gain 0)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"maps must be [K, h, w], got shape {arr.shape}")
    k = arr.shape[0]
    if norm == "absolute":
        top = absolute_vmax(arr.shape[1:]) if vmax is None else float(vmax)
        if top <= 0:
            raise ValueError(f"vmax must be > 0, got {top}")
        return np.zeros((k, 1, 1), np.float32), np.full((k, 1, 1), 1.0 / top, np.float32)
    axes = (1, 2) if norm == "per_map" else (0, 1, 2)
    lo = np.broadcast_to(arr.min(axis=axes, keepdims=True), (k, 1, 1)).astype(np.float32)
    span = np.broadcast_to(arr.max(axis=axes, keepdims=True), (k, 1, 1)) - lo
    gain = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    return lo, gain


def apply_norm(values: np.ndarray, affine: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``clip((values - offset) * gain, 0, 1)`` as a new ``float32`` array (``values`` is ``[K, H, W]``)."""
    lo, gain = affine
    out = (np.asarray(values, dtype=np.float32) - lo) * gain
    return np.clip(out, 0.0, 1.0, out=out)


def normalize_maps(maps: np.ndarray, norm: str = "per_map", vmax: float | None = None) -> np.ndarray:
    """``[K, h, w]`` non-negative maps -> ``float32 [K, h, w]`` in ``[0, 1]`` (see module docstring).

    Constant maps become all zeros under ``per_map``/``shared``. The input is not modified.
    """
    return apply_norm(maps, norm_affine(maps, norm, vmax))


def upsample_maps(
    maps: np.ndarray,
    geometry: Geometry,
    out_size: tuple[int, int] | None = None,
    interpolation: str = "bilinear",
    norm: str | None = "per_map",
    vmax: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise grid maps and resample them onto the original pixels.

    Args:
        maps: ``[K, h, w]`` raw attention (each map sums to 1 for the attentive head).
        geometry: the image's eval :class:`Geometry`.
        out_size: output ``(width, height)``; default the original size.
        interpolation: one of :data:`~dgml_viz.render.geometry.INTERPOLATIONS`.
        norm: one of :data:`NORMS`, or ``None`` to keep raw values (not clipped).
        vmax: scale of ``"absolute"``.

    Returns:
        ``(values float32 [K, H, W], valid bool [H, W])`` — values in ``[0, 1]``
        when ``norm`` is given; ``valid`` marks pixels the model saw.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    grid = np.asarray(maps, dtype=np.float32) if norm is None else normalize_maps(maps, norm, vmax)
    up = grid_to_original(grid, geometry, out_size, interpolation)
    if norm is not None and interpolation == "bicubic":
        np.clip(up, 0.0, 1.0, out=up)
    return up, valid_mask(geometry, out_size)


__all__ = ["normalize_maps", "norm_affine", "apply_norm", "upsample_maps", "absolute_vmax", "NORMS"]
