"""The eval transform of a checkpoint, applied to a decoded image, recording its geometry.

A checkpoint's ``transform`` dict is ``{"size": S, "resize": R, "mean": [3],
"std": [3], "mode": "center_crop" | "full"}``:

* ``center_crop`` — resize the shorter side to ``R`` (the longer side to
  ``int(R * long / short)``), then center-crop ``S x S``; exactly
  torchvision's ``Resize(R)`` + ``CenterCrop(S)`` on a PIL image (including its
  zero padding when ``R < S``);
* ``full`` — resize the whole image to ``S x S`` (aspect not kept, nothing cut).

:class:`Geometry` records how the ``S x S`` tensor relates to the original
pixels, so maps computed on the tensor can be laid back on the original image
(:mod:`dgml_viz.render.geometry`). It is plain data (no torch), picklable and
JSON-able via :meth:`Geometry.to_dict`.

Example:
    >>> img = np.zeros((300, 500, 3), np.uint8)
    >>> x, geo = eval_transform(img, {"size": 224, "resize": 256, "mean": [0.5] * 3, "std": [0.5] * 3})
    >>> tuple(x.shape), geo.resized, geo.crop
    ((3, 224, 224), (426, 256), (101, 16))
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from dgml_viz.validation import check_transform


MODES = ("center_crop", "full")
#: ImageNet normalisation statistics (the one definition; recipes and checkpoints default to it)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Geometry:
    """How the model's ``size x size`` input relates to the original image.

    The original ``W x H`` image is resized to ``resized = (rw, rh)``; the tensor
    is the window ``[crop_x, crop_x + size) x [crop_y, crop_y + size)`` of the
    resized image (negative offsets / windows past the edge are zero padding).
    Continuous pixel coordinates (pixel ``i`` covers ``[i, i+1)``):

        x_tensor = x_orig * rw / W - crop_x        y_tensor = y_orig * rh / H - crop_y
    """

    original: tuple[int, int]  # (W, H)
    resized: tuple[int, int]  # (rw, rh); fractional for a training crop
    crop: tuple[int, int]  # (crop_x, crop_y) of the window's top-left in the resized image
    size: int  # S, the square tensor side
    mode: str = "center_crop"
    flipped: bool = False  # mirrored left-right after the crop (training augmentation)

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy)``: resized pixels per original pixel."""
        return self.resized[0] / self.original[0], self.resized[1] / self.original[1]

    def to_tensor_coords(self, xy: np.ndarray) -> np.ndarray:
        """``[N, 2]`` continuous original ``(x, y)`` -> tensor ``(x, y)``."""
        xy = np.asarray(xy, dtype=np.float64)
        sx, sy = self.scale
        return np.stack([xy[:, 0] * sx - self.crop[0], xy[:, 1] * sy - self.crop[1]], axis=1)

    def to_original_coords(self, xy: np.ndarray) -> np.ndarray:
        """``[N, 2]`` continuous tensor ``(x, y)`` -> original ``(x, y)`` (inverse of :meth:`to_tensor_coords`)."""
        xy = np.asarray(xy, dtype=np.float64)
        sx, sy = self.scale
        return np.stack([(xy[:, 0] + self.crop[0]) / sx, (xy[:, 1] + self.crop[1]) / sy], axis=1)

    def visible_box(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` in original pixels of the region the model saw (clipped to the image)."""
        (x0, y0), (x1, y1) = self.to_original_coords(np.array([[0.0, 0.0], [self.size, self.size]]))
        w, h = self.original
        return max(0.0, x0), max(0.0, y0), min(float(w), x1), min(float(h), y1)

    def map_points(self, xy: Tensor) -> Tensor:
        """``[N, 2]`` original pixel ``(x, y)`` -> ``float32 [N, 2]`` tensor coordinates (flip applied)."""
        out = torch.from_numpy(self.to_tensor_coords(xy.double().numpy())).to(torch.float32)
        if self.flipped:
            out[:, 0] = self.size - out[:, 0]
        return out

    def inside(self, xy: Tensor) -> Tensor:
        """``[N]`` bool: tensor coordinates ``xy`` (from :meth:`map_points`) that fall inside the tensor."""
        return (xy[:, 0] >= 0) & (xy[:, 0] < self.size) & (xy[:, 1] >= 0) & (xy[:, 1] < self.size)

    def map_box(self, box_xyxy: Tensor) -> Tensor:
        """``[4]`` original ``(x0, y0, x1, y1)`` -> tensor ``(x0, y0, x1, y1)``, clipped to the tensor."""
        corners = self.map_points(box_xyxy.view(2, 2))
        lo = corners.min(0).values.clamp(0, self.size)
        hi = corners.max(0).values.clamp(0, self.size)
        return torch.cat([lo, hi])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (inverse: :meth:`from_dict`)."""
        return {"original": list(self.original), "resized": list(self.resized), "crop": list(self.crop),
                "size": self.size, "mode": self.mode, "flipped": self.flipped}  # dataclasses.asdict's order, 10x faster

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Geometry":
        return cls(tuple(d["original"]), tuple(d["resized"]), tuple(d["crop"]), int(d["size"]),  # type: ignore[arg-type]
                   str(d.get("mode", "center_crop")), bool(d.get("flipped", False)))


def compute_geometry(width: int, height: int, transform: Mapping[str, Any]) -> Geometry:
    """The :class:`Geometry` of ``transform`` applied to a ``width x height`` image.

    Sizes follow torchvision exactly: ``Resize(R)`` sets the shorter side to
    ``R`` and the longer to ``int(R * long / short)``; ``CenterCrop(S)`` puts the
    window at ``round((dim - S) / 2)`` (or pads by ``(S - dim) // 2`` first).
    """
    t = check_transform(transform)
    s = t["size"]
    if t["mode"] == "full":
        return Geometry((width, height), (s, s), (0, 0), s, "full")
    r = t["resize"]
    if width <= height:
        rw, rh = r, int(r * height / width)
    else:
        rw, rh = int(r * width / height), r
    return Geometry((width, height), (rw, rh), (_crop_offset(rw, s), _crop_offset(rh, s)), s, "center_crop")


def _crop_offset(dim: int, size: int) -> int:
    if dim >= size:
        return int(round((dim - size) / 2.0))
    return -((size - dim) // 2)  # torchvision pads (size - dim) // 2 on the left/top


#: PIL filters of the transform's ``interpolation`` (torchvision/timm names; antialiased like theirs)
INTERPOLATIONS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


def resize_and_crop(image: np.ndarray, geometry: Geometry, interpolation: str = "bilinear") -> np.ndarray:
    """Apply ``geometry`` to ``uint8 [H, W, 3]``: PIL resize (antialiased ``interpolation``), crop/pad -> ``[S, S, 3]``.

    An image that already is the ``S x S`` window (no resize, no crop) is returned as it is (a view, not a copy)."""
    w, h = geometry.original
    if image.shape[:2] != (h, w):
        raise ValueError(f"image is {image.shape[1]}x{image.shape[0]}, geometry expects {w}x{h}")
    if geometry.resized == (w, h) and geometry.crop == (0, 0) and geometry.size == w == h:
        return image
    pil = Image.fromarray(image)
    if geometry.resized != (w, h):
        pil = pil.resize(geometry.resized, INTERPOLATIONS[interpolation])
    cx, cy = geometry.crop
    s = geometry.size
    # outside the resized image PIL fills zeros, exactly like torchvision's CenterCrop padding
    return np.asarray(pil.crop((cx, cy, cx + s, cy + s)))


def normalise(crop: np.ndarray, mean: Any, std: Any, channel_order: str = "RGB") -> Tensor:
    """``uint8 [S, S, 3]`` RGB -> normalised float tensor ``[3, S, S]`` (``(x / 255 - mean) / std``).

    ``channel_order="BGR"`` reverses the channels first (mean/std are then in B, G, R order),
    for networks trained on OpenCV-style input such as the reference's BN-Inception.
    """
    import cv2

    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"expected uint8 [S, S, 3], got {crop.dtype} {crop.shape}")
    lut = _normalise_lut(tuple(float(v) for v in mean), tuple(float(v) for v in std))
    planes = cv2.split(np.ascontiguousarray(crop))
    if channel_order == "BGR":
        planes = planes[::-1]
    out = np.empty((3, *crop.shape[:2]), np.float32)
    for c in range(3):  # one table look-up per pixel: the same float32 values as computing them
        cv2.LUT(planes[c], lut[c], dst=out[c])
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=16)
def _normalise_lut(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``float32 [3, 256]``: ``(v - 255 mean) / (255 std)`` for every byte ``v``, computed in float32 exactly
    as :func:`normalise` defines it (``uint8 -> float32``, subtract, divide), read-only."""
    m = np.asarray(mean, dtype=np.float32) * 255.0
    sd = np.asarray(std, dtype=np.float32) * 255.0
    lut = (np.arange(256, dtype=np.float32)[None, :] - m[:, None]) / sd[:, None]
    lut.setflags(write=False)
    return lut


def denormalise(x: Tensor, transform: Mapping[str, Any]) -> np.ndarray:
    """Inverse of :func:`normalise`: ``[3, S, S]`` (or ``[1, 3, S, S]``) model input -> ``uint8 [S, S, 3]`` RGB.

    >>> crop = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    >>> t = {"mean": [0.2, 0.4, 0.6], "std": [0.3, 0.2, 0.1], "channel_order": "BGR"}
    >>> bool((denormalise(normalise(crop, t["mean"], t["std"], "BGR"), t) == crop).all())
    True
    """
    x = x.detach().reshape(-1, *x.shape[-2:])[:3].float().cpu()
    mean = torch.tensor(list(transform["mean"]), dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(list(transform["std"]), dtype=torch.float32).view(3, 1, 1)
    out = ((x * std + mean) * 255.0).clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if transform.get("channel_order", "RGB") == "BGR":
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def apply_transform(image: np.ndarray, geometry: Geometry, transform: Mapping[str, Any]) -> Tensor:
    """``uint8 [H, W, 3]`` RGB and its :class:`Geometry` -> the model's ``float32 [3, S, S]`` input
    (resize, crop, channel order and normalisation of a checked ``transform``)."""
    crop = resize_and_crop(image, geometry, transform.get("interpolation", "bilinear"))
    return normalise(crop, transform["mean"], transform["std"], transform.get("channel_order", "RGB"))


def eval_transform(image: np.ndarray, transform: Mapping[str, Any]) -> tuple[Tensor, Geometry]:
    """``uint8 [H, W, 3]`` RGB -> (normalised ``[3, S, S]`` float tensor, :class:`Geometry`).

    The input array is not modified.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    t = check_transform(transform)
    geo = compute_geometry(image.shape[1], image.shape[0], t)
    return apply_transform(image, geo, t), geo


class EvalTransform:
    """The eval transform as a dataset transform: ``PIL image -> [3, S, S]`` through :func:`eval_transform`.

    The same code path (and so the same tensor, to the bit) as heatmaps, gallery and
    the app; :meth:`apply` also returns the :class:`Geometry`, so datasets can move
    keypoints and boxes with the pixels.

    Example:
        >>> t = EvalTransform(size=224, resize=256)
        >>> t(Image.new("RGB", (500, 300))).shape
        torch.Size([3, 224, 224])
    """

    def __init__(self, size: int = 224, resize: int | None = 256, mean: Any = IMAGENET_MEAN,
                 std: Any = IMAGENET_STD, mode: str = "center_crop") -> None:
        self.transform = check_transform({"size": size, "resize": resize, "mean": list(mean), "std": list(std),
                                          "mode": mode})

    @classmethod
    def from_dict(cls, transform: Mapping[str, Any]) -> "EvalTransform":
        """From a checkpoint's ``transform`` dict (``model.transform``)."""
        t = check_transform(transform)
        return cls(t["size"], t["resize"], t["mean"], t["std"], t["mode"])

    def as_dict(self) -> dict[str, Any]:
        """The checkpoint ``transform`` dict describing this transform."""
        return dict(self.transform)

    def apply(self, img: Image.Image) -> tuple[Tensor, Geometry]:
        """``PIL image -> (float32 [3, S, S] tensor, Geometry)``."""
        return eval_transform(np.asarray(img.convert("RGB")), self.transform)

    def __call__(self, img: Image.Image) -> Tensor:
        return self.apply(img)[0]


__all__ = ["Geometry", "EvalTransform", "IMAGENET_MEAN", "IMAGENET_STD", "eval_transform", "compute_geometry", "resize_and_crop", "normalise", "denormalise", "apply_transform",
           "MODES"]
