"""dgml_viz.metrics.keypoints on constructed peaks."""
from __future__ import annotations

import math

import pytest
import torch

from dgml_viz.metrics.keypoints import keypoint_report, nearest_keypoint


def _peak_maps(cells: list[list[tuple[int, int]]], h: int = 4, w: int = 4) -> torch.Tensor:
    """One-hot-ish maps [N, K, h, w] with the peak at the given (row, col) cells."""
    n, k = len(cells), len(cells[0])
    a = torch.full((n, k, h, w), 0.01)
    for i, row in enumerate(cells):
        for g, (r, c) in enumerate(row):
            a[i, g, r, c] = 1.0
    return a / a.sum((-2, -1), keepdim=True)


def test_nearest_respects_visibility() -> None:
    peaks = torch.tensor([[[0.0, 0.0]]])
    kp = torch.tensor([[[1.0, 1.0, 0.0], [5.0, 5.0, 1.0]]])
    idx, d = nearest_keypoint(peaks, kp)
    assert idx.item() == 1 and d.item() == pytest.approx(math.hypot(5, 5))
    idx, d = nearest_keypoint(peaks, torch.zeros(1, 2, 3))
    assert idx.item() == -1 and math.isinf(d.item())


def test_purity_distribution_and_distance() -> None:
    # 16x16 image, 4x4 map: cell (r, c) upsamples to a peak near pixel centre (4r+1.5.., 4c+1.5..)
    size = (16, 16)
    # keypoints: 0 top-left, 1 bottom-right, 2 invisible
    kp = torch.tensor([[2.0, 2.0, 1.0], [14.0, 14.0, 1.0], [8.0, 8.0, 0.0]]).expand(4, 3, 3).clone()
    # group 0 always near kp0; group 1 near kp1 three times, near kp0 once
    cells = [[(0, 0), (3, 3)], [(0, 0), (3, 3)], [(0, 0), (3, 3)], [(0, 0), (0, 0)]]
    rep = keypoint_report(_peak_maps(cells), kp, size, bboxes=torch.tensor([[0.0, 0.0, 16.0, 16.0]] * 4))
    assert rep["distribution"][0] == pytest.approx([1.0, 0.0, 0.0])
    assert rep["distribution"][1] == pytest.approx([0.25, 0.75, 0.0])
    assert rep["purity"] == pytest.approx([1.0, 0.75])
    assert rep["dominant"] == [0, 1]
    assert rep["num_images"] == 4
    # distances are small for the always-right group; larger for group 1 (one far miss)
    assert rep["distance"][0] < 0.1
    assert rep["distance"][1] > rep["distance"][0]


def test_invisible_dominant_not_counted() -> None:
    size = (16, 16)
    kp = torch.tensor([[2.0, 2.0, 1.0], [14.0, 14.0, 1.0]]).expand(2, 2, 3).clone()
    kp[1, 0, 2] = 0.0  # kp0 hidden in image 1
    cells = [[(0, 0)], [(0, 0)]]
    rep = keypoint_report(_peak_maps(cells), kp, size)
    # image 1's peak is nearest to the only visible keypoint (1) -> distribution half/half
    assert rep["distribution"][0] == pytest.approx([0.5, 0.5])
    assert rep["purity"][0] == pytest.approx(0.5)
    # distance only over images where the dominant keypoint is visible
    d = rep["per_image"]["distance_to_dominant"]
    assert math.isnan(d[1][0]) and not math.isnan(d[0][0])
