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
