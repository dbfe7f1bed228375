"""Class-balanced batch sampler: ``n`` classes x ``m`` images per batch, DDP-aware.

One epoch is planned identically on every rank from ``seed + epoch``:

1. each class's indices are shuffled and cut into chunks of ``m`` (a class with
   fewer than ``m`` images gives one chunk padded by re-drawing its own images;
   otherwise the remainder is dropped), so no image appears in two chunks;
2. batches take one chunk from each of ``n`` distinct classes, classes drawn
   without replacement with probability proportional to their remaining chunks;
3. batch ``j`` goes to rank ``j % world_size``; every rank gets the same number.

Hence ranks get disjoint batches (no image shared, except the padding of
classes smaller than ``m``), and the plan is reproducible: call
:meth:`set_epoch` before each epoch, like ``DistributedSampler``. With
``num_batches`` the plan is extended with further shuffled passes (or cut) to
give exactly that many batches per rank (for ``steps_per_epoch``).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from dgml_viz.errors import ConfigError


class ClassBalancedBatchSampler(Sampler[list[int]]):
    """Yields lists of ``m * n`` dataset indices (``m`` per class, ``n`` classes).

    Args:
        labels: class label of every dataset item.
        batch_classes: n, classes per batch.
        batch_per_class: m, images per class.
        seed: base seed; epoch ``e`` uses ``seed + e``.
        rank, world_size: this process's share under distributed training.
        num_batches: batches per rank and epoch (default: what one pass gives).

    Example:
        >>> s = ClassBalancedBatchSampler([0, 0, 1, 1, 2, 2], batch_classes=2, batch_per_class=2)
        >>> [len(b) for b in s]
        [4]
    """

    def __init__(self, labels: Sequence[int], batch_classes: int, batch_per_class: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1, num_batches: int | None = None) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n, self.m = int(batch_classes), int(batch_per_class)
        if self.n < 1 or self.m < 1:
            raise ConfigError(f"batch_classes and batch_per_class must be >= 1, got {self.n}, {self.m}")
        classes, inverse = np.unique(self.labels, return_inverse=True)
        self.classes = classes
        self.by_class = [np.nonzero(inverse == i)[0] for i in range(len(classes))]
        if len(classes) < self.n:
            raise ConfigError(f"batch_classes={self.n} but the training split has only {len(classes)} classes")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)
        self.num_batches = num_batches
        self.epoch = 0
        self._cache: tuple[int, list[np.ndarray]] | None = None
        per_pass = self._one_pass(np.random.default_rng(self.seed))
        if num_batches is None and len(per_pass) < self.world_size:
            raise ConfigError(f"{len(self.labels)} training images give {len(per_pass)} class-balanced "
                              f"batches, fewer than {self.world_size} rank(s); lower the batch size")

    @property
    def batch_size(self) -> int:
        return self.n * self.m

    def set_epoch(self, epoch: int) -> None:
        """Select the plan of ``epoch`` (deterministic in ``seed + epoch``)."""
        self.epoch = int(epoch)

    def _one_pass(self, rng: np.random.Generator) -> list[np.ndarray]:
        chunks: list[list[np.ndarray]] = []
        for idx in self.by_class:
            perm = rng.permutation(idx)
            if len(perm) < self.m:
                perm = np.concatenate([perm, rng.choice(idx, self.m - len(perm), replace=True)])
            k = len(perm) // self.m
            chunks.append([perm[i * self.m:(i + 1) * self.m] for i in range(k)])
        remaining = np.array([len(c) for c in chunks], dtype=np.float64)
        batches: list[np.ndarray] = []
        while np.count_nonzero(remaining) >= self.n:
            picked = rng.choice(len(chunks), size=self.n, replace=False, p=remaining / remaining.sum())
            batches.append(np.concatenate([chunks[c][int(remaining[c]) - 1] for c in picked]))
            remaining[picked] -= 1
        return batches

    def _plan(self) -> list[np.ndarray]:
        if self._cache is not None and self._cache[0] == self.epoch:
            return self._cache[1]
        rng = np.random.default_rng(self.seed + self.epoch)
        batches = self._one_pass(rng)
        if self.num_batches is not None:
            need = self.num_batches * self.world_size
            while len(batches) < need:
                batches += self._one_pass(rng)
            batches = batches[:need]
        per_rank = len(batches) // self.world_size
        plan = batches[self.rank::self.world_size][:per_rank]
        self._cache = (self.epoch, plan)
        return plan

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._plan():
            yield [int(i) for i in b]

    def __len__(self) -> int:
        return len(self._plan())


__all__ = ["ClassBalancedBatchSampler"]
