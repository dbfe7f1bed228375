"""The Compare page on an on-disk index (AppTest): FAISS neighbours equal a brute force over the stored
groups, overlays come from the stored maps without a forward pass, more than 500 images, error lines."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgml_viz.data.synthetic import synthetic_transform
from dgml_viz.index.builder import build_index
from dgml_viz.index.store import open_index
from dgml_viz.model import create_model
from dgml_viz.model.checkpoint import save_checkpoint
from dgml_viz.model.network import GroupingNet

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"
N_IMAGES = 520  # above the old in-memory cap of 500


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("appix")
    ckpts = root / "ckpts"
    ckpts.mkdir()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("small_cnn", groups=3, dim=48, head="attentive", width=8).eval()
    ckpt = save_checkpoint(model, ckpts / "demo.pt", transform=synthetic_transform(64))
    allowed = root / "allowed"
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        folder = allowed / "imgs" / f"class{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 255, (24 + i % 9, 32, 3), dtype=np.uint8)
        img[:, : 8 * (i % 4) + 4] = (60 * (i % 4), 200, 90)  # a class-coloured band
        Image.fromarray(img).save(folder / f"im{i:04d}.png")
    index = allowed / "indexes" / "ix"
    build_index(ckpt, allowed / "imgs", index, batch_size=64, progress=False)
    (allowed / "not_an_index").mkdir()
    return {"ckpt": ckpt, "allowed": allowed, "index": index}


@pytest.fixture
def app(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("DGML_VIZ_CHECKPOINT_DIR", str(env["ckpt"].parent))
    monkeypatch.setenv("DGML_VIZ_DEFAULT_CKPT", str(env["ckpt"]))
    monkeypatch.setenv("DGML_VIZ_ALLOWED_ROOTS", str(env["allowed"]))
    monkeypatch.setenv("DGML_VIZ_INDEX_DIR", str(env["allowed"] / "indexes"))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("pages_impl/compare.py").run()
    return at


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def brute_force(groups: np.ndarray, q: int, sel: list[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = np.einsum("kd,nkd->nk", groups[q].astype(np.float64), groups.astype(np.float64))[:, sel].mean(1)
    sims[q] = -np.inf
    order = np.argsort(-sims)[:k]
    return order, sims[order]


def test_index_gallery_neighbours_and_overlays_without_a_forward(app: AppTest, env: dict[str, Path],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    forwards = []
    real = GroupingNet.forward
    monkeypatch.setattr(GroupingNet, "forward", lambda self, x: forwards.append(len(x)) or real(self, x))
    app.radio(key="cmp_gallery").set_value("index").run()
    assert_clean(app)
    assert any(f"index: {N_IMAGES} images" in c.value for c in app.caption)
    groups = np.asarray(open_index(env["index"]).groups)
    for q, sel in ((0, [0, 1, 2]), (N_IMAGES - 1, [1]), (7, [0, 2])):
        app.number_input(key="cmp_query").set_value(q).run()
        app.multiselect(key="cmp_groups").set_value(sel).run()
        assert_clean(app)
        table = app.dataframe[0].value
        assert len(table) == 5
        _, want = brute_force(groups, q, sel, 5)
        np.testing.assert_allclose(table["similarity"], want, atol=1e-5)
        cols = [f"group {g}" for g in range(3)]
        np.testing.assert_allclose(table[cols].sum(axis=1), table["similarity"], atol=1e-5)
        assert all((table[f"group {g}"] == 0).all() for g in range(3) if g not in sel)
        assert "same class" in table.columns  # labels from the class folders
    # query row + 5 neighbours, each image + composite + 3 groups; side by side 3 x 2
    assert len(app.get("image")) == 6 * 5 + 6
    assert forwards == []  # everything drawn from the stored maps
    from dgml_viz.model.checkpoint import load_checkpoint

    load_checkpoint(env["ckpt"])(torch.zeros(2, 3, 64, 64))
    assert forwards == [2]  # the counter does see forward passes


def test_index_sidebar_query_uses_the_index_checkpoint(app: AppTest) -> None:
    app.radio(key="cmp_gallery").set_value("index").run()
    app.checkbox(key="cmp_use_sidebar").check().run()
    assert_clean(app)
    assert len(app.dataframe[0].value) == 5


def test_index_picker_errors_are_one_line(app: AppTest, env: dict[str, Path]) -> None:
    app.radio(key="cmp_gallery").set_value("index").run()
    app.selectbox(key="cmp_index_pick").set_value("another folder...").run()
    assert not app.exception and any("Choose a gallery" in i.value for i in app.info)
    app.text_input(key="cmp_index").input(str(env["allowed"] / "not_an_index")).run()
    assert not app.exception and "not a dgml_viz index" in app.error[0].value
    app.text_input(key="cmp_index").input("/").run()
    assert not app.exception and "outside the allowed roots" in app.error[0].value
    app.text_input(key="cmp_index").input(str(env["index"])).run()
    assert_clean(app)
    assert len(app.dataframe[0].value) == 5
