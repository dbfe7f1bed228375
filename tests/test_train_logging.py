"""Training you can watch: TensorBoard scalars/images, the probe timeline, ``dgml-viz timeline``.

A tiny synthetic run (small_cnn at 32 px, a few steps) is read back with TensorBoard's own
EventAccumulator and checked against independent sources: the loss's own term names, log.csv,
and attention maps recomputed from the saved checkpoint.
"""
from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from dgml_viz.cli import main
from dgml_viz.errors import ConfigError
from dgml_viz.model.checkpoint import load_checkpoint
from dgml_viz.train import train
from dgml_viz.train.config import config_from_dict
from dgml_viz.train.logging_tb import NUM_PROBES, Timeline, probe_indices

K = 3
EPOCHS = 3


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """tests/test_validation.py's fast config, K = 3, evaluated every epoch."""
    cfg = {"model": {"backbone": "small_cnn", "head": "attentive", "groups": K, "dim": 24, "reduction": 4,
                     "pretrained": False, "freeze_bn": False, "backbone_kwargs": {"width": 8}},
           "data": {"name": "synthetic", "size": 32, "resize": 32, "mode": "full", "mean": [0.5] * 3,
                    "std": [0.25] * 3, "kwargs": {"image_size": 32, "samples_per_class": 2}},
           "train": {"epochs": EPOCHS, "batch_classes": 4, "batch_per_class": 2, "steps_per_epoch": 2, "lr": 1e-3,
                     "lr_steps": [2], "num_workers": 0, "amp": False, "device": "cpu", "progress": False,
                     "lambda_spread": 0.5},
           "eval": {"nmi": False, "ks": [1]}}
    for key, value in overrides.items():
        sec, name = key.split(".")
        cfg[sec][name] = value
    return cfg


def read_log(run: Path) -> list[dict[str, str]]:
    with open(run / "log.csv") as fh:
        return list(csv.DictReader(fh))


def scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    ea = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]} | {
        "__images__": ea.Tags()["images"]}  # type: ignore[dict-item]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("watch") / "run"
    train(tiny_config(), out)
    return out


def test_event_files_hold_every_loss_term_lr_and_per_group_recall(run: Path) -> None:
    from dgml_viz.train.loop import build_loss

    # the term names come from the loss itself, not from a list in the test
    groups = torch.nn.functional.normalize(torch.randn(8, K, 6), dim=-1)
    terms = build_loss(config_from_dict(tiny_config()), K, 4)(groups, torch.arange(4).repeat(2), torch.full((8, K, 2, 2), 0.25))
    got = scalars(run)
    rows = read_log(run)
    steps = [int(r["step"]) for r in rows]
    for name in terms:
        tag = f"loss/{name}"
        assert tag in got, tag
        col = "loss" if name == "total" else f"{name}_loss"
        assert [s for s, _ in got[tag]] == steps
        assert [v for _, v in got[tag]] == pytest.approx([float(r[col]) for r in rows], rel=1e-6)
    for g in range(K):
        tag = f"eval_group/recall@1/group{g}"
        assert [v for _, v in got[tag]] == pytest.approx([float(r[f"group{g}_recall@1"]) for r in rows], abs=1e-7)
    assert [v for _, v in got["eval/recall@1"]] == pytest.approx([float(r["recall@1"]) for r in rows], abs=1e-7)
    # one lr series per optimizer group; MultiStepLR at epoch 2 (gamma 0.3) as in log.csv
    assert {"lr/backbone", "lr/keyval", "lr/query", "lr/loss"} <= set(got)
    assert [v for _, v in got["lr/backbone"]] == pytest.approx([float(r["lr"]) for r in rows])
    assert [v for _, v in got["lr/backbone"]] == pytest.approx([1e-3, 1e-3, 3e-4])
    # attention diagnostics and (synthetic has part masks) localisation, per group / pair
    for g in range(K):
        for tag in (f"attention/entropy/group{g}", f"parts/share/group{g}", f"parts/pointing/group{g}"):
            assert len(got[tag]) == EPOCHS, tag
            assert all(0.0 <= v <= 1.0 for _, v in got[tag]), tag
    assert {"attention/overlap/0-1", "attention/top50_iou/1-2", "groups/cosine/0-2"} <= set(got)
    assert got["__images__"] == [f"probes/group{g}" for g in range(K)]


