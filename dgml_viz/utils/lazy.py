"""Lazy package attributes: import a submodule only when one of its names is first used.

Packages whose submodules pull in heavy or optional dependencies (matplotlib, captum,
torchvision datasets) keep ``import dgml_viz.<package>`` light by installing the
function returned here as their module ``__getattr__`` (PEP 562).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_getattr(package: str, table: Mapping[str, str], submodules: bool = False) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``.

    Args:
        package: the package's ``__name__``.
        table: attribute name -> module that defines it.
        submodules: also resolve ``package.<name>`` submodules (``dgml_viz.metrics.diversity``).

    Example:
        >>> get = lazy_getattr("pkg", {"sqrt": "math"})
        >>> get("sqrt")(4.0)
        2.0
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        if submodules:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
