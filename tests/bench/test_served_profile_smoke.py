"""Smoke test of bench/served_profile.py --delta on the tiny shape: the op table, the accounting table and the
JSON's shape (not the timings: a unit test never times anything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "served_profile.py"


def test_served_profile_delta_writes_its_tables_and_json(tmp_path):
    out = tmp_path / "profile.json"
    r = subprocess.run([sys.executable, str(SCRIPT), "--shape", "tiny", "--delta", "--forwards", "1", "--repeats", "1",
                        "--timed", "2", "--small", "1x4", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "+ms fused" in r.stdout and "| model | forward ms min / median |" in r.stdout
    data = json.loads(out.read_text())
    assert data["batch"] == [16, 128] and data["small"] == [1, 4] and data["shape"] == "tiny"
    base, fused, unfused = data["models"].values()
    for m in (base, fused, unfused):
        assert len(m["timed_ms"]) == 2 and len(m["small_ms"]) == 2 and m["timed_ms_min"] == min(m["timed_ms"])
    # the served model does strictly more: more ATen ops and more Python calls per forward than the base
    assert fused["aten_ops"] > base["aten_ops"] and fused["python_calls"] > base["python_calls"]
    assert unfused["aten_ops"] > fused["aten_ops"]                    # the fusions remove ops
    assert sum(row["base model"]["count"] for row in data["ops"]) == base["aten_ops"]
    table = subprocess.run([sys.executable, str(SCRIPT), "--table", str(out)], capture_output=True, text=True, timeout=120)
    assert table.returncode == 0 and "| model / base | min / min |" in table.stdout, table.stderr[-2000:]
