"""Properties of the grouping heads: loop parity, sums, permutation invariance, batching."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgml_viz.model import GroupOutput, create_model, list_heads
from dgml_viz.model.heads import HEADS, AttentiveHead, register_head, spatial_maps


class LoopAttentiveHead(nn.Module):
    """The reference implementation's formulation: K one-channel 1x1 convs in a Python loop."""

    def __init__(self, head: AttentiveHead) -> None:
        super().__init__()
        self.key_conv = head.key
        self.val_conv = head.value
        hidden = head.queries.shape[1]
        self.que = nn.ModuleList(nn.Conv2d(hidden, 1, 1, bias=False) for _ in range(head.num_groups))
        with torch.no_grad():
            for i, conv in enumerate(self.que):
                conv.weight.copy_(head.queries[i].view(1, hidden, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        keys = self.key_conv(x)
        values = self.val_conv(x).flatten(2)  # [B, d, N]
        embs, atts = [], []
        for conv in self.que:
            att = conv(keys).flatten(2).softmax(dim=-1)  # [B, 1, N]
            emb = (values * att).sum(-1)  # [B, d]
            embs.append(F.normalize(emb, dim=-1))
            atts.append(att.view(b, h, w))
        return torch.stack(embs, 1), torch.stack(atts, 1)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_batched_head_equals_per_query_loop(k: int) -> None:
    head = AttentiveHead(256, groups=k, dim=64 * k, reduction=8)
    loop = LoopAttentiveHead(head)
    x = torch.randn(3, 256, 7, 7)
    out = head(x)
    groups_ref, att_ref = loop(x)
    assert out.groups.shape == (3, k, 64)
    assert out.embedding.shape == (3, 64 * k)
    assert out.attention.shape == (3, k, 7, 7)
    torch.testing.assert_close(out.groups, groups_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.attention, att_ref, atol=1e-5, rtol=0)


def test_head_matches_loop_at_resnet50_size() -> None:
    head = AttentiveHead(2048, groups=3, dim=512, reduction=8)
    x = torch.randn(2, 2048, 7, 7).relu()
    out, (g_ref, a_ref) = head(x), LoopAttentiveHead(head)(x)
    torch.testing.assert_close(out.groups, g_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.attention, a_ref, atol=1e-5, rtol=0)


def test_gradients_match_loop() -> None:
    head = AttentiveHead(64, groups=3, dim=48)
    loop = LoopAttentiveHead(head)
    x = torch.randn(2, 64, 5, 5, requires_grad=True)
    w = torch.randn(2, 3, 16)
    (gx,) = torch.autograd.grad((head(x).groups * w).sum(), x)
    (gx_ref,) = torch.autograd.grad((loop(x)[0] * w).sum(), x)
    torch.testing.assert_close(gx, gx_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("head", [h for h in list_heads() if spatial_maps(HEADS[h]) is not None])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 8])
def test_attention_sums_to_one(head: str, k: int) -> None:
    model = create_model("small_cnn", head=head, groups=k, dim=8 * k, width=8)
    out = model(torch.randn(2, 3, 40, 56))
    assert out.attention.shape == (2, k, 5, 7)
    torch.testing.assert_close(out.attention.sum((-2, -1)), torch.ones(2, k))
    assert (out.attention >= 0).all()


@pytest.mark.parametrize("head", list_heads())
def test_output_contract(head: str) -> None:
    model = create_model("small_cnn", head=head, groups=3, dim=48, width=8).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert isinstance(out, GroupOutput)
    k = model.num_groups
    assert out.groups.shape == (2, k, model.group_dim)
    assert out.embedding.shape == (2, model.embedding_dim)
    torch.testing.assert_close(out.groups.norm(dim=-1), torch.ones(2, k))
    torch.testing.assert_close(out.embedding.norm(dim=-1), torch.ones(2))
    # the embedding is the concatenation of the normalised groups, renormalised
    torch.testing.assert_close(out.embedding, F.normalize(out.groups.flatten(1), dim=-1))
    # the head's declared capability says whether it exposes maps (never its name)
    assert (out.attention is None) == (model.spatial_maps is None) == (spatial_maps(HEADS[head]) is None)
    assert model.spatial_maps in (None, "softmax", "mask")


@pytest.mark.parametrize("head", list_heads())
def test_permuting_positions(head: str) -> None:
    """Permuting h*w positions leaves groups unchanged and permutes attention the same way."""
    model = create_model("small_cnn", head=head, groups=3, dim=48, width=8).eval()
    feats = torch.randn(2, model.feature_channels, 6, 5)
    perm = torch.randperm(30)
    permuted = feats.flatten(2)[..., perm].view_as(feats)
    a, b = model.head(feats), model.head(permuted)
    torch.testing.assert_close(a.groups, b.groups, atol=1e-6, rtol=0)
    if a.attention is not None:
        torch.testing.assert_close(a.attention.flatten(2)[..., perm], b.attention.flatten(2), atol=1e-7, rtol=0)


@pytest.mark.parametrize("head", list_heads())
def test_batched_equals_per_sample_and_batch_of_one(head: str) -> None:
    model = create_model("small_cnn", head=head, groups=3, dim=48, width=8).eval()
    x = torch.randn(4, 3, 32, 48)
    with torch.no_grad():
        batched = model(x)
        singles = [model(x[i : i + 1]) for i in range(4)]
    assert singles[0].embedding.shape == (1, model.embedding_dim)
    torch.testing.assert_close(batched.embedding, torch.cat([s.embedding for s in singles]), atol=1e-5, rtol=0)
    if batched.attention is not None:
        torch.testing.assert_close(batched.attention, torch.cat([s.attention for s in singles]), atol=1e-6, rtol=0)


def test_features_then_head_equals_forward() -> None:
    model = create_model("small_cnn", groups=3, dim=48, width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).embedding, model.head(model.features(x)).embedding)


