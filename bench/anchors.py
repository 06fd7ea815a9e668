"""The anchors' processes of ``bench/overhead.py --anchors`` (bench/README.md), run with an environment's Python:

    PY bench/anchors.py --worker                 # one worker (benchlib.workers): build, time on request
    PY bench/anchors.py --rss-child JSON         # one configuration's peak RSS in a fresh process
    PY bench/anchors.py --profile ID --shape S --threads 1 --steps N [--memory]   # torch.profiler table

The anchors themselves (``system@env:method`` configurations: peltc, the references, BitFit in place, peft,
AdapterHub) are built in ``benchlib/anchor_systems.py``; this script imports neither peltc nor a library at
module level (the anchor environment has no peltc).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # benchlib (bench is not a package)
from benchlib.anchor_systems import apply, parse_id, versions  # noqa: E402
from benchlib.methods import train_step_fn  # noqa: E402
from benchlib.shapes import build_model, make_batch  # noqa: E402
from benchlib.workers import rss_child, worker_main  # noqa: E402


# --- a profile of one configuration's train step ------------------------------------------------------------

def profile(argv: list[str]) -> str:
    """``anchors.py --profile ID --shape S [--batch B --seq L --threads T --steps N --rows R]``: torch.profiler
    over N train steps (after 2 untimed) of one configuration, run with that configuration's environment's
    Python; the top ops by self CPU time."""
    import argparse
    import torch
    from torch.profiler import ProfilerActivity, profile as prof
    ap = argparse.ArgumentParser(prog="anchors.py --profile")
    ap.add_argument("id")
    ap.add_argument("--shape", default="minilm")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--memory", action="store_true", help="also record allocations: sort by self CPU memory")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    system, _, method = parse_id(a.id)
    model = build_model(a.shape, a.attn)
    batch = make_batch(model.config, a.batch, a.seq)
    if not (system == "ref" and method == "base"):
        model, _ = apply(system, method, model)
    step = train_step_fn(model, batch)
    step()
    step()
    t0 = time.perf_counter()
    with prof(activities=[ProfilerActivity.CPU], profile_memory=a.memory) as p:
        for _ in range(a.steps):
            step()
    wall = (time.perf_counter() - t0) / a.steps
    v = versions()
    head = (f"{a.id} on {a.shape} (batch {a.batch} x seq {a.seq}, {a.threads} threads, transformers "
            f"{v['transformers']}): {a.steps} train steps under the profiler, {wall * 1e3:.0f} ms/step "
            f"(profiler on); top ops by self CPU {'memory' if a.memory else 'time'}")
    sort = "self_cpu_memory_usage" if a.memory else "self_cpu_time_total"
    out = head + "\n" + p.key_averages().table(sort_by=sort, row_limit=a.rows)
    if a.memory:
        out += (f"\npeak live tensor memory over the {a.steps} profiled step(s), above their start, at op boundaries: "
                f"{peak_live_mb(p.events()):.1f} MB\n")
    return out


def peak_live_mb(events) -> float:
    """The most tensor memory allocated and not yet freed at any op boundary of the profiled steps, counted
    from the first step's start: every profiler event's own allocations minus frees, in time order. A lower
    bound (a workspace an op allocates and frees inside itself is not seen), but the same bound for two
    configurations running the same ops; unlike a process's peak RSS it does not depend on how malloc keeps
    freed memory (arenas, fragmentation)."""
    cur = peak = 0
    for e in sorted((e for e in events if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2 ** 20


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--profile":
        print(profile(sys.argv[2:]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        worker_main()
    elif len(sys.argv) >= 3 and sys.argv[1] == "--rss-child":
        print(json.dumps(rss_child(json.loads(sys.argv[2]))))
    else:
        raise SystemExit("bench/anchors.py is run by bench/overhead.py --anchors (see bench/README.md)")
