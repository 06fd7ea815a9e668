"""What the search engine itself costs per trial (`peltc search`, runtime/search.py), beside a K = 100 run.

    .venv/bin/python bench/search_cost.py                       # journal file, 20 trials, 5 start-ups
    .venv/bin/python bench/search_cost.py --storage postgresql://USER@HOST/DB --trials 20

Three parts, each timed here, with the run itself replaced by one that trains nothing:

- **start-up** (once per worker process): a fresh ``python`` that imports the engine, reads the space, opens
  the storage and starts a study (checking every point of the space against the model's config first:
  `search.check`) or joins one (no check) — `peltc search`'s work before its first trial. Median wall and
  CPU time over ``--startups`` processes of each kind, interleaved.
- **per trial**: `search.work` over a fresh study with the real objective (`search.objective_for`: the claim
  of a slot, TPE sampling with the median pruner over the space, the concrete spec written, the trial's
  attributes kept, the tell), its run replaced by one that reports as many dev evaluations as a K = 100
  run of the grid made (the median over its runs of steps / eval_steps) to the trial and its pruner. Mean
  over ``--trials`` trials (TPE's cost grows with the trials it models: the mean over a study's budget).
- **heartbeats**: one heartbeat write (median of ``--beats``) × the heartbeats a K = 100 run writes.

The reference is the median wall time of the K = 100 runs recorded in ``docs/results/grid-k100.json`` (the
grid's 200 MiniLM runs on this machine). The ratios take a start-up whole per trial — a new study's (its
space checked: a study of one trial) and a joining worker's (every trial in a process of its own) — and a
new study's amortised over the budget (one worker for the whole study).
Results: a table on stdout; ``docs/results/search-cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
SPACE = ROOT / "specs" / "spaces" / "unipelt.pelt"
GRID = ROOT / "docs" / "results" / "grid-k100.json"
OUT = ROOT / "docs" / "results" / "search-cost.json"
TASK = "glue/rte"


def options(storage: str, out: Path, trials: int):
    from peltc.runtime.search import SearchOptions
    return SearchOptions(space=str(SPACE), task=TASK, trials=trials, study="cost", storage=storage, out=str(out))


def startup_child(storage: str, out: str, study: str) -> None:
    """What a worker does before its first trial (timed from outside, as a whole process)."""
    from peltc.runtime.search import check, load, make_pruner, make_sampler, open_study, study_settings
    o = options(storage, Path(out), 1)
    o.study = study
    text, space = load(o.space)
    open_study(o, study_settings(o, text), make_sampler(o.sampler, space), make_pruner(o.pruner),
               check=lambda: check(space, o.space, o.model))


def time_startups(n: int, storage: str, out: Path) -> dict[str, list[dict[str, float]]]:
    """Wall and CPU seconds of worker start-ups: ``start`` a new study (its space checked), ``join`` one."""
    import resource

    def one(study: str) -> dict[str, float]:
        r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([sys.executable, __file__, "--startup-child", "--storage", storage, "--out", str(out),
                        "--study", study], check=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        return {"wall": time.perf_counter() - t0, "cpu": r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime}

    out_: dict[str, list[dict[str, float]]] = {"start": [], "join": []}
    for i in range(n):              # interleaved: a new study, then joining the first one
        out_["start"].append(one(f"startup-{i}"))
        out_["join"].append(one("startup-0"))
    return out_


def grid_reference() -> dict:
    runs = json.loads(GRID.read_text(encoding="utf-8"))["runs"]
    walls = [r["wall_seconds"] for r in runs if r.get("wall_seconds")]
    evals = [r["steps"] / r["settings"]["eval_steps"] for r in runs if r.get("steps") and r.get("settings")]
    return {"file": str(GRID.relative_to(ROOT)), "runs": len(walls), "wall_seconds_median": statistics.median(walls),
            "dev_evaluations_median": statistics.median(evals)}


def time_trials(trials: int, evaluations: int, storage: str, out: Path) -> list[float]:
    """Seconds per trial of `search.work` with a run that trains nothing."""
    from transformers import TrainerCallback  # noqa: F401  (a run imports it anyway: not the engine's cost)

    from peltc.runtime import search as S
    o = options(storage, out, trials)
    text, space = S.load(o.space)
    study = S.open_study(o, S.study_settings(o, text), S.make_sampler(o.sampler, space), S.make_pruner(o.pruner))
    rng = random.Random(0)

    def no_training(opts, callbacks=()):
        args = SimpleNamespace(metric_for_best_model="accuracy")
        for i in range(1, evaluations + 1):
            for cb in callbacks:
                cb.on_evaluate(args, SimpleNamespace(global_step=30 * i), SimpleNamespace(should_training_stop=False),
                               metrics={"eval_accuracy": rng.random()})
        acc = rng.random()
        return {"main_metric": "accuracy", "dev": {"best": {"accuracy": acc}}, "test": {"accuracy": acc},
                "wall_seconds": 0.0, "train": {"steps": 30 * evaluations}}

    point_of, folder_of = S.trial_parts(o, space)
    ends: list[float] = []
    t0 = time.perf_counter()
    S.work(study, S.objective_for(o, point_of, folder_of, train_run=no_training), trials, poll=1.0,
           say=lambda _: ends.append(time.perf_counter()))
    starts = [t0, *ends[:-1]]
    return [e - s for s, e in zip(starts, ends)]


def time_heartbeats(n: int, storage: str) -> list[float]:
    import optuna

    from peltc.runtime.study_storage import open_storage
    store = open_storage(storage)
    study = optuna.load_study(study_name="cost", storage=store)
    trial = study.ask()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        store.record_heartbeat(trial._trial_id)
        times.append(time.perf_counter() - t0)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return times


def main(argv: list[str] | None = None) -> int:
    from peltc.runtime.study_storage import HEARTBEAT_S
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--storage", help="default: a journal file in a temporary folder")
    p.add_argument("--out", help=argparse.SUPPRESS)
    p.add_argument("--study", help=argparse.SUPPRESS)
    p.add_argument("--trials", type=int, default=20, help="trials timed (default 20, issue 19's budget per task)")
    p.add_argument("--startups", type=int, default=5, help="worker start-ups timed (default 5)")
    p.add_argument("--beats", type=int, default=50, help="heartbeat writes timed (default 50)")
    p.add_argument("--startup-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=str(OUT), help="where the JSON goes (default %(default)s)")
    a = p.parse_args(argv)
    if a.startup_child:
        startup_child(a.storage, a.out, a.study)
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="search-cost-"))
    storage = a.storage or str(tmp / "studies.journal")
    ref = grid_reference()
    from benchlib.machine import git_state, machine_info
    info = machine_info(1)
    startups = time_startups(a.startups, storage, tmp)
    cpu0 = time.process_time()
    per_trial = time_trials(a.trials, round(ref["dev_evaluations_median"]), storage, tmp)
    trial_cpu = (time.process_time() - cpu0) / a.trials
    beats = time_heartbeats(a.beats, storage)
    wall = ref["wall_seconds_median"]
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall", "cpu")} for k, v in startups.items()}
    trial_s, beat_s = statistics.fmean(per_trial), statistics.median(beats)
    beats_s = beat_s * wall / HEARTBEAT_S
    worst = med["start"]["wall"] + trial_s + beats_s
    joining = med["join"]["wall"] + trial_s + beats_s
    amortised = med["start"]["wall"] / a.trials + trial_s + beats_s
    rows = [("start-up, a new study (space checked)", med["start"]["wall"], med["start"]["cpu"]),
            ("start-up, joining a study", med["join"]["wall"], med["join"]["cpu"]),
            ("engine per trial (mean)", trial_s, trial_cpu),
            (f"heartbeats per run ({wall / HEARTBEAT_S:.1f} × {beat_s * 1e3:.2f} ms)", beats_s, None),
            ("per trial, a new study's start-up whole (a one-trial study)", worst, None),
            ("per trial, a joining worker's start-up whole (one trial per process)", joining, None),
            (f"per trial, start-up over {a.trials} trials", amortised, None)]
    print(f"| part | wall s | CPU s | wall, % of a K = 100 run ({wall:.0f} s, median of {ref['runs']}) |\n"
          "|---|---:|---:|---:|")
    for name, s, cpu in rows:
        print(f"| {name} | {s:.3f} | {'—' if cpu is None else f'{cpu:.3f}'} | {100 * s / wall:.2f} % |")
    result = {"storage": "journal file" if not a.storage else a.storage.split("://", 1)[0],
              "space": str(SPACE.relative_to(ROOT)), "trials": a.trials, "reference": ref, "startups": startups,
              "startup_medians": med, "trial_seconds": per_trial, "trial_cpu_seconds_mean": trial_cpu,
              "heartbeat_seconds": beats, "heartbeat_interval_s": HEARTBEAT_S,
              "per_trial_worst_seconds": worst, "per_trial_joining_seconds": joining,
              "per_trial_amortised_seconds": amortised, "ratio_worst": worst / wall, "ratio_joining": joining / wall,
              "ratio_amortised": amortised / wall, "target": 0.05,
              "machine": info, "loadavg_end": list(os.getloadavg()), "git": git_state()}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
