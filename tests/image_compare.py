"""Golden-image comparison that survives library drift and still catches regressions.

Anti-aliasing, font hinting and PNG encoders move a handful of pixels by a level or two
between matplotlib / Pillow / OpenCV releases; a changed panel, colour map or layout moves
thousands by much more. So, as matplotlib's own image tests do, compare numerically:

- at most ``max_fraction`` of the pixels (0.1 %) may differ by more than ``level`` (2 levels
  of 255) in any channel, and
- the RMS difference over all channels stays below ``max_rms`` (0.5 levels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def image_difference(a: np.ndarray, b: np.ndarray, level: int = 2) -> tuple[float, float, int]:
    """(fraction of pixels off by more than ``level``, RMS difference, max difference) of two
    uint8 images of one shape ``[H, W]`` or ``[H, W, C]``."""
    d = np.abs(a.astype(np.int16) - b.astype(np.int16))
    per_pixel = d.max(axis=-1) if d.ndim == 3 else d
    frac = float((per_pixel > level).mean())
    rms = float(np.sqrt((d.astype(np.float64) ** 2).mean()))
    return frac, rms, int(d.max(initial=0))


def assert_images_close(new: Path, old: Path, regenerate: str, *, level: int = 2,
                        max_fraction: float = 1e-3, max_rms: float = 0.5) -> None:
    """Fail with a message naming ``old`` and how to ``regenerate`` it unless ``new`` is close."""
    if new.read_bytes() == old.read_bytes():
        return
    a, b = np.asarray(Image.open(new)), np.asarray(Image.open(old))
    hint = f"regenerate {old} with: {regenerate}"
    assert a.shape == b.shape, f"{old.name}: size {a.shape} vs shipped {b.shape}; {hint}"
    frac, rms, peak = image_difference(a, b, level)
    assert frac <= max_fraction and rms <= max_rms, (
        f"{old.name} differs from the shipped file: {frac:.4%} of pixels off by > {level} levels "
        f"(allowed {max_fraction:.2%}), RMS {rms:.3f} (allowed {max_rms}), max {peak}; {hint}")
