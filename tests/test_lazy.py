"""Lazy package attributes: names import on first use; unknown names raise AttributeError."""
from __future__ import annotations

import sys

import pytest

from dgml_viz.utils.lazy import lazy_getattr


def test_table_names_submodules_and_missing_names() -> None:
    get = lazy_getattr("dgml_viz.metrics", {"recall_at_k": "dgml_viz.metrics.retrieval"}, submodules=True)
    from dgml_viz.metrics.retrieval import recall_at_k

    assert get("recall_at_k") is recall_at_k
    assert get("diversity") is sys.modules["dgml_viz.metrics.diversity"]
    with pytest.raises(AttributeError, match="'dgml_viz.metrics' has no attribute 'nope'"):
        get("nope")
    with pytest.raises(AttributeError):  # without submodules, only the table resolves
        lazy_getattr("dgml_viz.metrics", {})("diversity")


def test_a_submodule_missing_a_dependency_is_not_hidden(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "lazypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("import not_installed_anywhere_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="not_installed_anywhere_xyz"):
        lazy_getattr("lazypkg", {}, submodules=True)("broken")


def test_packages_stay_light_on_import() -> None:
    import subprocess

    code = ("import sys, dgml_viz.metrics, dgml_viz.report, dgml_viz.data; "
            "print(any(m in sys.modules for m in ('matplotlib', 'captum')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
