"""Localisation against keypoints (CUB ``parts/part_locs.txt``): which part does each group point at?

For every image and group we take the peak of the bilinearly upsampled attention
map (:func:`dgml_viz.metrics.localisation.attention_peaks`, the pixel the
heatmap renderer shows as hottest) and find the nearest *visible* keypoint.
Per group we then report:

* ``distribution``: ``[P]`` fraction of images whose peak is nearest keypoint ``p``
  (over images with at least one visible keypoint);
* ``purity``: the largest entry of that distribution (1 = the group always
  points at the same part; ``1/P`` at best for a group that wanders);
* ``dominant``: the keypoint with that largest share;
* ``distance``: mean distance from the peak to the dominant keypoint divided by
  the diagonal of the object's box, over images where that keypoint is visible
  (boxes: ``[x0, y0, x1, y1]``; without boxes the image diagonal is used).

Coordinates: keypoints ``[N, P, 3]`` are ``(x, y, visible)`` in image-tensor
pixels (the dataset contract); peaks are ``(y, x)`` pixel indices, converted to
pixel centres ``(x + 0.5, y + 0.5)`` before measuring distances.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from dgml_viz.metrics.localisation import attention_peaks

logger = logging.getLogger(__name__)


def nearest_keypoint(peaks_xy: Tensor, keypoints: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest visible keypoint to every peak.

    Args:
        peaks_xy: ``[N, K, 2]`` float ``(x, y)`` peak positions in pixels.
        keypoints: ``[N, P, 3]`` ``(x, y, visible)``; ``visible <= 0`` are ignored.

    Returns:
        ``(index [N, K] long, distance [N, K] float)``; index ``-1`` and distance
        ``inf`` where an image has no visible keypoint.
    """
    d = torch.cdist(peaks_xy.double(), keypoints[..., :2].double())  # [N, K, P]
    visible = (keypoints[..., 2] > 0)[:, None, :]
    d = d.masked_fill(~visible, float("inf"))
    dist, idx = d.min(dim=-1)
    idx = idx.masked_fill(~visible.any(dim=-1), -1)
    return idx, dist.float()


def peak_positions(attention: Tensor, size: tuple[int, int]) -> Tensor:
    """Pixel centres ``(x, y)`` of the upsampled attention peaks: ``[N, K, h, w] -> [N, K, 2]`` float."""
    yx = attention_peaks(attention, size).float() + 0.5
    return yx.flip(-1)


def box_diagonal(bboxes: Tensor | None, n: int, size: tuple[int, int]) -> Tensor:
    """``[N]`` diagonal of each ``[x0, y0, x1, y1]`` box (image diagonal when ``bboxes`` is None)."""
    if bboxes is None:
        return torch.full((n,), float((size[0] ** 2 + size[1] ** 2) ** 0.5))
    b = bboxes.float()
    return torch.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]).clamp_min(1e-6)


def keypoint_report(attention: Tensor, keypoints: Tensor, size: tuple[int, int],
                    bboxes: Tensor | None = None, part_names: list[str] | None = None) -> dict[str, Any]:
    """Per-group keypoint distribution, purity and normalised peak distance.

    Args:
        attention: ``[N, K, h, w]`` attention maps.
        keypoints: ``[N, P, 3]`` ``(x, y, visible)`` in pixels of the ``size`` image.
        size: ``(H, W)`` of the image tensor.
        bboxes: ``[N, 4]`` object boxes or None.
        part_names: ``P`` names (default ``"0".."P-1"``).

    Returns:
        JSON-ready dict: ``distribution`` ``[K][P]``, ``purity`` ``[K]``, ``dominant`` ``[K]``,
        ``dominant_name`` ``[K]``, ``distance`` ``[K]`` (NaN if never visible),
        ``per_image`` (``nearest [N][K]``, ``distance_to_dominant [N][K]``, NaN where not
        counted), ``num_images`` (with a visible keypoint), ``part_names``.
    """
    n, k = attention.shape[:2]
    p = keypoints.shape[1]
    peaks = peak_positions(attention, size)
    idx, _ = nearest_keypoint(peaks, keypoints)
    counted = idx >= 0  # [N, K]
    onehot = torch.zeros(n, k, p).scatter(-1, idx.clamp_min(0)[..., None], 1.0) * counted[..., None]
    num = counted.sum(dim=0).clamp_min(1).float()  # [K]
    distribution = onehot.sum(dim=0) / num[:, None]  # [K, P]
    purity, dominant = distribution.max(dim=-1)
    dom_xy = keypoints[torch.arange(n)[:, None], dominant[None, :].expand(n, k)]  # [N, K, 3]
    dist = torch.hypot(peaks[..., 0] - dom_xy[..., 0], peaks[..., 1] - dom_xy[..., 1])
    dist = dist / box_diagonal(bboxes, n, size)[:, None]
    dist = dist.masked_fill(dom_xy[..., 2] <= 0, float("nan"))
    names = part_names if part_names is not None else [str(i) for i in range(p)]
    return {
        "distribution": distribution.tolist(),
        "purity": purity.tolist(),
        "dominant": dominant.tolist(),
        "dominant_name": [names[i] for i in dominant.tolist()],
        "distance": dist.nanmean(dim=0).tolist(),
        "per_image": {"nearest": idx.tolist(), "distance_to_dominant": dist.tolist()},
        "num_images": int(counted.any(dim=1).sum()),
        "part_names": list(names),
    }


__all__ = ["nearest_keypoint", "peak_positions", "box_diagonal", "keypoint_report"]
