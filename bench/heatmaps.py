"""Benchmark `dgml-viz heatmaps`: end-to-end images/s vs the bare batched forward, and peak memory.

Usage:
    python bench/heatmaps.py --model demo|small_cnn|resnet50 [--n 64] [--batch-size 32] [--workers 2]
    python bench/heatmaps.py --memory 10,1000 --model small_cnn     # peak RSS per image count (subprocesses)
    OMP_NUM_THREADS=1 taskset -c 1 python bench/heatmaps.py --profile --images synthetic --threads 1 --n 512

Images: scikit-image's bundled photos (astronaut 512x512, chelsea 451x300, coffee 600x400, rocket
640x427) saved as JPEG and repeated to ``--n`` files. Both figures come from the same process and
the same images, alternating per repetition: the bare forward over the pre-decoded batches
(``run_batch`` only; with ``--threads`` and with 1 thread: ``ratio_vs_best_forward`` divides by the faster
of the two, since on a busy machine a 2-thread forward can lose to a 1-thread one), then the whole pipeline (decode pool -> forward -> render/write pool; PNG overlays per group + composite +
npz, at the original size). Reported: medians of images/s, the median of per-repetition ratios,
and CPU time per image of both (process CPU time, all threads: robust to other jobs on a shared
machine; ``cpu_ratio`` = forward CPU / pipeline CPU is the ratio an idle machine would approach).
The 2-thread bare forward is timed before and after the pipeline runs of each repetition and their mean
is the reference (this box changes speed within seconds). ``--processes 1`` (or any counts) adds
side-by-side variants of the worker-process choice (``by_variant``; default ``processes=None``: on a CPU
the run goes to forked single-thread workers, see ``dgml_viz.commands.heatmaps.process``); CPU time
then includes the finished worker processes. ``--model demo`` uses checkpoints/demo.pt (falls back to small_cnn
at 96 px if absent, and says so).

``--profile`` instead reports the CPU milliseconds per image of each stage inside the pipeline (decode,
forward, draw, write; per-thread CPU time, so it can be taken on a busy machine pinned to one core).

``--baseline`` also times, in the same repetitions, the pipeline as it was before issue 16
(:func:`process_per_image`: each image rendered alone by ``render_panels`` in the render pool and each
of its files written by ``atomic_write_bytes``, one ``fsync`` per file) — forward, baseline and
pipeline back to back, so the three figures see the same machine load.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_images(folder: Path, n: int, source: str = "photos") -> list[Path]:
    """``n`` image files: scikit-image photos (JPEG) or the demo model's own held-out images (128 px PNG)."""
    from PIL import Image
    from skimage import data

    if source == "synthetic":
        from dgml_viz.data.synthetic import SyntheticParts

        ds = SyntheticParts("test", seed=0, image_size=128, samples_per_class=20, cache=False)
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for i in range(n):
            p = folder / f"{i // 100:03d}" / f"img{i:05d}.png"
            p.parent.mkdir(exist_ok=True)
            Image.fromarray(ds.raw_image(i % len(ds))).save(p)
            out.append(p)
        return out
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"{i // 100:03d}" / f"img{i:05d}.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(photos[i % 4]).save(p, quality=90)
        paths.append(p)
    return paths


