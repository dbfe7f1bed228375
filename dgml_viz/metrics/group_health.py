"""Mask-free group health: which groups are dead, which are duplicates of another.

A user's own model on their own data has no part masks, so the localisation
checks cannot run. These signals need only the model's outputs on a set of
images (and, optionally, class labels):

per group
  ``recall@1`` vs ``chance``  Recall@1 of the group's slice alone (query == gallery,
                              self excluded) against the exact expectation of a
                              random ranking, ``mean_q (n_c(q) - 1) / (N - 1)``
                              over the queries that have a same-class partner;
                              ``lift = recall / chance`` and the one-sided z-score
                              of the hit count under that null (hits are
                              independent Bernoulli(p_q), so mean ``sum p_q``,
                              variance ``sum p_q (1 - p_q)``);
  ``separation_auc``          ROC AUC of the group's image-to-image cosine for
                              same-class vs different-class pairs (sklearn; 0.5 =
                              chance whatever the class counts). Recall@1 alone
                              undersells a group that knows one part of a class
                              (its nearest neighbour shares that part, rarely the
                              class); the AUC still sees it;
  ``embedding_consistency``   mean cosine between the group's vectors of two
                              *different* images (1: the same vector whatever the
                              image, so the group cannot tell images apart);
  ``entropy``                 mean normalised attention entropy (1 = uniform map);
  ``cross_image_overlap``     shared attention mass (histogram intersection) of the
                              group's maps of two different images, over seeded
                              random pairs (1: the map is the same whatever the
                              image: a fixed location or uniform);
  ``centre_mobility``         variance across images of the map's centre of mass,
                              divided by that of a position uniform over the grid
                              (1/6 summed over the two axes): 0 when the group
                              always looks at the same place (reported, not a flag:
                              a centred dataset keeps some parts in place);
per pair of groups
  ``attention_overlap``       mean histogram intersection of the two maps of one image;
  ``centre_distance``         median over images of the distance between the two maps'
                              centres of mass (units of the grid side), reported with
                              ``local``: whether both maps are compact (RMS radius below
                              :data:`DUPLICATE_DISTANCE`), so that near centres mean one place.
                              Two sharp maps on neighbouring cells of one object share no
                              cell (overlap 0) yet read the same part;
  ``cosine``                  mean cosine of the two group vectors of one image;
  ``similarity_correlation``  Pearson correlation of the two groups' image-to-image
                              cosine matrices (off-diagonal): 1 when both groups rank
                              the images the same way, whatever their coordinates.

Verdicts (thresholds: the module constants below, each with its reason):

* **dead** — with labels (at least :data:`MIN_QUERIES` queries with a partner),
  a group is dead when its retrieval is near chance on both views: Recall@1
  (``lift < CHANCE_LIFT`` or ``z < CHANCE_Z``) and pair separation
  (``separation_auc < SEPARATION_ALIVE``). Without usable labels it is dead when any image-independence
  signal fires: embedding consistency ``>= CONSTANT_EMBEDDING``, entropy
  ``>= UNIFORM_ENTROPY`` or cross-image overlap ``>= STATIC_OVERLAP``.
* **suspect** — labels say the group retrieves well above chance, yet an
  image-independence signal fires (e.g. a group that always reads the same
  cells but whose values still carry the class): not dead, but not a part detector.
* **duplicates** — pairs ``(i, j)`` with attention overlap ``>= DUPLICATE_OVERLAP``,
  compact maps whose centres lie within ``DUPLICATE_DISTANCE`` of each other,
  cosine ``>= DUPLICATE_COSINE`` or similarity correlation ``>= DUPLICATE_RANKING``.

Every flag comes with one reason line naming the signal, its value and the threshold.

Example:
    >>> g = torch.nn.functional.normalize(torch.randn(64, 3, 8), dim=-1)
    >>> g[:, 2] = g[0, 2]                          # group 2: the same vector for every image
    >>> group_health(g).dead
    [2]
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from dgml_viz.metrics.diversity import (attention_centre, attention_entropy, attention_spread, group_cosine,
                                       histogram_intersection, pair_values)
from dgml_viz.metrics.diversity import per_group_query_hits

logger = logging.getLogger(__name__)

#: Recall@1 below this multiple of chance is "near chance". A group that finds a same-class
#: neighbour less than twice as often as a random ranking adds little to the embedding; the shipped
#: demo model's groups each read one part (4 shapes per part over 32 classes) and score 3-5x chance,
#: the gate baseline's unused group scores 1.4x.
CHANCE_LIFT = 2.0
#: ...or whose hit count is less than this many standard deviations above the random-ranking mean:
#: on few images a lift above 2 can still be luck (3 sigma: one-sided p ~ 0.0013).
CHANCE_Z = 3.0
#: same-class vs different-class pair AUC below this is near chance (0.5). A group that knows one
#: attribute of three (constructed test) scores 0.84, the demo's part groups 0.89, the gate
#: baseline's unused group 0.51 and a noise vector 0.50.
SEPARATION_ALIVE = 0.6
#: fewer queries with a same-class partner than this: the retrieval signal is not used.
MIN_QUERIES = 20
#: mean cross-image cosine of a group's vectors at or above this: the group outputs nearly the same
#: vector for every image (within ~25 degrees on average). Trained groups that retrieve spread far
#: more (demo: 0.46-0.62, metric-learning baselines ~0.01); the gate baseline's unused group: 0.92.
CONSTANT_EMBEDDING = 0.9
#: normalised attention entropy at or above this: the map is close to uniform (its effective number
#: of cells, exp(H), covers more than ~60 % of a 7x7 or 16x16 grid). A whole-object map on half the
#: grid has 0.82; softmax over untrained logits ~0.99; trained part groups 0.04-0.07 (demo).
UNIFORM_ENTROPY = 0.9
#: mean shared attention mass of a group's maps of two different images at or above this: the map
#: hardly depends on the image (a fixed location or near-uniform). Groups that follow a part that
#: moves share little (demo: 0.006-0.015; the gate baseline's masks: 0.03-0.23).
STATIC_OVERLAP = 0.6
#: pairwise attention overlap (shared mass of two groups' maps of one image) at or above this: more
#: than half of each group's attention falls on the same cells. The "distinct features" claim of the
#: report asks the mean over pairs to stay below 0.5; demo pairs: 0.000.
DUPLICATE_OVERLAP = 0.5
#: median distance between two groups' centres of mass below this fraction of the grid side, both maps
#: compact (RMS radius below it too): the two read one place. A v6 synthetic run that failed (seed 3 at
#: 2 threads, two groups on neighbouring cells of the blue part, overlap 0.000, cosine -0.20) has 0.155;
#: its distinct pairs and the demo's are 0.57-0.64 apart. Broad maps (a uniform map's RMS radius is 0.41)
#: are left to the other signals.
DUPLICATE_DISTANCE = 0.2
#: mean cosine of two groups' vectors of one image at or above this: nearly the same vector (groups
#: of the attentive head share their value projection, so identical maps give cosine 1).
DUPLICATE_COSINE = 0.9
#: Pearson correlation of two groups' image-to-image cosine matrices at or above this: the groups
#: order the images the same way (redundant whatever their coordinates). The multi_linear baseline's
#: heads, all reading the same pooled feature, correlate 0.98-0.99; the demo's groups ~0.00.
DUPLICATE_RANKING = 0.9
#: random image pairs per image for the cross-image overlap.
PAIR_ROUNDS = 4
#: images used for the similarity correlation (O(N^2) per group); a seeded subset above this.
MAX_RANKING_IMAGES = 2000

THRESHOLDS: dict[str, float] = {
    "chance_lift": CHANCE_LIFT, "chance_z": CHANCE_Z, "separation_alive": SEPARATION_ALIVE,
    "min_queries": MIN_QUERIES,
    "constant_embedding": CONSTANT_EMBEDDING, "uniform_entropy": UNIFORM_ENTROPY,
    "static_overlap": STATIC_OVERLAP, "duplicate_overlap": DUPLICATE_OVERLAP,
    "duplicate_distance": DUPLICATE_DISTANCE, "duplicate_cosine": DUPLICATE_COSINE, "duplicate_ranking": DUPLICATE_RANKING,
}


@dataclass(frozen=True)
class GroupSignals:
    """The per-group signals (``None``: not measurable from the inputs given)."""

    group: int
    recall_at_1: float | None
    chance: float | None
    lift: float | None
    z: float | None
    separation_auc: float | None
    embedding_consistency: float | None
    entropy: float | None
    cross_image_overlap: float | None
    centre_mobility: float | None


@dataclass(frozen=True)
class PairSignals:
    """The signals of one pair of groups ``i < j``."""

    pair: tuple[int, int]
    attention_overlap: float | None
    cosine: float
    similarity_correlation: float | None
    centre_distance: float | None = None
    local: bool | None = None


@dataclass(frozen=True)
class GroupHealth:
    """Verdicts and the signals behind them.

    Attributes:
        dead: groups flagged dead (sorted); suspect: retrieval alive but attention/embedding
            independent of the image; duplicates: flagged pairs ``(i, j)``, ``i < j``.
        reasons: one line per flag (a group or pair may have several).
        notes: what could not be measured and why.
        retrieval_used: whether the verdicts used labels.
    """

    num_images: int
    num_groups: int
    has_labels: bool
    has_attention: bool
    retrieval_used: bool
    groups: list[GroupSignals]
    pairs: list[PairSignals]
    dead: list[int]
    suspect: list[int]
    duplicates: list[tuple[int, int]]
    reasons: list[str]
    notes: list[str] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=lambda: dict(THRESHOLDS))

    @property
    def healthy(self) -> bool:
        return not (self.dead or self.suspect or self.duplicates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (pairs as ``[i, j]`` lists)."""
        d = asdict(self)
        d["duplicates"] = [list(p) for p in self.duplicates]
        for p in d["pairs"]:
            p["pair"] = list(p["pair"])
        return d


