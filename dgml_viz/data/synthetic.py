"""A synthetic parts benchmark with a ground-truth mask per part.

Every image holds one *object* made of ``P = 3`` part types — the red, the green
and the blue part, each a filled shape — and each part's *attribute* is its
shape, one of ``A = 4`` (circle, square, triangle, diamond). Parts sit at random,
non-overlapping positions and scales on a cluttered background. The class is the
combination of the three part shapes (``A**P = 64`` classes).

What makes the benchmark a test of *localisation*:

* distractors reuse the same colours, shapes and stripe textures: hollow
  outlines of the four attribute shapes in the palette colours (the three part
  colours and yellow), and thin clutter lines in palette colours. Neither the
  image's colours (always the same three part colours) nor its bag of shapes
  tells the class: a part's attribute can only be read where that part is,
  by binding shape, colour and "filled" at one location;
* a part type is found by a cue that the key convolution picks up readily (its
  colour, and being filled), while its attribute (its shape) needs a read-out of
  the part itself: an attention group that keeps to one part type reads that
  part's attribute cleanly, one that spreads over the image averages the parts
  and the same-coloured distractors together;
* parts are far apart relative to the 43 px receptive field of the stride-8
  ``small_cnn`` backbone (default 128 px images; at least ``0.3 * S`` of empty
  space between two parts, radii ``0.09-0.12 * S``), so a feature position sees
  at most one part; 4 distractors and 8 clutter lines per image;
* train and test classes are disjoint (32 each): a class is ``train`` when the
  sum of its attribute indices is even. Every (part, shape) value and every
  pair of (part, shape) values occurs in both splits, so the test classes are
  *new combinations of known parts*.

(The first version of this benchmark used shapes as part types and colours as
attributes; the attention keys then locked onto colours — a group attended to
"the red or yellow thing", whichever part that was — so no group kept to one
part. See ``bench/demo_notes_synthetic.md``.)

Rendered items are cached in memory (uint8 image + part map) unless
``cache=False``; train with ``num_workers: 0`` so the cache survives epochs.

Generation is deterministic: item ``i`` of a split is drawn from a NumPy
generator seeded with ``(seed, split, i)``, so any item can be regenerated on
its own, in any order, by any worker. Part masks are for evaluation only.

Item contract (see CONVENTIONS.md)::

    {"image": float [3, S, S] normalised with ``dataset.transform``,
     "label": int in 0..31 (contiguous within the split),
     "part_masks": bool [P, S, S] (pixel masks, after occlusion),
     "keypoints": float [P, 3] part centres (x, y, visible=1) in pixels,
     "index": int}

Example:
    >>> ds = SyntheticParts("train", seed=0, image_size=64, samples_per_class=2)
    >>> item = ds[0]
    >>> item["image"].shape, item["part_masks"].shape
    (torch.Size([3, 64, 64]), torch.Size([3, 64, 64]))
"""
from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from dgml_viz.errors import DatasetError

logger = logging.getLogger(__name__)

#: Attribute values: RGB colours in [0, 1]; the first three are the part colours.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.15, 0.15),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.85, 0.10),
}
COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)
_COLOURS = np.array(list(PALETTE.values()), dtype=np.float32)  # [4, 3]
#: Part types, named by their (fixed) colour; part ``p`` is painted ``PALETTE[PART_NAMES[p]]``.
PART_NAMES: tuple[str, ...] = ("red", "green", "blue")
#: Attribute values: the shape of a part (distractors are hollow outlines of the same shapes).
SHAPE_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

#: Normalisation of the generated images (stored in checkpoints as ``transform``).
MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
STD: tuple[float, float, float] = (0.25, 0.25, 0.25)

_MEAN_NP = np.array(MEAN, np.float32)
_STD_NP = np.array(STD, np.float32)
_SPLIT_CODES = {"train": 0, "test": 1}


def synthetic_transform(image_size: int = 128) -> dict[str, Any]:
    """The checkpoint ``transform`` dict for models trained on this benchmark."""
    return {"size": image_size, "resize": image_size, "mean": list(MEAN), "std": list(STD), "mode": "full"}


def class_attributes(split: str) -> list[tuple[int, ...]]:
    """Attribute tuples ``(shape of red, shape of green, shape of blue)`` of a split's classes, label order.

    ``train``: the 32 combinations whose index sum is even; ``test``: the 32 odd ones.
    """
    if split not in _SPLIT_CODES:
        raise DatasetError(f"synthetic parts: unknown split {split!r}; choose train or test")
    combos = itertools.product(range(len(SHAPE_NAMES)), repeat=len(PART_NAMES))
    parity = _SPLIT_CODES[split]
    return [c for c in combos if sum(c) % 2 == parity]


def class_name(attributes: tuple[int, ...]) -> str:
    """``"red=circle,green=diamond,blue=square"``."""
    return ",".join(f"{p}={SHAPE_NAMES[a]}" for p, a in zip(PART_NAMES, attributes))


