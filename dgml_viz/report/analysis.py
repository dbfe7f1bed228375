"""Run every interpretability metric of one model on one set of images -> a JSON-ready dict.

:func:`analyse_model` is what ``dgml-viz interpret`` (and the gallery/app) call.
It makes one batched forward pass over the images (``torch.inference_mode``),
keeps the group embeddings, attention maps and annotations, and derives:

``diversity``     pairwise attention overlap (histogram intersection, top-50 %-mass
                  IoU), group-embedding cosine, normalised attention entropy,
                  Recall@1 of the whole embedding and of each group alone;
``localisation``  (part masks) Hungarian group <-> part matching, attention
                  share, pointing game (:mod:`dgml_viz.metrics.localisation`),
                  beside the uniform-attention chance level;
``keypoints``     (keypoints) nearest-keypoint distribution, purity, peak distance;
``faithfulness``  deletion / insertion AUC of each group's similarity under the
                  attention, Integrated Gradients, Grad-CAM and random orderings
                  (on the first ``faithfulness_images`` images);
``invariance``    permutation certificate of the head, translation curves;
``per_class``     per-class Recall@1, overlap, entropy, pointing;
``group_health``  dead / suspect / duplicated groups from mask-free signals, with one
                  reason line per flag (:mod:`dgml_viz.metrics.group_health`; labels
                  are used when present, never masks).

Every headline number carries a percentile bootstrap CI over images (seeded).
Sections that need what the data or the model lacks (labels, masks, keypoints,
attention) are ``None`` with the reason in ``skipped``.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from dgml_viz.inference import infer, model_device
from dgml_viz.metrics import diversity as D
from dgml_viz.metrics import faithfulness
from dgml_viz.metrics.bootstrap import bootstrap_ci, bootstrap_ci_columns
from dgml_viz.metrics.group_health import group_health
from dgml_viz.metrics.invariance import permutation_certificate, translation_curve
from dgml_viz.metrics.keypoints import keypoint_report
from dgml_viz.metrics.localisation import (
    localisation_report,
    part_attention_mass,
    pointing_hits,
    uniform_attention,
)

logger = logging.getLogger(__name__)

#: the orderings compared in the faithfulness section, in report order
METHODS = ("attention", "integrated_gradients", "grad_cam", "random")


@dataclass
class Collected:
    """What one pass over the images keeps (CPU tensors).

    ``groups [N, K, d]``, ``embedding [N, K*d]``, ``attention [N, K, h, w] | None``,
    ``labels [N] | None``, ``part_masks [N, P, H, W] | None``, ``keypoints [N, P, 3] | None``,
    ``bboxes [N, 4] | None``, ``images [M, 3, H, W]`` (the first M images, kept for the
    perturbation-based sections), ``size (H, W)``.
    """

    groups: Tensor
    embedding: Tensor
    attention: Tensor | None
    labels: Tensor | None
    part_masks: Tensor | None
    keypoints: Tensor | None
    bboxes: Tensor | None
    images: Tensor
    size: tuple[int, int]


def collect(model: nn.Module, batches: Iterable[dict[str, Any]], keep_images: int) -> Collected:
    """One inference pass over collated batches (dicts with ``image`` ``[B, 3, H, W]`` etc.).

    ``label`` is kept unless every label is negative (unlabelled folders use -1).
    """
    shown: list[Tensor] = []
    size: tuple[int, int] = (0, 0)

    def tee(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal size
        kept = 0
        for batch in items:
            x = batch["image"]
            size = (int(x.shape[-2]), int(x.shape[-1]))
            if kept < keep_images:
                shown.append(x[: keep_images - kept].cpu())
                kept += len(shown[-1])
            yield batch

    try:
        out = infer(model, tee(batches), extras=("label", "part_masks", "keypoints", "bbox"))
    except ValueError:
        raise ValueError("no images to analyse") from None

    def cat(key: str) -> Tensor | None:
        return out.extras.get(key)

    labels = cat("label")
    if labels is not None and (labels < 0).all():
        labels = None
    images = torch.cat(shown) if shown else None
    return Collected(groups=out.groups, embedding=out.embedding, attention=out.attention,
                     labels=labels, part_masks=cat("part_masks"), keypoints=cat("keypoints"),
                     bboxes=cat("bbox"), images=images if images is not None else torch.zeros(0, 3, *size),
                     size=size)


class _Stats:
    """Bootstrap helper with a fixed resample count and seed."""

    def __init__(self, num_resamples: int, seed: int) -> None:
        self.b, self.seed = int(num_resamples), int(seed)

    def ci(self, values: Tensor | np.ndarray) -> dict[str, Any]:
        return bootstrap_ci(values, num_resamples=self.b, seed=self.seed).to_dict()

    def cols(self, values: Tensor) -> list[dict[str, Any]]:
        return [c.to_dict() for c in bootstrap_ci_columns(values, num_resamples=self.b, seed=self.seed)]


def _masked(values: Tensor, valid: Tensor) -> Tensor:
    """Float values with NaN where not ``valid`` (the bootstrap mean ignores NaN)."""
    return torch.where(valid, values.float(), torch.full_like(values.float(), float("nan")))


def diversity_section(c: Collected, stats: _Stats, top_mass: float = 0.5) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Diversity numbers (+ per-image arrays for the per-class section)."""
    k = c.groups.shape[1]
    out: dict[str, Any] = {"num_groups": k, "pairs": D.pair_names(k), "top_mass": top_mass}
    per_image: dict[str, Tensor] = {}
    if k > 1:
        cos = D.pair_values(D.group_cosine(c.groups))  # [N, pairs]
        out["cosine"] = {"mean": stats.ci(cos.mean(1)), "per_pair": stats.cols(cos),
                         "matrix": D.group_cosine(c.groups).mean(0).tolist()}
        per_image["cosine"] = cos.mean(1)
    if c.attention is not None:
        ent = D.attention_entropy(c.attention)  # [N, K]
        out["entropy"] = {"mean": stats.ci(ent.mean(1)), "per_group": stats.cols(ent)}
        per_image["entropy"] = ent.mean(1)
        if k > 1:
            hi_m = D.histogram_intersection(c.attention)
            inter = D.pair_values(hi_m)
            iou = D.pair_values(D.top_mass_iou(c.attention, top_mass))
            out["intersection"] = {"mean": stats.ci(inter.mean(1)), "per_pair": stats.cols(inter),
                                   "matrix": hi_m.mean(0).tolist()}
            out["iou"] = {"mean": stats.ci(iou.mean(1)), "per_pair": stats.cols(iou)}
            per_image["intersection"] = inter.mean(1)
            per_image["iou"] = iou.mean(1)
    if c.labels is not None:
        hits, valid = D.per_query_hits(c.embedding, c.labels)
        out["recall@1"] = stats.ci(_masked(hits, valid))
        per_image["hits"] = _masked(hits, valid)
        if k > 1:
            g_hits, g_valid = D.per_group_query_hits(c.groups, c.labels)
            out["group_recall@1"] = stats.cols(_masked(g_hits, g_valid[:, None].expand_as(g_hits)))
    return out, per_image


