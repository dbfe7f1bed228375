"""Import checkpoints written by the paper's reference implementation.

Their files are ``torch.save`` zips of a dict that holds a DataParallel state
dict (``module.`` prefix; backbone ``model.0.*`` = torchvision ResNet children in
order, head ``model.1.key_conv.weight``, ``model.1.val_conv.weight``,
``model.1.que_embedding.{i}.weight`` of shape ``[1, C/r, 1, 1]``) next to
pickled objects of their own code (a config object, a logger).

We never execute or import anything of theirs: every global the pickle names
that is not a plain tensor/container type is replaced by an inert stub class
(its constructor and ``__setstate__`` ignore their arguments), so only the
tensors are recovered. What was skipped is reported.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dgml_viz.errors import CheckpointError
from dgml_viz.model.network import GroupingNet, create_model

logger = logging.getLogger(__name__)


class _Inert:
    """Stand-in for a global of foreign code: accepts anything, does nothing."""

    _stub_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "_Inert":
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<skipped {self._stub_name}>"


def _inert_class(full_name: str) -> type:
    return type(f"Skipped[{full_name}]", (_Inert,), {"_stub_name": full_name})


@dataclass
class ReferenceImport:
    """Tensors recovered from a reference file and what was left out."""

    state_dict: dict[str, Tensor]
    skipped_globals: list[str] = field(default_factory=list)
    skipped_keys: list[str] = field(default_factory=list)


def read_reference_file(path: str | os.PathLike[str]) -> ReferenceImport:
    """Recover the model state dict from a reference checkpoint without running its pickle code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: not a PyTorch zip checkpoint (empty, truncated or another format)")
    try:
        foreign = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot read pickle ({str(exc).splitlines()[0][:120]})") from None
    stubs = [(_inert_class(name), name) for name in foreign]
    try:
        with torch.serialization.safe_globals(stubs):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot recover tensors ({str(exc).splitlines()[0][:160]})") from None
    state = _find_state_dict(obj)
    if state is None:
        raise CheckpointError(f"{path}: no state dict with an attentive head (model.1.key_conv.weight) found")
    if foreign:
        logger.info("%s: skipped pickled objects of foreign code: %s", path, ", ".join(foreign))
    return ReferenceImport(state_dict=state, skipped_globals=list(foreign))


def _find_state_dict(obj: Any, depth: int = 0) -> dict[str, Tensor] | None:
    if depth > 4:
        return None
    if isinstance(obj, dict):
        if any(isinstance(k, str) and k.endswith("key_conv.weight") for k in obj):
            return {k: v for k, v in obj.items() if isinstance(v, Tensor)}
        for value in obj.values():
            found = _find_state_dict(value, depth + 1)
            if found is not None:
                return found
    return None


_QUERY = re.compile(r"^model\.1\.que_embedding\.(\d+)\.weight$")


def convert_reference_state(state: dict[str, Tensor], source: str = "<state dict>") -> tuple[GroupingNet, list[str]]:
    """Build our model from a reference state dict; returns ``(model, skipped_keys)``.

    The architecture is inferred from the tensors: C and C/r from ``key_conv``,
    d from ``val_conv``, K from the number of ``que_embedding`` entries, and the
    backbone (ResNet-50 / ResNet-18) from the block layout.
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        key_w = state["model.1.key_conv.weight"]
        val_w = state["model.1.val_conv.weight"]
    except KeyError as exc:
        raise CheckpointError(f"{source}: reference state dict lacks {exc.args[0]}") from None
    queries = sorted(((int(m.group(1)), v) for k, v in state.items() if (m := _QUERY.match(k))),
                     key=lambda kv: kv[0])
    if not queries or [i for i, _ in queries] != list(range(len(queries))):
        raise CheckpointError(f"{source}: query embeddings model.1.que_embedding.<i> missing or not 0..K-1")
    hidden, channels = int(key_w.shape[0]), int(key_w.shape[1])
    group_dim, groups = int(val_w.shape[0]), len(queries)
    if "model.0.4.0.conv3.weight" in state and channels == 2048:
        backbone = "resnet50"
    elif "model.0.4.0.conv2.weight" in state and channels == 512:
        backbone = "resnet18"
    else:
        raise CheckpointError(f"{source}: unsupported backbone (feature channels {channels})")
    if channels % hidden:
        raise CheckpointError(f"{source}: key width {hidden} does not divide channels {channels}")
    model = create_model(backbone, groups=groups, dim=groups * group_dim, head="attentive",
                         reduction=channels // hidden)
    own = model.state_dict()
    new: dict[str, Tensor] = {}
    skipped: list[str] = []
    for k, v in state.items():
        if k.startswith("model.0."):
            new["backbone." + k[len("model.0."):]] = v
        elif k in ("model.1.key_conv.weight", "model.1.val_conv.weight") or _QUERY.match(k):
            continue
        else:
            skipped.append(k)
    new["head.key.weight"] = key_w
    new["head.value.weight"] = val_w
    new["head.queries"] = torch.cat([v.reshape(1, hidden) for _, v in queries], dim=0)
    for k in own:  # very old torch files lack BatchNorm's counters
        if k.endswith("num_batches_tracked") and k not in new:
            new[k] = own[k]
    from dgml_viz.model.checkpoint import check_state_fits

    check_state_fits(model, new, source)
    model.load_state_dict(new)
    return model.eval(), skipped


def import_reference_checkpoint(path: str | os.PathLike[str]) -> tuple[GroupingNet, ReferenceImport]:
    """Read a reference file and build our model from it."""
    ref = read_reference_file(path)
    model, skipped = convert_reference_state(ref.state_dict, str(path))
    ref.skipped_keys = skipped
    return model, ref
