"""Preparing images for a model and drawing its maps for the app.

Thin glue over :func:`dgml_viz.inference.prepare_image` (eval transform with
geometry) and :func:`dgml_viz.render.render_panels` (upsampling onto original
pixels, colormaps, contours, composite); figures for download come from
:mod:`dgml_viz.render.figures`.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from torch import Tensor

from dgml_viz.data.transforms import Geometry, denormalise, resize_and_crop
from dgml_viz.inference import prepare_image
from dgml_viz.render import NORMS, RenderOptions, apply_colormap, normalize_maps, render_panels
from dgml_viz.render.geometry import INTERPOLATIONS as _INTERP

logger = logging.getLogger(__name__)

COLORMAPS: tuple[str, ...] = ("jet", "turbo", "viridis", "inferno", "magma", "hot")
INTERPOLATIONS: tuple[str, ...] = tuple(_INTERP)


@dataclass(frozen=True)
class Prepared:
    """An image ready for a model.

    Attributes:
        tensor: ``[1, 3, S, S]`` normalised model input.
        geometry: how the tensor maps to the original pixels.
        view: ``[S, S, 3]`` uint8, the pixels the model sees.
    """

    tensor: Tensor
    geometry: Geometry
    view: np.ndarray


def prepare(rgb: np.ndarray, transform: dict[str, Any]) -> Prepared:
    """Apply a checkpoint's eval ``transform`` to ``uint8 [H, W, 3]`` (input not modified)."""
    x, geo, image = prepare_image(rgb, transform)
    return Prepared(tensor=x[None], geometry=geo, view=resize_and_crop(np.ascontiguousarray(image), geo))


def tensor_geometry(size: int) -> Geometry:
    """Identity geometry of an ``S x S`` model input (for maps shown on the tensor itself)."""
    return Geometry((size, size), (size, size), (0, 0), size, "full")


def to_view(x: Tensor, transform: dict[str, Any]) -> np.ndarray:
    """Undo the normalisation of ``[3, S, S]`` (or ``[1, 3, S, S]``) -> uint8 ``[S, S, 3]`` RGB
    (:func:`dgml_viz.data.transforms.denormalise`)."""
    return denormalise(x, transform)


def display_size(width: int, height: int, target: int = 320) -> tuple[int, int]:
    """``(w, h)`` with the longer side scaled to ``target`` (up or down), aspect kept."""
    s = target / max(width, height)
    return max(1, int(round(width * s))), max(1, int(round(height * s)))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 RGB to ``(w, h)`` (area when shrinking, cubic when enlarging)."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    shrink = size[0] < rgb.shape[1]
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


# ----------------------------------------------------------------------------- render glue
@dataclass(frozen=True)
class OverlayStyle:
    """Display options chosen in the app (mapped onto :class:`dgml_viz.render.RenderOptions`)."""

    alpha: float = 0.5
    cmap: str = "jet"
    norm: str = "per_map"
    interpolation: str = "bilinear"
    contour: bool = False
    contour_mass: float = 0.5

    def options(self) -> RenderOptions:
        return RenderOptions(norm=self.norm, cmap=self.cmap, alpha=self.alpha, interpolation=self.interpolation,
                             contour=self.contour_mass if self.contour else None)


def overlays(rgb: np.ndarray, maps: np.ndarray, geometry: Geometry, style: OverlayStyle,
             size: tuple[int, int] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """One heatmap overlay per group plus the composite, drawn on ``rgb`` shown at ``size``.

    Delegates to :func:`dgml_viz.render.render_panels`; when ``size`` differs from the
    original, the image is resized first and the geometry's ``original`` rescaled with it
    (the tensor<->pixel mapping only depends on the ratio, so maps land on the same spot).

    Args:
        rgb: original ``uint8 [H, W, 3]`` (not modified).
        maps: ``[K, h, w]`` attention on the model grid.
        geometry: the eval geometry of ``rgb``.
        style: display options.
        size: output ``(w, h)``; default :func:`display_size` of the image.

    Returns:
        ``([K] uint8 [h', w', 3] overlays, uint8 composite)``.
    """
    size = tuple(size or display_size(rgb.shape[1], rgb.shape[0]))
    base = resize_rgb(rgb, size)
    geo = geometry if size == tuple(geometry.original) else replace(geometry, original=size)
    panels = render_panels(base, np.asarray(maps, dtype=np.float32), geo, options=style.options())
    return [panels[f"group{g}"] for g in range(len(maps))], panels["composite"]


# ----------------------------------------------------------------------------- figures
FIGURE_FORMATS: tuple[str, ...] = ("png", "pdf", "svg")


def groups_figure_bytes(image: np.ndarray, overlays_: Sequence[np.ndarray], composite_img: np.ndarray,
                        fmt: str = "png", cmap: str = "jet", label: str | None = None, dpi: int = 200) -> bytes:
    """The Groups page figure (image, one overlay per group, composite) as PNG/PDF/SVG bytes.

    Built by :func:`dgml_viz.render.figures.grid_figure` (two-column paper width, colour bar,
    composite legend) and saved by :func:`~dgml_viz.render.figures.save_figure` (deterministic).
    """
    from dgml_viz.render import group_colors
    from dgml_viz.render.figures import Row, grid_figure, save_figure

    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"format must be one of {', '.join(FIGURE_FORMATS)}, got {fmt!r}")
    k = len(overlays_)
    titles = ["image", *[f"group {g}" for g in range(k)], "composite"]
    legend = [(f"group {g}", c) for g, c in enumerate(group_colors(k))]
    fig = grid_figure([Row(panels=[image, *overlays_, composite_img], label=label)], column_titles=titles,
                      width="double", dpi=dpi, colorbar=cmap, legend=legend)
    with tempfile.TemporaryDirectory() as tmp:
        (path,) = save_figure(fig, Path(tmp) / "groups", formats=(fmt,))
        return path.read_bytes()


def group_hex_colors(k: int) -> list[str]:
    """The composite's group colours (:func:`dgml_viz.render.group_colors`) as ``#rrggbb`` strings, for charts."""
    from dgml_viz.render import group_colors

    return ["#%02x%02x%02x" % tuple(int(v) for v in c) for c in group_colors(k)]


def grid_image(grid: np.ndarray, size: int = 120, cmap: str = "viridis") -> np.ndarray:
    """A raw ``[h, w]`` map drawn cell by cell (nearest) as uint8 ``[size, size, 3]``, min-max scaled."""
    g = normalize_maps(np.asarray(grid, dtype=np.float32)[None], "per_map")[0]
    big = cv2.resize(g, (size, size), interpolation=cv2.INTER_NEAREST)
    return apply_colormap(big, cmap)
