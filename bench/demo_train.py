"""Train the shipped demo models and their baselines; write the cards; print the table.

    .venv/bin/python bench/demo_train.py synthetic          # checkpoints/demo.pt + demo.md
    .venv/bin/python bench/demo_train.py fashion_mnist      # checkpoints/fashion_mnist.pt + .md
    .venv/bin/python bench/demo_train.py synthetic --card-only   # re-evaluate existing runs

Every model is trained by the real CLI, ``dgml-viz train --config <recipe> [overrides]``,
in a subprocess limited to 2 torch threads, one after the other with the same
recipe and step budget: ours (attentive head) and the ``gap`` and ``multi_linear``
baselines. Each is evaluated on the held-out classes by
:func:`dgml_viz.metrics.localisation.benchmark_report` (retrieval + localisation),
which is also what ``tests/test_demo_card.py`` recomputes from the shipped file on
a fixed subset stored in ``checkpoints/<name>_metrics.json``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dgml_viz.metrics.localisation import benchmark_report  # noqa: E402
from dgml_viz.model.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint  # noqa: E402
from dgml_viz.utils.atomic import atomic_write_text  # noqa: E402

logger = logging.getLogger("demo_train")

MACHINE = "2-core CPU dev box, no GPU, shared with other jobs"
#: the softmax temperature of the plain phase is a knob of the attentive head only (the others have none)
NO_TEMPERATURE = "train.attention_temperature_early=1"
#: so is re-seeding a duplicated group (a fresh query): off for the heads without queries
NO_RESEED = "train.reseed_overlap=null"
HEADS = {  # name -> CLI overrides (same recipe, same steps)
    "attentive (ours)": [],
    "gap": ["model.head=gap", "model.groups=1", NO_TEMPERATURE, NO_RESEED],
    "multi_linear": ["model.head=multi_linear", NO_TEMPERATURE, NO_RESEED],
    "gate": ["model.head=gate", NO_TEMPERATURE, NO_RESEED],
}
TARGETS = {
    "synthetic": {"ckpt": "demo.pt", "card": "demo.md", "json": "demo_metrics.json", "subset_per_class": 8},
    "fashion_mnist": {"ckpt": "fashion_mnist.pt", "card": "fashion_mnist.md", "json": "fashion_mnist_metrics.json",
                      "subset_per_class": 40},
}


def subset_indices(labels: list[int], per_class: int) -> list[int]:
    """The first ``per_class`` items of every class, in dataset order (the card's exact subset)."""
    seen: dict[int, int] = {}
    out = []
    for i, y in enumerate(labels):
        if seen.get(y, 0) < per_class:
            seen[y] = seen.get(y, 0) + 1
            out.append(i)
    return out


def build_test_set(recipe: str) -> Any:
    from dgml_viz.train import load_config
    from dgml_viz.train.loop import build_datasets

    _, test, _, _ = build_datasets(load_config(recipe))
    return test


def train_one(recipe: str, overrides: list[str], run_dir: Path) -> dict[str, float]:
    """Run ``dgml-viz train`` in a subprocess (2 torch threads); returns wall and CPU seconds."""
    cmd = [str(ROOT / ".venv/bin/dgml-viz"), "train", "--config", recipe, "--run-dir", str(run_dir), *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    logger.info("running: %s", " ".join(cmd))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "command": "dgml-viz train --config " + " ".join([recipe, *overrides])}


def fmt(v: Any, nd: int = 3) -> str:
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def table(rows: dict[str, dict[str, Any]]) -> str:
    head = ("| model | R@1 | R@2 | R@4 | R@8 | MAP@R | NMI | per-group R@1 | share in part (min / per group) "
            "| share / area (min) | pointing (min) | distinct parts | steps | train wall s | train CPU s |\n")
    head += "|" + "---|" * 15 + "\n"
    lines = []
    for name, r in rows.items():
        m = r["metrics"]
        groups = [v for k, v in sorted(m.items()) if k.startswith("group") and k.endswith("recall@1")]
        loc = m.get("localisation")
        if loc:
            share = f"{loc['min_share']:.3f} / " + ", ".join(f"{s:.3f}" for s in loc["share"])
            ratio, point, distinct = f"{loc['min_ratio']:.1f}", f"{loc['min_pointing']:.3f}", str(loc["distinct"])
        else:
            why = "no part masks" if name == "attentive (ours)" else "no spatial attention"
            share = ratio = point = distinct = f"n/a ({why})"
        lines.append(f"| {name} | {fmt(m['recall@1'])} | {fmt(m['recall@2'])} | {fmt(m['recall@4'])} | "
                     f"{fmt(m['recall@8'])} | {fmt(m['map@r'])} | {fmt(m.get('nmi', float('nan')))} | "
                     f"{', '.join(f'{g:.3f}' for g in groups) or '-'} | {share} | {ratio} | {point} | {distinct} | "
                     f"{m.get('steps')} | {r['time']['wall_s']:.0f} | {r['time']['cpu_s']:.0f} |")
    return head + "\n".join(lines) + "\n"


def criteria(m: dict[str, Any]) -> list[tuple[str, bool, str]]:
    loc = m["localisation"]
    return [
        ("Recall@1 >= 0.9", m["recall@1"] >= 0.9, f"{m['recall@1']:.3f}"),
        ("every group's share inside its matched part >= 0.5", loc["min_share"] >= 0.5,
         ", ".join(f"{s:.3f}" for s in loc["share"])),
        ("share >= 5x the part's area share", loc["min_ratio"] >= 5, ", ".join(f"{s:.1f}" for s in loc["ratio"])),
        ("groups matched to distinct parts", bool(loc["distinct"]), str(loc["matched_part"])),
        ("pointing game >= 0.9 for every group", loc["min_pointing"] >= 0.9,
         ", ".join(f"{s:.3f}" for s in loc["pointing"])),
    ]


def write_card(name: str, rows: dict[str, dict[str, Any]], subset: dict[str, Any], started: str) -> str:
    t = TARGETS[name]
    ours = rows["attentive (ours)"]
    m = ours["metrics"]
    from dgml_viz.train import load_config

    cfg = load_config(name)
    lines = [f"# Model card: `checkpoints/{t['ckpt']}` ({name})", "",
             f"Card written {started}. The model was trained by the real training loop:", "",
             "```", ours["time"]["command"] + " --run-dir <run dir>", "```", "",
             f"- seed: {cfg['train']['seed']} (data seed {cfg['data']['kwargs'].get('seed', 'n/a')}); "
             f"steps: {m.get('steps', 'see table')}",
             f"- training time: {ours['time']['wall_s']:.0f} s wall, {ours['time']['cpu_s']:.0f} s CPU "
             f"(2 torch threads; {MACHINE}; models trained one after the other — check the load in bench/RESULTS.md)",
             f"- evaluation: held-out classes (test split, {m['num_images']} images), "
             "`dgml_viz.metrics.localisation.benchmark_report`", ""]
    if "localisation" in m:
        lines += ["## Acceptance criteria (ours, full test split)", "", "| criterion | met | measured |", "|---|---|---|"]
        lines += [f"| {c} | {'yes' if ok else 'NO'} | {v} |" for c, ok, v in criteria(m)]
        loc, uni = m["localisation"], m["localisation_uniform"]
        lines += ["", f"Matched parts per group: {loc['matched_part']} (0 red, 1 green, 2 blue part); "
                  f"part area shares {', '.join(f'{a:.4f}' for a in loc['area_share'])}; "
                  f"uniform attention would score share {', '.join(f'{s:.3f}' for s in uni['share'])} "
                  f"and pointing {', '.join(f'{s:.3f}' for s in uni['pointing'])}.", "",
                  "Mean attention mass of each group (rows) in each part (columns):", ""]
        lines += ["| group | " + " | ".join(f"part {p}" for p in range(len(loc['mass'][0]))) + " |",
                  "|---|" + "---|" * len(loc["mass"][0])]
        lines += [f"| {g} | " + " | ".join(f"{v:.3f}" for v in row) + " |" for g, row in enumerate(loc["mass"])]
    seeds = ROOT / "bench" / f"demo_seeds_{name}.md"  # the recipe on other seeds (bench/seeds.py), when measured
    if seeds.exists():
        lines += ["", seeds.read_text().strip()]
    lines += ["", "## Ours vs baselines (same recipe and the same `train.time_budget_s` wall-clock budget; held-out classes)", "", table(rows),
              "Baseline commands:", ""]
    lines += [f"- {k}: `{r['time']['command']}`" for k, r in rows.items()]
    notes = ROOT / "bench" / f"demo_notes_{name}.md"
    if notes.exists():
        lines += ["", notes.read_text().strip(), ""]
    lines += ["", "## Exact subset numbers", "",
              f"`checkpoints/{t['json']}` holds `benchmark_report` on the first {t['subset_per_class']} test "
              f"images of every class ({subset['num_images']} images); `tests/test_demo_card.py` recomputes them "
              "from the shipped checkpoint and checks they agree, and that they lie within sampling error of "
              "the full-split numbers above.", "",
              "All metrics (ours, full split):", "", "```json", json.dumps(m, indent=1), "```", ""]
    return "\n".join(lines)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", choices=sorted(TARGETS))
    p.add_argument("--runs", default=str(ROOT / "runs" / "demo"), help="where the runs go")
    p.add_argument("--card-only", action="store_true", help="do not train; evaluate the existing runs")
    p.add_argument("--only", nargs="*", default=None, help="train only these models (names in HEADS)")
    args = p.parse_args()
    torch.set_num_threads(2)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    runs = Path(args.runs)
    times_path = runs / f"{args.recipe}_times.json"
    times = json.loads(times_path.read_text()) if times_path.exists() else {}
    for extra in sorted(runs.glob(f"{args.recipe}_time_*.json")):  # one file per model (parallel runs)
        times.update(json.loads(extra.read_text()))
    for name, overrides in HEADS.items():
        if args.card_only or (args.only is not None and name not in args.only):
            continue
        run_dir = runs / f"{args.recipe}-{name.split()[0]}"
        times[name] = train_one(args.recipe, overrides, run_dir)
        times_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(runs / f"{args.recipe}_time_{name.split()[0]}.json", json.dumps({name: times[name]}))
    test = build_test_set(args.recipe)
    rows: dict[str, dict[str, Any]] = {}
    for name in HEADS:
        ckpt = runs / f"{args.recipe}-{name.split()[0]}" / "last.pt"
        if not ckpt.exists() or name not in times:
            logger.warning("no run for %s (%s); left out of the table", name, ckpt)
            continue
        model = load_checkpoint(ckpt)
        metrics = benchmark_report(model, test)
        meta = read_checkpoint_info(ckpt)["meta"]
        metrics["steps"] = meta.get("step")
        rows[name] = {"metrics": metrics, "time": times[name], "ckpt": ckpt, "model": model,
                      "recipe": meta.get("recipe")}
    t = TARGETS[args.recipe]
    out_dir = ROOT / "checkpoints"
    ours = rows["attentive (ours)"]
    subset_idx = subset_indices(list(test.labels), t["subset_per_class"])
    subset = benchmark_report(ours["model"], test, subset_idx)
    subset.update(indices_rule=f"first {t['subset_per_class']} test items of every class", indices=subset_idx)
    # ours ships as <recipe>'s demo file; the baselines too (the app's contrast views and
    # `interpret --compare` use them), all with the same self-description
    for name, r in rows.items():
        dest = out_dir / t["ckpt"] if r is ours else out_dir / "baselines" / f"{args.recipe}_{name}.pt"
        save_checkpoint(r["model"], dest, transform=r["model"].transform,
                        class_names=getattr(test, "class_names", None), metrics=r["metrics"], recipe=r["recipe"],
                        step=r["metrics"]["steps"], command=r["time"]["command"], train_wall_s=r["time"]["wall_s"],
                        train_cpu_s=r["time"]["cpu_s"], machine=MACHINE, trained=started)
    atomic_write_text(out_dir / t["json"], json.dumps({"subset": subset, "full": ours["metrics"],
                                                       "baselines": {k: r["metrics"] for k, r in rows.items()}},
                                                      indent=1))
    atomic_write_text(out_dir / t["card"], write_card(args.recipe, rows, subset, started))
    sys.stdout.write(table(rows))
    sys.stdout.write(f"train time (ours): {ours['time']['wall_s']:.0f} s wall, {ours['time']['cpu_s']:.0f} s CPU\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
