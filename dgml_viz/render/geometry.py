"""Lay a map computed on the model's input grid back onto the original image's pixels.

The model sees an ``S x S`` tensor cut from a resized image (see
:class:`dgml_viz.data.transforms.Geometry`); its attention lives on an
``h x w`` grid covering that tensor (cell ``j`` covers tensor pixels
``[j * S / w, (j + 1) * S / w)``). :func:`grid_to_original` samples the grid at
the centre of every output pixel through the exact inverse of the transform
(a separable resampling, no intermediate images), so a peak on the grid lands
on the same object in the original image, whatever the crop, scale or aspect.

Output pixels the model never saw (cut away by the center crop) are reported
by :func:`valid_mask` — renderers grey/hatch them instead of smearing the
border values over them.

``out_size = (width, height)`` renders at another resolution than the original
(e.g. a thumbnail); the default is the original size.
"""
from __future__ import annotations

import cv2
import numpy as np

from dgml_viz.data.transforms import Geometry

#: interpolation name -> OpenCV flag
INTERPOLATIONS: dict[str, int] = {
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}


def _out_size(geometry: Geometry, out_size: tuple[int, int] | None) -> tuple[int, int]:
    return tuple(geometry.original) if out_size is None else (int(out_size[0]), int(out_size[1]))  # type: ignore[return-value]


def _tensor_axis(n_out: int, n_orig: int, scale: float, crop: int) -> np.ndarray:
    """Continuous tensor coordinate of the centre of each of ``n_out`` output pixels along one axis."""
    return (np.arange(n_out, dtype=np.float64) + 0.5) * (n_orig / n_out) * scale - crop


def grid_affine(geometry: Geometry, grid_hw: tuple[int, int], out_size: tuple[int, int] | None = None) -> np.ndarray:
    """``[2, 3]`` affine: output pixel index ``(x, y)`` -> grid sample position (OpenCV convention,
    cell centres at integers). Use with ``cv2.WARP_INVERSE_MAP``."""
    gh, gw = grid_hw
    ow, oh = _out_size(geometry, out_size)
    (W, H), (sx, sy), (cx, cy), s = geometry.original, geometry.scale, geometry.crop, geometry.size
    ax = (W / ow) * sx * gw / s
    ay = (H / oh) * sy * gh / s
    bx = (0.5 * (W / ow) * sx - cx) * gw / s - 0.5
    by = (0.5 * (H / oh) * sy - cy) * gh / s - 0.5
    return np.array([[ax, 0.0, bx], [0.0, ay, by]], dtype=np.float64)


def valid_mask(geometry: Geometry, out_size: tuple[int, int] | None = None) -> np.ndarray:
    """``bool [H, W]``: output pixels whose centre falls inside the model's input window."""
    ow, oh = _out_size(geometry, out_size)
    (W, H), (sx, sy), (cx, cy), s = geometry.original, geometry.scale, geometry.crop, geometry.size
    u = _tensor_axis(ow, W, sx, cx)
    v = _tensor_axis(oh, H, sy, cy)
    return ((v >= 0) & (v < s))[:, None] & ((u >= 0) & (u < s))[None, :]


def _cubic(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """OpenCV's bicubic kernel (``a = -0.75``) at distances ``|t| <= 2``."""
    t = np.abs(t)
    return np.where(t <= 1, ((a + 2) * t - (a + 3)) * t * t + 1,
                    np.where(t < 2, ((a * t - 5 * a) * t + 8 * a) * t - 4 * a, 0.0))


def interpolation_matrix(positions: np.ndarray, n: int, interpolation: str) -> np.ndarray:
    """``float32 [len(positions), n]``: rows of interpolation weights that sample a length-``n`` signal
    at ``positions`` (cell centres at integers), replicating the border values."""
    pos = np.asarray(positions, dtype=np.float64)
    m = np.zeros((pos.size, n), dtype=np.float64)
    rows = np.arange(pos.size)
    if interpolation == "nearest":
        np.add.at(m, (rows, np.clip(np.floor(pos + 0.5).astype(np.int64), 0, n - 1)), 1.0)
        return m.astype(np.float32)
    base = np.floor(pos).astype(np.int64)
    frac = pos - base
    taps = (0, 1) if interpolation == "bilinear" else (-1, 0, 1, 2)
    for t in taps:
        w = (1.0 - frac if t == 0 else frac) if interpolation == "bilinear" else _cubic(frac - t)
        np.add.at(m, (rows, np.clip(base + t, 0, n - 1)), w)
    return m.astype(np.float32)


def grid_to_original(
    maps: np.ndarray,
    geometry: Geometry,
    out_size: tuple[int, int] | None = None,
    interpolation: str = "bilinear",
) -> np.ndarray:
    """Resample grid maps onto original-image pixels.

    The transform is axis-aligned, so resampling is separable: ``out[k] = Wy @ maps[k] @ Wx.T``
    with interpolation matrices built from the exact inverse transform (two thin matrix products
    per map; same sampling convention and kernels as OpenCV's ``resize``/``warpAffine``).

    Args:
        maps: ``[K, h, w]`` (or ``[h, w]``) float maps on the model's grid.
        geometry: the eval transform's :class:`Geometry` for this image.
        out_size: ``(width, height)`` of the output; default the original size.
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"`` (shows the raw grid cells).

    Returns:
        ``float32 [K, H, W]`` (or ``[H, W]``). Pixels outside the model's window
        hold the nearest border value; mask them with :func:`valid_mask`.
        Bicubic can overshoot the input range; callers clip if they need to.
    """
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    arr = np.asarray(maps, dtype=np.float32)
    single = arr.ndim == 2
    if single:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"maps must be [K, h, w] or [h, w], got shape {arr.shape}")
    ow, oh = _out_size(geometry, out_size)
    gh, gw = arr.shape[1:]
    m = grid_affine(geometry, (gh, gw), (ow, oh))
    wx = interpolation_matrix(m[0, 0] * np.arange(ow) + m[0, 2], gw, interpolation)  # [W, w]
    wy = interpolation_matrix(m[1, 1] * np.arange(oh) + m[1, 2], gh, interpolation)  # [H, h]
    # cv2.gemm rather than numpy's matmul: OpenBLAS threading is pathologically slow for these thin
    # products on a busy machine, OpenCV's gemm is not
    out = np.empty((arr.shape[0], oh, ow), dtype=np.float32)
    for k in range(arr.shape[0]):  # rendering code: one pair of products per map
        rows = cv2.gemm(np.ascontiguousarray(arr[k]), wx, 1.0, None, 0.0, flags=cv2.GEMM_2_T)  # [h, W]
        out[k] = cv2.gemm(wy, rows, 1.0, None, 0.0)  # [H, W]
    return out[0] if single else out


__all__ = ["grid_to_original", "valid_mask", "grid_affine", "interpolation_matrix", "INTERPOLATIONS"]
