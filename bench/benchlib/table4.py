"""``overhead.py``'s run per shape (the paper's Table 4): train step and served inference of every method against
full fine-tuning and the base model, generation on decoders, peak RSS per configuration; and the start-up time."""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from benchlib import BENCH, ROOT
from benchlib.machine import peltc_command
from benchlib.methods import (BASE, DEFAULT_METHODS, LABELS, METHODS, SPEC_FILES, compile_method, generate_fn,
                              infer_fn, peak_rss_run, train_step_fn, trainable, unsupported_reason)
from benchlib.rss import maxrss_mb, rss_mb, run_rss_child
from benchlib.shapes import batch_seq, build_model, copy_model, is_decoder, make_batch, prompt_batch
from benchlib.timing import interleave, paired_ratio, summary

PHASES = ("train", "inference", "generate", "startup")
SHAPE_PHASES = ("train", "inference", "generate")   # per shape; "startup" runs once per benchmark
TARGET_APL_INFERENCE = 1.20
# start-up: wall time of a static check in a fresh process (no weights loaded), issue 11's target
STARTUP_CHECK = ("check", "specs/unipelt_apl.pelt", "--model", "bert-base-uncased")
TARGET_STARTUP_S = 0.30


def run_shape(shape: str, args, log: Callable[[str], None]) -> dict:
    from peltc.compiler.torch.rewrite import fold_prefix, merge, serve_fused
    from peltc.errors import SpecError

    t_shape = time.perf_counter()
    decoder = is_decoder(shape)
    wanted = args.methods or DEFAULT_METHODS["decoder" if decoder else "encoder"]
    methods = [k for k, _, _ in METHODS if k in wanted]
    log(f"[{shape}] building the template model")
    template = build_model(shape, args.attn)
    cfg = template.config
    bsz, seq = batch_seq(shape, args)
    batch = make_batch(cfg, bsz, seq)
    base_params = sum(p.numel() for p in template.parameters())
    out: dict[str, Any] = {
        "config": {"hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
                   "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size,
                   "attn_implementation": template.config._attn_implementation},
        "architecture": type(template).__name__,
        "base_params": base_params,
        "batch": bsz, "seq": seq,
        "tokens_per_batch": int(batch["attention_mask"].sum()),
        "methods": {},
    }
    if decoder:
        out["config"]["kv_heads"] = cfg.num_key_value_heads
    res: dict[str, dict] = {BASE: {"label": "base model (uncompiled)"}}
    rss_delta = args.rss == "delta"

    # --- train phase: one fresh compiled model per method
    train_items: dict[str, Callable[[], None]] = {}
    prefix_models = {}
    supported = []
    for k in methods:
        r0 = rss_mb()
        model = copy_model(template, share_frozen=(k != "finetune"))
        spec_name = " + ".join(f"specs/{f}" for f in SPEC_FILES[k].split("+"))
        try:
            rep = compile_method(model, k)
        except SpecError as e:             # e.g. BitFit on Llama: no biases (E128) — a table entry, not a failure
            res[k] = {"label": LABELS[k], "spec": spec_name, "unsupported": unsupported_reason(k, e),
                      "error": f"{e.diagnostics[0].code}: {e}"}
            log(f"[{shape}] {k}: {res[k]['unsupported']} — {e}")
            continue
        supported.append(k)
        res[k] = {"label": LABELS[k], "spec": spec_name,
                  "report": {f: getattr(rep, f) for f in ("pelt_trainable", "head_trainable", "base_trainable",
                                                          "trainable_total", "saved_total")},
                  "attn_implementation": rep.attn_implementation}
        assert rep.trainable_total == sum(p.numel() for p in trainable(model)), k
        train_items[k] = train_step_fn(model, batch)
        if rep.attn_implementation is not None:
            prefix_models[k] = model
        if rss_delta:
            train_items[k]()                     # the first step allocates grads and AdamW state
            res[k]["rss"] = {"mode": "delta", "delta_mb": round(rss_mb() - r0, 1)}
    methods = supported
    phases = [ph for ph in args.phases if ph in SHAPE_PHASES and (ph != "generate" or decoder)]
    phase_budget = args.budget / max(1, len(phases))
    out["rounds"] = {ph: 0 for ph in phases}
    if "train" in args.phases:
        log(f"[{shape}] train phase: {', '.join(train_items)}")
        samples, records = interleave(train_items, args.warmup, args.rounds, phase_budget, log, "train",
                                      getattr(args, "clock", "wall"))
        out["rounds"]["train"] = len(records)
        for k in methods:
            res[k]["train_ms"] = summary(samples[k])
            if "finetune" in samples:
                res[k]["train_ratio_vs_finetune"] = paired_ratio(records, k, "finetune")
        del samples, records
    del train_items                           # frees full fine-tuning's model, gradients and AdamW state
    for m in prefix_models.values():          # kept for the unfolded inference
        m.zero_grad(set_to_none=True)
    gc.collect()

    # --- inference phase: the base model, every method as served (+ unfolded prefixes, + merged)
    if "inference" not in args.phases:
        prefix_models.clear()
    infer_items: dict[str, Callable[[], None]] = {BASE: infer_fn(template, batch)}
    variants: dict[str, str] = {}         # item → method
    for k in (methods if "inference" in args.phases else []):
        if k == "finetune":
            continue                       # at inference the fine-tuned model is the base architecture
        served = copy_model(template, share_frozen=True)
        compile_method(served, k)
        folded = fold_prefix(served)
        if folded:
            res[k]["served_report"] = {"pelt_trainable": sum(p.numel() for p in trainable(served)), "folded": folded}
        infer_items[k] = infer_fn(served, batch)
        variants[k] = k
        if getattr(args, "unfused", False):                 # the same served model, serving fusions off
            m = copy_model(template, share_frozen=True)
            compile_method(m, k)
            fold_prefix(m)
            serve_fused(m, False)
            infer_items[k + "@unfused"] = infer_fn(m, batch)
            variants[k + "@unfused"] = k
        if k in prefix_models:
            infer_items[k + "@unfolded"] = infer_fn(prefix_models[k], batch)
            variants[k + "@unfolded"] = k
        if args.merged and k in ("bitfit", "lora"):         # merge applies (no input-dependent gate)
            m = copy_model(template, share_frozen=False)     # merge writes base weights
            compile_method(m, k)
            res[k]["merged"] = len(merge(m))       # modules merged
            infer_items[k + "@merged"] = infer_fn(m, batch)
            variants[k + "@merged"] = k
    if "inference" in args.phases:
        log(f"[{shape}] inference phase: {', '.join(infer_items)}")
        r0 = rss_mb()
        samples, records = interleave(infer_items, args.warmup, args.rounds, phase_budget, log, "inference",
                                      getattr(args, "clock", "wall"))
        out["rounds"]["inference"] = len(records)
        if rss_delta:
            res[BASE]["rss"] = {"mode": "delta", "delta_mb": round(rss_mb() - r0, 1)}
        res[BASE]["infer_ms"] = summary(samples[BASE])
        res[BASE]["infer_ratio_vs_base"] = {"median": 1.0, "n": len(records)}
        for item, k in variants.items():
            suffix = item[len(k):].replace("@", "_")          # "", "_unfused", "_unfolded", "_merged"
            res[k][f"infer{suffix}_ms"] = summary(samples[item])
            res[k][f"infer{suffix}_ratio_vs_base"] = paired_ratio(records, item, BASE)
        del samples, records
    del infer_items, prefix_models, variants
    gc.collect()

    # --- generation phase (decoders): greedy, with and without the KV cache, base vs each method as served
    if "generate" in phases:
        out["generate"] = gen = run_generation(shape, methods, args, phase_budget, log)
        for k, g in gen.pop("methods").items():
            res[k]["generate"] = g
        out["rounds"]["generate"] = gen["rounds"]

    # --- peak RSS, one fresh process per configuration
    if args.rss == "subprocess":
        for k in [BASE] + methods:       # supported methods only
            log(f"[{shape}] peak RSS: {k} (fresh process)")
            res[k]["rss"] = rss_subprocess(shape, k, args)

    # --- targets
    pelt = [k for k in methods if k != "finetune"]
    targets: dict[str, Any] = {}
    if "finetune" in methods and pelt and "train" in args.phases:   # judged on the median ratios; "best" alongside
        ratios = {k: res[k]["train_ratio_vs_finetune"] for k in pelt}
        slower = [k for k in pelt if ratios[k]["median"] >= 1.0]
        targets["pelt_train_faster_than_finetune"] = {
            "met": not slower, "slower": slower, "worst": max(r["median"] for r in ratios.values()),
            "slower_by_best": [k for k in pelt if ratios[k]["best"] >= 1.0]}
    if "unipelt_apl" in methods and "inference" in args.phases:
        r = res["unipelt_apl"]["infer_ratio_vs_base"]
        targets["unipelt_apl_inference_le_1.20x_base"] = {"met": r["median"] <= TARGET_APL_INFERENCE,
                                                          "ratio": r["median"], "best": r["best"]}
    out["methods"] = res
    out["targets"] = targets
    out["rss_mode"] = {"subprocess": f"VmHWM of a fresh process (train configs: build + compile + 2 train steps; "
                                     f"base: 1 inference), median of {args.rss_repeats} processes",
                       "delta": "RSS growth of this process (not a peak)", "none": "not measured"}[args.rss]
    out["elapsed_s"] = round(time.perf_counter() - t_shape, 1)
    return out


