"""The STS-B / CoLA collapse diagnosis table from the committed run records.

    .venv/bin/python bench/reports/diagnosis_table.py [docs/results/diagnosis]

Each ``<name>.json`` there holds one run's ``metrics.json`` and ``diagnostics.json`` (as written by
``peltc compile --train``; the runs were made with ``bench/experiments/diagnosis/diagnosis_runs.sh``). Prints, per run:
the head-bias setting, best dev and test metric, and from the diagnostics at the last evaluation the
mean prefix K/V vector norm, the mean and max attention mass on prefix positions, the feature spread
relative to step 0 and the features' cosine to their mean (collapse: → 1).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def row(name: str, data: dict) -> str:
    m, recs = data["metrics"], data["diagnostics"]["records"]
    main = m["main_metric"]
    first, last = recs[0], recs[-1]
    peak = max(recs[1:], key=lambda r: max(r.get("prefix_mass", {}).values(), default=0)) if len(recs) > 1 else last

    def pnorm(r):
        vals = [v for inst in r.get("prefix_norms", {}).values() for v in inst.values()]
        return f"{statistics.fmean(vals):.1f}" if vals else "—"

    def mass(r):
        vals = list(r.get("prefix_mass", {}).values())
        return f"{statistics.fmean(vals):.2f} / {max(vals):.2f}" if vals else "—"

    f = last.get("features", {})
    return (f"| {name} | {m['settings'].get('head_bias', 'zero')} | {m['dev']['best'][main]:.3f} | "
            f"{m['test'][main]:.3f} | {pnorm(first)} → {pnorm(last)} | {mass(first)} → {mass(peak)} (step "
            f"{peak['step']}) | {f.get('relative_std', float('nan')):.2f} | {f.get('cosine_to_mean', float('nan')):.2f} | "
            f"{'yes' if m.get('near_constant') else 'no'} |")


def main(folder: str = "docs/results/diagnosis") -> int:
    paths = sorted(Path(folder).glob("*.json"))
    print("| run (spec-task-seed) | head bias | best dev | test | prefix K/V norm, step 0 → last | prefix "
          "attention mass mean / max, step 0 → peak | feature std / step 0 (last) | cosine to mean (last) | "
          "near-constant |")
    print("|---|---|---:|---:|---|---|---:|---:|---|")
    for p in paths:
        print(row(p.stem, json.loads(p.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
