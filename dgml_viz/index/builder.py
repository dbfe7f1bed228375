"""``build_index``: embed a folder (or list) of images once and keep the result on disk.

Pipeline: decode threads (read, decode, eval transform — :func:`dgml_viz.inference.prepare_image`)
feed the main thread's batched forward (:func:`dgml_viz.inference.run_batch`); rows are
buffered and flushed every ``chunk_size`` images to ``<index>/.pending/chunk-*.npz``
(atomic writes), and the final index is written by :func:`~dgml_viz.index.store.write_index`.

* **incremental** — a file whose path, size and mtime match the existing index is not
  decoded or embedded again; new/changed files are; files gone from the input are dropped
  (bad files with an unchanged stamp stay recorded as bad without a retry);
* **resumable** — after a crash, ``resume=True`` keeps the pending chunks of the
  interrupted run (without it they are discarded and the run starts over from the last
  complete index);
* **sharded** — ``shard=(i, n)`` (or torchrun's ``RANK``/``WORLD_SIZE``) keeps the
  images whose relative-path hash is ``i`` mod ``n`` (the ``heatmaps`` rule) and writes
  the shard's own index to ``<out>/shards/<i>-of-<n>``; :func:`~dgml_viz.index.store.merge_indexes`
  joins them;
* **bad images** — recorded in the manifest's ``errors`` with a warning; the run goes on.

Example:
    >>> stats = build_index("checkpoints/demo.pt", "data/test", "runs/test_index")   # doctest: +SKIP
    >>> stats.embedded, stats.reused                                                  # doctest: +SKIP
    (640, 0)
"""
from __future__ import annotations

import collections
import itertools
import json
import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from dgml_viz.errors import ConfigError, ImageError
from dgml_viz.index.store import (ATTENTION_DTYPE, GROUPS_DTYPE, INFO_COLUMNS, Rows, file_sha256, info_row,
                                  is_index, merge_indexes, open_index, write_index)
from dgml_viz.inference import prepare_image, run_batch
from dgml_viz.utils.processes import choose_processes, run_forked, unit_size
from dgml_viz.utils.threads import background_pool

logger = logging.getLogger(__name__)

PENDING = ".pending"
#: decoding goes in the forward's gaps ("phased", :class:`_Decoder`) when its CPU seconds per image are under
#: this share of the forward's time per image (ResNet-50 on a 2-core CPU: ~5 ms vs ~120 ms)
PHASED_SHARE = 0.1
Stamp = tuple[int, int]  # (size, mtime_ns) of a file


@dataclass
class BuildStats:
    """What one :func:`build_index` run did (counts of images)."""

    out: Path
    total: int = 0  # images of the input (this shard's)
    embedded: int = 0  # decoded + forwarded in this run
    reused: int = 0  # unchanged, taken from the existing index
    resumed: int = 0  # taken from an interrupted run's pending chunks
    removed: int = 0  # in the old index, gone from the input
    failed: int = 0  # bad files (this run's and carried over)
    seconds: float = 0.0  # the whole call (model load, hashing, scanning, embedding, writing)
    embed_seconds: float = 0.0  # decoding + forward passes + pending chunks only
    decode: str = ""  # how decoding ran beside the forward: "overlapped", "phased" or "inline" (see _Decoder); "" if nothing ran
    processes: int = 1  # worker processes that embedded (1: this process; see choose_processes)

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def shard_from_env() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when launched by torchrun with more than one process, else None."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise ConfigError(f"RANK/WORLD_SIZE must be integers, got {os.environ.get('RANK')!r}/"
                          f"{os.environ.get('WORLD_SIZE')!r}") from None
    return (rank, world) if world > 1 else None


def shard_dir(out: str | os.PathLike[str], shard: tuple[int, int]) -> Path:
    """Where shard ``(i, n)`` of the index ``out`` is written."""
    return Path(out) / "shards" / f"{shard[0]}-of-{shard[1]}"


