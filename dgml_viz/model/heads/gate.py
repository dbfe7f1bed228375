"""Baseline head: per-group spatial gates (ABE-style 1x1-conv sigmoid masks)."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from dgml_viz.model.heads.registry import register_head
from dgml_viz.model.output import GroupOutput, assemble


@register_head("gate")
class GateHead(nn.Module):
    """Per-group sigmoid masks ``m_g = sigmoid(w_g^T X + b_g)`` gate the map before pooling.

    ``f_g = W_g · (sum_p m_g(p) X(p) / sum_p m_g(p))``. The masks, normalised to
    sum to 1 over positions, are exposed as ``attention`` (so they can be drawn
    and compared like the attentive head's maps).

    Shapes: ``[B, C, h, w] -> GroupOutput([B, K*d], [B, K, d], [B, K, h, w])``.
    """

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = "mask"

    def __init__(self, in_channels: int, groups: int = 3, dim: int = 512, reduction: int = 8) -> None:
        super().__init__()
        self.num_groups = groups
        self.group_dim = dim // groups
        self.gate = nn.Conv2d(in_channels, groups, kernel_size=1)
        self.proj = nn.Parameter(torch.empty(groups, self.group_dim, in_channels))
        nn.init.uniform_(self.proj, -1 / math.sqrt(in_channels), 1 / math.sqrt(in_channels))

    def forward(self, x: Tensor) -> GroupOutput:
        b, _, h, w = x.shape
        masks = torch.sigmoid(self.gate(x)).flatten(2)  # [B, K, N]
        attention = masks / masks.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        pooled = torch.bmm(attention, x.flatten(2).transpose(1, 2))  # [B, K, C]
        groups = torch.einsum("bkc,kdc->bkd", pooled, self.proj)
        return assemble(groups, attention.view(b, self.num_groups, h, w))
