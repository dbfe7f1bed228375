"""Open checkpoints written by the paper's reference implementation (XinyiXuXD/DGML-master).

Its ``evaluation.set_checkpoint`` saves
``torch.save({"state_dict": model.state_dict(), "opt": opt, "progress": LOG.progress_saver, "aux": aux})``
to ``checkpoint_<key>_<evaltype>_<metric>.pth.tar``. :func:`read_reference_file`
reads such a file without running any of its pickled code
(:mod:`~dgml_viz.model.reference.unpickle`), :func:`convert_reference` builds
our model from it with every tensor accounted for
(:mod:`~dgml_viz.model.reference.layout`), and :func:`describe_reference`
summarises it (``dgml-viz info``).

Embedding scale: the reference's evaluation vector is the concatenation of the
K unit group vectors (norm sqrt(K)); ours (``GroupOutput.embedding``) is that
vector renormalised to norm 1. Rankings are identical; distances are scaled by
1/sqrt(K).

Example:
    >>> model, ref = import_reference_checkpoint("checkpoint_Test_discriminative_e_recall@1.pth.tar")  # doctest: +SKIP
    >>> model(images).groups.shape  # doctest: +SKIP
    torch.Size([8, 3, 170])
"""
from __future__ import annotations

import hashlib
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from dgml_viz.errors import CheckpointError
from dgml_viz.model.reference.layout import GROUP_LAYERS, ReferenceSpec, map_state, resolve_spec
from dgml_viz.model.reference.unpickle import PickledRecord, load_reference_object

REFERENCE_SOURCE = "XinyiXuXD/DGML-master"


