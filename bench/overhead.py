"""Train-step and inference overhead of PELT methods compiled by peltc — the paper's Table 4, measured here.

    .venv/bin/python bench/overhead.py                          # bert-base and MiniLM shapes, defaults
    .venv/bin/python bench/overhead.py --shapes minilm --quick  # a smoke run (bench/README.md: more)

For each shape (random init, sequence classification, 2 labels, sdpa attention) and each method
(full fine-tuning, BitFit, prefix, LoRA, adapter, UniPELT AP / APL — the specs in ``specs/``, each
compiled by `peltc.api.compile_model` on a fresh copy of one randomly initialised model) this measures

- the train step: ``zero_grad`` + forward (with labels) + backward + AdamW over the trainable
  parameters, model in train mode (dropout on);
- inference: eval mode, ``torch.no_grad()``, forward to logits — of what is *served*: the compiled
  model after `fold_prefix` (a no-op without prefixes); also unfolded (prefix MLP still running) for
  the prefix methods, with ``--merged`` after `merge` where it applies (BitFit, ungated LoRA), and with
  ``--unfused`` served with the serving fusions off (``compiler/torch/served.py``: the before / after);
- the base model (plain, uncompiled) for inference; full fine-tuning for training.

Measurements are interleaved: every round visits every configuration once (the start rotated each
round), after ``--warmup`` untimed visits each, so machine noise hits all configurations alike. Times
are medians over rounds; ratios are medians of the per-round ratios (configuration / reference
measured in the same round), with best time / best time alongside. The batch is fixed (seeded) with padding: example lengths drawn in
[seq/2, seq], the first example full length.

Peak RSS (``--rss subprocess``, default): each configuration again in a fresh Python process that
builds the model, compiles it and runs two train steps (the base model: one inference); reported
is that process's peak RSS (``VmHWM``; ``ru_maxrss`` off Linux) — an honest per-configuration peak,
everything included (Python, torch, the model, activations, gradients, AdamW state). ``--rss delta`` reports instead the growth
of this process's RSS while a configuration is built and warmed up (cheap; frozen base weights are
shared between in-process configurations, so it is *not* a peak). ``--rss none`` skips it.

Decoder shapes (``smollm2``: SmolLM2-135M's config from the ``smollm2-135m`` known name, random init,
no weights; ``tiny-llama`` for the smoke test): train and batch inference on ``LlamaForSequenceClassification``
(default batch 8 × seq 64), plus Prefix + LoRA (``specs/prefix.pelt`` + ``specs/lora.pelt``) among the
methods; BitFit, refused on Llama (E128, no biases), is reported as "n/a (no biases)". A third phase,
``generate``: greedy ``generate()`` on ``LlamaForCausalLM`` (same seed) of ``--gen-tokens`` new tokens from
``--gen-batch`` prompts of ``--gen-prompt`` tokens, with and without the KV cache, the base model and each
method as served, interleaved; per method ms per generated token, ratio to the base model in the same cache
mode, overhead ms per token, and the decode step alone (a timestamping streamer).

Anchors (``--anchors torch,peft,adapters`` / ``--anchor-python PY``; encoder shapes): peltc beside the
reference implementations of each method — BitFit trained in place, peft 0.21 (LoRA, prefix), AdapterHub
``adapters`` 1.3 (LoRA, adapter, prefix, UniPELT, MAM) — built in ``bench/benchlib/anchor_systems.py``. AdapterHub pins
transformers 4.57, so the anchors run in a second environment: one worker process per environment holds its
configurations and this process sends "time X once" round-robin, so they interleave like in-process ones.
Per configuration: ratios to its own environment's full fine-tuning / base model; per method: peltc / the
fastest anchor (train, served inference), normalised by the references, and peak RSS. JSON in
``bench/results/overhead-anchors-<timestamp>.json``. bench/README.md says how to make the second venv.

Results: a markdown table per shape on stdout (decoders: a generation table too); JSON in
``bench/results/overhead-<timestamp>.json``.

This script is the command line; the phases are in ``benchlib`` (``table4``: a shape's run; ``vs_anchors``:
the anchors run and ``--combine``; ``tables``: the markdown; shapes, methods, timing, RSS: the shared modules).
"""


