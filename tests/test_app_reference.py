"""The app opens the reference implementation's files (XinyiXuXD/DGML-master) directly.

``DGML_VIZ_CHECKPOINT_DIR`` points at a folder laid out like that code's training output
(``<save_path>/<run>/checkpoint_*.pth.tar``) holding files written the way its
``set_checkpoint`` writes them (``test_reference_support``): a GoogLeNet ``LearnQ_fen`` file
(the reference's default backbone, the smallest the builders have), a file with a tensor
missing, and a payload file that would run a shell command if unpickled normally.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reference_support import RefNet, make_backbone, make_layer, write_reference_file

from dgml_viz.appkit import settings, sources, views
from dgml_viz.errors import CheckpointError
from dgml_viz.model.reference import read_reference_file
from dgml_viz.model import default_transform
from dgml_viz.model.checkpoint import load_checkpoint, open_any_checkpoint, open_any_checkpoint_bytes

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest

APP = Path(__file__).resolve().parents[1] / "app" / "main.py"
OPT = {"arch": "googlenet", "group_name": "LearnQ_fen", "k": 3, "full_dim": 48, "reduction": 8,
       "dataset": "cub200", "n_epochs": 100, "epoch": 3}
GOOD = "run_a/checkpoint_Test_discriminative_e_recall@1.pth.tar"
BROKEN = "run_b/checkpoint_Test_discriminative_nmi.pth.tar"
EVIL = "run_b/evil.pth"


class _System:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.fixture(scope="module")
def ref_net() -> RefNet:
    trunk, c = make_backbone("googlenet")
    torch.manual_seed(0)
    return RefNet(trunk, make_layer("LearnQ_fen", c, OPT["k"], OPT["full_dim"], OPT["reduction"]), OPT["arch"]).eval()


@pytest.fixture(scope="module")
def save_path(tmp_path_factory: pytest.TempPathFactory, ref_net: RefNet) -> Path:
    root = tmp_path_factory.mktemp("save_path")
    for run in ("run_a", "run_b"):
        (root / run).mkdir()
    good = write_reference_file(root / GOOD, ref_net, OPT, cuda=True)
    # the same network with one query tensor missing
    state = {"module." + k: v for k, v in read_reference_file(good).state_dict.items()
             if k != "model.1.que_embedding.2.weight"}
    torch.save({"state_dict": state, "opt": dict(OPT)}, root / BROKEN)  # opt says k=3
    # a legacy-format torch file whose opt calls os.system when unpickled normally
    torch.save({"state_dict": {}, "opt": _System(f"touch {root / 'pwned'}")}, root / EVIL,
               _use_new_zipfile_serialization=False)
    return root


@pytest.fixture
def app(save_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("DGML_VIZ_CHECKPOINT_DIR", str(save_path))
    monkeypatch.delenv("DGML_VIZ_DEFAULT_CKPT", raising=False)
    monkeypatch.setenv("DGML_VIZ_ALLOWED_ROOTS", str(save_path))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    return at


def _app_input(size: int, index: int = 0) -> torch.Tensor:
    """The tensor the app feeds for held-out demo image ``index`` (default image source)."""
    image = sources.demo_image(sources.demo_dataset(size), index)
    return views.prepare(image.rgb, default_transform(size)).tensor  # the reference's eval transform


# ----------------------------------------------------------------------------- listing
def test_listing_is_recursive_but_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DGML_VIZ_CHECKPOINT_DIR", str(tmp_path))
    names = ["demo.pt", "a/checkpoint_x.pth.tar", "a/b/old.pth", "a/b/c/deep.pt", "a/b/c/d/too_deep.pt",
             "a/notes.txt", "a/model.tar", ".hidden/x.pt", "a/.x.pt"]
    for n in names:
        (tmp_path / n).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "loop").symlink_to(tmp_path, target_is_directory=True)  # followed, it would never end
    found = [p.relative_to(tmp_path).as_posix() for p in settings.list_checkpoints()]
    assert found == ["demo.pt", "a/checkpoint_x.pth.tar", "a/b/old.pth", "a/b/c/deep.pt"]
    assert [p.name for p in settings.list_checkpoints(max_depth=1)] == ["demo.pt", "checkpoint_x.pth.tar"]
    assert len(settings.list_checkpoints(limit=2)) == 2
    assert settings.checkpoint_label(tmp_path / "a" / "b" / "old.pth") == "a/b/old.pth"


# ----------------------------------------------------------------------------- library
def test_open_any_checkpoint_equals_dgml_viz_convert(save_path: Path, tmp_path: Path) -> None:
    """In memory, the same conversion as ``dgml-viz convert`` (same weights, transform, source meta)."""
    from dgml_viz.cli import main

    out = tmp_path / "converted.pt"
    assert main(["convert", str(save_path / GOOD), str(out)]) == 0
    written, live = load_checkpoint(out), open_any_checkpoint(save_path / GOOD)
    assert written.state_dict().keys() == live.state_dict().keys()
    for k, v in written.state_dict().items():
        assert torch.equal(v, live.state_dict()[k]), k
    assert written.transform == live.transform and written.config == live.config
    assert live.meta["source_sha256"] == written.meta["source_sha256"]
    assert live.meta["reference_group_layer"] == "LearnQ_fen"
    upload = open_any_checkpoint_bytes((save_path / GOOD).read_bytes(), "mine.pth.tar")
    assert upload.meta["converted_from"] == "mine.pth.tar"
    with pytest.raises(CheckpointError, match=r"^up\.pth\.tar: .*missing model\.1\.que_embedding\.2\.weight"):
        open_any_checkpoint_bytes((save_path / BROKEN).read_bytes(), "up.pth.tar")


# ----------------------------------------------------------------------------- app
def test_picker_lists_reference_files_and_groups_page_shows_their_attention(app: AppTest, save_path: Path,
                                                                            ref_net: RefNet) -> None:
    assert not app.exception, [e.value for e in app.exception]
    box = app.sidebar.selectbox(key="ckpt_choice")
    assert box.options == [GOOD, BROKEN, EVIL, "upload a checkpoint..."]  # labels: paths under the folder
    box.set_value(str(save_path / GOOD)).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    caption = app.sidebar.caption[0].value
    assert GOOD in caption and "googlenet + attentive head, K=3, d=16" in caption and "converted in memory" in caption
    assert app.header[0].value == "Groups"
    assert len(app.get("image")) == 1 + 3 + 1  # image, 3 group overlays, composite
    # the page's numbers are those of the reference formulation (its per-query loop) on the same input
    with torch.no_grad():
        _, att = ref_net(_app_input(224))
    peak = att.flatten(2).amax(-1)[0].numpy()
    df = app.dataframe[0].value
    np.testing.assert_allclose(df["peak_share"].to_numpy(), peak, atol=1e-5)
    assert ((df["entropy"] > 0) & (df["entropy"] <= 1 + 1e-6)).all()


def test_broken_and_payload_reference_files_show_one_line(app: AppTest, save_path: Path) -> None:
    box = app.sidebar.selectbox(key="ckpt_choice")
    fallback = app.sidebar.caption[0].value.split("**")[1]  # the model shown when a choice fails
    for rel, needle in ((BROKEN, "missing model.1.que_embedding.2.weight"), (EVIL, "refused pickled global")):
        app.sidebar.selectbox(key="ckpt_choice").set_value(str(save_path / rel)).run()
        assert not app.exception, rel
        assert len(app.error) == 1, [e.value for e in app.error]
        msg = app.error[0].value
        assert rel.split("/")[-1] in msg and needle in msg and "\n" not in msg, msg
        assert fallback in app.sidebar.caption[0].value  # fell back, still working
        assert len(app.get("image")) == 5
    assert box.options  # the picker itself is unaffected
    assert not (save_path / "pwned").exists()


def test_upload_of_reference_files(app: AppTest, save_path: Path) -> None:
    app.sidebar.selectbox(key="ckpt_choice").set_value("upload a checkpoint...").run()
    up = app.sidebar.file_uploader(key="ckpt_upload")
    for rel, needle in ((EVIL, "refused pickled global"), (BROKEN, "missing model.1.que_embedding.2.weight")):
        name = Path(rel).name
        app.sidebar.file_uploader(key="ckpt_upload").set_value(
            (name, (save_path / rel).read_bytes(), "application/octet-stream")).run()
        assert not app.exception, name
        assert len(app.error) == 1 and name in app.error[0].value and needle in app.error[0].value, app.error
        assert "\n" not in app.error[0].value and len(app.get("image")) == 5
    assert not (save_path / "pwned").exists()
    up = app.sidebar.file_uploader(key="ckpt_upload")
    up.set_value(("mine.pth.tar", (save_path / GOOD).read_bytes(), "application/octet-stream")).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    caption = app.sidebar.caption[0].value
    assert "mine.pth.tar" in caption and "LearnQ_fen" in caption and "converted in memory" in caption
    assert len(app.get("image")) == 5
