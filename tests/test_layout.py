"""The shape of the house (issue 17): no import circle among the project's modules (and none among
bench's), counting imports made inside functions too; no source file too large to read in one sitting;
every package folder packaged.

The import graph is read from the modules' own source (``ast``), so the test imports nothing it
inspects. ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module and of
``pkg`` otherwise; a package's ``__init__`` being run on the way is not counted (every submodule
import runs it, that is Python, not a circle in the code).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder in the repository -> its import name (pyproject.toml's package-dir)
PACKAGES = {"peltc": "peltc", "grammar": "peltc.grammar", "compiler": "peltc.compiler",
            "runtime": "peltc.runtime"}
LIMITS = {"peltc": 500, "grammar": 500, "compiler": 500, "runtime": 500, "bench": 600}


def _modules(folders: dict[str, str]) -> dict[str, Path]:
    """Import name -> file, for the project's packages."""
    mods = {}
    for folder, pkg in folders.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([pkg, *parts])] = path
    return mods


def _bench_modules() -> dict[str, Path]:
    """Import name -> file, as bench's scripts import each other: ``benchlib.x`` for the library, the bare
    stem for a script (each script puts its own folder, bench/ or bench/reports/ ..., on ``sys.path``)."""
    mods = {}
    for path in sorted((ROOT / "bench").rglob("*.py")):
        rel = path.relative_to(ROOT / "bench")
        if rel.parts[0] == "benchlib":
            name = "benchlib" if rel.name == "__init__.py" else "benchlib." + rel.stem
        else:
            name = rel.stem
        assert name not in mods, f"two bench modules are both importable as {name!r}: {mods[name]}, {path}"
        mods[name] = path
    return mods


def import_graph(mods: dict[str, Path]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                    and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"):
                if node.args[0].value in mods:                     # importlib.import_module("name")
                    g.add_edge(name, node.args[0].value)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods:
                        g.add_edge(name, alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in mods:
                        g.add_edge(name, sub)
                    elif target in mods:
                        g.add_edge(name, target)
    g.remove_edges_from(nx.selfloop_edges(g))
    return g


def test_import_graph_sees_real_edges():
    """The walker itself works: it finds an import we know of (else an empty graph would pass)."""
    g = import_graph(_modules(PACKAGES))
    assert g.has_edge("peltc.grammar.parser", "peltc.errors")
    assert g.number_of_edges() > 50


@pytest.mark.parametrize("which", ["peltc", "bench"])
def test_no_import_circle(which):
    g = import_graph(_modules(PACKAGES) if which == "peltc" else _bench_modules())
    cycles = sorted(sorted(c) for c in nx.simple_cycles(g))
    assert cycles == [], f"import circles: {cycles}"


@pytest.mark.parametrize("folder", sorted(LIMITS))
def test_no_source_file_over_the_limit(folder):
    too_long = {str(p.relative_to(ROOT)): n for p in sorted((ROOT / folder).rglob("*.py"))
                if (n := len(p.read_text(encoding="utf-8").splitlines())) > LIMITS[folder]}
    assert too_long == {}, f"over {LIMITS[folder]} lines: {too_long}"


def test_every_package_folder_is_packaged():
    """A folder with an ``__init__.py`` that pyproject.toml's ``packages`` omits works in an editable
    install and is missing from a wheel."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {name for name, path in _modules(PACKAGES).items() if path.name == "__init__.py"}
    assert found == listed
