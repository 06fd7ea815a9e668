"""`peltc grid --storage URL`: the grid on the search engine (runtime/search.py) — one Optuna study whose
grid sampler draws (spec, task, K, seed); each trial is the grid's ordinary run (`grid._command`, the same
folder ``OUT/<spec>/<task>/k<K>/s<seed>`` and log), its record (`grid.run_record`) kept in the trial. Any
number of processes on any number of machines run the same command and share the grid: a worker takes the
next point nobody has taken, a crashed worker's point is retried (study_storage.py), and ``--record`` is
written from the storage, so it holds every machine's runs in today's format (`peltc grid --table`,
bench/reports/update_results.py read it unchanged).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from peltc.runtime import grid as G
from peltc.runtime import search as S
from peltc.runtime.signals import child_env
from peltc.runtime.study_storage import HEARTBEAT_S, open_storage


class RunFailed(Exception):
    """The run of a grid point exited without finishing (its log says why); the grid goes on."""


def grid_settings(specs, tasks, ks, seeds, model, overrides, dev_size) -> dict[str, Any]:
    return {"kind": "grid", "specs": [Path(s).stem for s in specs], "tasks": list(tasks), "ks": [str(k) for k in ks],
            "seeds": [int(s) for s in seeds], "model": model, "overrides": dict(sorted((overrides or {}).items())),
            "dev_size": dev_size}


def run_grid_study(specs: list[str], *, tasks: list[str], ks: list[str], seeds: list[int], storage: str,
                   study: str | None = None, out: str = "runs/grid", jobs: int = 1, model: str | None = None,
                   data_dir: str | None = None, overrides: dict[str, Any] | None = None, dev_size: int = 1000,
                   record: str | None = None, own: dict[str, Any] | None = None,
                   heartbeat: int = HEARTBEAT_S, grace: int | None = None, speed=None) -> dict[str, Any]:
    import optuna

    refs = G.resolve_tasks(tasks, own)
    tasks = list(refs)
    by_stem = {Path(s).stem: s for s in specs}
    space = {"spec": list(by_stem), "task": tasks, "k": [str(k) for k in ks], "seed": [int(s) for s in seeds]}
    total = len(by_stem) * len(tasks) * len(ks) * len(seeds)
    name = study or f"grid-{Path(out).name}"
    store = open_storage(storage, heartbeat=heartbeat, grace=grace)
    st = optuna.create_study(study_name=name, storage=store, sampler=optuna.samplers.GridSampler(space),
                             direction="maximize", load_if_exists=True)
    settings = grid_settings(specs, tasks, ks, seeds, model, overrides, dev_size)
    S.keep_settings(st, settings, name)
    print(f"grid: study '{name}' in {storage}: {total} runs, {S.counts(st).get('COMPLETE', 0)} recorded there "
          f"({jobs} at a time here)", flush=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    env = child_env({**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})

    def objective(trial):
        S.claim(trial, total)
        c = (by_stem[trial.suggest_categorical("spec", space["spec"])], trial.suggest_categorical("task", tasks),
             trial.suggest_categorical("k", space["k"]), trial.suggest_categorical("seed", space["seed"]))
        S.unique(trial)
        d = G.run_dir(out, *c)
        d.parent.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr("run_dir", str(d))
        t0 = time.time()
        with open(d.parent / f"{d.name}.log", "a", encoding="utf-8") as log:
            rc = subprocess.call(G._command(*c, d, model, data_dir, overrides or {}, dev_size, refs[c[1]], own, speed),
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
        m = G._finished(d) if rc == 0 else None
        where = f"{Path(c[0]).stem} {c[1]} K={c[2]} seed={c[3]}"
        if m is None:
            trial.set_user_attr("run_failed", True)
            print(f"  {where}: FAILED (exit {rc}; see {d.parent / (d.name + '.log')})", flush=True)
            raise RunFailed(where)
        r = G.run_record(m, *c)
        trial.set_user_attr("record", r)
        print(f"  {where}: ok in {time.time() - t0:.0f} s", flush=True)
        return float((r.get("dev") or {}).get(r["main_metric"]) or 0.0)

    workers = [threading.Thread(target=S.work, args=(st, objective, total),
                                kwargs={"poll": max(1.0, heartbeat / 2), "say": lambda _: None,
                                        "catch": (RunFailed,), "label": "grid"}) for _ in range(max(1, jobs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    records = records_of(st)
    if record:
        G.save_records(record, records)
    return G.write_tables(specs, tasks, ks, seeds, out, records)


def records_of(study) -> list[dict[str, Any]]:
    """The grid's records, one per grid point, from the storage (the latest complete trial of each point)."""
    out: dict[tuple, dict] = {}
    for t in study.get_trials(deepcopy=False):
        r = t.user_attrs.get("record")
        if t.state.name == "COMPLETE" and r:
            out[G._key(r)] = r
    return list(out.values())
