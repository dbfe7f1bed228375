"""``dgml-viz gallery``: paper figures (PDF + SVG + PNG + LaTeX snippet) from a checkpoint and images.

Grid figure: rows = images, columns = the image, one overlay per group and the
dominant-group composite, with group titles and an optional colour bar, sized
for one (3.25 in) or two (6.75 in) paper columns. With ``--query`` also a
retrieval figure: the query and its top-k neighbours from ``--gallery-dir``
(cosine similarity of the embeddings), each row with its group overlays.

Images are files, folders (expanded to their images) or ``skimage:<name>`` (scikit-image's bundled photos:
astronaut, chelsea, coffee, rocket, ...). Options can come from a YAML file
(``--config``; keys are the long option names with ``_``, ``images`` a list);
command-line values win. Output is deterministic: same inputs, same bytes.

``--out`` is checked before any work and locked while the figures are written (a second run into the
same folder waits, ``--lock-timeout``); image names and captions in the figures are drawn literally
(``$`` never starts matplotlib mathtext).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dgml_viz.errors import ConfigError, DgmlVizError
from dgml_viz.utils.outdir import add_lock_timeout_argument

HELP = "paper figure galleries (PDF/SVG/PNG + LaTeX) of group attention"
logger = logging.getLogger(__name__)

#: scikit-image's bundled RGB photos usable as ``skimage:<name>``
SKIMAGE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "immunohistochemistry",
                  "hubble_deep_field", "retina", "colorwheel", "logo")

_DEFAULTS: dict[str, Any] = {
    "images": None, "out": "gallery_out", "name": "gallery", "width": "double", "dpi": 300,
    "formats": "pdf,svg,png", "norm": "per_map", "cmap": "jet", "alpha": 0.5, "interp": "bilinear",
    "groups": None, "composite": True, "colorbar": False, "caption": None, "query": None,
    "gallery_dir": None, "topk": 4, "device": None, "max_pixels": None, "max_side": 512,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", required=True, help="dgml_viz checkpoint (.pt)")
    parser.add_argument("--images", nargs="+", default=None,
                        help="image files, folders (their images, recursively, sorted) or skimage:<name> "
                             "(e.g. skimage:astronaut), one row per image")
    parser.add_argument("--config", default=None, help="YAML with the same keys (images: [...], width: ...)")
    parser.add_argument("--out", default=None, help="output folder (default gallery_out)")
    parser.add_argument("--name", default=None, help="file stem of the figure (default gallery)")
    parser.add_argument("--width", default=None, help="single | double | inches (default double = 6.75in)")
    parser.add_argument("--dpi", type=int, default=None, help="resolution of embedded panels and PNG (default 300)")
    parser.add_argument("--formats", default=None, help="comma-separated subset of pdf,svg,png (default all)")
    parser.add_argument("--norm", choices=("per_map", "shared", "absolute"), default=None,
                        help="map normalisation (default per_map)")
    parser.add_argument("--cmap", default=None, help="matplotlib colormap (default jet)")
    parser.add_argument("--alpha", type=float, default=None, help="overlay opacity (default 0.5)")
    parser.add_argument("--interp", choices=("bilinear", "bicubic", "nearest"), default=None)
    parser.add_argument("--groups", default=None, help="comma-separated groups to show (default all)")
    parser.add_argument("--no-composite", dest="composite", action="store_const", const=False, default=None,
                        help="omit the composite column")
    parser.add_argument("--colorbar", action="store_const", const=True, default=None, help="add a colour bar")
    parser.add_argument("--caption", default=None, help="LaTeX caption (default: generated)")
    parser.add_argument("--query", default=None, help="query image for a retrieval figure")
    parser.add_argument("--gallery-dir", default=None, help="folder searched for the query's neighbours")
    parser.add_argument("--topk", type=int, default=None, help="neighbours in the retrieval figure (default 4)")
    parser.add_argument("--device", default=None, help="torch device (default cpu)")
    parser.add_argument("--max-pixels", type=int, default=None, help="decompression-bomb limit (pixels)")
    add_lock_timeout_argument(parser)


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults <- YAML config <- command line."""
    opts = dict(_DEFAULTS)
    if args.config:
        import yaml

        try:
            cfg = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{args.config}: cannot read gallery config ({str(exc).splitlines()[0]})") from None
        if not isinstance(cfg, dict):
            raise ConfigError(f"{args.config}: gallery config must be a mapping")
        unknown = sorted(set(cfg) - set(_DEFAULTS))
        if unknown:
            raise ConfigError(f"{args.config}: unknown keys {', '.join(unknown)}")
        base = Path(args.config).parent
        if cfg.get("images"):
            cfg["images"] = [s if str(s).startswith("skimage:") or Path(s).is_absolute() else str(base / s)
                             for s in cfg["images"]]
        opts.update(cfg)
    for key in _DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = value
    for key in ("formats", "groups"):  # YAML lists -> the command line's comma-separated form
        if isinstance(opts[key], (list, tuple)):
            opts[key] = ",".join(str(v) for v in opts[key])
        elif isinstance(opts[key], int):
            opts[key] = str(opts[key])
    if not opts["images"] and not opts["query"]:
        raise ConfigError("no images: give --images, --query or a --config with images")
    return opts


