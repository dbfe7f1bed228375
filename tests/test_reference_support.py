"""Reference-implementation files as XinyiXuXD/DGML-master writes them, built by test code only.

* ``RefNet``: an independent re-implementation of the reference networks from
  their formulation (per-query / per-group Python loops, the reference's module
  names), on a torchvision backbone cut the way the reference cuts it.
* ``write_reference_file``: ``torch.save({'state_dict', 'opt', 'progress',
  'aux'})`` of an ``nn.DataParallel`` state dict, with ``opt`` a yacs-like
  ``CfgNode`` (or ``argparse.Namespace``) and ``Progress_Saver`` objects holding
  numpy scalars, all defined in a throw-away module that is removed from
  ``sys.modules`` before anyone loads the file. Optional legacy (non-zip)
  serialisation and ``cuda:0`` storage location tags.

The classes' ``__setstate__`` leaves a trace file, so a test can prove that no
pickled code ran while loading.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import types
import uuid
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

TRACE: dict[str, Path] = {}

_CLASSES = '''
class CfgNode(dict):
    """yacs-like: a dict whose bookkeeping lives in instance attributes."""
    def __init__(self, init_dict=None):
        super().__init__(init_dict or {})
        super().__setattr__("__immutable__", False)
        super().__setattr__("__deprecated_keys__", set())
        super().__setattr__("__renamed_keys__", {})
        super().__setattr__("__new_allowed__", False)
    def __getattr__(self, name):
        if name in self:
            return self[name]
        raise AttributeError(name)
    def __setattr__(self, name, value):
        self[name] = value
    def __setstate__(self, state):
        _trace("CfgNode.__setstate__ ran")

class Progress_Saver:
    def __init__(self):
        self.groups = {}
    def log(self, segment, content, group=None):
        group = segment if group is None else group
        self.groups.setdefault(group, {}).setdefault(segment, {"content": [], "saved_idx": 0})
        self.groups[group][segment]["content"].append(content)
    def __setstate__(self, state):
        _trace("Progress_Saver.__setstate__ ran")
'''


def _trace(msg: str) -> None:
    if "path" in TRACE:
        TRACE["path"].write_text(msg)


@contextlib.contextmanager
def throwaway_module(name: str | None = None) -> Iterator[types.ModuleType]:
    """A module holding ``CfgNode`` and ``Progress_Saver``, importable only inside the block."""
    name = name or f"throwaway_ref_{uuid.uuid4().hex[:8]}"
    parts = name.split(".")
    created = []
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
            created.append(sub)
        if i > 1:
            setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], sys.modules[sub])
    mod = sys.modules[name]
    mod.__dict__["_trace"] = _trace
    exec(compile(_CLASSES, f"<{name}>", "exec"), mod.__dict__)
    for cls in (mod.CfgNode, mod.Progress_Saver):
        cls.__module__ = name
    try:
        yield mod
    finally:
        for sub in reversed(created):
            del sys.modules[sub]


_CUDA_TAGS = {"on": False}


def _cuda_tagger(storage: Any) -> str | None:
    return "cuda:0" if _CUDA_TAGS["on"] and storage.device.type == "cpu" else None


# registered once (torch keeps a sorted list; equal priorities would compare functions)
torch.serialization.register_package(1, _cuda_tagger, lambda storage, location: None)


@contextlib.contextmanager
def cuda_location_tags() -> Iterator[None]:
    """While active, torch.save tags every CPU storage ``cuda:0`` (as on the reference's GPU machines)."""
    _CUDA_TAGS["on"] = True
    try:
        yield
    finally:
        _CUDA_TAGS["on"] = False


def write_reference_file(path: Path, net: nn.Module, opt: dict[str, Any], *, opt_kind: str = "cfgnode",
                         module_name: str | None = None, legacy: bool = False, cuda: bool = False,
                         epochs: int = 3) -> Path:
    """Save ``net`` (wrapped in DataParallel) the way ``evaluation.set_checkpoint`` does."""
    wrapped = nn.DataParallel(net)
    with throwaway_module(module_name) as mod:
        if opt_kind == "cfgnode":
            cfg = mod.CfgNode()
            for k, v in opt.items():
                setattr(cfg, k, v)
        else:
            cfg = argparse.Namespace(**opt)
        train, test = mod.Progress_Saver(), mod.Progress_Saver()
        rng = np.random.default_rng(0)
        for e in range(1, epochs + 1):
            train.log("epochs", e, group="Train")
            train.log("loss", np.float64(1.0 / e), group="Train")
            test.log("e_recall@1", np.float64(0.5 + 0.1 * rng.random()), group="discriminative_e_recall")
            test.log("nmi", np.float32(0.6), group="discriminative_nmi")
        payload = {"state_dict": wrapped.state_dict(), "opt": cfg,
                   "progress": {"Train": train, "Test": test}, "aux": None}
        ctx = cuda_location_tags() if cuda else contextlib.nullcontext()
        with ctx:
            torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


# --------------------------------------------------------------------------- reference networks
class LearnQ(nn.Module):
    """``LearnQ_fen`` (``he=False``) / ``LearnQ_he``: one 1-channel conv per query, looped."""

    def __init__(self, c: int, k: int, d: int, r: int, he: bool) -> None:
        super().__init__()
        self.k = k
        self.key_conv = nn.Conv2d(c, c // r, 1, bias=False)
        self.val_conv = nn.Conv2d(c, d, 1, bias=False)
        self.que_embedding = nn.ModuleList(nn.Conv2d(c // r, 1, 1, bias=False) for _ in range(k))
        if he:
            self.ph = nn.Linear(d, d, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        n, _, h, w = x.shape
        key, value = self.key_conv(x), self.val_conv(x)
        outs, atts = [], []
        for i in range(self.k):
            a = F.softmax(self.que_embedding[i](key).reshape(n, 1, h * w), dim=-1)
            o = torch.matmul(a, value.reshape(n, -1, h * w).permute(0, 2, 1))
            if hasattr(self, "ph"):
                o = self.ph(o)
            outs.append(o)
            atts.append(a.reshape(n, 1, h, w))
        return torch.cat(outs, 1), torch.cat(atts, 1)


class MulLinear(nn.Module):
    def __init__(self, c: int, k: int, d: int, r: int) -> None:
        super().__init__()
        self.k, self.d = k, d
        self.mul_linear = nn.Linear(c, k * d, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        e = self.mul_linear(F.adaptive_avg_pool2d(x, 1).flatten(1)).view(-1, self.k, self.d)
        return e, e.detach()


class LinearEmb(nn.Module):
    def __init__(self, c: int, k: int, d: int, r: int, full: int) -> None:
        super().__init__()
        self.linear_emb = nn.Linear(c, full, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_emb(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Gate(nn.Module):
    def __init__(self, c: int, k: int, d: int, r: int) -> None:
        super().__init__()
        self.k, self.d = k, d
        self.linear = nn.Linear(c, d, bias=False)
        self.share_conv = nn.Conv2d(c, c // r, 1)
        self.indep_cov = nn.ModuleList(nn.Conv2d(c // r, c, 1) for _ in range(k))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        inter = self.share_conv(x)
        embs, masks = [], []
        for i in range(self.k):
            m = self.indep_cov[i](inter)
            embs.append(self.linear(F.adaptive_avg_pool2d(x * m, 1).flatten(1)))
            masks.append(m.unsqueeze(1))
        return torch.cat(embs, 1).view(-1, self.k, self.d), torch.cat(masks, 1)


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, c // 5, bias=False), nn.ReLU(), nn.Linear(c // 5, c, bias=False),
                                nn.Sigmoid())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return x * w[:, :, None, None], w


class Channel(nn.Module):
    def __init__(self, c: int, k: int, d: int, r: int) -> None:
        super().__init__()
        self.k, self.d = k, d
        self.SE_ops = nn.ModuleList(SE(c) for _ in range(k))
        self.linear = nn.Linear(c, d, bias=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        embs, ws = [], []
        for i in range(self.k):
            y, w = self.SE_ops[i](x)
            embs.append(self.linear(F.adaptive_avg_pool2d(y, 1).flatten(1)))
            ws.append(w.unsqueeze(1))
        return torch.cat(embs, 1).view(-1, self.k, self.d), torch.cat(ws, 1)


def make_layer(name: str, c: int, k: int, full: int, r: int) -> nn.Module:
    d = full // k
    return {"LearnQ_fen": lambda: LearnQ(c, k, d, r, he=False), "LearnQ_he": lambda: LearnQ(c, k, d, r, he=True),
            "MulLinear": lambda: MulLinear(c, k, d, r), "LinearEmb": lambda: LinearEmb(c, k, d, r, full),
            "Gate": lambda: Gate(c, k, d, r), "Channel": lambda: Channel(c, k, d, r)}[name]()


def make_backbone(arch: str) -> tuple[nn.Module, int]:
    """torchvision network, randomly initialised, cut the reference's way; BN stats made non-trivial."""
    import torchvision.models as tvm

    if "resnet50" in arch:
        net = tvm.resnet50(weights=None)
        net.last_linear = net.fc  # Cadene's name for the classifier
        del net.fc
        trunk, c = nn.Sequential(*list(net.children())[:-2]), 2048
    else:
        net = tvm.googlenet(weights=None, aux_logits=False, init_weights=False)
        trunk, c = nn.Sequential(*list(net.children())[:-3]), 1024
    randomise_norms(trunk)
    return trunk, c


def randomise_norms(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + torch.rand(n, generator=g))
            m.weight.data.copy_(0.8 + 0.4 * torch.rand(n, generator=g))
            m.bias.data.copy_(0.05 * torch.randn(n, generator=g))
            m.num_batches_tracked.fill_(7)


class RefNet(nn.Module):
    """The reference ``Network``: ``model = Sequential(backbone, group layer)``."""

    def __init__(self, trunk: nn.Module, layer: nn.Module, arch: str) -> None:
        super().__init__()
        self.arch = arch
        self.model = nn.Sequential(trunk, layer)

    def forward(self, x: Tensor) -> tuple[Tensor, Any]:
        out = self.model(x)
        aux = None
        if isinstance(out, tuple):
            out, aux = out
        if "normalize" in self.arch:
            out = F.normalize(out, dim=-1)
        return out, aux


def reference_eval_vector(out: Tensor) -> Tensor:
    """The reference's evaluation features: normalise the last dim, then flatten (norm sqrt(K))."""
    out = F.normalize(out, p=2, dim=-1)
    return out.view(out.shape[0], -1)


def test_throwaway_module_is_gone_after_saving(tmp_path: Path) -> None:
    """The files these helpers write cannot be unpickled normally: their classes' module no longer exists."""
    trunk, c = make_backbone("googlenet")
    net = RefNet(trunk, make_layer("MulLinear", c, 3, 48, 8), "googlenet")
    path = write_reference_file(tmp_path / "f.pth.tar", net, {"arch": "googlenet", "k": 3}, cuda=True)
    with pytest.raises((ModuleNotFoundError, AttributeError, RuntimeError)):
        torch.load(path, map_location="cpu", weights_only=False)
    assert b"cuda:0" in path.read_bytes()