def localisation_section(c: Collected, stats: _Stats) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Group <-> part matching, shares and pointing game, with the uniform-map chance level."""
    assert c.attention is not None and c.part_masks is not None
    masks = c.part_masks.bool()
    rep = localisation_report(c.attention, masks)
    assign = torch.tensor(rep.matched_part)
    hits = pointing_hits(c.attention, masks, assign).float()  # [N, K]
    mass = part_attention_mass(c.attention, masks)  # [N, K, P]
    share = mass[:, torch.arange(len(assign)), assign.clamp_min(0)] * (assign >= 0)  # [N, K]
    chance = localisation_report(uniform_attention(*c.attention.shape), masks)
    out = rep.to_dict()
    out.update(pointing_ci=stats.cols(hits), share_ci=stats.cols(share), mean_pointing=stats.ci(hits.mean(1)),
               mean_share=stats.ci(share.mean(1)), chance={"share": chance.share, "pointing": chance.pointing,
                                                         "area_share": chance.area_share})
    return out, {"pointing": hits.mean(1)}


def keypoint_section(c: Collected, stats: _Stats, part_names: Sequence[str] | None) -> dict[str, Any]:
    """Nearest-keypoint distribution, purity and normalised peak distance per group."""
    assert c.attention is not None and c.keypoints is not None
    rep = keypoint_report(c.attention, c.keypoints.float(), c.size, c.bboxes,
                          list(part_names) if part_names is not None else None)
    dist = torch.tensor(rep["per_image"].pop("distance_to_dominant"))
    rep["per_image"].pop("nearest")
    rep.pop("per_image")
    rep["distance_ci"] = stats.cols(dist)
    rep["mean_purity"] = float(np.mean(rep["purity"]))
    return rep


def saliency_maps(model: nn.Module, images: Tensor, attention: Tensor | None, *, ig_steps: int,
                  ig_baselines: Tensor | None, ig_internal_batch_size: int, seed: int) -> dict[str, Tensor]:
    """The four orderings: ``{method: [N, K or 1, H, W]}`` (``attention`` absent without maps)."""
    from dgml_viz.explain import grad_cam, integrated_gradients

    size = tuple(images.shape[-2:])
    maps: dict[str, Tensor] = {}
    if attention is not None:
        maps["attention"] = faithfulness.attention_saliency(attention, size)
    with torch.inference_mode():
        reference = model(images).groups
    reference = reference.clone()
    maps["integrated_gradients"] = integrated_gradients(model, images, reference=reference, baselines=ig_baselines,
                                                        n_steps=ig_steps, internal_batch_size=ig_internal_batch_size)
    maps["grad_cam"] = grad_cam(model, images, reference=reference)
    maps["random"] = faithfulness.random_saliency(len(images), size, seed=seed).to(images.device)
    return maps


def faithfulness_section(model: nn.Module, c: Collected, stats: _Stats, *, steps: int, baseline: str,
                         ig_steps: int, ig_internal_batch_size: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Deletion/insertion curves and AUCs per ordering (``c.images``: the first M images)."""
    dev = model_device(model)
    images = c.images.to(dev)
    n = len(images)
    att = c.attention[:n].to(dev) if c.attention is not None else None
    base = faithfulness.make_baseline(images, baseline)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    maps = saliency_maps(model, images, att, ig_steps=ig_steps, ig_baselines=base,
                         ig_internal_batch_size=ig_internal_batch_size, seed=seed)
    timings["attributions_s"] = time.perf_counter() - t0
    with torch.inference_mode():
        reference = model(images).groups
    out: dict[str, Any] = {"num_images": n, "steps": steps, "baseline": baseline, "ig_steps": ig_steps,
                           "methods": {}}
    t0 = time.perf_counter()
    dele: dict[str, Tensor] = {}  # per-image AUC (mean over groups), for paired differences
    ins: dict[str, Tensor] = {}
    for name in METHODS:
        if name not in maps:
            continue
        cur = faithfulness.faithfulness_curves(model, images, maps[name], steps=steps, baseline=base, reference=reference,
                                    batch_size=batch_size)
        dele[name], ins[name] = cur["deletion_auc"].mean(1), cur["insertion_auc"].mean(1)
        out["fractions"] = cur["fractions"].tolist()
        out["methods"][name] = {
            "deletion_auc": stats.ci(dele[name]),
            "insertion_auc": stats.ci(ins[name]),
            "deletion_auc_per_group": stats.cols(cur["deletion_auc"]),
            "insertion_auc_per_group": stats.cols(cur["insertion_auc"]),
            "deletion_curve": cur["deletion"].mean(dim=(0, 1)).tolist(),
            "insertion_curve": cur["insertion"].mean(dim=(0, 1)).tolist(),
        }
    timings["curves_s"] = time.perf_counter() - t0
    # paired differences against random on the same images:
    # deletion < 0 and insertion > 0 mean "better than a random order"
    out["vs_random"] = {
        name: {"deletion_auc_diff": stats.ci(dele[name] - dele["random"]),
               "insertion_auc_diff": stats.ci(ins[name] - ins["random"])}
        for name in dele if name != "random"
    }
    out["timings"] = timings
    return out