def expand_images(specs: Sequence[str]) -> list[str]:
    """Each folder in ``specs`` replaced by its images (the ``heatmaps`` collector: recursive,
    sorted, hidden names skipped); files and ``skimage:<name>`` kept as given."""
    from dgml_viz.data.discovery import collect_sources

    out: list[str] = []
    for spec in specs:
        if not spec.startswith("skimage:") and Path(spec).is_dir():
            found = [str(src.path) for src in collect_sources(spec)]
            if not found:
                raise ConfigError(f"{spec}: folder holds no images")
            out += found
        else:
            out.append(spec)
    return out


def load_source(spec: str, max_pixels: int | None = None) -> np.ndarray:
    """An image file, or ``skimage:<name>``, as ``uint8 [H, W, 3]`` RGB."""
    from dgml_viz.data.images import load_image

    if spec.startswith("skimage:"):
        name = spec.split(":", 1)[1]
        if name not in SKIMAGE_IMAGES:
            raise ConfigError(f"{spec}: unknown; bundled images are {', '.join(SKIMAGE_IMAGES)}")
        from skimage import data

        img = np.asarray(getattr(data, name)())
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        if img.dtype != np.uint8:
            img = (np.clip(img.astype(np.float64), 0, 1) * 255 + 0.5).astype(np.uint8) if img.max() <= 1 else \
                np.clip(img, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(img[:, :, :3])
    return load_image(spec, max_pixels=max_pixels)


def _label(spec: str) -> str:
    return spec.split(":", 1)[1] if spec.startswith("skimage:") else Path(spec).stem


def _analyse(model: Any, images: Sequence[np.ndarray], batch_size: int = 16) -> tuple[np.ndarray, np.ndarray, list]:
    """Attention ``[N, K, h, w]``, embeddings ``[N, D]`` and geometries of decoded images."""
    from dgml_viz.inference import attention_maps, prepare_image, run_batch

    maps, embs, geos = [], [], []
    for i in range(0, len(images), batch_size):
        prepared = [prepare_image(img, model.transform) for img in images[i:i + batch_size]]
        out = run_batch(model, [p[0] for p in prepared])
        maps.append(attention_maps(out))
        embs.append(out.embedding.float().cpu().numpy())
        geos.extend(p[1] for p in prepared)
    return np.concatenate(maps), np.concatenate(embs), geos


def _rows(images: Sequence[np.ndarray], maps: np.ndarray, geos: Sequence[Any], groups: Sequence[int],
          opts: dict[str, Any], labels: Sequence[str | None], titles: Sequence[list[str] | None] | None = None):
    from dgml_viz.render.figures import Row
    from dgml_viz.render.panels import RenderOptions, output_size, render_panels

    import cv2

    ropts = RenderOptions(norm=opts["norm"], cmap=opts["cmap"], alpha=float(opts["alpha"]),
                          interpolation=opts["interp"], composite=bool(opts["composite"]),
                          max_side=int(opts["max_side"]) if opts["max_side"] else None)
    rows = []
    for i, img in enumerate(images):
        panels = render_panels(img, maps[i], geos[i], groups, ropts)
        size = output_size(geos[i].original, ropts.max_side)
        base = img if size == geos[i].original else cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        cells = [base] + [panels[f"group{g}"] for g in groups] + ([panels["composite"]] if ropts.composite else [])
        rows.append(Row(cells, labels[i], titles[i] if titles else None))
    return rows


def _column_titles(groups: Sequence[int], composite: bool) -> list[str]:
    return ["image"] + [f"group {g}" for g in groups] + (["composite"] if composite else [])


def _write(fig: Any, out: Path, stem: str, formats: Sequence[str], dpi: int, caption: str, double: bool) -> list[Path]:
    from dgml_viz.render.figures import latex_snippet, save_figure
    from dgml_viz.utils.atomic import atomic_write_text

    paths = save_figure(fig, out / stem, formats, dpi)
    tex = out / f"{stem}.tex"
    atomic_write_text(tex, latex_snippet(f"{stem}.pdf" if "pdf" in formats else paths[0].name, caption,
                                         f"fig:{stem}", double_column=double))
    return paths + [tex]


def run(args: argparse.Namespace) -> int:
    import torch

    from dgml_viz.validation import parse_groups
    from dgml_viz.model.checkpoint import load_checkpoint
    from dgml_viz.render.figures import FORMATS, paper_width
    from dgml_viz.utils.outdir import ensure_output_dir, output_lock

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    opts = resolve_options(args)
    formats = [f.strip() for f in str(opts["formats"]).split(",") if f.strip()]
    if not formats or any(f not in FORMATS for f in formats):
        raise ConfigError(f"--formats must be a comma-separated subset of {','.join(FORMATS)}")
    try:
        width_in = paper_width(opts["width"])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    dpi = int(opts["dpi"])
    if not 50 <= dpi <= 1200:
        raise ConfigError(f"--dpi {dpi}: use 50..1200")
    out = ensure_output_dir(opts["out"], create=False)  # before any work: a bad --out is one line, not a traceback
    # a bad checkpoint fails before the folder is created or locked
    model = load_checkpoint(args.ckpt).to(torch.device(opts["device"] or "cpu")).eval()
    groups = parse_groups(opts["groups"], model.num_groups)
    with output_lock(out, getattr(args, "lock_timeout", -1)):
        return _run_locked(args, opts, out, formats, width_in, dpi, model, groups)


def _run_locked(args: argparse.Namespace, opts: dict[str, Any], out: Path, formats: list[str], width_in: float,
                dpi: int, model: Any, groups: list[int]) -> int:
    from dgml_viz.render.composite import group_colors
    from dgml_viz.render.figures import grid_figure

    double = width_in >= 5
    colorbar = opts["cmap"] if opts["colorbar"] else None
    legend = [(f"group {g}", c) for g, c in enumerate(group_colors(model.num_groups))] \
        if opts["composite"] else None
    written: list[Path] = []
    if opts["images"]:
        specs = expand_images([str(s) for s in opts["images"]])
        images = [load_source(s, opts["max_pixels"]) for s in specs]
        maps, _, geos = _analyse(model, images)
        rows = _rows(images, maps, geos, groups, opts, [_label(s) for s in specs])
        fig = grid_figure(rows, _column_titles(groups, opts["composite"]), width_in, dpi, colorbar,
                          legend=legend)
        caption = opts["caption"] or (
            f"Group attention of {Path(args.ckpt).stem} ({model.config.backbone}, K={model.num_groups}): "
            "each column overlays one group's attention map on the image"
            + ("; the composite colours each pixel by its dominant group." if opts["composite"] else "."))
        written += _write(fig, out, opts["name"], formats, dpi, caption, double)
    if opts["query"]:
        written += _retrieval(model, Path(args.ckpt).stem, opts, groups, out, formats, width_in, dpi, colorbar,
                              legend, double)
    for p in written:
        logger.info("wrote %s", p)
    return 0


def _retrieval(model: Any, model_name: str, opts: dict[str, Any], groups: Sequence[int], out: Path,
               formats: Sequence[str], width_in: float, dpi: int, colorbar: str | None, legend: Any,
               double: bool) -> list[Path]:
    from dgml_viz.data.discovery import collect_sources
    from dgml_viz.render.figures import grid_figure

    if not opts["gallery_dir"]:
        raise ConfigError("--query needs --gallery-dir (the folder to retrieve from)")
    k = int(opts["topk"])
    if k < 1:
        raise ConfigError(f"--topk must be >= 1, got {k}")
    query_spec = str(opts["query"])
    query = load_source(query_spec, opts["max_pixels"])
    qpath = None if query_spec.startswith("skimage:") else Path(query_spec).resolve()
    sources = [s for s in collect_sources(opts["gallery_dir"]) if s.path.resolve() != qpath]
    names, gemb = _embed_files(model, [s.path for s in sources], opts["max_pixels"])
    if not names:
        raise DgmlVizError(f"{opts['gallery_dir']}: no readable images to retrieve from")
    qmaps, qemb, qgeo = _analyse(model, [query])
    sims = gemb @ qemb[0]
    order = np.argsort(-sims, kind="stable")[:k]
    top = [load_source(str(names[i]), opts["max_pixels"]) for i in order]
    tmaps, _, tgeo = _analyse(model, top)
    images = [query] + top
    maps = np.concatenate([qmaps, tmaps])
    labels = ["query"] + [f"#{r + 1}" for r in range(len(order))]
    ncols = 1 + len(groups) + (1 if opts["composite"] else 0)
    titles = [None] + [[f"{names[i].name}  s={sims[i]:.2f}"] + [""] * (ncols - 1) for i in order]
    rows = _rows(images, maps, qgeo + tgeo, groups, opts, labels, titles)
    fig = grid_figure(rows, _column_titles(groups, opts["composite"]), width_in, dpi, colorbar, legend=legend)
    caption = (f"Retrieval with {model_name}: the query (top row) and its {len(order)} nearest gallery images "
               "by cosine similarity $s$ of the embeddings, each with its group attention maps.")
    return _write(fig, out, f"{opts['name']}_retrieval", formats, dpi, caption, double)


def _embed_files(model: Any, paths: Sequence[Path], max_pixels: int | None,
                 batch_size: int = 32) -> tuple[list[Path], np.ndarray]:
    """Embeddings ``[N, D]`` of the readable files among ``paths`` (unreadable ones are logged and skipped);
    images are decoded a batch at a time, so memory does not grow with the folder."""
    from dgml_viz.errors import ImageError
    from dgml_viz.inference import prepare_image, run_batch

    kept: list[Path] = []
    embs = [np.zeros((0, model.embedding_dim), np.float32)]
    for i in range(0, len(paths), batch_size):
        tensors = []
        for p in paths[i:i + batch_size]:
            try:
                tensors.append(prepare_image(p, model.transform, max_pixels)[0])
                kept.append(Path(p))
            except ImageError as exc:
                logger.warning("skipping %s", exc)
        if tensors:
            embs.append(run_batch(model, tensors).embedding.float().cpu().numpy())
    return kept, np.concatenate(embs)
