"""One image discovery: image suffixes (:data:`~dgml_viz.data.images.IMAGE_SUFFIXES`), the folder
walker and the input spec every command accepts (a folder, a list file or one image), plus the
stable sharding of inputs across processes.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> (root / "b").mkdir(); (root / ".hidden").mkdir()
    >>> for name in ("b/2.png", "1.jpg", ".hidden/3.png"):
    ...     Image.new("RGB", (4, 4)).save(root / name)
    >>> _ = (root / "notes.txt").write_text("not an image")
    >>> [s.rel for s in collect_sources(root)]
    ['1.jpg', 'b/2.png']
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from dgml_viz.data.images import is_image_file
from dgml_viz.errors import ConfigError


def find_images(folder: str | os.PathLike[str], exclude: Path | None = None) -> list[Path]:
    """Image files below ``folder``: recursive, sorted, hidden files and folders skipped, the
    folder ``exclude`` (e.g. an output folder inside the input) not entered.

    The one folder walker: heatmaps, gallery, index, interpret, the datasets and the app call it.
    """
    root = Path(folder)
    excl = exclude.resolve() if exclude is not None else None
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (excl is None or (here / d).resolve() != excl))
        found += [here / name for name in sorted(filenames) if not name.startswith(".") and is_image_file(name)]
    return found


@dataclass(frozen=True)
class Source:
    """One input image: its path and its key (relative path, used for outputs and the manifest)."""

    path: Path
    rel: str


def collect_sources(spec: str | os.PathLike[str], exclude: Path | None = None) -> list[Source]:
    """Images named by ``spec``: a folder (recursive, sorted, hidden names skipped), a list file
    (one path per line, relative to the list's folder, ``#`` comments) or one image file."""
    root = Path(spec)
    if root.is_dir():
        return [Source(p, p.relative_to(root).as_posix()) for p in find_images(root, exclude)]
    if not root.exists():
        raise ConfigError(f"{root}: no such file or folder")
    if is_image_file(root):
        return [Source(root, root.name)]
    try:
        lines = root.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{root}: not a folder, an image or a readable list file ({exc})") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = Path(line)
        p = p if p.is_absolute() else root.parent / p
        try:
            rel = p.resolve().relative_to(root.parent.resolve()).as_posix()
        except ValueError:
            rel = "abs/" + p.resolve().as_posix().lstrip("/")
        out.append(Source(p, rel))
    return out


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` -> ``(i, N)`` (ConfigError unless ``0 <= i < N``)."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {text}: need 0 <= I < N")
    return i, n


def shard_of(rel: str, n: int) -> int:
    """Stable shard of a relative path: SHA-1 of the path mod ``n``."""
    return int(hashlib.sha1(rel.encode("utf-8")).hexdigest()[:12], 16) % n


__all__ = ["Source", "find_images", "collect_sources", "parse_shard", "shard_of"]
