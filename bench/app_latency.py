"""Latency of the Streamlit app's interactions with a warm cache (AppTest reruns, in-process).

For each page: one cold run (loads the model, indexes the gallery, fills the caches),
then every interaction is timed ``--reps`` times on alternating values (so each rerun
changes a widget, as a user would). Prints one line per interaction:
median / max milliseconds of the whole script rerun (widget change -> page rebuilt),
which includes Streamlit's own script overhead and image encoding.

Uses checkpoints/demo.pt when present (the shipped demo model), otherwise writes a
small_cnn checkpoint of the same kind into a temp folder (and says so).

    python bench/app_latency.py [--reps 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
logger = logging.getLogger("bench.app_latency")


def _checkpoint_dir() -> tuple[Path, str]:
    shipped = ROOT / "checkpoints" / "demo.pt"
    if shipped.exists():
        return shipped.parent, f"shipped {shipped.relative_to(ROOT)}"
    import torch

    from dgml_viz.data.synthetic import synthetic_transform
    from dgml_viz.model import create_model
    from dgml_viz.model.checkpoint import save_checkpoint

    folder = Path(tempfile.mkdtemp(prefix="dgml-bench-"))
    torch.manual_seed(0)
    # same architecture and input size as the shipped demo recipe (dgml_viz/train/recipes/synthetic.yaml)
    model = create_model("small_cnn", groups=3, dim=96, reduction=4, width=16).eval()
    recipe = {"data": {"name": "synthetic", "kwargs": {"image_size": 128, "seed": 0}}}
    save_checkpoint(model, folder / "demo.pt", transform=synthetic_transform(128), recipe=recipe)
    return folder, "untrained stand-in with the demo recipe's architecture (small_cnn w16, K=3, d=32, 128 px)"


Step = tuple[str, Callable[[Any, int], Any]]


def _steps() -> dict[str, list[Step]]:
    return {
        "groups": [
            ("alpha", lambda at, i: at.slider(key="groups_alpha").set_value([0.3, 0.7][i % 2])),
            ("colormap", lambda at, i: at.selectbox(key="groups_cmap").set_value(["viridis", "jet"][i % 2])),
            ("normalisation", lambda at, i: at.selectbox(key="groups_norm").set_value(["shared", "per_map"][i % 2])),
            ("interpolation", lambda at, i: at.selectbox(key="groups_interp").set_value(["nearest", "bilinear"][i % 2])),
            ("contour", lambda at, i: at.checkbox(key="groups_contour").set_value(i % 2 == 0)),
            ("image (held-out index)", lambda at, i: at.sidebar.number_input(key="img_demo_index").set_value(1 + i)),
        ],
        "compare": [
            ("query", lambda at, i: at.number_input(key="cmp_query").set_value(1 + i)),
            ("top-k", lambda at, i: at.slider(key="cmp_k").set_value([3, 8][i % 2])),
            ("group subset", lambda at, i: at.multiselect(key="cmp_groups").set_value([[0, 2], [1]][i % 2])),
            ("second query", lambda at, i: at.number_input(key="cmp_query_b").set_value(20 + i)),
        ],
        "invariance": [
            ("re-roll permutation", lambda at, i: at.button(key="inv_reroll").click()),
            ("dx", lambda at, i: at.slider(key="inv_dx").set_value(2 + i)),
            ("dy", lambda at, i: at.slider(key="inv_dy").set_value(-3 - i)),
            ("wrap/pad", lambda at, i: at.radio(key="inv_mode").set_value(["pad", "wrap"][i % 2])),
        ],
        "attributions": [
            ("group (IG + Grad-CAM)", lambda at, i: at.selectbox(key="attr_group").set_value(i % 3)),
            ("reference image (IG + Grad-CAM)", lambda at, i: at.number_input(key="attr_ref_index").set_value(3 + i)),
            ("IG steps 8 <-> 16", lambda at, i: at.select_slider(key="attr_steps").set_value([16, 8][i % 2])),
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("streamlit").setLevel(logging.ERROR)
    import torch
    from streamlit.testing.v1 import AppTest

    torch.set_num_threads(args.threads)
    folder, what = _checkpoint_dir()
    os.environ["DGML_VIZ_CHECKPOINT_DIR"] = str(folder)
    os.environ["DGML_VIZ_DEFAULT_CKPT"] = str(folder / "demo.pt")
    sys.stdout.write(f"model: {what}; torch threads {torch.get_num_threads()}; reps {args.reps}\n")
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=600)
    worst = 0.0
    for page, steps in _steps().items():
        t0 = time.perf_counter()
        at.switch_page(f"pages_impl/{page}.py").run() if page != "groups" else at.run()
        cold = time.perf_counter() - t0
        if page == "attributions":
            at.radio(key="attr_ref_kind").set_value("a held-out demo image").run()
        assert not at.exception, [e.value for e in at.exception]
        sys.stdout.write(f"{page:<13} first run {cold * 1000:7.0f} ms (cold caches)\n")
        for name, act in steps:
            times = []
            for i in range(args.reps):
                act(at, i)
                t = time.perf_counter()
                at.run()
                times.append(time.perf_counter() - t)
                assert not at.exception, [e.value for e in at.exception]
            med, top = statistics.median(times) * 1000, max(times) * 1000
            worst = max(worst, med)
            sys.stdout.write(f"  {name:<34} median {med:6.0f} ms   max {top:6.0f} ms\n")
        at.run()
        t = time.perf_counter()
        at.run()
        sys.stdout.write(f"  {'(rerun, nothing changed)':<34} {(time.perf_counter() - t) * 1000:13.0f} ms\n")
    sys.stdout.write(f"worst median interaction: {worst:.0f} ms\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
