"""Memory: this process's peak RSS and RSS, and the peak RSS of fresh ``--rss-child`` processes."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from benchlib import ROOT


def maxrss_mb() -> float:
    """This process's peak RSS. On Linux VmHWM (the peak of this process's own address space):
    ``ru_maxrss`` would be wrong in a child, since Linux carries the parent's peak across fork + exec."""
    try:
        with open("/proc/self/status") as f:
            return int(next(l.split()[1] for l in f if l.startswith("VmHWM:"))) / 1024
    except (OSError, StopIteration, ValueError):
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def rss_mb() -> float:
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except ImportError:                                              # Linux without psutil
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_rss_child(cmd: list[str], repeats: int = 1) -> dict:
    """Run an ``--rss-child`` process ``repeats`` times; each prints its JSON result as its last stdout line
    (or an error). With several runs every number is the median over them (the allocator's arenas make one
    process's peak vary by tens of MB from run to run), and ``peak_rss_samples_mb`` keeps each run's peak."""
    t0 = time.perf_counter()
    runs = []
    for _ in range(repeats):
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=str(ROOT))
        if res.returncode != 0:
            return {"error": (res.stderr or res.stdout)[-2000:], "mode": "subprocess"}
        runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    out = {k: (round(statistics.median(r[k] for r in runs), 1) if isinstance(v, (int, float)) else v)
           for k, v in runs[0].items()}
    out["mode"] = "subprocess"
    out["repeats"] = repeats
    out["peak_rss_samples_mb"] = [r["peak_rss_mb"] for r in runs]
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out