@dataclass
class ReferenceFile:
    """What a reference checkpoint holds, as inert data.

    Attributes:
        path: the file.
        sha256: hex digest of the file's bytes.
        serialization: ``"zip"`` or ``"legacy"`` (torch < 1.6 format).
        state_dict: the model tensors, ``module.`` prefix removed.
        opt: fields of the pickled ``opt`` (``CfgNode`` / ``Namespace``), ``{}`` if absent.
        opt_class: the pickled class name of ``opt`` (never imported), or ``None``.
        progress: ``{logger name: {group: {metric: [values]}}}`` from the ``Progress_Saver`` records.
        extra: other top-level entries (``aux``...), as loaded.
    """

    path: str
    sha256: str
    serialization: str
    state_dict: dict[str, Tensor]
    opt: dict[str, Any] = field(default_factory=dict)
    opt_class: str | None = None
    progress: dict[str, dict[str, dict[str, list[Any]]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> ReferenceSpec:
        """The architecture (from ``opt``, else inferred from the tensor names)."""
        return resolve_spec(self.state_dict, self.opt, self.path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _plain_fields(value: Any) -> Any:
    """Records -> dicts of their fields (recursively), so ``opt`` is plain data."""
    if isinstance(value, PickledRecord):
        return {k: _plain_fields(v) for k, v in value.fields().items()}
    if isinstance(value, dict):
        return {k: _plain_fields(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain_fields(v) for v in value)
    return value


def _progress_of(value: Any) -> dict[str, dict[str, dict[str, list[Any]]]]:
    """``{logger: {group: {metric: content}}}`` from the reference's ``Progress_Saver`` records."""
    out: dict[str, dict[str, dict[str, list[Any]]]] = {}
    if not isinstance(value, dict):
        return out
    for name, saver in value.items():
        groups = saver.get("groups") if isinstance(saver, PickledRecord) else None
        if not isinstance(groups, dict):
            continue
        out[str(name)] = {
            str(g): {str(m): list(entry.get("content", [])) for m, entry in metrics.items()
                     if isinstance(entry, dict) and isinstance(entry.get("content", []), list)}
            for g, metrics in groups.items() if isinstance(metrics, dict)
        }
    return out


def read_reference_file(path: str | os.PathLike[str]) -> ReferenceFile:
    """Read a reference checkpoint safely (no pickled code runs); see :class:`ReferenceFile`."""
    path = Path(path)
    obj = load_reference_object(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        raw_state, rest = obj["state_dict"], {k: v for k, v in obj.items() if k != "state_dict"}
    elif isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        raw_state, rest = obj, {}
    else:
        raise CheckpointError(f"{path}: no 'state_dict' of tensors found (not a reference-implementation checkpoint)")
    non_tensors = [str(k) for k, v in raw_state.items() if not isinstance(v, Tensor)]
    if non_tensors:
        raise CheckpointError(f"{path}: state_dict entry {non_tensors[0]!r} is not a tensor")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in raw_state.items()}
    opt_obj = rest.pop("opt", None)
    opt: dict[str, Any] = {}
    opt_class = None
    if isinstance(opt_obj, PickledRecord):
        opt, opt_class = _plain_fields(opt_obj), opt_obj.cls
    elif isinstance(opt_obj, dict):
        opt, opt_class = _plain_fields(opt_obj), "dict"
    elif opt_obj is not None:
        raise CheckpointError(f"{path}: 'opt' is a {type(opt_obj).__name__}, not a config record")
    progress = _progress_of(rest.pop("progress", None))
    return ReferenceFile(path=str(path), sha256=_sha256(path),
                         serialization="zip" if zipfile.is_zipfile(path) else "legacy",
                         state_dict=state, opt=opt, opt_class=opt_class, progress=progress, extra=rest)


def convert_reference(ref: ReferenceFile) -> Any:
    """Our :class:`~dgml_viz.model.network.GroupingNet` with the reference's weights (eval mode).

    Raises a one-line :class:`CheckpointError` when a tensor is missing, left over
    or has the wrong shape for the architecture ``opt`` describes.
    """
    from dgml_viz.model.checkpoint import check_state_fits
    from dgml_viz.model.network import create_model

    spec = ref.spec()
    model = create_model(**spec.model_kwargs())
    new = map_state(spec, ref.state_dict, model.state_dict(), ref.path)
    check_state_fits(model, new, ref.path)
    model.load_state_dict(new)
    model.meta = conversion_meta(ref, spec)  # type: ignore[attr-defined]
    return model.eval()


def conversion_meta(ref: ReferenceFile, spec: ReferenceSpec) -> dict[str, Any]:
    """What a converted checkpoint records about its source."""
    return {
        "converted_from": ref.path,
        "source_sha256": ref.sha256,
        "source_format": f"{REFERENCE_SOURCE} set_checkpoint ({ref.serialization} torch.save)",
        "reference_arch": spec.arch,
        "reference_group_layer": spec.group_layer or None,
        "reference_k": spec.k,
        "reference_full_dim": spec.full_dim,
        "reference_reduction": spec.reduction,
        "reference_frozen_bn": spec.frozen,
        "reference_normalize": spec.normalize,
        "reference_embedding_norm": math.sqrt(spec.k) if spec.head not in ("gap", "pooled_linear",
                                                                          "pooled_max_linear") else 1.0,
        "opt_class": ref.opt_class,
        "dataset": ref.opt.get("dataset"),
        "epoch": ref.opt.get("epoch"),
        "best_epoch": ref.opt.get("best_epoch"),
    }


def import_reference_checkpoint(path: str | os.PathLike[str]) -> tuple[Any, ReferenceFile]:
    """:func:`read_reference_file` then :func:`convert_reference`; returns ``(model, ref)``."""
    ref = read_reference_file(path)
    return convert_reference(ref), ref


def _number(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def describe_reference(ref: ReferenceFile) -> dict[str, Any]:
    """A plain summary of a reference checkpoint (what ``dgml-viz info`` prints)."""
    info: dict[str, Any] = {"format": f"{REFERENCE_SOURCE} checkpoint (convert with `dgml-viz convert`)",
                            "serialization": ref.serialization, "sha256": ref.sha256, "opt_class": ref.opt_class}
    try:
        spec = ref.spec()
        info.update({"arch": spec.arch, "backbone": spec.backbone, "group_layer": spec.group_layer or None,
                     "k": spec.k, "full_dim": spec.full_dim, "dim_per_group": spec.dim_per_group,
                     "reduction": spec.reduction, "frozen_bn": spec.frozen, "normalize": spec.normalize,
                     "architecture_from": "opt" if spec.from_opt else "tensor names",
                     "converts_to_head": spec.head})
    except CheckpointError as exc:
        info["architecture_error"] = str(exc)
    for key in ("dataset", "n_epochs", "epoch", "best_epoch", "loss_emb_name", "loss_div_name", "lam_div"):
        if key in ref.opt:
            info[key] = ref.opt[key]
    best: dict[str, dict[str, Any]] = {}
    for logger_name, groups in ref.progress.items():
        for group, metrics in groups.items():
            for metric, content in metrics.items():
                values = [f for f in map(_number, content) if f is not None]
                if not values:
                    continue
                pick = min if "loss" in metric.lower() else max
                idx = values.index(pick(values))
                best.setdefault(logger_name, {})[f"{group}/{metric}"] = {
                    "best": pick(values), "at_entry": idx + 1, "entries": len(values), "last": values[-1]}
    info["best_metrics"] = best
    info["epochs_logged"] = {name: max((len(c) for g in groups.values() for c in g.values()), default=0)
                             for name, groups in ref.progress.items()}
    info["num_tensors"] = len(ref.state_dict)
    info["num_parameters"] = int(sum(t.numel() for t in ref.state_dict.values()))
    if ref.extra:
        info["other_entries"] = sorted(str(k) for k in ref.extra)
    return info


__all__ = ["ReferenceFile", "ReferenceSpec", "PickledRecord", "GROUP_LAYERS", "read_reference_file",
           "convert_reference", "import_reference_checkpoint", "describe_reference", "conversion_meta",
           "load_reference_object"]
