"""Cost of CPU sdpa (torch's flash-attention kernel for float CPU tensors) against the number of keys.

    .venv/bin/python bench/sdpa_keys.py                  # MiniLM and bert-base attention shapes, 1 thread
    .venv/bin/python bench/sdpa_keys.py --keys 128,138,144 --rounds 5

Why: a prefix of length L makes every attention read L + seq keys; with the benchmarks' 10 + 128 = 138
keys, attention cost far more than its 8 % more keys. This times ``F.scaled_dot_product_attention`` on
batch 16 × 128 queries with a boolean padding mask (as a padded encoder batch has) for each key count,
interleaved round-robin (the start rotated each round), and reports the median time and its ratio to
128 keys in the same round. It is the evidence for ``KEY_MULTIPLE`` in ``compiler/torch/prefix.py``
(never-attended zero keys after a prefix, up to a multiple of 16, when serving).

Results: a markdown table on stdout; JSON in ``bench/results/sdpa-keys-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
SHAPES = {"minilm": (12, 32), "bert-base": (12, 64)}      # heads, head dim


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="minilm,bert-base")
    p.add_argument("--keys", default="128,130,132,136,138,140,144,148,152,154,160")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--queries", type=int, default=128)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--reps", type=int, default=3, help="calls per timed visit")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    keys = [int(k) for k in a.keys.split(",")]
    ref = keys[0]
    result = {"benchmark": "CPU sdpa time vs number of keys", "args": vars(a) | {"out": str(a.out)},
              "torch": torch.__version__, "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "shapes": {}}
    for shape in a.shapes.split(","):
        heads, hd = SHAPES[shape]
        g = torch.Generator().manual_seed(0)
        q = torch.randn(a.batch, heads, a.queries, hd, generator=g)
        inputs = {}
        for k in keys:
            m = torch.ones(a.batch, 1, a.queries, k, dtype=torch.bool)
            for i in range(1, a.batch):                      # padded examples: the last i*4 keys masked
                m[i, ..., k - 4 * i:] = False
            inputs[k] = (torch.randn(a.batch, heads, k, hd, generator=g), torch.randn(a.batch, heads, k, hd, generator=g), m)
        rounds = []
        with torch.no_grad():
            for r in range(a.rounds + 1):
                order = keys[r % len(keys):] + keys[:r % len(keys)]
                rec = {}
                for k in order:
                    kk, vv, m = inputs[k]
                    t = time.perf_counter()
                    for _ in range(a.reps):
                        F.scaled_dot_product_attention(q, kk, vv, attn_mask=m)
                    rec[k] = (time.perf_counter() - t) / a.reps * 1000
                if r:                                        # round 0: warm-up
                    rounds.append(rec)
        rows = {}
        for k in keys:
            ms = [rec[k] for rec in rounds]
            ratios = [rec[k] / rec[ref] for rec in rounds]
            rows[k] = {"median_ms": round(statistics.median(ms), 3), "min_ms": round(min(ms), 3),
                       "ratio_to_ref": round(statistics.median(ratios), 3)}
        result["shapes"][shape] = {"heads": heads, "head_dim": hd, "rows": rows, "samples": rounds}
        print(f"**{shape}** (batch {a.batch} × {a.queries} queries, {heads} heads × {hd}, {a.threads} thread(s), "
              f"{a.rounds} rounds)\n\n| keys | median ms | min ms | × {ref} keys |\n|---:|---:|---:|---:|")
        for k, row in rows.items():
            print(f"| {k} | {row['median_ms']:.2f} | {row['min_ms']:.2f} | {row['ratio_to_ref']:.2f} |")
        print(flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"sdpa-keys-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    result["path"] = str(path)
    return result


if __name__ == "__main__":
    main()
