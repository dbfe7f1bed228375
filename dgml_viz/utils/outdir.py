"""Output folders: checked up front, locked while a run writes them, swept of a killed run's temp files.

Every command that writes a folder (``heatmaps``, ``gallery``, ``interpret``, the training run dir)
calls :func:`ensure_output_dir` before any work, so an ``--out`` that is a file, lies under a file, or
cannot be written fails at once with one line naming it (:class:`~dgml_viz.errors.OutputError`, exit 2)
instead of a traceback after the model ran. Writability is probed with a real temp file (``os.access``
says yes to root even on a folder it cannot write, e.g. a read-only mount).

:func:`output_lock` holds a lock file (the ``filelock`` library; ``flock`` on POSIX, released by the
kernel when a process dies, so a killed run never leaves a stale lock) in the folder for the whole run:
a second run into the same folder waits for it, up to a timeout, or refuses with one line. Under the
lock, stale temp files of :func:`dgml_viz.utils.atomic.atomic_path` are swept — only when no other
dgml-viz lock under the folder is held (shards of one run lock separately and may run side by side),
and only files older than the sweeping run.

Example:
    >>> with output_lock(ensure_output_dir("heatmaps"), timeout=-1) as out:   # doctest: +SKIP
    ...     write_things(out)
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

from dgml_viz.errors import OutputError
from dgml_viz.utils.atomic import sweep_temp_files

logger = logging.getLogger(__name__)

#: lock file of a folder (``.dgml-viz.<tag>.lock`` for runs that may share it, e.g. shards)
LOCK_NAME = ".dgml-viz.lock"
_LOCK_PREFIX, _LOCK_SUFFIX = ".dgml-viz", ".lock"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def ensure_output_dir(path: str | os.PathLike[str], option: str = "--out", create: bool = True) -> Path:
    """Create folder ``path`` (with parents) if needed and prove it writable; returns it as a Path.

    With ``create=False`` nothing is created: the nearest existing folder on the way is probed instead,
    so a run that fails later (a bad checkpoint) leaves no empty folder behind.

    Raises:
        OutputError: one line naming ``path``: it is a file, lies under a file, or cannot be written.
    """
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{option} {folder}: exists and is not a folder")
    if not create:
        base = next((p for p in [folder, *folder.absolute().parents] if p.exists()), Path("/"))
        if not base.is_dir():
            raise OutputError(f"{option} {folder}: cannot create the folder, {base} is a file")
        _probe(base, folder, option)
        return folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), None)
        raise OutputError(f"{option} {folder}: cannot create the folder, "
                          f"{blocker or 'a parent'} is a file") from None
    except OSError as exc:
        raise OutputError(f"{option} {folder}: cannot create the folder ({_reason(exc)})") from None
    _probe(folder, folder, option)
    return folder


def _probe(where: Path, folder: Path, option: str) -> None:
    """Create and remove a file in ``where`` (``os.access`` is not enough: root passes it everywhere)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".dgml-viz-probe.", dir=where)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        what = "folder is not writable" if where == folder else f"cannot create it in {where}"
        raise OutputError(f"{option} {folder}: {what} ({_reason(exc)})") from None


def ensure_output_file(path: str | os.PathLike[str], option: str = "--out") -> Path:
    """Check that file ``path`` can be written: not a folder, its folder created and writable."""
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"{option} {target}: is a folder, expected a file path")
    ensure_output_dir(target.parent, option=f"{option} {target}: folder")
    return target


def _lock_class() -> type:
    from filelock import FileLock

    return FileLock


def lock_name(tag: str | None = None) -> str:
    """The lock file name of a run; runs with different ``tag`` s (shards) may share a folder."""
    return LOCK_NAME if not tag else f"{_LOCK_PREFIX}.{tag}{_LOCK_SUFFIX}"


def _busy_locks(folder: Path, own: Path) -> list[Path]:
    """Other dgml-viz lock files under ``folder`` that a live process holds right now."""
    from filelock import Timeout

    busy = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            p = Path(dirpath) / name
            if not (name.startswith(_LOCK_PREFIX) and name.endswith(_LOCK_SUFFIX)) or p == own:
                continue
            other = _lock_class()(p)
            try:
                other.acquire(timeout=0)
            except Timeout:
                busy.append(p)
            except OSError:
                busy.append(p)  # cannot tell: treat as live
            else:
                other.release()
    return busy


def sweep_stale(folder: str | os.PathLike[str], started: float, own_lock: Path | None = None) -> list[Path]:
    """Remove the stale temp files under ``folder`` (see module docstring); returns the removed paths.

    Nothing is removed while another dgml-viz lock under ``folder`` is held (its run may be writing).
    """
    root = Path(folder)
    busy = _busy_locks(root, own_lock or root / LOCK_NAME)
    if busy:
        logger.debug("not sweeping temp files in %s: %s held by a live run", root, busy[0])
        return []
    return sweep_temp_files(root, older_than=started)


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str], timeout: float = -1, tag: str | None = None,
                option: str = "--out", sweep: bool = True) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created by :func:`ensure_output_dir` first) for the ``with`` body.

    Args:
        folder: the output folder.
        timeout: seconds to wait for another run to finish; ``0`` refuses at once, negative waits forever.
        tag: runs with different tags (e.g. ``"0-of-4"`` shards) lock separately.
        option: the option name shown in errors.
        sweep: remove a killed run's stale temp files once the lock is held.

    Raises:
        OutputError: one line when the lock is still held by another run after ``timeout``.
    """
    from filelock import Timeout

    started = time.time()
    root = ensure_output_dir(folder, option)
    path = root / lock_name(tag)
    lock = _lock_class()(path)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if timeout == 0:
                raise
            logger.info("waiting for another dgml-viz run writing to %s to finish (lock %s%s)", root, path,
                        "" if timeout < 0 else f", up to {timeout:g} s")
            lock.acquire(timeout=timeout)
    except Timeout:
        raise OutputError(f"{option} {root}: another dgml-viz run is writing to this folder (lock {path} held"
                          f"{'' if timeout == 0 else f' for {timeout:g} s'}); wait for it"
                          f"{' or raise --lock-timeout' if option.startswith('--') else ' to finish'}") from None
    except OSError as exc:
        raise OutputError(f"{option} {root}: cannot lock {path} ({_reason(exc)})") from None
    try:
        if sweep:
            sweep_stale(root, started, own_lock=path)
        yield root
    finally:
        lock.release()


def add_lock_timeout_argument(parser: "argparse.ArgumentParser") -> None:  # type: ignore[name-defined]  # noqa: F821
    """``--lock-timeout SECONDS`` with the shared help text."""
    parser.add_argument("--lock-timeout", type=float, default=-1, metavar="SECONDS",
                        help="when another run is writing to the same --out: wait at most this long "
                             "(default -1: wait until it finishes; 0: refuse at once)")




def prepare_run_dir(run_dir: str | os.PathLike[str], option: str = "run dir") -> Path:
    """A training run folder: :func:`ensure_output_dir` plus the sweep of a killed run's temp files
    (``.last_state.pt.XXXXXXXX.pt`` ...) older than now; no lock is taken (one trainer per run dir)."""
    started = time.time()
    folder = ensure_output_dir(run_dir, option)
    sweep_stale(folder, started)
    return folder


__all__ = ["ensure_output_dir", "ensure_output_file", "output_lock", "sweep_stale", "prepare_run_dir", "lock_name",
           "LOCK_NAME", "add_lock_timeout_argument"]
