"""timm backbones (``timm:<name>``): ViT token grids and ConvNeXt maps under the grouping heads.

Tiny configurations (CPU-fast) of every suggested name in the registry; properties are
checked against timm's own code paths (``forward_intermediates``, ``create_transform``,
``feature_info``) and a hand-written autograd Grad-CAM, not against our own outputs.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from skimage import data

from dgml_viz.cli import main
from dgml_viz.errors import ConfigError, DgmlVizError
from dgml_viz.explain.gradcam import grad_cam
from dgml_viz.metrics.invariance import permutation_certificate, translation_curve
from dgml_viz.model import create_model, list_backbones
from dgml_viz.model.backbones import backbone_spec
from dgml_viz.model.checkpoint import load_checkpoint, save_checkpoint
from dgml_viz.model.timm_backbone import SUGGESTED_TIMM_BACKBONES, TIMM_PREFIX, timm_info

VIT_TINY = {"img_size": 64, "depth": 2, "embed_dim": 64, "num_heads": 2}
CNN_TINY = {"depths": [1, 1, 1, 1], "dims": [16, 24, 32, 48]}
NAMES = [n for n in list_backbones() if n.startswith(TIMM_PREFIX)]


def _tiny(name: str) -> dict:
    return dict(VIT_TINY) if timm_info(name[len(TIMM_PREFIX):]).tokens else dict(CNN_TINY)


def _model(name: str, head: str = "attentive", **extra):
    return create_model(name, groups=3, dim=48, head=head, **_tiny(name), **extra).eval()


def test_registry_lists_suggested_timm_names() -> None:
    assert set(SUGGESTED_TIMM_BACKBONES) <= set(NAMES) and len(NAMES) >= 3
    assert {timm_info(n[len(TIMM_PREFIX):]).tokens for n in NAMES} == {True, False}  # ViTs and a CNN


@pytest.mark.parametrize("name", NAMES)
def test_spec_stride_and_channels_match_timm(name: str) -> None:
    bare = name[len(TIMM_PREFIX):]
    spec = backbone_spec(name)
    if timm_info(bare).tokens:
        net = timm.create_model(bare, num_classes=0)
        assert spec.stride == net.patch_embed.patch_size[0]
        assert spec.out_channels(**VIT_TINY) == VIT_TINY["embed_dim"]
    else:
        net = timm.create_model(bare, features_only=True)
        assert spec.stride == net.feature_info.reduction()[-1]
        assert spec.out_channels(**CNN_TINY) == CNN_TINY["dims"][-1]


@pytest.mark.parametrize("name", NAMES)
def test_model_api_shapes_and_attention(name: str) -> None:
    model = _model(name)
    size = model.transform["size"]
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(x)
    grid = size // backbone_spec(name).stride
    assert out.embedding.shape == (2, 3 * 16) and out.groups.shape == (2, 3, 16)
    assert out.attention.shape == (2, 3, grid, grid)
    assert torch.allclose(out.attention.sum(dim=(-2, -1)), torch.ones(2, 3), atol=1e-5)
    assert torch.allclose(out.groups.norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    single = model(x[:1])  # batch 1 keeps its dims
    assert single.attention.shape == (1, 3, grid, grid)


@pytest.mark.parametrize("reg_tokens", [0, 4])
def test_vit_grid_is_timms_patch_tokens_without_prefix(reg_tokens: int) -> None:
    """Our grid equals timm's own NCHW intermediates of the last block (final norm, prefix dropped)."""
    model = create_model("timm:vit_small_patch16_224", groups=3, dim=48, reg_tokens=reg_tokens, **VIT_TINY).eval()
    vit = model.backbone.model
    assert model.backbone.num_prefix_tokens == 1 + reg_tokens == vit.num_prefix_tokens
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model.features(x)
        theirs = vit.forward_intermediates(x, indices=1, norm=True, output_fmt="NCHW", intermediates_only=True)[-1]
    assert ours.shape == (2, 64, 4, 4)  # 64 px / patch 16
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_convnext_map_is_its_last_stage() -> None:
    model = _model("timm:convnext_tiny")
    ref = timm.create_model("convnext_tiny", num_classes=0, **CNN_TINY).eval()
    # features_only renames top-level modules "stages.0" -> "stages_0" (timm's FeatureListNet)
    missing, unexpected = ref.load_state_dict({re.sub(r"^([a-z]+)_(\d+)\.", r"\1.\2.", k[len("backbone.model."):]): v
                                               for k, v in model.state_dict().items() if k.startswith("backbone.")},
                                              strict=False)
    assert not unexpected and all(k.startswith("head.") for k in missing)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), ref.forward_features(x), rtol=0, atol=1e-5)