def process_per_image(model: object, sources: list, out: Path, *, groups: list[int], fmt: str,
                      options: object, batch_size: int = 32, workers: int = 2) -> list[dict]:
    """The heatmaps pipeline before issue 16 (commit 12deb3d), kept here as the benchmark's baseline:
    decode pool -> batched forward -> per-image ``render_panels`` + ``atomic_write_bytes`` per file in a
    render pool of ``workers`` threads (at most ``batch_size`` images waiting there)."""
    import collections
    from concurrent.futures import ThreadPoolExecutor

    from dgml_viz.commands.heatmaps import _decode, encode, image_dir, npz_bytes
    from dgml_viz.inference import attention_maps, run_batch
    from dgml_viz.render.panels import render_panels
    from dgml_viz.utils.atomic import atomic_write_bytes

    def render_and_write(src, image, geometry, maps, embedding):
        folder = image_dir(out, src.rel)
        panels = render_panels(image, maps, geometry, groups, options)
        for key, panel in panels.items():
            atomic_write_bytes(folder / f"{key}.{fmt}", encode(panel, fmt))
        atomic_write_bytes(folder / "maps.npz", npz_bytes(
            attention=maps.astype(np.float32), embedding=embedding.astype(np.float32),
            geometry=np.array(json.dumps(geometry.to_dict())), path=np.array(src.rel)))
        return {"path": src.rel, "status": "ok"}

    transform = dict(model.transform)
    records: list[dict] = []
    rendering: collections.deque = collections.deque()
    with ThreadPoolExecutor(workers) as dpool, ThreadPoolExecutor(workers) as rpool:
        decoding = collections.deque(dpool.submit(_decode, s, transform, None, options.max_side, options.max_pixels)
                                     for s in sources[:batch_size + workers])
        rest = iter(sources[batch_size + workers:])
        pending = list(sources)
        batch = []
        while decoding or batch:
            if decoding:
                fut = decoding.popleft()
                nxt = next(rest, None)
                if nxt is not None:
                    decoding.append(dpool.submit(_decode, nxt, transform, None, options.max_side, options.max_pixels))
                batch.append((pending.pop(0), *fut.result()))
                if len(batch) < batch_size and decoding:
                    continue
            output = run_batch(model, [b[1] for b in batch])
            maps = attention_maps(output)
            emb = output.embedding.detach().float().cpu().numpy()
            for i, (src, _, geo, image) in enumerate(batch):
                rendering.append(rpool.submit(render_and_write, src, image, geo, maps[i], emb[i]))
            batch = []
            while len(rendering) > batch_size or (rendering and rendering[0].done()):
                records.append(rendering.popleft().result())
        records.extend(f.result() for f in rendering)
    return records


