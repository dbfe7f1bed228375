"""Class labels of indexed images, for ``dgml-viz evaluate --index``.

Two sources:

* the folder layout (default): an image's class is the name of its parent folder
  (``.../<class>/<image>``, the layout of :class:`~dgml_viz.data.folder.ImageFolderDataset`);
* a list file: one ``PATH LABEL`` per line (the label is the last whitespace-separated field,
  so paths may contain spaces; relative paths are relative to the list's folder; ``#`` comments).
  Indexed images absent from the list are left out of the evaluation.

Labels are mapped to ``0..C-1`` in sorted order (:func:`dgml_viz.data.folder.contiguous_labels`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from dgml_viz.errors import ConfigError

logger = logging.getLogger(__name__)


def read_label_list(path: str | os.PathLike[str]) -> dict[str, str]:
    """``{resolved path: label}`` from a ``PATH LABEL`` list file (ConfigError naming the line if malformed)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the label list ({exc})") from None
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise ConfigError(f"{path}:{n}: expected 'PATH LABEL', got {line!r}")
        p = Path(parts[0])
        p = p if p.is_absolute() else path.parent / p
        out[str(p.resolve())] = parts[1]
    return out


def index_labels(paths: Sequence[str], labels_file: str | os.PathLike[str] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels of the indexed ``paths``.

    Returns:
        ``(rows int64 [M], labels int64 [M], class names [C])``: the index rows that have a label,
        their contiguous labels and the class names.

    Raises:
        ConfigError: no indexed image has a label.
    """
    from dgml_viz.data.folder import contiguous_labels

    if labels_file is None:
        raw = [Path(p).parent.name for p in paths]
        rows = list(range(len(paths)))
    else:
        table = read_label_list(labels_file)
        rows = [i for i, p in enumerate(paths) if p in table]
        raw = [table[paths[i]] for i in rows]
        if len(rows) < len(paths):
            logger.warning("%d of %d indexed images have no label in %s; left out", len(paths) - len(rows),
                           len(paths), labels_file)
    if not rows:
        raise ConfigError(f"{labels_file or 'folder layout'}: no indexed image has a label")
    labels, names = contiguous_labels(raw)
    return np.asarray(rows, dtype=np.int64), np.asarray(labels, dtype=np.int64), [str(n) for n in names]


__all__ = ["index_labels", "read_label_list"]
