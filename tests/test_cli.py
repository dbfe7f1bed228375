"""The dispatcher: every registered command exists, has help, and fails cleanly."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from dgml_viz.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_module_has_the_protocol(name: str) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    assert isinstance(module.HELP, str) and module.HELP
    assert callable(module.add_arguments) and callable(module.run)


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_command_help_exits_zero(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ex:
        main([name, "--help"])
    assert ex.value.code == 0
    assert "usage: dgml-viz" in capsys.readouterr().out


def test_console_script_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "dgml_viz.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in COMMANDS:
        assert name in out


def test_no_command_prints_help_and_returns_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 1
    assert "COMMAND" in capsys.readouterr().out


def test_importing_the_entry_point_does_not_import_torch() -> None:
    """The console script runs ``from dgml_viz.cli import main`` before main's handlers exist: it must stay light
    (torch takes seconds to import on a cold start, and a Ctrl-C then was a traceback)."""
    code = "import sys; from dgml_viz.cli import main; import dgml_viz; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_ctrl_c_while_the_command_module_imports_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(name: str):  # noqa: ANN202
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    assert main(["heatmaps", "--ckpt", "x.pt", "--images", "d"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["dgml-viz: interrupted"]


def test_lazy_top_level_names_resolve() -> None:
    import dgml_viz
    from dgml_viz.model import create_model
    from dgml_viz.model.checkpoint import load_checkpoint

    assert dgml_viz.create_model is create_model and dgml_viz.load_checkpoint is load_checkpoint
    assert dgml_viz.metrics.__name__ == "dgml_viz.metrics"  # submodules resolve too
    with pytest.raises(AttributeError):
        dgml_viz.no_such_name  # noqa: B018
