"""The language server's layout: one job per module, no file over 500 lines, no import circle among its
modules (imports inside functions count)."""

import ast
from pathlib import Path

import pytest

LSP = Path(__file__).resolve().parents[2] / "peltc" / "lsp"
MODULES = sorted(p.stem for p in LSP.glob("*.py") if p.stem != "__init__")


def _imports(name: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse((LSP / f"{name}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "peltc.lsp":
                out |= {a.name for a in node.names if a.name in MODULES}
            elif node.module.startswith("peltc.lsp."):
                out.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[2] for a in node.names if a.name.startswith("peltc.lsp.")}
    return out - {name}


@pytest.mark.parametrize("name", MODULES)
def test_no_lsp_module_over_500_lines(name):
    assert len((LSP / f"{name}.py").read_text(encoding="utf-8").splitlines()) <= 500


def test_no_import_circle_among_lsp_modules():
    graph = {m: _imports(m) for m in MODULES}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                pytest.fail("import circle: " + " -> ".join([*path[path.index(n):], n]))
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m, [m])
