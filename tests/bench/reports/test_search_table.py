"""bench/reports/search_table.py: the search experiment's rules on made-up records — the opponent is the
hand-written spec best by mean *dev* over all 5 seeds (a spec lacking a seed does not compete), the oracle
the best by test, Δ the per-seed paired difference; with no study recorded the section says so."""

from __future__ import annotations

import json
import statistics

import pytest

M = "matthews_correlation"


def _run(spec, seed, dev, test, task="cola"):
    return {"spec": spec, "task": task, "k": "100", "seed": seed, "main_metric": M, "dev": {M: dev},
            "test": {M: test}, "wall_seconds": 100.0}


@pytest.fixture
def tables(tmp_path, bench_script):
    mod = bench_script("reports/search_table.py")
    mod.RESULTS, mod.GRID = tmp_path / "search", tmp_path / "grid.json"
    mod.RESULTS.mkdir()
    grid = ([_run("adapter", s, 0.50, 0.10 + s / 100) for s in mod.SEEDS]       # best by dev
            + [_run("lora", s, 0.40, 0.30) for s in mod.SEEDS]                  # best by test
            + [_run("dora", s, 0.90, 0.90) for s in (1, 2)])                    # 2 seeds: does not compete
    mod.GRID.write_text(json.dumps({"runs": grid}))
    return mod


def test_nothing_recorded_says_so(tables):
    assert tables.table().startswith("Not run yet")


def test_opponent_by_dev_oracle_by_test_and_paired_delta(tables):
    trials = [{"number": 0, "state": "COMPLETE", "value": 0.6, "wall_seconds": 150.0,
               "params": {"qv.present": "true", "qv.at": "layers[-3..].attention.{query, value}", "qv.rank": "8",
                          "qv.gate": "sigmoid(layer.input)", "qv.lr": 3e-4, "kv.present": "false", "kv.lr": 1e-3,
                          "kv.length": "10", "ffn_adapter.present": "false", "ffn_adapter.lr": 1e-3,
                          "train.gate_lr": 2e-2}},
              {"number": 1, "state": "PRUNED", "value": 0.1, "wall_seconds": 50.0, "params": {}}]
    (tables.RESULTS / "trials-cola.json").write_text(json.dumps({"trials": trials}))
    searched = [_run("searched", s, 0.6, 0.20 + s / 50) for s in tables.SEEDS]
    (tables.RESULTS / "runs.json").write_text(json.dumps({"runs": searched}))
    out = tables.table()
    row = next(line for line in out.splitlines() if line.startswith("| cola |") and "adapter" in line)
    diffs = [(0.20 + s / 50) - (0.10 + s / 100) for s in tables.SEEDS]
    assert f"{100 * statistics.fmean(diffs):.1f} ± {100 * statistics.stdev(diffs):.1f}" in row
    assert "| lora 30.0 ± 0.0 |" in row and "| 1 / 1 / 0 | 60.0 (trial 0) |" in row
    assert "lacking" not in out and "dora" in out                                  # named as left out
    assert "| cola | lora rank 8 (top 3, gated, lr 3.0e-04); gate lr 2.0e-02 |" in out    # absent parts: not listed
    assert "| cola | 2 | 0.06 | 0.14 | 12 | 0.33 |" in out                            # 200 s; 500 s; 12 × 100 s
