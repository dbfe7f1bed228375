"""Plain embedding network head: global pooling + linear with bias (K = 1)."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from dgml_viz.model.heads.registry import register_head
from dgml_viz.model.output import GroupOutput, assemble


@register_head("pooled_linear")
class PooledLinearHead(nn.Module):
    """``f = W pool(X) + b``; ``pool`` is the global average, plus the global max when ``add_max``.

    The head of the reference's BN-Inception network (``last_linear`` on the
    pooled ``features``; ``double`` in its ``arch`` adds max pooling). No
    grouping: ``groups`` is accepted for the factory signature and ignored.

    Shapes: ``[B, C, h, w] -> GroupOutput([B, dim], [B, 1, dim], None)``.
    """

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = None

    add_max = False

    def __init__(self, in_channels: int, groups: int = 1, dim: int = 512, reduction: int = 8) -> None:
        super().__init__()
        self.num_groups = 1
        self.group_dim = dim
        self.fc = nn.Linear(in_channels, dim, bias=True)

    def forward(self, x: Tensor) -> GroupOutput:
        pooled = x.mean(dim=(2, 3))
        if self.add_max:
            pooled = pooled + x.amax(dim=(2, 3))
        return assemble(self.fc(pooled).unsqueeze(1))


@register_head("pooled_max_linear")
class PooledMaxLinearHead(PooledLinearHead):
    """:class:`PooledLinearHead` on average + max pooled features."""

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = None

    add_max = True