def invariance_section(model: nn.Module, images: Tensor, *, shifts: Sequence[int], permutations: int,
                       seed: int, batch_size: int) -> dict[str, Any]:
    """Permutation certificate of ``model.head`` and wrap/pad translation curves."""
    dev = model_device(model)
    x = images.to(dev)
    with torch.inference_mode():
        feats = model.features(x)
    out: dict[str, Any] = {"permutation": permutation_certificate(model.head, feats, permutations, seed),
                           # declared by the backbone (ViT): translation is then measured, not implied
                           "position_embedding": bool(getattr(model.backbone, "position_embedding", False))}
    for mode in ("wrap", "pad"):
        cur = translation_curve(model, x, shifts, mode=mode, batch_size=batch_size)
        cur.pop("raw")
        out[f"translation_{mode}"] = cur
    return out


def per_class_section(labels: Tensor, per_image: dict[str, Tensor], class_names: Sequence[str] | None) -> dict[str, Any]:
    """Per-class means (NaN-aware) of per-image values: ``{"classes": [...], metric: [C]}``."""
    uniq, inv = torch.unique(labels, return_inverse=True)
    out: dict[str, Any] = {"labels": uniq.tolist(),
                           "classes": [class_names[i] if class_names is not None and 0 <= i < len(class_names)
                                       else str(i) for i in uniq.tolist()],
                           "count": torch.bincount(inv, minlength=len(uniq)).tolist()}
    for name, v in per_image.items():
        v = v.double()
        ok = ~v.isnan()
        s = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inv[ok], v[ok])
        cnt = torch.bincount(inv[ok], minlength=len(uniq)).double()
        out["recall@1" if name == "hits" else name] = (s / cnt).tolist()  # NaN where no valid value
    return out


