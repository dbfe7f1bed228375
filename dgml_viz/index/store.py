"""The on-disk index format: numpy ``.npy`` arrays (memory-mapped on read) + a JSON manifest.

An index is a folder::

    INDEX/manifest.json               format, checkpoint (path, sha256, config, transform),
                                      K, d, map shape, the N image paths (sorted), bad files
    INDEX/groups.<token>.npy          float32 [N, K, d]   L2-normalised group embeddings
    INDEX/attention.<token>.npy       float16 [N, K, h, w] attention maps (absent for heads without maps)
    INDEX/info.<token>.npy            int64   [N, 9]      size, mtime_ns, W, H, rw, rh, crop_x, crop_y, S

float16 attention: a map sums to 1 over ``h*w`` cells, so values are >= ~1e-4 for
the grids in use, where float16 keeps ~3 significant digits (relative error
<= 2**-11) — plenty for drawing; the embeddings stay float32 so retrieval is
exactly the model's. ``info`` holds the file's size and mtime (incremental
re-indexing) and the eval :class:`~dgml_viz.data.transforms.Geometry` of each
image (original size, resized size, crop offset, tensor side; the mode is the
transform's), so stored maps land on the original pixels.

Writes are atomic as a whole: the arrays get fresh ``<token>`` names (each
written atomically), then the manifest that names them replaces the old one
(:mod:`dgml_viz.utils.atomic`), then arrays no manifest names are deleted. A
reader opening the folder mid-write sees the old index or the new one, never a
mix. Rows are sorted by path, so sharded-then-merged and unsharded builds are
identical.

Example:
    >>> idx = open_index("runs/cub_index")          # doctest: +SKIP
    >>> idx.groups.shape, idx.paths[0]              # doctest: +SKIP
    ((5924, 3, 170), '/data/CUB/images/101.Pied.../x.jpg')
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from dgml_viz.data.transforms import Geometry
from dgml_viz.errors import ConfigError, DatasetError
from dgml_viz.utils.atomic import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

FORMAT = "dgml_viz.index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
#: Columns of the ``info`` array.
INFO_COLUMNS: tuple[str, ...] = ("size", "mtime_ns", "width", "height", "resized_w", "resized_h", "crop_x", "crop_y",
                                 "tensor_size")
ARRAY_NAMES: tuple[str, ...] = ("groups", "attention", "info")
GROUPS_DTYPE = np.float32
ATTENTION_DTYPE = np.float16
_ARRAY_FILE = re.compile(r"^(groups|attention|info)\.[0-9a-f]{12}\.npy$")
_COPY_ROWS = 8192


def file_sha256(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(block), b""):
                h.update(chunk)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return h.hexdigest()


def info_row(size: int, mtime_ns: int, geometry: Geometry) -> list[int]:
    """One ``info`` row (see :data:`INFO_COLUMNS`)."""
    return [int(size), int(mtime_ns), *geometry.original, *geometry.resized, *geometry.crop, int(geometry.size)]


def geometry_from_info(row: np.ndarray, mode: str) -> Geometry:
    """The :class:`Geometry` stored in an ``info`` row."""
    r = [int(v) for v in row]
    return Geometry((r[2], r[3]), (r[4], r[5]), (r[6], r[7]), r[8], mode)


class RowSource(Protocol):
    """Anything with index rows: ``paths`` [N], ``info`` [N, 9], ``groups`` [N, K, d], ``attention`` or None."""

    paths: Sequence[str]
    info: np.ndarray
    groups: np.ndarray
    attention: np.ndarray | None


@dataclass
class Rows:
    """Index rows held in memory (one embedded batch/chunk).

    Attributes:
        paths: N absolute image paths.
        info: int64 ``[N, 9]`` (see :data:`INFO_COLUMNS`).
        groups: float32 ``[N, K, d]``.
        attention: float16 ``[N, K, h, w]`` or None.
    """

    paths: list[str]
    info: np.ndarray
    groups: np.ndarray
    attention: np.ndarray | None


@dataclass
class EmbeddingIndex:
    """An opened index: manifest fields plus memory-mapped arrays (read-only).

    Attributes:
        root: the index folder.
        manifest: the parsed ``manifest.json``.
        paths: N image paths (sorted).
        groups: float32 memmap ``[N, K, d]``.
        attention: float16 memmap ``[N, K, h, w]`` or None.
        info: int64 ``[N, 9]``.
        errors: ``[{"path", "error", "size", "mtime_ns"}]`` files that could not be indexed.
    """

    root: Path
    manifest: dict[str, Any]
    paths: list[str]
    groups: np.ndarray
    attention: np.ndarray | None
    info: np.ndarray
    errors: list[dict[str, Any]] = field(default_factory=list)
    _positions: dict[str, int] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def checkpoint(self) -> dict[str, Any]:
        """``{"path", "sha256", "config", "transform"}`` of the model that built the index."""
        return dict(self.manifest["checkpoint"])

    @property
    def sha256(self) -> str:
        return str(self.manifest["checkpoint"]["sha256"])

    @property
    def num_groups(self) -> int:
        return int(self.manifest["num_groups"])

    @property
    def group_dim(self) -> int:
        return int(self.manifest["group_dim"])

    @property
    def geometry_mode(self) -> str:
        return str(self.manifest.get("geometry_mode", "center_crop"))

    def geometry(self, i: int) -> Geometry:
        """Eval geometry of image ``i`` (maps back onto its original pixels)."""
        return geometry_from_info(self.info[i], self.geometry_mode)

    def position(self, path: str | os.PathLike[str]) -> int | None:
        """Row of ``path`` (compared resolved), or None."""
        if self._positions is None:
            self._positions = {p: i for i, p in enumerate(self.paths)}
        return self._positions.get(str(Path(path).resolve()), self._positions.get(str(path)))

    def stamp(self, i: int) -> tuple[int, int]:
        """``(size, mtime_ns)`` recorded for row ``i``."""
        return int(self.info[i, 0]), int(self.info[i, 1])


def is_index(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding a ``manifest.json``."""
    return (Path(path) / MANIFEST).is_file()


