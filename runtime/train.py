"""The training / evaluation job: a compiled model, tokenised splits and settings in; metrics out.

The loop is the Hugging Face ``Trainer``: it evaluates on ``dev`` every epoch (or every
``eval_steps``), saves a checkpoint at each evaluation (safetensors), stops early when the task's
main metric has not improved for ``patience`` evaluations (but never before ``min_steps``
optimiser steps), restores the best checkpoint from ``min_steps`` on (any, in a shorter run), then
reports ``dev`` and ``test``.

    settings = resolve_settings(ir.settings.train, cli_overrides, finetune=False)
    result = train(model, tokenizer, enc, task("sst2"), settings, run_dir / "trainer")

``train`` does not build or compile the model: call ``transformers.set_seed(settings.seed)``
before ``peltc.api.compile_model`` so that the new parameters are initialised per seed too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from peltc.errors import ArtifactError, UsageError
from peltc.runtime import signals

# The recipe and the settings (recipe ← spec ← command line) live in peltc.runtime.settings, which
# imports no torch, so bad flags are refused before anything heavy loads; re-exported here.
from peltc.runtime.settings import (  # noqa: E402,F401
    SETTING_NAMES,
    TrainSettings,
    check_option,
    default_recipe,
    resolve_settings,
    schedule,
)


class EarlyStopping(EarlyStoppingCallback):
    """``EarlyStoppingCallback`` that does not count evaluations before ``min_steps`` optimiser
    steps: a low-resource run often scores flat (a constant predictor) for its first epochs, and
    stopping there throws the run away. After ``min_steps`` it stops after ``patience``
    evaluations without improvement. Its state is saved in checkpoints, so ``--resume`` continues
    the count."""

    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float | None = 0.0,
                 min_steps: int = 0):
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.min_steps = min_steps

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if state.global_step < self.min_steps:
            self.early_stopping_patience_counter = 0
            return
        super().on_evaluate(args, state, control, metrics, **kwargs)

    def state(self) -> dict:
        s = super().state()
        s["args"]["min_steps"] = self.min_steps
        return s


class PeltTrainer(Trainer):
    """``Trainer`` with an optional separate learning rate for the task head and for each PELT
    instance that sets ``lr`` in the spec.

    The optimiser holds only parameters with ``requires_grad`` (the compiled model's ``pelt_``
    parameters and the head; everything for full fine-tuning). Parameter groups, by weight decay
    and by owner: the head (``head_lr``) when ``head_lr`` is set, each instance in ``instance_lrs``
    (its parameters are those below ``pelt_<kind>.<instance>.``; with ``base_instance``, the name of
    a ``finetune`` instance, that instance owns every other trainable base weight), and the rest at
    the run's ``learning_rate``. ``param_group_owners`` names each group's owner (None: the rest),
    in the optimiser's order. LoRA+ (``lr_ratios``, a LoRA instance's ``lr_ratio`` λ): that instance's
    B matrices (and DoRA magnitudes: peft's ``create_loraplus_optimizer`` puts every 1-d parameter with B)
    form their own groups at λ × the instance's lr (``param_group_ratios``: each group's λ, 1 for the
    rest). ``gate_lr``: every gate's parameters (found as `Gate` modules) form their own group
    at that lr, whoever owns them otherwise (UniPELT's gates learning faster or slower than the modules
    they gate). The schedule (``LambdaLR``) scales every group from its own lr."""

    def __init__(self, *args, head_lr: float | None = None, head_prefixes: tuple[str, ...] = (),
                 instance_lrs: Mapping[str, float] | None = None, base_instance: str | None = None,
                 select_from: int = 0, lr_ratios: Mapping[str, float] | None = None,
                 gate_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.select_from = select_from
        self.head_lr = head_lr
        self.head_prefixes = head_prefixes
        self.instance_lrs = dict(instance_lrs or {})
        self.base_instance = base_instance
        self.param_group_owners: list[str | None] = []
        self.lr_ratios = dict(lr_ratios or {})
        self.param_group_ratios: list[float] = []
        self.gate_lr = gate_lr

    def param_owner(self, name: str, gates: frozenset[int] = frozenset(), p=None) -> tuple[str, str | None]:
        """Whose learning rate a trainable parameter takes, as (kind, label): ``("head", "head")``,
        ``("gate", "gate")`` (a parameter of a `Gate` module, ``gates`` their ids, with ``gate_lr``),
        ``("instance", name)`` for an instance of ``instance_lrs``, or ``("run", None)`` (the run's lr).
        The kind keeps an instance that happens to be named ``head`` or ``gate`` apart."""
        from peltc.compiler.torch.report import _instance_of

        if self.head_prefixes and name.startswith(self.head_prefixes):
            return ("head", "head") if self.head_lr is not None else ("run", None)
        if self.gate_lr is not None and p is not None and id(p) in gates:
            return ("gate", "gate")
        inst = _instance_of(name) if "pelt_" in name else self.base_instance
        return ("instance", inst) if inst in self.instance_lrs else ("run", None)

    def param_ratio(self, name: str) -> float:
        """LoRA+'s λ for a trainable parameter: its LoRA instance's ``lr_ratio`` for a B matrix or a DoRA
        magnitude (``…pelt_lora.<instance>.B.weight`` / ``.magnitude``), else 1."""
        from peltc.compiler.torch.report import _instance_of

        if ".pelt_lora." not in name:
            return 1.0
        inst = _instance_of(name)
        ratio = self.lr_ratios.get(inst or "")
        return ratio if ratio is not None and name.endswith((f".{inst}.B.weight", f".{inst}.magnitude")) else 1.0

    def _determine_best_metric(self, metrics, trial):
        """The stock best-checkpoint bookkeeping, but an evaluation before ``select_from`` steps (the
        recipe's ``min_steps``) is never the best, unless the run is no longer than that: a K = 100
        run's first evaluation is often still a constant predictor (on the K = 100 grid's dev probes, 88
        of 197 step-30 evaluations against 24 of 788 later ones: docs/results/grid-k100-dynamics.json), and when its dev score beats what
        follows — MRPC's all-"paraphrase" F1, a barely-moved regression — restoring it returns a model
        that has learned nothing."""
        if self.state.global_step < self.select_from < self.state.max_steps:
            return False
        return super()._determine_best_metric(metrics, trial)

    def _save_checkpoint(self, model, trial):
        """The stock checkpoint, written with signals held until it is complete, then marked complete
        (`COMPLETE`): `--resume` never picks a checkpoint that a crash or kill cut short."""
        with signals.deferred():
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
                if folder.is_dir():
                    _write_marker(folder)

    def get_decay_parameter_names(self, model) -> list[str]:
        """The stock names, less the parameters behind a torch parametrisation (LoReFT's orthogonal R:
        the Householder form keeps its signs on the diagonal of ``original``, which decay would zero)."""
        return [n for n in super().get_decay_parameter_names(model) if ".parametrizations." not in n]

    def create_optimizer(self, model=None):
        head = self.head_lr is not None and bool(self.head_prefixes)
        if self.optimizer is not None or not (head or self.instance_lrs or self.lr_ratios
                                              or self.gate_lr is not None):
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(opt_model))
        from peltc.compiler.torch.gate import Gate
        gates = frozenset(id(p) for m in opt_model.modules() if isinstance(m, Gate) for p in m.parameters())
        groups: dict[tuple[tuple[str, str | None], float, bool], list] = {}
        for name, p in opt_model.named_parameters():
            if p.requires_grad:
                groups.setdefault((self.param_owner(name, gates, p), self.param_ratio(name), name in decay),
                                  []).append(p)

        def lr_of(kind: str, label: str | None) -> float:
            return {"head": self.head_lr, "gate": self.gate_lr, "run": self.args.learning_rate}.get(
                kind, self.instance_lrs.get(label or ""))

        param_groups = [
            {"params": ps, "weight_decay": self.args.weight_decay if d else 0.0,
             **({"lr": lr_of(*owner) * ratio} if owner[0] != "run" or ratio != 1.0 else {})}
            for (owner, ratio, d), ps in groups.items()]
        self.param_group_owners = [owner[1] for owner, _, _ in groups]
        self.param_group_ratios = [ratio for _, ratio, _ in groups]
        cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        self.optimizer = cls(param_groups, **kwargs)
        return self.optimizer


def training_arguments(settings: TrainSettings, task, output_dir: str | Path,
                       progress: bool = True, **overrides) -> TrainingArguments:
    """The ``TrainingArguments`` of a run: evaluation and saving on the same interval, the best
    checkpoint by the task's main metric restored at the end, no external loggers."""
    strategy = "epoch" if settings.eval_steps is None else "steps"
    interval = {} if settings.eval_steps is None else {
        "eval_steps": settings.eval_steps, "save_steps": settings.eval_steps,
        "logging_steps": settings.eval_steps}
    kwargs = dict(
        output_dir=str(output_dir),
        learning_rate=settings.lr,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        # a float below 1 is a ratio of total steps (1.0 would read as one step)
        warmup_steps=min(float(settings.warmup), 0.999999),
        weight_decay=settings.weight_decay,
        eval_strategy=strategy,
        save_strategy=strategy,
        logging_strategy=strategy,
        **interval,
        load_best_model_at_end=True,
        metric_for_best_model=task.main_metric,
        greater_is_better=True,
        save_total_limit=2,                    # the best and the latest (for --resume)
        restore_callback_states_from_checkpoint=True,
        seed=settings.seed,
        train_sampling_strategy="group_by_length" if settings.group_by_length else "random",
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available() and not overrides.get("use_cpu"),
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def head_prefixes(model) -> tuple[str, ...]:
    """Parameter-name prefixes of the task head (``classifier.`` for BERT), from the family table."""
    from peltc.compiler.archs import family_of_model

    family = family_of_model(model)
    heads = family.head if family else ("classifier",)
    return tuple(f"{h}." for h in heads)


def instance_lrs(model) -> tuple[dict[str, float], str | None]:
    """The learning rates the spec sets per instance (``lr``), read from the compiled model's IR,
    and the name of its ``finetune`` instance (which owns the trainable base weights), if any.
    ``({}, None)`` for a model that peltc did not compile."""
    c = model.__dict__.get("_pelt")
    if c is None:
        return {}, None
    insts = c.ir.instances()
    lrs = {i.name: float(i.params["lr"]) for i in insts if i.params.get("lr") is not None}
    from peltc.compiler.schema import host_of
    return lrs, next((i.name for i in insts if host_of(i.method) == "model"), None)


def lr_ratios(model) -> dict[str, float]:
    """LoRA+: each LoRA instance's ``lr_ratio`` other than 1, from the compiled model's IR ({} for a model
    that peltc did not compile)."""
    c = model.__dict__.get("_pelt")
    if c is None:
        return {}
    return {i.name: float(i.params["lr_ratio"]) for i in c.ir.instances()
            if i.method == "lora" and float(i.params.get("lr_ratio", 1.0)) != 1.0}


def train(model, tokenizer, splits, task, settings: TrainSettings, output_dir: str | Path, *,
          resume: bool | str = False, progress: bool = True, keep_checkpoints: bool = False,
          callbacks: Iterable = (), evaluate_test: bool = True,
          instance_lr: Mapping[str, float] | None = None, speed=None, **argument_overrides) -> dict[str, Any]:
    """Train ``model`` on ``splits["train"]``, select on ``splits["dev"]``, report on ``splits["test"]``.

    ``splits``: tokenised (``task.encode``). ``output_dir``: where checkpoints go.
    ``resume``: True continues from the last checkpoint in ``output_dir`` (a fresh start when there
    is none yet); a path continues from that checkpoint. ``keep_checkpoints=False`` deletes the
    checkpoints after a finished run (the caller saves the adapter-only artifact).
    ``evaluate_test=False`` leaves the test set to the caller (`peltc compile` scores it once, on
    the saved artifact, reading the gates in the same pass). ``instance_lr``: a learning rate per
    PELT instance, each instance's parameters in their own optimiser group (default: the ``lr``
    each instance of the compiled model's spec sets, `instance_lrs`). ``speed``: the device, the autocast
    precision and ``torch_compile`` (`runtime.speed.Speed`, resolved here; default the best device, fp32, eager),
    handed to the Trainer as its arguments; compiled, every batch's shapes are marked dynamic.

    Returns a JSON-ready dict: ``dev.history`` (one entry per evaluation: epoch, step, metrics),
    ``dev.best`` (the restored checkpoint's dev metrics), ``test``, ``train`` (steps, epochs, loss,
    throughput, stopped early or not), ``warnings`` (e.g. a constant predictor), and ``log_history``.
    """
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise UsageError("the model has no trainable parameters", code="U105",
                         help="the spec must attach at least one method (or finetune)")
    output_dir = Path(output_dir)
    lrs, base_instance = instance_lrs(model)
    if instance_lr is not None:
        lrs = dict(instance_lr)
    from peltc.runtime import speed as S
    speed = S.resolve(speed)
    args = training_arguments(settings, task, output_dir, progress=progress,
                              **{**S.training_arguments(speed), **argument_overrides})
    compute, preprocess = task.trainer_metrics()
    collate = task.collator(tokenizer)
    if speed.torch_compile and not task.causal_lm and getattr(model.config, "problem_type", "") is None:
        # what the model's first loss would set (a config change there recompiles the whole graph)
        model.config.problem_type = "regression" if model.config.num_labels == 1 else "single_label_classification"
    trainer = PeltTrainer(
        model=model,
        args=args,
        train_dataset=splits["train"],
        eval_dataset=splits["dev"],
        processing_class=tokenizer,
        data_collator=S.DynamicCollator(collate) if speed.torch_compile else collate,
        compute_metrics=compute,
        preprocess_logits_for_metrics=preprocess,
        callbacks=[EarlyStopping(settings.patience, min_steps=settings.min_steps), *callbacks],
        head_lr=settings.head_lr,
        head_prefixes=head_prefixes(model),
        instance_lrs=lrs,
        base_instance=base_instance,
        select_from=settings.min_steps,
        lr_ratios=lr_ratios(model),
        gate_lr=settings.gate_lr,
    )

    task.init_head(model, settings, splits["train"])      # a causal LM has no task head
    checkpoint = None
    if isinstance(resume, (str, Path)):
        checkpoint = str(resume)
    elif resume and output_dir.is_dir():
        found = last_checkpoint(output_dir)
        checkpoint = str(found) if found else None
    if checkpoint is not None:
        validate_checkpoint(Path(checkpoint))
    started = _Started()
    trainer.add_callback(started)
    trainer.add_callback(signals.callback())
    try:
        out = trainer.train(resume_from_checkpoint=checkpoint)
    except Exception as e:
        if checkpoint is None or started.begun:
            raise
        # failed while restoring the checkpoint, before the first step: the optimiser / scheduler
        # state of a checkpoint written under other settings (e.g. a separate task-head learning
        # rate adds a parameter group) or by another peltc version
        raise ArtifactError(f"cannot resume from {checkpoint}: its training state does not match this run "
                            f"({e})", code="A013",
                            help="resume with the settings the run started with, or start it again in a "
                                 "new --out folder (or delete the checkpoint-* folders)") from e
    history = [{"epoch": h.get("epoch"), "step": h.get("step"), **_strip(h, "eval")}
               for h in trainer.state.log_history if f"eval_{task.main_metric}" in h]

    best_step = _checkpoint_step(trainer.state.best_model_checkpoint)
    dev = next((h for h in history if h["step"] == best_step), None)   # the restored best checkpoint
    if dev is None:                                # no evaluation logged for it: evaluate it again
        dev = _strip(trainer.evaluate(splits["dev"]), "eval")
    else:
        dev = {k: v for k, v in dev.items() if k not in ("epoch", "step")}
    test, warnings = None, []
    if evaluate_test:
        pred = trainer.predict(splits["test"], metric_key_prefix="test")
        test = _strip(pred.metrics, "test")
        from peltc.runtime.classify import head_pool
        warnings = task.test_warnings(pred.predictions, test, pool=head_pool(model))
    max_steps = schedule(settings, len(splits["train"]), args.world_size).steps
    result = {
        "task": task.name,
        "main_metric": task.main_metric,
        "settings": settings.to_dict(),
        "sizes": {s: len(splits[s]) for s in ("train", "dev", "test")},
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "dev": {"history": history, "best": dev},
        **({"test": test} if evaluate_test else {}),
        "speed": speed.to_dict(),
        "train": {
            "steps": trainer.state.global_step,
            "epochs": trainer.state.epoch,
            "max_steps": max_steps,
            "stopped_early": trainer.state.global_step < max_steps,
            "best_step": best_step,
            "resumed_from": checkpoint,
            **({"instance_lrs": lrs} if lrs else {}),
            **_strip(out.metrics, "train"),
        },
        "warnings": warnings,
        "log_history": trainer.state.log_history,
    }
    if not keep_checkpoints and trainer.is_world_process_zero():
        for ckpt in output_dir.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)
    return result


# --- checkpoints ----------------------------------------------------------------------------------

COMPLETE = "peltc-complete.json"   # written into a checkpoint folder once everything in it is saved


def _write_marker(folder: Path) -> None:
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()}
    tmp = folder / f".{COMPLETE}.tmp"
    tmp.write_text(json.dumps({"files": files}), encoding="utf-8")
    os.replace(tmp, folder / COMPLETE)


