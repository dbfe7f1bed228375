"""Matplotlib figures of an interpretability report; each returns PNG bytes (Agg backend).

Pure: they read the JSON-ready report dicts of :mod:`dgml_viz.report.analysis`
and never touch a model. ``models`` arguments map a model name to its report.
"""
from __future__ import annotations

import io
from typing import Any, Callable

import numpy as np

from dgml_viz.render.text import mathtext_escape as _lit
from dgml_viz.report.analysis import METHODS

DPI = 110


def _figure(ncols: int = 1, nrows: int = 1, width: float = 4.2, height: float = 3.2) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), dpi=DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _ci_bars(ax: Any, labels: list[str], cis: list[dict[str, Any]], color: str = "C0") -> None:
    est = np.array([c["estimate"] for c in cis], dtype=float)
    lo = np.array([c.get("low", c["estimate"]) for c in cis], dtype=float)
    hi = np.array([c.get("high", c["estimate"]) for c in cis], dtype=float)
    x = np.arange(len(labels))
    ax.bar(x, est, color=color, yerr=np.nan_to_num(np.stack([est - lo, hi - est])), capsize=3)
    ax.set_xticks(x, [_lit(v) for v in labels], rotation=30 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")


def _matrix(ax: Any, m: list[list[float]], title: str, xlabels: list[str] | None = None,
            ylabels: list[str] | None = None, vmin: float = 0.0, vmax: float = 1.0) -> None:
    a = np.asarray(m, dtype=float)
    im = ax.imshow(a, vmin=vmin, vmax=vmax, cmap="viridis")
    for (i, j), v in np.ndenumerate(a):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < (vmin + vmax) / 2 else "k", fontsize=8)
    ax.set_title(_lit(title), fontsize=9)
    ax.set_xticks(range(a.shape[1]), [_lit(v) for v in xlabels or [f"g{i}" for i in range(a.shape[1])]], fontsize=7,
                  rotation=45 if xlabels and max(map(len, xlabels)) > 3 else 0)
    ax.set_yticks(range(a.shape[0]), [_lit(v) for v in ylabels or [f"g{i}" for i in range(a.shape[0])]], fontsize=7)
    ax.figure.colorbar(im, ax=ax, fraction=0.046)


def diversity_figure(div: dict[str, Any]) -> bytes:
    """Mean intersection and cosine matrices; per-group entropy and Recall@1 with CIs."""
    panels: list[Callable[[Any], None]] = []
    k = div["num_groups"]
    groups = [f"g{i}" for i in range(k)]
    if "intersection" in div:
        panels.append(lambda ax: _matrix(ax, div["intersection"]["matrix"], "attention intersection"))
    if "cosine" in div:
        panels.append(lambda ax: _matrix(ax, div["cosine"]["matrix"], "group cosine", vmin=-1.0))
    if "entropy" in div:
        def ent(ax: Any) -> None:
            _ci_bars(ax, groups, div["entropy"]["per_group"], "C1")
            ax.set_ylim(0, 1)
            ax.set_title("normalised attention entropy", fontsize=9)
        panels.append(ent)
    if "group_recall@1" in div:
        def rec(ax: Any) -> None:
            _ci_bars(ax, groups + ["all"], div["group_recall@1"] + [div["recall@1"]], "C2")
            ax.set_ylim(0, 1)
            ax.set_title("Recall@1 per group", fontsize=9)
        panels.append(rec)
    if not panels:
        panels.append(lambda ax: ax.text(0.5, 0.5, "single group: no pairs", ha="center"))
    fig, axes = _figure(len(panels))
    for p, ax in zip(panels, axes[0]):
        p(ax)
    return _png(fig)


def localisation_figure(loc: dict[str, Any], part_names: list[str] | None = None) -> bytes:
    """Group x part attention mass; matched-part share and pointing vs the uniform chance level."""
    fig, axes = _figure(2)
    p = len(loc["mass"][0])
    _matrix(axes[0, 0], loc["mass"], "attention mass in part", xlabels=part_names or [f"p{i}" for i in range(p)])
    k = len(loc["share"])
    x = np.arange(k)
    ax = axes[0, 1]
    for off, key, col in ((-0.2, "share_ci", "C0"), (0.2, "pointing_ci", "C3")):
        cis = loc[key]
        est = np.array([c["estimate"] for c in cis])
        err = np.stack([est - [c["low"] for c in cis], np.array([c["high"] for c in cis]) - est])
        ax.bar(x + off, est, 0.4, yerr=np.nan_to_num(err), capsize=3, color=col, label=key.split("_")[0])
    ax.scatter(x - 0.2, loc["chance"]["area_share"], marker="_", s=300, color="k", label="chance (area)")
    ax.set_xticks(x, [f"g{i}->p{m}" for i, m in enumerate(loc["matched_part"])])
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("matched part: share and pointing game", fontsize=9)
    return _png(fig)


