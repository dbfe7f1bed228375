"""`dgml-viz index` / `search` / `evaluate --index` end to end: JSON schema, results equal a brute force
of an independent forward, metrics equal the in-memory evaluation, bad inputs exit 2 with one line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dgml_viz.cli import main
from dgml_viz.index.store import open_index
from dgml_viz.inference import prepare_image, run_batch
from dgml_viz.metrics.retrieval import retrieval_metrics
from dgml_viz.model.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def setup(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """skimage photos, each with 5 shifted/flipped variants, one folder per photo (= class)."""
    import skimage.data

    root = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "chelsea", "coffee", "rocket", "cat"):
        rgb = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
        small = np.asarray(Image.fromarray(rgb).resize((80, 60)))
        (root / name).mkdir()
        for v in range(6):
            img = np.roll(small, 4 * v, axis=1)
            img = img[:, ::-1] if v % 2 else img
            Image.fromarray(np.ascontiguousarray(img)).save(root / name / f"v{v}.png")
    out = root.parent / "ix"
    assert main(["index", "--ckpt", str(ckpt), "--images", str(root), "--out", str(out), "--batch-size", "7"]) == 0
    return {"root": root, "index": out, "ckpt": ckpt}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_search_json_schema_and_brute_force(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    query = setup["root"] / "chelsea" / "v3.png"
    model = load_checkpoint(setup["ckpt"])
    x, _, _ = prepare_image(query, model.transform)
    with torch.no_grad():
        q = model(x[None]).groups[0].numpy()
    idx = open_index(setup["index"])
    gal = np.asarray(idx.groups, dtype=np.float64)
    for groups, sel in ((None, [0, 1, 2]), ("0,2", [0, 2]), ("1", [1])):
        argv = ["search", "--index", str(setup["index"]), "--query", str(query), "--topk", "7", "--json"]
        code, out, _ = run_cli(capsys, *argv, *(["--groups", groups] if groups else []))
        assert code == 0
        doc = json.loads(out)
        assert set(doc) == {"query", "groups", "neighbours"} and doc["query"] == str(query) and doc["groups"] == sel
        assert len(doc["neighbours"]) == 7
        for hit in doc["neighbours"]:
            assert set(hit) == {"path", "similarity", "group_similarity"}
            assert isinstance(hit["path"], str) and len(hit["group_similarity"]) == 3
            assert hit["similarity"] == pytest.approx(np.mean([hit["group_similarity"][g] for g in sel]), abs=1e-5)
        sims = np.einsum("kd,nkd->nk", q, gal)[:, sel].mean(1)
        order = np.argsort(-sims)[:7]
        # the untrained model puts many images within float32 rounding of each other: compare values, and
        # each hit's own brute-force similarity (which also pins its group_similarity)
        np.testing.assert_allclose([h["similarity"] for h in doc["neighbours"]], sims[order], atol=1e-5)
        for h in doc["neighbours"]:
            row = idx.paths.index(h["path"])
            assert h["similarity"] == pytest.approx(sims[row], abs=1e-5)
            np.testing.assert_allclose(h["group_similarity"], np.einsum("kd,kd->k", q, gal[row]), atol=1e-5)
    # the query is indexed: it is its own best match unless excluded
    code, out, _ = run_cli(capsys, "search", "--index", str(setup["index"]), "--query", str(query), "--json")
    assert json.loads(out)["neighbours"][0]["path"] == str(query.resolve())
    code, out, _ = run_cli(capsys, "search", "--index", str(setup["index"]), "--query", str(query), "--json",
                           "--exclude-self", "--method", "hnsw")
    assert code == 0 and str(query.resolve()) not in [h["path"] for h in json.loads(out)["neighbours"]]
    code, out, _ = run_cli(capsys, "search", "--index", str(setup["index"]), "--query", str(query), "--topk", "2")
    assert code == 0 and len(out.strip().splitlines()) == 3  # header + 2 rows


def test_search_help_documents_the_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = capsys.readouterr().out
    for word in ('"query"', '"groups"', '"neighbours"', '"path"', '"similarity"', '"group_similarity"'):
        assert word in text


def test_evaluate_index_equals_in_memory_metrics(setup: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    model = load_checkpoint(setup["ckpt"])
    files = sorted(setup["root"].rglob("*.png"))
    fresh = run_batch(model, [prepare_image(p, model.transform)[0] for p in files])
    idx = open_index(setup["index"])
    assert idx.paths == [str(p.resolve()) for p in files]
    stored = torch.from_numpy(np.array(idx.groups))
    torch.testing.assert_close(stored, fresh.groups, atol=1e-5, rtol=0)  # the index holds the model's output
    # the in-memory evaluation on the same embeddings: the model's concatenate-and-renormalise, in torch
    flat = stored.flatten(1)
    out = type(fresh)(embedding=flat / flat.norm(dim=1, keepdim=True), groups=stored)
    names = sorted({p.parent.name for p in files})
    labels = [names.index(p.parent.name) for p in files]
    want = retrieval_metrics(out.embedding, labels, groups=out.groups, ks=(1, 2, 4), compute_nmi=False)
    code, text, _ = run_cli(capsys, "evaluate", "--index", str(setup["index"]), "--ks", "1,2,4", "--no-nmi")
    assert code == 0
    got = json.loads(text)
    assert got["num_queries"] == len(files) and got["num_classes"] == 5
    assert got["metrics"].keys() == want.keys()
    for key, value in want.items():
        assert got["metrics"][key] == pytest.approx(value, abs=1e-9), key
    # a label list: two photos per class chosen by the list (paths relative to the list file)
    lst = tmp_path / "labels.txt"
    chosen = [p for p in files if p.stem in ("v0", "v1", "v2")]
    lst.write_text("# path label\n" + "".join(f"{p} {'AB'[i % 2]}\n" for i, p in enumerate(chosen)))
    code, text, _ = run_cli(capsys, "evaluate", "--index", str(setup["index"]), "--labels", str(lst), "--no-nmi",
                            "--out", str(tmp_path / "m.json"))
    assert code == 0 and json.loads(text)["num_queries"] == len(chosen) and (tmp_path / "m.json").is_file()
    rows = [files.index(p) for p in chosen]
    ref = retrieval_metrics(out.embedding[rows], [i % 2 for i in range(len(chosen))], groups=out.groups[rows],
                            compute_nmi=False)
    assert json.loads(text)["metrics"]["recall@1"] == pytest.approx(ref["recall@1"], abs=1e-9)


def test_bad_inputs_exit_2_with_one_line(setup: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    from dgml_viz.model import create_model
    from dgml_viz.model.checkpoint import save_checkpoint

    torch.manual_seed(3)
    other = save_checkpoint(create_model("small_cnn", groups=3, dim=48), tmp_path / "other.pt",
                            transform=load_checkpoint(setup["ckpt"]).transform)
    query = str(setup["root"] / "cat" / "v0.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nxx")
    (tmp_path / "empty").mkdir()
    ix = str(setup["index"])
    cases = [
        (["search", "--index", str(tmp_path / "nope"), "--query", query], "no such index folder"),
        (["search", "--index", str(tmp_path / "empty"), "--query", query], "not a dgml_viz index"),
        (["search", "--index", ix, "--query", str(tmp_path / "missing.png")], "no such image file"),
        (["search", "--index", ix, "--query", str(tmp_path / "broken.png")], "broken.png"),
        (["search", "--index", ix, "--query", query, "--groups", "5"], "groups"),
        (["search", "--index", ix, "--query", query, "--groups", "a,b"], "comma-separated"),
        (["search", "--index", ix, "--query", query, "--topk", "0"], "--topk"),
        (["search", "--index", ix, "--query", query, "--ckpt", str(other)], "does not match the checkpoint"),
        (["search", "--index", ix, "--query", query, "--ckpt", str(tmp_path / "gone.pt")], "missing"),
        (["index", "--ckpt", str(setup["ckpt"]), "--images", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
         "no such file or folder"),
        (["index", "--ckpt", str(setup["ckpt"]), "--images", query, "--out", str(tmp_path / "o"), "--shard", "3/2"],
         "--shard"),
        (["index", "--out", str(tmp_path / "o")], "--ckpt and --images are required"),
        (["index", "--merge", "--out", str(tmp_path / "o")], "no shards to merge"),
        (["index", "--ckpt", str(other), "--images", str(setup["root"]), "--out", ix], "another --out or --rebuild"),
        (["evaluate", "--index", ix, "--ks", "x"], "--ks"),
        (["evaluate", "--index", ix, "--labels", str(tmp_path / "nolabels.txt")], "cannot read the label list"),
        (["evaluate"], "--ckpt (or --index) is required"),
    ]
    for argv, needle in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        lines = [ln for ln in err.splitlines() if ln.startswith("dgml-viz ")]
        assert len(lines) == 1 and needle in lines[0], (argv, err)
        assert "Traceback" not in err


def test_search_over_3000_images_equals_a_brute_force_of_its_own(ckpt: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """At scale: 3,000 crops of real photos (PNG and JPEG written by Pillow) indexed by the CLI (forked workers,
    chunks of 512); every hit of `search --json` for 8 queries, all groups and a subset, equals a numpy brute
    force over embeddings of a plain in-process forward of the same files (no index code involved)."""
    import skimage.data

    rng = np.random.default_rng(7)
    photos = [np.ascontiguousarray(getattr(skimage.data, k)()[..., :3]) for k in ("astronaut", "chelsea", "coffee",
                                                                                 "rocket")]
    files = []
    for i in range(3000):
        src = photos[i % 4]
        h, w = int(rng.integers(40, 120)), int(rng.integers(40, 120))
        y, x = int(rng.integers(0, src.shape[0] - h)), int(rng.integers(0, src.shape[1] - w))
        path = tmp_path / "imgs" / f"c{i % 30:02d}" / f"i{i:04d}.{'jpg' if i % 3 else 'png'}"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(src[y:y + h, x:x + w])).save(path)
        files.append(path.resolve())
    out = tmp_path / "ix"
    assert main(["index", "--ckpt", str(ckpt), "--images", str(tmp_path / "imgs"), "--out", str(out),
                 "--chunk-size", "512", "--processes", "2"]) == 0
    model = load_checkpoint(ckpt).eval()
    gallery = np.concatenate([run_batch(model, [prepare_image(p, model.transform)[0] for p in files[s:s + 100]])
                              .groups.float().numpy() for s in range(0, len(files), 100)]).astype(np.float64)
    row = {str(p): i for i, p in enumerate(files)}
    for q in rng.choice(len(files), 8, replace=False):
        for groups, sel in ((None, [0, 1, 2]), ("0,2", [0, 2])):
            code, text, _ = run_cli(capsys, "search", "--index", str(out), "--query", str(files[q]), "--topk", "10",
                                    "--json", *(["--groups", groups] if groups else []))
            assert code == 0
            hits = json.loads(text)["neighbours"]
            sims = np.einsum("kd,nkd->nk", gallery[q], gallery)[:, sel].mean(1)
            np.testing.assert_allclose([h["similarity"] for h in hits], np.sort(sims)[::-1][:10], atol=1e-4)
            for h in hits:  # each hit is the file it names, with its own similarity and per-group terms
                np.testing.assert_allclose(h["group_similarity"],
                                           np.einsum("kd,kd->k", gallery[q], gallery[row[h["path"]]]), atol=1e-4)
                assert h["similarity"] == pytest.approx(sims[row[h["path"]]], abs=1e-4)
