"""The golden-image tolerance lets library drift through and stops real regressions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from image_compare import assert_images_close, image_difference


def _save(tmp: Path, name: str, img: np.ndarray) -> Path:
    path = tmp / name
    Image.fromarray(img).save(path)
    return path


@pytest.fixture()
def photo() -> np.ndarray:
    return data.astronaut()[:200, :300].copy()


def test_drift_of_a_few_pixels_passes(tmp_path: Path, photo: np.ndarray) -> None:
    drift = photo.copy()
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, 200, 7), rng.integers(0, 300, 7)
    drift[ys, xs] = np.clip(drift[ys, xs].astype(int) + 2, 0, 255).astype(np.uint8)  # as seen: 7 px, <= 2
    assert_images_close(_save(tmp_path, "a.png", drift), _save(tmp_path, "b.png", photo), "make gallery")


@pytest.mark.parametrize("change", ["panel", "colormap", "shift"])
def test_real_regressions_fail(tmp_path: Path, photo: np.ndarray, change: str) -> None:
    bad = photo.copy()
    if change == "panel":  # one 20x20 panel corner redrawn (0.67 % of the pixels)
        bad[:20, :20] = 255 - bad[:20, :20]
    elif change == "colormap":  # a uniform shift of 3 levels everywhere
        bad = np.clip(bad.astype(int) + 3, 0, 255).astype(np.uint8)
    else:  # layout moved by one pixel
        bad = np.roll(bad, 1, axis=1)
    with pytest.raises(AssertionError, match="regenerate .*b.png with: make gallery"):
        assert_images_close(_save(tmp_path, "a.png", bad), _save(tmp_path, "b.png", photo), "make gallery")


def test_size_change_fails(tmp_path: Path, photo: np.ndarray) -> None:
    with pytest.raises(AssertionError, match="size"):
        assert_images_close(_save(tmp_path, "a.png", photo[:-1]), _save(tmp_path, "b.png", photo), "x")


def test_difference_known_answer() -> None:
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    b[0, 0, 1] = 3  # one pixel of 100 off by 3 in one channel
    frac, rms, peak = image_difference(a, b)
    assert frac == pytest.approx(0.01) and peak == 3
    assert rms == pytest.approx(np.sqrt(9 / 300))
