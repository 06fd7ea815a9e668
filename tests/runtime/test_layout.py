"""The runtime's layout: one job per module, no import circle among its modules (imports inside functions
count), no file over 500 lines, and no branch on the kind of task outside the task modules."""

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
MODULES = sorted(p.stem for p in RUNTIME.glob("*.py") if p.stem != "__init__")


def _imports(name: str) -> set[str]:
    """The runtime modules ``name`` imports, anywhere in the file."""
    out = set()
    for node in ast.walk(ast.parse((RUNTIME / f"{name}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            mod = node.module
            if mod == "peltc.runtime":
                out |= {a.name for a in node.names if a.name in MODULES}
            elif mod.startswith("peltc.runtime."):
                out.add(mod.split(".")[2])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[2] for a in node.names if a.name.startswith("peltc.runtime.")}
    return out - {name}


def test_no_import_circle_among_runtime_modules():
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


@pytest.mark.parametrize("name", MODULES)
def test_no_runtime_module_over_500_lines(name):
    assert len((RUNTIME / f"{name}.py").read_text(encoding="utf-8").splitlines()) <= 500


@pytest.mark.parametrize("name", ["run", "train", "diagnostics", "serve", "runfolder"])
def test_no_branch_on_the_kind_of_task(name):
    """The run, the training loop, the diagnostics and serving ask the task (`task.Task`), never its kind."""
    text = (RUNTIME / f"{name}.py").read_text(encoding="utf-8")
    for word in ("is_gen", "is_custom", "is_generation", "GenTask", "CustomTask", "GlueTask"):
        assert word not in text, f"{name}.py: {word}"
