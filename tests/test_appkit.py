"""Properties of the app's UI-independent helpers (dgml_viz.appkit)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgml_viz.appkit import paths, settings, sources, views
from dgml_viz.appkit.embeddings import GalleryIndex, embed_tensors
from dgml_viz.errors import ConfigError, ImageError
from dgml_viz.explain import attribution_map
from dgml_viz.index.search import group_similarities, neighbours
from dgml_viz.metrics.agreement import rank_correlation
from dgml_viz.metrics.invariance import permutation_probe, shift_xy, translate_probe, translation_curve
from dgml_viz.metrics.localisation import group_stats, upsample_attention
from dgml_viz.model import create_model


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = create_model("small_cnn", groups=3, dim=48, width=8).eval()
    with torch.no_grad():  # make attention peaky so permutation/translation checks are not trivial
        m.head.queries.mul_(20.0)
    return m


def _unit(x: torch.Tensor) -> np.ndarray:
    return (x / x.norm(dim=-1, keepdim=True)).numpy()


# ----------------------------------------------------------------------------- paths
def test_resolve_folder_allows_inside_and_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret", target_is_directory=True)
    (root / "file.txt").write_text("x")
    assert paths.resolve_folder(str(root / "a" / "b"), [root]) == (root / "a" / "b").resolve()
    assert paths.resolve_folder(str(root), [root]) == root.resolve()
    for bad, why in ((str(tmp_path / "secret"), "outside"), (str(root / ".." / "secret"), "outside"),
                     (str(root / "escape"), "outside"), (str(root / "nope"), "no such folder"),
                     (str(root / "file.txt"), "not a folder"), ("  ", "no folder")):
        with pytest.raises(ConfigError, match=why) as info:
            paths.resolve_folder(bad, [root])
        assert "\n" not in str(info.value)
    # a root that is a prefix string of another folder does not admit it
    (tmp_path / "root2").mkdir()
    with pytest.raises(ConfigError, match="outside"):
        paths.resolve_folder(str(tmp_path / "root2"), [root])


def test_list_images_skips_links_out_of_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    for p in (root / "b.png", root / "sub" / "a.JPG", tmp_path / "outside.png"):
        p.write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    (root / "link.png").symlink_to(tmp_path / "outside.png")
    found = paths.list_images(root, [root])
    assert [p.relative_to(root).as_posix() for p in found] == ["b.png", "sub/a.JPG"]
    assert len(paths.list_images(root, [root], limit=1)) == 1


def test_settings_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DGML_VIZ_DEFAULT_CKPT", raising=False)
    monkeypatch.setenv("DGML_VIZ_CHECKPOINT_DIR", str(tmp_path))
    assert settings.list_checkpoints() == [] and settings.default_checkpoint() is None
    for n in ("a.pt", "demo.pt", "z.pt"):
        (tmp_path / n).write_bytes(b"x")
    assert settings.default_checkpoint() == tmp_path / "demo.pt"
    (tmp_path / "baselines").mkdir()
    (tmp_path / "baselines" / "gap.pt").write_bytes(b"x")
    assert settings.list_checkpoints() == [tmp_path / n for n in ("a.pt", "demo.pt", "z.pt", "baselines/gap.pt")]
    (tmp_path / "demo.pt").unlink()
    assert settings.default_checkpoint() == tmp_path / "a.pt"
    monkeypatch.setenv("DGML_VIZ_DEFAULT_CKPT", str(tmp_path / "z.pt"))
    assert settings.default_checkpoint() == tmp_path / "z.pt"
    monkeypatch.setenv("DGML_VIZ_ALLOWED_ROOTS", os.pathsep.join([str(tmp_path), str(tmp_path / "x" / "..")]))
    assert settings.allowed_roots() == [tmp_path.resolve(), tmp_path.resolve()]
    monkeypatch.setenv("DGML_VIZ_MAX_UPLOAD_MB", "1.5")
    assert settings.max_upload_bytes() == int(1.5 * 2**20)


# ----------------------------------------------------------------------------- sources
def test_decode_bytes_round_trip_and_errors() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    np.testing.assert_array_equal(sources.decode_bytes(buf.getvalue(), "ok.png"), rgb)
    for data, why in ((b"", "empty"), (b"definitely not", "not an image"), (buf.getvalue()[:50], "ok.png")):
        with pytest.raises(ImageError, match=why) as info:
            sources.decode_bytes(data, "ok.png")
        assert "ok.png" in str(info.value) and "\n" not in str(info.value)


def test_sample_photos_and_demo_images() -> None:
    photo = sources.sample_photo("chelsea")
    assert photo.rgb.dtype == np.uint8 and photo.rgb.ndim == 3 and photo.rgb.shape[2] == 3
    with pytest.raises(ImageError):
        sources.sample_photo("../../etc/passwd")
    ds = sources.demo_dataset(64, num_per_class=2)
    img = sources.demo_image(ds, 5)
    assert img.rgb.shape == (64, 64, 3) and img.part_masks.shape == (3, 64, 64)
    np.testing.assert_array_equal(img.rgb, ds.raw_image(5))
    assert img.key != sources.demo_image(ds, 6).key


# ------------------------------------------- analysis the app shows (metrics, index.search, explain)
def test_group_stats_entropy_peak_and_part_shares() -> None:
    k, h, w = 3, 4, 4
    att = np.full((k, h, w), 1.0 / (h * w), np.float32)
    att[1] = 0.0
    att[1, 0, 0] = 1.0  # one-hot in the top-left cell
    masks = np.zeros((2, 16, 16), bool)
    masks[0, :4, :4] = True  # exactly the top-left cell
    masks[1, 8:, 8:] = True  # a quarter of the image
    rows = group_stats(att, masks, ("p0", "p1"))
    assert rows[0]["entropy"] == pytest.approx(1.0) and rows[1]["entropy"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["peak_share"] == pytest.approx(1 / 16) and rows[1]["peak_share"] == pytest.approx(1.0)
    assert rows[1]["best_part"] == "p0" and rows[1]["best_part_share"] == pytest.approx(1.0)
    # uniform attention: share inside = area of the part / union
    assert rows[0]["best_part"] == "p1" and rows[0]["best_part_share"] == pytest.approx(0.25)
    assert rows[0]["inside_parts"] == pytest.approx(0.25 + 1 / 16)
    assert "best_part" not in group_stats(att)[0]


def _index(groups: np.ndarray) -> GalleryIndex:
    n = len(groups)
    return GalleryIndex(groups=groups, attention=None, views=np.zeros((n, 8, 8, 3), np.uint8),
                        labels=np.arange(n), names=[str(i) for i in range(n)])


@pytest.mark.parametrize("subset", [None, [0], [0, 2], [2, 1]])
def test_neighbours_match_brute_force(subset: list[int] | None) -> None:
    gen = torch.Generator().manual_seed(1)
    groups = _unit(torch.randn(40, 3, 6, generator=gen))
    index = _index(groups)
    q = groups[7]
    sel = [0, 1, 2] if subset is None else sorted(subset)
    hits = neighbours(q, index, k=6, groups=subset, exclude=7)
    # brute force: mean cosine over the chosen groups; the query itself excluded
    brute = np.einsum("kd,nkd->nk", q[sel], groups[:, sel]).mean(axis=1)
    brute[7] = -np.inf
    order = np.argsort(-brute, kind="stable")[:6]
    assert [h.index for h in hits] == order.tolist()
    for h in hits:
        assert h.similarity == pytest.approx(brute[h.index], abs=1e-5)
        assert h.contributions.sum() == pytest.approx(h.similarity, abs=1e-5)
        assert all(h.contributions[g] == 0 for g in range(3) if g not in sel)
        e_q = q[sel].reshape(-1) / np.sqrt(len(sel))
        e_n = groups[h.index, sel].reshape(-1) / np.sqrt(len(sel))
        assert h.distance == pytest.approx(np.linalg.norm(e_q - e_n), abs=1e-4)
    with pytest.raises(ValueError):
        neighbours(q, index, groups=[])
    with pytest.raises(ValueError):
        neighbours(q, index, groups=[3])


def test_all_group_similarity_is_the_embedding_cosine(model: torch.nn.Module) -> None:
    x = torch.randn(6, 3, 48, 48)
    enc = embed_tensors(model, x, batch_size=4)  # chunked == one batch
    with torch.no_grad():
        out = model(x)
    np.testing.assert_allclose(enc.embedding, out.embedding.numpy(), atol=1e-5)
    per_group = group_similarities(enc.groups[0], enc.groups)  # [N, K]
    np.testing.assert_allclose(per_group.mean(axis=1), enc.embedding @ enc.embedding[0], atol=1e-5)


def test_permutation_probe_attentive_and_gap(model: torch.nn.Module) -> None:
    x = torch.randn(1, 3, 64, 64)
    res = permutation_probe(model, x, seed=3)
    assert res["max_abs_group_delta"] < 1e-5 and res["embedding_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert res["attention_max_abs_delta"] < 1e-6
    np.testing.assert_allclose(res["attention_unpermuted"], res["attention_before"], atol=1e-6)
    assert np.abs(res["attention_after"] - res["attention_before"]).max() > 1e-4  # really permuted
    perm = res["perm"]
    np.testing.assert_allclose(res["attention_after"].reshape(3, -1), res["attention_before"].reshape(3, -1)[:, perm],
                               atol=1e-6)
    assert not np.array_equal(perm, permutation_probe(model, x, seed=4)["perm"])  # re-roll changes it
    gap = create_model("small_cnn", groups=1, dim=16, head="gap", width=8).eval()
    res = permutation_probe(gap, x, seed=0)
    assert res["max_abs_group_delta"] < 1e-5 and res["attention_before"] is None


def test_translate_probe_and_shift_round_trip(model: torch.nn.Module) -> None:
    x = torch.randn(1, 3, 64, 64)
    res = translate_probe(model, x, 0, 0, "wrap")
    assert res["embedding_cosine"] == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(res["group_cosine"], 1.0, atol=1e-5)
    back = shift_xy(shift_xy(x, 8, -16, "wrap"), -8, 16, "wrap")
    assert torch.equal(back, x)
    padded = shift_xy(x, 8, 8, "pad")
    assert torch.equal(padded[..., :8, :], torch.zeros_like(padded[..., :8, :]))
    assert torch.equal(padded[..., 8:, 8:], x[..., :-8, :-8])
    res = translate_probe(model, x, 8, 8, "pad")
    assert -1 <= res["embedding_cosine"] <= 1 + 1e-6
    curve = translation_curve(model, x, [-8, 0, 8])
    assert curve["embedding_cosine"][1] == pytest.approx(1.0, abs=1e-5)


def test_rank_correlation_properties() -> None:
    att = np.random.default_rng(0).random((4, 4)).astype(np.float32)
    up = upsample_attention(torch.as_tensor(att)[None, None], (16, 16))[0, 0].numpy()
    assert rank_correlation(att, up, absolute=False) == pytest.approx(1.0)
    assert rank_correlation(att, np.exp(3 * up.astype(np.float64)), absolute=False) == pytest.approx(1.0, abs=1e-5)
    assert rank_correlation(att, -up, absolute=False) == pytest.approx(-1.0)
    assert rank_correlation(att, -up, absolute=True) == pytest.approx(1.0)
    assert np.isnan(rank_correlation(np.ones((4, 4)), up))


def test_attribution_maps_shapes(model: torch.nn.Module) -> None:
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        ref = model(torch.randn(1, 3, 48, 48)).groups[0].numpy()
    ig = attribution_map(model, x, ref, 1, "integrated_gradients", n_steps=4)
    cam = attribution_map(model, x, ref, 1, "grad_cam")
    assert ig.shape == cam.shape == (48, 48) and (cam >= 0).all()
    with pytest.raises(ValueError):
        attribution_map(model, x, ref, 0, "lime")


# ----------------------------------------------------------------------------- views
def test_prepare_matches_eval_transform_and_keeps_input() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)
    before = rgb.copy()
    t = {"size": 32, "resize": 40, "mean": [0.5] * 3, "std": [0.25] * 3, "mode": "center_crop"}
    p = views.prepare(rgb, t)
    np.testing.assert_array_equal(rgb, before)
    assert p.tensor.shape == (1, 3, 32, 32) and p.view.shape == (32, 32, 3)
    np.testing.assert_array_equal(views.to_view(p.tensor, t), p.view)  # denormalise(normalise(view)) == view


@pytest.mark.parametrize("size", [None, (200, 125), (40, 25)])
def test_overlays_put_a_peak_where_the_model_saw_it(size: tuple[int, int] | None) -> None:
    rgb = np.full((50, 80, 3), 128, np.uint8)
    before = rgb.copy()
    t = {"size": 32, "resize": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "mode": "center_crop"}
    geo = views.prepare(rgb, t).geometry
    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, 0, 3] = 1.0  # top-right cell of the model's window
    maps[1, 3, 0] = 1.0  # bottom-left cell
    style = views.OverlayStyle(alpha=1.0, cmap="gray", norm="per_map", interpolation="nearest")
    ovl, comp = views.overlays(rgb, maps, geo, style, size=size)
    np.testing.assert_array_equal(rgb, before)
    w, h = size or views.display_size(80, 50)
    assert all(o.shape == (h, w, 3) for o in ovl) and comp.shape == (h, w, 3)
    # the bright cell of group 0 lies right of the centre and above, of group 1 left and below
    ys, xs = np.nonzero(ovl[0][..., 0] > 200)
    assert xs.mean() > w / 2 and ys.mean() < h / 2
    ys, xs = np.nonzero(ovl[1][..., 0] > 200)
    assert xs.mean() < w / 2 and ys.mean() > h / 2
    # same relative place at any display size
    ref, _ = views.overlays(rgb, maps, geo, style, size=(80, 50))
    ry, rx = np.nonzero(ref[0][..., 0] > 200)
    assert xs.size and abs(np.nonzero(ovl[0][..., 0] > 200)[1].mean() / w - rx.mean() / 80) < 0.05


def test_groups_figure_bytes_formats_deterministic() -> None:
    img = np.zeros((16, 24, 3), np.uint8)
    img[4:8, 4:8] = 255
    magic = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}
    for fmt, head in magic.items():
        data = views.groups_figure_bytes(img, [img, img], img, fmt=fmt, dpi=72)
        assert data.startswith(head)
        assert views.groups_figure_bytes(img, [img, img], img, fmt=fmt, dpi=72) == data  # deterministic
    with pytest.raises(ValueError):
        views.groups_figure_bytes(img, [img], img, fmt="gif")


def test_grid_image_is_cellwise() -> None:
    g = np.array([[0.0, 1.0], [0.5, 0.25]], np.float32)
    img = views.grid_image(g, size=8, cmap="gray")
    assert img.shape == (8, 8, 3)
    assert (img[:4, :4] == img[0, 0]).all() and img[0, 0, 0] == 0 and img[0, 7, 0] == 255


def test_translate_probe_peaks_follow_a_wrapped_shift() -> None:
    """With a bias-free 1x1 backbone (no padding, no stride), a wrapped shift moves the content, so the
    attention peaks move by exactly the shift (mod the image size)."""
    torch.manual_seed(0)
    m = create_model("small_cnn", groups=2, dim=8, width=8).eval()
    m.backbone = torch.nn.Conv2d(3, m.feature_channels, 1, bias=False)
    x = torch.randn(1, 3, 24, 24)
    x[..., 5, 7] += 6.0  # one salient pixel
    with torch.no_grad():
        m.head.queries.mul_(50.0)
    res = translate_probe(m, x, 4, -3, "wrap")
    assert res["embedding_cosine"] == pytest.approx(1.0, abs=1e-5)
    moved = (res["peaks_shifted"] - res["peaks"]) % 24
    np.testing.assert_allclose(moved, np.tile([4, 24 - 3], (2, 1)), atol=1e-6)


def test_demo_spec_reads_the_training_recipe() -> None:
    t = {"size": 96}
    assert sources.demo_spec(t) == (96, 0)
    assert sources.demo_spec({"size": 1000}) == (256, 0)
    meta = {"recipe": {"data": {"name": "synthetic", "kwargs": {"image_size": 128, "seed": 3}}}}
    assert sources.demo_spec(t, meta) == (128, 3)
    assert sources.demo_spec(t, {"recipe": {"data": {"name": "fashion_mnist"}}}) == (96, 0)


def test_group_hex_colors_match_the_composite() -> None:
    from dgml_viz.render import group_colors

    hexes = views.group_hex_colors(4)
    assert [tuple(int(h[i:i + 2], 16) for i in (1, 3, 5)) for h in hexes] == [tuple(c) for c in group_colors(4)]
