"""Group <-> part localisation: does each attention group look at one part?

Given per-group attention maps and ground-truth part masks, we measure how much
of each group's attention falls inside each part, match groups to parts with
the Hungarian algorithm, and report for each group (on the matched part):

* ``share``: mean fraction of the group's attention mass inside the part;
* ``area_share``: mean fraction of the image the part covers (what a uniform
  map would score), and ``ratio = share / area_share``;
* ``pointing``: pointing game — the fraction of images in which the peak of the
  bilinearly upsampled attention map falls inside the part;
* ``distinct``: whether the groups were matched to pairwise different parts.

Mass convention: attention ``[N, K, h, w]`` lives on the feature grid; each cell
is taken to spread its mass uniformly over the image pixels it covers. So the
mass of group k inside part p is ``sum_cells a_k(cell) * coverage_p(cell)``
where ``coverage`` is the part mask *downsampled by area* (``F.interpolate``,
``mode="area"``) to ``h x w``. When ``H/h`` and ``W/w`` are integers this is
exactly the mass of the nearest-upsampled map inside the mask and needs no
renormalisation (masses stay in [0, 1] and sum to <= 1 over disjoint parts).
The pointing game, in contrast, uses the bilinear upsampling (``align_corners=
False``) that the heatmap renderer shows, because a peak needs a pixel position
(:func:`upsample_attention`, also the saliency of :mod:`.faithfulness` and what
:func:`dgml_viz.metrics.agreement.rank_correlation` compares attributions with).
:func:`group_stats` gathers one image's per-group numbers (entropy, peak share,
shares inside the parts) for a table.

All functions are pure; shapes are documented per function.

Example:
    >>> att = torch.zeros(1, 1, 2, 2); att[0, 0, 0, 0] = 1.0
    >>> masks = torch.zeros(1, 2, 4, 4, dtype=torch.bool); masks[0, 0, :2, :2] = True
    >>> part_attention_mass(att, masks)
    tensor([[[1., 0.]]])
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from dgml_viz.metrics.diversity import attention_entropy

logger = logging.getLogger(__name__)


def _check(attention: Tensor, part_masks: Tensor) -> None:
    if attention.dim() != 4 or part_masks.dim() != 4:
        raise ValueError(f"need attention [N,K,h,w] and part_masks [N,P,H,W], got {tuple(attention.shape)} "
                         f"and {tuple(part_masks.shape)}")
    if attention.shape[0] != part_masks.shape[0]:
        raise ValueError(f"batch sizes differ: {attention.shape[0]} vs {part_masks.shape[0]}")


def part_coverage(part_masks: Tensor, size: tuple[int, int]) -> Tensor:
    """Fraction of each feature cell covered by each part: ``[N, P, H, W] bool -> [N, P, h, w]``."""
    return F.interpolate(part_masks.float(), size=size, mode="area")


def part_attention_mass(attention: Tensor, part_masks: Tensor) -> Tensor:
    """Attention mass of every group inside every part.

    Args:
        attention: ``[N, K, h, w]``, each map summing to 1.
        part_masks: ``[N, P, H, W]`` bool, aligned with the image tensor.

    Returns:
        ``[N, K, P]`` float: ``mass[n, k, p] = sum_cells a[n,k] * coverage[n,p]``
        (area-downsampled masks; see the module docstring).
    """
    _check(attention, part_masks)
    cov = part_coverage(part_masks, tuple(attention.shape[-2:]))
    return torch.einsum("nkhw,nphw->nkp", attention.float(), cov)


def part_area_share(part_masks: Tensor) -> Tensor:
    """Fraction of the image each part covers: ``[N, P, H, W] -> [N, P]``."""
    return part_masks.float().mean(dim=(-2, -1))


def match_groups_to_parts(mass: Tensor) -> Tensor:
    """Hungarian matching of groups to parts on the mean mass.

    Args:
        mass: ``[N, K, P]`` from :func:`part_attention_mass`.

    Returns:
        ``[K]`` long: the part matched to each group (pairwise distinct); ``-1``
        for groups left unmatched when ``K > P``.
    """
    mean = mass.mean(dim=0).detach().cpu().numpy()  # [K, P]
    rows, cols = linear_sum_assignment(mean, maximize=True)
    out = torch.full((mass.shape[1],), -1, dtype=torch.long)
    out[torch.as_tensor(rows, dtype=torch.long)] = torch.as_tensor(cols, dtype=torch.long)
    return out


def upsample_attention(attention: Tensor, size: tuple[int, int]) -> Tensor:
    """Attention on the input pixels: bilinear (``align_corners=False``), ``[N, K, h, w] -> [N, K, H, W]`` float."""
    return F.interpolate(attention.float(), size=size, mode="bilinear", align_corners=False)


def attention_peaks(attention: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel ``(y, x)`` of the maximum of each bilinearly upsampled map (:func:`upsample_attention`).

    ``[N, K, h, w] -> [N, K, 2]`` long (ties: first in row-major order).
    """
    up = upsample_attention(attention, size)
    flat = up.flatten(2).argmax(dim=-1)  # [N, K]
    return torch.stack([flat // size[1], flat % size[1]], dim=-1)


def group_stats(attention: np.ndarray, part_masks: np.ndarray | None = None,
                part_names: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Per-group numbers for one image (a table row per group).

    Args:
        attention: ``[K, h, w]`` (each map sums to 1).
        part_masks: ``[P, S, S]`` bool masks aligned with the model input, or None.
        part_names: names of the P parts.

    Returns:
        K dicts: ``group``, ``entropy`` (normalised to [0, 1], :func:`~.diversity.attention_entropy`),
        ``peak_share`` (mass of the strongest cell); with masks also ``best_part``, ``best_part_share``
        (mass inside the part holding most of it, :func:`part_attention_mass`) and ``inside_parts``
        (mass inside the union of all parts).
    """
    att = torch.as_tensor(np.asarray(attention, dtype=np.float32))[None]  # [1, K, h, w]
    ent = attention_entropy(att)[0].tolist()
    peak = att.flatten(2).amax(dim=-1)[0].tolist()
    rows = [{"group": k, "entropy": float(e), "peak_share": float(p)} for k, (e, p) in enumerate(zip(ent, peak))]
    if part_masks is not None and len(part_masks):
        masks = torch.as_tensor(np.asarray(part_masks, dtype=bool))
        union = masks.any(dim=0, keepdim=True)
        mass = part_attention_mass(att, torch.cat([masks, union])[None])[0]  # [K, P+1]
        names = list(part_names) or [f"part {i}" for i in range(masks.shape[0])]
        per_part, inside = mass[:, :-1], mass[:, -1]
        best = per_part.argmax(dim=1)
        for row, b, share, ins in zip(rows, best.tolist(), per_part.max(dim=1).values.tolist(), inside.tolist()):
            row.update(best_part=names[b], best_part_share=float(share), inside_parts=float(ins))
    return rows


def pointing_hits(attention: Tensor, part_masks: Tensor, assignment: Tensor) -> Tensor:
    """Pointing game: does group k's peak fall inside its matched part?

    Args:
        attention: ``[N, K, h, w]``; part_masks: ``[N, P, H, W]`` bool;
        assignment: ``[K]`` part per group (``-1``: never a hit).

    Returns:
        ``[N, K]`` bool.
    """
    _check(attention, part_masks)
    n, k = attention.shape[:2]
    peaks = attention_peaks(attention, tuple(part_masks.shape[-2:]))  # [N, K, 2]
    part = assignment.clamp_min(0).view(1, k).expand(n, k)
    idx_n = torch.arange(n).view(n, 1).expand(n, k)
    hit = part_masks[idx_n, part, peaks[..., 0], peaks[..., 1]]
    return hit & (assignment >= 0).view(1, k)


@dataclass
class LocalisationReport:
    """Per-group localisation numbers (lists have one entry per group, K).

    Attributes:
        matched_part: part index matched to each group (``-1`` if unmatched).
        share: mean attention share inside the matched part.
        area_share: mean area share of the matched part.
        ratio: ``share / area_share``.
        pointing: pointing-game hit rate.
        distinct: groups matched to pairwise different parts (and all matched).
        mass: ``[K][P]`` mean mass of every group in every part.
        num_images: N.
    """

    matched_part: list[int]
    share: list[float]
    area_share: list[float]
    ratio: list[float]
    pointing: list[float]
    distinct: bool
    mass: list[list[float]]
    num_images: int

    @property
    def min_share(self) -> float:
        return min(self.share)

    @property
    def min_ratio(self) -> float:
        return min(self.ratio)

    @property
    def min_pointing(self) -> float:
        return min(self.pointing)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready), with the per-group minima added."""
        d = asdict(self)
        d.update(min_share=self.min_share, min_ratio=self.min_ratio, min_pointing=self.min_pointing)
        return d


def localisation_report(attention: Tensor, part_masks: Tensor) -> LocalisationReport:
    """Match groups to parts and measure share, area ratio and pointing game.

    Args:
        attention: ``[N, K, h, w]`` attention maps (sum to 1 per map).
        part_masks: ``[N, P, H, W]`` bool ground-truth masks.
    """
    mass = part_attention_mass(attention, part_masks)  # [N, K, P]
    assignment = match_groups_to_parts(mass)
    area = part_area_share(part_masks).mean(dim=0)  # [P]
    mean_mass = mass.mean(dim=0)  # [K, P]
    hits = pointing_hits(attention, part_masks, assignment).float().mean(dim=0)  # [K]
    share, area_k, ratio = [], [], []
    for g, p in enumerate(assignment.tolist()):  # K scalars for the report, not model code
        s = float(mean_mass[g, p]) if p >= 0 else 0.0
        a = float(area[p]) if p >= 0 else float("nan")
        share.append(s)
        area_k.append(a)
        ratio.append(s / a if p >= 0 and a > 0 else 0.0)
    matched = assignment.tolist()
    distinct = all(p >= 0 for p in matched) and len(set(matched)) == len(matched)
    return LocalisationReport(
        matched_part=matched, share=share, area_share=area_k, ratio=ratio,
        pointing=[float(h) for h in hits], distinct=distinct,
        mass=mean_mass.tolist(), num_images=int(attention.shape[0]),
    )


def uniform_attention(n: int, k: int, h: int, w: int) -> Tensor:
    """``[N, K, h, w]`` uniform maps (the chance baseline for the report)."""
    return torch.full((n, k, h, w), 1.0 / (h * w))


def collect_attention(model: torch.nn.Module, dataset: Any, indices: Sequence[int] | None = None,
                      batch_size: int = 64) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Run ``model`` over dataset items that carry ``part_masks``.

    Args:
        model: a grouping network (``model(images) -> GroupOutput``), evaluated in eval mode.
        dataset: items ``{"image", "label", "part_masks"}`` (e.g. :class:`SyntheticParts`).
        indices: items to use (default: all), in this order.

    Returns:
        ``(embedding [N, K*d], groups [N, K, d], labels [N], attention [N, K, h, w] | None,
        part_masks [N, P, H, W] | None)`` on CPU, float32 / bool.
    """
    from dgml_viz.inference import infer

    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]

    def batches() -> Iterator[dict[str, Tensor]]:
        for start in range(0, len(idx), batch_size):
            items = [dataset[i] for i in idx[start:start + batch_size]]
            batch = {"image": torch.stack([it["image"] for it in items]),
                     "label": torch.tensor([int(it["label"]) for it in items])}
            if "part_masks" in items[0]:
                batch["part_masks"] = torch.stack([it["part_masks"] for it in items])
            yield batch

    out = infer(model, batches(), extras=("label", "part_masks"))
    return out.embedding, out.groups, out.extras["label"], out.attention, out.extras.get("part_masks")


def benchmark_report(model: torch.nn.Module, dataset: Any, indices: Sequence[int] | None = None,
                     batch_size: int = 64, ks: Sequence[int] = (1, 2, 4, 8), seed: int = 0) -> dict[str, Any]:
    """Retrieval and localisation numbers of ``model`` on a parts dataset, as one flat dict.

    This is what the demo model cards report: ``recall@k``, ``map@r``, ``nmi``,
    per-group Recall@1 (from :func:`dgml_viz.metrics.retrieval.retrieval_metrics`),
    and, for models with attention, ``localisation`` (:meth:`LocalisationReport.to_dict`)
    plus the chance level ``localisation_uniform`` of uniform maps on the same images.
    """
    from dgml_viz.metrics.retrieval import retrieval_metrics

    emb, grp, lab, att, masks = collect_attention(model, dataset, indices, batch_size)
    out: dict[str, Any] = dict(retrieval_metrics(emb, lab, groups=grp, ks=list(ks), seed=seed))
    out["num_images"] = int(len(lab))
    if att is not None and masks is not None:
        out["localisation"] = localisation_report(att, masks).to_dict()
        n, k, h, w = att.shape
        out["localisation_uniform"] = localisation_report(uniform_attention(n, k, h, w), masks).to_dict()
    return out
