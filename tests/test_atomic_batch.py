"""AtomicBatch: many files, one durability flush, the same all-or-old guarantee per file as atomic_path."""
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
from dgml_viz.utils.atomic import AtomicBatch, is_temp_name, sweep_temp_files, sync_batches

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


def test_sigkill_never_leaves_a_truncated_final_file(tmp_path: Path) -> None:
    """A process killed at a random moment of a write/flush/rename loop leaves each final file whole
    (some earlier complete version), and only temp files the next run sweeps."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    target = tmp_path / "out" / "big.jpg"
    for delay in (0.05, 0.2, 0.45):
        marker = tmp_path / "marker"
        marker.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(marker)], env=env)
        deadline = time.time() + 60
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = target.read_bytes()
        assert len(data) == 8 << 20 and data == bytes([data[0]]) * len(data)  # whole, one version
        small = target.with_suffix(".npz").read_bytes()
        assert len(small) == 1000 and small == bytes([small[0]]) * 1000
        left = [p for p in target.parent.iterdir() if p.name.startswith(".")]
        assert all(is_temp_name(p.name) for p in left)
        sweep_temp_files(tmp_path, time.time() + 1)
        assert sorted(p.name for p in target.parent.iterdir()) == ["big.jpg", "big.npz"]
