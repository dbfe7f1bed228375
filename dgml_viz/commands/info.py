"""``dgml-viz info``: describe a checkpoint without building the model."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "describe a checkpoint (config, transform, metrics)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="dgml_viz checkpoint")


def run(args: argparse.Namespace) -> int:
    from dgml_viz.model.checkpoint import read_checkpoint_info

    info = read_checkpoint_info(args.ckpt)
    sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
    return 0
