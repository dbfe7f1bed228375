"""Benchmarks of the persistent index (issue 16): indexing throughput, FAISS search, load, app latency.

    python bench/index.py throughput [--model demo|resnet50] [--n 256] [--batch-size 32] [--reps 2]
    python bench/index.py search [--sizes 60000,1000000] [--queries 100]
    python bench/index.py load [--n 60000]
    python bench/index.py app [--n 60000] [--reps 5]

* ``throughput``: images/s of ``build_index`` (worker processes decoding inline, or one process with
  decode threads -> batched forward -> chunks -> final write; fresh index each time, timed from the call
  to its return) vs the bare batched forward (``run_batch`` over the same images, pre-decoded, ``--threads``
  torch threads) in the same process, run right before and right after each build (the ratio uses their
  mean: this box changes speed in phases of seconds); also the ratio for the embedding phase alone
  (``BuildStats.embed_seconds``: decode + forward + chunks, without the fixed model load, checkpoint
  hashing and final write: ``fixed_seconds``), the worker ``processes`` and how decoding ran (``decode``:
  ``inline`` in each worker process; in one process ``phased`` in the forward's gaps for a model whose
  forward dwarfs decoding, e.g. ResNet-50, ``overlapped`` otherwise). ``--processes 1`` / ``--nice 0``
  add side-by-side variants (``by_variant``).
  ``demo``: checkpoints/demo.pt on its own held-out images (128 px PNG); ``resnet50``: random init,
  224 px, scikit-image photos as JPEG.
* ``search``: random unit group embeddings (K=3, d=170, float32); exact FAISS ``IndexFlatIP`` and IVF
  vs a numpy brute force (``argpartition`` of ``q @ X.T``) on the same queries: build and query
  times, identical top-10 (exact), recall@10 (IVF).
* ``load``: an index of random rows written by ``write_index``; ``open_index`` time, first FAISS build
  time, RSS.
* ``app``: the Compare page with that index (AppTest, in-process, warm cache): median/max ms per
  interaction, RSS after. The rows point to hard links of one PNG (the images are never decoded
  except the ~11 shown).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """Current resident set size of this process (MiB)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------- throughput
