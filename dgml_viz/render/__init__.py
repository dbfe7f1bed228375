"""Rendering: pure functions on numpy arrays that lay group maps over original images.

Never imports :mod:`dgml_viz.model`; inputs are never mutated; images out are
``uint8 [H, W, 3]``. The one call per image for the CLI and the app is
:func:`render_panels` (see :mod:`dgml_viz.inference` for image -> model -> maps).

Example:
    >>> from dgml_viz.inference import prepare_image, run_batch, attention_maps
    >>> x, geo, img = prepare_image("photo.jpg", model.transform)            # doctest: +SKIP
    >>> maps = attention_maps(run_batch(model, [x]))[0]      # [K, h, w]     # doctest: +SKIP
    >>> panels = render_panels(img, maps, geo, options=RenderOptions(norm="shared"))  # doctest: +SKIP

* :mod:`~dgml_viz.render.geometry` — map a model-grid map back onto original pixels (+ validity mask)
* :mod:`~dgml_viz.render.upsample` — normalisation and upsampling of ``[K, h, w]`` maps
* :mod:`~dgml_viz.render.heatmap` — colormaps, alpha blending, top-p contours, invalid-region hatching
* :mod:`~dgml_viz.render.composite` — one colour per group, pixel coloured by its dominant group
* :mod:`~dgml_viz.render.batch` — :func:`render_panels` for a whole batch at once (OpenCV on the CPU, tensor
  ops on the maps' device), imported on demand: ``from dgml_viz.render.batch import render_batch``
* :mod:`~dgml_viz.render.legend` — colour bar and group legend images
* :mod:`~dgml_viz.render.figures` — matplotlib paper figures (imported on demand: ``from dgml_viz.render import figures``)
"""
from __future__ import annotations

from dgml_viz.render.composite import composite, group_colors
from dgml_viz.render.geometry import INTERPOLATIONS, grid_to_original, valid_mask
from dgml_viz.render.heatmap import (
    apply_colormap, draw_contour, invalid_background, overlay, top_p_mask, top_p_threshold,
)
from dgml_viz.render.legend import colorbar_image, legend_image
from dgml_viz.render.panels import RenderOptions, output_size, render_panels
from dgml_viz.render.upsample import NORMS, apply_norm, norm_affine, normalize_maps, upsample_maps

__all__ = [
    "grid_to_original", "valid_mask", "normalize_maps", "norm_affine", "apply_norm", "upsample_maps", "NORMS",
    "INTERPOLATIONS", "apply_colormap", "overlay", "draw_contour", "top_p_mask", "top_p_threshold",
    "invalid_background", "composite", "group_colors",
    "colorbar_image", "legend_image", "RenderOptions", "render_panels", "output_size",
]
