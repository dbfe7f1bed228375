"""Small public helpers shared by the CLI and the app: image -> model input -> group maps.

Example:
    >>> model = load_checkpoint("checkpoints/demo.pt")                  # doctest: +SKIP
    >>> x, geo, img = prepare_image("photo.jpg", model.transform)       # doctest: +SKIP
    >>> out = run_batch(model, [x])                                      # doctest: +SKIP
    >>> maps = attention_maps(out)        # float32 [1, K, h, w]          # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

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


def run_batch(model: nn.Module, tensors: Tensor | Sequence[Tensor]) -> Any:
    """Forward ``[B, 3, S, S]`` (or a list of ``[3, S, S]``) under ``torch.inference_mode``.

    The batch is moved to the model's device; the returned ``GroupOutput`` is
    on that device. The model is expected to be in eval mode.
    """
    batch = tensors if isinstance(tensors, Tensor) else torch.stack(list(tensors))
    if batch.ndim != 4:
        raise ValueError(f"expected [B, 3, H, W], got shape {tuple(batch.shape)}")
    with torch.inference_mode():
        return model(batch.to(model_device(model), non_blocking=True))


def attention_maps(output: Any) -> np.ndarray:
    """``GroupOutput.attention`` as ``float32 [B, K, h, w]`` on the CPU (ConfigError if the head has none)."""
    if output.attention is None:
        raise ConfigError("this model's head has no spatial attention maps (gap/multi_linear/channel heads); "
                          "use an attentive or gate head")
    return output.attention.detach().float().cpu().numpy()


__all__ = ["prepare_image", "run_batch", "attention_maps", "model_device"]
