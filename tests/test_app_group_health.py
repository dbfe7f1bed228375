"""The Groups page's group-health check (AppTest): one st.warning line per flagged group or pair.

Known answers come from tiny small_cnn checkpoints edited so the answer is certain: group 1's
query is a copy of group 0's (identical maps and vectors: a duplicate) and group 2's query is zero
(exactly uniform attention: dead); being untrained, groups 0 and 1 are flagged too (their vectors
barely change with the image). On the shipped checkpoints: the demo model comes out clean, the
gate baseline's unused group 1 is the one flagged.
"""
from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app" / "main.py"
SIZE = 64


def _edited(path: Path, **meta: object) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_model("small_cnn", groups=3, dim=48, head="attentive", width=8).eval()
    with torch.no_grad():
        model.head.queries[1] = model.head.queries[0]
        model.head.queries[2] = 0.0
    return save_checkpoint(model, path, transform=synthetic_transform(SIZE), **meta)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("health_ckpts")
    out = {"edited": _edited(d / "edited.pt"),
           "edited_demo": _edited(d / "edited_demo.pt",
                                  recipe={"data": {"name": "synthetic", "kwargs": {"image_size": SIZE, "seed": 0}}})}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        gap = create_model("small_cnn", groups=1, dim=48, head="gap", width=8).eval()
    out["gap"] = save_checkpoint(gap, d / "gap.pt", transform=synthetic_transform(SIZE))
    return out


def _app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ckpt: Path) -> AppTest:
    allowed = tmp_path / "allowed"
    (allowed / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 56, 3), dtype=np.uint8)).save(allowed / "imgs" / f"im{i}.png")
    monkeypatch.setenv("DGML_VIZ_CHECKPOINT_DIR", str(ckpt.parent))
    monkeypatch.setenv("DGML_VIZ_DEFAULT_CKPT", str(ckpt))
    monkeypatch.setenv("DGML_VIZ_ALLOWED_ROOTS", str(allowed))
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


def _health_caption(at: AppTest) -> str:
    (cap,) = [c.value for c in at.caption if c.value.startswith("Judged on")]
    return cap


def test_edited_model_flags_the_dead_and_the_duplicated_group(ckpts, monkeypatch, tmp_path) -> None:
    at = _app(monkeypatch, tmp_path, ckpts["edited"])
    assert any(s.value == "Group health" for s in at.subheader)
    lines = _warnings(at)
    dead = [w for w in lines if w.startswith("group 2 dead")]
    dup = [w for w in lines if w.startswith("groups 0 and 1 duplicated")]
    assert len(dead) == 1 and "near-uniform" in dead[0]
    assert len(dup) == 1 and "share 1.000" in dup[0]
    assert all("\n" not in w for w in lines)
    assert len(lines) == len(set(lines))  # one line per flagged group or pair
    # not trained on the demo benchmark: its labels are not used
    assert "labels not used" in _health_caption(at)


def test_labels_are_used_for_a_model_trained_on_the_demo_benchmark(ckpts, monkeypatch, tmp_path) -> None:
    at = _app(monkeypatch, tmp_path, ckpts["edited_demo"])
    assert "and their classes" in _health_caption(at)
    assert sum(w.startswith("groups 0 and 1 duplicated") for w in _warnings(at)) == 1


def test_folder_source_checks_the_folder_images(ckpts, monkeypatch, tmp_path) -> None:
    at = _app(monkeypatch, tmp_path, ckpts["edited"])
    at.sidebar.selectbox(key="img_source").set_value("folder").run()
    at.sidebar.text_input(key="img_folder").input(str(tmp_path / "allowed" / "imgs")).run()
    assert not at.exception and not at.error
    assert "the 6 images of the folder" in _health_caption(at)
    assert any(w.startswith("group 2 dead") for w in _warnings(at))


def test_head_without_maps_gets_embedding_signals_only(ckpts, monkeypatch, tmp_path) -> None:
    at = _app(monkeypatch, tmp_path, ckpts["gap"])
    assert any(s.value == "Group health" for s in at.subheader)
    assert "no attention maps" in _health_caption(at).lower()


def test_shipped_gate_baseline_shows_its_groups_duplicated(monkeypatch, tmp_path) -> None:
    """The card: each of the gate baseline's groups retrieves alone at R@1 0.998, as the concatenation does
    (tests/test_group_health.py checks the redundancy independently): the page names every pair."""
    gate = ROOT / "checkpoints" / "baselines" / "synthetic_gate.pt"
    if not gate.exists():
        pytest.skip("no shipped gate baseline")
    at = _app(monkeypatch, tmp_path, gate)
    lines = _warnings(at)
    assert sorted(w.split(":")[0] for w in lines) == [f"groups {i} and {j} duplicated" for i, j in ((0, 1), (0, 2), (1, 2))]
    assert "and their classes" in _health_caption(at)


def test_shipped_demo_model_is_healthy(monkeypatch, tmp_path) -> None:
    demo = ROOT / "checkpoints" / "demo.pt"
    if not demo.exists():
        pytest.skip("no shipped demo checkpoint")
    at = _app(monkeypatch, tmp_path, demo)
    assert _warnings(at) == []
    assert any("No dead, suspect or duplicated groups" in s.value for s in at.success)
    assert "and their classes" in _health_caption(at)
