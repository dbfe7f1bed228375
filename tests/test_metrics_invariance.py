"""dgml_viz.metrics.invariance: certificates on the attentive head and a positional head."""
from __future__ import annotations

import torch
from torch import nn

from dgml_viz.metrics.invariance import permutation_certificate, shift_images, translation_curve
from dgml_viz.model import create_model
from dgml_viz.model.heads import AttentiveHead


def test_attentive_head_is_permutation_invariant() -> None:
    head = AttentiveHead(16, groups=3, dim=24).eval()
    feats = torch.randn(4, 16, 5, 6)
    cert = permutation_certificate(head, feats, num_permutations=6)
    assert cert["max_abs_delta"] < 1e-5
    assert cert["attention_max_abs_delta"] < 1e-6
    assert len(cert["per_group"]) == 3


def test_positional_head_is_not() -> None:
    class ConvThenAttend(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 16, 3, padding=1)
            self.att = AttentiveHead(16, groups=2, dim=16)

        def forward(self, x):
            return self.att(self.conv(x))

    cert = permutation_certificate(ConvThenAttend().eval(), torch.randn(3, 16, 5, 5), num_permutations=4)
    assert cert["max_abs_delta"] > 1e-2


def test_shift_images_modes() -> None:
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float).view(2, 3, 4, 6)
    assert torch.equal(shift_images(x, 2, "wrap"), torch.roll(x, 2, -1))
    p = shift_images(x, 2, "pad")
    assert torch.equal(p[..., 2:], x[..., :-2]) and torch.equal(p[..., :2], torch.zeros(2, 3, 4, 2))
    n = shift_images(x, -1, "pad", axis="y")
    assert torch.equal(n[..., :-1, :], x[..., 1:, :]) and (n[..., -1, :] == 0).all()
    assert torch.equal(shift_images(x, 0, "pad", "xy"), x)


def test_translation_wrap_exact_with_circular_backbone() -> None:
    model = create_model("small_cnn", groups=3, dim=24, width=8).eval()
    for m in model.backbone.modules():
        if isinstance(m, nn.Conv2d):
            m.padding_mode = "circular"
    images = torch.randn(3, 3, 32, 32)
    res = translation_curve(model, images, shifts=[0, 8, 16, 3], mode="wrap")
    gc = torch.tensor(res["group_cosine"])
    assert torch.allclose(gc[:3], torch.ones(3, 3), atol=1e-5)  # multiples of the stride: exact
    assert gc[3].min() < 1 - 1e-4  # off-grid shift: only approximately invariant
    padded = translation_curve(model, images, shifts=[0, 12], mode="pad")
    assert abs(padded["embedding_cosine"][0] - 1) < 1e-5 and padded["embedding_cosine"][1] < 0.9999
    assert padded["raw"].shape == (3, 2, 3)
