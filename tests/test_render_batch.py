"""Batched rendering (render.batch) == the per-image reference renderer (render_panels), image by image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from image_compare import image_difference

from dgml_viz.data.transforms import compute_geometry
from dgml_viz.render import RenderOptions, render_panels
from dgml_viz.render.batch import BACKENDS, lut_index, normalize_grid, render_batch
from dgml_viz.render.heatmap import to_index
from dgml_viz.render.upsample import normalize_maps

RNG = np.random.default_rng(7)
CROP = {"size": 48, "resize": 56}  # center crop: parts of non-square images are never seen (hatched)
FULL = {"size": 48, "resize": 48, "mode": "full"}


def _maps(b: int, k: int = 3, grid: int = 6) -> np.ndarray:
    m = RNG.random((b, k, grid, grid)).astype(np.float32) ** 3  # peaky, like trained attention
    return m / m.sum((2, 3), keepdims=True)


def _batch(sizes: list[tuple[int, int]], transform: dict) -> tuple[list[np.ndarray], list]:
    images = [RNG.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h in sizes]
    return images, [compute_geometry(w, h, transform) for w, h in sizes]


def _frozen(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


def _assert_close(new: np.ndarray, ref: np.ndarray, what: str) -> None:
    """The golden-image tolerance of tests/image_compare.py (only the order of float additions differs
    from the reference: a value on a LUT-index boundary can land one colour step away)."""
    assert new.dtype == np.uint8 and new.shape == ref.shape, what
    frac, rms, peak = image_difference(new, ref)
    assert frac <= 1e-3 and rms <= 0.5, f"{what}: {frac:.4%} off by > 2, RMS {rms:.3f}, max {peak}"


# mixed sizes in one batch: several buckets of one geometry, cropped and uncropped, landscape and portrait
SIZES = [(64, 48), (40, 70), (64, 48), (48, 48), (64, 48), (33, 51)]
OPTIONS = [
    RenderOptions(),
    RenderOptions(norm="shared", interpolation="bicubic", cmap="viridis", alpha=0.3),
    RenderOptions(norm="absolute", interpolation="nearest", invalid="grey", alpha=1.0),
    RenderOptions(norm="per_map", contour=0.5, max_side=40, cmap="magma"),
    RenderOptions(norm="shared", composite=False, invalid="none", alpha=0.0),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("opt_i", range(len(OPTIONS)))
@pytest.mark.parametrize("transform", [CROP, FULL], ids=["crop", "full"])
def test_batch_equals_per_image_reference(backend: str, opt_i: int, transform: dict) -> None:
    options = OPTIONS[opt_i]
    images, geos = _batch(SIZES, transform)
    images = [_frozen(im) for im in images]
    maps = _frozen(_maps(len(SIZES)))
    groups = [0, 2] if opt_i % 2 else None
    new = render_batch(images, maps, geos, groups, options, backend=backend)
    assert len(new) == len(images)
    for i, (img, geo) in enumerate(zip(images, geos)):
        ref = render_panels(img, maps[i], geo, groups, options)
        assert sorted(new[i]) == sorted(ref), i
        for key in ref:
            _assert_close(new[i][key], ref[key], f"image {i} {SIZES[i]} {key} ({backend}, {options})")


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_of_one_and_pre_shrunk_images_and_tensor_maps(backend: str) -> None:
    """A pre-shrunk image (what heatmaps' decoder hands over with --size) renders like its original;
    maps may be a tensor (e.g. still on the model's device)."""
    import cv2

    from dgml_viz.render.panels import output_size

    images, geos = _batch([(90, 60), (60, 90)], CROP)
    options = RenderOptions(max_side=45)
    small = [cv2.resize(im, output_size(g.original, 45), interpolation=cv2.INTER_AREA) for im, g in zip(images, geos)]
    maps = _maps(2)
    from_full = render_batch(images, maps, geos, None, options, backend=backend)
    from_small = render_batch(small, torch.from_numpy(maps), geos, None, options, backend=backend)
    one = render_batch(images[1:], maps[1:], geos[1:], None, options, backend=backend)
    for key in from_full[0]:
        for i in range(2):
            assert np.array_equal(from_full[i][key], from_small[i][key])
        assert np.array_equal(one[0][key], from_full[1][key])  # batched == alone
        assert from_full[0][key].shape == (30, 45, 3)


def test_backends_agree() -> None:
    images, geos = _batch(SIZES, CROP)
    maps = _maps(len(SIZES), k=4)
    a = render_batch(images, maps, geos, backend="opencv")
    b = render_batch(images, maps, geos, backend="torch")
    for pa, pb in zip(a, b):
        for key in pa:
            _assert_close(pa[key], pb[key], key)


@pytest.mark.parametrize("norm", ["per_map", "shared", "absolute"])
def test_normalize_grid_is_normalize_maps_per_image(norm: str) -> None:
    maps = _maps(5) * np.array([1, 3, 9], np.float32)[None, :, None, None]
    maps[2, 1] = 0.25  # a constant map: gain 0
    batched = normalize_grid(torch.from_numpy(maps), norm).numpy()
    for i in range(5):
        assert np.array_equal(batched[i], normalize_maps(maps[i], norm))  # the same float32 operations


def test_lut_index_is_to_index() -> None:
    v = np.concatenate([RNG.random(1000, dtype=np.float32), np.float32([0, 1, -3, 7, np.nan, np.inf, -np.inf,
                                                                     0.5 / 255, 1.5 / 255, 0.7])])
    assert np.array_equal(lut_index(torch.from_numpy(v)).numpy(), to_index(v).astype(np.int64))


def test_fused_lut_index_is_to_index_of_the_normalised_values() -> None:
    """The OpenCV backend's one-pass index == to_index(clip((v - lo) * gain)) but at exact half-level
    ties (1 level, round half to even); clipping, NaN -> 0 and a constant map (gain 0) included."""
    from dgml_viz.render.batch import _lut_indices

    v = (RNG.random((3, 40, 50), dtype=np.float32) * 1.4 - 0.2)  # bicubic-like over/undershoot of [0, 1]
    v[1, 0, :4] = [np.nan, 2.0, -1.0, 0.5]  # upsampled finite grids: no inf reaches it
    lo, gain = np.float32([0.0, 0.1, 0.3]), np.float32([1.0, 1.25, 0.0])
    got = _lut_indices(v, lo, gain)
    ref = to_index(np.clip((v - lo[:, None, None]) * gain[:, None, None], 0, 1))
    diff = np.abs(got.astype(int) - ref)
    assert got.dtype == np.uint8 and diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert got[1, 0, 0] == 0 and got[1, 0, 1] == 255 and got[1, 0, 2] == 0 and (got[2] == 0).all()
    ties = np.float32([0.5, 1.5, 2.5, 3.5]) / 255  # exactly half a level above an integer (as float32 allows)
    t = _lut_indices(ties[None, None], np.float32([0.0]), np.float32([1.0]))[0, 0]
    assert np.abs(t.astype(int) - to_index(ties)).max() <= 1


def test_rejects_bad_inputs() -> None:
    images, geos = _batch([(40, 30)] * 2, CROP)
    maps = _maps(2)
    with pytest.raises(ValueError, match="images and"):
        render_batch(images[:1], maps, geos)
    with pytest.raises(ValueError, match=r"\[B, K, h, w\]"):
        render_batch(images, maps[0], geos)
    with pytest.raises(ValueError, match="out of range"):
        render_batch(images, maps, geos, groups=[3])
    with pytest.raises(ValueError, match="uint8"):
        render_batch([im.astype(np.float32) for im in images], maps, geos)
    with pytest.raises(ValueError, match="expected the original"):
        render_batch([im[:20] for im in images], maps, geos)
    with pytest.raises(ValueError, match="backend"):
        render_batch(images, maps, geos, backend="cairo")
    with pytest.raises(ValueError, match="alpha"):
        render_batch(images, maps, geos, options=RenderOptions(alpha=2.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_maps_straight_from_the_model_under_inference_mode(backend: str) -> None:
    """The GPU path hands over ``GroupOutput.attention`` itself: an inference-mode tensor (read-only
    outside that mode); rendering it must neither fail nor differ from the numpy copy."""
    images, geos = _batch([(64, 48)] * 3, CROP)
    maps = _maps(3)
    with torch.inference_mode():
        live = torch.from_numpy(maps) * 1.0
    assert live.is_inference()
    a = render_batch(images, live, geos, options=RenderOptions(contour=0.5), backend=backend)
    b = render_batch(images, maps, geos, options=RenderOptions(contour=0.5), backend=backend)
    for pa, pb in zip(a, b):
        assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_dominant_group_loop_equals_the_vectorised_kernel_and_the_reference() -> None:
    """The CPU loop and the torch kernel (the GPU path, run here on the CPU) give the same winner and
    value as :func:`dominant_group` + the per-map value of its winner, ties to the first group included."""
    from dgml_viz.render.batch import _dominant, grid_affine_tensor
    from dgml_viz.render.composite import dominant_group

    rng = np.random.default_rng(3)
    raw = torch.from_numpy(rng.integers(0, 4, size=(3, 4, 6, 5)).astype(np.float32))  # many exact ties
    lo, gain = grid_affine_tensor(raw, "per_map")
    per_map = ((raw - lo) * gain).clamp(0, 1).numpy()
    for loop in (True, False):
        win, top = _dominant(raw, raw, lo, gain, loop=loop)
        for i in range(3):
            ref_win, _ = dominant_group(raw[i].numpy())
            assert np.array_equal(win[i].numpy(), ref_win)
            assert np.allclose(top[i].numpy(), np.take_along_axis(per_map[i], ref_win[None], 0)[0], atol=1e-6)
    shared = ((raw - raw.amin((1, 2, 3), keepdim=True)) * 0.5).clamp(0, 1)  # a separate ranking scale
    assert all(torch.equal(a, b) for a, b in zip(_dominant(shared, raw, lo, gain, loop=True),
                                                 _dominant(shared, raw, lo, gain, loop=False)))
