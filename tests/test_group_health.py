"""Mask-free group health (dgml_viz.metrics.group_health): known answers on constructed inputs,
parity of each signal with an explicit loop, and what it finds on the shipped checkpoints."""
from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dgml_viz.metrics import group_health as GH
from dgml_viz.metrics.group_health import group_health

Tensor = torch.Tensor
ROOT = Path(__file__).resolve().parents[1]
H = W = 8
ATTRS, VALUES = 3, 3  # a class = one value of each of 3 attributes (27 classes)


def _blob(cy: float, cx: float, sigma: float = 0.6) -> Tensor:
    ys, xs = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
    m = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma ** 2))
    return m / m.sum()



def healthy(n_per_class: int = 4, k: int = 3, d: int = 16, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """K distinct, alive groups, as DGML means them: group g encodes attribute g of the class (its own
    random code per value, plus noise) and attends to its own part, which moves from image to image.

    Returns ``(groups [N, K, d], attention [N, K, H, W], labels [N])`` with N = 27 * n_per_class.
    """
    gen = torch.Generator().manual_seed(seed)
    classes = torch.cartesian_prod(*[torch.arange(VALUES)] * ATTRS)  # [27, 3]
    labels = torch.arange(len(classes)).repeat_interleave(n_per_class)
    codes = F.normalize(torch.randn(k, VALUES, d, generator=gen), dim=-1)  # per group, per attribute value
    n = len(labels)
    groups = torch.stack([codes[g, classes[labels, g % ATTRS]] for g in range(k)], dim=1)
    groups = F.normalize(groups + 0.15 * torch.randn(n, k, d, generator=gen), dim=-1)
    att = torch.zeros(n, k, H, W)
    for i in range(n):
        # the K parts in K different quadrant-ish cells of this image, at random places
        cells = torch.randperm(4, generator=gen)[:k]
        for g in range(k):
            qy, qx = divmod(int(cells[g]), 2)
            cy = qy * 4 + 0.5 + 2.0 * float(torch.rand((), generator=gen))
            cx = qx * 4 + 0.5 + 2.0 * float(torch.rand((), generator=gen))
            att[i, g] = _blob(cy, cx)
    return groups, att, labels


# ----------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("use_labels", [True, False])
def test_distinct_alive_groups_flag_nothing(use_labels: bool) -> None:
    g, a, y = healthy()
    h = group_health(g, a, y if use_labels else None)
    assert h.dead == [] and h.suspect == [] and h.duplicates == [], h.reasons
    assert h.healthy and h.reasons == []
    assert h.retrieval_used is use_labels
    if use_labels:
        # each group's slice knows one attribute of three: its same-class pairs are clearly more
        # similar than chance (AUC), even where its Recall@1 alone stays under 2x chance
        assert all(s.separation_auc > 0.75 for s in h.groups)
        assert all(s.recall_at_1 > s.chance for s in h.groups)


@pytest.mark.parametrize("kind", ["uniform", "fixed"])
@pytest.mark.parametrize("use_labels", [True, False])
def test_image_independent_group_is_dead(kind: str, use_labels: bool) -> None:
    g, a, y = healthy()
    a[:, 2] = 1.0 / (H * W) if kind == "uniform" else F.one_hot(torch.tensor(5 * W + 2), H * W).float().view(H, W)
    g[:, 2] = F.normalize(torch.ones(g.shape[-1]), dim=0)  # the same vector for every image
    h = group_health(g, a, y if use_labels else None)
    assert h.dead == [2], h.reasons
    assert h.duplicates == [] and h.suspect == []
    (line,) = [r for r in h.reasons if r.startswith("group 2")]
    assert "\n" not in line and "mean cosine 1.000" in line
    assert ("near-uniform" in line) == (kind == "uniform")
    assert ("same cells" in line) == (kind == "fixed") or kind == "uniform"  # a uniform map is also static
    if use_labels:
        assert "near chance" in line
    assert h.groups[2].embedding_consistency == pytest.approx(1.0)
    assert h.groups[2].centre_mobility == pytest.approx(0.0, abs=1e-9)


def test_fixed_attention_alone_is_dead_without_labels_and_suspect_with_them() -> None:
    """A group that reads the same cells in every image but whose vector still carries the class:
    without labels nothing says it is useful; with labels it is 'suspect', not dead."""
    g, a, y = healthy()
    a[:, 1] = _blob(2.0, 5.0, sigma=1.0)
    free = group_health(g, a, None)
    assert free.dead == [1] and "same cells" in free.reasons[0]
    lab = group_health(g, a, y)
    assert lab.dead == [] and lab.suspect == [1]
    assert "yet its slice retrieves" in lab.reasons[0]


def test_near_chance_retrieval_needs_labels() -> None:
    """Group 0's vector is noise (varied, not constant) and its attention is a healthy part map:
    only the retrieval signal can tell it is dead."""
    g, a, y = healthy()
    g[:, 0] = F.normalize(torch.randn(len(g), g.shape[-1], generator=torch.Generator().manual_seed(3)), dim=-1)
    assert group_health(g, a, None).dead == []
    h = group_health(g, a, y)
    assert h.dead == [0], h.reasons
    assert h.groups[0].lift < GH.CHANCE_LIFT and "near chance" in h.reasons[0]


def test_identical_groups_are_duplicates() -> None:
    g, a, y = healthy()
    g[:, 1], a[:, 1] = g[:, 0], a[:, 0]
    for labels in (y, None):
        h = group_health(g, a, labels)
        assert h.duplicates == [(0, 1)] and h.dead == [], h.reasons
        (pair,) = [p for p in h.pairs if p.pair == (0, 1)]
        assert pair.attention_overlap == pytest.approx(1.0) and pair.cosine == pytest.approx(1.0)
        assert pair.similarity_correlation == pytest.approx(1.0)
        line = h.reasons[0]
        assert line.startswith("groups 0 and 1 duplicated") and "share 1.000" in line and "cosine 1.000" in line


def test_two_sharp_maps_on_neighbouring_cells_are_a_duplicate() -> None:
    """The failure of a v6 synthetic run (seed 3, 2 threads): two groups on neighbouring cells of one
    part — maps that share no cell (overlap 0) and vectors kept apart (cosine < 0), yet one place."""
    g, a, y = healthy()
    one_hot = torch.zeros(len(g), H, W)
    centres = torch.randint(1, H - 2, (len(g), 2), generator=torch.Generator().manual_seed(4))
    for i, (cy, cx) in enumerate(centres.tolist()):
        one_hot[i, cy, cx] = 1.0
    a[:, 0] = one_hot
    a[:, 1] = torch.roll(one_hot, 1, dims=-1)  # the cell to its right
    a[:, 2] = torch.roll(one_hot, (H // 2, W // 2), dims=(-2, -1))  # far away
    h = group_health(g, a, y)
    (pair,) = [p for p in h.pairs if p.pair == (0, 1)]
    assert pair.attention_overlap == 0.0 and pair.local
    assert pair.centre_distance == pytest.approx(1 / W)  # one cell of the grid
    assert h.duplicates == [(0, 1)], h.reasons
    (line,) = [r for r in h.reasons if r.startswith("groups 0 and 1")]
    assert "lie 0.125 of the grid apart" in line and "one place" in line
    # explicit loop: median distance of the centres of mass
    c = GH.attention_centres(a)
    loop = float(np.median([float(torch.linalg.norm(c[n, 0] - c[n, 2])) for n in range(len(g))]))
    (far,) = [p for p in h.pairs if p.pair == (0, 2)]
    assert far.centre_distance == pytest.approx(loop, abs=1e-6) and far.centre_distance > GH.DUPLICATE_DISTANCE
    # broad maps with the same centre are left to the other signals (not "one place")
    b = a.clone()
    b[:, 0] = b[:, 1] = 1.0 / (H * W)
    (broad,) = [p for p in group_health(g, b, y).pairs if p.pair == (0, 1)]
    assert broad.centre_distance == pytest.approx(0.0, abs=1e-6) and broad.local is False


def test_same_ranking_in_other_coordinates_is_a_duplicate() -> None:
    """Group 1 = group 0 rotated: different vectors (cosine ~0) and maps, the same image ranking."""
    g, a, y = healthy(d=16)
    rot, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))
    g[:, 1] = g[:, 0] @ rot
    h = group_health(g, a, y)
    (pair,) = [p for p in h.pairs if p.pair == (0, 1)]
    assert abs(pair.cosine) < 0.5 and pair.attention_overlap < 0.1
    assert h.duplicates == [(0, 1)] and "rank images the same way" in h.reasons[0]


def test_no_attention_uses_only_embedding_signals() -> None:
    g, _, y = healthy()
    g[:, 2] = F.normalize(torch.ones(g.shape[-1]), dim=0)
    for labels in (y, None):
        h = group_health(g, None, labels)
        assert not h.has_attention and any("no attention" in n for n in h.notes)
        assert all(s.entropy is None and s.cross_image_overlap is None and s.centre_mobility is None
                   for s in h.groups)
        assert all(p.attention_overlap is None for p in h.pairs)
        assert h.dead == [2] and h.duplicates == []
    g2, _, _ = healthy()
    g2[:, 2] = g2[:, 0]
    assert group_health(g2, None, None).duplicates == [(0, 2)]


def test_one_group_gap_style_head() -> None:
    g, _, y = healthy(k=1)
    h = group_health(g, None, y)
    assert h.pairs == [] and h.duplicates == [] and h.dead == []
    g[:] = F.normalize(torch.ones(g.shape[-1]), dim=0)
    assert group_health(g, None, None).dead == [0]


def test_labels_free_mode_and_unknown_labels() -> None:
    g, a, y = healthy()
    h = group_health(g, a, None)
    assert not h.has_labels and not h.retrieval_used
    assert all(s.recall_at_1 is None and s.chance is None and s.lift is None for s in h.groups)
    assert any("no labels" in n for n in h.notes)
    # all -1 (an unlabelled folder) is the same as no labels
    h2 = group_health(g, a, torch.full_like(y, -1))
    assert not h2.has_labels and h2.to_dict()["groups"] == h.to_dict()["groups"]
    # too few labelled queries: the retrieval signal is left out, with a note
    few = torch.full_like(y, -1)
    few[:4] = torch.tensor([0, 0, 1, 1])
    h3 = group_health(g, a, few)
    assert h3.has_labels and not h3.retrieval_used and any("not used" in n for n in h3.notes)


def test_to_dict_is_json_ready() -> None:
    import json

    g, a, y = healthy()
    g[:, 1], a[:, 1] = g[:, 0], a[:, 0]
    d = group_health(g, a, y).to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["duplicates"] == [[0, 1]]
    assert set(d["thresholds"]) == set(GH.THRESHOLDS)


def test_bad_shapes_raise() -> None:
    g, a, y = healthy()
    with pytest.raises(ValueError, match="groups"):
        group_health(g[0])
    with pytest.raises(ValueError, match="attention"):
        group_health(g, a[:, :2])
    with pytest.raises(ValueError, match="labels"):
        group_health(g, a, y[:-1])


# ----------------------------------------------------------------------------- signals vs explicit loops
def test_chance_and_recall_match_explicit_loops() -> None:
    from dgml_viz.metrics.retrieval import per_group_recall_at_1

    g, _, y = healthy(n_per_class=3)
    y = y.clone()
    y[0] = 99  # a lone query: no partner, left out of both recall and chance
    recall, chance, z, q = GH.retrieval_vs_chance(g, y)
    assert recall == pytest.approx(per_group_recall_at_1(g, y))
    n = len(y)
    ps = [(int((y == y[i]).sum()) - 1) / (n - 1) for i in range(n) if int((y == y[i]).sum()) > 1]
    assert q == len(ps) == n - 1
    assert chance == pytest.approx(sum(ps) / len(ps))
    hits = [r * q for r in recall]
    mu, var = sum(ps), sum(p * (1 - p) for p in ps)
    assert z == pytest.approx([(h - mu) / math.sqrt(var) for h in hits])


def test_random_rankings_score_chance_on_average() -> None:
    """The chance level is what random embeddings actually get (mean over seeds)."""
    y = torch.arange(10).repeat_interleave(torch.tensor([2, 3, 4, 5, 6, 2, 3, 4, 5, 6]))
    vals = []
    for s in range(200):
        g = torch.randn(len(y), 1, 8, generator=torch.Generator().manual_seed(s))
        r, chance, _, _ = GH.retrieval_vs_chance(g, y)
        vals.append(r[0])
    assert float(np.mean(vals)) == pytest.approx(chance, abs=0.02)


def test_embedding_consistency_matches_pairwise_loop() -> None:
    g = torch.randn(7, 2, 5, generator=torch.Generator().manual_seed(0))
    u = F.normalize(g, dim=-1)
    want = [np.mean([float(u[i, k] @ u[j, k]) for i in range(7) for j in range(7) if i != j]) for k in range(2)]
    assert GH.embedding_consistency(g).tolist() == pytest.approx(want)


def test_separation_auc_matches_pair_counting() -> None:
    g = torch.randn(12, 2, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 3, 3])
    u = F.normalize(g, dim=-1)
    pairs = [(i, j) for i in range(12) for j in range(i + 1, 12)]
    want = []
    for k in range(2):
        pos = [float(u[i, k] @ u[j, k]) for i, j in pairs if y[i] == y[j]]
        neg = [float(u[i, k] @ u[j, k]) for i, j in pairs if y[i] != y[j]]
        want.append(np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg]))
    assert GH.separation_auc(g, y) == pytest.approx(want)
    assert all(math.isnan(v) for v in GH.separation_auc(g, torch.zeros(12, dtype=torch.long)))


