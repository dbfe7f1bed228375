"""Image transforms for training and evaluation that remember their geometry.

Both transforms map a PIL image to a normalised ``[3, S, S]`` float tensor and,
through :meth:`apply`, also return the :class:`Geometry` that maps original
pixel coordinates to tensor pixel coordinates, so datasets can move keypoints
and boxes with the pixels.

* :class:`EvalTransform` — ``mode="center_crop"``: resize the shorter side to
  ``resize`` then center-crop ``size`` (reference test transform 256 -> 224);
  ``mode="full"``: resize the whole image to ``size x size``.
* :class:`TrainTransform` — RandomResizedCrop ``size`` (scale range ``scale``)
  + horizontal flip (reference training transform).

Randomness comes from torch's global RNG (so a restored RNG state replays it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Geometry:
    """Affine map original pixel ``(x, y)`` -> tensor pixel ``(x', y')``.

    ``x' = x * scale_x - offset_x`` (then ``x' = out_width - x'`` if ``flipped``),
    ``y' = y * scale_y - offset_y``.
    """

    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float
    out_width: int
    out_height: int
    flipped: bool = False

    def map_points(self, xy: Tensor) -> Tensor:
        """``[N, 2]`` original (x, y) -> ``[N, 2]`` tensor coordinates (float)."""
        xy = xy.to(torch.float32)
        x = xy[:, 0] * self.scale_x - self.offset_x
        y = xy[:, 1] * self.scale_y - self.offset_y
        if self.flipped:
            x = self.out_width - x
        return torch.stack([x, y], dim=1)

    def inside(self, xy: Tensor) -> Tensor:
        """``[N]`` bool: mapped points that fall inside the output tensor."""
        return (xy[:, 0] >= 0) & (xy[:, 0] < self.out_width) & (xy[:, 1] >= 0) & (xy[:, 1] < self.out_height)

    def map_box(self, box_xyxy: Tensor) -> Tensor:
        """``[4]`` original ``(x0, y0, x1, y1)`` -> tensor ``(x0, y0, x1, y1)``, clipped to the tensor."""
        corners = self.map_points(box_xyxy.view(2, 2))
        lo = corners.min(0).values
        hi = corners.max(0).values
        lo = torch.stack([lo[0].clamp(0, self.out_width), lo[1].clamp(0, self.out_height)])
        hi = torch.stack([hi[0].clamp(0, self.out_width), hi[1].clamp(0, self.out_height)])
        return torch.cat([lo, hi])


def _to_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    return TF.normalize(TF.to_tensor(img.convert("RGB")), list(mean), list(std))


class EvalTransform:
    """Deterministic test transform (see module docstring).

    Example:
        >>> t = EvalTransform(size=224, resize=256)
        >>> t(Image.new("RGB", (500, 300))).shape
        torch.Size([3, 224, 224])
    """

    def __init__(self, size: int = 224, resize: int = 256, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, mode: str = "center_crop") -> None:
        if mode not in ("center_crop", "full"):
            raise ValueError(f"mode must be 'center_crop' or 'full', got {mode!r}")
        self.size, self.resize, self.mode = int(size), int(resize), mode
        self.mean, self.std = list(mean), list(std)

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint ``transform`` dict describing this transform."""
        return {"size": self.size, "resize": self.resize, "mean": self.mean, "std": self.std, "mode": self.mode}

    def apply(self, img: Image.Image) -> tuple[Tensor, Geometry]:
        """``PIL image -> ([3, size, size] tensor, Geometry)``."""
        w, h = img.size
        s = self.size
        if self.mode == "full":
            out = img.convert("RGB").resize((s, s), Image.BILINEAR)
            geo = Geometry(s / w, s / h, 0.0, 0.0, s, s)
            return _to_tensor(out, self.mean, self.std), geo
        scale = self.resize / min(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = img.convert("RGB").resize((nw, nh), Image.BILINEAR)
        left, top = int(round((nw - s) / 2.0)), int(round((nh - s) / 2.0))
        out = resized.crop((left, top, left + s, top + s))
        geo = Geometry(nw / w, nh / h, float(left), float(top), s, s)
        return _to_tensor(out, self.mean, self.std), geo

    def __call__(self, img: Image.Image) -> Tensor:
        return self.apply(img)[0]


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
        sx, sy = s / cw, s / ch
        geo = Geometry(sx, sy, left * sx, top * sy, s, s, flipped)
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