# ----------------------------------------------------------------------------- signals
def retrieval_vs_chance(groups: Tensor, labels: Tensor) -> tuple[list[float], float, list[float], int]:
    """Per-group Recall@1 against a random ranking.

    Args:
        groups: ``[N, K, d]``; labels: ``[N]`` int (all ``>= 0``).

    Returns:
        ``(recall [K], chance, z [K], num_valid_queries)``; ``chance`` is the exact expected
        Recall@1 of a uniformly random neighbour, ``z`` the one-sided z-score of each group's
        hit count under that null (``nan`` when no query has a partner).
    """
    lab = torch.as_tensor(labels).long().reshape(-1)
    n = len(lab)
    hits, valid = per_group_query_hits(groups, lab)
    _, inv, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    p = ((counts[inv] - 1).double() / max(n - 1, 1))[valid]  # [Q] chance of a same-class neighbour
    q = int(valid.sum())
    if q == 0:
        k = groups.shape[1]
        return [float("nan")] * k, float("nan"), [float("nan")] * k, 0
    h = hits[valid].double().sum(0)  # [K]
    mu, var = float(p.sum()), float((p * (1 - p)).sum())
    z = ((h - mu) / math.sqrt(var)).tolist() if var > 0 else [float("inf") if v > mu else 0.0 for v in h.tolist()]
    return (h / q).tolist(), mu / q, z, q


