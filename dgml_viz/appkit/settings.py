"""Settings of the app, read from the environment (never from argv).

==============================  ===============================================  =========================
variable                        meaning                                          default
==============================  ===============================================  =========================
``DGML_VIZ_CHECKPOINT_DIR``     folder whose checkpoints are offered (ours       ``<repo>/checkpoints``
                                ``*.pt``; the reference's ``*.pth.tar`` /
                                ``*.pth``), subfolders included (bounded)
``DGML_VIZ_DEFAULT_CKPT``       checkpoint selected at start                     ``demo.pt`` in that folder
``DGML_VIZ_ALLOWED_ROOTS``      ``os.pathsep``-separated roots for image folders  the repository root
``DGML_VIZ_MAX_UPLOAD_MB``      largest accepted upload                          ``200``
``DGML_VIZ_INDEX_DIR``          an index (or a folder of indexes) for Compare    none
``DGML_VIZ_ALLOW_REMOTE``       ``1`` lets the app serve on a non-loopback        unset (loopback only)
                                address (it reads local files: trust the LAN)
==============================  ===============================================  =========================
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

#: The repository root (``dgml_viz/..``), where ``checkpoints/`` ships.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINT_NAME = "demo.pt"


#: File names the picker offers: ours (``*.pt``) and the reference implementation's
#: (``checkpoint_<key>_<evaltype>_<metric>.pth.tar``, ``*.pth``).
CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pt", ".pth.tar", ".pth")
#: Bounds of the checkpoint folder scan (a training output folder can be huge).
MAX_CHECKPOINT_DEPTH = 3
MAX_CHECKPOINTS = 200
MAX_SCANNED_ENTRIES = 20_000


def checkpoint_dir() -> Path:
    """Folder whose checkpoint files the app offers."""
    env = os.environ.get("DGML_VIZ_CHECKPOINT_DIR")
    return Path(env).expanduser() if env else REPO_ROOT / "checkpoints"


def is_checkpoint_name(name: str) -> bool:
    """Whether a file name looks like a checkpoint the app can open (ours or the reference's)."""
    return not name.startswith(".") and name.lower().endswith(CHECKPOINT_SUFFIXES)


def list_checkpoints(max_depth: int = MAX_CHECKPOINT_DEPTH, limit: int = MAX_CHECKPOINTS) -> list[Path]:
    """Checkpoint files of :func:`checkpoint_dir`: its own, then those of its subfolders level by level.

    Subfolders (e.g. ``baselines/`` beside the demo model, or a reference training output
    ``<save_path>/<run>/checkpoint_*.pth.tar``) are searched breadth-first down to ``max_depth``
    levels; each level is sorted. Hidden entries and symlinked folders are skipped. The scan stops
    after ``limit`` files or :data:`MAX_SCANNED_ENTRIES` directory entries, so a huge folder cannot
    stall the app. Empty if the folder is missing.
    """
    root = checkpoint_dir()
    if not root.is_dir():
        return []
    found: list[Path] = []
    level, scanned = [root], 0
    for _ in range(max_depth + 1):
        below: list[Path] = []
        for folder in level:
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            scanned += len(entries)
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        below.append(Path(entry.path))
                    elif is_checkpoint_name(entry.name) and entry.is_file():
                        found.append(Path(entry.path))
                except OSError:
                    continue
                if len(found) >= limit:
                    logger.info("%s: listing only the first %d checkpoints", root, limit)
                    return found
            if scanned >= MAX_SCANNED_ENTRIES:
                logger.info("%s: stopped scanning for checkpoints after %d entries", root, scanned)
                return found
        level = below
    return found


def checkpoint_label(path: Path) -> str:
    """How the app names a checkpoint: its path under :func:`checkpoint_dir` (runs of a training
    folder share file names such as ``checkpoint_Test_discriminative_e_recall@1.pth.tar``), else its name."""
    try:
        return path.relative_to(checkpoint_dir()).as_posix()
    except ValueError:
        return path.name


def default_checkpoint() -> Path | None:
    """``DGML_VIZ_DEFAULT_CKPT``, else ``demo.pt``, else the first listed checkpoint, else None."""
    env = os.environ.get("DGML_VIZ_DEFAULT_CKPT")
    if env:
        return Path(env).expanduser()
    found = list_checkpoints()
    for p in found:
        if p.name == DEFAULT_CHECKPOINT_NAME:
            return p
    return found[0] if found else None


def allowed_roots() -> list[Path]:
    """Resolved roots under which the app may read image folders."""
    env = os.environ.get("DGML_VIZ_ALLOWED_ROOTS")
    raw = [s for s in env.split(os.pathsep) if s.strip()] if env else [str(REPO_ROOT)]
    return [Path(s).expanduser().resolve() for s in raw]


def max_upload_bytes() -> int:
    """Largest upload the app accepts (bytes); mirrors ``server.maxUploadSize``."""
    try:
        mb = float(os.environ.get("DGML_VIZ_MAX_UPLOAD_MB", "200"))
    except ValueError:
        mb = 200.0
    return int(mb * 1024 * 1024)


def serving_problem(address: str | None, allow_remote: str | None = None) -> str | None:
    """Why the app must not serve on ``address`` (Streamlit's ``server.address``), or None.

    Only loopback addresses (``127.0.0.0/8``, ``::1``, ``localhost``) are served unless
    ``allow_remote`` (``DGML_VIZ_ALLOW_REMOTE``) is ``1``: the app reads files under the
    allowed roots, so exposing it to a network is an explicit choice. An empty address means
    Streamlit listens on every interface.

    >>> serving_problem("127.0.0.1") is None, serving_problem("::1") is None
    (True, True)
    >>> serving_problem("0.0.0.0", "1") is None
    True
    """
    import ipaddress

    if allow_remote is None:
        allow_remote = os.environ.get("DGML_VIZ_ALLOW_REMOTE")
    if allow_remote == "1":
        return None
    text = (address or "").strip().strip("[]")
    if text == "localhost":
        return None
    try:
        if text and ipaddress.ip_address(text).is_loopback:
            return None
    except ValueError:
        pass
    shown = repr(address) if address else "every interface (server.address unset)"
    return (f"refusing to serve on {shown}: the app reads local files, so it only listens on 127.0.0.1; "
            "start it with `dgml-viz app` (or --server.address 127.0.0.1), or set DGML_VIZ_ALLOW_REMOTE=1")


def index_dir() -> Path | None:
    """``DGML_VIZ_INDEX_DIR``: an index folder, or a folder of them, offered on the Compare page (None if unset)."""
    env = os.environ.get("DGML_VIZ_INDEX_DIR")
    return Path(env).expanduser() if env else None