@pytest.mark.parametrize("name,channels", [("resnet18", 512), ("resnet50", 2048), ("googlenet", 1024)])
def test_torchvision_backbones_cut_before_pooling(name: str, channels: int) -> None:
    model = create_model(name, groups=3, dim=48).eval()
    with torch.no_grad():
        feats = model.features(torch.randn(1, 3, 64, 64))
    assert feats.shape == (1, channels, 2, 2)
    assert model.feature_channels == channels


def test_freeze_bn_keeps_statistics_and_grads_off() -> None:
    model = create_model("small_cnn", groups=2, dim=16, width=8, freeze_bn=True).train()
    bn = next(m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    model(torch.randn(4, 3, 32, 32) * 5 + 3)
    assert not bn.training and torch.equal(before, bn.running_mean)
    assert not bn.weight.requires_grad
    assert model.head.queries.requires_grad


def test_small_cnn_receptive_field() -> None:
    from dgml_viz.model import receptive_field

    assert receptive_field() == (43, 8)
    model = create_model("small_cnn", groups=1, dim=8, width=4).eval()
    # a perturbation farther than the receptive field from a position leaves it unchanged
    x = torch.randn(1, 3, 96, 96)
    y = x.clone()
    y[..., 90:, 90:] += 10
    with torch.no_grad():
        fx, fy = model.features(x), model.features(y)
    assert torch.equal(fx[..., 0, 0], fy[..., 0, 0])
    assert not torch.equal(fx[..., -1, -1], fy[..., -1, -1])


def test_pretrained_download_failure_is_one_clean_line(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from urllib.error import URLError

    import torchvision.models as tvm

    from dgml_viz.errors import DgmlVizError

    def no_net(*args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_net)
    monkeypatch.setattr(tvm._api, "load_state_dict_from_url", no_net, raising=False)
    old_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(DgmlVizError) as err:
            create_model("resnet18", pretrained=True)
    finally:
        torch.hub.set_dir(old_dir)
    msg = str(err.value)
    assert "\n" not in msg and "resnet18" in msg.lower() and str(tmp_path) in msg


def test_unknown_names_are_config_errors() -> None:
    from dgml_viz.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown backbone"):
        create_model("vgg_nope")
    with pytest.raises(ConfigError, match="unknown head"):
        create_model("small_cnn", head="nope")


def test_register_head_refuses_an_unknown_capability() -> None:
    with pytest.raises(TypeError, match="spatial_maps"):
        @register_head("_bad_test_head")
        class Bad(nn.Module):
            spatial_maps = "heat"
    assert "_bad_test_head" not in HEADS
