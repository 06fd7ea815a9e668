"""bench/ as an instrument set: benchlib imports only the standard library at module level (file sizes and
import circles: tests/test_layout.py)."""

from __future__ import annotations

import ast
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


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
