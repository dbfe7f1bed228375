"""utils.processes.run_forked: every unit runs exactly once, in a child with the asked torch threads; progress
adds up; a failing child is one WorkerError line; the parent's unflushed output is not repeated by children."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dgml_viz.errors import WorkerError
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
    from dgml_viz.errors import ConfigError

    monkeypatch.setattr(processes, "can_fork", lambda: False)
    with pytest.raises(ConfigError, match="need Linux"):
        processes.run_forked(lambda u, r: None, 2, 2)
