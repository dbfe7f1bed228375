"""The one validation layer: bad checkpoint configs/transforms/state entries, bad training
overrides and devices, mismatched resumes and bad app input all end in one line, never a traceback.

Bad checkpoints are written the way another program would: ``torch.save`` of a plain dict
edited by hand, not through our ``save_checkpoint``.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from dgml_viz.cli import main
from dgml_viz.errors import CheckpointError, ConfigError
from dgml_viz.model.checkpoint import load_checkpoint, read_checkpoint_info
from dgml_viz.train import load_config, train
from dgml_viz.validation import check_device, check_transform

from conftest import CROP_TRANSFORM


def _raw(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt, weights_only=True)


def _edited(ckpt: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None], name: str = "bad.pt") -> Path:
    payload = copy.deepcopy(_raw(ckpt))
    edit(payload)
    path = tmp_path / name
    torch.save(payload, path)
    return path


def _set(section: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(p: dict[str, Any]) -> None:
        p[section][key] = value
    return edit


def _drop(section: str, key: str) -> Callable[[dict[str, Any]], None]:
    def edit(p: dict[str, Any]) -> None:
        del p[section][key]
    return edit


BAD_CHECKPOINTS = {
    "reduction=0": (_set("config", "reduction", 0), "reduction must be an integer in [1, 65536]"),
    "negative width": (_set("config", "backbone_kwargs", {"width": -4}), "small_cnn width must be an integer >= 1, got -4"),
    "zero width": (_set("config", "backbone_kwargs", {"width": 0}), "small_cnn width must be an integer >= 1"),
    "zero width, channel head": (lambda p: (p["config"].update(head="channel", backbone_kwargs={"width": 0})),
                                 "small_cnn width must be an integer >= 1"),
    "huge width": (_set("config", "backbone_kwargs", {"width": 10 ** 6}), "parameters (limit"),
    "dim=2**40": (_set("config", "dim", 2 ** 40), "dim must be an integer"),
    "groups as text": (_set("config", "groups", "3"), "groups must be an integer"),
    "groups=True": (_set("config", "groups", True), "groups must be an integer"),
    "unknown head": (_set("config", "head", "nope"), "unknown head"),
    "unknown backbone": (_set("config", "backbone", "nope"), "unknown backbone"),
    "unknown key": (_set("config", "colour", "red"), "unknown model config key"),
    "non-tensor state": (_set("state_dict", "head.query", "not a tensor"), "not a tensor"),
    "transform size 200000": (_set("transform", "size", 200000), "transform.size must be an integer in [8, 4096]"),
    "transform std 0": (_set("transform", "std", [0.2, 0.0, 0.2]), "transform.std must be a number > 0"),
    "transform mean nan": (_set("transform", "mean", [float("nan")] * 3), "transform.mean"),
    "transform mode": (_set("transform", "mode", "zoom"), "transform.mode must be one of"),
    "metrics list": (lambda p: p.update(metrics=[1, 2]), "metrics must be a mapping"),
    "class names": (lambda p: p.update(class_names=[1, 2]), "class_names must be a list of strings"),
}


@pytest.mark.parametrize("case", list(BAD_CHECKPOINTS))
def test_bad_checkpoint_values_are_one_line_errors(ckpt: Path, tmp_path: Path, case: str) -> None:
    edit, msg = BAD_CHECKPOINTS[case]
    path = _edited(ckpt, tmp_path, edit)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert msg in text and str(path) in text and "\n" not in text


@pytest.mark.parametrize("case", ["reduction=0", "negative width", "non-tensor state", "transform size 200000"])
@pytest.mark.parametrize("command", ["info", "heatmaps", "evaluate", "gallery"])
def test_every_command_reports_bad_checkpoints_in_one_line(ckpt: Path, tmp_path: Path, capsys, case: str,
                                                           command: str) -> None:
    path = _edited(ckpt, tmp_path, BAD_CHECKPOINTS[case][0])
    img = tmp_path / "img.png"
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(img)
    argv = {"info": ["info", str(path)],
            "heatmaps": ["heatmaps", "--ckpt", str(path), "--images", str(img), "--out", str(tmp_path / "o")],
            "evaluate": ["evaluate", "--ckpt", str(path), "--config", "synthetic"],
            "gallery": ["gallery", "--ckpt", str(path), "--images", str(img), "--out", str(tmp_path / "g")]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "Traceback" not in err, err


def test_transform_without_resize_is_completed_at_load(ckpt: Path, tmp_path: Path) -> None:
    path = _edited(ckpt, tmp_path, _drop("transform", "resize"))
    model = load_checkpoint(path)
    assert model.transform["resize"] == CROP_TRANSFORM["size"]  # resize defaults to size
    assert read_checkpoint_info(path)["transform"]["resize"] == CROP_TRANSFORM["size"]


def test_valid_checkpoint_still_loads_bit_exactly(ckpt: Path) -> None:
    model = load_checkpoint(ckpt)
    raw = _raw(ckpt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw["state_dict"][k])
    assert model.transform == check_transform(CROP_TRANSFORM)


def test_shipped_checkpoints_pass_validation() -> None:
    root = Path(__file__).resolve().parents[1] / "checkpoints"
    shipped = sorted(root.rglob("*.pt"))
    for path in shipped:
        load_checkpoint(path)


# ----------------------------------------------------------------------------- training configs
@pytest.mark.parametrize("override, msg", [
    ("model.reduction=0", "model.reduction must be an integer in [1, 65536], got 0"),
    ("train.lr_backbone=fast", "train.lr_backbone (or null) must be a number > 0, got 'fast'"),
    ("train.margin=abc", "train.margin must be a non-negative number, got 'abc'"),
    ("train.lr_backbone=-5", "train.lr_backbone (or null) must be a number > 0, got -5"),
    ("train.lr_query=-1", "train.lr_query (or null) must be a number > 0, got -1"),
    ("train.lr=0", "train.lr must be a number > 0"),
    ("train.gamma=-0.3", "train.gamma must be a number > 0"),
    ("train.weight_decay.query=x", "train.weight_decay.query must be a non-negative number"),
    ("train.amp=maybe", "train.amp must be true or false"),
    ("train.seed=1.5", "train.seed must be an integer >= 0"),
    ("train.lr_steps=[0]", "train.lr_steps[] must be a positive integer"),
    ("eval.ks=[]", "eval.ks must be a non-empty list"),
    ("data.size=0", "data.size must be an integer in [8, 4096]"),
    ("data.crop_scale=[0.5,0.1]", "data.crop_scale[1] must be a number in [0.5, 1]"),
    ("model.backbone_kwargs.width=-4", "model: small_cnn width must be an integer >= 1, got -4"),
    ("model.backbone_kwargs.width=0", "model: small_cnn width must be an integer >= 1, got 0"),
    ("model.dim=1099511627776", "model.dim must be an integer"),
    ("model.groups=0", "model.groups must be an integer in [1, 256]"),
])
def test_bad_training_overrides(override: str, msg: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", [override])
    assert msg in str(err.value) and "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_fails_before_any_work(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    assert main(["train", "--config", "synthetic", "--run-dir", str(run_dir), "train.device=cuda:7"]) == 2
    err = capsys.readouterr().err.strip()
    assert "train.device=cuda:7: no CUDA device is available" in err and len(err.splitlines()) == 1
    assert not run_dir.exists()  # nothing was written


@pytest.mark.parametrize("spec, ok", [("cpu", True), ("auto", True), (None, True), ("gpu", False),
                                      ("cuda:x", False), ("meta", False), (3, False)])
def test_check_device(spec: Any, ok: bool) -> None:
    if ok:
        assert check_device(spec).type in ("cpu", "cuda")
    else:
        with pytest.raises(ConfigError):
            check_device(spec)


# ----------------------------------------------------------------------------- resume
def _tiny_run_config(**overrides: Any) -> dict[str, Any]:
    cfg = {"model": {"backbone": "small_cnn", "head": "attentive", "groups": 2, "dim": 16, "reduction": 4,
                     "pretrained": False, "freeze_bn": False, "backbone_kwargs": {"width": 8}},
           "data": {"name": "synthetic", "size": 32, "resize": 32, "mode": "full", "mean": [0.5] * 3,
                    "std": [0.25] * 3, "kwargs": {"image_size": 32, "samples_per_class": 2}},
           "train": {"epochs": 2, "batch_classes": 4, "batch_per_class": 2, "steps_per_epoch": 1, "lr": 1e-3,
                     "lr_steps": [5], "num_workers": 0, "amp": False, "device": "cpu", "progress": False},
           "eval": {"nmi": False, "ks": [1]}}
    for key, value in overrides.items():
        sec, name = key.split(".")
        cfg[sec][name] = value
    return cfg


def test_mismatched_resume_changes_nothing_and_names_the_keys(tmp_path: Path) -> None:
    class Killed(Exception):
        pass

    def kill(epoch: int, model: Any, row: Any) -> None:
        raise Killed

    run_dir = tmp_path / "run"
    with pytest.raises(Killed):
        train(_tiny_run_config(), run_dir, on_epoch_end=kill)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(ConfigError) as err:
        train(_tiny_run_config(**{"model.reduction": 2}), run_dir, resume=True)
    assert "model.reduction: 4 -> 2" in str(err.value) and "\n" not in str(err.value)
    after = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert after == before  # config.yaml, last_state.pt, checkpoints: untouched
    # the plain resume still works, and may extend the run (epochs is a resumable key)
    result = train(_tiny_run_config(**{"train.epochs": 3}), run_dir, resume=True)
    assert result["epochs"] == 3


def test_resume_from_cli_with_changed_architecture_keeps_config_yaml(tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "run"
    cfg = tmp_path / "tiny.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(_tiny_run_config(**{"train.epochs": 1})))
    assert main(["train", "--config", str(cfg), "--run-dir", str(run_dir)]) == 0
    saved = (run_dir / "config.yaml").read_bytes()
    assert main(["train", "--config", str(cfg), "--run-dir", str(run_dir), "--resume", "model.groups=3"]) == 2
    assert "model.groups: 2 -> 3" in capsys.readouterr().err
    assert (run_dir / "config.yaml").read_bytes() == saved
    assert main(["train", "--run-dir", str(run_dir), "--resume"]) == 0


# ----------------------------------------------------------------------------- app input
@pytest.mark.parametrize("text, msg", [("imgs\x00x", "control character"), ("a\nb", "control character"),
                                       ("x" * 5000, "longer than 4096")])
def test_folder_field_rejects_invalid_text(tmp_path: Path, text: str, msg: str) -> None:
    from dgml_viz.appkit.paths import resolve_folder

    with pytest.raises(ConfigError, match=msg):
        resolve_folder(text, [tmp_path])


def test_folder_field_name_too_long_is_one_line(tmp_path: Path) -> None:
    from dgml_viz.appkit.paths import resolve_folder

    with pytest.raises(ConfigError, match="cannot open this folder|no such folder"):
        resolve_folder(str(tmp_path / ("n" * 300)), [tmp_path])


@pytest.mark.parametrize("address, allow, refused", [
    ("127.0.0.1", None, False), ("127.0.0.5", None, False), ("::1", None, False), ("[::1]", None, False),
    ("localhost", None, False), ("0.0.0.0", None, True), ("", None, True), (None, None, True),
    ("192.168.1.4", None, True), ("example.org", None, True), ("0.0.0.0", "1", False), ("0.0.0.0", "yes", True),
])
def test_serving_problem(address: str | None, allow: str | None, refused: bool) -> None:
    from dgml_viz.appkit.settings import serving_problem

    assert (serving_problem(address, allow or "") is not None) == refused


def test_app_launcher_refuses_remote_and_builds_loopback_command(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from dgml_viz.commands.app import app_script, streamlit_command

    monkeypatch.delenv("DGML_VIZ_ALLOW_REMOTE", raising=False)
    assert main(["app", "--address", "0.0.0.0"]) == 2
    assert "refusing to serve" in capsys.readouterr().err
    cmd = streamlit_command("127.0.0.1", 8501)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1" and str(app_script()) in cmd
    assert app_script().is_file()


def test_a_second_trainer_into_a_busy_run_dir_refuses_before_writing(tmp_path: Path) -> None:
    """Another process holds the run folder's lock (taken here with filelock directly): one line, no file."""
    import multiprocessing as mp

    from filelock import FileLock

    from dgml_viz.errors import OutputError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    ready, release = mp.Event(), mp.Event()
    holder = mp.get_context("fork").Process(target=_hold_lock, args=(str(run_dir / ".dgml-viz.lock"), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(OutputError) as err:
            train(_tiny_run_config(), run_dir)
        assert "another dgml-viz run" in str(err.value) and "\n" not in str(err.value)
        assert sorted(p.name for p in run_dir.iterdir()) == [".dgml-viz.lock"]  # nothing written
    finally:
        release.set()
        holder.join(30)
    assert FileLock(str(run_dir / ".dgml-viz.lock")).acquire(timeout=5)  # released with the holder


def _hold_lock(path: str, ready: Any, release: Any) -> None:
    from filelock import FileLock

    with FileLock(path):
        ready.set()
        release.wait(60)