def test_timeline_holds_the_probe_maps_of_every_epoch(run: Path) -> None:
    tl = Timeline.load(run / "timeline.npz")
    cfg = config_from_dict(tiny_config())
    from dgml_viz.train.loop import build_datasets

    _, test_ds, _, transform = build_datasets(cfg)
    assert tl.indices.tolist() == probe_indices(len(test_ds), 0)[:NUM_PROBES]
    assert tl.images.shape == (NUM_PROBES, 32, 32, 3) and tl.images.dtype == np.uint8
    assert tl.attention.shape == (EPOCHS, NUM_PROBES, K, 4, 4)  # stride-8 grid of a 32 px input
    assert tl.epochs.tolist() == [1, 2, 3] and tl.steps.tolist() == [2, 4, 6]
    np.testing.assert_allclose(tl.attention.sum(axis=(-2, -1)), 1.0, atol=1e-5)
    # the last row is the final model's attention on those items, recomputed here from last.pt
    model = load_checkpoint(run / "last.pt").eval()
    x = torch.stack([test_ds[int(i)]["image"] for i in tl.indices])
    with torch.no_grad():
        ref = model(x).attention.numpy()
    np.testing.assert_allclose(tl.attention[-1], ref, atol=1e-6)
    # the probe images are the inputs un-normalised: (x * std + mean) * 255
    mean, std = np.array(transform["mean"]), np.array(transform["std"])
    rgb = (x.permute(0, 2, 3, 1).numpy() * std + mean) * 255
    assert np.abs(tl.images.astype(float) - rgb.clip(0, 255)).max() <= 0.5 + 1e-3
    # entropy statistic == explicit -sum a log a / log(hw) over the 64 held-out images, last epoch
    idx = probe_indices(len(test_ds), 0)
    with torch.no_grad():
        att = model(torch.stack([test_ds[i]["image"] for i in idx])).attention.double()
    ent = -(att * att.clamp_min(1e-30).log()).sum(dim=(-2, -1)) / math.log(16)
    assert tl.stat("attention/entropy/group1")[-1] == pytest.approx(ent[:, 1].mean().item(), abs=1e-5)


