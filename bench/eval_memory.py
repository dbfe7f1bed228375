"""Evaluation time and peak memory for N x D embeddings (default 60,000 x 512).

Runs :func:`dgml_viz.metrics.retrieval.retrieval_metrics` (Recall@1/2/4/8,
MAP@R; ``--nmi`` adds k-means NMI) on random clustered, L2-normalised
embeddings and reports wall time and the growth of the process's peak RSS
(``resource.getrusage``) over the baseline that already holds the embeddings;
tracemalloc's peak covers Python-level allocations only (numpy/sklearn), torch
tensors are measured by RSS. For scale, a full N x N float32 similarity matrix
would need N^2 * 4 bytes.

    python bench/eval_memory.py [--n 60000] [--dim 512] [--classes 100] [--chunk 2048]
"""
from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import torch

from dgml_viz.metrics.retrieval import retrieval_metrics


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=60000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--nmi", action="store_true", help="also k-means NMI (slow on CPU)")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; N={args.n}, D={args.dim}, "
          f"{args.classes} classes, chunk {args.chunk}")
    centers = torch.randn(args.classes, args.dim)
    labels = torch.randint(0, args.classes, (args.n,))
    emb = torch.nn.functional.normalize(centers[labels] + 3.0 * torch.randn(args.n, args.dim), dim=-1)
    d = args.dim // args.groups
    groups = torch.nn.functional.normalize(emb[:, : d * args.groups].reshape(args.n, args.groups, d), dim=-1)
    base = peak_rss_mb()
    tracemalloc.start()
    t0 = time.perf_counter()
    metrics = retrieval_metrics(emb, labels, groups=groups, compute_nmi=args.nmi, chunk=args.chunk)
    dt = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = peak_rss_mb()
    emb_mb = (emb.numel() + groups.numel()) * 4 / 2**20
    print("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    print(f"time: {dt:.1f} s")
    print(f"embeddings held: {emb_mb:.0f} MiB; process peak RSS {peak:.0f} MiB "
          f"(+{peak - base:.0f} MiB during evaluation over the {base:.0f} MiB baseline)")
    print(f"tracemalloc peak (Python-level allocations): {py_peak / 2**20:.1f} MiB")
    print(f"for comparison, one full N x N float32 similarity matrix: {args.n ** 2 * 4 / 2**30:.1f} GiB")


if __name__ == "__main__":
    main()
