"""Settings of the app, read from the environment (never from argv).

==============================  ===============================================  =========================
variable                        meaning                                          default
==============================  ===============================================  =========================
``DGML_VIZ_CHECKPOINT_DIR``     folder whose ``*.pt`` files are offered          ``<repo>/checkpoints``
``DGML_VIZ_DEFAULT_CKPT``       checkpoint selected at start                     ``demo.pt`` in that folder
``DGML_VIZ_ALLOWED_ROOTS``      ``os.pathsep``-separated roots for image folders  the repository root
``DGML_VIZ_MAX_UPLOAD_MB``      largest accepted upload                          ``200``
``DGML_VIZ_INDEX_DIR``          an index (or a folder of indexes) for Compare    none
``DGML_VIZ_ALLOW_REMOTE``       ``1`` lets the app serve on a non-loopback        unset (loopback only)
                                address (it reads local files: trust the LAN)
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
