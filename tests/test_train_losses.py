"""Diversity loss == explicit pairwise loop; grouped loss == mean of per-group pml losses; param groups."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import losses as pml_losses

from dgml_viz.model import create_model
from dgml_viz.train.config import load_config
from dgml_viz.train.loop import build_param_groups
from dgml_viz.train.losses import GroupedMetricLoss, MetricSpec
from dgml_viz.train.terms import (STANDARD_TERMS, ConsistencyTerm, DiversityTerm, EntropyTerm, OverlapTerm,
                                  SpreadTerm, WeightSchedule, diversity_loss)


def diversity_loop(groups: torch.Tensor, alpha: float, beta: float, c: float) -> torch.Tensor:
    """DESIGN.md formula written as loops over pairs and images."""
    b, k, _ = groups.shape
    total = torch.zeros((), dtype=torch.float64)
    for i in range(k):
        for j in range(i + 1, k):
            per_image = []
            for x in range(b):
                fi, fj = groups[x, i].double(), groups[x, j].double()
                cos = (fi @ fj) / (fi.norm() * fj.norm())
                per_image.append(math.log(1 + math.exp(alpha * c * (cos.item() - beta))))
            total += sum(per_image) / b
    return total / (k - 1)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_diversity_equals_pairwise_loop(k: int) -> None:
    groups = F.normalize(torch.randn(6, k, 10), dim=-1)
    groups[0, 1] = groups[0, 0]  # a fully collapsed pair (cos = 1)
    for alpha, beta, c in ((2.0, 0.5, 25.0), (1.0, 0.2, 3.0)):
        ours = diversity_loss(groups, alpha, beta, c)
        assert ours.item() == pytest.approx(diversity_loop(groups, alpha, beta, c).item(), rel=1e-5)


def test_diversity_is_zero_for_one_group_and_differentiable() -> None:
    assert diversity_loss(torch.randn(4, 1, 8)).item() == 0.0
    g = torch.randn(4, 3, 8, requires_grad=True)
    diversity_loss(g).backward()
    assert g.grad is not None and torch.isfinite(g.grad).all()


def test_grouped_margin_loss_is_mean_of_per_group_pml_losses() -> None:
    torch.manual_seed(0)
    groups = F.normalize(torch.randn(16, 3, 8), dim=-1)
    labels = torch.arange(4).repeat_interleave(4)
    loss = GroupedMetricLoss(3, 4, terms=[DiversityTerm(0.5)])
    for lf in loss.losses:
        assert isinstance(lf, pml_losses.MarginLoss) and lf.beta.shape == (4,)
        assert lf.margin == 0.2 and lf.learn_beta and torch.allclose(lf.beta, torch.full((4,), 1.2))
    torch.manual_seed(1)
    out = loss(groups, labels)
    torch.manual_seed(1)  # same miner draws
    manual = torch.stack([lf(groups[:, g], labels, m(groups[:, g], labels))
                          for g, (lf, m) in enumerate(zip(loss.losses, loss.miners))]).mean()
    assert out["metric"].item() == pytest.approx(manual.item(), rel=1e-6)
    assert out["total"].item() == pytest.approx(manual.item() + 0.5 * diversity_loss(groups).item(), rel=1e-6)
    out["total"].backward()
    assert all(lf.beta.grad is not None for lf in loss.losses)


def test_concat_option_is_one_pml_loss_on_the_retrieval_embedding() -> None:
    torch.manual_seed(0)
    groups = torch.randn(16, 3, 8) * 3  # unnormalised on purpose: each group is normalised first
    labels = torch.arange(4).repeat_interleave(4)
    loss = GroupedMetricLoss(3, 4, MetricSpec(on="concat"), [DiversityTerm(0.5)])
    assert len(loss.losses) == 1 and loss.losses[0].beta.shape == (4,)
    retrieval = F.normalize(F.normalize(groups, dim=-1).reshape(16, 24), dim=-1)
    torch.manual_seed(1)
    out = loss(groups, labels)
    torch.manual_seed(1)
    ref_loss = pml_losses.MarginLoss(margin=0.2, nu=0, beta=1.2, learn_beta=True, num_classes=4)
    manual = ref_loss(retrieval, labels, loss.miners[0](retrieval, labels))
    assert out["metric"].item() == pytest.approx(manual.item(), rel=1e-6)
    assert out["total"].item() == pytest.approx(manual.item() + 0.5 * diversity_loss(groups).item(), rel=1e-6)
    with pytest.raises(Exception, match="metric_on"):
        MetricSpec(on="pooled")


def test_multi_similarity_option() -> None:
    loss = GroupedMetricLoss(2, 4, MetricSpec(kind="multi_similarity"))
    out = loss(F.normalize(torch.randn(8, 2, 6), dim=-1), torch.arange(4).repeat(2))
    assert torch.isfinite(out["total"]) and not list(loss.parameters())


@pytest.mark.parametrize("head", ["attentive", "gap", "gate", "multi_linear", "channel"])
def test_param_groups_hold_each_parameter_once_with_its_decay(head: str) -> None:
    cfg = load_config("cub200")["train"]
    model = create_model("small_cnn", groups=3, dim=24, head=head, freeze_bn=True)
    loss = GroupedMetricLoss(model.num_groups, 10)
    groups = build_param_groups(model, loss, cfg)
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in list(model.parameters()) + list(loss.parameters()) if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    by_name = {g["name"]: g for g in groups}
    assert {id(p) for p in by_name["backbone"]["params"]} == {id(p) for p in model.backbone.parameters()
                                                              if p.requires_grad}
    assert by_name["backbone"]["weight_decay"] == 0.003 and by_name["keyval"]["weight_decay"] == 0.003
    assert by_name["loss"]["lr"] == 5e-5 and by_name["loss"]["weight_decay"] == 0.0
    if head == "attentive":
        assert by_name["query"]["params"] == [model.head.queries]
        assert by_name["query"]["weight_decay"] == 0.001
        assert {id(p) for p in by_name["keyval"]["params"]} == {id(model.head.key.weight), id(model.head.value.weight)}
    else:
        assert "query" not in by_name
    # frozen BatchNorm parameters are not optimised
    bn = [p for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()]
    assert bn and not any(id(p) in set(ids) for p in bn)


def _grouped_inputs(b: int, k: int, h: int, w: int, classes: int):
    """Seeded ``(groups [b,k,6], labels [b], attention logits (leaf), attention [b,k,h,w])``."""
    torch.manual_seed(0)
    groups = F.normalize(torch.randn(b, k, 6), dim=-1)
    labels = torch.arange(classes).repeat(b // classes)
    logits = torch.randn(b, k, h, w, requires_grad=True)
    return groups, labels, logits, logits.flatten(2).softmax(-1).view(b, k, h, w)


ATTENTION_TERMS = {"lambda_ent": EntropyTerm, "lambda_overlap": OverlapTerm, "lambda_spread": SpreadTerm}


def check_attention_term(term: str, option: str, weight: float, ref: float, groups: torch.Tensor,
                         labels: torch.Tensor, logits: torch.Tensor, att: torch.Tensor) -> GroupedMetricLoss:
    """Off by default (not computed); on, the term == ``ref`` and adds ``weight * ref``; gradients reach the logits."""
    classes = int(labels.max()) + 1
    torch.manual_seed(1)  # same miner draws for both
    base = GroupedMetricLoss(3, classes, terms=[ATTENTION_TERMS[option](0.0)])(groups, labels, att)
    assert base[term].item() == 0.0
    on = GroupedMetricLoss(3, classes, terms=[ATTENTION_TERMS[option](weight)])
    torch.manual_seed(1)
    out = on(groups, labels, att)
    assert out[term].item() == pytest.approx(ref, rel=1e-5)
    assert out["total"].item() == pytest.approx(base["total"].item() + weight * ref, rel=1e-5)
    out["total"].backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    return on


def test_entropy_term_is_mean_normalised_entropy_and_off_by_default() -> None:
    groups, labels, logits, att = _grouped_inputs(8, 3, 4, 5, classes=4)
    # reference: explicit loop over maps, entropy / log(h*w)
    ref = sum(-(m * m.log()).sum().item() / math.log(20) for m in att.detach().flatten(2).reshape(-1, 20)) / 24
    on = check_attention_term("ent", "lambda_ent", 0.7, ref, groups, labels, logits, att)
    # uniform maps have normalised entropy 1, one-hot maps 0
    uniform = torch.full((2, 3, 4, 5), 1 / 20)
    onehot = torch.zeros(2, 3, 20)
    onehot[..., 7] = 1.0
    assert on(groups[:2], labels[:2], uniform)["ent"].item() == pytest.approx(1.0, abs=1e-6)
    assert on(groups[:2], labels[:2], onehot.view(2, 3, 4, 5))["ent"].item() == pytest.approx(0.0, abs=1e-6)


def test_spread_term_is_mean_spatial_variance_of_the_maps() -> None:
    groups, labels, logits, att = _grouped_inputs(6, 3, 4, 5, classes=3)
    ref = 0.0  # explicit loop over maps and cells: E||p - E p||^2 with p the cell centre
    for m in att.detach().reshape(-1, 4, 5):
        cells = [((i + 0.5) / 4, (j + 0.5) / 5, m[i, j].item()) for i in range(4) for j in range(5)]
        my = sum(y * a for y, _, a in cells)
        mx = sum(x * a for _, x, a in cells)
        ref += sum(a * ((y - my) ** 2 + (x - mx) ** 2) for y, x, a in cells) / 18
    check_attention_term("spread", "lambda_spread", 3.0, ref, groups, labels, logits, att)


def test_query_learning_rate_is_its_own_option() -> None:
    cfg = dict(load_config("cub200")["train"])
    model = create_model("small_cnn", groups=3, dim=24)
    lrs = {g["name"]: g["lr"] for g in build_param_groups(model, None, cfg)}
    assert lrs["query"] == lrs["keyval"] == cfg["lr"]  # null = lr (reference recipes)
    cfg["lr_query"] = 0.25
    lrs = {g["name"]: g["lr"] for g in build_param_groups(model, None, cfg)}
    assert lrs["query"] == 0.25 and lrs["keyval"] == cfg["lr"]


def _weights(cfg: dict, epoch: int) -> dict:
    """The weight of every term of the loss a recipe with these train keys builds, at ``epoch``."""
    from dgml_viz.train.config import DEFAULTS
    from dgml_viz.train.loop import loss_terms

    loss = GroupedMetricLoss(3, 4, terms=loss_terms({**DEFAULTS["train"], "lambda_div": 0.0, **cfg}))
    return loss.set_epoch(epoch)


def _attention(cfg: dict, epoch: int) -> tuple:
    w = _weights(cfg, epoch)
    return w["ent"], w["overlap"], w["spread"]


def test_attention_terms_ramp_linearly_over_the_warmup_epochs() -> None:
    assert [_attention({"lambda_ent": 0.4}, e) for e in range(2)] == [(0.4, 0.0, 0.0), (0.4, 0.0, 0.0)]
    cfg = {"lambda_ent": 0.4, "lambda_overlap": 0.8, "lambda_spread": 2.0, "attention_warmup_epochs": 4}
    got = [_attention(cfg, e) for e in range(6)]
    assert [g[0] for g in got] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    assert [g[1] for g in got] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 0.8])
    assert [g[2] for g in got] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.0])
    assert _attention({}, 3) == (0.0, 0.0, 0.0)
    late = {"lambda_spread": 2.0, "attention_start_epoch": 3, "attention_warmup_epochs": 2}
    assert [_attention(late, e)[2] for e in range(7)] == pytest.approx([0, 0, 0, 0, 1.0, 2.0, 2.0])
    at_once = {"lambda_ent": 0.3, "attention_start_epoch": 2}
    assert [_attention(at_once, e)[0] for e in range(4)] == pytest.approx([0, 0, 0.3, 0.3])


def test_consistency_weight_follows_the_attention_ramp_or_its_own_early_weight() -> None:
    base = {"lambda_consistency": 5.0, "attention_start_epoch": 2, "attention_warmup_epochs": 2}
    assert [_weights(base, e)["consistency"] for e in range(5)] == pytest.approx([0, 0, 0, 2.5, 5])
    early = {**base, "lambda_consistency_early": 5.0}  # on from the first step
    assert [_weights(early, e)["consistency"] for e in range(5)] == pytest.approx([5] * 5)


def test_weight_schedule_is_the_piecewise_linear_formula() -> None:
    for weight, start, warm, early in ((2.0, 3, 2, 0.0), (0.5, 0, 4, 0.1), (1.0, 2, 0, 0.25), (0.3, 0, 0, 0.3)):
        s = WeightSchedule(weight, start, warm, early)
        for e in range(9):
            ref = early if e < start else (weight if warm == 0 else early + (weight - early) * min(1, (e - start) / warm))
            assert s(e) == pytest.approx(ref)
    term = SpreadTerm(WeightSchedule(2.0, 1, 0))
    assert term.weight == 0.0 and term.set_epoch(1) == 2.0 and term.weight == 2.0
    assert DiversityTerm(0.7).set_epoch(99) == 0.7  # a float is a constant schedule


def test_diversity_weight_schedule_follows_the_attention_ramp() -> None:
    assert [_weights({"lambda_div": 0.5}, e)["div"] for e in range(3)] == [0.5, 0.5, 0.5]  # off: constant
    cfg = {"lambda_div": 0.5, "lambda_div_early": 0.05, "lambda_spread": 1.0, "attention_start_epoch": 3,
           "attention_warmup_epochs": 2}
    got = [_weights(cfg, e)["div"] for e in range(7)]
    assert got == pytest.approx([0.05, 0.05, 0.05, 0.05, 0.275, 0.5, 0.5])
    # the same phase as the attention terms: weak exactly while they are off, strong once they are on
    spread = [_attention(cfg, e)[2] for e in range(7)]
    assert all((s == 0) == (d == 0.05) for s, d in zip(spread, got))


def test_loss_term_names_are_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        GroupedMetricLoss(3, 4, terms=[OverlapTerm(1.0), OverlapTerm(2.0)])


def _tiny_recipe(**train: object) -> dict:
    """A 3-epoch, one-step-per-epoch synthetic recipe (attention terms from epoch 1) plus ``train`` keys."""
    return {"model": {"backbone": "small_cnn", "groups": 2, "dim": 16, "reduction": 4, "pretrained": False,
                      "freeze_bn": False, "backbone_kwargs": {"width": 8}},
            "data": {"name": "synthetic", "size": 32, "resize": 32, "mode": "full", "mean": [0.5] * 3,
                     "std": [0.25] * 3, "kwargs": {"image_size": 32, "samples_per_class": 2}},
            "train": {"epochs": 3, "batch_classes": 4, "batch_per_class": 2, "steps_per_epoch": 1, "lr": 1e-3,
                      "lr_steps": [5], "num_workers": 0, "amp": False, "device": "cpu", "progress": False,
                      "attention_start_epoch": 1, "attention_warmup_epochs": 0, "eval_every": 3,
                      "tensorboard": False, **train},
            "eval": {"nmi": False, "ks": [1]}}


def test_diversity_schedule_is_what_the_trainer_uses(tmp_path) -> None:
    from dgml_viz.train import train

    seen = []
    cfg = _tiny_recipe(lambda_div=0.4, lambda_div_early=0.1)
    import dgml_viz.train.loop as loop

    original = loop.GroupedMetricLoss.forward

    def spy(self, *a, **k):  # type: ignore[no-untyped-def]
        seen.append(self.terms["div"].weight)
        return original(self, *a, **k)

    loop.GroupedMetricLoss.forward = spy
    try:
        train(cfg, tmp_path / "run")
    finally:
        loop.GroupedMetricLoss.forward = original
    assert seen == pytest.approx([0.1, 0.4, 0.4])


def test_overlap_term_is_pairwise_histogram_intersection() -> None:
    groups, labels, logits, att = _grouped_inputs(6, 3, 3, 4, classes=3)
    ref = 0.0
    for x in range(6):
        for i in range(3):
            for j in range(i + 1, 3):
                ref += torch.minimum(att[x, i], att[x, j]).sum().item() / 6
    ref /= 2  # 1 / (K - 1), as the diversity loss
    loss = GroupedMetricLoss(3, 3, terms=[OverlapTerm(0.3)])
    torch.manual_seed(1)
    out = loss(groups, labels, att)
    assert out["overlap"].item() == pytest.approx(ref, rel=1e-5)
    torch.manual_seed(1)
    base = GroupedMetricLoss(3, 3)(groups, labels, att)
    assert out["total"].item() == pytest.approx(base["total"].item() + 0.3 * ref, rel=1e-5)
    out["total"].backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_overlap_radius_counts_neighbouring_cells_as_overlap() -> None:
    groups = F.normalize(torch.randn(1, 2, 4), dim=-1)
    att = torch.zeros(1, 2, 5, 5)
    att[0, 0, 2, 1] = 1.0
    att[0, 1, 2, 2] = 1.0  # next cell: disjoint maps
    plain = GroupedMetricLoss(2, 1, terms=[OverlapTerm(1.0)])(groups, torch.zeros(1, dtype=torch.long), att)
    assert plain["overlap"].item() == 0.0
    wide = GroupedMetricLoss(2, 1, terms=[OverlapTerm(1.0, radius=1)])
    out = wide(groups, torch.zeros(1, dtype=torch.long), att)
    # 3x3 box filter: both maps cover the cells of columns 1-2 in rows 1-3 (2 x 3 cells of 1/9 each)
    assert out["overlap"].item() == pytest.approx(6 / 9, rel=1e-6)
    far = att.clone()
    far[0, 1] = 0.0
    far[0, 1, 2, 4] = 1.0  # three cells apart: no overlap even with radius 1
    assert wide(groups, torch.zeros(1, dtype=torch.long), far)["overlap"].item() == 0.0


def test_named_terms_compose_the_total_exactly_as_the_weighted_sum() -> None:
    """Every term comes back by name; ``total`` is bit-identical to the former fixed-slot computation
    ``metric + l_div*div + l_ent*ent + l_overlap*overlap + l_spread*spread`` (added in that order)."""
    from dgml_viz.metrics.diversity import attention_entropy, attention_spread
    from dgml_viz.train.losses import TERM_NAMES

    groups, labels, logits, att = _grouped_inputs(8, 3, 4, 5, classes=4)
    weights = (0.3, 0.7, 0.2, 1.5, 4.0)
    loss = GroupedMetricLoss(3, 4, terms=[cls(w) for cls, w in zip(STANDARD_TERMS, weights, strict=True)])
    views = att[:5].flip(-1)  # maps of hflipped copies that do not follow the image: consistency > 0
    torch.manual_seed(1)
    out = loss(groups, labels, att, views)
    assert list(out) == ["total", *TERM_NAMES] and all(v.dim() == 0 for v in out.values())
    expected = (out["metric"] + 0.3 * out["div"] + 0.7 * out["ent"] + 0.2 * out["overlap"]
                + 1.5 * out["spread"] + 4.0 * out["consistency"])
    assert torch.equal(out["total"], expected) and out["consistency"] > 0
    torch.manual_seed(1)
    no_views = loss(groups, labels, att)  # a term that needs views reads 0 without them
    assert no_views["consistency"].item() == 0.0
    assert torch.equal(no_views["total"], expected - 4.0 * out["consistency"])
    # and each term is the independent reference
    torch.manual_seed(1)
    manual = torch.stack([lf(groups[:, g], labels, m(groups[:, g], labels))
                          for g, (lf, m) in enumerate(zip(loss.losses, loss.miners))]).mean()
    assert out["metric"].item() == pytest.approx(manual.item(), rel=1e-6)
    assert out["div"].item() == pytest.approx(diversity_loop(groups, 2.0, 0.5, 25.0).item(), rel=1e-5)
    assert out["ent"].item() == pytest.approx(attention_entropy(att).mean().item(), rel=1e-6)
    assert out["spread"].item() == pytest.approx(attention_spread(att).mean().item(), rel=1e-6)
    pairs = [torch.minimum(att[:, i], att[:, j]).flatten(1).sum(1).mean().item() for i, j in ((0, 1), (0, 2), (1, 2))]
    assert out["overlap"].item() == pytest.approx(sum(pairs) / 2, rel=1e-5)
    # weights off: the terms are not computed and read 0
    torch.manual_seed(1)
    plain = GroupedMetricLoss(3, 4, terms=[cls(0.0) for cls in STANDARD_TERMS])(groups, labels, att, views)
    assert [plain[n].item() for n in TERM_NAMES[1:]] == [0.0] * 5
    assert torch.equal(plain["total"], plain["metric"])


def test_attention_temperature_softens_the_maps_and_ramps_to_one() -> None:
    from dgml_viz.errors import ConfigError
    from dgml_viz.model.heads.attentive import AttentiveHead
    from dgml_viz.train.config import DEFAULTS
    from dgml_viz.train.loop import temperature_schedule

    head = AttentiveHead(16, groups=3, dim=12, reduction=2)
    x = torch.randn(2, 16, 5, 5)
    plain = head(x).attention
    head.temperature = 4.0
    soft = head(x).attention
    # the same logits divided by T: softmax_p(l / T), written out independently
    logits = torch.einsum("kh,hc,bcn->bkn", head.queries, head.key.weight.flatten(1), x.flatten(2))
    assert torch.allclose(soft.flatten(2), (logits / 4.0).softmax(-1), atol=1e-6)
    assert torch.allclose(plain.flatten(2), logits.softmax(-1), atol=1e-6)
    from dgml_viz.metrics.diversity import attention_entropy
    assert (attention_entropy(soft) > attention_entropy(plain)).all()
    t = {**DEFAULTS["train"], "epochs": 12, "attention_start_epoch": 5, "attention_warmup_epochs": 2,
         "attention_temperature_early": 4.0}
    sched = temperature_schedule(t, head)
    assert [sched(e) for e in range(9)] == pytest.approx([4, 4, 4, 4, 4, 4, 2.5, 1, 1])
    assert temperature_schedule({**t, "attention_temperature_early": 1.0}, head) is None
    with pytest.raises(ConfigError, match="reaches 1 only in epoch"):
        temperature_schedule({**t, "epochs": 7}, head)
    with pytest.raises(ConfigError, match="no attention temperature"):
        temperature_schedule(t, torch.nn.Linear(2, 2))


def _one_hot_maps(cells: list[tuple[int, int]], h: int, w: int) -> torch.Tensor:
    """``[1, K, h, w]`` maps with all mass on one cell ``(row, col)`` per group."""
    a = torch.zeros(1, len(cells), h, w)
    for k, (i, j) in enumerate(cells):
        a[0, k, i, j] = 1.0
    return a


@pytest.mark.parametrize("view, dims", [("rot180", (-2, -1)), ("hflip", (-1,)), ("vflip", (-2,))])
def test_consistency_term_known_answers(view: str, dims: tuple[int, ...]) -> None:
    """Maps that follow the flip score 0; maps that stay where they were score the squared distance
    between a cell centre and its mirror image, written out by hand."""
    term = ConsistencyTerm(1.0, view=view, images=1)
    h, w = 5, 8
    att = _one_hot_maps([(0, 1), (3, 6), (2, 4)], h, w)
    groups = torch.zeros(1, 3, 4)
    assert term(groups, att, att.flip(dims)).item() == pytest.approx(0.0, abs=1e-12)
    expected = []
    for i, j in ((0, 1), (3, 6), (2, 4)):
        x, y = (j + 0.5) / w, (i + 0.5) / h
        dx = (x - (1 - x)) if "h" in view or view == "rot180" else 0.0
        dy = (y - (1 - y)) if "v" in view or view == "rot180" else 0.0
        expected.append(dx * dx + dy * dy)
    assert term(groups, att, att).item() == pytest.approx(sum(expected) / 3, rel=1e-6)
    images = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).view(2, 3, 4, 6)
    assert torch.equal(term.view_images(images), images[:1].flip(dims))


def test_consistency_separates_a_detector_keyed_at_an_offset_from_a_centred_one() -> None:
    """The premise of the term, on a real image and a real convolution: a translation-equivariant
    detector whose kernel sees a disc at an offset (its attention sits next to the disc) is
    inconsistent under rot180 by about twice that offset; a centred kernel is consistent."""
    size, r = 48, 5.0
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    image = (((xx - 20.0) ** 2 + (yy - 27.0) ** 2) <= r * r).float()[None, None]  # [1, 1, S, S]
    ky, kx = torch.meshgrid(torch.arange(31) - 15.0, torch.arange(31) - 15.0, indexing="ij")

    def attention(img: torch.Tensor, shift: float) -> torch.Tensor:
        kernel = torch.exp(-((kx - shift) ** 2 + ky ** 2) / (2 * 2.0 ** 2))[None, None]  # a blob at +shift px
        response = F.conv2d(img, kernel, padding=15)  # [1, 1, S, S], peaks `shift` px left of the disc
        return (40.0 * response / response.max()).flatten(1).softmax(-1).view(1, 1, size, size)

    term = ConsistencyTerm(1.0, view="rot180", images=1)
    groups = torch.zeros(1, 1, 4)
    for shift, want in ((0.0, 0.0), (6.0, (2 * 6.0 / size) ** 2)):
        a = attention(image, shift)
        v = attention(term.view_images(image), shift)
        assert term(groups, a, v).item() == pytest.approx(want, abs=2e-4)


def test_trainer_runs_the_flipped_views_beside_the_batch(tmp_path) -> None:
    """With lambda_consistency the trainer runs consistency_images flipped copies in the same forward and
    hands their maps to the loss from the attention start on; the term is logged by name."""
    import csv

    from dgml_viz.train import train

    seen = []
    cfg = _tiny_recipe(lambda_consistency=2.0, consistency_images=3)
    import dgml_viz.train.loop as loop

    original = loop.GroupedMetricLoss.forward

    def spy(self, groups, labels, attention=None, views=None):  # type: ignore[no-untyped-def]
        seen.append((tuple(groups.shape), None if views is None else tuple(views.shape)))
        return original(self, groups, labels, attention, views)

    loop.GroupedMetricLoss.forward = spy
    try:
        train(cfg, tmp_path / "run")
    finally:
        loop.GroupedMetricLoss.forward = original
    assert [s[0] for s in seen] == [(8, 2, 8)] * 3  # the metric loss sees the batch only
    assert seen[0][1] is None and seen[1][1] == seen[2][1] == (3, 2, 4, 4)
    rows = list(csv.DictReader((tmp_path / "run" / "log.csv").open()))
    assert float(rows[0]["consistency_loss"]) == 0.0 and float(rows[2]["consistency_loss"]) > 0.0


def test_trainer_runs_no_flipped_views_for_a_head_without_maps(tmp_path) -> None:
    """A consistency weight on a head without spatial maps (gap) costs no extra forward: no flipped copies are made."""
    from dgml_viz.train import train

    cfg = _tiny_recipe(lambda_consistency=2.0, consistency_images=3)
    cfg["model"].update(head="gap", groups=1)
    made = []
    import dgml_viz.train.loop as loop

    original = loop.GroupedMetricLoss.view_images

    def spy(self, images):  # type: ignore[no-untyped-def]
        made.append(images.shape[0])
        return original(self, images)

    loop.GroupedMetricLoss.view_images = spy
    try:
        train(cfg, tmp_path / "run")
    finally:
        loop.GroupedMetricLoss.view_images = original
    assert made == []
