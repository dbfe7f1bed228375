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
from typing import Any, Iterator, Sequence

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


@dataclass(frozen=True)
class GridLayout:
    """Where the pieces of a :func:`grid_figure` go, in inches from the figure's bottom-left corner.

    Rows are stacked top down under the column titles: row ``i`` is ``row_h[i]`` tall, then a
    ``sub_h`` strip for its panel subtitles and a ``gap``. Columns are ``cell_w`` wide, ``gap``
    apart, right of a ``label_w`` margin for row labels and left of a ``bar_w`` margin for the
    colour bar; a ``legend_h`` strip at the bottom holds the legend.
    """

    fig_w: float
    fig_h: float
    label_w: float
    bar_w: float
    gap: float
    cell_w: float
    row_h: tuple[float, ...]
    title_h: float
    sub_h: float
    legend_h: float

    def column_x(self, c: int) -> float:
        """Left edge of column ``c`` (inches)."""
        return self.label_w + c * (self.cell_w + self.gap)


def _check_rows(rows: Sequence[Row], column_titles: Sequence[str] | None) -> int:
    """The number of columns of ``rows`` (ValueError unless every row has the same, non-zero count)."""
    if not rows:
        raise ValueError("a figure needs at least one row")
    ncols = len(rows[0].panels)
    if ncols == 0 or any(len(r.panels) != ncols for r in rows):
        raise ValueError("every row needs the same, non-zero number of panels")
    if column_titles is not None and len(column_titles) != ncols:
        raise ValueError(f"{len(column_titles)} column titles for {ncols} columns")
    return ncols


def grid_layout(rows: Sequence[Row], ncols: int, fig_w: float, font_size: float, *, column_titles: bool,
                colorbar: bool, legend: bool) -> GridLayout:
    """The :class:`GridLayout` of ``rows`` (``ncols`` panels each) on a ``fig_w``-inch wide figure.

    Margins scale with ``font_size`` (points) and exist only for what is drawn: row labels,
    ``column_titles``, panel subtitles, a ``colorbar``, a ``legend``. A row is as tall as its
    tallest panel (``H / W`` of each ``[H, W, 3]`` panel) at the common cell width.
    """
    pt = font_size / 72.0  # inches per font size
    label_w = 1.4 * pt * 1.2 if any(r.label for r in rows) else 0.0
    bar_w = 0.8 if colorbar else 0.0
    gap = 0.03
    cell_w = (fig_w - label_w - bar_w - gap * (ncols - 1) - 0.02) / ncols
    aspects = [max(p.shape[0] / p.shape[1] for p in r.panels) for r in rows]
    row_h = tuple(cell_w * a for a in aspects)
    title_h = 1.6 * pt * 1.2 if column_titles else 0.0
    sub_h = 1.3 * pt if any(r.titles for r in rows) else 0.0
    legend_h = 1.8 * pt * 1.2 if legend else 0.0
    fig_h = title_h + sum(row_h) + (sub_h + gap) * len(rows) + legend_h + 0.02
    return GridLayout(fig_w=fig_w, fig_h=fig_h, label_w=label_w, bar_w=bar_w, gap=gap, cell_w=cell_w, row_h=row_h,
                      title_h=title_h, sub_h=sub_h, legend_h=legend_h)


def _draw_panel(ax: Any, panel: np.ndarray, box_w: int, box_h: int) -> None:
    """Show a ``uint8 [H, W, 3]`` panel on ``ax``, resampled to fit ``box_w x box_h`` pixels, centred."""
    if panel.dtype != np.uint8 or panel.ndim != 3 or panel.shape[2] != 3:
        raise ValueError(f"panels must be uint8 [H, W, 3], got {panel.dtype} {panel.shape}")
    shown = _fit(panel, box_w, box_h)
    ax.imshow(shown, interpolation="none", resample=False)
    ax.set_xlim(-0.5, shown.shape[1] - 0.5)
    ax.set_ylim(shown.shape[0] - 0.5, -0.5)
    ax.set_anchor("C")


