"""dgml_viz.metrics.faithfulness: known-answer deletion/insertion, batched == loop."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from dgml_viz.metrics import faithfulness as F
from dgml_viz.model.output import GroupOutput, assemble


class RegionModel(nn.Module):
    """Embedding = the raw pixels of the top-left ``r x r`` region (K groups = the same vector)."""

    def __init__(self, r: int = 8, k: int = 2) -> None:
        super().__init__()
        self.r, self.k = r, k

    def forward(self, x: Tensor) -> GroupOutput:
        v = x[:, :, : self.r, : self.r].flatten(1)
        return assemble(v[:, None, :].expand(-1, self.k, -1).contiguous())


def test_pixel_ranks_is_a_permutation_with_argmax_first() -> None:
    s = torch.rand(2, 3, 5, 7)
    r = F.pixel_ranks(s)
    assert torch.equal(r.sort(-1).values, torch.arange(35).expand(2, 3, 35))
    assert torch.equal(r.gather(-1, s.flatten(-2).argmax(-1, keepdim=True)), torch.zeros(2, 3, 1, dtype=torch.long))


def test_attention_on_the_used_region_beats_random() -> None:
    torch.manual_seed(0)
    model = RegionModel(r=8, k=2)
    images = torch.randn(4, 3, 16, 16)
    region = torch.zeros(4, 2, 16, 16)
    region[..., :8, :8] = 1.0
    region += 1e-3 * torch.rand_like(region)  # distinct ranks inside and outside
    kw = dict(steps=8, baseline="mean")
    good = F.faithfulness_curves(model, images, region, **kw)
    rand = F.faithfulness_curves(model, images, F.random_saliency(4, (16, 16), seed=1), **kw)
    # deleting the 64 region pixels (25 % of the image) first kills the similarity by t = 0.25
    assert torch.allclose(good["deletion"][..., 0], torch.ones(4, 2), atol=1e-5)
    assert good["deletion"][..., 2:].abs().max() < 0.2  # t >= 0.25: region is at the mean
    assert (good["deletion_auc"] < rand["deletion_auc"] - 0.3).all()
    assert (good["insertion_auc"] > rand["insertion_auc"] + 0.15).all()  # ~0.9 vs ~2/3
    # random deletion ~ sqrt(1 - t): AUC ~ 2/3
    assert rand["deletion_auc"].mean().item() == pytest.approx(2 / 3, abs=0.1)


def test_batched_equals_loop_and_batch_size_invariant() -> None:
    torch.manual_seed(0)
    from dgml_viz.model import create_model

    model = create_model("small_cnn", groups=3, dim=24, width=8).eval()
    images = torch.randn(2, 3, 32, 32)
    sal = torch.rand(2, 3, 32, 32)
    a = F.perturbation_scores(model, images, sal, steps=4, baseline="blur", batch_size=5)
    b = F.perturbation_scores(model, images, sal, steps=4, baseline="blur", batch_size=1000)
    assert torch.allclose(a["deletion"], b["deletion"], atol=1e-5)
    assert torch.allclose(a["insertion"], b["insertion"], atol=1e-5)
    base = F.make_baseline(images, "blur")
    ref = model(images).groups.detach()
    ranks = F.pixel_ranks(sal)
    with torch.no_grad():
        for n in range(2):
            for s in range(3):
                for t in range(1, 4):
                    k = round(t / 4 * 32 * 32)
                    drop = (ranks[n, s] < k).view(1, 32, 32)
                    x_del = torch.where(drop, base[n], images[n])[None]
                    x_ins = torch.where(drop, images[n], base[n])[None]
                    d = (model(x_del).groups[0] * ref[n]).sum(-1)
                    i = (model(x_ins).groups[0] * ref[n]).sum(-1)
                    assert torch.allclose(a["deletion"][n, s, t], d, atol=1e-5)
                    assert torch.allclose(a["insertion"][n, s, t], i, atol=1e-5)
    # endpoints: clean == 1, baseline shared by deletion end and insertion start
    assert torch.allclose(a["deletion"][:, :, 0], torch.ones(2, 3, 3), atol=1e-5)
    assert torch.equal(a["deletion"][:, :, -1], a["insertion"][:, :, 0])


def test_own_group_selection_and_auc() -> None:
    scores = torch.arange(2 * 3 * 5 * 3, dtype=torch.float).view(2, 3, 5, 3)
    own = F.own_group_curves(scores)
    assert own.shape == (2, 3, 5)
    assert torch.equal(own[1, 2], scores[1, 2, :, 2])
    shared = F.own_group_curves(scores[:, :1])
    assert torch.equal(shared[0, 1], scores[0, 0, :, 1])
    flat = F.curve_auc(torch.ones(3, 5), F.step_fractions(4))
    assert torch.allclose(flat, torch.ones(3))


def test_baselines() -> None:
    x = torch.randn(2, 3, 20, 20)
    m = F.make_baseline(x, "mean")
    assert torch.allclose(m[:, :, 3, 4], x.mean((-2, -1)))
    blur = F.make_baseline(x, "blur")
    assert blur.shape == x.shape and blur.std() < x.std()
    assert torch.allclose(blur.mean((-2, -1)), x.mean((-2, -1)), atol=0.1)
    with pytest.raises(ValueError):
        F.make_baseline(x, "zeros?")


def test_gaussian_blur_matches_torchvision() -> None:
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    x = torch.randn(2, 3, 24, 20)
    ours = F.gaussian_blur(x, 1.5)
    theirs = tv_blur(x, kernel_size=[11, 11], sigma=[1.5, 1.5])  # 2*ceil(4.5)+1 = 11
    assert torch.allclose(ours, theirs, atol=1e-5)
