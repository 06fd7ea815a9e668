"""Shared by bench's smoke tests: bench/benchlib's modules, imported as bench's scripts import them (bench is
not a package: its folder goes on ``sys.path`` for the import)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _lib(name: str):
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(f"benchlib.{name}")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture
def bench_lib():
    """``bench_lib("methods")`` → the module bench/benchlib/methods.py."""
    return _lib


def _script(path: str):
    """A bench script as a module (``"reports/grid_dynamics.py"``), loaded from its file under a private name."""
    import importlib.util
    name = "peltc_bench_" + path.removesuffix(".py").replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, BENCH / path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def bench_script():
    """``bench_script("reports/search_table.py")`` → that script, loaded as a module."""
    return _script

