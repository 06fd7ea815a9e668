"""torch.profiler table of a served spec (compiled + ``fold_prefix``) beside the plain base model.

    .venv/bin/python bench/served_profile.py                                   # UniPELT (APL), MiniLM shape
    .venv/bin/python bench/served_profile.py --spec specs/prefix.pelt --shape bert-base --forwards 3

Random init (``benchlib.shapes``, as ``bench/overhead.py``), batch 16 × seq 128 with examples 2–16 padded to 96 tokens,
eval mode, no grad; one untimed forward each, then ``--forwards`` under the profiler. Prints the top ops
by self CPU time for the base model, then for the served model: where a served spec's extra time goes
(issue 11: UniPELT served vs the base model).
"""

from __future__ import annotations

import argparse
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
    a = p.parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    from benchlib.shapes import build_model
    from peltc.api import compile_model
    from peltc.compiler.torch.rewrite import fold_prefix
    torch.set_num_threads(a.threads)
    base = build_model(a.shape, "sdpa").eval()
    served = copy.deepcopy(base)
    compile_model(Path(a.spec).read_text(), served)
    fold_prefix(served)
    served.eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (16, 128), generator=g)
    mask = torch.ones_like(ids)
    mask[1:, 96:] = 0

    def run(model, n: int) -> None:
        with torch.no_grad():
            for _ in range(n):
                model(input_ids=ids, attention_mask=mask)

    run(base, 1)
    run(served, 1)
    for name, model in (("base model", base), (f"served {Path(a.spec).name}", served)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(model, a.forwards)
        print(f"{name} ({a.shape}, {a.forwards} forwards, {a.threads} thread(s))")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.rows))


if __name__ == "__main__":
    main()
