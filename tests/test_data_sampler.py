"""Class-balanced sampler: m per class, n classes, disjoint across ranks, deterministic per epoch."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from dgml_viz.data.sampler import ClassBalancedBatchSampler
from dgml_viz.errors import ConfigError


def _labels(seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 12, size=40)  # some classes smaller than m
    return [c for c, s in enumerate(sizes) for _ in range(s)]


@pytest.mark.parametrize("n,m", [(4, 2), (5, 3), (8, 4)])
def test_each_batch_has_m_per_class_and_n_classes(n: int, m: int) -> None:
    labels = np.array(_labels())
    s = ClassBalancedBatchSampler(labels, batch_classes=n, batch_per_class=m, seed=1)
    batches = list(s)
    assert len(batches) == len(s) > 3
    for b in batches:
        counts = Counter(labels[b].tolist())
        assert len(counts) == n and set(counts.values()) == {m}


def test_no_image_repeats_within_an_epoch_except_small_class_padding() -> None:
    labels = np.array(_labels())
    small = {c for c, k in Counter(labels.tolist()).items() if k < 3}
    s = ClassBalancedBatchSampler(labels, 4, 3, seed=0)
    used = Counter(i for b in s for i in b)
    assert all(v == 1 for i, v in used.items() if labels[i] not in small)


def test_ranks_get_disjoint_equal_batches_covering_the_single_process_plan() -> None:
    labels = _labels(1)
    single = list(ClassBalancedBatchSampler(labels, 4, 2, seed=7))
    ranks = [list(ClassBalancedBatchSampler(labels, 4, 2, seed=7, rank=r, world_size=3)) for r in range(3)]
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == len(single) // 3
    # same global plan, interleaved
    for r in range(3):
        assert ranks[r] == single[r::3][: len(ranks[0])]
    seen = [set(i for b in r for i in b) for r in ranks]
    big = {i for i, lab in enumerate(labels) if labels.count(lab) >= 2}
    assert not (seen[0] & seen[1] & big) and not (seen[0] & seen[2] & big) and not (seen[1] & seen[2] & big)


def test_set_epoch_is_deterministic_and_changes_the_plan() -> None:
    labels = _labels()
    a = ClassBalancedBatchSampler(labels, 4, 2, seed=3)
    b = ClassBalancedBatchSampler(labels, 4, 2, seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b)
    b.set_epoch(6)
    assert list(a) != list(b)


def test_num_batches_extends_or_cuts_the_plan() -> None:
    labels = [0, 0, 1, 1, 2, 2]
    s = ClassBalancedBatchSampler(labels, 2, 2, num_batches=7, world_size=2, rank=1)
    batches = list(s)
    assert len(batches) == len(s) == 7
    assert all(len(b) == 4 for b in batches)


def test_too_few_classes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="only 2 classes"):
        ClassBalancedBatchSampler([0, 0, 1, 1], batch_classes=3, batch_per_class=2)
