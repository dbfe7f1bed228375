"""Cached loaders shared by the pages (models, datasets, encodings, gallery indexes).

Everything expensive is cached with ``st.cache_resource`` under explicit string
keys (a model is identified by ``ModelHandle.key``: its path and mtime, or the
upload's file id), so reruns after the first reuse the results. Model logic
lives in :mod:`dgml_viz.appkit` and below (:mod:`dgml_viz.metrics.invariance`,
:mod:`dgml_viz.explain`); this module only caches it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import torch

from dgml_viz.appkit import sources, views
from dgml_viz.appkit.embeddings import Encoded, GalleryIndex, build_gallery_index, embed_tensors
from dgml_viz.appkit.settings import checkpoint_label, default_checkpoint, list_checkpoints
from dgml_viz.errors import DgmlVizError
from dgml_viz.metrics import invariance

logger = logging.getLogger(__name__)

FALLBACK_LABEL = "untrained small_cnn (no checkpoint found)"
UPLOAD_LABEL = "upload a checkpoint..."
DEMO_PER_CLASS = 4


@dataclass(frozen=True)
class ModelHandle:
    """A loaded model with the key its cached results are stored under."""

    model: Any
    key: str
    label: str

    @property
    def transform(self) -> dict[str, Any]:
        return dict(self.model.transform)

    @property
    def has_attention(self) -> bool:
        return self.model.spatial_maps is not None

    def describe(self) -> str:
        c = self.model.config
        text = f"{c.backbone} + {c.head} head, K={self.model.num_groups}, d={self.model.group_dim}, input {self.transform['size']} px"
        meta = getattr(self.model, "meta", None) or {}
        if meta.get("source_sha256"):  # opened from a reference-implementation file
            layer = meta.get("reference_group_layer") or "no group layer"
            text += f"; reference checkpoint ({meta.get('reference_arch')}, {layer}), converted in memory"
        return text


# ----------------------------------------------------------------------------- models
@st.cache_resource(max_entries=8, show_spinner="Loading checkpoint...")
def _load_file(path: str, mtime_ns: int, size: int) -> Any:
    from dgml_viz.model.checkpoint import open_any_checkpoint

    return open_any_checkpoint(path)  # ours, or a reference-implementation file converted in memory


#: one-line errors of files that failed to load, by (path, mtime, size): a broken file in a large
#: training folder is not re-read on every rerun (the pickers and the Invariance page loop over files)
_FAILED_MAX = 256


@st.cache_resource(max_entries=1)
def _failed_files() -> dict[tuple[str, int, int], DgmlVizError]:
    return {}


@st.cache_resource(max_entries=4, show_spinner="Loading uploaded checkpoint...")
def _load_upload(file_id: str, name: str, _data: bytes) -> Any:
    from dgml_viz.model.checkpoint import open_any_checkpoint_bytes

    return open_any_checkpoint_bytes(_data, name)


@st.cache_resource(max_entries=1)
def _fallback_model() -> Any:
    from dgml_viz.data.synthetic import synthetic_transform
    from dgml_viz.model import create_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("small_cnn", groups=3, dim=48, head="attentive").eval()
    model.transform = synthetic_transform(64)
    return model


def model_from_file(path: Path) -> ModelHandle:
    """Load (cached by path and mtime) a checkpoint file: ours, or a reference-implementation file
    converted in memory with the checks of ``dgml-viz convert``; raises :class:`DgmlVizError` with a
    one-line message (remembered until the file changes)."""
    try:
        st_ = path.stat()
    except OSError as exc:
        from dgml_viz.errors import CheckpointError

        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    stamp = (str(path), st_.st_mtime_ns, st_.st_size)
    failed = _failed_files()
    if stamp in failed:
        exc = failed[stamp]
        raise type(exc)(str(exc))
    try:
        model = _load_file(*stamp)
    except DgmlVizError as exc:
        if len(failed) >= _FAILED_MAX:
            failed.pop(next(iter(failed)), None)
        failed[stamp] = exc
        raise
    return ModelHandle(model, f"file:{path}:{st_.st_mtime_ns}", checkpoint_label(path))


def model_from_upload(data: bytes, name: str, file_id: str) -> ModelHandle:
    """Load (cached) an uploaded checkpoint; raises :class:`DgmlVizError` with a one-line message."""
    return ModelHandle(_load_upload(file_id, name, data), f"upload:{file_id}", name)


def fallback_model() -> ModelHandle:
    """A seeded, untrained small model so the app works before any checkpoint ships."""
    return ModelHandle(_fallback_model(), "fallback:small_cnn", FALLBACK_LABEL)


def checkpoint_choices() -> list[str]:
    """Selectbox options: shipped checkpoints (default first), then upload."""
    found = list_checkpoints()
    default = default_checkpoint()
    names = [str(p) for p in found]
    if default is not None and str(default) not in names:
        names.insert(0, str(default))
    elif default is not None:
        names.remove(str(default))
        names.insert(0, str(default))
    return (names or [FALLBACK_LABEL]) + [UPLOAD_LABEL]


# ----------------------------------------------------------------------------- data
@st.cache_resource(max_entries=4, show_spinner=False)
def _demo_dataset(image_size: int, seed: int) -> Any:
    return sources.demo_dataset(image_size, num_per_class=DEMO_PER_CLASS, seed=seed)


def require_image() -> sources.SourceImage:
    """The image picked in the sidebar; without one, show a hint and stop the page here."""
    image = st.session_state.get("_image")
    if image is None:
        st.info("Pick an image in the sidebar.")
        st.stop()
    return image


def demo_spec(handle: ModelHandle) -> tuple[int, int]:
    """``(image_size, seed)`` of the held-out demo images for this model.

    From the training recipe stored in the checkpoint when it was trained on the
    synthetic benchmark; otherwise the model's input size (within 32..256) and seed 0.
    """
    return sources.demo_spec(handle.transform, getattr(handle.model, "meta", None))


def demo_dataset(handle: ModelHandle) -> Any:
    return _demo_dataset(*demo_spec(handle))


@st.cache_resource(max_entries=512, show_spinner=False)
def _demo_image(image_size: int, seed: int, index: int) -> sources.SourceImage:
    return sources.demo_image(_demo_dataset(image_size, seed), index)


def demo_image(handle: ModelHandle, index: int) -> sources.SourceImage:
    return _demo_image(*demo_spec(handle), int(index))


@st.cache_resource(max_entries=16, show_spinner=False)
def sample_photo(name: str) -> sources.SourceImage:
    return sources.sample_photo(name)


@st.cache_resource(max_entries=32, show_spinner=False)
def _prepare(model_key: str, image_key: str, _rgb: np.ndarray, transform_items: tuple) -> views.Prepared:
    return views.prepare(_rgb, dict(transform_items))


def _transform_items(handle: ModelHandle) -> tuple:
    return tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(handle.transform.items()))


def prepared(handle: ModelHandle, image: sources.SourceImage) -> views.Prepared:
    """The model input of ``image`` for ``handle`` (cached)."""
    return _prepare(handle.key, image.key, image.rgb, _transform_items(handle))


@st.cache_resource(max_entries=64, show_spinner=False)
def _encode(model_key: str, image_key: str, _model: Any, _x: torch.Tensor) -> Encoded:
    return embed_tensors(_model, _x)


def encoded(handle: ModelHandle, image: sources.SourceImage) -> Encoded:
    """Model outputs of one image (cached)."""
    return _encode(handle.key, image.key, handle.model, prepared(handle, image).tensor)


@st.cache_resource(max_entries=32, show_spinner=False)
def _masks(model_key: str, image_key: str, _masks_: np.ndarray, _geometry: Any) -> np.ndarray:
    from dgml_viz.data.transforms import resize_and_crop

    out = [resize_and_crop(np.repeat((m * 255).astype(np.uint8)[..., None], 3, -1), _geometry)[..., 0] > 127
           for m in _masks_]
    return np.stack(out)


def part_masks(handle: ModelHandle, image: sources.SourceImage) -> np.ndarray | None:
    """Ground-truth part masks aligned with the model input ``[P, S, S]``, or None."""
    if image.part_masks is None:
        return None
    return _masks(handle.key, image.key, image.part_masks, prepared(handle, image).geometry)


# ----------------------------------------------------------------------------- gallery
@st.cache_resource(max_entries=4, show_spinner="Indexing the gallery (once)...")
def _demo_index(model_key: str, spec: tuple[int, int], _model: Any, transform_items: tuple) -> GalleryIndex:
    ds = _demo_dataset(*spec)
    transform = dict(transform_items)
    preps = [views.prepare(sources.demo_image(ds, i).rgb, transform) for i in range(len(ds))]
    x = torch.cat([p.tensor for p in preps])
    names = [f"#{i} class {ds.labels[i]}" for i in range(len(ds))]
    return build_gallery_index(_model, x, np.stack([p.view for p in preps]), ds.labels, names)


def demo_index(handle: ModelHandle) -> GalleryIndex:
    """The demo held-out set embedded by ``handle``'s model (cached per model)."""
    return _demo_index(handle.key, demo_spec(handle), handle.model, _transform_items(handle))