#: a report section, or ``None`` and the reason it was skipped (exactly one of the two is ``None``)
Outcome = tuple[dict[str, Any] | None, str | None]


@contextlib.contextmanager
def _timer(timings: dict[str, float], key: str) -> Iterator[None]:
    """Store the wall time of the ``with`` body in ``timings[key]`` (seconds; not stored on error)."""
    t0 = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - t0


def _lacks(c: Collected, annotation: Tensor | None, missing: str) -> str | None:
    """Why a section that needs ``annotation`` and attention maps cannot run (``None``: it can)."""
    if annotation is None:
        return missing
    return "model has no attention maps" if c.attention is None else None


def _put(report: dict[str, Any], skipped: dict[str, str], name: str, outcome: Outcome) -> None:
    """``report[name]`` = the section (``None`` when skipped, the reason then going to ``skipped``)."""
    section, reason = outcome
    report[name] = section
    if reason is not None:
        skipped[name] = reason


def _localisation_outcome(c: Collected, stats: _Stats) -> tuple[Outcome, dict[str, Tensor]]:
    """The localisation section (needs part masks) and its per-image ``{"pointing": [N]}``."""
    reason = _lacks(c, c.part_masks, "no part masks")
    if reason is not None:
        return (None, reason), {}
    section, per_image = localisation_section(c, stats)
    return (section, None), per_image


