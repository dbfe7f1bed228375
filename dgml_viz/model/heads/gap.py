"""Baseline head without grouping: global average pool + linear (K = 1)."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from dgml_viz.model.heads.registry import register_head
from dgml_viz.model.output import GroupOutput, assemble


@register_head("gap")
class GapHead(nn.Module):
    """``[B, C, h, w] -> GroupOutput(embedding [B, dim], groups [B, 1, dim], attention None)``.

    ``groups`` is accepted for a uniform factory signature and ignored: the whole
    ``dim`` budget goes to a single embedding.
    """

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = None

    def __init__(self, in_channels: int, groups: int = 1, dim: int = 512, reduction: int = 8) -> None:
        super().__init__()
        self.num_groups = 1
        self.group_dim = dim
        self.fc = nn.Linear(in_channels, dim, bias=False)

    def forward(self, x: Tensor) -> GroupOutput:
        return assemble(self.fc(x.mean(dim=(2, 3))).unsqueeze(1))