def find_indexes(folder: str | os.PathLike[str] | None) -> list[Path]:
    """``folder`` itself if it is an index, plus its sub-folders that are (sorted); [] for None/missing."""
    if folder is None or not Path(folder).is_dir():
        return []
    folder = Path(folder)
    found = [folder] if is_index(folder) else []
    try:
        found += sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_index(p))
    except OSError:
        pass
    return found


def read_manifest(root: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse and check ``root/manifest.json`` (DatasetError naming the file otherwise)."""
    root = Path(root)
    if root.name == MANIFEST and root.is_file():
        root = root.parent
    path = root / MANIFEST
    if not root.exists():
        raise DatasetError(f"{root}: no such index folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not an index folder")
    if not path.is_file():
        raise DatasetError(f"{root}: not a dgml_viz index (no {MANIFEST}); build one with `dgml-viz index`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: unreadable index manifest ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a dgml_viz index manifest")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DatasetError(f"{path}: index format version {version!r} is not supported (this dgml_viz reads "
                           f"<= {FORMAT_VERSION})")
    for key in ("checkpoint", "paths", "arrays", "num_groups", "group_dim"):
        if key not in manifest:
            raise DatasetError(f"{path}: index manifest has no {key!r}")
    return manifest


def open_index(root: str | os.PathLike[str]) -> EmbeddingIndex:
    """Open the index in ``root`` (the folder, or its ``manifest.json``); arrays are memory-mapped.

    Raises:
        DatasetError: not an index, unreadable, or arrays missing / of the wrong shape (one line).
    """
    root = Path(root)
    if root.name == MANIFEST:
        root = root.parent
    manifest = read_manifest(root)
    n, k, d = len(manifest["paths"]), int(manifest["num_groups"]), int(manifest["group_dim"])
    arrays: dict[str, np.ndarray | None] = {}
    for name in ARRAY_NAMES:
        fname = manifest["arrays"].get(name)
        if fname is None:
            arrays[name] = None
            continue
        try:
            arrays[name] = np.load(root / fname, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{root / fname}: index array missing or corrupt "
                               f"({str(exc).splitlines()[0][:120]})") from None
    groups, info, att = arrays["groups"], arrays["info"], arrays["attention"]
    if groups is None or info is None:
        raise DatasetError(f"{root / MANIFEST}: index has no groups/info arrays")
    shape = manifest.get("map_shape")
    expect = {"groups": (n, k, d), "info": (n, len(INFO_COLUMNS))}
    if att is not None:
        expect["attention"] = (n, k, *shape) if shape else att.shape
    for name, want in expect.items():
        got = arrays[name].shape  # type: ignore[union-attr]
        if tuple(got) != tuple(want):
            raise DatasetError(f"{root / manifest['arrays'][name]}: shape {tuple(got)} does not match the manifest "
                               f"{tuple(want)}")
    return EmbeddingIndex(root=root, manifest=manifest, paths=[str(p) for p in manifest["paths"]], groups=groups,
                          attention=att, info=np.asarray(info), errors=list(manifest.get("errors") or []))


def _row_owners(parts: Sequence[tuple[RowSource, Sequence[int] | np.ndarray]],
                ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The index's sorted paths and, for each, which part and row it is copied from (the last part
    holding a path wins): ``(paths [N], part_of int64 [N], row_of int64 [N])``."""
    owner: dict[str, tuple[int, int]] = {}
    for p, (src, rows) in enumerate(parts):
        for r in np.asarray(rows, dtype=np.int64).tolist():
            owner[src.paths[r]] = (p, r)
    paths = sorted(owner)
    n = len(paths)
    part_of = np.fromiter((owner[x][0] for x in paths), dtype=np.int64, count=n)
    row_of = np.fromiter((owner[x][1] for x in paths), dtype=np.int64, count=n)
    return paths, part_of, row_of


def _array_layout(n: int, num_groups: int, group_dim: int, map_shape: Sequence[int] | None,
                  ) -> dict[str, tuple[str, tuple[int, ...], Any]]:
    """``{array name: (file name with a fresh token, shape, dtype)}`` of a new index's arrays."""
    token = uuid.uuid4().hex[:12]
    layout: dict[str, tuple[str, tuple[int, ...], Any]] = {
        "groups": (f"groups.{token}.npy", (n, num_groups, group_dim), GROUPS_DTYPE),
        "info": (f"info.{token}.npy", (n, len(INFO_COLUMNS)), np.int64)}
    if map_shape is not None:
        layout["attention"] = (f"attention.{token}.npy", (n, num_groups, *map_shape), ATTENTION_DTYPE)
    return layout


def _write_array(path: Path, shape: tuple[int, ...], dtype: Any, name: str,
                 parts: Sequence[tuple[RowSource, Any]], part_of: np.ndarray, row_of: np.ndarray) -> None:
    """Write array ``name`` of every part into ``path`` atomically, row ``i`` from
    ``parts[part_of[i]]`` row ``row_of[i]``, in blocks of ``_COPY_ROWS`` (sorted reads on memmaps)."""
    with atomic_path(path) as tmp:
        dest = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape)
        for p, (src, _) in enumerate(parts):
            data = getattr(src, name)
            pos = np.flatnonzero(part_of == p)
            for s in range(0, len(pos), _COPY_ROWS):
                at = pos[s:s + _COPY_ROWS]
                src_rows = row_of[at]
                if len(at):
                    dest[at] = np.asarray(data[np.sort(src_rows)])[np.argsort(np.argsort(src_rows))]
        dest.flush()
        del dest