def merge_shards(out: str | os.PathLike[str], num_shards: int | None = None) -> Path:
    """Merge ``<out>/shards/*-of-<n>`` into the index ``out`` (all ``n`` shards must be complete)."""
    out = Path(out)
    found = sorted((out / "shards").glob("*-of-*")) if (out / "shards").is_dir() else []
    by_n: dict[int, list[Path]] = collections.defaultdict(list)
    for d in found:
        try:
            i, n = (int(v) for v in d.name.split("-of-"))
        except ValueError:
            continue
        by_n[n].append(d)
    if not by_n:
        raise ConfigError(f"{out}: no shards to merge (expected {out}/shards/I-of-N)")
    n = num_shards if num_shards is not None else max(by_n)
    dirs = sorted(by_n.get(n, []), key=lambda d: int(d.name.split("-of-")[0]))
    missing = sorted(set(range(n)) - {int(d.name.split("-of-")[0]) for d in dirs if is_index(d)})
    if missing:
        raise ConfigError(f"{out}/shards: shard(s) {', '.join(f'{i}-of-{n}' for i in missing)} missing or incomplete")
    return merge_indexes(dirs, out)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return int(st.st_size), int(st.st_mtime_ns)


def _checkpoint_meta(ckpt: Path, model: Any, sha: str) -> dict[str, Any]:
    return {"path": str(ckpt.resolve()), "sha256": sha, "config": model.config.to_dict(),
            "transform": dict(model.transform)}


# --------------------------------------------------------------------------- pending chunks
def _write_chunk(folder: Path, number: int, rows: Rows, errors: list[dict[str, Any]], sha: str) -> None:
    from dgml_viz.utils.atomic import atomic_path

    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "paths": np.array(rows.paths, dtype=str), "info": rows.info, "groups": rows.groups,
        "meta": np.array(json.dumps({"sha256": sha, "errors": errors})),
    }
    if rows.attention is not None:
        arrays["attention"] = rows.attention
    with atomic_path(folder / f"chunk-{number:06d}.npz") as tmp:
        np.savez(tmp, **arrays)


def _chunk_number(f: Path) -> int:
    return int(f.stem.split("-")[1])


