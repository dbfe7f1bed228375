"""BN-Inception reference checkpoints (``architectures/bninception.py``): a plain embedding network.

The test's own BN-Inception is written as explicit modules per Cadene layer name
(conv + ``_bn`` + ReLU, pooling modules, concatenation in Cadene's branch order),
independently of ``dgml_viz.model.bninception``'s table; the reference
``Network`` embeds ``last_linear(avgpool(features) [+ maxpool])`` and
normalises it.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_reference_support import TRACE, randomise_norms, write_reference_file
from torch import Tensor, nn

from dgml_viz.cli import main
from dgml_viz.model.checkpoint import load_checkpoint

# Cadene's inception blocks: name -> (in, 1x1, 3x3 reduce, 3x3, double reduce, double, pool proj); 0 = absent
CADENE = {
    "3a": (192, 64, 64, 64, 64, 96, 32), "3b": (256, 64, 64, 96, 64, 96, 64), "3c": (320, 0, 128, 160, 64, 96, 0),
    "4a": (576, 224, 64, 96, 96, 128, 128), "4b": (576, 192, 96, 128, 96, 128, 128),
    "4c": (576, 160, 128, 160, 128, 160, 128), "4d": (608, 96, 128, 192, 160, 192, 128),
    "4e": (608, 0, 128, 192, 192, 256, 0), "5a": (1056, 352, 192, 320, 160, 224, 128),
    "5b": (1024, 352, 192, 320, 192, 224, 128),
}


class CadeneBNInception(nn.Module):
    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.conv1_7x7_s2 = nn.Conv2d(3, 64, (7, 7), (2, 2), (3, 3))
        self.conv1_7x7_s2_bn = nn.BatchNorm2d(64)
        self.pool1_3x3_s2 = nn.MaxPool2d((3, 3), (2, 2), ceil_mode=True)
        self.conv2_3x3_reduce = nn.Conv2d(64, 64, (1, 1))
        self.conv2_3x3_reduce_bn = nn.BatchNorm2d(64)
        self.conv2_3x3 = nn.Conv2d(64, 192, (3, 3), padding=(1, 1))
        self.conv2_3x3_bn = nn.BatchNorm2d(192)
        self.pool2_3x3_s2 = nn.MaxPool2d((3, 3), (2, 2), ceil_mode=True)
        for name, (cin, one, red, mid, dred, dmid, proj) in CADENE.items():
            s = 2 if one == 0 else 1
            p = f"inception_{name}"
            if one:
                self._conv(f"{p}_1x1", cin, one, 1, 1, 0)
            self._conv(f"{p}_3x3_reduce", cin, red, 1, 1, 0)
            self._conv(f"{p}_3x3", red, mid, 3, s, 1)
            self._conv(f"{p}_double_3x3_reduce", cin, dred, 1, 1, 0)
            self._conv(f"{p}_double_3x3_1", dred, dmid, 3, 1, 1)
            self._conv(f"{p}_double_3x3_2", dmid, dmid, 3, s, 1)
            if one == 0:
                pool = nn.MaxPool2d((3, 3), (2, 2), ceil_mode=True)
            elif name == "5b":
                pool = nn.MaxPool2d((3, 3), (1, 1), (1, 1), ceil_mode=True)
            else:
                pool = nn.AvgPool2d(3, 1, 1, ceil_mode=True, count_include_pad=True)
            setattr(self, f"{p}_pool", pool)
            if proj:
                self._conv(f"{p}_pool_proj", cin, proj, 1, 1, 0)
        self.last_linear = nn.Linear(1024, embed_dim)

    def _conv(self, name: str, cin: int, cout: int, k: int, s: int, p: int) -> None:
        setattr(self, name, nn.Conv2d(cin, cout, (k, k), (s, s), (p, p)))
        setattr(self, f"{name}_bn", nn.BatchNorm2d(cout))

    def _cbr(self, name: str, x: Tensor) -> Tensor:
        return torch.relu(getattr(self, f"{name}_bn")(getattr(self, name)(x)))

    def features(self, x: Tensor) -> Tensor:
        x = self.pool1_3x3_s2(self._cbr("conv1_7x7_s2", x))
        x = self.pool2_3x3_s2(self._cbr("conv2_3x3", self._cbr("conv2_3x3_reduce", x)))
        for name, (_, one, _, _, _, _, proj) in CADENE.items():
            p = f"inception_{name}"
            a = self._cbr(f"{p}_3x3", self._cbr(f"{p}_3x3_reduce", x))
            b = self._cbr(f"{p}_double_3x3_reduce", x)
            b = self._cbr(f"{p}_double_3x3_2", self._cbr(f"{p}_double_3x3_1", b))
            pooled = getattr(self, f"{p}_pool")(x)
            if one:
                x = torch.cat([self._cbr(f"{p}_1x1", x), a, b, self._cbr(f"{p}_pool_proj", pooled)], 1)
            else:
                x = torch.cat([a, b, pooled], 1)
        return x


class BNInceptionNetwork(nn.Module):
    """The reference ``Network``: ``self.model`` is the BN-Inception, embedded by its ``last_linear``."""

    def __init__(self, arch: str, embed_dim: int) -> None:
        super().__init__()
        self.name = arch
        self.model = CadeneBNInception(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        feats = self.model.features(x)
        y = F.adaptive_avg_pool2d(feats, 1)
        if "double" in self.name:
            y = y + F.adaptive_max_pool2d(feats, 1)
        z = self.model.last_linear(y.view(len(x), -1))
        if "normalize" in self.name:
            z = F.normalize(z, dim=-1)
        return z, feats


@pytest.mark.parametrize("arch", ["bninception_frozen_normalize", "bninception_double_normalize"])
def test_bninception_checkpoint_converts_with_parity(tmp_path: Path, arch: str) -> None:
    TRACE["path"] = tmp_path / "code_ran"
    torch.manual_seed(0)
    net = BNInceptionNetwork(arch, embed_dim=32).eval()
    randomise_norms(net)
    opt = {"arch": arch, "embed_dim": 32, "group_name": "LearnQ_fen", "k": 3, "dataset": "cub200"}
    src = write_reference_file(tmp_path / "checkpoint.pth.tar", net, opt, legacy=True, cuda=True)
    dst = tmp_path / "ours.pt"
    assert main(["convert", str(src), str(dst)]) == 0
    assert not TRACE["path"].exists()
    model = load_checkpoint(dst)
    assert model.config.backbone == "bninception" and model.config.freeze_bn == ("frozen" in arch)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        z, feats = net(x)
        ours = model(x)
        torch.testing.assert_close(model.features(x), feats, atol=1e-4, rtol=1e-4)
    assert ours.groups.shape == (2, 1, 32)
    torch.testing.assert_close(ours.embedding, F.normalize(z, dim=-1), atol=1e-4, rtol=0)
