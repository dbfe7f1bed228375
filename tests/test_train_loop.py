"""Tiny end-to-end training runs: the loss falls, checkpoints load, resume is exact, tensor datasets work."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

from dgml_viz.cli import main
from dgml_viz.data.registry import register_dataset
from dgml_viz.model.checkpoint import load_checkpoint, read_checkpoint_info
from dgml_viz.train import load_config, train
from dgml_viz.train.loop import load_state


def make_folder(root: Path, classes: int = 8, per_class: int = 6, seed: int = 0) -> Path:
    """Class = a colour and a stripe orientation, plus noise; 40x48 PNGs."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        color = rng.integers(30, 225, 3)
        d = root / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.normal(0, 25, (40, 48, 3)) + color
            if c % 2:
                a[::6] = 255 - a[::6]
            else:
                a[:, ::6] = 255 - a[:, ::6]
            Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(d / f"{i}.png")
    return root


def tiny_config(root: Path, **over: Any) -> dict[str, Any]:
    items = {"model.backbone": "small_cnn", "model.dim": 24, "model.reduction": 4, "model.pretrained": False,
             "model.freeze_bn": False, "model.backbone_kwargs": {"width": 8},
             "data.name": "folder", "data.root": str(root), "data.size": 32, "data.resize": 36,
             "data.crop_scale": [0.6, 1.0], "train.batch_classes": 4, "train.batch_per_class": 3,
             "train.epochs": 4, "train.steps_per_epoch": 4, "train.lr": 2e-3, "train.beta_lr": 2e-3,
             "train.lr_steps": [3], "train.num_workers": 0, "train.progress": False, "eval.nmi": True,
             "eval.batch_size": 16}
    items.update(over)
    return load_config(None, [(k, v) for k, v in items.items()])


class Killed(Exception):
    """Stands in for a run killed between two epochs."""


def kill_after(last: int) -> Callable[[int, torch.nn.Module, dict], None]:
    """An ``on_epoch_end`` that kills the run once epoch ``last`` (1-based) is written."""
    def f(epoch: int, model: torch.nn.Module, row: dict) -> None:
        if epoch == last:
            raise Killed
    return f


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder"))


def test_tiny_run_learns_and_writes_everything(folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(folder, **{"train.eval_every": 2})
    res = train(cfg, tmp_path / "run")
    losses = [h["loss"] for h in res["history"]]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0], losses
    run = tmp_path / "run"
    for name in ("config.yaml", "best.pt", "last.pt", "last_state.pt", "log.csv", "curves.png", "metrics.json"):
        assert (run / name).is_file(), name
    assert load_config(run / "config.yaml") == cfg
    model = load_checkpoint(res["last_ckpt"])
    assert model.transform == {"size": 32, "resize": 36, "mean": cfg["data"]["mean"], "std": cfg["data"]["std"],
                               "mode": "center_crop"}
    info = read_checkpoint_info(res["best_ckpt"])
    assert info["class_names"] == ["class00", "class01", "class02", "class03"]
    assert info["metrics"]["recall@1"] == res["best_metrics"]["recall@1"]
    assert info["meta"]["recipe"]["train"]["epochs"] == 4
    with open(run / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4] and float(rows[-1]["loss"]) == pytest.approx(losses[-1])
    assert {"recall@1", "map@r", "nmi", "group0_recall@1", "group2_recall@1"} <= set(rows[0])
    assert rows[0]["recall@1"] == "" and rows[1]["recall@1"] != ""  # evaluated every 2 epochs
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # LR schedule: MultiStepLR at epoch 3, gamma 0.3
    assert [float(r["lr"]) for r in rows] == pytest.approx([2e-3, 2e-3, 2e-3, 6e-4])
    # the best checkpoint's weights reproduce its stored metrics
    from dgml_viz.data.registry import build_dataset
    from dgml_viz.data.train_transforms import EvalTransform
    from dgml_viz.train.loop import evaluate_model

    best = load_checkpoint(res["best_ckpt"])
    tf = EvalTransform(32, 36, cfg["data"]["mean"], cfg["data"]["std"])
    test = build_dataset("folder", "test", folder, transform=tf)
    again = evaluate_model(best, test, eval_cfg=cfg["eval"])
    assert again == pytest.approx(info["metrics"], abs=1e-9)


