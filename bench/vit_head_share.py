"""The attentive head's share of a ViT-S/16 training step (timm backbone, 224 px, K=3).

Three timings, interleaved step by step so load from other jobs hits them alike
(median of ``--steps``):

* ``full``: ``model(x)`` -> grouped margin loss + diversity -> backward -> Adam step
  (every parameter: backbone, head, loss betas);
* ``head+loss``: the same on the backbone's (precomputed, detached) token grid
  ``[B, 384, 14, 14]``: head forward, loss, backward *including the gradient to
  the tokens* (what the backbone's backward receives in the full step), Adam on
  head + betas;
* ``loss``: the loss alone on precomputed groups (forward + backward + Adam on the betas).

head share = (head+loss - loss) / full. Randomly initialised weights (no download);
the timings do not depend on the values.

    python bench/vit_head_share.py                        # batch 112 (GPU if present)
    python bench/vit_head_share.py --batch 16 --steps 2   # CPU: smaller batch, few steps
"""
from __future__ import annotations

import argparse
import platform

import torch
from train_step import run_interleaved as median_times  # one interleaved timer for the benches

from dgml_viz.model import create_model
from dgml_viz.train.losses import GroupedMetricLoss
from dgml_viz.train.terms import DiversityTerm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="timm:vit_small_patch16_224")
    ap.add_argument("--batch", type=int, default=112, help="images per step (56 classes x 2 at 112)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    model = create_model(args.backbone, groups=3, dim=512, head="attentive").to(device).train()
    num_classes = max(1, args.batch // 2)
    labels = torch.arange(num_classes, device=device).repeat_interleave(2)[: args.batch]
    loss_fn = GroupedMetricLoss(3, num_classes, terms=[DiversityTerm(0.02)]).to(device)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    opt_full = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-5)
    opt_head = torch.optim.Adam([*model.head.parameters(), *loss_fn.parameters()], lr=1e-5)
    opt_loss = torch.optim.Adam(loss_fn.parameters(), lr=1e-5)
    with torch.no_grad():
        feats = model.features(x)  # [B, C, h, w] token grid
        groups = model.head(feats).groups

    def full() -> None:
        out = model(x)
        loss = loss_fn(out.groups, labels, out.attention)["total"]
        opt_full.zero_grad(set_to_none=True)
        loss.backward()
        opt_full.step()

    def head_and_loss() -> None:
        f = feats.detach().requires_grad_(True)  # the gradient to the tokens is part of the head's cost
        out = model.head(f)
        loss = loss_fn(out.groups, labels, out.attention)["total"]
        opt_head.zero_grad(set_to_none=True)
        loss.backward()
        opt_head.step()

    def loss_only() -> None:
        g = groups.detach().requires_grad_(True)
        loss = loss_fn(g, labels, None)["total"]
        opt_loss.zero_grad(set_to_none=True)
        loss.backward()
        opt_loss.step()

    t = median_times({"full": full, "head+loss": head_and_loss, "loss": loss_only}, args.steps, args.warmup, device)
    head = max(0.0, t["head+loss"] - t["loss"])
    print(f"{args.backbone} @ {args.size}, batch {args.batch}, K=3, feature grid {list(feats.shape[1:])}; "
          f"device {device} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads); "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    for k, v in t.items():
        print(f"  {k:10s} {v * 1e3:10.1f} ms")
    print(f"  attentive head (fwd + bwd incl. grad to tokens + Adam): {head * 1e3:.1f} ms = "
          f"{100 * head / t['full']:.2f} % of the training step")


if __name__ == "__main__":
    main()
