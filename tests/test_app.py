"""The Streamlit app driven with streamlit.testing.v1.AppTest: every page and control, error paths.

The app is pointed at tiny small_cnn checkpoints written to a temp folder
(``DGML_VIZ_CHECKPOINT_DIR`` / ``DGML_VIZ_DEFAULT_CKPT``), so these tests do not
depend on the shipped demo model.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgml_viz.data.synthetic import synthetic_transform
from dgml_viz.model import create_model
from dgml_viz.model.checkpoint import save_checkpoint

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"
SIZE = 64
PAGES = ("groups", "compare", "invariance", "attributions")


def write_checkpoints(folder: Path) -> dict[str, Path]:
    """``demo.pt`` (attentive, K=3), ``gap.pt`` (K=1) and ``gate.pt`` small_cnn models at 64 px."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for name, head in (("demo", "attentive"), ("gap", "gap"), ("gate", "gate")):
            model = create_model("small_cnn", groups=1 if head == "gap" else 3, dim=48, head=head, width=8).eval()
            out[name] = save_checkpoint(model, folder / f"{name}.pt", transform=synthetic_transform(SIZE))
    return out


def set_app_env(monkeypatch: pytest.MonkeyPatch, ckpt_dir: Path, allowed: Path) -> None:
    monkeypatch.setenv("DGML_VIZ_CHECKPOINT_DIR", str(ckpt_dir))
    monkeypatch.setenv("DGML_VIZ_DEFAULT_CKPT", str(ckpt_dir / "demo.pt"))
    monkeypatch.setenv("DGML_VIZ_ALLOWED_ROOTS", str(allowed))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_checkpoints(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture
def app(ckpts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    allowed = tmp_path / "allowed"
    (allowed / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 56, 3), dtype=np.uint8)).save(allowed / "imgs" / f"im{i}.png")
    (allowed / "imgs" / "zbroken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    set_app_env(monkeypatch, ckpts["demo"].parent, allowed)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    return at


def goto(at: AppTest, page: str) -> AppTest:
    return at.switch_page(f"pages_impl/{page}.py").run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def n_images(at: AppTest) -> int:
    return len(at.get("image"))


def png_bytes(shape: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((*shape, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ----------------------------------------------------------------------------- groups
def test_groups_page_defaults_show_overlays_stats_and_download(app: AppTest) -> None:
    assert_clean(app)
    assert app.header[0].value == "Groups"
    # image + 3 group overlays + composite
    assert n_images(app) == 1 + 3 + 1
    assert "demo.pt" in app.sidebar.caption[0].value
    df = app.dataframe[0].value
    assert list(df.index) == [0, 1, 2]
    for col in ("entropy", "peak_share", "best_part_share", "inside_parts"):
        assert col in df.columns
    assert ((df["entropy"] >= -1e-6) & (df["entropy"] <= 1 + 1e-6)).all()
    assert (df["best_part_share"] <= df["inside_parts"] + 1e-6).all()
    assert (df["inside_parts"] <= 1 + 1e-6).all()
    assert len(app.get("download_button")) == 1


@pytest.mark.parametrize("control,value", [
    ("groups_alpha", 0.9), ("groups_cmap", "viridis"), ("groups_norm", "shared"), ("groups_norm", "absolute"),
    ("groups_interp", "nearest"), ("groups_interp", "bicubic"),
])
def test_groups_controls(app: AppTest, control: str, value: object) -> None:
    widget = app.slider(key=control) if control == "groups_alpha" else app.selectbox(key=control)
    widget.set_value(value).run()
    assert_clean(app)
    assert n_images(app) == 5


def test_groups_contour_and_pdf(app: AppTest) -> None:
    app.checkbox(key="groups_contour").check().run()
    app.slider(key="groups_mass").set_value(0.3).run()
    app.radio(key="groups_fmt").set_value("pdf").run()
    app.radio(key="groups_fmt").set_value("svg").run()
    assert_clean(app)
    assert n_images(app) == 5


def test_overlay_changes_with_alpha(app: AppTest) -> None:
    first = app.get("image")[1].value[0]
    app.slider(key="groups_alpha").set_value(0.0).run()
    assert app.get("image")[1].value[0] != first


@pytest.mark.parametrize("photo", ["chelsea", "astronaut"])
def test_sample_photos_have_no_part_numbers(app: AppTest, photo: str) -> None:
    app.sidebar.selectbox(key="img_source").set_value("sample photo").run()
    app.sidebar.selectbox(key="img_sample").set_value(photo).run()
    assert_clean(app)
    df = app.dataframe[0].value
    assert "inside_parts" not in df.columns and "entropy" in df.columns
    assert n_images(app) == 5


def test_folder_inside_root_works_and_outside_is_refused(app: AppTest, tmp_path: Path) -> None:
    app.sidebar.selectbox(key="img_source").set_value("folder").run()
    app.sidebar.text_input(key="img_folder").input(str(tmp_path / "allowed" / "imgs")).run()
    assert_clean(app)
    files = app.sidebar.selectbox(key="img_file").options
    assert files == ["im0.png", "im1.png", "im2.png", "zbroken.png"]
    app.sidebar.selectbox(key="img_file").set_value("im1.png").run()
    assert_clean(app)
    assert n_images(app) == 5
    # a corrupt file in the folder: one error line, the app keeps running
    app.sidebar.selectbox(key="img_file").set_value("zbroken.png").run()
    assert not app.exception
    assert len(app.error) == 1 and "zbroken.png" in app.error[0].value and "\n" not in app.error[0].value
    # outside every allowed root (also via ..): refused
    for outside in (str(tmp_path), str(tmp_path / "allowed" / ".." / "..")):
        app.sidebar.text_input(key="img_folder").input(outside).run()
        assert not app.exception
        assert len(app.error) == 1 and "outside the allowed roots" in app.error[0].value
        assert n_images(app) == 0


def test_folder_symlink_escape_is_refused(app: AppTest, tmp_path: Path) -> None:
    (tmp_path / "allowed" / "link").symlink_to(tmp_path, target_is_directory=True)
    app.sidebar.selectbox(key="img_source").set_value("folder").run()
    app.sidebar.text_input(key="img_folder").input(str(tmp_path / "allowed" / "link")).run()
    assert not app.exception
    assert "outside the allowed roots" in app.error[0].value


def test_checkpoint_choices_and_heads(app: AppTest) -> None:
    box = app.sidebar.selectbox(key="ckpt_choice")
    names = [Path(o).name if o.endswith(".pt") else o for o in box.options]
    assert names[0] == "demo.pt" and set(names) >= {"demo.pt", "gap.pt", "gate.pt"}
    gate = next(o for o in box.options if o.endswith("gate.pt"))
    box.set_value(gate).run()
    assert_clean(app)
    assert "gate head" in app.sidebar.caption[0].value
    assert n_images(app) == 5  # gate masks are drawn like attention
    gap = next(o for o in box.options if o.endswith("gap.pt"))
    app.sidebar.selectbox(key="ckpt_choice").set_value(gap).run()
    assert_clean(app)
    assert any("no spatial attention" in i.value for i in app.info)


# ----------------------------------------------------------------------------- uploads
def test_model_upload_good_and_bad_files(app: AppTest, ckpts: dict[str, Path], tmp_path: Path) -> None:
    app.sidebar.selectbox(key="ckpt_choice").set_value("upload a checkpoint...").run()
    assert_clean(app)
    assert "demo.pt" in app.sidebar.caption[0].value  # nothing uploaded yet: the default model
    good = ckpts["gate"].read_bytes()
    wrong = tmp_path / "wrong.pt"
    payload = torch.load(ckpts["demo"], weights_only=True)
    payload["config"]["dim"] = 96  # weights no longer fit the architecture
    torch.save(payload, wrong)
    cases = {"notes.pt": (b"hello, not a checkpoint", "not a checkpoint"),
             "cut.pt": (good[: len(good) // 2], "truncated or corrupt"),
             "wrong.pt": (wrong.read_bytes(), "do not fit the architecture"),
             "empty.pt": (b"", "empty")}
    for name, (data, expected) in cases.items():
        app.sidebar.file_uploader(key="ckpt_upload").set_value((name, data, "application/octet-stream")).run()
        assert not app.exception, name
        assert len(app.error) == 1, name
        msg = app.error[0].value
        assert name in msg and expected in msg and "\n" not in msg, msg
        assert "demo.pt" in app.sidebar.caption[0].value  # fell back, still working
        assert n_images(app) == 5
    app.sidebar.file_uploader(key="ckpt_upload").set_value(("mine.pt", good, "application/octet-stream")).run()
    assert_clean(app)
    assert "mine.pt" in app.sidebar.caption[0].value and "gate head" in app.sidebar.caption[0].value
    goto(app, "compare")
    assert_clean(app)


def test_image_upload_good_and_bad(app: AppTest) -> None:
    app.sidebar.selectbox(key="img_source").set_value("upload an image").run()
    assert not app.exception and any("Pick an image" in i.value for i in app.info)
    up = app.sidebar.file_uploader(key="img_upload")
    up.set_value(("photo.png", png_bytes((30, 70)), "image/png")).run()
    assert_clean(app)
    assert n_images(app) == 5
    for name, data, expected in (("fake.png", b"GIF89a nope", "photo"), ("text.png", b"plain text", "not an image"),
                                 ("half.png", png_bytes((64, 64))[:60], "image data")):
        app.sidebar.file_uploader(key="img_upload").set_value((name, data, "image/png")).run()
        assert not app.exception, name
        assert len(app.error) == 1 and name in app.error[0].value and "\n" not in app.error[0].value, name
        assert n_images(app) == 0


# ----------------------------------------------------------------------------- compare
def test_compare_page_neighbours_bars_and_side_by_side(app: AppTest) -> None:
    goto(app, "compare")
    assert_clean(app)
    assert app.header[0].value == "Compare queries"
    k = 5
    table = app.dataframe[0].value
    assert len(table) == k
    groups = [c for c in table.columns if c.startswith("group ")]
    assert groups == ["group 0", "group 1", "group 2"]
    # contributions sum to the similarity; sorted by similarity; distance = sqrt(2 - 2 sim)
    np.testing.assert_allclose(table[groups].sum(axis=1), table["similarity"], atol=1e-5)
    assert (np.diff(table["similarity"].to_numpy()) <= 1e-6).all()
    np.testing.assert_allclose(table["distance"], np.sqrt(np.clip(2 - 2 * table["similarity"], 0, None)), atol=1e-5)
    assert len(app.get("arrow_vega_lite_chart")) + len(app.get("vega_lite_chart")) >= 1
    # query row + 5 neighbours, each: image + composite + 3 groups; side-by-side: 3 x 2
    assert n_images(app) == 6 * 5 + 6
    assert len(app.metric) == 3


def test_compare_group_subset_and_controls(app: AppTest) -> None:
    goto(app, "compare")
    app.multiselect(key="cmp_groups").set_value([1]).run()
    assert_clean(app)
    table = app.dataframe[0].value
    assert (table["group 0"] == 0).all() and (table["group 2"] == 0).all()
    np.testing.assert_allclose(table["group 1"], table["similarity"], atol=1e-5)
    app.slider(key="cmp_k").set_value(3).run()
    app.number_input(key="cmp_query").set_value(7).run()
    app.number_input(key="cmp_query_b").set_value(9).run()
    assert_clean(app)
    assert len(app.dataframe[0].value) == 3
    assert all("#7 " not in str(i) for i in app.dataframe[0].value.index)  # the query is excluded
    app.multiselect(key="cmp_groups").set_value([]).run()
    assert not app.exception and any("at least one group" in w.value for w in app.warning)


def test_compare_sidebar_query_and_folder_gallery(app: AppTest, tmp_path: Path) -> None:
    goto(app, "compare")
    app.checkbox(key="cmp_use_sidebar").check().run()
    assert_clean(app)
    assert len(app.dataframe[0].value) == 5
    app.radio(key="cmp_gallery").set_value("folder").run()
    app.text_input(key="cmp_folder").input(str(tmp_path / "allowed" / "imgs")).run()
    assert not app.exception
    assert any("skipped 1" in w.value for w in app.warning)  # broken.png
    assert len(app.dataframe[0].value) == 3  # 3 readable images, query from the sidebar
    app.text_input(key="cmp_folder").input("/").run()
    assert not app.exception and "outside the allowed roots" in app.error[0].value


# ----------------------------------------------------------------------------- invariance
def test_invariance_page_permutation_translation_and_contrast(app: AppTest) -> None:
    goto(app, "invariance")
    assert_clean(app)
    metrics = {m.label: m.value for m in app.metric}
    assert float(metrics["max |Δ group embedding|"]) < 1e-4
    assert float(metrics["embedding cosine"]) > 0.9999
    assert float(metrics["max |Δ attention| (un-permuted)"]) < 1e-5
    assert float(metrics["embedding cosine to original"]) == pytest.approx(1.0, abs=1e-5)  # dx = dy = 0
    seed = app.number_input(key="inv_seed").value
    app.button(key="inv_reroll").click().run()
    assert app.number_input(key="inv_seed").value == seed + 1
    assert_clean(app)
    app.slider(key="inv_dx").set_value(8).run()
    app.slider(key="inv_dy").set_value(-8).run()
    app.radio(key="inv_mode").set_value("pad").run()
    app.radio(key="inv_axis").set_value("xy").run()
    assert_clean(app)
    metrics = {m.label: m.value for m in app.metric}
    assert -1.0 <= float(metrics["embedding cosine to original"]) <= 1.0 + 1e-6
    # (c): the gap and gate checkpoints are offered for contrast
    table = app.dataframe[-1].value
    assert set(table["head"]) == {"attentive", "gap", "gate"}
    assert table.loc["gap.pt", "max |Δ group| (permutation)"] < 1e-4  # average pooling is permutation invariant too
    assert len(app.get("arrow_vega_lite_chart")) + len(app.get("vega_lite_chart")) >= 2


# ----------------------------------------------------------------------------- attributions
def test_attributions_page(app: AppTest) -> None:
    goto(app, "attributions")
    assert_clean(app)
    table = app.dataframe[0].value
    assert list(table.index) == ["Integrated Gradients", "Grad-CAM"]
    rho = table["Spearman ρ with attention"]
    assert ((rho >= -1) & (rho <= 1)).all()  # the default reference is another image: both maps non-constant
    assert n_images(app) == 1 + 3  # reference, attention, IG, Grad-CAM
    assert "demo:0" not in app.get("image")[0].captions[0]  # the nearest neighbour is not the image itself
    app.selectbox(key="attr_group").set_value(2).run()
    app.radio(key="attr_ref_kind").set_value("a held-out demo image").run()
    app.number_input(key="attr_ref_index").set_value(5).run()
    assert_clean(app)
    assert n_images(app) == 4 and "demo:5" in app.get("image")[0].captions[0]
    app.select_slider(key="attr_steps").set_value(32).run()
    assert_clean(app)
    app.radio(key="attr_ref_kind").set_value("the image itself").run()
    assert_clean(app)
    assert n_images(app) == 4


def test_every_page_with_every_head(app: AppTest) -> None:
    for ckpt in app.sidebar.selectbox(key="ckpt_choice").options:
        if not ckpt.endswith(".pt"):
            continue
        app.sidebar.selectbox(key="ckpt_choice").set_value(ckpt).run()
        for page in PAGES:
            goto(app, page)
            assert_clean(app)


def test_fallback_model_without_checkpoints(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    set_app_env(monkeypatch, tmp_path / "none", tmp_path)
    monkeypatch.delenv("DGML_VIZ_DEFAULT_CKPT")
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert_clean(at)
    assert "untrained" in at.sidebar.caption[0].value
    assert n_images(at) == 5


def test_upload_size_limit(app: AppTest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DGML_VIZ_MAX_UPLOAD_MB", "0.001")  # ~1 KB
    app.sidebar.selectbox(key="img_source").set_value("upload an image").run()
    noisy = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(noisy, format="PNG")
    app.sidebar.file_uploader(key="img_upload").set_value(("big.png", noisy.getvalue(), "image/png")).run()
    assert not app.exception
    assert len(app.error) == 1 and "big.png" in app.error[0].value and "too large" in app.error[0].value
    assert n_images(app) == 0


def test_server_config_binds_locally_with_an_upload_limit() -> None:
    import tomllib

    root = APP.parents[1]
    cfg = tomllib.loads((root / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1"
    assert 1 <= cfg["server"]["maxUploadSize"] <= 1024
    make = (root / "Makefile").read_text()
    assert "dgml-viz app" in make  # the launcher passes the loopback flags from any directory
    from dgml_viz.commands.app import streamlit_command

    cmd = streamlit_command("127.0.0.1", 8501)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1" and str(APP) in cmd


def test_corrupt_shipped_checkpoint_shows_one_line_and_falls_back(ckpts: dict[str, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "demo.pt").write_bytes(ckpts["demo"].read_bytes())
    (folder / "bad.pt").write_bytes(b"PK\x03\x04 truncated zip")
    set_app_env(monkeypatch, folder, tmp_path)
    at = AppTest.from_file(str(APP), default_timeout=120).run()
    assert_clean(at)
    bad = next(o for o in at.sidebar.selectbox(key="ckpt_choice").options if o.endswith("bad.pt"))
    at.sidebar.selectbox(key="ckpt_choice").set_value(bad).run()
    assert not at.exception
    assert len(at.error) == 1 and "bad.pt" in at.error[0].value and "corrupt" in at.error[0].value
    assert "demo.pt" in at.sidebar.caption[0].value
    for page in PAGES:
        goto(at, page)
        assert not at.exception and len(at.error) == 1
