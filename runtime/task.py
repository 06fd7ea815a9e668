"""What a task is to the runtime: the `Task` protocol, and which kind of task a ``--train`` value or a
run's record names.

Three kinds, one module each:

- `task_glue`: ``glue/NAME`` — the paper's GLUE tasks (`task_glue.GlueTask`);
- `task_own`: ``csv:PATH``, ``json:PATH``, ``disk:DIR``, ``hub:NAME[:CONFIG]`` — your own data
  (`task_own.CustomTask`; its files read and checked by `own_files`);
- `task_gen`: ``gen:arith``, ``gen:jsonl:PATH`` — prompt → completion pairs for a decoder's causal LM
  (`task_gen.GenTask`; decoding and scoring in `generation`).

GLUE tasks and your own data classify (or score): they share `classify.Classification`. The run
(`run.py`), the training loop (`train.py`), the diagnostics and serving a run (`serve.py`) call the
methods below and never ask which kind a task is.

A new kind of task is a new module with a task class (a frozen dataclass implementing `Task`) and three
functions — ``claims(ref)`` (does a ``--train`` value name this kind?), ``resolve(opts, say)`` → ``(task,
raw data or None, the run identity's data record or None)`` and ``from_record(manifest)`` → the task an
artifact's manifest records, or None — added to `KINDS` (claims are asked in that order; GLUE, last,
claims the rest).
"""

from __future__ import annotations

from typing import Any, Protocol

from peltc.runtime import task_gen, task_glue, task_own

KINDS = (task_gen, task_own, task_glue)


class Task(Protocol):
    """A task, as every part of a run uses it."""

    name: str                                  # in run folder names, reports, the run's identity
    main_metric: str                           # selects checkpoints (greater is better)
    labels: tuple[Any, ...] | None             # class names in label-id order; None: a score or a completion
    causal_lm: bool                            # the model: a ``*ForCausalLM`` (True) or a classifier with a head
    num_labels: int                            # the head's outputs (0: no head)

    # --- from the spec to tokenised splits -------------------------------------------------------
    def prepare_ir(self, ir, mc, ref: str | None):
        """The spec's IR for this task and model (e.g. the head's pooling), or a UsageError."""

    def load(self, data_dir: str | None = None):
        """The task's data as a DatasetDict (used when `resolve` did not read it already)."""

    def sample(self, raw, k, seed: int, dev_size: int):
        """The run's ``train`` (K), ``dev`` and ``test`` splits (`data.sample`, `data.sample_own`)."""

    def encode(self, splits, tokenizer, max_length: int):
        """The splits tokenised, unpadded."""

    def fit(self, enc) -> "Task":
        """The task as scoring needs it given the tokenised splits (e.g. a decoding budget)."""

    def collator(self, tokenizer):
        """Pads a batch of encoded examples."""

    # --- training and scoring -------------------------------------------------------------------------
    def trainer_metrics(self):
        """``(compute_metrics, preprocess_logits_for_metrics)`` for the Trainer's dev evaluations."""

    def init_head(self, model, settings, train) -> None:
        """Start the task head as the settings say (nothing without a head)."""

    def test_warnings(self, predictions, test: dict[str, float], pool: str | None = None) -> list[str]:
        """Warnings about the Trainer's test predictions (a constant predictor; ``pool``, the head's pooling,
        shapes the advice)."""

    def score(self, model, tokenizer, test):
        """``(metrics, mean gates, warning or None)`` of the saved model on the tokenised test split."""

    def probe(self, tokenizer, sub, parts: list[list[int]]):
        """The diagnostics probe: ``batches``, ``labels``, ``head(model)``, ``forward(model, device)``,
        ``read_at(model, feats)``, ``predictions(forward's result)``."""

    # --- records and serving --------------------------------------------------------------------------
    def run_record(self) -> dict[str, Any]:
        """What run.json records of the task beyond its name."""

    def artifact_record(self) -> dict[str, Any]:
        """What the artifact's manifest records of the task (the kind's ``from_record`` reads it back)."""

    def eval_split(self, run_dir, run: dict[str, Any], data_dir: str | None, tokenizer, max_length: int):
        """`peltc eval`'s tokenised test split and notes (data changed since the run)."""

    def check_serves(self, command: str, run_dir) -> None:
        """A UsageError (U132) when a run of this task cannot serve ``command`` (predict, generate)."""


def kind_of(ref: str | None):
    """The module of the kind of task ``ref`` (a ``--train`` value) names."""
    return next(kind for kind in KINDS if kind.claims(ref))


def resolve(opts, say=print):
    """``(task, raw data or None, the run identity's data record or None)`` for ``opts.task``; anything that
    does not apply to that kind of task is refused here, before weights load."""
    from peltc.errors import UsageError

    kind = kind_of(opts.task)
    size = getattr(opts, "test_size", None)
    if size is not None and kind is not task_gen:
        raise UsageError(f"--test-size applies to generation tasks (gen:…), not to '{opts.task}'", code="U130",
                         help="a classification task's test set is GLUE's dev set, or your --test FILE")
    if size is not None and size < 1:
        raise UsageError(f"--test-size {size} is out of range", code="U106",
                         help="--test-size (the generation test examples scored) must be ≥ 1")
    return kind.resolve(opts, say)


def from_record(manifest: dict[str, Any]) -> Task:
    """The task an artifact's manifest records (your own data's, a generation task's, else the GLUE task
    it names)."""
    for kind in (task_own, task_gen, task_glue):
        found = kind.from_record(manifest)
        if found is not None:
            return found
    raise AssertionError("task_glue.from_record always answers")   # pragma: no cover
