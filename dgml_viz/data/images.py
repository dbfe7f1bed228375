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
