"""Colour maps, alpha-blended overlays, top-p attention contours and invalid-region marking.

All functions are pure: inputs are never modified, outputs are new
``uint8 [H, W, 3]`` arrays. Values to colour are floats in ``[0, 1]`` (see
:func:`dgml_viz.render.upsample.normalize_maps`).

Example:
    >>> img = np.zeros((64, 80, 3), np.uint8)
    >>> heat = np.linspace(0, 1, 64 * 80, dtype=np.float32).reshape(64, 80)
    >>> overlay(img, heat, alpha=0.5, cmap="viridis").shape
    (64, 80, 3)
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

#: how regions the model never saw are drawn
INVALID_STYLES: tuple[str, ...] = ("hatch", "grey", "none")


@functools.lru_cache(maxsize=64)
def colormap_lut(cmap: str) -> np.ndarray:
    """``uint8 [256, 3]`` RGB lookup table of any matplotlib colormap name (ValueError if unknown)."""
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}") from None
    lut = np.rint(cm(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {getattr(image, 'dtype', type(image))} "
                         f"{getattr(image, 'shape', '')}")


def _check_values(values: np.ndarray, hw: tuple[int, ...] | None = None) -> np.ndarray:
    v = np.asarray(values)
    if v.ndim != 2:
        raise ValueError(f"values must be [H, W], got shape {v.shape}")
    if hw is not None and v.shape != hw:
        raise ValueError(f"values {v.shape} do not match image {hw}")
    if not np.issubdtype(v.dtype, np.floating):
        raise ValueError(f"values must be floats in [0, 1], got {v.dtype}")
    return v


def to_index(values: np.ndarray) -> np.ndarray:
    """Floats in ``[0, 1]`` (clipped; NaN -> 0) to ``uint8`` LUT indices ``0..255``."""
    v = np.asarray(values, dtype=np.float32) * np.float32(255.0)
    v += np.float32(0.5)
    np.fmax(v, np.float32(0.0), out=v)  # fmax/fmin map NaN to the bound
    np.fmin(v, np.float32(255.0), out=v)
    return v.astype(np.uint8)


def apply_colormap(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """``[H, W]`` floats in ``[0, 1]`` -> ``uint8 [H, W, 3]`` RGB through a matplotlib colormap."""
    v = _check_values(values)
    lut = colormap_lut(cmap)
    return cv2.applyColorMap(to_index(v), np.ascontiguousarray(lut[:, None, :]))


@functools.lru_cache(maxsize=8)
def hatch_pattern(shape: tuple[int, int], period: int = 10, width: int = 2) -> np.ndarray:
    """``bool [H, W]`` diagonal stripes (``(x + y) % period < width``); cached, read-only."""
    h, w = shape
    pattern = (np.add.outer(np.arange(h, dtype=np.int32), np.arange(w, dtype=np.int32)) % period) < width
    pattern.setflags(write=False)
    return pattern


def invalid_background(original: np.ndarray, style: str = "hatch") -> np.ndarray:
    """``uint8 [H, W, 3]``: how pixels the model never saw are drawn — a light grey copy of
    ``original``, with diagonal stripes for ``"hatch"``. Compute once per image and pass it as
    ``background=`` to :func:`overlay` / :func:`~dgml_viz.render.composite.composite`."""
    if style not in INVALID_STYLES:
        raise ValueError(f"invalid style must be one of {', '.join(INVALID_STYLES)}, got {style!r}")
    _check_image(original)
    gray = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY)
    gray = cv2.addWeighted(gray, 0.45, np.full_like(gray, 140), 0.55, 0.0)
    if style == "hatch":
        gray[hatch_pattern(gray.shape)] = 90
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def mark_invalid(rendered: np.ndarray, original: np.ndarray, valid: np.ndarray | None,
                 style: str = "hatch", background: np.ndarray | None = None) -> np.ndarray:
    """Replace pixels outside ``valid`` by :func:`invalid_background` (or the given ``background``).

    Returns ``rendered`` itself when nothing is invalid, else a modified copy.
    """
    if style not in INVALID_STYLES:
        raise ValueError(f"invalid style must be one of {', '.join(INVALID_STYLES)}, got {style!r}")
    if valid is None or style == "none":
        return rendered
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != rendered.shape[:2]:
        raise ValueError(f"valid mask {valid.shape} does not match image {rendered.shape[:2]}")
    if valid.all():
        return rendered
    bg = invalid_background(original, style) if background is None else background
    out = rendered.copy()
    cv2.copyTo(bg, (~valid).view(np.uint8), out)  # out[~valid] = bg[~valid]
    return out


def overlay(
    image: np.ndarray,
    values: np.ndarray,
    alpha: float = 0.5,
    cmap: str = "jet",
    valid: np.ndarray | None = None,
    invalid: str = "hatch",
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Alpha-blend a colour-mapped map over an image: ``(1 - alpha) * image + alpha * cmap(values)``.

    Args:
        image: ``uint8 [H, W, 3]`` RGB.
        values: ``float [H, W]`` in ``[0, 1]`` (clipped).
        alpha: opacity of the heat map, in ``[0, 1]``.
        cmap: any matplotlib colormap name.
        valid: optional ``bool [H, W]``; pixels outside it are drawn per ``invalid``.
        invalid: ``"hatch"`` (grey + stripes), ``"grey"`` or ``"none"``.
        background: precomputed :func:`invalid_background` (saves work when drawing many maps).

    Returns:
        New ``uint8 [H, W, 3]``.
    """
    _check_image(image)
    v = _check_values(values, image.shape[:2])
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    heat = apply_colormap(v, cmap)
    out = cv2.addWeighted(image, 1.0 - alpha, heat, alpha, 0.0)
    return mark_invalid(out, image, valid, invalid, background)


def top_p_mask(probs: np.ndarray, p: float = 0.5) -> np.ndarray:
    """``bool [h, w]``: the fewest cells of an attention map holding at least ``p`` of its mass.

    ``probs`` need not sum to 1 (it is normalised); ties at the threshold are included.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"p must be in (0, 1], got {p}")
    a = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
    total = a.sum()
    if total <= 0:
        return np.zeros(a.shape, dtype=bool)
    flat = np.sort(a.ravel())[::-1] / total
    n = int(np.searchsorted(np.cumsum(flat), p - 1e-9)) + 1
    threshold = flat[min(n, flat.size) - 1] * total
    return a >= threshold


def top_p_threshold(probs: np.ndarray, p: float = 0.5) -> float:
    """The attention value at which the top cells hold ``p`` of the mass (see :func:`top_p_mask`)."""
    a = np.asarray(probs, dtype=np.float64)
    m = top_p_mask(a, p)
    return float(a[m].min()) if m.any() else float("inf")


def draw_contour(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 255, 255),
                 thickness: int = 2) -> np.ndarray:
    """Draw the outline of ``bool [H, W]`` ``mask`` on a copy of ``image`` (uint8 RGB)."""
    _check_image(image)
    m = np.asarray(mask, dtype=np.uint8)
    if m.shape != image.shape[:2]:
        raise ValueError(f"mask {m.shape} does not match image {image.shape[:2]}")
    out = image.copy()
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in color), int(thickness), lineType=cv2.LINE_AA)
    return out


__all__ = ["colormap_lut", "apply_colormap", "overlay", "mark_invalid", "hatch_pattern", "top_p_mask",
           "top_p_threshold", "draw_contour", "to_index", "invalid_background", "INVALID_STYLES"]
