"""Issue 19, item 5: does a dev-selected searched spec beat the best hand-written one? (resumable)

    .venv/bin/python bench/experiments/search_glue.py [--tasks cola,sst2,mrpc,rte,stsb] [--jobs 2]
        [--out /work/search-runs] [--data-dir ../shared/glue]

The protocol, fixed before any trial ran (docs/results.md, "Searching the UniPELT space"):

1. per GLUE task, `peltc search specs/spaces/unipelt.pelt --trials 20` at K = 100 on MiniLM (TPE, the
   median pruner, every trial on seed 1's K = 100 sample and its held-out dev of 500, as the recorded
   grid's `--dev-size 500`), selected on dev
   only: the study's best COMPLETE trial, emitted as ``docs/results/search-k100/<task>/searched.pelt``;
2. that spec on seeds 1–5 (`peltc grid … --record docs/results/search-k100/runs.json`), the grid's recipe;
3. the study's trials dumped to ``docs/results/search-k100/trials-<task>.json`` (`peltc search --status --json`).

`bench/reports/search_table.py` makes the tables from those files and docs/results/grid-k100.json.
Every step skips what is done: a finished study runs no trial, an emitted spec is kept, recorded seed runs
count as finished. Run folders go to ``--out`` (not committed).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TASKS = ("cola", "sst2", "mrpc", "rte", "stsb")
SPACE = ROOT / "specs" / "spaces" / "unipelt.pelt"
TRIALS = 20
SEEDS = "1,2,3,4,5"
DEV_SIZE = 500            # the recorded grid's --dev-size (docs/results.md, "The grid")
RESULTS = ROOT / "docs" / "results" / "search-k100"


def peltc(*args, stdout=None) -> None:
    cmd = [sys.executable, "-m", "peltc", *map(str, args)]
    print("$ peltc " + " ".join(map(str, args)), flush=True)
    subprocess.run(cmd, check=True, stdout=stdout)


def study_name(task: str) -> str:
    return f"k100-{task}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default="runs/search-k100", help="run folders (default %(default)s)")
    ap.add_argument("--data-dir", default=os.environ.get("PELT_GLUE_DIR", str(ROOT.parent / "shared" / "glue")))
    ap.add_argument("--phase", choices=("all", "search", "seeds"), default="all",
                    help="search: the studies only; seeds: the emitted specs on 5 seeds only")
    a = ap.parse_args(argv)
    out = Path(a.out)
    for task in a.tasks.split(","):
        emitted = RESULTS / task / "searched.pelt"
        if a.phase in ("all", "search"):
            cmd = ["search", SPACE, "--train", f"glue/{task}", "--trials", TRIALS, "--study", study_name(task),
                   "--out", out / "search", "--jobs", a.jobs, "--dev-size", DEV_SIZE, "--data-dir", a.data_dir]
            peltc(*cmd, *([] if emitted.exists() else ["--emit", emitted]))
            dump, tmp = RESULTS / f"trials-{task}.json", RESULTS / f".trials-{task}.json.tmp"
            with open(tmp, "w", encoding="utf-8") as f:     # a failed dump leaves the last good file
                peltc("search", "--status", "--json", "--study", study_name(task), "--out", out / "search", stdout=f)
            os.replace(tmp, dump)
        if a.phase in ("all", "seeds") and emitted.exists():
            peltc("grid", emitted, "--tasks", task, "--k", "100", "--seeds", SEEDS, "--jobs", a.jobs,
                  "--out", out / "seeds" / task, "--dev-size", DEV_SIZE, "--record", RESULTS / "runs.json",
                  "--data-dir", a.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
