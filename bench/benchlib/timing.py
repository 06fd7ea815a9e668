"""Interleaved timing: every round visits every configuration once (the start rotated each round, warm-up
visits first, no garbage collection inside a timed call); medians, and ratios paired per round."""

from __future__ import annotations

import gc
import statistics
import time
from typing import Callable

# rounds chosen automatically: as many as fit ``--budget`` seconds per phase, within these bounds
MIN_AUTO_ROUNDS, MAX_AUTO_ROUNDS = 3, 25
# ``--clock``: wall time, or this thread's CPU time — with one torch thread every op of a forward runs on the
# calling thread, and the time spent waiting for a core on a shared, loaded machine is not counted
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}


def interleave(items: dict[str, Callable[[], None]], warmup: int, rounds: int | None, budget_s: float,
               log: Callable[[str], None], phase: str, clock: str = "wall"
               ) -> tuple[dict[str, list[float]], list[dict[str, float]]]:
    """Round-robin timing. Returns per-item samples (seconds) and the per-round records.

    ``rounds=None``: as many rounds as fit ``budget_s`` (estimated from the last warmup round),
    between MIN_AUTO_ROUNDS and MAX_AUTO_ROUNDS. ``clock``: a key of `CLOCKS`."""
    keys = list(items)
    now = CLOCKS[clock]

    def visit(order: list[str]) -> dict[str, float]:
        rec = {}
        for k in order:                 # no garbage collection inside a timed call
            gc.disable()
            try:
                t0 = now()
                got = items[k]()
                # an item timed elsewhere (a worker process, --anchors) returns its own time
                rec[k] = got if isinstance(got, float) else now() - t0
            finally:
                gc.enable()
            gc.collect()                # cheap: the heap built so far is frozen
        return rec

    gc.collect()
    gc.freeze()                         # models, modules, imports: out of every later collection
    try:
        return _rounds(keys, visit, warmup, rounds, budget_s, log, phase)
    finally:
        gc.unfreeze()


def _rounds(keys: list[str], visit: Callable, warmup: int, rounds: int | None, budget_s: float,
            log: Callable[[str], None], phase: str) -> tuple[dict[str, list[float]], list[dict[str, float]]]:
    last: dict[str, float] = {}
    for w in range(warmup):
        last = visit(keys[w % len(keys):] + keys[:w % len(keys)])
        log(f"  {phase} warmup {w + 1}/{warmup}: " + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in last.items()) + " ms")
    if rounds is None:
        per_round = sum(last.values()) if last else 0.0
        rounds = MIN_AUTO_ROUNDS if per_round <= 0 else int(budget_s // per_round)
        rounds = max(MIN_AUTO_ROUNDS, min(MAX_AUTO_ROUNDS, rounds))
        log(f"  {phase}: {rounds} rounds (auto: ~{per_round:.1f} s per round, budget {budget_s:.0f} s)")
    samples: dict[str, list[float]] = {k: [] for k in keys}
    records = []
    for r in range(rounds):
        off = r % len(keys)
        rec = visit(keys[off:] + keys[:off])
        records.append(rec)
        for k, v in rec.items():
            samples[k].append(v)
        log(f"  {phase} round {r + 1}/{rounds}: " + ", ".join(f"{k} {v * 1e3:.0f}" for k, v in rec.items()) + " ms")
    return samples, records


def summary(xs: list[float]) -> dict:
    ms = sorted(x * 1e3 for x in xs)
    q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0]] * 3
    return {"median": round(statistics.median(ms), 2), "p25": round(q[0], 2), "p75": round(q[2], 2),
            "min": round(ms[0], 2), "n": len(ms), "samples": [round(x, 2) for x in ms]}


def paired_ratio(records: list[dict[str, float]], key: str, ref: str) -> dict:
    """``median``: the median of the per-round ratios (the headline number); ``best``: best time over
    best time (contention only ever slows a run down, so on a noisy machine this one is the steadier
    estimate of the intrinsic cost ratio); ``min``/``max``: the spread of the per-round ratios."""
    rs = sorted(r[key] / r[ref] for r in records if key in r and ref in r)
    best = min(r[key] for r in records if key in r) / min(r[ref] for r in records if ref in r)
    return {"median": round(statistics.median(rs), 3), "best": round(best, 3), "min": round(rs[0], 3),
            "max": round(rs[-1], 3), "n": len(rs)}


def normalised(records: list[dict[str, float]], a: str, ref_a: str, b: str, ref_b: str) -> dict | None:
    """Median over rounds of (a / its reference) / (b / its reference): the ratio with each environment's
    own base-model speed divided out."""
    rs = sorted((r[a] / r[ref_a]) / (r[b] / r[ref_b]) for r in records if all(k in r for k in (a, ref_a, b, ref_b)))
    if not rs:
        return None
    return {"median": round(statistics.median(rs), 3), "min": round(rs[0], 3), "max": round(rs[-1], 3), "n": len(rs)}
