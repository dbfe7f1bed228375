"""``dgml-viz`` command line: a thin dispatcher over ``dgml_viz.commands.*``.

Each command lives in its own module exposing ``HELP: str``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only
when their command runs, so ``dgml-viz --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Sequence

from dgml_viz.errors import DgmlVizError

#: command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("dgml_viz.commands.train", "train a grouping model from a recipe"),
    "evaluate": ("dgml_viz.commands.evaluate", "retrieval metrics of a checkpoint"),
    "heatmaps": ("dgml_viz.commands.heatmaps", "batch attention overlays for a folder"),
    "gallery": ("dgml_viz.commands.gallery", "paper figure galleries (PDF/SVG/PNG + LaTeX)"),
    "interpret": ("dgml_viz.commands.interpret", "quantitative interpretability report"),
    "convert": ("dgml_viz.commands.convert", "import a reference-implementation checkpoint"),
    "info": ("dgml_viz.commands.info", "describe a checkpoint"),
    "app": ("dgml_viz.commands.app", "start the Streamlit app on 127.0.0.1"),
    "index": ("dgml_viz.commands.index", "embed images once into a persistent index"),
    "search": ("dgml_viz.commands.search", "nearest neighbours of an image in an index (FAISS)"),
    "timeline": ("dgml_viz.commands.timeline", "redraw a training run's attention timeline"),
}


def _build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dgml-viz", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only the chosen command's module is imported
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


class _Terminated(BaseException):
    """SIGTERM turned into an exception, so ``finally`` blocks (atomic writes' temp files, locks) run."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dgml-viz`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = _build_parser(argv)  # imports the command's module: torch, seconds on a cold start
    except KeyboardInterrupt:
        print("dgml-viz: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main else None
    try:
        return int(args._run(args) or 0)
    except DgmlVizError as exc:
        print(f"dgml-viz {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dgml-viz {args.command}: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print(f"dgml-viz {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if in_main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
