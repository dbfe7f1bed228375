"""Overlays, normalisation, composite, contours, legend: ranges, purity, parity with matplotlib."""
from __future__ import annotations

import itertools

import matplotlib
import numpy as np
import pytest

from dgml_viz.data.transforms import compute_geometry
from dgml_viz.render import (
    RenderOptions, apply_colormap, colorbar_image, composite, draw_contour, group_colors, legend_image,
    normalize_maps, overlay, render_panels, top_p_mask, upsample_maps,
)
from dgml_viz.render.geometry import grid_to_original
from dgml_viz.render.upsample import apply_norm, norm_affine

RNG = np.random.default_rng(0)


def _img(h: int = 33, w: int = 51) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _frozen(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)  # any in-place write raises
    return a


def test_colormap_matches_matplotlib() -> None:
    v = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    for name in ("jet", "viridis", "magma", "coolwarm"):
        ours = apply_colormap(v, name).astype(int)
        ref = np.rint(matplotlib.colormaps[name](np.rint(v * 255).astype(int))[..., :3] * 255).astype(int)
        assert np.abs(ours - ref).max() <= 1, name
    with pytest.raises(ValueError, match="unknown matplotlib colormap"):
        apply_colormap(v, "no_such_cmap")


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_overlay_is_the_alpha_blend_and_pure(alpha: float) -> None:
    img, heat = _frozen(_img()), _frozen(RNG.random((33, 51)).astype(np.float32))
    out = overlay(img, heat, alpha=alpha, cmap="viridis")
    assert out.dtype == np.uint8 and out.shape == img.shape
    ref = (1 - alpha) * img.astype(float) + alpha * apply_colormap(heat, "viridis").astype(float)
    assert np.abs(out.astype(float) - ref).max() <= 1.0


def test_overlay_out_of_range_values_are_clipped_not_wrapped() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    heat = np.array([[-5, 0, 1, 7]] * 4, np.float32)
    out = overlay(img, heat, alpha=1.0, cmap="gray")
    assert out[0, 0, 0] == 0 and out[0, 3, 0] == 255


def test_overlay_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError):
        overlay(np.zeros((4, 4, 3), np.float32), np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError):
        overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32), alpha=1.5)


def test_invalid_region_is_greyed_and_hatched_valid_region_untouched() -> None:
    img, heat = _frozen(_img(40, 60)), RNG.random((40, 60)).astype(np.float32)
    valid = np.zeros((40, 60), bool)
    valid[:, 10:50] = True
    out = overlay(img, heat, 0.5, "jet", valid=valid, invalid="hatch")
    assert np.array_equal(out[:, 10:50], overlay(img, heat, 0.5, "jet")[:, 10:50])
    inv = out[~valid]
    assert (inv[:, 0] == inv[:, 1]).all() and (inv[:, 1] == inv[:, 2]).all()  # grey
    assert (inv[:, 0] == 90).any()  # hatch stripes
    grey = overlay(img, heat, 0.5, "jet", valid=valid, invalid="grey")
    assert not (grey[~valid][:, 0] == 90).all()


@pytest.mark.parametrize("norm", ["per_map", "shared", "absolute"])
def test_normalisation_properties(norm: str) -> None:
    maps = _frozen(RNG.random((3, 7, 7)).astype(np.float32) * np.array([1, 2, 4], np.float32)[:, None, None])
    out = normalize_maps(maps, norm)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    if norm == "per_map":
        assert np.allclose(out.max((1, 2)), 1) and np.allclose(out.min((1, 2)), 0)
    elif norm == "shared":
        assert np.isclose(out.max(), 1) and np.isclose(out.min(), 0)
        ratio = (maps - maps.min()) / (maps.max() - maps.min())
        assert np.allclose(out, ratio, atol=1e-6)  # one scale for all groups: comparable
    else:
        assert np.allclose(out, np.clip(maps / (8 / 49), 0, 1))


def test_constant_map_normalises_to_zero() -> None:
    assert (normalize_maps(np.full((2, 3, 3), 0.5, np.float32), "per_map") == 0).all()


def test_normalising_upsampled_equals_upsampling_normalised() -> None:
    geo = compute_geometry(70, 45, {"size": 32, "resize": 40})
    maps = RNG.random((3, 4, 4)).astype(np.float32)
    for norm in ("per_map", "shared"):
        a = apply_norm(grid_to_original(maps, geo), norm_affine(maps, norm))
        b = grid_to_original(normalize_maps(maps, norm), geo)
        assert np.allclose(a, b, atol=1e-5)


def test_top_p_mask_is_minimal_against_brute_force() -> None:
    probs = RNG.random((3, 3))
    probs /= probs.sum()
    for p in (0.1, 0.5, 0.9):
        mask = top_p_mask(probs, p)
        assert probs[mask].sum() >= p - 1e-9
        best = min(k for k in range(1, 10) for c in itertools.combinations(range(9), k)
                   if probs.ravel()[list(c)].sum() >= p - 1e-9)
        assert mask.sum() == best


