"""The persistent index: stored rows equal a direct forward, FAISS search equals a numpy brute force
(whole embedding and group subsets), incremental / resumable / sharded builds, atomic writes."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgml_viz.data.transforms import compute_geometry
from dgml_viz.errors import ConfigError, DatasetError
from dgml_viz.index import builder, store
from dgml_viz.index.builder import build_index, merge_shards, shard_dir
from dgml_viz.index.search import Searcher
from dgml_viz.index.store import open_index
from dgml_viz.model.checkpoint import load_checkpoint

N_CLASSES, PER_CLASS = 32, 8  # 256 images


def write_images(folder: Path, per_class: int = PER_CLASS, classes: int = N_CLASSES) -> list[Path]:
    """SyntheticParts held-out images as PNGs in ``folder/<class>/``; every third one cut to a non-square shape."""
    from dgml_viz.data import SyntheticParts

    ds = SyntheticParts("test", seed=0, image_size=48, samples_per_class=per_class, distractors=2, cache=False)
    out = []
    for i in range(classes * per_class):
        rgb = (ds.scene(i).rgb * 255 + 0.5).astype(np.uint8)
        if i % 3 == 1:
            rgb = rgb[:, : 48 - 2 * (i % 7) - 4]
        elif i % 3 == 2:
            rgb = rgb[: 40 - (i % 5)]
        p = folder / f"class{ds.labels[i]:02d}" / f"img{i:04d}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(rgb)).save(p)
        out.append(p)
    return out


def brute_force(groups: np.ndarray, queries: np.ndarray, sel: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent top-k: mean cosine of the selected groups, full argsort."""
    sims = np.einsum("qkd,nkd->qnk", queries[:, sel].astype(np.float64), groups[:, sel].astype(np.float64)).mean(-1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(sims, order, 1)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("imgs")
    write_images(root)
    (root / "class00" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    return root


@pytest.fixture(scope="module")
def built(ckpt: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("index") / "ix"
    build_index(ckpt, images, out, batch_size=32, progress=False)
    return out


REAL_RUN_BATCH = builder.run_batch


class Crash(RuntimeError):
    """A simulated crash in the middle of a run."""


class Counter:
    """Wraps builder.run_batch, counting the images forwarded."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.images = 0
        self.calls = 0
        self.fail_after = fail_after
        self.real = REAL_RUN_BATCH

    def __call__(self, model, tensors, **kw):  # noqa: ANN001,ANN003
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise Crash("simulated crash")
        self.calls += 1
        self.images += len(tensors)
        return self.real(model, tensors, **kw)


# ----------------------------------------------------------------------------- content
def test_rows_equal_a_direct_forward_and_geometry(built: Path, ckpt: Path, images: Path) -> None:
    idx = open_index(built)
    assert len(idx) == N_CLASSES * PER_CLASS
    assert idx.paths == sorted(idx.paths)
    assert [e["path"] for e in idx.errors] == [str((images / "class00" / "broken.png").resolve())]
    assert idx.sha256 == store.file_sha256(ckpt) and idx.checkpoint["config"]["backbone"] == "small_cnn"
    assert idx.groups.dtype == np.float32 and idx.attention.dtype == np.float16
    model = load_checkpoint(ckpt)
    for i in (0, 1, 2, 101, 255):  # one image at a time, decoded by PIL + the transform independently
        path = Path(idx.paths[i])
        rgb = np.asarray(Image.open(path).convert("RGB"))
        t = model.transform
        pil = Image.fromarray(rgb)
        geo = compute_geometry(pil.width, pil.height, t)
        crop = np.asarray(pil.resize(geo.resized, Image.BILINEAR).crop(
            (geo.crop[0], geo.crop[1], geo.crop[0] + geo.size, geo.crop[1] + geo.size))).astype(np.float32)
        x = (torch.from_numpy(crop).permute(2, 0, 1) / 255 - torch.tensor(t["mean"])[:, None, None]) \
            / torch.tensor(t["std"])[:, None, None]
        with torch.no_grad():
            out = model(x[None])
        np.testing.assert_allclose(idx.groups[i], out.groups[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(idx.attention[i].astype(np.float32), out.attention[0].numpy(), rtol=2e-3, atol=1e-6)
        assert idx.geometry(i) == geo
        st = path.stat()
        assert idx.stamp(i) == (st.st_size, st.st_mtime_ns)
    np.testing.assert_allclose(np.linalg.norm(idx.groups, axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("sel", [None, [0], [1], [0, 2], [1, 2]])
def test_search_equals_numpy_brute_force(built: Path, sel: list[int] | None) -> None:
    idx = open_index(built)
    groups = np.asarray(idx.groups)
    queries = groups[::9]
    res = Searcher(idx).search(queries, k=10, groups=sel)
    want_i, want_s = brute_force(groups, queries, sel or [0, 1, 2], 10)
    np.testing.assert_allclose(res.similarity, want_s, atol=1e-5)
    # identical rankings, except where two neighbours tie within float32 rounding
    same = res.index == want_i
    close = np.abs(np.take_along_axis(
        np.einsum("qkd,nkd->qnk", queries[:, sel or [0, 1, 2]], groups[:, sel or [0, 1, 2]]).mean(-1),
        res.index, 1) - want_s) < 1e-5
    assert (same | close).all() and same.mean() > 0.95
    np.testing.assert_allclose(res.group_similarity, np.einsum("qkd,qnkd->qnk", queries, groups[res.index]),
                               atol=1e-5)
    np.testing.assert_allclose(res.group_similarity[..., res.groups].mean(-1), res.similarity, atol=1e-5)


def test_exclude_and_approximate_methods(built: Path) -> None:
    idx = open_index(built)
    q = np.asarray(idx.groups[:20])
    exact = Searcher(idx).search(q, k=5, exclude=[[i] for i in range(20)])
    assert all(i not in row for i, row in enumerate(exact.index.tolist()))
    for method in ("hnsw", "ivf"):
        approx = Searcher(idx, method).search(q, k=5, exclude=[[i] for i in range(20)])
        overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(approx.index.tolist(), exact.index.tolist())])
        assert overlap >= 0.8, (method, overlap)
        np.testing.assert_allclose(approx.group_similarity[..., :].mean(-1), approx.similarity, atol=1e-5)


# ----------------------------------------------------------------------------- incremental / resume / shards
@pytest.fixture
def few(images: Path, tmp_path: Path) -> Path:
    """A private copy of 3 classes (24 images) that tests may modify."""
    root = tmp_path / "few"
    for c in ("class00", "class01", "class02"):
        shutil.copytree(images / c, root / c)
    (root / "class00" / "broken.png").unlink()
    return root


def test_incremental_embeds_only_changed_and_new_files(ckpt: Path, few: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ix"
    count = Counter()
    monkeypatch.setattr(builder, "run_batch", count)
    s1 = build_index(ckpt, few, out, batch_size=5, progress=False)
    assert (s1.embedded, count.images) == (24, 24)
    before = open_index(out)
    g_before = np.array(before.groups)

    count.images = 0
    assert build_index(ckpt, few, out, progress=False).embedded == 0 and count.images == 0

    touched = few / "class01" / "img0009.png"
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    Image.open(few / "class00" / "img0000.png").save(few / "class02" / "new.png")
    (few / "class02" / "img0023.png").unlink()
    s3 = build_index(ckpt, few, out, batch_size=5, progress=False)
    assert count.images == 2 and (s3.embedded, s3.reused, s3.removed) == (2, 22, 1)
    after = open_index(out)
    assert len(after) == 24
    assert str((few / "class02" / "img0023.png").resolve()) not in after.paths
    assert str((few / "class02" / "new.png").resolve()) in after.paths
    assert after.stamp(after.position(touched)) == (st.st_size, st.st_mtime_ns + 5_000_000_000)
    for p in before.paths:  # unchanged rows are copied bit for bit
        j = after.position(p)
        if j is not None:
            np.testing.assert_array_equal(after.groups[j], g_before[before.position(p)])
    # only one set of arrays remains on disk
    assert len(list(out.glob("groups.*.npy"))) == 1 and not (out / builder.PENDING).exists()


def test_resume_after_a_crash_keeps_finished_chunks(ckpt: Path, few: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ref = tmp_path / "ref"
    build_index(ckpt, few, ref, batch_size=4, progress=False)
    out = tmp_path / "ix"
    crash = Counter(fail_after=3)  # 3 batches of 4 done, each flushed as a chunk (12 images), then a crash
    monkeypatch.setattr(builder, "run_batch", crash)
    with pytest.raises(Crash):
        build_index(ckpt, few, out, batch_size=4, chunk_size=4, progress=False)
    assert not store.is_index(out) and len(list((out / builder.PENDING).glob("chunk-*.npz"))) == 3
    count = Counter()
    monkeypatch.setattr(builder, "run_batch", count)
    s = build_index(ckpt, few, out, batch_size=4, chunk_size=4, resume=True, progress=False)
    assert (s.resumed, s.embedded, count.images) == (12, 12, 12)
    a, b = open_index(out), open_index(ref)
    assert a.paths == b.paths
    np.testing.assert_allclose(a.groups, b.groups, atol=1e-5)
    np.testing.assert_array_equal(a.info, b.info)
    # without --resume a crashed run's chunks are discarded
    monkeypatch.setattr(builder, "run_batch", Counter(fail_after=2))
    with pytest.raises(Crash):
        build_index(ckpt, few, tmp_path / "ix2", batch_size=4, chunk_size=4, progress=False)
    count.images = 0
    monkeypatch.setattr(builder, "run_batch", count)
    assert build_index(ckpt, few, tmp_path / "ix2", batch_size=4, progress=False).embedded == 24
    assert count.images == 24


def test_shards_merged_equal_unsharded(ckpt: Path, few: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tmp_path / "whole"
    build_index(ckpt, few, whole, batch_size=8, progress=False)
    out = tmp_path / "sharded"
    build_index(ckpt, few, out, shard=(0, 2), batch_size=8, progress=False)
    monkeypatch.setenv("RANK", "1")  # torchrun's environment picks the shard
    monkeypatch.setenv("WORLD_SIZE", "2")
    build_index(ckpt, few, out, batch_size=8, progress=False)
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    s0, s1 = open_index(shard_dir(out, (0, 2))), open_index(shard_dir(out, (1, 2)))
    assert len(s0) and len(s1) and not set(s0.paths) & set(s1.paths) and len(s0) + len(s1) == 24
    merge_shards(out)
    a, b = open_index(out), open_index(whole)
    assert a.paths == b.paths and a.sha256 == b.sha256
    np.testing.assert_allclose(a.groups, b.groups, atol=1e-5)
    np.testing.assert_allclose(a.attention.astype(np.float32), b.attention.astype(np.float32), rtol=2e-3, atol=1e-6)
    np.testing.assert_array_equal(a.info, b.info)


def test_missing_shard_and_other_checkpoint_are_refused(ckpt: Path, few: Path, tmp_path: Path) -> None:
    out = tmp_path / "ix"
    build_index(ckpt, few, out, shard=(0, 3), progress=False)
    with pytest.raises(ConfigError, match="1-of-3, 2-of-3"):
        merge_shards(out)
    from dgml_viz.model import create_model
    from dgml_viz.model.checkpoint import save_checkpoint

    torch.manual_seed(1)
    other = save_checkpoint(create_model("small_cnn", groups=3, dim=48), tmp_path / "other.pt",
                            transform=load_checkpoint(ckpt).transform)
    with pytest.raises(ConfigError, match="another --out or --rebuild") as exc:
        build_index(other, few, out, shard=(0, 3), progress=False)
    assert "\n" not in str(exc.value)
    assert build_index(other, few, out, shard=(0, 3), rebuild=True, progress=False).embedded > 0


# ----------------------------------------------------------------------------- atomicity, bad inputs
def test_a_failed_write_leaves_the_old_index(ckpt: Path, few: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "ix"
    build_index(ckpt, few, out, progress=False)
    manifest = (out / store.MANIFEST).read_text()
    old = open_index(out)
    g_old = np.array(old.groups)
    Image.open(few / "class00" / "img0000.png").save(few / "class01" / "extra.png")

    def boom(*a, **k):  # noqa: ANN002, ANN003
        raise OSError("disk full")

    monkeypatch.setattr(store, "atomic_write_text", boom)
    with pytest.raises(OSError):
        build_index(ckpt, few, out, progress=False)
    monkeypatch.undo()
    assert (out / store.MANIFEST).read_text() == manifest
    again = open_index(out)
    assert again.paths == old.paths
    np.testing.assert_array_equal(again.groups, g_old)
    assert not [f for f in out.iterdir() if f.name.startswith(".") and f.name != builder.PENDING]  # no temp files
    build_index(ckpt, few, out, progress=False)  # the next good write drops the orphaned arrays
    assert len(list(out.glob("groups.*.npy"))) == 1 and len(open_index(out)) == 25


def test_bad_index_folders_are_one_line_errors(tmp_path: Path, built: Path) -> None:
    with pytest.raises(DatasetError, match="no such index folder"):
        open_index(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="not a dgml_viz index"):
        open_index(tmp_path / "empty")
    bad = tmp_path / "bad"
    shutil.copytree(built, bad)
    (bad / store.MANIFEST).write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable index manifest"):
        open_index(bad)
    m = json.loads((built / store.MANIFEST).read_text())
    m["paths"] = m["paths"][:-1]
    (bad / store.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(DatasetError, match="does not match the manifest"):
        open_index(bad)
    (bad / m["arrays"]["groups"]).unlink()
    with pytest.raises(DatasetError, match="missing or corrupt"):
        open_index(bad)
