"""dgml_viz.metrics.bootstrap: degenerate, coverage, determinism, vectorised == loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dgml_viz.metrics.bootstrap import bootstrap_ci, bootstrap_ci_columns, bootstrap_resamples


def test_constant_is_degenerate() -> None:
    ci = bootstrap_ci(torch.full((30,), 0.7))
    assert ci.estimate == pytest.approx(0.7) and ci.low == pytest.approx(0.7) and ci.high == pytest.approx(0.7)


def test_known_distribution_covers_mean_and_width() -> None:
    rng = np.random.default_rng(1)
    covered = 0
    for rep in range(40):
        x = rng.normal(2.0, 1.0, size=200)
        ci = bootstrap_ci(x, num_resamples=500, seed=rep)
        covered += ci.low <= 2.0 <= ci.high
        # width ~ 2 * 1.96 / sqrt(200) = 0.277
        assert 0.18 < ci.high - ci.low < 0.38
    assert covered >= 34  # nominal 95 %: 38/40 expected


def test_seeded_and_resamples_match_loop() -> None:
    x = torch.randn(25)
    a = bootstrap_ci(x, seed=3)
    b = bootstrap_ci(x, seed=3)
    assert a == b
    stats = bootstrap_resamples(x, num_resamples=50, seed=3)
    gen = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 25, (50, 25), generator=gen)
    loop = torch.stack([x.double()[idx[i]].mean() for i in range(50)])
    assert torch.allclose(stats, loop)


def test_columns_equal_single() -> None:
    x = torch.randn(40, 3)
    cols = bootstrap_ci_columns(x, num_resamples=200, seed=5)
    for c in range(3):
        single = bootstrap_ci(x[:, c], num_resamples=200, seed=5)
        assert cols[c].estimate == pytest.approx(single.estimate)
        assert cols[c].low == pytest.approx(single.low) and cols[c].high == pytest.approx(single.high)


def test_nan_ignored_and_errors() -> None:
    ci = bootstrap_ci([1.0, float("nan"), 1.0, 1.0])
    assert ci.estimate == 1.0 and ci.low == 1.0
    with pytest.raises(ValueError):
        bootstrap_ci([])
