"""The four DML benchmarks in their published layouts, with class-disjoint splits.

=============  ====================================================  ==========================
dataset        files read (relative to ``root``)                      split
=============  ====================================================  ==========================
CUB-200-2011   ``images.txt``, ``image_class_labels.txt``,            classes 1-100 train,
               ``classes.txt``, ``bounding_boxes.txt``,              101-200 test
               ``parts/parts.txt``, ``parts/part_locs.txt``,
               ``images/<name>``
Cars196        ``cars_annos.mat`` (``annotations``: relative_im_path,  classes 1-98 train,
               bbox_x1..y2, class; ``class_names``), ``car_ims/``     99-196 test
SOP            ``Ebay_train.txt`` / ``Ebay_test.txt`` (header          per file
               ``image_id class_id super_class_id path``)
In-Shop        ``Eval/list_eval_partition.txt`` (count, header,        train / query / gallery
               ``image_name item_id evaluation_status``), ``img/``
=============  ====================================================  ==========================

``root`` may be the dataset folder itself or its parent (``CUB_200_2011``,
``Stanford_Online_Products``, ``InShop``/``In-shop Clothes Retrieval Benchmark``).
Labels are contiguous ``0..C-1`` within a split; ``class_names`` keep the
original ids/names. CUB items also carry ``bbox`` and the 15 part ``keypoints``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from dgml_viz.data.folder import ImageListDataset, contiguous_labels
from dgml_viz.errors import DatasetError

logger = logging.getLogger(__name__)


def _find_root(root: str | Path, marker: str, subdirs: tuple[str, ...]) -> Path:
    """``root`` or the first ``root/<subdir>`` that contains ``marker``."""
    root = Path(root)
    for cand in (root, *(root / s for s in subdirs)):
        if (cand / marker).exists():
            return cand
    raise DatasetError(f"{root}: not a dataset folder (missing {marker})")


def _read_rows(path: Path, min_cols: int, skip: int = 0) -> list[list[str]]:
    """Whitespace-split rows of a text file, skipping ``skip`` header lines and blank lines."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing annotation file")
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if lineno <= skip or not line.strip():
                continue
            cols = line.split()
            if len(cols) < min_cols:
                raise DatasetError(f"{path}:{lineno}: expected {min_cols} columns, got {len(cols)}")
            rows.append(cols)
    return rows


def _check_split(name: str, split: str, allowed: tuple[str, ...]) -> None:
    if split not in allowed:
        raise DatasetError(f"{name}: unknown split {split!r}; use one of {', '.join(allowed)}")


