"""Shared test setup: deterministic, quiet, 2 threads."""
from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

#: Eval transform of the small test checkpoints: resize 110 + 96 px center crop.
CROP_TRANSFORM = {"size": 96, "resize": 110, "mean": [0.5] * 3, "std": [0.25] * 3, "mode": "center_crop"}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained attentive checkpoint (small_cnn, K=3, d=48) with :data:`CROP_TRANSFORM`."""
    from dgml_viz.model import create_model
    from dgml_viz.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(create_model("small_cnn", groups=3, dim=48), path, transform=CROP_TRANSFORM)
    return path
