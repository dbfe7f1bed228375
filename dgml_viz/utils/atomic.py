"""Atomic file writes: a temp file in the target's directory, then ``os.replace``.

A reader never sees a half-written file, and a crash leaves the old file (or
nothing) in place, never a truncated one.

Temp files are named ``.<target name>.<8 random chars><target suffix>`` (``.tmp``
when the target has none), e.g. ``.composite.png.k3j_x9a2.png``. Every exit
path Python sees (an exception, ``KeyboardInterrupt``, ``SystemExit`` from a
signal handler) removes the temp file; only a kill Python cannot see
(``SIGKILL``, power loss) leaves one behind, and :func:`sweep_temp_files`, run by
the next command writing that folder (:mod:`dgml_viz.utils.outdir`), removes
those that match this exact pattern and are older than that run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)

#: ``.<name>.<8 chars of tempfile's alphabet><suffix>``; the suffix must be the name's own (or ``.tmp``)
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<rand>[a-z0-9_]{8})(?P<suffix>\.[^./]+)$")


def temp_suffix(name: str) -> str:
    """The suffix the temp file of a target called ``name`` ends with."""
    return Path(name).suffix or ".tmp"


def is_temp_name(name: str) -> bool:
    """Whether a file name is one :func:`atomic_path` makes (``.x.png.ab12cd34.png``), and nothing else."""
    m = _TEMP_RE.match(name)
    return bool(m) and m.group("suffix") == temp_suffix(m.group("name"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    The temp name keeps the target's suffix (so writers that pick a format from
    the extension, e.g. matplotlib or OpenCV, still work). On an exception (any
    ``BaseException``) the temp file is removed and ``path`` is untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.",
                                        suffix=suffix if suffix is not None else temp_suffix(target.name),
                                        dir=target.parent)
        tmp = Path(tmp_name)
        os.close(fd)
        yield tmp
        # mkstemp creates 0600; give the final file the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        tmp = None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def sweep_temp_files(folder: str | os.PathLike[str], older_than: float) -> list[Path]:
    """Remove the temp files :func:`atomic_path` left under ``folder`` (recursively) whose modification
    time is before ``older_than`` (a ``time.time()`` value, e.g. the start of the current run).

    Only names matching :func:`is_temp_name` are touched; hidden folders and symlinks are not entered.
    The caller makes sure no live writer uses the folder (see :mod:`dgml_viz.utils.outdir`).
    Returns the removed paths.
    """
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not is_temp_name(name):
                continue
            p = Path(dirpath) / name
            try:
                st = p.lstat()
                if st.st_mtime < older_than and not os.path.islink(p):
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("cannot remove stale temp file %s (%s)", p, exc.strerror or exc)
    if removed:
        logger.info("removed %d stale temp file(s) left by an interrupted run in %s", len(removed), folder)
    return removed


def _read_umask() -> int:
    """The process umask (read once at import: os.umask is process-wide, not thread-safe)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))
