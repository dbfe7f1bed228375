"""Small public helpers shared by the CLI and the app: image -> model input -> group maps.

Example:
    >>> model = load_checkpoint("checkpoints/demo.pt")                  # doctest: +SKIP
    >>> x, geo, img = prepare_image("photo.jpg", model.transform)       # doctest: +SKIP
    >>> out = run_batch(model, [x])                                      # doctest: +SKIP
    >>> maps = attention_maps(out)        # float32 [1, K, h, w]          # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dgml_viz.data.images import load_image
from dgml_viz.data.transforms import Geometry, eval_transform
from dgml_viz.errors import ConfigError



def prepare_image(
    source: str | os.PathLike[str] | np.ndarray,
    transform: Mapping[str, Any],
    max_pixels: int | None = None,
) -> tuple[Tensor, Geometry, np.ndarray]:
    """Decode (if a path) and transform one image for the model.

    Args:
        source: an image path, or an ``uint8 [H, W, 3]`` RGB array (not modified).
        transform: the checkpoint's transform dict (``model.transform``).
        max_pixels: decompression-bomb limit for paths (see :mod:`dgml_viz.data.images`).

    Returns:
        ``(tensor float32 [3, S, S], Geometry, original uint8 [H, W, 3])``.

    Raises:
        ImageError: the file cannot be decoded (one line naming it).
    """
    if isinstance(source, np.ndarray):
        image = source
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"expected uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
        image = image[:, :, :3]
    else:
        image = load_image(source, max_pixels=max_pixels)
    tensor, geometry = eval_transform(np.ascontiguousarray(image), transform)
    return tensor, geometry, image


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameter-less model)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def run_batch(model: nn.Module, tensors: Tensor | Sequence[Tensor], *, amp: bool = False) -> Any:
    """Forward ``[B, 3, S, S]`` (or a list of ``[3, S, S]``) under ``torch.inference_mode``.

    The batch is moved to the model's device; the returned ``GroupOutput`` is
    on that device. The model is expected to be in eval mode. ``amp``: bf16 autocast on CUDA
    (:func:`autocast`; no effect on a CPU).
    """
    batch = tensors if isinstance(tensors, Tensor) else torch.stack(list(tensors))
    if batch.ndim != 4:
        raise ValueError(f"expected [B, 3, H, W], got shape {tuple(batch.shape)}")
    device = model_device(model)
    with torch.inference_mode(), autocast(device, amp):
        return model(batch.to(device, non_blocking=True))


def attention_maps(output: Any) -> np.ndarray:
    """``GroupOutput.attention`` as ``float32 [B, K, h, w]`` on the CPU (ConfigError if the head has none)."""
    if output.attention is None:
        raise ConfigError("this model's head has no spatial attention maps (gap/multi_linear/channel heads); "
                          "use an attentive or gate head")
    return output.attention.detach().float().cpu().numpy()


# --------------------------------------------------------------------------- the inference loop
@dataclass
class Outputs:
    """Every batch's :class:`~dgml_viz.model.output.GroupOutput`, concatenated, float32 on the CPU.

    Attributes:
        embedding: ``[N, K*d]``; groups: ``[N, K, d]``; attention: ``[N, K, h, w]`` or None.
        extras: the batch fields asked for (e.g. ``label [N]``, ``part_masks [N, P, H, W]``),
            concatenated as they came; a field no batch had is absent.
    """

    embedding: Tensor
    groups: Tensor
    attention: Tensor | None
    extras: dict[str, Tensor] = field(default_factory=dict)


def autocast(device: torch.device, enabled: bool) -> Any:
    """bf16 autocast on CUDA when ``enabled``; a no-op context elsewhere (CPU runs stay float32)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def batched(x: Tensor, batch_size: int) -> Iterator[Tensor]:
    """``[N, ...]`` in chunks of ``batch_size`` along the first axis."""
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size]


def infer(model: nn.Module, batches: Iterable[Tensor | Mapping[str, Any]], *, extras: Sequence[str] = (),
          amp: bool = False, channels_last: bool = False, progress: bool = False, desc: str = "embed") -> Outputs:
    """The one inference loop: forward every batch, keep the outputs float32 on the CPU.

    Args:
        model: a grouping network (or a DDP/DataParallel wrapper of one); put in eval mode for the
            loop and restored to its training flag afterwards.
        batches: ``[B, 3, H, W]`` tensors, or dicts with ``image`` ``[B, 3, H, W]`` and other fields
            (a collated dataset batch).
        extras: dict fields to keep and concatenate (``label``, ``part_masks``, ...).
        amp: bf16 autocast on CUDA (see :func:`autocast`).
        channels_last: channels-last images on CUDA.
        progress: show a tqdm bar.

    Each batch moves to the model's device (non-blocking); runs under ``torch.inference_mode``.

    Example:
        >>> from dgml_viz.model import create_model
        >>> model = create_model("small_cnn", groups=3, dim=48, width=8)
        >>> out = infer(model, batched(torch.randn(5, 3, 32, 32), 2))
        >>> tuple(out.groups.shape), tuple(out.attention.shape)
        ((5, 3, 16), (5, 3, 4, 4))
    """
    from tqdm.auto import tqdm

    net = getattr(model, "module", model)
    device = model_device(net)
    was_training = net.training
    net.eval()
    embs: list[Tensor] = []
    groups: list[Tensor] = []
    atts: list[Tensor] = []
    kept: dict[str, list[Tensor]] = {k: [] for k in extras}
    try:
        with torch.inference_mode():
            for batch in tqdm(batches, desc=desc, leave=False, disable=None if progress else True):
                images = batch if isinstance(batch, Tensor) else batch["image"]
                images = images.to(device, non_blocking=True)
                if channels_last and device.type == "cuda":
                    images = images.contiguous(memory_format=torch.channels_last)
                with autocast(device, amp):
                    out = model(images)
                embs.append(out.embedding.float().cpu())
                groups.append(out.groups.float().cpu())
                if out.attention is not None:
                    atts.append(out.attention.float().cpu())
                if not isinstance(batch, Tensor):
                    for key in extras:
                        if key in batch:
                            kept[key].append(torch.as_tensor(batch[key]).cpu())
    finally:
        net.train(was_training)
    if not embs:
        raise ValueError("no images to run the model on")
    return Outputs(torch.cat(embs), torch.cat(groups), torch.cat(atts) if atts else None,
                   {k: torch.cat(v) for k, v in kept.items() if v})


__all__ = ["prepare_image", "run_batch", "attention_maps", "model_device", "infer", "Outputs", "batched",
           "autocast"]
