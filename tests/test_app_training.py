"""The app's Training page (AppTest): a run folder under the allowed roots shows its curves and timeline;
outside the roots, not a run, or a run without a timeline: one line, no traceback."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dgml_viz.train import train
from dgml_viz.train.logging_tb import Timeline, read_history
from test_app import APP, assert_clean, write_checkpoints
from test_train_logging import tiny_config

st_testing = pytest.importorskip("streamlit.testing.v1")
AppTest = st_testing.AppTest


@pytest.fixture(scope="module")
def allowed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("allowed")
    write_checkpoints(root / "ckpts")
    train(tiny_config(**{"train.epochs": 2}), root / "run")
    train(tiny_config(**{"train.epochs": 1, "train.tensorboard": False}), root / "plain")
    return root


@pytest.fixture
def page(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("DGML_VIZ_CHECKPOINT_DIR", str(allowed / "ckpts"))
    monkeypatch.setenv("DGML_VIZ_DEFAULT_CKPT", str(allowed / "ckpts" / "demo.pt"))
    monkeypatch.setenv("DGML_VIZ_ALLOWED_ROOTS", str(allowed))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    return at.switch_page("pages_impl/training.py").run()


def open_run(at: AppTest, folder: Path | str) -> AppTest:
    return at.text_input(key="train_run").input(str(folder)).run()


def timeline_images(at: AppTest) -> list:
    """The page's timeline picture(s) (the sidebar may show other images)."""
    return [im for im in at.get("image") if any("epochs logged" in c for c in im.captions)]


def test_run_folder_shows_curves_and_the_timeline(page: AppTest, allowed: Path) -> None:
    at = open_run(page, allowed / "run")
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["epochs"] == "2" and metrics["steps"] == "4"
    assert metrics["last recall@1"] == f"{read_history(allowed / 'run')[-1]['recall@1']:.4f}"
    assert at.multiselect(key="train_terms").value == ["loss", "metric_loss"]
    # the timeline: one image, 1 header + 2 epoch rows of (3 groups x 4 probes)
    assert len(timeline_images(at)) == 1
    tl = Timeline.load(allowed / "run" / "timeline.npz")
    assert len(tl) == 2 and tl.attention.shape[1] == len(at.multiselect(key="train_probes").value) == 4
    # the statistic families come from the timeline; synthetic data has part masks
    assert "parts/share" in at.selectbox(key="train_stat").options
    assert at.selectbox(key="train_stat").value == "parts/share"
    # fewer probes and rows: a smaller picture is drawn, no error
    at = at.multiselect(key="train_probes").set_value([0]).run()
    at = at.number_input(key="train_rows").set_value(1).run()
    assert_clean(at)
    assert len(timeline_images(at)) == 1


def test_timeline_png_has_the_figure_layout(allowed: Path) -> None:
    from dgml_viz.train.logging_tb import timeline_png

    big = Image.open(io.BytesIO(timeline_png(allowed / "run")))
    small = Image.open(io.BytesIO(timeline_png(allowed / "run", probes=[0], max_rows=1)))
    assert big.width == small.width  # same paper width
    # (1 header + 2 rows) x 12 columns vs 2 rows x 3 columns: the aspect grows by about (2/3) / (3/12) = 2.7
    ratio = (small.height / small.width) / (big.height / big.width)
    assert 2.0 < ratio < 3.4, ratio
    assert np.asarray(big).std() > 10  # drawn, not blank


@pytest.mark.parametrize("case", ["outside", "missing", "not_a_run"])
def test_bad_folders_are_one_line(case: str, page: AppTest, allowed: Path, tmp_path: Path) -> None:
    folder = {"outside": tmp_path, "missing": allowed / "nope", "not_a_run": allowed / "ckpts"}[case]
    at = open_run(page, folder)
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert {"outside": "outside the allowed roots", "missing": "no such folder",
            "not_a_run": "not a training run"}[case] in at.error[0].value


def test_run_without_timeline_shows_curves_and_says_why(page: AppTest, allowed: Path) -> None:
    at = open_run(page, allowed / "plain")
    assert_clean(at)
    assert any("no timeline.npz" in i.value for i in at.info)
    assert not timeline_images(at)


def test_empty_input_asks_for_a_folder(page: AppTest) -> None:
    assert_clean(page)
    assert any("Enter a training run folder" in i.value for i in page.info)
