"""Settings of the app, read from the environment (never from argv).

==============================  ===============================================  =========================
variable                        meaning                                          default
==============================  ===============================================  =========================
``DGML_VIZ_CHECKPOINT_DIR``     folder whose ``*.pt`` files are offered          ``<repo>/checkpoints``
``DGML_VIZ_DEFAULT_CKPT``       checkpoint selected at start                     ``demo.pt`` in that folder
``DGML_VIZ_ALLOWED_ROOTS``      ``os.pathsep``-separated roots for image folders  the repository root
``DGML_VIZ_MAX_UPLOAD_MB``      largest accepted upload                          ``200``
==============================  ===============================================  =========================
"""
from __future__ import annotations

import os
from pathlib import Path

#: The repository root (``dgml_viz/..``), where ``checkpoints/`` ships.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CHECKPOINT_NAME = "demo.pt"


def checkpoint_dir() -> Path:
    """Folder whose ``*.pt`` files the app offers."""
    env = os.environ.get("DGML_VIZ_CHECKPOINT_DIR")
    return Path(env).expanduser() if env else REPO_ROOT / "checkpoints"


def list_checkpoints() -> list[Path]:
    """``*.pt`` files of :func:`checkpoint_dir`, then of its ``baselines/`` subfolder (the comparison
    heads shipped beside the demo model), each sorted; empty if the folder is missing."""
    folder = checkpoint_dir()
    if not folder.is_dir():
        return []
    top = sorted(p for p in folder.glob("*.pt") if p.is_file())
    return top + sorted(p for p in folder.glob("baselines/*.pt") if p.is_file())


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
