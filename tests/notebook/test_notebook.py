"""docs/notebook.ipynb executed with a real kernel (nbclient + ipykernel, this interpreter as the kernel):
its outputs hold the spec's diagram (SVG) and check table (HTML), the compiled model's report table and
the run folder's metrics and gate heatmap."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "notebook.ipynb"
KERNEL = "peltc-test"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernelspec that runs this interpreter (the venv's python), found through JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "peltc test", "language": "python"}), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    return KERNEL


def _outputs(cell) -> dict[str, str]:
    """mimetype → data of a code cell's display outputs (execute_result / display_data)."""
    out: dict[str, str] = {}
    for o in cell.outputs:
        assert o.output_type != "error", "".join(o.get("traceback", []))
        for mime, data in o.get("data", {}).items():
            out[mime] = data if isinstance(data, str) else "".join(data)
    return out


def test_the_example_notebook_executes_and_shows_the_svg_and_the_tables(kernel, run_dir, monkeypatch):
    monkeypatch.setenv("PELTC_NOTEBOOK_RUN", str(run_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name=kernel, timeout=300,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    spec = next(_outputs(c) for c in code if "peltc.load_spec(" in c.source)
    assert spec["image/svg+xml"].lstrip().startswith("<svg")
    assert 'class="peltc-check"' in spec["text/html"] and "<svg" in spec["text/html"]
    import peltc
    total = peltc.load_spec(ROOT / "specs" / "unipelt_apl.pelt", model="minilm").total
    assert f"total saved: {total:,}" in spec["text/html"]
    printed = next(c for c in code if "spec.total" in c.source).outputs[0]["text"]
    assert printed.strip() == f"{total:,} trainable parameters"
    report = next(_outputs(c) for c in code if "peltc.compile_model(" in c.source)
    assert 'class="peltc-report"' in report["text/html"] and "<td" in report["text/html"]
    run = next(_outputs(c) for c in code if "peltc.open_run(" in c.source)
    assert 'class="peltc-gates"' in run["text/html"] and "0.5523" in run["text/html"]
