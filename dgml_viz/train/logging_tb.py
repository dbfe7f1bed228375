"""Training you can watch: TensorBoard logs and the probe attention timeline of a run (rank 0).

With ``train.tensorboard: true`` (the default) :func:`dgml_viz.train.train` writes, beside
``log.csv``:

====================================  ==========================================================
``tb/``                               TensorBoard event files (``tensorboard --logdir RUN/tb``)
``timeline.npz``                      the probe images and their attention maps at every epoch
                                      (:class:`Timeline`; rewritten atomically each time)
``attention_timeline.{png,pdf}``      drawn from ``timeline.npz`` at the end of the run
                                      (``dgml-viz timeline --run-dir RUN`` redraws it)
====================================  ==========================================================

TensorBoard tags (x axis = global training step):

* ``loss/<term>`` — each term the loss returns (``total``, ``metric``, ``div``, ...), epoch means;
* ``lr/<param group>`` — learning rate of each optimizer group (``backbone``, ``keyval``, ...);
* ``speed/images_per_s``, ``speed/epoch_time_s``;
* ``eval/<metric>`` — retrieval metrics at each evaluation; ``eval_group/<metric>/group<g>``
  — per-group numbers (``recall@1`` of each group's slice);
* ``attention/entropy/group<g>``, ``attention/overlap/<i-j>`` (histogram intersection),
  ``attention/top50_iou/<i-j>``, ``groups/cosine/<i-j>`` (diversity of the group embeddings) —
  from :mod:`dgml_viz.metrics.diversity` on a fixed held-out subset (:data:`NUM_STATS` images),
  every epoch;
* ``parts/share/group<g>``, ``parts/pointing/group<g>``, ``parts/ratio/group<g>``,
  ``parts/distinct`` — :func:`dgml_viz.metrics.localisation.localisation_report`, where the test
  items carry ``part_masks``;
* images ``probes/group<g>`` — the group's overlay on each probe image (:data:`NUM_PROBES`
  held-out images chosen once from the seed), every epoch.

The probe pass runs every epoch (not only at ``eval_every``): it is a forward pass over
:data:`NUM_STATS` images, so the timeline has one row per epoch even when retrieval is
evaluated rarely.

Example:
    >>> tl = Timeline.load("runs/synthetic/timeline.npz")       # doctest: +SKIP
    >>> tl.attention.shape                                       # [E, P, K, h, w]  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from dgml_viz.errors import ConfigError

logger = logging.getLogger(__name__)

#: held-out images whose overlays are logged (and kept in the timeline)
NUM_PROBES: int = 4
#: held-out images the attention statistics are measured on (the probes come first)
NUM_STATS: int = 64
TIMELINE_FILE = "timeline.npz"
TIMELINE_FIGURE = "attention_timeline"
TB_DIR = "tb"
_GROUP_METRIC = re.compile(r"^group(\d+)_(.+)$")


def probe_indices(num_items: int, seed: int, num: int = NUM_STATS) -> list[int]:
    """``min(num, num_items)`` distinct item indices drawn once from ``seed`` (the first
    :data:`NUM_PROBES` are the probe images)."""
    rng = np.random.default_rng([int(seed), 15])
    return [int(i) for i in rng.permutation(num_items)[:min(num, num_items)]]


# --------------------------------------------------------------------------- the timeline data


@dataclass
class Timeline:
    """The probe attention of a run, one entry per probe pass.

    Attributes:
        images: ``uint8 [P, S, S, 3]`` probe inputs as RGB (the model's view of them).
        indices: ``[P]`` their item indices in the test split.
        epochs, steps: ``[E]`` epoch (1-based) and global step of each pass.
        attention: ``float32 [E, P, K, h, w]`` the probes' maps.
        stat_names: names of the scalar statistics; ``stats``: ``float64 [E, len(stat_names)]``.
    """

    images: np.ndarray
    indices: np.ndarray
    epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    attention: np.ndarray | None = None
    stat_names: list[str] = field(default_factory=list)
    stats: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    def __len__(self) -> int:
        return int(len(self.epochs))

    def append(self, epoch: int, step: int, maps: np.ndarray, stats: Mapping[str, float]) -> None:
        """Add one pass: ``maps [P, K, h, w]`` and its scalar ``stats`` (new names get NaN history)."""
        maps = np.asarray(maps, np.float32)[None]
        self.attention = maps if self.attention is None else np.concatenate([self.attention, maps])
        for name in stats:
            if name not in self.stat_names:
                self.stat_names.append(name)
                self.stats = np.concatenate([self.stats, np.full((len(self), 1), np.nan)], axis=1)
        row = np.array([[float(stats.get(n, np.nan)) for n in self.stat_names]], np.float64)
        self.stats = np.concatenate([self.stats, row])
        self.epochs = np.append(self.epochs, int(epoch)).astype(np.int64)
        self.steps = np.append(self.steps, int(step)).astype(np.int64)

    def truncate(self, last_epoch: int) -> None:
        """Drop passes after ``last_epoch`` (a resumed run replays them)."""
        keep = self.epochs <= last_epoch
        self.epochs, self.steps, self.stats = self.epochs[keep], self.steps[keep], self.stats[keep]
        self.attention = self.attention[keep] if self.attention is not None and keep.any() else None

    def stat(self, name: str) -> np.ndarray:
        """``[E]`` history of one statistic (KeyError if never logged)."""
        return self.stats[:, self.stat_names.index(name)]

    def save(self, path: str | Path) -> None:
        """Write ``path`` atomically (plain arrays; read back without pickle)."""
        from dgml_viz.utils.atomic import atomic_path

        if self.attention is None:
            raise ValueError("nothing to save: no probe pass yet")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, images=self.images, indices=self.indices, epochs=self.epochs, steps=self.steps,
                     attention=self.attention, stat_names=np.array(self.stat_names, dtype=str),
                     stats=self.stats)

    @classmethod
    def load(cls, path: str | Path) -> "Timeline":
        """Read a ``timeline.npz`` (``allow_pickle=False``); one-line ConfigError if missing or malformed."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no attention timeline (train with train.tensorboard=true)")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in ("images", "indices", "epochs", "steps", "attention", "stat_names", "stats")}
        except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
            msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{path}: cannot read the attention timeline ({msg})") from None
        att, img = data["attention"], data["images"]
        e = len(data["epochs"])
        if (img.dtype != np.uint8 or img.ndim != 4 or att.ndim != 5 or att.shape[:2] != (e, img.shape[0])
                or data["stats"].shape != (e, len(data["stat_names"])) or len(data["steps"]) != e):
            raise ConfigError(f"{path}: malformed attention timeline (attention {att.shape}, images {img.shape}, "
                              f"{e} epochs)")
        return cls(images=img, indices=data["indices"], epochs=data["epochs"].astype(np.int64),
                   steps=data["steps"].astype(np.int64), attention=att.astype(np.float32),
                   stat_names=[str(s) for s in data["stat_names"]], stats=data["stats"].astype(np.float64))


