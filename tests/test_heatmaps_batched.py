"""`dgml-viz heatmaps` with batched rendering and batched durability: the written overlays are the
per-image reference renderer's, flushes grow per chunk (not per file), a write failure stays per image."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from image_compare import image_difference
from PIL import Image
from skimage import data

from dgml_viz.cli import main
from dgml_viz.data.images import load_image
from dgml_viz.data.transforms import Geometry
from dgml_viz.render import RenderOptions, render_panels
from dgml_viz.utils import atomic


def _folder(root: Path) -> list[str]:
    """Photos of three sizes (two share a size: one batched bucket) plus a square one."""
    root.mkdir(parents=True, exist_ok=True)
    photos = {"a.png": data.astronaut()[::6, ::6], "b.png": data.chelsea()[::4, ::4],
              "c.png": data.coffee()[::5, ::5], "d.png": data.astronaut()[100:400:6, 50:500:6],
              "e.png": data.chelsea()[::4, ::4][:, ::-1]}
    for name, img in photos.items():
        Image.fromarray(np.ascontiguousarray(img)).save(root / name)
    return sorted(photos)


@pytest.mark.parametrize("norm,interp", [("per_map", "bilinear"), ("shared", "bicubic")])
def test_written_png_panels_equal_the_per_image_reference(tmp_path: Path, ckpt: Path, norm: str, interp: str) -> None:
    src, out = tmp_path / "imgs", tmp_path / "out"
    names = _folder(src)
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(out), "--format", "png",
                 "--batch-size", "4", "--norm", norm, "--interp", interp, "--contour", "0.4"]) == 0
    options = RenderOptions(norm=norm, interpolation=interp, contour=0.4)
    manifest = {r["path"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    for name in names:
        z = np.load(out / name / "maps.npz")
        geometry = Geometry.from_dict(json.loads(str(z["geometry"])))
        assert Image.open(src / name).size == geometry.original  # each image's own geometry...
        assert Geometry.from_dict(manifest[name]["geometry"]) == geometry  # ...in its npz and its record
        assert manifest[name]["size"] == list(geometry.original)
        ref = render_panels(load_image(src / name), z["attention"], geometry, None, options)
        for key, panel in ref.items():
            written = np.asarray(Image.open(out / name / f"{key}.png").convert("RGB"))
            frac, rms, peak = image_difference(written, panel)
            assert frac <= 1e-3 and rms <= 0.5, (name, key, frac, rms, peak)  # the golden tolerance


def test_flushes_per_chunk_not_per_file(tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"syncfs": 0, "fsync": 0}
    real_syncfs, real_fsync = atomic._syncfs, atomic.os.fsync
    monkeypatch.setattr(atomic, "_syncfs", lambda p: calls.__setitem__("syncfs", calls["syncfs"] + 1) or real_syncfs(p))
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: calls.__setitem__("fsync", calls["fsync"] + 1) or real_fsync(fd))
    src, out = tmp_path / "imgs", tmp_path / "out"
    names = _folder(src)
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(out), "--batch-size", "8",
                 "--workers", "2"]) == 0
    files = [p for p in out.rglob("*") if p.is_file() and p.parent != out]
    assert len(files) == 5 * len(names)  # 3 overlays + composite + maps.npz each
    # one batch of 5 images -> 2 chunks -> 2 syncfs (Linux); plus manifest.jsonl and index.html, fsynced each
    if atomic._SYNCFS is not None:
        assert calls["syncfs"] == 2 and calls["fsync"] == 2, calls
    assert calls["syncfs"] + calls["fsync"] < len(files) // 2


def test_an_unwritable_image_folder_fails_that_image_only(tmp_path: Path, ckpt: Path) -> None:
    src, out = tmp_path / "imgs", tmp_path / "out"
    names = _folder(src)
    out.mkdir()
    (out / "c.png").write_text("a file where c.png's output folder should be")
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(out), "--batch-size", "8"]) == 2
    recs = {r["path"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    assert recs["c.png"]["status"] == "error" and "cannot write" in recs["c.png"]["error"]
    assert "\n" not in recs["c.png"]["error"]
    for name in set(names) - {"c.png"}:
        assert recs[name]["status"] == "ok"
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(
            ["group0.jpg", "group1.jpg", "group2.jpg", "composite.jpg", "maps.npz"])
    assert [p.name for p in out.rglob(".*")] == [".dgml-viz.lock"]  # no temp file left behind


class _FakeTorch:
    def __init__(self, n: int) -> None:
        self.n, self.calls = n, []

    def get_num_threads(self) -> int:
        return self.n

    def set_num_threads(self, n: int) -> None:
        self.n = n
        self.calls.append(n)


def _run_plan(monkeypatch: pytest.MonkeyPatch, forward_1: float, seconds_by_threads: dict[int, float],
              batches: int = 6) -> tuple[_FakeTorch, object]:
    """Drive _ThreadPlan with a fake clock: batch 1's forward takes ``forward_1`` s for 32 images (decode
    1 ms CPU each); later batches take ``seconds_by_threads[current threads]`` of pipeline time each."""
    from dgml_viz.commands import heatmaps

    clock = [0.0]
    monkeypatch.setattr(heatmaps.time, "perf_counter", lambda: clock[0])
    fake = _FakeTorch(2)
    plan = heatmaps._ThreadPlan(full=2, reduced=1, adaptive=True)
    plan.decode_cpu.extend([0.001] * 32)
    for b in range(batches):
        clock[0] += forward_1 if b == 0 else seconds_by_threads[fake.get_num_threads()]
        plan.step(fake, 32, forward_1 if b == 0 else 0.0)
    return fake, plan


def test_thread_plan_keeps_the_faster_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # a light model (forward 1.5 ms/img, like the demo): probe 2 then 1 thread, keep the faster
    fake, plan = _run_plan(monkeypatch, 0.05, {2: 0.9, 1: 0.3})
    assert fake.calls == [1, 1] and fake.n == 1 and not plan.adaptive
    fake, _ = _run_plan(monkeypatch, 0.05, {2: 0.3, 1: 0.9})  # an idle many-core box: 2 threads win
    assert fake.calls == [1, 2] and fake.n == 2
    # a heavy model (forward 300 ms/img, like ResNet-50): decode+draw+write ~3 ms/img << a tenth of it
    fake, plan = _run_plan(monkeypatch, 9.6, {2: 9.6, 1: 19.0})
    assert fake.calls == [] and fake.n == 2 and not plan.adaptive


def test_process_restores_torch_threads(tmp_path: Path, ckpt: Path) -> None:
    import torch

    from dgml_viz.commands.heatmaps import process
    from dgml_viz.data.discovery import Source
    from dgml_viz.model.checkpoint import load_checkpoint

    names = _folder(tmp_path / "imgs")
    model = load_checkpoint(ckpt).eval()
    sources = [Source(tmp_path / "imgs" / n, n) for n in names]
    before = torch.get_num_threads()
    for threads in (1, None):
        recs = list(process(model, sources, tmp_path / f"out{threads}", groups=[0, 1, 2], fmt="jpg",
                            options=RenderOptions(), batch_size=1, workers=2, torch_threads=threads))
        assert sorted(r["path"] for r in recs if r["status"] == "ok") == names
        assert torch.get_num_threads() == before
