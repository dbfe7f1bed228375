"""``dgml-viz convert``: import a reference-implementation checkpoint safely."""
from __future__ import annotations

import argparse
import logging

HELP = "import a checkpoint of the paper's reference implementation (no pickled code is run)"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="reference checkpoint (.pth/.pt)")
    parser.add_argument("dst", help="output dgml_viz checkpoint (.pt)")
    parser.add_argument("--size", type=int, default=224, help="eval crop size (default 224)")
    parser.add_argument("--resize", type=int, default=256, help="eval resize of the shorter side (default 256)")


def run(args: argparse.Namespace) -> int:
    from dgml_viz.model import default_transform
    from dgml_viz.model.checkpoint import save_checkpoint
    from dgml_viz.model.reference import import_reference_checkpoint

    model, ref = import_reference_checkpoint(args.src)
    save_checkpoint(model, args.dst, transform=default_transform(args.size, args.resize),
                    converted_from=str(args.src), skipped_globals=ref.skipped_globals,
                    skipped_keys=ref.skipped_keys)
    cfg = model.config
    logger.info("converted %s -> %s (%s, K=%d, d=%d, r=%d)", args.src, args.dst, cfg.backbone,
                cfg.groups, model.group_dim, cfg.reduction)
    if ref.skipped_globals:
        logger.info("skipped pickled objects (not executed): %s", ", ".join(ref.skipped_globals))
    if ref.skipped_keys:
        logger.info("skipped tensors: %s", ", ".join(ref.skipped_keys))
    return 0