def draw_timeline(run_dir: str | Path, *, out_dir: str | Path | None = None, probes: Sequence[int] | None = None,
                  max_rows: int | None = None) -> list[Path]:
    """(Re)draw ``attention_timeline.{png,pdf}`` of a run from its ``timeline.npz``.

    Returns the written paths (in ``out_dir``, default the run folder).
    """
    from dgml_viz.render.timeline import MAX_ROWS, save_timeline_figure, timeline_figure

    run_dir = Path(run_dir)
    tl = Timeline.load(run_dir / TIMELINE_FILE)
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter at INFO
    try:
        fig = timeline_figure(tl.images, tl.attention, tl.epochs.tolist(), probes=probes,
                              max_rows=max_rows or MAX_ROWS)
    except ValueError as exc:
        raise ConfigError(f"{run_dir / TIMELINE_FILE}: {exc}") from None
    return save_timeline_figure(fig, Path(out_dir or run_dir) / TIMELINE_FIGURE)


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``log.csv`` as floats (an empty cell, e.g. no evaluation that epoch, is NaN).

    Raises:
        ConfigError: no ``log.csv`` in ``run_dir``, or it cannot be parsed (one line).
    """
    import csv

    path = Path(run_dir) / "log.csv"
    if not path.is_file():
        raise ConfigError(f"{Path(run_dir)}: not a training run (no log.csv)")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [{k: float(v) if v not in ("", None) else float("nan") for k, v in row.items() if k}
                    for row in csv.DictReader(fh)]
    except (OSError, ValueError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read the training log ({str(exc).splitlines()[0][:160]})") from None


def timeline_png(run_dir: str | Path, probes: Sequence[int] | None = None, max_rows: int | None = None,
                 dpi: int = 110) -> bytes:
    """PNG bytes of a run's timeline figure, drawn from ``timeline.npz`` (nothing written)."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from dgml_viz.render.timeline import MAX_ROWS, timeline_figure

    path = Path(run_dir) / TIMELINE_FILE
    tl = Timeline.load(path)
    try:
        fig = timeline_figure(tl.images, tl.attention, tl.epochs.tolist(), probes=probes,
                              max_rows=max_rows or MAX_ROWS, dpi=dpi)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


