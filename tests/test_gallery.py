"""`dgml-viz gallery`: vector + raster figures with the right panels, deterministic bytes, LaTeX snippet."""
from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from dgml_viz.cli import main
from image_compare import assert_images_close
from dgml_viz.render.figures import Row, grid_figure, save_figure

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ["skimage:astronaut", "skimage:chelsea", "skimage:coffee"]


def _svg_images(path: Path) -> int:
    return len(re.findall(rb"<image\b", path.read_bytes()))


def _pdf_images(path: Path) -> int:
    return len(re.findall(rb"/Subtype\s*/Image", path.read_bytes()))


def _gallery(ckpt: Path, out: Path, *extra: str) -> list[str]:
    return ["gallery", "--ckpt", str(ckpt), "--images", *IMAGES, "--out", str(out), "--dpi", "72",
            "--width", "single", *extra]


def test_grid_figure_panels_and_determinism(tmp_path: Path, ckpt: Path) -> None:
    assert main(_gallery(ckpt, tmp_path / "a", "--colorbar")) == 0
    assert main(_gallery(ckpt, tmp_path / "b", "--colorbar")) == 0
    a, b = tmp_path / "a", tmp_path / "b"
    for ext in ("png", "svg", "pdf", "tex"):
        assert (a / f"gallery.{ext}").read_bytes() == (b / f"gallery.{ext}").read_bytes(), ext
    panels = 3 * (1 + 3 + 1)  # rows x (image + 3 groups + composite)
    assert _svg_images(a / "gallery.svg") == panels + 1  # + the colour bar's gradient
    assert _pdf_images(a / "gallery.pdf") == panels + 1
    png = Image.open(a / "gallery.png")
    assert abs(png.size[0] - 3.25 * 72) <= 1  # one-column width
    tex = (a / "gallery.tex").read_text()
    assert r"\includegraphics[width=\columnwidth]{gallery.pdf}" in tex and r"\label{fig:gallery}" in tex
    assert "CreationDate" not in (a / "gallery.pdf").read_bytes().decode("latin-1")


def test_groups_no_composite_double_width(tmp_path: Path, ckpt: Path) -> None:
    assert main(_gallery(ckpt, tmp_path, "--groups", "1", "--no-composite", "--width", "double",
                         "--formats", "svg,png", "--name", "fig2")) == 0
    assert _svg_images(tmp_path / "fig2.svg") == 3 * 2
    assert not (tmp_path / "fig2.pdf").exists()
    assert abs(Image.open(tmp_path / "fig2.png").size[0] - 6.75 * 72) <= 1


def test_folder_of_images_gives_one_row_per_image(tmp_path: Path, ckpt: Path) -> None:
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    Image.fromarray(data.astronaut()[::4, ::4]).save(photos / "a.png")
    Image.fromarray(data.chelsea()[::4, ::4]).save(photos / "sub" / "b.jpg")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = ["gallery", "--ckpt", str(ckpt), "--images", str(photos), "skimage:coffee", "--out", str(out),
            "--dpi", "72", "--formats", "svg"]
    assert main(args) == 0
    assert _svg_images(out / "gallery.svg") == 3 * (1 + 3 + 1)  # a.png, sub/b.jpg, coffee
    (tmp_path / "empty").mkdir()
    assert main(["gallery", "--ckpt", str(ckpt), "--images", str(tmp_path / "empty"), "--out", str(out)]) == 2


def test_retrieval_figure_and_yaml_config(tmp_path: Path, ckpt: Path) -> None:
    gal = tmp_path / "gallery_dir"
    gal.mkdir()
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(data, name)()[::4, ::4]).save(gal / f"{name}.png")
    (gal / "broken.jpg").write_bytes(b"")  # skipped with a warning
    cfg = tmp_path / "fig.yaml"
    cfg.write_text(f"query: {gal / 'chelsea.png'}\ngallery_dir: {gal}\ntopk: 2\nformats: [svg, pdf]\n"
                   f"out: {tmp_path / 'out'}\ndpi: 72\nwidth: single\n")
    assert main(["gallery", "--ckpt", str(ckpt), "--config", str(cfg)]) == 0
    svg = tmp_path / "out" / "gallery_retrieval.svg"
    assert _svg_images(svg) == (1 + 2) * 5
    assert _pdf_images(svg.with_suffix(".pdf")) == (1 + 2) * 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("images: [skimage:astronaut]\ncolour: red\n")
    assert main(["gallery", "--ckpt", str(ckpt), "--config", str(bad)]) == 2


def test_grid_figure_validates_rows() -> None:
    p = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError):
        grid_figure([Row([p, p]), Row([p])])
    with pytest.raises(ValueError):
        grid_figure([Row([p])], column_titles=["a", "b"])


def test_save_figure_same_bytes_twice(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [Row([rng.integers(0, 256, (20, 30, 3), dtype=np.uint8) for _ in range(3)], label=f"r{i}")
            for i in range(2)]
    for run in ("x", "y"):
        save_figure(grid_figure(rows, ["a", "b", "c"], "single", 100, colorbar="viridis"), tmp_path / run)
    for ext in ("png", "svg", "pdf"):
        assert (tmp_path / f"x.{ext}").read_bytes() == (tmp_path / f"y.{ext}").read_bytes(), ext


def test_render_never_imports_model() -> None:
    for path in (ROOT / "dgml_viz" / "render").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith("dgml_viz.model") for n in names), f"{path.name} imports {names}"


# --------------------------------------------------------------------------- the shipped example gallery
DEMO = ROOT / "checkpoints" / "demo.pt"
README = ROOT / "gallery" / "README.md"


def _readme_command() -> list[str]:
    text = README.read_text()
    block = re.search(r"```(?:bash|sh)?\n(dgml-viz gallery[^`]*?)\n```", text)
    assert block, "gallery/README.md must hold the dgml-viz gallery command in a code block"
    return shlex.split(block.group(1).replace("\\\n", " "))


def test_readme_command_parses() -> None:
    args = _readme_command()
    assert args[:2] == ["dgml-viz", "gallery"] and "--out" in args and "checkpoints/demo.pt" in args


@pytest.mark.skipif(not DEMO.exists(), reason="checkpoints/demo.pt not shipped yet: the example gallery is "
                                              "generated from it (see gallery/README.md)")
def test_shipped_gallery_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = _readme_command()[1:]
    out_at = args.index("--out") + 1
    shipped = ROOT / args[out_at]
    args[out_at] = str(tmp_path)
    monkeypatch.chdir(ROOT)
    assert main(args) == 0
    pngs = sorted(p.name for p in shipped.glob("*.png"))
    assert pngs, f"{shipped} holds no PNG: regenerate with the command in gallery/README.md"
    regenerate = "the command in gallery/README.md (run from the repository root)"
    for name in pngs:  # a tolerance, not byte equality: library releases move a few pixels
        assert_images_close(tmp_path / name, shipped / name, regenerate)
