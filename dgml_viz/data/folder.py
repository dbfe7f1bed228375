"""Image-list datasets: the shared base and the one-folder-per-class layout.

:class:`ImageListDataset` holds parallel lists of files and labels (labels are
contiguous ``0..C-1`` within the split; ``class_names[label]`` gives the
original name) and returns the item dict of the data contract::

    {"image": [3, H, W] float, "label": int, "path": str, "index": int,
     optional "bbox": [4] (x0, y0, x1, y1) and "keypoints": [P, 3] (x, y, visible),
     both in image-tensor pixel coordinates}

:class:`ImageFolderDataset` reads ``root/<class>/<image>``. When ``root/<split>``
exists (``root/train/<class>/...``, ``root/test/<class>/...``) that folder is the
split; otherwise the sorted classes are split class-disjointly: the first
``round(train_fraction * C)`` classes are ``train``, the rest ``test``
(``split="all"`` keeps every class).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from dgml_viz.data.transforms import EvalTransform
from dgml_viz.errors import DatasetError, ImageError

logger = logging.getLogger(__name__)

from dgml_viz.data.discovery import find_images
from dgml_viz.data.images import IMAGE_SUFFIXES, load_image  # noqa: F401 - IMAGE_SUFFIXES re-exported


def load_rgb(path: str | Path) -> Image.Image:
    """Decode ``path`` as an RGB PIL image through the one decoder,
    :func:`dgml_viz.data.images.load_image` (EXIF orientation applied, transparency over white,
    16-bit scaled; one-line :class:`ImageError` naming the file on failure), so a dataset item and
    the rendering path (heatmaps, gallery, app) start from the same pixels."""
    return Image.fromarray(load_image(path))


def contiguous_labels(raw: Sequence[Any]) -> tuple[list[int], list[Any]]:
    """Map raw class ids to ``0..C-1`` in sorted order; returns (labels, sorted raw ids)."""
    uniq = sorted(set(raw))
    index = {c: i for i, c in enumerate(uniq)}
    return [index[c] for c in raw], uniq


class ImageListDataset(Dataset):
    """Files + labels (+ optional boxes/keypoints in original pixel coordinates).

    Args:
        paths: image files.
        labels: contiguous class labels ``0..C-1``.
        class_names: ``C`` names.
        transform: PIL -> tensor; if it has ``apply(img) -> (tensor, Geometry)``
            boxes and keypoints are mapped to tensor coordinates (else dropped).
            Default: :class:`EvalTransform` (resize 256, center crop 224).
        bboxes: optional ``[N, 4]`` (x0, y0, x1, y1) original pixels.
        keypoints: optional ``[N, P, 3]`` (x, y, visible) original pixels.
    """

    def __init__(self, paths: Sequence[str | Path], labels: Sequence[int], class_names: Sequence[str],
                 transform: Callable[[Image.Image], Tensor] | None = None,
                 bboxes: Tensor | None = None, keypoints: Tensor | None = None,
                 part_names: Sequence[str] | None = None) -> None:
        if len(paths) != len(labels):
            raise ValueError("paths and labels differ in length")
        self.paths = [str(p) for p in paths]
        self.labels = [int(v) for v in labels]
        self.class_names = [str(c) for c in class_names]
        self.transform = transform if transform is not None else EvalTransform()
        self.bboxes = bboxes
        self.keypoints = keypoints
        self.part_names = list(part_names) if part_names is not None else None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = load_rgb(self.paths[index])
        item: dict[str, Any] = {"label": self.labels[index], "path": self.paths[index], "index": int(index)}
        apply = getattr(self.transform, "apply", None)
        if apply is None:
            item["image"] = self.transform(img)
            return item
        image, geo = apply(img)
        item["image"] = image
        if self.bboxes is not None:
            item["bbox"] = geo.map_box(self.bboxes[index])
        if self.keypoints is not None:
            kp = self.keypoints[index]
            xy = geo.map_points(kp[:, :2])
            visible = (kp[:, 2] > 0) & geo.inside(xy)
            item["keypoints"] = torch.cat([xy, visible.to(xy.dtype)[:, None]], dim=1)
        return item


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return find_images(folder)


class ImageFolderDataset(ImageListDataset):
    """``root/<class>/<images>`` (see module docstring for the splits)."""

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None,
                 train_fraction: float = 0.5) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder does not exist")
        if (root / split).is_dir():
            classes = _class_dirs(root / split)
        else:
            classes = _class_dirs(root)
            if split != "all":
                n_train = int(round(train_fraction * len(classes)))
                if split == "train":
                    classes = classes[:n_train]
                elif split == "test":
                    classes = classes[n_train:]
                else:
                    raise DatasetError(f"{root}: unknown split {split!r} (use train, test, all or a subfolder)")
        paths: list[Path] = []
        raw: list[str] = []
        for c in classes:
            files = _images_in(c)
            paths += files
            raw += [c.name] * len(files)
        if not paths:
            raise DatasetError(f"{root}: no images in class folders for split {split!r}")
        labels, names = contiguous_labels(raw)
        super().__init__(paths, labels, names, transform)


__all__ = ["ImageListDataset", "ImageFolderDataset", "load_rgb", "contiguous_labels", "IMAGE_SUFFIXES"]
