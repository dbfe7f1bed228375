"""Our Recall@K / MAP@R / NMI equal pytorch-metric-learning's AccuracyCalculator; chunked == unchunked."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

from dgml_viz.metrics.retrieval import (
    kmeans_labels,
    knn,
    map_at_r,
    nmi,
    per_group_recall_at_1,
    recall_at_k,
    retrieval_metrics,
)


def clustered(n: int = 400, classes: int = 15, dim: int = 24, noise: float = 1.2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    emb = centers[labels] + noise * torch.randn(n, dim, generator=g)
    return emb, labels


def _calc(**kw) -> AccuracyCalculator:
    return AccuracyCalculator(knn_func=CustomKNN(CosineSimilarity()), device=torch.device("cpu"), **kw)


def _pml_recall_at_k(q, ql, g, gl, ks) -> dict[int, float]:
    """Recall@K from pml's own kNN (k neighbours, self excluded), lone queries dropped."""
    self_mode = g is None
    ref, rl = (q, ql) if self_mode else (g, gl)
    dist, idx = CustomKNN(CosineSimilarity())(q, max(ks), ref, self_mode)
    hits = rl[idx] == ql[:, None]
    counts = torch.tensor([(rl == v).sum().item() - int(self_mode) for v in ql])
    keep = counts > 0
    return {k: hits[keep, :k].any(1).double().mean().item() for k in ks}


@pytest.mark.parametrize("seed,noise", [(0, 1.2), (1, 2.5), (2, 0.6)])
def test_query_equals_gallery_matches_pml(seed: int, noise: float) -> None:
    emb, lab = clustered(noise=noise, seed=seed)
    lab[0] = 99  # a lone query: excluded by both implementations
    ours = retrieval_metrics(emb, lab, ks=(1, 2, 4, 8), compute_nmi=False, chunk=64)
    ref = _calc(include=("precision_at_1", "mean_average_precision_at_r")).get_accuracy(emb, lab)
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-12)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)
    pml_r = _pml_recall_at_k(emb, lab, None, None, (1, 2, 4, 8))
    for k in (1, 2, 4, 8):
        assert ours[f"recall@{k}"] == pytest.approx(pml_r[k], abs=1e-12)
    assert 0.05 < ours["map@r"] < 0.999  # not a degenerate case


def test_separate_query_gallery_matches_pml() -> None:
    emb, lab = clustered(n=500, seed=4)
    q, ql, g, gl = emb[:150], lab[:150], emb[150:], lab[150:]
    ours = retrieval_metrics(q, ql, gallery=g, gallery_labels=gl, ks=(1, 10), compute_nmi=False, chunk=33)
    ref = _calc(include=("precision_at_1", "mean_average_precision_at_r")).get_accuracy(q, ql, g, gl)
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-12)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)
    assert ours["recall@10"] == pytest.approx(_pml_recall_at_k(q, ql, g, gl, (10,))[10], abs=1e-12)


def test_nmi_matches_pml_with_the_same_clustering() -> None:
    emb, lab = clustered(seed=5)
    ours = nmi(emb, lab, seed=3)
    ref = _calc(include=("NMI",), kmeans_func=lambda x, n: torch.as_tensor(kmeans_labels(x.cpu(), n, seed=3)))
    assert ours == pytest.approx(ref.get_accuracy(emb, lab)["NMI"], abs=1e-12)
    assert nmi(torch.eye(4).repeat(5, 1), torch.arange(4).repeat(5)) == pytest.approx(1.0)


@pytest.mark.parametrize("chunk", [16, 50, 100000])
def test_chunked_equals_unchunked(chunk: int) -> None:
    emb, lab = clustered(n=120, classes=8, seed=6)
    full = retrieval_metrics(emb, lab, compute_nmi=False, chunk=10**6)
    part = retrieval_metrics(emb, lab, compute_nmi=False, chunk=chunk)
    assert part == pytest.approx(full, abs=1e-12)
    s_full, i_full = knn(emb, None, 5, chunk=10**6)
    s_part, i_part = knn(emb, None, 5, chunk=chunk)
    assert torch.equal(i_full, i_part) and torch.allclose(s_full, s_part, atol=1e-6)


def test_self_match_is_excluded() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    lab = torch.tensor([0, 1, 1])
    _, idx = knn(emb, None, 2)
    assert (idx != torch.arange(3)[:, None]).all()
    # query 1 (label 1): nearest other is item 2 (label 1); query 2: nearest other is item 0 (label 0)
    assert recall_at_k(emb, lab, (1,))[1] == pytest.approx(0.5)  # query 0 is lone
    assert map_at_r(emb, lab) == pytest.approx(0.5)


def test_per_group_recall() -> None:
    emb, lab = clustered(n=200, seed=7)
    noise = torch.randn(200, 24)
    groups = torch.stack([emb, noise], dim=1)
    r = per_group_recall_at_1(groups, lab)
    assert r[0] == pytest.approx(recall_at_k(emb, lab, (1,))[1])
    assert r[0] > r[1]
    out = retrieval_metrics(groups.flatten(1), lab, groups=groups, compute_nmi=False)
    assert out["group0_recall@1"] == pytest.approx(r[0]) and out["group1_recall@1"] == pytest.approx(r[1])


def test_numpy_labels_and_mismatch() -> None:
    emb, lab = clustered(n=50)
    assert recall_at_k(emb, lab.numpy(), (1,)) == recall_at_k(emb, lab, (1,))
    with pytest.raises(ValueError, match="50 embeddings but 49 labels"):
        recall_at_k(emb, lab[:49])
    assert np.isnan(recall_at_k(emb[:3], torch.tensor([0, 1, 2]), (1,))[1])