def test_head_is_permutation_invariant_on_vit_tokens() -> None:
    model = _model("timm:vit_small_patch16_224")
    with torch.no_grad():
        feats = model.features(torch.randn(3, 3, 64, 64))
    cert = permutation_certificate(model.head, feats, num_permutations=4)
    assert cert["max_abs_delta"] < 1e-5 and cert["attention_max_abs_delta"] < 1e-6


def test_vit_backbone_is_not_translation_invariant() -> None:
    """Rolling by one patch only permutes the patches; the cosine drops because of the position embeddings."""
    model = _model("timm:vit_small_patch16_224")
    assert model.backbone.position_embedding
    with torch.no_grad():
        model.backbone.model.pos_embed.normal_(0, 1.0)  # a position embedding that matters
    x = torch.randn(2, 3, 64, 64)
    shifted = translation_curve(model, x, [0, 16], mode="wrap")["embedding_cosine"]
    assert shifted[0] == pytest.approx(1.0, abs=1e-5) and shifted[1] < 0.999
    with torch.no_grad():
        model.backbone.model.pos_embed.zero_()  # no position information: a patch roll is a token permutation
    assert translation_curve(model, x, [16], mode="wrap")["embedding_cosine"][0] == pytest.approx(1.0, abs=1e-5)


def test_eval_transform_is_timms(tmp_path: Path) -> None:
    for name, kwargs in (("vit_small_patch16_224", {}), ("convnext_tiny", CNN_TINY), ("vit_small_patch16_224.dino", {})):
        model = create_model(TIMM_PREFIX + name, groups=3, dim=48, **kwargs)
        tf = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model.backbone.model))
        resize, crop, _, norm = tf.transforms
        assert model.transform["resize"] == resize.size and [model.transform["size"]] * 2 == list(crop.size)
        assert model.transform["mean"] == pytest.approx(list(norm.mean.tolist()))
        assert model.transform["std"] == pytest.approx(list(norm.std.tolist()))
        assert model.transform["interpolation"] == resize.interpolation.value
    tiny = _model("timm:vit_small_patch16_224")  # built for 64 px: the transform follows the model
    assert tiny.transform["size"] == 64 and tiny.transform["resize"] == math.floor(64 / 0.9)


