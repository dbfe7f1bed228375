"""Grouping heads: ``[B, C, h, w]`` feature map -> :class:`~dgml_viz.model.output.GroupOutput`.

Every head is built as ``HEADS[name](in_channels, groups, dim, reduction)``; heads register
themselves with ``@register_head(name)`` and declare ``spatial_maps`` (what their
``GroupOutput.attention`` holds), see :mod:`dgml_viz.model.heads.registry`.

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

from dgml_viz.model.heads.registry import HEADS, head_class, list_heads, register_head, spatial_maps

# importing the modules registers their heads (in this order: the CLI's and the app's choices)
from dgml_viz.model.heads.attentive import AttentiveHead  # noqa: E402
from dgml_viz.model.heads.gap import GapHead  # noqa: E402
from dgml_viz.model.heads.multi_linear import MultiLinearHead  # noqa: E402
from dgml_viz.model.heads.gate import GateHead  # noqa: E402
from dgml_viz.model.heads.channel import ChannelHead  # noqa: E402
from dgml_viz.model.heads.attentive_proj import AttentiveProjHead  # noqa: E402
from dgml_viz.model.heads.gate_masks import GateMaskHead  # noqa: E402
from dgml_viz.model.heads.channel_se import ChannelSEHead  # noqa: E402
from dgml_viz.model.heads.pooled_linear import PooledLinearHead, PooledMaxLinearHead  # noqa: E402

__all__ = ["HEADS", "list_heads", "register_head", "head_class", "spatial_maps", "AttentiveHead", "GapHead", "MultiLinearHead", "GateHead", "ChannelHead",
           "AttentiveProjHead", "GateMaskHead", "ChannelSEHead", "PooledLinearHead", "PooledMaxLinearHead"]
