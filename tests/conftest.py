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


@pytest.fixture(scope="module")
def photo_crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """37 real-photo inputs written the way Pillow writes them: crops of scikit-image photos (astronaut, chelsea,
    coffee; odd sizes 40-89 px) as PNG and JPEG in four subfolders c0..c3, and one corrupt JPEG."""
    import numpy as np
    import skimage.data
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    srcs = [np.ascontiguousarray(getattr(skimage.data, k)()[..., :3]) for k in ("astronaut", "chelsea", "coffee")]
    for i in range(36):
        src = srcs[i % 3]
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        y, x = int(rng.integers(0, src.shape[0] - h)), int(rng.integers(0, src.shape[1] - w))
        img = Image.fromarray(np.ascontiguousarray(src[y:y + h, x:x + w]))
        sub = root / f"c{i % 4}"
        sub.mkdir(exist_ok=True)
        img.save(sub / f"p{i:02d}.jpg", quality=88) if i % 2 else img.save(sub / f"p{i:02d}.png")
    (root / "c1" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root