@pytest.mark.parametrize("name", NAMES[:1] + [n for n in NAMES if not timm_info(n[len(TIMM_PREFIX):]).tokens])
def test_checkpoint_round_trip_weights_only(tmp_path: Path, name: str) -> None:
    model = _model(name, reg_tokens=2) if timm_info(name[len(TIMM_PREFIX):]).tokens else _model(name)
    path = save_checkpoint(model, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["backbone"] == name and raw["transform"]["size"] == model.transform["size"]
    back = load_checkpoint(path)
    a, b = model.state_dict(), back.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    x = torch.randn(2, 3, model.transform["size"], model.transform["size"])
    with torch.no_grad():
        assert torch.equal(model(x).embedding, back(x).embedding)


def test_gradcam_on_vit_grid_and_on_a_block() -> None:
    model = _model("timm:vit_small_patch16_224", reg_tokens=2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(torch.randn(2, 3, 64, 64)).groups
    assert grad_cam(model, x, reference=ref).shape == (2, 3, 64, 64)
    block = model.backbone.model.blocks[0]
    cams = grad_cam(model, x, reference=ref, layer=block, upsample=False)
    assert cams.shape == (2, 3, 4, 4)
    store: dict = {}
    hook = block.register_forward_hook(lambda _m, _i, o: store.__setitem__("t", o))
    groups = model(x).groups
    hook.remove()
    tokens = store["t"]  # [2, 3 + 16, 64]
    for g in range(3):  # Grad-CAM by hand on the patch tokens: ReLU(sum_c mean_p(ds/dA) * A)
        s = (groups[:, g] * torch.nn.functional.normalize(ref[:, g], dim=-1)).sum()
        grad, = torch.autograd.grad(s, tokens, retain_graph=True)
        patches, gp = tokens[:, 3:].detach(), grad[:, 3:]
        expect = torch.relu((patches * gp.mean(1, keepdim=True)).sum(-1)).view(2, 4, 4)
        torch.testing.assert_close(cams[:, g], expect, rtol=1e-4, atol=1e-6)


def test_bad_names_and_kwargs_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown timm model 'no_such_net'") as e1:
        create_model("timm:no_such_net")
    with pytest.raises(ConfigError, match="bad backbone_kwargs") as e2:
        create_model("timm:vit_small_patch16_224", not_a_kwarg=3)
    assert "\n" not in str(e1.value) + str(e2.value)


def test_pretrained_offline_says_where_weights_go(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch"))
    with pytest.raises(DgmlVizError) as err:
        create_model("timm:vit_small_patch16_224", pretrained=True, **VIT_TINY)
    msg = str(err.value)
    assert "\n" not in msg and "models--timm--vit_small_patch16_224.augreg_in21k_ft_in1k" in msg
    assert str(tmp_path / "hub") in msg


def _images(folder: Path) -> Path:
    folder.mkdir()
    Image.fromarray(data.astronaut()[::3, ::2]).save(folder / "astronaut.png")  # non-square
    Image.fromarray(data.chelsea()).save(folder / "chelsea.jpg")
    return folder


def test_heatmaps_cli_on_tiny_vit_checkpoint(tmp_path: Path) -> None:
    path = save_checkpoint(_model("timm:vit_small_patch16_224", reg_tokens=1), tmp_path / "vit.pt")
    out = tmp_path / "out"
    assert main(["heatmaps", "--ckpt", str(path), "--images", str(_images(tmp_path / "img")), "--out", str(out),
                 "--workers", "1", "--format", "png"]) == 0
    lines = [json.loads(s) for s in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["status"] for r in lines] == ["ok", "ok"]
    maps = np.load(out / "chelsea.jpg" / "maps.npz")
    assert maps["attention"].shape == (3, 4, 4)  # the 4x4 patch grid of a 64-px ViT-16
    w, h = Image.open(tmp_path / "img" / "chelsea.jpg").size
    assert Image.open(out / "chelsea.jpg" / "group0.png").size == (w, h)  # drawn on the original pixels


@pytest.mark.parametrize("name", ["timm:vit_small_patch16_224", "timm:convnext_tiny"])
def test_full_size_models_build_and_render(tmp_path: Path, name: str) -> None:
    """The issue's check: the full-size names with the attentive head, model API and heatmaps, on CPU."""
    model = create_model(name, head="attentive").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 224, 224))
    grid = 224 // backbone_spec(name).stride  # ViT-S/16: 14x14 patches; ConvNeXt: 7x7 at stride 32
    assert out.attention.shape == (1, 3, grid, grid)
    path = save_checkpoint(model, tmp_path / "m.pt")
    one = tmp_path / "img"
    one.mkdir()
    Image.fromarray(data.chelsea()).save(one / "c.jpg")
    assert main(["heatmaps", "--ckpt", str(path), "--images", str(one), "--out", str(tmp_path / "o"),
                 "--workers", "1", "--no-composite"]) == 0
    assert np.load(tmp_path / "o" / "c.jpg" / "maps.npz")["attention"].shape == out.attention.shape[1:]


def test_layer_decay_param_groups_follow_timms_scales() -> None:
    from timm.optim import param_groups_layer_decay

    from dgml_viz.train.config import load_config
    from dgml_viz.train.loop import build_param_groups

    model = create_model("timm:vit_small_patch16_224", groups=3, dim=48, **{**VIT_TINY, "depth": 3})
    cfg = load_config(None, ["train.layer_decay=0.65", "train.lr_backbone=2e-5", "train.lr=1e-4"])["train"]
    ours = {id(p): g["lr"] / 2e-5 for g in build_param_groups(model, None, cfg) if g["name"].startswith("backbone")
            for p in g["params"]}
    theirs = {id(p): g["lr_scale"] for g in param_groups_layer_decay(model.backbone.model, layer_decay=0.65)
              for p in g["params"]}
    assert set(ours) == set(theirs) == {id(p) for p in model.backbone.parameters()}
    assert all(ours[k] == pytest.approx(theirs[k]) for k in ours)
    assert min(ours.values()) == pytest.approx(0.65 ** 3)  # embeddings: three depths below the last block
    with pytest.raises(ConfigError, match="declares no layer depths"):
        build_param_groups(create_model("small_cnn", groups=3, dim=48), None, cfg)


def test_cub200_vit_recipe_trains_a_tiny_vit(tmp_path: Path) -> None:
    """The packaged ViT recipe (layer decay included) runs through the trainer, here on synthetic parts."""
    from dgml_viz.train.config import load_config
    from dgml_viz.train.loop import train

    recipe = load_config("cub200_vit")
    assert recipe["model"]["backbone"] == "timm:vit_small_patch16_224" and recipe["train"]["layer_decay"] < 1
    cfg = load_config("cub200_vit", [
        "data.name=synthetic", "data.size=64", "data.resize=64", "data.mode=full",
        "data.kwargs={image_size: 64, samples_per_class: 2}", "model.pretrained=false", "model.dim=48",
        f"model.backbone_kwargs={json.dumps(VIT_TINY)}", "train.max_steps=2", "train.steps_per_epoch=2",
        "train.epochs=1", "train.batch_classes=4", "train.num_workers=0", "train.progress=false", "eval.nmi=false"])
    res = train(cfg, tmp_path / "run")
    assert res["steps"] == 2 and math.isfinite(res["history"][-1]["loss"])
    assert load_checkpoint(res["last_ckpt"]).config.backbone_kwargs == VIT_TINY


def test_app_pages_on_a_tiny_vit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every app page renders a ViT checkpoint; the Invariance page says what holds for it."""
    from streamlit.testing.v1 import AppTest

    folder = tmp_path / "ckpts"
    folder.mkdir()
    save_checkpoint(_model("timm:vit_small_patch16_224"), folder / "vit.pt")
    (tmp_path / "allowed").mkdir()
    monkeypatch.setenv("DGML_VIZ_CHECKPOINT_DIR", str(folder))
    monkeypatch.setenv("DGML_VIZ_DEFAULT_CKPT", str(folder / "vit.pt"))
    monkeypatch.setenv("DGML_VIZ_ALLOWED_ROOTS", str(tmp_path / "allowed"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app" / "main.py"), default_timeout=120)
    at.run()
    for page in ("groups", "compare", "invariance", "attributions"):
        at.switch_page(f"pages_impl/{page}.py").run()
        assert not at.exception and not at.error, page
    assert any("position embeddings" in c.value for c in at.switch_page("pages_impl/invariance.py").run().caption)
