"""utils.processes.run_forked: every unit runs exactly once, in a child with the asked torch threads; progress
adds up; a failing child is one WorkerError line; the parent's unflushed output is not repeated by children."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dgml_viz.errors import ConfigError, WorkerError
from dgml_viz.utils import processes

pytestmark = pytest.mark.skipif(not processes.can_fork(), reason="needs Linux fork")
ROOT = Path(__file__).resolve().parents[1]


def test_each_unit_once_in_children_with_their_threads(tmp_path: Path) -> None:
    import torch

    parent = os.getpid()

    def work(unit: int, report) -> None:  # noqa: ANN001
        torch.nn.Conv2d(3, 8, 3)(torch.randn(4, 3, 64, 64))  # runs (no hang) on the child's one thread
        (tmp_path / f"{unit}-{os.getpid()}-{torch.get_num_threads()}").touch()
        report(unit + 1)

    seen: list[int] = []
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:  # the parent's 2-thread OpenMP team exists before the fork (a child using it would hang)
        torch.nn.Conv2d(3, 8, 3)(torch.randn(4, 3, 64, 64))
        processes.run_forked(work, 11, 3, progress=seen.append, poll_s=0.01)
    finally:
        torch.set_num_threads(old)
    done = [f.name.split("-") for f in tmp_path.iterdir()]
    assert sorted(int(u) for u, _, _ in done) == list(range(11))
    assert {int(t) for _, _, t in done} == {1} and parent not in {int(p) for _, p, _ in done}
    assert 1 <= len({p for _, p, _ in done}) <= 3
    assert sum(seen) == sum(range(1, 12))


def test_a_failing_child_is_one_line(tmp_path: Path) -> None:
    def work(unit: int, report) -> None:  # noqa: ANN001
        if unit == 2:
            raise ValueError("bad unit")

    with pytest.raises(WorkerError) as err:
        processes.run_forked(work, 6, 2, name="t")
    assert str(err.value).startswith("t-") and "failed (traceback logged above)" in str(err.value)
    assert "\n" not in str(err.value)


def test_unflushed_parent_output_is_not_repeated(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("import sys\nfrom dgml_viz.utils.processes import run_forked\n"
                      "sys.stdout.write('before ')\nrun_forked(lambda u, r: r(1), 4, 2)\nsys.stdout.write('after')\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout == "before after"


def test_no_fork_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "can_fork", lambda: False)
    with pytest.raises(ConfigError, match="need Linux"):
        processes.run_forked(lambda u, r: None, 2, 2)


def test_choose_processes(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from dgml_viz.model import create_model

    model = create_model("small_cnn", groups=2, dim=16, width=8)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert processes.choose_processes(None, model, 10_000, 32) == 4  # one per torch thread
    assert processes.choose_processes(None, model, 3 * 32 * processes.MIN_BATCHES_PER_PROCESS, 32) == 3  # small job: fewer
    assert processes.choose_processes(None, model, 31, 32) == 1
    monkeypatch.setattr(torch, "get_num_threads", lambda: 64)
    assert processes.choose_processes(None, model, 10 ** 6, 32) == processes.MAX_AUTO_PROCESSES
    assert processes.choose_processes(5, model, 1000, 32) == 5  # asked for: as asked ...
    assert processes.choose_processes(5, model, 70, 32) == 3  # ... but no more than batches
    assert processes.choose_processes(5, model, 0, 32) == 1
    with pytest.raises(ConfigError, match="processes must be >= 1"):
        processes.choose_processes(0, model, 10, 32)
    monkeypatch.setattr(processes, "can_fork", lambda: False)
    assert processes.choose_processes(None, model, 10 ** 6, 32) == 1
    with caplog.at_level("WARNING"):
        assert processes.choose_processes(2, model, 10 ** 6, 32) == 1
    assert "running in this process" in caplog.text


def test_unit_size_keeps_whole_batches_and_the_chunk_cap() -> None:
    for images, procs, batch, chunk in [(2048, 2, 32, 1024), (60_000, 8, 32, 1024), (37, 3, 4, 8), (5, 2, 32, 1024)]:
        unit = processes.unit_size(images, procs, batch, chunk)
        assert 1 <= unit <= chunk and (unit % batch == 0 or unit == chunk)
        if images >= procs * batch:
            assert -(-images // unit) >= procs  # every process gets a unit


def test_iter_forked_yields_what_every_child_sent() -> None:
    def work(unit: int, send) -> None:  # noqa: ANN001
        for j in range(3):
            send({"unit": unit, "j": j, "pid": os.getpid(), "blob": "x" * 20_000})  # > a pipe write at once

    got = list(processes.iter_forked(work, 7, 2, poll_s=0.01))
    assert sorted((g["unit"], g["j"]) for g in got) == [(u, j) for u in range(7) for j in range(3)]
    assert os.getpid() not in {g["pid"] for g in got} and all(len(g["blob"]) == 20_000 for g in got)


def test_iter_forked_keeps_what_was_sent_before_a_child_died(tmp_path: Path) -> None:
    import signal

    def work(unit: int, send) -> None:  # noqa: ANN001
        import time

        send(unit)
        if unit == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.02)  # the survivor would need ~4 s for the rest: it is stopped long before

    got: list[int] = []
    with pytest.raises(WorkerError, match="was killed by SIGKILL"):
        for item in processes.iter_forked(work, 200, 2, poll_s=0.01):
            got.append(item)
    assert 3 in got and len(got) == len(set(got)) and len(got) < 200


def test_closing_iter_forked_early_stops_the_children(tmp_path: Path) -> None:
    import time

    def work(unit: int, send) -> None:  # noqa: ANN001
        send(os.getpid())
        time.sleep(30)

    gen = processes.iter_forked(work, 4, 2, poll_s=0.01)
    pids = {next(gen), next(gen)}
    gen.close()
    for pid in pids:  # terminated and reaped: no such process any more
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
