"""The methods (spec files in ``specs/``), compiling one with peltc, and the calls the instruments time: a train
step, an inference forward, greedy generation."""

from __future__ import annotations

import time
from typing import Callable

from benchlib import SPECS

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
    # issue 18's methods (on request: --methods dora,rslora,ia3,prompt,loreft; each has an anchor)
    ("dora", "DoRA", "dora.pelt"),
    ("rslora", "rsLoRA", "rslora.pelt"),
    ("ia3", "(IA)³", "ia3.pelt"),
    ("prompt", "Prompt tuning", "prompt.pelt"),
    ("loreft", "LoReFT", "loreft.pelt"),
]
NEW_METHODS = ("dora", "rslora", "ia3", "prompt", "loreft")
LABELS = {k: label for k, label, _ in METHODS}
SPEC_FILES = {k: f for k, _, f in METHODS}
BASE = "base"
# default methods: the paper's Table 4 on encoders; decoders add prefix + LoRA (the generation question)
DEFAULT_METHODS = {"encoder": [k for k, _, _ in METHODS if k not in ("prefix_lora", "mam", *NEW_METHODS)],
                   "decoder": [k for k, _, _ in METHODS if k not in ("mam", *NEW_METHODS)],
                   # --anchors: the methods that have an anchor (benchlib/anchor_systems.py; mam on request)
                   "anchors": ["bitfit", "prefix", "lora", "adapter", "unipelt_apl"]}


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


def peak_rss_run(model, batch, attach: Callable | None, after_import: float) -> dict:
    """What a fresh process measures for peak RSS: ``attach(model)`` (a method put on the built model; it
    returns the model to train) then 2 train steps, or, with ``attach`` None (the base), 1 inference."""
    from benchlib.rss import maxrss_mb
    after_build = maxrss_mb()
    if attach is None:
        infer_fn(model, batch)()
        what = "inference x1"
    else:
        step = train_step_fn(attach(model), batch)
        step()
        step()
        what = "train steps x2"
    return {"peak_rss_mb": round(maxrss_mb(), 1), "rss_after_import_mb": round(after_import, 1),
            "rss_after_build_mb": round(after_build, 1), "ran": what}
