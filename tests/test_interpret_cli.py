"""``dgml-viz interpret`` end to end on a tiny trained model and tiny datasets."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dgml_viz.cli import main

SECTIONS = ("diversity", "localisation", "keypoints", "faithfulness", "invariance", "per_class")
FAST = ["--faithfulness-images", "4", "--invariance-images", "4", "--steps", "3", "--ig-steps", "2",
        "--bootstrap", "50", "--shifts", "0,8", "--permutations", "2", "--batch-size", "64"]


def _train_tiny(path: Path, head: str = "attentive", steps: int = 6) -> Path:
    """A small_cnn (width 8, 48 px) trained a few steps on SyntheticParts (not the demo model)."""
    from pytorch_metric_learning.losses import MultiSimilarityLoss

    from dgml_viz.data.synthetic import SyntheticParts, synthetic_transform
    from dgml_viz.model import create_model
    from dgml_viz.model.checkpoint import save_checkpoint
    from dgml_viz.train.terms import diversity_loss

    torch.manual_seed(0)
    ds = SyntheticParts("train", image_size=48, samples_per_class=4)
    model = create_model("small_cnn", groups=3, dim=24, width=8, head=head)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    loss_fn = MultiSimilarityLoss()
    for _ in range(steps):
        classes = torch.randperm(32)[:6]
        idx = (classes[:, None] * 4 + torch.arange(3)).flatten().tolist()
        items = [ds[i] for i in idx]
        x = torch.stack([it["image"] for it in items])
        y = torch.tensor([it["label"] for it in items])
        out = model(x)
        loss = sum(loss_fn(out.groups[:, g], y) for g in range(out.groups.shape[1])) + 0.1 * diversity_loss(out.groups)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    save_checkpoint(model, path, transform=synthetic_transform(48))
    return path


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(2)
    d = tmp_path_factory.mktemp("ckpts")
    return {"ours": _train_tiny(d / "ours.pt"), "gap": _train_tiny(d / "gap.pt", head="gap", steps=0)}


def _strict_json(path: Path) -> dict:
    def bad(c: str) -> None:
        raise ValueError(f"non-standard JSON constant {c}")

    return json.loads(path.read_text(), parse_constant=bad)


def test_config_mode_writes_every_section_and_plot(ckpts, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    rc = main(["interpret", "--ckpt", str(ckpts["ours"]), "--config", "synthetic", "--num-images", "64",
               "--out", str(out), "--compare", str(ckpts["gap"]), *FAST])
    assert rc == 0
    rep = _strict_json(out / "report.json")
    assert rep["primary"] == "ours" and list(rep["models"]) == ["ours", "gap"]
    ours = rep["models"]["ours"]
    for s in SECTIONS:
        assert ours[s] is not None, s
    assert ours["num_images"] == 64
    assert set(ours["faithfulness"]["methods"]) == {"attention", "integrated_gradients", "grad_cam", "random"}
    assert len(ours["faithfulness"]["methods"]["attention"]["deletion_curve"]) == 4
    assert ours["invariance"]["permutation"]["max_abs_delta"] < 1e-5
    assert ours["invariance"]["translation_wrap"]["embedding_cosine"][0] == pytest.approx(1.0, abs=1e-5)
    assert len(ours["diversity"]["group_recall@1"]) == 3
    assert ours["localisation"]["num_images"] == 64 and len(ours["keypoints"]["purity"]) == 3
    assert len(ours["per_class"]["classes"]) == 32
    # the baseline without attention maps: no localisation, no attention ordering; same images
    gap = rep["models"]["gap"]
    assert gap["localisation"] is None and "attention" in gap["skipped"]["localisation"]
    assert "attention" not in gap["faithfulness"]["methods"] and gap["num_images"] == 64
    assert {"ours", "gap"} == set(rep["comparison"]["recall@1"])
    assert [c["claim"] for c in rep["claims"]] == ["groups learn distinct features",
                                                   "attention shows what the embedding uses"]
    # mask-free group health: labels used here; the gap baseline has one group and no maps
    gh = ours["group_health"]
    assert gh["retrieval_used"] and gh["has_attention"] and len(gh["groups"]) == 3 and len(gh["pairs"]) == 3
    assert gap["group_health"]["pairs"] == [] and not gap["group_health"]["has_attention"]
    assert ours["headline"]["dead_groups"]["estimate"] == len(gh["dead"])
    # every plot listed in the JSON is embedded in the HTML
    html = (out / "report.html").read_text()
    ids = [f["id"] for f in rep["figures"]]
    assert {"comparison", "diversity", "localisation", "keypoints", "faithfulness", "translation",
            "per_class"} <= set(ids)
    for fid in ids:
        assert re.search(rf'<img id="img-{re.escape(fid)}"[^>]*src="data:image/png;base64,iVBOR', html), fid
    assert html.count("<img ") == len(ids)


def test_report_recall_equals_retrieval_metric(ckpts, tmp_path: Path) -> None:
    from dgml_viz.commands.interpret import evenly_spaced
    from dgml_viz.data.synthetic import SyntheticParts
    from dgml_viz.metrics.retrieval import per_group_recall_at_1, recall_at_k
    from dgml_viz.model.checkpoint import load_checkpoint

    out = tmp_path / "rep"
    assert main(["interpret", "--ckpt", str(ckpts["ours"]), "--config", "synthetic", "--num-images", "40",
                 "--out", str(out), "--faithfulness-images", "0", "--invariance-images", "0",
                 "--bootstrap", "20", "--batch-size", "40"]) == 0  # one batch, as below (same numerics)
    rep = _strict_json(out / "report.json")["models"]["ours"]
    assert rep["faithfulness"] is None and rep["invariance"] is None
    ds = SyntheticParts("test", image_size=48, samples_per_class=2)
    idx = evenly_spaced(len(ds), 40)
    model = load_checkpoint(ckpts["ours"]).eval()
    with torch.no_grad():
        o = model(torch.stack([ds[i]["image"] for i in idx]))
    labels = [ds[i]["label"] for i in idx]
    assert rep["diversity"]["recall@1"]["estimate"] == pytest.approx(recall_at_k(o.embedding, labels, (1,))[1])
    assert [g["estimate"] for g in rep["diversity"]["group_recall@1"]] == pytest.approx(
        per_group_recall_at_1(o.groups, labels))


def test_images_mode_reports_only_label_free_sections(ckpts, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "imgs" / "sub"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40 + i, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "rep"
    assert main(["interpret", "--ckpt", str(ckpts["ours"]), "--images", str(tmp_path / "imgs"),
                 "--out", str(out), *FAST]) == 0
    rep = _strict_json(out / "report.json")["models"]["ours"]
    assert rep["num_images"] == 5
    for s in ("localisation", "keypoints", "per_class"):
        assert rep[s] is None and s in rep["skipped"]
    assert "recall@1" not in rep["diversity"] and "intersection" in rep["diversity"]
    assert rep["faithfulness"] is not None and rep["invariance"] is not None
    html = (out / "report.html").read_text()
    assert 'id="img-faithfulness"' in html and 'id="img-localisation"' not in html
    assert not rep["group_health"]["has_labels"] and not rep["group_health"]["retrieval_used"]
    assert "Group health" in html and "judged from attention and embeddings" in html


def test_group_health_flags_an_edited_model_in_both_modes(tmp_path: Path) -> None:
    """Group 1's query copied from group 0 (identical maps and vectors) and group 2's query zeroed
    (exactly uniform attention): the report must flag the pair and the dead group, with or without labels."""
    from PIL import Image

    from dgml_viz.data.synthetic import synthetic_transform
    from dgml_viz.model import create_model
    from dgml_viz.model.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = create_model("small_cnn", groups=3, dim=24, width=8).eval()
    with torch.no_grad():
        model.head.queries[1] = model.head.queries[0]
        model.head.queries[2] = 0.0
    ckpt = save_checkpoint(model, tmp_path / "edited.pt", transform=synthetic_transform(48))
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    none = ["--faithfulness-images", "0", "--invariance-images", "0", "--bootstrap", "20"]
    for src, flag in ((["--images", str(folder)], False), (["--config", "synthetic", "--num-images", "64"], True)):
        out = tmp_path / f"rep_{flag}"
        assert main(["interpret", "--ckpt", str(ckpt), *src, "--out", str(out), *none]) == 0
        gh = _strict_json(out / "report.json")["models"]["edited"]["group_health"]
        assert gh["retrieval_used"] is flag
        assert [0, 1] in gh["duplicates"] and 2 in gh["dead"] + gh["suspect"], gh["reasons"]
        html = (out / "report.html").read_text()
        assert "groups 0 and 1 duplicated" in html


@pytest.mark.parametrize("argv, msg", [
    (["--ckpt", "missing.pt", "--config", "synthetic"], "missing.pt"),
    (["--config", "no_such_thing"], "no_such_thing"),
    (["--images", "EMPTY"], "no images"),
])
def test_errors_are_one_line(ckpts, tmp_path: Path, capsys, argv, msg) -> None:
    (tmp_path / "empty").mkdir()
    argv = [a.replace("EMPTY", str(tmp_path / "empty")) for a in argv]
    if "--ckpt" not in argv:
        argv = ["--ckpt", str(ckpts["ours"])] + argv
    assert main(["interpret", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and err.startswith("dgml-viz interpret: error:")


def test_claims_verdicts_follow_the_cis() -> None:
    from dgml_viz.report.writer import claims, plain

    def ci(e: float, lo: float, hi: float) -> dict:
        return {"estimate": e, "low": lo, "high": hi}

    def rep(inter_hi: float, del_hi: float) -> dict:
        m = {"diversity": {"intersection": {"mean": ci(0.2, 0.1, inter_hi)}, "cosine": {"mean": ci(0.1, 0.0, 0.2)}},
             "faithfulness": {"methods": {"attention": {"deletion_auc": ci(0.3, 0.2, 0.4), "insertion_auc": ci(.8, .7, .9)},
                                          "random": {"deletion_auc": ci(0.6, 0.5, 0.7), "insertion_auc": ci(.5, .4, .6)}},
                              "vs_random": {"attention": {"deletion_auc_diff": ci(-0.3, -0.4, del_hi),
                                                          "insertion_auc_diff": ci(0.3, 0.2, 0.4)}}}}
        return {"primary": "m", "models": {"m": m}}

    assert [c["verdict"] for c in claims(rep(0.3, -0.2))] == ["supported", "supported"]
    assert [c["verdict"] for c in claims(rep(0.6, 0.01))] == ["not supported", "not supported"]
    assert plain({"a": float("nan"), "b": (1.0, float("inf")), "c": torch.tensor([1.5])}) == \
        {"a": None, "b": [1.0, None], "c": [1.5]}
