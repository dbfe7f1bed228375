"""Background helper threads (dgml_viz.utils.threads): lower priority than the thread running the model."""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgml_viz.utils import threads

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux
def test_pool_threads_run_below_the_caller_and_the_caller_is_untouched() -> None:
    before = _nice()
    with threads.background_pool(2, "t") as pool:
        seen = {pool.submit(_nice).result() for _ in range(8)}
        names = {pool.submit(lambda: threading.current_thread().name).result() for _ in range(8)}
    assert seen == {min(19, before + threads.BACKGROUND_NICE)}
    assert _nice() == before and all(n.startswith("t_") for n in names)


@linux
def test_nice_zero_leaves_the_priority_and_the_default_is_read_per_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    before = _nice()
    with threads.background_pool(1, "t", nice=0) as pool:
        assert pool.submit(_nice).result() == before
    monkeypatch.setattr(threads, "BACKGROUND_NICE", 3)
    with threads.background_pool(1, "t") as pool:
        assert pool.submit(_nice).result() == min(19, before + 3)


def test_elsewhere_nothing_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """On macOS setpriority(PRIO_PROCESS, tid) would address a process with that number: never called."""
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(threads.sys, "platform", "darwin")
    monkeypatch.setattr(threads.os, "setpriority", lambda *a: calls.append(a), raising=False)
    assert threads.lower_priority(10) is False and calls == []


@linux
def test_a_refused_change_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(threads.os, "setpriority", refuse)
    assert threads.lower_priority(10) is False
    with threads.background_pool(1, "t") as pool:
        assert pool.submit(lambda: 7).result() == 7  # the pool works at normal priority


@linux
def test_heatmaps_decodes_and_writes_in_background_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's helper threads (decode, draw + write) run below the main thread, which runs the forward."""
    import torch

    from dgml_viz.commands import heatmaps
    from dgml_viz.data.discovery import Source
    from dgml_viz.model import create_model
    from dgml_viz.render.panels import RenderOptions

    rng = np.random.default_rng(0)
    sources = []
    for i in range(6):
        p = tmp_path / "imgs" / f"{i}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(p)
        sources.append(Source(p, p.name))
    main = _nice()
    seen: dict[str, set[int]] = {"decode": set(), "write": set(), "forward": set()}
    real_decode, real_write = heatmaps._decode, heatmaps._write_outputs

    def decode(*a: object, **k: object) -> object:
        seen["decode"].add(_nice())
        return real_decode(*a, **k)

    def write(*a: object, **k: object) -> object:
        seen["write"].add(_nice())
        return real_write(*a, **k)

    monkeypatch.setattr(heatmaps, "_decode", decode)
    monkeypatch.setattr(heatmaps, "_write_outputs", write)
    import dgml_viz.inference as inference

    forward = inference.run_batch

    def run_batch(*a: object, **k: object) -> object:
        seen["forward"].add(_nice())
        return forward(*a, **k)

    monkeypatch.setattr(inference, "run_batch", run_batch)  # the pipeline imports it when it starts
    torch.manual_seed(0)
    model = create_model("small_cnn", groups=2, dim=8).eval()
    recs = list(heatmaps.process(model, sources, tmp_path / "out", groups=[0, 1], fmt="png", options=RenderOptions(),
                                 batch_size=4, workers=2))
    assert [r["status"] for r in recs] == ["ok"] * 6
    low = min(19, main + threads.BACKGROUND_NICE)
    assert seen == {"decode": {low}, "write": {low}, "forward": {main}}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork + /proc/self/task: Linux")
def test_a_fork_right_after_a_pool_of_matmul_threads_does_not_hang() -> None:
    """MKL's per-thread buffers are freed under a process-wide lock as a thread exits, after Python's join: a
    fork in that moment leaves the child's first matmul spinning (a plain ThreadPoolExecutor here: about
    half of these forks hang). background_pool's exit waits for its threads to be gone from the kernel."""
    import time

    import torch

    grid, wy, wx = torch.randn(16, 3, 7, 7), torch.randn(128, 7), torch.randn(128, 7)

    def job(_: int) -> None:
        for _ in range(5):
            torch.matmul(torch.matmul(wy, grid), wx.T)

    hung = 0
    for _ in range(25):
        with threads.background_pool(2, "mkl") as pool:
            list(pool.map(job, range(4)))
        pid = os.fork()
        if pid == 0:  # pragma: no cover (child)
            torch.set_num_threads(1)
            job(0)
            os._exit(0)
        deadline = time.monotonic() + 10
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                hung += 1
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                break
            time.sleep(0.001)
    assert hung == 0
