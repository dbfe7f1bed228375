"""CPU cost of writing one image's heatmaps outputs: a new folder published with one rename vs a temp name
and a rename per file.

Usage:
    python bench/write_outputs.py [--n 256] [--reps 6] [--chunk 16] [--format jpg]

The demo model's own held-out images (128 px PNG) are decoded, forwarded and drawn once; then
``dgml_viz.commands.heatmaps._write_outputs`` writes the same panels, maps and embeddings (3 overlays +
composite + maps.npz per image, ``--chunk`` images per call, one ``syncfs`` each) alternately into

* ``new``: a fresh output folder: every image folder is new, so ``AtomicFolder`` stages its files in a
  hidden folder and renames it into place (1 rename per image);
* ``existing``: a folder where every image folder already exists (empty), so each file goes through its
  own temp name and rename (5 renames per image) — what every image cost before ``AtomicFolder``.

Prints the median and minimum CPU milliseconds per image of the writing thread (``time.thread_time``;
single thread, so other jobs on the machine matter less than for wall time) of both, per repetition.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--format", default="jpg")
    args = ap.parse_args()

    import torch

    from heatmaps import build_model, make_images

    from dgml_viz.commands import heatmaps
    from dgml_viz.data.discovery import Source
    from dgml_viz.inference import attention_maps, run_batch
    from dgml_viz.render.batch import render_batch
    from dgml_viz.render.panels import RenderOptions

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmpd:
        tmp = Path(tmpd)
        model, label = build_model("demo", tmp)
        paths = make_images(tmp / "imgs", args.n, "synthetic")
        sources = [Source(p, p.relative_to(tmp / "imgs").as_posix()) for p in paths]
        transform = heatmaps._EvalTransform(dict(model.transform))
        decoded = [heatmaps._decode(s, transform, None, None, None) for s in sources]
        out = run_batch(model, [d[0] for d in decoded])
        maps, emb = attention_maps(out), out.embedding.detach().float().numpy()
        groups = list(range(model.num_groups))
        panels = render_batch([d[2] for d in decoded], maps, [d[1] for d in decoded], groups, RenderOptions())
        items = [(s, d[1], panels[i], maps[i], emb[i]) for i, (s, d) in enumerate(zip(sources, decoded))]
        cpu: dict[str, list[float]] = {"new": [], "existing": []}
        for rep in range(args.reps):
            for case in cpu:
                folder = tmp / f"{case}{rep}"
                if case == "existing":
                    for s in sources:
                        heatmaps.image_dir(folder, s.rel).mkdir(parents=True)
                c0 = time.thread_time()
                for i in range(0, len(items), args.chunk):
                    recs = heatmaps._write_outputs(items[i:i + args.chunk], folder, args.format)
                    assert all(r["status"] == "ok" for r in recs)
                cpu[case].append((time.thread_time() - c0) / len(items) * 1e3)
    print(json.dumps({"bench": "write_outputs", "model": label, "images": args.n, "chunk": args.chunk,
                      "format": args.format, "reps": args.reps,
                      **{f"{k}_cpu_ms_per_img_median": round(float(np.median(v)), 3) for k, v in cpu.items()},
                      **{f"{k}_cpu_ms_per_img_min": round(min(v), 3) for k, v in cpu.items()},
                      **{f"{k}_runs": [round(x, 3) for x in v] for k, v in cpu.items()}}), flush=True)


if __name__ == "__main__":
    main()
