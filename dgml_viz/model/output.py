"""The one result type every grouping head returns."""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class GroupOutput:
    """Output of a grouping head (and of the whole network).

    Attributes:
        embedding: ``[B, K*d]`` concatenation of the normalised groups, L2-normalised
            as a whole (what retrieval uses).
        groups: ``[B, K, d]`` one embedding per group, each L2-normalised.
        attention: ``[B, K, h, w]`` spatial attention per group, summing to 1 over
            ``(h, w)``; ``None`` for heads without spatial maps.
    """

    embedding: Tensor
    groups: Tensor
    attention: Tensor | None = None

    @property
    def num_groups(self) -> int:
        """K, the number of groups."""
        return int(self.groups.shape[1])

    def detach(self) -> "GroupOutput":
        """A copy cut from the autograd graph."""
        att = None if self.attention is None else self.attention.detach()
        return GroupOutput(self.embedding.detach(), self.groups.detach(), att)

    def to(self, *args: object, **kwargs: object) -> "GroupOutput":
        """Move/cast every tensor (same arguments as :meth:`torch.Tensor.to`)."""
        att = None if self.attention is None else self.attention.to(*args, **kwargs)
        return GroupOutput(self.embedding.to(*args, **kwargs), self.groups.to(*args, **kwargs), att)


def assemble(groups_raw: Tensor, attention: Tensor | None = None) -> GroupOutput:
    """Normalise raw group vectors ``[B, K, d]`` and build a :class:`GroupOutput`."""
    groups = groups_raw / groups_raw.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    flat = groups.flatten(1)
    embedding = flat / flat.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return GroupOutput(embedding=embedding, groups=groups, attention=attention)
