"""User text in matplotlib figures, drawn literally.

Matplotlib parses any string with an even number of unescaped ``$`` as mathtext,
so an image called ``$\\foo{$.jpg`` makes ``savefig`` raise a ``ValueError``, and
``$x$`` is typeset as math. Every place that puts user text (file names, class,
part or model names, captions) into a figure passes it through
:func:`mathtext_escape` first.

Example:
    >>> mathtext_escape(r"$\\foo{$")
    '\\\\$\\\\foo{\\\\$'
"""
from __future__ import annotations


def mathtext_escape(text: object) -> str:
    """``str(text)`` with every ``$`` escaped as ``\\$``: matplotlib then draws exactly ``text``, never
    mathtext (with ``text.usetex`` off, the setting of every dgml_viz figure)."""
    return str(text).replace("$", r"\$")


__all__ = ["mathtext_escape"]
