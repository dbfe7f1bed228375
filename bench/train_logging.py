"""Cost of watching training: the same short synthetic run with and without TensorBoard/timeline logging.

Both runs train the shipped synthetic recipe's model and data (128 px, K = 3, batch 64) for the
same steps from the same seed (so they compute the same thing); the one with ``train.tensorboard``
also writes TensorBoard scalars + probe overlays, the probe pass (64 held-out images, every epoch),
``timeline.npz`` and, at the end, ``attention_timeline.{png,pdf}``. Printed:

* wall time of each whole ``train()`` call and their ratio (includes noise on a shared box);
* the time spent inside the monitor's own calls (timed around each call), as a share of the
  logged run's wall time — the direct figure for "logging costs <= 5 % of training time".

A short epoch (default 25 steps, the recipe has 100) makes the probe pass 4x more frequent than
in the shipped recipe, so this overstates the shipped cost.

    python bench/train_logging.py                         # 4 epochs x 25 steps each (~1-2 min per run)
    python bench/train_logging.py --epochs 2 --steps 10   # quicker
"""
from __future__ import annotations

import argparse
import functools
import platform
import tempfile
import time
from pathlib import Path

import torch

from dgml_viz.train import load_config, train
from dgml_viz.train import logging_tb


def timed_monitor(spent: list[float]) -> None:
    """Accumulate the seconds spent in every TrainingMonitor call (construction included) into ``spent``."""
    cls = logging_tb.TrainingMonitor
    for name in ("__init__", "log_epoch", "log_metrics", "log_probes", "close"):
        fn = getattr(cls, name)

        @functools.wraps(fn)
        def wrapper(*a, _fn=fn, **kw):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                spent.append(time.perf_counter() - t0)

        setattr(cls, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25, help="steps per epoch")
    ap.add_argument("--eval-every", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    spent: list[float] = []
    timed_monitor(spent)
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for on in (False, True):
            cfg = load_config("synthetic", [("train.epochs", args.epochs), ("train.steps_per_epoch", args.steps),
                                            ("train.eval_every", args.eval_every), ("train.lr_steps", [10 ** 6]),
                                            ("train.time_budget_s", None), ("train.tensorboard", on),
                                            ("eval.nmi", False)])
            t0 = time.perf_counter()
            res = train(cfg, Path(tmp) / f"run_{on}")
            walls[on] = time.perf_counter() - t0
            print(f"tensorboard={on!s:5}: {walls[on]:7.1f} s wall, {res['steps']} steps, "
                  f"final recall@1 {res['metrics'].get('recall@1', float('nan')):.4f}", flush=True)
    logging_s = sum(spent)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"wall ratio with/without logging: {walls[True] / walls[False]:.3f} "
          f"(+{100 * (walls[True] / walls[False] - 1):.1f} %)")
    print(f"time inside the monitor: {logging_s:.2f} s = {100 * logging_s / walls[True]:.2f} % of the logged run "
          f"({len(spent)} calls)")


if __name__ == "__main__":
    main()
