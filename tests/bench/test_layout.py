"""bench/ as an instrument set: no file over 600 lines, and no import circle among bench's modules (the scripts,
benchlib, the reports and experiments), imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    """Module name as bench's scripts import it → file: ``benchlib.x`` for the library, the bare stem for a
    script (the scripts put their own folder, bench/ or bench/reports/ …, on ``sys.path``)."""
    out = {}
    for f in sorted(BENCH.rglob("*.py")):
        rel = f.relative_to(BENCH)
        if rel.parts[0] == "benchlib":
            name = "benchlib" if rel.name == "__init__.py" else "benchlib." + rel.stem
        else:
            name = rel.stem
        assert name not in out, f"two bench modules are both importable as {name!r}: {out[name]}, {f}"
        out[name] = f
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    got = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        got |= {n for n in names if n in known}
    return got


def test_no_bench_file_over_600_lines():
    long = {str(f.relative_to(BENCH)): n for f in BENCH.rglob("*.py")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, long


def test_no_import_circle_among_bench_modules():
    mods = _modules()
    graph = {name: _imports(path, set(mods)) - {name} for name, path in mods.items()}
    assert "anchors" not in graph["overhead"] and "overhead" not in graph["anchors"]
    state: dict[str, int] = {}          # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(m):] + [m]))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_benchlib_imports_only_the_standard_library_at_module_level():
    """The anchors' worker imports benchlib in an environment without peltc (and imports stay cheap)."""
    heavy = {"torch", "transformers", "peltc", "peft", "adapters", "numpy", "psutil"}
    for f in (BENCH / "benchlib").glob("*.py"):
        for node in ast.parse(f.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                tops = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                tops = {node.module.split(".")[0]}
            else:
                continue
            assert not tops & heavy, (f.name, tops & heavy)
