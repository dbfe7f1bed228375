"""Per-group channel-and-position gates (the reference's ``Gate`` layer)."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from dgml_viz.model.heads.registry import register_head
from dgml_viz.model.output import GroupOutput, assemble


@register_head("gate_masks")
class GateMaskHead(nn.Module):
    """K unbounded masks, one value per channel *and* position, gate the map before pooling.

    With a shared 1x1 conv ``S`` (C -> C/r, bias) and per-group 1x1 convs
    ``M_g`` (C/r -> C, bias): ``m_g = M_g S X`` (``[C, h, w]``, no squashing),
    ``f_g = P · mean_p(X(p) * m_g(p))`` with one shared linear ``P`` (C -> d, no
    bias). Unlike :class:`~dgml_viz.model.heads.gate.GateHead` the masks are not
    a spatial distribution, so ``attention`` is ``None``; :meth:`masks` returns
    them.

    All K groups are computed at once: ``mean_p X(p) * m_g(p)`` equals
    ``sum_j M_g[c, j] · G[c, j] + b_g[c] · mean_p X[c, p]`` with the
    ``[B, C, C/r]`` moment ``G = mean_p X[c, p] (S X)[j, p]``.

    Shapes: ``[B, C, h, w] -> GroupOutput([B, K*d], [B, K, d], None)``.
    """

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = None

    def __init__(self, in_channels: int, groups: int = 3, dim: int = 512, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(1, in_channels // reduction)
        self.num_groups = groups
        self.group_dim = dim // groups
        self.share = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.mask_weight = nn.Parameter(torch.empty(groups, in_channels, hidden))
        self.mask_bias = nn.Parameter(torch.empty(groups, in_channels))
        bound = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.mask_weight, -bound, bound)
        nn.init.uniform_(self.mask_bias, -bound, bound)
        self.proj = nn.Linear(in_channels, self.group_dim, bias=False)

    def masks(self, x: Tensor) -> Tensor:
        """The K masks ``[B, C, h, w] -> [B, K, C, h, w]`` (unbounded)."""
        inter = self.share(x).flatten(2)  # [B, C/r, N]
        m = torch.einsum("kcj,bjn->bkcn", self.mask_weight, inter) + self.mask_bias[None, :, :, None]
        return m.view(x.shape[0], self.num_groups, x.shape[1], x.shape[2], x.shape[3])

    def forward(self, x: Tensor) -> GroupOutput:
        flat = x.flatten(2)  # [B, C, N]
        inter = self.share(x).flatten(2)  # [B, C/r, N]
        moment = torch.bmm(flat, inter.transpose(1, 2)) / flat.shape[-1]  # [B, C, C/r]
        pooled = torch.einsum("kcj,bcj->bkc", self.mask_weight, moment)
        pooled = pooled + self.mask_bias.unsqueeze(0) * flat.mean(-1).unsqueeze(1)  # [B, K, C]
        return assemble(self.proj(pooled))
