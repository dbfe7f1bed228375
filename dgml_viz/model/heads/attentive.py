"""The DGML attentive grouping head: K learnable queries attend over the feature map."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from dgml_viz.model.heads.registry import register_head
from dgml_viz.model.output import GroupOutput, assemble


@register_head("attentive")
class AttentiveHead(nn.Module):
    """K learnable queries over a ``[B, C, h, w]`` map, all K in one batched op.

    With keys ``Kx = W_k X`` (1x1 conv C -> C/r), values ``V = W_v X`` (1x1 conv
    C -> d) and queries ``q_g`` (``[K, C/r]``):

    ``a_g = softmax_p(q_g^T Kx / T)`` (temperature ``T = 1`` but while a training schedule softens the maps), ``f_g = sum_p a_g(p) V(p)``, ``f_g <- f_g / |f_g|``.

    Both 1x1 convs are linear, so we evaluate the same quantities in the cheaper
    order: logits ``(q W_k) X`` (``[K, C]`` effective queries) and
    ``f = W_v (X a^T)`` — the attention-pooled features times the value matrix.
    This equals the per-query loop of the reference implementation up to float
    re-association (tested at 1e-5) and never materialises ``Kx`` or ``V``.

    Args:
        in_channels: C.
        groups: K.
        dim: full embedding size; each group gets ``dim // K``.
        reduction: r, the key width is ``C // r``.

    Shapes: input ``[B, C, h, w]``; output ``GroupOutput(embedding [B, K*d],
    groups [B, K, d], attention [B, K, h, w])``.

    Example:
        >>> head = AttentiveHead(64, groups=3, dim=48, reduction=8)
        >>> out = head(torch.randn(2, 64, 7, 7))
        >>> out.attention.sum((-2, -1)).allclose(torch.ones(2, 3))
        True
    """

    #: what ``GroupOutput.attention`` holds (see :mod:`dgml_viz.model.heads.registry`)
    spatial_maps: ClassVar[str | None] = "softmax"
    #: softmax temperature of the attention logits (1 = the DGML head), a float or one per group (``[K]``
    #: tensor); a training-time knob set by the trainer's schedule (``train.attention_temperature_early``,
    #: a re-seeded group's ramp), not saved in checkpoints
    temperature: float | Tensor = 1.0

    def __init__(self, in_channels: int, groups: int = 3, dim: int = 512, reduction: int = 8) -> None:
        super().__init__()
        if groups < 1 or dim < groups:
            raise ValueError(f"need 1 <= groups <= dim, got groups={groups}, dim={dim}")
        hidden = max(1, in_channels // reduction)
        self.num_groups = groups
        self.group_dim = dim // groups
        self.key = nn.Conv2d(in_channels, hidden, kernel_size=1, bias=False)
        self.value = nn.Conv2d(in_channels, self.group_dim, kernel_size=1, bias=False)
        self.queries = nn.Parameter(torch.empty(groups, hidden))
        # Same init as the reference's one-channel nn.Conv2d(hidden, 1, 1) per query.
        bound = 1.0 / math.sqrt(hidden)
        nn.init.uniform_(self.queries, -bound, bound)

    def attention_logits(self, x: Tensor) -> Tensor:
        """Logits ``q_g^T W_k X`` for every group and position: ``[B, C, h, w] -> [B, K, h*w]``."""
        effective = self.queries @ self.key.weight.flatten(1)  # [K, C]
        logits = torch.einsum("kc,bcn->bkn", effective, x.flatten(2))
        t = self.temperature
        if isinstance(t, Tensor):  # one per group
            return logits / t.to(logits)[:, None]
        return logits if t == 1.0 else logits / t

    def reset_group(self, group: int, generator: torch.Generator | None = None) -> list[nn.Parameter]:
        """Draw group ``group``'s query afresh from the initial distribution (the other groups untouched):
        what a trainer calls to re-seed a group that duplicates another (``train.reseed_overlap``).

        Returns the parameters whose row ``group`` was rewritten (the trainer clears their optimizer
        momentum there)."""
        bound = 1.0 / math.sqrt(self.queries.shape[1])
        fresh = torch.rand(self.queries.shape[1], generator=generator) * (2 * bound) - bound
        with torch.no_grad():
            self.queries[group] = fresh.to(self.queries)
        return [self.queries]

    def forward(self, x: Tensor) -> GroupOutput:
        b, _, h, w = x.shape
        attention = self.attention_logits(x).softmax(dim=-1)  # [B, K, N]
        pooled = torch.bmm(attention, x.flatten(2).transpose(1, 2))  # [B, K, C]
        groups = pooled @ self.value.weight.flatten(1).t()  # [B, K, d]
        return assemble(groups, attention.view(b, self.num_groups, h, w))