def test_similarity_correlation_matches_numpy() -> None:
    g = torch.randn(9, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u = F.normalize(g, dim=-1).numpy()
    off = ~np.eye(9, dtype=bool)
    sims = [(u[:, k] @ u[:, k].T)[off] for k in range(3)]
    assert GH.similarity_correlation(g).numpy() == pytest.approx(np.corrcoef(sims), abs=1e-9)


def test_cross_image_overlap_and_mobility_known_values() -> None:
    n = H * W
    moving = F.one_hot(torch.arange(n), n).float().view(n, 1, H, W)  # image i looks at cell i only
    fixed = moving[:1].expand(n, 1, H, W)
    a = torch.cat([moving, fixed, torch.full((n, 1, H, W), 1.0 / n)], dim=1)
    assert GH.cross_image_overlap(a).tolist() == pytest.approx([0.0, 1.0, 1.0])
    mob = GH.centre_mobility(a)
    # one-hot maps over every cell: the centre is uniform over the cell centres, variance (1 - 1/h^2)/12 per axis
    assert float(mob[0]) == pytest.approx(6 * 2 * (1 - 1 / H ** 2) / 12)
    assert mob[1:].tolist() == pytest.approx([0.0, 0.0], abs=1e-9)
    centres = GH.attention_centres(moving)[:, 0]
    assert centres[W + 2].tolist() == pytest.approx([1.5 / H, 2.5 / W])


# ----------------------------------------------------------------------------- shipped checkpoints
@functools.lru_cache(maxsize=2)
def _shipped_outputs(path: Path) -> tuple[Tensor, Tensor | None, Tensor]:
    from torch.utils.data import DataLoader

    from dgml_viz.data import build_dataset
    from dgml_viz.model.checkpoint import load_checkpoint
    from dgml_viz.report.analysis import collect

    model = load_checkpoint(path)
    ds = build_dataset("synthetic", "test", image_size=int(model.transform["size"]), samples_per_class=4)
    c = collect(model, DataLoader(ds, batch_size=64), keep_images=0)
    return c.groups, c.attention, c.labels


@pytest.mark.parametrize("use_labels", [True, False])
def test_shipped_demo_groups_are_alive_and_distinct(use_labels: bool) -> None:
    path = ROOT / "checkpoints" / "demo.pt"
    if not path.exists():
        pytest.skip("no shipped demo checkpoint")
    g, a, y = _shipped_outputs(path)  # 128 held-out images, 32 unseen classes
    h = group_health(g, a, y if use_labels else None)
    assert h.dead == [] and h.suspect == [] and h.duplicates == [], h.reasons


@pytest.mark.parametrize("use_labels", [True, False])
def test_shipped_gate_baseline_groups_are_duplicates(use_labels: bool) -> None:
    """The card (recipe v4): each of the gate baseline's groups retrieves alone as well as the concatenation
    (per-group R@1 0.998) while its masks keep to no part — every group reads the whole class, so the three
    are redundant. group_health flags every pair, none dead; checked here against scipy's Pearson
    correlation of the groups' cosine similarities over every image pair and a leave-one-out nearest
    neighbour per group."""
    from scipy.stats import pearsonr

    path = ROOT / "checkpoints" / "baselines" / "synthetic_gate.pt"
    if not path.exists():
        pytest.skip("no shipped gate baseline")
    g, a, y = _shipped_outputs(path)
    h = group_health(g, a, y if use_labels else None)
    assert h.dead == [] and h.duplicates == [(0, 1), (0, 2), (1, 2)], h.reasons
    unit = torch.nn.functional.normalize(g.double(), dim=-1).numpy()
    pairs = np.triu_indices(len(unit), 1)
    sims = [(unit[:, k] @ unit[:, k].T) for k in range(3)]
    for i, j in h.duplicates:
        assert pearsonr(sims[i][pairs], sims[j][pairs])[0] >= GH.DUPLICATE_RANKING
    labels = y.numpy()
    for s in sims:
        np.fill_diagonal(s, -np.inf)
        assert (labels[s.argmax(1)] == labels).mean() >= 0.95  # each group alone tells the classes apart
