"""Grid runs — the paper's Table 1 on this machine: specs × tasks × K × seeds.

Each combination is one `peltc compile … --train` run in its own folder
(``OUT/<spec>/<task>/k<K>/s<seed>``), run as a subprocess (at most ``jobs`` at a time, the CPU
threads shared between them). Finished runs (a final ``metrics.json``) are skipped, interrupted
ones resumed, so an interrupted grid picks up where it stopped. Then the table: mean ± std of the
task's main metric (×100) per spec × task × K, the per-K average, best in bold, second underlined,
cells with near-constant predictors marked; and the paper's Table 2 (UniPELT vs the per-task best
of its submodules).

``--record FILE.json`` keeps one record per finished run (spec, task, K, seed, test and best-dev
metrics, steps, wall time, flags) in a JSON file that can be committed: runs recorded there count
as finished (a grid resumes from it on a fresh machine), and ``peltc grid --table FILE.json``
regenerates the markdown from it alone.
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


RECORD_KEYS = ("spec", "task", "k", "seed")


def run_record(m: dict, spec: str, task: str, k, seed: int) -> dict[str, Any]:
    """What the committed grid JSON keeps of one finished run (``metrics.json`` → a flat record)."""
    tr_eps, ev_eps = throughput(m)
    return {"spec": Path(spec).stem, "task": task, "k": str(k), "seed": int(seed),
            "main_metric": m.get("main_metric"), "test": m.get("test"), "dev": m.get("dev", {}).get("best"),
            "steps": m.get("train", {}).get("steps"), "best_step": m.get("train", {}).get("best_step"),
            "wall_seconds": m.get("wall_seconds"), "train_examples_per_second": tr_eps,
            "eval_examples_per_second": ev_eps, "near_constant": bool(m.get("near_constant")),
            "degenerate": any("degenerate run" in w for w in m.get("warnings", [])),
            "warnings": m.get("warnings", []), "settings": m.get("settings"), "model": m.get("model"),
            "sizes": m.get("sizes")}          # train / dev / test examples: the dev size a record was made with


def load_records(path: str | Path | None) -> list[dict[str, Any]]:
    if path is None or not Path(path).is_file():
        return []
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data["runs"] if isinstance(data, dict) else data


def save_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: (r["k"], r["seed"], r["task"], r["spec"]))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"runs": records}, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _key(r: dict) -> tuple:
    return (r["spec"], r["task"], str(r["k"]), int(r["seed"]))


def _finished(d: Path) -> dict | None:
    try:
        m = json.loads((d / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return m if m.get("final") else None


# your own data's options, as `peltc compile` spells them (every own-data task of a grid gets the same)
OWN_FLAGS = {"validation": "--validation", "test": "--test", "text_column": "--text-column",
             "text_pair_column": "--text-pair-column", "label_column": "--label-column", "task_type": "--task-type"}


def resolve_tasks(tasks: list[str], own: dict[str, Any] | None = None) -> dict[str, str]:
    """Each grid task's name (its table column and folder) → the ``--train`` reference of its runs.
    A GLUE task (``rte``, ``glue/rte``) is named as GLUE names it. Your own data (``csv:PATH``,
    ``json:PATH``, ``disk:DIR``, ``hub:NAME[:CONFIG]``) is read and checked here, before any run starts,
    with ``own``'s options (:data:`OWN_FLAGS`; ``--validation`` / ``--test`` only with one such task), and
    named by its file's stem, as a run folder names it."""
    from types import SimpleNamespace

    from peltc.errors import UsageError
    from peltc.runtime.own_files import is_own
    from peltc.runtime.task_glue import task as get_task
    from peltc.runtime.task_own import load_own, own_data

    own = {k: v for k, v in (own or {}).items() if v is not None}
    mine = [t for t in tasks if is_own(t)]
    if own and not mine:
        raise UsageError(f"{', '.join(OWN_FLAGS[k] for k in own)} apply to your own data, and --tasks names none",
                         code="U130", help="--tasks csv:PATH | json:PATH | disk:DIR | hub:NAME[:CONFIG] (comma list)")
    if len(mine) > 1 and (own.get("validation") or own.get("test")):
        raise UsageError("--validation / --test name one dataset's splits, and --tasks names "
                         f"{len(mine)} datasets of your own", code="U130",
                         help="run one grid per dataset, or leave the splits to the protocol (a fixed fifth "
                              "as test, dev and K per seed)")
    out: dict[str, str] = {}
    for ref in tasks:
        if is_own(ref):
            opts = SimpleNamespace(task=ref, **{k: own.get(k) for k in OWN_FLAGS})
            name = load_own(own_data(opts, "--tasks"))[1].name
        else:
            name = get_task(ref).name
            ref = f"glue/{name}"
        if name in out:
            raise UsageError(f"two grid tasks are both named '{name}' ({out[name]}, {ref})", code="U133",
                             help="a task's name (a GLUE name, or your file's stem) is its table column and folder: "
                                  "rename one file")
        out[name] = ref
    return out


