"""``dgml-viz app``: start the Streamlit app bound to loopback, from any working directory.

    dgml-viz app                       # http://127.0.0.1:8501 on the shipped demo model
    dgml-viz app --port 8600
    DGML_VIZ_ALLOW_REMOTE=1 dgml-viz app --address 0.0.0.0   # explicit opt-in to serve a network

The app's settings come from the environment (``DGML_VIZ_CHECKPOINT_DIR``,
``DGML_VIZ_ALLOWED_ROOTS``, ...; see the README).
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

from dgml_viz.errors import ConfigError

HELP = "start the Streamlit app on 127.0.0.1"
logger = logging.getLogger(__name__)


def app_script() -> Path:
    """``app/main.py`` of this checkout (the app ships beside the package, not inside it)."""
    from dgml_viz.appkit.settings import REPO_ROOT

    return REPO_ROOT / "app" / "main.py"


def streamlit_command(address: str, port: int) -> list[str]:
    """The ``streamlit run`` command line with the loopback/headless flags set explicitly."""
    return [sys.executable, "-m", "streamlit", "run", str(app_script()),
            "--server.address", address, "--server.port", str(port), "--server.headless", "true",
            "--browser.gatherUsageStats", "false", "--browser.serverAddress", address,
            "--server.fileWatcherType", "none"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; others need DGML_VIZ_ALLOW_REMOTE=1)")
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")


def run(args: argparse.Namespace) -> int:
    from dgml_viz.appkit.settings import serving_problem

    problem = serving_problem(args.address)
    if problem:
        raise ConfigError(problem)
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port must be in 1..65535, got {args.port}")
    script = app_script()
    if not script.is_file():
        raise ConfigError(f"{script}: the app is not in this installation (run from a checkout of dgml_viz)")
    command = streamlit_command(args.address, args.port)
    logger.info("serving on http://%s:%d", args.address, args.port)
    return subprocess.call(command, cwd=script.parents[1])
