"""bench/reports/grid_dynamics.py: a recorded run's folder → its dynamics (and a folder of another run is refused)."""

from __future__ import annotations

import json
from pathlib import Path



def _run_folder(root: Path, spec: str, seed: int, test: float, gates: bool) -> dict:
    d = root / spec / "stsb" / "k100" / f"s{seed}"
    d.mkdir(parents=True)
    hist = [{"step": 30, "loss": 2.0, "spearmanr": 0.30}, {"step": 60, "loss": 1.8, "spearmanr": 0.41},
            {"step": 90, "loss": 2.4, "spearmanr": 0.35}]
    (d / "metrics.json").write_text(json.dumps({
        "test": {"spearmanr": test}, "trainable_parameters": 1234, "dev": {"history": hist},
        "train": {"steps": 90, "best_step": 60}}))
    (d / "trainer_log.json").write_text(json.dumps([
        {"loss": 0.9, "step": 30}, {"eval_loss": 2.0, "step": 30}, {"loss": 0.3, "step": 60}]))
    g = {"ffn_adapter/ffn.output": {"0": 0.6, "1": 0.8}, "kv/attention": {"0": 0.5, "1": 0.5}} if gates else {}
    std = {0: 0.05, 30: 0.3, 60: 0.8, 90: 0.9}             # predictions' spread on the dev probe (labels: 1.5)
    recs = [{"step": s, "gates": g, "prefix_mass": {"0": 0.1, "1": 0.3},
             "predictions": {"std": std[s], "label_std": 1.5}} for s in (0, 30, 60, 90)]
    (d / "diagnostics.json").write_text(json.dumps({"records": recs}))
    return {"spec": spec, "task": "stsb", "k": 100, "seed": seed, "main_metric": "spearmanr",
            "test": {"spearmanr": test}}


def test_collect_and_table(tmp_path, bench_script):
    gd = bench_script("reports/grid_dynamics.py")
    runs = tmp_path / "runs"
    recs = [_run_folder(runs, "unipelt_ap", 1, 0.44, True), _run_folder(runs, "lora", 1, 0.5, False)]
    other = dict(recs[1], seed=2)                            # recorded, but no folder
    stale = dict(_run_folder(runs, "prefix", 1, 0.2, False), test={"spearmanr": 0.3})   # folder of another run
    record = tmp_path / "grid.json"
    record.write_text(json.dumps({"runs": recs + [other, stale]}))
    data = gd.collect(runs, record)
    assert [r["spec"] for r in data["runs"]] == ["unipelt_ap", "lora"]
    assert data["missing"] == ["lora/stsb/s2", "prefix/stsb/s1"]
    ap = data["runs"][0]
    assert ap["best_step"] == 60 and ap["train_loss"] == [[30, 0.9], [60, 0.3]]
    assert ap["dev"][1] == [60, 1.8, 0.41]
    assert ap["gates"]["best"] == {"ffn_adapter/ffn.output": 0.7, "kv/attention": 0.5}
    assert ap["prefix_mass_best"] == 0.2 and "gates" not in data["runs"][1]
    md = gd.table(data)
    assert "2 of 4 recorded runs" in md
    # (0.3 / 1.5)² = 4 % of the labels' variance at step 30: near-constant; later ones are not
    assert ap["probe_near_constant"] == [[30, True], [60, False], [90, False]]
    assert "| unipelt_ap | 1,234 | 1 | 0.90 / 0.30 | 2.00 → 1.80 → 2.40 | 60 | 1 of 1 / 0 of 2 |" in md
    assert "2 of 2 first evaluations (step 30) and 0 of 4 later ones" in md
    assert "| unipelt_ap | stsb | 1 | 0.70 | 0.50 |" in md
