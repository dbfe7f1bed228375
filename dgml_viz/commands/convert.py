"""``dgml-viz convert``: turn a reference-implementation checkpoint into a dgml_viz one (no pickled code runs)."""
from __future__ import annotations

import argparse
import logging

HELP = "import a checkpoint of the paper's reference implementation (no pickled code is run)"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="reference checkpoint (checkpoint_*.pth.tar, zip or legacy torch format)")
    parser.add_argument("dst", help="output dgml_viz checkpoint (.pt)")
    parser.add_argument("--size", type=int, default=224, help="eval crop size (default 224)")
    parser.add_argument("--resize", type=int, default=256, help="eval resize of the shorter side (default 256)")


def run(args: argparse.Namespace) -> int:
    from dgml_viz.model.checkpoint import save_checkpoint
    from dgml_viz.model.reference import import_reference_checkpoint

    model, ref = import_reference_checkpoint(args.src)
    meta = dict(model.meta)
    # the backbone's own eval transform (BN-Inception: BGR, [0, 255] minus its means) at the asked sizes
    transform = {**model.transform, "size": args.size, "resize": args.resize}
    save_checkpoint(model, args.dst, transform=transform, **meta)
    cfg = model.config
    logger.info("converted %s (%s, %s) -> %s (%s + %s head, K=%d, d=%d); all %d tensors used",
                args.src, meta["reference_arch"], meta["reference_group_layer"] or "last_linear", args.dst,
                cfg.backbone, cfg.head, model.num_groups, model.group_dim, len(ref.state_dict))
    return 0
