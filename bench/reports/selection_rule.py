"""What the checkpoint-selection rule changed on the K = 100 grid: the same 200 runs, the best dev checkpoint
restored from any evaluation (``docs/results/grid-k100-select-any-step.json``, the recipe before) against
from ``min_steps`` (60) on (``docs/results/grid-k100.json``, the recipe now). Training is the same either way;
only runs whose best dev evaluation was step 30 differ (they were re-run).

    .venv/bin/python bench/reports/selection_rule.py          # the markdown table (run by bench/reports/update_results.py)

Per spec and task: the test mean ×100 over the 5 seeds before → after, and the near-constant runs (†)
before → after; then each mixture's Table 2 line (its average vs the average of the per-task best of its
parts, tasks where it is ≥ the best part) under both rules.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from peltc.runtime.grid import PARTS, tabulate

ROOT = Path(__file__).resolve().parents[2]
BEFORE = ROOT / "docs" / "results" / "grid-k100-select-any-step.json"
AFTER = ROOT / "docs" / "results" / "grid-k100.json"
SPECS = ["finetune", "bitfit", "adapter", "prefix", "lora", "unipelt_ap", "unipelt_apl", "unipelt_apl_nogate"]
TASKS = ["sst2", "cola", "mrpc", "rte", "stsb"]


def _cells(path: Path) -> dict:
    runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
    return tabulate(SPECS, TASKS, ["100"], sorted({r["seed"] for r in runs}), records=runs)["cells"]


def _table2(cells: dict, mix: str) -> tuple[float, float, int]:
    mine, best, wins = [], [], 0
    for t in TASKS:
        v, pv = cells[f"{mix}|{t}|100"]["mean"], [cells[f"{p}|{t}|100"]["mean"] for p in PARTS[mix]]
        mine.append(v)
        best.append(max(pv))
        wins += v >= max(pv)
    return sum(mine) / len(mine), sum(best) / len(best), wins


def table(before: dict, after: dict, changed: int) -> str:
    lines = [f"{changed} of 200 runs restore another checkpoint under the rule (the others are the same runs).\n",
             "| spec | " + " | ".join(TASKS) + " | avg |", "|---|" + "---|" * (len(TASKS) + 1)]
    for s in SPECS:
        row = []
        for t in TASKS:
            b, a = before[f"{s}|{t}|100"], after[f"{s}|{t}|100"]
            nc = f" (†{b['near_constant']} → {a['near_constant']})" if b["near_constant"] or a["near_constant"] else ""
            row.append(f"{b['mean']:.1f} → {a['mean']:.1f}{nc}")
        avg_b = sum(before[f"{s}|{t}|100"]["mean"] for t in TASKS) / len(TASKS)
        avg_a = sum(after[f"{s}|{t}|100"]["mean"] for t in TASKS) / len(TASKS)
        lines.append(f"| {s} | " + " | ".join(row) + f" | {avg_b:.1f} → {avg_a:.1f} |")
    lines += ["", "| mixture | rule | its average | avg of per-task best part | tasks ≥ best part |", "|---|---|---:|---:|---:|"]
    for mix in PARTS:
        for name, cells in (("any step", before), ("from min_steps", after)):
            m, b, w = _table2(cells, mix)
            lines.append(f"| {mix} | {name} | {m:.1f} | {b:.1f} | {w} of {len(TASKS)} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    # the 8 specs the rule changed (rows added to the record since, issue 18's methods, ran under the rule)
    runs_b = {(r["spec"], r["task"], r["seed"]): r for r in json.loads(BEFORE.read_text())["runs"]
              if r["spec"] in SPECS}
    runs_a = {(r["spec"], r["task"], r["seed"]): r for r in json.loads(AFTER.read_text())["runs"]
              if r["spec"] in SPECS}
    if set(runs_b) != set(runs_a):
        print(f"the grids differ: {len(runs_a)} runs now, {len(runs_b)} before", file=sys.stderr)
        return 1
    changed = sum(runs_b[k]["best_step"] != runs_a[k]["best_step"] for k in runs_a)
    print(table(_cells(BEFORE), _cells(AFTER), changed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
