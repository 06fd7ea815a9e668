"""One run, spec to saved adapter: what `peltc compile --train` does — the orchestration only.

    run = RunOptions(spec="specs/unipelt_apl.pelt", task="glue/cola", k=100, seed=1)
    result = train_run(run)         # a new folder under runs/ (see runfolder.py for what it holds)

The steps: check every input (flags, spec, model, task and its data — `task.resolve`) and plan the run
folder (`runfolder.plan_run_dir`) before a folder is made or weights load; sample the task's splits (K
checked against the data) and say the schedule (steps, warm-up; a schedule that trains nothing is warned
about); load the model, compile the spec, tokenise the splits (the `task.Task`'s methods); train (`train.train`); save the
artifact; score the test set on the *saved* model (prefix MLPs folded), with the same evaluation `peltc
eval` uses (`serve.py`), so a reload reproduces the metrics exactly.

Nothing is lost:
- the folder is made only once the model is loaded and the data tokenised, and removed again when
  the run fails or is interrupted before its first complete checkpoint (nothing there to resume);
- checkpoints are marked complete once written (signals held meanwhile), validated before resuming;
- after training, the artifact and ``trainer/result.json`` are written before the test set is
  scored, so an interruption while scoring resumes by scoring the saved artifact; ``metrics.json``
  (the "finished" mark) comes last and checkpoints are deleted only after it.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from peltc.compiler.archs import ModelConfig
from peltc.compiler.ir import IR
from peltc.compiler.schema import host_of
from peltc.errors import Interrupted, UsageError
from peltc.runtime import signals
from peltc.runtime.models import load_base, resolve_model, weights_source
from peltc.runtime.runfolder import (
    RESULT,
    RunOptions,
    identity_hash,
    is_main,
    make_folder,
    world_size,
    resumable,
    run_identity,
    shared_plan,
    write_json,
)

def resolve_spec(spec: str, cli_model: str | None) -> tuple[str, IR, ModelConfig]:
    """The spec's text, its IR checked against the model to use, and that model's config
    (--model, else the spec's `model`, else the packaged MiniLM)."""
    from peltc.compiler.pipeline import build_ir, check_file
    try:
        text = Path(spec).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read spec '{spec}': {getattr(e, 'strerror', None) or e}", code="U001") from None
    mc = resolve_model(cli_model, build_ir(text, spec).ir.settings.model)
    return text, check_file(spec, model=mc).ir, mc


def _say(msg: str) -> None:
    if is_main():
        print(msg, flush=True)


def prepare(opts: RunOptions):
    """Everything that can be checked without weights or data — spec, model, task, K, flags — and the
    run's folder plan. Raises on any bad input before anything is loaded or written."""
    from peltc.runtime import data as D
    from peltc.runtime.settings import check_option, check_report_to, resolve_settings
    from peltc.runtime.task import resolve as resolve_task

    from peltc.runtime.speed import check_syntax
    for name, value in opts.overrides.items():     # flags first: no torch imported yet
        check_option(name, value)
    check_syntax(opts.speed)
    check_report_to(opts.report_to)
    task, raw, data_identity = resolve_task(opts, _say)
    opts.k = D.parse_k(opts.k)
    if opts.dev_size < 1:
        raise UsageError(f"--dev-size {opts.dev_size} is out of range", code="U106",
                         help="--dev-size (training examples held out for checkpoint selection) must be ≥ 1")
    if opts.seed < 0:
        raise UsageError(f"--seed {opts.seed} is out of range", code="U106", help="--seed must be ≥ 0")
    text, ir, mc = resolve_spec(opts.spec, opts.model)
    ir = task.prepare_ir(ir, mc, opts.task)
    finetune = any(host_of(a.method) == "model" for a in ir.attachments())   # trains base weights
    settings = resolve_settings(ir.settings.train, {**opts.overrides, "seed": opts.seed}, finetune=finetune)
    settings = _decoder_settings(settings, ir, mc, opts)
    identity = run_identity(spec_hash=ir.settings.spec_hash, task=task.name, k=opts.k, seed=opts.seed,
                            dev_size=opts.dev_size, model=mc.ref, settings=settings.to_dict(), data=data_identity,
                            precision=opts.precision)
    plan = shared_plan(opts, task.name, identity)
    return task, text, ir, mc, settings, identity, plan, raw


def _decoder_settings(settings, ir: IR, mc: ModelConfig, opts: RunOptions):
    """A decoder's classification head (``score``) has no bias: the recipe's ``head_bias prior`` becomes
    ``zero`` there (said with --head-bias prior or the spec's ``train { head_bias prior }``, it stays, and
    training refuses it, U107). A generation task has no head at all."""
    from dataclasses import replace

    from peltc.compiler.archs import family_of
    try:
        causal = family_of(mc.config).causal
    except UsageError:
        return settings
    said = "head_bias" in opts.overrides or (ir.settings.train or {}).get("head_bias") is not None
    if causal and not said and settings.head_bias != "zero":
        return replace(settings, head_bias="zero")
    return settings


def train_run(opts: RunOptions, callbacks: tuple = ()) -> dict[str, Any]:
    """Compile, train, evaluate and save one run; returns what ``metrics.json`` holds (with
    ``already_finished`` when ``--resume`` found the run done). SIGINT / SIGTERM end it with
    `Interrupted` (exit 130 / 143) whose message says what was kept. ``callbacks``: more Trainer
    callbacks (`peltc search` reports each dev evaluation to its trial through one)."""
    with signals.interruptible():
        try:
            return _train_run(opts, callbacks)
        except Interrupted as e:
            if e.explained:
                raise
            where = "'{}' unchanged".format(opts.out) if opts.resume and opts.out else "nothing was written"
            raise Interrupted(e.signum, f"interrupted ({e.signame}) before training began: {where}") from None


def _train_run(opts: RunOptions, callbacks: tuple = ()) -> dict[str, Any]:
    t0 = time.time()
    task, text, ir, mc, settings, identity, plan, raw = prepare(opts)   # no torch imported yet
    run_dir, main = plan.path, is_main()
    if plan.finished is not None:
        _say(f"'{run_dir}' already holds this finished run; nothing to do (peltc eval {run_dir} re-scores it)")
        return {**plan.finished, "run_dir": str(run_dir), "already_finished": True}
    if plan.note:
        _say(plan.note)
    weights_source(mc)                       # a Hub name that cannot load fails now, not after the data
    from peltc.runtime.speed import resolve as resolve_speed
    speed = resolve_speed(opts.speed)        # a device or precision that is not there fails now

    from transformers import set_seed

    from peltc.api import compile_model
    from peltc.runtime.settings import schedule
    from peltc.runtime.train import last_checkpoint
    if raw is None:
        raw = task.load(opts.data_dir)   # data files checked before weights load
    signals.raise_if_interrupted()

    trainer_dir = run_dir / "trainer"
    scoring = plan.resume and (trainer_dir / RESULT).is_file() and (run_dir / "adapter" / "manifest.json").is_file()
    checkpoint = None
    if plan.resume and not scoring:
        checkpoint = last_checkpoint(trainer_dir)
        if checkpoint is None:
            _say(f"resume: no complete checkpoint in '{trainer_dir}' yet; training starts from the beginning")
        else:
            _say(f"resume: {_checkpoint_line(checkpoint, task.main_metric)}")
    elif scoring:
        _say("resume: training had finished and the adapter was saved; scoring the test set")

    ds = task.sample(raw, opts.k, settings.seed, dev_size=opts.dev_size)   # K vs the data: before weights load
    sched = schedule(settings, len(ds["train"]), world_size())
    _say(sched.line(len(ds["train"]), settings))
    if sched.warning() and main:
        print(f"warning: {sched.warning()}", file=sys.stderr, flush=True)   # and recorded in metrics.json
    signals.raise_if_interrupted()

    set_seed(settings.seed)
    tokenizer, model = load_base(mc, task.num_labels, causal_lm=task.causal_lm)
    report = compile_model(ir, model)
    if main and not plan.resume:
        print(report.render())
    enc = task.encode(ds, tokenizer, max_length=settings.max_length)
    task = task.fit(enc)
    signals.raise_if_interrupted()

    created = False
    if main and not plan.resume:
        created = make_folder(run_dir, opts)
        (run_dir / "spec.pelt").write_text(text, encoding="utf-8")
        write_json(run_dir / "ir.json", ir.to_dict())
        write_json(run_dir / "run.json", {**asdict(opts), "model_ref": mc.ref, "task_name": task.name,
                                           **task.run_record(), "speed": speed.to_dict(),
                                           "identity": identity, "identity_hash": identity_hash(identity)})
        if opts.render:
            _render(ir, run_dir / "architecture.svg")
    try:
        return _train_and_score(opts, task, text, ir, mc, settings, sched, model, tokenizer, enc, run_dir,
                                checkpoint, scoring, t0, speed, callbacks)
    except BaseException as e:
        kept = resumable(run_dir)
        if main and created and not kept:
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(e, Interrupted):
            where = (f"'{run_dir}' kept ({kept}); continue it with the same command and --out {run_dir} --resume"
                     if kept else ("nothing was kept" if created or not plan.resume else f"'{run_dir}' unchanged"))
            raise Interrupted(e.signum, f"interrupted ({e.signame}): {where}") from None
        if main and created and not kept and isinstance(e, Exception):
            print(f"note: the run failed before its first checkpoint; '{run_dir}' was removed", file=sys.stderr)
        raise


def _checkpoint_line(checkpoint: Path, metric: str) -> str:
    from peltc.runtime.train import checkpoint_info
    info = checkpoint_info(checkpoint)
    best = info.get("best_metric")
    best_txt = (f"; best dev {metric} so far {best:.4f} at step {info.get('best_step')}"
                if isinstance(best, (int, float)) else "")
    return f"continuing from {checkpoint} (step {info.get('step')}{best_txt})"


def _train_and_score(opts, task, text, ir, mc, settings, sched, model, tokenizer, enc, run_dir: Path, checkpoint,
                     scoring: bool, t0: float, speed, callbacks: tuple = ()) -> dict[str, Any]:
    from peltc.compiler.torch.artifact import load_into, load_tensors, save_artifact
    from peltc.compiler.torch.rewrite import fold_prefix
    from peltc.runtime.curves import plot_curves
    from peltc.runtime.diagnostics import Diagnostics, gates_table, plot_gates
    from peltc.runtime.speed import autocast, to_device_model
    from peltc.runtime.train import train

    main = is_main()
    trainer_dir = run_dir / "trainer"
    if scoring:
        result = json.loads((trainer_dir / RESULT).read_text(encoding="utf-8"))
        fold_prefix(model)
        manifest, tensors = load_tensors(run_dir / "adapter")
        load_into(model, manifest, tensors, spec_hash=ir.settings.spec_hash)
    else:
        diag = (Diagnostics(model, enc["dev"], tokenizer, task, path=run_dir / "diagnostics.json")
                if opts.diagnostics else None)
        result = train(model, tokenizer, enc, task, settings, trainer_dir, resume=checkpoint or False,
                       progress=opts.progress, evaluate_test=False, keep_checkpoints=True, speed=speed,
                       callbacks=[*([diag] if diag else []), *_reporting(opts, run_dir), *callbacks])
        if not main:
            return result
        if diag is not None:
            result["diagnostics"] = diag.records

        fold_prefix(model)
        with signals.deferred():
            save_artifact(model, run_dir / "adapter", ir_dict=ir.to_dict(), spec_text=text,
                          spec_hash=ir.settings.spec_hash, base_model=mc.ref,
                          extra=task.artifact_record())
            write_json(trainer_dir / RESULT, result)
    records = result.pop("diagnostics", None)
    if records:
        from peltc.runtime.diagnostics import plot
        plot(records, run_dir / "diagnostics.png", f"{Path(opts.spec).stem} on {task.name}, K={opts.k}, "
                                                    f"seed {settings.seed}")
    t_eval = time.time()
    to_device_model(model, speed)            # scored as `peltc eval` scores it: the run's device and precision
    with autocast(speed):
        test, gates, warn = task.score(model, tokenizer, enc["test"])
    eval_s = time.time() - t_eval
    table = gates_table(gates)
    with signals.deferred():
        write_json(run_dir / "gates.json", table)
        title = f"{Path(opts.spec).stem} on {task.name}, K={opts.k}, seed {settings.seed}"
        plot_gates(table, run_dir / "gates.png", title)
        log_history = result.pop("log_history")
        write_json(run_dir / "trainer_log.json", log_history)
        plot_curves(log_history, task.main_metric, run_dir / "curves.png", title,
                    best_step=result.get("train", {}).get("best_step"))
        warnings = [w for w in result.get("warnings", []) if w]
        idle = sched.warning()
        if idle and idle not in warnings:
            warnings.insert(0, idle)
        if warn and warn not in warnings:
            warnings.append(warn)
        metrics = {
            **result,
            "test": test,
            "schedule": asdict(sched),
            "warnings": warnings,
            "spec": opts.spec,
            "model": mc.ref,
            "k": opts.k,
            "seed": settings.seed,
            "wall_seconds": round(time.time() - t0, 1),
            "eval_examples_per_second": round(len(enc["test"]) / max(eval_s, 1e-9), 1),
            "near_constant": bool(warn),
            "final": True,
        }
        write_json(run_dir / "metrics.json", metrics)
    for ckpt in trainer_dir.glob("checkpoint-*"):
        shutil.rmtree(ckpt, ignore_errors=True)
    (trainer_dir / RESULT).unlink(missing_ok=True)
    metrics["run_dir"] = str(run_dir)
    return metrics


def _reporting(opts: RunOptions, run_dir: Path) -> list:
    """The Trainer's callback for ``--report-to tensorboard`` (transformers' own `TensorBoardCallback`,
    what ``report_to="tensorboard"`` adds), writing its event files to ``run_dir/tensorboard``."""
    if opts.report_to != "tensorboard" or not is_main():
        return []
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback
    return [TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(run_dir / "tensorboard")))]


def _render(ir: IR, path: Path) -> None:
    try:
        from peltc.compiler.render import render
        render(ir, path)
    except Exception as e:   # a missing `dot` must not cost a training run
        print(f"warning: architecture diagram not written: {e}")