class CUB200(ImageListDataset):
    """CUB-200-2011: 200 bird classes, boxes and 15 part keypoints per image.

    Items add ``bbox`` ([4] x0, y0, x1, y1) and ``keypoints`` ([15, 3] x, y,
    visible; invisible parts are (0, 0, 0) in the file) in tensor coordinates;
    ``part_names`` lists the 15 parts.
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        _check_split("CUB-200-2011", split, ("train", "test", "all"))
        root = _find_root(root, "images.txt", ("CUB_200_2011",))
        images = {int(r[0]): " ".join(r[1:]) for r in _read_rows(root / "images.txt", 2)}
        labels = {int(r[0]): int(r[1]) for r in _read_rows(root / "image_class_labels.txt", 2)}
        names_file = root / "classes.txt"
        class_name = ({int(r[0]): " ".join(r[1:]) for r in _read_rows(names_file, 2)}
                      if names_file.exists() else {})
        boxes = {int(r[0]): [float(v) for v in r[1:5]] for r in _read_rows(root / "bounding_boxes.txt", 5)}
        parts_file = root / "parts" / "parts.txt"
        part_names = ([" ".join(r[1:]) for r in _read_rows(parts_file, 2)] if parts_file.exists()
                      else [f"part{i + 1}" for i in range(15)])
        num_parts = len(part_names)
        locs: dict[int, torch.Tensor] = {}
        for r in _read_rows(root / "parts" / "part_locs.txt", 5):
            img_id, part = int(r[0]), int(r[1])
            kp = locs.setdefault(img_id, torch.zeros(num_parts, 3))
            if not 1 <= part <= num_parts:
                raise DatasetError(f"{root / 'parts' / 'part_locs.txt'}: part id {part} out of range 1..{num_parts}")
            kp[part - 1] = torch.tensor([float(r[2]), float(r[3]), float(r[4])])
        ids = sorted(i for i in images if split == "all" or (labels[i] <= 100) == (split == "train"))
        missing = [i for i in ids if i not in labels or i not in boxes]
        if missing:
            raise DatasetError(f"{root}: image id {missing[0]} has no class label or bounding box")
        raw = [labels[i] for i in ids]
        y, uniq = contiguous_labels(raw)
        xyxy = torch.tensor([[b[0], b[1], b[0] + b[2], b[1] + b[3]] for b in (boxes[i] for i in ids)])
        kps = torch.stack([locs.get(i, torch.zeros(num_parts, 3)) for i in ids]) if ids else None
        super().__init__([root / "images" / images[i] for i in ids], y,
                         [class_name.get(c, str(c)) for c in uniq], transform,
                         bboxes=xyxy, keypoints=kps, part_names=part_names)
        self.image_ids = ids


class Cars196(ImageListDataset):
    """Stanford Cars (196 classes) from ``cars_annos.mat``; items add ``bbox``."""

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        _check_split("Cars196", split, ("train", "test", "all"))
        root = _find_root(root, "cars_annos.mat", ("cars196", "CARS196", "stanford_cars"))
        import scipy.io

        path = root / "cars_annos.mat"
        try:
            mat = scipy.io.loadmat(str(path), squeeze_me=True)
            annos = mat["annotations"]
        except (ValueError, KeyError, OSError, TypeError) as exc:
            raise DatasetError(f"{path}: cannot read annotations ({exc})") from None
        annos = annos.reshape(-1)
        names = [str(n) for n in mat["class_names"].reshape(-1)] if "class_names" in mat else []
        paths, raw, boxes = [], [], []
        for a in annos:
            cls = int(a["class"])
            if split != "all" and (cls <= 98) != (split == "train"):
                continue
            paths.append(root / str(a["relative_im_path"]))
            raw.append(cls)
            boxes.append([float(a["bbox_x1"]), float(a["bbox_y1"]), float(a["bbox_x2"]), float(a["bbox_y2"])])
        y, uniq = contiguous_labels(raw)
        cls_names = [names[c - 1] if 0 < c <= len(names) else str(c) for c in uniq]
        super().__init__(paths, y, cls_names, transform,
                         bboxes=torch.tensor(boxes) if boxes else None)


class StanfordOnlineProducts(ImageListDataset):
    """SOP: ``Ebay_train.txt`` (11,318 classes) / ``Ebay_test.txt`` (11,316 classes).

    ``super_labels`` holds each image's super-class id (1..12).
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        _check_split("SOP", split, ("train", "test"))
        root = _find_root(root, "Ebay_train.txt", ("Stanford_Online_Products",))
        path = root / ("Ebay_train.txt" if split == "train" else "Ebay_test.txt")
        if not path.is_file():
            raise DatasetError(f"{path}: missing split file")
        with open(path, encoding="utf-8") as fh:
            header = fh.readline().split()
        if header[:4] != ["image_id", "class_id", "super_class_id", "path"]:
            raise DatasetError(f"{path}: unexpected header {' '.join(header)!r}")
        rows = _read_rows(path, 4, skip=1)
        y, uniq = contiguous_labels([int(r[1]) for r in rows])
        super().__init__([root / r[3] for r in rows], y, [str(c) for c in uniq], transform)
        self.super_labels = [int(r[2]) for r in rows]


class InShop(ImageListDataset):
    """In-Shop Clothes Retrieval: ``train`` / ``query`` / ``gallery`` from the partition file.

    Query and gallery share one label space (item ids of both, sorted), so a
    query's matches in the gallery have its label.
    """

    def __init__(self, root: str | Path, split: str = "train", transform: Callable | None = None) -> None:
        _check_split("In-Shop", split, ("train", "query", "gallery"))
        marker = "Eval/list_eval_partition.txt"
        root = _find_root(root, marker, ("InShop", "In-shop Clothes Retrieval Benchmark", "inshop"))
        rows = _read_rows(root / marker, 3, skip=2)
        bad = [r for r in rows if r[2] not in ("train", "query", "gallery")]
        if bad:
            raise DatasetError(f"{root / marker}: unknown evaluation status {bad[0][2]!r}")
        space = [r for r in rows if (r[2] == "train") == (split == "train")]
        _, uniq = contiguous_labels([r[1] for r in space])
        index = {c: i for i, c in enumerate(uniq)}
        chosen = [r for r in rows if r[2] == split]
        if not chosen:
            raise DatasetError(f"{root / marker}: no images with status {split!r}")
        img_dir = root if (root / chosen[0][0]).exists() or not (root / "Img").is_dir() else root / "Img"
        super().__init__([img_dir / r[0] for r in chosen], [index[r[1]] for r in chosen], uniq, transform)


__all__ = ["CUB200", "Cars196", "StanfordOnlineProducts", "InShop"]
