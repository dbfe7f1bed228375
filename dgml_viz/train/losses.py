"""Training losses: a metric loss per group, averaged over groups, plus diversity.

* ``margin`` (default): pytorch-metric-learning ``MarginLoss(margin=0.2, nu=0,
  beta=1.2, learn_beta=True, num_classes=C)`` with ``DistanceWeightedMiner(
  cutoff=0.5, nonzero_loss_cutoff=1.4)`` — one loss (hence one learnable beta
  per class) and one miner per group.
* ``multi_similarity``: pml ``MultiSimilarityLoss`` with ``MultiSimilarityMiner``.
* :func:`diversity_loss` (DESIGN.md): binomial deviance pushing the cosine
  similarity of every pair of groups of the same image below ``beta``.
* optional attention-entropy term (``lambda_ent``, off by default and in the
  reference recipes): the mean of each group's attention entropy normalised by
  ``log(h*w)`` (:func:`dgml_viz.metrics.diversity.attention_entropy`). It is
  unsupervised — it sees only the model's own maps, never part masks — and
  rewards a group for reading few positions instead of spreading thinly.
* optional attention-overlap term (``lambda_overlap``, off by default): the
  histogram intersection ``sum_p min(a_i(p), a_j(p))`` of every pair of groups
  of the same image, averaged like the diversity loss — also unsupervised; it
  asks groups to read *different positions*, where the diversity loss only asks
  for different embeddings. With ``overlap_radius`` r > 0 the maps are first
  box-filtered over (2r+1) x (2r+1) cells, so two groups reading neighbouring
  cells (whose receptive fields see the same object) also count as overlapping.
* optional attention-spread term (``lambda_spread``, off by default): the mean
  spatial variance of each map around its centre of mass
  (:func:`dgml_viz.metrics.diversity.attention_spread`, a "concentration" loss).
  Unlike the entropy it is geometric: mass split between two distant parts costs
  much more than mass spread over the cells of one part.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from torch import Tensor, nn

from dgml_viz.errors import ConfigError
from dgml_viz.metrics.diversity import attention_entropy, attention_spread, histogram_intersection, pair_values


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


#: the loss's named terms: ``name -> scalar tensor``, always with ``"total"`` (what is minimised)
LossTerms = dict[str, Tensor]

#: names of the unweighted terms :class:`GroupedMetricLoss` returns beside ``"total"``, in order
TERM_NAMES: tuple[str, ...] = ("metric", "div", "ent", "overlap", "spread")


class GroupedMetricLoss(nn.Module):
    """Metric loss on each group's embedding, averaged over the K groups, + ``lambda_div`` * diversity
    (+ ``lambda_ent`` * mean normalised attention entropy when attention maps are given).

    Args:
        num_groups: K.
        num_classes: training classes (size of the learnable beta table).
        kind: ``"margin"`` or ``"multi_similarity"``.
        margin, beta_init, cutoff, nonzero_loss_cutoff: margin loss / distance-weighted miner.
        ms_alpha, ms_beta, ms_base, ms_epsilon: multi-similarity loss / miner.
        lambda_div, div_alpha, div_beta, div_c: diversity weight and constants.
        lambda_ent: weight of the attention-entropy term (0 = off).
        lambda_overlap: weight of the attention-overlap term (0 = off).
        overlap_radius: box-filter radius in cells applied to the maps before the overlap.
        lambda_spread: weight of the attention-spread term (0 = off).
        metric_on: ``"groups"`` (DESIGN.md: one metric loss per group, averaged) or ``"concat"`` (one
            metric loss on the retrieval embedding, the concatenation of the normalised groups).

    ``forward(groups [B, K, d], labels [B], attention [B, K, h, w] | None) -> LossTerms``: a dict of
    scalar tensors, ``"total" = metric + lambda_div * div + lambda_ent * ent + lambda_overlap * overlap
    + lambda_spread * spread`` and each unweighted term by name (:data:`TERM_NAMES`; a term whose weight
    is 0 is not computed and reads 0). The learnable betas are this module's parameters (their own
    optimizer group).
    """

    def __init__(self, num_groups: int, num_classes: int, kind: str = "margin", *, margin: float = 0.2,
                 beta_init: float = 1.2, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4,
                 ms_alpha: float = 2.0, ms_beta: float = 50.0, ms_base: float = 0.5, ms_epsilon: float = 0.1,
                 lambda_div: float = 0.0, div_alpha: float = 2.0, div_beta: float = 0.5, div_c: float = 25.0,
                 lambda_ent: float = 0.0, lambda_overlap: float = 0.0, overlap_radius: int = 0,
                 metric_on: str = "groups", lambda_spread: float = 0.0) -> None:
        super().__init__()
        if metric_on not in ("groups", "concat"):
            raise ConfigError(f"unknown metric_on {metric_on!r}; use groups or concat")
        self.metric_on = metric_on
        n_losses = num_groups if metric_on == "groups" else 1
        if kind == "margin":
            self.losses = nn.ModuleList(
                pml_losses.MarginLoss(margin=margin, nu=0, beta=beta_init, learn_beta=True, num_classes=num_classes)
                for _ in range(n_losses))
            self.miners = nn.ModuleList(
                pml_miners.DistanceWeightedMiner(cutoff=cutoff, nonzero_loss_cutoff=nonzero_loss_cutoff)
                for _ in range(n_losses))
        elif kind == "multi_similarity":
            self.losses = nn.ModuleList(
                pml_losses.MultiSimilarityLoss(alpha=ms_alpha, beta=ms_beta, base=ms_base) for _ in range(n_losses))
            self.miners = nn.ModuleList(pml_miners.MultiSimilarityMiner(epsilon=ms_epsilon) for _ in range(n_losses))
        else:
            raise ConfigError(f"unknown loss {kind!r}; use margin or multi_similarity")
        self.kind = kind
        self.num_groups = num_groups
        self.lambda_div = float(lambda_div)
        self.div = (float(div_alpha), float(div_beta), float(div_c))
        self.lambda_ent = float(lambda_ent)
        self.lambda_overlap = float(lambda_overlap)
        self.overlap_radius = int(overlap_radius)
        self.lambda_spread = float(lambda_spread)

    def forward(self, groups: Tensor, labels: Tensor, attention: Tensor | None = None) -> LossTerms:
        groups = groups.float()
        if self.metric_on == "groups":
            embs = list(groups.unbind(1))
        else:  # the retrieval embedding: concatenated normalised groups (pml re-normalises it as a whole)
            embs = [F.normalize(groups, dim=-1).flatten(1)]
        terms = [loss_fn(emb, labels, miner(emb, labels)) for emb, loss_fn, miner in zip(embs, self.losses, self.miners)]
        metric = torch.stack(terms).mean()
        div = diversity_loss(groups, *self.div) if self.lambda_div > 0 else groups.new_zeros(())
        total = metric + self.lambda_div * div
        ent = groups.new_zeros(())
        if self.lambda_ent > 0 and attention is not None:
            ent = attention_entropy(attention).mean()
            total = total + self.lambda_ent * ent
        ovl = groups.new_zeros(())
        k = groups.shape[1]
        if self.lambda_overlap > 0 and attention is not None and k > 1:
            att = attention.float()
            if self.overlap_radius > 0:
                r = self.overlap_radius
                att = F.avg_pool2d(att, 2 * r + 1, stride=1, padding=r, count_include_pad=False)
            ovl = pair_values(histogram_intersection(att)).mean(dim=0).sum() / (k - 1)
            total = total + self.lambda_overlap * ovl
        spread = groups.new_zeros(())
        if self.lambda_spread > 0 and attention is not None:
            spread = attention_spread(attention).mean()
            total = total + self.lambda_spread * spread
        return {"total": total, "metric": metric, "div": div, "ent": ent, "overlap": ovl, "spread": spread}


__all__ = ["diversity_loss", "GroupedMetricLoss", "LossTerms", "TERM_NAMES"]