def run_generation(shape: str, methods: list[str], args, budget_s: float, log: Callable[[str], None]) -> dict:
    """Greedy generation on a ``*ForCausalLM`` of the shape (same seed, so the same base weights as the
    classifier's body): the base model and every method as served (compiled, prefix folded), each with the
    KV cache and without it (``use_cache=False``: every step recomputes the whole sequence). Interleaved like
    the other phases; per round and item: the generate() wall time, and from a timestamping streamer the
    prefill (prompt forward + first token) and the mean decode step. Ratios are paired per round vs the
    base model in the same cache mode; ``overhead_ms_per_token`` = median over rounds of
    (method − base) / new tokens."""
    from peltc.compiler.torch.rewrite import fold_prefix

    lm = build_model(shape, args.attn, causal_lm=True)
    prompts = prompt_batch(lm.config, args.gen_batch, args.gen_prompt)
    n = args.gen_tokens
    items: dict[str, Callable[[], None]] = {}
    logs: dict[str, list] = {}
    models = {BASE: lm}
    for k in methods:
        if k == "finetune":
            continue                       # the fine-tuned model generates as the base architecture
        m = copy_model(lm, share_frozen=True)
        compile_method(m, k)
        fold_prefix(m)
        models[k] = m
    modes = {"cache": True, "nocache": False}
    for k, m in models.items():
        for mode, use_cache in modes.items():
            item = f"{k}@{mode}"
            logs[item] = []
            items[item] = generate_fn(m, prompts, n, use_cache, logs[item])
    log(f"[{shape}] generate phase: {len(models)} models × {{cache, nocache}}, batch {args.gen_batch}, "
        f"prompt {args.gen_prompt}, {n} new tokens")
    samples, records = interleave(items, args.warmup, args.rounds, budget_s, log, "generate")
    rounds = len(records)
    # the per-round detail of each item: its calls after the warmup ones, in round order
    detail = {item: entries[-rounds:] for item, entries in logs.items()}
    decode_records = [{item: detail[item][r]["decode_s_per_token"] for item in items} for r in range(rounds)] \
        if n > 1 else []
    res: dict[str, dict] = {}
    for k in models:
        res[k] = {}
        for mode in modes:
            item, ref = f"{k}@{mode}", f"{BASE}@{mode}"
            per_tok = [t / n for t in samples[item]]
            g: dict[str, Any] = {
                "generate_ms": summary(samples[item]),
                "ms_per_token": summary(per_tok),
                "prefill_ms": summary([d["prefill_s"] for d in detail[item]]),
            }
            if decode_records:
                g["decode_ms_per_token"] = summary([d["decode_s_per_token"] for d in detail[item]])
            if k != BASE:
                g["ratio_vs_base"] = paired_ratio(records, item, ref)
                g["overhead_ms_per_token"] = round(statistics.median(
                    (r[item] - r[ref]) * 1e3 / n for r in records), 2)
                if decode_records:
                    g["decode_ratio_vs_base"] = paired_ratio(decode_records, item, ref)
                    g["decode_overhead_ms_per_token"] = round(statistics.median(
                        (r[item] - r[ref]) * 1e3 for r in decode_records), 2)
            res[k][mode] = g
    return {"architecture": type(lm).__name__, "batch": args.gen_batch, "prompt_tokens": args.gen_prompt,
            "new_tokens": n, "greedy": True, "rounds": rounds, "methods": res}


