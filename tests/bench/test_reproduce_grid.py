"""bench/reproduce_grid.py: the sample it draws from the recorded grid, and the exact comparison (on finished run
folders made here: nothing trains)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "docs" / "results" / "grid-k100.json"


def _records() -> list[dict]:
    return json.loads(RECORD.read_text(encoding="utf-8"))["runs"]


def test_sample_is_one_run_per_spec_under_its_recipe_cheapest_task_first(bench_script):
    rg = bench_script("reproduce_grid.py")
    records = _records()
    sample = rg.choose(records)
    specs = list(dict.fromkeys(r["spec"] for r in records))
    assert [r["spec"] for r in sample] == specs and {"finetune", "lora", "unipelt_apl"} <= set(specs)
    assert rg.choose(records) == sample                                  # deterministic
    for r in sample:
        mine = [x for x in records if x["spec"] == r["spec"]]
        assert sum(rg._recipe(x) == rg._recipe(r) for x in mine) > len(mine) / 2    # the spec's main recipe
    walls = {t: [x["wall_seconds"] for x in records if x["task"] == t] for t in {x["task"] for x in records}}
    cheapest = min(walls, key=lambda t: (sum(walls[t]) / len(walls[t]), t))
    assert {r["task"] for r in sample} == {cheapest}                     # the cheapest task of this record
    assert [r["spec"] for r in rg.choose(records, ["lora", "prefix"], per_spec=2)] == ["lora", "lora", "prefix", "prefix"]


def _finish(runs: Path, rec: dict, value: float) -> None:
    d = runs / rec["spec"] / rec["task"] / f"k{rec['k']}" / f"s{rec['seed']}"
    d.mkdir(parents=True)
    m = {"final": True, "main_metric": rec["main_metric"], "test": {rec["main_metric"]: value},
         "dev": {"best": rec["dev"]}, "train": {"steps": rec["steps"], "best_step": rec["best_step"]},
         "settings": rec["settings"], "model": rec["model"], "warnings": []}
    (d / "metrics.json").write_text(json.dumps(m), encoding="utf-8")


def test_a_finished_run_is_compared_exactly(tmp_path, capsys, bench_script):
    rg = bench_script("reproduce_grid.py")
    rec = rg.choose(_records(), ["bitfit"])[0]
    recorded = rec["test"][rec["main_metric"]]
    _finish(tmp_path / "same", rec, recorded)
    out = tmp_path / "same.json"
    assert rg.main(["--specs", "bitfit", "--runs-dir", str(tmp_path / "same"), "--out", str(out)]) == 0
    row = json.loads(out.read_text())["runs"][0]
    assert row["equal"] and row["reused"] and row["reproduced"] == recorded and row["settings_equal"]
    assert "1 of 1 runs reproduce" in capsys.readouterr().out

    _finish(tmp_path / "off", rec, recorded + 1e-15)                       # the last digits differ
    out = tmp_path / "off.json"
    assert rg.main(["--specs", "bitfit", "--limit", "1", "--runs-dir", str(tmp_path / "off"), "--out", str(out)]) == 1
    data = json.loads(out.read_text())
    assert not data["all_equal"] and data["runs"][0]["reproduced"] == recorded + 1e-15
