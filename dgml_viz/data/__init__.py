"""Datasets, the class-balanced sampler and training/eval transforms.

Every dataset item is a dict ``{"image": [3, H, W] float, "label": int, ...}``
(see CONVENTIONS: optional ``part_masks``, ``keypoints``, ``bbox``, ``path``,
``index``). Build any registered dataset with :func:`build_dataset`.

Heavier modules (benchmarks, Fashion-MNIST, the synthetic benchmark) are
imported lazily on attribute access.
"""
from __future__ import annotations

from dgml_viz.data.registry import build_dataset, dataset_spec, list_datasets, register_dataset
from dgml_viz.data.sampler import ClassBalancedBatchSampler
from dgml_viz.utils.lazy import lazy_getattr

_LAZY = {
    "SyntheticParts": "dgml_viz.data.synthetic",
    "CUB200": "dgml_viz.data.benchmarks",
    "Cars196": "dgml_viz.data.benchmarks",
    "StanfordOnlineProducts": "dgml_viz.data.benchmarks",
    "InShop": "dgml_viz.data.benchmarks",
    "ImageFolderDataset": "dgml_viz.data.folder",
    "ImageListDataset": "dgml_viz.data.folder",
    "FashionMNIST": "dgml_viz.data.fashion_mnist",
    "EvalTransform": "dgml_viz.data.transforms",
    "TrainTransform": "dgml_viz.data.train_transforms",
    "build_transforms": "dgml_viz.data.train_transforms",
}

__getattr__ = lazy_getattr(__name__, _LAZY)

__all__ = ["build_dataset", "dataset_spec", "list_datasets", "register_dataset",
           "ClassBalancedBatchSampler", *_LAZY]
