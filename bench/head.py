"""Forward+backward time of the attentive head vs the reference per-query loop.

Map 2048x7x7 (ResNet-50 at 224), batch 112, K in {3, 8}, on CPU; and the share of
the head in a full ResNet-50 forward+backward at the same batch.

    python bench/head.py [--batch 112] [--reps 5] [--r50-reps 1]
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from reference_head import LoopHead

from dgml_viz.model import create_model
from dgml_viz.model.heads import AttentiveHead


def time_fwd_bwd(fn, x: torch.Tensor, reps: int) -> float:
    """Median seconds of forward+backward (after one warm-up)."""
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        out = fn(x)
        out.float().pow(2).sum().backward()
        dt = time.perf_counter() - t0
        if i:
            times.append(dt)
    times.sort()
    return times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=112)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--r50-reps", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    x = torch.randn(args.batch, 2048, 7, 7).relu().requires_grad_(True)
    heads = {}
    for k in (3, 8):
        ours = AttentiveHead(2048, groups=k, dim=512, reduction=8)
        loop = LoopHead(2048, k, 512, 8)
        t_ours = time_fwd_bwd(lambda t: ours(t).embedding, x, args.reps)
        t_loop = time_fwd_bwd(lambda t: loop(t).flatten(1), x, args.reps)
        heads[k] = t_ours
        print(f"K={k}: attentive head {t_ours * 1e3:8.1f} ms | per-query loop {t_loop * 1e3:8.1f} ms "
              f"| speed-up {t_loop / t_ours:5.1f}x")
    model = create_model("resnet50", groups=3, dim=512)
    model.train()
    images = torch.randn(args.batch, 3, 224, 224)
    t_r50 = time_fwd_bwd(lambda t: model(t).embedding, images, args.r50_reps)
    print(f"ResNet-50 + head forward+backward, batch {args.batch}: {t_r50:.2f} s")
    for k, t in heads.items():
        print(f"head share of a ResNet-50 step (K={k}): {100 * t / t_r50:.2f}% (goal < 2%)")


if __name__ == "__main__":
    main()