from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))   # benchlib (bench is not a package)
from benchlib import RESULTS  # noqa: E402
from benchlib.machine import git_state, machine_info, write_result  # noqa: E402
from benchlib.methods import METHODS, SPEC_FILES  # noqa: E402
from benchlib.shapes import SHAPES, is_decoder  # noqa: E402
from benchlib.table4 import PHASES, SHAPE_PHASES, STARTUP_CHECK, measure_startup, rss_child, run_shape  # noqa: E402
from benchlib.tables import anchors_table, served_table, startup_line, table  # noqa: E402
from benchlib.timing import MAX_AUTO_ROUNDS, MIN_AUTO_ROUNDS  # noqa: E402
from benchlib.vs_anchors import combine_anchor_results, run_anchors  # noqa: E402


# --- CLI ------------------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", default="bert-base,minilm", help="comma list of: " + ", ".join(SHAPES))
    p.add_argument("--methods", default=None,
                   help="comma list of: " + ", ".join(k for k, _, _ in METHODS) + " (default: all but prefix_lora "
                        "on encoders, all on decoders)")
    p.add_argument("--batch", type=int, default=None, help="train / inference batch (default 16; decoders 8)")
    p.add_argument("--seq", type=int, default=None, help="train / inference sequence length (default 128; decoders 64)")
    p.add_argument("--gen-batch", type=int, default=4, help="decoders: prompts generated at once")
    p.add_argument("--gen-prompt", type=int, default=16, help="decoders: prompt length (tokens, no padding)")
    p.add_argument("--gen-tokens", type=int, default=32, help="decoders: new tokens per prompt (greedy)")
    p.add_argument("--rounds", type=int, default=None,
                   help=f"timed rounds per phase (default: auto, as many as fit --budget, "
                        f"{MIN_AUTO_ROUNDS}..{MAX_AUTO_ROUNDS})")
    p.add_argument("--budget", type=float, default=240.0,
                   help="seconds of timed rounds per shape (train + inference) when --rounds is auto")
    p.add_argument("--phases", default="train,inference,generate,startup", type=lambda v: [x for x in v.split(",") if x],
                   help="comma list of: train, inference, generate, startup (default all; generate: decoder shapes "
                        "only; startup: once per run, `peltc " + " ".join(STARTUP_CHECK) + "` in fresh processes)")
    p.add_argument("--startup-runs", type=int, default=15, help="startup phase: timed runs (after one untimed)")
    p.add_argument("--warmup", type=int, default=1, help="untimed visits of each configuration per phase")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--attn", default="sdpa", choices=("sdpa", "eager"))
    p.add_argument("--rss", default="subprocess", choices=("subprocess", "delta", "none"),
                   help="peak RSS per configuration in a fresh process, or this process's RSS delta")
    p.add_argument("--rss-repeats", type=int, default=3,
                   help="--rss subprocess: fresh processes per configuration; peak RSS is their median (default 3)")
    p.add_argument("--merged", action="store_true",
                   help="also time BitFit and LoRA after merge() (folded into the base weights)")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="train / inference timer: wall time (default), or this thread's CPU time (time.thread_time; "
                        "with --threads 1 a forward's ops all run on it, and waiting for a core on a loaded, shared "
                        "machine is not counted; other processes still share caches and memory bandwidth)")
    p.add_argument("--unfused", action="store_true",
                   help="also time every served model with the serving fusions off (compiler/torch/served.py; "
                        "rewrite.serve_fused(model, False)): before / after in one interleaved run")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, 1 warmup (decoders: generation "
                                                          "batch 2 × prompt 4 + 3 tokens)")
    p.add_argument("--anchors", default=None,
                   help="time the reference libraries beside peltc, method by method (bench/benchlib/anchor_systems.py): comma "
                        "list of torch (BitFit in place), peft, adapters (AdapterHub), each optionally @main or "
                        "@anchor to force its environment (default: torch,peft,adapters when --anchor-python is "
                        "given; otherwise none, the usual Table 4 run)")
    p.add_argument("--anchor-python", default=None,
                   help="the Python of the anchors' environment (AdapterHub adapters pins transformers 4.57; "
                        "bench/anchors_requirements.txt), e.g. /tmp/anchors/bin/python")
    p.add_argument("--rss-from", default=None,
                   help="--anchors: take each configuration's peak RSS from an earlier anchors result (same shape, "
                        "batch, seq) instead of measuring it (e.g. from a --phases '' run: RSS is not timing-"
                        "sensitive, so it can run while the machine is busy)")
    p.add_argument("--combine", nargs="+", type=Path, default=None, metavar="JSON",
                   help="measure nothing: combine earlier --anchors results (phases run separately, RSS from "
                        "another run, other shapes) into one, recompute peltc vs the anchors, print the tables")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON result")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    p.add_argument("--compile", action="store_true",
                   help="the compile × precision phase: each method eager and torch.compile'd (dynamic shapes), "
                        "peltc beside peft LoRA, interleaved (benchlib/speed_axes.py; replaces the other phases)")
    p.add_argument("--precision", default=None, help="comma list of fp32, bf16, fp16 (autocast): the precision axis "
                                                    "of that phase (default fp32)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (default %(default)s)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="compile × precision phase: the device")
    a = p.parse_args(argv)
    if a.precision is not None or a.compile:
        a.precision = [x.strip() for x in (a.precision or "fp32").split(",") if x.strip()]
        if any(x not in ("fp32", "bf16", "fp16") for x in a.precision):
            p.error(f"--precision {','.join(a.precision)}: fp32, bf16, fp16")
        if "fp32" not in a.precision:
            a.precision.insert(0, "fp32")          # the reference of every ratio
    a.shapes = [s.strip() for s in a.shapes.split(",") if s.strip()]
    for s in a.shapes:
        if s not in SHAPES:
            p.error(f"unknown shape {s!r} (known: {', '.join(SHAPES)})")
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()] if a.methods else None
    for m in a.methods or []:
        if m not in SPEC_FILES:
            p.error(f"unknown method {m!r} (known: {', '.join(SPEC_FILES)})")
    for ph in a.phases:
        if ph not in PHASES:
            p.error(f"unknown phase {ph!r} (known: {', '.join(PHASES)})")
    if a.quick:
        a.rounds, a.warmup, a.startup_runs = 2, 1, 3
        a.gen_batch, a.gen_prompt, a.gen_tokens = 2, 4, 3
    for name in ("batch", "seq", "gen_batch", "gen_prompt", "gen_tokens", "startup_runs", "rss_repeats"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.rounds is not None and a.rounds < 1:
        p.error("--rounds must be at least 1")
    if a.clock == "cpu" and a.threads != 1:
        p.error("--clock cpu: only with --threads 1 (torch's other threads' CPU time would not be counted)")
    if a.rss_from and not (a.anchors or a.anchor_python):
        p.error("--rss-from: only with --anchors")
    if a.anchors is None and a.anchor_python:
        a.anchors = "torch,peft,adapters"
    if a.anchors is not None:
        anchors = []
        for item in (x.strip() for x in a.anchors.split(",")):
            if not item:
                continue
            system, _, env = item.partition("@")
            if system not in ("torch", "peft", "adapters") or env not in ("", "main", "anchor"):
                p.error(f"--anchors: unknown {item!r} (torch, peft, adapters; optionally @main or @anchor)")
            if env == "anchor" and not a.anchor_python:
                p.error(f"--anchors {item}: needs --anchor-python")
            anchors.append((system, env or None))
        if not anchors:
            p.error("--anchors: name at least one of torch, peft, adapters")
        a.anchors = anchors
        if a.anchor_python and not Path(a.anchor_python).exists():
            p.error(f"--anchor-python {a.anchor_python}: not found (bench/README.md says how to make it)")
        for s in a.shapes:
            if is_decoder(s):
                p.error(f"--anchors: encoder shapes only ({s} is a decoder)")
        if a.rss_from and not Path(a.rss_from).is_file():
            p.error(f"--rss-from {a.rss_from}: not found")
        if a.merged:
            p.error("--anchors: --merged is not supported (served = unmerged, as the default Table 4 run)")
    return a


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print the tables; write and return the JSON result."""
    args = parse_args(argv)
    import torch

    if args.rss_child:
        print(json.dumps(rss_child(args.rss_child, args)))
        return {}
    if args.combine:
        result = combine_anchor_results(args.combine)
        for shape, s in result["shapes"].items():
            print(anchors_table(shape, s) + "\n", flush=True)
        if "startup" in result:
            print(startup_line(result["startup"]) + "\n", flush=True)
        path = write_result(args.out, "overhead-anchors-combined", result)
        print(f"wrote {path}", flush=True)
        return result

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
    if args.precision is not None:               # --compile / --precision: the compile × precision phase
        from benchlib.speed_axes import speed_main
        return speed_main(args, log)

    prev_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        t0 = time.perf_counter()
        started = datetime.now(timezone.utc)
        result: dict[str, Any] = {
            "benchmark": "peltc overhead (UniPELT Table 4)",
            "started": started.isoformat(timespec="seconds"),
            "machine": machine_info(args.threads),
            "args": {"shapes": args.shapes, "methods": args.methods or "default", "batch": args.batch or "default",
                     "seq": args.seq or "default", "gen_batch": args.gen_batch, "gen_prompt": args.gen_prompt,
                     "gen_tokens": args.gen_tokens, "phases": args.phases,
                     "rounds": args.rounds if args.rounds is not None else "auto", "budget_s": args.budget,
                     "warmup": args.warmup, "threads": args.threads, "attn": args.attn, "rss": args.rss,
                     "merged": args.merged, "unfused": args.unfused, "clock": args.clock, "quick": args.quick,
                     **({"anchors": [f"{x}@{e}" if e else x for x, e in args.anchors],
                         "anchor_python": args.anchor_python, "rss_from": args.rss_from} if args.anchors else {})},
            "method": ("interleaved round-robin; times: median over rounds; ratios: median of per-round ratios "
                       "(train vs full fine-tuning, inference vs the uncompiled base model); inference = served "
                       "model (fold_prefix applied); generation (decoders): greedy generate() of a *ForCausalLM, "
                       "KV cache on and off, vs the base model in the same mode; rss: " + {
                           "subprocess": "peak RSS (VmHWM) of a fresh process per configuration "
                                         "(build + compile + 2 train steps; base: 1 inference)",
                           "delta": "RSS growth of this process while building + warming each configuration",
                           "none": "not measured"}[args.rss]),
            "shapes": {},
        }
        load, cpus = result["machine"]["loadavg_start"], result["machine"]["cpus_usable"]
        if load and cpus and load[0] > cpus:
            warn = (f"load average {load[0]:.1f} > {cpus} usable CPUs: other processes compete for the cores; "
                    f"with {args.threads} threads expect inflated, noisy times (ratios are paired per round)")
            result["warnings"] = [warn]
            log("warning: " + warn)
        if args.anchors:
            result["machine"]["git"] = git_state()
            result["benchmark"] = "peltc vs anchors (peft, AdapterHub adapters, BitFit in place), per method"
            result["method"] = ("one worker process per environment (main: this interpreter; anchor: --anchor-python), "
                                "configurations timed round-robin across them, one at a time; times: median over "
                                "rounds; ratios: median of per-round ratios; each configuration vs its own "
                                "environment's full fine-tuning (train) or base model (inference), and peltc / anchor "
                                "directly; inference = served model (peltc fold_prefix, AdapterHub "
                                "eject_prefix_tuning); rss: " + {"subprocess": "peak RSS (VmHWM) of a fresh process "
                                "per configuration in its environment (build + apply + 2 train steps)",
                                "delta": "RSS growth of the worker while building + warming each configuration",
                                "none": "not measured"}[args.rss])
        for shape in (args.shapes if any(ph in SHAPE_PHASES for ph in args.phases) or not args.phases else []):
            if args.anchors:
                result["shapes"][shape] = run_anchors(shape, args, log)
                print(anchors_table(shape, result["shapes"][shape]) + "\n", flush=True)
                continue
            result["shapes"][shape] = run_shape(shape, args, log)
            print(table(shape, result["shapes"][shape]) + "\n", flush=True)
            if args.unfused or args.merged:
                print(served_table({shape: result["shapes"][shape]}) + "\n", flush=True)
        if "startup" in args.phases:
            result["startup"] = measure_startup(args.startup_runs, log)
            print(startup_line(result["startup"]) + "\n", flush=True)
        result["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        result["elapsed_s"] = round(time.perf_counter() - t0, 1)
        path = write_result(args.out, "overhead-anchors" if args.anchors else "overhead", result, started)
        print(f"wrote {path} ({result['elapsed_s']:.0f} s)", flush=True)
        return result
    finally:
        torch.set_num_threads(prev_threads)


if __name__ == "__main__":
    main()
