"""``dgml-viz heatmaps`` in forked worker processes: the same outputs and manifest as one process (real photos
written by Pillow, a corrupt file among them); the default forks when the job is big enough; a failed or killed
worker is a one-line error whose finished images stay in the manifest, and ``--resume`` completes the run."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgml_viz.cli import main
from dgml_viz.commands import heatmaps
from dgml_viz.commands.heatmaps import process, read_manifest
from dgml_viz.data.discovery import collect_sources
from dgml_viz.render.panels import RenderOptions
from dgml_viz.utils import processes

pytestmark = pytest.mark.skipif(not processes.can_fork(), reason="worker processes need Linux fork")
FILES = ("group0.jpg", "group1.jpg", "group2.jpg", "composite.jpg")


def _run(ckpt: Path, images: Path, out: Path, *extra: str) -> int:
    return main(["heatmaps", "--ckpt", str(ckpt), "--images", str(images), "--out", str(out), "--batch-size", "4",
                 *extra])


@pytest.fixture(scope="module")
def reference(ckpt: Path, photo_crops: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "out"
    assert _run(ckpt, photo_crops, out, "--processes", "1") == 2  # the corrupt file fails, the rest is ok
    return out


def assert_same_outputs(a: Path, b: Path) -> None:
    ra, rb = read_manifest(a / "manifest.jsonl"), read_manifest(b / "manifest.jsonl")
    assert sorted(ra) == sorted(rb) and len(ra) == 37
    for path, rec in ra.items():
        assert rec["status"] == rb[path]["status"] and rec.get("error", "").replace(str(a), "") == \
            rb[path].get("error", "").replace(str(b), "")
        if rec["status"] != "ok":
            continue
        assert rec["geometry"] == rb[path]["geometry"] and rec["outputs"] == rb[path]["outputs"]
        ma, mb = np.load(a / path / "maps.npz"), np.load(b / path / "maps.npz")
        np.testing.assert_allclose(ma["attention"], mb["attention"], atol=1e-5)
        np.testing.assert_allclose(ma["embedding"], mb["embedding"], atol=1e-5)
        for name in FILES:
            ia = np.asarray(Image.open(a / path / name), np.int16)
            ib = np.asarray(Image.open(b / path / name), np.int16)
            assert ia.shape == ib.shape and np.abs(ia - ib).mean() < 0.05  # forward at 1 vs 2 threads: ~1e-7 apart


def test_two_processes_write_what_one_process_writes(ckpt: Path, photo_crops: Path, reference: Path,
                                                     tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        assert _run(ckpt, photo_crops, tmp_path / "out", "--processes", "2") == 2
    assert "in 2 worker processes" in caplog.text
    assert_same_outputs(tmp_path / "out", reference)
    broken = read_manifest(tmp_path / "out" / "manifest.jsonl")["c1/broken.jpg"]
    assert broken["status"] == "error" and "broken.jpg" in broken["error"]


@pytest.mark.parametrize("batch_size,torch_threads,forks", [(2, None, True), (8, None, False), (2, 2, False)])
def test_default_forks_when_each_worker_gets_a_few_batches(ckpt: Path, photo_crops: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture, batch_size: int,
                                                           torch_threads: int | None, forks: bool) -> None:
    """processes=None: one worker per torch thread when each gets MIN_BATCHES_PER_PROCESS batches (37 images
    in batches of 2: yes; of 8: 5 batches, no); a caller that fixes torch's threads keeps this process."""
    import torch

    from dgml_viz.model.checkpoint import load_checkpoint

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    model = load_checkpoint(ckpt).eval()
    sources = collect_sources(str(photo_crops))
    with caplog.at_level("INFO"):
        recs = list(process(model, sources, tmp_path / "out", groups=[0, 1, 2], fmt="jpg", options=RenderOptions(),
                            batch_size=batch_size, workers=2, torch_threads=torch_threads))
    assert sorted(r["path"] for r in recs) == sorted(s.rel for s in sources)
    assert sum(r["status"] == "ok" for r in recs) == 36
    assert ("in 2 worker processes" in caplog.text) is forks


@pytest.mark.parametrize("action", ["bug", "oserror", "kill"])
def test_a_failed_worker_is_one_error_and_resume_completes(ckpt: Path, photo_crops: Path, reference: Path,
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], action: str) -> None:
    real = heatmaps._decode

    def decode(src, *a, **k):  # noqa: ANN001,ANN002,ANN003 — in whichever worker gets c2/p30.png (fork carries it)
        if src.rel == "c2/p30.png":
            if action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise OSError(28, "No space left on device") if action == "oserror" else RuntimeError("boom")
        return real(src, *a, **k)

    out = tmp_path / "out"
    monkeypatch.setattr(heatmaps, "_decode", decode)
    assert _run(ckpt, photo_crops, out, "--processes", "2") == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    how = {"bug": "failed (traceback logged above)", "oserror": "stopped on the error logged above",
           "kill": "was killed by SIGKILL"}[action]
    assert last.startswith("dgml-viz heatmaps: error: heatmaps-worker-") and how in last
    done = read_manifest(out / "manifest.jsonl")
    assert "c2/p30.png" not in done and len(done) < 37
    for path, rec in done.items():  # what the manifest says is done is on disk, complete
        assert rec["status"] == "error" or all((out / path / n).is_file() for n in (*FILES, "maps.npz"))
    monkeypatch.undo()
    assert _run(ckpt, photo_crops, out, "--processes", "2", "--resume") == 2  # only the corrupt file fails
    assert_same_outputs(out, reference)
    assert [json.loads(line)["path"] for line in (out / "manifest.jsonl").read_text().splitlines()] == \
        sorted(read_manifest(out / "manifest.jsonl"))  # compacted: one line per image


def test_cli_refuses_zero_processes(ckpt: Path, photo_crops: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(ckpt, photo_crops, tmp_path / "out", "--processes", "0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--processes must be >= 1" in err[0]
