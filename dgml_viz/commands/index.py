"""``dgml-viz index``: embed a folder or list of images once into a persistent index.

    dgml-viz index --ckpt checkpoints/demo.pt --images data/test --out runs/test_index
    dgml-viz index ... --resume                         # after a crash: keep the finished chunks
    dgml-viz index ... --shard 0/4                      # or launched by torchrun (RANK/WORLD_SIZE)
    dgml-viz index --merge --out runs/test_index        # join runs/test_index/shards/*-of-N

A second run on the same --out embeds only new or changed files (size + mtime) and drops
removed ones. Bad images are listed in the manifest's ``errors`` and skipped with a warning.
Prints a JSON summary of the run on stdout. Format: :mod:`dgml_viz.index.store`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

HELP = "embed images once into a persistent index (group embeddings + attention maps)"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--ckpt", help="dgml_viz checkpoint (.pt)")
    parser.add_argument("--images", help="a folder (searched recursively), a list file (one path per line) or one image")
    parser.add_argument("--out", required=True, help="index folder")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="decode threads (when embedding in one process)")
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help="worker processes that decode + embed, one torch thread each (default on a CPU, Linux: "
                             "one per torch thread, at most 16, fewer for small jobs; "
                             "1 = this process with --workers decode threads; a GPU model always uses 1)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--resume", action="store_true", help="keep the pending chunks of an interrupted run")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="index only shard I of N into OUT/shards/I-of-N (default: torchrun's RANK/WORLD_SIZE)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="images per resumable chunk (default 1024)")
    parser.add_argument("--rebuild", action="store_true", help="ignore an existing index at --out")
    parser.add_argument("--max-pixels", type=int, default=None, help="decompression-bomb guard (pixels)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for the forward on CUDA (no effect on a CPU)")
    parser.add_argument("--merge", action="store_true", help="merge OUT/shards/*-of-N into OUT and exit")


def run(args: argparse.Namespace) -> int:
    from dgml_viz.data.discovery import parse_shard
    from dgml_viz.errors import ConfigError
    from dgml_viz.index.builder import build_index, merge_shards
    from dgml_viz.validation import check_device

    if args.merge:
        out = merge_shards(args.out)
        sys.stdout.write(json.dumps({"merged": str(out)}) + "\n")
        return 0
    if not args.ckpt or not args.images:
        raise ConfigError("--ckpt and --images are required (unless --merge)")
    if args.batch_size < 1 or args.chunk_size < 1 or (args.processes is not None and args.processes < 1):
        raise ConfigError("--batch-size, --chunk-size and --processes must be >= 1")
    device = check_device(args.device, "--device")  # auto (None): CUDA when available, else CPU
    stats = build_index(args.ckpt, args.images, args.out, batch_size=args.batch_size, workers=args.workers,
                        device=device, resume=args.resume, shard=parse_shard(args.shard),
                        chunk_size=args.chunk_size, max_pixels=args.max_pixels, rebuild=args.rebuild,
                        processes=args.processes, amp=args.amp)
    summary = stats.as_dict()
    rate = stats.embedded / stats.seconds if stats.seconds > 0 else 0.0
    logger.info("index %s: %d embedded (%.1f img/s), %d unchanged, %d resumed, %d removed, %d bad", stats.out,
                stats.embedded, rate, stats.reused, stats.resumed, stats.removed, stats.failed)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0