# --------------------------------------------------------------------------- the monitor


def attention_stats(groups: torch.Tensor, attention: torch.Tensor | None,
                    part_masks: torch.Tensor | None) -> dict[str, float]:
    """Scalar diagnostics of ``groups [N, K, d]``, ``attention [N, K, h, w]`` and ``part_masks [N, P, H, W]``,
    keyed by their TensorBoard tags (see the module docstring)."""
    from dgml_viz.metrics.diversity import (attention_entropy, group_cosine, histogram_intersection,
                                            pair_names, pair_values, top_mass_iou)

    k = groups.shape[1]
    out: dict[str, float] = {}
    pairs = pair_names(k)
    for name, v in zip(pairs, pair_values(group_cosine(groups)).mean(0).tolist()):
        out[f"groups/cosine/{name}"] = v
    if attention is None:
        return out
    for g, v in enumerate(attention_entropy(attention).mean(0).tolist()):
        out[f"attention/entropy/group{g}"] = v
    for name, v in zip(pairs, pair_values(histogram_intersection(attention)).mean(0).tolist()):
        out[f"attention/overlap/{name}"] = v
    for name, v in zip(pairs, pair_values(top_mass_iou(attention)).mean(0).tolist()):
        out[f"attention/top50_iou/{name}"] = v
    if part_masks is not None:
        from dgml_viz.metrics.localisation import localisation_report

        rep = localisation_report(attention, part_masks)
        for g in range(k):
            out[f"parts/share/group{g}"] = rep.share[g]
            out[f"parts/pointing/group{g}"] = rep.pointing[g]
            out[f"parts/ratio/group{g}"] = rep.ratio[g]
        out["parts/distinct"] = float(rep.distinct)
    return out


def metric_tag(name: str) -> str:
    """TensorBoard tag of a retrieval metric: ``group2_recall@1`` -> ``eval_group/recall@1/group2``,
    anything else -> ``eval/<name>``."""
    m = _GROUP_METRIC.match(name)
    return f"eval_group/{m.group(2)}/group{m.group(1)}" if m else f"eval/{name}"