def _draw_row(fig: Any, row: Row, y: float, rh: float, layout: GridLayout, dpi: int, font_size: float) -> None:
    """One row of panels with bottom edge ``y`` and height ``rh`` (inches), its subtitles and label."""
    fig_w, fig_h = layout.fig_w, layout.fig_h
    for c, panel in enumerate(row.panels):
        x = layout.column_x(c)
        ax = fig.add_axes((x / fig_w, y / fig_h, layout.cell_w / fig_w, rh / fig_h))
        ax.set_axis_off()
        _draw_panel(ax, panel, int(round(layout.cell_w * dpi)), int(round(rh * dpi)))
        if row.titles and c < len(row.titles) and row.titles[c]:
            ax.text(0.5, -0.02, mathtext_escape(row.titles[c]), transform=ax.transAxes, ha="center", va="top",
                    fontsize=font_size - 1)
        if c == 0 and row.label:
            ax.text(-0.04, 0.5, mathtext_escape(row.label), transform=ax.transAxes, ha="right", va="center",
                    rotation=90)


def _draw_rows(fig: Any, rows: Sequence[Row], layout: GridLayout, dpi: int, font_size: float) -> None:
    """Every row, top down under the column titles."""
    y = layout.fig_h - layout.title_h
    for r, rh in zip(rows, layout.row_h):
        y -= rh
        _draw_row(fig, r, y, rh, layout, dpi, font_size)
        y -= layout.sub_h + layout.gap


def _draw_column_titles(fig: Any, column_titles: Sequence[str], layout: GridLayout) -> None:
    """One centred title above each column."""
    fig_w, fig_h = layout.fig_w, layout.fig_h
    top = fig_h - layout.title_h
    for c, title in enumerate(column_titles):
        x = layout.column_x(c) + layout.cell_w / 2
        fig.text(x / fig_w, (top + 0.25 * layout.title_h) / fig_h, mathtext_escape(title), ha="center",
                 va="bottom")


def _draw_colorbar(fig: Any, colormap: str, label: str, layout: GridLayout) -> None:
    """A 0..1 colour bar of ``colormap`` in the right margin, as tall as the grid."""
    import matplotlib as mpl
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize

    fig_w, fig_h = layout.fig_w, layout.fig_h
    grid_top, grid_bottom = fig_h - layout.title_h, layout.legend_h + 0.02
    cax = fig.add_axes(((fig_w - layout.bar_w + 0.08) / fig_w, grid_bottom / fig_h,
                        0.09 / fig_w, (grid_top - grid_bottom) / fig_h))
    cb = ColorbarBase(cax, cmap=mpl.colormaps[colormap], norm=Normalize(0.0, 1.0))
    cb.set_label(mathtext_escape(label))
    cb.outline.set_linewidth(0.5)


def _draw_legend(fig: Any, legend: Sequence[tuple[str, np.ndarray]], layout: GridLayout) -> None:
    """``(name, rgb uint8 [3])`` swatches in one line under the grid, centred on it."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=np.asarray(rgb, float) / 255.0, edgecolor="none", label=mathtext_escape(name))
               for name, rgb in legend]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False,
               bbox_to_anchor=(0.5 * (layout.fig_w - layout.bar_w) / layout.fig_w, 0.0), handlelength=1.0,
               borderaxespad=0.1)


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
        column_titles: one title per column (e.g. ``["image", "group 0", ..., "composite"]``).
        width: ``"single"`` (3.25 in), ``"double"`` (6.75 in) or inches.
        dpi: resolution the panels are embedded at.
        colorbar: a colormap name to draw a colour bar for (``None``: no bar).
        colorbar_label: the bar's label.
        legend: optional ``(name, rgb uint8 [3])`` swatches drawn under the grid (composite colours).

    Returns:
        A :class:`matplotlib.figure.Figure` (not attached to pyplot; close it by dropping it).
    """
    from matplotlib.figure import Figure

    ncols = _check_rows(rows, column_titles)
    fig_w = paper_width(width)
    with paper_style(fig_w):
        import matplotlib as mpl

        font_size = mpl.rcParams["font.size"]
        layout = grid_layout(rows, ncols, fig_w, font_size, column_titles=bool(column_titles),
                             colorbar=bool(colorbar), legend=bool(legend))
        fig = Figure(figsize=(layout.fig_w, layout.fig_h), dpi=dpi)
        _draw_rows(fig, rows, layout, dpi, font_size)
        if column_titles:
            _draw_column_titles(fig, column_titles, layout)
        if colorbar:
            _draw_colorbar(fig, colorbar, colorbar_label, layout)
        if legend:
            _draw_legend(fig, legend, layout)
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


__all__ = ["Row", "GridLayout", "grid_layout", "grid_figure", "save_figure", "latex_snippet", "paper_width", "paper_style", "PAPER_WIDTHS",
           "FORMATS"]
