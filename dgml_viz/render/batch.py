"""The panels of a whole batch at once: upsampling, normalisation, colour maps and blending as tensor ops.

:func:`render_batch` returns, for every image of a batch, what
:func:`~dgml_viz.render.panels.render_panels` returns for it (``group{k}`` overlays and the
``composite``, ``uint8 [H, W, 3]``), within a level or two of rounding. Images that share a
:class:`~dgml_viz.data.transforms.Geometry` and a render size (a dataset of one image size: all of
them) are drawn together: one pair of batched matrix products upsamples every map of every image,
one gather through a pre-multiplied colour table and one add blend every overlay, one ``argmax``
picks every composite's dominant group. The tensors live on ``device`` — the model's, so on a GPU
the maps never leave it until the finished ``uint8`` panels are copied back. Per-image work that
stays on the CPU: shrinking an image to the render size, the grey/hatched background of
regions the model never saw (only for cropped geometries) and contours (``--contour``).

The arithmetic is the reference's, step by step: normalise on the grid
(:func:`~dgml_viz.render.upsample.norm_affine`), resample with the same separable interpolation
matrices (:func:`~dgml_viz.render.geometry.interpolation_matrix`), LUT index
``floor(255 v + 0.5)`` (:func:`~dgml_viz.render.heatmap.to_index`), the blend
``round((1 - a) image + a colour)`` of ``cv2.addWeighted`` and the per-pixel blend of the
composite; only the order of float additions in the matrix products differs, and the OpenCV
backend's LUT index, which folds the normalisation into one rounding pass (exact half-level ties
round to even: 1 level off on ~2e-5 of the pixels).

Example:
    >>> from dgml_viz.data.transforms import compute_geometry
    >>> geo = compute_geometry(80, 60, {"size": 64, "resize": 64, "mode": "full"})
    >>> imgs = [np.zeros((60, 80, 3), np.uint8)] * 2
    >>> maps = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
    >>> out = render_batch(imgs, maps, [geo, geo], groups=[0, 2])
    >>> len(out), sorted(out[0]), out[1]["group2"].shape
    (2, ['composite', 'group0', 'group2'], (60, 80, 3))
"""
from __future__ import annotations

import functools
from collections import defaultdict
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from dgml_viz.data.transforms import Geometry
from dgml_viz.render.composite import group_colors
from dgml_viz.render.geometry import INTERPOLATIONS, grid_affine, grid_to_original, interpolation_matrix, valid_mask
from dgml_viz.render.heatmap import colormap_lut, draw_contour, invalid_background, top_p_mask
from dgml_viz.render.panels import RenderOptions, output_size
from dgml_viz.render.upsample import NORMS, absolute_vmax


