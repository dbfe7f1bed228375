"""Image sources for the app, each decoded to ``[H, W, 3]`` uint8 RGB.

* the demo benchmark's held-out images (:class:`~dgml_viz.data.SyntheticParts`
  test split, with part masks);
* real photos shipped with scikit-image (``skimage.data``);
* uploaded bytes and files in a folder (decoded by :func:`dgml_viz.data.images.load_image`
  when the rendering helper's loader is present, else by Pillow with the same checks).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dgml_viz.errors import ImageError

logger = logging.getLogger(__name__)

#: ``skimage.data`` photos offered as samples (all bundled with scikit-image, no download).
SAMPLE_PHOTOS: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "cat", "immunohistochemistry")


@dataclass(frozen=True)
class SourceImage:
    """An image picked in the app.

    Attributes:
        rgb: ``[H, W, 3]`` uint8.
        key: stable cache key (``"demo:12"``, ``"sample:chelsea"``, ``"upload:<id>"``, ``"file:<path>:<mtime>"``).
        name: caption.
        part_masks: ``[P, H, W]`` bool ground-truth part masks, or None.
        part_names: names of the P parts.
        demo_index: index in the demo held-out set, for images taken from it.
    """

    rgb: np.ndarray
    key: str
    name: str
    part_masks: np.ndarray | None = None
    part_names: tuple[str, ...] = ()
    demo_index: int | None = None


#: registry name of the dataset the held-out demo images come from (:func:`demo_dataset`)
DEMO_DATASET = "synthetic"


def demo_dataset(image_size: int, num_per_class: int = 4, seed: int = 0) -> Any:
    """The demo benchmark's held-out split (32 unseen classes) at ``image_size``."""
    from dgml_viz.data import SyntheticParts

    return SyntheticParts("test", seed=seed, image_size=max(32, int(image_size)), samples_per_class=num_per_class)


def demo_spec(transform: dict[str, Any], meta: dict[str, Any] | None = None) -> tuple[int, int]:
    """``(image_size, seed)`` of the held-out demo images for a model.

    Taken from the training recipe in the checkpoint's ``meta`` when the model was trained
    on the synthetic benchmark (``meta["recipe"]["data"]``); otherwise the model's input
    size clamped to 32..256, seed 0.
    """
    data = ((meta or {}).get("recipe") or {}).get("data") or {}
    if isinstance(data, dict) and data.get("name") == DEMO_DATASET:
        kwargs = data.get("kwargs") or {}
        try:
            return int(kwargs.get("image_size", transform["size"])), int(kwargs.get("seed", 0))
        except (TypeError, ValueError):
            pass
    return int(min(256, max(32, int(transform["size"])))), 0


def trained_on_demo(meta: dict[str, Any] | None) -> bool:
    """Whether the checkpoint's recipe (``meta["recipe"]["data"]``) trained it on the demo benchmark,
    so that the held-out demo classes are a fair retrieval test of its groups."""
    data = ((meta or {}).get("recipe") or {}).get("data") or {}
    return isinstance(data, dict) and data.get("name") == DEMO_DATASET


def demo_image(dataset: Any, index: int) -> SourceImage:
    """Item ``index`` of :func:`demo_dataset` as a :class:`SourceImage` (with part masks)."""
    scene = dataset.scene(int(index))
    rgb = (scene.rgb * 255 + 0.5).astype(np.uint8)
    label = dataset.labels[int(index)]
    return SourceImage(rgb=rgb, key=f"demo:{dataset.image_size}:{dataset.seed}:{int(index)}",
                       name=f"held-out #{int(index)} ({dataset.class_names[label]})",
                       part_masks=scene.part_masks, part_names=tuple(dataset.part_names), demo_index=int(index))


def sample_photo(name: str) -> SourceImage:
    """A scikit-image sample photo by name (see :data:`SAMPLE_PHOTOS`)."""
    if name not in SAMPLE_PHOTOS:
        raise ImageError(f"{name}: not a known sample photo ({', '.join(SAMPLE_PHOTOS)})")
    import skimage.data

    rgb = np.ascontiguousarray(getattr(skimage.data, name)())
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=-1)
    return SourceImage(rgb=rgb[..., :3].astype(np.uint8), key=f"sample:{name}", name=f"skimage.data.{name}")


def decode_file(path: Path, name: str | None = None) -> np.ndarray:
    """Decode an image file to uint8 RGB ``[H, W, 3]`` through the one decoder
    (:func:`dgml_viz.data.images.load_image`); one-line :class:`ImageError` naming ``name`` on failure."""
    from dgml_viz.data.images import load_image

    name = name or str(path)
    try:
        return load_image(path)
    except ImageError as exc:
        raise ImageError(str(exc).replace(str(path), name)) from None


def decode_bytes(data: bytes, name: str = "<upload>") -> np.ndarray:
    """Decode in-memory image bytes (an upload) to uint8 RGB ``[H, W, 3]`` through the one decoder
    (:func:`dgml_viz.data.images.decode_image`); one-line :class:`ImageError` on failure."""
    from dgml_viz.data.images import decode_image

    return decode_image(data, name=name)


def upload_image(data: bytes, name: str, file_id: str) -> SourceImage:
    """An uploaded image as a :class:`SourceImage`."""
    return SourceImage(rgb=decode_bytes(data, name), key=f"upload:{file_id}", name=name)


def folder_image(path: Path) -> SourceImage:
    """A file from an (already allowed) folder as a :class:`SourceImage`."""
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return SourceImage(rgb=decode_file(path), key=f"file:{path}:{mtime}", name=path.name)