# --- memory ---------------------------------------------------------------------------------------------

def rss_child(spec: str, args) -> dict:
    """In a fresh process: build, compile, 2 train steps (base: 1 inference); the peak RSS."""
    import torch
    torch.set_num_threads(args.threads)
    shape, key = spec.split(":")
    after_import = maxrss_mb()
    model = build_model(shape, args.attn)
    batch = make_batch(model.config, *batch_seq(shape, args))

    def attach(m):
        compile_method(m, key)
        return m
    return peak_rss_run(model, batch, None if key == BASE else attach, after_import)


def rss_subprocess(shape: str, key: str, args) -> dict:
    b, s = batch_seq(shape, args)
    cmd = [sys.executable, str(BENCH / "overhead.py"), "--rss-child", f"{shape}:{key}",
           "--batch", str(b), "--seq", str(s), "--threads", str(args.threads),
           "--attn", args.attn]
    return run_rss_child(cmd, args.rss_repeats)


# --- start-up ---------------------------------------------------------------------------------------------

def measure_startup(runs: int, log: Callable[[str], None]) -> dict:
    """Wall time of ``peltc check`` (STARTUP_CHECK) in a fresh process, ``runs`` times after one untimed run
    (which warms the file cache): interpreter start, imports, parse, check, print."""
    cmd = peltc_command() + list(STARTUP_CHECK)
    label = "peltc " + " ".join(STARTUP_CHECK)
    times: list[float] = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        dt = time.perf_counter() - t0
        if done.returncode != 0:     # recorded, not raised: the shapes' timings are already in the result
            log(f"startup: {' '.join(cmd)} exited {done.returncode}")
            return {"command": label, "error": f"exit {done.returncode}: {done.stderr.strip()[-500:]}"}
        if i:
            times.append(dt)
    log(f"startup: {runs} runs of {' '.join(cmd)}")
    s = summary(times)
    return {"command": label, "runs": runs, "ms": s,
            "target_s": TARGET_STARTUP_S, "met": s["median"] <= TARGET_STARTUP_S * 1000,
            "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
