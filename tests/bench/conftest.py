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
