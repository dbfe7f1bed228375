"""The training transform, and the pair a recipe's ``data`` section builds.

* :class:`TrainTransform` — RandomResizedCrop ``size`` (scale range ``scale``)
  + horizontal flip (reference training transform); :meth:`TrainTransform.apply`
  also returns the :class:`~dgml_viz.data.transforms.Geometry` of the crop (and
  flip), so datasets can move keypoints and boxes with the pixels.
* the eval side is :class:`~dgml_viz.data.transforms.EvalTransform`, the one eval
  transform of every path (re-exported here).

Randomness comes from torch's global RNG (so a restored RNG state replays it).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dgml_viz.data.transforms import IMAGENET_MEAN, IMAGENET_STD, EvalTransform, Geometry, normalise

def _to_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    return normalise(np.asarray(img.convert("RGB")), mean, std)


class TrainTransform:
    """RandomResizedCrop(size, scale, ratio 3/4..4/3) + horizontal flip (p=0.5) + normalise."""

    def __init__(self, size: int = 224, scale: Sequence[float] = (0.08, 1.0), flip: bool = True,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (3.0 / 4.0, 4.0 / 3.0)
        self.flip = flip
        self.mean, self.std = list(mean), list(std)

    def _params(self, w: int, h: int) -> tuple[int, int, int, int]:
        """(top, left, height, width) as torchvision's RandomResizedCrop draws them."""
        area = w * h
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * torch.empty(1).uniform_(*self.scale).item()
            ratio = math.exp(torch.empty(1).uniform_(*log_ratio).item())
            cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, (1,)).item())
                left = int(torch.randint(0, w - cw + 1, (1,)).item())
                return top, left, ch, cw
        in_ratio = w / h  # fallback: central crop
        if in_ratio < self.ratio[0]:
            cw, ch = w, int(round(w / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            ch, cw = h, int(round(h * self.ratio[1]))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def apply(self, img: Image.Image) -> tuple[Tensor, Geometry]:
        """``PIL image -> ([3, size, size] tensor, Geometry)``."""
        img = img.convert("RGB")
        w, h = img.size
        top, left, ch, cw = self._params(w, h)
        s = self.size
        out = TF.resized_crop(img, top, left, ch, cw, [s, s], interpolation=InterpolationMode.BILINEAR)
        flipped = bool(self.flip and torch.rand(1).item() < 0.5)
        if flipped:
            out = TF.hflip(out)
        sx, sy = s / cw, s / ch  # the crop window, as a window of the image resized by (sx, sy)
        geo = Geometry((w, h), (w * sx, h * sy), (left * sx, top * sy), s, "center_crop", flipped)  # type: ignore[arg-type]
        return _to_tensor(out, self.mean, self.std), geo

    def __call__(self, img: Image.Image) -> Tensor:
        return self.apply(img)[0]


def build_transforms(data_cfg: dict[str, Any]) -> tuple[TrainTransform, EvalTransform]:
    """Train and eval transforms from a recipe's ``data`` section.

    Keys used: ``size``, ``resize``, ``mean``, ``std``, ``mode`` (eval),
    ``crop_scale`` ([min, max] of RandomResizedCrop), ``flip``.
    """
    mean = data_cfg.get("mean") or IMAGENET_MEAN
    std = data_cfg.get("std") or IMAGENET_STD
    size = int(data_cfg.get("size", 224))
    resize = int(data_cfg.get("resize") or size)
    train = TrainTransform(size, scale=data_cfg.get("crop_scale") or (0.08, 1.0),
                           flip=bool(data_cfg.get("flip", True)), mean=mean, std=std)
    evalt = EvalTransform(size, resize, mean=mean, std=std, mode=data_cfg.get("mode") or "center_crop")
    return train, evalt


__all__ = ["Geometry", "EvalTransform", "TrainTransform", "build_transforms", "IMAGENET_MEAN", "IMAGENET_STD"]
