"""Grouping models: backbones, heads, the network and safe checkpoints."""
from __future__ import annotations

from dgml_viz.model.backbones import list_backbones, receptive_field, register_backbone
from dgml_viz.model.config import ModelConfig
from dgml_viz.model.heads import list_heads
from dgml_viz.model.network import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GroupingNet,
    create_model,
    default_transform,
    model_from_config,
)
from dgml_viz.model.output import GroupOutput

__all__ = [
    "GroupOutput", "GroupingNet", "ModelConfig", "create_model", "model_from_config",
    "default_transform", "list_backbones", "list_heads", "register_backbone", "receptive_field",
    "IMAGENET_MEAN", "IMAGENET_STD",
]
