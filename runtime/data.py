"""GLUE data for a run: load a task, sample the paper's low-resource splits, tokenise.

Three steps, each a function a caller can use alone:

    ds = load_glue(task("rte"), data_dir="../shared/glue")   # DatasetDict: train, dev (original GLUE)
    splits = sample(ds, k=100, seed=1)                        # train (K), dev (1,000 held out), test
    enc = tokenize(splits, tokenizer, task("rte"))            # input_ids/attention_mask/label, no padding

Every split has the Hub's columns (``sentence`` / ``sentence1``, ``sentence2`` / ..., ``label``,
``idx``) whichever source it came from. Local files are read in the original GLUE TSV layout
(tab-separated, ``csv.QUOTE_NONE``); a missing file, a wrong column count or an unknown label is a
DataError whose span names the file and line.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, Literal, Union

from peltc.errors import DataError, Span, UsageError
from peltc.runtime.tasks import HUB_ID, GlueTask

ENV_DIR = "PELT_GLUE_DIR"
DEV_SIZE = 1000          # training examples held out for checkpoint selection (the paper's protocol)
MAX_LENGTH = 128

K = Union[int, Literal["all"]]


# --- loading ------------------------------------------------------------------------------------

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

    try:
        raw = datasets.load_dataset(HUB_ID, task.name)
    except Exception as e:  # network, auth, cache: all mean the same to the user
        raise DataError(
            f"cannot load GLUE task '{task.name}' from the Hugging Face Hub ({HUB_ID}): "
            f"{type(e).__name__}: {e}", code="D107",
            help=f"pass --data-dir DIR (or set ${ENV_DIR}) to a folder in the original GLUE layout "
                 f"({task.dir}/train.tsv, {task.dir}/{task.dev_file})") from e
    names = {"train": "train", "dev": task.dev_split}
    return datasets.DatasetDict({s: raw[names[s]] for s in splits})


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


# --- the paper's low-resource protocol ------------------------------------------------------------

def parse_k(value: str | int) -> K:
    """``100`` / ``"100"`` → 100, ``"all"`` → ``"all"``; anything else is a UsageError."""
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        k = int(value)
        if k >= 1:
            return k
    elif isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    raise UsageError(f"bad K {value!r}: a positive number of training examples, or 'all'", code="U103")


def sample(ds, k: K, seed: int, dev_size: int = DEV_SIZE):
    """The paper's splits from a DatasetDict with ``train`` and ``dev``:

    - ``dev``: ``dev_size`` training examples held out for checkpoint selection;
    - ``train``: ``k`` further training examples, disjoint from ``dev`` (``"all"``: every other one);
    - ``test``: the original GLUE dev set.

    One permutation of the training set per seed: ``dev`` is its first ``dev_size`` entries and
    ``train`` the next ``k``, so a seed's dev set is the same for every K and its K=100 examples
    are among its K=500. Deterministic: the same seed gives the same examples on any machine.
    """
    import datasets
    import numpy as np

    train = ds["train"]
    n = len(train)
    k = parse_k(k)
    want = dev_size + (1 if k == "all" else k)
    if n < want:
        raise DataError(
            f"the training set has {n} examples; K={k} and a held-out dev set of {dev_size} need {want}",
            code="D106", help="choose a smaller K")
    perm = np.random.default_rng(seed).permutation(n)
    dev_idx = np.sort(perm[:dev_size])
    train_idx = np.sort(perm[dev_size:] if k == "all" else perm[dev_size:dev_size + k])
    return datasets.DatasetDict({
        "train": train.select(train_idx),
        "dev": train.select(dev_idx),
        "test": ds["dev"],
    })


# --- tokenisation --------------------------------------------------------------------------------

def tokenize(ds, tokenizer, task: GlueTask, max_length: int = MAX_LENGTH,
             sort_by_length: Iterable[str] = ("dev", "test")):
    """Tokenise every split (pairs as pairs, truncated to ``max_length``, not padded: the collator
    pads each batch). Adds ``length`` (tokens). Splits in ``sort_by_length`` are sorted longest
    first, so that large evaluation batches carry little padding (metrics do not depend on order).
    """
    def encode(batch):
        texts = [batch[c] for c in task.columns]
        enc = tokenizer(*texts, truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    import numpy as np

    out = ds.map(encode, batched=True, remove_columns=list(task.columns), desc="tokenising")
    for split in sort_by_length:
        if split in out:
            order = np.argsort(-np.asarray(out[split]["length"]), kind="stable")
            out[split] = out[split].select(order)
    return out


def collator(tokenizer):
    """Dynamic padding: each batch padded to its longest member."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)