def embedding_consistency(groups: Tensor) -> Tensor:
    """Mean cosine between one group's unit vectors of two different images: ``[N, K, d] -> [K]``.

    Equal to ``(||sum_n u_n||^2 - N) / (N (N - 1))`` for unit vectors ``u_n`` (no ``N x N`` matrix).
    """
    g = groups.double()
    u = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    n = u.shape[0]
    if n < 2:
        return torch.full((u.shape[1],), float("nan"), dtype=torch.float64)
    s = u.sum(0)  # [K, d]
    return ((s * s).sum(-1) - (u * u).sum(dim=(0, 2))) / (n * (n - 1))


def _random_partners(n: int, rounds: int, seed: int) -> tuple[Tensor, Tensor]:
    """``rounds * n`` index pairs ``(a, b)`` with ``a != b`` (a seeded permutation paired with its rolls)."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    rounds = max(1, min(rounds, n - 1))
    a = torch.cat([perm] * rounds)
    b = torch.cat([perm.roll(s + 1) for s in range(rounds)])
    return a, b


def cross_image_overlap(attention: Tensor, rounds: int = PAIR_ROUNDS, seed: int = 0) -> Tensor:
    """Shared mass of one group's maps of two different images: ``[N, K, h, w] -> [K]``.

    Averaged over ``rounds * N`` seeded random pairs of distinct images (``nan`` for ``N < 2``).
    """
    n = attention.shape[0]
    if n < 2:
        return torch.full((attention.shape[1],), float("nan"))
    a = attention.float().flatten(2)
    a = a / a.sum(-1, keepdim=True).clamp_min(1e-12)
    i, j = _random_partners(n, rounds, seed)
    return torch.minimum(a[i], a[j]).sum(-1).mean(0)


def attention_centres(attention: Tensor) -> Tensor:
    """Centre of mass ``(y, x)`` of each map in units of the grid side: ``[N, K, h, w] -> [N, K, 2]``
    (:func:`dgml_viz.metrics.diversity.attention_centre`; cell centres at ``((i + 0.5) / h, (j + 0.5) / w)``)."""
    return attention_centre(attention)


def centre_mobility(attention: Tensor) -> Tensor:
    """Variance across images of each group's centre of mass over 1/6: ``[N, K, h, w] -> [K]``.

    1/6 is the summed per-axis variance of a point uniform on the unit square, so a group whose
    centre lands anywhere at random scores about 1 and one fixed in place scores 0.
    """
    c = attention_centres(attention)  # [N, K, 2]
    if c.shape[0] < 2:
        return torch.full((c.shape[1],), float("nan"))
    return c.var(dim=0, unbiased=False).sum(-1) * 6.0


def _subset(n: int, max_images: int, seed: int) -> Tensor | None:
    """Seeded indices of ``max_images`` of ``n`` images, or None when all are kept."""
    if n <= max_images:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))[:max_images].sort().values


def _pair_similarities(groups: Tensor) -> Tensor:
    """Cosine of every image pair ``n < m`` per group: ``[N, K, d] -> [K, N(N-1)/2]`` (``triu_indices`` order)."""
    g = groups.double()
    u = g / g.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    i, j = torch.triu_indices(u.shape[0], u.shape[0], offset=1)
    return torch.stack([(u[:, k] @ u[:, k].T)[i, j] for k in range(u.shape[1])])


def separation_auc(groups: Tensor, labels: Tensor, max_images: int = MAX_RANKING_IMAGES,
                   seed: int = 0) -> list[float]:
    """ROC AUC of each group's pair cosine, same-class pairs positive: ``[N, K, d], [N] -> [K]``.

    0.5 is chance, 1 means every same-class pair is more similar than every different-class pair
    (``sklearn.metrics.roc_auc_score``, ties counted half). ``nan`` without both kinds of pair.
    Above ``max_images`` images a seeded subset is used.
    """
    from sklearn.metrics import roc_auc_score

    lab = torch.as_tensor(labels).long().reshape(-1)
    sub = _subset(len(lab), max_images, seed)
    if sub is not None:
        groups, lab = groups[sub], lab[sub]
    n = len(lab)
    i, j = torch.triu_indices(n, n, offset=1)
    same = (lab[i] == lab[j]).numpy()
    if same.all() or not same.any():
        return [float("nan")] * groups.shape[1]
    return [float(roc_auc_score(same, s.numpy())) for s in _pair_similarities(groups)]


def similarity_correlation(groups: Tensor, max_images: int = MAX_RANKING_IMAGES, seed: int = 0) -> Tensor:
    """Pearson correlation of the groups' image-to-image cosine matrices: ``[N, K, d] -> [K, K]``.

    Entries ``n != m`` of ``S_k = U_k U_k^T`` are compared (each pair once, the matrices are
    symmetric); above ``max_images`` a seeded subset of images is used. ``nan`` where a group's
    similarities are constant.
    """
    sub = _subset(groups.shape[0], max_images, seed)
    sims = _pair_similarities(groups if sub is None else groups[sub])  # [K, pairs]
    sims = sims - sims.mean(1, keepdim=True)
    norm = sims.norm(dim=1)
    scale = norm[:, None] * norm[None, :]
    corr = (sims @ sims.T) / scale.clamp_min(1e-300)
    return corr.where(scale > 1e-12, torch.full_like(corr, float("nan")))


# ----------------------------------------------------------------------------- verdicts
def _f(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def group_health(groups: Tensor, attention: Tensor | None = None, labels: Tensor | Sequence[int] | None = None,
                 *, seed: int = 0) -> GroupHealth:
    """Flag dead, suspect and duplicated groups from a model's outputs (no part masks).

    Args:
        groups: ``[N, K, d]`` group embeddings of N images (normalised here).
        attention: ``[N, K, h, w]`` maps summing to 1, or ``None`` (heads without spatial
            maps: only the embedding signals are used).
        labels: ``[N]`` class ids, or ``None``; negative ids mean "unknown" and are left out of
            the retrieval signal.
        seed: for the random image pairs and subsets.

    Returns:
        :class:`GroupHealth` (see the module docstring for every signal and threshold).
    """
    if groups.dim() != 3:
        raise ValueError(f"need groups [N, K, d], got {tuple(groups.shape)}")
    n, k = int(groups.shape[0]), int(groups.shape[1])
    groups = groups.detach().float().cpu()
    if attention is not None:
        if attention.dim() != 4 or tuple(attention.shape[:2]) != (n, k):
            raise ValueError(f"need attention [{n}, {k}, h, w], got {tuple(attention.shape)}")
        attention = attention.detach().float().cpu()
    notes: list[str] = []
    retrieval = _retrieval_signals(groups, labels, seed, notes)
    per_group = _group_signals(groups, attention, retrieval, seed, notes)
    dead: list[int] = []
    suspect: list[int] = []
    reasons: list[str] = []
    for sig in per_group:
        verdict, reason = _judge_group(sig, retrieval.used)
        if verdict == "dead":
            dead.append(sig.group)
        elif verdict == "suspect":
            suspect.append(sig.group)
        if reason:
            reasons.append(reason)
    pairs, duplicates = _pair_signals(groups, attention, seed, notes, reasons)
    for line in reasons:
        logger.debug("group health: %s", line)
    return GroupHealth(num_images=n, num_groups=k, has_labels=retrieval.has_labels,
                       has_attention=attention is not None, retrieval_used=retrieval.used, groups=per_group,
                       pairs=pairs, dead=dead, suspect=suspect, duplicates=duplicates, reasons=reasons, notes=notes)


@dataclass
class _Retrieval:
    """Per-group retrieval signals (all None when no usable labels)."""

    recall: list[float | None]
    z: list[float | None]
    auc: list[float | None]
    chance: float | None
    used: bool
    has_labels: bool


def _retrieval_signals(groups: Tensor, labels: Tensor | Sequence[int] | None, seed: int,
                       notes: list[str]) -> _Retrieval:
    n, k = int(groups.shape[0]), int(groups.shape[1])
    out = _Retrieval([None] * k, [None] * k, [None] * k, None, False, labels is not None)
    if labels is not None:
        lab = torch.as_tensor(np.asarray(labels)).long().reshape(-1)
        if len(lab) != n:
            raise ValueError(f"{n} images but {len(lab)} labels")
        known = lab >= 0
        out.has_labels = bool(known.any())
        if out.has_labels:
            r, chance, z, q = retrieval_vs_chance(groups[known], lab[known])
            if q >= MIN_QUERIES:
                out.recall, out.z, out.chance, out.used = r, z, chance, True
                out.auc = separation_auc(groups[known], lab[known], seed=seed)
            else:
                notes.append(f"retrieval signal not used: {q} queries with a same-class partner "
                             f"(< {MIN_QUERIES})")
    if not out.has_labels:
        notes.append("no labels: dead groups judged from attention and embedding signals only")
    return out


def _group_signals(groups: Tensor, attention: Tensor | None, ret: _Retrieval, seed: int,
                   notes: list[str]) -> list[GroupSignals]:
    consistency = embedding_consistency(groups).tolist()
    ent = cio = mob = None
    if attention is not None:
        ent = attention_entropy(attention).mean(0).tolist()
        cio = cross_image_overlap(attention, seed=seed).tolist()
        mob = centre_mobility(attention).tolist()
    else:
        notes.append("no attention maps: only embedding signals")
    out = []
    for g in range(int(groups.shape[1])):
        lift = (ret.recall[g] / ret.chance) if ret.used and ret.chance else None
        out.append(GroupSignals(group=g, recall_at_1=_f(ret.recall[g]), chance=_f(ret.chance) if ret.used else None,
                                lift=_f(lift), z=_f(ret.z[g]), separation_auc=_f(ret.auc[g]),
                                embedding_consistency=_f(consistency[g]), entropy=_f(ent[g]) if ent else None,
                                cross_image_overlap=_f(cio[g]) if cio else None,
                                centre_mobility=_f(mob[g]) if mob else None))
    return out


def _judge_group(sig: GroupSignals, retrieval_used: bool) -> tuple[str | None, str | None]:
    """``("dead" | "suspect" | None, reason line or None)`` for one group's signals."""
    g = sig.group
    independent: list[str] = []  # image-independence signals that fire
    if sig.embedding_consistency is not None and sig.embedding_consistency >= CONSTANT_EMBEDDING:
        independent.append(f"its vectors of different images have mean cosine {sig.embedding_consistency:.3f} "
                           f"(>= {CONSTANT_EMBEDDING}: nearly the same vector for every image)")
    if sig.entropy is not None and sig.entropy >= UNIFORM_ENTROPY:
        independent.append(f"its attention is near-uniform (normalised entropy {sig.entropy:.3f} "
                           f">= {UNIFORM_ENTROPY})")
    if sig.cross_image_overlap is not None and sig.cross_image_overlap >= STATIC_OVERLAP:
        independent.append(f"its maps of two different images share {sig.cross_image_overlap:.3f} of their mass "
                           f"(>= {STATIC_OVERLAP}: it looks at the same cells whatever the image)")
    if not retrieval_used:
        return ("dead", f"group {g} dead: " + "; ".join(independent)) if independent else (None, None)
    assert sig.recall_at_1 is not None and sig.chance is not None
    near_r1 = (sig.lift is None or sig.lift < CHANCE_LIFT) or (sig.z is None or sig.z < CHANCE_Z)
    near_auc = sig.separation_auc is None or sig.separation_auc < SEPARATION_ALIVE
    lift_s = f"{sig.lift:.2f}" if sig.lift is not None else "n/a"
    z_s = f"{sig.z:.1f}" if sig.z is not None else "n/a"
    auc_s = f"{sig.separation_auc:.3f}" if sig.separation_auc is not None else "n/a"
    if near_r1 and near_auc:
        return "dead", (f"group {g} dead: retrieval with its slice is near chance — Recall@1 "
                        f"{sig.recall_at_1:.3f} vs chance {sig.chance:.3f} ({lift_s}x, z = {z_s}; alive needs "
                        f">= {CHANCE_LIFT}x and z >= {CHANCE_Z}), same-class pair AUC {auc_s} "
                        f"(alive needs >= {SEPARATION_ALIVE})"
                        + ("; also " + "; ".join(independent) if independent else ""))
    if independent:
        return "suspect", (f"group {g} suspect: " + "; ".join(independent) + f" — yet its slice retrieves "
                           f"(Recall@1 {sig.recall_at_1:.3f}, {lift_s}x chance)")
    return None, None


