"""`dgml-viz heatmaps` end to end on a folder mixing good photos and every kind of bad file."""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CROP_TRANSFORM
from PIL import Image
from skimage import data

from dgml_viz.cli import main
from dgml_viz.data.discovery import collect_sources, shard_of
from dgml_viz.data import images as images_mod
from dgml_viz.model import create_model
from dgml_viz.model.checkpoint import save_checkpoint

GOOD = ["astronaut.png", "sub/chelsea.jpg", "gray.png", "rgba.png", "d16.png", "palette.png", "exif.jpg"]
BAD = {"empty.jpg": "empty", "trunc.png": "truncated", "notimg.jpg": "not an image", "bomb.png": "too large",
       "locked.png": "permission denied"}


def _small(img: np.ndarray, side: int = 150) -> np.ndarray:
    h, w = img.shape[:2]
    f = side / max(h, w)
    return cv2.resize(img, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA)


def _good_folder(root: Path) -> dict[str, tuple[int, int]]:
    """Write the good images; returns rel path -> displayed (width, height)."""
    (root / "sub").mkdir(parents=True, exist_ok=True)
    astro, cat = _small(data.astronaut()), _small(data.chelsea())
    Image.fromarray(astro).save(root / "astronaut.png")
    Image.fromarray(cat).save(root / "sub/chelsea.jpg", quality=90)
    Image.fromarray(cv2.cvtColor(cat, cv2.COLOR_RGB2GRAY)).save(root / "gray.png")
    Image.fromarray(np.dstack([astro, np.full(astro.shape[:2], 180, np.uint8)])).save(root / "rgba.png")
    Image.fromarray((cv2.cvtColor(astro, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)).save(root / "d16.png")
    Image.fromarray(cat).quantize(32).save(root / "palette.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_small(data.coffee(), 120)).save(root / "exif.jpg", exif=exif.tobytes())
    (root / "notes.txt").write_text("not listed: not an image suffix")
    sizes = {}
    for rel in GOOD:
        w, h = Image.open(root / rel).size
        sizes[rel] = (h, w) if rel == "exif.jpg" else (w, h)
    return sizes


def _bad_files(root: Path) -> None:
    (root / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(_small(data.rocket())).save(buf, "PNG")
    (root / "trunc.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (root / "notimg.jpg").write_text("<html>this is not a jpeg</html>")
    Image.new("L", (400, 400)).save(root / "bomb.png")  # 160k px > --max-pixels 100000
    Image.fromarray(_small(data.rocket())).save(root / "locked.png")


@pytest.fixture()
def deny_locked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, where chmod 000 does not stop reads: make opening locked.png fail with EACCES."""
    real_open = open

    def fake_open(path: object, *args: object, **kwargs: object) -> object:
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(images_mod, "open", fake_open, raising=False)


def _manifest(out: Path, name: str = "manifest.jsonl") -> dict[str, dict]:
    lines = (out / name).read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert len({r["path"] for r in recs}) == len(recs)  # compacted: one line per image
    return {r["path"]: r for r in recs}


def test_mixed_folder(tmp_path: Path, ckpt: Path, deny_locked: None, caplog: pytest.LogCaptureFixture) -> None:
    src, out = tmp_path / "imgs", tmp_path / "out"
    sizes = _good_folder(src)
    _bad_files(src)
    rc = main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(out), "--batch-size", "3",
               "--workers", "2", "--max-pixels", "100000", "--contour", "0.5", "--format", "png"])
    assert rc == 2
    recs = _manifest(out)
    assert set(recs) == set(GOOD) | set(BAD)  # notes.txt is not an image suffix
    for rel, word in BAD.items():
        assert recs[rel]["status"] == "error"
        msg = recs[rel]["error"]
        assert word in msg and rel.split("/")[-1] in msg and "\n" not in msg, msg
        assert sum(rel in r.getMessage() for r in caplog.records if r.levelname == "ERROR") == 1
    for rel in GOOD:
        rec = recs[rel]
        assert rec["status"] == "ok", rec
        folder = out / rel
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            ["group0.png", "group1.png", "group2.png", "composite.png", "maps.npz"])
        for name in ("group0.png", "composite.png"):
            im = Image.open(folder / name)
            assert im.size == sizes[rel] and im.mode == "RGB"  # at the original, EXIF-corrected size
        z = np.load(folder / "maps.npz")
        assert z["attention"].shape == (3, 12, 12)
        assert np.allclose(z["attention"].sum((1, 2)), 1, atol=1e-4)
        assert np.isclose(np.linalg.norm(z["embedding"]), 1, atol=1e-4)
        assert json.loads(str(z["geometry"]))["original"] == list(sizes[rel])
    assert [p.name for p in out.rglob(".*")] == [".dgml-viz.lock"]  # the lock stays; no temp files left behind
    page = (out / "index.html").read_text()
    assert all(rel in page for rel in GOOD) and "5 failed" in page


def test_batched_equals_per_sample_and_groups_format(tmp_path: Path, ckpt: Path) -> None:
    src = tmp_path / "imgs"
    _good_folder(src)
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(a), "--batch-size", "4"]) == 0
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(b), "--batch-size", "1",
                 "--groups", "0,2", "--format", "jpg", "--size", "64", "--workers", "1"]) == 0
    for rel in GOOD:
        za, zb = np.load(a / rel / "maps.npz"), np.load(b / rel / "maps.npz")
        assert np.allclose(za["attention"], zb["attention"], atol=1e-5)
        assert np.allclose(za["embedding"], zb["embedding"], atol=1e-5)
        assert sorted(p.name for p in (b / rel).iterdir()) == ["composite.jpg", "group0.jpg", "group2.jpg", "maps.npz"]
        assert max(Image.open(b / rel / "group0.jpg").size) == 64


def test_resume_redoes_nothing(tmp_path: Path, ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = tmp_path / "imgs", tmp_path / "out"
    _good_folder(src)
    args = ["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(out)]
    assert main(args) == 0
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("manifest.jsonl", "index.html"))
    before = {p: p.stat().st_mtime_ns for p in files}
    manifest_before = _manifest(out)
    calls: list[object] = []
    real = images_mod.load_image_reduced
    monkeypatch.setattr(images_mod, "load_image_reduced", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert main(args + ["--resume"]) == 0
    assert calls == []  # nothing decoded, nothing rendered
    assert {p: p.stat().st_mtime_ns for p in files} == before
    assert _manifest(out) == manifest_before
    # an output that went missing is redone, and only that image
    (out / "gray.png" / "group1.jpg").unlink()
    assert main(args + ["--resume"]) == 0
    assert [Path(str(c[0])).name for c in calls] == ["gray.png"]
    assert (out / "gray.png" / "group1.jpg").is_file()


def test_shards_are_disjoint_and_cover_everything(tmp_path: Path, ckpt: Path) -> None:
    src, out = tmp_path / "imgs", tmp_path / "out"
    _good_folder(src)
    seen: list[set[str]] = []
    for i in range(3):
        assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(out),
                     "--shard", f"{i}/3"]) == 0
        seen.append(set(_manifest(out, f"manifest.{i}-of-3.jsonl")))
        assert all(shard_of(rel, 3) == i for rel in seen[-1])
        page = (out / f"index.{i}-of-3.html").read_text()
        assert all(rel in page for rel in seen[-1])
    assert set().union(*seen) == set(GOOD)
    assert sum(len(s) for s in seen) == len(GOOD)
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(out), "--shard", "3/3"]) == 2


def test_list_file_single_image_and_env_bomb_limit(tmp_path: Path, ckpt: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "imgs"
    _good_folder(src)
    (tmp_path / "list.txt").write_text("# two images\nimgs/gray.png\n\nimgs/sub/chelsea.jpg\n")
    assert [s.rel for s in collect_sources(tmp_path / "list.txt")] == ["imgs/gray.png", "imgs/sub/chelsea.jpg"]
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(tmp_path / "list.txt"),
                 "--out", str(tmp_path / "o1")]) == 0
    assert set(_manifest(tmp_path / "o1")) == {"imgs/gray.png", "imgs/sub/chelsea.jpg"}
    monkeypatch.setenv("DGML_VIZ_MAX_PIXELS", "1000")
    assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src / "gray.png"),
                 "--out", str(tmp_path / "o2")]) == 2
    assert "too large" in _manifest(tmp_path / "o2")["gray.png"]["error"]


def test_output_folder_inside_input_is_not_rescanned(tmp_path: Path, ckpt: Path) -> None:
    src = tmp_path / "imgs"
    _good_folder(src)
    for _ in range(2):
        assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(src / "maps")]) == 0
    assert set(_manifest(src / "maps")) == set(GOOD)


def test_bad_checkpoint_and_head_without_maps(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.png").write_bytes(b"")
    (tmp_path / "bad.pt").write_bytes(b"nope")
    assert main(["heatmaps", "--ckpt", str(tmp_path / "bad.pt"), "--images", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dgml-viz heatmaps: error:") and "bad.pt" in err and "\n" not in err
    save_checkpoint(create_model("small_cnn", groups=2, dim=16, head="gap"), tmp_path / "gap.pt",
                    transform=CROP_TRANSFORM)
    assert main(["heatmaps", "--ckpt", str(tmp_path / "gap.pt"), "--images", str(tmp_path)]) == 2
    assert "no spatial maps" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="running as root: chmod 000 does not block reads "
                                              "(covered by the monkeypatched test above)")
def test_real_unreadable_file(tmp_path: Path, ckpt: Path) -> None:
    src = tmp_path / "imgs"
    src.mkdir()
    Image.fromarray(_small(data.rocket())).save(src / "locked.png")
    (src / "locked.png").chmod(0)
    try:
        assert main(["heatmaps", "--ckpt", str(ckpt), "--images", str(src), "--out", str(tmp_path / "o")]) == 2
    finally:
        (src / "locked.png").chmod(0o644)
    assert "permission denied" in _manifest(tmp_path / "o")["locked.png"]["error"]
