"""The anchors' worker scheme (``bench/overhead.py --anchors``): one worker process per environment (peltc's
interpreter, "main", and ``--anchor-python``, "anchor") holds its configurations, built on its own copy of the
shape's template model, and times one call of one of them when asked, so the coordinator can interleave
configurations of different processes exactly like in-process ones. A worker is ``bench/anchors.py --worker``
run with the environment's Python; the same script's ``--rss-child`` measures one configuration's peak RSS in a
fresh process."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from typing import Callable

from benchlib import BENCH, ROOT
from benchlib.anchor_systems import apply, parse_id, versions
from benchlib.methods import infer_fn, peak_rss_run, train_step_fn
from benchlib.rss import maxrss_mb, rss_mb, run_rss_child
from benchlib.shapes import build_model, copy_model, make_batch

WORKER_SCRIPT = BENCH / "anchors.py"      # run with each environment's Python: --worker, --rss-child


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
        self.template = build_model(msg["shape"], msg["attn"])
        self.batch = make_batch(self.template.config, msg["batch"], msg["seq"])
        return {"versions": versions(), "threads": torch.get_num_threads(),
                "attn_implementation": self.template.config._attn_implementation,
                "base_params": sum(p.numel() for p in self.template.parameters())}

    def build(self, ids: list[str], phase: str, rss_delta: bool = False) -> dict:
        out = {}
        gc.unfreeze()
        for cid in ids:
            system, _, method = parse_id(cid)
            r0 = rss_mb()
            try:
                if system == "ref" and method == "base":
                    model, info = self.template, {"trainable": 0}
                else:
                    model = copy_model(self.template, share_frozen=True)
                    model, info = apply(system, method, model, served=(phase == "infer"))
                if phase == "train":
                    self.fns[cid] = train_step_fn(model, self.batch)
                else:
                    self.fns[cid] = infer_fn(model, self.batch)
                self.phase_of[cid] = phase
                if rss_delta:                       # cheap, not a peak: the growth while building + one call
                    self.fns[cid]()
                    info["rss_delta_mb"] = round(rss_mb() - r0, 1)
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
        return {"rss_mb": round(rss_mb(), 1)}

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
        self.proc = subprocess.Popen([python, str(WORKER_SCRIPT), "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=str(ROOT), bufsize=1)

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
    after_import = maxrss_mb()
    model = build_model(msg["shape"], msg["attn"])
    batch = make_batch(model.config, msg["batch"], msg["seq"])
    base = system == "ref" and method == "base"
    return peak_rss_run(model, batch, None if base else lambda m: apply(system, method, m)[0], after_import)


def rss_subprocess(python: str, msg: dict, repeats: int = 1) -> dict:
    return run_rss_child([python, str(WORKER_SCRIPT), "--rss-child", json.dumps(msg)], repeats)
