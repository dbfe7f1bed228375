"""Percentile bootstrap confidence intervals (seeded, vectorised resampling).

All ``B`` resamples are drawn as one ``[B, N]`` index tensor from a seeded
``torch.Generator`` and the statistic is evaluated on the ``[B, N, ...]`` batch
at once, so a 1,000-resample CI of 1,000 values is a single gather + reduce.

Example:
    >>> ci = bootstrap_ci(torch.ones(50))
    >>> (ci.estimate, ci.low, ci.high)
    (1.0, 1.0, 1.0)
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CI:
    """A point estimate with a percentile bootstrap interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    num_samples: int
    num_resamples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(x: Tensor) -> Tensor:
    """Mean over dim 1 of ``[B, N, ...]``, ignoring NaNs (``nan`` if all are NaN)."""
    return x.nanmean(dim=1)


def bootstrap_resamples(values: Tensor | np.ndarray, statistic: Callable[[Tensor], Tensor] = _mean,
                        num_resamples: int = 1000, seed: int = 0) -> Tensor:
    """Statistic of ``num_resamples`` resamples (with replacement) of the rows of ``values``.

    Args:
        values: ``[N, ...]`` per-sample values (rows are resampled together).
        statistic: maps ``[B, N, ...]`` to ``[B, ...]`` (default: NaN-ignoring mean over N).
        num_resamples: B.
        seed: generator seed (same seed, same resamples).

    Returns:
        ``[B, ...]``.
    """
    v = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values).double()
    n = v.shape[0]
    if n == 0:
        raise ValueError("cannot bootstrap zero samples")
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, n, (int(num_resamples), n), generator=gen)
    return statistic(v[idx])


def bootstrap_ci(values: Tensor | np.ndarray | list[float], statistic: Callable[[Tensor], Tensor] = _mean,
                 num_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> CI:
    """Percentile bootstrap CI of a scalar statistic.

    Args:
        values: ``[N]`` (or ``[N, ...]`` if ``statistic`` reduces the rest) per-sample values.
        statistic: ``[B, N, ...] -> [B]``; default NaN-ignoring mean.
        num_resamples: number of resamples B.
        confidence: e.g. 0.95 for the 2.5 / 97.5 percentiles.
        seed: resampling seed.

    Returns:
        :class:`CI` whose ``estimate`` is the statistic on the original sample.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    v = torch.as_tensor(np.asarray(values, dtype=np.float64) if not isinstance(values, Tensor) else values).double()
    stats = bootstrap_resamples(v, statistic, num_resamples, seed).reshape(int(num_resamples))
    est = float(statistic(v[None]).reshape(()))
    alpha = (1.0 - confidence) / 2.0
    finite = stats[~stats.isnan()]
    if len(finite) == 0:
        low = high = float("nan")
    else:
        q = torch.quantile(finite, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64))
        low, high = float(q[0]), float(q[1])
    return CI(est, low, high, confidence, int(v.shape[0]), int(num_resamples))


def bootstrap_ci_columns(values: Tensor | np.ndarray, num_resamples: int = 1000, confidence: float = 0.95,
                         seed: int = 0) -> list[CI]:
    """Mean CI of every column of ``[N, C]`` values with shared resamples (one gather for all C)."""
    v = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values).double()
    if v.dim() != 2:
        raise ValueError(f"need [N, C] values, got {tuple(v.shape)}")
    stats = bootstrap_resamples(v, _mean, num_resamples, seed)  # [B, C]
    est = v.nanmean(dim=0)
    alpha = (1.0 - confidence) / 2.0
    q = torch.nanquantile(stats, torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64), dim=0)  # [2, C]
    return [CI(float(est[c]), float(q[0, c]), float(q[1, c]), confidence, int(v.shape[0]), int(num_resamples))
            for c in range(v.shape[1])]


__all__ = ["CI", "bootstrap_resamples", "bootstrap_ci", "bootstrap_ci_columns"]
