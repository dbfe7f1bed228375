"""``dgml-viz heatmaps``: attention overlays for every image of a folder, list file or single image.

Pipeline (memory stays flat in the number of images — every stage is bounded):

    decode pool (threads: read, decode, eval transform)  ->  main thread: batched forward, then every
    panel of the batch drawn at once (on the model's device)  ->  write pool (threads: encode, atomic
    write with one flush per chunk)  ->  manifest

On a CPU (Linux) that loop runs serially in forked worker processes instead, one torch thread each
(``--processes``; see :func:`process`).

For each image ``<out>/<relative path>/`` receives ``group<k>.<fmt>`` per
selected group, ``composite.<fmt>`` and ``maps.npz`` (raw attention
``[K, h, w]``, embedding ``[K*d]``, geometry). ``<out>/manifest.jsonl`` has one
JSON line per image (``status`` ``ok``/``error``) and ``<out>/index.html`` is a
contact sheet. Bad files are logged as one line each and the run goes on; the
exit code is 0 when every image succeeded and 2 otherwise.

``--resume`` skips images the manifest lists as done whose outputs exist;
``--shard i/N`` keeps the images whose relative-path hash is ``i`` mod ``N``
(stable when files are added; shards write ``manifest.<i>-of-<N>.jsonl``).

Output folder safety (:mod:`dgml_viz.utils.outdir`): ``--out`` is checked before any work (a file, a
path under a file or a folder that cannot be written is one line, exit 2). A run holds the lock
``<out>/.dgml-viz.lock`` (shards: ``.dgml-viz.<i>-of-<N>.lock``, so shards still run side by side); a
second run into the same folder waits for it (``--lock-timeout`` seconds; 0 refuses at once). The
manifest is only ever appended to and compacted under the lock, keeping the records of earlier runs
with other inputs, so no record is lost. Temp files a killed run left are removed by the next run.

Writes: an image's files go to a hidden staging folder (or, when its output folder exists already, each
to a hidden temp name) and are published once the data of its whole chunk of images (a batch split between
the ``--workers`` write threads) has been flushed with one ``syncfs`` (:class:`dgml_viz.utils.atomic.AtomicFolder`)
instead of an ``fsync`` per file: a new image folder appears complete with one rename, a killed run never
leaves a truncated output, a power loss can lose the last chunk's renames (``--resume`` redoes those images).

Memory budget: images larger than ``--max-render-pixels`` (default 3072 x 3072) are rendered at that
area (aspect kept) and decoded shrunk by an integer factor right away (JPEG inside the decoder), so a
12000 x 12000 image peaks at ~1.4 GB instead of ~9.4 GB; maps, manifest and geometry still refer to the
file's true size. ``--max-render-pixels 0`` renders at full size.
"""
from __future__ import annotations

import argparse
import collections
import functools
import html
import io
import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from dgml_viz.errors import ConfigError, DgmlVizError, ImageError
from dgml_viz.utils.outdir import add_lock_timeout_argument
from dgml_viz.render.panels import DEFAULT_MAX_RENDER_PIXELS, RenderOptions

if TYPE_CHECKING:  # inputs come from the one image discovery (dgml_viz.data.discovery)
    from dgml_viz.data.discovery import Source

HELP = "batch attention overlays (one per group + composite) for a folder of images"
logger = logging.getLogger(__name__)

FORMATS = ("png", "jpg", "webp")


