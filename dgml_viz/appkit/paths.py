"""Allowed-root checks for folders typed into the app, and image listing."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from dgml_viz.errors import ConfigError
from dgml_viz.validation import check_path_text

from dgml_viz.data.discovery import find_images


def inside(path: Path, roots: Sequence[Path]) -> bool:
    """True when the resolved ``path`` equals or lies below one of the resolved ``roots``."""
    return any(path == r or path.is_relative_to(r) for r in roots)


def resolve_folder(text: str, roots: Sequence[Path]) -> Path:
    """Resolve a user-typed folder and check it lies inside an allowed root.

    Symlinks and ``..`` are resolved first, so neither escapes a root.

    Raises:
        ConfigError: empty input, outside every root, missing, or not a folder (one line).
    """
    if not text or not text.strip():
        raise ConfigError("no folder given")
    check_path_text(text, "folder")  # NUL / control characters: one line, not a ValueError
    try:
        path = Path(os.path.expanduser(text.strip())).resolve()
        roots = [Path(r).resolve() for r in roots]
        if not inside(path, roots):
            shown = ", ".join(str(r) for r in roots)
            raise ConfigError(f"{path}: outside the allowed roots ({shown}); set DGML_VIZ_ALLOWED_ROOTS to widen")
        if not path.exists():
            raise ConfigError(f"{path}: no such folder")
        if not path.is_dir():
            raise ConfigError(f"{path}: not a folder")
    except (OSError, RuntimeError, ValueError) as exc:  # too long, symlink loop, unreadable
        raise ConfigError(f"{text.strip()[:200]}: cannot open this folder ({getattr(exc, 'strerror', None) or exc})") from None
    return path


def list_images(folder: Path, roots: Sequence[Path], limit: int = 500) -> list[Path]:
    """Image files below ``folder`` (recursive, sorted), at most ``limit``.

    Files whose resolved target leaves the allowed roots (symlinks) are skipped.
    """
    roots = [Path(r).resolve() for r in roots]
    out: list[Path] = []
    for p in find_images(folder):
        if p.is_file() and inside(p.resolve(), roots):
            out.append(p)
            if len(out) >= limit:
                break
    return out
