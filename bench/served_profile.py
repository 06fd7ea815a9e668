"""torch.profiler table of a served spec (compiled + ``fold_prefix``) beside the plain base model.

    .venv/bin/python bench/served_profile.py                                   # UniPELT (APL), MiniLM shape
    .venv/bin/python bench/served_profile.py --spec specs/prefix.pelt --shape bert-base --forwards 3
    .venv/bin/python bench/served_profile.py --delta --repeats 3               # + ms per op and shape vs the base

Random init (``benchlib.shapes``, as ``bench/overhead.py``), batch 16 × seq 128 with examples 2–16 padded to 96 tokens,
eval mode, no grad; one untimed forward each, then ``--forwards`` under the profiler. Prints the top ops
by self CPU time for the base model, then for the served model (and, with ``--unfused``, the served model
with the serving fusions off, ``rewrite.serve_fused``): where a served spec's extra time goes.

``--delta``: the profiles are repeated ``--repeats`` times, interleaved (base, served, unfused, base, …),
and each (op, input shapes) row keeps its smallest self time over the repeats (contention only adds time);
then one table of what the served model adds per forward, op by op and shape by shape, against the base:
ms and % of the base's total, fused and unfused side by side, plus the op count per forward (each op
is a dispatch: what a small forward pays in fixed cost). Then the **accounting**: each model's forward timed
without the profiler (the process's CPU time, every thread's, ``--timed`` interleaved rounds of ``--forwards`` forwards; min and
median per forward), on the 16 × 128 batch and on a ``--small`` one (default 1 × 8, where compute is small
and what a forward pays per op and per Python call shows), beside the profile's op total and the Python
function calls per forward (``sys.setprofile``: deterministic, load-free). The profile's op self times carry
the profiler's own per-op cost, so the timed columns, not the op table, are the ratio; the op table says
where the compute goes, the small batch what the fixed cost per forward is. ``--json PATH`` keeps all of it.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # benchlib (bench is not a package)
from benchlib import ROOT  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spec", default=str(ROOT / "specs" / "unipelt_apl.pelt"))
    p.add_argument("--shape", default="minilm", choices=("minilm", "bert-base", "tiny"))
    p.add_argument("--forwards", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=14)
    p.add_argument("--unfused", action="store_true", help="also the served model with the serving fusions off")
    p.add_argument("--delta", action="store_true", help="the per-op, per-shape table of what the served model adds")
    p.add_argument("--repeats", type=int, default=3, help="--delta: interleaved profiles per model (min kept)")
    p.add_argument("--timed", type=int, default=5, help="--delta: interleaved timed rounds per model, no profiler")
    p.add_argument("--small", default="1x8", help="--delta: the small batch, BATCHxSEQ (fixed cost per forward)")
    p.add_argument("--json", default=None, help="--delta: also write the tables' data here")
    p.add_argument("--table", metavar="JSON", default=None, help="print the accounting tables of a --json file and exit")
    a = p.parse_args(argv)
    if a.delta and (a.timed < 1 or a.repeats < 1 or a.forwards < 1):
        p.error("--timed, --repeats and --forwards must be at least 1")
    if a.table:
        print(accounting_table(json.loads(Path(a.table).read_text(encoding="utf-8"))["models"]))
        return
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchlib.shapes import build_model
    from peltc.api import compile_model
    from peltc.compiler.torch.rewrite import fold_prefix, serve_fused
    torch.set_num_threads(a.threads)
    base = build_model(a.shape, "sdpa").eval()
    served = copy.deepcopy(base)
    compile_model(Path(a.spec).read_text(), served)
    fold_prefix(served)
    served.eval()
    models = {"base model": base, f"served {Path(a.spec).name}": served}
    if a.unfused or a.delta:
        unfused = copy.deepcopy(served)
        serve_fused(unfused, False)
        models[f"served {Path(a.spec).name}, fusions off"] = unfused
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, min(1000, base.config.vocab_size), (16, 128), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, 96:] = 0

    def run(model, n: int, ids=ids, mask=mask) -> None:
        with torch.no_grad():
            for _ in range(n):
                model(input_ids=ids, attention_mask=mask)

    for m in models.values():
        run(m, 1)
    if not a.delta:
        for name, model in models.items():
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run(model, a.forwards)
            print(f"{name} ({a.shape}, {a.forwards} forwards, {a.threads} thread(s))")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))
        return
    best: dict[str, dict] = {name: {} for name in models}
    counts: dict[str, collections.Counter] = {}
    for _ in range(a.repeats):
        for name, model in models.items():
            with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                run(model, a.forwards)
            ms, n = collections.Counter(), collections.Counter()
            for e in prof.key_averages(group_by_input_shape=True):
                k = (e.key, str(e.input_shapes))
                ms[k] += e.self_cpu_time_total / a.forwards / 1e3
                n[k] += e.count // a.forwards
            for k, v in ms.items():
                best[name][k] = min(v, best[name].get(k, v))
            counts[name] = n
    print(delta_table(a, best, counts))
    sb, ss = (int(v) for v in a.small.lower().split("x"))
    small = (ids[:sb, :ss].contiguous(), torch.ones(sb, ss, dtype=mask.dtype))
    timed = {name: [] for name in models}
    timed_small = {name: [] for name in models}
    for _ in range(a.timed):
        for name, model in models.items():
            t0 = time.process_time()
            run(model, a.forwards)
            timed[name].append((time.process_time() - t0) / a.forwards * 1e3)
            t0 = time.process_time()
            run(model, 20, *small)
            timed_small[name].append((time.process_time() - t0) / 20 * 1e3)
    calls = {name: python_calls(lambda m=model: run(m, 1)) for name, model in models.items()}
    acc = accounting(best, counts, timed, timed_small, calls)
    print()
    print(accounting_table(acc))
    if a.json:
        from benchlib.machine import git_state, machine_info
        info = machine_info(a.threads)
        info["loadavg_end"] = list(os.getloadavg())
        rows = [{"op": k[0], "shapes": k[1], **{n: {"ms": best[n].get(k, 0.0), "count": counts[n].get(k, 0)}
                                               for n in best}} for k in sorted(set().union(*best.values()))]
        result = {"command": " ".join(["bench/served_profile.py", *(argv if argv is not None else sys.argv[1:])]),
                  "spec": Path(a.spec).name, "shape": a.shape, "batch": list(ids.shape), "small": [sb, ss],
                  "forwards": a.forwards, "repeats": a.repeats,
                  "timed_rounds": a.timed, "threads": a.threads, "models": acc, "ops": rows,
                  "machine": info, "git": git_state()}
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        print(f"\nwrote {a.json}")


def delta_table(a, best: dict[str, dict], counts: dict[str, collections.Counter]) -> str:
    names = list(best)
    base, fused, unfused = names[0], names[1], names[2]
    total = {n: sum(best[n].values()) for n in names}
    ops = {n: sum(counts[n].values()) for n in names}
    lines = [f"{a.shape}, {a.forwards} forwards × {a.repeats} interleaved repeats, {a.threads} thread(s); per forward, "
             "self CPU ms, each (op, shapes) row's minimum over the repeats", ""]
    for n in names:
        lines.append(f"{n:45s} {total[n]:8.2f} ms  ({total[n] / total[base]:.4f}× base)  {ops[n]:5d} ops")
    lines += ["", f"{'op':44s} {'input shapes':74s} {'n base':>6s} {'n srv':>6s} {'+ms fused':>9s} {'% base':>7s} "
              f"{'+ms off':>8s} {'% base':>7s}"]
    keys = set().union(*(best[n] for n in names))
    d = {k: (best[fused].get(k, 0.0) - best[base].get(k, 0.0), best[unfused].get(k, 0.0) - best[base].get(k, 0.0))
         for k in keys}
    for k in sorted(keys, key=lambda k: -max(abs(d[k][0]), abs(d[k][1]))):
        if max(abs(d[k][0]), abs(d[k][1])) < 0.02 * total[base] / 100:
            continue
        lines.append(f"{k[0][:44]:44s} {k[1][:74]:74s} {counts[base].get(k, 0):6d} {counts[fused].get(k, 0):6d} "
                     f"{d[k][0]:+9.2f} {100 * d[k][0] / total[base]:+7.2f} {d[k][1]:+8.2f} {100 * d[k][1] / total[base]:+7.2f}")
    return "\n".join(lines)


def python_calls(forward) -> int:
    """Python function calls (``sys.setprofile`` "call" events: Python frames, not C functions) one ``forward()`` makes."""
    n = 0

    def count(frame, event, arg):
        nonlocal n
        n += event == "call"
    sys.setprofile(count)
    try:
        forward()
    finally:
        sys.setprofile(None)
    return n


def accounting(best: dict[str, dict], counts: dict[str, collections.Counter], timed: dict[str, list[float]],
               timed_small: dict[str, list[float]], calls: dict[str, int]) -> dict[str, dict]:
    """Per model: forward ms timed without the profiler (min, median, the samples) on the batch and the small
    batch, its ops' self ms under the profiler (the per-row minima, summed), ATen ops and Python calls per forward."""
    return {n: {"timed_ms_min": min(timed[n]), "timed_ms_median": statistics.median(timed[n]), "timed_ms": timed[n],
                "small_ms_min": min(timed_small[n]), "small_ms_median": statistics.median(timed_small[n]),
                "small_ms": timed_small[n], "profiled_ops_ms": sum(best[n].values()),
                "aten_ops": sum(counts[n].values()), "python_calls": calls[n]} for n in best}


