"""Benchmark ``dgml-viz interpret``: wall time of the full report over held-out images.

Usage::

    .venv/bin/python bench/interpret.py [--ckpt checkpoints/demo.pt] [--num-images 1000]
        [--faithfulness-images 100] [--ig-steps 16] [--threads 2] [--compare ...]

When ``--ckpt`` does not exist yet (before the demo model lands) a small_cnn
attentive model of the demo recipe's size (width 16, 128 px, K=3, dim 96) is built
untrained: run time does not depend on the weights. Prints one line per
section with its seconds and the total; ``--compare`` (default: every
``checkpoints/baselines/*.pt``) times the report with the baselines too.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _stand_in(path: Path, head: str = "attentive") -> Path:
    from dgml_viz.data.synthetic import synthetic_transform
    from dgml_viz.model import create_model
    from dgml_viz.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("small_cnn", groups=3, dim=96, head=head, reduction=4, width=16)
    save_checkpoint(model, path, transform=synthetic_transform(128))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "demo.pt"))
    p.add_argument("--config", default="synthetic")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--faithfulness-images", type=int, default=100)
    p.add_argument("--ig-steps", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare", nargs="*", default=None)
    p.add_argument("--no-compare", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    from dgml_viz.cli import main as cli

    tmp = Path(tempfile.mkdtemp(prefix="bench_interpret_"))
    ckpt = Path(args.ckpt)
    note = "shipped checkpoint"
    if not ckpt.exists():
        ckpt = _stand_in(tmp / "stand_in.pt")
        note = "untrained stand-in (small_cnn w16, 128px, K=3, dim 96 as recipes/synthetic.yaml; demo.pt not there yet)"
    compare = args.compare
    if compare is None:
        compare = sorted(str(c) for c in (ROOT / "checkpoints" / "baselines").glob(f"{Path(args.config).stem}_*.pt"))
        if not compare:
            compare = [str(_stand_in(tmp / f"{h}.pt", h)) for h in ("gap", "multi_linear", "gate")]
    runs = [("primary only", [])] + ([] if args.no_compare else [(f"primary + {len(compare)} baselines", compare)])
    print(f"model: {ckpt} ({note}); torch threads {args.threads}; {args.num_images} images of {args.config}; "
          f"faithfulness on {args.faithfulness_images}, IG {args.ig_steps} steps")
    for label, comp in runs:
        out = tmp / label.replace(" ", "_").replace("+", "")
        argv = ["interpret", "--ckpt", str(ckpt), "--config", args.config, "--num-images", str(args.num_images),
                "--faithfulness-images", str(args.faithfulness_images), "--ig-steps", str(args.ig_steps),
                "--out", str(out)] + (["--compare", *comp] if comp else [])
        t0, c0 = time.perf_counter(), time.process_time()
        rc = cli(argv)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        rep = json.loads((out / "report.json").read_text())
        print(f"== {label}: rc={rc} wall {wall:.1f} s (process CPU time {cpu:.1f} s over {args.threads} threads; "
              f"1-min load average at the end {os.getloadavg()[0]:.1f})")
        for name, m in rep["models"].items():
            t = m["timings"]
            f = (m.get("faithfulness") or {}).get("timings", {})
            print(f"   {name}: total {t['total_s']:.1f} s | forward {t['forward_s']:.1f} | diversity "
                  f"{t['diversity_s']:.1f} | localisation {t['localisation_s']:.1f} | faithfulness "
                  f"{t['faithfulness_s']:.1f} (attributions {f.get('attributions_s', 0):.1f}, curves "
                  f"{f.get('curves_s', 0):.1f}) | invariance {t['invariance_s']:.1f}")


if __name__ == "__main__":
    main()
