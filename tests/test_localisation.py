"""Properties of the group <-> part localisation metrics (dgml_viz.metrics.localisation)."""
from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch

from dgml_viz.metrics.localisation import (
    attention_peaks,
    localisation_report,
    match_groups_to_parts,
    part_area_share,
    part_attention_mass,
    pointing_hits,
    uniform_attention,
)


def _random_attention(n: int, k: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, k, h * w, generator=g).mul(2).softmax(-1).view(n, k, h, w)


def _random_masks(n: int, p: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, p, size, size, dtype=torch.bool)
    for i, j in itertools.product(range(n), range(p)):
        y, x = torch.randint(0, size - 6, (2,), generator=g).tolist()
        hh, ww = torch.randint(2, 7, (2,), generator=g).tolist()
        masks[i, j, y:y + hh, x:x + ww] = True
    return masks


def test_mass_equals_loop_over_nearest_upsampled_attention() -> None:
    """Vectorised area-downsampling == explicit loop spreading each cell over its pixels."""
    att = _random_attention(3, 2, 4, 4)
    masks = _random_masks(3, 3, 16)
    mass = part_attention_mass(att, masks)
    up = att.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3) / 16.0  # nearest, mass preserved
    for n, k, p in itertools.product(range(3), range(2), range(3)):
        expected = float(up[n, k][masks[n, p]].sum())
        assert mass[n, k, p].item() == pytest.approx(expected, abs=1e-6)


def test_uniform_attention_scores_the_area_share() -> None:
    masks = _random_masks(4, 3, 16, seed=1)
    mass = part_attention_mass(uniform_attention(4, 3, 4, 4), masks)
    area = part_area_share(masks)
    torch.testing.assert_close(mass, area.unsqueeze(1).expand(4, 3, 3), atol=1e-6, rtol=0)
    report = localisation_report(uniform_attention(4, 3, 4, 4), masks)
    assert report.ratio == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)


def test_attention_on_the_parts_is_found_and_matched() -> None:
    """Group k attends exactly inside part perm[k]: share 1, pointing 1, matched to perm[k]."""
    n, size, h = 5, 32, 8
    masks = torch.zeros(n, 3, size, size, dtype=torch.bool)
    for i in range(n):
        for p in range(3):  # part p covers feature cells (2p, i % 4) exactly
            y, x = 8 * p, 4 * (i % 4)
            masks[i, p, y:y + 4, x:x + 4] = True
    perm = [2, 0, 1]
    cov = torch.nn.functional.interpolate(masks.float(), size=(h, h), mode="area")
    att = cov[:, perm] / cov[:, perm].sum((-2, -1), keepdim=True)
    report = localisation_report(att, masks)
    assert report.matched_part == perm
    assert report.distinct
    assert report.share == pytest.approx([1.0] * 3)
    assert report.pointing == pytest.approx([1.0] * 3)
    area = part_area_share(masks).mean(0)
    assert report.ratio == pytest.approx([1.0 / float(area[p]) for p in perm], rel=1e-5)


def test_matching_is_the_brute_force_optimum_and_permutation_equivariant() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        mass = torch.from_numpy(rng.random((6, 3, 4))).float()
        assign = match_groups_to_parts(mass)
        mean = mass.mean(0)
        best = max(itertools.permutations(range(4), 3), key=lambda ps: sum(float(mean[g, p]) for g, p in enumerate(ps)))
        assert sum(float(mean[g, p]) for g, p in enumerate(assign.tolist())) == pytest.approx(
            sum(float(mean[g, p]) for g, p in enumerate(best)))
        assert len(set(assign.tolist())) == 3
        perm = torch.tensor([1, 2, 0])
        assert match_groups_to_parts(mass[:, perm]).tolist() == assign[perm].tolist()


def test_more_groups_than_parts_leaves_groups_unmatched() -> None:
    mass = torch.rand(4, 4, 2)
    assign = match_groups_to_parts(mass)
    assert sorted(a for a in assign.tolist() if a >= 0) == [0, 1]
    assert assign.tolist().count(-1) == 2
    report = localisation_report(_random_attention(4, 4, 4, 4), _random_masks(4, 2, 16))
    assert not report.distinct
    assert report.pointing.count(0.0) >= 2


def test_peaks_match_opencv_bilinear_upsampling() -> None:
    """Our bilinear upsampling (align_corners=False) peaks where cv2.INTER_LINEAR's does."""
    att = _random_attention(3, 2, 5, 5, seed=3)
    peaks = attention_peaks(att, (40, 40))
    for n, k in itertools.product(range(3), range(2)):
        up = cv2.resize(att[n, k].numpy(), (40, 40), interpolation=cv2.INTER_LINEAR)
        y, x = np.unravel_index(np.argmax(up), up.shape)
        assert up[tuple(peaks[n, k].tolist())] == pytest.approx(up[y, x], rel=1e-5)


def test_pointing_hits_agree_with_a_per_image_loop() -> None:
    att = _random_attention(6, 3, 4, 4, seed=5)
    masks = _random_masks(6, 3, 16, seed=5)
    assign = torch.tensor([1, -1, 0])
    hits = pointing_hits(att, masks, assign)
    for n, k in itertools.product(range(6), range(3)):
        up = torch.nn.functional.interpolate(att[n:n + 1, k:k + 1], size=(16, 16), mode="bilinear",
                                             align_corners=False)[0, 0]
        y, x = divmod(int(up.argmax()), 16)
        expected = assign[k] >= 0 and bool(masks[n, int(assign[k]), y, x])
        assert bool(hits[n, k]) == expected


def test_batched_report_equals_mean_of_per_image_masses() -> None:
    att = _random_attention(5, 3, 4, 4, seed=7)
    masks = _random_masks(5, 3, 16, seed=7)
    per_image = torch.cat([part_attention_mass(att[i:i + 1], masks[i:i + 1]) for i in range(5)])
    torch.testing.assert_close(part_attention_mass(att, masks), per_image)
    report = localisation_report(att, masks)
    torch.testing.assert_close(torch.tensor(report.mass), per_image.mean(0))
    assert report.to_dict()["min_share"] == min(report.share)


def test_inputs_are_not_modified_and_bad_shapes_raise() -> None:
    att = _random_attention(2, 3, 4, 4)
    masks = _random_masks(2, 3, 16)
    att0, masks0 = att.clone(), masks.clone()
    localisation_report(att, masks)
    assert torch.equal(att, att0) and torch.equal(masks, masks0)
    with pytest.raises(ValueError, match="batch sizes differ"):
        part_attention_mass(att, masks[:1])
    with pytest.raises(ValueError, match=r"\[N,K,h,w\]"):
        part_attention_mass(att[0], masks)
