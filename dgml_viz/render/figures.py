"""Paper figures with matplotlib: image x group grids, query/retrieval figures, deterministic saving.

* :func:`grid_figure` — rows of panels (e.g. original, one overlay per group,
  composite) with column titles, optional row labels and an optional colour bar,
  sized for a one-column (3.25 in) or two-column (6.75 in) paper width with
  fonts that match (7 pt / 8 pt).
* :func:`save_figure` — PDF and SVG (vector; panels embedded as images at a
  chosen DPI) and PNG, written atomically and *deterministically*: fixed
  metadata (no dates, no software versions), a fixed SVG hash salt and one
  image object per panel, so the same inputs give the same bytes.
* :func:`latex_snippet` — a ``figure`` environment that includes the PDF.

Panels are resampled here (``cv2.INTER_AREA``) to the pixel size they occupy at
the chosen DPI and drawn with ``interpolation="none"``, so vector files embed
exactly that resolution.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from dgml_viz.render.text import mathtext_escape

#: paper column widths in inches
PAPER_WIDTHS: dict[str, float] = {"single": 3.25, "double": 6.75}
#: matplotlib ``metadata=`` per format that removes dates and version strings
_METADATA: dict[str, dict[str, None]] = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None},
    "svg": {"Creator": None, "Date": None, "Format": None, "Type": None},
}
FORMATS: tuple[str, ...] = ("pdf", "svg", "png")


@dataclass
class Row:
    """One figure row: panels left to right and an optional label drawn left of the row."""

    panels: list[np.ndarray]
    label: str | None = None
    titles: list[str] | None = field(default=None)  # per-panel subtitles (e.g. similarity)


def paper_width(width: str | float) -> float:
    """``"single"``/``"double"`` or a number of inches -> inches."""
    if isinstance(width, str) and width in PAPER_WIDTHS:
        return PAPER_WIDTHS[width]
    try:
        value = float(width)
    except (TypeError, ValueError):
        raise ValueError(f"width must be 'single', 'double' or inches, got {width!r}") from None
    if not 0.5 <= value <= 30:
        raise ValueError(f"width {value} in is out of range")
    return value


@contextlib.contextmanager
def paper_style(width_in: float) -> Iterator[None]:
    """rcParams for deterministic, consistently sized paper figures (7 pt single, 8 pt double column)."""
    import matplotlib as mpl

    size = 7.0 if width_in < 5 else 8.0
    with mpl.rc_context({
        "font.family": "DejaVu Sans", "font.size": size, "axes.titlesize": size, "axes.labelsize": size,
        "xtick.labelsize": size - 1, "ytick.labelsize": size - 1, "axes.linewidth": 0.5,
        "image.composite_image": False,  # one image object per panel in PDF/SVG
        "svg.hashsalt": "dgml_viz", "svg.fonttype": "path", "pdf.fonttype": 42,
        "savefig.bbox": None, "savefig.pad_inches": 0.0, "path.simplify": True,
    }):
        yield


def _fit(panel: np.ndarray, box_w: int, box_h: int) -> np.ndarray:
    """Resize ``panel`` to fit ``box_w x box_h`` pixels keeping its aspect (never upscales by > 4x)."""
    h, w = panel.shape[:2]
    f = min(box_w / w, box_h / h, 4.0)
    size = (max(1, int(round(w * f))), max(1, int(round(h * f))))
    if size == (w, h):
        return panel
    return cv2.resize(panel, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def grid_figure(
    rows: Sequence[Row],
    column_titles: Sequence[str] | None = None,
    width: str | float = "double",
    dpi: int = 300,
    colorbar: str | None = None,
    colorbar_label: str = "attention (normalised)",
    legend: Sequence[tuple[str, np.ndarray]] | None = None,
) -> "matplotlib.figure.Figure":  # type: ignore[name-defined]  # noqa: F821
    """A grid of image panels.

    Args:
        rows: :class:`Row` s, each with the same number of ``uint8 [H, W, 3]`` panels.
        column_titles: one title per column (e.g. ``["image", "group 1", ..., "composite"]``).
        width: ``"single"`` (3.25 in), ``"double"`` (6.75 in) or inches.
        dpi: resolution the panels are embedded at.
        colorbar: a colormap name to draw a colour bar for (``None``: no bar).
        colorbar_label: the bar's label.
        legend: optional ``(name, rgb uint8 [3])`` swatches drawn under the grid (composite colours).

    Returns:
        A :class:`matplotlib.figure.Figure` (not attached to pyplot; close it by dropping it).
    """
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not rows:
        raise ValueError("a figure needs at least one row")
    ncols = len(rows[0].panels)
    if ncols == 0 or any(len(r.panels) != ncols for r in rows):
        raise ValueError("every row needs the same, non-zero number of panels")
    if column_titles is not None and len(column_titles) != ncols:
        raise ValueError(f"{len(column_titles)} column titles for {ncols} columns")
    fig_w = paper_width(width)
    with paper_style(fig_w):
        import matplotlib as mpl

        pt = mpl.rcParams["font.size"] / 72.0  # inches per font size
        label_w = 1.4 * pt * 1.2 if any(r.label for r in rows) else 0.0
        bar_w = 0.8 if colorbar else 0.0
        gap = 0.03
        cell_w = (fig_w - label_w - bar_w - gap * (ncols - 1) - 0.02) / ncols
        aspects = [max(p.shape[0] / p.shape[1] for p in r.panels) for r in rows]
        row_h = [cell_w * a for a in aspects]
        title_h = 1.6 * pt * 1.2 if column_titles else 0.0
        sub_h = 1.3 * pt if any(r.titles for r in rows) else 0.0
        legend_h = 1.8 * pt * 1.2 if legend else 0.0
        fig_h = title_h + sum(row_h) + (sub_h + gap) * len(rows) + legend_h + 0.02
        fig = Figure(figsize=(fig_w, fig_h), dpi=dpi)
        y = fig_h - title_h
        for r, rh in zip(rows, row_h):
            y -= rh
            for c, panel in enumerate(r.panels):
                x = label_w + c * (cell_w + gap)
                ax = fig.add_axes((x / fig_w, y / fig_h, cell_w / fig_w, rh / fig_h))
                ax.set_axis_off()
                if panel.dtype != np.uint8 or panel.ndim != 3 or panel.shape[2] != 3:
                    raise ValueError(f"panels must be uint8 [H, W, 3], got {panel.dtype} {panel.shape}")
                shown = _fit(panel, int(round(cell_w * dpi)), int(round(rh * dpi)))
                ax.imshow(shown, interpolation="none", resample=False)
                ax.set_xlim(-0.5, shown.shape[1] - 0.5)
                ax.set_ylim(shown.shape[0] - 0.5, -0.5)
                ax.set_anchor("C")
                if r.titles and c < len(r.titles) and r.titles[c]:
                    ax.text(0.5, -0.02, mathtext_escape(r.titles[c]), transform=ax.transAxes, ha="center", va="top",
                            fontsize=mpl.rcParams["font.size"] - 1)
                if c == 0 and r.label:
                    ax.text(-0.04, 0.5, mathtext_escape(r.label), transform=ax.transAxes, ha="right", va="center",
                            rotation=90)
            y -= sub_h + gap
        if column_titles:
            top = fig_h - title_h
            for c, title in enumerate(column_titles):
                x = label_w + c * (cell_w + gap) + cell_w / 2
                fig.text(x / fig_w, (top + 0.25 * title_h) / fig_h, mathtext_escape(title), ha="center",
                         va="bottom")
        if colorbar:
            grid_top, grid_bottom = fig_h - title_h, legend_h + 0.02
            cax = fig.add_axes(((fig_w - bar_w + 0.08) / fig_w, grid_bottom / fig_h,
                                0.09 / fig_w, (grid_top - grid_bottom) / fig_h))
            cb = ColorbarBase(cax, cmap=mpl.colormaps[colorbar], norm=Normalize(0.0, 1.0))
            cb.set_label(mathtext_escape(colorbar_label))
            cb.outline.set_linewidth(0.5)
        if legend:
            handles = [Patch(facecolor=np.asarray(rgb, float) / 255.0, edgecolor="none", label=mathtext_escape(name))
                       for name, rgb in legend]
            fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
                       bbox_to_anchor=(0.5 * (fig_w - bar_w) / fig_w, 0.0), handlelength=1.0,
                       borderaxespad=0.1)
    return fig


def save_figure(fig: "matplotlib.figure.Figure", stem: str | os.PathLike[str],  # type: ignore[name-defined]  # noqa: F821
                formats: Sequence[str] = FORMATS, dpi: int | None = None) -> list[Path]:
    """Save ``fig`` as ``<stem>.<fmt>`` for each format, atomically and deterministically.

    Same figure -> same bytes: dates and version strings are removed from the
    metadata and SVG ids use a fixed salt. Returns the written paths.
    """
    import matplotlib as mpl
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from dgml_viz.utils.atomic import atomic_path

    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"formats must be among {', '.join(FORMATS)}, got {bad}")
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    written = []
    with mpl.rc_context({"svg.hashsalt": "dgml_viz", "image.composite_image": False, "svg.fonttype": "path",
                         "pdf.fonttype": 42}):
        for fmt in formats:
            target = Path(f"{os.fspath(stem)}.{fmt}")
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format=fmt, dpi=dpi or fig.dpi, metadata=_METADATA[fmt])
            written.append(target)
    return written


def latex_snippet(filename: str, caption: str, label: str, double_column: bool = True) -> str:
    """A LaTeX ``figure`` (``figure*`` for two columns) including ``filename`` with a caption and label."""
    env = "figure*" if double_column else "figure"
    width = r"\textwidth" if double_column else r"\columnwidth"
    safe = caption.replace("%", r"\%").replace("&", r"\&").replace("_", r"\_").replace("#", r"\#")
    return (f"% generated by dgml-viz gallery\n\\begin{{{env}}}[t]\n  \\centering\n"
            f"  \\includegraphics[width={width}]{{{filename}}}\n"
            f"  \\caption{{{safe}}}\n  \\label{{{label}}}\n\\end{{{env}}}\n")


__all__ = ["Row", "grid_figure", "save_figure", "latex_snippet", "paper_width", "paper_style", "PAPER_WIDTHS",
           "FORMATS"]
