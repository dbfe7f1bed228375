"""Regularising loss terms beside the metric loss, each a small module with its own weight schedule.

A term computes one *unweighted* scalar from the group embeddings ``[B, K, d]`` and, when it needs
them, the attention maps ``[B, K, h, w]``; its current weight comes from its
:class:`WeightSchedule` (``set_epoch``), so the trainer never rewrites weights by name.

* :class:`DiversityTerm` (DESIGN.md): binomial deviance pushing the cosine of every pair of groups
  of the same image below ``beta`` (:func:`diversity_loss`).
* :class:`EntropyTerm`: mean attention entropy normalised by ``log(h*w)``
  (:func:`dgml_viz.metrics.diversity.attention_entropy`): a group reads few positions.
* :class:`OverlapTerm`: histogram intersection ``sum_p min(a_i(p), a_j(p))`` of every pair of groups
  of the same image, averaged like the diversity loss; with ``radius`` r > 0 the maps are first
  box-filtered over ``(2r+1) x (2r+1)`` cells, so two groups reading neighbouring cells (whose
  receptive fields see the same object) also overlap.
* :class:`SpreadTerm`: mean spatial variance of each map around its centre of mass
  (:func:`dgml_viz.metrics.diversity.attention_spread`): mass split between two distant parts costs
  much more than mass spread over the cells of one part.
* :class:`ConsistencyTerm`: attention follows the image under a flip — the centre of mass of each
  group's map on a flipped copy, mirrored back, is that of the image's own map (the equivariance
  constraint of unsupervised landmark learning). It reads a second batch of *views*
  (:meth:`ConsistencyTerm.view_images`) that the trainer runs beside the images.

The attention terms are unsupervised: they see only the model's own maps, never part masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dgml_viz.metrics.diversity import (attention_centre, attention_entropy, attention_spread,
                                       neighbourhood_overlap, pair_values)


@dataclass(frozen=True)
class WeightSchedule:
    """A term's weight per 0-based epoch: ``early`` before ``start_epoch`` S, then a linear ramp to
    ``weight`` over ``warmup_epochs`` W (``W = 0``: ``weight`` from epoch S on).

    A function of the epoch only, so ``--resume`` replays it.

    Example:
        >>> s = WeightSchedule(2.0, start_epoch=3, warmup_epochs=2)
        >>> [s(e) for e in range(7)]
        [0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 2.0]
        >>> WeightSchedule(0.5, start_epoch=1, early=0.1)(0), WeightSchedule(0.3)(9)
        (0.1, 0.3)
    """

    weight: float
    start_epoch: int = 0
    warmup_epochs: int = 0
    early: float = 0.0

    def __call__(self, epoch: int) -> float:
        if epoch < self.start_epoch:
            return float(self.early)
        if self.warmup_epochs <= 0:
            return float(self.weight)
        scale = min(1.0, (epoch - self.start_epoch) / self.warmup_epochs)
        return float(self.early) + (float(self.weight) - float(self.early)) * scale

    @classmethod
    def constant(cls, weight: float) -> "WeightSchedule":
        """``weight`` at every epoch."""
        return cls(float(weight), 0, 0, float(weight))


class LossTerm(nn.Module):
    """Base of the regularising terms: ``forward(groups [B, K, d], attention [B, K, h, w] | None)``
    returns the unweighted scalar; :attr:`weight` is the schedule's value at the last
    :meth:`set_epoch` (epoch 0 at construction). A float schedule means a constant weight."""

    #: the term's name in the loss dict, logs and TensorBoard
    name: ClassVar[str]
    #: whether the term reads attention maps (skipped, reading 0, for heads without them)
    needs_attention: ClassVar[bool] = True
    #: whether the term compares the images with transformed copies (:meth:`view_images`); its
    #: forward then takes the copies' maps as ``views``
    needs_views: ClassVar[bool] = False

    def __init__(self, schedule: WeightSchedule | float) -> None:
        super().__init__()
        self.schedule = schedule if isinstance(schedule, WeightSchedule) else WeightSchedule.constant(schedule)
        self.weight = self.schedule(0)

    def set_epoch(self, epoch: int) -> float:
        """Set and return the weight for 0-based ``epoch``."""
        self.weight = self.schedule(epoch)
        return self.weight

    def applies(self, groups: Tensor, attention: Tensor | None, views: Tensor | None = None) -> bool:
        """Whether the term is computed for these inputs (weight > 0, maps and views present when needed)."""
        return (self.weight > 0 and (attention is not None or not self.needs_attention)
                and (views is not None or not self.needs_views))

    def extra_repr(self) -> str:
        return f"weight={self.weight}, schedule={self.schedule}"


def diversity_loss(groups: Tensor, alpha: float = 2.0, beta: float = 0.5, c: float = 25.0) -> Tensor:
    """``1/(K-1) * sum_{i<j} mean_x log(1 + exp(alpha*c*(cos(f_i(x), f_j(x)) - beta)))``.

    Args:
        groups: ``[B, K, d]`` group embeddings (normalised here).

    Returns:
        scalar; ``0`` when ``K == 1``.

    Example:
        >>> g = torch.nn.functional.normalize(torch.randn(4, 3, 8), dim=-1)
        >>> diversity_loss(g).shape
        torch.Size([])
    """
    k = groups.shape[1]
    if k < 2:
        return groups.new_zeros(())
    g = F.normalize(groups.float(), dim=-1)
    cos = g @ g.transpose(1, 2)  # [B, K, K]
    i, j = torch.triu_indices(k, k, offset=1, device=groups.device)
    dev = F.softplus(alpha * c * (cos[:, i, j] - beta))  # [B, K(K-1)/2]
    return dev.mean(dim=0).sum() / (k - 1)


class DiversityTerm(LossTerm):
    """:func:`diversity_loss` with constants ``alpha``, ``beta``, ``c``."""

    name = "div"
    needs_attention = False

    def __init__(self, schedule: WeightSchedule | float, alpha: float = 2.0, beta: float = 0.5,
                 c: float = 25.0) -> None:
        super().__init__(schedule)
        self.alpha, self.beta, self.c = float(alpha), float(beta), float(c)

    def forward(self, groups: Tensor, attention: Tensor | None = None) -> Tensor:
        return diversity_loss(groups, self.alpha, self.beta, self.c)


class EntropyTerm(LossTerm):
    """Mean normalised attention entropy (1 = uniform maps, 0 = one cell each)."""

    name = "ent"

    def forward(self, groups: Tensor, attention: Tensor | None = None) -> Tensor:
        assert attention is not None
        return attention_entropy(attention).mean()


class OverlapTerm(LossTerm):
    """Mean pairwise histogram intersection of the (optionally box-blurred) maps, ``/(K-1)``."""

    name = "overlap"

    def __init__(self, schedule: WeightSchedule | float, radius: int = 0) -> None:
        super().__init__(schedule)
        self.radius = int(radius)

    def applies(self, groups: Tensor, attention: Tensor | None, views: Tensor | None = None) -> bool:
        return super().applies(groups, attention, views) and groups.shape[1] > 1

    def forward(self, groups: Tensor, attention: Tensor | None = None) -> Tensor:
        assert attention is not None
        return pair_values(neighbourhood_overlap(attention, self.radius)).mean(dim=0).sum() / (attention.shape[1] - 1)


class SpreadTerm(LossTerm):
    """Mean spatial variance of each map around its centre of mass (0 = one cell)."""

    name = "spread"

    def forward(self, groups: Tensor, attention: Tensor | None = None) -> Tensor:
        assert attention is not None
        return attention_spread(attention).mean()


#: the flips a :class:`ConsistencyTerm` can use: the image dims each reverses (``-2`` = y, ``-1`` = x;
#: the same axes mirror the ``(y, x)`` centres, ``c -> 1 - c``)
VIEWS: dict[str, tuple[int, ...]] = {"hflip": (-1,), "vflip": (-2,), "rot180": (-2, -1)}


class ConsistencyTerm(LossTerm):
    """Mean squared distance between each group's centre of mass on an image and, mirrored back, on
    its flipped copy (image side = 1; :func:`~dgml_viz.metrics.diversity.attention_centre`).

    Why: convolutional features are translation-equivariant, so a query can key on a part seen at
    any fixed offset inside its receptive field and sit *next to* the part (the metric loss does not
    mind). A flip turns that offset into its mirror image, so the only consistent place is the part
    itself: ``rot180`` fixes both axes, ``hflip`` / ``vflip`` one (``hflip`` for photos whose
    objects are left-right symmetric, e.g. birds).

    Args:
        schedule: the weight.
        view: one of :data:`VIEWS`.
        images: how many of the batch's images get a flipped copy (the first ones).
    """

    name = "consistency"
    needs_views = True

    def __init__(self, schedule: WeightSchedule | float, view: str = "rot180", images: int = 16) -> None:
        super().__init__(schedule)
        if view not in VIEWS:
            raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
        if images < 1:
            raise ValueError(f"images must be >= 1, got {images}")
        self.view, self.images = view, int(images)

    def view_images(self, images: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> the flipped first ``min(B, images)``: ``[m, C, H, W]``."""
        return torch.flip(images[: self.images], dims=VIEWS[self.view])

    def forward(self, groups: Tensor, attention: Tensor | None = None, views: Tensor | None = None) -> Tensor:
        assert attention is not None and views is not None
        mine = attention_centre(attention[: views.shape[0]])  # [m, K, 2]
        mirrored = torch.zeros(2, device=views.device)
        mirrored[[d + 2 for d in VIEWS[self.view]]] = 1.0  # image dim -2 / -1 -> centre coordinate 0 (y) / 1 (x)
        back = mirrored + (1.0 - 2.0 * mirrored) * attention_centre(views)  # c -> 1 - c on the flipped axes
        return (mine - back).pow(2).sum(-1).mean()


#: the terms every recipe builds (weight 0 = off), in the order their weighted values are added
STANDARD_TERMS: tuple[type[LossTerm], ...] = (DiversityTerm, EntropyTerm, OverlapTerm, SpreadTerm, ConsistencyTerm)

__all__ = ["WeightSchedule", "LossTerm", "diversity_loss", "DiversityTerm", "EntropyTerm", "OverlapTerm",
           "SpreadTerm", "ConsistencyTerm", "VIEWS", "STANDARD_TERMS"]