@functools.lru_cache(maxsize=32)
def _resampling(geometry: Geometry, grid_hw: tuple[int, int], size: tuple[int, int],
                interpolation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(wy float32 [H, h], wx float32 [W, w], valid bool [H, W])`` of one geometry (cached: a dataset
    of one image size builds them once)."""
    ow, oh = size
    m = grid_affine(geometry, grid_hw, size)
    wx = interpolation_matrix(m[0, 0] * np.arange(ow) + m[0, 2], grid_hw[1], interpolation)
    wy = interpolation_matrix(m[1, 1] * np.arange(oh) + m[1, 2], grid_hw[0], interpolation)
    valid = valid_mask(geometry, size)
    for a in (wx, wy, valid):
        a.setflags(write=False)
    return wy, wx, valid


def grid_affine_tensor(maps: Tensor, norm: str, vmax: float | None = None) -> tuple[Tensor, Tensor]:
    """``(offset, gain)`` of a normalisation for every image, ``float32 [B, K, 1, 1]`` (or broadcastable):
    :func:`~dgml_viz.render.upsample.norm_affine` of each ``[K, h, w]`` of ``maps [B, K, h, w]``, batched
    (the same float32 operations; constant maps get gain 0)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    m = maps.to(torch.float32)
    if norm == "absolute":
        top = absolute_vmax(tuple(m.shape[2:])) if vmax is None else float(vmax)
        if top <= 0:
            raise ValueError(f"vmax must be > 0, got {top}")
        return (torch.zeros((), dtype=torch.float32, device=m.device),
                torch.full((), 1.0 / top, dtype=torch.float32, device=m.device))
    dims = (2, 3) if norm == "per_map" else (1, 2, 3)
    lo = m.amin(dim=dims, keepdim=True)
    span = m.amax(dim=dims, keepdim=True) - lo
    gain = torch.where(span > 0, 1.0 / torch.where(span > 0, span, torch.ones_like(span)), torch.zeros_like(span))
    return lo, gain


def normalize_grid(maps: Tensor, norm: str, vmax: float | None = None) -> Tensor:
    """``[B, K, h, w]`` -> ``float32 [B, K, h, w]`` in ``[0, 1]``: :func:`~dgml_viz.render.upsample.normalize_maps`
    of every image, batched."""
    lo, gain = grid_affine_tensor(maps, norm, vmax)
    return ((maps.to(torch.float32) - lo) * gain).clamp_(0.0, 1.0)


def lut_index(values: Tensor) -> Tensor:
    """Floats in ``[0, 1]`` (clipped; NaN -> 0) -> ``int64`` LUT indices ``0..255``
    (:func:`~dgml_viz.render.heatmap.to_index` on tensors)."""
    v = torch.nan_to_num(values * 255.0 + 0.5, nan=0.0).clamp_(0.0, 255.0)
    return v.to(torch.uint8).long()


def _blend_rounded(x: Tensor) -> Tensor:
    """float -> ``uint8`` the way OpenCV saturates (round half to even, clip to ``[0, 255]``)."""
    return x.round_().clamp_(0.0, 255.0).to(torch.uint8)


def _upsampled(maps: Tensor, geometry: Geometry, size: tuple[int, int], options: RenderOptions,
               device: torch.device) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor] | None, np.ndarray]:
    """The maps upsampled, the affine that normalises them for the overlays, the composite's dominant group
    and the valid pixels: ``(values float32 [n, K, H, W], (lo, gain) broadcastable to [n, K, 1, 1],
    (winner, its per-map value) | None without a composite, bool [H, W])``; an overlay's value is
    ``clip((values - lo) * gain, 0, 1)`` (:func:`overlay_values`; the OpenCV backend folds it into the LUT
    index, see :func:`_lut_indices`). ``values`` may be overwritten by the caller.

    ``"absolute"`` is normalised (clipped) on the grid and then upsampled, as
    :func:`~dgml_viz.render.upsample.upsample_maps` does (its affine is the identity). ``"per_map"`` /
    ``"shared"`` are affine maps of the raw values, and the resampling weights of each output pixel sum to
    1, so the raw maps are upsampled once and normalised after (the same values up to float rounding). The
    composite picks its winner on the shared scale: one positive gain per image, so (but where bicubic
    overshoot is clipped on that scale) the argmax of the raw values."""
    wy_np, wx_np, valid = _resampling(geometry, tuple(maps.shape[2:]), size, options.interpolation)
    wy, wx = torch.tensor(wy_np, device=device), torch.tensor(wx_np, device=device)

    def upsample(grid: Tensor) -> Tensor:
        return torch.matmul(torch.matmul(wy, grid), wx.T)  # [n, K', h, w] -> [n, K', H, W]

    raw = upsample(maps) if options.composite or options.norm != "absolute" else None
    dominant = None
    if options.composite:
        assert raw is not None
        rank = raw  # bicubic overshoot clipped on the shared scale creates ties: rank on that scale
        if options.interpolation == "bicubic":
            rank = overlay_values(raw.clone(), *grid_affine_tensor(maps, "shared"))
        dominant = _dominant(rank, raw, *grid_affine_tensor(maps, "per_map"))
    if options.norm == "absolute":
        identity = (torch.zeros((), dtype=torch.float32, device=device), torch.ones((), dtype=torch.float32, device=device))
        return upsample(normalize_grid(maps, "absolute")), identity, dominant, valid
    assert raw is not None
    return raw, grid_affine_tensor(maps, options.norm), dominant, valid


