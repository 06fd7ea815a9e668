"""GLUE tasks (``--train glue/NAME``): the task table — where each task's text and label live in the
original GLUE TSV files and on the Hub, its labels and the metric that selects checkpoints — and the
`task.Task` a GLUE task is: its data read from ``--data-dir`` / ``$PELT_GLUE_DIR`` (the original layout)
or the Hub, split by the paper's protocol (`data.sample`), classified (`classify.Classification`).

    ds = load_glue(task("rte"), data_dir="../shared/glue")   # DatasetDict: train, dev (original GLUE)

Every split has the Hub's columns (``sentence`` / ``sentence1``, ``sentence2`` / ..., ``label``,
``idx``) whichever source it came from. Local files are read in the original GLUE TSV layout
(tab-separated, ``csv.QUOTE_NONE``); a missing file, a wrong column count or an unknown label is a
DataError whose span names the file and line.

>>> TASKS["mrpc"].main_metric
'f1'
>>> task("glue/sts-b").name
'stsb'
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from peltc.errors import DataError, Span, UsageError, did_you_mean
from peltc.runtime.classify import Classification
from peltc.runtime.data import sample as sample_splits

HUB_ID = "nyu-mll/glue"
ENV_DIR = "PELT_GLUE_DIR"


@dataclass(frozen=True)
class GlueTask(Classification):
    name: str                          # the Hub config name: cola, sst2, ...
    dir: str                           # the folder of the original GLUE layout: CoLA, SST-2, ...
    columns: tuple[str, ...]           # text columns as the Hub names them (one, or a pair)
    labels: tuple[str, ...] | None     # class names in label-id order (the Hub's ClassLabel); None: regression
    main_metric: str                   # the paper's metric; selects the best checkpoint
    # the local TSV files (original GLUE layout, csv.QUOTE_NONE, tab-separated)
    tsv_header: bool                   # False: CoLA, whose files have no header row
    tsv_columns: tuple[str | int, ...] # text columns: header names, or 0-based indices without a header
    tsv_label: str | int               # label column: header name, or 0-based index
    tsv_labels: tuple[str, ...] | None # label strings in the TSV, in label-id order (None: a float score)
    tsv_ncols: int | None = None       # column count of a headerless file (with a header: the header's)
    dev_split: str = "validation"      # the Hub split used as the test set
    dev_file: str = "dev.tsv"          # the local file of that split

    # --- the task.Task protocol (the rest: classify.Classification) -----------------------------
    def load(self, data_dir: str | None = None):
        """The task's ``train`` and ``dev`` splits (`load_glue`)."""
        return load_glue(self, data_dir)

    def sample(self, raw, k, seed: int, dev_size: int):
        return sample_splits(raw, k, seed, dev_size=dev_size)

    def run_record(self) -> dict[str, Any]:
        """What run.json records of the task beyond its name: nothing (the name is the task)."""
        return {}

    def artifact_record(self) -> dict[str, Any]:
        """What the artifact's manifest records of the task (`from_record` reads it back)."""
        return {"task": self.name, "labels": list(self.labels) if self.labels else None}

    def eval_split(self, run_dir, run: dict[str, Any], data_dir: str | None, tokenizer, max_length: int):
        """`peltc eval`'s test split, tokenised (the original GLUE dev set), and notes (none)."""
        import datasets

        from peltc.runtime.classify import tokenize

        test = load_glue(self, data_dir or run.get("data_dir"), splits=("dev",))["dev"]
        return tokenize(datasets.DatasetDict({"test": test}), tokenizer, self, max_length=max_length)["test"], []


_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, GlueTask] = {t.name: t for t in (
    GlueTask("cola", "CoLA", ("sentence",), ("unacceptable", "acceptable"),
             main_metric="matthews_correlation",
             tsv_header=False, tsv_columns=(3,), tsv_label=1, tsv_labels=_BINARY, tsv_ncols=4),
    GlueTask("sst2", "SST-2", ("sentence",), ("negative", "positive"),
             main_metric="accuracy",
             tsv_header=True, tsv_columns=("sentence",), tsv_label="label", tsv_labels=_BINARY),
    GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
             main_metric="f1",
             tsv_header=True, tsv_columns=("#1 String", "#2 String"), tsv_label="Quality", tsv_labels=_BINARY),
    GlueTask("qqp", "QQP", ("question1", "question2"), ("not_duplicate", "duplicate"),
             main_metric="f1",
             tsv_header=True, tsv_columns=("question1", "question2"), tsv_label="is_duplicate",
             tsv_labels=_BINARY),
    GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), None,
             main_metric="spearmanr",
             tsv_header=True, tsv_columns=("sentence1", "sentence2"), tsv_label="score", tsv_labels=None),
    GlueTask("mnli", "MNLI", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
             main_metric="accuracy",
             tsv_header=True, tsv_columns=("sentence1", "sentence2"), tsv_label="gold_label",
             tsv_labels=("entailment", "neutral", "contradiction"),
             dev_split="validation_matched", dev_file="dev_matched.tsv"),
    GlueTask("qnli", "QNLI", ("question", "sentence"), _NLI2,
             main_metric="accuracy",
             tsv_header=True, tsv_columns=("question", "sentence"), tsv_label="label", tsv_labels=_NLI2),
    GlueTask("rte", "RTE", ("sentence1", "sentence2"), _NLI2,
             main_metric="accuracy",
             tsv_header=True, tsv_columns=("sentence1", "sentence2"), tsv_label="label", tsv_labels=_NLI2),
)}

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


