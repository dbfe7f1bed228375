"""timm backbones: ``timm:<model name>`` built by ``timm.create_model``, as ``[B, C, h, w]`` maps.

Two kinds, chosen from what the timm model declares (not from its name):

* token models (ViT, DeiT, EVA, ...: they declare ``num_prefix_tokens`` and a
  ``patch_embed``) — :class:`TimmTokenGrid` runs ``forward_features`` (final
  norm included) and reshapes the *patch* tokens ``[B, N, C]`` to their
  ``h x w`` grid ``[B, C, h, w]``; class and register tokens (the first
  ``num_prefix_tokens``) are kept out of the grid, so the attentive head attends
  over image patches only (a 14x14 grid at 224 px with patch 16);
* everything else (ConvNeXt, ResNets, EfficientNets, ...) —
  :class:`TimmFeatureMap` builds the model with ``features_only=True`` and
  returns its last stage.

Both declare ``out_channels``, ``stride`` (pixels per grid cell: the patch size
for a ViT) and ``eval_transform``, the checkpoint transform dict derived from
timm's pretrained config (input size, ``crop_pct`` -> ``resize``, mean/std,
interpolation). Extra constructor arguments (``img_size``, ``depth``,
``embed_dim``, ``num_heads``, ``reg_tokens`` for ViTs; ``depths``, ``dims`` for
ConvNeXt; ``pretrained_cfg_overlay={"file": ...}`` for local weights) come from
the model config's ``backbone_kwargs`` and go to ``timm.create_model`` as-is.

``pretrained=True`` loads timm's default (or the ``name.tag``) weights through
timm's own loader and the Hugging Face hub cache; without network and cache it
fails with one :class:`~dgml_viz.errors.DgmlVizError` line saying where the file goes.

Example:
    >>> bb = create_timm_backbone("vit_small_patch16_224", img_size=64, depth=2, embed_dim=64, num_heads=2)
    >>> bb(torch.randn(2, 3, 64, 64)).shape, bb.stride
    (torch.Size([2, 64, 4, 4]), 16)
"""
from __future__ import annotations

import functools
import json
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from dgml_viz.errors import ConfigError, DgmlVizError

logger = logging.getLogger(__name__)

#: backbone names with this prefix are resolved through timm
TIMM_PREFIX = "timm:"

#: names listed by :func:`dgml_viz.model.backbones.list_backbones` (any valid timm name works)
SUGGESTED_TIMM_BACKBONES: tuple[str, ...] = (
    "timm:vit_small_patch16_224",
    "timm:vit_small_patch16_224.dino",
    "timm:vit_base_patch16_224",
    "timm:convnext_tiny",
)


def _timm() -> Any:
    import timm

    return timm


def is_token_model(model: nn.Module) -> bool:
    """Whether a timm model is a patch-token model (declares ``num_prefix_tokens`` and ``patch_embed``)."""
    return isinstance(getattr(model, "num_prefix_tokens", None), int) and hasattr(model, "patch_embed")


# --------------------------------------------------------------------------- what a name builds
@dataclass(frozen=True)
class TimmInfo:
    """What ``timm:<name>`` with given kwargs builds, found without allocating weights."""

    tokens: bool
    channels: int
    stride: int


def _kwargs_key(kwargs: dict[str, Any]) -> str:
    return json.dumps(kwargs, sort_keys=True, default=repr)


