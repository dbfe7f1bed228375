"""The index built by forked worker processes equals the one built in one process (order, rows, bad files);
a failed or killed worker is a one-line error that keeps the finished units for ``--resume``; workers die
with a SIGKILLed parent; the process count is chosen and validated as documented."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from dgml_viz.cli import main
from dgml_viz.errors import WorkerError
from dgml_viz.index import builder, store
from dgml_viz.index.builder import build_index
from dgml_viz.index.store import open_index
from dgml_viz.utils import processes as procs_mod

pytestmark = pytest.mark.skipif(not procs_mod.can_fork(), reason="worker processes need Linux fork")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos(photo_crops: Path) -> Path:
    return photo_crops


@pytest.fixture(scope="module")
def reference(ckpt: Path, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ix"
    stats = build_index(ckpt, photos, out, batch_size=4, processes=1, progress=False)
    assert stats.processes == 1 and stats.decode in ("overlapped", "phased")
    return out


def assert_same_index(a_dir: Path, b_dir: Path) -> None:
    a, b = open_index(a_dir), open_index(b_dir)
    assert a.paths == b.paths  # same (input) order
    np.testing.assert_array_equal(a.info, b.info)
    np.testing.assert_allclose(np.asarray(a.groups, np.float32), np.asarray(b.groups, np.float32), atol=1e-5)
    np.testing.assert_allclose(np.asarray(a.attention, np.float32), np.asarray(b.attention, np.float32), atol=2e-3)
    assert sorted(e["path"] for e in a.errors) == sorted(e["path"] for e in b.errors)


@pytest.mark.parametrize("processes,chunk", [(2, 1024), (3, 8)])
def test_forked_workers_equal_one_process(ckpt: Path, photos: Path, reference: Path, tmp_path: Path,
                                          processes: int, chunk: int) -> None:
    stats = build_index(ckpt, photos, tmp_path / "ix", batch_size=4, processes=processes, chunk_size=chunk,
                        progress=False)
    assert (stats.processes, stats.decode, stats.embedded, stats.failed) == (processes, "inline", 36, 1)
    assert_same_index(tmp_path / "ix", reference)
    assert not (tmp_path / "ix" / builder.PENDING).exists()
    # a second run has nothing to do and forks nothing
    again = build_index(ckpt, photos, tmp_path / "ix", batch_size=4, processes=processes, progress=False)
    assert (again.embedded, again.reused, again.processes) == (0, 36, 1)


@pytest.mark.parametrize("batch_size,expected", [(4, (2, "inline")), (8, (1, "overlapped"))])
def test_default_forks_when_each_worker_gets_a_few_batches(ckpt: Path, photos: Path, reference: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           batch_size: int, expected: tuple[int, str]) -> None:
    """processes=None: one worker per torch thread when each gets MIN_BATCHES_PER_PROCESS batches (37 files
    in batches of 4: yes; of 8: 5 batches, no: this process, decoding overlapped for this light model).
    Same index either way."""
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    stats = build_index(ckpt, photos, tmp_path / "ix", batch_size=batch_size, chunk_size=8, progress=False)
    assert (stats.processes, stats.decode) == expected and stats.embedded == 36
    assert_same_index(tmp_path / "ix", reference)


def _fail_on(monkeypatch: pytest.MonkeyPatch, name: str, action: str) -> None:
    """In whichever worker decodes ``name``: raise a bug, an OSError, or SIGKILL itself (fork carries the patch)."""
    real = builder.prepare_image

    def prepare(path, *a, **k):  # noqa: ANN001,ANN002,ANN003
        if Path(path).name == name:
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(28, "No space left on device") if action == "oserror" else RuntimeError("boom")
        return real(path, *a, **k)

    monkeypatch.setattr(builder, "prepare_image", prepare)


@pytest.mark.parametrize("action,how", [("bug", "failed (traceback logged above)"),
                                        ("oserror", "stopped on the error logged above"),
                                        ("kill", "was killed by SIGKILL")])
def test_a_failed_worker_is_one_error_and_resume_completes(ckpt: Path, photos: Path, reference: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           action: str, how: str) -> None:
    out = tmp_path / "ix"
    # 37 files in input order c0/ (9), c1/ (10), c2/ (9), c3/ (9): 10 units of 4; c2/p30.png is file 26, unit 6
    _fail_on(monkeypatch, "p30.png", action)
    with pytest.raises(WorkerError) as err:
        build_index(ckpt, photos, out, batch_size=4, processes=2, chunk_size=4, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("index-worker-") and how in msg
    assert not store.is_index(out)
    kept = sorted((out / builder.PENDING).glob("chunk-*.npz"))
    # finished units stay (the other worker may have finished all 9 before it was stopped); the failed one never wrote
    assert 1 <= len(kept) <= 9 and not (out / builder.PENDING / "chunk-000006.npz").exists()
    monkeypatch.undo()
    stats = build_index(ckpt, photos, out, batch_size=4, processes=2, chunk_size=4, resume=True, progress=False)
    assert stats.resumed > 0 and stats.resumed + stats.embedded == 36
    assert_same_index(out, reference)


KILL_SCRIPT = r"""
import sys, time
from pathlib import Path
from dgml_viz.index import builder

real, flag = builder.prepare_image, Path(sys.argv[4])

def slow(path, *a, **k):
    import os
    (flag / str(os.getpid())).touch()
    time.sleep(0.2)
    return real(path, *a, **k)

builder.prepare_image = slow
builder.build_index(sys.argv[1], sys.argv[2], sys.argv[3], batch_size=2, processes=2, chunk_size=4, progress=False)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_workers_die_with_a_sigkilled_parent(ckpt: Path, photos: Path, tmp_path: Path) -> None:
    flags = tmp_path / "pids"
    flags.mkdir()
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DGML_TEST_RUN": uuid.uuid4().hex}
    parent = subprocess.Popen([sys.executable, str(script), str(ckpt), str(photos), str(tmp_path / "ix"), str(flags)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while len(list(flags.iterdir())) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.05)
        workers = [int(p.name) for p in flags.iterdir()]
        assert len(workers) == 2 and parent.pid not in workers, "two worker processes should be decoding"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers), "a worker outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for w in [int(p.name) for p in flags.iterdir()]:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_cli_processes(ckpt: Path, photos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["index", "--ckpt", str(ckpt), "--images", str(photos), "--out", str(tmp_path / "ix"), "--batch-size", "4"]
    assert main([*base, "--processes", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--processes" in err[0]
    assert main([*base, "--processes", "2"]) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (doc["processes"], doc["decode"], doc["embedded"]) == (2, "inline", 36)
