"""Head registry: ``@register_head(name)`` beside the backbone registry.

A head class declares what it exposes as class attributes, and everything
downstream (heatmaps, the app, reports) asks those, never the head's name:

* ``spatial_maps`` — what :attr:`GroupOutput.attention` holds: ``"softmax"``
  (a distribution over positions per group, sums to 1), ``"mask"`` (a spatial
  gate per group, normalised to sum to 1 when exposed), or ``None`` (no spatial maps).
"""
from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from dgml_viz.errors import ConfigError

SPATIAL_MAP_KINDS = ("softmax", "mask")

HEADS: dict[str, type[nn.Module]] = {}
_H = TypeVar("_H", bound=type)


def register_head(name: str) -> Callable[[_H], _H]:
    """Class decorator adding a head ``cls(in_channels, groups, dim, reduction)`` under ``name``."""
    def wrap(cls: _H) -> _H:
        kind = getattr(cls, "spatial_maps", None)
        if kind is not None and kind not in SPATIAL_MAP_KINDS:
            raise TypeError(f"{cls.__name__}.spatial_maps must be one of {SPATIAL_MAP_KINDS} or None, got {kind!r}")
        HEADS[name] = cls  # type: ignore[assignment]
        return cls
    return wrap


def list_heads() -> list[str]:
    """Names of the registered heads, in registration order."""
    return list(HEADS)


def head_class(name: str) -> type[nn.Module]:
    """The head class registered under ``name`` (one-line ConfigError naming the choices)."""
    if name not in HEADS:
        raise ConfigError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")
    return HEADS[name]


def spatial_maps(head: nn.Module | type) -> str | None:
    """What a head (instance or class) exposes as ``GroupOutput.attention`` (see module docstring)."""
    return getattr(head, "spatial_maps", None)
