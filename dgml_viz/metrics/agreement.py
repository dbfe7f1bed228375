"""Does an attribution (:mod:`dgml_viz.explain`) agree with the attention? Spearman rank correlation
of the two maps.

The attention ``[h, w]`` lives on the feature grid; it is first brought onto the
attribution's pixels with :func:`dgml_viz.metrics.localisation.upsample_attention`
(the bilinear upsampling the pointing game and the deletion curves use).

Example:
    >>> att = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    >>> rank_correlation(att, np.arange(16.0).reshape(4, 4), absolute=False) > 0.9
    True
"""
from __future__ import annotations

import numpy as np
import torch

from dgml_viz.metrics.localisation import upsample_attention


def rank_correlation(attention: np.ndarray, attribution: np.ndarray, absolute: bool = True) -> float:
    """Spearman correlation between the upsampled ``[h, w]`` attention and an ``[H, W]`` attribution.

    ``absolute`` compares against ``|attribution|`` (signed IG maps count evidence both ways).
    Returns NaN for constant maps.
    """
    from scipy.stats import spearmanr  # scipy.stats is slow to import; only this function needs it

    att = torch.as_tensor(np.asarray(attention, dtype=np.float32))[None, None]
    up = upsample_attention(att, tuple(attribution.shape[-2:]))[0, 0].numpy()
    attr = np.abs(attribution) if absolute else attribution
    if np.ptp(up) == 0 or np.ptp(attr) == 0:
        return float("nan")
    return float(spearmanr(up.ravel(), attr.ravel()).statistic)


__all__ = ["rank_correlation"]
