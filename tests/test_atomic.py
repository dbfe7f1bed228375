"""Atomic writes: the target appears whole or not at all, with the mode a plain open() gives."""
from __future__ import annotations

import os
import stat

import pytest

from dgml_viz.utils.atomic import atomic_path, atomic_write_bytes


def test_written_file_respects_umask(tmp_path):
    target = tmp_path / "a.bin"
    atomic_write_bytes(target, b"xyz")
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"xyz")
    assert target.read_bytes() == b"xyz"
    assert stat.S_IMODE(target.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["keep.txt"]


def test_temp_name_keeps_suffix(tmp_path):
    with atomic_path(tmp_path / "fig.pdf") as tmp:
        assert tmp.suffix == ".pdf" and tmp.parent == tmp_path
        tmp.write_bytes(b"%PDF")
    assert (tmp_path / "fig.pdf").read_bytes() == b"%PDF"
