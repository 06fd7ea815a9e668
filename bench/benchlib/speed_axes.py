"""The compile × precision axes of bench/overhead.py (``--compile``, ``--precision fp32,bf16``): each method's
train step and served inference, eager and ``torch.compile``d, in each precision (autocast, parameters fp32),
peltc beside peft LoRA (the anchors' ``apply``, in this environment), all interleaved in one run.

Configuration ids: ``system:method/precision/mode`` (mode ``eager`` or ``compiled``). Ratios, paired per round
(median and the spread of the per-round ratios): each configuration over the same method eager in fp32
(what compile and precision buy), and compiled over eager in the same precision. Compiling is timed too
(the first, untimed warm-up visit: ``compile_s``); recompilations after it are counted (a new shape must
not recompile: the batch is fixed here, so any count above 0 is a guard that failed).
"""

from __future__ import annotations

import time
from typing import Callable

from benchlib.anchor_systems import apply
from benchlib.methods import infer_fn, train_step_fn
from benchlib.shapes import build_model, copy_model, make_batch, shape_config
from benchlib.timing import interleave, paired_ratio, summary

# (system, method): peltc's LoRA and UniPELT (APL), peft's LoRA, and full fine-tuning as the reference
SYSTEMS = (("ref", "finetune"), ("peltc", "lora"), ("peft", "lora"), ("peltc", "unipelt_apl"))


def _autocast(device: str, precision: str):
    import contextlib

    import torch
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def _wrap(fn: Callable[[], None], device: str, precision: str) -> Callable[[], None]:
    def run() -> None:
        with _autocast(device, precision):
            fn()
    return run


def _compiled(model, backend: str):
    import torch
    return torch.compile(model, backend=backend, dynamic=True)


def configurations(shape: str, args, log) -> tuple[dict, dict, dict]:
    """{id: train step}, {id: inference}, {id: info} for every system × precision × mode."""
    import torch

    from benchlib.shapes import batch_seq
    cfg = shape_config(shape)
    b, s = batch_seq(shape, args)
    batch = make_batch(cfg, b, s)
    template = build_model(shape, args.attn)
    # what the first loss would set on the config: set now, or every compiled train step recompiles once, timed
    template.config.problem_type = "single_label_classification"
    device = "cuda" if torch.cuda.is_available() and getattr(args, "device", "cpu") != "cpu" else "cpu"
    batch = {k: v.to(device) for k, v in batch.items()}
    modes = ("eager", "compiled") if args.compile else ("eager",)
    train, infer, info = {}, {}, {}
    for system, method in SYSTEMS:
        if args.methods and method not in args.methods and method != "finetune":
            continue
        for precision in args.precision:
            for mode in modes:
                cid = f"{system}:{method}/{precision}/{mode}"
                for phase, out in (("train", train), ("inference", infer)):
                    try:
                        model, meta = apply(system, method, copy_model(template, share_frozen=True),
                                            served=phase == "inference")
                    except Exception as e:      # a method the family refuses, peft's targets on a decoder
                        info[cid] = {"unsupported": f"{type(e).__name__}: {str(e)[:120]}"}
                        continue
                    model = model.to(device)
                    run = _compiled(model, args.compile_backend) if mode == "compiled" else model
                    fn = train_step_fn(run, batch) if phase == "train" else infer_fn(run, batch)
                    if mode == "compiled":      # train_step_fn / infer_fn set train / eval on the wrapper's module
                        model.train(phase == "train")
                    out[cid] = _wrap(fn, device, precision)
                    info.setdefault(cid, {"trainable": meta["trainable"]})
        if args.precision and device == "cpu" and "fp16" in args.precision:
            raise SystemExit("--precision fp16: CUDA only (CPU autocast runs bf16)")
    log(f"{shape}: {len(train)} configurations ({', '.join(args.precision)}; {', '.join(modes)}) on {device}")
    return train, infer, info


def _first_visits(items: dict[str, Callable[[], None]]) -> dict[str, float]:
    """Each item once, untimed by the rounds: for a compiled one its compile time (seconds)."""
    out = {}
    for k, fn in items.items():
        t0 = time.perf_counter()
        fn()
        out[k] = round(time.perf_counter() - t0, 2)
    return out