def _images(folder: Path, n: int, kind: str) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    if kind == "synthetic":
        from dgml_viz.data import SyntheticParts

        ds = SyntheticParts("test", seed=0, image_size=128, samples_per_class=max(1, n // 32 + 1), cache=False)
        for i in range(n):
            p = folder / f"s{i:05d}.png"
            Image.fromarray((ds.scene(i).rgb * 255 + 0.5).astype(np.uint8)).save(p)
            out.append(p)
        return out
    import skimage.data

    photos = [np.ascontiguousarray(getattr(skimage.data, k)()[..., :3]) for k in ("astronaut", "chelsea", "coffee",
                                                                                 "rocket")]
    for i in range(n):
        p = folder / f"p{i:05d}.jpg"
        Image.fromarray(photos[i % len(photos)]).save(p, quality=90)
        out.append(p)
    return out


def bench_throughput(args: argparse.Namespace) -> dict:
    import torch

    from dgml_viz.index.builder import build_index
    from dgml_viz.inference import prepare_image, run_batch
    from dgml_viz.model import create_model
    from dgml_viz.model.checkpoint import load_checkpoint, save_checkpoint
    from dgml_viz.utils import threads

    torch.set_num_threads(args.threads)
    default_nice = threads.BACKGROUND_NICE
    # (nice, processes) variants, side by side in every repetition; the defaults last: their figures are the headline
    variants = [(v, None) for v in args.nice if v != default_nice] + \
        [(default_nice, v) for v in args.processes] + [(default_nice, None)]
    by_variant: dict[tuple[int, int | None], list[tuple[float, float, int]]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="dgml-bench-index-"))
    if args.model == "demo":
        ckpt = ROOT / "checkpoints" / "demo.pt"
        files = _images(tmp / "imgs", args.n, "synthetic")
    else:
        torch.manual_seed(0)
        ckpt = save_checkpoint(create_model("resnet50", groups=3, dim=512), tmp / "r50.pt")
        files = _images(tmp / "imgs", args.n, "photos")
    model = load_checkpoint(ckpt).to(args.device).eval()
    cuda = torch.device(args.device).type == "cuda"
    tensors = [prepare_image(p, model.transform)[0] for p in files]
    run_batch(model, tensors[: args.batch_size], amp=args.amp)  # warm-up

    def forward() -> float:
        t0 = time.perf_counter()
        for s in range(0, len(tensors), args.batch_size):
            run_batch(model, tensors[s:s + args.batch_size], amp=args.amp).groups.float().cpu()  # on the host
        if cuda:
            torch.cuda.synchronize()
        return len(tensors) / (time.perf_counter() - t0)

    fwd, idx, ratios, embed_ratios, fixed, schedules, procs = [], [], [], [], [], set(), set()
    before, k = forward(), 0
    for rep in range(args.reps):
        for nice, processes in variants:
            threads.BACKGROUND_NICE = nice
            t0 = time.perf_counter()
            stats = build_index(ckpt, tmp / "imgs", tmp / f"ix{k}", batch_size=args.batch_size,
                                workers=args.workers, progress=False, processes=processes, device=args.device,
                                amp=args.amp)
            i = stats.embedded / (time.perf_counter() - t0)
            threads.BACKGROUND_NICE = default_nice
            shutil.rmtree(tmp / f"ix{k}", ignore_errors=True)
            k += 1
            after = forward()  # the bare forward right before and right after: the box changes speed in phases
            f = (before + after) / 2
            before = after
            by_variant.setdefault((nice, processes), []).append((i / f, i, stats.processes))
        fwd.append(f)
        idx.append(i)
        ratios.append(i / f)
        embed_ratios.append(stats.embedded / stats.embed_seconds / f)
        fixed.append(stats.seconds - stats.embed_seconds)  # model load + checkpoint hash + scan + final write
        schedules.add(stats.decode)
        procs.add(stats.processes)
    shutil.rmtree(tmp, ignore_errors=True)

    def label(nice: int, processes: int | None) -> str:
        return f"nice={nice},processes={'auto' if processes is None else processes}"

    return {"bench": "index_throughput", "model": args.model, "device": args.device, "amp": args.amp,
            "checkpoint": str(ckpt), "images": len(files),
            "batch_size": args.batch_size, "workers": args.workers, "threads": args.threads,
            "forward_img_s": round(statistics.median(fwd), 2), "index_img_s": round(statistics.median(idx), 2),
            "ratio_median": round(statistics.median(ratios), 3), "ratios": [round(r, 3) for r in ratios],
            "embed_phase_ratio_median": round(statistics.median(embed_ratios), 3),
            "embed_phase_ratios": [round(r, 3) for r in embed_ratios],
            "fixed_seconds_median": round(statistics.median(fixed), 2), "decode": sorted(schedules),
            "processes": sorted(procs),
            **({"by_variant": {label(*key): {"ratio_median": round(statistics.median(r[0] for r in v), 3),
                                             "img_s_median": round(statistics.median(r[1] for r in v), 1),
                                             "ratios": [round(r[0], 3) for r in v], "processes": v[0][2]}
                               for key, v in by_variant.items()}} if len(by_variant) > 1 else {})}


# ----------------------------------------------------------------------------- search
def random_groups(n: int, k: int = 3, d: int = 170, seed: int = 0) -> np.ndarray:
    """float32 ``[n, k, d]`` random unit group vectors."""
    rng = np.random.default_rng(seed)
    g = np.empty((n, k, d), np.float32)
    for s in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - s), k, d), dtype=np.float32)
        g[s:s + len(block)] = block / np.linalg.norm(block, axis=-1, keepdims=True)
    return g


class _Rows:
    """Just enough of an EmbeddingIndex for :class:`Searcher` (groups only)."""

    def __init__(self, groups: np.ndarray) -> None:
        self.groups = groups


