"""Code shape figures for issue 14: lines of Python, the largest functions, functions over 60 lines.

    python bench/code_shape.py [ROOT]      # default: the repository this script is in

Counts every ``.py`` under ``dgml_viz/`` and ``app/`` (not tests, not bench). A function's length is
its ``end_lineno - lineno + 1`` (docstring included), nested functions counted on their own.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path


def functions(root: Path) -> list[tuple[int, str]]:
    out = []
    for package in ("dgml_viz", "app"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(root)}:{node.name}"))
    return sorted(out, reverse=True)


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    lines = sum(len(p.read_text(encoding="utf-8").splitlines())
                for pkg in ("dgml_viz", "app") for p in (root / pkg).rglob("*.py"))
    funcs = functions(root)
    print(f"python lines (dgml_viz + app): {lines}")
    print(f"functions: {len(funcs)}, over 60 lines: {sum(1 for n, _ in funcs if n > 60)}")
    for n, name in funcs[:10]:
        print(f"  {n:4d}  {name}")


if __name__ == "__main__":
    main()
