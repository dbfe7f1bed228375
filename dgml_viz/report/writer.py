"""Write an interpretability report: ``report.json`` (numbers) + ``report.html`` (tables, plots).

The HTML is one self-contained file: every figure is a matplotlib PNG embedded
as base64 (``<img id="fig-NAME">``), and ``report.json["figures"]`` lists the
same ids, so a reader (or a test) can check that every plot is referenced.
Both files are written atomically. Non-finite floats become JSON ``null``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import logging
import math
from pathlib import Path
from typing import Any

from dgml_viz.report import plots
from dgml_viz.report.analysis import METHODS, better
from dgml_viz.utils.atomic import atomic_write_text

logger = logging.getLogger(__name__)

FORMAT = "dgml_viz.interpret"
FORMAT_VERSION = 1

#: headline metrics shown in the comparison figure, in order
COMPARE = ["recall@1", "group_recall@1_mean", "attention_intersection", "attention_iou@50%", "group_cosine",
           "attention_entropy", "part_share", "pointing_game", "keypoint_purity",
           "deletion_auc[attention]", "deletion_auc[integrated_gradients]", "deletion_auc[grad_cam]",
           "deletion_auc[random]", "insertion_auc[attention]", "insertion_auc[random]",
           "permutation_max_delta", "translation_cos_pad"]


def plain(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, tuples -> lists, tensors/numpy scalars -> Python values."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return plain(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return value


def _fmt(ci: Any, digits: int = 3) -> str:
    if not isinstance(ci, dict) or ci.get("estimate") is None:
        return "–"
    est = ci["estimate"]
    if isinstance(est, int) and not isinstance(est, bool):
        return str(est)
    if isinstance(est, float) and (abs(est) < 1e-3 and est != 0):
        s = f"{est:.2e}"
    else:
        s = f"{est:.{digits}f}"
    if ci.get("low") is not None and ci.get("high") is not None:
        s += f" [{ci['low']:.{digits}f}, {ci['high']:.{digits}f}]"
    return s


def claims(report: dict[str, Any]) -> list[dict[str, str]]:
    """Plain-language verdicts on the two claims for the primary model, from CIs."""
    r = report["models"][report["primary"]]
    out: list[dict[str, str]] = []
    div = r.get("diversity") or {}
    inter = (div.get("intersection") or {}).get("mean")
    cos = (div.get("cosine") or {}).get("mean")
    if inter is not None or cos is not None:
        ok = (inter is None or (inter["high"] is not None and inter["high"] < 0.5)) and \
             (cos is None or (cos["high"] is not None and cos["high"] < 0.5))
        ev = []
        if inter is not None:
            ev.append(f"mean shared attention mass between two groups {_fmt(inter)} (identical maps: 1)")
        if cos is not None:
            ev.append(f"mean cosine between two groups of one image {_fmt(cos)} (identical: 1)")
        loc = r.get("localisation")
        if loc:
            ev.append(f"groups matched to {'distinct' if loc['distinct'] else 'NOT distinct'} parts "
                      f"{loc['matched_part']}, pointing game {_fmt(loc['mean_pointing'])}")
        out.append({"claim": "groups learn distinct features",
                    "verdict": "supported" if ok else "not supported",
                    "rule": "upper 95% CI of mean pairwise intersection and cosine below 0.5",
                    "evidence": "; ".join(ev)})
    vs = ((r.get("faithfulness") or {}).get("vs_random") or {}).get("attention")
    if vs is not None:
        d = vs["deletion_auc_diff"]
        i = vs["insertion_auc_diff"]
        ok = d["high"] is not None and d["high"] < 0 and i["low"] is not None and i["low"] > 0
        meth = r["faithfulness"]["methods"]
        ev = [f"deletion AUC attention {_fmt(meth['attention']['deletion_auc'])} vs random "
              f"{_fmt(meth['random']['deletion_auc'])} (paired difference {_fmt(d)})",
              f"insertion AUC attention {_fmt(meth['attention']['insertion_auc'])} vs random "
              f"{_fmt(meth['random']['insertion_auc'])} (paired difference {_fmt(i)})"]
        for m in ("integrated_gradients", "grad_cam"):
            if m in meth:
                ev.append(f"{m}: deletion {_fmt(meth[m]['deletion_auc'])}, insertion {_fmt(meth[m]['insertion_auc'])}")
        out.append({"claim": "attention shows what the embedding uses",
                    "verdict": "supported" if ok else "not supported",
                    "rule": "attention ordering beats random on both deletion and insertion (paired 95% CIs exclude 0)",
                    "evidence": "; ".join(ev)})
    return out


def build_figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    """``[{"id", "title", "caption", "png": bytes}]`` for the report (primary model + comparison)."""
    models = report["models"]
    primary = models[report["primary"]]
    figs: list[dict[str, Any]] = []

    def add(fid: str, title: str, caption: str, png: bytes) -> None:
        figs.append({"id": fid, "title": title, "caption": caption, "png": png})

    if len(models) > 1:
        add("comparison", "Comparison", "Headline numbers of every model (bars: 95% bootstrap CI).",
            plots.comparison_figure(models, COMPARE))
    add("diversity", "Diversity", "Mean pairwise attention intersection and group cosine (same image); "
        "per-group normalised entropy and Recall@1.", plots.diversity_figure(primary["diversity"]))
    if primary.get("localisation"):
        add("localisation", "Localisation (part masks)", "Mean attention mass of each group in each part; "
            "matched-part share and pointing game vs the part's area (uniform chance).",
            plots.localisation_figure(primary["localisation"], report.get("part_names")))
    if primary.get("keypoints"):
        add("keypoints", "Localisation (keypoints)", "Fraction of images whose attention peak is nearest each "
            "visible keypoint, per group.", plots.keypoint_figure(primary["keypoints"]))
    if any(r.get("faithfulness") for r in models.values()):
        add("faithfulness", "Faithfulness", "Mean deletion/insertion curves of each group's similarity to its "
            "clean embedding, per pixel ordering.", plots.faithfulness_figure(models))
    if any(r.get("invariance") for r in models.values()):
        add("translation", "Translation", "Cosine between clean and shifted embeddings (thick) and groups (thin).",
            plots.translation_figure(models))
    if primary.get("per_class") and primary["per_class"].get("recall@1") is not None:
        add("per_class", "Per-class Recall@1", "Recall@1 of each held-out class (sorted).",
            plots.per_class_figure(primary["per_class"]))
    return figs


def _table(header: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in header)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


def _num(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def health_html(models: dict[str, dict[str, Any]], primary: str) -> str:
    """The "Group health" section: each model's flags (one line each) and the primary's signals."""
    parts = ["<h2>Group health (no part masks needed)</h2>"]
    for name, r in models.items():
        gh = r.get("group_health")
        if not gh:
            continue
        lines = gh["reasons"] or ["no dead, suspect or duplicated groups"]
        used = ["labels"] * gh["retrieval_used"] + ["attention"] * gh["has_attention"] + ["embeddings"]
        basis = ", ".join(used[:-1]) + (" and " if len(used) > 1 else "") + used[-1]
        parts.append(f"<p><b>{html.escape(name)}</b> ({gh['num_images']} images; judged from {basis})</p><ul>"
                     + "".join(f"<li>{html.escape(x)}</li>" for x in lines + gh.get("notes", [])) + "</ul>")
    gh = models[primary].get("group_health")
    if gh:
        parts.append(f"<h3>Per group ({html.escape(primary)})</h3>" + _table(
            ["group", "verdict", "Recall@1", "chance", "pair AUC", "embedding consistency", "entropy",
             "cross-image overlap", "centre mobility"],
            [[f"g{s['group']}", "dead" if s["group"] in gh["dead"] else "suspect" if s["group"] in gh["suspect"]
              else "ok", _num(s["recall_at_1"]), _num(s["chance"]), _num(s["separation_auc"]),
              _num(s["embedding_consistency"]), _num(s["entropy"]), _num(s["cross_image_overlap"]),
              _num(s["centre_mobility"])] for s in gh["groups"]]))
        if gh["pairs"]:
            dup = {tuple(p) for p in gh["duplicates"]}
            parts.append(f"<h3>Per pair ({html.escape(primary)})</h3>" + _table(
                ["pair", "verdict", "attention overlap", "centre distance", "cosine", "similarity correlation"],
                [[f"{p['pair'][0]}-{p['pair'][1]}", "duplicated" if tuple(p["pair"]) in dup else "ok",
                  _num(p["attention_overlap"]),
                  _num(p.get("centre_distance")) + ("" if p.get("local") in (None, True) else " (broad maps)"),
                  _num(p["cosine"]), _num(p["similarity_correlation"])]
                 for p in gh["pairs"]]))
        t = gh["thresholds"]
        parts.append(f"<p>Dead: retrieval of the group's slice near chance (Recall@1 &lt; {t['chance_lift']}x chance "
                     f"or z &lt; {t['chance_z']}, and same-class pair AUC &lt; {t['separation_alive']}); without "
                     f"labels: embedding consistency &ge; {t['constant_embedding']}, entropy &ge; "
                     f"{t['uniform_entropy']} or cross-image overlap &ge; {t['static_overlap']}. Duplicated: attention "
                     f"overlap &ge; {t['duplicate_overlap']}, compact maps whose centres lie less than "
                     f"{t.get('duplicate_distance', 'n/a')} of the grid apart (median), cosine &ge; {t['duplicate_cosine']} or similarity "
                     f"correlation &ge; {t['duplicate_ranking']}.</p>")
    return "".join(parts) if len(parts) > 1 else ""


def render_html(report: dict[str, Any], figures: list[dict[str, Any]]) -> str:
    """The self-contained HTML page."""
    models = report["models"]
    names = list(models)
    parts = [f"<h1>Interpretability report</h1><p>{html.escape(report['created'])} — data: "
             f"{html.escape(str(report['source']))}; primary model <b>{html.escape(report['primary'])}</b>.</p>"]
    cl = report.get("claims") or []
    if cl:
        parts.append("<h2>Claims</h2>" + _table(["claim", "verdict", "rule", "evidence"],
                                                 [[c["claim"], c["verdict"], c["rule"], c["evidence"]] for c in cl]))
    metrics = sorted({m for r in models.values() for m in r["headline"]}, key=lambda m: (
        COMPARE.index(m) if m in COMPARE else len(COMPARE), m))
    rows = [[m, {"lower": "↓", "higher": "↑"}.get(better(m) or "", "")] +
            [_fmt(models[n]["headline"].get(m)) for n in names] for m in metrics]
    parts.append("<h2>Headline numbers (95% bootstrap CI)</h2>" + _table(["metric", "better"] + names, rows))
    parts.append(health_html(models, report["primary"]))
    p = models[report["primary"]]
    div = p["diversity"]
    if div.get("group_recall@1"):
        parts.append("<h3>Per group</h3>" + _table(
            ["group", "Recall@1", "entropy"],
            [[f"g{g}", _fmt(div["group_recall@1"][g]),
              _fmt(div["entropy"]["per_group"][g]) if "entropy" in div else "–"] for g in range(div["num_groups"])]))
    if div.get("intersection"):
        parts.append("<h3>Per pair</h3>" + _table(
            ["pair", "intersection", f"IoU@{int(div['top_mass'] * 100)}%", "cosine"],
            [[pn, _fmt(div["intersection"]["per_pair"][i]), _fmt(div["iou"]["per_pair"][i]),
              _fmt(div["cosine"]["per_pair"][i])] for i, pn in enumerate(div["pairs"])]))
    f = p.get("faithfulness")
    if f:
        parts.append(f"<h3>Faithfulness ({f['num_images']} images, {f['steps']} steps, {f['baseline']} baseline, "
                     f"IG {f['ig_steps']} steps from the same {f['baseline']} baseline; similarity of each group to its "
                     f"own clean embedding)</h3>" + _table(
                         ["ordering", "deletion AUC ↓", "insertion AUC ↑"],
                         [[m, _fmt(f["methods"][m]["deletion_auc"]), _fmt(f["methods"][m]["insertion_auc"])]
                          for m in METHODS if m in f["methods"]]))
    inv = p.get("invariance")
    if inv:
        pc = inv["permutation"]
        parts.append(f"<h3>Invariance</h3><p>Permutation certificate: max |Δ| of group embeddings over "
                     f"{pc['num_permutations']} random position permutations × {pc['num_images']} images = "
                     f"{pc['max_abs_delta']:.2e}.</p>")
        if inv.get("position_embedding"):
            parts.append("<p>The backbone adds position embeddings (ViT): the head is permutation invariant on its "
                         "tokens, but the backbone is not translation invariant, so the embedding is not either; "
                         "see the measured translation curve.</p>")
    if report.get("skipped"):
        parts.append("<h3>Skipped</h3>" + _table(["section", "why"], [[k, v] for k, v in report["skipped"].items()]))
    for fig in figures:
        data = base64.b64encode(fig["png"]).decode("ascii")
        parts.append(f'<figure id="fig-{fig["id"]}"><h2>{html.escape(fig["title"])}</h2>'
                     f'<img id="img-{fig["id"]}" alt="{html.escape(fig["id"])}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{html.escape(fig['caption'])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;margin:8px 0}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>dgml-viz interpret</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def assemble_report(models: dict[str, dict[str, Any]], primary: str, source: str,
                    part_names: list[str] | None = None, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Top-level report dict (without figures) from per-model reports."""
    report: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "source": source, "primary": primary, "part_names": part_names, "options": options or {},
        "models": models,
        "comparison": {m: {n: r["headline"].get(m) for n, r in models.items()}
                       for m in sorted({m for r in models.values() for m in r["headline"]})},
        "skipped": models[primary].get("skipped", {}),
    }
    report["claims"] = claims(report)
    return report


def write_report(report: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Build the figures and write ``report.json`` and ``report.html`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = build_figures(report)
    report = dict(report, figures=[{k: v for k, v in f.items() if k != "png"} for f in figures])
    jpath, hpath = out / "report.json", out / "report.html"
    atomic_write_text(jpath, json.dumps(plain(report), indent=1, allow_nan=False))
    atomic_write_text(hpath, render_html(report, figures))
    return jpath, hpath


__all__ = ["FORMAT", "FORMAT_VERSION", "plain", "claims", "build_figures", "health_html", "render_html", "assemble_report",
           "write_report"]