def keypoint_figure(kp: dict[str, Any]) -> bytes:
    """Distribution of the keypoint nearest each group's attention peak."""
    p = len(kp["part_names"])
    fig, axes = _figure(1, width=max(4.2, 0.45 * p + 2))
    _matrix(axes[0, 0], kp["distribution"], "nearest keypoint to the attention peak", xlabels=kp["part_names"])
    return _png(fig)


def faithfulness_figure(models: dict[str, dict[str, Any]]) -> bytes:
    """Mean deletion and insertion curves of every ordering (one row per model)."""
    rows = [(n, r["faithfulness"]) for n, r in models.items() if r.get("faithfulness")]
    fig, axes = _figure(2, max(1, len(rows)))
    for row, (name, f) in enumerate(rows):
        fr = f["fractions"]
        for col, kind in enumerate(("deletion", "insertion")):
            ax = axes[row, col]
            for m, v in f["methods"].items():
                colour = f"C{METHODS.index(m)}" if m in METHODS else "k"
                ax.plot(fr, v[f"{kind}_curve"], marker="o", ms=3, color=colour, ls="--" if m == "random" else "-",
                        label=_lit(f"{m} (AUC {v[f'{kind}_auc']['estimate']:.3f})"))
            ax.set_title(_lit(f"{name}: {kind} ({f['baseline']} baseline)"), fontsize=9)
            ax.set_xlabel("fraction of pixels " + ("removed" if kind == "deletion" else "inserted"), fontsize=8)
            ax.set_ylabel("group similarity to clean", fontsize=8)
            ax.legend(fontsize=7)
    return _png(fig)


def translation_figure(models: dict[str, dict[str, Any]]) -> bytes:
    """Embedding (solid) and per-group (thin) cosine vs shift, wrap and pad modes."""
    fig, axes = _figure(2)
    for col, mode in enumerate(("wrap", "pad")):
        ax = axes[0, col]
        for i, (name, r) in enumerate(models.items()):
            inv = r.get("invariance")
            if not inv:
                continue
            cur = inv[f"translation_{mode}"]
            ax.plot(cur["shifts"], cur["embedding_cosine"], color=f"C{i}", marker="o", ms=3, label=_lit(name))
            g = np.asarray(cur["group_cosine"])
            for k in range(g.shape[1]):
                ax.plot(cur["shifts"], g[:, k], color=f"C{i}", lw=0.6, alpha=0.6)
        ax.set_title(f"translation ({mode})", fontsize=9)
        ax.set_xlabel("shift (px)", fontsize=8)
        ax.set_ylabel("cosine to unshifted", fontsize=8)
        ax.legend(fontsize=7)
    return _png(fig)


def comparison_figure(models: dict[str, dict[str, Any]], metrics: list[str]) -> bytes:
    """One panel per headline metric: each model's value with its CI."""
    metrics = [m for m in metrics if any(m in r["headline"] for r in models.values())]
    ncols = min(4, max(1, len(metrics)))
    nrows = max(1, int(np.ceil(len(metrics) / ncols)))
    fig, axes = _figure(ncols, nrows, width=3.0, height=2.6)
    names = list(models)
    for ax, m in zip(axes.flat, metrics):
        cis = [models[n]["headline"].get(m, {"estimate": float("nan")}) for n in names]
        _ci_bars(ax, names, cis)
        ax.set_title(_lit(m), fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    return _png(fig)


def per_class_figure(per_class: dict[str, Any], metric: str = "recall@1") -> bytes:
    """Per-class bar chart of one metric (sorted)."""
    vals = np.asarray(per_class.get(metric, []), dtype=float)
    order = np.argsort(np.nan_to_num(vals, nan=-1.0))
    fig, axes = _figure(1, width=max(4.2, 0.12 * len(vals) + 2))
    ax = axes[0, 0]
    ax.bar(np.arange(len(vals)), vals[order], color="C2")
    ax.set_xticks(np.arange(len(vals)), [_lit(per_class["classes"][i]) for i in order], rotation=90, fontsize=5)
    ax.set_title(_lit(f"per-class {metric}"), fontsize=9)
    return _png(fig)


__all__ = ["diversity_figure", "localisation_figure", "keypoint_figure", "faithfulness_figure",
           "translation_figure", "comparison_figure", "per_class_figure"]
