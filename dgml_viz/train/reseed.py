"""Re-seed a group that duplicates another while the attention terms sharpen the maps.

Why: when the concentrating terms ramp in, each group sharpens onto the part its soft map prefers. Two
groups that prefer the same part can both settle on it, on neighbouring cells, while a third part stays
unclaimed: the overlap term then pushes them apart, but a sharp softmax map has no gradient towards a part
it does not see, so the pair stays (failure mode (c) of the synthetic recipe, ``bench/demo_notes_synthetic.md``).
The remedy is annealing for one group: after the chosen epochs, the pair whose maps, box-blurred like the
overlap term's (:func:`~dgml_viz.metrics.diversity.neighbourhood_overlap`), share the most mass on a fixed
probe of training images is checked; above ``train.reseed_overlap`` the less peaked group of the pair gets a
fresh query (the head's :meth:`reset_group`) and its temperature goes back to the soft plain-phase value,
ramping to 1 over ``train.reseed_warmup_epochs``. Soft again, its map sees every part; the metric loss, the
diversity and the overlap with the two sharp groups pull it to the part nobody reads. Unsupervised: only
the model's own maps are used.

The decision is a pure function of the model and the probe, so every DDP rank (identical parameters) takes
the same one; it is stored in the training state, so ``--resume`` replays the temperatures.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from dgml_viz.errors import ConfigError
from dgml_viz.metrics.diversity import neighbourhood_overlap, pair_values
from dgml_viz.train.terms import WeightSchedule

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reseed:
    """One re-seed: after 1-based ``epoch``, ``group`` (the pair's less peaked one) got a fresh query
    because its maps shared ``overlap`` of their blurred mass with ``partner``'s."""

    epoch: int
    group: int
    partner: int
    overlap: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Reseed":
        return cls(int(d["epoch"]), int(d["group"]), int(d["partner"]), float(d["overlap"]))


def most_overlapping_pair(attention: Tensor, radius: int) -> tuple[int, int, float]:
    """The pair ``(i, j)``, ``i < j``, whose maps share the most blurred mass, averaged over images.

    Args:
        attention: ``[N, K, h, w]`` maps (K >= 2) summing to 1.
        radius: box blur radius in cells (:func:`~dgml_viz.metrics.diversity.neighbourhood_overlap`).

    Returns:
        ``(i, j, overlap)``.
    """
    k = attention.shape[1]
    if k < 2:
        raise ValueError("need at least 2 groups")
    values = pair_values(neighbourhood_overlap(attention, radius)).mean(dim=0)  # [K(K-1)/2]
    best = int(values.argmax())
    i, j = torch.triu_indices(k, k, offset=1)[:, best].tolist()
    return int(i), int(j), float(values[best])


def less_peaked(attention: Tensor, i: int, j: int) -> int:
    """Of groups ``i`` and ``j``, the one whose maps put less mass on their peak cell (mean over images;
    ties: ``j``): the less committed group is the one re-seeded. ``attention``: ``[N, K, h, w]``."""
    peak = attention.flatten(2).amax(dim=-1).mean(dim=0)  # [K]
    return i if float(peak[i]) < float(peak[j]) else j


def find_duplicate(attention: Tensor, radius: int, threshold: float, epoch: int) -> Reseed | None:
    """The :class:`Reseed` to make after ``epoch`` (1-based), or ``None`` when no pair shares more than
    ``threshold`` of its blurred mass. ``attention``: ``[N, K, h, w]`` at temperature 1."""
    if attention.shape[1] < 2:
        return None
    i, j, ov = most_overlapping_pair(attention, radius)
    if ov <= threshold:
        logger.info("epoch %d: no duplicated groups (largest blurred overlap %.3f, groups %d-%d; re-seed above "
                    "%.3f)", epoch, ov, i, j, threshold)
        return None
    g = less_peaked(attention, i, j)
    return Reseed(epoch=epoch, group=g, partner=j if g == i else i, overlap=ov)


def group_temperatures(base: float, reseeds: Sequence[Reseed], epoch: int, soft: float, warmup: int,
                       num_groups: int) -> float | Tensor:
    """Temperatures for 0-based ``epoch``: ``base`` (the schedule's) for every group, except a group
    re-seeded after 1-based epoch E, which has ``soft`` in 0-based epoch E and then ramps linearly to
    ``base`` over ``warmup`` epochs (never below ``base``). A float when no group differs, else ``[K]``.

    Example:
        >>> r = [Reseed(epoch=8, group=0, partner=1, overlap=0.5)]
        >>> [group_temperatures(1.0, r, e, 4.0, 2, 3) for e in (7, 8, 9, 10)][1].tolist()
        [4.0, 1.0, 1.0]
        >>> group_temperatures(1.0, r, 9, 4.0, 2, 3).tolist(), group_temperatures(1.0, r, 10, 4.0, 2, 3)
        ([2.5, 1.0, 1.0], 1.0)
    """
    temps = [float(base)] * num_groups
    for r in reseeds:
        if epoch < r.epoch:
            continue
        # the recipe's own ramp shape; warmup 0 still gives the one soft epoch right after the re-seed
        ramp = WeightSchedule(float(base), start_epoch=r.epoch, warmup_epochs=max(1, warmup), early=soft)
        temps[r.group] = max(temps[r.group], float(base), ramp(epoch))
    if all(t == temps[0] for t in temps) and temps[0] == float(base):
        return float(base)
    return torch.tensor(temps)


def check_reseedable(head: nn.Module, train_cfg: dict[str, Any]) -> None:
    """One-line ConfigError when ``train.reseed_overlap`` is set for a head that cannot reset a group or has
    no temperature, or without check epochs; a warning for check epochs the run does not reach (a shortened
    recipe trains without them)."""
    if train_cfg.get("reseed_overlap") is None:
        return
    name = type(head).__name__
    if not callable(getattr(head, "reset_group", None)) or not hasattr(head, "temperature"):
        raise ConfigError(f"train.reseed_overlap={train_cfg['reseed_overlap']}: head {name} cannot reset a group "
                          "(no reset_group / attention temperature); set it to null")
    if not train_cfg.get("reseed_epochs"):
        raise ConfigError("train.reseed_overlap is set but train.reseed_epochs is empty: give the epochs after "
                          "which the duplicate check runs")
    late = [int(e) for e in train_cfg["reseed_epochs"] if int(e) >= int(train_cfg["epochs"])]
    if late:  # a shortened recipe: those checks never run (after the last epoch nothing is left to train)
        logger.warning("train.reseed_epochs: no duplicate check after epoch(s) %s (train.epochs = %s leaves no epoch "
                       "to train a re-seeded group)", ", ".join(map(str, late)), train_cfg["epochs"])


__all__ = ["Reseed", "most_overlapping_pair", "less_peaked", "find_duplicate", "group_temperatures",
           "check_reseedable"]