def build_model(name: str, tmp: Path) -> tuple[object, str]:
    import torch

    from dgml_viz.model import create_model, default_transform
    from dgml_viz.model.checkpoint import load_checkpoint, save_checkpoint

    note = ""
    if name == "demo":
        demo = ROOT / "checkpoints" / "demo.pt"
        if demo.exists():
            return load_checkpoint(demo), "checkpoints/demo.pt"
        name, note = "small_cnn", " (checkpoints/demo.pt absent: fallback small_cnn)"
    torch.manual_seed(0)
    if name == "small_cnn":
        model = create_model("small_cnn", groups=3, dim=48)
        transform = {"size": 96, "resize": 110, "mean": [0.5] * 3, "std": [0.25] * 3, "mode": "center_crop"}
        label = "small_cnn 96px K=3"
    else:
        model = create_model(name, groups=3, dim=512, pretrained=False)
        transform = default_transform(224, 256)
        label = f"{name} 224px K=3"
    path = tmp / "model.pt"
    save_checkpoint(model, path, transform=transform)
    return load_checkpoint(path), label + note


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the worker processes of a forked run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def speed(args: argparse.Namespace) -> dict[str, object]:
    import torch

    from dgml_viz.commands.heatmaps import output_names, process
    from dgml_viz.data.discovery import Source
    from dgml_viz.inference import prepare_image, run_batch
    from dgml_viz.render.panels import RenderOptions
    from dgml_viz.utils import threads

    torch.set_num_threads(args.threads)
    default_nice = threads.BACKGROUND_NICE
    # (nice, processes) variants, side by side in every repetition; the defaults last: their figures are the headline
    variants = [(v, None) for v in args.nice if v != default_nice] + \
        [(default_nice, v) for v in args.processes] + [(default_nice, None)]
    by_variant: dict[tuple[int, int | None], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        model, label = build_model(args.model, tmp)
        model = model.to(args.device).eval()
        cuda = torch.device(args.device).type == "cuda"
        if cuda:
            label += f" on {torch.cuda.get_device_name()}" + (" bf16 autocast" if args.amp else " fp32")
        paths = make_images(tmp / "imgs", args.n, args.images)
        tensors = [prepare_image(p, model.transform)[0] for p in paths]
        batches = [torch.stack(tensors[i:i + args.batch_size]) for i in range(0, len(tensors), args.batch_size)]
        run_batch(model, batches[0], amp=args.amp)  # warm-up
        fwd, fwd1, e2e, fwd_cpu, e2e_cpu, base, base_cpu = [], [], [], [], [], [], []

        def bare() -> tuple[float, float]:
            t0, c0 = time.perf_counter(), time.process_time()
            for b in batches:
                out = run_batch(model, b, amp=args.amp)
                out.embedding.float().cpu()  # results on the host, as the pipeline needs them
            if cuda:
                torch.cuda.synchronize()
            return len(paths) / (time.perf_counter() - t0), (time.process_time() - c0) / len(paths)

        for rep in range(args.reps):
            rate, cpu = bare()
            fwd.append(rate)
            fwd_cpu.append(cpu)
            if args.threads > 1 and not cuda:  # the bare forward with one thread too: on a busy box it can be the faster
                torch.set_num_threads(1)
                fwd1.append(bare()[0])
                torch.set_num_threads(args.threads)
            sources = [Source(p, p.relative_to(tmp / "imgs").as_posix()) for p in paths]
            opts = RenderOptions(max_side=args.size)
            if args.baseline:
                t0, c0 = time.perf_counter(), time.process_time()
                recs = process_per_image(model, sources, tmp / f"base{rep}", groups=list(range(model.num_groups)),
                                         fmt=args.format, options=opts, batch_size=args.batch_size,
                                         workers=args.workers)
                base.append(len(paths) / (time.perf_counter() - t0))
                base_cpu.append((time.process_time() - c0) / len(paths))
                assert len(recs) == len(paths)
            runs = []
            for nice, procs in variants:  # the default last: its figures are the headline ones
                out = tmp / f"out{rep}-nice{nice}-p{procs}"  # a fresh folder each
                threads.BACKGROUND_NICE = nice
                t0 = time.perf_counter()
                c0 = time.process_time() + _children_cpu()
                recs = list(process(model, sources, out, groups=list(range(model.num_groups)), fmt=args.format,
                                    options=opts, batch_size=args.batch_size, workers=args.workers, processes=procs,
                                    amp=args.amp))
                rate = len(paths) / (time.perf_counter() - t0)
                cpu = (time.process_time() + _children_cpu() - c0) / len(paths)  # worker processes included
                runs.append(((nice, procs), rate, cpu))
                threads.BACKGROUND_NICE = default_nice
            after, _ = bare()  # the box's speed can change within seconds: the forward before and after
            fwd[-1] = (fwd[-1] + after) / 2
            for key, r, c in runs:
                by_variant.setdefault(key, []).append((r / max(fwd[-1], fwd1[-1] if fwd1 else 0.0), r, c))
            e2e.append(rate)
            e2e_cpu.append(cpu)
            assert all(r["status"] == "ok" for r in recs) and len(recs) == len(paths)
            names = output_names(range(model.num_groups), args.format, True)
            assert all((out / s.rel / n).is_file() for s in sources for n in names)
    f, e = float(np.median(fwd)), float(np.median(e2e))
    pair = [b / a for a, b in zip(fwd, e2e)]  # per repetition: forward and pipeline back to back
    fc, ec = float(np.median(fwd_cpu)), float(np.median(e2e_cpu))
    extra: dict[str, object] = {}
    if fwd1:  # the pipeline against the better of the two bare forwards of the same repetition
        best = [b / max(a, a1) for a, a1, b in zip(fwd, fwd1, e2e)]
        extra["ratio_vs_best_forward_median_of_pairs"] = round(float(np.median(best)), 3)
        extra["forward_1thread_runs"] = [round(v, 1) for v in fwd1]
        if base:
            extra["baseline_ratio_vs_best_forward"] = round(float(np.median(
                [b / max(a, a1) for a, a1, b in zip(fwd, fwd1, base)])), 3)
    if base:
        bpair = [b / a for a, b in zip(fwd, base)]
        extra |= {"baseline_ratio_median_of_pairs": round(float(np.median(bpair)), 3),
                 "baseline_img_s": round(float(np.median(base)), 1),
                 "cpu_ms_per_img_baseline": round(float(np.median(base_cpu)) * 1000, 1),
                 "baseline_cpu_ratio": round(fc / float(np.median(base_cpu)), 3),
                 "baseline_runs": [round(v, 1) for v in base]}
    if len(by_variant) > 1:  # side by side in each repetition, between the same bare forwards
        extra["by_variant"] = {f"nice={k[0]},processes={'auto' if k[1] is None else k[1]}": {
            "ratio_vs_best_forward_median": round(float(np.median([r[0] for r in v])), 3),
            "img_s_median": round(float(np.median([r[1] for r in v])), 1),
            "cpu_ms_per_img_median": round(float(np.median([r[2] for r in v])) * 1000, 2),
            "ratios": [round(r[0], 3) for r in v]} for k, v in by_variant.items()}
    return {**extra, "ratio_median_of_pairs": round(float(np.median(pair)), 3),
            "cpu_ms_per_img_forward": round(fc * 1000, 1), "cpu_ms_per_img_end_to_end": round(ec * 1000, 1),
            "cpu_ratio": round(fc / ec, 3),"model": label, "n": args.n, "batch_size": args.batch_size, "workers": args.workers,
            "threads": args.threads, "format": args.format, "size": args.size, "forward_img_s": round(f, 1),
            "end_to_end_img_s": round(e, 1), "ratio": round(e / f, 3), "reps": args.reps,
            "forward_runs": [round(v, 1) for v in fwd], "e2e_runs": [round(v, 1) for v in e2e]}


def stage_profile(args: argparse.Namespace) -> dict[str, object]:
    """CPU milliseconds per image of each pipeline stage inside :func:`process` (per-thread CPU time of the
    decode, forward, draw and write calls, summed over threads; best of ``--reps``), plus the process's
    total CPU and wall per image. Run it pinned to one core with one torch thread
    (``OMP_NUM_THREADS=1 taskset -c 1 ... --profile --threads 1``): the stage costs then add up to the
    total and do not depend on how busy the other cores are."""
    import threading

    import torch

    import dgml_viz.inference as inference
    import dgml_viz.render.batch as render_batch_mod
    from dgml_viz.commands import heatmaps
    from dgml_viz.data.discovery import Source
    from dgml_viz.render.panels import RenderOptions

    torch.set_num_threads(args.threads)
    spent: dict[str, float] = {}
    lock = threading.Lock()

    def timed(module: object, name: str, stage: str) -> None:
        real = getattr(module, name)

        def wrapper(*a: object, **k: object) -> object:
            t0 = time.thread_time()
            try:
                return real(*a, **k)
            finally:
                with lock:
                    spent[stage] = spent.get(stage, 0.0) + time.thread_time() - t0

        setattr(module, name, wrapper)

    for module, name, stage in ((heatmaps, "_decode", "decode (read, decode, eval transform)"),
                                (inference, "run_batch", "forward"), (render_batch_mod, "render_batch", "draw"),
                                (heatmaps, "_write_outputs", "write (encode, npz, files, flush)")):
        timed(module, name, stage)
    best: dict[str, float] | None = None
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        model, label = build_model(args.model, tmp)
        paths = make_images(tmp / "imgs", args.n, args.images)
        sources = [Source(p, p.relative_to(tmp / "imgs").as_posix()) for p in paths]
        for rep in range(args.reps):
            spent.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            recs = list(heatmaps.process(model, sources, tmp / f"out{rep}", groups=list(range(model.num_groups)),
                                         fmt=args.format, options=RenderOptions(max_side=args.size),
                                         batch_size=args.batch_size, workers=args.workers))
            row = {k: v / len(paths) * 1e3 for k, v in spent.items()}
            row["total CPU"] = (time.process_time() - c0) / len(paths) * 1e3
            row["wall"] = (time.perf_counter() - t0) / len(paths) * 1e3
            assert all(r["status"] == "ok" for r in recs)
            if best is None or row["total CPU"] < best["total CPU"]:
                best = row
    assert best is not None
    best["other (threads, queues, records)"] = best["total CPU"] - sum(
        v for k, v in best.items() if k not in ("total CPU", "wall"))
    return {"bench": "heatmaps_stage_profile", "model": label, "n": args.n, "batch_size": args.batch_size,
            "workers": args.workers, "threads": args.threads, "format": args.format,
            "cpu_ms_per_image": {k: round(v, 3) for k, v in best.items()}}


def run_cli(args: argparse.Namespace) -> dict[str, object]:
    """One end-to-end CLI run in this process; reports peak RSS."""
    from dgml_viz.cli import main

    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        model, label = build_model(args.model, tmp)
        del model
        paths = make_images(tmp / "imgs", args.n, args.images)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        rc = main(["heatmaps", "--ckpt", str(tmp / "model.pt") if (tmp / "model.pt").exists() else
                   str(ROOT / "checkpoints" / "demo.pt"), "--images", str(tmp / "imgs"), "--out", str(tmp / "out"),
                   "--batch-size", str(args.batch_size), "--workers", str(args.workers)])
        dt = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"model": label, "n": len(paths), "rc": rc, "seconds": round(dt, 1),
            "peak_rss_mb_before_run": round(rss0 / 1024, 1), "peak_rss_mb": round(rss / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", choices=("demo", "small_cnn", "resnet50", "resnet18"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--format", default="jpg")
    ap.add_argument("--images", default="photos", choices=("photos", "synthetic"),
                    help="photos: scikit-image JPEGs (~500 px); synthetic: the demo benchmark's 128 px test images")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--baseline", action="store_true",
                    help="also time the pre-issue-16 pipeline (per-image render, fsync per file) side by side")
    ap.add_argument("--profile", action="store_true",
                    help="CPU ms per image of each pipeline stage (run with taskset -c 1 and --threads 1)")
    ap.add_argument("--nice", type=lambda v: [int(x) for x in v.split(",")], default=[],
                    help="also run the pipeline with these background-thread nice increments (e.g. 0), side by "
                         "side with the default (dgml_viz.utils.threads.BACKGROUND_NICE) in every repetition")
    ap.add_argument("--device", default="cpu", help="the model's device (cuda: the GPU figures of issue 16)")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA, bare forward and pipeline alike")
    ap.add_argument("--processes", type=lambda v: [int(x) for x in v.split(",")], default=[],
                    help="also run the pipeline with these worker-process counts (e.g. 1: one process with threads), "
                         "side by side with the default (processes=None: chosen by the run) in every repetition")
    ap.add_argument("--memory", default=None, help="comma-separated image counts: peak RSS of a CLI run each")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args._child:
        sys.stdout.write(json.dumps(run_cli(args)) + "\n")
        return
    if args.memory:
        for n in [int(v) for v in args.memory.split(",")]:
            cmd = [sys.executable, __file__, "--_child", "--model", args.model, "--n", str(n), "--batch-size",
                   str(args.batch_size), "--workers", str(args.workers), "--images", args.images]
            res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "2"})
            line = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-2000:]
            print(line, flush=True)
        return
    print(json.dumps(stage_profile(args) if args.profile else speed(args)), flush=True)


if __name__ == "__main__":
    main()
