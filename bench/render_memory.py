"""Peak memory of ``dgml-viz heatmaps`` on one huge, well-compressed image (issue 12).

Writes a 12000 x 12000 RGB PNG (flat background + discs, a few hundred KB), runs the real CLI on it in a
child process and prints the child's own peak resident set size (``VmHWM`` of ``/proc/self/status``),
the wall time and the size the overlays were rendered at.

    .venv/bin/python bench/render_memory.py                      # default render cap
    .venv/bin/python bench/render_memory.py --extra=--max-render-pixels=0   # cap off (old behaviour)
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def huge_png(path: Path, side: int) -> None:
    img = np.full((side, side, 3), 245, np.uint8)
    for i in range(12):
        cv2.circle(img, (side // 2 + side // 40 * i - side * 3 // 20, side // 3 + side // 60 * i), side // 10,
                   (40 + 15 * i, 200 - 10 * i, 90), -1)
    Image.fromarray(img).save(path, compress_level=9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=12000)
    ap.add_argument("--ckpt", default=str(ROOT / "checkpoints" / "demo.pt"))
    ap.add_argument("--extra", default="", help="more heatmaps options, e.g. '--max-render-pixels=0'")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "imgs", Path(tmp) / "out"
        src.mkdir()
        huge_png(src / "huge.png", args.side)
        size_kb = (src / "huge.png").stat().st_size / 1024
        argv = ["heatmaps", "--ckpt", args.ckpt, "--images", str(src), "--out", str(out), "--workers", "1",
                *shlex.split(args.extra)]
        # the child reports its own VmHWM: ru_maxrss would include this parent's RSS (the huge image
        # it just wrote), since Linux keeps the old mm's high-water mark across execve
        child = ("import sys\nfrom dgml_viz.cli import main\nrc = main(sys.argv[1:])\n"
                 "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0]\n"
                 "print('PEAK_KB', int(hwm.split()[1]))\nsys.exit(rc)")
        cmd = [sys.executable, "-c", child, *argv]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"heatmaps exited {res.returncode}")
        peak_gb = int(res.stdout.split("PEAK_KB")[1].split()[0]) / 1024 ** 2  # KiB
        rec = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
        rendered = Image.open(out / "huge.png" / "composite.jpg").size
    print(f"{args.side}x{args.side} PNG ({size_kb:.0f} KB), heatmaps {args.extra or '(defaults)'}: "
          f"peak RSS {peak_gb:.2f} GB, wall {wall:.1f} s, manifest size {rec['size']}, rendered {rendered[0]}x{rendered[1]}")


if __name__ == "__main__":
    main()
