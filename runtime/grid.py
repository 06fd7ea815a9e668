"""Grid runs — the paper's Table 1 on this machine: specs × tasks × K × seeds.

Each combination is one `peltc compile … --train` run in its own folder
(``OUT/<spec>/<task>/k<K>/s<seed>``), run as a subprocess (at most ``jobs`` at a time, the CPU
threads shared between them). Finished runs (a final ``metrics.json``) are skipped, interrupted
ones resumed, so an interrupted grid picks up where it stopped. Then the table: mean ± std of the
task's main metric (×100) per spec × task × K, the per-K average, best in bold, second underlined.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def run_dir(out: str | Path, spec: str, task: str, k: str, seed: int) -> Path:
    return Path(out) / Path(spec).stem / task / f"k{k}" / f"s{seed}"


def _finished(d: Path) -> dict | None:
    try:
        m = json.loads((d / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return m if m.get("final") else None


def _command(spec, task, k, seed, d: Path, model, data_dir, overrides, dev_size) -> list[str]:
    cmd = [sys.executable, "-m", "peltc", "compile", spec, "--train", f"glue/{task}", "--k", str(k),
           "--seed", str(seed), "--out", str(d), "--quiet", "--no-render", "--dev-size", str(dev_size)]
    if model:
        cmd += ["--model", model]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    for key, v in overrides.items():
        cmd += [f"--{key.replace('_', '-')}", str(v)]
    if (d / "run.json").exists():
        cmd.append("--resume")
    return cmd


def run_grid(specs: list[str], *, tasks: list[str], ks: list[str], seeds: list[int], out: str = "runs/grid",
             jobs: int = 1, model: str | None = None, data_dir: str | None = None,
             overrides: dict[str, Any] | None = None, dev_size: int = 1000) -> dict[str, Any]:
    from peltc.runtime.tasks import task as get_task
    tasks = [get_task(t).name for t in tasks]
    # seed-major order: an interrupted grid has every spec on the same tasks and seeds
    combos = [(s, t, k, seed) for seed in seeds for k in ks for t in tasks for s in specs]
    todo = [c for c in combos if _finished(run_dir(out, *c)) is None]
    print(f"grid: {len(combos)} runs, {len(combos) - len(todo)} already finished, {len(todo)} to run "
          f"({jobs} at a time)", flush=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}

    def one(c):
        d = run_dir(out, *c)
        d.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with open(d.parent / f"{d.name}.log", "a", encoding="utf-8") as log:
            rc = subprocess.call(_command(*c, d, model, data_dir, overrides or {}, dev_size), stdout=log,
                                 stderr=subprocess.STDOUT, env=env)
        status = "ok" if rc == 0 and _finished(d) else f"FAILED (exit {rc}; see {d.parent / (d.name + '.log')})"
        print(f"  {Path(c[0]).stem} {c[1]} K={c[2]} seed={c[3]}: {status} in {time.time() - t0:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    table = tabulate(specs, tasks, ks, seeds, out)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "grid.json").write_text(json.dumps(table, indent=2))
    md = to_markdown(table)
    (Path(out) / "grid.md").write_text(md)
    print(md)
    return table


def throughput(m: dict) -> tuple[float | None, float | None]:
    """(training, evaluation) examples per second of one finished run: optimiser steps × batch over
    the training time less the dev evaluations inside it; the test set over its scoring time."""
    tr, st = m.get("train", {}), m.get("settings", {})
    evals = sum(h.get("runtime") or 0.0 for h in m.get("dev", {}).get("history", []))
    train_s = (tr.get("runtime") or 0.0) - evals
    train = tr["steps"] * st["batch_size"] / train_s if train_s > 0 and tr.get("steps") and st.get("batch_size") else None
    return train, m.get("eval_examples_per_second")


def _mean(xs: list) -> float | None:
    return statistics.fmean(xs) if xs and None not in xs else None


def tabulate(specs, tasks, ks, seeds, out) -> dict[str, Any]:
    from peltc.runtime.tasks import task as get_task
    cells: dict[str, Any] = {}
    for s in specs:
        name = Path(s).stem
        for k in ks:
            for t in tasks:
                main = get_task(t).main_metric
                vals, walls, runs, train_eps, eval_eps = [], [], [], [], []
                for seed in seeds:
                    m = _finished(run_dir(out, s, t, k, seed))
                    if m is None:
                        continue
                    vals.append(100 * m["test"][main])
                    walls.append(m.get("wall_seconds"))
                    tr_eps, ev_eps = throughput(m)
                    train_eps.append(tr_eps)
                    eval_eps.append(ev_eps)
                    runs.append({"seed": seed, "test": m["test"], "wall_seconds": m.get("wall_seconds"),
                                 "steps": m.get("train", {}).get("steps"), "train_examples_per_second": tr_eps,
                                 "eval_examples_per_second": ev_eps, "warnings": m.get("warnings", [])})
                cells[f"{name}|{t}|{k}"] = {
                    "spec": name, "task": t, "k": k, "metric": main, "n": len(vals),
                    "mean": statistics.fmean(vals) if vals else None,
                    "std": statistics.stdev(vals) if len(vals) > 1 else None,   # one seed: no spread to report
                    "wall_seconds_mean": _mean(walls),
                    "train_examples_per_second": _mean(train_eps),
                    "eval_examples_per_second": _mean(eval_eps),
                    "runs": runs,
                }
    return {"specs": [Path(s).stem for s in specs], "tasks": list(tasks), "ks": list(ks), "seeds": list(seeds),
            "cells": cells}


def to_markdown(table: dict[str, Any]) -> str:
    specs, tasks, ks, cells = table["specs"], table["tasks"], table["ks"], table["cells"]
    lines = []
    for k in ks:
        avg = {}
        for s in specs:
            ms = [cells[f"{s}|{t}|{k}"]["mean"] for t in tasks]
            avg[s] = _mean(ms)
        cols = tasks + ["avg"]

        def val(s, c):
            return avg[s] if c == "avg" else cells[f"{s}|{c}|{k}"]["mean"]

        rank = {}
        for c in cols:
            order = sorted((v, s) for s in specs if (v := val(s, c)) is not None)[::-1]
            rank[c] = {s: i for i, (_, s) in enumerate(order)}
        lines.append(f"### K = {k}\n")
        lines.append("| spec | " + " | ".join(cols) + " | s/run | train ex/s | eval ex/s |")
        lines.append("|---|" + "---:|" * (len(cols) + 3))
        for s in specs:
            row = []
            for c in cols:
                v = val(s, c)
                if v is None:
                    row.append("—")
                    continue
                std = None if c == "avg" else cells[f"{s}|{c}|{k}"]["std"]
                txt = f"{v:.1f}" if std is None else f"{v:.1f} ± {std:.1f}"
                r = rank[c].get(s)
                row.append(f"**{txt}**" if r == 0 else f"<u>{txt}</u>" if r == 1 else txt)
            for key in ("wall_seconds_mean", "train_examples_per_second", "eval_examples_per_second"):
                xs = [x for t in tasks if (x := cells[f"{s}|{t}|{k}"].get(key)) is not None]
                row.append(f"{statistics.fmean(xs):.0f}" if xs else "—")
            lines.append(f"| {s} | " + " | ".join(row) + " |")
        n = {cells[f"{s}|{t}|{k}"]["n"] for s in specs for t in tasks}
        lines.append(f"\nseeds per cell: {sorted(n)}; metrics ×100: MCC (cola), F1 (mrpc), Spearman (stsb), "
                     f"accuracy (others); best **bold**, second <u>underlined</u>; s/run, train ex/s (optimiser "
                     f"steps × batch per second of training, dev evaluations excluded) and eval ex/s (test set "
                     f"scoring): means over the finished runs.\n")
    return "\n".join(lines)
