"""Fashion-MNIST from its IDX files (Debian ``dataset-fashion-mnist``: /usr/share/datasets/fashion-mnist).

Files: ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``.

IDX format: big-endian magic ``0x0000 <dtype code> <ndim>``, then ``ndim``
big-endian uint32 sizes, then the data (dtype code 0x08 = uint8).

Splits: ``train`` and ``test`` read the official files. With
``class_split="disjoint"`` (default, the DML protocol) train keeps classes 0-4
(T-shirt .. Coat) and test classes 5-9 (Sandal .. Ankle boot); ``"all"`` keeps
all ten. Items are 28x28 greyscale images turned RGB, then ``transform``
(default: :class:`EvalTransform` ``mode="full"`` at 28 px with the dataset's mean/std).
"""
from __future__ import annotations

import gzip
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from dgml_viz.data.transforms import EvalTransform
from dgml_viz.errors import DatasetError

logger = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN = (0.2860, 0.2860, 0.2860)
STD = (0.3530, 0.3530, 0.3530)
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
           0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a numpy array of its declared shape."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise DatasetError(f"{path}: cannot read IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    count = int(np.prod(shape)) if shape else 0
    if len(raw) - header != count * dtype.itemsize:
        raise DatasetError(f"{path}: IDX data size does not match its header shape {shape}")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    raise DatasetError(f"{root}: missing {stem}[.gz] (install the Debian package dataset-fashion-mnist)")


class FashionMNIST(Dataset):
    """Fashion-MNIST items ``{"image", "label", "index"}`` (see module docstring).

    ``labels`` (contiguous within the split) and ``class_names`` are attributes;
    ``max_per_class`` keeps the first N images of each class (quick demos).
    """

    def __init__(self, root: str | Path | None = None, split: str = "train",
                 transform: Callable[[Image.Image], Tensor] | None = None,
                 class_split: str = "disjoint", max_per_class: int | None = None) -> None:
        root = Path(root) if root is not None else DEFAULT_ROOT
        if split not in ("train", "test"):
            raise DatasetError(f"Fashion-MNIST: unknown split {split!r}; use train or test")
        if class_split not in ("disjoint", "all"):
            raise DatasetError(f"Fashion-MNIST: class_split must be 'disjoint' or 'all', got {class_split!r}")
        prefix = "train" if split == "train" else "t10k"
        images = read_idx(_find(root, f"{prefix}-images-idx3-ubyte"))
        labels = read_idx(_find(root, f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"{root}: {prefix} images {images.shape} and labels {labels.shape} do not match")
        keep_classes = list(range(10))
        if class_split == "disjoint":
            keep_classes = list(range(5)) if split == "train" else list(range(5, 10))
        mask = np.isin(labels, keep_classes)
        idx = np.nonzero(mask)[0]
        if max_per_class is not None:
            idx = np.concatenate([idx[labels[idx] == c][:max_per_class] for c in keep_classes])
            idx.sort()
        self.images = images[idx]
        remap = {c: i for i, c in enumerate(keep_classes)}
        self.labels = [remap[int(v)] for v in labels[idx]]
        self.class_names = [CLASS_NAMES[c] if c < 10 else str(c) for c in keep_classes]
        self.transform = transform if transform is not None else EvalTransform(28, 28, MEAN, STD, "full")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = Image.fromarray(np.ascontiguousarray(self.images[index]), mode="L").convert("RGB")
        return {"image": self.transform(img), "label": self.labels[index], "index": int(index)}


__all__ = ["FashionMNIST", "read_idx", "CLASS_NAMES", "MEAN", "STD", "DEFAULT_ROOT"]
