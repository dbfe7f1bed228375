"""``dgml-viz info``: describe a checkpoint (ours, or a reference-implementation file) without building the model."""
from __future__ import annotations

import argparse
import json
import sys

HELP = "describe a checkpoint (config, transform, metrics); also reference-implementation files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ckpt", help="dgml_viz checkpoint or reference checkpoint_*.pth.tar")


def run(args: argparse.Namespace) -> int:
    from dgml_viz.model.checkpoint import ForeignCheckpointError, read_checkpoint_info
    from dgml_viz.model.reference import describe_reference, read_reference_file

    try:
        info = read_checkpoint_info(args.ckpt)
    except ForeignCheckpointError:
        # A PyTorch file but not one of ours (as for open_any_checkpoint): a reference file?
        # Its reader gives the precise reason if not. A damaged file of ours keeps our error.
        info = describe_reference(read_reference_file(args.ckpt))
    sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
    return 0
