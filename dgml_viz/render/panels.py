"""All the pictures for one image: an overlay per group and the composite.

This is the one call the CLI and the app make per image; it composes the pure
helpers of :mod:`~dgml_viz.render.upsample`, :mod:`~dgml_viz.render.heatmap`
and :mod:`~dgml_viz.render.composite`.

Example:
    >>> from dgml_viz.data.transforms import compute_geometry
    >>> img = np.zeros((60, 80, 3), np.uint8)
    >>> geometry = compute_geometry(80, 60, {"size": 64, "resize": 64, "mode": "full"})
    >>> maps = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    >>> panels = render_panels(img, maps, geometry, groups=[0, 2], options=RenderOptions(norm="shared"))
    >>> sorted(panels), panels["composite"].shape
    (['composite', 'group0', 'group2'], (60, 80, 3))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from dgml_viz.data.transforms import Geometry
from dgml_viz.render.composite import composite, group_colors
from dgml_viz.render.geometry import grid_to_original
from dgml_viz.render.heatmap import draw_contour, invalid_background, overlay, top_p_mask
from dgml_viz.render.upsample import upsample_maps


@dataclass(frozen=True)
class RenderOptions:
    """How overlays are drawn (all plain values, so it can cross process boundaries)."""

    norm: str = "per_map"
    cmap: str = "jet"
    alpha: float = 0.5
    interpolation: str = "bilinear"
    contour: float | None = None  # draw the outline of the top-p attention mass, e.g. 0.5
    invalid: str = "hatch"
    composite: bool = True
    max_side: int | None = None  # render at most this many pixels on the long side
    max_pixels: int | None = None  # memory budget: render at most this many pixels (w * h); None/0: no cap


#: the CLI's default render budget (3072 x 3072 pixels): rendering costs ~70 bytes per output pixel
#: (K float maps in three normalisations + overlays), so a 12000 x 12000 image would need ~10 GB uncapped;
#: at 4096 x 4096 it peaked at 1.9-2.5 GB depending on the machine's load, at 3072 x 3072 at ~1.4 GB
DEFAULT_MAX_RENDER_PIXELS: int = 3072 * 3072


def output_size(original: tuple[int, int], max_side: int | None,
                max_pixels: int | None = None) -> tuple[int, int]:
    """``(width, height)`` to render at: the original, shrunk (aspect kept) so that its long side is
    ``<= max_side`` and its area ``<= max_pixels`` (either ``None``/0: no such limit)."""
    w, h = original
    f = max_side / max(w, h) if max_side and max(w, h) > max_side else 1.0
    if max_pixels and w * h * f * f > max_pixels:  # the area cap binds: round down to stay under it
        f = (max_pixels / (w * h)) ** 0.5
        return max(1, int(w * f)), max(1, int(h * f))
    if f >= 1.0:
        return w, h
    return max(1, int(round(w * f))), max(1, int(round(h * f)))


def render_panels(
    image: np.ndarray,
    maps: np.ndarray,
    geometry: Geometry,
    groups: Sequence[int] | None = None,
    options: RenderOptions = RenderOptions(),
) -> dict[str, np.ndarray]:
    """Overlays ``group{k}`` for each selected group and ``composite`` (all groups), ``uint8 [H, W, 3]``.

    Args:
        image: original ``uint8 [H, W, 3]`` RGB (the size ``geometry.original`` refers to), or already
            shrunk to the render size ``output_size(geometry.original, options.max_side, options.max_pixels)``.
        maps: raw attention ``[K, h, w]`` on the model grid.
        geometry: the image's eval :class:`Geometry`.
        groups: group indices to draw (default all).
        options: :class:`RenderOptions`.
    """
    maps = np.asarray(maps, dtype=np.float32)
    k = maps.shape[0]
    groups = list(range(k)) if groups is None else [int(g) for g in groups]
    if any(g < 0 or g >= k for g in groups):
        raise ValueError(f"groups {groups} out of range for K={k}")
    size = output_size(geometry.original, options.max_side, options.max_pixels)
    have = (image.shape[1], image.shape[0])
    if have not in (size, tuple(geometry.original)):
        raise ValueError(f"image is {have[0]}x{have[1]}, expected the original {geometry.original} or {size}")
    base = image if have == size else cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # normalising on the grid then interpolating == interpolating then normalising (affine maps commute
    # with bilinear/nearest weights; bicubic overshoot is clipped), and is K*h*w instead of K*H*W work
    values, valid = upsample_maps(maps, geometry, size, options.interpolation, options.norm)
    background = None if valid.all() or options.invalid == "none" else invalid_background(base, options.invalid)
    out: dict[str, np.ndarray] = {}
    for g in groups:
        panel = overlay(base, values[g], options.alpha, options.cmap, valid, options.invalid, background)
        if options.contour:
            inside = grid_to_original(top_p_mask(maps[g], options.contour).astype(np.float32), geometry, size) > 0.5
            panel = draw_contour(panel, inside & valid)
        out[f"group{g}"] = panel
    if options.composite:
        # groups compete for each pixel on one scale; the winner is drawn at its own (per-map) strength
        shared = values if options.norm == "shared" else \
            upsample_maps(maps, geometry, size, options.interpolation, "shared")[0]
        per_map = values if options.norm == "per_map" else \
            upsample_maps(maps, geometry, size, options.interpolation, "per_map")[0]
        out["composite"] = composite(base, shared, group_colors(k), min(1.0, options.alpha + 0.2), valid,
                                     options.invalid, background, intensity=per_map)
    return out


__all__ = ["RenderOptions", "render_panels", "output_size", "DEFAULT_MAX_RENDER_PIXELS"]