def _keypoint_outcome(c: Collected, stats: _Stats, part_names: Sequence[str] | None) -> Outcome:
    """The keypoint section (needs keypoints)."""
    reason = _lacks(c, c.keypoints, "no keypoints")
    return (None, reason) if reason is not None else (keypoint_section(c, stats, part_names), None)


def _on_first_images(c: Collected, images: int, option: str, section: Callable[[Tensor], dict[str, Any]]) -> Outcome:
    """``section`` of the first ``images`` kept images ``[M, 3, H, W]``; skipped when ``option`` (their count) is 0."""
    if images > 0 and len(c.images):
        return section(c.images[:images]), None
    return None, f"{option} = 0"


def _per_class_outcome(c: Collected, per_image: dict[str, Tensor], class_names: Sequence[str] | None) -> Outcome:
    """The per-class section (needs labels) of the per-image values ``{metric: [N]}``."""
    if c.labels is None:
        return None, "no labels"
    return per_class_section(c.labels, per_image, class_names), None


def analyse_model(model: nn.Module, batches: Iterable[dict[str, Any]], *, class_names: Sequence[str] | None = None,
                  part_names: Sequence[str] | None = None, faithfulness_images: int = 100, steps: int = 8,
                  baseline: str = "blur", ig_steps: int = 16, ig_internal_batch_size: int = 256,
                  invariance_images: int = 64, shifts: Sequence[int] = (0, 2, 4, 8, 16),
                  permutations: int = 8, num_resamples: int = 1000, seed: int = 0,
                  batch_size: int = 256) -> dict[str, Any]:
    """All sections for one model (see the module docstring); JSON-ready.

    Args:
        model: grouping model (put in eval mode here).
        batches: collated dataset batches (``image`` ``[B, 3, H, W]``; optional ``label``,
            ``part_masks``, ``keypoints``, ``bbox``).
        class_names, part_names: for the per-class and keypoint sections.
        faithfulness_images: images (the first ones) used for the perturbation curves.
        steps: deletion/insertion curve steps; baseline: ``"blur"`` or ``"mean"``.
        ig_steps: Integrated Gradients steps; ig_internal_batch_size: captum chunking.
        invariance_images: images for the invariance certificates; shifts: translation shifts (px).
        permutations: random position permutations; num_resamples, seed: bootstrap.
        batch_size: forward batch size for perturbed images.
    """
    model.eval()
    timings: dict[str, float] = {}
    with _timer(timings, "forward_s"):
        c = collect(model, batches, keep_images=max(faithfulness_images, invariance_images))
    stats = _Stats(num_resamples, seed)
    skipped: dict[str, str] = {}
    report: dict[str, Any] = {"num_images": int(len(c.groups)), "num_groups": int(c.groups.shape[1]),
                              "has_attention": c.attention is not None, "image_size": list(c.size)}
    with _timer(timings, "diversity_s"):
        report["diversity"], per_image = diversity_section(c, stats)
    with _timer(timings, "group_health_s"):
        report["group_health"] = group_health(c.groups, c.attention, c.labels, seed=seed).to_dict()
    with _timer(timings, "localisation_s"):
        localisation, pointing = _localisation_outcome(c, stats)
        per_image.update(pointing)
        _put(report, skipped, "localisation", localisation)
        _put(report, skipped, "keypoints", _keypoint_outcome(c, stats, part_names))
    with _timer(timings, "faithfulness_s"):
        _put(report, skipped, "faithfulness", _on_first_images(
            c, faithfulness_images, "faithfulness_images",
            lambda x: faithfulness_section(model, Collected(**{**c.__dict__, "images": x}), stats, steps=steps,
                                           baseline=baseline, ig_steps=ig_steps,
                                           ig_internal_batch_size=ig_internal_batch_size, batch_size=batch_size,
                                           seed=seed)))
    with _timer(timings, "invariance_s"):
        _put(report, skipped, "invariance", _on_first_images(
            c, invariance_images, "invariance_images",
            lambda x: invariance_section(model, x, shifts=shifts, permutations=permutations, seed=seed,
                                         batch_size=batch_size)))
    _put(report, skipped, "per_class", _per_class_outcome(c, per_image, class_names))
    report["skipped"] = skipped
    report["timings"] = timings
    report["headline"] = headline(report)
    return report


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or d.get(p) is None:
            return None
        d = d[p]
    return d


