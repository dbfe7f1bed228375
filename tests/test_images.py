"""Robust decoding: every image mode people have -> uint8 RGB; every bad file -> one-line ImageError."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgml_viz.data import images as images_mod
from dgml_viz.data.images import MAX_PIXELS_ENV, decode_image, load_image
from dgml_viz.errors import ImageError


def _rgb(h: int = 40, w: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _check_rgb(arr: np.ndarray, h: int, w: int) -> None:
    assert arr.dtype == np.uint8 and arr.shape == (h, w, 3) and arr.flags.c_contiguous


def test_rgb_png_roundtrip_is_exact(tmp_path: Path) -> None:
    img = _rgb()
    Image.fromarray(img).save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    _check_rgb(out, 40, 60)
    assert np.array_equal(out, img)


def test_grayscale_becomes_three_equal_channels(tmp_path: Path) -> None:
    g = _rgb()[:, :, 0]
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = load_image(tmp_path / "g.png")
    _check_rgb(out, 40, 60)
    assert np.array_equal(out[:, :, 0], g) and np.array_equal(out[:, :, 1], g) and np.array_equal(out[:, :, 2], g)


def test_rgba_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :6, 3] = 255  # left half opaque red-ish, right half fully transparent
    rgba[:, 6:, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert np.array_equal(out[:, :6], np.broadcast_to([200, 0, 0], (10, 6, 3)))
    assert np.array_equal(out[:, 6:], np.full((10, 6, 3), 255))


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    v = np.linspace(0, 65535, 30 * 20).reshape(20, 30).astype(np.uint16)
    Image.fromarray(v).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = load_image(tmp_path / "d.png")
    _check_rgb(out, 20, 30)
    expected = np.rint(v / 257.0).astype(np.uint8)
    assert np.abs(out[:, :, 0].astype(int) - expected).max() <= 1
    assert out.max() == 255 and out.min() == 0  # full range kept (clipping would saturate at 255 early)
    assert len(np.unique(out[:, :, 0])) > 200


def test_palette_png_and_palette_transparency(tmp_path: Path) -> None:
    img = Image.fromarray(_rgb()).quantize(16)
    img.save(tmp_path / "p.png")
    out = load_image(tmp_path / "p.png")
    assert np.array_equal(out, np.asarray(img.convert("RGB")))
    img.info["transparency"] = 0
    img.save(tmp_path / "pt.png", transparency=0)
    out_t = load_image(tmp_path / "pt.png")
    idx = np.asarray(img)
    assert (out_t[idx == 0] == 255).all()  # transparent palette entry -> white


def test_exif_rotated_jpeg_is_transposed(tmp_path: Path) -> None:
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, :40] = (255, 0, 0)  # red left half (as stored)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW for display
    Image.fromarray(img).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = load_image(tmp_path / "r.jpg")
    _check_rgb(out, 80, 40)  # width/height swapped
    assert out[:35, :, 0].mean() > 200 and out[45:, :, 0].mean() < 60  # stored-left is displayed on top


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.fromarray(_rgb()).convert("CMYK").save(tmp_path / "c.jpg")
    _check_rgb(load_image(tmp_path / "c.jpg"), 40, 60)


def _one_line(exc: ImageError, name: str) -> str:
    msg = str(exc)
    assert "\n" not in msg and name in msg
    return msg


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ImageError) as ei:
        load_image(tmp_path / "e.jpg")
    assert "empty" in _one_line(ei.value, "e.jpg")


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "n.png").write_text("definitely not pixels\n" * 10)
    with pytest.raises(ImageError) as ei:
        load_image(tmp_path / "n.png")
    assert "not an image" in _one_line(ei.value, "n.png")


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_truncated(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, fmt)
    data = buf.getvalue()
    (tmp_path / f"t.{fmt}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as ei:
        load_image(tmp_path / f"t.{fmt}")
    msg = _one_line(ei.value, f"t.{fmt}")
    assert "truncated" in msg or "corrupt" in msg


def _bomb(path: Path, side: int = 400) -> None:
    Image.new("L", (side, side)).save(path)  # compresses to a few hundred bytes


def test_decompression_bomb_guard_argument_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bomb(tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size < 2000
    with pytest.raises(ImageError) as ei:
        load_image(tmp_path / "b.png", max_pixels=1000)
    assert "too large" in _one_line(ei.value, "b.png") and "160000" in str(ei.value)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(ImageError):
        load_image(tmp_path / "b.png")
    assert load_image(tmp_path / "b.png", max_pixels=160000).shape == (400, 400, 3)  # argument wins


def test_bomb_is_refused_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _bomb(tmp_path / "b.png")
    calls = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: calls.append(1) or real_load(self))
    with pytest.raises(ImageError):
        load_image(tmp_path / "b.png", max_pixels=1000)
    assert not calls


def test_permission_denied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "locked.png"
    Image.fromarray(_rgb()).save(p)
    if os.geteuid() != 0:  # real permissions work when not root
        p.chmod(0)
        try:
            with pytest.raises(ImageError) as ei:
                load_image(p)
        finally:
            p.chmod(0o644)
        assert "permission denied" in _one_line(ei.value, "locked.png")

    def deny(path: object, *a: object, **k: object) -> object:  # root ignores chmod: simulate EACCES
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(images_mod, "open", deny, raising=False)
    with pytest.raises(ImageError) as ei:
        load_image(p)
    assert "permission denied" in _one_line(ei.value, "locked.png")


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        load_image(tmp_path)


def test_decode_bytes_names_the_source() -> None:
    with pytest.raises(ImageError, match="upload.png: not an image"):
        decode_image(b"xxxx", name="upload.png")
