"""Training throughput (images/s): reference-style step vs ours, side by side in one run.

ResNet-50 at 224 px, K=3 groups, batch 112 (56 classes x 2) by default; inputs
are already on the device, so only the step is timed.

* reference-style: fp32, the K queries run as K one-channel 1x1 convs in a
  Python loop (as in the original code), and every step's gradients copied to
  host memory (as its per-step gradient logging did);
* ours: the batched attentive head, no host copies; on CUDA also bf16 autocast
  + channels_last (+ ``--compile``).

Both use the same grouped margin loss + distance-weighted miner + diversity and Adam.

    python bench/train_step.py                      # defaults (GPU if present)
    python bench/train_step.py --batch 16 --steps 2 # CPU: smaller batch, few steps
"""
from __future__ import annotations

import argparse
import platform
import time

import torch
from reference_head import LoopHead
from torch import nn

from dgml_viz.model import create_model
from dgml_viz.train.losses import GroupedMetricLoss
from dgml_viz.train.terms import DiversityTerm


class ReferenceNet(nn.Module):
    def __init__(self, backbone: nn.Module, k: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = LoopHead(2048, k, 512, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_interleaved(steps: dict[str, "callable"], n: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Median seconds per step of each variant; variants alternate step by step so that
    load from other jobs on a shared machine hits both alike."""
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(n):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=112)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="torch.compile our model (CUDA)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"torch {torch.__version__}, device {device} ({name}), {torch.get_num_threads()} CPU threads")
    print(f"ResNet-50 @ {args.size}, batch {args.batch}, K={args.groups}, {args.steps} timed steps "
          f"(+{args.warmup} warm-up)")

    classes = max(2, args.batch // 2)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device)
    labels = torch.arange(classes, device=device).repeat_interleave(2)[: args.batch]

    # --- reference-style
    ours_model = create_model("resnet50", groups=args.groups, dim=512, freeze_bn=True).to(device)
    ref = ReferenceNet(create_model("resnet50", groups=args.groups, dim=512, freeze_bn=True).backbone,
                       args.groups).to(device)
    ref_loss = GroupedMetricLoss(args.groups, classes, terms=[DiversityTerm(0.02)]).to(device)
    ref_opt = torch.optim.Adam(list(ref.parameters()) + list(ref_loss.parameters()), lr=1e-5)
    ref_params = [p for p in ref.parameters() if p.requires_grad]

    def ref_step() -> None:
        groups = ref(images)
        loss = ref_loss(groups, labels)["total"]
        ref_opt.zero_grad()
        loss.backward()
        _host = [p.grad.detach().cpu().numpy() for p in ref_params if p.grad is not None]  # noqa: F841
        ref_opt.step()
        loss.item()

    # --- ours
    cuda = device.type == "cuda"
    model = ours_model.train()
    loss_fn = GroupedMetricLoss(args.groups, classes, terms=[DiversityTerm(0.02)]).to(device)
    opt = torch.optim.Adam(list(model.parameters()) + list(loss_fn.parameters()), lr=1e-5)
    x = images
    if cuda:
        model = model.to(memory_format=torch.channels_last)
        x = images.contiguous(memory_format=torch.channels_last)
    net = torch.compile(model) if args.compile else model
    def ctx() -> torch.autocast:
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda)

    def our_step() -> None:
        with ctx():
            out = net(x)
        loss = loss_fn(out.groups.float(), labels)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if args.compile:  # compile before timing
        our_step()
        our_step()
    t = run_interleaved({"ref": ref_step, "ours": our_step}, args.steps, args.warmup, device)
    t_ref, t_ours = t["ref"], t["ours"]
    tag = "bf16 autocast + channels_last" + (" + compile" if args.compile else "") if cuda else "fp32"
    print(f"reference-style (fp32, loop head, grads to host): {t_ref * 1e3:9.1f} ms/step "
          f"{args.batch / t_ref:8.1f} img/s")
    print(f"ours ({tag}, batched head):{' ' * max(0, 22 - len(tag))} {t_ours * 1e3:9.1f} ms/step "
          f"{args.batch / t_ours:8.1f} img/s")
    print(f"speed-up: {t_ref / t_ours:.2f}x")


if __name__ == "__main__":
    main()