class TrainingMonitor:
    """Rank 0's watch on a run: TensorBoard scalars and images, and the probe timeline.

    Args:
        run_dir: the run folder (``tb/``, ``timeline.npz`` and the figure go there).
        dataset: the held-out (test/query) split; probes and statistics come from it.
        transform: the eval transform dict (``mean``/``std`` undo the normalisation of the probe views).
        seed: chooses the probe/statistics subset once.
        start_epoch, start_step: where a resumed run continues (0 for a new run); a resumed run
            keeps the timeline up to ``start_epoch`` and TensorBoard purges the events after ``start_step``
            (those of epochs the killed run logged after its last saved state).
    """

    def __init__(self, run_dir: str | Path, dataset: Any, transform: Mapping[str, Any], *, seed: int = 0,
                 start_epoch: int = 0, start_step: int = 0, num_probes: int = NUM_PROBES,
                 num_stats: int = NUM_STATS) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from dgml_viz.data.transforms import denormalise as to_view

        self.run_dir = Path(run_dir)
        self.dataset = dataset
        self.indices = probe_indices(len(dataset), seed, max(num_stats, num_probes))
        self.num_probes = min(num_probes, len(self.indices))
        views = []
        for i in self.indices[:self.num_probes]:
            view = to_view(dataset[i]["image"], dict(transform))
            views.append(view[:, :, ::-1].copy() if transform.get("channel_order") == "BGR" else view)
        self.timeline = Timeline(images=np.stack(views), indices=np.array(self.indices[:self.num_probes]))
        path = self.run_dir / TIMELINE_FILE
        if start_epoch > 0 and path.is_file():
            try:
                old = Timeline.load(path)
                if np.array_equal(old.indices, self.timeline.indices):
                    old.truncate(start_epoch)
                    self.timeline = old
            except ConfigError as exc:
                logger.warning("%s; starting a new timeline", exc)
        self.writer = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=start_step + 1 if start_step else None)

    def log_epoch(self, step: int, terms: Mapping[str, float], lrs: Mapping[str, float],
                  row: Mapping[str, Any]) -> None:
        """Loss terms by name, learning rate per optimizer group, speed; a re-seeded group
        (``train.reseed_overlap``) as ``reseed/group`` and ``reseed/overlap`` at its epoch."""
        for name, value in terms.items():
            self.writer.add_scalar(f"loss/{name}", value, step)
        for name, lr in lrs.items():
            self.writer.add_scalar(f"lr/{name}", lr, step)
        for key in ("images_per_s", "epoch_time_s"):
            if key in row:
                self.writer.add_scalar(f"speed/{key}", float(row[key]), step)
        for key, tag in (("reseeded_group", "reseed/group"), ("reseed_overlap", "reseed/overlap")):
            if key in row:
                self.writer.add_scalar(tag, float(row[key]), step)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        """Retrieval metrics of an evaluation (per-group ones under ``eval_group/``)."""
        for name, value in metrics.items():
            self.writer.add_scalar(metric_tag(name), float(value), step)

    def log_probes(self, model: nn.Module, epoch: int, step: int) -> dict[str, float]:
        """Probe pass: attention statistics, localisation, overlays; the timeline grows and is saved.

        Returns the statistics (tag -> value).
        """
        from dgml_viz.metrics.localisation import collect_attention
        from dgml_viz.render.timeline import probe_overlays

        _, groups, _, attention, masks = collect_attention(model, self.dataset, self.indices)
        stats = attention_stats(groups, attention, masks)
        for tag, value in stats.items():
            self.writer.add_scalar(tag, value, step)
        if attention is not None:
            maps = attention[:self.num_probes].numpy()
            overlays = probe_overlays(self.timeline.images, maps)  # [P][K]
            for g in range(maps.shape[1]):
                strip = np.concatenate([overlays[p][g] for p in range(len(overlays))], axis=1)
                self.writer.add_image(f"probes/group{g}", strip, step, dataformats="HWC")
            self.timeline.append(epoch, step, maps, stats)
            self.timeline.save(self.run_dir / TIMELINE_FILE)
        self.writer.flush()
        return stats

    def close(self, draw: bool = True) -> list[Path]:
        """Flush TensorBoard and, when ``draw``, draw the timeline figure (returns the paths written)."""
        self.writer.close()
        if not draw or not len(self.timeline):
            return []
        return draw_timeline(self.run_dir)


__all__ = ["TrainingMonitor", "Timeline", "attention_stats", "metric_tag", "draw_timeline", "probe_indices",
           "read_history", "timeline_png",
           "NUM_PROBES", "NUM_STATS", "TIMELINE_FILE", "TIMELINE_FIGURE", "TB_DIR"]