def checkpoint_info(folder: Path) -> dict[str, Any]:
    """Step, best dev metric so far and its step, read from a checkpoint's ``trainer_state.json``."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"step": _checkpoint_step(str(folder))}
    return {"step": state.get("global_step"), "best_metric": state.get("best_metric"),
            "best_step": _checkpoint_step(state.get("best_model_checkpoint"))}


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The latest *complete* ``checkpoint-N`` in ``output_dir`` (one with the `COMPLETE` marker)."""
    output_dir = Path(output_dir)
    found = []
    for d in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
        step = _checkpoint_step(str(d))
        if d.is_dir() and step is not None and (d / COMPLETE).is_file():
            found.append((step, d))
    return max(found)[1] if found else None


def validate_checkpoint(folder: Path) -> None:
    """Every file the checkpoint's marker lists is there at its size, every safetensors file's header
    reads, the trainer state parses: else an ArtifactError naming the file (A014) — never a traceback
    from deep inside the Trainer."""
    from safetensors import safe_open

    def bad(path: Path, why: str):
        return ArtifactError(f"checkpoint file '{path}' is damaged: {why}", code="A014",
                             help="delete that checkpoint folder to resume from an earlier one, or start "
                                  "the run again in a new --out folder")

    marker = folder / COMPLETE
    try:
        listed = json.loads(marker.read_text(encoding="utf-8")).get("files", {}) if marker.is_file() else {}
    except (OSError, json.JSONDecodeError) as e:
        raise bad(marker, str(e)) from None
    for name, size in listed.items():
        p = folder / name
        if not p.is_file():
            raise bad(p, "missing")
        if p.stat().st_size != size:
            raise bad(p, f"{p.stat().st_size:,} bytes, {size:,} when it was written (truncated?)")
    for p in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(p), "pt") as f:
                f.keys()
        except Exception as e:   # SafetensorError and OSError: a damaged or unreadable file
            raise bad(p, str(e)) from None
    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise bad(state, str(e)) from None


class _Started(TrainerCallback):
    """Records that training began (the Trainer calls ``on_train_begin`` once a checkpoint's model,
    optimiser and scheduler state are restored), so a resume failure can be told from a later one."""

    begun = False

    def on_train_begin(self, args, state, control, **kwargs):
        self.begun = True


def _strip(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """``{"eval_accuracy": .9, "epoch": 1}`` → ``{"accuracy": .9}`` (prefixed keys only)."""
    p = f"{prefix}_"
    return {k[len(p):]: _plain(v) for k, v in metrics.items() if k.startswith(p)}


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _checkpoint_step(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return int(Path(path).name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None
