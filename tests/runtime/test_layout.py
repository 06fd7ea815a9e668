"""The runtime's layout: no branch on the kind of task outside the task modules (import circles and file
sizes: tests/test_layout.py)."""

from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
MODULES = sorted(p.stem for p in RUNTIME.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("name", ["run", "train", "diagnostics", "serve", "runfolder"])
def test_no_branch_on_the_kind_of_task(name):
    """The run, the training loop, the diagnostics and serving ask the task (`task.Task`), never its kind."""
    text = (RUNTIME / f"{name}.py").read_text(encoding="utf-8")
    for word in ("is_gen", "is_custom", "is_generation", "GenTask", "CustomTask", "GlueTask"):
        assert word not in text, f"{name}.py: {word}"
