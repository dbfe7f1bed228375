"""Robust image decoding: any file people have -> ``uint8 [H, W, 3]`` RGB, or a one-line error.

:func:`load_image` (a path) and :func:`decode_image` (bytes, e.g. an upload)
handle grayscale, RGBA/LA/palette transparency (composited over white),
16-bit and 32-bit integer images (scaled, not clipped), CMYK, and EXIF
orientation (the pixels are transposed so the image looks as a viewer shows
it). Every expected failure raises :class:`~dgml_viz.errors.ImageError` with a
one-line message naming the file: empty file, missing file, permission denied,
not an image, truncated/corrupt data, or an image whose pixel count exceeds
the decompression-bomb limit.

The limit is ``max_pixels`` when given, else the ``DGML_VIZ_MAX_PIXELS``
environment variable, else :data:`DEFAULT_MAX_PIXELS` (Pillow's own default,
about 179 megapixels). The check reads only the header, so a bomb is refused
before any pixel is decoded.

Speed: the common files (8-bit RGB or grey PNG, baseline or progressive 8-bit JPEG, no
transparency and no EXIF/XMP rotation) are decoded by OpenCV (libpng, libjpeg-turbo; ~1.2x
faster than Pillow on a 128 px PNG, ~2x on a 500 px JPEG) into the very pixels Pillow returns;
the header is read first (:func:`_fast_header`) and anything else — other modes, alpha,
palettes, 16 bits, rotation, CMYK, arithmetic or lossless JPEG, trailing bytes, a structure
that does not check out — goes through Pillow as before, errors included
(``tests/test_decode_parity.py`` compares both decoders on files written by Pillow and OpenCV).

:func:`load_image_reduced` is the memory-bounded variant for rendering: an image
with more pixels than ``target_pixels`` is decoded at an integer fraction of its
size that still has at least ``target_pixels`` (JPEG: scaled in the DCT decoder,
``Image.draft``; other formats: ``Image.reduce`` right after decoding, before any
RGB copy), and the true, EXIF-corrected size is returned with it.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "photo.png")
    >>> Image.new("L", (40, 30), 128).save(path)   # grey PNG: decoded as RGB
    >>> img = load_image(path)
    >>> img.dtype, img.shape
    (dtype('uint8'), (30, 40, 3))
"""
from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dgml_viz.errors import ImageError

logger = logging.getLogger(__name__)

#: Pillow's default ``Image.MAX_IMAGE_PIXELS`` (~179 Mpx).
DEFAULT_MAX_PIXELS: int = 178_956_970
#: Environment variable overriding the default decompression-bomb limit.
MAX_PIXELS_ENV = "DGML_VIZ_MAX_PIXELS"
#: File suffixes treated as images when scanning folders.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".jfif"}
)


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    """The decompression-bomb limit in pixels: argument, else env var, else the default."""
    if max_pixels is not None:
        return int(max_pixels)
    env = os.environ.get(MAX_PIXELS_ENV)
    if env:
        try:
            return int(float(env))
        except ValueError:
            logger.warning("ignoring invalid %s=%r", MAX_PIXELS_ENV, env)
    return DEFAULT_MAX_PIXELS


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def read_bytes(path: str | os.PathLike[str]) -> bytes:
    """Read a file, turning OS errors into one-line :class:`ImageError` s."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        raise ImageError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{p}: is a directory, not an image") from None
    except PermissionError:
        raise ImageError(f"{p}: permission denied") from None
    except OSError as exc:
        raise ImageError(f"{p}: cannot read ({exc.strerror or _first_line(exc)})") from None


def load_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> np.ndarray:
    """Decode the image at ``path`` to ``uint8 [H, W, 3]`` RGB (see module docstring).

    Raises:
        ImageError: one line naming ``path`` and the problem.
    """
    return decode_image(read_bytes(path), name=str(path), max_pixels=max_pixels)


def load_image_reduced(path: str | os.PathLike[str], max_pixels: int | None = None,
                       target_pixels: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` to ``uint8 [h, w, 3]`` RGB, shrunk by an integer factor when it has more than
    ``target_pixels`` pixels (``h * w`` stays ``>= target_pixels``); also returns the image's true
    ``(W, H)`` as a viewer shows it. ``target_pixels=None`` decodes in full (same as :func:`load_image`).

    Raises:
        ImageError: one line naming ``path`` and the problem.
    """
    return _decode(read_bytes(path), str(path), max_pixels, target_pixels)


