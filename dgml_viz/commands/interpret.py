"""``dgml-viz interpret``: quantitative interpretability report (report.json + report.html).

Data comes either from a training recipe / registered dataset (``--config NAME``,
its test split: labels, and part masks or keypoints when the dataset has them)
or from a folder of images (``--images DIR``: no labels or annotations, so only
diversity, faithfulness, invariance and the label-free group health are reported).
Group health (dead / duplicated groups, no part masks) is in both modes and is logged. ``--compare`` adds
baseline checkpoints evaluated on the same images with the same settings.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from dgml_viz.errors import ConfigError, DatasetError

logger = logging.getLogger(__name__)

HELP = "quantitative interpretability report (diversity, localisation, faithfulness, invariance)"


def _shifts(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shifts must be comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint of the model to explain")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="training recipe name/path or registered dataset name (test split is used)")
    src.add_argument("--images", help="folder of images (no labels: diversity, faithfulness, invariance only)")
    parser.add_argument("--compare", nargs="+", default=[], metavar="CKPT",
                        help="baseline checkpoints evaluated on the same images")
    parser.add_argument("--out", default="interpret_report", help="output folder (report.json, report.html)")
    parser.add_argument("--data-root", help="dataset folder (overrides the recipe's data.root)")
    parser.add_argument("--split", help="dataset split (default: the recipe's test split, else 'test')")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override, e.g. data.kwargs.seed=1 (repeatable)")
    parser.add_argument("--num-images", type=int, default=1000, help="held-out images (evenly spaced subset)")
    parser.add_argument("--faithfulness-images", type=int, default=100,
                        help="images used for deletion/insertion curves (the first of the subset)")
    parser.add_argument("--steps", type=int, default=8, help="deletion/insertion steps")
    parser.add_argument("--ig-steps", type=int, default=16, help="Integrated Gradients steps")
    parser.add_argument("--baseline", choices=("blur", "mean"), default="blur",
                        help="what removed pixels become (also the IG baseline)")
    parser.add_argument("--invariance-images", type=int, default=64, help="images for invariance certificates")
    parser.add_argument("--shifts", type=_shifts, default=[0, 2, 4, 8, 16], help="translation shifts in px")
    parser.add_argument("--permutations", type=int, default=8, help="random position permutations")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")


def _device(name: str) -> Any:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device: unknown device {name!r}") from None


def evenly_spaced(n_total: int, n: int) -> list[int]:
    """``min(n, n_total)`` distinct indices spread evenly over ``range(n_total)`` (all classes covered)."""
    if n >= n_total:
        return list(range(n_total))
    return sorted(set(np.linspace(0, n_total - 1, n).round().astype(int).tolist()))


def _eval_transform(model: Any) -> Any:
    from dgml_viz.data.transforms import EvalTransform

    return EvalTransform.from_dict(model.transform)


def build_data(args: argparse.Namespace, model: Any) -> tuple[Any, str]:
    """The dataset to analyse for ``model`` (its eval transform) and a description."""
    from dgml_viz.data import build_dataset, dataset_spec, list_datasets

    if args.images:
        from dgml_viz.data.discovery import find_images
        from dgml_viz.data.folder import ImageListDataset

        root = Path(args.images)
        if not root.is_dir():
            raise DatasetError(f"{root}: image folder does not exist")
        files = find_images(root)
        if not files:
            raise DatasetError(f"{root}: no images found")
        return ImageListDataset(files, [-1] * len(files), [], _eval_transform(model)), f"images {root}"
    from dgml_viz.train.config import list_recipes, load_config

    name = args.config
    is_recipe = name in list_recipes() or Path(name).suffix in (".yaml", ".yml") or Path(name).is_file()
    if is_recipe:
        data = load_config(name, args.overrides)["data"]
        ds_name, root, split, kwargs = data["name"], data["root"], data["test_split"], dict(data["kwargs"] or {})
    elif name in list_datasets():
        if args.overrides:
            raise ConfigError("--set needs a recipe; --config names a dataset here")
        ds_name, root, split, kwargs = name, None, "test", {}
    else:
        raise ConfigError(f"--config: {name!r} is neither a recipe ({', '.join(list_recipes())}) "
                          f"nor a dataset ({', '.join(list_datasets())})")
    root = args.data_root or root
    split = args.split or split
    spec = dataset_spec(ds_name)
    if spec.takes_transform:
        kwargs["transform"] = _eval_transform(model)
    elif hasattr(spec.load(), "kwargs_for_model"):
        # a dataset that renders its own images (it owns its transform) says how to match the model
        size = int(model.transform["size"])
        if kwargs.get("image_size", size) != size:
            logger.info("%s images at %d px (the model's transform), not the recipe's %s px",
                        ds_name, size, kwargs["image_size"])
        kwargs = spec.load().kwargs_for_model(size, args.num_images, kwargs)
    return build_dataset(ds_name, split, root=root, **kwargs), f"{ds_name}:{split}"


def _names(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        base = Path(p).stem
        name, i = base, 2
        while name in out:
            name, i = f"{base}#{i}", i + 1
        out.append(name)
    return out


def run(args: argparse.Namespace) -> int:
    import torch
    from torch.utils.data import DataLoader, Subset

    from dgml_viz.model.checkpoint import load_checkpoint, read_checkpoint_info
    from dgml_viz.report.analysis import analyse_model
    from dgml_viz.report.writer import assemble_report, write_report
    from dgml_viz.utils.outdir import ensure_output_dir

    ensure_output_dir(args.out, create=False)  # before any work: a bad --out is one line, not a late traceback

    for flag in ("num_images", "steps", "ig_steps", "bootstrap", "batch_size"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1")
    device = _device(args.device)
    paths = [args.ckpt, *args.compare]
    names = _names(paths)
    models: dict[str, Any] = {}
    source = ""
    part_names: list[str] | None = None
    indices: list[int] | None = None
    t_all = time.perf_counter()
    for name, path in zip(names, paths):
        model = load_checkpoint(path, map_location="cpu").to(device).eval()
        info = read_checkpoint_info(path)
        ds, source = build_data(args, model)
        if indices is None:
            indices = evenly_spaced(len(ds), args.num_images)
        elif max(indices) >= len(ds):
            raise DatasetError(f"{path}: its dataset has {len(ds)} images, fewer than the primary model's")
        class_names = getattr(ds, "class_names", None) or info.get("class_names")
        pn = getattr(ds, "part_names", None)
        part_names = list(pn) if pn is not None else part_names
        loader = DataLoader(Subset(ds, indices), batch_size=args.batch_size, shuffle=False, num_workers=0)
        logger.info("analysing %s (%s head, %d groups) on %d images of %s", name, model.config.head,
                    model.num_groups, len(indices), source)
        t0 = time.perf_counter()
        with torch.random.fork_rng():
            rep = analyse_model(model, loader, class_names=class_names, part_names=part_names,
                                faithfulness_images=args.faithfulness_images, steps=args.steps,
                                baseline=args.baseline, ig_steps=args.ig_steps,
                                invariance_images=args.invariance_images, shifts=args.shifts,
                                permutations=args.permutations, num_resamples=args.bootstrap, seed=args.seed,
                                batch_size=args.batch_size)
        rep["checkpoint"] = str(path)
        rep["config"] = info.get("config")
        rep["timings"]["total_s"] = time.perf_counter() - t0
        models[name] = rep
        logger.info("%s done in %.1f s", name, rep["timings"]["total_s"])
    options = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    report = assemble_report(models, names[0], source, part_names, options)
    report["timings"] = {"total_s": time.perf_counter() - t_all}
    jpath, hpath = write_report(report, args.out)
    for c in report["claims"]:
        logger.info("claim %r: %s — %s", c["claim"], c["verdict"], c["evidence"])
    for name, rep in models.items():  # mask-free group health (report["models"][name]["group_health"])
        for line in rep["group_health"]["reasons"] or ["no dead, suspect or duplicated groups"]:
            (logger.warning if rep["group_health"]["reasons"] else logger.info)("group health of %s: %s", name, line)
    logger.info("wrote %s and %s in %.1f s", jpath, hpath, report["timings"]["total_s"])
    return 0
