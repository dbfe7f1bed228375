"""Safe, self-describing checkpoints.

A checkpoint is one ``torch.save`` zip holding only tensors and plain Python
values (so it loads with ``weights_only=True`` and never runs pickled code):

``{"format": "dgml_viz.checkpoint", "format_version": 1, "config": {...},
"transform": {...}, "class_names": [...] | None, "metrics": {...}, "meta": {...},
"state_dict": {...}}``

Writes are atomic (temp file + rename). Every expected failure raises a one-line
:class:`~dgml_viz.errors.CheckpointError` naming the file and the problem.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dgml_viz.errors import CheckpointError, ConfigError
from dgml_viz.model.config import ModelConfig
from dgml_viz.model.network import GroupingNet, default_transform, model_from_config
from dgml_viz.utils.atomic import atomic_path
from dgml_viz.validation import check_state_dict, check_transform, meta_model

logger = logging.getLogger(__name__)

FORMAT = "dgml_viz.checkpoint"
FORMAT_VERSION = 1


class ForeignCheckpointError(CheckpointError):
    """A PyTorch file that is not a dgml_viz checkpoint (another tool's file, e.g. the reference
    implementation's): :func:`open_any_checkpoint` then tries the reference reader."""


def save_checkpoint(
    model: GroupingNet,
    path: str | os.PathLike[str],
    *,
    transform: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
    metrics: dict[str, Any] | None = None,
    **meta: Any,
) -> Path:
    """Write ``model`` and its description to ``path`` atomically; returns the path.

    ``transform`` defaults to ``model.transform``. ``meta`` holds any further
    plain values (training command, seed, timings...).
    """
    model = getattr(model, "module", model)  # unwrap DDP / DataParallel
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "transform": dict(transform if transform is not None else model.transform),
        "class_names": list(class_names) if class_names is not None else None,
        "metrics": _plain(metrics or {}),
        "meta": _plain(meta),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _plain(value: Any) -> Any:
    """Turn numpy/torch scalars and tuples into plain, weights_only-loadable values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Tensor):
        return value.item() if value.numel() == 1 else value.detach().cpu().tolist()
    if hasattr(value, "item") and callable(value.item):  # numpy scalar
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _read_payload(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not head:
        raise CheckpointError(f"{path}: file is empty")
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise CheckpointError(f"{path}: checkpoint is truncated or corrupt (broken zip archive)")
        # a pickle (protocol marker 0x80) may be torch's legacy format: foreign, not garbage
        error = ForeignCheckpointError if head.startswith(b"\x80") else CheckpointError
        raise error(f"{path}: not a checkpoint (not a PyTorch zip archive)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ForeignCheckpointError(
            f"{path}: refused to unpickle objects that are not plain tensors/values ({first}); "
            "reference-implementation files can be imported with `dgml-viz convert`"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError, KeyError) as exc:
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: checkpoint is truncated or corrupt ({msg})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ForeignCheckpointError(
            f"{path}: not a dgml_viz checkpoint (a bare state dict or another tool's file?); "
            "reference-implementation files can be imported with `dgml-viz convert`"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this dgml_viz supports "
            f"({FORMAT_VERSION}); upgrade dgml_viz"
        )
    for key in ("config", "state_dict"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(f"{path}: checkpoint has no {key!r} section")
    return _checked_sections(payload, path)


def _checked_sections(payload: dict[str, Any], path: Path) -> dict[str, Any]:
    """The payload with its transform normalised and every section's type checked (one-line errors)."""
    check_state_dict(payload["state_dict"], str(path))
    try:
        payload["transform"] = check_transform(payload.get("transform") or default_transform())
    except ConfigError as exc:
        raise CheckpointError(f"{path}: invalid {exc}") from None
    names = payload.get("class_names")
    if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise CheckpointError(f"{path}: class_names must be a list of strings")
    for key in ("metrics", "meta"):
        value = payload.get(key) or {}
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: {key} must be a mapping, got {type(value).__name__}")
        payload[key] = value
    payload["class_names"] = names
    return payload


def _checked_config(payload: dict[str, Any], path: Path) -> tuple[ModelConfig, torch.nn.Module | None]:
    """The file's model config, checked field by field and built on the meta device (bounded size)."""
    try:
        config = ModelConfig.from_dict(payload["config"])
        return config, meta_model(config)
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid model config ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def read_checkpoint_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything in a checkpoint except the weights (config, transform, metrics...)."""
    payload = _read_payload(Path(path))
    _checked_config(payload, Path(path))
    info = {k: v for k, v in payload.items() if k != "state_dict"}
    info["num_parameters"] = int(sum(t.numel() for t in payload["state_dict"].values()))
    return info


def check_state_fits(model: torch.nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raise a one-line :class:`CheckpointError` unless ``state`` has exactly ``model``'s keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = [
        f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = (
        [f"shape mismatch {w}" for w in wrong]
        + [f"missing {k}" for k in missing]
        + [f"unexpected {k}" for k in extra]
    )
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CheckpointError(f"{source}: weights do not fit the architecture: {problems[0]}{more}")


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> GroupingNet:
    """Rebuild the model stored in ``path`` (safe: ``weights_only`` loading).

    The returned model is in eval mode and carries ``model.transform``,
    ``model.class_names``, ``model.metrics`` and ``model.meta`` from the file.
    """
    path = Path(path)
    payload = _read_payload(path, map_location)
    config, shapes = _checked_config(payload, path)
    if shapes is not None:  # shapes checked before anything is allocated
        check_state_fits(shapes, payload["state_dict"], str(path))
    try:
        model = model_from_config(config)
    except (ConfigError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: invalid model config ({_one_line(exc)})") from None
    if shapes is None:  # no meta build (an op without a meta kernel): check against the real model
        check_state_fits(model, payload["state_dict"], str(path))
    model.load_state_dict(payload["state_dict"])
    model.transform = payload["transform"]
    model.class_names = payload["class_names"]  # type: ignore[attr-defined]
    model.metrics = payload["metrics"]  # type: ignore[attr-defined]
    model.meta = payload["meta"]  # type: ignore[attr-defined]
    model.checkpoint_path = str(path)  # type: ignore[attr-defined]
    return model.eval()


def open_any_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> GroupingNet:
    """A dgml_viz checkpoint, or a reference-implementation file converted in memory.

    Tries :func:`load_checkpoint`; when the file is a PyTorch file but not one of ours
    (:class:`ForeignCheckpointError`), converts it with the same reader and checks as
    ``dgml-viz convert`` (:func:`dgml_viz.model.reference.import_reference_checkpoint`: no
    pickled code runs, every tensor accounted for). The model is in eval mode with the
    default eval transform (as ``convert`` writes it) and ``model.meta`` describing the source.
    Raises a one-line :class:`CheckpointError`: ours when the file is damaged or one of ours,
    else the reference reader's reason.
    """
    try:
        return load_checkpoint(path, map_location)
    except ForeignCheckpointError:
        pass
    from dgml_viz.model.reference import import_reference_checkpoint

    model, _ = import_reference_checkpoint(path)
    model.class_names = None  # type: ignore[attr-defined]
    model.metrics = {}  # type: ignore[attr-defined]
    model.checkpoint_path = str(path)  # type: ignore[attr-defined]
    return model.to(map_location)


def _from_bytes(data: bytes, name: str, loader: Any) -> GroupingNet:
    """``loader(temp file holding data)``; the temp path is replaced by ``name`` in errors and meta."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "upload.pt"
        target.write_bytes(data)
        try:
            model = loader(target)
        except CheckpointError as exc:
            raise CheckpointError(str(exc).replace(str(target), name)) from None
    meta = getattr(model, "meta", None)
    if isinstance(meta, dict) and meta.get("converted_from") == str(target):
        meta["converted_from"] = name
    return model


def load_checkpoint_bytes(data: bytes, name: str = "<upload>") -> GroupingNet:
    """:func:`load_checkpoint` for in-memory bytes (e.g. an upload); ``name`` appears in errors."""
    return _from_bytes(data, name, load_checkpoint)


def open_any_checkpoint_bytes(data: bytes, name: str = "<upload>") -> GroupingNet:
    """:func:`open_any_checkpoint` for in-memory bytes (e.g. an upload); ``name`` appears in errors."""
    return _from_bytes(data, name, open_any_checkpoint)


__all__ = ["save_checkpoint", "load_checkpoint", "load_checkpoint_bytes", "read_checkpoint_info",
           "open_any_checkpoint", "open_any_checkpoint_bytes", "ForeignCheckpointError",
           "check_state_fits", "FORMAT_VERSION"]
