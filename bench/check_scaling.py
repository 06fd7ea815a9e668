"""`peltc check`'s front end against the number of instances on the same linears (issue 22, item 8).

    .venv/bin/python bench/check_scaling.py                          # 250 / 500 / 1000 / 2000 instances
    .venv/bin/python bench/check_scaling.py --sizes 1000,4000,16000 --model bert-base-uncased

Each spec holds N LoRA instances, every one on `layers[*].attention.{query, value}` (so every linear
gets N LoRAs; N × layers × 2 attachments). Timed: the whole front end as `peltc check` runs it in
process — parse, lower, every pass against the model config, the summary text — best of ``--repeat``
runs (after one untimed run at the smallest size). Printed: a table with seconds, microseconds per
attachment and the ratio to the previous size's time over the ratio of sizes (1 ≈ linear, 2 ≈
quadratic at doubling sizes). JSON in ``bench/results/check_scaling-<time>.json``. A measurement, not a
test (before the fix: 0.95 / 2.3 / 10.3 / 65.5 s at 250 / 500 / 1,000 / 2,000 on MiniLM).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def spec(n: int) -> str:
    return "".join(f"lora l{k} {{\n  at layers[*].attention.{{query, value}}\n  rank 8\n}}\n" for k in range(n))


def check_once(text: str, model: str) -> tuple[float, int]:
    from peltc.compiler.pipeline import build_ir
    from peltc.compiler.summary import summary
    t0 = time.perf_counter()
    r = build_ir(text, "scaling.pelt", model=model)
    summary(r.ir, "scaling.pelt")
    return time.perf_counter() - t0, len(r.ir.attachments())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="250,500,1000,2000", help="instance counts, comma-separated")
    p.add_argument("--model", default="minilm")
    p.add_argument("--repeat", type=int, default=1, help="runs per size (best kept)")
    a = p.parse_args(argv)
    sizes = [int(x) for x in a.sizes.split(",")]
    check_once(spec(min(sizes)), a.model)   # imports and caches, untimed
    rows = []
    print(f"{'instances':>9}  {'attachments':>11}  {'seconds':>8}  {'µs/attachment':>13}  {'growth':>6}")
    for n in sizes:
        text = spec(n)
        best, atts = min(check_once(text, a.model) for _ in range(a.repeat))
        growth = None
        if rows:
            growth = (best / rows[-1]["seconds"]) / (n / rows[-1]["instances"])
        rows.append({"instances": n, "attachments": atts, "seconds": best, "us_per_attachment": 1e6 * best / atts,
                     "growth": growth})
        print(f"{n:>9,}  {atts:>11,}  {best:>8.3f}  {1e6 * best / atts:>13.1f}  "
              f"{'' if growth is None else f'{growth:.2f}':>6}", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"check_scaling-{stamp}.json"
    out.write_text(json.dumps({"when": stamp, "machine": platform.platform(), "cpus": os.cpu_count(),
                               "loadavg": list(os.getloadavg()), "python": platform.python_version(),
                               "model": a.model, "repeat": a.repeat, "rows": rows}, indent=2) + "\n")
    print(f"growth: time ratio / size ratio to the previous row (1 = linear); wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
