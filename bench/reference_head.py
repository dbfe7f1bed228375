"""The reference implementation's head, for benchmarks: K one-channel query convs in a Python loop.

Shared by ``bench/head.py`` and ``bench/train_step.py`` (scripts in this folder import it by
name; ``python bench/<script>.py`` puts the folder on ``sys.path``). The tests keep their own
loop version on purpose: a test's reference must not share code with what it checks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LoopHead(nn.Module):
    """Reference style: key/value 1x1 convs, then K one-channel 1x1 query convs in a Python loop."""

    def __init__(self, c: int, k: int, dim: int, r: int) -> None:
        super().__init__()
        self.key_conv = nn.Conv2d(c, c // r, 1, bias=False)
        self.val_conv = nn.Conv2d(c, dim // k, 1, bias=False)
        self.que = nn.ModuleList(nn.Conv2d(c // r, 1, 1, bias=False) for _ in range(k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w] -> [B, K, d]`` L2-normalised group embeddings."""
        keys, values = self.key_conv(x), self.val_conv(x).flatten(2)
        outs = []
        for conv in self.que:
            att = conv(keys).flatten(2).softmax(-1)
            outs.append(F.normalize((values * att).sum(-1), dim=-1))
        return torch.stack(outs, 1)