def _remove_stale_arrays(out: Path, keep: set[str]) -> None:
    """Delete array files of ``out`` that the manifest no longer names."""
    for f in out.iterdir():
        if _ARRAY_FILE.match(f.name) and f.name not in keep:
            with contextlib.suppress(OSError):
                f.unlink()


def write_index(out: str | os.PathLike[str], parts: Sequence[tuple[RowSource, Sequence[int] | np.ndarray]], *,
                checkpoint: dict[str, Any], num_groups: int, group_dim: int, map_shape: Sequence[int] | None,
                geometry_mode: str, errors: Iterable[dict[str, Any]] = (),
                extra: dict[str, Any] | None = None) -> Path:
    """Write the rows ``parts`` (each ``(source, row indices)``) as the index in ``out``, atomically.

    Rows are sorted by path; a path present in several parts keeps the row of the
    *last* part (callers put fresh rows after reused ones). Arrays are copied in
    blocks, so memory stays ``O(block)`` even when the sources are memmaps.

    Returns:
        ``out``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths, part_of, row_of = _row_owners(parts)
    n, has_att = len(paths), map_shape is not None
    layout = _array_layout(n, num_groups, group_dim, map_shape)
    for name, (fname, shape, dtype) in layout.items():
        _write_array(out / fname, shape, dtype, name, parts, part_of, row_of)
    names = {name: fname for name, (fname, _, _) in layout.items()}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "checkpoint": checkpoint, "num_groups": int(num_groups), "group_dim": int(group_dim),
        "map_shape": list(map_shape) if has_att else None, "geometry_mode": geometry_mode,
        "dtypes": {"groups": "float32", "attention": "float16" if has_att else None, "info": "int64"},
        "info_columns": list(INFO_COLUMNS), "count": n, "arrays": names, "paths": paths,
        "errors": sorted(errors, key=lambda e: e["path"]), **(extra or {}),
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest) + "\n")
    _remove_stale_arrays(out, set(names.values()))
    logger.info("wrote index %s: %d images, K=%d, d=%d%s", out, n, num_groups, group_dim,
                f", maps {tuple(map_shape)}" if has_att else "")
    return out


def merge_indexes(inputs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> Path:
    """Merge shard indexes (same checkpoint) into one index at ``out``; rows sorted by path.

    Raises:
        ConfigError: no inputs, or the inputs were built with different checkpoints / shapes.
    """
    if not inputs:
        raise ConfigError(f"{out}: no shard indexes to merge")
    opened = [open_index(p) for p in inputs]
    first = opened[0]
    for idx in opened[1:]:
        if idx.sha256 != first.sha256:
            raise ConfigError(f"{idx.root}: built with checkpoint sha256 {idx.sha256[:12]}, "
                              f"but {first.root} with {first.sha256[:12]}; shards must share a checkpoint")
        if (idx.num_groups, idx.group_dim, idx.manifest.get("map_shape")) != \
                (first.num_groups, first.group_dim, first.manifest.get("map_shape")):
            raise ConfigError(f"{idx.root}: shapes differ from {first.root}")
    seen: dict[str, str] = {}
    for idx in opened:
        for p in idx.paths:
            if p in seen:
                logger.warning("%s is in both %s and %s; keeping the latter", p, seen[p], idx.root)
            seen[p] = str(idx.root)
    indexed = set(seen)
    errors = {e["path"]: e for idx in opened for e in idx.errors if e["path"] not in indexed}
    return write_index(out, [(idx, np.arange(len(idx))) for idx in opened], checkpoint=first.checkpoint,
                       num_groups=first.num_groups, group_dim=first.group_dim,
                       map_shape=first.manifest.get("map_shape"), geometry_mode=first.geometry_mode,
                       errors=errors.values(), extra={"merged_from": [str(i.root) for i in opened]})


__all__ = ["EmbeddingIndex", "Rows", "open_index", "write_index", "merge_indexes", "read_manifest", "is_index", "find_indexes",
           "file_sha256", "info_row", "geometry_from_info", "INFO_COLUMNS", "MANIFEST", "FORMAT_VERSION"]
