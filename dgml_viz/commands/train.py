"""``dgml-viz train``: train a grouping model from a YAML recipe.

    dgml-viz train --config cub200 data.root=/data/CUB_200_2011 train.epochs=2
    dgml-viz train --config my.yaml --run-dir runs/exp1
    dgml-viz train --run-dir runs/exp1 --resume          # continue a killed run
    torchrun --nproc_per_node=4 -m dgml_viz.cli train --config sop data.root=...
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

HELP = "train a grouping model from a recipe (packaged name or YAML file)"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="recipe name (cub200, cars196, sop, inshop, fashion_mnist, synthetic) "
                        "or path to a YAML file; optional with --resume")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides, e.g. train.epochs=2 model.groups=4")
    parser.add_argument("--run-dir", help="output folder (default: <output.dir>/<recipe>-<UTC time>)")
    parser.add_argument("--resume", action="store_true", help="continue from <run-dir>/last_state.pt")


def run(args: argparse.Namespace) -> int:
    from dgml_viz.errors import ConfigError
    from dgml_viz.train import load_config, train

    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.resume and run_dir is None:
        raise ConfigError("--resume needs --run-dir (the folder of the run to continue)")
    source = args.config
    if source is None:
        if not (args.resume and run_dir is not None and (run_dir / "config.yaml").is_file()):
            raise ConfigError("--config is required (or --resume with a --run-dir holding config.yaml)")
        source = run_dir / "config.yaml"
    config = load_config(source, args.overrides)
    if run_dir is None:
        stem = Path(str(source)).stem
        run_dir = Path(config["output"]["dir"]) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    result = train(config, run_dir, resume=args.resume)
    if result.get("rank", 0) != 0:
        return 0
    shown = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items() if "group" not in k)
    logger.info("finished %d epoch(s), %d step(s) in %s: %s", result["epochs"], result["steps"], run_dir, shown)
    logger.info("best checkpoint: %s (epoch %s)", result["best_ckpt"], result["best_epoch"])
    return 0
