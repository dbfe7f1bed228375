"""``dgml-viz timeline``: redraw a run's attention timeline from its logged probe maps."""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "redraw a training run's attention_timeline.{png,pdf} from its timeline.npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", required=True, help="training run folder (holds timeline.npz)")
    parser.add_argument("--out", default=None, help="folder for the figure (default: the run folder)")
    parser.add_argument("--probes", type=int, nargs="+", default=None, metavar="P",
                        help="probe images to show, 0-based (default: all logged)")
    parser.add_argument("--max-rows", type=int, default=None, metavar="N",
                        help="at most N evaluation rows, evenly spaced, first and last kept (default 12)")


def run(args: argparse.Namespace) -> int:
    import logging

    from dgml_viz.errors import ConfigError
    from dgml_viz.train.logging_tb import draw_timeline
    from dgml_viz.utils.outdir import ensure_output_dir
    from dgml_viz.validation import check_path_text

    check_path_text(args.run_dir, "--run-dir")
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"--run-dir {run_dir}: no such run folder")
    if args.max_rows is not None and args.max_rows < 1:
        raise ConfigError(f"--max-rows must be >= 1, got {args.max_rows}")
    out = ensure_output_dir(args.out or run_dir, "--out" if args.out else "--run-dir")  # writable, one line if not
    logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
    for path in draw_timeline(run_dir, out_dir=out, probes=args.probes, max_rows=args.max_rows):
        print(path)
    return 0