#: headline metric -> (path in the report, "lower"/"higher" is better, description)
HEADLINE: dict[str, tuple[tuple[str, ...], str, str]] = {
    "recall@1": (("diversity", "recall@1"), "higher", "Recall@1 of the whole embedding"),
    "attention_intersection": (("diversity", "intersection", "mean"), "lower",
                               "shared attention mass between groups of one image"),
    "attention_iou@50%": (("diversity", "iou", "mean"), "lower", "IoU of groups' top-50%-mass regions"),
    "group_cosine": (("diversity", "cosine", "mean"), "lower", "cosine between groups of one image"),
    "attention_entropy": (("diversity", "entropy", "mean"), "lower", "normalised attention entropy"),
    "part_share": (("localisation", "mean_share"), "higher", "attention mass in the matched part"),
    "pointing_game": (("localisation", "mean_pointing"), "higher", "peak inside the matched part"),
    **{f"deletion_auc[{m}]": (("faithfulness", "methods", m, "deletion_auc"), "lower",
                              f"deletion AUC, {m} order") for m in METHODS},
    **{f"insertion_auc[{m}]": (("faithfulness", "methods", m, "insertion_auc"), "higher",
                               f"insertion AUC, {m} order") for m in METHODS},
}


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The comparable numbers of one model's report: ``{name: CI dict}`` (absent ones left out).

    Adds the non-bootstrapped ``permutation_max_delta``, ``translation_cos_wrap`` /
    ``translation_cos_pad`` (embedding cosine at the largest shift),
    ``keypoint_purity`` and the group-health counts ``dead_groups`` / ``duplicated_pairs``
    as ``{"estimate": value}``.
    """
    out: dict[str, Any] = {}
    for name, (path, _, _) in HEADLINE.items():
        v = _get(report, *path)
        if v is not None:
            out[name] = v
    gr = _get(report, "diversity", "group_recall@1")
    if gr:
        out["group_recall@1_mean"] = {"estimate": float(np.mean([g["estimate"] for g in gr]))}
    inv = report.get("invariance")
    if inv:
        out["permutation_max_delta"] = {"estimate": inv["permutation"]["max_abs_delta"]}
        for mode in ("wrap", "pad"):
            out[f"translation_cos_{mode}"] = {"estimate": inv[f"translation_{mode}"]["embedding_cosine"][-1]}
    if report.get("keypoints"):
        out["keypoint_purity"] = {"estimate": report["keypoints"]["mean_purity"]}
    gh = report.get("group_health")
    if gh:
        out["dead_groups"] = {"estimate": len(gh["dead"])}
        out["duplicated_pairs"] = {"estimate": len(gh["duplicates"])}
    return out


def better(name: str) -> str | None:
    """``"lower"`` / ``"higher"`` for a headline metric (None when it is a certificate or neutral)."""
    if name in HEADLINE:
        return HEADLINE[name][1]
    return {"group_recall@1_mean": "higher", "keypoint_purity": "higher", "permutation_max_delta": "lower",
            "dead_groups": "lower", "duplicated_pairs": "lower",
            "translation_cos_wrap": "higher", "translation_cos_pad": "higher"}.get(name)


__all__ = ["METHODS", "Collected", "collect", "analyse_model", "diversity_section", "localisation_section",
           "keypoint_section", "faithfulness_section", "invariance_section", "per_class_section",
           "saliency_maps", "headline", "better", "HEADLINE"]
