"""Training: recipes (``config``), losses, the loop and distributed helpers.

    from dgml_viz.train import load_config, train
    cfg = load_config("cub200", ["data.root=/data/CUB_200_2011", "train.epochs=2"])
    result = train(cfg, "runs/cub-try")   # {"metrics", "best_ckpt", "last_ckpt", ...}
"""
from __future__ import annotations

from typing import Any

from dgml_viz.train.config import DEFAULTS, list_recipes, load_config


def train(config: dict[str, Any], run_dir: Any, resume: bool = False, **kwargs: Any) -> dict[str, Any]:
    """See :func:`dgml_viz.train.loop.train` (imported lazily: it pulls in torch and the model)."""
    from dgml_viz.train.loop import train as _train

    return _train(config, run_dir, resume, **kwargs)


__all__ = ["train", "load_config", "list_recipes", "DEFAULTS"]
