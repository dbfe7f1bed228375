#!/usr/bin/env bash
# Regenerate constraints.txt: resolve the project's dependencies (with the test extra) from scratch
# in a throw-away virtualenv and freeze every transitive package at its exact version.
# `make app`, `make test` and CI install with `-c constraints.txt`, so a fresh clone gets these
# versions, not whatever the registry serves that day. Run via `make lock`; commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip
"$tmp/venv/bin/python" -m pip install -q '.[test]'
{
    echo "# Exact versions of every dependency, from a clean resolve by scripts/lock.sh ($(date -u +%F))."
    echo "# Python $("$tmp/venv/bin/python" -c 'import platform; print(platform.python_version(), platform.machine())'). Refresh with \`make lock\`; do not edit by hand."
    "$tmp/venv/bin/python" -m pip freeze --all --exclude dgml-viz | grep -v '^dgml-viz' | LC_ALL=C sort -f
} > "$tmp/constraints.txt"
mv "$tmp/constraints.txt" constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
