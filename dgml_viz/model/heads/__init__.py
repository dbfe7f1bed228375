"""Grouping heads: ``[B, C, h, w]`` feature map -> :class:`~dgml_viz.model.output.GroupOutput`.

Every head is built as ``HEADS[name](in_channels, groups, dim, reduction)``.

==============  ==========================================================  ==========
name            what it is                                                  attention
==============  ==========================================================  ==========
attentive       K learnable queries over keys, softmax over positions       yes
gap             global average pool + linear, no grouping (K = 1)           no
multi_linear    K independent linear heads on the pooled feature            no
gate            per-group spatial 1x1-conv sigmoid masks (ABE-style)        masks
channel         per-group squeeze-and-excitation on the pooled feature      no
attentive_proj  attentive + shared d->d projection after pooling (LearnQ_he) yes
gate_masks      per-group unbounded channel x position masks (ref. Gate)     no (masks)
channel_se      per-group SE + one shared biased projection (ref. Channel)   no
pooled_linear   average pool + linear with bias, K = 1 (BN-Inception)        no
pooled_max_linear  average + max pool + linear with bias, K = 1             no
==============  ==========================================================  ==========
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from dgml_viz.model.heads.attentive import AttentiveHead
from dgml_viz.model.heads.attentive_proj import AttentiveProjHead
from dgml_viz.model.heads.channel_se import ChannelSEHead
from dgml_viz.model.heads.gate_masks import GateMaskHead
from dgml_viz.model.heads.pooled_linear import PooledLinearHead, PooledMaxLinearHead
from dgml_viz.model.heads.channel import ChannelHead
from dgml_viz.model.heads.gap import GapHead
from dgml_viz.model.heads.gate import GateHead
from dgml_viz.model.heads.multi_linear import MultiLinearHead

HEADS: dict[str, Callable[..., nn.Module]] = {
    "attentive": AttentiveHead,
    "gap": GapHead,
    "multi_linear": MultiLinearHead,
    "gate": GateHead,
    "channel": ChannelHead,
    "attentive_proj": AttentiveProjHead,
    "gate_masks": GateMaskHead,
    "channel_se": ChannelSEHead,
    "pooled_linear": PooledLinearHead,
    "pooled_max_linear": PooledMaxLinearHead,
}


def list_heads() -> list[str]:
    """Names of the available heads."""
    return list(HEADS)


__all__ = ["HEADS", "list_heads", "AttentiveHead", "GapHead", "MultiLinearHead", "GateHead", "ChannelHead",
           "AttentiveProjHead", "GateMaskHead", "ChannelSEHead", "PooledLinearHead", "PooledMaxLinearHead"]
