"""The grid table from finished runs: mean ± std per spec × task, per-K average, best / second marked."""

from __future__ import annotations

import json

from peltc.runtime.grid import run_dir, tabulate, to_markdown


def _run(out, spec, task, seed, value, metric):
    d = run_dir(out, spec, task, "100", seed)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"final": True, "test": {metric: value}, "wall_seconds": 10.0}))


def test_table_marks_best_and_second(tmp_path):
    vals = {"a.pelt": (0.70, 0.72), "b.pelt": (0.80, 0.84), "c.pelt": (0.60, 0.60)}
    for spec, (v1, v2) in vals.items():
        for seed, v in ((1, v1), (2, v2)):
            _run(tmp_path, spec, "sst2", seed, v, "accuracy")
            _run(tmp_path, spec, "cola", seed, v / 2, "matthews_correlation")
    t = tabulate(list(vals), ["sst2", "cola"], ["100"], [1, 2], tmp_path)
    cell = t["cells"]["b|sst2|100"]
    assert cell["n"] == 2 and abs(cell["mean"] - 82.0) < 1e-9 and abs(cell["std"] - 2.828427) < 1e-5
    md = to_markdown(t)
    assert "| b | **82.0 ± 2.8** | **41.0 ± 1.4** | **61.5** |" in md
    assert "| a | <u>71.0 ± 1.4</u>" in md
    assert "| c | 60.0 ± 0.0 |" in md


def test_one_seed_shows_no_spread(tmp_path):
    _run(tmp_path, "a.pelt", "rte", 1, 0.5, "accuracy")
    t = tabulate(["a.pelt"], ["rte"], ["100"], [1], tmp_path)
    assert t["cells"]["a|rte|100"]["std"] is None
    assert "| a | **50.0** |" in to_markdown(t)

def test_throughput_excludes_dev_evaluations(tmp_path):
    """train ex/s = steps × batch / (training time − dev evaluations); eval ex/s from the test scoring."""
    from peltc.runtime.grid import throughput
    m = {"final": True, "test": {"accuracy": 0.7}, "wall_seconds": 60.0, "eval_examples_per_second": 50.0,
         "settings": {"batch_size": 16}, "train": {"steps": 100, "runtime": 50.0},
         "dev": {"history": [{"runtime": 5.0}, {"runtime": 5.0}]}}
    assert throughput(m) == (100 * 16 / 40.0, 50.0)
    d = run_dir(tmp_path, "a.pelt", "sst2", "100", 1)
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(m))
    t = tabulate(["a.pelt"], ["sst2"], ["100"], [1], tmp_path)
    assert t["cells"]["a|sst2|100"]["train_examples_per_second"] == 40.0
    assert "| a | **70.0** | **70.0** | 60 | 40 | 50 |" in to_markdown(t)


def test_record_regenerates_tables_and_table2(tmp_path, capsys):
    """The committed JSON alone gives Table 1 (with near-constant marks) and Table 2."""
    from peltc.cli import main
    from peltc.runtime.grid import save_records

    recs = []
    vals = {"adapter": (0.6, 0.5), "prefix": (0.1, 0.7), "lora": (0.55, 0.6), "unipelt_apl": (0.58, 0.72),
            "unipelt_apl_nogate": (0.5, 0.73)}
    for spec, (stsb, rte) in vals.items():
        for seed in (1, 2):
            recs.append({"spec": spec, "task": "stsb", "k": "100", "seed": seed, "test": {"spearmanr": stsb},
                         "near_constant": spec == "prefix"})
            recs.append({"spec": spec, "task": "rte", "k": "100", "seed": seed, "test": {"accuracy": rte}})
    path = tmp_path / "grid.json"
    save_records(path, recs)
    assert main(["grid", "--table", str(path)]) == 0
    md = capsys.readouterr().out
    assert "10.0 ± 0.0 †2" in next(line for line in md.splitlines() if line.startswith("| prefix |"))
    # per task max over the parts: stsb 60 (adapter), rte 70 (prefix) → 65.0; APL: (58 + 72) / 2 = 65.0
    assert "| 100 | unipelt_apl | 65.0 | 65.0 | adapter, prefix, lora | 1 of 2 |" in md
    assert "per task: rte -1.0, stsb +8.0 (average +3.5)" in md


def test_table2_pairs_the_mixture_with_the_best_part_by_seed(tmp_path, capsys):
    """Per task: the mixture minus the part with the best mean, seed by seed, as mean ± std."""
    from peltc.cli import main
    from peltc.runtime.grid import save_records

    vals = {"adapter": (0.40, 0.44), "prefix": (0.10, 0.12), "lora": (0.50, 0.50), "unipelt_apl": (0.47, 0.51)}
    recs = [{"spec": spec, "task": "stsb", "k": "100", "seed": seed, "test": {"spearmanr": v},
             "main_metric": "spearmanr"} for spec, vs in vals.items() for seed, v in zip((1, 2), vs)]
    path = tmp_path / "grid.json"
    save_records(path, recs)
    assert main(["grid", "--table", str(path)]) == 0
    # lora is the best part (50.0); per seed 47 − 50 = −3, 51 − 50 = +1 → −1.0 ± 2.8
    assert "unipelt_apl minus the task's best part, mean ± std: stsb -1.0 ± 2.8 (vs lora)" in capsys.readouterr().out


def test_ties_as_shown_are_both_best_and_none_second(tmp_path):
    """Issue 22, item 15: two specs with the same shown mean are both bold; the next is not 'second'."""
    for spec, v in (("a.pelt", 0.7001), ("b.pelt", 0.7004), ("c.pelt", 0.60)):
        _run(tmp_path, spec, "rte", 1, v, "accuracy")
    md = to_markdown(tabulate(["a.pelt", "b.pelt", "c.pelt"], ["rte"], ["100"], [1], tmp_path))
    assert "| a | **70.0** | **70.0** |" in md and "| b | **70.0** | **70.0** |" in md
    assert "| c | 60.0 | 60.0 |" in md and "<u>" not in md.split("\n\nseeds")[0]


def test_grid_table_imports_no_torch(tmp_path):
    """`peltc grid --table` prints a recorded grid without importing torch, transformers or datasets."""
    import subprocess
    import sys
    from pathlib import Path
    record = Path(__file__).resolve().parents[2] / "docs" / "results" / "grid-k100.json"
    code = ("import sys, io, contextlib\nfrom peltc.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            f"    rc = main(['grid', '--table', {str(record)!r}])\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'pandas') if m in sys.modules]\n"
            "print(rc, heavy, '### K = 100' in out.getvalue())\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.stdout.split("\n")[0] == "0 [] True", p.stdout + p.stderr