def numpy_topk(x: np.ndarray, q: np.ndarray, k: int, chunk: int = 200_000) -> tuple[np.ndarray, np.ndarray]:
    """Brute force: ``q @ x.T`` block-wise, argpartition + sort."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, len(x), chunk):
        sims = q @ x[s:s + chunk].T
        top = np.argpartition(-sims, min(k, sims.shape[1] - 1), axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(sims, top, 1)], 1)
        best_i = np.concatenate([best_i, top + s], 1)
        keep = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_s, best_i


def bench_search(args: argparse.Namespace) -> list[dict]:
    from dgml_viz.index.search import Searcher, subset_vectors

    out = []
    for n in [int(v) for v in args.sizes.split(",")]:
        groups = random_groups(n)
        queries = random_groups(args.queries, seed=1)
        for sel in ([0, 1, 2], [0, 2]):
            t0 = time.perf_counter()
            x = subset_vectors(groups, sel)
            qx = subset_vectors(queries, sel)
            t_prep = time.perf_counter() - t0
            t0 = time.perf_counter()
            ns, ni = numpy_topk(x, qx, 10)
            t_np = time.perf_counter() - t0
            del x
            searcher = Searcher(_Rows(groups))
            t0 = time.perf_counter()
            searcher.faiss_index(sel)
            t_build = time.perf_counter() - t0
            t0 = time.perf_counter()
            res = searcher.search(queries, k=10, groups=sel)
            t_faiss = time.perf_counter() - t0
            row = {"bench": "search", "n": n, "groups": sel, "queries": args.queries,
                   "numpy_s": round(t_np + t_prep, 3), "faiss_build_s": round(t_build, 3),
                   "faiss_search_s": round(t_faiss, 3), "identical_top10": float((res.index == ni).mean()),
                   "max_abs_sim_diff": float(np.abs(res.similarity - ns).max())}
            if sel == [0, 1, 2] and n >= 10_000:
                ivf = Searcher(_Rows(groups), "ivf")
                t0 = time.perf_counter()
                ivf.faiss_index(sel)
                row["ivf_build_s"] = round(time.perf_counter() - t0, 3)
                t0 = time.perf_counter()
                r2 = ivf.search(queries, k=10, groups=sel)
                row["ivf_search_s"] = round(time.perf_counter() - t0, 3)
                row["ivf_recall@10"] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in
                                                      zip(r2.index.tolist(), ni.tolist())]))
            del searcher
            out.append(row)
            print(json.dumps(row), flush=True)
        del groups
    return out


# ----------------------------------------------------------------------------- load + app
def synthetic_index(folder: Path, n: int, image: Path | None = None) -> Path:
    """An index of ``n`` random rows (K=3, d=170, 7x7 maps) written by :func:`write_index`; rows point to hard links
    of ``image`` when given (else to fake paths)."""
    from dgml_viz.data.transforms import compute_geometry
    from dgml_viz.index.store import Rows, info_row, write_index
    from dgml_viz.model.network import default_transform

    rng = np.random.default_rng(0)
    groups = random_groups(n)
    att = rng.random((n, 3, 7, 7), dtype=np.float32)
    att = (att / att.sum(axis=(2, 3), keepdims=True)).astype(np.float16)
    if image is not None:
        (folder / "imgs").mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            p = folder / "imgs" / f"c{i % 100:03d}_{i:06d}.png"
            if not p.exists():
                os.link(image, p)
            paths.append(str(p.resolve()))
        from PIL import Image

        w, h = Image.open(image).size
    else:
        paths = [f"/data/sop/class{i % 11318}/img{i:06d}.jpg" for i in range(n)]
        w, h = 400, 300
    transform = default_transform()
    geo = compute_geometry(w, h, transform)
    info = np.asarray([info_row(1000, 0, geo)] * n, dtype=np.int64)
    out = folder / "ix"
    write_index(out, [(Rows(paths, info, groups, att), np.arange(n))],
                checkpoint={"path": "/nonexistent/r50.pt", "sha256": "0" * 64, "config": {}, "transform": transform},
                num_groups=3, group_dim=170, map_shape=(7, 7), geometry_mode="center_crop")
    return out


def bench_load(args: argparse.Namespace) -> dict:
    from dgml_viz.index.search import Searcher
    from dgml_viz.index.store import open_index

    tmp = Path(tempfile.mkdtemp(prefix="dgml-bench-load-"))
    t0 = time.perf_counter()
    ix_path = synthetic_index(tmp, args.n)
    t_write = time.perf_counter() - t0
    r0 = rss_mb()
    t0 = time.perf_counter()
    ix = open_index(ix_path)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = Searcher(ix)
    s.faiss_index()
    t_faiss = time.perf_counter() - t0
    t0 = time.perf_counter()
    s.search(np.asarray(ix.groups[:1]), k=10, exclude=[[0]])
    t_q = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in ix_path.iterdir()) / 2**20
    return {"bench": "index_load", "n": args.n, "write_s": round(t_write, 2), "open_s": round(t_open, 3),
            "faiss_build_s": round(t_faiss, 3), "first_query_s": round(t_q, 4), "disk_mib": round(size, 1),
            "rss_delta_mib": round(rss_mb() - r0, 1)}


def bench_app(args: argparse.Namespace) -> list[dict]:
    from PIL import Image
    from streamlit.testing.v1 import AppTest

    tmp = Path(tempfile.mkdtemp(prefix="dgml-bench-app-"))
    img = tmp / "one.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(img)
    t0 = time.perf_counter()
    ix_path = synthetic_index(tmp, args.n, image=img)
    print(f"# synthetic {args.n}-row index written in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    os.environ["DGML_VIZ_ALLOWED_ROOTS"] = str(tmp)
    os.environ["DGML_VIZ_INDEX_DIR"] = str(ix_path)
    r0 = rss_mb()
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=600)
    at.run()
    at.switch_page("pages_impl/compare.py").run()
    t0 = time.perf_counter()
    at.radio(key="cmp_gallery").set_value("index").run()
    cold = time.perf_counter() - t0
    assert not at.exception, [e.value for e in at.exception]
    steps = {
        "query": lambda i: at.number_input(key="cmp_query").set_value([11, 42_000 % args.n][i % 2]),
        "top-k": lambda i: at.slider(key="cmp_k").set_value([3, 8][i % 2]),
        "alpha": lambda i: at.slider(key="cmp_alpha").set_value([0.3, 0.7][i % 2]),
        "second query": lambda i: at.number_input(key="cmp_query_b").set_value([5, 77][i % 2]),
        "groups (cached subset)": lambda i: at.multiselect(key="cmp_groups").set_value([[0, 2], [0, 1, 2]][i % 2]),
    }
    out = [{"bench": "app_compare_index", "n": args.n, "interaction": "open index (cold: mmap + FAISS build)",
            "ms": round(cold * 1000, 1)}]
    at.multiselect(key="cmp_groups").set_value([0, 2]).run()  # build the subset's FAISS index once
    at.multiselect(key="cmp_groups").set_value([0, 1, 2]).run()
    for name, step in steps.items():
        times = []
        for i in range(args.reps):
            step(i)
            t0 = time.perf_counter()
            at.run()
            times.append((time.perf_counter() - t0) * 1000)
            assert not at.exception, [e.value for e in at.exception]
        out.append({"bench": "app_compare_index", "n": args.n, "interaction": name,
                    "median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1)})
    out.append({"bench": "app_compare_index", "n": args.n, "rss_after_mib": round(rss_mb(), 1),
                "rss_delta_mib": round(rss_mb() - r0, 1)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("throughput", "search", "load", "app"))
    p.add_argument("--model", choices=("demo", "resnet50"), default="demo")
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--nice", type=lambda v: [int(x) for x in v.split(",")], default=[],
                   help="throughput: also index with these background-thread nice increments (e.g. 0), side by "
                        "side with the default (dgml_viz.utils.threads.BACKGROUND_NICE) in every repetition")
    p.add_argument("--processes", type=lambda v: [int(x) for x in v.split(",")], default=[],
                   help="throughput: also index with these worker-process counts (e.g. 1 = one process with decode "
                        "threads), side by side with the default (choose_processes) in every repetition")
    p.add_argument("--device", default="cpu", help="throughput: the model's device (cuda: issue 16's GPU figures)")
    p.add_argument("--amp", action="store_true", help="throughput: bf16 autocast on CUDA, bare forward and index alike")
    p.add_argument("--sizes", default="60000,1000000")
    p.add_argument("--queries", type=int, default=100)
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.part == "throughput":
        args.n = args.n or (256 if args.model == "demo" else 32)
        print(json.dumps(bench_throughput(args)))
    elif args.part == "search":
        bench_search(args)
    elif args.part == "load":
        args.n = args.n or 60_000
        print(json.dumps(bench_load(args)))
    else:
        args.n = args.n or 60_000
        args.reps = max(args.reps, 3)
        for row in bench_app(args):
            print(json.dumps(row))


if __name__ == "__main__":
    main()