@st.cache_resource(max_entries=4, show_spinner="Indexing the folder (once)...")
def _folder_index(model_key: str, files: tuple[tuple[str, int], ...], _model: Any,
                  transform_items: tuple) -> tuple[GalleryIndex, list[str]]:
    transform = dict(transform_items)
    preps, names, skipped = [], [], []
    for path, _ in files:
        try:
            preps.append(views.prepare(sources.decode_file(Path(path)), transform))
            names.append(Path(path).name)
        except DgmlVizError as exc:
            skipped.append(str(exc))
    if not preps:
        from dgml_viz.errors import DatasetError

        raise DatasetError("no readable images in the folder" + (f" ({skipped[0]})" if skipped else ""))
    x = torch.cat([p.tensor for p in preps])
    labels = [-1] * len(preps)
    return build_gallery_index(_model, x, np.stack([p.view for p in preps]), labels, names), skipped


def folder_index(handle: ModelHandle, files: list[Path]) -> tuple[GalleryIndex, list[str]]:
    """A folder's images embedded once (cached on the file list and mtimes); also the skipped files' errors."""
    stamp = tuple((str(p), p.stat().st_mtime_ns) for p in files)
    return _folder_index(handle.key, stamp, handle.model, _transform_items(handle))


# ----------------------------------------------------------------------------- on-disk index
@st.cache_resource(max_entries=4, show_spinner="Opening the index...")
def _open_index(path: str, manifest_mtime_ns: int) -> Any:
    from dgml_viz.index.store import open_index as _open

    return _open(path)


