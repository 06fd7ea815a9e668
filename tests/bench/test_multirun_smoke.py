"""Smoke test of bench/multirun.py: a --quick run (tiny BERT, N = 1, 2, 4 runs of mixed methods) in-process;
checks the table and the JSON's structure, and that the mixed batch's logits equal the separate passes'
(timings on a shared machine are not asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "multirun.py"


def test_quick_run_writes_table_and_json(tmp_path, capsys):
    import torch

    spec = importlib.util.spec_from_file_location("peltc_bench_multirun", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    data = bench.main(["--quick", "--out", str(tmp_path)])
    assert torch.get_num_threads() == threads            # main restores the caller's thread count

    (path,) = tmp_path.glob("multirun-*.json")
    assert Path(data["path"]) == path
    saved = json.loads(path.read_text())
    assert saved["args"]["runs"] == [1, 2, 4] and saved["args"]["quick"] and saved["machine"]["threads"] == 1
    res = saved["results"]
    assert list(res) == ["1", "2", "4"]
    assert res["4"]["methods"] == ["lora", "adapter", "unipelt_apl", "bitfit"]
    for r in res.values():
        assert len(r["mixed_ms"]) == len(r["separate_ms"]) == 2
        assert r["mixed_examples_per_s"] > 0 and r["separate_examples_per_s"] > 0
        assert r["speedup_mixed_vs_separate"] > 0
        assert r["max_abs_logit_diff"] <= 1e-5
    out = capsys.readouterr().out
    assert "| N runs |" in out and "| 4 | lora, adapter, unipelt_apl, bitfit |" in out
