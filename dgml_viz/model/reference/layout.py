"""How the reference implementation lays out its networks, and the mapping onto ours.

Facts (XinyiXuXD/DGML-master, ``architectures/``): the network is wrapped in
``nn.DataParallel`` (every key starts with ``module.``, stripped before we get
here) and holds ``model = Sequential(backbone, group_layer)``:

* ``model.0`` - ResNet-50 in Cadene's layout cut by ``children()[:-2]`` (index
  for index our ``resnet50`` backbone) or torchvision GoogLeNet cut by
  ``children()[:-3]`` (ends at ``inception5b``; our ``googlenet`` trunk's
  ``body``). GoogLeNet's input re-scaling lives in its ``forward`` and is not
  part of those children, so the converted trunk does not apply it either.
* ``model.1`` - one of six group layers, built with ``in_channel`` C,
  ``k`` K, ``dim_per = full_dim // k`` d and ``reduction`` r.
* BN-Inception is another network: Cadene's BN-Inception under ``model.*``
  whose ``last_linear`` (with bias) embeds the average (+ max, ``double``)
  pooled ``features``; there is no group layer.

``arch`` flags are substrings: the backbone is the first of ``resnet50``,
``googlenet``, ``bninception`` found; ``frozen`` keeps BatchNorm in eval mode
(ResNet-50 and BN-Inception only; the GoogLeNet network ignores it);
``normalize`` L2-normalises the training output per group (the reference's
evaluation normalises per group in any case, as our heads do).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from dgml_viz.errors import CheckpointError

#: reference group layer -> our head
GROUP_LAYERS: dict[str, str] = {
    "LearnQ_fen": "attentive",
    "LearnQ_he": "attentive_proj",
    "MulLinear": "multi_linear",
    "LinearEmb": "gap",
    "Gate": "gate_masks",
    "Channel": "channel_se",
}
BACKBONES: tuple[str, ...] = ("resnet50", "googlenet", "bninception")
#: reference default (``configs/defaults.py``)
DEFAULTS: dict[str, Any] = {"arch": "googlenet", "k": 3, "full_dim": 512, "reduction": 8,
                            "group_name": "LearnQ_fen"}
#: the reference's SqueezeExcitation bottleneck ratio (fixed in ``group_layers.py``)
SE_REDUCTION = 5


@dataclass(frozen=True)
class ReferenceSpec:
    """What a reference checkpoint is, as read from its ``opt`` (falling back to its tensors)."""

    arch: str
    backbone: str
    group_layer: str  # reference name; "" for BN-Inception
    k: int
    full_dim: int
    reduction: int
    frozen: bool
    normalize: bool
    double_pool: bool = False
    from_opt: bool = True

    @property
    def head(self) -> str:
        if self.backbone == "bninception":
            return "pooled_max_linear" if self.double_pool else "pooled_linear"
        return GROUP_LAYERS[self.group_layer]

    @property
    def dim_per_group(self) -> int:
        return self.full_dim if self.group_layer in ("LinearEmb", "") else self.full_dim // self.k

    def model_kwargs(self) -> dict[str, Any]:
        """Arguments of :func:`~dgml_viz.model.create_model` for the converted model."""
        single = self.group_layer in ("LinearEmb", "") or self.backbone == "bninception"
        return {"backbone": self.backbone, "head": self.head, "groups": 1 if single else self.k,
                "dim": self.full_dim, "freeze_bn": self.frozen,
                "reduction": SE_REDUCTION if self.group_layer == "Channel" else self.reduction}


def _backbone_of(arch: str) -> str | None:
    return next((b for b in BACKBONES if b in arch), None)


def _infer_backbone(state: dict[str, Tensor]) -> str | None:
    if "model.conv1_7x7_s2.weight" in state:
        return "bninception"
    if "model.0.4.0.conv3.weight" in state:
        return "resnet50"
    if "model.0.15.branch1.conv.weight" in state:
        return "googlenet"
    return None


_LAYER_KEYS = (("ph.weight", "LearnQ_he"), ("key_conv.weight", "LearnQ_fen"), ("mul_linear.weight", "MulLinear"),
               ("linear_emb.weight", "LinearEmb"), ("share_conv.weight", "Gate"), ("SE_ops.0.fc.0.weight", "Channel"))


def _infer_layer(state: dict[str, Tensor]) -> str | None:
    return next((name for key, name in _LAYER_KEYS if f"model.1.{key}" in state), None)


def _count(state: dict[str, Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def _as_int(opt: dict[str, Any], key: str, source: str) -> int | None:
    if key not in opt or opt[key] is None:
        return None
    value = opt[key]
    try:
        if isinstance(value, bool) or int(value) != value:
            raise ValueError
        return int(value)
    except (TypeError, ValueError):
        raise CheckpointError(f"{source}: opt.{key} = {value!r} is not an integer") from None


def resolve_spec(state: dict[str, Tensor], opt: dict[str, Any], source: str) -> ReferenceSpec:
    """The architecture of a reference checkpoint: ``opt`` first, the tensor names where ``opt`` is silent."""
    arch = opt.get("arch")
    if arch is not None and not isinstance(arch, str):
        raise CheckpointError(f"{source}: opt.arch = {arch!r} is not a string")
    backbone = _backbone_of(arch) if arch else _infer_backbone(state)
    if backbone is None:
        what = f"opt.arch {arch!r} names none of" if arch else "no opt.arch and the tensors match none of"
        raise CheckpointError(f"{source}: {what} the reference backbones ({', '.join(BACKBONES)})")
    arch = arch or backbone
    if backbone == "bninception":
        if "model.last_linear.weight" not in state:
            raise CheckpointError(f"{source}: BN-Inception checkpoint lacks model.last_linear.weight")
        out_dim = int(state["model.last_linear.weight"].shape[0])
        embed = _as_int(opt, "embed_dim", source)
        if embed is not None and embed != out_dim:
            raise CheckpointError(f"{source}: opt.embed_dim {embed} but model.last_linear has {out_dim} outputs")
        return ReferenceSpec(arch, backbone, "", 1, out_dim, DEFAULTS["reduction"], "frozen" in arch,
                             "normalize" in arch, "double" in arch, bool(opt))
    layer = opt.get("group_name") or _infer_layer(state)
    if layer not in GROUP_LAYERS:
        raise CheckpointError(f"{source}: unknown group layer {layer!r}; the reference has "
                              f"{', '.join(GROUP_LAYERS)}")
    k = _as_int(opt, "k", source)
    if k is None:
        k = {"LearnQ_fen": _count(state, r"^model\.1\.que_embedding\.(\d+)\."),
             "LearnQ_he": _count(state, r"^model\.1\.que_embedding\.(\d+)\."),
             "Gate": _count(state, r"^model\.1\.indep_cov\.(\d+)\."),
             "Channel": _count(state, r"^model\.1\.SE_ops\.(\d+)\.")}.get(layer) or DEFAULTS["k"]
    full_dim = _as_int(opt, "full_dim", source)
    if full_dim is None:
        full_dim = _infer_full_dim(state, layer, k) or DEFAULTS["full_dim"]
    reduction = _as_int(opt, "reduction", source)
    if reduction is None:
        reduction = _infer_reduction(state, layer) or DEFAULTS["reduction"]
    if k < 1 or full_dim < k or reduction < 1:
        raise CheckpointError(f"{source}: invalid k={k}, full_dim={full_dim}, reduction={reduction}")
    return ReferenceSpec(arch, backbone, layer, k, full_dim, reduction,
                         "frozen" in arch and backbone != "googlenet", "normalize" in arch, False, bool(opt))


def _infer_full_dim(state: dict[str, Tensor], layer: str, k: int) -> int | None:
    key = {"LearnQ_fen": "val_conv.weight", "LearnQ_he": "val_conv.weight", "MulLinear": "mul_linear.weight",
           "LinearEmb": "linear_emb.weight", "Gate": "linear.weight", "Channel": "linear.weight"}[layer]
    t = state.get(f"model.1.{key}")
    if t is None:
        return None
    return int(t.shape[0]) * (1 if layer in ("MulLinear", "LinearEmb") else k)


def _infer_reduction(state: dict[str, Tensor], layer: str) -> int | None:
    key = {"LearnQ_fen": "key_conv.weight", "LearnQ_he": "key_conv.weight", "Gate": "share_conv.weight"}.get(layer)
    t = state.get(f"model.1.{key}") if key else None
    if t is None or t.shape[0] == 0:
        return None
    return int(t.shape[1]) // int(t.shape[0])


# --------------------------------------------------------------------------- mapping
def _backbone_rule(backbone: str) -> Callable[[str], str]:
    """Our backbone key (without ``backbone.``) -> the reference key."""
    if backbone == "resnet50":
        return lambda k: f"model.0.{k}"
    if backbone == "googlenet":
        return lambda k: f"model.0.{k[len('body.'):]}" if k.startswith("body.") else f"model.0.{k}"
    return lambda k: f"model.{k}"


def _head_plan(spec: ReferenceSpec) -> dict[str, list[str]]:
    """Our head key (without ``head.``) -> the reference keys it is made of (stacked when several)."""
    k = spec.k
    h = "model.1."
    per = lambda fmt: [f"{h}{fmt.format(i)}" for i in range(k)]  # noqa: E731
    if spec.backbone == "bninception":
        return {"fc.weight": ["model.last_linear.weight"], "fc.bias": ["model.last_linear.bias"]}
    layer = spec.group_layer
    if layer in ("LearnQ_fen", "LearnQ_he"):
        plan = {"key.weight": [f"{h}key_conv.weight"], "value.weight": [f"{h}val_conv.weight"],
                "queries": per("que_embedding.{}.weight")}
        if layer == "LearnQ_he":
            plan["proj.weight"] = [f"{h}ph.weight"]
        return plan
    if layer == "MulLinear":
        return {"fc.weight": [f"{h}mul_linear.weight"]}
    if layer == "LinearEmb":
        return {"fc.weight": [f"{h}linear_emb.weight"]}
    if layer == "Gate":
        return {"share.weight": [f"{h}share_conv.weight"], "share.bias": [f"{h}share_conv.bias"],
                "mask_weight": per("indep_cov.{}.weight"), "mask_bias": per("indep_cov.{}.bias"),
                "proj.weight": [f"{h}linear.weight"]}
    return {"squeeze": per("SE_ops.{}.fc.0.weight"), "excite": per("SE_ops.{}.fc.2.weight"),
            "proj.weight": [f"{h}linear.weight"], "proj.bias": [f"{h}linear.bias"]}


def map_state(spec: ReferenceSpec, state: dict[str, Tensor], own: dict[str, Tensor],
              source: str) -> dict[str, Tensor]:
    """Our state dict from the reference's; every reference tensor must be used exactly once.

    ``own`` is the freshly built model's state dict (target keys and shapes).
    Raises a one-line :class:`CheckpointError` naming the missing, left-over or
    mis-shaped reference keys.
    """
    rest = dict(state)
    new: dict[str, Tensor] = {}
    missing: list[str] = []
    wrong: list[str] = []
    to_ref = _backbone_rule(spec.backbone)
    plan: dict[str, list[str]] = {}
    for key in own:
        if key.startswith("backbone."):
            plan[key] = [to_ref(key[len("backbone."):])]
    plan.update({f"head.{k}": v for k, v in _head_plan(spec).items()})
    for ours, refs in plan.items():
        target = own[ours]
        if any(r not in rest for r in refs):
            if ours.endswith("num_batches_tracked") and all(r not in state for r in refs):
                new[ours] = target.clone()  # files of torch < 0.4.1 lack the counter; eval never reads it
                continue
            missing += [r for r in refs if r not in rest]
            continue
        parts = [rest.pop(r) for r in refs]
        if len(parts) == 1:
            value = parts[0]
            if ours.startswith("head.") and value.numel() == target.numel() and value.dim() != target.dim():
                value = value.reshape(target.shape)  # 1x1 conv kernels stored as [o, i, 1, 1]
        else:
            piece = target.shape[1:]
            bad = [f"{r} {list(p.shape)}" for r, p in zip(refs, parts) if p.numel() != piece.numel()]
            if bad:
                wrong.append(f"{bad[0]} (expected {list(piece)} elements)")
                continue
            value = torch.stack([p.reshape(piece) for p in parts])
        if tuple(value.shape) != tuple(target.shape):
            wrong.append(f"{refs[0]} {list(parts[0].shape)} (expected {list(target.shape)})")
            continue
        new[ours] = value.to(target.dtype) if value.is_floating_point() else value
    problems = ([f"shape mismatch {w}" for w in wrong] + [f"missing {m}" for m in missing]
                + [f"unused tensor {k}" for k in sorted(rest)])
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        what = f"{spec.backbone} + {spec.group_layer or 'last_linear'} (k={spec.k}, full_dim={spec.full_dim})"
        raise CheckpointError(f"{source}: tensors do not fit {what}: {'; '.join(problems[:3])}{more}")
    return new