def _read_chunks(folder: Path, sha: str, numbers: range | None = None) -> list[tuple[Rows, list[dict[str, Any]]]]:
    """Pending chunks made with the same checkpoint (others are ignored), in number order; only those
    numbered in ``numbers`` when given."""
    out = []
    for f in sorted(folder.glob("chunk-*.npz")):
        if numbers is not None and _chunk_number(f) not in numbers:
            continue
        try:
            with np.load(f, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("sha256") != sha:
                    logger.warning("%s: made with another checkpoint; ignored", f)
                    continue
                rows = Rows([str(p) for p in z["paths"]], z["info"].astype(np.int64), z["groups"],
                            z["attention"] if "attention" in z.files else None)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            logger.warning("%s: unreadable pending chunk (%s); ignored", f, exc)
            continue
        out.append((rows, list(meta.get("errors") or [])))
    return out


# --------------------------------------------------------------------------- embedding
class _Decoder:
    """Decode + transform (:func:`dgml_viz.inference.prepare_image`) in ``workers`` threads, one batch at a time,
    in input order; each batch is ``(path, stamp, (tensor, geometry) | ImageError)`` per file.

    Two schedules. *Overlapped*: the next batch is decoding while the caller runs the forward on this one (a
    GPU forward, or a CPU model too light to keep the cores busy). *Phased* (a CPU model whose forward dwarfs
    decoding, e.g. ResNet-50): the next batch is decoded only once the caller asks for it, by every thread,
    while the forward is not running. On a 2-core box a decode thread running beside a 2-thread forward
    stalls its OpenMP team at every barrier (ResNet-50, 48 JPEGs, one measurement on the idle box: 0.92-0.94
    of the bare forward overlapped with 1 or 2 decode threads at any priority, 0.99 phased); decoding in the
    gaps costs only its own CPU time. The decode threads run below the caller's priority in both schedules
    (:func:`~dgml_viz.utils.threads.background_pool`). :meth:`choose` picks the schedule after the
    first batch (which nothing can overlap anyway); ``overlap`` forces one. ``workers=0`` decodes *inline*, in the
    caller's thread before each forward (a worker process of :func:`_embed_forked`: one core, nothing to overlap)."""

    def __init__(self, items: Sequence[tuple[Path, Stamp]], transform: dict[str, Any], workers: int,
                 batch_size: int, max_pixels: int | None, overlap: bool | None) -> None:
        self.items, self.transform, self.max_pixels = items, transform, max_pixels
        self.workers, self.batch_size = max(0, workers), max(1, batch_size)
        self.overlap = False if self.workers == 0 else overlap
        self.decode_cpu: list[float] = []  # CPU seconds of each decode of the first batch (list.append is atomic)

    def _work(self, path: Path) -> tuple[torch.Tensor, Any]:
        t0 = time.thread_time()
        try:
            tensor, geometry, _ = prepare_image(path, self.transform, max_pixels=self.max_pixels)
            return tensor, geometry
        finally:
            if self.overlap is None:
                self.decode_cpu.append(time.thread_time() - t0)

    def choose(self, forward_s: float, images: int) -> None:
        """Pick the schedule from the first batch: phased when decoding an image costs under
        :data:`PHASED_SHARE` of the forward's time per image."""
        if self.overlap is None and images:
            per_image = sum(self.decode_cpu) / max(1, len(self.decode_cpu))
            self.overlap = not per_image < PHASED_SHARE * (forward_s / images)
            logger.debug("decode %.2f ms CPU/img, forward %.1f ms/img: %s decoding", per_image * 1e3,
                         forward_s / images * 1e3, "overlapped" if self.overlap else "phased")

    @property
    def schedule(self) -> str:
        """How decoding ran: "inline", "overlapped", "phased" ("" before the first batch)."""
        return "inline" if self.workers == 0 else {None: "", True: "overlapped", False: "phased"}[self.overlap]

    def batches(self) -> Iterator[list[tuple[Path, Stamp, Any]]]:
        todo = iter(self.items)
        if self.workers == 0:
            while batch := list(itertools.islice(todo, self.batch_size)):
                yield [(p, stamp, _caught(self._work, p)) for p, stamp in batch]
            return
        with background_pool(self.workers, "index-decode") as pool:
            def submit() -> list[tuple[Path, Stamp, Future[Any]]]:
                return [(p, stamp, pool.submit(self._work, p)) for p, stamp in itertools.islice(todo, self.batch_size)]

            ahead = submit()
            while ahead:
                batch = [(p, stamp, _caught(fut.result)) for p, stamp, fut in ahead]
                ahead = submit() if self.overlap else []  # overlapped: decoding while the caller forwards
                yield batch
                if not ahead:
                    ahead = submit()


def _caught(call: Any, *args: Any) -> Any:
    """``call(*args)`` (a decode, or a decode's ``Future.result``), or the :class:`ImageError` it raised (any
    other exception propagates)."""
    try:
        return call(*args)
    except ImageError as exc:
        return exc


class _ChunkWriter:
    """Buffers embedded rows and flushes them as pending chunks of ``chunk_size`` images."""

    def __init__(self, folder: Path, chunk_size: int, sha: str, first_number: int) -> None:
        self.folder, self.chunk_size, self.sha = folder, max(1, chunk_size), sha
        self.number = first_number
        self.paths: list[str] = []
        self.info: list[list[int]] = []
        self.groups: list[np.ndarray] = []
        self.attention: list[np.ndarray] = []
        self.errors: list[dict[str, Any]] = []
        self.written: list[tuple[Rows, list[dict[str, Any]]]] = []

    def add(self, paths: list[str], info: list[list[int]], groups: np.ndarray, attention: np.ndarray | None) -> None:
        self.paths += paths
        self.info += info
        self.groups.append(groups)
        if attention is not None:
            self.attention.append(attention)
        if len(self.paths) >= self.chunk_size:
            self.flush()

    def error(self, rec: dict[str, Any]) -> None:
        self.errors.append(rec)

    def flush(self) -> None:
        if not self.paths and not self.errors:
            return
        k_d = self.groups[0].shape[1:] if self.groups else (0, 0)
        rows = Rows(list(self.paths), np.asarray(self.info, dtype=np.int64).reshape(-1, len(INFO_COLUMNS)),
                    np.concatenate(self.groups) if self.groups else np.zeros((0, *k_d), GROUPS_DTYPE),
                    np.concatenate(self.attention) if self.attention else None)
        _write_chunk(self.folder, self.number, rows, self.errors, self.sha)
        self.written.append((rows, list(self.errors)))
        self.number += 1
        self.paths, self.info, self.groups, self.attention, self.errors = [], [], [], [], []


def _embed(model: Any, items: Sequence[tuple[Path, tuple[int, int]]], writer: _ChunkWriter, *, batch_size: int,
           workers: int, max_pixels: int | None, progress: Callable[[int], None],
           amp: bool = False) -> tuple[int, int, str]:
    """Embed ``items`` (path, stamp) into ``writer``; returns ``(embedded, failed, decode schedule)``. Decoding
    runs in ``workers`` threads, overlapped with the forward or in its gaps, or inline with ``workers=0``
    (:class:`_Decoder`); ``progress(n)`` is called after every batch of ``n`` files."""
    from dgml_viz.inference import model_device

    on_cpu = model_device(model).type == "cpu"
    decoder = _Decoder(items, dict(model.transform), workers, batch_size, max_pixels, None if on_cpu else True)
    embedded = failed = 0
    for decoded in decoder.batches():
        batch = []
        for path, stamp, res in decoded:
            if isinstance(res, ImageError):
                logger.warning("skipped: %s", res)
                writer.error({"path": str(path), "error": str(res), "size": stamp[0], "mtime_ns": stamp[1]})
                failed += 1
            else:
                batch.append((path, stamp, *res))
        if batch:
            t0 = time.perf_counter()
            out = run_batch(model, [b[2] for b in batch], amp=amp)
            decoder.choose(time.perf_counter() - t0, len(batch))
            groups = out.groups.detach().float().cpu().numpy().astype(GROUPS_DTYPE, copy=False)
            att = None if out.attention is None else \
                out.attention.detach().float().cpu().numpy().astype(ATTENTION_DTYPE)
            writer.add([str(b[0]) for b in batch], [info_row(*b[1], b[3]) for b in batch], groups, att)
            embedded += len(batch)
        progress(len(decoded))
    writer.flush()
    return embedded, failed, decoder.schedule


def _embed_all(model: Any, items: Sequence[tuple[Path, Stamp]], folder: Path, sha: str, first: int, *,
               processes: int | None, batch_size: int, workers: int, chunk_size: int, max_pixels: int | None,
               progress: Callable[[int], None], amp: bool = False) -> tuple[list[Chunk], int, str, int]:
    """Embed ``items`` into pending chunks numbered from ``first``, in this process or in worker processes
    (:func:`choose_processes`); returns ``(chunks written, images embedded, decode schedule, processes)``.

    The default (``processes=None``) forks one worker per torch thread when each gets a few batches: on the
    2-core CPU both the demo model (0.96 vs 0.70 of the bare forward in one process) and a ResNet-50 (1.00-1.04
    vs 0.90-0.91, 2026-12-04; ``bench/RESULTS.md``) embed faster so."""
    procs = choose_processes(processes, model, len(items), batch_size)
    kw = {"batch_size": batch_size, "max_pixels": max_pixels, "progress": progress, "amp": amp}
    if procs > 1:
        fresh = _embed_forked(model, items, folder, sha, first, processes=procs, chunk_size=chunk_size, **kw)
        return fresh, sum(len(rows.paths) for rows, _ in fresh), "inline", procs
    writer = _ChunkWriter(folder, chunk_size, sha, first)
    n, _, schedule = _embed(model, items, writer, workers=workers, **kw)
    return writer.written, n, schedule, 1


def _embed_forked(model: Any, items: Sequence[tuple[Path, Stamp]], folder: Path, sha: str, first: int, *,
                  processes: int, batch_size: int, chunk_size: int, max_pixels: int | None,
                  progress: Callable[[int], None], amp: bool = False) -> list[Chunk]:
    """Embed ``items`` in ``processes`` forked workers (:func:`dgml_viz.utils.processes.run_forked`), each with
    one torch thread and inline decoding. The items are cut into units of
    whole batches in input order; unit ``u`` becomes pending chunk ``first + u`` (so the chunks, read back in
    number order, keep the input order and a killed run resumes from the finished units)."""
    unit = unit_size(len(items), processes, batch_size, chunk_size)
    units = -(-len(items) // unit)

    def work(u: int, report: Callable[[int], None]) -> None:
        writer = _ChunkWriter(folder, unit, sha, first + u)
        _embed(model, items[u * unit:(u + 1) * unit], writer, batch_size=batch_size, workers=0,
               max_pixels=max_pixels, progress=report, amp=amp)

    logger.debug("embedding %d images in %d processes, %d units of %d", len(items), processes, units, unit)
    run_forked(work, units, processes, progress=progress, name="index-worker")
    return _read_chunks(folder, sha, range(first, first + units))


# --------------------------------------------------------------------------- planning
Chunk = tuple[Rows, list[dict[str, Any]]]  # pending rows and the bad files recorded with them


@dataclass
class _Plan:
    """What becomes of each wanted file: embedded now, taken from the old index or a pending chunk,
    or kept as a recorded bad file (same stamp, no retry)."""

    todo: list[tuple[Path, Stamp]]
    reuse: list[int]  # rows of the existing index
    errors: list[dict[str, Any]]
    resumed: int  # files already in pending chunks
    removed: int  # rows of the existing index whose file is gone from the input


def _rows_stamp(rows: Rows, i: int) -> Stamp:
    return int(rows.info[i, 0]), int(rows.info[i, 1])


def _error_stamp(rec: dict[str, Any]) -> Stamp:
    return rec["size"], rec["mtime_ns"]


def _wanted_files(images: str | os.PathLike[str], out: Path, shard: tuple[int, int] | None,
                  ) -> tuple[dict[str, tuple[Path, Stamp]], list[dict[str, Any]]]:
    """The input's files (this shard's), by resolved path with their stamp; files that cannot be
    stat'ed become error records."""
    from dgml_viz.data.discovery import collect_sources, shard_of

    sources = collect_sources(images, exclude=out)
    if shard is not None:
        sources = [s for s in sources if shard_of(s.rel, shard[1]) == shard[0]]
    wanted: dict[str, tuple[Path, Stamp]] = {}
    gone_errors: list[dict[str, Any]] = []
    for s in sources:
        p = s.path.resolve()
        try:
            wanted[str(p)] = (p, _stat(p))
        except OSError as exc:
            gone_errors.append({"path": str(p), "error": f"{p}: cannot stat ({exc.strerror or exc})",
                                "size": -1, "mtime_ns": -1})
    return wanted, gone_errors


def _open_existing(target: Path, ckpt: Path, sha: str, rebuild: bool) -> Any:
    """The index already in ``target`` (None when absent or ``rebuild``); ConfigError when it was
    built with another checkpoint."""
    existing = open_index(target) if is_index(target) and not rebuild else None
    if existing is not None and existing.sha256 != sha:
        raise ConfigError(f"{target}: index was built with checkpoint sha256 {existing.sha256[:12]}..., not "
                          f"{ckpt} ({sha[:12]}...); use another --out or --rebuild")
    return existing


def _pending_chunks(pending: Path, sha: str, resume: bool) -> list[Chunk]:
    """An interrupted run's chunks when ``resume``; otherwise they are deleted."""
    if not pending.exists():
        return []
    if not resume:
        logger.info("%s: discarding an interrupted run's pending chunks (use --resume to keep them)", pending)
        shutil.rmtree(pending, ignore_errors=True)
        return []
    chunks = _read_chunks(pending, sha)
    logger.info("resuming: %d pending chunk(s) of an interrupted run", len(chunks))
    return chunks


def _next_chunk_number(pending: Path, chunks: Sequence[Chunk]) -> int:
    """Number of the first new pending chunk (after the resumed ones)."""
    if not chunks:
        return 0
    return max(_chunk_number(f) for f in pending.glob("chunk-*.npz")) + 1


def _plan(wanted: dict[str, tuple[Path, Stamp]], chunks: Sequence[Chunk], existing: Any,
          gone_errors: list[dict[str, Any]]) -> _Plan:
    """Match every wanted file against the pending chunks, then the existing index, by stamp."""
    done = {p: _rows_stamp(rows, i) for rows, _ in chunks for i, p in enumerate(rows.paths)}
    done_err = {e["path"]: e for _, errs in chunks for e in errs}
    old_rows = {p: i for i, p in enumerate(existing.paths)} if existing is not None else {}
    old_err = {e["path"]: e for e in existing.errors} if existing is not None else {}
    plan = _Plan(todo=[], reuse=[], errors=list(gone_errors), resumed=0,
                 removed=sum(1 for p in old_rows if p not in wanted))
    for key, (p, stamp) in wanted.items():
        if done.get(key) == stamp:
            plan.resumed += 1
        elif key in done_err and _error_stamp(done_err[key]) == stamp:
            plan.errors.append(done_err[key])
        elif key in old_rows and existing.stamp(old_rows[key]) == stamp:
            plan.reuse.append(old_rows[key])
        elif key in old_err and _error_stamp(old_err[key]) == stamp:
            plan.errors.append(old_err[key])
        else:
            plan.todo.append((p, stamp))
    return plan


def _parts(existing: Any, reuse: Sequence[int], chunks: Sequence[Chunk],
           wanted: dict[str, tuple[Path, Stamp]]) -> list[tuple[Any, Any]]:
    """``write_index`` parts: the reused rows of the old index, then the chunks' rows still wanted
    with the same stamp (fresh rows last, so they win)."""
    parts: list[tuple[Any, Any]] = []
    if existing is not None and reuse:
        parts.append((existing, np.asarray(sorted(reuse), dtype=np.int64)))
    for rows, _ in chunks:
        keep = [i for i, p in enumerate(rows.paths) if p in wanted and _rows_stamp(rows, i) == wanted[p][1]]
        if keep:
            parts.append((rows, keep))
    return parts


def _record_plan(stats: BuildStats, plan: _Plan, total: int, shard: tuple[int, int] | None) -> None:
    """Put the plan's counts into ``stats`` and log them."""
    stats.total, stats.resumed, stats.reused, stats.removed = total, plan.resumed, len(plan.reuse), plan.removed
    logger.info("%d images%s: %d to embed, %d unchanged, %d resumed, %d removed", stats.total,
                f" (shard {shard[0]}/{shard[1]})" if shard else "", len(plan.todo), stats.reused, stats.resumed,
                stats.removed)


def _chunk_errors(chunks: Sequence[Chunk], wanted: dict[str, tuple[Path, Stamp]]) -> list[dict[str, Any]]:
    """The bad files recorded in ``chunks`` that are still wanted with the same stamp."""
    return [e for _, errs in chunks for e in errs if e["path"] in wanted and _error_stamp(e) == wanted[e["path"]][1]]


def _up_to_date(existing: Any, chunks: Sequence[Chunk], removed: int, errors: Sequence[dict[str, Any]]) -> bool:
    """Nothing new, nothing removed and the same bad files: the existing index stays as it is."""
    return existing is not None and not chunks and not removed and \
        {e["path"] for e in errors} == {e["path"] for e in existing.errors}


def _index_header(ckpt: Path, model: Any, sha: str) -> dict[str, Any]:
    """The :func:`write_index` keywords that describe the model: checkpoint, K, d, geometry mode."""
    return {"checkpoint": _checkpoint_meta(ckpt, model, sha), "num_groups": model.num_groups,
            "group_dim": model.group_dim, "geometry_mode": str(model.transform.get("mode", "center_crop"))}


def _write_rows(target: Path, existing: Any, plan: _Plan, chunks: Sequence[Chunk],
                wanted: dict[str, tuple[Path, Stamp]], errors: Sequence[dict[str, Any]], header: dict[str, Any],
                extra: dict[str, Any]) -> None:
    """Write the index from the reused and the fresh rows, then drop the pending chunks."""
    if existing is None and not chunks and not wanted:
        logger.warning("%s: no images found", extra["images"])
    write_index(target, _parts(existing, plan.reuse, chunks, wanted), map_shape=_map_shape(existing, chunks),
                errors={e["path"]: e for e in errors}.values(), extra=extra, **header)
    shutil.rmtree(target / PENDING, ignore_errors=True)


# --------------------------------------------------------------------------- entry point
def build_index(ckpt: str | os.PathLike[str], images: str | os.PathLike[str], out: str | os.PathLike[str], *,
                batch_size: int = 32, workers: int = 2, device: str | torch.device | None = None,
                resume: bool = False, shard: tuple[int, int] | None = None, chunk_size: int = 1024,
                max_pixels: int | None = None, rebuild: bool = False, progress: bool = True,
                processes: int | None = None, amp: bool = False) -> BuildStats:
    """Embed the images named by ``images`` with the checkpoint ``ckpt`` into the index ``out``.

    Args:
        ckpt: a dgml_viz checkpoint; its SHA-256, config and transform go into the manifest.
        images: a folder (recursive), a list file (one path per line) or one image — the
            ``heatmaps`` collector (:func:`dgml_viz.data.discovery.collect_sources`).
        out: the index folder (created); with a shard, the shard is written to
            ``<out>/shards/<i>-of-<n>`` (see :func:`shard_dir`).
        batch_size: images per forward pass.
        workers: decode threads (in this process; worker processes decode inline).
        device: torch device for the model (default: CPU).
        resume: keep the pending chunks of an interrupted run.
        shard: ``(i, n)``; default from torchrun's ``RANK``/``WORLD_SIZE`` when set.
        chunk_size: images per pending chunk (the unit of work lost on a crash).
        max_pixels: decompression-bomb limit (see :mod:`dgml_viz.data.images`).
        rebuild: ignore an existing index (e.g. one built with another checkpoint).
        progress: show a tqdm bar.
        processes: worker processes that embed (forked, sharing the loaded model; each writes its own
            pending chunks); default :func:`choose_processes` (on a CPU: one per torch thread), 1 = this
            process (decode threads beside the forward).
        amp: bf16 autocast for the forward on CUDA (no effect on a CPU); the index stores float32 / float16 as always.

    Returns:
        :class:`BuildStats` of the run.

    Raises:
        ConfigError: the existing index was built with another checkpoint (and not ``rebuild``),
            bad input spec. CheckpointError: unreadable checkpoint. WorkerError: a worker process failed
            (its finished chunks stay pending for ``resume``).
    """
    from tqdm import tqdm

    t0, ckpt = time.perf_counter(), Path(ckpt)
    shard = shard if shard is not None else shard_from_env()
    target = Path(out) if shard is None else shard_dir(out, shard)
    model, sha = _load_and_hash(ckpt, device)
    stats = BuildStats(out=target)
    wanted, gone_errors = _wanted_files(images, Path(out), shard)
    existing = _open_existing(target, ckpt, sha, rebuild)
    chunks = _pending_chunks(target / PENDING, sha, resume)
    plan = _plan(wanted, chunks, existing, gone_errors)
    _record_plan(stats, plan, len(wanted) + len(gone_errors), shard)
    t_embed = time.perf_counter()
    with tqdm(total=len(plan.todo), unit="img", desc="index", disable=None if progress else True) as bar:
        fresh, stats.embedded, stats.decode, stats.processes = _embed_all(
            model, plan.todo, target / PENDING, sha, _next_chunk_number(target / PENDING, chunks),
            processes=processes, batch_size=batch_size, workers=workers, chunk_size=chunk_size,
            max_pixels=max_pixels, progress=bar.update, amp=amp)
    stats.embed_seconds = time.perf_counter() - t_embed
    new_chunks = chunks + fresh
    errors = plan.errors + _chunk_errors(new_chunks, wanted)
    stats.failed = len({e["path"] for e in errors})
    if _up_to_date(existing, new_chunks, stats.removed, errors):
        logger.info("%s: up to date (%d images)", target, len(existing))
    else:
        _write_rows(target, existing, plan, new_chunks, wanted, errors, _index_header(ckpt, model, sha),
                    extra={"images": str(images), "shard": list(shard) if shard else None})
        if stats.failed:
            logger.warning("%d image(s) could not be indexed (listed in %s/manifest.json 'errors')", stats.failed, target)
    stats.seconds = time.perf_counter() - t0
    return stats


def _load_and_hash(ckpt: Path, device: str | torch.device | None) -> tuple[Any, str]:
    """The model in eval mode and the SHA-256 of its file, hashed (in 1 MiB blocks, GIL released) while it loads."""
    from dgml_viz.model.checkpoint import load_checkpoint

    with ThreadPoolExecutor(1, thread_name_prefix="index-sha256") as pool:
        sha = pool.submit(file_sha256, ckpt)
        model = load_checkpoint(ckpt, map_location=device or "cpu").eval()
        return model, sha.result()


def _map_shape(existing: Any, chunks: Sequence[tuple[Rows, Any]]) -> list[int] | None:
    """``[h, w]`` of the attention maps (a fresh chunk's, else the existing index's); None without maps."""
    for rows, _ in chunks:
        if rows.attention is not None and len(rows.attention):
            return list(rows.attention.shape[2:])
    if existing is not None and existing.attention is not None:
        return list(existing.attention.shape[2:])
    return None


__all__ = ["build_index", "BuildStats", "shard_from_env", "shard_dir", "merge_shards"]