def test_resume_after_kill_is_bit_exact(folder: Path, tmp_path: Path) -> None:
    cfg = tiny_config(folder, **{"train.epochs": 3, "train.steps_per_epoch": 2, "train.lr_steps": [2],
                                 "eval.nmi": False, "train.eval_every": 2})
    full = train(cfg, tmp_path / "full")
    with pytest.raises(Killed):
        train(cfg, tmp_path / "cut", on_epoch_end=kill_after(2))
    assert load_state(tmp_path / "cut" / "last_state.pt")["epoch"] == 2
    trained_epochs: list[int] = []
    resumed = train(cfg, tmp_path / "cut", resume=True, on_epoch_end=lambda e, m, r: trained_epochs.append(e))
    assert trained_epochs == [3]  # continued, not restarted
    a = load_state(tmp_path / "full" / "last_state.pt")
    b = load_state(tmp_path / "cut" / "last_state.pt")
    for part in ("model", "loss"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for k, v in a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"])
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    assert full["metrics"] == resumed["metrics"]
    # a finished run resumed again does nothing
    again = train(cfg, tmp_path / "cut", resume=True)
    assert again["steps"] == resumed["steps"] == 6


class ToyTensors(torch.utils.data.Dataset):
    """A dataset that owns its transform: items are ready tensors (like the synthetic benchmark)."""

    def __init__(self, split: str = "train", seed: int = 0, n_per_class: int = 6, size: int = 24) -> None:
        g = torch.Generator().manual_seed(seed + (split == "test"))
        classes = range(4) if split == "train" else range(4, 8)
        self.items = []
        for i, c in enumerate(classes):
            for _ in range(n_per_class):
                img = torch.randn(3, size, size, generator=g) * 0.3
                img[c % 3, (c * 5) % size:(c * 5) % size + 6] += 2.0
                masks = torch.zeros(2, size, size, dtype=torch.bool)
                self.items.append({"image": img, "label": i, "part_masks": masks})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def test_tensor_dataset_gap_head_max_steps(tmp_path: Path) -> None:
    register_dataset("toy_tensors", ToyTensors, takes_transform=False, needs_root=False)
    cfg = tiny_config(tmp_path, **{"data.name": "toy_tensors", "data.root": None, "data.size": 24,
                                   "data.resize": 24, "data.mode": "full", "model.head": "gap",
                                   "train.max_steps": 5, "train.steps_per_epoch": 2, "train.epochs": 10,
                                   "train.eval_every": 10, "eval.nmi": False})
    res = train(cfg, tmp_path / "run")
    assert res["steps"] == 5 and res["epochs"] == 3  # stopped by max_steps inside epoch 3
    assert all(h["div_loss"] == 0.0 for h in res["history"])  # K = 1: no diversity term
    assert "recall@1" in res["metrics"] and "group0_recall@1" not in res["metrics"]
    assert load_checkpoint(res["last_ckpt"]).transform["mode"] == "full"


def test_cli_train_then_evaluate(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "tiny.yaml"
    import yaml

    cfg = tiny_config(folder, **{"train.epochs": 1, "train.steps_per_epoch": 2})
    recipe.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", "--config", str(recipe), "--run-dir", str(run), "train.epochs=2", "eval.nmi=false"]) == 0
    assert load_config(run / "config.yaml")["train"]["epochs"] == 2
    capsys.readouterr()
    out = tmp_path / "m.json"
    assert main(["evaluate", "--ckpt", str(run / "best.pt"), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed == saved and saved["num_queries"] == 24
    assert saved["metrics"]["recall@1"] == pytest.approx(read_checkpoint_info(run / "best.pt")["metrics"]["recall@1"])
    # an explicit recipe + overrides gives the same numbers (eval transform comes from the checkpoint)
    out2 = tmp_path / "m2.json"
    assert main(["evaluate", "--ckpt", str(run / "best.pt"), "--config", str(recipe), "--out", str(out2),
                 f"data.root={folder}", "eval.nmi=false"]) == 0
    assert json.loads(out2.read_text())["metrics"] == pytest.approx(saved["metrics"])
    capsys.readouterr()
    # --resume without --config reads the run's config.yaml
    assert main(["train", "--run-dir", str(run), "--resume", "train.epochs=3"]) == 0
    assert load_state(run / "last_state.pt")["epoch"] == 3


def test_time_budget_stops_after_the_first_step(tmp_path: Path) -> None:
    register_dataset("toy_tensors", ToyTensors, takes_transform=False, needs_root=False)
    cfg = tiny_config(tmp_path, **{"data.name": "toy_tensors", "data.root": None, "data.size": 24,
                                   "data.resize": 24, "train.time_budget_s": 1e-6, "train.epochs": 5,
                                   "eval.nmi": False})
    res = train(cfg, tmp_path / "run")
    assert res["steps"] == 1 and res["epochs"] == 1 and (tmp_path / "run" / "best.pt").is_file()


def test_evaluate_model_query_vs_gallery_equals_metrics_on_embeddings(tmp_path: Path) -> None:
    """In-Shop style evaluation: batched embedding + separate gallery == metrics on per-image embeddings."""
    from test_data_benchmarks import make_inshop

    from dgml_viz.data.registry import build_dataset
    from dgml_viz.data.train_transforms import EvalTransform
    from dgml_viz.metrics.retrieval import retrieval_metrics
    from dgml_viz.model import create_model
    from dgml_viz.train.loop import evaluate_model

    make_inshop(tmp_path)
    rng = np.random.default_rng(0)
    for f in sorted((tmp_path / "img").rglob("*.jpg")):  # distinct images: no ties in the rankings
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(f)
    tf = EvalTransform(32, 36)
    q = build_dataset("inshop", "query", tmp_path, transform=tf)
    g = build_dataset("inshop", "gallery", tmp_path, transform=tf)
    model = create_model("small_cnn", groups=2, dim=16, width=8).eval()
    ours = evaluate_model(model, q, g, {"ks": [1, 2], "nmi": False, "batch_size": 3}, amp=False)
    with torch.no_grad():
        qe = torch.cat([model(q[i]["image"][None]).embedding for i in range(len(q))])
        ge = torch.cat([model(g[i]["image"][None]).embedding for i in range(len(g))])
        qg = torch.cat([model(q[i]["image"][None]).groups for i in range(len(q))])
        gg = torch.cat([model(g[i]["image"][None]).groups for i in range(len(g))])
    ref = retrieval_metrics(qe, q.labels, groups=qg, ks=(1, 2), gallery=ge, gallery_labels=g.labels,
                            gallery_groups=gg, compute_nmi=False)
    assert ours.keys() == ref.keys() and ours == pytest.approx(ref, abs=1e-9)