def _reduction(w: int, h: int, target_pixels: int | None) -> int:
    """The largest integer factor ``f`` with ``(w // f) * (h // f) >= target_pixels`` (1 when none is needed)."""
    if not target_pixels or target_pixels <= 0 or w * h <= target_pixels:
        return 1
    f = max(1, int((w * h / target_pixels) ** 0.5))
    while f > 1 and (w // f) * (h // f) < target_pixels:
        f -= 1
    return f


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to ``uint8 [H, W, 3]`` RGB; ``name`` appears in errors."""
    return _decode(data, name, max_pixels, None)[0]


def _decode(data: bytes, name: str, max_pixels: int | None,
            target_pixels: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    if len(data) == 0:
        raise ImageError(f"{name}: file is empty (0 bytes)")
    limit = resolve_max_pixels(max_pixels)
    fast = _decode_fast(data, limit, target_pixels)
    if fast is not None:
        return fast, (fast.shape[1], fast.shape[0])
    return _decode_pil(data, name, limit, target_pixels)


def _decode_pil(data: bytes, name: str, limit: int, target_pixels: int | None) -> tuple[np.ndarray, tuple[int, int]]:
    """Pillow's decode (every format and mode, EXIF rotation, reduction; every expected error)."""
    try:
        img = Image.open(io.BytesIO(data))  # header only
        w, h = img.size
        if w * h > limit:
            raise ImageError(
                f"{name}: image too large ({w}x{h} = {w * h} pixels > limit {limit}; "
                f"possible decompression bomb - raise the limit with --max-pixels or {MAX_PIXELS_ENV})"
            )
        swap = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # EXIF orientations that turn the image
        factor = _reduction(w, h, target_pixels)
        if factor > 1 and img.format == "JPEG":
            img.draft(img.mode, (-(-w // factor), -(-h // factor)))  # DCT scaling: 1/2, 1/4 or 1/8
        img.load()
        factor = _reduction(img.size[0], img.size[1], target_pixels)
        if factor > 1:
            try:
                img = img.reduce(factor)
            except ValueError:  # a mode reduce() does not take (palette, 1-bit, 16-bit): convert first
                img = Image.fromarray(to_rgb_uint8(img)).reduce(factor)
        img = ImageOps.exif_transpose(img) or img
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: image too large for Pillow's decompression-bomb guard ({_first_line(exc)})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error) as exc:
        msg = _first_line(exc)
        kind = "truncated" if "truncat" in msg.lower() else "corrupt"
        raise ImageError(f"{name}: {kind} image data ({msg})") from None
    except MemoryError:
        raise ImageError(f"{name}: out of memory while decoding") from None
    return to_rgb_uint8(img), ((h, w) if swap else (w, h))


# --------------------------------------------------------------------------- OpenCV fast path
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG chunks that change nothing in what Pillow returns for an 8-bit RGB/grey image (a text chunk
#: only when small and not XMP/EXIF: Pillow reads rotation from those and caps text sizes)
_PNG_BENIGN = frozenset({b"IDAT", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"sBIT", b"bKGD", b"tIME", b"tEXt", b"PLTE"})
#: JPEG markers allowed before the scan: APP0 (JFIF), APP1 (EXIF, parsed), APP2 (ICC only), APP14 (Adobe),
#: COM, DQT, DHT, DRI; SOF0/1/2 (Huffman, 8-bit, 1 or 3 components) are read
_JPEG_BENIGN = frozenset({0xE0, 0xE1, 0xE2, 0xEE, 0xFE, 0xDB, 0xC4, 0xDD})


def _png_size(data: bytes) -> tuple[int, int] | None:
    """``(W, H)`` of a PNG the fast path decodes exactly as Pillow (8-bit RGB or grey, no tRNS/eXIf/
    animation/compressed text, ancillary CRCs valid, nothing after IEND), else None."""
    if not data.startswith(_PNG_SIGNATURE) or data[8:16] != b"\0\0\0\x0dIHDR" or len(data) < 45:
        return None
    w, h, depth, colour, comp, filt, interlace = struct.unpack_from(">IIBBBBB", data, 16)
    if depth != 8 or colour not in (0, 2) or comp or filt or interlace > 1:
        return None
    pos, n = 8, len(data)
    while pos + 12 <= n:
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > n:
            return None
        if kind == b"IEND":
            return (w, h) if end == n and w and h else None
        if kind != b"IHDR" or pos != 8:
            if kind not in _PNG_BENIGN or (kind == b"tEXt" and (length > 1 << 16 or data[pos + 8:pos + 12] in (
                    b"XML:", b"Raw "))) or (kind == b"PLTE" and colour == 0):
                return None
        if kind != b"IDAT" and zlib.crc32(data[pos + 4:end - 4]) != struct.unpack_from(">I", data, end - 4)[0]:
            return None  # Pillow refuses a bad ancillary CRC; libpng would only warn
        pos = end
    return None


def _exif_orientation(tiff: bytes) -> int | None:
    """The orientation tag of an EXIF block's first IFD (1 when absent); None when it does not parse."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    magic, ifd = struct.unpack_from(order + "HI", tiff, 2)
    if magic != 42 or ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack_from(order + "H", tiff, ifd)
    if ifd + 2 + 12 * count > len(tiff):
        return None
    for i in range(count):
        tag, kind, num = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * i)
        if tag == 0x0112:
            return struct.unpack_from(order + "H", tiff, ifd + 10 + 12 * i)[0] if kind == 3 and num == 1 else None
    return 1


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(W, H)`` of a JPEG the fast path decodes exactly as Pillow (8-bit Huffman, 1 or 3 components,
    no EXIF rotation, no XMP, ends with EOI), else None."""
    if not data.startswith(b"\xff\xd8") or not data.endswith(b"\xff\xd9"):
        return None
    pos, n, size, exif_seen = 2, len(data), None, False
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        seg = data[pos + 4:pos + 2 + length]
        if marker == 0xDA:
            return size
        if marker in (0xC0, 0xC1, 0xC2):
            if size is not None or len(seg) < 6 or seg[0] != 8 or seg[5] not in (1, 3):
                return None
            h, w = struct.unpack_from(">HH", seg, 1)
            size = (w, h) if w and h else None
            if size is None:
                return None
        elif marker not in _JPEG_BENIGN or (marker == 0xE1 and (not seg.startswith(b"Exif\0\0") or exif_seen)) \
                or (marker == 0xE2 and not seg.startswith(b"ICC_PROFILE\0")):
            return None  # other SOFs, APPn, XMP, a second EXIF, MPO
        elif marker == 0xE1:
            exif_seen = True
            if _exif_orientation(seg[6:]) not in range(0, 2):
                return None  # rotated (2-8) or unparsed: Pillow transposes
        pos += 2 + length
    return None


def _decode_fast(data: bytes, limit: int, target_pixels: int | None) -> np.ndarray | None:
    """OpenCV's decode of ``data`` when it is one of the files it decodes exactly as Pillow (see the
    module docstring) within the pixel limits and needing no reduction; None otherwise (Pillow
    decides, errors included)."""
    size = _png_size(data) if data[:1] == b"\x89" else _jpeg_size(data) if data[:1] == b"\xff" else None
    if size is None:
        return None
    pixels = size[0] * size[1]
    if pixels > limit or (Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS) or \
            _reduction(size[0], size[1], target_pixels) > 1:
        return None
    import cv2

    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error:
        return None
    if image is None or image.shape != (size[1], size[0], 3) or image.dtype != np.uint8:
        return None
    return image


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to ``uint8 [H, W, 3]`` RGB.

    Transparent pixels are composited over white; 16/32-bit integer data is
    scaled to 8 bits (``I;16``: ``v / 257``; ``I``: by its own maximum when
    above 255); float images are clipped to ``[0, 1]`` or ``[0, 255]``.
    """
    mode = img.mode
    if mode in ("RGB",):
        return np.asarray(img, dtype=np.uint8).copy()
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        if mode.startswith("I;16"):
            arr = arr / 257.0
        elif mode == "I":
            top = float(arr.max()) if arr.size else 0.0
            arr = arr / 257.0 if top > 255 and top <= 65535 else (arr * (255.0 / top) if top > 65535 else arr)
        else:  # F
            top = float(np.nanmax(arr)) if arr.size else 0.0
            arr = arr * 255.0 if top <= 1.0 else arr
        gray = np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info) \
        or (mode in ("L", "RGB") and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def is_image_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` has an image suffix (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


__all__ = ["load_image", "load_image_reduced", "decode_image", "read_bytes", "to_rgb_uint8", "resolve_max_pixels",
           "is_image_file",
           "DEFAULT_MAX_PIXELS", "MAX_PIXELS_ENV", "IMAGE_SUFFIXES"]
