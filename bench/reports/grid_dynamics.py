"""Training dynamics of the recorded K = 100 grid runs, from their run folders — why UniPELT does (not) beat
its parts: how fast each spec fits the 100 examples, where its best dev checkpoint lies, and what UniPELT's
gates chose.

    .venv/bin/python bench/reports/grid_dynamics.py --runs /tmp/gridruns        # collect → docs/results/grid-k100-dynamics.json
    .venv/bin/python bench/reports/grid_dynamics.py --table                     # the markdown from the committed JSON

Collect: for every run of ``docs/results/grid-k100.json`` whose folder (``RUNS/<spec>/<task>/k100/s<seed>``) still
exists and holds the same test metric as the record (so it is the recorded run), it keeps from the folder's
``trainer_log.json``, ``metrics.json`` and ``diagnostics.json``: the training loss per logging interval (30
steps), the dev loss and main metric per evaluation, the best (restored) step, the trainable parameter count,
each gate's mean over layers at step 0, at the best step and at the last evaluation (gated specs), and the
prefix attention mass at the best step. The JSON is committed; ``--table`` (run by ``bench/reports/update_results.py``)
renders it. Run folders are not committed (a grid run's folder is ~10–40 MB), so runs whose folders were lost
are missing from the JSON; the table says how many runs each figure covers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "docs" / "results" / "grid-k100.json"
OUT = ROOT / "docs" / "results" / "grid-k100-dynamics.json"
SPECS = ["finetune", "bitfit", "adapter", "prefix", "lora", "unipelt_ap", "unipelt_apl", "unipelt_apl_nogate"]
TASKS = ["sst2", "cola", "mrpc", "rte", "stsb"]
GATED = ["unipelt_ap", "unipelt_apl"]
# gate key in diagnostics.json → column label
GATE_LABELS = {"ffn_adapter/ffn.output": "adapter", "kv/attention": "prefix",
               "qv/attention.query": "LoRA q", "qv/attention.value": "LoRA v"}


def _gate_means(record: dict | None) -> dict[str, float] | None:
    if not record or not record.get("gates"):
        return None
    return {k: round(statistics.mean(v.values()), 4) for k, v in record["gates"].items()}


def _probe_near_constant(p: dict | None) -> bool | None:
    """Whether one evaluation's predictions on the 64 dev probe examples (``diagnostics.json``) are those
    of a near-constant predictor, by the runtime's rule (`metrics.near_constant`): one class for ≥ 95 % of
    them (every grid task's labels have a majority below 90 %), or a regression's predictions' variance
    under 10 % of the labels'."""
    if not p:
        return None
    if "majority_share" in p:
        return p["majority_share"] >= 0.95
    if p.get("std") is not None and p.get("label_std"):
        return (p["std"] / p["label_std"]) ** 2 < 0.1
    return None


def collect_run(folder: Path, rec: dict) -> dict | None:
    """The dynamics of one recorded run from its folder, or None when the folder is not that run."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        log = json.loads((folder / "trainer_log.json").read_text())
        diag = json.loads((folder / "diagnostics.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    main = rec["main_metric"]
    if main not in metrics.get("test", {}) or abs(metrics["test"][main] - rec["test"][main]) > 1e-9:
        return None                     # another (or an unfinished) run in that folder
    by_step = {r["step"]: r for r in diag.get("records", [])}
    best = metrics["train"]["best_step"]
    evals = [r for r in diag.get("records", []) if r["step"] > 0]
    out = {"spec": rec["spec"], "task": rec["task"], "seed": rec["seed"], "main_metric": main,
           "trainable": metrics.get("trainable_parameters"), "steps": metrics["train"]["steps"], "best_step": best,
           "train_loss": [[e["step"], round(e["loss"], 4)] for e in log if "loss" in e and "eval_loss" not in e],
           "dev": [[h["step"], round(h["loss"], 4), round(h[main], 4)] for h in metrics["dev"]["history"]]}
    gates = {"step0": _gate_means(by_step.get(0)), "best": _gate_means(by_step.get(best)),
             "last": _gate_means(evals[-1] if evals else None)}
    if any(gates.values()):
        out["gates"] = gates
    probe = [[r["step"], nc] for r in evals if (nc := _probe_near_constant(r.get("predictions"))) is not None]
    if probe:
        out["probe_near_constant"] = probe
    mass = (by_step.get(best) or {}).get("prefix_mass")
    if mass:
        out["prefix_mass_best"] = round(statistics.mean(mass.values()), 4)
    return out


def collect(runs: Path, record: Path) -> dict:
    recs = json.loads(record.read_text())["runs"]
    got, missing = [], []
    for r in recs:
        d = collect_run(runs / r["spec"] / r["task"] / f"k{r['k']}" / f"s{r['seed']}", r)
        (got.append(d) if d else missing.append(f"{r['spec']}/{r['task']}/s{r['seed']}"))
    return {"source": f"run folders of {record.name} (peltc grid --out {runs})", "runs": got, "missing": missing}


def _probe_counts(rs: list[dict]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((near-constant, evaluations) at step 30, (near-constant, evaluations) later) over ``rs``."""
    first = [nc for r in rs for s, nc in r.get("probe_near_constant", []) if s == 30]
    later = [nc for r in rs for s, nc in r.get("probe_near_constant", []) if s > 30]
    return (sum(first), len(first)), (sum(later), len(later))


def _fmt(xs: list[float], digits: int = 2) -> str:
    return "—" if not xs else f"{statistics.mean(xs):.{digits}f}"


def table(data: dict) -> str:
    runs = data["runs"]
    by_spec = defaultdict(list)
    for r in runs:
        by_spec[r["spec"]].append(r)
    lines = [f"{len(runs)} of {len(runs) + len(data['missing'])} recorded runs (the others' folders were lost).\n",
             "| spec | trainable | runs | train loss at step 30 / 60 | dev loss at step 30 → best → last eval | "
             "best step (median) | near-constant on the dev probe: step 30 / later |",
             "|---|---:|---:|---|---|---:|---:|"]
    for spec in [s for s in SPECS if s in by_spec]:
        rs = by_spec[spec]

        def loss_at(step):
            return [l for r in rs for s, l in r["train_loss"] if s == step]
        first = [r["dev"][0][1] for r in rs if r["dev"]]
        best = [next(l for s, l, _ in r["dev"] if s == r["best_step"]) for r in rs
                if any(s == r["best_step"] for s, _, _ in r["dev"])]
        last = [r["dev"][-1][1] for r in rs if r["dev"]]
        first_nc, later_nc = _probe_counts(rs)
        lines.append(f"| {spec} | {max(r['trainable'] for r in rs):,} | {len(rs)} | {_fmt(loss_at(30))} / {_fmt(loss_at(60))} | "
                     f"{_fmt(first)} → {_fmt(best)} → {_fmt(last)} | {statistics.median(r['best_step'] for r in rs):.0f} | "
                     f"{first_nc[0]} of {first_nc[1]} / {later_nc[0]} of {later_nc[1]} |")
    (a, n), (b, m) = _probe_counts(runs)
    lines.append("\nMeans over tasks and seeds; training loss as the Trainer logs it (mean over the 30 steps "
                 "before), dev loss on the 500 dev examples. Near-constant on the dev probe: evaluations whose "
                 "predictions on the 64 probe examples of `diagnostics.json` are one class for ≥ 95 % of them, or "
                 f"(STS-B) vary less than 10 % of the labels' variance — over all runs, {a} of {n} first "
                 f"evaluations (step 30) and {b} of {m} later ones; hence the recipe restores no checkpoint before "
                 "`min_steps` (60).\n")
    gated = [r for r in runs if r["spec"] in GATED and r.get("gates", {}).get("best")]
    if gated:
        keys = [k for k in GATE_LABELS if any(k in r["gates"]["best"] for r in gated)]
        lines += ["Gates of the restored (best-dev) checkpoint, mean over layers, probe examples and seeds "
                  "(every gate starts at σ(≈0) ≈ 0.5):\n",
                  "| spec | task | runs | " + " | ".join(GATE_LABELS[k] for k in keys) + " |",
                  "|---|---|---:|" + "---:|" * len(keys)]
        for spec in GATED:
            for task in TASKS:
                rs = [r for r in gated if r["spec"] == spec and r["task"] == task]
                if rs:
                    cells = [_fmt([r["gates"]["best"][k] for r in rs if k in r["gates"]["best"]]) for k in keys]
                    lines.append(f"| {spec} | {task} | {len(rs)} | " + " | ".join(cells) + " |")
        spread = [max(v for v in r["gates"]["best"].values()) - min(v for v in r["gates"]["best"].values())
                  for r in gated]
        lines.append(f"\nWithin a run, the most and the least open gate differ by {_fmt(spread)} on average "
                     f"(max {max(spread):.2f}).\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, help="the grid's --out folder: collect into --json")
    p.add_argument("--record", type=Path, default=RECORD)
    p.add_argument("--json", type=Path, default=OUT)
    p.add_argument("--table", action="store_true", help="print the markdown from --json")
    a = p.parse_args(argv)
    if a.runs:
        data = collect(a.runs, a.record)
        a.json.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {a.json}: {len(data['runs'])} runs, {len(data['missing'])} without a folder", file=sys.stderr)
    if a.table or not a.runs:
        print(table(json.loads(a.json.read_text())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