# --------------------------------------------------------------------------- arguments
def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dgml_viz.render.upsample import NORMS

    parser.add_argument("--ckpt", required=True, help="dgml_viz checkpoint (.pt)")
    parser.add_argument("--images", required=True,
                        help="a folder (searched recursively), a list file (one path per line) or one image")
    parser.add_argument("--out", default="heatmaps", help="output folder (default ./heatmaps)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for the forward on CUDA (no effect on a CPU)")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="decode threads and render/write threads, each (default min(4, CPUs))")
    parser.add_argument("--processes", type=int, default=None, metavar="N",
                        help="worker processes that each decode, forward, draw and write their images serially, one "
                             "torch thread each (default on a CPU, Linux: one per torch thread, at most 16, fewer for "
                             "small jobs; 1 = this process with --workers threads; a GPU model always uses 1)")
    parser.add_argument("--alpha", type=float, default=0.5, help="heat map opacity in [0, 1] (default 0.5)")
    parser.add_argument("--cmap", default="jet", help="any matplotlib colormap (default jet)")
    parser.add_argument("--format", choices=FORMATS, default="jpg",
                        help="overlay image format: jpg (default; fast, small), png (lossless, ~20x slower to encode), webp")
    parser.add_argument("--norm", choices=NORMS, default="per_map",
                        help="per_map | shared (groups comparable) | absolute (attention probability)")
    parser.add_argument("--interp", choices=("bilinear", "bicubic", "nearest"), default="bilinear",
                        help="upsampling; nearest shows the raw grid (default bilinear)")
    parser.add_argument("--groups", default=None, help="comma-separated group indices to draw, e.g. 0,2 (default all)")
    parser.add_argument("--size", type=int, default=None,
                        help="render at most this many pixels on the long side (default: original size)")
    parser.add_argument("--contour", type=float, default=None, metavar="P",
                        help="outline the top-P attention mass on each overlay (e.g. 0.5)")
    parser.add_argument("--no-composite", action="store_true", help="skip the dominant-group composite")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="decompression-bomb guard: refuse larger images (default $DGML_VIZ_MAX_PIXELS or ~179M)")
    parser.add_argument("--max-render-pixels", type=int, default=DEFAULT_MAX_RENDER_PIXELS, metavar="N",
                        help="memory budget: images with more pixels are decoded shrunk and rendered at N pixels "
                             f"(aspect kept; default {DEFAULT_MAX_RENDER_PIXELS} = 3072x3072: a 12000x12000 "
                             "image peaks at ~1.4 GB; 0 = always full size)")
    parser.add_argument("--resume", action="store_true", help="skip images already done (manifest + outputs)")
    parser.add_argument("--shard", default=None, metavar="I/N", help="process only shard I of N (0 <= I < N)")
    add_lock_timeout_argument(parser)


# --------------------------------------------------------------------------- outputs
def output_names(groups: Sequence[int], fmt: str, composite: bool) -> list[str]:
    """File names written for each image (relative to its output folder)."""
    names = [f"group{g}.{fmt}" for g in groups]
    if composite:
        names.append(f"composite.{fmt}")
    return names + ["maps.npz"]


def image_dir(out: Path, rel: str) -> Path:
    """Output folder of the image with relative path ``rel``."""
    return out / rel


def encode(image: np.ndarray, fmt: str) -> bytes:
    """``uint8 [H, W, 3]`` RGB -> encoded bytes (OpenCV; PNG fast Huffman-only deflate, JPEG q92, WebP q90)."""
    import cv2

    ok, buf = cv2.imencode("." + fmt, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), _encode_params(fmt))
    if not ok:
        raise DgmlVizError(f"cannot encode image as {fmt}")
    return buf.tobytes()


@functools.lru_cache(maxsize=None)
def _encode_params(fmt: str) -> list[int]:
    import cv2

    return {"png": [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY],
            "jpg": [cv2.IMWRITE_JPEG_QUALITY, 92],
            "webp": [cv2.IMWRITE_WEBP_QUALITY, 90]}[fmt]


