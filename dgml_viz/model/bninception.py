"""BN-Inception (Inception v2 with BatchNorm) feature trunk, in the Cadene key layout.

The reference implementation's BN-Inception network stores its trunk under
``model.<layer>`` with Cadene's layer names (``conv1_7x7_s2``,
``conv1_7x7_s2_bn``, ``inception_3a_1x1``, ``inception_3a_double_3x3_reduce_bn``
...). This module is our own construction of the same graph from a table, with
exactly those parameter names, so such weights load one-to-one. Output: the
concatenated ``inception_5b`` map ``[B, 1024, H/32, W/32]``.

That network was trained on BGR images in ``[0, 255]`` minus the per-channel
means ``(104, 117, 128)`` (B, G, R); the trunk declares that preprocessing as its
``eval_transform`` (``channel_order: BGR``, mean ``m / 255``, std ``1 / 255``, so that
``(x / 255 - mean) / std = x - m``), which converted checkpoints record.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Block(NamedTuple):
    """One inception block: branch widths; ``one`` / ``proj`` = 0 for reduction blocks."""

    name: str
    cin: int
    one: int  # 1x1 branch
    red: int  # 3x3 branch: reduce
    mid: int  # 3x3 branch: out
    dred: int  # double 3x3: reduce
    dmid: int  # double 3x3: both convs
    proj: int  # pool projection (0: pooled input passes through)
    pool: str  # "avg" | "max" (stride 1) | "max2" (stride 2, reduction block)


#: the ten blocks of BN-Inception, in order (input width, branch widths, pooling).
BLOCKS: tuple[_Block, ...] = (
    _Block("3a", 192, 64, 64, 64, 64, 96, 32, "avg"),
    _Block("3b", 256, 64, 64, 96, 64, 96, 64, "avg"),
    _Block("3c", 320, 0, 128, 160, 64, 96, 0, "max2"),
    _Block("4a", 576, 224, 64, 96, 96, 128, 128, "avg"),
    _Block("4b", 576, 192, 96, 128, 96, 128, 128, "avg"),
    _Block("4c", 576, 160, 128, 160, 128, 160, 128, "avg"),
    _Block("4d", 608, 96, 128, 192, 160, 192, 128, "avg"),
    _Block("4e", 608, 0, 128, 192, 192, 256, 0, "max2"),
    _Block("5a", 1056, 352, 192, 320, 160, 224, 128, "avg"),
    _Block("5b", 1024, 352, 192, 320, 192, 224, 128, "max"),
)


class BNInception(nn.Module):
    """BN-Inception trunk ``[B, 3, H, W] -> [B, 1024, h, w]`` with Cadene's parameter names.

    Every conv has a bias and is followed by its ``<name>_bn`` BatchNorm and a
    ReLU. Pools use ``ceil_mode`` like the original; the inception average pool
    counts padding.
    """

    out_channels = 1024
    #: the checkpoint transform of this network's input: BGR, [0, 255] minus (104, 117, 128)
    eval_transform = {"size": 224, "resize": 256, "mean": [104 / 255, 117 / 255, 128 / 255],
                      "std": [1 / 255] * 3, "mode": "center_crop", "channel_order": "BGR"}

    def __init__(self) -> None:
        super().__init__()
        self._unit("conv1_7x7_s2", 3, 64, 7, 2, 3)
        self._unit("conv2_3x3_reduce", 64, 64, 1, 1, 0)
        self._unit("conv2_3x3", 64, 192, 3, 1, 1)
        for b in BLOCKS:
            p = f"inception_{b.name}"
            stride = 2 if b.pool == "max2" else 1
            if b.one:
                self._unit(f"{p}_1x1", b.cin, b.one, 1, 1, 0)
            self._unit(f"{p}_3x3_reduce", b.cin, b.red, 1, 1, 0)
            self._unit(f"{p}_3x3", b.red, b.mid, 3, stride, 1)
            self._unit(f"{p}_double_3x3_reduce", b.cin, b.dred, 1, 1, 0)
            self._unit(f"{p}_double_3x3_1", b.dred, b.dmid, 3, 1, 1)
            self._unit(f"{p}_double_3x3_2", b.dmid, b.dmid, 3, stride, 1)
            if b.proj:
                self._unit(f"{p}_pool_proj", b.cin, b.proj, 1, 1, 0)

    def _unit(self, name: str, cin: int, cout: int, k: int, stride: int, pad: int) -> None:
        self.add_module(name, nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=pad))
        self.add_module(f"{name}_bn", nn.BatchNorm2d(cout))

    def _run(self, name: str, x: Tensor) -> Tensor:
        return F.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)))

    @staticmethod
    def _pool(kind: str, x: Tensor) -> Tensor:
        if kind == "avg":
            return F.avg_pool2d(x, 3, stride=1, padding=1, ceil_mode=True, count_include_pad=True)
        if kind == "max":
            return F.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
        return F.max_pool2d(x, 3, stride=2, ceil_mode=True)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(self._run("conv1_7x7_s2", x), 3, stride=2, ceil_mode=True)
        x = self._run("conv2_3x3", self._run("conv2_3x3_reduce", x))
        x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)
        for b in BLOCKS:
            p = f"inception_{b.name}"
            branches = [self._run(f"{p}_1x1", x)] if b.one else []
            branches.append(self._run(f"{p}_3x3", self._run(f"{p}_3x3_reduce", x)))
            d = self._run(f"{p}_double_3x3_reduce", x)
            branches.append(self._run(f"{p}_double_3x3_2", self._run(f"{p}_double_3x3_1", d)))
            pooled = self._pool(b.pool, x)
            branches.append(self._run(f"{p}_pool_proj", pooled) if b.proj else pooled)
            x = torch.cat(branches, dim=1)
        return x
