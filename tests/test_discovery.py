"""One image discovery: heatmaps, gallery, index, interpret, the folder dataset and the app see the
same files of one tree (suffixes in any case, hidden names skipped, output folder not entered)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from dgml_viz.appkit.paths import list_images
from dgml_viz.data.discovery import collect_sources, find_images
from dgml_viz.data.folder import ImageFolderDataset

NAMES = ["cls_a/1.JPG", "cls_a/2.png", "cls_a/deep/3.jfif", "cls_b/4.pgm", "cls_b/5.webp", "cls_b/.6.png",
         ".hidden/7.png", "cls_b/notes.txt", "cls_b/8.tiff"]
EXPECTED = ["cls_a/1.JPG", "cls_a/2.png", "cls_a/deep/3.jfif", "cls_b/4.pgm", "cls_b/5.webp", "cls_b/8.tiff"]


def _tree(root: Path) -> Path:
    for name in NAMES:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".txt"):
            path.write_text("not an image")
            continue
        fmt = {"jfif": "JPEG", "JPG": "JPEG", "pgm": "PPM"}.get(path.suffix[1:], None)
        img = Image.fromarray(np.full((12, 16, 3), 100, np.uint8))
        (img.convert("L") if fmt == "PPM" else img).save(path, format=fmt)
    return root


def _rel(paths, root: Path) -> list[str]:
    return sorted(Path(p).relative_to(root).as_posix() for p in paths)


def test_every_consumer_sees_the_same_files(tmp_path: Path, ckpt: Path) -> None:
    from dgml_viz.commands.interpret import build_data
    from dgml_viz.model.checkpoint import load_checkpoint

    root = _tree(tmp_path / "tree")
    assert _rel(find_images(root), root) == EXPECTED
    assert sorted(s.rel for s in collect_sources(root)) == EXPECTED  # heatmaps, gallery, index
    assert _rel(list_images(root, [tmp_path]), root) == EXPECTED  # the app's folder picker
    assert _rel(ImageFolderDataset(root, "all").paths, root) == EXPECTED  # folder datasets
    args = argparse.Namespace(images=str(root), config=None)
    dataset, _ = build_data(args, load_checkpoint(ckpt))  # interpret --images
    assert _rel(dataset.paths, root) == EXPECTED


def test_an_output_folder_inside_the_input_is_not_entered(tmp_path: Path) -> None:
    root = _tree(tmp_path / "tree")
    out = root / "cls_a" / "deep"
    assert "cls_a/deep/3.jfif" not in [s.rel for s in collect_sources(root, exclude=out)]
