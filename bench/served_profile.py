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
is a dispatch: what a small forward pays in fixed cost).
"""

from __future__ import annotations

import argparse
import collections
import copy
import sys
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
    a = p.parse_args(argv)
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
    ids = torch.randint(5, 1000, (16, 128), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, 96:] = 0

    def run(model, n: int) -> None:
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


if __name__ == "__main__":
    main()