def _command(spec, task, k, seed, d: Path, model, data_dir, overrides, dev_size, ref: str | None = None,
             own: dict[str, Any] | None = None, speed=None) -> list[str]:
    ref = ref or f"glue/{task}"
    cmd = [sys.executable, "-m", "peltc", "compile", spec, "--train", ref, "--k", str(k),
           "--seed", str(seed), "--out", str(d), "--quiet", "--no-render", "--dev-size", str(dev_size)]
    if model:
        cmd += ["--model", model]
    if ref.startswith("glue/"):
        if data_dir:
            cmd += ["--data-dir", data_dir]
    else:
        for key, flag in OWN_FLAGS.items():
            if (own or {}).get(key) is not None:
                cmd += [flag, str(own[key])]
    for key, v in overrides.items():
        cmd += [f"--{key.replace('_', '-')}", str(v)]
    from peltc.compiler.methods import plugin_files
    for f in plugin_files():       # the plug-ins this grid was given (--plugin, a spec's import re-reads its own)
        cmd += ["--plugin", f]
    from peltc.runtime.speed import flags
    cmd += flags(speed)
    if (d / "run.json").exists():
        cmd.append("--resume")
    return cmd


def run_grid(specs: list[str], *, tasks: list[str], ks: list[str], seeds: list[int], out: str = "runs/grid",
             jobs: int = 1, model: str | None = None, data_dir: str | None = None,
             overrides: dict[str, Any] | None = None, dev_size: int = 1000,
             record: str | None = None, own: dict[str, Any] | None = None, speed=None) -> dict[str, Any]:
    """``tasks``: GLUE names and / or your own data (``csv:PATH`` …, read with ``own``'s options:
    :func:`resolve_tasks`). ``speed``: each run's device, precision and --torch-compile (`runtime.speed.Speed`;
    a bf16 run is another run than an fp32 one: give it its own ``out``)."""
    import threading

    refs = resolve_tasks(tasks, own)
    tasks = list(refs)
    # seed-major order: an interrupted grid has every spec on the same tasks and seeds
    combos = [(s, t, k, seed) for seed in seeds for k in ks for t in tasks for s in specs]
    records = {_key(r): r for r in load_records(record)}
    lock = threading.Lock()
    for c in combos:        # finished run folders not yet in the record
        m = _finished(run_dir(out, *c))
        if m is not None and record and (Path(c[0]).stem, c[1], str(c[2]), int(c[3])) not in records:
            r = run_record(m, *c)
            records[_key(r)] = r
    if record:
        save_records(record, list(records.values()))
    todo = [c for c in combos if (Path(c[0]).stem, c[1], str(c[2]), int(c[3])) not in records
            and _finished(run_dir(out, *c)) is None]
    print(f"grid: {len(combos)} runs, {len(combos) - len(todo)} already finished, {len(todo)} to run "
          f"({jobs} at a time)", flush=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    from peltc.runtime.signals import child_env
    env = child_env({**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})

    def one(c):
        d = run_dir(out, *c)
        d.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        with open(d.parent / f"{d.name}.log", "a", encoding="utf-8") as log:
            rc = subprocess.call(_command(*c, d, model, data_dir, overrides or {}, dev_size, refs[c[1]], own, speed),
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
        m = _finished(d) if rc == 0 else None
        status = "ok" if m else f"FAILED (exit {rc}; see {d.parent / (d.name + '.log')})"
        if m and record:
            r = run_record(m, *c)
            with lock:
                records[_key(r)] = r
                save_records(record, list(records.values()))
        print(f"  {Path(c[0]).stem} {c[1]} K={c[2]} seed={c[3]}: {status} in {time.time() - t0:.0f} s", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(one, todo))
    return write_tables(specs, tasks, ks, seeds, out, list(records.values()) if record else None)


def write_tables(specs, tasks, ks, seeds, out, records: list[dict] | None) -> dict[str, Any]:
    """``OUT/grid.json`` and ``OUT/grid.md`` (Table 1 per K, Table 2), printed too; from ``records`` when
    given, else from the finished run folders."""
    table = tabulate(specs, tasks, ks, seeds, out, records=records)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "grid.json").write_text(json.dumps(table, indent=2))
    md = to_markdown(table) + "\n" + table2_markdown(table)
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


def _main_metric(task: str, runs: list[dict]) -> str | None:
    """The task's main metric: as its runs recorded it (your own data's task is known by its runs), else
    GLUE's; None for an own-data task without finished runs."""
    from peltc.errors import UsageError
    from peltc.runtime.task_glue import task as get_task
    for r in runs:
        if r.get("main_metric"):
            return r["main_metric"]
    try:
        return get_task(task).main_metric
    except UsageError:
        return None


def tabulate(specs, tasks, ks, seeds, out=None, records: list[dict] | None = None) -> dict[str, Any]:
    """Cells of the table from run records (``records``), else from the finished run folders in ``out``."""
    by_key: dict[tuple, dict] = {}
    if records is not None:
        by_key = {_key(r): r for r in records}
    else:
        for s in specs:
            for k in ks:
                for t in tasks:
                    for seed in seeds:
                        m = _finished(run_dir(out, s, t, k, seed))
                        if m is not None:
                            r = run_record(m, s, t, k, seed)
                            by_key[_key(r)] = r
    cells: dict[str, Any] = {}
    for s in specs:
        name = Path(s).stem
        for k in ks:
            for t in tasks:
                runs = [by_key[key] for seed in seeds if (key := (name, t, str(k), int(seed))) in by_key]
                main = _main_metric(t, runs)
                vals = [100 * r["test"][main] for r in runs]
                cells[f"{name}|{t}|{k}"] = {
                    "spec": name, "task": t, "k": k, "metric": main, "n": len(vals),
                    "mean": statistics.fmean(vals) if vals else None,
                    "std": statistics.stdev(vals) if len(vals) > 1 else None,   # one seed: no spread to report
                    "near_constant": sum(1 for r in runs if r.get("near_constant") or r.get("degenerate")),
                    "wall_seconds_mean": _mean([r.get("wall_seconds") for r in runs]),
                    "train_examples_per_second": _mean([r.get("train_examples_per_second") for r in runs]),
                    "eval_examples_per_second": _mean([r.get("eval_examples_per_second") for r in runs]),
                    "runs": [{"seed": r["seed"], "test": r["test"], "wall_seconds": r.get("wall_seconds"),
                              "steps": r.get("steps"), "near_constant": r.get("near_constant"),
                              "warnings": r.get("warnings", [])} for r in runs],
                }
    return {"specs": [Path(s).stem for s in specs], "tasks": list(tasks), "ks": list(ks), "seeds": list(seeds),
            "cells": cells}


METRIC_NAMES = {"matthews_correlation": "MCC", "f1": "F1", "spearmanr": "Spearman", "pearson": "Pearson",
                "accuracy": "accuracy"}


def _metrics_text(cells: dict, specs: list[str], tasks: list[str], k) -> str:
    """``MCC (cola), F1 (mrpc), Spearman (stsb), accuracy (sst2, rte)``: each main metric and its tasks."""
    by: dict[str, list[str]] = {}
    for t in tasks:
        metric = next((c["metric"] for s in specs if (c := cells[f"{s}|{t}|{k}"])["metric"]), None)
        by.setdefault(METRIC_NAMES.get(metric, metric or "?"), []).append(t)
    return ", ".join(f"{m} ({', '.join(ts)})" for m, ts in by.items())


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
        for c in cols:   # as shown (one decimal); ties share a rank: two equal best are both bold, none second
            shown = {s: round(v, 1) for s in specs if (v := val(s, c)) is not None}
            rank[c] = {s: sum(1 for w in shown.values() if w > v) for s, v in shown.items()}
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
                txt = f"**{txt}**" if r == 0 else f"<u>{txt}</u>" if r == 1 else txt
                nc = 0 if c == "avg" else cells[f"{s}|{c}|{k}"].get("near_constant", 0)
                row.append(f"{txt} †{nc}" if nc else txt)
            for key in ("wall_seconds_mean", "train_examples_per_second", "eval_examples_per_second"):
                xs = [x for t in tasks if (x := cells[f"{s}|{t}|{k}"].get(key)) is not None]
                row.append(f"{statistics.fmean(xs):.0f}" if xs else "—")
            lines.append(f"| {s} | " + " | ".join(row) + " |")
        n = {cells[f"{s}|{t}|{k}"]["n"] for s in specs for t in tasks}
        lines.append(f"\nseeds per cell: {sorted(n)}; metrics ×100: {_metrics_text(cells, specs, tasks, k)}; "
                     f"best **bold**, second <u>underlined</u> (ties share a place); †n: n runs of the cell are "
                     f"near-constant predictors (test predictions' variance < 10% of the labels', or ≥ 95% one "
                     f"class); s/run, train ex/s (optimiser "
                     f"steps × batch per second of training, dev evaluations excluded) and eval ex/s (test set "
                     f"scoring): means over the finished runs.\n")
    return "\n".join(lines)


def _paired(a: dict, b: dict) -> list[float]:
    """×100 differences of two cells' test main metric, seed by seed (the seeds both ran)."""
    metric = a["metric"]
    bs = {r["seed"]: r["test"][metric] for r in b["runs"]}
    return [100 * (r["test"][metric] - bs[r["seed"]]) for r in a["runs"] if r["seed"] in bs]


# UniPELT and its submodules (the paper's Table 2): which specs are the parts of which mixture.
PARTS = {"unipelt_apl": ("adapter", "prefix", "lora"), "unipelt_ap": ("adapter", "prefix")}


def table2_markdown(table: dict[str, Any]) -> str:
    """Per K: each UniPELT spec's average beside the average of the per-task best of its submodules
    (the paper's "upper bound"), and on how many tasks UniPELT is at least as good as that best."""
    specs, tasks, ks, cells = table["specs"], table["tasks"], table["ks"], table["cells"]
    lines = ["| K | mixture | its average | avg of per-task max over its parts | parts | tasks where mixture ≥ best part |",
             "|---|---|---:|---:|---|---:|"]
    any_row = False
    for k in ks:
        for mix, parts in PARTS.items():
            if mix not in specs or not all(p in specs for p in parts):
                continue
            mine, best, wins, n = [], [], 0, 0
            for t in tasks:
                v = cells[f"{mix}|{t}|{k}"]["mean"]
                pv = [cells[f"{p}|{t}|{k}"]["mean"] for p in parts]
                if v is None or None in pv:
                    continue
                mine.append(v)
                best.append(max(pv))
                wins += v >= max(pv)
                n += 1
            if not n:
                continue
            any_row = True
            lines.append(f"| {k} | {mix} | {statistics.fmean(mine):.1f} | {statistics.fmean(best):.1f} | "
                         f"{', '.join(parts)} | {wins} of {n} |")
    if not any_row:
        return ""
    out = "### UniPELT vs the per-task best of its submodules (the paper's Table 2)\n\n" + "\n".join(lines) + "\n"
    for k in ks:       # paired by seed: the mixture minus the task's best part, run for run
        for mix, parts in PARTS.items():
            if mix not in specs or not all(p in specs for p in parts):
                continue
            bits = []
            for t in tasks:
                pv = {p: cells[f"{p}|{t}|{k}"]["mean"] for p in parts}
                if None in pv.values() or cells[f"{mix}|{t}|{k}"]["mean"] is None:
                    continue
                best = max(pv, key=pv.get)
                diffs = _paired(cells[f"{mix}|{t}|{k}"], cells[f"{best}|{t}|{k}"])
                if len(diffs) > 1:
                    bits.append(f"{t} {statistics.fmean(diffs):+.1f} ± {statistics.stdev(diffs):.1f} (vs {best})")
            if bits:
                out += f"\nPaired by seed, K = {k}: {mix} minus the task's best part, mean ± std: {', '.join(bits)}.\n"
    for k in ks:       # the NoGate ablation: the same mixture with every gate removed
        if "unipelt_apl" in specs and "unipelt_apl_nogate" in specs:
            pairs = [(t, cells[f"unipelt_apl|{t}|{k}"]["mean"], cells[f"unipelt_apl_nogate|{t}|{k}"]["mean"])
                     for t in tasks]
            pairs = [(t, a, b) for t, a, b in pairs if a is not None and b is not None]
            if pairs:
                diffs = ", ".join(f"{t} {a - b:+.1f}" for t, a, b in pairs)
                out += (f"\nNoGate ablation, K = {k}: UniPELT (APL) minus its gate-less variant, per task: {diffs} "
                        f"(average {statistics.fmean(a - b for _, a, b in pairs):+.1f}).\n")
    return out


def report(record: str | Path, specs: list[str] | None = None, tasks: list[str] | None = None) -> str:
    """The markdown of a recorded grid (``--record`` JSON) alone: Table 1 per K, then Table 2."""
    records = load_records(record)
    if not records:
        from peltc.errors import UsageError
        raise UsageError(f"no runs recorded in '{record}'", code="U108",
                         help="run `peltc grid … --record FILE.json` first")
    order = specs or list(dict.fromkeys(r["spec"] for r in records))
    tasks = tasks or list(dict.fromkeys(r["task"] for r in records))
    ks = list(dict.fromkeys(str(r["k"]) for r in records))
    seeds = sorted({int(r["seed"]) for r in records})
    table = tabulate(order, tasks, ks, seeds, records=records)
    return (f"{len(records)} runs recorded in `{Path(record).name}`.\n\n" + to_markdown(table) + "\n"
            + table2_markdown(table))
