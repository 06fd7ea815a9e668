"""Several runs on one base (`peltc.load_runs`): one mixed batch vs a separate pass per run.

    .venv/bin/python bench/multirun.py                 # MiniLM shape, batch 32 × seq 64, N = 1, 4, 16
    .venv/bin/python bench/multirun.py --quick         # a smoke run on a tiny BERT (seconds)

A random-init MiniLM-shaped BERT (hidden 384, 6 layers, 12 heads, intermediate 1536, sdpa). N runs of
mixed methods — LoRA, adapter, UniPELT (APL), BitFit, prefix-tuning (the specs in ``specs/``), in turn —
each with its own head (2, 3, 4 … labels), their PELT tensors and heads randomised, saved as artifacts.
One batch of ``--batch`` examples (lengths drawn in [seq/2, seq], the first full length), example b
belonging to run ``perm[b] mod N``. Two ways to label it (eval, ``torch.no_grad()``, ``--threads``):

- **mixed**: all N runs on one base model (`peltc.load_runs`), the whole batch in one forward;
- **separate**: each run on its own model (`peltc.load_adapter` on a copy of the base), its examples
  in one forward of their own (padding cut to their longest example).

Rounds are interleaved (every round times each N's mixed and separate pass, the order rotated), after
``--warmup`` untimed rounds. Reported per N: examples per second (median over rounds) and the ratio
mixed / separate (median of the per-round ratios: > 1 means the mixed batch is faster), and the largest
difference between the two ways' logits. A table on stdout; JSON in ``bench/results/multirun-<time>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
RESULTS = ROOT / "bench" / "results"
METHODS = ["lora", "adapter", "unipelt_apl", "bitfit", "prefix"]
TINY_SPECS = {   # the same methods at the tiny shape's sizes (hidden 64)
    "lora": "lora qv {\n  at layers[*].attention.{query, value}\n  rank 8\n  alpha 16\n}\n",
    "adapter": "adapter ffn_adapter {\n  at layers[*].ffn.output\n  size 16\n}\n",
    "unipelt_apl": ("adapter ffn_adapter {\n  at layers[*].ffn.output\n  size 16\n  gate sigmoid(ffn.output)\n}\n"
                    "prefix kv {\n  at layers[*].attention\n  length 10\n  mlp 32\n  gate sigmoid(layer.input)\n}\n"
                    "lora qv {\n  at layers[*].attention.{query, value}\n  rank 8\n  gate sigmoid(layer.input)\n}\n"),
    "bitfit": "bitfit biases {\n  at all\n}\n",
    "prefix": "prefix kv {\n  at layers[*].attention\n  length 10\n  mlp 32\n}\n",
}


def shape_config(name: str):
    from transformers import BertConfig
    if name == "minilm":
        cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536)
    else:
        cfg = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=128)
    cfg._attn_implementation = "sdpa"
    return cfg


def _base(template, num_labels: int):
    import torch
    from torch import nn
    m = copy.deepcopy(template)
    if num_labels != m.config.num_labels:
        m.classifier = nn.Linear(m.config.hidden_size, num_labels)
        m.config.num_labels = num_labels
    with torch.no_grad():
        m.classifier.weight.normal_(0, 0.2)
    return m.eval()


def make_artifacts(template, shape: str, n: int, out: Path) -> list[tuple[Path, str, int]]:
    """n artifacts of the methods in turn (labels 2, 3, 4, 2, 3 …), PELT tensors randomised."""
    import torch

    import peltc
    from peltc.api import save_adapter
    arts = []
    for i in range(n):
        method, labels = METHODS[i % len(METHODS)], 2 + i % 3
        model = _base(template, labels)
        spec = TINY_SPECS[method] if shape == "tiny" else str(SPECS / f"{method}.pelt")
        peltc.compile_model(spec, model)
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "pelt_" in name:
                    p.add_(torch.randn(p.shape, generator=g) * 0.05)
        d = out / f"run{i:02d}-{method}"
        save_adapter(model, d)
        arts.append((d, method, labels))
    return arts


def make_batch(vocab: int, batch: int, seq: int, seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (batch, seq), generator=g)
    lengths = torch.randint(seq // 2, seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _sub(batch, rows):
    idx = rows
    longest = int(batch["attention_mask"][idx].sum(1).max())
    return {k: v[idx, :longest] for k, v in batch.items()}


def main(argv: list[str] | None = None) -> int | dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=("minilm", "tiny"), default="minilm")
    ap.add_argument("--runs", default="1,4,16", help="comma list of N (default %(default)s)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny BERT, batch 8 × seq 16, N = 1, 2, 4, 2 rounds")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args(argv)
    if a.quick:
        a.shape, a.runs, a.batch, a.seq, a.rounds, a.warmup = "tiny", "1,2,4", 8, 16, 2, 1

    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    import peltc
    from peltc.api import load_adapter

    threads = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()
    try:
        ns = [int(x) for x in a.runs.split(",")]
        torch.manual_seed(0)
        template = AutoModelForSequenceClassification.from_config(shape_config(a.shape)).eval()
        batch = make_batch(template.config.vocab_size, a.batch, a.seq)
        perm = torch.randperm(a.batch, generator=torch.Generator().manual_seed(1)).tolist()
        with tempfile.TemporaryDirectory(prefix="peltc-multirun-") as tmp:
            t0 = time.time()
            arts = make_artifacts(template, a.shape, max(ns), Path(tmp))
            alone = []
            for d, _, labels in arts:
                m = _base(template, labels)
                load_adapter(m, d)
                alone.append(m.eval())
            setups = {}
            for n in ns:
                routed = peltc.load_runs([d for d, _, _ in arts[:n]], _base(template, 2))
                route = [perm[b] % n for b in range(a.batch)]
                rows = {r: [b for b in range(a.batch) if route[b] == r] for r in range(n)}
                setups[n] = (routed, route, rows)
            build_s = time.time() - t0

            def mixed(n):
                routed, route, _ = setups[n]
                with torch.no_grad():
                    return routed(route, **batch).logits

            def separate(n):
                _, _, rows = setups[n]
                with torch.no_grad():
                    return {r: alone[r](**_sub(batch, idx)).logits for r, idx in rows.items() if idx}

            diffs = {}
            for n in ns:                                   # the two ways agree (and warm up)
                out, sep = mixed(n), separate(n)
                routed, route, rows = setups[n]
                diffs[n] = max(float((out[idx, :routed.num_labels[r]] - sep[r]).abs().max())
                               for r, idx in rows.items() if idx)
            times = {n: {"mixed": [], "separate": []} for n in ns}
            ratios = {n: [] for n in ns}
            jobs = [(n, way) for n in ns for way in ("mixed", "separate")]
            for rnd in range(a.warmup + a.rounds):
                order = jobs[rnd % len(jobs):] + jobs[:rnd % len(jobs)]
                got = {}
                for n, way in order:
                    t = time.perf_counter()
                    (mixed if way == "mixed" else separate)(n)
                    got[(n, way)] = time.perf_counter() - t
                if rnd < a.warmup:
                    continue
                for n in ns:
                    times[n]["mixed"].append(got[(n, "mixed")])
                    times[n]["separate"].append(got[(n, "separate")])
                    ratios[n].append(got[(n, "separate")] / got[(n, "mixed")])
        results = {}
        for n in ns:
            mt, st = statistics.median(times[n]["mixed"]), statistics.median(times[n]["separate"])
            results[str(n)] = {
                "methods": [m for _, m, _ in arts[:n]],
                "mixed_ms": [round(x * 1e3, 2) for x in times[n]["mixed"]],
                "separate_ms": [round(x * 1e3, 2) for x in times[n]["separate"]],
                "mixed_examples_per_s": round(a.batch / mt, 2),
                "separate_examples_per_s": round(a.batch / st, 2),
                "speedup_mixed_vs_separate": round(statistics.median(ratios[n]), 3),
                "max_abs_logit_diff": diffs[n],
            }
        data = {
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"cpu_count": os.cpu_count(), "threads": a.threads, "torch": torch.__version__,
                        "transformers": transformers.__version__, "python": platform.python_version(),
                        "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None},
            "args": {"shape": a.shape, "batch": a.batch, "seq": a.seq, "rounds": a.rounds, "warmup": a.warmup,
                     "runs": ns, "quick": a.quick},
            "build_seconds": round(build_s, 1),
            "results": results,
        }
        lines = [f"{a.shape} (random init), batch {a.batch} × seq {a.seq}, {a.threads} thread(s), "
                 f"{a.rounds} interleaved rounds",
                 "", "| N runs | methods | mixed batch (ex/s) | N separate passes (ex/s) | mixed / separate | max |Δ logit| |",
                 "|---:|---|---:|---:|---:|---:|"]
        for n in ns:
            r = results[str(n)]
            kinds = sorted(set(r["methods"]), key=METHODS.index)
            lines.append(f"| {n} | {', '.join(kinds)} | {r['mixed_examples_per_s']:.1f} | "
                         f"{r['separate_examples_per_s']:.1f} | {r['speedup_mixed_vs_separate']:.2f}× | "
                         f"{r['max_abs_logit_diff']:.1e} |")
        print("\n".join(lines))
        a.out.mkdir(parents=True, exist_ok=True)
        path = a.out / f"multirun-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
        data["table"] = lines
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        print(f"wrote {path}")
        data["path"] = str(path)
        return data
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