def accounting_table(acc: dict[str, dict]) -> str:
    """Each model against the base per forward: timed (min and median over rounds) on the batch, the profile's
    op total, and the small batch's extra ms (the fixed cost) as a share of the base's big forward."""
    names = list(acc)
    b = acc[names[0]]
    lines = ["| model | forward ms min / median | × base min / median | profiled ops ms (× base) | "
             "small batch ms min | + small ms (% of base forward) | ATen ops | Python calls |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for n in names:
        r = acc[n]
        d_small = r["small_ms_min"] - b["small_ms_min"]
        lines.append(f"| {n} | {r['timed_ms_min']:.2f} / {r['timed_ms_median']:.2f} | "
                     f"{r['timed_ms_min'] / b['timed_ms_min']:.4f} / {r['timed_ms_median'] / b['timed_ms_median']:.4f} | "
                     f"{r['profiled_ops_ms']:.2f} ({r['profiled_ops_ms'] / b['profiled_ops_ms']:.4f}) | "
                     f"{r['small_ms_min']:.3f} | {d_small:+.3f} ({100 * d_small / b['timed_ms_min']:+.2f}) | "
                     f"{r['aten_ops']} | {r['python_calls']} |")
    lines += ["", "| model / base | min / min | 10th pct / 10th | 25th / 25th | median / median | paired median |",
              "|---|---:|---:|---:|---:|---:|"]
    for n in names[1:]:
        est = ratio_estimators(acc[n]["timed_ms"], b["timed_ms"])
        lines.append(f"| {n} | " + " | ".join(f"{est[k]:.3f}" for k in ("min", "p10", "p25", "median", "paired")) + " |")
    return "\n".join(lines)


def ratio_estimators(xs: list[float], base: list[float]) -> dict[str, float]:
    """A model's timed forwards against the base's (interleaved rounds): the ratio of their minima, 10th and 25th
    percentiles (nearest rank below) and medians, and the median of the per-round ratios."""
    a, b = sorted(xs), sorted(base)
    at = lambda v, q: v[int(q * (len(v) - 1))]            # noqa: E731
    return {"min": a[0] / b[0], "p10": at(a, 0.1) / at(b, 0.1), "p25": at(a, 0.25) / at(b, 0.25),
            "median": statistics.median(a) / statistics.median(b),
            "paired": statistics.median(x / y for x, y in zip(xs, base))}


if __name__ == "__main__":
    main()