# ----------------------------------------------------------------------------- shapes
def shape_mask(kind: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Bool mask of a shape of radius ``r`` centred at ``(cx, cy)`` on pixel grids ``xx, yy``."""
    dx, dy = xx - cx, yy - cy
    if kind == "circle":
        return dx * dx + dy * dy <= r * r
    if kind == "square":
        s = 0.85 * r
        return (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if kind == "triangle":  # apex up, base at cy + 0.75 r, half width r
        top, base = cy - r, cy + 0.75 * r
        t = (yy - top) / (base - top)  # 0 at apex, 1 at base
        return (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r)
    if kind == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if kind == "cross":
        w = 0.32 * r
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    if kind == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.1 * r
    raise ValueError(f"unknown shape {kind!r}")


@dataclass(frozen=True)
class Scene:
    """One generated image before normalisation."""

    rgb: np.ndarray  # [S, S, 3] float32 in [0, 1]
    part_masks: np.ndarray  # [P, S, S] bool
    centres: np.ndarray  # [P, 2] (x, y) pixels
    radii: np.ndarray  # [P] part radii in pixels (``shape_mask`` argument)
    distractors: tuple[tuple[str, str], ...] = ()  # (shape, colour name) of each hollow distractor


def _place(rng: np.random.Generator, radii: np.ndarray, size: int, gaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping centres ``[n, 2]`` for discs of ``radii``, in order.

    Shape ``i`` keeps at least ``gaps[i, j]`` pixels of empty space to every
    earlier shape ``j`` (rejection sampling, 64 candidates at a time). When the
    canvas is too crowded all radii shrink by 5% and placement restarts.
    Returns ``(centres, radii)``.
    """
    for _ in range(100):
        centres = np.zeros((len(radii), 2))
        for i, r in enumerate(radii):
            cand = rng.uniform(r + 1, size - r - 1, size=(64, 2))
            need = radii[:i] + r + gaps[i, :i]  # [i]
            dist = np.linalg.norm(cand[:, None, :] - centres[None, :i, :], axis=-1)  # [64, i]
            ok = np.flatnonzero((dist >= need).all(axis=1))
            if len(ok) == 0:
                break
            centres[i] = cand[ok[0]]
        else:
            return centres, radii
        radii = radii * 0.95
    raise RuntimeError("cannot place shapes")  # pragma: no cover - unreachable for sane sizes


def render_scene(
    rng: np.random.Generator,
    attributes: tuple[int, ...],
    size: int = 128,
    distractors: int = 4,
    part_scale: tuple[float, float] = (0.09, 0.12),
    gap: float = 0.08,
    part_gap: float = 0.3,
    clutter_lines: int = 8,
) -> Scene:
    """Draw one object (part ``p`` in colour ``p``, shaped by ``attributes[p]``) with distractors and clutter.

    ``part_scale`` is the range of shape radii, ``gap`` the smallest empty space
    between two shapes and ``part_gap`` that between two parts of the object
    (so one receptive field rarely holds two parts), all fractions of ``size``.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    # Background: grey level + low-frequency blotches + pixel noise.
    base = rng.uniform(0.3, 0.6)
    low = rng.normal(0.0, 0.08, size=(4, 4, 3)).astype(np.float32)
    low = np.kron(low, np.ones((size // 4 + 1, size // 4 + 1, 1), np.float32))[:size, :size]
    img = np.clip(base + low + rng.normal(0.0, 0.04, size=(size, size, 3)), 0, 1).astype(np.float32)
    # Clutter: thin lines in palette colours.
    for _ in range(clutter_lines):
        p0, p1 = rng.integers(0, size, size=2), rng.integers(0, size, size=2)
        line = np.zeros((size, size), np.uint8)
        cv2.line(line, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 1, 1)
        m = line.astype(bool)
        img[m] = 0.5 * img[m] + 0.5 * _COLOURS[rng.integers(len(_COLOURS))]

    n_parts = len(attributes)
    kinds = [SHAPE_NAMES[a] for a in attributes] + list(rng.choice(SHAPE_NAMES, size=distractors))
    colours = list(range(n_parts)) + list(rng.integers(len(_COLOURS), size=distractors))
    radii = rng.uniform(part_scale[0], part_scale[1], size=len(kinds)) * size
    gaps = np.full((len(kinds), len(kinds)), gap * size)
    gaps[:n_parts, :n_parts] = part_gap * size
    centres, radii = _place(rng, radii, size, gaps)
    masks = np.zeros((len(kinds), size, size), dtype=bool)
    for i, (kind, colour, r, (cx, cy)) in enumerate(zip(kinds, colours, radii, centres)):
        # Draw inside the shape's bounding window only (cheap), then paste.
        y0, y1 = max(0, int(cy - r) - 2), min(size, int(cy + r) + 3)
        x0, x1 = max(0, int(cx - r) - 2), min(size, int(cx + r) + 3)
        lx, ly = xx[y0:y1, x0:x1], yy[y0:y1, x0:x1]
        m = shape_mask(kind, lx, ly, cx, cy, r)
        if i >= n_parts:  # distractor: the hollow outline of the same shape
            m &= ~shape_mask(kind, lx, ly, cx, cy, 0.55 * r)
        tint = _COLOURS[colour] * rng.uniform(0.85, 1.05)
        if rng.random() < 0.5:  # stripe texture, shared by parts and distractors
            angle = rng.uniform(0, np.pi)
            phase = np.cos(angle) * lx + np.sin(angle) * ly
            shade = 0.75 + 0.25 * (np.sin(phase * 2 * np.pi / max(2.5, 0.5 * r)) > 0)
        else:
            shade = np.ones_like(lx)
        patch = img[y0:y1, x0:x1]
        patch[m] = np.clip(tint[None, :] * shade[m][:, None] + rng.normal(0, 0.03, size=(int(m.sum()), 3)), 0, 1)
        masks[i, y0:y1, x0:x1] = m
    return Scene(rgb=img, part_masks=masks[:n_parts].copy(), centres=centres[:n_parts].astype(np.float32),
                 radii=radii[:n_parts].astype(np.float32),
                 distractors=tuple((str(k), COLOUR_NAMES[int(c)]) for k, c in zip(kinds[n_parts:], colours[n_parts:])))


class SyntheticParts(Dataset):
    """The synthetic parts benchmark (see the module docstring).

    Args:
        split: ``"train"`` or ``"test"`` (disjoint classes, 32 each).
        seed: generation seed; the same ``(seed, split, index)`` gives the same item.
        image_size: side S of the square images.
        samples_per_class: images per class (items are ordered class-major:
            item ``i`` has label ``i // samples_per_class``).
        distractors: distractor shapes per image.
        cache: keep rendered items in memory (uint8 image + part map, about
            ``4 * S * S`` bytes each) so later epochs do not re-render them.
        root: ignored (accepted so the dataset registry can pass it).
    """

    num_parts: int = len(PART_NAMES)
    part_names: tuple[str, ...] = PART_NAMES

    def __init__(
        self,
        split: str = "train",
        seed: int = 0,
        image_size: int = 128,
        samples_per_class: int | None = None,
        distractors: int = 4,
        cache: bool = True,
        root: Any = None,
        **_: Any,
    ) -> None:
        self.split = split
        self.classes = class_attributes(split)
        if image_size < 32:
            raise DatasetError(f"synthetic parts: image_size must be >= 32, got {image_size}")
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.samples_per_class = int(samples_per_class or (150 if split == "train" else 20))
        self.distractors = int(distractors)
        self.transform = synthetic_transform(self.image_size)
        self.class_names = [class_name(c) for c in self.classes]
        self.labels = [i // self.samples_per_class for i in range(len(self))]
        self.cache = bool(cache)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.classes) * self.samples_per_class

    @staticmethod
    def kwargs_for_model(input_size: int, num_images: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Constructor arguments to analyse a model whose input is ``input_size`` px on at least
        ``num_images`` held-out items: images rendered at the model's size (the dataset owns its
        transform) and enough items per class (``kwargs`` given by a recipe are kept otherwise)."""
        out = dict(kwargs)
        out["image_size"] = int(input_size)
        out.setdefault("samples_per_class", max(1, math.ceil(num_images / len(class_attributes("test")))))
        return out

    def scene(self, index: int) -> Scene:
        """The un-normalised :class:`Scene` of item ``index`` (float RGB, before quantisation)."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        label = index // self.samples_per_class
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])
        return render_scene(rng, self.classes[label], size=self.image_size, distractors=self.distractors)

    def _render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(rgb uint8 [S, S, 3], part map uint8 [S, S] (0 = no part, p + 1 = part p), centres [P, 2])``."""
        hit = self._cache.get(index)
        if hit is not None:
            return hit
        s = self.scene(index)
        rgb = (s.rgb * 255 + 0.5).astype(np.uint8)
        part_map = np.zeros(s.rgb.shape[:2], np.uint8)
        for p in range(self.num_parts):
            part_map[s.part_masks[p]] = p + 1
        out = (rgb, part_map, s.centres)
        if self.cache:
            self._cache[index] = out
        return out

    def raw_image(self, index: int) -> np.ndarray:
        """``[S, S, 3]`` uint8 RGB of item ``index`` (what ``image`` normalises)."""
        return self._render(index)[0].copy()

    def __getitem__(self, index: int) -> dict[str, Any]:
        rgb, part_map, centres = self._render(int(index))
        # NumPy for the per-item arithmetic: tiny torch ops stall on a busy thread pool.
        image = (rgb.astype(np.float32) / np.float32(255.0) - _MEAN_NP) / _STD_NP
        masks = part_map[None] == np.arange(1, self.num_parts + 1, dtype=np.uint8)[:, None, None]
        keypoints = np.concatenate([centres, np.ones((self.num_parts, 1), np.float32)], axis=1)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "label": int(index) // self.samples_per_class,
            "part_masks": torch.from_numpy(masks),
            "keypoints": torch.from_numpy(keypoints),
            "index": int(index),
        }