def npz_bytes(**arrays: Any) -> bytes:
    """The bytes :func:`numpy.savez` writes for ``arrays``; object arrays are refused (``maps.npz`` must load
    without pickle)."""
    for name, value in arrays.items():
        if np.asanyarray(value).dtype.hasobject:
            raise ValueError(f"{name}: object arrays are not written")
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def manifest_name(shard: tuple[int, int] | None) -> str:
    return "manifest.jsonl" if shard is None else f"manifest.{shard[0]}-of-{shard[1]}.jsonl"


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """Last record per image path of a manifest (missing file -> empty; broken lines skipped)."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if isinstance(rec, dict) and "path" in rec:
            records[rec["path"]] = rec
    return records


def is_done(rec: dict[str, Any] | None, folder: Path, names: Sequence[str]) -> bool:
    """Whether a manifest record says ``ok`` and every expected output exists."""
    return bool(rec) and rec.get("status") == "ok" and all((folder / n).is_file() for n in names)


# --------------------------------------------------------------------------- work items
class _EvalTransform:
    """A checkpoint's eval transform checked once per run, with the :class:`Geometry` of each image size
    cached (a dataset of few sizes computes it a few times, not once per image)."""

    def __init__(self, transform: dict[str, Any]) -> None:
        from dgml_viz.validation import check_transform

        self.checked = check_transform(transform)
        self.geometry = functools.lru_cache(maxsize=4096)(self._geometry)

    def _geometry(self, width: int, height: int) -> Any:
        from dgml_viz.data.transforms import compute_geometry

        return compute_geometry(width, height, self.checked)


def _decode(src: Source, transform: dict[str, Any] | _EvalTransform, max_pixels: int | None, max_side: int | None,
            max_render_pixels: int | None = None) -> tuple[Any, Any, np.ndarray]:
    """Decode + eval transform -> ``(tensor [3, S, S], Geometry of the true image, image at render size)``.

    An image over ``max_render_pixels`` is decoded shrunk by an integer factor (still at least that many
    pixels, so at least the render size); the model sees those pixels through the true image's geometry
    (exactly :func:`~dgml_viz.data.transforms.eval_transform` when nothing was shrunk). With ``max_side``
    or the budget the image is brought to the render size right away (less memory in flight, less work
    per panel)."""
    import dataclasses

    import cv2

    from dgml_viz.data import images
    from dgml_viz.data.transforms import apply_transform
    from dgml_viz.render.panels import output_size

    t = transform if isinstance(transform, _EvalTransform) else _EvalTransform(transform)
    image, original = images.load_image_reduced(src.path, max_pixels, target_pixels=max_render_pixels or None)
    geometry = t.geometry(original[0], original[1])
    have = (image.shape[1], image.shape[0])
    seen = geometry if have == original else dataclasses.replace(geometry, original=have)
    tensor = apply_transform(image, seen, t.checked)
    size = output_size(original, max_side, max_render_pixels)
    if size != have:
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return tensor, geometry, image


def _write_outputs(items: Sequence[tuple[Source, Any, dict[str, np.ndarray], np.ndarray, np.ndarray]], out: Path,
                   fmt: str, render_s: float = 0.0) -> list[dict[str, Any]]:
    """Encode and write the outputs of several images; one manifest record each.

    ``items`` are ``(source, geometry, panels, maps [K, h, w], embedding [K*d])``. Each image's files are
    staged (:class:`~dgml_viz.utils.atomic.AtomicFolder`: a hidden folder renamed into place at once when the
    image's folder is new, else a temp name per file); the data of all of them is flushed at once
    (:func:`~dgml_viz.utils.atomic.sync_batches`: one ``syncfs`` instead of an ``fsync`` per file), then each
    image's outputs are published.
    A write error fails that image only (its temp files are removed). ``render_s`` is the image's share
    of the batched render, added to its own encode + write time in the record."""
    from dgml_viz.utils.atomic import AtomicFolder, sync_batches

    records: list[dict[str, Any]] = []
    staged: list[tuple[Source, dict[str, Any], AtomicFolder, list[str], float]] = []
    try:
        for src, geometry, panels, maps, embedding in items:
            t0 = time.perf_counter()
            geo = geometry.to_dict()
            names = [*(f"{key}.{fmt}" for key in panels), "maps.npz"]
            try:
                files = AtomicFolder(image_dir(out, src.rel))  # one rule for where an image's outputs go
            except OSError as exc:
                records.append(_write_failed(out, src, exc))
                continue
            try:
                for name, panel in zip(names, panels.values()):
                    files.write_file(name, encode(panel, fmt))
                files.write_file("maps.npz", npz_bytes(
                    attention=np.ascontiguousarray(maps, np.float32), embedding=np.ascontiguousarray(embedding, np.float32),
                    geometry=np.array(json.dumps(geo)), path=np.array(src.rel)))
            except OSError as exc:
                files.discard()
                records.append(_write_failed(out, src, exc))
                continue
            except BaseException:
                files.discard()
                raise
            staged.append((src, geo, files, names, time.perf_counter() - t0))
        sync_batches([files for _, _, files, _, _ in staged])
    except BaseException as exc:
        for _, _, files, _, _ in staged:
            files.discard()
        if not isinstance(exc, OSError):
            raise
        return records + [_write_failed(out, src, exc) for src, *_ in staged]
    for src, geo, files, names, seconds in staged:
        t0 = time.perf_counter()
        try:
            files.commit()
        except OSError as exc:
            records.append(_write_failed(out, src, exc))
            continue
        records.append({"path": src.rel, "status": "ok", "outputs": [f"{src.rel}/{n}" for n in names],
                        "size": geo["original"][:], "geometry": geo,
                        "render_s": round(render_s + seconds + time.perf_counter() - t0, 4)})
    return records


def _write_failed(out: Path, src: Source, exc: OSError) -> dict[str, Any]:
    """The manifest record of an image whose outputs could not be written (one line)."""
    return {"path": src.rel, "status": "error", "error": f"{image_dir(out, src.rel)}: cannot write "
                                                         f"({exc.strerror or exc})"}


# --------------------------------------------------------------------------- pipeline
@dataclass
class RunStats:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0


@dataclass
class _ThreadPlan:
    """How many intra-op threads the CPU forward gets while the pipeline runs (see :func:`process`)."""

    full: int  # torch's thread count when the run began (restored at the end)
    reduced: int
    adaptive: bool  # probe (torch_threads=None), or keep the count set by the caller
    batches: int = 0
    images: int = 0
    mark: tuple[float, int] = (0.0, 0)  # (time, images) at the start of the current probe
    rates: dict[int, float] = field(default_factory=dict)
    decode_cpu: list[float] = field(default_factory=list)  # CPU seconds of each decode (list.append is atomic)

    def decode(self, *args: Any, **kwargs: Any) -> Any:
        """:func:`_decode` in a decode thread, timing its CPU (while the plan still probes)."""
        if not self.adaptive:
            return _decode(*args, **kwargs)
        t0 = time.thread_time()
        try:
            return _decode(*args, **kwargs)
        finally:
            self.decode_cpu.append(time.thread_time() - t0)

    def step(self, torch: Any, images: int, forward_s: float) -> None:
        """Called after each batch is handed to the writers, with its image count and forward seconds.

        Batch 1 (the warm-up; its forward runs almost alone: the writers have nothing yet) says whether the
        other stages matter: decoding + drawing + writing, estimated as 3x the measured decoding CPU (their
        measured ratio on the demo's 128 px images and on ~500 px photos), under a tenth of the forward's CPU
        time per image (a heavy model) keeps every thread, no probing. Otherwise batch 2 runs with the
        current count and batch 3 with the other one, and the faster pipeline (images per second) stays."""
        if not self.adaptive:
            return
        now = time.perf_counter()
        self.batches += 1
        self.images += images
        if self.batches == 1:
            decode = sum(self.decode_cpu) / max(1, len(self.decode_cpu))
            other, forward = 3.0 * decode, forward_s / images * self.full
            if self.reduced == self.full or other < 0.1 * forward:
                self.adaptive = False
                logger.debug("forward %.1f ms CPU/img, other stages ~%.1f ms/img: forward keeps %d threads",
                             forward * 1e3, other * 1e3, torch.get_num_threads())
            self.mark = (now, self.images)
            return
        current = torch.get_num_threads()
        self.rates[current] = (self.images - self.mark[1]) / max(now - self.mark[0], 1e-9)
        self.mark = (now, self.images)
        if len(self.rates) == 1:
            torch.set_num_threads(self.reduced if current == self.full else self.full)
            return
        best = max(self.rates, key=self.rates.__getitem__)
        torch.set_num_threads(best)
        self.adaptive = False
        logger.debug("pipeline img/s by forward threads %s: keeping %d", self.rates, best)


def process(model: Any, sources: Sequence[Source], out: Path, *, groups: Sequence[int], fmt: str,
            options: RenderOptions, batch_size: int = 32, workers: int = 2, max_pixels: int | None = None,
            torch_threads: int | None = None, processes: int | None = None,
            amp: bool = False) -> Iterator[dict[str, Any]]:
    """Run the decode -> forward -> render -> write pipeline; yields one manifest record per image
    (in completion order).

    Decoding runs in ``workers`` threads; the main thread runs the batched forward. Every panel of a batch is
    drawn at once (:func:`~dgml_viz.render.batch.render_batch`): with the model on a GPU by the main thread
    on that device (the maps stay there until the finished ``uint8`` panels come back), on the CPU by the
    ``workers`` write threads, one chunk of the batch each, while the next forward runs. The write threads
    encode and write their chunk with one durability flush per chunk. Decode and write threads run below the
    main thread's priority (:func:`~dgml_viz.utils.threads.background_pool`): the forward is the critical path
    and they only have to keep up with it. At most ``batch_size + workers`` decoded
    images wait for the model and two batches of panels are in memory, whatever the number of images.

    CPU threads (model on the CPU): the decode and write threads need cores too, and an OpenMP team whose
    cores are shared with them stalls at every barrier. ``torch_threads=None`` (default) lets the run
    choose. A heavy model (decoding, drawing and writing under a tenth of its forward's CPU time per image
    in the first batch, e.g. ResNet-50) keeps torch's thread count. Otherwise one batch runs with it and one
    with ``max(1, torch.get_num_threads() - workers)`` and the faster pipeline is kept (the demo model:
    the latter, 2-3x faster on 2 busy cores). An integer fixes the count. torch's thread count is restored
    when the generator finishes.

    Worker processes (a CPU model on Linux; :func:`~dgml_viz.utils.processes.choose_processes`): ``processes=N``
    forks N children that each run decode -> forward -> draw -> write serially over their share of the
    images with one torch thread (:func:`_process_forked`); no thread pools, so no GIL or OpenMP barrier
    contention between the stages. On the 2-core box both the demo model (0.74 vs 0.60 of the bare forward)
    and a ResNet-50 (1.01 vs 0.88) ran faster so (``bench/RESULTS.md``), hence the default
    (``processes=None`` with ``torch_threads`` not fixed): one worker per torch thread when every worker gets
    a few batches, else this process. ``1`` keeps everything in this process."""
    import torch

    from dgml_viz.inference import model_device
    from dgml_viz.utils.processes import choose_processes

    full = torch.get_num_threads()
    workers = max(1, int(workers))
    batch_size = max(1, int(batch_size))
    on_cpu = model_device(model).type == "cpu"
    plan = _ThreadPlan(full=full, reduced=max(1, full - workers), adaptive=on_cpu and torch_threads is None)
    if on_cpu and torch_threads is not None and int(torch_threads) != full:
        torch.set_num_threads(max(1, int(torch_threads)))
    procs = 1 if processes is None and torch_threads is not None else \
        choose_processes(processes, model, len(sources), batch_size)
    kw: dict[str, Any] = {"groups": groups, "fmt": fmt, "options": options, "batch_size": batch_size,
                          "max_pixels": max_pixels, "amp": amp}
    try:
        if procs > 1:
            logger.info("heatmaps in %d worker processes (one torch thread each)", procs)
            yield from _process_forked(model, sources, out, processes=procs, **kw)
        else:
            yield from _pipeline(model, sources, out, workers=workers, plan=plan, **kw)
    finally:
        if torch.get_num_threads() != full:
            torch.set_num_threads(full)


def _pipeline(model: Any, sources: Sequence[Source], out: Path, *, groups: Sequence[int], fmt: str,
              options: RenderOptions, batch_size: int, workers: int, max_pixels: int | None,
              plan: _ThreadPlan, amp: bool = False) -> Iterator[dict[str, Any]]:
    """The body of :func:`process`: batches from the decode threads (:func:`_decoded_batches`), the batched
    forward, the batch handed to the write threads (:func:`_hand_off`); records as the writers finish."""
    import torch

    from dgml_viz.inference import model_device
    from dgml_viz.utils.threads import background_pool

    transform = _EvalTransform(dict(model.transform))
    on_device = model_device(model).type != "cpu"
    batch_size = max(1, int(batch_size))
    decode = functools.partial(plan.decode, transform=transform, max_pixels=max_pixels, max_side=options.max_side,
                               max_render_pixels=options.max_pixels)
    writing: collections.deque[Future[list[dict[str, Any]]]] = collections.deque()
    with background_pool(workers, "decode") as dpool, background_pool(workers, "write") as wpool:
        for errors, batch in _decoded_batches(dpool, sources, decode, batch_size, batch_size + workers):
            yield from errors
            if not batch:
                continue
            t0 = time.perf_counter()
            output, maps, emb = _forward(model, [b[1] for b in batch], amp)
            forward_s = time.perf_counter() - t0
            writing.extend(_hand_off(wpool, workers, batch, output.attention if on_device else None, maps, emb,
                                     out, fmt, groups, options))
            while len(writing) > workers or (writing and writing[0].done()):
                yield from writing.popleft().result()
            plan.step(torch, len(batch), forward_s)
        while writing:
            yield from writing.popleft().result()


def _forward(model: Any, tensors: Sequence[Any], amp: bool = False) -> tuple[Any, np.ndarray, np.ndarray]:
    """The batched forward of ``tensors`` (each ``[3, S, S]``; ``amp``: bf16 autocast on CUDA): ``(output,
    maps [B, K, h, w], embeddings [B, K*d])``, maps and embeddings as float32 numpy on the CPU."""
    from dgml_viz.inference import attention_maps, run_batch

    output = run_batch(model, list(tensors), amp=amp)
    return output, attention_maps(output), output.embedding.detach().float().cpu().numpy()


def _decode_failed(src: Source, exc: ImageError) -> dict[str, Any]:
    """The manifest record of an image that could not be decoded (one line)."""
    return {"path": src.rel, "status": "error", "error": str(exc)}


def _process_forked(model: Any, sources: Sequence[Source], out: Path, *, groups: Sequence[int], fmt: str,
                    options: RenderOptions, batch_size: int, max_pixels: int | None,
                    processes: int, amp: bool = False) -> Iterator[dict[str, Any]]:
    """:func:`process` in ``processes`` forked workers (:func:`~dgml_viz.utils.processes.iter_forked`): each
    batch is a unit, pulled by whichever worker is free (~10 % faster than 4 units per worker: the workers end
    together); a worker decodes its batch inline, forwards it on its one torch thread, draws and writes it
    (:func:`_draw_and_write`, one flush per batch) and sends the batch's records, which are yielded here as
    they arrive. A worker that fails stops the run (``WorkerError``); the records
    of every batch written before were yielded. OpenCV keeps its own threads in the workers (it re-creates
    its pool after fork; ``cv2.setNumThreads`` in a forked child hung here)."""
    from dgml_viz.utils.processes import iter_forked

    transform = _EvalTransform(dict(model.transform))

    def work(unit: int, send: Any) -> None:  # one batch per unit: workers end within a batch of each other
        records, batch = [], []
        for src in sources[unit * batch_size:(unit + 1) * batch_size]:
            try:
                tensor, geo, image = _decode(src, transform, max_pixels, options.max_side, options.max_pixels)
            except ImageError as exc:
                records.append(_decode_failed(src, exc))
            else:
                batch.append((src, tensor, geo, image))
        if batch:
            _, maps, emb = _forward(model, [b[1] for b in batch], amp)
            records += _draw_and_write([(b[0], b[2], b[3]) for b in batch], maps, emb, out, fmt, groups, options)
        send(records)

    for records in iter_forked(work, -(-len(sources) // batch_size), processes, name="heatmaps-worker"):
        yield from records


def _decoded_batches(pool: ThreadPoolExecutor, sources: Sequence[Source], decode: Any, batch_size: int,
                     prefetch: int) -> Iterator[tuple[list[dict[str, Any]], list[tuple[Source, Any, Any, np.ndarray]]]]:
    """``decode`` every source in ``pool`` (input order, at most ``prefetch`` in flight); yields ``(error records,
    batch)``, a batch being up to ``batch_size`` ``(source, tensor, geometry, image)`` (cut short when nothing
    more is decoding, so the model never waits for images not yet submitted)."""
    todo = iter(sources)
    decoding: collections.deque[tuple[Source, Future[Any]]] = collections.deque()

    def refill() -> None:
        while len(decoding) < prefetch and (src := next(todo, None)) is not None:
            decoding.append((src, pool.submit(decode, src)))

    refill()
    errors: list[dict[str, Any]] = []
    batch: list[tuple[Source, Any, Any, np.ndarray]] = []
    while decoding:
        src, fut = decoding.popleft()
        refill()
        try:
            tensor, geo, image = fut.result()
        except ImageError as exc:
            errors.append(_decode_failed(src, exc))
        else:
            batch.append((src, tensor, geo, image))
        if len(batch) >= batch_size or not decoding:
            yield errors, batch
            errors, batch = [], []


def _hand_off(pool: ThreadPoolExecutor, workers: int, batch: Sequence[tuple[Source, Any, Any, np.ndarray]],
              device_maps: Any, maps: np.ndarray, emb: np.ndarray, out: Path, fmt: str, groups: Sequence[int],
              options: RenderOptions) -> list[Future[list[dict[str, Any]]]]:
    """Split a forwarded batch into one chunk per write thread. With ``device_maps`` (the attention still on
    the model's GPU) the whole batch is drawn here, on that device, and the writers get finished panels; on
    the CPU each writer draws its own chunk (:func:`_draw_and_write`), overlapping the next forward."""
    from dgml_viz.render.batch import render_batch

    step = -(-len(batch) // workers)
    if device_maps is None:
        return [pool.submit(_draw_and_write, [(b[0], b[2], b[3]) for b in batch[i:i + step]], maps[i:i + step],
                            emb[i:i + step], out, fmt, groups, options) for i in range(0, len(batch), step)]
    t0 = time.perf_counter()
    panels = render_batch([b[3] for b in batch], device_maps, [b[2] for b in batch], groups, options)
    share = (time.perf_counter() - t0) / len(batch)
    items = [(src, geo, panels[i], maps[i], emb[i]) for i, (src, _, geo, _) in enumerate(batch)]
    return [pool.submit(_write_outputs, items[i:i + step], out, fmt, share) for i in range(0, len(items), step)]


def _draw_and_write(items: Sequence[tuple[Source, Any, np.ndarray]], maps: np.ndarray, embeddings: np.ndarray,
                    out: Path, fmt: str, groups: Sequence[int], options: RenderOptions) -> list[dict[str, Any]]:
    """A writer thread's chunk on the CPU: ``(source, geometry, image)`` items and their ``maps [n, K, h, w]``
    drawn at once (:func:`~dgml_viz.render.batch.render_batch`), then :func:`_write_outputs`."""
    from dgml_viz.render.batch import render_batch

    t0 = time.perf_counter()
    panels = render_batch([it[2] for it in items], maps, [it[1] for it in items], groups, options)
    share = (time.perf_counter() - t0) / max(1, len(items))
    return _write_outputs([(src, geo, panels[i], maps[i], embeddings[i]) for i, (src, geo, _) in enumerate(items)],
                          out, fmt, share)


def write_index(out: Path, records: Sequence[dict[str, Any]], title: str, name: str = "index.html") -> Path:
    """Write ``index.html``: a contact sheet with a row per image (errors in red)."""
    from dgml_viz.utils.atomic import atomic_write_text

    rows = []
    for rec in records:
        label = html.escape(rec["path"])
        if rec.get("status") != "ok":
            rows.append(f'<tr class="err"><td>{label}</td><td>{html.escape(rec.get("error", ""))}</td></tr>')
            continue
        imgs = "".join(
            f'<a href="{html.escape(p)}"><img loading="lazy" src="{html.escape(p)}" title="{html.escape(p)}"></a>'
            for p in rec.get("outputs", []) if not p.endswith(".npz"))
        rows.append(f"<tr><td>{label}</td><td>{imgs}</td></tr>")
    n_err = sum(r.get("status") != "ok" for r in records)
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title><style>"
        "body{font-family:sans-serif}td{vertical-align:top;padding:4px}img{height:140px;margin-right:4px}"
        "tr.err td{color:#b00}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{len(records) - n_err} ok, {n_err} failed</p><table>"
        + "\n".join(rows) + "</table></body></html>\n")
    target = out / name
    atomic_write_text(target, page)
    return target


def run(args: argparse.Namespace) -> int:
    from dgml_viz.data.discovery import parse_shard
    from dgml_viz.render.heatmap import colormap_lut
    from dgml_viz.utils.outdir import ensure_output_dir, output_lock

    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.contour is not None and not 0.0 < args.contour <= 1.0:
        raise ConfigError(f"--contour must be in (0, 1], got {args.contour}")
    if args.processes is not None and args.processes < 1:
        raise ConfigError(f"--processes must be >= 1 (1 = this process), got {args.processes}")
    if args.max_render_pixels is not None and args.max_render_pixels < 0:
        raise ConfigError(f"--max-render-pixels must be >= 0 (0: no cap), got {args.max_render_pixels}")
    try:
        colormap_lut(args.cmap)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    shard = parse_shard(args.shard)
    out = ensure_output_dir(args.out, create=False)  # before any work: a bad --out is one line, not a traceback
    model, device = _load_model(args)  # a bad checkpoint fails before the folder is created or locked
    with output_lock(out, args.lock_timeout, tag=None if shard is None else f"{shard[0]}-of-{shard[1]}"):
        return _run_locked(args, out, shard, model, device)


def _load_model(args: argparse.Namespace) -> tuple[Any, Any]:
    from dgml_viz.model.checkpoint import load_checkpoint
    from dgml_viz.validation import check_device

    torch_device = check_device(args.device, "--device")  # auto (None): CUDA when available, else CPU
    model = load_checkpoint(args.ckpt).to(torch_device).eval()
    if model.spatial_maps is None:
        raise ConfigError(f"{args.ckpt}: head {model.config.head!r} has no spatial maps; "
                          "heatmaps need a head that exposes them (e.g. attentive or gate)")
    return model, torch_device


def _select_sources(images: str, out: Path, shard: tuple[int, int] | None) -> tuple[list[Source], int]:
    """The input's images (the one discovery, ``out`` excluded), this shard's only; and how many there are in all."""
    from dgml_viz.data.discovery import collect_sources, shard_of

    sources = collect_sources(images, exclude=out)
    if shard is None:
        return sources, len(sources)
    return [s for s in sources if shard_of(s.rel, shard[1]) == shard[0]], len(sources)


def _run_locked(args: argparse.Namespace, out: Path, shard: tuple[int, int] | None, model: Any,
                device: Any) -> int:
    from tqdm import tqdm

    from dgml_viz.utils.atomic import atomic_write_text
    from dgml_viz.validation import parse_groups

    groups = parse_groups(args.groups, model.num_groups)
    options = RenderOptions(norm=args.norm, cmap=args.cmap, alpha=args.alpha, interpolation=args.interp,
                            contour=args.contour, composite=not args.no_composite, max_side=args.size,
                            max_pixels=args.max_render_pixels or None)
    names = output_names(groups, args.format, options.composite)

    sources, total = _select_sources(args.images, out, shard)
    manifest_path = out / manifest_name(shard)
    previous = read_manifest(manifest_path)
    stats = RunStats()
    if args.resume:
        todo = [s for s in sources if not is_done(previous.get(s.rel), image_dir(out, s.rel), names)]
        stats.skipped = len(sources) - len(todo)
    else:
        todo = list(sources)
    logger.info("%d images (%s), %d to do, %d already done; device %s, batch %d, %d workers",
                len(sources), f"shard {shard[0]}/{shard[1]} of {total}" if shard else "all", len(todo),
                stats.skipped, device, args.batch_size, args.workers)
    t0 = time.perf_counter()
    # append only (never truncate): the records of earlier runs into this folder, other inputs included,
    # stay; a later line for the same image wins (read_manifest)
    with open(manifest_path, "a", encoding="utf-8") as log, \
            tqdm(total=len(todo), unit="img", disable=None, desc="heatmaps") as bar:
        for rec in process(model, todo, out, groups=groups, fmt=args.format, options=options,
                           batch_size=args.batch_size, workers=args.workers, max_pixels=args.max_pixels,
                           processes=args.processes, amp=args.amp):
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if rec["status"] == "ok":
                stats.ok += 1
            else:
                stats.failed += 1
                logger.error("%s", rec["error"])
            bar.update(1)
    stats.seconds = time.perf_counter() - t0
    # compact under the lock: one line per image, sorted — every image the folder has a record of,
    # not only this run's selection (atomic rename over the append log)
    records = read_manifest(manifest_path)
    final = [records[r] for r in sorted(records)]
    atomic_write_text(manifest_path, "".join(json.dumps(r) + "\n" for r in final))
    index = write_index(out, final, f"dgml-viz heatmaps: {args.ckpt}",
                        "index.html" if shard is None else f"index.{shard[0]}-of-{shard[1]}.html")
    keep = {s.rel for s in sources}
    failed_total = sum(r.get("status") != "ok" for r in final if r["path"] in keep)
    rate = (stats.ok + stats.failed) / stats.seconds if stats.seconds > 0 else 0.0
    logger.info("done: %d ok, %d failed, %d skipped (resume) in %.1fs (%.1f img/s); manifest %s%s",
                stats.ok, stats.failed, stats.skipped, stats.seconds, rate, manifest_path,
                f", contact sheet {index}")
    if failed_total:
        logger.warning("%d of %d images failed (see %s)", failed_total, len(keep), manifest_path)
    return 2 if failed_total else 0
