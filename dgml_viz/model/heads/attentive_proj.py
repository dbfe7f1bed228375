"""Attentive grouping with a shared projection after pooling (the reference's ``LearnQ_he``)."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from dgml_viz.model.heads.attentive import AttentiveHead
from dgml_viz.model.heads.registry import register_head
from dgml_viz.model.output import GroupOutput, assemble


@register_head("attentive_proj")
class AttentiveProjHead(AttentiveHead):
    """:class:`AttentiveHead` whose pooled group vectors pass one shared linear map ``P`` (d -> d).

    ``f_g = P (sum_p a_g(p) V(p))`` (no bias), then each ``f_g`` is L2-normalised.
    The attention maps are exactly those of :class:`AttentiveHead`.

    Shapes: ``[B, C, h, w] -> GroupOutput([B, K*d], [B, K, d], [B, K, h, w])``.

    Example:
        >>> head = AttentiveProjHead(64, groups=3, dim=48, reduction=8)
        >>> head(torch.randn(2, 64, 5, 5)).groups.shape
        torch.Size([2, 3, 16])
    """

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = "softmax"

    def __init__(self, in_channels: int, groups: int = 3, dim: int = 512, reduction: int = 8) -> None:
        super().__init__(in_channels, groups=groups, dim=dim, reduction=reduction)
        self.proj = nn.Linear(self.group_dim, self.group_dim, bias=False)

    def forward(self, x: Tensor) -> GroupOutput:
        b, _, h, w = x.shape
        attention = self.attention_logits(x).softmax(dim=-1)  # [B, K, N]
        pooled = torch.bmm(attention, x.flatten(2).transpose(1, 2))  # [B, K, C]
        groups = self.proj(pooled @ self.value.weight.flatten(1).t())  # [B, K, d]
        return assemble(groups, attention.view(b, self.num_groups, h, w))