def test_draw_contour_marks_the_outline_only() -> None:
    img = _frozen(np.zeros((30, 30, 3), np.uint8))
    mask = np.zeros((30, 30), bool)
    mask[10:20, 10:20] = True
    out = draw_contour(img, mask, (255, 0, 0), 1)
    assert out[10, 15, 0] > 0 and out[15, 15, 0] == 0 and out[2, 2, 0] == 0


def test_composite_colours_by_dominant_group() -> None:
    img = _frozen(np.full((10, 30, 3), 128, np.uint8))
    vals = np.zeros((3, 10, 30), np.float32)
    for k in range(3):
        vals[k, :, 10 * k:10 * (k + 1)] = 1.0
    vals = _frozen(vals)
    colors = group_colors(3)
    out = composite(img, vals, colors, alpha=1.0)
    for k in range(3):
        assert np.array_equal(out[5, 10 * k + 5], colors[k])
    half = composite(img, vals * 0.5, colors, alpha=1.0)  # weaker attention lets the image through
    assert np.abs(half[5, 5].astype(int) - (128 + colors[0].astype(int)) / 2).max() <= 1
    assert len({tuple(c) for c in group_colors(12)}) == 12


def test_composite_intensity_shows_a_weak_group_at_its_own_strength() -> None:
    img = _frozen(np.full((10, 20, 3), 128, np.uint8))
    shared = np.zeros((2, 10, 20), np.float32)
    shared[0, :, :10] = 1.0  # strong group, left half
    shared[1, :, 10:] = 0.1  # weak group, right half: wins there, but faint on the shared scale
    per_map = shared / shared.reshape(2, -1).max(1)[:, None, None]
    colors = group_colors(2)
    faint = composite(img, _frozen(shared), colors, alpha=1.0)
    shown = composite(img, _frozen(shared), colors, alpha=1.0, intensity=_frozen(per_map))
    assert np.array_equal(shown[5, 15], colors[1]) and not np.array_equal(faint[5, 15], colors[1])
    assert np.array_equal(shown[5, 5], colors[0]) and np.array_equal(faint[5, 5], colors[0])
    with pytest.raises(ValueError, match="intensity"):
        composite(img, shared, colors, intensity=per_map[:1])


def test_render_panels_shapes_and_purity() -> None:
    img = _frozen(_img(60, 90))
    maps = RNG.random((3, 4, 4)).astype(np.float32)
    maps = _frozen(maps / maps.sum((1, 2), keepdims=True))
    geo = compute_geometry(90, 60, {"size": 32, "resize": 40})
    panels = render_panels(img, maps, geo, [0, 2], RenderOptions(contour=0.5, max_side=45))
    assert sorted(panels) == ["composite", "group0", "group2"]
    for p in panels.values():
        assert p.dtype == np.uint8 and p.shape == (30, 45, 3)
    full = render_panels(img, maps, geo, None, RenderOptions(norm="shared", interpolation="bicubic"))
    assert all(p.shape == (60, 90, 3) for p in full.values()) and len(full) == 4
    with pytest.raises(ValueError):
        render_panels(img, maps, geo, [3])


def test_upsample_rejects_unknown_options() -> None:
    geo = compute_geometry(10, 10, {"size": 8, "resize": 8})
    with pytest.raises(ValueError):
        upsample_maps(np.zeros((1, 2, 2), np.float32), geo, interpolation="lanczos9")
    with pytest.raises(ValueError):
        upsample_maps(np.zeros((1, 2, 2), np.float32), geo, norm="softmax")


def test_colorbar_and_legend_images() -> None:
    bar = colorbar_image(200, "viridis", 0, 1, label="attention")
    assert bar.dtype == np.uint8 and bar.shape[0] == 200
    lut_top = np.rint(np.asarray(matplotlib.colormaps["viridis"](1.0)[:3]) * 255)
    assert np.abs(bar[9, 10].astype(int) - lut_top).max() <= 2  # top of the bar is vmax
    leg = legend_image(group_colors(3), ["g1", "g2", "g3"])
    assert leg.dtype == np.uint8 and leg.shape[0] >= 3 * 22
    with pytest.raises(ValueError):
        legend_image(group_colors(3), ["a"])


def test_render_panels_accepts_a_pre_shrunk_image() -> None:
    import cv2

    img = _img(60, 90)
    maps = RNG.random((3, 4, 4)).astype(np.float32)
    geo = compute_geometry(90, 60, {"size": 32, "resize": 40})
    opts = RenderOptions(max_side=45)
    small = cv2.resize(img, (45, 30), interpolation=cv2.INTER_AREA)
    a, b = render_panels(img, maps, geo, None, opts), render_panels(small, maps, geo, None, opts)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="expected the original"):
        render_panels(img[:50], maps, geo, None, opts)
