"""Multi-process training helpers (torchrun / DDP).

Launch on one node with N GPUs::

    torchrun --nproc_per_node=N -m dgml_viz.cli train --config cub200 data.root=...

or across nodes with ``--nnodes``/``--node_rank``/``--rdzv_endpoint`` as usual.
:func:`init_distributed` reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
(``MASTER_ADDR``/``MASTER_PORT``) and picks NCCL on CUDA, Gloo on CPU.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.distributed as dist
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else CPU; ``"cuda"`` -> ``cuda:<local_rank>``;
    otherwise ``torch.device(pref)``. A device that does not exist here is a one-line ConfigError."""
    from dgml_viz.validation import check_device

    device = check_device(pref, "train.device")  # one-line ConfigError if it does not exist here
    if device.type == "cuda" and (pref in (None, "auto", "cuda")):
        return check_device(f"cuda:{local_rank}", "train.device (LOCAL_RANK)")
    return device


def init_distributed(device_pref: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment (no-op for a single process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_pref, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    here = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        here = True
        logger.info("rank %d/%d joined the %s process group on %s", rank, world, backend, device)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local_rank, device, here)


def cleanup(info: DistInfo) -> None:
    """Leave the process group if :func:`init_distributed` created it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def average_gradients(params: Iterable[nn.Parameter], info: DistInfo) -> None:
    """All-reduce (mean) the gradients of parameters that DDP does not manage (e.g. loss betas).

    A missing gradient counts as zero so every rank takes part in the same collectives.
    """
    if not info.distributed:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def broadcast_buffers(module: nn.Module, info: DistInfo, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running stats) to every rank."""
    if not info.distributed:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src)


__all__ = ["DistInfo", "init_distributed", "cleanup", "barrier", "average_gradients", "broadcast_buffers",
           "resolve_device"]