def run_speed_axes(shape: str, args, log) -> dict:
    """The compile × precision phase on one shape: JSON-ready."""
    import torch._dynamo

    torch._dynamo.reset()
    train, infer, info = configurations(shape, args, log)
    result: dict = {"shape": shape, "config": {"batch_seq": list(_bs(shape, args)), "precisions": args.precision,
                                               "compile": args.compile, "compile_backend": args.compile_backend},
                    "configs": info, "phases": {}}
    for phase, items in (("train", train), ("inference", infer)):
        first = _first_visits(items)
        frames_before = _frames()
        samples, records = interleave(items, args.warmup, args.rounds, args.budget, log, f"{shape} {phase}")
        out = {"first_visit_s": first, "recompiles_while_timed": _frames() - frames_before,
               "times_ms": {k: summary(v) for k, v in samples.items()}, "ratios": {}}
        for cid in items:
            system_method, precision, mode = cid.split("/")
            ref = f"{system_method}/fp32/eager"
            r = {"vs_eager_fp32": paired_ratio(records, cid, ref)} if ref in items and ref != cid else {}
            eager = f"{system_method}/{precision}/eager"
            if mode == "compiled" and eager in items:
                r["compiled_vs_eager"] = paired_ratio(records, cid, eager)
            ft = f"ref:finetune/{precision}/{mode}"
            if ft in items and ft != cid:
                r["vs_finetune_same_mode"] = paired_ratio(records, cid, ft)
            out["ratios"][cid] = r
        result["phases"][phase] = out
    return result


def _bs(shape, args):
    from benchlib.shapes import batch_seq
    return batch_seq(shape, args)


def _frames() -> int:
    from torch._dynamo.utils import counters
    return int(counters["stats"]["unique_graphs"])


def speed_table(shape: str, r: dict) -> str:
    """Markdown: per configuration, train and inference median ms and the ratios (median [min–max])."""
    def ratio(x):
        return f"{x['median']:.2f} [{x['min']:.2f}–{x['max']:.2f}]" if x else "—"

    lines = [f"### {shape}: compile × precision (batch × seq {r['config']['batch_seq'][0]} × "
             f"{r['config']['batch_seq'][1]}; backend {r['config']['compile_backend']})", "",
             "| configuration | train ms | train vs eager fp32 | train compiled/eager | infer ms | infer vs eager "
             "fp32 | infer compiled/eager | compile s (train / infer) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    tr, inf = r["phases"]["train"], r["phases"]["inference"]
    for cid in tr["times_ms"]:
        compiled = cid.endswith("/compiled")
        lines.append(
            f"| {cid} | {tr['times_ms'][cid]['median']:.1f} | {ratio(tr['ratios'][cid].get('vs_eager_fp32'))} | "
            f"{ratio(tr['ratios'][cid].get('compiled_vs_eager'))} | {inf['times_ms'][cid]['median']:.1f} | "
            f"{ratio(inf['ratios'][cid].get('vs_eager_fp32'))} | {ratio(inf['ratios'][cid].get('compiled_vs_eager'))} | "
            + (f"{tr['first_visit_s'][cid]:.0f} / {inf['first_visit_s'][cid]:.0f} |" if compiled else "— |"))
    lines.append("")
    lines.append(f"recompilations while timed: train {tr['recompiles_while_timed']}, inference "
                 f"{inf['recompiles_while_timed']}")
    return "\n".join(lines) + "\n"


def speed_main(args, log) -> dict:
    """bench/overhead.py --compile / --precision: every shape, the tables on stdout, JSON in ``args.out``
    (``overhead-speed-<timestamp>.json``)."""
    import torch

    from benchlib.machine import git_state, machine_info, write_result
    torch.set_num_threads(args.threads)
    result = {"benchmark": "compile × precision (bench/overhead.py --compile --precision)",
              "machine": machine_info(args.threads), "git": git_state(), "torch": torch.__version__,
              "shapes": {}}
    for shape in args.shapes:
        result["shapes"][shape] = r = run_speed_axes(shape, args, log)
        print(speed_table(shape, r), flush=True)
    path = write_result(args.out, "overhead-speed", result)
    print(f"wrote {path}", flush=True)
    return result
