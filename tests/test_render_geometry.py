"""Eval transform parity with torchvision, and maps landing on the right original pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dgml_viz.data.transforms import Geometry, compute_geometry, eval_transform
from dgml_viz.render.geometry import grid_to_original, valid_mask
from dgml_viz.render.upsample import upsample_maps

MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


@pytest.mark.parametrize("hw,resize,size", [((333, 517), 110, 96), ((517, 333), 256, 224), ((97, 97), 110, 96),
                                            ((50, 80), 60, 96), ((224, 300), 224, 224)])
def test_center_crop_matches_torchvision(hw: tuple[int, int], resize: int, size: int) -> None:
    img = np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)
    x, geo = eval_transform(img, {"size": size, "resize": resize, "mean": MEAN, "std": STD})
    ref = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), T.Normalize(MEAN, STD)])(
        Image.fromarray(img))
    assert x.shape == ref.shape == (3, size, size) and x.dtype == torch.float32
    assert torch.allclose(x, ref, atol=1e-5)  # same PIL interpolation: equal up to float rounding
    assert geo.mode == "center_crop" and geo.original == (hw[1], hw[0])


def test_full_mode_matches_torchvision_resize() -> None:
    img = np.random.default_rng(2).integers(0, 256, (333, 517, 3), dtype=np.uint8)
    x, geo = eval_transform(img, {"size": 96, "resize": 110, "mean": MEAN, "std": STD, "mode": "full"})
    ref = T.Compose([T.Resize((96, 96)), T.ToTensor(), T.Normalize(MEAN, STD)])(Image.fromarray(img))
    assert torch.allclose(x, ref, atol=1e-5)
    assert geo.crop == (0, 0) and geo.resized == (96, 96)
    assert valid_mask(geo).all()


def test_input_not_modified_and_bad_transform() -> None:
    img = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    before = img.copy()
    eval_transform(img, {"size": 32, "resize": 36})
    assert np.array_equal(img, before)
    from dgml_viz.errors import ConfigError

    with pytest.raises(ConfigError):
        eval_transform(img, {"size": 32, "mode": "stretch"})


def test_geometry_coordinate_round_trip_and_dict() -> None:
    geo = compute_geometry(517, 333, {"size": 96, "resize": 110})
    pts = np.random.default_rng(0).uniform(0, 300, (50, 2))
    assert np.allclose(geo.to_original_coords(geo.to_tensor_coords(pts)), pts)
    assert Geometry.from_dict(geo.to_dict()) == geo


def _blob_image(h: int, w: int, cx: float, cy: float, r: float = 12.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    blob = np.exp(-((xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2) / (2 * r * r))
    img = np.full((h, w, 3), 30, np.uint8)
    img[..., 0] = np.clip(30 + 225 * blob, 0, 255).astype(np.uint8)
    return img


def _model_grid(tensor: torch.Tensor, stride: int = 8) -> np.ndarray:
    """What a perfect 'red detector' attention would be: the red channel average-pooled to the grid."""
    red = tensor[0:1][None]  # [1, 1, S, S]
    return torch.nn.functional.avg_pool2d(red, stride)[0, 0].numpy()


@pytest.mark.parametrize("mode", ["center_crop", "full"])
@pytest.mark.parametrize("hw,blob", [((333, 517), (300.0, 150.0)), ((517, 333), (180.0, 300.0)),
                                     ((301, 301), (100.0, 200.0)), ((96, 200), (90.0, 40.0))])
@pytest.mark.parametrize("interp", ["bilinear", "bicubic", "nearest"])
def test_peak_lands_on_the_blob(mode: str, hw: tuple[int, int], blob: tuple[float, float], interp: str) -> None:
    h, w = hw
    img = _blob_image(h, w, *blob)
    transform = {"size": 96, "resize": 110, "mean": [0.0] * 3, "std": [1.0] * 3, "mode": mode}
    x, geo = eval_transform(img, transform)
    grid = _model_grid(x)
    up, valid = upsample_maps(grid[None], geo, interpolation=interp, norm="per_map")
    assert up.shape == (1, h, w) and valid.shape == (h, w)
    assert valid[int(blob[1]), int(blob[0])]  # the blob is inside what the model saw
    py, px = np.unravel_index(np.argmax(np.where(valid, up[0], -1)), (h, w))
    cell = 8 / np.array(geo.scale)  # original pixels per grid cell (x, y)
    # grid quantisation allows one cell of error; a wrong crop offset or scale moves it much further
    assert abs(px + 0.5 - blob[0]) <= cell[0] + 1 and abs(py + 0.5 - blob[1]) <= cell[1] + 1


def test_ignoring_the_crop_would_miss_the_blob() -> None:
    """The blob test is sensitive: stretching the grid over the whole image (no crop inversion) misses."""
    import cv2

    h, w, blob = 333, 517, (380.0, 150.0)
    x, geo = eval_transform(_blob_image(h, w, *blob), {"size": 96, "resize": 110, "mean": [0.0] * 3,
                                                        "std": [1.0] * 3})
    grid = _model_grid(x)
    cell = 8 / np.array(geo.scale)
    naive = cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
    ny, nx = np.unravel_index(np.argmax(naive), (h, w))
    assert abs(nx + 0.5 - blob[0]) > 2 * cell[0]
    ours = upsample_maps(grid[None], geo)[0][0]
    oy, ox = np.unravel_index(np.argmax(ours), (h, w))
    assert abs(ox + 0.5 - blob[0]) <= cell[0] + 1


def test_valid_mask_is_the_center_crop_window() -> None:
    geo = compute_geometry(517, 333, {"size": 96, "resize": 110})
    valid = valid_mask(geo)
    x0, y0, x1, y1 = geo.visible_box()
    cols, rows = np.flatnonzero(valid.any(0)), np.flatnonzero(valid.any(1))
    # the valid region is exactly the rectangle the model saw
    assert np.array_equal(valid, np.outer(valid.any(1), valid.any(0)))
    assert abs(cols[0] - x0) <= 1 and abs(cols[-1] + 1 - x1) <= 1
    assert abs(rows[0] - y0) <= 1 and abs(rows[-1] + 1 - y1) <= 1
    assert 0 < cols[0] and cols[-1] < 516 and 0 < rows[0] and rows[-1] < 332  # 110 -> 96 cuts both axes
    # width seen = 96 resized px = 96 * 517 / 170 original px
    assert abs(len(cols) - 96 * 517 / 170) <= 1.5 and abs(len(rows) - 96 * 333 / 110) <= 1.5


def test_padding_when_resize_smaller_than_crop() -> None:
    geo = compute_geometry(80, 50, {"size": 96, "resize": 60})  # torchvision pads 18 rows top/bottom
    assert geo.crop == (0, -18)
    assert valid_mask(geo).all()  # every original pixel is seen (padding is outside the image)


def test_nearest_shows_grid_cells_and_inputs_untouched() -> None:
    geo = compute_geometry(64, 64, {"size": 64, "resize": 64, "mode": "full"})
    grid = np.arange(16, dtype=np.float32).reshape(4, 4)
    before = grid.copy()
    up = grid_to_original(grid, geo, interpolation="nearest")
    assert np.array_equal(grid, before)
    assert np.array_equal(up, np.kron(grid, np.ones((16, 16), np.float32)))


def test_out_size_renders_same_map_smaller() -> None:
    geo = compute_geometry(400, 300, {"size": 96, "resize": 110})
    grid = np.random.default_rng(0).random((12, 12)).astype(np.float32)
    big = grid_to_original(grid, geo, interpolation="nearest")
    small = grid_to_original(grid, geo, out_size=(200, 150), interpolation="nearest")
    assert small.shape == (150, 200)
    assert np.mean(small == big[1::2, 1::2]) > 0.97  # same cells, sampled at half resolution
    assert np.array_equal(valid_mask(geo, (200, 150)), valid_mask(geo)[1::2, 1::2]) or \
        np.mean(valid_mask(geo, (200, 150)) == valid_mask(geo)[1::2, 1::2]) > 0.99


@pytest.mark.parametrize("interp,flag", [("bilinear", 1), ("bicubic", 2)])
def test_separable_resampling_matches_opencv_warp(interp: str, flag: int) -> None:
    """Our separable resampler == cv2.warpAffine with the same inverse affine (up to its 1/32 px grid)."""
    import cv2

    from dgml_viz.render.geometry import grid_affine

    geo = compute_geometry(517, 333, {"size": 96, "resize": 110})
    maps = np.random.default_rng(5).random((3, 12, 12)).astype(np.float32)
    ours = grid_to_original(maps, geo, interpolation=interp)
    m = grid_affine(geo, (12, 12))
    ref = np.stack([cv2.warpAffine(maps[k], m, (517, 333), flags=flag | cv2.WARP_INVERSE_MAP,
                                   borderMode=cv2.BORDER_REPLICATE) for k in range(3)])
    assert np.abs(ours - ref).max() < 0.02
