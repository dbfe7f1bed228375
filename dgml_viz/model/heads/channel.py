"""Baseline head: per-group channel attention (squeeze-and-excitation)."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from dgml_viz.model.heads.registry import register_head
from dgml_viz.model.output import GroupOutput, assemble


@register_head("channel")
class ChannelHead(nn.Module):
    """Each group re-weights channels with its own SE block, then projects.

    ``s_g = sigmoid(W2_g relu(W1_g gap(X)))``, ``f_g = P_g (s_g * gap(X))``.
    Channel scaling commutes with average pooling, so this equals SE applied to
    the map followed by pooling. All K groups run as batched einsums.

    Shapes: ``[B, C, h, w] -> GroupOutput([B, K*d], [B, K, d], None)``.
    """

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = None

    def __init__(self, in_channels: int, groups: int = 3, dim: int = 512, reduction: int = 8) -> None:
        super().__init__()
        self.num_groups = groups
        self.group_dim = dim // groups
        hidden = max(1, in_channels // reduction)
        self.squeeze = nn.Parameter(torch.empty(groups, hidden, in_channels))
        self.excite = nn.Parameter(torch.empty(groups, in_channels, hidden))
        self.excite_bias = nn.Parameter(torch.zeros(groups, in_channels))
        self.proj = nn.Parameter(torch.empty(groups, self.group_dim, in_channels))
        for p, fan_in in ((self.squeeze, in_channels), (self.excite, hidden), (self.proj, in_channels)):
            nn.init.uniform_(p, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(self, x: Tensor) -> GroupOutput:
        pooled = x.mean(dim=(2, 3))  # [B, C]
        hidden = torch.relu(torch.einsum("khc,bc->bkh", self.squeeze, pooled))
        scale = torch.sigmoid(torch.einsum("kch,bkh->bkc", self.excite, hidden) + self.excite_bias)
        groups = torch.einsum("kdc,bkc->bkd", self.proj, scale * pooled.unsqueeze(1))
        return assemble(groups)
