"""Known-answer and parity tests of dgml_viz.metrics.diversity."""
from __future__ import annotations

import math

import pytest
import torch

from dgml_viz.metrics import diversity as D
from dgml_viz.metrics.retrieval import per_group_recall_at_1, recall_at_k


def _onehot(n: int, k: int, h: int, w: int, cells: list[int]) -> torch.Tensor:
    a = torch.zeros(n, k, h * w)
    for g, c in enumerate(cells):
        a[:, g, c] = 1.0
    return a.view(n, k, h, w)


def test_identical_maps_overlap_one_and_disjoint_zero() -> None:
    a = torch.rand(3, 1, 5, 6)
    a = a / a.sum((-2, -1), keepdim=True)
    same = torch.cat([a, a], 1)
    assert torch.allclose(D.histogram_intersection(same)[:, 0, 1], torch.ones(3), atol=1e-6)
    assert torch.allclose(D.top_mass_iou(same)[:, 0, 1], torch.ones(3))
    left = torch.zeros(3, 1, 5, 6); left[..., :3] = 1 / 15
    right = torch.zeros(3, 1, 5, 6); right[..., 3:] = 1 / 15
    dis = torch.cat([left, right], 1)
    assert torch.equal(D.histogram_intersection(dis)[:, 0, 1], torch.zeros(3))
    assert torch.equal(D.top_mass_iou(dis)[:, 0, 1], torch.zeros(3))


def test_half_overlap_known_values() -> None:
    # group 0 uniform on cells {0,1}, group 1 uniform on {1,2}: intersection 0.5, top-50% regions {0} vs {1}
    a = torch.zeros(1, 2, 1, 4)
    a[0, 0, 0, :2] = 0.5
    a[0, 1, 0, 1:3] = 0.5
    assert D.histogram_intersection(a)[0, 0, 1].item() == pytest.approx(0.5)
    m = D.top_mass_mask(a, 0.5)
    assert m.sum().item() == 2  # one cell each reaches 50 %
    m75 = D.top_mass_mask(a, 0.75)
    assert m75[0, 0, 0].tolist() == [True, True, False, False]
    assert D.top_mass_iou(a, 0.75)[0, 0, 1].item() == pytest.approx(1 / 3)


def test_top_mass_mask_is_smallest_set_reaching_mass() -> None:
    a = torch.rand(4, 3, 6, 6) ** 4
    a = a / a.sum((-2, -1), keepdim=True)
    m = D.top_mass_mask(a, 0.5)
    kept = (a * m).sum((-2, -1))
    assert (kept >= 0.5 - 1e-5).all()
    # dropping the smallest kept cell falls below the mass
    smallest = torch.where(m, a, torch.full_like(a, float("inf"))).flatten(2).min(-1).values
    assert (kept - smallest < 0.5).all()


def test_entropy_uniform_one_onehot_zero() -> None:
    u = torch.full((2, 3, 4, 5), 1 / 20)
    assert torch.allclose(D.attention_entropy(u), torch.ones(2, 3))
    o = _onehot(2, 3, 4, 5, [0, 7, 19])
    assert torch.equal(D.attention_entropy(o), torch.zeros(2, 3))
    half = torch.zeros(1, 1, 2, 2); half[..., 0, :] = 0.5
    assert D.attention_entropy(half).item() == pytest.approx(math.log(2) / math.log(4))


def test_group_cosine_and_pairs() -> None:
    g = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]]])
    c = D.group_cosine(g)
    assert torch.allclose(torch.diagonal(c, dim1=1, dim2=2), torch.ones(1, 3))
    pv = D.pair_values(c)
    assert D.pair_names(3) == ["0-1", "0-2", "1-2"]
    assert torch.allclose(pv, torch.tensor([[0.0, 2 ** -0.5, 2 ** -0.5]]), atol=1e-6)


def test_vectorised_matches_loop() -> None:
    a = torch.rand(3, 4, 5, 5)
    a = a / a.sum((-2, -1), keepdim=True)
    hi = D.histogram_intersection(a)
    for n in range(3):
        for i in range(4):
            for j in range(4):
                assert hi[n, i, j].item() == pytest.approx(torch.minimum(a[n, i], a[n, j]).sum().item(), abs=1e-6)


def test_per_query_hits_match_recall() -> None:
    gen = torch.Generator().manual_seed(0)
    groups = torch.randn(40, 3, 8, generator=gen)
    labels = torch.randint(0, 6, (40,), generator=gen)
    labels[0] = 99  # a lone query, excluded
    hits, valid = D.per_group_query_hits(groups, labels)
    assert not valid[0]
    ours = hits[valid].float().mean(0).tolist()
    assert ours == pytest.approx(per_group_recall_at_1(groups, labels))
    h, v = D.per_query_hits(groups.flatten(1), labels)
    assert h[v].float().mean().item() == pytest.approx(recall_at_k(groups.flatten(1), labels, (1,))[1])


def test_attention_spread_known_answers() -> None:
    h, w = 6, 4
    uniform = torch.full((2, 3, h, w), 1 / (h * w))
    expected = (1 - 1 / h ** 2) / 12 + (1 - 1 / w ** 2) / 12  # variance of a discrete uniform on cell centres
    assert torch.allclose(D.attention_spread(uniform), torch.full((2, 3), expected))
    one = torch.zeros(1, 1, h, w)
    one[0, 0, 2, 1] = 1.0
    assert D.attention_spread(one).item() == pytest.approx(0.0, abs=1e-7)
    split = torch.zeros(1, 1, h, w)  # half on each of two opposite corners
    split[0, 0, 0, 0] = split[0, 0, h - 1, w - 1] = 0.5
    dy, dx = (h - 1) / h, (w - 1) / w
    assert D.attention_spread(split).item() == pytest.approx((dy ** 2 + dx ** 2) / 4, rel=1e-6)
    # unnormalised maps are normalised first; the value does not change with a finer grid of the same map
    assert D.attention_spread(split * 7).item() == pytest.approx(D.attention_spread(split).item(), rel=1e-6)
    fine = torch.nn.functional.interpolate(one, scale_factor=2, mode="nearest")
    # one coarse cell = 2 x 2 fine cells, half a fine step either side of the coarse centre
    assert D.attention_spread(fine).item() == pytest.approx((1 / (4 * h)) ** 2 + (1 / (4 * w)) ** 2, rel=1e-5)
