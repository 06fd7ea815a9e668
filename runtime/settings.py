"""The settings of a training run: the recipe, the spec's ``train { }`` block and command-line flags
merged into one `TrainSettings` (command line wins), each value checked against the ranges of
`peltc.compiler.schema.TRAIN_PARAMS` — the same table the spec's values are checked with.

No torch here: `peltc compile` refuses a bad flag before importing the training stack.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from peltc.compiler.schema import RECIPE_POOL, TRAIN_PARAMS
from peltc.errors import UsageError, did_you_mean
from peltc.runtime import data as _data

# The recipe every spec runs with unless its `train { }` block or the command line says otherwise.
# Chosen on MiniLM at K = 100 (measured with the paper's sampling, seed 1, dev 500, on SST-2, where a
# logistic-regression probe on the frozen mean embeddings of the same 100 examples scores 71.7%):
# - pool mean, bypassing BERT's frozen pretrained pooler: MiniLM is a sentence-embedding model trained
#   with mean pooling; the probe scores 69.0% on the mean but 58.4% through tanh(dense(mean)) and
#   61.8% on the first token (seed 1, dev 1000). BitFit went 69.7% → 72.6% with the bypass;
# - lr 1e-3 for PELT parameters (few, starting at zero or small); 2e-5 for the base weights in full
#   fine-tuning; head_lr 1e-3 for the freshly initialised task head in every case (full fine-tuning
#   on SST-2: 61.2% with the head at 2e-5, 68.9% at 1e-3);
# - 20 epochs (140 steps at K = 100, batch 16): dev accuracy still rises at 70 steps;
# - evaluate every 30 steps (not every 7-step epoch): evaluating 1,000 dev examples is the dominant
#   cost of a low-resource run on a CPU;
# - min_steps 60, then patience 3 evaluations: low-resource runs sit at a constant predictor for
#   their first steps, and early stopping must not end a run on that plateau, nor restore a checkpoint
#   from it: the best checkpoint is chosen among the evaluations from min_steps on (on the K = 100
#   grid's dev probes, 88 of 197 step-30 evaluations are near-constant predictors, 24 of 788 later
#   ones: docs/results/grid-k100-dynamics.json, the dynamics table of docs/results.md; adopted after
#   the grid's test-set flags had been seen, as docs/results.md says);
# - head_bias prior: the head's output bias starts at the constant predictor's optimum (the training
#   labels' mean for regression, log class frequencies for classification). With a zero bias and STS-B
#   labels averaging 2.7, Adam moves the bias by at most ~lr per step, so the fastest way down the MSE
#   is for a prefix to blow its K/V norms up (5 → 40–60 in 30 steps), take 50–95% of the attention and
#   write one vector into every token: the features collapse (cosine to their mean 1.0) and every
#   prefix-holding spec is a constant predictor (test Spearman 0.04). With the prior: prefix dev
#   Spearman 0.16 → 0.41, UniPELT (APL) 0.16 → 0.42 (seed 1, dev 500); CoLA dev MCC within noise
#   (APL 0.070 → 0.055, LoRA 0.041 → 0.070). docs/results.md has the diagnostics.
default_recipe: dict[str, Any] = {
    "pool": RECIPE_POOL,
    "lr": 1e-3,
    "finetune_lr": 2e-5,
    "epochs": 20.0,
    "batch_size": 16,
    "warmup": 0.06,
    "weight_decay": 0.0,
    "head_lr": 1e-3,
    "patience": 3,
    "min_steps": 60,
    "eval_steps": 30,
    "max_length": _data.MAX_LENGTH,
    "seed": 1,
    "eval_batch_size": 32,
    "group_by_length": False,
    "head_bias": "prior",
}


@dataclass(frozen=True)
class TrainSettings:
    """Every knob of one run. Build with ``resolve_settings`` (recipe ← spec ← command line)."""

    lr: float
    epochs: float
    batch_size: int
    warmup: float                  # ratio of total optimiser steps
    weight_decay: float
    patience: int                  # evaluations without improvement (counted after min_steps)
    min_steps: int                 # optimiser steps before early stopping may stop a run
    eval_steps: int | None         # None: evaluate (and save) once per epoch
    max_length: int
    seed: int
    head_lr: float | None = None   # learning rate of the task head (None: lr)
    eval_batch_size: int = 32
    group_by_length: bool = False  # length-grouped training batches (less padding, less shuffling)
    head_bias: str = "zero"        # "prior": the head's output bias starts at the constant predictor's optimum
    head_weights: str = "random"   # "zero": the head's output weights start at 0
    gate_lr: float | None = None   # learning rate of every gate's parameters (None: its instance's lr)

    def to_dict(self) -> dict[str, Any]:
        """Every setting; those added after runs were recorded (`LATER`) only when set, so an earlier run's
        identity (`runfolder.run_identity`, hashed) stays what it was."""
        return {k: v for k, v in asdict(self).items() if not (k in LATER and v is None)}


# settings added after the first recorded runs: left out of `TrainSettings.to_dict` while unset
LATER = ("gate_lr",)


SETTING_NAMES = tuple(f.name for f in fields(TrainSettings))


def resolve_settings(spec: Mapping[str, Any] | None = None, cli: Mapping[str, Any] | None = None,
                     *, finetune: bool = False, recipe: Mapping[str, Any] = default_recipe) -> TrainSettings:
    """Merge the recipe, the spec's ``train { }`` values and command-line values (CLI wins).

    ``None`` values mean "not given" and never override. ``finetune`` picks the recipe's full
    fine-tuning learning rate when neither the spec nor the command line sets ``lr``.
    """
    merged = {k: v for k, v in recipe.items() if k in SETTING_NAMES}
    if finetune and recipe.get("finetune_lr") is not None:
        merged["lr"] = recipe["finetune_lr"]
    for source, what in ((spec, "train setting"), (cli, "option")):
        for k, v in (source or {}).items():
            if k not in SETTING_NAMES:
                raise UsageError(f"unknown {what} '{k}'", code="U104",
                                 help=did_you_mean(k, SETTING_NAMES, "settings"))
            if v is not None:
                if what == "option":
                    check_option(k, v)
                merged[k] = v
    return TrainSettings(**merged)


def check_option(name: str, value: Any) -> None:
    """A command-line training setting within the range the spec's ``train { }`` block allows
    (the same table, `TRAIN_PARAMS`), else a UsageError naming the flag — before anything loads."""
    pspec = TRAIN_PARAMS.get(name)
    if pspec is None or value is None:
        return
    if pspec.type == "choice":
        if value not in pspec.choices:
            flag = f"--{name.replace('_', '-')}"
            raise UsageError(f"{flag} {value!r} is not a valid choice", code="U106",
                             help=did_you_mean(str(value), pspec.choices, f"values of {flag}"))
        return
    if isinstance(value, float) and not math.isfinite(value):
        rng = "a finite number"
    else:
        rng = pspec.out_of_range(value)
    if rng is not None:
        flag = f"--{name.replace('_', '-')}"
        raise UsageError(f"{flag} {value:g} is out of range", code="U106",
                         help=f"{flag} ({pspec.doc}) must be {rng}")


@dataclass(frozen=True)
class Schedule:
    """A run's optimiser steps and linear warm-up, as the ``Trainer`` computes them (`schedule`)."""

    steps: int           # optimiser steps in all (epochs × steps per epoch, rounded up)
    steps_per_epoch: int
    warmup_steps: int    # ⌈steps × warmup⌉: the learning rate rises from 0 over these
    trained_steps: int   # steps whose learning rate is above 0 (the first warm-up step's is 0)

    @property
    def trains_nothing(self) -> bool:
        return self.trained_steps == 0

    def line(self, n_train: int, settings: "TrainSettings") -> str:
        """``schedule: 140 optimiser steps (20 epochs × 7 of batch 16 over 100 examples), warm-up 9 steps``."""
        return (f"schedule: {self.steps} optimiser step{'s' * (self.steps != 1)} ({settings.epochs:g} "
                f"epoch{'s' * (settings.epochs != 1)} × {self.steps_per_epoch} of batch {settings.batch_size} over "
                f"{n_train} example{'s' * (n_train != 1)}), warm-up {self.warmup_steps} "
                f"step{'s' * (self.warmup_steps != 1)}")

    def warning(self) -> str | None:
        """The warning of a schedule that trains nothing, else None."""
        if not self.trains_nothing:
            return None
        return (f"this run trains nothing: it has {self.steps} optimiser step, and the linear warm-up "
                f"({self.warmup_steps} step{'s' * (self.warmup_steps != 1)}) starts the learning rate at 0, so "
                "every PELT parameter and the task head keep their initial values; train more steps (a larger "
                "--k or --epochs, a smaller --batch-size) or set --warmup 0")


