"""AtomicBatch: many files, one durability flush, the same all-or-old guarantee per file as atomic_path;
AtomicFolder: a new folder of files published with one rename."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dgml_viz.utils import atomic
from dgml_viz.utils.atomic import (AtomicBatch, AtomicFolder, is_temp_dir_name, is_temp_name, sweep_temp_files,
                                    sync_batches)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def flushes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count syncfs and fsync calls (the real ones still run)."""
    counts = {"syncfs": 0, "fsync": 0}
    real_syncfs, real_fsync = atomic._syncfs, os.fsync

    def syncfs(path: Path) -> bool:
        counts["syncfs"] += 1
        return real_syncfs(path)

    def fsync(fd: int) -> None:
        counts["fsync"] += 1
        real_fsync(fd)

    monkeypatch.setattr(atomic, "_syncfs", syncfs)
    monkeypatch.setattr(atomic.os, "fsync", fsync)
    return counts


def test_files_appear_whole_with_a_plain_open_mode(tmp_path: Path, flushes: dict[str, int]) -> None:
    with AtomicBatch() as batch:
        for i in range(20):
            batch.write(tmp_path / f"img{i % 4}" / f"f{i}.jpg", bytes([i]) * (1000 + i))
        assert not any((tmp_path / f"img{i % 4}" / f"f{i}.jpg").exists() for i in range(20))  # nothing before commit
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    for i in range(20):
        p = tmp_path / f"img{i % 4}" / f"f{i}.jpg"
        assert p.read_bytes() == bytes([i]) * (1000 + i)
        assert stat.S_IMODE(p.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert not [p for p in tmp_path.rglob(".*")]  # no temp file left
    if atomic._SYNCFS is not None:  # Linux: one flush for the 20 files, no per-file fsync
        assert flushes == {"syncfs": 1, "fsync": 0}
    else:
        assert flushes["fsync"] == 20


def test_fallback_fsyncs_every_file_and_durable_false_flushes_nothing(tmp_path: Path, flushes: dict[str, int],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(atomic, "_SYNCFS", None)  # e.g. not Linux
    with AtomicBatch() as batch:
        for i in range(5):
            batch.write(tmp_path / f"{i}.png", b"png")
    assert flushes["fsync"] == 5
    with AtomicBatch(durable=False) as batch:
        batch.write(tmp_path / "n.png", b"png")
    assert flushes["fsync"] == 5 and (tmp_path / "n.png").read_bytes() == b"png"


def test_several_batches_share_one_flush(tmp_path: Path, flushes: dict[str, int]) -> None:
    batches = [AtomicBatch() for _ in range(4)]
    for i, b in enumerate(batches):
        b.write(tmp_path / str(i) / "a.npz", b"a")
        b.write(tmp_path / str(i) / "b.jpg", b"b")
    sync_batches(batches)
    before = dict(flushes)
    assert [p.name for p in batches[2].commit()] == ["a.npz", "b.jpg"]
    assert flushes == before  # already flushed: commit only renames
    batches[3].discard()
    for b in batches[:2]:
        b.commit()
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "0/a.npz", "0/b.jpg", "1/a.npz", "1/b.jpg", "2/a.npz", "2/b.jpg"]


def test_exception_keeps_old_files_and_removes_temps(tmp_path: Path) -> None:
    (tmp_path / "keep.jpg").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with AtomicBatch() as batch:
            batch.write(tmp_path / "keep.jpg", b"new")
            batch.write(tmp_path / "other.jpg", b"new")
            raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["keep.jpg"] and (tmp_path / "keep.jpg").read_bytes() == b"old"


def test_a_failing_rename_publishes_nothing_after_it_and_leaves_no_temp(tmp_path: Path) -> None:
    batch = AtomicBatch(durable=False)
    batch.write(tmp_path / "a.jpg", b"a")
    batch.write(tmp_path / "b" / "x.jpg", b"b")
    batch.write(tmp_path / "c.jpg", b"c")
    (tmp_path / "b" / "x.jpg").mkdir()  # a folder where the second file should go: its rename fails
    (tmp_path / "b" / "x.jpg" / "f").write_text("occupied")
    with pytest.raises(OSError):
        batch.commit()
    assert (tmp_path / "a.jpg").read_bytes() == b"a" and not (tmp_path / "c.jpg").exists()
    assert not [p for p in tmp_path.rglob(".*")]


def test_temp_names_are_the_sweepable_pattern(tmp_path: Path) -> None:
    batch = AtomicBatch()
    for name in ("composite.jpg", "maps.npz", "README"):
        batch.write(tmp_path / name, b"x")
    temps = [p for p in tmp_path.iterdir()]
    assert len(temps) == 3 and all(is_temp_name(p.name) for p in temps)
    assert sorted(sweep_temp_files(tmp_path, time.time() + 1)) == sorted(temps)
    batch.discard()  # already gone: no error


CHILD = """
import os, sys
from pathlib import Path
from dgml_viz.utils.atomic import AtomicBatch
target, marker = Path(sys.argv[1]), Path(sys.argv[2])
i = 0
while True:
    data = bytes([i % 251]) * (8 << 20)  # 8 MB: a kill often lands mid-write
    with AtomicBatch() as batch:
        batch.write(target, data)
        batch.write(target.with_suffix('.npz'), data[:1000])
    marker.touch()
    i += 1
"""


def _kill_mid_loop(code: str, target: Path, marker: Path, delay: float) -> None:
    """Run ``code`` (a write loop touching ``marker`` after each round) and SIGKILL it ``delay`` s after
    its first round."""
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code, str(target), str(marker)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_never_leaves_a_truncated_final_file(tmp_path: Path) -> None:
    """A process killed at a random moment of a write/flush/rename loop leaves each final file whole
    (some earlier complete version), and only temp files the next run sweeps."""
    target = tmp_path / "out" / "big.jpg"
    for delay in (0.05, 0.2, 0.45):
        _kill_mid_loop(CHILD, target, tmp_path / "marker", delay)
        data = target.read_bytes()
        assert len(data) == 8 << 20 and data == bytes([data[0]]) * len(data)  # whole, one version
        small = target.with_suffix(".npz").read_bytes()
        assert len(small) == 1000 and small == bytes([small[0]]) * 1000
        left = [p for p in target.parent.iterdir() if p.name.startswith(".")]
        assert all(is_temp_name(p.name) for p in left)
        sweep_temp_files(tmp_path, time.time() + 1)
        assert sorted(p.name for p in target.parent.iterdir()) == ["big.jpg", "big.npz"]


# --------------------------------------------------------------------------- AtomicFolder: one image's folder
def _renames(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record os.rename / os.replace calls made by the atomic module (the real ones still run)."""
    calls: list[tuple[str, str]] = []
    real_rename, real_replace = os.rename, os.replace

    def rename(src: str, dst: str) -> None:
        calls.append(("rename", os.path.basename(dst)))
        real_rename(src, dst)

    def replace(src: str, dst: str) -> None:
        calls.append(("replace", os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    monkeypatch.setattr(atomic.os, "replace", replace)
    return calls


def test_new_folder_is_published_with_one_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 flushes: dict[str, int]) -> None:
    calls = _renames(monkeypatch)
    target = tmp_path / "sub" / "img1.png"  # the parent does not exist either
    with AtomicFolder(target) as out:
        out.write_file("group0.jpg", b"g0")
        out.write_file("maps.npz", b"m" * 100_000)
        assert not target.exists()  # nothing visible before the commit
    assert calls == [("rename", "img1.png")] and flushes["syncfs"] == 1
    assert (target / "group0.jpg").read_bytes() == b"g0" and (target / "maps.npz").read_bytes() == b"m" * 100_000
    assert sorted(p.name for p in target.parent.iterdir()) == ["img1.png"]  # no staging folder left
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "f").write_bytes(b"")
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE((target / "maps.npz").stat().st_mode) == stat.S_IMODE((plain / "f").stat().st_mode)


def test_existing_folder_gets_a_temp_name_per_file_and_keeps_its_other_files(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "img1.png"
    target.mkdir()
    (target / "group0.jpg").write_bytes(b"old")
    (target / "notes.txt").write_bytes(b"mine")
    calls = _renames(monkeypatch)
    with AtomicFolder(target) as out:
        out.write_file("group0.jpg", b"new")
        out.write_file("maps.npz", b"m")
        assert (target / "group0.jpg").read_bytes() == b"old"
    assert calls == [("replace", "group0.jpg"), ("replace", "maps.npz")]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {"group0.jpg": b"new", "maps.npz": b"m",
                                                                  "notes.txt": b"mine"}


def test_folder_that_appears_while_staging_gets_the_files_one_by_one(tmp_path: Path) -> None:
    target = tmp_path / "img1.png"
    out = AtomicFolder(target)
    out.write_file("a.jpg", b"a")
    out.write_file("b.jpg", b"b")
    target.mkdir()  # e.g. another writer of the same folder
    (target / "other").write_bytes(b"o")
    assert sorted(p.name for p in out.commit()) == ["a.jpg", "b.jpg"]
    assert {p.name: p.read_bytes() for p in target.iterdir()} == {"a.jpg": b"a", "b.jpg": b"b", "other": b"o"}
    assert [p.name for p in tmp_path.iterdir()] == ["img1.png"]


def test_a_file_in_the_folders_place_fails_the_commit_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "img1.png"
    out = AtomicFolder(target)
    out.write_file("a.jpg", b"a")
    target.write_bytes(b"a file, not a folder")
    with pytest.raises(OSError):
        out.commit()
    assert target.read_bytes() == b"a file, not a folder" and [p.name for p in tmp_path.iterdir()] == ["img1.png"]
    with pytest.raises(OSError):  # and when it is there from the start, the first write says so
        with AtomicFolder(target) as again:
            again.write_file("a.jpg", b"a")
    assert [p.name for p in tmp_path.iterdir()] == ["img1.png"]


def test_discard_and_exceptions_leave_no_folder(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with AtomicFolder(tmp_path / "img1.png") as out:
            out.write_file("a.jpg", b"a")
            raise RuntimeError("boom")
    out = AtomicFolder(tmp_path / "img2.png")
    out.write_file("a.jpg", b"a")
    out.discard()
    out.discard()  # twice: no error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["", ".", "..", "sub/a.jpg"])
def test_write_file_takes_plain_names_only(tmp_path: Path, name: str) -> None:
    out = AtomicFolder(tmp_path / "img1.png")
    with pytest.raises(ValueError):
        out.write_file(name, b"x")
    out.discard()


def test_sweep_removes_stale_staging_folders_only(tmp_path: Path) -> None:
    out = AtomicFolder(tmp_path / "d" / "img1.png")
    out.write_file("a.jpg", b"a")
    stale = next((tmp_path / "d").iterdir())
    assert is_temp_dir_name(stale.name) and not is_temp_dir_name("img1.png") and not is_temp_dir_name(".git")
    fresh = AtomicFolder(tmp_path / "d" / "img2.png")  # staged after the cut-off: a live run's
    fresh.write_file("a.jpg", b"a")
    odd = tmp_path / "d" / ".x.png.0123abcd.partial"  # the pattern, but holding a folder: not ours
    (odd / "deeper").mkdir(parents=True)
    os.utime(stale, (time.time() - 5, time.time() - 5))
    os.utime(odd, (time.time() - 5, time.time() - 5))
    assert sweep_temp_files(tmp_path, time.time() - 1) == [stale]
    assert not stale.exists() and odd.exists()
    assert [p.name for p in fresh.commit()] == ["a.jpg"]


CHILD_FOLDERS = """
import sys
from pathlib import Path
from dgml_viz.utils.atomic import AtomicFolder
root, marker = Path(sys.argv[1]), Path(sys.argv[2])
i = 0
while True:
    data = bytes([i % 251]) * (4 << 20)
    with AtomicFolder(root / f"img{i:05d}") as out:
        out.write_file("big.jpg", data)
        out.write_file("maps.npz", data[:1000])
    marker.touch()
    i += 1
"""


def test_sigkill_never_leaves_a_partial_image_folder(tmp_path: Path) -> None:
    """Killed at a random moment, every image folder that exists holds all its files, whole; what is left
    besides is a staging folder the next run sweeps."""
    root = tmp_path / "out"
    for delay in (0.05, 0.2, 0.45):
        _kill_mid_loop(CHILD_FOLDERS, root, tmp_path / "marker", delay)
        for folder in (p for p in root.iterdir() if not p.name.startswith(".")):
            big, small = (folder / "big.jpg").read_bytes(), (folder / "maps.npz").read_bytes()
            assert len(big) == 4 << 20 and big == bytes([big[0]]) * len(big)
            assert small == big[:1000]
        assert all(is_temp_dir_name(p.name) for p in root.iterdir() if p.name.startswith("."))
        sweep_temp_files(root, time.time() + 1)
        assert not [p for p in root.iterdir() if p.name.startswith(".")]
