"""``dgml-viz evaluate``: retrieval metrics of a checkpoint on a recipe's test split.

    dgml-viz evaluate --ckpt runs/x/best.pt --config cub200 data.root=/data/CUB_200_2011
    dgml-viz evaluate --ckpt runs/x/best.pt          # recipe stored in the checkpoint
    dgml-viz evaluate --index runs/test_index        # stored embeddings; labels = parent folder names

Prints the metrics as JSON on stdout and writes them (atomically) to ``--out``
(default ``<ckpt>.metrics.json``). The eval transform is the checkpoint's own.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

HELP = "retrieval metrics (Recall@K, MAP@R, NMI, per-group Recall@1) of a checkpoint"
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", help="dgml_viz checkpoint (not needed with --index)")
    parser.add_argument("--index", help="evaluate the embeddings stored in this index (from `dgml-viz index`) "
                        "instead of embedding a dataset; labels from the folder layout or --labels")
    parser.add_argument("--labels", help="with --index: a list file of 'PATH LABEL' lines "
                        "(default: each image's parent folder name)")
    parser.add_argument("--ks", default="1,2,4,8", help="with --index: Recall@K values (default 1,2,4,8)")
    parser.add_argument("--no-nmi", action="store_true", help="with --index: skip NMI (k-means)")
    parser.add_argument("--config", help="recipe name or YAML file giving the dataset "
                        "(default: the recipe stored in the checkpoint)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. data.root=...")
    parser.add_argument("--split", help="query split (default: data.test_split)")
    parser.add_argument("--out", help="metrics JSON path (default: <ckpt>.metrics.json)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")


def run_index(args: argparse.Namespace) -> int:
    """``evaluate --index``: the in-memory metrics (:func:`retrieval_metrics`) on the stored embeddings."""
    import torch

    from dgml_viz.errors import ConfigError
    from dgml_viz.index.labels import index_labels
    from dgml_viz.index.search import subset_vectors
    from dgml_viz.index.store import open_index
    from dgml_viz.metrics.retrieval import retrieval_metrics
    from dgml_viz.utils.atomic import atomic_write_text

    try:
        ks = [int(v) for v in args.ks.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--ks must be positive integers, got {args.ks!r}")
    index = open_index(args.index)
    rows, labels, names = index_labels(index.paths, args.labels)
    groups = torch.from_numpy(np.asarray(index.groups[rows], dtype=np.float32))
    embedding = torch.from_numpy(subset_vectors(groups.numpy(), range(index.num_groups)))
    metrics = retrieval_metrics(embedding, labels, groups=groups, ks=ks, compute_nmi=not args.no_nmi)
    result = {"index": str(args.index), "checkpoint": index.checkpoint.get("path"),
              "checkpoint_sha256": index.sha256, "labels": args.labels or "folder layout",
              "num_queries": int(len(rows)), "num_classes": len(names), "metrics": metrics}
    text = json.dumps(result, indent=2)
    if args.out:
        atomic_write_text(Path(args.out), text + "\n")
        logger.info("wrote %s", args.out)
    sys.stdout.write(text + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    from dgml_viz.utils.outdir import ensure_output_file

    if args.out:
        ensure_output_file(args.out)  # before any work: a bad --out is one line, not a traceback at the end
    if args.index:
        return run_index(args)
    from dgml_viz.data.registry import build_dataset, dataset_spec
    from dgml_viz.data.transforms import EvalTransform
    from dgml_viz.errors import ConfigError
    from dgml_viz.model.checkpoint import load_checkpoint, read_checkpoint_info
    from dgml_viz.train.config import config_from_dict, load_config
    from dgml_viz.train.distributed import resolve_device
    from dgml_viz.train.loop import evaluate_model
    from dgml_viz.utils.atomic import atomic_write_text

    if not args.ckpt:
        raise ConfigError("--ckpt (or --index) is required")
    if args.config:
        config = load_config(args.config, args.overrides)
    else:
        recipe = (read_checkpoint_info(args.ckpt).get("meta") or {}).get("recipe")
        if not isinstance(recipe, dict):
            raise ConfigError(f"{args.ckpt}: checkpoint stores no training recipe; pass --config")
        from dgml_viz.train.config import apply_overrides

        config = config_from_dict(apply_overrides(recipe, args.overrides))
    device = resolve_device(args.device)
    model = load_checkpoint(args.ckpt, map_location="cpu").to(device)
    data = config["data"]
    spec = dataset_spec(data["name"])
    extra = {"transform": EvalTransform.from_dict(model.transform)} if spec.takes_transform else {}
    kwargs = dict(data.get("kwargs") or {})
    split = args.split or data["test_split"]
    query = build_dataset(data["name"], split, data.get("root"), **extra, **kwargs)
    gallery = (build_dataset(data["name"], data["gallery_split"], data.get("root"), **extra, **kwargs)
               if data.get("gallery_split") and not args.split else None)
    metrics = evaluate_model(model, query, gallery, config["eval"], num_workers=int(config["train"]["num_workers"]),
                             amp=bool(config["train"]["amp"]), seed=int(config["train"]["seed"]))
    result = {"checkpoint": str(args.ckpt), "dataset": data["name"], "split": split,
              "gallery_split": data.get("gallery_split") if gallery is not None else None,
              "num_queries": len(query), "metrics": metrics}
    out = Path(args.out) if args.out else Path(str(args.ckpt) + ".metrics.json")
    text = json.dumps(result, indent=2)
    atomic_write_text(out, text + "\n")
    sys.stdout.write(text + "\n")
    logger.info("wrote %s", out)
    return 0