def _pair_signals(groups: Tensor, attention: Tensor | None, seed: int, notes: list[str],
                  reasons: list[str]) -> tuple[list[PairSignals], list[tuple[int, int]]]:
    n, k = int(groups.shape[0]), int(groups.shape[1])
    pairs: list[PairSignals] = []
    duplicates: list[tuple[int, int]] = []
    if k < 2:
        return pairs, duplicates
    cos = pair_values(group_cosine(groups)).mean(0).tolist()
    ov = pair_values(histogram_intersection(attention)).mean(0).tolist() if attention is not None else None
    dist: list[float] | None = None
    if attention is not None:
        c = attention_centre(attention)  # [N, K, 2]
        dist = pair_values((c[:, :, None] - c[:, None]).norm(dim=-1)).median(0).values.tolist()
        compact = (attention_spread(attention).mean(0).sqrt() < DUPLICATE_DISTANCE).tolist()  # [K]
    sc = pair_values(similarity_correlation(groups, seed=seed)[None])[0].tolist() if n >= 3 else None
    if sc is None:
        notes.append("similarity correlation needs at least 3 images")
    i_idx, j_idx = torch.triu_indices(k, k, offset=1)
    for p, (i, j) in enumerate(zip(i_idx.tolist(), j_idx.tolist())):
        ps = PairSignals(pair=(i, j), attention_overlap=_f(ov[p]) if ov else None, cosine=float(cos[p]),
                         similarity_correlation=_f(sc[p]) if sc else None,
                         centre_distance=_f(dist[p]) if dist else None,
                         local=bool(compact[i] and compact[j]) if dist else None)
        pairs.append(ps)
        why = []
        if ps.attention_overlap is not None and ps.attention_overlap >= DUPLICATE_OVERLAP:
            why.append(f"their maps of one image share {ps.attention_overlap:.3f} of their mass "
                       f"(>= {DUPLICATE_OVERLAP})")
        if ps.local and ps.centre_distance is not None and ps.centre_distance < DUPLICATE_DISTANCE:
            why.append(f"their compact maps of one image lie {ps.centre_distance:.3f} of the grid apart "
                       f"(median; < {DUPLICATE_DISTANCE}): one place")
        if ps.cosine >= DUPLICATE_COSINE:
            why.append(f"their vectors of one image have cosine {ps.cosine:.3f} (>= {DUPLICATE_COSINE})")
        if ps.similarity_correlation is not None and ps.similarity_correlation >= DUPLICATE_RANKING:
            why.append(f"they rank images the same way (similarity correlation {ps.similarity_correlation:.3f} "
                       f">= {DUPLICATE_RANKING})")
        if why:
            duplicates.append((i, j))
            reasons.append(f"groups {i} and {j} duplicated: " + "; ".join(why))
    return pairs, duplicates


__all__ = ["GroupHealth", "GroupSignals", "PairSignals", "group_health", "retrieval_vs_chance",
           "separation_auc", "embedding_consistency", "cross_image_overlap", "attention_centres", "centre_mobility",
           "similarity_correlation", "THRESHOLDS", "CHANCE_LIFT", "CHANCE_Z", "SEPARATION_ALIVE", "MIN_QUERIES", "CONSTANT_EMBEDDING",
           "UNIFORM_ENTROPY", "STATIC_OVERLAP", "DUPLICATE_OVERLAP", "DUPLICATE_DISTANCE", "DUPLICATE_COSINE", "DUPLICATE_RANKING"]
