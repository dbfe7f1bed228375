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

Durability: :func:`atomic_path` / :func:`atomic_write_bytes` ``fsync`` each file before the
rename (a power loss cannot expose an empty file under the final name). Writing many small
files that way costs one journal commit each (~1-4 ms of wall time per file on ext4, which
dominated ``dgml-viz heatmaps``' output). :class:`AtomicBatch` keeps the same guarantees with
one flush per batch: every file of the batch is written to its temp name, the data of all of
them is made durable at once (``syncfs`` of their file system on Linux — also flushing other
programs' pending writes to that file system, so it can take longer on a busy disk — else one
``fsync`` per file), and only then are they renamed. A killed process (any signal, ``SIGKILL``
included) leaves each target either as it was or complete; a power loss can additionally lose
the renames of the last moments (a missing file, which ``--resume`` redoes) but never leave a
truncated file under a final name. ``durable=False`` skips the flush: still atomic against
crashes of the process, not against a power loss. Neither path ``fsync`` s the directory (the
renames' own durability), as before.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import random
import re
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Callable, Iterable, Iterator, TypeVar

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


#: ``.<folder name>.<8 chars>.partial``: a folder :class:`AtomicFolder` fills before renaming it into place
_TEMP_DIR_RE = re.compile(r"^\.(?P<name>.+)\.(?P<rand>[a-z0-9_]{8})\.partial$")


def is_temp_dir_name(name: str) -> bool:
    """Whether a folder name is one :class:`AtomicFolder` stages into (``.img1.png.ab12cd34.partial``)."""
    return bool(_TEMP_DIR_RE.match(name))


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
        for name in dirnames:
            if is_temp_dir_name(name):
                removed.extend(_remove_temp_dir(Path(dirpath) / name, older_than))
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


def _remove_temp_dir(path: Path, older_than: float) -> list[Path]:
    """Remove an :class:`AtomicFolder` staging folder older than ``older_than`` (its files first; nothing
    else: a folder holding a subfolder or a link is left alone)."""
    try:
        if path.is_symlink() or path.lstat().st_mtime >= older_than:
            return []
        entries = list(path.iterdir())
        if any(e.is_symlink() or not e.is_file() for e in entries):
            logger.warning("not removing %s: it holds more than the files of an interrupted write", path)
            return []
        for e in entries:
            e.unlink()
        path.rmdir()
    except FileNotFoundError:
        return []
    except OSError as exc:
        logger.warning("cannot remove stale temp folder %s (%s)", path, exc.strerror or exc)
        return []
    return [path]


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


# --------------------------------------------------------------------------- many files, one flush
_names = random.Random()  # 8 hex digits: a subset of tempfile's alphabet, so names match _TEMP_RE
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _create_temp(folder: str, name: str) -> tuple[int, str]:
    """Create (``O_EXCL``) the temp file of ``folder/name`` with mode ``0o666`` (the umask applies, as for a
    plain ``open()``); returns ``(fd, path)``. One ``open`` syscall: no ``chmod``, no reopen; plain strings
    (no :class:`~pathlib.Path` objects per file)."""
    return _fresh_temp(folder, name, temp_suffix(name), lambda tmp: (os.open(tmp, _OPEN_FLAGS, 0o666), tmp))


_T = TypeVar("_T")


def _fresh_temp(folder: str, name: str, suffix: str, create: Callable[[str], _T]) -> _T:
    """``create(path)`` for the first free hidden temp path ``folder/.<name>.<8 hex digits><suffix>``
    (``create`` raises :class:`FileExistsError` when the path is taken: another name is drawn)."""
    for _ in range(100):
        try:
            return create(os.path.join(folder, f".{name}.{_names.getrandbits(32):08x}{suffix}"))
        except FileExistsError:
            continue
    raise FileExistsError(f"{os.path.join(folder, name)}: no free temporary name")


def _make_dir(folder: str) -> None:
    """``mkdir -p``: one syscall when the parent exists (``os.makedirs`` would ``stat`` it first)."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        if not os.path.isdir(folder):
            raise
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)


def _load_syncfs() -> object | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


_SYNCFS = _load_syncfs()


def _syncfs(path: str | os.PathLike[str]) -> bool:
    """``syncfs(2)`` on the file system holding ``path`` (the GIL is released while it runs);
    False where it is unavailable or fails (the caller then fsyncs file by file)."""
    if _SYNCFS is None:
        return False
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        return _SYNCFS(fd) == 0  # type: ignore[operator]
    finally:
        os.close(fd)


class AtomicBatch:
    """Write many files atomically with one durability flush for all of them (see the module docstring).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> with AtomicBatch() as batch:
        ...     batch.write(folder / "a" / "x.jpg", b"1")
        ...     batch.write(folder / "a" / "y.npz", b"2")
        >>> sorted(p.name for p in (folder / "a").iterdir())
        ['x.jpg', 'y.npz']

    Leaving the ``with`` block normally flushes (``durable=True``) and renames every file; an exception
    (any ``BaseException``) removes every temp file and touches no target. :meth:`write`,
    :meth:`commit` and :meth:`discard` can also be called directly; :func:`sync_batches` flushes several
    batches with one ``syncfs`` (e.g. one batch per image, so that one image's failure does not stop the
    others from being published).
    """

    def __init__(self, durable: bool = True) -> None:
        self.durable = durable
        self._staged: list[tuple[str, str]] = []  # (temp, target)
        self._dirs: set[str] = set()
        self._synced = False

    @property
    def targets(self) -> list[Path]:
        """The final paths written so far (in order)."""
        return [Path(t) for _, t in self._staged]

    def write(self, path: str | os.PathLike[str], data: bytes) -> None:
        """Write ``data`` to a temp file next to ``path`` (created with its folders); no flush, no rename."""
        folder, name = os.path.split(os.fspath(path))
        folder = folder or "."
        if folder not in self._dirs:
            _make_dir(folder)
            self._dirs.add(folder)
        fd, tmp = _create_temp(folder, name)
        _write_all(fd, tmp, data)
        self._staged.append((tmp, os.path.join(folder, name)))
        self._synced = False

    def sync(self) -> None:
        """Make the contents of every staged file durable (one ``syncfs`` where available)."""
        sync_batches([self])

    def commit(self) -> list[Path]:
        """Flush (when ``durable``) and rename every staged file onto its target; returns the targets.
        If a rename fails, the files not yet renamed are removed and the error propagates (targets
        renamed before it are complete)."""
        if self.durable and not self._synced:
            self.sync()
        done: list[Path] = []
        staged, self._staged = self._staged, []
        try:
            for tmp, target in staged:
                os.replace(tmp, target)
                done.append(Path(target))
        finally:
            self._staged = staged[len(done):]
            self.discard()
        return done

    def discard(self) -> None:
        """Remove every staged temp file (targets untouched)."""
        staged, self._staged = self._staged, []
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def __enter__(self) -> "AtomicBatch":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


class AtomicFolder(AtomicBatch):
    """The files of one folder, published together (one image's outputs in ``dgml-viz heatmaps``).

    When ``folder`` does not exist yet, its files are written under their own names into a hidden sibling
    ``.<name>.<8 chars>.partial`` and, after the flush, that folder is renamed onto ``folder``: one rename
    for all the files instead of one each (renames cost ~40 us of CPU each on ext4 here), and a reader or a
    killed run sees the folder complete or not at all. A killed run leaves only the ``.partial`` folder,
    which :func:`sweep_temp_files` removes. When ``folder`` exists (a rerun over earlier outputs, or it
    appears while the files are written), each file goes through its own temp name and rename, exactly as
    in :class:`AtomicBatch`. :func:`sync_batches` flushes several of them at once.

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> with AtomicFolder(root / "img1.png") as out:
        ...     out.write_file("group0.jpg", b"1")
        ...     out.write_file("maps.npz", b"2")
        >>> sorted(p.name for p in (root / "img1.png").iterdir())
        ['group0.jpg', 'maps.npz']
    """

    def __init__(self, folder: str | os.PathLike[str], durable: bool = True) -> None:
        super().__init__(durable)
        self.folder = os.fspath(folder)
        self._partial: str | None = None
        if not os.path.lexists(self.folder):
            parent, name = os.path.split(self.folder)
            self._partial = _fresh_temp(parent or ".", name, ".partial", _create_staging_dir)

    def write_file(self, name: str, data: bytes) -> None:
        """Stage ``data`` as ``folder/name`` (a plain file name, no subfolder)."""
        if os.sep in name or (os.altsep and os.altsep in name) or name in ("", ".", ".."):
            raise ValueError(f"{name!r}: not a plain file name")
        if self._partial is None:
            self.write(os.path.join(self.folder, name), data)
            return
        tmp = os.path.join(self._partial, name)
        _write_all(os.open(tmp, _OPEN_FLAGS, 0o666), tmp, data)
        self._staged.append((tmp, os.path.join(self.folder, name)))
        self._dirs.add(self._partial)
        self._synced = False

    def commit(self) -> list[Path]:
        """Flush (when ``durable``) and publish every staged file; returns the targets (see the class
        docstring). On an error nothing new is published and the staged files are removed."""
        if self._partial is None:
            return super().commit()
        if self.durable and not self._synced:
            self.sync()
        targets = self.targets
        try:
            os.rename(self._partial, self.folder)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR) or not os.path.isdir(self.folder):
                self.discard()
                raise
            self._synced = True  # the folder appeared meanwhile: file by file into it (already flushed)
            return super().commit()
        self._partial, self._staged = None, []
        return targets

    def discard(self) -> None:
        """Remove every staged file (and the staging folder); ``folder`` untouched."""
        super().discard()
        if self._partial is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._partial)
            self._partial = None


def _write_all(fd: int, path: str, data: bytes) -> None:
    """Write ``data`` to the new file ``fd`` (``path``) and close it; on any error the file is removed."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    os.close(fd)


def _create_staging_dir(tmp: str) -> str:
    """``mkdir`` (mode ``0o777``, the umask applies) of a staging folder; its parent is created only when
    missing (one syscall per image folder in the common case)."""
    try:
        os.mkdir(tmp)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        os.mkdir(tmp)
    return tmp


def sync_batches(batches: Iterable[AtomicBatch]) -> None:
    """Make the staged contents of ``batches`` durable: one ``syncfs`` per file system involved
    (Linux), else (or if that fails) one ``fsync`` per staged file. OSError propagates."""
    batches = [b for b in batches if b._staged]
    by_fs: dict[int, str] = {}
    for b in batches:
        for d in b._dirs:
            by_fs.setdefault(os.stat(d).st_dev, d)
    if not all(_syncfs(d) for d in by_fs.values()):
        for b in batches:
            for tmp, _ in b._staged:
                fd = os.open(tmp, os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    for b in batches:
        b._synced = True