# --- reading the data ---------------------------------------------------------------------------

def load_glue(task: GlueTask, data_dir: str | os.PathLike | None = None,
              splits: Iterable[str] = ("train", "dev")):
    """The task's ``train`` and ``dev`` splits (the original GLUE dev set) as a DatasetDict.

    Source, in order: ``data_dir``, then ``$PELT_GLUE_DIR`` (both in the original GLUE layout),
    else the Hugging Face Hub (``nyu-mll/glue``; needs network).
    """
    data_dir = data_dir if data_dir is not None else os.environ.get(ENV_DIR) or None
    if data_dir is not None:
        return load_local(task, data_dir, splits)
    return load_hub(task, splits)


def load_local(task: GlueTask, data_dir: str | os.PathLike, splits: Iterable[str] = ("train", "dev")):
    """Read ``DIR/<Task>/{train,dev}.tsv`` (``dev_matched.tsv`` for MNLI)."""
    import datasets

    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise UsageError(f"GLUE data directory '{root}' does not exist", code="U102",
                         help="pass --data-dir DIR holding the original GLUE layout (CoLA/train.tsv, ...)")
    out = {}
    for split in splits:
        path = root / task.dir / _local_file(task, split)
        out[split] = datasets.Dataset.from_dict(read_tsv(path, task), features=features(task))
    return datasets.DatasetDict(out)


def load_hub(task: GlueTask, splits: Iterable[str] = ("train", "dev")):
    """Load the task from the Hub; a failure (no network, no such dataset) is a DataError."""
    import datasets

    help = (f"pass --data-dir DIR (or set ${ENV_DIR}) to a folder in the original GLUE layout "
            f"({task.dir}/train.tsv, {task.dir}/{task.dev_file})")
    offline = hub_offline()
    if offline and not hub_cached(task):    # fail now, not after datasets' minute of retries
        raise DataError(f"cannot load GLUE task '{task.name}' from the Hugging Face Hub ({HUB_ID}): {offline}, "
                        "and it is not in the datasets cache", code="D107", help=help)
    try:
        raw = datasets.load_dataset(HUB_ID, task.name)
    except Exception as e:  # network, auth, cache: all mean the same to the user
        raise DataError(
            f"cannot load GLUE task '{task.name}' from the Hugging Face Hub ({HUB_ID}): "
            f"{type(e).__name__}: {e}", code="D107", help=help) from e
    names = {"train": "train", "dev": task.dev_split}
    return datasets.DatasetDict({s: raw[names[s]] for s in splits})


def hub_offline() -> str | None:
    """Why the Hub cannot be used now (``$HF_HUB_OFFLINE`` / ``$HF_DATASETS_OFFLINE`` set, or no connection
    to it within half a second), or None when it can."""
    from peltc.runtime.models import _truthy, hub_reachable

    flag = next((v for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if _truthy(v)), None)
    if flag:
        return f"${flag} is set"
    return None if hub_reachable(timeout=0.5) else "the Hub cannot be reached"


def hub_cached(task: GlueTask) -> bool:
    """Whether a copy of the task's Hub dataset is in the local caches (``datasets``' or the Hub's), which
    ``datasets.load_dataset`` reads offline."""
    import datasets
    from huggingface_hub import constants

    owner, name = HUB_ID.split("/")
    return (Path(datasets.config.HF_DATASETS_CACHE) / f"{owner}___{name}" / task.name).is_dir() or \
        (Path(constants.HF_HUB_CACHE) / f"datasets--{owner}--{name}").is_dir()