def open_index(folder: Path) -> tuple[str, Any]:
    """``(key, EmbeddingIndex)`` of an index folder (memory-mapped; cached until its manifest changes)."""
    from dgml_viz.index.store import MANIFEST, read_manifest

    read_manifest(folder)  # one-line DatasetError for a folder that is not an index
    mtime = (folder / MANIFEST).stat().st_mtime_ns
    return f"index:{folder}:{mtime}", _open_index(str(folder), mtime)


@st.cache_resource(max_entries=4, show_spinner="Loading the embeddings into FAISS...")
def index_searcher(index_key: str, _index: Any) -> Any:
    """A :class:`dgml_viz.index.search.Searcher` per index (its FAISS indexes per group subset are kept)."""
    from dgml_viz.index.search import Searcher

    return Searcher(_index)


@st.cache_resource(max_entries=4, show_spinner=False)
def index_folder_labels(index_key: str, _index: Any) -> np.ndarray:
    """int64 ``[N]`` class of each indexed image = its parent folder's name (all -1 when there is one folder)."""
    parents = [Path(p).parent.name for p in _index.paths]
    names = sorted(set(parents))
    if len(names) < 2:
        return np.full(len(parents), -1, dtype=np.int64)
    return np.searchsorted(np.asarray(names), np.asarray(parents)).astype(np.int64)


@st.cache_resource(max_entries=8, show_spinner=False)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    from dgml_viz.index.store import file_sha256

    return file_sha256(path)


def index_model(index: Any) -> ModelHandle:
    """The checkpoint that built ``index`` (SHA-256 checked), to embed queries from outside the index."""
    from dgml_viz.errors import CheckpointError

    path = Path(index.checkpoint["path"])
    try:
        st_ = path.stat()
    except OSError:
        raise CheckpointError(f"{path}: the index's checkpoint is missing") from None
    if _sha256(str(path), st_.st_mtime_ns, st_.st_size) != index.sha256:
        raise CheckpointError(f"{path}: sha256 does not match the checkpoint that built the index {index.root}")
    return model_from_file(path)


@st.cache_resource(max_entries=64, show_spinner=False)
def _file_image(path: str, mtime_ns: int) -> sources.SourceImage:
    return sources.folder_image(Path(path))


def file_image(path: Path) -> sources.SourceImage:
    """An image file (already allowed) decoded once per mtime."""
    try:
        mtime = path.stat().st_mtime_ns
    except OSError as exc:
        from dgml_viz.errors import ImageError

        raise ImageError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _file_image(str(path), mtime)


# ----------------------------------------------------------------------------- probes
@st.cache_resource(max_entries=32, show_spinner=False)
def permutation_probe(model_key: str, image_key: str, seed: int, _model: Any, _x: torch.Tensor) -> dict[str, Any]:
    return invariance.permutation_probe(_model, _x, seed)


@st.cache_resource(max_entries=64, show_spinner=False)
def translate_probe(model_key: str, image_key: str, dx: int, dy: int, mode: str, _model: Any,
                    _x: torch.Tensor) -> dict[str, Any]:
    return invariance.translate_probe(_model, _x, dx, dy, mode)


@st.cache_resource(max_entries=32, show_spinner="Computing the translation curve...")
def translation_curve(model_key: str, image_key: str, mode: str, axis: str, shifts: tuple[int, ...],
                      _model: Any, _x: torch.Tensor) -> dict[str, Any]:
    return invariance.translation_curve(_model, _x, shifts, mode=mode, axis=axis)


@st.cache_resource(max_entries=32, show_spinner="Computing attributions...")
def attribution(model_key: str, image_key: str, ref_key: str, group: int, method: str, n_steps: int, _model: Any,
                _x: torch.Tensor, _ref_groups: np.ndarray) -> np.ndarray:
    from dgml_viz.explain import attribution_map

    return attribution_map(_model, _x, _ref_groups, group, method, n_steps=n_steps)
