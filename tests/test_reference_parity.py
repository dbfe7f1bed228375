"""Converted reference checkpoints compute what the reference networks compute.

For ResNet-50 and GoogLeNet x the six group layers, a file is written the way
the reference saves it (``test_reference_support``), converted through the CLI,
reloaded, and its ``groups`` / ``embedding`` - and attention, masks or channel
weights where the layer has them - compared with the independent loop
implementation to 1e-4, with non-trivial BatchNorm statistics.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_reference_support import (TRACE, RefNet, make_backbone, make_layer, reference_eval_vector,
                                    write_reference_file)

from dgml_viz.cli import main
from dgml_viz.model.checkpoint import load_checkpoint, read_checkpoint_info
from dgml_viz.model.reference import import_reference_checkpoint

LAYERS = ["LearnQ_fen", "LearnQ_he", "MulLinear", "LinearEmb", "Gate", "Channel"]
ARCHS = ["resnet50_frozen_normalize", "googlenet"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def trunks() -> dict[str, tuple[torch.nn.Module, int]]:
    return {arch: make_backbone(arch) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("layer", LAYERS)
def test_converted_model_matches_reference_forward(tmp_path: Path, trunks, arch: str, layer: str) -> None:
    TRACE["path"] = tmp_path / "code_ran"
    torch.manual_seed(LAYERS.index(layer))
    trunk, c = trunks[arch]
    k, full, r = 3, 48, 8
    net = RefNet(trunk, make_layer(layer, c, k, full, r), arch).eval()
    opt = {"arch": arch, "group_name": layer, "k": k, "full_dim": full, "reduction": r, "dim": full // k,
           "dataset": "cub200", "n_epochs": 100, "epoch": 3, "best_epoch": 2, "device": "cuda"}
    src = write_reference_file(tmp_path / "checkpoint_Test_discriminative_e_recall@1.pth.tar", net, opt)
    dst = tmp_path / "ours.pt"
    if layer == "LearnQ_fen":  # the whole CLI round trip once per backbone (100 MB files are slow on CPU)
        assert main(["convert", str(src), str(dst)]) == 0
        model = load_checkpoint(dst)
        meta = read_checkpoint_info(dst)["meta"]
    else:
        model, _ = import_reference_checkpoint(src)
        meta = model.meta
    assert not TRACE["path"].exists()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref_out, ref_aux = net(x)
        ours = model(x)
        feats = model.features(x)
    ref_eval = reference_eval_vector(ref_out)
    if layer == "LinearEmb":
        assert ours.groups.shape == (2, 1, full)
        torch.testing.assert_close(ours.embedding, ref_eval, atol=ATOL, rtol=0)
    else:
        assert ours.groups.shape == (2, k, full // k)
        torch.testing.assert_close(ours.groups, F.normalize(ref_out, dim=-1), atol=ATOL, rtol=0)
        # their evaluation vector has norm sqrt(K); ours is the same vector renormalised
        torch.testing.assert_close(ref_eval.norm(dim=-1), torch.full((2,), math.sqrt(k)), atol=1e-5, rtol=0)
        torch.testing.assert_close(ours.embedding, ref_eval / math.sqrt(k), atol=ATOL, rtol=0)
    if layer.startswith("LearnQ"):
        torch.testing.assert_close(ours.attention, ref_aux, atol=ATOL, rtol=0)
    elif layer == "Gate":
        assert ours.attention is None
        torch.testing.assert_close(model.head.masks(feats), ref_aux, atol=ATOL, rtol=0)
    elif layer == "Channel":
        torch.testing.assert_close(model.head.channel_weights(feats), ref_aux, atol=ATOL, rtol=0)
    cfg = model.config
    assert cfg.freeze_bn == ("frozen" in arch)
    assert meta["reference_group_layer"] == layer and meta["reference_arch"] == arch
    import hashlib

    assert meta["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
