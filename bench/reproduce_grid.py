"""Re-run a sample of a recorded grid (``docs/results/grid-k100.json``) and check that each run reproduces its
recorded test metric exactly — the same float, to the last digit.

    .venv/bin/python bench/reproduce_grid.py                         # one run per spec (8 runs, ~15-30 min)
    .venv/bin/python bench/reproduce_grid.py --specs bitfit --limit 1 # one run
    .venv/bin/python bench/reproduce_grid.py --dry-run               # the sample only, nothing runs

The sample, chosen from the record alone (deterministic): per spec, its runs under the recipe most of the
spec's runs were recorded with (the spec's most common ``settings``, seed aside: a run recorded under an
earlier recipe, e.g. another evaluation batch, cannot be re-run through today's flags), the cheapest task first
(tasks ordered by their mean recorded wall time over the whole record), then the lowest seed; ``--per-spec``
runs of each spec (default 1).

Each run goes through the grid's own code path: the ``peltc compile …`` command ``peltc grid`` builds for that
combination (``peltc.runtime.grid``: the spec file, ``--train glue/TASK --k K --seed S --dev-size D``, GLUE from
``--data-dir``), in the grid's folder layout under ``--runs-dir`` (``SPEC/TASK/kK/sS``; a finished run folder
there is reused, an interrupted one resumed), with ``--threads`` CPU threads (the grid ran ``--jobs 2`` on 2
cores: one thread each). The finished run's record is made by the grid's ``run_record`` and its test main
metric compared with the recorded one by ``==``; the model and the training settings are compared too
(reported; only the metric decides). Prints a table; writes JSON to ``--out`` (default
``bench/results/reproduce-grid-<timestamp>.json``); exits 1 if any run differs or fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "results" / "grid-k100.json"
RESULTS = ROOT / "bench" / "results"
DEV_SIZE = 500            # the recorded grid's --dev-size (docs/results.md, "The grid"): its record does not keep it
                          # (records made since keep "sizes", and a record's own dev size wins)


def _recipe(r: dict) -> str:
    return json.dumps({k: v for k, v in (r.get("settings") or {}).items() if k != "seed"}, sort_keys=True)


def choose(records: list[dict], specs: list[str] | None = None, per_spec: int = 1) -> list[dict]:
    """The sample (module docstring): per spec in the record's order, ``per_spec`` runs under the spec's most
    common recipe, cheapest task first, then the lowest seed."""
    walls: dict[str, list[float]] = collections.defaultdict(list)
    for r in records:
        if r.get("wall_seconds") is not None:
            walls[r["task"]].append(r["wall_seconds"])
    order = sorted({r["task"] for r in records}, key=lambda t: (statistics.fmean(walls[t]) if walls[t] else float("inf"), t))
    rank = {t: i for i, t in enumerate(order)}
    out = []
    for spec in dict.fromkeys(r["spec"] for r in records):
        if specs and spec not in specs:
            continue
        mine = [r for r in records if r["spec"] == spec]
        counts = collections.Counter(_recipe(r) for r in mine)
        recipe = min(counts, key=lambda s: (-counts[s], s))
        mine = sorted((r for r in mine if _recipe(r) == recipe), key=lambda r: (rank[r["task"]], int(r["seed"])))
        out += mine[:per_spec]
    return out


def _final(folder: Path) -> dict | None:
    try:
        m = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return m if isinstance(m, dict) and m.get("final") else None


def reproduce(rec: dict, args, log) -> dict[str, Any]:
    """Run (or reuse) one recorded combination; compare its record with the recorded one."""
    from peltc.runtime.grid import _command, run_dir, run_record

    spec = str(ROOT / "specs" / f"{rec['spec']}.pelt")
    d = run_dir(args.runs_dir, spec, rec["task"], rec["k"], int(rec["seed"]))
    dev_size = (rec.get("sizes") or {}).get("dev") or args.dev_size
    cmd = _command(spec, rec["task"], rec["k"], int(rec["seed"]), d, None, args.data_dir, {}, dev_size)
    row: dict[str, Any] = {"spec": rec["spec"], "task": rec["task"], "k": rec["k"], "seed": rec["seed"],
                           "metric": rec["main_metric"], "recorded": rec["test"][rec["main_metric"]],
                           "folder": str(d), "command": " ".join(["peltc"] + cmd[3:])}
    t0 = time.time()
    m = _final(d)
    row["reused"] = m is not None
    if m is None:
        d.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        log(f"  {rec['spec']} {rec['task']} K={rec['k']} seed={rec['seed']}: running ({d})")
        with open(d.parent / f"{d.name}.log", "a", encoding="utf-8") as f:
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        m = _final(d) if rc == 0 else None
        if m is None:
            row.update(error=f"exit {rc}; see {d.parent / (d.name + '.log')}", equal=False)
            return row
    row["wall_seconds"] = round(time.time() - t0, 1)
    new = run_record(m, spec, rec["task"], rec["k"], int(rec["seed"]))
    row["reproduced"] = (new.get("test") or {}).get(rec["main_metric"])
    row["equal"] = row["reproduced"] == row["recorded"]
    row["model_equal"] = new.get("model") == rec.get("model")
    row["settings_equal"] = new.get("settings") == rec.get("settings")
    row["best_step"] = {"recorded": rec.get("best_step"), "reproduced": new.get("best_step")}
    return row


def table(rows: list[dict]) -> str:
    lines = ["| spec | task | K | seed | metric | recorded | reproduced | equal | settings / model equal |",
             "|---|---|---|---:|---|---:|---:|---|---|"]
    for r in rows:
        got = r.get("error") or repr(r.get("reproduced"))
        same = "—" if "error" in r else f"{'yes' if r['settings_equal'] else 'no'} / {'yes' if r['model_equal'] else 'no'}"
        lines.append(f"| {r['spec']} | {r['task']} | {r['k']} | {r['seed']} | {r['metric']} | {r['recorded']!r} | "
                     f"{got} | {'yes' if r['equal'] else '**NO**'} | {same} |")
    n = sum(1 for r in rows if r["equal"])
    lines.append(f"\n{n} of {len(rows)} runs reproduce their recorded test metric exactly.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record", type=Path, default=RECORD, help="the recorded grid (default docs/results/grid-k100.json)")
    p.add_argument("--specs", default=None, help="comma list of spec names (default: every spec of the record)")
    p.add_argument("--per-spec", type=int, default=1, help="runs per spec (default 1)")
    p.add_argument("--limit", type=int, default=None, help="at most this many runs in all (after --per-spec)")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "reproduce-grid",
                   help="the run folders, in the grid's layout; finished ones are reused (default runs/reproduce-grid)")
    p.add_argument("--data-dir", default=os.environ.get("PELT_GLUE_DIR") or "/work/shared/glue",
                   help="GLUE in the original TSV layout (default $PELT_GLUE_DIR, else /work/shared/glue)")
    p.add_argument("--dev-size", type=int, default=DEV_SIZE, help=f"the grid's --dev-size, for records that do not keep theirs (default {DEV_SIZE})")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1, as the grid ran)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON result (default bench/results/reproduce-grid-<timestamp>.json)")
    p.add_argument("--dry-run", action="store_true", help="print the sample and exit")
    a = p.parse_args(argv)
    a.specs = [s.strip() for s in a.specs.split(",") if s.strip()] if a.specs else None
    for name in ("per_spec", "threads", "jobs"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.limit is not None and a.limit < 1:
        p.error("--limit must be at least 1")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = json.loads(args.record.read_text(encoding="utf-8"))
    records = data["runs"] if isinstance(data, dict) else data
    known = list(dict.fromkeys(r["spec"] for r in records))
    for s in args.specs or []:
        if s not in known:
            raise SystemExit(f"--specs: {s!r} is not in {args.record} (recorded: {', '.join(known)})")
    sample = choose(records, args.specs, args.per_spec)[:args.limit]
    if args.dry_run:
        for r in sample:
            print(f"{r['spec']} {r['task']} K={r['k']} seed={r['seed']}: {r['main_metric']} {r['test'][r['main_metric']]!r}")
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = datetime.now(timezone.utc)
    log(f"reproducing {len(sample)} recorded runs of {args.record} ({args.jobs} at a time, {args.threads} thread(s) each)")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        rows = list(pool.map(lambda r: reproduce(r, args, log), sample))
    print(table(rows), flush=True)
    out = args.out or RESULTS / f"reproduce-grid-{started.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"record": str(args.record), "started": started.isoformat(timespec="seconds"),
              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "rule": "per spec: its most common recorded settings (seed aside), cheapest task (mean recorded wall "
                      "time), lowest seed", "all_equal": all(r["equal"] for r in rows), "runs": rows}
    out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}", flush=True)
    return 0 if result["all_equal"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