def overlay_values(values: Tensor, lo: Tensor, gain: Tensor) -> Tensor:
    """``clip((values - lo) * gain, 0, 1)``, in place on ``values [n, K, H, W]`` (``lo``, ``gain``
    broadcastable: ``[n, K, 1, 1]``)."""
    return values.sub_(lo).mul_(gain).clamp_(0.0, 1.0)


def _lut_indices(values: np.ndarray, lo: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """``uint8 [n, H, W]`` LUT indices of one group's overlay values, ``values float32 [n, H, W]`` with
    per-image ``lo``, ``gain`` ``[n]``: :func:`~dgml_viz.render.heatmap.to_index` of
    :func:`overlay_values` in one OpenCV pass per image, ``saturate(round(255 gain values - 255 gain lo))``
    (the clip to ``[0, 1]`` is the saturation, NaN -> 0; the values are finite: upsampled grids); only exact half-level ties can round to the
    other neighbour (round half to even instead of up), 1 level off on ~2e-5 of the pixels."""
    out = np.empty(values.shape, np.uint8)
    for i in range(values.shape[0]):
        g = 255.0 * float(gain[i])
        cv2.addWeighted(values[i], g, values[i], 0.0, -g * float(lo[i]), dst=out[i], dtype=cv2.CV_8U)
    return out


def _dominant(rank: Tensor, raw: Tensor, lo: Tensor, gain: Tensor,
              loop: bool | None = None) -> tuple[Tensor, Tensor]:
    """The composite's group per pixel, ``rank [n, K, H, W] -> (winner uint8 [n, H, W], top float32 [n, H, W])``:
    the argmax of ``rank`` over groups (the first group wins ties, like
    :func:`~dgml_viz.render.composite.dominant_group`) and the winner's per-map value
    ``clip((raw - lo) * gain, 0, 1)`` (``lo``, ``gain``: ``[n, K, 1, 1]``). ``loop`` (default: on the CPU):
    K numpy passes over contiguous planes (a strided torch argmax over dim 1 is ~10x slower there);
    otherwise torch ops on the tensors' device."""
    n, k = rank.shape[:2]
    if not (rank.device.type == "cpu" if loop is None else loop):
        win = rank.argmax(dim=1, keepdim=True)
        val = raw.gather(1, win)
        top = (val - lo.expand_as(raw).gather(1, win)) * gain.expand_as(raw).gather(1, win)
        return win[:, 0].to(torch.uint8), top[:, 0].clamp_(0.0, 1.0)
    r, x = rank.numpy(), raw.numpy()
    best, win = r[:, 0].copy(), np.zeros(r.shape[:1] + r.shape[2:], np.uint8)
    val = best if rank is raw else x[:, 0].copy()  # the winner's raw value (the running maximum when ranked on raw)
    better = np.empty(win.shape, bool)
    for g in range(1, k):
        np.greater(r[:, g], best, out=better)
        np.copyto(win, np.uint8(g), where=better)
        if val is not best:
            np.copyto(val, x[:, g], where=better)
        np.maximum(best, r[:, g], out=best)
    lo_np, gain_np = (t.expand(n, k, 1, 1).reshape(n, k).numpy() for t in (lo, gain))
    table = np.zeros((2, 256), np.float32)  # per image: the winner's lo and gain through a 256-entry LUT
    top = np.empty(val.shape, np.float32)
    for i in range(n):
        table[0, :k], table[1, :k] = lo_np[i], gain_np[i]
        cv2.multiply(cv2.subtract(val[i], cv2.LUT(win[i], table[0])), cv2.LUT(win[i], table[1]), dst=top[i])
    np.clip(top, np.float32(0.0), np.float32(1.0), out=top)
    return torch.from_numpy(win), torch.from_numpy(top)


def _panels_torch(bases: list[np.ndarray], values: Tensor, affine: tuple[Tensor, Tensor],
                  dominant: tuple[Tensor, Tensor] | None, valid_np: np.ndarray, groups: list[int],
                  options: RenderOptions, device: torch.device) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Tensor backend (any device): ``(overlays uint8 [n, G, H, W, 3] | None, composites uint8 [n, H, W, 3] | None)``."""
    img = torch.from_numpy(np.stack(bases)).to(device)  # uint8 [n, H, W, 3]
    imgf = img.to(torch.float32)
    invalid = background = None
    if not valid_np.all() and options.invalid != "none":
        invalid = ~torch.tensor(valid_np, device=device)  # [H, W]
        background = torch.from_numpy(np.stack([invalid_background(b, options.invalid) for b in bases])).to(device)
    overlays = composites = None
    if groups:
        alpha = float(options.alpha)
        colours = torch.from_numpy(colormap_lut(options.cmap).astype(np.float32)).to(device) * alpha  # [256, 3]
        lo, gain = (t.expand(values.shape[0], values.shape[1], 1, 1)[:, groups] for t in affine)
        idx = lut_index(overlay_values(values[:, groups], lo, gain))  # [n, G, H, W]
        panels = _blend_rounded(imgf.unsqueeze(1) * (1.0 - alpha) + colours[idx])  # [n, G, H, W, 3]
        if invalid is not None:
            panels = torch.where(invalid[None, None, :, :, None], background.unsqueeze(1), panels)
        overlays = panels.cpu().numpy()
    if dominant is not None:
        win, top = (t.to(device) for t in dominant)
        w = (top * min(1.0, options.alpha + 0.2)).unsqueeze(-1)  # [n, H, W, 1]
        cols = torch.from_numpy(group_colors(values.shape[1]).astype(np.float32)).to(device)[win.long()]
        comp = _blend_rounded((imgf * (1.0 - w) + cols * w) / ((1.0 - w) + w + 1e-5))  # cv2.blendLinear
        if invalid is not None:
            comp = torch.where(invalid[None, :, :, None], background, comp)
        composites = comp.cpu().numpy()
    return overlays, composites


def _panels_opencv(bases: list[np.ndarray], values: Tensor, affine: tuple[Tensor, Tensor],
                   dominant: tuple[Tensor, Tensor] | None, valid_np: np.ndarray, groups: list[int],
                   options: RenderOptions) -> tuple[np.ndarray | None, np.ndarray | None]:
    """CPU backend: the reference's OpenCV kernels, each called once on the batch stacked into one tall
    ``[n * H, W]`` image (SIMD, no per-image call overhead). Same outputs as :func:`_panels_torch`."""
    n, (h, w) = len(bases), valid_np.shape
    tall = np.ascontiguousarray(np.stack(bases)).reshape(n * h, w, 3)
    mask = None
    if not valid_np.all() and options.invalid != "none":
        mask = np.ascontiguousarray(np.broadcast_to(~valid_np, (n, h, w))).reshape(n * h, w).view(np.uint8)
        background = np.stack([invalid_background(b, options.invalid) for b in bases]).reshape(n * h, w, 3)
    overlays = composites = None
    if groups:
        lut = np.ascontiguousarray(colormap_lut(options.cmap)[:, None, :])
        vals = values.cpu().numpy()  # [n, K, H, W]
        lo, gain = (t.expand(n, vals.shape[1], 1, 1).reshape(n, -1).cpu().numpy() for t in affine)
        overlays = np.empty((len(groups), n * h, w, 3), np.uint8)
        for j, g in enumerate(groups):  # G calls over the whole batch
            heat = cv2.applyColorMap(_lut_indices(vals[:, g], lo[:, g], gain[:, g]).reshape(n * h, w), lut)
            cv2.addWeighted(tall, 1.0 - options.alpha, heat, options.alpha, 0.0, dst=overlays[j])
            if mask is not None:
                cv2.copyTo(background, mask, overlays[j])
        overlays = overlays.reshape(len(groups), n, h, w, 3).transpose(1, 0, 2, 3, 4)  # [n, G, H, W, 3] (views)
    if dominant is not None:
        win, top = (t.numpy() for t in dominant)
        wgt = (top * np.float32(min(1.0, options.alpha + 0.2))).reshape(n * h, w)  # the blend weight
        glut = np.zeros((256, 1, 3), np.uint8)
        glut[:values.shape[1], 0] = group_colors(values.shape[1])
        coloured = cv2.applyColorMap(win.reshape(n * h, w), glut)
        comp = cv2.blendLinear(tall, coloured, 1.0 - wgt, wgt)
        if mask is not None:
            cv2.copyTo(background, mask, comp)
        composites = comp.reshape(n, h, w, 3)
    return overlays, composites


def _render_group(bases: list[np.ndarray], maps: Tensor, grid_maps: list[np.ndarray], geometry: Geometry,
                  size: tuple[int, int], groups: list[int], options: RenderOptions, device: torch.device,
                  backend: str) -> list[dict[str, np.ndarray]]:
    """Panels of ``n`` images sharing ``geometry`` and render ``size``; ``maps`` is ``[n, K, h, w]``."""
    n = maps.shape[0]
    values, affine, dominant, valid_np = _upsampled(maps, geometry, size, options, device)
    if backend == "opencv":
        overlays, composites = _panels_opencv(bases, values, affine, dominant, valid_np, groups, options)
    else:
        overlays, composites = _panels_torch(bases, values, affine, dominant, valid_np, groups, options, device)
    out: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
    for i in range(n):
        if overlays is not None:
            for j, g in enumerate(groups):
                out[i][f"group{g}"] = overlays[i, j]
        if composites is not None:
            out[i]["composite"] = composites[i]
    if options.contour and groups:
        for i in range(n):
            for g in groups:
                inside = grid_to_original(top_p_mask(grid_maps[i][g], options.contour).astype(np.float32),
                                          geometry, size) > 0.5
                out[i][f"group{g}"] = draw_contour(out[i][f"group{g}"], inside & valid_np)
    return out


#: how :func:`render_batch` draws: ``"torch"`` (tensor ops on the maps' device) or ``"opencv"`` (CPU)
BACKENDS: tuple[str, ...] = ("torch", "opencv")


def render_batch(
    images: Sequence[np.ndarray],
    maps: np.ndarray | Tensor,
    geometries: Sequence[Geometry],
    groups: Sequence[int] | None = None,
    options: RenderOptions = RenderOptions(),
    device: torch.device | str | None = None,
    backend: str | None = None,
) -> list[dict[str, np.ndarray]]:
    """The panels of every image of a batch (:func:`~dgml_viz.render.panels.render_panels` of each, batched).

    Args:
        images: ``B`` original ``uint8 [H_i, W_i, 3]`` RGB images (each the size its geometry refers to,
            or already shrunk to its render size, as for ``render_panels``).
        maps: raw attention ``[B, K, h, w]`` (numpy, or a tensor — e.g. still on the GPU).
        geometries: ``B`` eval :class:`Geometry` objects.
        groups: group indices to draw (default all).
        options: :class:`RenderOptions`.
        device: where the tensor work runs; default the device of ``maps`` (CPU for numpy).
        backend: one of :data:`BACKENDS`; default ``"opencv"`` on the CPU (OpenCV's SIMD kernels beat
            torch's CPU gather/elementwise ops here by ~3x) and ``"torch"`` on any other device.

    Returns:
        ``B`` dicts ``{"group{k}": uint8 [H, W, 3], ..., "composite": ...}``, in input order. The arrays
        may be views of one batch buffer: copy before writing into them.
    """
    _check_options(options)
    mt, dev, backend = _maps_tensor(maps, device, backend)
    b, k = mt.shape[:2]
    if len(images) != b or len(geometries) != b:
        raise ValueError(f"{len(images)} images and {len(geometries)} geometries for {b} maps")
    groups = list(range(k)) if groups is None else [int(g) for g in groups]
    if any(g < 0 or g >= k for g in groups):
        raise ValueError(f"groups {groups} out of range for K={k}")
    if options.composite and k > 256:
        raise ValueError(f"at most 256 groups, got {k}")
    bases, buckets = _bases_by_geometry(images, geometries, options)
    grid_np = mt.cpu().numpy() if options.contour and groups else None
    out: list[dict[str, np.ndarray] | None] = [None] * b
    for (geo, size), members in buckets.items():
        sub = mt if len(members) == b else mt.index_select(0, torch.as_tensor(members, device=dev))
        rendered = _render_group([bases[i] for i in members], sub,
                                 [grid_np[i] for i in members] if grid_np is not None else [],
                                 geo, size, groups, options, dev, backend)
        for i, panels in zip(members, rendered):
            out[i] = panels
    return out  # type: ignore[return-value]


def _check_options(options: RenderOptions) -> None:
    if options.interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {options.interpolation!r}")
    if options.norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {options.norm!r}")
    if not 0.0 <= options.alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {options.alpha}")


def _maps_tensor(maps: np.ndarray | Tensor, device: torch.device | str | None,
                 backend: str | None) -> tuple[Tensor, torch.device, str]:
    """``(float32 [B, K, h, w] maps on the work device, that device, the backend)``; numpy maps are wrapped,
    not copied (nothing below writes into them), except a read-only array (e.g. a memmap opened ``"r"``),
    which torch cannot wrap without a warning: the low-resolution maps are small, so it is copied."""
    if isinstance(maps, Tensor):
        mt = maps
    else:
        arr = np.ascontiguousarray(maps, dtype=np.float32)
        mt = torch.from_numpy(arr if arr.flags.writeable else arr.copy())
    if mt.ndim != 4:
        raise ValueError(f"maps must be [B, K, h, w], got shape {tuple(mt.shape)}")
    dev = torch.device(device) if device is not None else mt.device
    backend = backend or ("opencv" if dev.type == "cpu" else "torch")
    if backend not in BACKENDS or (backend == "opencv" and dev.type != "cpu"):
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (opencv on the CPU only), got {backend!r}")
    return mt.detach().to(dev, torch.float32), dev, backend


def _bases_by_geometry(images: Sequence[np.ndarray], geometries: Sequence[Geometry], options: RenderOptions,
                       ) -> tuple[list[np.ndarray], dict[tuple[Geometry, tuple[int, int]], list[int]]]:
    """Each image at its render size (shrunk when given at its original size) and the indices of the images
    sharing a ``(geometry, render size)``, in input order."""
    buckets: dict[tuple[Geometry, tuple[int, int]], list[int]] = defaultdict(list)
    bases: list[np.ndarray] = []
    for i, (image, geo) in enumerate(zip(images, geometries)):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image {i} must be uint8 [H, W, 3], got {getattr(image, 'dtype', type(image))} "
                             f"{getattr(image, 'shape', '')}")
        size = output_size(geo.original, options.max_side, options.max_pixels)
        have = (image.shape[1], image.shape[0])
        if have not in (size, tuple(geo.original)):
            raise ValueError(f"image {i} is {have[0]}x{have[1]}, expected the original {geo.original} or {size}")
        bases.append(image if have == size else cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        buckets[(geo, size)].append(i)
    return bases, buckets


__all__ = ["render_batch", "normalize_grid", "grid_affine_tensor", "lut_index", "BACKENDS"]
