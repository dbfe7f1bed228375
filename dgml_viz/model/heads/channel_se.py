"""Per-group squeeze-and-excitation with one shared projection (the reference's ``Channel``)."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from dgml_viz.model.heads.registry import register_head
from dgml_viz.model.output import GroupOutput, assemble


@register_head("channel_se")
class ChannelSEHead(nn.Module):
    """Each group re-weights channels with its own bias-free SE block; one shared linear projects.

    ``s_g = sigmoid(E_g relu(Q_g gap(X)))`` (``Q_g``: C -> C/r, ``E_g``: C/r -> C,
    no biases), ``f_g = P (s_g * gap(X)) + b`` with a linear ``P`` (C -> d) shared
    by all groups. Channel scaling commutes with average pooling, so this equals
    SE on the map followed by pooling. ``r`` is ``reduction`` (the reference
    uses 5). :meth:`channel_weights` returns ``s`` (``[B, K, C]``).

    Shapes: ``[B, C, h, w] -> GroupOutput([B, K*d], [B, K, d], None)``.
    """

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = None

    def __init__(self, in_channels: int, groups: int = 3, dim: int = 512, reduction: int = 5) -> None:
        super().__init__()
        hidden = max(1, in_channels // reduction)
        self.num_groups = groups
        self.group_dim = dim // groups
        self.squeeze = nn.Parameter(torch.empty(groups, hidden, in_channels))
        self.excite = nn.Parameter(torch.empty(groups, in_channels, hidden))
        for p, fan_in in ((self.squeeze, in_channels), (self.excite, hidden)):
            nn.init.uniform_(p, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        self.proj = nn.Linear(in_channels, self.group_dim, bias=True)

    def _weights(self, pooled: Tensor) -> Tensor:
        hidden = torch.relu(torch.einsum("khc,bc->bkh", self.squeeze, pooled))
        return torch.sigmoid(torch.einsum("kch,bkh->bkc", self.excite, hidden))

    def channel_weights(self, x: Tensor) -> Tensor:
        """SE weights ``[B, C, h, w] -> [B, K, C]`` in (0, 1)."""
        return self._weights(x.mean(dim=(2, 3)))

    def forward(self, x: Tensor) -> GroupOutput:
        pooled = x.mean(dim=(2, 3))  # [B, C]
        return assemble(self.proj(self._weights(pooled) * pooled.unsqueeze(1)))
