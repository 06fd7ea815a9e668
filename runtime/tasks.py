"""The GLUE tasks the paper uses, as data: where each task's text and label live (in the original
GLUE TSV files and on the Hub), its labels, its metrics and the metric that selects checkpoints;
and `CustomTask`, the same facts for a user's own data set (``--train csv:…``, see ``data.py``).

Nothing here reads files or imports torch; ``data.py`` and ``metrics.py`` read these tables.

>>> TASKS["mrpc"].main_metric
'f1'
>>> task("glue/sts-b").name
'stsb'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from peltc.errors import UsageError, did_you_mean

HUB_ID = "nyu-mll/glue"


class _Labelled:
    """What the runtime asks of any task: regression or not, head size, one text or a pair
    (from the dataclass fields ``labels`` — None for a score — and ``columns``)."""

    labels: tuple[str, ...] | None
    columns: tuple[str, ...]

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output size of the classification head (1 for regression)."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        return len(self.columns) == 2


@dataclass(frozen=True)
class GlueTask(_Labelled):
    name: str                          # the Hub config name: cola, sst2, ...
    dir: str                           # the folder of the original GLUE layout: CoLA, SST-2, ...
    columns: tuple[str, ...]           # text columns as the Hub names them (one, or a pair)
    labels: tuple[str, ...] | None     # class names in label-id order (the Hub's ClassLabel); None: regression
    metrics: tuple[str, ...]           # what metrics.GlueMetric reports for this task
    main_metric: str                   # the paper's metric; selects the best checkpoint
    # the local TSV files (original GLUE layout, csv.QUOTE_NONE, tab-separated)
    tsv_header: bool                   # False: CoLA, whose files have no header row
    tsv_columns: tuple[str | int, ...] # text columns: header names, or 0-based indices without a header
    tsv_label: str | int               # label column: header name, or 0-based index
    tsv_labels: tuple[str, ...] | None # label strings in the TSV, in label-id order (None: a float score)
    tsv_ncols: int | None = None       # column count of a headerless file (with a header: the header's)
    dev_split: str = "validation"      # the Hub split used as the test set
    dev_file: str = "dev.tsv"          # the local file of that split


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"),
             ("matthews_correlation",), "matthews_correlation",
             tsv_header=False, tsv_columns=(3,), tsv_label=1, tsv_labels=_BINARY, tsv_ncols=4),
    GlueTask("sst2", "SST-2", ("sentence",), ("negative", "positive"),
             ("accuracy",), "accuracy",
             tsv_header=True, tsv_columns=("sentence",), tsv_label="label", tsv_labels=_BINARY),
    GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
             ("f1", "accuracy"), "f1",
             tsv_header=True, tsv_columns=("#1 String", "#2 String"), tsv_label="Quality", tsv_labels=_BINARY),
    GlueTask("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"),
             ("f1", "accuracy"), "f1",
             tsv_header=True, tsv_columns=("question1", "question2"), tsv_label="is_duplicate",
             tsv_labels=_BINARY),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), None,
             ("pearson", "spearmanr"), "spearmanr",
             tsv_header=True, tsv_columns=("sentence1", "sentence2"), tsv_label="score", tsv_labels=None),
    GlueTask("mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
             ("accuracy",), "accuracy",
             tsv_header=True, tsv_columns=("sentence1", "sentence2"), tsv_label="gold_label",
             tsv_labels=("entailment", "neutral", "contradiction"),
             dev_split="validation_matched", dev_file="dev_matched.tsv"),
    GlueTask("qnli", "QNLI", ("question", "sentence"), _NLI2,
             ("accuracy",), "accuracy",
             tsv_header=True, tsv_columns=("question", "sentence"), tsv_label="label", tsv_labels=_NLI2),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), _NLI2,
             ("accuracy",), "accuracy",
             tsv_header=True, tsv_columns=("sentence1", "sentence2"), tsv_label="label", tsv_labels=_NLI2),
)}

# Other spellings users write: the GLUE folder names, with or without the dash, any case.
_ALIASES = {t.dir.lower(): t.name for t in TASKS.values()} | {
    t.dir.lower().replace("-", ""): t.name for t in TASKS.values()}


def task(ref: str) -> GlueTask:
    """The task named by ``ref``: ``cola``, ``glue/cola``, ``CoLA``, ``sst-2``, ``STS-B`` ...

    Raises UsageError listing the valid names for anything else.
    """
    name = ref.strip()
    if name.lower().startswith("glue/"):
        name = name[5:]
    key = name.lower()
    key = key if key in TASKS else _ALIASES.get(key, key)
    if key not in TASKS:
        raise UsageError(f"unknown GLUE task '{ref}'", code="U113",
                         help=did_you_mean(name.lower(), TASKS, "tasks"))
    return TASKS[key]


# --- your own data ------------------------------------------------------------------------------

CUSTOM_METRICS = {   # task type → (metrics reported, the one that selects checkpoints)
    "classification": (("accuracy", "f1_macro"), "accuracy"),
    "regression": (("pearson", "spearmanr"), "spearmanr"),
}
TEXT = "text"            # the dataset column names a custom task's texts get, whatever the file calls them
TEXT_PAIR = "text_pair"


@dataclass(frozen=True)
class CustomTask(_Labelled):
    """A classification or regression task over a user's own data: what the runtime reads of a
    `GlueTask` (name, columns, labels, is_regression, num_labels, metrics, main_metric), plus where
    the data came from. Built by ``data.load_own``; round-trips through JSON (``to_dict`` /
    ``from_dict``), so a run folder's manifest reloads it.

    >>> t = CustomTask("reviews", ("text",), ("neg", "pos"), text_columns=("review",))
    >>> (t.main_metric, t.num_labels, t.metric_config)
    ('accuracy', 2, 'custom-classification')
    """

    name: str                                  # shown in run folder names and reports (the file's stem)
    columns: tuple[str, ...]                   # the datasets' text columns: ("text",) or ("text", "text_pair")
    labels: tuple[Any, ...] | None             # the label set in label-id order (str, int, …); None: regression
    text_columns: tuple[str, ...] = ()         # the same columns as the user's files name them
    label_column: str = "label"                # the label column as the user's files name it
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)   # data.OwnData.to_dict()

    @property
    def task_type(self) -> str:
        return "regression" if self.labels is None else "classification"

    @property
    def metrics(self) -> tuple[str, ...]:
        return CUSTOM_METRICS[self.task_type][0]

    @property
    def main_metric(self) -> str:
        return CUSTOM_METRICS[self.task_type][1]

    @property
    def metric_config(self) -> str:
        """The config name of its `metrics.GlueMetric`: ``custom-classification`` / ``custom-regression``."""
        return f"custom-{self.task_type}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "task_type": self.task_type, "columns": list(self.columns),
                "labels": None if self.labels is None else list(self.labels),
                "text_columns": list(self.text_columns), "label_column": self.label_column, "data": self.data}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CustomTask":
        labels = d.get("labels")
        return cls(name=d["name"], columns=tuple(d["columns"]), labels=None if labels is None else tuple(labels),
                   text_columns=tuple(d.get("text_columns") or d["columns"]),
                   label_column=d.get("label_column", "label"), data=d.get("data") or {})


# --- generation tasks (causal LM) ---------------------------------------------------------------

GEN_PREFIX = "gen:"
GEN_BUILTIN = {   # gen:NAME → what it is (data.gen_examples makes its examples)
    "arith": "additions of two 2–3 digit numbers: '123+45=' → '168'",
}
PROMPT, COMPLETION = "prompt", "completion"


@dataclass(frozen=True)
class GenTask:
    """A generation task for a decoder's ``*ForCausalLM``: prompt → completion pairs, the loss on the
    completion tokens only, scored by exact match of the greedy completion (stripped) with the
    reference. ``gen:arith`` is built in (``data.gen_examples``, deterministic); ``gen:jsonl:PATH``
    reads a user's JSON Lines of ``{"prompt": …, "completion": …}``, with ``validation`` / ``test`` files of
    the same form when given (``--validation`` / ``--test``). Round-trips through JSON, so a run folder's
    manifest reloads it.

    >>> t = gen_task("gen:arith")
    >>> (t.name, t.main_metric, t.is_generation)
    ('arith', 'exact_match', True)
    """

    name: str                                   # arith, or the JSONL file's stem
    source: str                                 # "arith", or "jsonl"
    path: str | None = None                     # the JSONL file (absolute)
    max_new_tokens: int = 16                    # greedy decoding budget when scoring (and peltc generate's default)
    validation: str | None = None               # gen:jsonl: the dev set's JSONL file (absolute); None: held out
    test: str | None = None                     # gen:jsonl: the test set's JSONL file (absolute); None: held out
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)   # e.g. the file's sha256

    is_generation = True
    labels = None
    columns = (PROMPT, COMPLETION)
    metrics = ("exact_match",)
    main_metric = "exact_match"
    is_regression = False
    is_pair = False
    num_labels = 0

    @property
    def ref(self) -> str:
        return f"{GEN_PREFIX}{self.source}" + (f":{self.path}" if self.path else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "path": self.path,
                "max_new_tokens": self.max_new_tokens, "data": self.data,
                **({"validation": self.validation} if self.validation else {}),
                **({"test": self.test} if self.test else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenTask":
        return cls(name=d["name"], source=d["source"], path=d.get("path"),
                   max_new_tokens=int(d.get("max_new_tokens") or 16), data=d.get("data") or {},
                   validation=d.get("validation"), test=d.get("test"))


def is_gen(ref: Any) -> bool:
    """``ref`` names a generation task (``gen:arith``, ``gen:jsonl:PATH``), or is a `GenTask`."""
    return isinstance(ref, GenTask) or (isinstance(ref, str) and ref.strip().lower().startswith(GEN_PREFIX))


def gen_task(ref: str) -> GenTask:
    """``gen:arith`` or ``gen:jsonl:PATH`` (the path made absolute; not read here)."""
    import os

    rest = ref.strip()[len(GEN_PREFIX):]
    kind, _, path = rest.partition(":")
    if kind.lower() == "jsonl":
        if not path:
            raise UsageError(f"'{ref}' names no file", code="U114", help="--train gen:jsonl:PATH (JSON Lines of "
                                                                         "{\"prompt\": …, \"completion\": …})")
        full = os.path.abspath(os.path.expanduser(path))
        stem = os.path.splitext(os.path.basename(full))[0] or "data"
        return GenTask(name=stem, source="jsonl", path=full, max_new_tokens=32)
    if kind.lower() in GEN_BUILTIN and not path:
        return GenTask(name=kind.lower(), source=kind.lower(), max_new_tokens=6)
    raise UsageError(f"unknown generation task '{ref}'", code="U115",
                     help=did_you_mean(kind.lower(), [*GEN_BUILTIN, "jsonl"], "generation tasks")
                     + "; the forms are gen:arith and gen:jsonl:PATH")
