"""Exceptions for *expected* failures (bad files, bad configs).

The CLI and the app catch :class:`DgmlVizError` and show its message as one
line; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class DgmlVizError(Exception):
    """Base class: an expected failure with a one-line, user-facing message."""


class CheckpointError(DgmlVizError):
    """A checkpoint file is missing, corrupt, unsafe, too new or does not fit."""


class ImageError(DgmlVizError):
    """An image file cannot be read (empty, truncated, not an image, too large...)."""


class ConfigError(DgmlVizError):
    """A config/recipe or a command-line value is invalid."""


class GroupSelectionError(ConfigError, ValueError):
    """A subset of groups is empty or names a group the model/index does not have (also a ValueError:
    an invalid argument to the library's retrieval functions)."""


class DatasetError(DgmlVizError):
    """A dataset folder does not have the expected layout."""


class OutputError(DgmlVizError):
    """An output folder or file cannot be used: it is a file, not writable, or locked by another run."""


class WorkerError(DgmlVizError):
    """A worker process of a parallel job failed or was killed (what finished before is kept)."""
