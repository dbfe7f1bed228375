"""The OpenCV fast decode returns exactly Pillow's pixels, and the eval transform exactly the tensor of
the PIL formulation, on PNG and JPEG files written by Pillow and by OpenCV (never by our code).
Files the fast path must not take (alpha, palettes, 16 bits, rotation, CMYK, trailing bytes, damage)
go through Pillow: same result, same errors."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from skimage import data as skdata

from dgml_viz.data import images
from dgml_viz.data.transforms import apply_transform, compute_geometry
from dgml_viz.errors import ImageError


def _photo(h: int, w: int) -> np.ndarray:
    """A natural image crop (smooth regions + edges) of any size."""
    base = np.concatenate([skdata.astronaut()[:400], skdata.coffee()], axis=1)
    return np.ascontiguousarray(cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA))


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pil(arr: np.ndarray, fmt: str, mode: str = "RGB", **kw: object) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(arr)
    (img if mode == "RGB" else img.convert(mode)).save(buf, fmt, **kw)
    return buf.getvalue()


def _cv(arr: np.ndarray, ext: str, params: list[int] | None = None, grey: bool = False) -> bytes:
    img = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY) if grey else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(ext, img, params or [])
    assert ok
    return buf.tobytes()


def _png_info(*chunks: tuple[bytes, bytes], text: dict[str, str] | None = None) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for kind, payload in chunks:
        info.add(kind, payload)
    for k, v in (text or {}).items():
        info.add_text(k, v)
    return info


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "camera"
    return exif.tobytes()


FAST = {  # name -> encoded bytes the fast path must take
    "pil-png-rgb-photo": lambda: _pil(_photo(61, 83), "PNG"),
    "pil-png-rgb-noise-level0": lambda: _pil(_noise(40, 33), "PNG", compress_level=0),
    "pil-png-rgb-level9": lambda: _pil(_photo(128, 128), "PNG", compress_level=9),
    "pil-png-grey": lambda: _pil(_photo(50, 70), "PNG", "L"),
    "pil-png-gamma-srgb-phys-text": lambda: _pil(_photo(45, 64), "PNG", dpi=(72, 72), pnginfo=_png_info(
        (b"gAMA", struct.pack(">I", 45455)), (b"sRGB", b"\0"), text={"Software": "x"})),
    "pil-png-gamma-1": lambda: _pil(_photo(32, 48), "PNG", pnginfo=_png_info((b"gAMA", struct.pack(">I", 100000)))),
    "cv-png-rgb": lambda: _cv(_photo(77, 51), ".png"),
    "cv-png-huffman": lambda: _cv(_photo(128, 128), ".png", [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
                                                             cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY]),
    "cv-png-grey": lambda: _cv(_photo(40, 40), ".png", grey=True),
    "pil-jpg-q90-420": lambda: _pil(_photo(300, 451), "JPEG", quality=90),
    "pil-jpg-q50-422-odd": lambda: _pil(_photo(37, 61), "JPEG", quality=50, subsampling=1),
    "pil-jpg-q100-444": lambda: _pil(_photo(64, 96), "JPEG", quality=100, subsampling=0),
    "pil-jpg-progressive-optimized": lambda: _pil(_photo(129, 131), "JPEG", quality=85, progressive=True,
                                                  optimize=True),
    "pil-jpg-grey": lambda: _pil(_photo(50, 70), "JPEG", "L", quality=90),
    "pil-jpg-exif-orientation-1-icc-comment": lambda: _pil(
        _photo(48, 64), "JPEG", quality=92, exif=_exif(1), comment=b"hello",
        icc_profile=b"\0" * 128),
    "pil-jpg-noise": lambda: _pil(_noise(33, 47), "JPEG", quality=75),
    "cv-jpg-q92": lambda: _cv(_photo(128, 128), ".jpg", [cv2.IMWRITE_JPEG_QUALITY, 92]),
    "cv-jpg-progressive-444-restarts": lambda: _cv(_photo(99, 140), ".jpg", [
        cv2.IMWRITE_JPEG_PROGRESSIVE, 1, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
        cv2.IMWRITE_JPEG_RST_INTERVAL, 2]),
    "cv-jpg-411": lambda: _cv(_photo(64, 80), ".jpg", [cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411]),
    "cv-jpg-grey": lambda: _cv(_photo(64, 80), ".jpg", grey=True),
    "skimage-chelsea-jpg": lambda: _pil(skdata.chelsea(), "JPEG", quality=90),
}

SLOW = {  # the fast path must decline these (Pillow decodes them, or refuses them)
    "pil-png-rgba": lambda: _pil(np.dstack([_noise(20, 30), np.full((20, 30), 128, np.uint8)]), "PNG"),
    "pil-png-palette": lambda: _pil(_photo(30, 30), "PNG", "P"),
    "pil-png-16bit": lambda: _pil((np.arange(600, dtype=np.uint16).reshape(20, 30) * 100), "PNG"),
    "pil-png-rgb-trns": lambda: _pil(_photo(20, 20), "PNG", transparency=(0, 0, 0)),
    "pil-png-exif": lambda: _pil(_photo(20, 24), "PNG", exif=_exif(6)),
    "pil-png-xmp-text": lambda: _pil(_photo(20, 24), "PNG", pnginfo=_png_info(text={"XML:com.adobe.xmp": "<x/>"})),
    "pil-png-1bit": lambda: _pil(_photo(20, 24), "PNG", "1"),
    "pil-jpg-rotated": lambda: _pil(_photo(40, 80), "JPEG", exif=_exif(6)),
    "pil-jpg-mirrored": lambda: _pil(_photo(40, 80), "JPEG", exif=_exif(2)),
    "pil-jpg-cmyk": lambda: _pil(_photo(40, 60), "JPEG", "CMYK"),
    "pil-jpg-trailing-bytes": lambda: _pil(_photo(40, 60), "JPEG") + b"\0\0junk",
    "pil-png-trailing-bytes": lambda: _pil(_photo(40, 60), "PNG") + b"junk",
    "pil-webp": lambda: _pil(_photo(40, 60), "WEBP"),
    "cv-bmp": lambda: _cv(_photo(40, 60), ".bmp"),
}


def _reference(data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
    """What the decoder returned before the fast path: Pillow's."""
    return images._decode_pil(data, "ref", images.DEFAULT_MAX_PIXELS, None)


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_decode_is_pillows_pixels_and_tensor(name: str) -> None:
    data = FAST[name]()
    fast = images._decode_fast(data, images.DEFAULT_MAX_PIXELS, None)
    assert fast is not None, f"{name}: the fast path declined a file it is meant for"
    ref, size = _reference(data)
    assert fast.dtype == np.uint8 and fast.flags.c_contiguous and fast.shape == ref.shape
    assert np.array_equal(fast, ref), f"{name}: {np.count_nonzero(fast != ref)} values differ"
    out = images.decode_image(data)
    assert np.array_equal(out, ref) and (out.shape[1], out.shape[0]) == size
    for t in ({"size": 32, "resize": 36, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
              {"size": ref.shape[0], "resize": ref.shape[0], "mean": [0.5] * 3, "std": [0.25] * 3, "mode": "full"}):
        geo = compute_geometry(ref.shape[1], ref.shape[0], t)
        crop = np.asarray(Image.fromarray(ref).resize(geo.resized, Image.BILINEAR).crop(
            (geo.crop[0], geo.crop[1], geo.crop[0] + geo.size, geo.crop[1] + geo.size))) \
            if geo.resized != (ref.shape[1], ref.shape[0]) else ref
        m = np.asarray(t["mean"], dtype=np.float32) * 255.0
        sd = np.asarray(t["std"], dtype=np.float32) * 255.0
        expected = ((crop.astype(np.float32) - m) / sd).transpose(2, 0, 1)  # the PIL-era formulation
        got = apply_transform(out, geo, {"interpolation": "bilinear", **t}).numpy()
        assert got.dtype == np.float32 and np.array_equal(got, expected), name


@pytest.mark.parametrize("name", sorted(SLOW))
def test_other_files_go_through_pillow(name: str) -> None:
    data = SLOW[name]()
    assert images._decode_fast(data, images.DEFAULT_MAX_PIXELS, None) is None
    assert np.array_equal(images.decode_image(data), _reference(data)[0])


def _corrupt_png_text_crc(data: bytes) -> bytes:
    """A PIL PNG with one tEXt chunk whose CRC is wrong (Pillow refuses it; libpng would only warn)."""
    chunk = b"tEXt" + b"k\0v"
    bad = struct.pack(">I", 3) + chunk + struct.pack(">I", zlib.crc32(chunk) ^ 1)
    return data[:33] + bad + data[33:]


@pytest.mark.parametrize("damage", ["truncated-png", "truncated-jpg", "png-bad-text-crc", "jpg-cut-after-header"])
def test_damaged_files_keep_pillows_errors(damage: str) -> None:
    png, jpg = _pil(_photo(64, 64), "PNG"), _pil(_photo(64, 64), "JPEG")
    data = {"truncated-png": png[: len(png) // 2], "truncated-jpg": jpg[: len(jpg) // 2],
            "png-bad-text-crc": _corrupt_png_text_crc(png), "jpg-cut-after-header": jpg[:700] + b"\xff\xd9"}[damage]
    assert images._decode_fast(data, images.DEFAULT_MAX_PIXELS, None) is None or damage == "jpg-cut-after-header"
    try:
        ref = _reference(data)[0]
    except ImageError as exc:
        with pytest.raises(ImageError) as ei:
            images.decode_image(data, name="x.img")
        assert str(ei.value).split(":", 1)[1] == str(exc).split(":", 1)[1]
    else:
        assert np.array_equal(images.decode_image(data), ref)


def test_limits_and_reduction_still_apply() -> None:
    data = _pil(_photo(40, 50), "PNG")
    assert images._decode_fast(data, 1999, None) is None  # over the bomb limit: Pillow's header check refuses
    with pytest.raises(ImageError, match="too large"):
        images.decode_image(data, max_pixels=1999)
    assert images._decode_fast(data, images.DEFAULT_MAX_PIXELS, 400) is None  # a reduced decode: Pillow's reduce()
    small, size = images._decode(data, "x", None, 400)
    assert size == (50, 40) and small.shape == (20, 25, 3)


@pytest.mark.parametrize("hw", [(1, 1), (1, 7), (13, 1), (37, 50), (224, 224)])
@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_normalise_is_the_float32_formula(hw: tuple[int, int], order: str) -> None:
    from dgml_viz.data.transforms import normalise

    rng = np.random.default_rng(hw[0] * 31 + hw[1])
    crop = rng.integers(0, 256, (hw[0], hw[1] * 2, 3), dtype=np.uint8)[:, ::2]  # a strided view
    mean, std = rng.uniform(0, 1, 3).tolist(), rng.uniform(0.05, 1, 3).tolist()
    src = crop[:, :, ::-1] if order == "BGR" else crop
    m, sd = np.asarray(mean, dtype=np.float32) * 255.0, np.asarray(std, dtype=np.float32) * 255.0
    expected = np.ascontiguousarray(((src.astype(np.float32) - m) / sd).transpose(2, 0, 1))
    before = crop.copy()
    got = normalise(crop, mean, std, order)
    assert got.numpy().dtype == np.float32 and got.is_contiguous() and np.array_equal(got.numpy(), expected)
    assert np.array_equal(crop, before)  # input untouched


def test_geometry_to_dict_is_every_field_in_order() -> None:
    import dataclasses

    from dgml_viz.data.transforms import Geometry

    geo = Geometry((640, 427), (383.5, 256.25), (-3, 16), 224, "full", True)
    expected = {f.name: (list(v) if isinstance(v := getattr(geo, f.name), tuple) else v)
                for f in dataclasses.fields(Geometry)}
    assert geo.to_dict() == expected and list(geo.to_dict()) == list(expected)
    assert Geometry.from_dict(geo.to_dict()) == geo