def features(task: GlueTask):
    """The Hub's features for the task: text columns, ``label`` (ClassLabel or float32), ``idx``."""
    import datasets

    label = (datasets.Value("float32") if task.labels is None
             else datasets.ClassLabel(names=list(task.labels)))
    cols = {c: datasets.Value("string") for c in task.columns}
    return datasets.Features({**cols, "label": label, "idx": datasets.Value("int32")})


def _local_file(task: GlueTask, split: str) -> str:
    if split == "train":
        return "train.tsv"
    if split == "dev":
        return task.dev_file
    raise ValueError(f"unknown split {split!r} (train or dev)")


def read_tsv(path: str | os.PathLike, task: GlueTask) -> dict[str, list]:
    """Columns of one GLUE TSV file: the task's text columns (Hub names), ``label`` (an id, or a
    float for STS-B) and ``idx`` (the row's ordinal). Checks every row."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"GLUE file '{path}' not found", code="D101", span=Span(str(path), 1, 1),
                        help=f"expected the original GLUE layout: {task.dir}/train.tsv, "
                             f"{task.dir}/{task.dev_file}; or omit --data-dir to use the Hub")
    cols: dict[str, list] = {c: [] for c in (*task.columns, "label", "idx")}
    label_ids = {s: i for i, s in enumerate(task.tsv_labels or ())}
    # utf-8-sig drops MRPC's byte-order mark; QUOTE_NONE keeps RTE's and MRPC's stray quotes as text
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        if task.tsv_header:
            header = next(reader, None) or []
            missing = [c for c in (*task.tsv_columns, task.tsv_label) if c not in header]
            if missing:
                raise DataError(
                    f"{path.name}: header lacks column(s) {', '.join(map(repr, missing))}",
                    code="D104", span=Span(str(path), 1, 1),
                    help=f"a {task.dir} file's header must name {', '.join(map(repr, (*task.tsv_columns, task.tsv_label)))}; "
                         f"found {header!r}")
            ncols = len(header)
            text_at = [header.index(c) for c in task.tsv_columns]
            label_at = header.index(task.tsv_label)
        else:
            ncols, text_at, label_at = task.tsv_ncols, list(task.tsv_columns), task.tsv_label
        for row in reader:
            if not row:              # a blank line (e.g. at the end of a file)
                continue
            line = reader.line_num   # no quoting, so no field spans lines: this is the physical line
            if len(row) != ncols:
                raise DataError(
                    f"{path.name}: line {line} has {len(row)} tab-separated columns, expected {ncols}",
                    code="D102", span=Span(str(path), line, 1),
                    help=f"{task.dir} files have {ncols} columns"
                         + (f" ({', '.join(header)})" if task.tsv_header else ""))
            raw = row[label_at]
            if task.tsv_labels is None:
                try:
                    label = float(raw)
                except ValueError:
                    raise DataError(f"{path.name}: line {line}: score {raw!r} is not a number",
                                    code="D103", span=Span(str(path), line, 1),
                                    help=f"{task.dir} scores are numbers between 0 and 5") from None
            else:
                if raw not in label_ids:
                    raise DataError(f"{path.name}: line {line}: unknown label {raw!r}",
                                    code="D103", span=Span(str(path), line, 1),
                                    help=f"{task.dir} labels are {', '.join(map(repr, task.tsv_labels))}")
                label = label_ids[raw]
            for c, at in zip(task.columns, text_at):
                cols[c].append(row[at])
            cols["label"].append(label)
            cols["idx"].append(len(cols["idx"]))
    return cols


# --- resolving --train glue/NAME, reading a run's record -----------------------------------------

def claims(ref: str | None) -> bool:
    """Every --train value the other kinds do not claim names a GLUE task (or is refused as none)."""
    return True


def resolve(opts, say=print):
    """(task, None, None): a GLUE task's data is read later (`GlueTask.load`, once the model's weights are
    found); its run identity holds no data record. Your own data's flags are refused here (U130)."""
    from peltc.runtime.own_files import hint_for
    from peltc.runtime.task_own import OWN_FLAGS

    given = [flag for key, flag in OWN_FLAGS.items() if getattr(opts, key, None) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} apply to your own data, not to GLUE task '{opts.task}'",
                         code="U130", help="--train csv:PATH | json:PATH | disk:DIR | hub:NAME[:CONFIG] takes them")
    try:
        return task(opts.task or ""), None, None
    except UsageError as e:
        hint = hint_for(opts.task or "")
        if hint is None:
            raise
        raise UsageError(e.diagnostic.message, code=e.diagnostic.code, help=hint) from None


def from_record(manifest: dict[str, Any]) -> GlueTask:
    """The GLUE task an artifact's manifest names."""
    return task(manifest.get("task") or "")