def test_figure_is_written_and_the_command_redraws_it(run: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    png, pdf = run / "attention_timeline.png", run / "attention_timeline.pdf"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
    full = Image.open(png).size
    png.unlink()
    pdf.unlink()
    assert main(["timeline", "--run-dir", str(run)]) == 0
    assert Image.open(png).size == full and pdf.is_file()
    assert capsys.readouterr().out.split() == [str(png), str(pdf)]
    # one evaluation row and one probe, elsewhere: 2 rows x K columns instead of (1 + 3) x (K * 4) at the
    # same paper width, so the figure's height / width ratio about doubles
    assert main(["timeline", "--run-dir", str(run), "--out", str(tmp_path / "fig"), "--max-rows", "1",
                 "--probes", "0"]) == 0
    small = Image.open(tmp_path / "fig" / "attention_timeline.png").size
    assert small[0] == full[0] and 1.5 < (small[1] / small[0]) / (full[1] / full[0]) < 2.5


@pytest.mark.parametrize("case", ["missing", "no_timeline", "corrupt", "bad_probe", "bad_rows"])
def test_bad_run_dir_is_one_line_exit_2(case: str, run: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "r"
    args = ["timeline", "--run-dir", str(target)]
    if case != "missing":
        target.mkdir()
    if case == "corrupt":
        (target / "timeline.npz").write_bytes(b"PK\x03\x04 not a zip")
    if case in ("bad_probe", "bad_rows"):
        args[-1] = str(run)
        args += ["--probes", "7"] if case == "bad_probe" else ["--max-rows", "0"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dgml-viz timeline: error:") and "\n" not in err and "Traceback" not in err


def test_opt_out_writes_no_tensorboard_and_the_key_is_validated(tmp_path: Path) -> None:
    train(tiny_config(**{"train.epochs": 1, "train.steps_per_epoch": 1, "train.tensorboard": False}), tmp_path / "r")
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert "log.csv" in names and not names & {"tb", "timeline.npz", "attention_timeline.png"}
    with pytest.raises(ConfigError, match="train.tensorboard"):
        config_from_dict(tiny_config(**{"train.tensorboard": "yes"}))


def test_trainer_logs_whatever_terms_the_loss_returns_and_resume_keeps_one_timeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dgml_viz.train.loop as loop

    build = loop.build_loss

    class WithExtra(torch.nn.Module):
        """The configured loss plus one more named term (the mean group norm), added to the total."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, groups, labels, attention=None):  # type: ignore[no-untyped-def]
            out = dict(self.inner(groups, labels, attention))
            out["extra"] = groups.norm(dim=-1).mean()
            out["total"] = out["total"] + 0.0 * out["extra"]
            return out

        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.inner, name)

    monkeypatch.setattr(loop, "build_loss", lambda *a, **kw: WithExtra(build(*a, **kw)))

    class Killed(Exception):
        pass

    def kill(epoch: int, model: torch.nn.Module, row: dict) -> None:
        if epoch == 2:
            raise Killed

    cfg = tiny_config()
    with pytest.raises(Killed):
        train(copy.deepcopy(cfg), tmp_path / "r", on_epoch_end=kill)
    train(copy.deepcopy(cfg), tmp_path / "r", resume=True)
    rows = read_log(tmp_path / "r")
    assert [float(r["extra_loss"]) for r in rows] == pytest.approx([1.0] * EPOCHS, abs=1e-5)  # unit groups
    got = scalars(tmp_path / "r")
    assert [s for s, _ in got["loss/extra"]] == [2, 4, 6]  # the resumed run purged nothing it kept
    tl = Timeline.load(tmp_path / "r" / "timeline.npz")
    assert tl.epochs.tolist() == [1, 2, 3] and tl.attention.shape[0] == EPOCHS


def test_timeline_append_truncate_round_trip(tmp_path: Path) -> None:
    tl = Timeline(images=np.zeros((2, 8, 8, 3), np.uint8), indices=np.array([5, 1]))
    maps = np.full((2, 3, 2, 2), 0.25, np.float32)
    tl.append(1, 10, maps, {"a": 1.0})
    tl.append(2, 20, maps * 1, {"a": 2.0, "b": 3.0})  # a statistic that appears later: NaN before
    assert tl.stat_names == ["a", "b"] and np.isnan(tl.stat("b")[0]) and tl.stat("b")[1] == 3.0
    tl.save(tmp_path / "t.npz")
    back = Timeline.load(tmp_path / "t.npz")
    assert back.epochs.tolist() == [1, 2] and back.attention.shape == (2, 2, 3, 2, 2)
    np.testing.assert_array_equal(back.stats, tl.stats)
    back.truncate(1)
    assert back.epochs.tolist() == [1] and back.steps.tolist() == [10] and back.stat("a").tolist() == [1.0]


def test_select_rows_keeps_first_and_last_evenly() -> None:
    from dgml_viz.render.timeline import select_rows

    assert select_rows(5, 12) == [0, 1, 2, 3, 4]
    for n in (13, 50, 101):
        rows = select_rows(n, 6)
        assert rows[0] == 0 and rows[-1] == n - 1 and len(rows) == 6 and rows == sorted(set(rows))
        gaps = np.diff(rows)
        assert gaps.max() - gaps.min() <= 1
    assert select_rows(0) == [] and select_rows(7, 1) == [6]
