"""The scalar that attribution methods explain: a group's similarity to a reference embedding."""
from __future__ import annotations

import torch
from torch import Tensor, nn


class GroupSimilarity(nn.Module):
    """Cosine of every group embedding of ``images`` to the matching row of ``reference``.

    ``forward(images [M, 3, H, W], reference [M, K, d]) -> [M, K]``: entry ``(m, k)`` is
    ``<f_k(images[m]), reference[m, k]>`` with both normalised (the model's groups
    already are; ``reference`` is normalised here). Captum picks one group per
    example with ``target`` (an int or an ``[M]`` tensor), and expands ``reference``
    along with the inputs when it is passed as ``additional_forward_args``.

    Wraps the model without adding parameters (it is a module only so ``.eval()``
    and device moves reach the model).

    Example:
        >>> from dgml_viz.model import create_model
        >>> model = create_model("small_cnn", groups=3, dim=48, width=8).eval()
        >>> x = torch.randn(2, 3, 64, 64)
        >>> ref = model(x).groups.detach()
        >>> sim = GroupSimilarity(model).eval()
        >>> torch.allclose(sim(x, ref), torch.ones(2, 3), atol=1e-5)  # every group matches itself
        True
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, reference: Tensor) -> Tensor:
        groups = self.model(images).groups  # [M, K, d], normalised
        ref = reference / reference.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (groups * ref.to(groups.dtype)).sum(dim=-1)


def expand_for_groups(images: Tensor, reference: Tensor, groups: list[int]) -> tuple[Tensor, Tensor, Tensor]:
    """Repeat each image once per explained group, so all groups are attributed in one call.

    Args:
        images: ``[N, 3, H, W]``; reference: ``[N, K, d]``; groups: the G group indices.

    Returns:
        ``(images [N*G, 3, H, W], reference [N*G, K, d], target [N*G])`` in
        image-major order (row ``n*G + g`` explains group ``groups[g]`` of image ``n``).
    """
    g = len(groups)
    target = torch.tensor(groups, dtype=torch.long, device=images.device).repeat(images.shape[0])
    return images.repeat_interleave(g, dim=0), reference.repeat_interleave(g, dim=0), target


__all__ = ["GroupSimilarity", "expand_for_groups"]
