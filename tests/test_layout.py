"""The package's structure: no import circles (every import counts, lazy ones too), a small root,
old import paths that still work with a DeprecationWarning, and the public API unchanged."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import imlforensics
from imlforensics._compat import MOVED

PACKAGE = Path(imlforensics.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports, read from the source: every ``import`` and
    ``from ... import`` statement anywhere in the file (inside functions too). ``from X import name``
    points at ``X.name`` when that is a module, else at ``X`` itself."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - (node.level - 1)]
                    base_name = ".".join(base + ([node.module] if node.module else []))
                else:
                    base_name = node.module or ""
                for alias in node.names:
                    sub = f"{base_name}.{alias.name}"
                    targets.append(sub if sub in mods else base_name)
            for t in targets:
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_graph_reader_sees_lazy_relative_and_root_imports(tmp_path):
    # the reader itself: a circle closed only by a lazy `from .. import x` inside a function is found
    global PACKAGE
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import a\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from .. import b\n")
    (pkg / "b.py").write_text("import pkg.sub.a\n")
    saved, PACKAGE = PACKAGE, pkg
    try:
        mods = {module_name(p): p for p in pkg.rglob("*.py")}
        graph = import_graph(mods)
    finally:
        PACKAGE = saved
    assert graph["pkg.sub.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.sub.a"}
    assert cycles(graph) == [["pkg.b", "pkg.sub.a"]]


def test_no_import_cycles():
    graph = import_graph(modules())
    assert sum(len(v) for v in graph.values()) > 100  # the reader really saw the package's imports
    found = cycles(graph)
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_package_root_is_small():
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root_modules == ["__init__.py", "__main__.py", "_compat.py", "_version.py", "errors.py"]
    # nothing inside the package takes the version from the package root
    graph = import_graph(modules())
    importers_of_root = sorted(m for m, deps in graph.items() if "imlforensics" in deps)
    assert importers_of_root == []


def test_public_api_unchanged():
    expected = {"Detector", "ImageData", "ImageError", "ImlfError", "NotApplicable", "Prediction", "__version__",
                "list_detectors", "load_detector", "load_image", "register_detector"}
    assert set(imlforensics.__all__) == expected
    assert {"committee", "copymove", "dq", "ela", "jpeg-grid", "noise"} <= {c.name for c in imlforensics.list_detectors()}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_import_paths_warn_and_alias(old):
    new = importlib.import_module(f"imlforensics.{MOVED[old]}")
    sys.modules.pop(f"imlforensics.{old}", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mod = importlib.import_module(f"imlforensics.{old}")
    assert mod is new
    assert any(issubclass(w.category, DeprecationWarning) and MOVED[old] in str(w.message) for w in caught)


def test_old_names_still_import():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    from imlforensics.metrics import pixel_scores\nexcept DeprecationWarning as w:\n    print('warned', w)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "warned imlforensics.metrics moved to imlforensics.evaluation.metrics" in res.stdout, res.stderr
    from imlforensics.committee import Calibration, fuse  # noqa: F401  (the old module's names, now the package's)
    from imlforensics.weights import import_weights, load_weights  # noqa: F401
