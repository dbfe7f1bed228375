"""Dataset registry: ``build_dataset(name, split, root=None, **kwargs)``.

Entries are ``"module:attribute"`` strings imported on first use, so listing
names never imports a dataset (nor a module another helper has yet to write).

Each entry records whether the dataset decodes images and so takes the
trainer's ``transform=`` (``takes_transform``); datasets that produce ready
tensors (the synthetic benchmark) own their transform and are called without it.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from dgml_viz.errors import ConfigError, DatasetError


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: where its class lives and how it is called."""

    name: str
    target: str | Callable[..., Any]  # "package.module:Attribute" or the factory itself
    takes_transform: bool
    needs_root: bool
    splits: tuple[str, ...]
    description: str

    def load(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(name: str, target: str | Callable[..., Any], *, takes_transform: bool = True,
                     needs_root: bool = True, splits: tuple[str, ...] = ("train", "test"),
                     description: str = "") -> None:
    """Register ``target`` (a ``"module:attr"`` string or a callable) under ``name``."""
    _REGISTRY[name] = DatasetSpec(name, target, takes_transform, needs_root, splits, description)


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name`` (ConfigError naming the choices if unknown)."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(list_datasets())}")
    return _REGISTRY[name]


def list_datasets() -> list[str]:
    """Registered dataset names."""
    return sorted(_REGISTRY)


def build_dataset(name: str, split: str = "train", root: str | Path | None = None, **kwargs: Any) -> Any:
    """Build dataset ``name`` for ``split``.

    ``root`` is required for datasets read from disk (except Fashion-MNIST,
    which defaults to the Debian package path); ``transform=`` is passed only to
    datasets with ``takes_transform`` (it is dropped for tensor datasets).
    """
    spec = dataset_spec(name)
    factory = spec.load()
    if not spec.takes_transform:
        kwargs.pop("transform", None)
    if spec.needs_root:
        if root is None:
            raise DatasetError(f"dataset {name!r} needs data.root (the folder holding its files)")
        kwargs["root"] = root
    elif root is not None:
        kwargs["root"] = root
    try:
        inspect.signature(factory).bind(split=split, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"dataset {name!r}: bad arguments {sorted(kwargs)} ({exc})") from None
    except ValueError:  # no introspectable signature: let the call decide
        pass
    return factory(split=split, **kwargs)


register_dataset("cub200", "dgml_viz.data.benchmarks:CUB200", splits=("train", "test", "all"),
                 description="CUB-200-2011 birds, 100/100 classes, boxes + 15 part keypoints")
register_dataset("cars196", "dgml_viz.data.benchmarks:Cars196", splits=("train", "test", "all"),
                 description="Stanford Cars, 98/98 classes")
register_dataset("sop", "dgml_viz.data.benchmarks:StanfordOnlineProducts",
                 description="Stanford Online Products, Ebay_train/Ebay_test")
register_dataset("inshop", "dgml_viz.data.benchmarks:InShop", splits=("train", "query", "gallery"),
                 description="In-Shop Clothes Retrieval, train / query / gallery")
register_dataset("folder", "dgml_viz.data.folder:ImageFolderDataset", splits=("train", "test", "all"),
                 description="root/<class>/<image>, class-disjoint halves or root/<split>/<class>")
register_dataset("fashion_mnist", "dgml_viz.data.fashion_mnist:FashionMNIST", needs_root=False,
                 description="Fashion-MNIST IDX files, classes 0-4 train / 5-9 test")
register_dataset("synthetic", "dgml_viz.data.synthetic:SyntheticParts", takes_transform=False,
                 needs_root=False, description="synthetic part images with ground-truth part masks")

__all__ = ["DatasetSpec", "register_dataset", "dataset_spec", "list_datasets", "build_dataset"]
