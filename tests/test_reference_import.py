"""Import of the reference implementation's checkpoints (DataParallel prefix, foreign pickles)."""
from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from dgml_viz.cli import main
from dgml_viz.model import create_model
from dgml_viz.model.checkpoint import load_checkpoint
from dgml_viz.model.reference import convert_reference_state, read_reference_file

MARKER: dict[str, Path] = {}


class TheirConfig:
    """Stands for the reference code's own config class; running its code leaves a trace."""

    def __init__(self) -> None:
        self.lr = 1e-5
        self.dataset = "cub"

    def __setstate__(self, state):  # executed only if someone unpickles it for real
        MARKER["path"].write_text("config code ran")
        self.__dict__.update(state)


def reference_state(model) -> "OrderedDict[str, torch.Tensor]":
    """Our model's weights in the reference layout (DataParallel-wrapped)."""
    sd = model.state_dict()
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in sd.items():
        if k.startswith("backbone."):
            out["module.model.0." + k[len("backbone."):]] = v.clone()
    out["module.model.1.key_conv.weight"] = sd["head.key.weight"].clone()
    out["module.model.1.val_conv.weight"] = sd["head.value.weight"].clone()
    hidden = sd["head.queries"].shape[1]
    for i, q in enumerate(sd["head.queries"]):
        out[f"module.model.1.que_embedding.{i}.weight"] = q.view(1, hidden, 1, 1).clone()
    out["module.criterion.beta"] = torch.ones(100)
    return out


@pytest.mark.parametrize("backbone,k", [("resnet18", 3), ("resnet50", 4)])
def test_reference_file_imports_with_identical_outputs(tmp_path: Path, backbone: str, k: int) -> None:
    MARKER["path"] = tmp_path / "ran"
    ours = create_model(backbone, groups=k, dim=32 * k, reduction=8).eval()
    ours.train()(torch.randn(2, 3, 64, 64))  # non-trivial BN statistics
    ours.eval()
    src = tmp_path / "ref.pth"
    torch.save({"state_dict": reference_state(ours), "config": TheirConfig(),
                "logger": logging.getLogger("their.train"), "epoch": 42}, src)
    ref = read_reference_file(src)
    assert not MARKER["path"].exists()
    assert any(g.endswith("TheirConfig") for g in ref.skipped_globals)
    assert "logging.getLogger" in ref.skipped_globals
    model, skipped = convert_reference_state(ref.state_dict, str(src))
    assert skipped == ["criterion.beta"]
    assert model.config.backbone == backbone and model.num_groups == k and model.group_dim == 32
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = ours(x), model(x)
    assert torch.equal(a.embedding, b.embedding) and torch.equal(a.attention, b.attention)
    # through the CLI: a normal, safely loadable checkpoint comes out
    dst = tmp_path / "ours.pt"
    assert main(["convert", str(src), str(dst)]) == 0
    with torch.no_grad():
        assert torch.equal(load_checkpoint(dst)(x).embedding, a.embedding)
    assert not MARKER["path"].exists()


def test_reference_file_without_head_is_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "other.pth"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, src)
    assert main(["convert", str(src), str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert "key_conv" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o.pt").exists()