def _create(name: str, pretrained: bool, tokens: bool | None, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model`` with our conventions; bad names/kwargs -> one-line ConfigError."""
    timm = _timm()
    if not timm.is_model(name):
        raise ConfigError(f"unknown timm model {name!r} (backbone 'timm:{name}'); see timm.list_models()")
    extra: dict[str, Any] = {"num_classes": 0} if tokens in (None, True) else {
        "features_only": True, "out_indices": (-1,)}
    try:
        return timm.create_model(name, pretrained=pretrained, **extra, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"backbone 'timm:{name}': bad backbone_kwargs {kwargs!r} ({exc})") from None
    except (RuntimeError, ValueError, AssertionError) as exc:
        if pretrained:
            raise
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"backbone 'timm:{name}' cannot be built with {kwargs!r} ({first})") from None


@functools.lru_cache(maxsize=64)
def _inspect(name: str, key: str) -> TimmInfo:
    kwargs = json.loads(key)
    with torch.device("meta"):  # no memory, no init cost worth mentioning
        probe = _create(name, False, None, kwargs)
    if is_token_model(probe):
        return TimmInfo(True, int(probe.num_features), int(max(probe.patch_embed.patch_size)))
    with torch.device("meta"):
        probe = _create(name, False, False, kwargs)
    info = probe.feature_info
    return TimmInfo(False, int(info.channels()[-1]), int(info.reduction()[-1]))


def timm_info(name: str, **kwargs: Any) -> TimmInfo:
    """Kind, channels and stride of ``timm:<name>`` built with ``kwargs`` (cached; no weights allocated)."""
    return _inspect(name, _kwargs_key(kwargs))


# --------------------------------------------------------------------------- eval transform
def transform_from_timm(model: nn.Module, size: int | None = None) -> dict[str, Any]:
    """Checkpoint transform dict (:func:`~dgml_viz.model.network.default_transform` format) from timm's config.

    Uses ``timm.data.resolve_data_config`` on ``model`` (its ``pretrained_cfg``):
    ``size`` = input size (or ``size`` when the model was built for another image
    size), ``resize = floor(size / crop_pct)`` (timm's eval ``Resize``), mean/std,
    and ``interpolation`` recorded alongside. timm's ``squash`` crop mode with
    ``crop_pct = 1`` is ``mode="full"``; everything else is ``center_crop``.
    """
    cfg = _timm().data.resolve_data_config({}, model=model)
    s = int(size if size is not None else cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    mode = "full" if cfg.get("crop_mode") == "squash" and crop_pct >= 1.0 else "center_crop"
    return {"size": s, "resize": int(math.floor(s / crop_pct)), "mean": [float(v) for v in cfg["mean"]],
            "std": [float(v) for v in cfg["std"]], "mode": mode,
            "interpolation": str(cfg.get("interpolation", "bilinear"))}


# --------------------------------------------------------------------------- pretrained weights
def _weights_location(name: str) -> str:
    cfg = _timm().models.get_pretrained_cfg(name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if hub_id:
        try:
            from huggingface_hub.constants import HF_HUB_CACHE
        except ImportError:  # pragma: no cover - timm depends on huggingface_hub
            HF_HUB_CACHE = os.path.expanduser("~/.cache/huggingface/hub")
        folder = os.path.join(HF_HUB_CACHE, "models--" + hub_id.replace("/", "--"))
        return (f"fetch the Hugging Face repo {hub_id} into the hub cache {folder} "
                f"(`hf download {hub_id}` on a machine with network, then copy the cache)")
    url = getattr(cfg, "url", None) if cfg is not None else None
    if url:
        return f"download {url} and place it in {os.path.join(torch.hub.get_dir(), 'checkpoints')}"
    return "timm has no pretrained weights for this name"


def _create_pretrained(name: str, tokens: bool, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return _create(name, True, tokens, kwargs)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - timm/hub raise many types (OSError, RuntimeError, hub errors)
        first = str(exc).strip().splitlines()[0][:140] if str(exc).strip() else type(exc).__name__
        raise DgmlVizError(
            f"cannot get pretrained weights for timm:{name} ({type(exc).__name__}: {first}); "
            f"{_weights_location(name)}, or pass backbone_kwargs.pretrained_cfg_overlay={{file: /path/to/weights}}"
        ) from None


# --------------------------------------------------------------------------- modules
class TimmBackbone(nn.Module):
    """A timm model as a feature-map backbone: ``forward([B, 3, H, W]) -> [B, C, h, w]``.

    Attributes declared for the rest of dgml_viz: ``model`` (the timm module),
    ``out_channels`` (C), ``stride`` (input pixels per grid cell),
    ``eval_transform`` (checkpoint transform dict), ``timm_name``,
    ``position_embedding`` (the features depend on absolute position, so the
    head's permutation invariance does not make the embedding translation invariant).
    """

    position_embedding: bool = False

    def __init__(self, name: str, model: nn.Module, channels: int, stride: int, size: int | None) -> None:
        super().__init__()
        self.timm_name = name
        self.model = model
        self.out_channels = int(channels)
        self.stride = int(stride)
        self.eval_transform = transform_from_timm(model, size)

    def layer_ids(self) -> tuple[dict[str, int], int]:
        """``({parameter name (relative to this module): depth index}, number of depths)``.

        Depths come from timm's own ``group_matcher`` (ViT: embeddings 0, block
        ``i`` depth ``i + 1``, the final norm with the last block); for layer-wise
        learning-rate decay (``train.layer_decay``).
        """
        from timm.models import group_parameters

        matcher = getattr(self.model, "group_matcher", None)
        if matcher is None:
            names = [n for n, _ in self.model.named_parameters()]
            return {f"model.{n}": 0 for n in names}, 1
        layer_map = group_parameters(self.model, matcher(coarse=False), reverse=True)
        return {f"model.{n}": int(i) for n, i in layer_map.items()}, int(max(layer_map.values())) + 1


class TimmFeatureMap(TimmBackbone):
    """A CNN-like timm model with ``features_only=True``: its last stage ``[B, C, H/s, W/s]``."""

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W] -> [B, C, h, w]``."""
        return self.model(images)[-1]


class TimmTokenGrid(TimmBackbone):
    """A patch-token timm model (ViT-like): patch tokens as a grid, prefix tokens dropped.

    ``forward`` = ``model.forward_features`` (``[B, P + h*w, C]``, final norm
    applied) -> :meth:`tokens_to_grid` -> ``[B, C, h, w]``. ``P`` =
    ``num_prefix_tokens`` (class + register tokens).
    """

    def __init__(self, name: str, model: nn.Module, channels: int, stride: int) -> None:
        pe = model.patch_embed
        dynamic = bool(getattr(pe, "dynamic_img_size", False) or getattr(model, "dynamic_img_size", False))
        size = None if dynamic or getattr(pe, "img_size", None) is None else int(pe.img_size[-1])
        super().__init__(name, model, channels, stride, size)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        # absolute (learned/sincos) or rotary position embeddings: the map depends on where a patch is
        self.position_embedding = (getattr(model, "pos_embed", None) is not None
                                   or getattr(model, "rope", None) is not None)

    def grid_shape(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """``(h, w)`` of the patch grid for an ``H x W`` input (timm's own patch-embed arithmetic)."""
        pe = self.model.patch_embed
        if hasattr(pe, "dynamic_feat_size") and (getattr(pe, "dynamic_img_size", False)
                                                 or getattr(self.model, "dynamic_img_size", False)):
            h, w = pe.dynamic_feat_size(tuple(int(v) for v in image_hw))
            return int(h), int(w)
        h, w = pe.grid_size
        return int(h), int(w)

    def tokens_to_grid(self, tokens: Tensor, grid: tuple[int, int]) -> Tensor:
        """``[B, P + h*w, C]`` tokens -> ``[B, C, h, w]`` patch grid (row-major, the first P dropped)."""
        h, w = grid
        b, n, c = tokens.shape
        if n != self.num_prefix_tokens + h * w:
            raise ValueError(f"expected {self.num_prefix_tokens} + {h}*{w} tokens, got {n}")
        return tokens[:, self.num_prefix_tokens:].transpose(1, 2).reshape(b, c, h, w)

    def grid_to_tokens(self, grid_map: Tensor, prefix: Tensor) -> Tensor:
        """Inverse of :meth:`tokens_to_grid`: ``[B, C, h, w]`` + prefix ``[B, P, C]`` -> ``[B, P + h*w, C]``."""
        return torch.cat([prefix, grid_map.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W] -> [B, C, h, w]`` with ``h, w = H / patch, W / patch``."""
        return self.tokens_to_grid(self.model.forward_features(images), self.grid_shape(images.shape[-2:]))


def create_timm_backbone(name: str, pretrained: bool = False, **kwargs: Any) -> TimmBackbone:
    """Build ``timm:<name>`` (``name`` without the prefix; ``name.tag`` picks pretrained weights)."""
    info = timm_info(name, **kwargs)
    model = _create_pretrained(name, info.tokens, kwargs) if pretrained else _create(name, False, info.tokens, kwargs)
    if info.tokens:
        return TimmTokenGrid(name, model, info.channels, info.stride)
    return TimmFeatureMap(name, model, info.channels, info.stride, None)


__all__ = ["TIMM_PREFIX", "SUGGESTED_TIMM_BACKBONES", "TimmBackbone", "TimmFeatureMap", "TimmTokenGrid",
           "TimmInfo", "create_timm_backbone", "timm_info", "transform_from_timm", "is_token_model"]
