"""The anchors of ``bench/overhead.py --anchors``: the same methods built by the reference libraries.

Imported by the benchmark's worker processes, in peltc's environment ("main") or in a second one
("anchor", ``--anchor-python``; AdapterHub ``adapters`` 1.3 pins transformers 4.57, which peltc
cannot use). So this module imports neither peltc nor a library at module level; it reuses the
shape, batch, train-step and memory helpers of ``overhead.py`` (stdlib-only at import).

A *configuration* is ``system@env:method``:

- ``peltc@main:M``  — ``specs/M.pelt`` compiled by peltc (served: + ``fold_prefix``);
- ``ref@ENV:finetune`` / ``ref@ENV:base`` — each environment's references: full fine-tuning (every
  parameter trains, no library) and the plain base model (inference);
- ``torch@main:bitfit`` — BitFit as usually written: the biases train in place (``requires_grad``
  only on every ``*.bias``, plus the task head);
- ``peft@ENV:M`` — peft 0.21: ``LoraConfig`` / ``PrefixTuningConfig`` (task type SEQ_CLS: the
  classifier trains as a ``modules_to_save`` copy). Where: ``main`` for LoRA (same transformers as
  peltc, so peltc / peft isolates the method), ``anchor`` for prefix-tuning (peft's prefix goes in as
  ``past_key_values``, which transformers 5's BERT no longer takes: "Model does not support past key
  values which are required for prefix tuning");
- ``adapters@anchor:M`` — AdapterHub ``adapters`` 1.3 on the HF ``BertForSequenceClassification``
  (``adapters.init``, ``add_adapter``, ``train_adapter``; the HF classifier trains). Served prefix
  configurations are ``eject_prefix_tuning``-ed (the MLP replaced by the flat prefix, as peltc folds).

The hyper-parameters follow peltc's specs (``ANCHOR_NOTES`` says where a library's default differs).
Every anchor trains the classifier as peltc does (``head_trainable``); base weights that train in
place are cloned first (the configurations of a worker share the template's frozen storage).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as ob  # noqa: E402  (stdlib-only at import; torch / transformers inside its functions)

ADAPTER_NAME = "anchor"
SYSTEMS = ("torch", "peft", "adapters")
ENVS = ("main", "anchor")

# method → the anchors that implement it: system → where it runs by default ("main" / "anchor")
ANCHORS: dict[str, dict[str, str]] = {
    "bitfit": {"torch": "main"},
    "lora": {"peft": "main", "adapters": "anchor"},
    "adapter": {"adapters": "anchor"},                 # peft has no bottleneck adapter
    "prefix": {"peft": "anchor", "adapters": "anchor"},
    "unipelt_ap": {"adapters": "anchor"},
    "unipelt_apl": {"adapters": "anchor"},
    "mam": {"adapters": "anchor"},
}
# where a system can run at all (peft's prefix-tuning needs transformers 4.x)
RUNS_IN = {("torch", m): ENVS for m in ANCHORS} | {("peft", "lora"): ENVS, ("peft", "prefix"): ("anchor",)} | \
    {("adapters", m): ("anchor",) for m in ANCHORS}

ANCHOR_NOTES = {
    "bitfit": "torch: every *.bias trains in place (102,912 on bert-base, as specs/bitfit.pelt) + the head; "
              "peltc trains zero-initialised deltas beside frozen biases",
    "lora": "peft LoraConfig(r=8, lora_alpha=16, target_modules=[query, value], dropout 0); adapters "
            "LoRAConfig(r=8, alpha=16, attn_matrices=[q, v]) — as specs/lora.pelt (adapters' default alpha is 8)",
    "adapter": "adapters SeqBnConfig (Pfeiffer: after the FFN, relu), reduction_factor = hidden / 48 so the "
               "bottleneck is 48 as specs/adapter.pelt (the default 16 gives 48 on bert-base, 24 on MiniLM)",
    "prefix": "peft PrefixTuningConfig(num_virtual_tokens=10, prefix_projection=True, encoder_hidden_size=512); "
              "adapters PrefixTuningConfig(prefix_length=10, bottleneck_size=512, tanh) — as specs/prefix.pelt "
              "(adapters' default length is 30)",
    "unipelt_ap": "adapters ConfigUnion(PrefixTuningConfig(prefix_length=10), SeqBnConfig(reduction_factor="
                  "hidden/48)), use_gating=True on both (UniPELTConfig without its LoRA)",
    "unipelt_apl": "adapters UniPELTConfig with sizes as specs/unipelt_apl.pelt: prefix 10 (MLP 512), SeqBn "
                   "reduction hidden/48 (the default 16: 48 on bert-base, 24 on MiniLM), LoRA r 8 on q, v, alpha 2 "
                   "(the default; its gate multiplies alpha/r, peltc's gate replaces alpha/r); gates: adapters' "
                   "per-example mean of sigmoid(Linear(h, 1)) as peltc's, prefix gate shared over K and V",
    "mam": "adapters MAMConfig with sizes as specs/mam_adapter.pelt: PrefixTuningConfig(prefix_length=30, "
           "bottleneck_size=512) (MAMConfig's default bottleneck is 800) + ParBnConfig(reduction_factor=1.5, "
           "scaling 4) (default reduction 2: hidden/2)",
}


def env_of(system: str, method: str, forced: str | None) -> str | None:
    """Where ``system`` implements ``method``: ``forced`` if it can run there, else its default; None if
    the system has no such anchor."""
    if method not in ANCHORS or system not in ANCHORS[method]:
        return None
    if forced is not None:
        return forced if forced in RUNS_IN[(system, method)] else None
    return ANCHORS[method][system]


# --- building -------------------------------------------------------------------------------------------

def _adapters_config(method: str, hidden: int):
    import adapters as ah
    red = hidden / 48                                          # bottleneck 48, as the specs
    if method == "lora":
        return ah.LoRAConfig(r=8, alpha=16, attn_matrices=["q", "v"])
    if method == "adapter":
        return ah.SeqBnConfig(reduction_factor=red)
    if method == "prefix":
        return ah.PrefixTuningConfig(prefix_length=10, bottleneck_size=512)
    if method == "unipelt_apl":
        return ah.UniPELTConfig(prefix_tuning=ah.PrefixTuningConfig(prefix_length=10, bottleneck_size=512),
                                adapter=ah.SeqBnConfig(reduction_factor=red), lora=ah.LoRAConfig(r=8, alpha=2))
    if method == "unipelt_ap":
        return ah.ConfigUnion(ah.PrefixTuningConfig(prefix_length=10, bottleneck_size=512, use_gating=True),
                              ah.SeqBnConfig(reduction_factor=red, use_gating=True))
    if method == "mam":
        return ah.MAMConfig(prefix_tuning=ah.PrefixTuningConfig(prefix_length=30, bottleneck_size=512),
                            adapter=ah.ParBnConfig(reduction_factor=1.5))
    raise ValueError(f"adapters: no anchor for {method!r}")


def _peft_config(method: str):
    from peft import LoraConfig, PrefixTuningConfig, TaskType
    if method == "lora":
        return LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.0,
                          target_modules=["query", "value"])
    if method == "prefix":
        return PrefixTuningConfig(task_type=TaskType.SEQ_CLS, num_virtual_tokens=10, prefix_projection=True,
                                  encoder_hidden_size=512)
    raise ValueError(f"peft: no anchor for {method!r}")


def _own_trainables(model) -> None:
    """Trainable parameters get their own storage (a worker's configurations share the template's)."""
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.clone()


def apply(system: str, method: str, model, served: bool = False):
    """Apply an anchor (or a reference) to ``model``, a fresh copy of the template; return the model to
    run (peft wraps it) and a short report. ``served``: the inference form (AdapterHub prefixes ejected)."""
    info: dict[str, Any] = {}
    if system == "ref":
        if method == "finetune":
            for p in model.parameters():
                p.requires_grad = True
            _own_trainables(model)
        elif method != "base":
            raise ValueError(method)
    elif system == "torch":
        if method != "bitfit":
            raise ValueError(method)
        for n, p in model.named_parameters():
            p.requires_grad = n.endswith(".bias") or n.startswith("classifier.")
        _own_trainables(model)
    elif system == "peft":
        from peft import get_peft_model
        model = get_peft_model(model, _peft_config(method))
        info["config"] = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
                          for k, v in model.peft_config["default"].to_dict().items()}
    elif system == "adapters":
        import adapters as ah
        ah.init(model)
        cfg = _adapters_config(method, model.config.hidden_size)
        model.add_adapter(ADAPTER_NAME, config=cfg)
        model.train_adapter(ADAPTER_NAME)
        for n, p in model.named_parameters():
            p.requires_grad = f".{ADAPTER_NAME}" in n or n.startswith("classifier.")
        _own_trainables(model)
        info["config"] = cfg.to_dict()
        if served and method in ("prefix", "unipelt_ap", "unipelt_apl", "mam"):
            model.eject_prefix_tuning(ADAPTER_NAME)
            info["ejected_prefix"] = True
    elif system == "peltc":
        from peltc.compiler.torch.rewrite import fold_prefix
        rep = ob.compile_method(model, method)
        info["report"] = {f: getattr(rep, f) for f in ("pelt_trainable", "head_trainable", "base_trainable",
                                                       "trainable_total", "saved_total")}
        if served:
            info["folded"] = fold_prefix(model)
    else:
        raise ValueError(f"unknown system {system!r}")
    info["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, info


def parse_id(cid: str) -> tuple[str, str, str]:
    """``system@env:method`` → (system, env, method)."""
    sys_env, method = cid.split(":")
    system, env = sys_env.split("@")
    return system, env, method


def versions() -> dict:
    import importlib.metadata as md
    v = {"python": sys.version.split()[0], "executable": sys.executable}
    for p in ("torch", "transformers", "peft", "adapters", "peltc"):
        try:
            v[p] = md.version(p)
        except md.PackageNotFoundError:
            v[p] = None
    return v


# --- the worker ---------------------------------------------------------------------------------------------

class Worker:
    """One process per environment: builds configurations on the shape's template model and times one
    call of one of them when asked. Commands (JSON lines on stdin; one JSON reply line each):

    - ``{"op": "setup", "shape", "batch", "seq", "attn", "threads"}`` → versions;
    - ``{"op": "build", "ids": [...], "phase": "train" | "infer"}`` → per id its report (or error);
    - ``{"op": "time", "id"}`` → ``{"t": seconds}`` (gc off inside the call; collected after);
    - ``{"op": "drop", "phase"}`` frees that phase's configurations; ``{"op": "quit"}``.
    """

    def __init__(self) -> None:
        self.fns: dict[str, Callable[[], None]] = {}
        self.phase_of: dict[str, str] = {}
        self.template = None
        self.batch = None

    def setup(self, msg: dict) -> dict:
        import torch
        torch.set_num_threads(msg["threads"])
        try:
            from transformers.utils import logging as hf_logging
            hf_logging.set_verbosity_error()
        except Exception:
            pass
        self.template = ob.build_model(msg["shape"], msg["attn"])
        self.batch = ob.make_batch(self.template.config, msg["batch"], msg["seq"])
        return {"versions": versions(), "threads": torch.get_num_threads(),
                "attn_implementation": self.template.config._attn_implementation,
                "base_params": sum(p.numel() for p in self.template.parameters())}

    def build(self, ids: list[str], phase: str, rss_delta: bool = False) -> dict:
        out = {}
        gc.unfreeze()
        for cid in ids:
            system, _, method = parse_id(cid)
            r0 = ob._rss_mb()
            try:
                if system == "ref" and method == "base":
                    model, info = self.template, {"trainable": 0}
                else:
                    model = ob.copy_model(self.template, share_frozen=True)
                    model, info = apply(system, method, model, served=(phase == "infer"))
                if phase == "train":
                    self.fns[cid] = ob.train_step_fn(model, self.batch)
                else:
                    self.fns[cid] = ob.infer_fn(model, self.batch)
                self.phase_of[cid] = phase
                if rss_delta:                       # cheap, not a peak: the growth while building + one call
                    self.fns[cid]()
                    info["rss_delta_mb"] = round(ob._rss_mb() - r0, 1)
                out[cid] = info
            except Exception as e:                  # a table entry, not the end of the run
                out[cid] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        gc.collect()
        gc.freeze()                                 # models, modules, imports: out of every later collection
        return out

    def time(self, cid: str) -> dict:
        fn = self.fns[cid]
        gc.disable()
        try:
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
        finally:
            gc.enable()
        gc.collect()
        return {"t": t}

    def drop(self, phase: str) -> dict:
        for cid in [c for c, ph in self.phase_of.items() if ph == phase]:
            del self.fns[cid], self.phase_of[cid]
        gc.unfreeze()
        gc.collect()
        return {"rss_mb": round(ob._rss_mb(), 1)}

    def serve(self, rfile, wfile) -> None:
        for line in rfile:
            msg = json.loads(line)
            op = msg["op"]
            try:
                if op == "quit":
                    reply: dict = {"ok": True}
                elif op == "setup":
                    reply = self.setup(msg)
                elif op == "build":
                    reply = {"items": self.build(msg["ids"], msg["phase"], msg.get("rss_delta", False))}
                elif op == "time":
                    reply = self.time(msg["id"])
                elif op == "drop":
                    reply = self.drop(msg["phase"])
                else:
                    reply = {"error": f"unknown op {op!r}"}
            except Exception as e:
                import traceback
                reply = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
            wfile.write(json.dumps(reply) + "\n")
            wfile.flush()
            if op == "quit":
                return


def worker_main() -> None:
    """Serve on a private copy of stdout; fd 1 goes to stderr, so library prints cannot break the protocol."""
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    Worker().serve(sys.stdin, proto)


class WorkerProcess:
    """The coordinator's handle on a worker: ``call(msg)`` sends one command and waits for its reply."""

    def __init__(self, python: str, env: str) -> None:
        import subprocess
        self.env = env
        self.python = python
        self.proc = subprocess.Popen([python, str(Path(__file__).resolve()), "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=str(ob.ROOT), bufsize=1)

    def call(self, msg: dict) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.env} worker ({self.python}) exited (code {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply and msg["op"] != "build":
            raise RuntimeError(f"{self.env} worker: {reply['error']}\n{reply.get('traceback', '')}")
        return reply

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call({"op": "quit"})
            self.proc.wait(timeout=30)
        except Exception:
            self.proc.kill()
            self.proc.wait()


# --- peak RSS in a fresh process ------------------------------------------------------------------------------

def rss_child(msg: dict) -> dict:
    """Build the shape, apply one configuration, 2 train steps (``ref:base``: 1 inference); the peak RSS."""
    import torch
    torch.set_num_threads(msg["threads"])
    system, _, method = parse_id(msg["id"])
    # everything the configuration runs is imported before "after import" (transformers imports lazily)
    from transformers import BertForSequenceClassification  # noqa: F401
    if system == "peltc":
        import peltc.api  # noqa: F401
        import peltc.compiler.torch.rewrite  # noqa: F401
    elif system == "peft":
        import peft  # noqa: F401
    elif system == "adapters":
        import adapters  # noqa: F401
        import adapters.models.bert.modeling_bert  # noqa: F401
    after_import = ob._maxrss_mb()
    model = ob.build_model(msg["shape"], msg["attn"])
    batch = ob.make_batch(model.config, msg["batch"], msg["seq"])
    after_build = ob._maxrss_mb()
    if system == "ref" and method == "base":
        ob.infer_fn(model, batch)()
        what = "inference x1"
    else:
        model, _ = apply(system, method, model)
        step = ob.train_step_fn(model, batch)
        step()
        step()
        what = "train steps x2"
    return {"peak_rss_mb": round(ob._maxrss_mb(), 1), "rss_after_import_mb": round(after_import, 1),
            "rss_after_build_mb": round(after_build, 1), "ran": what}


def rss_subprocess(python: str, msg: dict, repeats: int = 1) -> dict:
    return ob.run_rss_child([python, str(Path(__file__).resolve()), "--rss-child", json.dumps(msg)], repeats)


# --- a profile of one configuration's train step ------------------------------------------------------------

def profile(argv: list[str]) -> str:
    """``anchors.py --profile ID --shape S [--batch B --seq L --threads T --steps N --rows R]``: torch.profiler
    over N train steps (after 2 untimed) of one configuration, run with that configuration's environment's
    Python; the top ops by self CPU time."""
    import argparse
    import torch
    from torch.profiler import ProfilerActivity, profile as prof
    ap = argparse.ArgumentParser(prog="anchors.py --profile")
    ap.add_argument("id")
    ap.add_argument("--shape", default="minilm")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="sdpa")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--memory", action="store_true", help="also record allocations: sort by self CPU memory")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    system, _, method = parse_id(a.id)
    model = ob.build_model(a.shape, a.attn)
    batch = ob.make_batch(model.config, a.batch, a.seq)
    if not (system == "ref" and method == "base"):
        model, _ = apply(system, method, model)
    step = ob.train_step_fn(model, batch)
    step()
    step()
    t0 = time.perf_counter()
    with prof(activities=[ProfilerActivity.CPU], profile_memory=a.memory) as p:
        for _ in range(a.steps):
            step()
    wall = (time.perf_counter() - t0) / a.steps
    v = versions()
    head = (f"{a.id} on {a.shape} (batch {a.batch} x seq {a.seq}, {a.threads} threads, transformers "
            f"{v['transformers']}): {a.steps} train steps under the profiler, {wall * 1e3:.0f} ms/step "
            f"(profiler on); top ops by self CPU {'memory' if a.memory else 'time'}")
    sort = "self_cpu_memory_usage" if a.memory else "self_cpu_time_total"
    out = head + "\n" + p.key_averages().table(sort_by=sort, row_limit=a.rows)
    if a.memory:
        out += (f"\npeak live tensor memory over the {a.steps} profiled step(s), above their start, at op boundaries: "
                f"{peak_live_mb(p.events()):.1f} MB\n")
    return out


def peak_live_mb(events) -> float:
    """The most tensor memory allocated and not yet freed at any op boundary of the profiled steps, counted
    from the first step's start: every profiler event's own allocations minus frees, in time order. A lower
    bound (a workspace an op allocates and frees inside itself is not seen), but the same bound for two
    configurations running the same ops; unlike a process's peak RSS it does not depend on how malloc keeps
    freed memory (arenas, fragmentation)."""
    cur = peak = 0
    for e in sorted((e for e in events if e.self_cpu_memory_usage), key=lambda e: e.time_range.start):
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak / 2 ** 20


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--profile":
        print(profile(sys.argv[2:]))
    elif len(sys.argv) >= 2 and sys.argv[1] == "--worker":
        worker_main()
    elif len(sys.argv) >= 3 and sys.argv[1] == "--rss-child":
        print(json.dumps(rss_child(json.loads(sys.argv[2]))))
    else:
        raise SystemExit("bench/anchors.py is run by bench/overhead.py --anchors (see bench/README.md)")
