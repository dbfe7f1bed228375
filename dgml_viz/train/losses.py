"""Training loss: a metric loss per group, averaged over groups, plus regularising terms.

* ``margin`` (default): pytorch-metric-learning ``MarginLoss(margin=0.2, nu=0,
  beta=1.2, learn_beta=True, num_classes=C)`` with ``DistanceWeightedMiner(
  cutoff=0.5, nonzero_loss_cutoff=1.4)`` — one loss (hence one learnable beta
  per class) and one miner per group.
* ``multi_similarity``: pml ``MultiSimilarityLoss`` with ``MultiSimilarityMiner``.
* the terms beside it — diversity (DESIGN.md) and the optional unsupervised attention
  terms (entropy, overlap, spread) — are :mod:`dgml_viz.train.terms` modules, each with its own
  weight schedule; this module only adds up ``metric + sum_t weight_t * term_t``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import Tensor, nn

from dgml_viz.errors import ConfigError
from dgml_viz.train.terms import STANDARD_TERMS, LossTerm

#: the loss's named terms: ``name -> scalar tensor``, always with ``"total"`` (what is minimised)
LossTerms = dict[str, Tensor]

#: names of the unweighted terms a recipe's loss returns beside ``"total"``, in order
TERM_NAMES: tuple[str, ...] = ("metric", *(cls.name for cls in STANDARD_TERMS))


@dataclass(frozen=True)
class MetricSpec:
    """The metric loss and its miner (pytorch-metric-learning).

    ``kind``: ``"margin"`` (``margin``, ``beta_init``; ``DistanceWeightedMiner(cutoff,
    nonzero_loss_cutoff)``) or ``"multi_similarity"`` (``ms_alpha``, ``ms_beta``, ``ms_base``;
    ``MultiSimilarityMiner(ms_epsilon)``). ``on``: ``"groups"`` (DESIGN.md: one loss per group,
    averaged) or ``"concat"`` (one loss on the retrieval embedding, the concatenated normalised groups).
    """

    kind: str = "margin"
    margin: float = 0.2
    beta_init: float = 1.2
    cutoff: float = 0.5
    nonzero_loss_cutoff: float = 1.4
    ms_alpha: float = 2.0
    ms_beta: float = 50.0
    ms_base: float = 0.5
    ms_epsilon: float = 0.1
    on: str = "groups"

    def __post_init__(self) -> None:
        if self.kind not in ("margin", "multi_similarity"):
            raise ConfigError(f"unknown loss {self.kind!r}; use margin or multi_similarity")
        if self.on not in ("groups", "concat"):
            raise ConfigError(f"unknown metric_on {self.on!r}; use groups or concat")

    def build(self, num_classes: int) -> tuple[nn.Module, nn.Module]:
        """One ``(loss, miner)`` pair (a margin loss learns one beta per class)."""
        if self.kind == "margin":
            return (pml_losses.MarginLoss(margin=self.margin, nu=0, beta=self.beta_init, learn_beta=True,
                                          num_classes=num_classes),
                    pml_miners.DistanceWeightedMiner(cutoff=self.cutoff, nonzero_loss_cutoff=self.nonzero_loss_cutoff))
        return (pml_losses.MultiSimilarityLoss(alpha=self.ms_alpha, beta=self.ms_beta, base=self.ms_base),
                pml_miners.MultiSimilarityMiner(epsilon=self.ms_epsilon))


class GroupedMetricLoss(nn.Module):
    """Metric loss on each group's embedding (averaged over the K groups) + the weighted terms.

    Args:
        num_groups: K.
        num_classes: training classes (size of the learnable beta table).
        metric: the metric loss (:class:`MetricSpec`).
        terms: regularising terms (:mod:`dgml_viz.train.terms`), added in this order; names unique.

    ``forward(groups [B, K, d], labels [B], attention [B, K, h, w] | None, views [m, K, h, w] | None)
    -> LossTerms`` (``views``: the maps of :meth:`view_images`, for a term that compares them): a dict of
    scalar tensors, ``"total" = metric + sum_t t.weight * t(groups, attention)`` and each unweighted
    term by name (``"metric"`` first; a term that does not apply — weight 0, or no maps for an
    attention term — is not computed and reads 0). :meth:`set_epoch` moves every term's weight
    along its schedule. The learnable betas are this module's parameters (their own optimizer group).
    """

    def __init__(self, num_groups: int, num_classes: int, metric: MetricSpec = MetricSpec(),
                 terms: Sequence[LossTerm] = ()) -> None:
        super().__init__()
        names = [t.name for t in terms]
        if len(set(names)) != len(names) or "metric" in names or "total" in names:
            raise ValueError(f"loss term names must be unique and not metric/total, got {names}")
        if sum(t.needs_views for t in terms) > 1:
            raise ValueError(f"at most one term may compare views, got {names}")
        self.metric = metric
        pairs = [metric.build(num_classes) for _ in range(num_groups if metric.on == "groups" else 1)]
        self.losses = nn.ModuleList(p[0] for p in pairs)
        self.miners = nn.ModuleList(p[1] for p in pairs)
        self.num_groups = num_groups
        self.terms = nn.ModuleDict({t.name: t for t in terms})

    def set_epoch(self, epoch: int) -> dict[str, float]:
        """Every term's weight for 0-based ``epoch``: ``{name: weight}``."""
        return {name: term.set_epoch(epoch) for name, term in self.terms.items()}

    def view_images(self, images: Tensor) -> Tensor | None:
        """The transformed copies of some of ``images`` ``[B, C, H, W]`` that a term with a weight > 0 this
        epoch compares them with (:attr:`LossTerm.needs_views`), or ``None``: the trainer runs them beside
        the batch and passes their maps back as ``views``. At most one such term per loss."""
        for term in self.terms.values():
            if term.needs_views and term.weight > 0:
                return term.view_images(images)
        return None

    def forward(self, groups: Tensor, labels: Tensor, attention: Tensor | None = None,
                views: Tensor | None = None) -> LossTerms:
        groups = groups.float()
        if self.metric.on == "groups":
            embs = list(groups.unbind(1))
        else:  # the retrieval embedding: concatenated normalised groups (pml re-normalises it as a whole)
            embs = [F.normalize(groups, dim=-1).flatten(1)]
        metric = torch.stack([loss_fn(emb, labels, miner(emb, labels))
                              for emb, loss_fn, miner in zip(embs, self.losses, self.miners)]).mean()
        out: LossTerms = {"total": metric, "metric": metric}
        total = metric
        for name, term in self.terms.items():
            if term.applies(groups, attention, views):
                out[name] = term(groups, attention, views) if term.needs_views else term(groups, attention)
                total = total + term.weight * out[name]
            else:
                out[name] = groups.new_zeros(())
        out["total"] = total
        return out


__all__ = ["MetricSpec", "GroupedMetricLoss", "LossTerms", "TERM_NAMES"]