def schedule(settings: TrainSettings, n_train: int, world_size: int = 1) -> Schedule:
    """The optimiser steps of a run on ``n_train`` examples and its warm-up, as the ``Trainer`` counts them
    (``TrainingArguments.get_warmup_steps`` and the linear schedule's ``lr_lambda``): the learning rate of
    step ``s`` (from 0) is ``s / warmup`` during the warm-up, then decays linearly to 0 at ``steps``."""
    per_epoch = max(1, math.ceil(n_train / (settings.batch_size * max(1, world_size))))
    steps = math.ceil(settings.epochs * per_epoch)
    warmup = math.ceil(steps * min(float(settings.warmup), 0.999999))

    # step 0 of a warm-up has learning rate 0; every later step, in the warm-up or the decay, has more
    return Schedule(steps=steps, steps_per_epoch=per_epoch, warmup_steps=warmup,
                    trained_steps=max(0, steps - (1 if warmup > 0 else 0)))


# `--report-to`: the loggers the Trainer may send a run's logs to (besides trainer_log.json), and the
# package each needs. Checked before anything loads.
REPORT_TO = {"tensorboard": "tensorboard"}


def check_report_to(name: str | None) -> None:
    """A UsageError (U160) when ``--report-to NAME`` needs a package that is not installed."""
    if name is None:
        return
    import importlib.util
    package = REPORT_TO[name]
    if importlib.util.find_spec(package) is None:
        raise UsageError(f"--report-to {name} needs the '{package}' package, which is not installed",
                         code="U160", help=f"pip install {package} (or leave --report-to out: the run's "
                                           "curves are in curves.png and trainer_log.json)")
