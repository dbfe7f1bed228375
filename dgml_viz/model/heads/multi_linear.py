"""Baseline head: K independent linear heads on the globally pooled feature."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from dgml_viz.model.heads.registry import register_head
from dgml_viz.model.output import GroupOutput, assemble


@register_head("multi_linear")
class MultiLinearHead(nn.Module):
    """``[B, C, h, w] -> GroupOutput(embedding [B, K*d], groups [B, K, d], attention None)``.

    The K linear maps ``C -> d`` are stored as one ``C -> K*d`` linear layer, so
    all groups are computed in one matmul.
    """

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = None

    def __init__(self, in_channels: int, groups: int = 3, dim: int = 512, reduction: int = 8) -> None:
        super().__init__()
        self.num_groups = groups
        self.group_dim = dim // groups
        self.fc = nn.Linear(in_channels, groups * self.group_dim, bias=False)

    def forward(self, x: Tensor) -> GroupOutput:
        pooled = x.mean(dim=(2, 3))
        return assemble(self.fc(pooled).view(x.shape[0], self.num_groups, self.group_dim))
