"""What a grid run costs, before and after a change — the same runs, side by side, in one benchmark.

    .venv/bin/python bench/grid_cost.py                               # before = 5aa6fc1, after = HEAD
    .venv/bin/python bench/grid_cost.py --before REF --after REF --runs unipelt_apl:stsb,lora:sst2

Each ref is exported (``git archive``) into a temporary tree and imported from there (a ``peltc``
package assembled from the tree's folders, put first on ``PYTHONPATH``), so the two versions run from
one virtual environment. Every run is a real grid run (``peltc compile SPEC --train glue/TASK --k K
--seed S --dev-size D --quiet --no-render``), exactly as ``peltc grid`` starts it, with one thread —
the grid's setting with ``--jobs 2`` on 2 cores. The before and the after version of a run are started
*together*, one per core (``taskset`` where available), so load from elsewhere hits both alike; the
per-run ratio after / before is the number to read. The test metric of both versions is reported too:
a change meant to only save time must leave it unchanged.

Results: a markdown table on stdout; JSON in ``bench/results/grid-cost-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PACKAGES = {"grammar": "grammar", "compiler": "compiler", "runtime": "runtime"}   # peltc.<name> → folder


def export(ref: str, into: Path) -> Path:
    """``ref``'s tree under ``into/tree`` and an importable ``peltc`` under ``into/site``."""
    tree, site = into / "tree", into / "site" / "peltc"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    shutil.copytree(tree / "peltc", site)
    for name, folder in PACKAGES.items():
        (site / name).symlink_to(tree / folder)
    return tree


def command(spec: str, task: str, a: argparse.Namespace, out: Path) -> list[str]:
    return [sys.executable, "-m", "peltc", "compile", f"specs/{spec}.pelt", "--train", f"glue/{task}",
            "--k", str(a.k), "--seed", str(a.seed), "--dev-size", str(a.dev_size), "--data-dir",
            str(Path(a.data_dir).resolve()), "--out", str(out), "--quiet", "--no-render"]


def start(tree: Path, cmd: list[str], core: int | None, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(tree.parent / "site"), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    if core is not None:
        cmd = ["taskset", "-c", str(core), *cmd]
    return subprocess.Popen(cmd, cwd=tree, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def metric(run: Path) -> tuple[str, float] | None:
    try:
        m = json.loads((run / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    name = m.get("main_metric")
    return name, m.get("test", {}).get(name)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", default="5aa6fc1", help="git ref of the old version (default: before the "
                   "evaluation-batch change)")
    p.add_argument("--after", default="HEAD", help="git ref of the new version")
    p.add_argument("--runs", default="unipelt_apl:stsb,lora:sst2,adapter:rte",
                   help="comma list of SPEC:TASK (specs/SPEC.pelt, glue/TASK)")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dev-size", type=int, default=500)
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "glue"))
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    runs = [tuple(r.split(":", 1)) for r in a.runs.split(",") if r]
    cores = [0, 1] if shutil.which("taskset") and (os.cpu_count() or 1) >= 2 else [None, None]
    rows = []
    with tempfile.TemporaryDirectory(prefix="grid-cost-") as tmp:
        tmp = Path(tmp)
        trees = {v: export(ref, tmp / v) for v, ref in (("before", a.before), ("after", a.after))}
        for i, (spec, task) in enumerate(runs):
            procs, t0 = {}, time.perf_counter()
            order = ("before", "after") if i % 2 == 0 else ("after", "before")   # alternate the cores
            for core, v in zip(cores, order):
                out = tmp / "runs" / v / f"{spec}-{task}"
                procs[v] = (start(trees[v], command(spec, task, a, out), core, tmp / f"{v}-{spec}-{task}.log"), out)
            walls: dict[str, float] = {}
            while len(walls) < 2:
                for v, (proc, _) in procs.items():
                    if v not in walls and proc.poll() is not None:
                        walls[v] = time.perf_counter() - t0
                time.sleep(0.2)
            row = {"spec": spec, "task": task}
            for v, (proc, out) in procs.items():
                if proc.returncode != 0:
                    print((tmp / f"{v}-{spec}-{task}.log").read_text()[-3000:], file=sys.stderr)
                    raise SystemExit(f"{v} run {spec}:{task} failed (exit {proc.returncode})")
                name, value = metric(out)
                row[v] = {"wall_s": round(walls[v], 1), "metric": name, "test": value}
            row["ratio"] = row["after"]["wall_s"] / row["before"]["wall_s"]
            rows.append(row)
            print(f"{spec}:{task}  before {row['before']['wall_s']:.1f} s  after {row['after']['wall_s']:.1f} s  "
                  f"ratio {row['ratio']:.3f}", flush=True)
    total = {v: sum(r[v]["wall_s"] for r in rows) for v in ("before", "after")}
    result = {"before": a.before, "after": a.after, "k": a.k, "seed": a.seed, "dev_size": a.dev_size,
              "threads_per_run": 1, "pinned": cores[0] is not None, "runs": rows,
              "total_ratio": total["after"] / total["before"],
              "median_ratio": statistics.median(r["ratio"] for r in rows)}
    print("\n| run | before (s) | after (s) | after / before | test before | test after |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['spec']} · {r['task']} | {r['before']['wall_s']:.1f} | {r['after']['wall_s']:.1f} | "
              f"{r['ratio']:.3f} | {r['before']['test']:.4f} | {r['after']['test']:.4f} |")
    print(f"| **all** | {total['before']:.1f} | {total['after']:.1f} | **{result['total_ratio']:.3f}** | | |")
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"grid-cost-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
