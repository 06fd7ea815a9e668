"""GLUE data — or your own — for a run: load a task, sample the paper's low-resource splits, tokenise.

Three steps, each a function a caller can use alone:

    ds = load_glue(task("rte"), data_dir="../shared/glue")   # DatasetDict: train, dev (original GLUE)
    splits = sample(ds, k=100, seed=1)                        # train (K), dev (1,000 held out), test
    enc = tokenize(splits, tokenizer, task("rte"))            # input_ids/attention_mask/label, no padding

Every split has the Hub's columns (``sentence`` / ``sentence1``, ``sentence2`` / ..., ``label``,
``idx``) whichever source it came from. Local files are read in the original GLUE TSV layout
(tab-separated, ``csv.QUOTE_NONE``); a missing file, a wrong column count or an unknown label is a
DataError whose span names the file and line.

Your own data (``csv:PATH``, ``json:PATH``, ``disk:DIR``, ``hub:NAME[:CONFIG]``) is read by `datasets`
and checked here (`load_own`: missing columns, empty files, mixed or unseen labels, empty texts are
DataErrors naming the file, row and column), then split by the same protocol (`sample_own`).
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Union

from peltc.errors import DataError, Span, UsageError, did_you_mean
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


# --- your own data --------------------------------------------------------------------------------
#
#   data = OwnData(train=parse_source("csv:reviews.csv"))          # + columns, --validation, --test …
#   raw, task = load_own(data)          # DatasetDict: train [, validation] [, test]; a CustomTask
#   splits = sample_own(raw, k=100, seed=1)                      # train (K), dev, test
#
# Every file is read by `datasets` (its csv / json builders, load_from_disk, load_dataset); this
# module only checks what was read and names the file, row and column of anything wrong.

OWN_FORMATS = ("csv", "json", "disk", "hub")
TEST_SHARE = 5           # without a test set: every 5th example of a fixed shuffle (⌊n/5⌋, ≥ 1) is the test set
TEST_SEED = 0            # that shuffle's seed: the same test set for every --seed, K and spec (as GLUE's)
_DEV_NAMES = ("validation", "dev", "valid")   # split names of a DatasetDict used as the dev set


@dataclass(frozen=True)
class Source:
    """One data source: ``csv:PATH`` / ``json:PATH`` (JSON Lines or one JSON array) / ``disk:DIR``
    (a ``save_to_disk`` folder) / ``hub:NAME[:CONFIG]``, optionally one split of a DatasetDict."""

    kind: str                  # csv | json | disk | hub
    path: str                  # an absolute file or folder path; the dataset's name for hub
    config: str | None = None  # the Hub config
    split: str | None = None   # a split of a DatasetDict (disk, hub)

    @property
    def ref(self) -> str:
        return f"{self.kind}:{self.path}" + (f":{self.config}" if self.config else "") + (
            f" (split '{self.split}')" if self.split else "")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "config": self.config, "split": self.split}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Source":
        return cls(d["kind"], d["path"], d.get("config"), d.get("split"))


@dataclass(frozen=True)
class OwnData:
    """What `peltc compile --train csv:… [--validation …] [--test …] [--text-column …]` asks for."""

    train: Source
    validation: Source | None = None
    test: Source | None = None
    text_column: str | None = None          # None: `text`, else `sentence`
    text_pair_column: str | None = None     # None: single texts
    label_column: str = "label"
    task_type: str | None = None            # classification | regression; None: decided from the labels

    def to_dict(self) -> dict[str, Any]:
        return {"train": self.train.to_dict(),
                "validation": self.validation.to_dict() if self.validation else None,
                "test": self.test.to_dict() if self.test else None,
                "text_column": self.text_column, "text_pair_column": self.text_pair_column,
                "label_column": self.label_column, "task_type": self.task_type}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "OwnData":
        return cls(train=Source.from_dict(d["train"]),
                   validation=Source.from_dict(d["validation"]) if d.get("validation") else None,
                   test=Source.from_dict(d["test"]) if d.get("test") else None,
                   text_column=d.get("text_column"), text_pair_column=d.get("text_pair_column"),
                   label_column=d.get("label_column") or "label", task_type=d.get("task_type"))


def is_own(ref: str | None) -> bool:
    """``ref`` names your own data (``csv:``, ``json:``, ``disk:``, ``hub:``), not a GLUE task."""
    return isinstance(ref, str) and ref.split(":", 1)[0].strip().lower() in OWN_FORMATS and ":" in ref


def parse_source(ref: str, flag: str = "--train", like: Source | None = None) -> Source:
    """``csv:PATH``, ``json:PATH``, ``disk:DIR`` or ``hub:NAME[:CONFIG]``. With ``like`` (the training
    source; for --validation / --test) a bare value is a file of the same format, or for a folder or
    Hub source a split name of it. A file or folder that does not exist is a DataError (D101)."""
    kind, sep, rest = ref.partition(":")
    kind = kind.strip().lower()
    if not (sep and kind in OWN_FORMATS):
        if like is None:
            raise UsageError(f"{flag} {ref!r}: not a data source", code="U101",
                             help="glue/TASK, csv:PATH, json:PATH (JSON or JSON Lines), disk:DIR or hub:NAME[:CONFIG]")
        if like.kind in ("csv", "json"):
            kind, rest = like.kind, ref
        elif like.kind == "disk" and Path(ref).expanduser().is_dir():
            kind, rest = "disk", ref
        else:                                        # a split of the training source's DatasetDict
            return Source(like.kind, like.path, like.config, split=ref)
    rest = rest.strip()
    if not rest:
        raise UsageError(f"{flag} {ref!r}: nothing after '{kind}:'", code="U101",
                         help=f"{kind}:{'NAME[:CONFIG]' if kind == 'hub' else 'DIR' if kind == 'disk' else 'PATH'}")
    if kind == "hub":
        name, _, config = rest.partition(":")
        return Source("hub", name.strip(), config.strip() or None)
    path = Path(rest).expanduser().resolve()
    if kind == "disk" and not path.is_dir():
        raise DataError(f"{flag}: data folder '{rest}' not found", code="D101",
                        help="disk:DIR names a folder written by datasets' save_to_disk")
    if kind != "disk" and not path.is_file():
        raise DataError(f"{flag}: data file '{rest}' not found", code="D101",
                        help=f"{kind}:PATH names a {'CSV' if kind == 'csv' else 'JSON or JSON Lines'} file")
    return Source(kind, str(path))


def hint_for(ref: str) -> str | None:
    """A help line for a --train value that looks like a file or folder but has no format prefix."""
    p = Path(ref).expanduser()
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return f"for your own data write csv:{ref}"
    if suffix in (".json", ".jsonl", ".ndjson"):
        return f"for your own data write json:{ref}"
    if p.is_dir():
        return f"for a save_to_disk folder write disk:{ref}"
    return None


@contextmanager
def _quiet_datasets():
    """No progress bars or error logs from `datasets` while it reads a file (its errors are ours to say)."""
    import datasets

    level = datasets.logging.get_verbosity()
    bars = datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL + 10)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()


def _root_cause(e: BaseException) -> BaseException:
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ or e.__context__
    return e


class _Rows:
    """Where a loaded dataset's rows came from: names a row (1-based, header not counted) and, for a
    file read line by line, its line (a CSV row is taken to be one line: its header is line 1)."""

    def __init__(self, src: Source, role: str):
        self.src, self.role = src, role
        self.file = src.path if src.kind in ("csv", "json") else None
        self._lines: list[int] | None = None     # JSON Lines: the line of each row (read on the first error)

    @property
    def name(self) -> str:
        """How messages name the source: the file's name (the span has its path), else the source."""
        return Path(self.file).name if self.file else self.src.ref

    def line(self, row: int) -> int | None:
        if self.src.kind == "csv":
            return row + 2
        if self.src.kind != "json":
            return None
        if self._lines is None:
            self._lines = []
            with open(self.src.path, encoding="utf-8", errors="replace") as f:
                for i, text in enumerate(f, 1):
                    if text.strip():
                        if not self._lines and text.lstrip().startswith("["):
                            break                # one JSON array: rows are not lines
                        self._lines.append(i)
        return self._lines[row] if row < len(self._lines) else None

    def span(self, row: int | None = None) -> Span | None:
        if self.file is None:
            return None
        line = self.line(row) if row is not None else 1
        return Span(self.file, line or 1, 1)

    def error(self, row: int, column: str, what: str, code: str, help: str | None = None) -> DataError:
        line = self.line(row)
        where = f"row {row + 1}" + (f" (line {line})" if line else "")
        return DataError(f"{self.name}: {where}, column '{column}': {what}", code=code, span=self.span(row),
                         help=help)


_MIXED = re.compile(r"Column\(/?([^)]*)\) changed from (\w+) to (\w+) in row (\d+)")


def _load_source(src: Source, role: str, label_column: str | None = None):
    """The rows of one source, read by `datasets`: a Dataset, or a DatasetDict when a folder or Hub
    dataset has several splits and none was named."""
    import datasets

    if src.kind == "hub":
        _check_hub(src)
        try:
            with _quiet_datasets():
                ds = datasets.load_dataset(src.path, src.config)
        except Exception as e:
            cause = _root_cause(e)
            raise DataError(f"cannot load '{src.path}'{f' ({src.config})' if src.config else ''} from the Hugging "
                            f"Face Hub: {type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}",
                            code="D107", help="check the dataset's name and config on huggingface.co/datasets") from None
    elif src.kind == "disk":
        try:
            with _quiet_datasets():
                ds = datasets.load_from_disk(src.path)
        except Exception as e:
            raise DataError(f"cannot read '{src.path}' as a datasets folder: {_root_cause(e)}", code="D105",
                            help="disk:DIR names a folder written by Dataset.save_to_disk or DatasetDict.save_to_disk") from None
    else:
        path = Path(src.path)
        if not path.read_bytes().strip():
            raise DataError(f"{role} file '{path}' is empty", code="D108", span=Span(str(path), 1, 1),
                            help="a CSV file needs a header line and rows" if src.kind == "csv"
                            else "one JSON object per line (JSON Lines), or a JSON array of objects")
        kwargs: dict[str, Any] = {}
        if src.kind == "csv":   # only an empty field is missing ("NA", "null" … are text)
            kwargs = {"keep_default_na": False, "na_values": [""],
                      **({"sep": "\t"} if path.suffix.lower() == ".tsv" else {})}
        try:
            with _quiet_datasets():
                ds = datasets.load_dataset(src.kind, data_files=str(path), split="train", **kwargs)
        except Exception as e:
            cause = _root_cause(e)
            if "corresponds to no data" in str(e) or type(cause).__name__ in ("EmptyDataError", "StopIteration"):
                raise DataError(f"{role} file '{path}' has no rows", code="D108", span=Span(str(path), 1, 1),
                                help="add examples below the header" if src.kind == "csv"
                                else "one JSON object per line (JSON Lines), or a JSON array of objects") from None
            mixed = _MIXED.search(str(cause))
            if mixed:   # pyarrow's JSON reader: one column holds numbers and strings (row: 0-based)
                col, was, now, row = mixed.groups()
                what = "labels" if col == label_column else "values"
                raise _Rows(src, role).error(int(row), col, f"{what} of mixed type ({now} here, {was} in the "
                                                            f"rows before)", code="D109",
                                             help="labels must be all class names (strings), all integers, or "
                                                  "all numbers (regression)" if what == "labels"
                                             else "a column's values must be all strings or all numbers") from None
            what = "CSV" if src.kind == "csv" else "JSON Lines or a JSON array"
            raise DataError(f"cannot read {role} file '{path}' as {what}: {type(cause).__name__}: "
                            f"{str(cause).splitlines()[0] if str(cause) else ''}", code="D105",
                            span=Span(str(path), 1, 1),
                            help="csv: a header line, then one row per example; json: one object per line "
                                 "(JSON Lines) or an array of objects") from None
    if isinstance(ds, datasets.DatasetDict) and src.split is not None:
        if src.split not in ds:
            raise UsageError(f"{src.kind}:{src.path} has no split '{src.split}'", code="U110",
                             help=did_you_mean(src.split, ds.keys(), "splits"))
        ds = ds[src.split]
    return ds


def _check_hub(src: Source) -> None:
    """Fail at once, not after a minute of retries, when the Hub cannot be reached."""
    from peltc.runtime.models import _truthy, hub_reachable

    offline = next((v for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE") if _truthy(v)), None)
    if offline or not hub_reachable(timeout=0.5):
        why = f"${offline} is set" if offline else "the Hugging Face Hub cannot be reached"
        raise DataError(f"cannot load hub:{src.path}{':' + src.config if src.config else ''}: {why}", code="D107",
                        help="where there is network, save it with datasets.load_dataset(...).save_to_disk(DIR) "
                             "and train with --train disk:DIR")


def _pick_split(ds, role: str, src: Source):
    """``train`` of a DatasetDict (or its only split)."""
    import datasets

    if not isinstance(ds, datasets.DatasetDict):
        return ds
    if "train" in ds:
        return ds["train"]
    if len(ds) == 1:
        return next(iter(ds.values()))
    raise UsageError(f"{src.ref} has splits {', '.join(ds)} and none is 'train'", code="U110",
                     help=f"name one: --{role} {src.kind}:{src.path}… is a DatasetDict; save the split you train on "
                          "alone, or name the others with --validation SPLIT / --test SPLIT")


def _unlabelled(ds, column: str) -> bool:
    """A split whose labels are all missing (the Hub's unlabelled test sets: -1 everywhere)."""
    import datasets

    if column not in ds.column_names or len(ds) == 0:
        return True
    vals = ds[column]
    if isinstance(ds.features[column], datasets.ClassLabel):
        return all(v is None or v < 0 for v in vals)
    return all(v is None for v in vals)


def _column(name: str | None, columns: list[str], rows: _Rows, flag: str, default: tuple[str, ...] = (),
            guesses: Iterable[str] = ()) -> str:
    """The column ``name`` (or the first of ``default`` present), or a DataError listing the columns
    with a did-you-mean: the nearest name, else the first of ``guesses`` (e.g. a column of strings)."""
    if name is not None and name in columns:
        return name
    if name is None:
        for c in default:
            if c in columns:
                return c
    shown = repr(name) if name is not None else " or ".join(repr(c) for c in default)
    help = did_you_mean(name or default[0], columns, "columns")
    guess = next(iter(guesses), None)
    if guess is not None and not help.startswith("did you mean") and flag:
        help = f"did you mean {flag} {guess}? columns: {', '.join(sorted(columns))}"
    elif flag:
        help += f"; name yours with {flag} NAME"
    raise DataError(f"{rows.name}: no column {shown} in the {rows.role} data", code="D104",
                    span=rows.span(), help=help)


def _label_kind(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return None if v != v else "float"     # NaN: missing
    if isinstance(v, str):
        return "str" if v.strip() else None
    return type(v).__name__


_KIND_WORDS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}


def _texts(ds, column: str, rows: _Rows) -> list[str]:
    """A text column's values as strings; a missing or empty one is a DataError naming its row."""
    out = []
    for i, v in enumerate(ds[column]):
        if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip()):
            raise rows.error(i, column, "the text is missing" if v is None or not isinstance(v, str) else
                             "the text is empty", code="D110",
                             help="every example needs a non-empty text; remove or fill the row")
        out.append(v if isinstance(v, str) else str(v))
    return out


def _raw_labels(ds, column: str, rows: _Rows) -> list[Any]:
    """The label column's values (a ClassLabel's ids as its names); a missing one names its row."""
    import datasets

    feat = ds.features[column]
    vals = ds[column]
    if isinstance(feat, datasets.ClassLabel):
        vals = [feat.names[v] if v is not None and v >= 0 else None for v in vals]
    for i, v in enumerate(vals):
        if _label_kind(v) is None:
            raise rows.error(i, column, "the label is missing", code="D103",
                             help="every training, validation and test example needs a label")
    return vals


def _decide_labels(vals: list[Any], rows: _Rows, column: str, forced: str | None, class_names=None):
    """(labels, kind): the sorted label set (None for regression) and the labels' kind."""
    kinds = [_label_kind(v) for v in vals]
    first = kinds[0]
    numeric = {"int", "float"}
    for i, k in enumerate(kinds):
        if k != first and not ({k, first} <= numeric):
            raise rows.error(i, column, f"labels of mixed type: {vals[i]!r} ({_KIND_WORDS.get(k, k)}) where row 1 "
                                        f"has {vals[0]!r} ({_KIND_WORDS.get(first, first)})",
                             code="D109", help="labels must be all class names (strings), all integers, or all "
                                               "numbers (regression)")
    if first not in ("str", "int", "float", "bool"):
        raise rows.error(0, column, f"a label must be a string or a number, not {first}", code="D103")
    kind = "float" if first in numeric and "float" in kinds else first
    if forced is None:
        regression = kind == "float" and any(float(v) != int(v) for v in vals)
    else:
        regression = forced == "regression"
    if regression:
        for i, v in enumerate(vals):
            if _number(v) is None:
                raise rows.error(i, column, f"label {repr(v)} is not a number (a regression task)", code="D103",
                                 help="regression labels are numbers; --task-type classification treats them as classes")
        return None, "float"
    if class_names is not None:
        labels = tuple(class_names)
    elif kind == "float" and all(float(v) == int(v) for v in vals):
        kind, labels = "int", tuple(sorted({int(v) for v in vals}))
    else:
        labels = tuple(sorted(set(vals)))
    if len(labels) < 2:
        raise DataError(f"{rows.name}: column '{column}' holds one label "
                        f"({repr(labels[0])}): classification needs at least two", code="D113",
                        span=rows.span(), help="add examples of the other classes, or --task-type regression for scores")
    return labels, kind


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    try:
        return float(str(v).strip())
    except ValueError:
        return None


def _label_key(v: Any, kind: str) -> Any:
    """A label as the training labels spell it (a test file's ``1`` is the training set's ``"1"``)."""
    if kind == "str":
        return str(int(v)) if isinstance(v, float) and v == int(v) else str(v)
    if kind == "int":
        if isinstance(v, float) and v == int(v):
            return int(v)
        if isinstance(v, str) and v.strip().lstrip("-").isdigit():
            return int(v)
    if kind == "float":
        return _number(v)
    return v


def _normalise(ds, rows: _Rows, cols: tuple[str, ...], label_col: str, labels, kind: str):
    """A plain in-memory Dataset: ``text`` [, ``text_pair``], ``label`` (an id, or a float), ``idx``
    (the row in its source, 0-based)."""
    import datasets

    from peltc.runtime.tasks import TEXT, TEXT_PAIR

    names = ds.column_names
    for c in (*cols, label_col):
        _column(c, names, rows, "")
    texts = {name: _texts(ds, c, rows) for name, c in zip((TEXT, TEXT_PAIR), cols)}
    vals = _raw_labels(ds, label_col, rows)
    if labels is None:
        out = []
        for i, v in enumerate(vals):
            x = _number(v)
            if x is None:
                raise rows.error(i, label_col, f"label {v!r} is not a number (a regression task)", code="D103",
                                 help="the training labels are scores")
            out.append(x)
        label_feat = datasets.Value("float32")
    else:
        ids = {lab: i for i, lab in enumerate(labels)}
        out = []
        for i, v in enumerate(vals):
            key = _label_key(v, kind)
            if key not in ids:
                shown = ", ".join(map(repr, labels[:20])) + (" …" if len(labels) > 20 else "")
                raise rows.error(i, label_col, f"label {v!r} never occurs in the training data", code="D103",
                                 help=f"the training labels are {shown}")
            out.append(ids[key])
        label_feat = datasets.ClassLabel(names=[str(lab) for lab in labels])
    feats = {name: datasets.Value("string") for name in texts}
    return datasets.Dataset.from_dict({**texts, "label": out, "idx": list(range(len(out)))},
                                      features=datasets.Features({**feats, "label": label_feat,
                                                                  "idx": datasets.Value("int32")}))


def _task_name(src: Source) -> str:
    base = src.path.rstrip("/").rsplit("/", 1)[-1] if src.kind == "hub" else Path(src.path).stem
    if src.kind == "hub" and src.config:
        base = f"{base}-{src.config}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or "data"


def source_hash(src: Source, ds=None) -> str:
    """What a run's identity records of a source: its file's sha256, a folder's files' (names and
    contents), or the Hub dataset's fingerprint (``ds``)."""
    if src.kind in ("csv", "json"):
        return _sha256_files([Path(src.path)], Path(src.path).parent)
    if src.kind == "disk":
        root = Path(src.path)
        return _sha256_files(sorted(p for p in root.rglob("*") if p.is_file()), root)
    return f"fingerprint:{getattr(ds, '_fingerprint', None)}"


def _sha256_files(files, root: Path) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_own(data: OwnData, notes: list[str] | None = None):
    """Read and check your own data: ``(DatasetDict, CustomTask, hashes)``.

    The DatasetDict has ``train`` and, when given (or a DatasetDict source has them, labelled),
    ``validation`` and ``test``; each with ``text`` [, ``text_pair``], ``label`` and ``idx``. The task's
    labels are the training labels' sorted set (a ClassLabel's names in its order), or None for
    regression: decided from the labels (strings, integers, booleans → classification; numbers with a
    fractional part → regression) unless ``data.task_type`` says. ``hashes``: per split, `source_hash`.
    Anything wrong is a DataError naming the file, row and column. ``notes`` collects what was chosen
    silently (a split skipped because it has no labels).
    """
    import datasets

    from peltc.runtime.tasks import TEXT, TEXT_PAIR, CustomTask

    if data.task_type not in (None, "classification", "regression"):
        raise UsageError(f"--task-type {data.task_type!r}", code="U106", help="classification or regression")
    loaded = _load_source(data.train, "train", data.label_column)
    sources: dict[str, tuple[Source, Any]] = {"train": (data.train, _pick_split(loaded, "train", data.train))}
    for role, given, names in (("validation", data.validation, _DEV_NAMES), ("test", data.test, ("test",))):
        if given is not None:
            same = (given.kind, given.path, given.config) == (data.train.kind, data.train.path, data.train.config)
            if same and given.split is not None and isinstance(loaded, datasets.DatasetDict):
                if given.split not in loaded:
                    raise UsageError(f"{data.train.ref} has no split '{given.split}'", code="U110",
                                     help=did_you_mean(given.split, loaded.keys(), "splits"))
                ds = loaded[given.split]
            else:
                ds = _pick_split(_load_source(given, role, data.label_column), role, given)
            sources[role] = (given, ds)
        elif isinstance(loaded, datasets.DatasetDict):
            split = next((n for n in names if n in loaded), None)
            if split is not None:
                if _unlabelled(loaded[split], data.label_column):
                    if notes is not None:
                        notes.append(f"{data.train.ref}: split '{split}' has no labels; not used as the {role} set")
                else:
                    src = Source(data.train.kind, data.train.path, data.train.config, split=split)
                    sources[role] = (src, loaded[split])
    if isinstance(loaded, datasets.DatasetDict) and data.train.split is None:
        first = next(s for s in ("train", *loaded) if s in loaded)
        sources["train"] = (Source(data.train.kind, data.train.path, data.train.config, split=first),
                            sources["train"][1])

    train_src, train = sources["train"]
    rows = _Rows(train_src, "train")
    if len(train) == 0:
        raise DataError(f"{rows.name}: the training data has no rows", code="D108", span=rows.span())
    names = train.column_names
    strings = [c for c in names if c != data.label_column and getattr(train.features[c], "dtype", None)
               in ("string", "large_string")]
    text_col = _column(data.text_column, names, rows, "--text-column", default=("text", "sentence"), guesses=strings)
    cols = (text_col,)
    if data.text_pair_column is not None:
        cols = (text_col, _column(data.text_pair_column, names, rows, "--text-pair-column"))
        if cols[0] == cols[1]:
            raise UsageError(f"--text-pair-column '{cols[1]}' is the text column too", code="U112",
                             help="name the second text's column")
    label_col = _column(data.label_column, names, rows, "--label-column")
    if label_col in cols:
        raise UsageError(f"column '{label_col}' is both a text and the label", code="U112",
                         help="--text-column / --text-pair-column name texts, --label-column the label")
    feat = train.features[label_col]
    class_names = feat.names if isinstance(feat, datasets.ClassLabel) else None
    raw = _raw_labels(train, label_col, rows)
    labels, kind = _decide_labels(raw, rows, label_col, data.task_type,
                                  class_names if data.task_type != "regression" else None)
    out, hashes = {}, {}
    for role, (src, ds) in sources.items():
        r = rows if role == "train" else _Rows(src, role)
        if len(ds) == 0:
            raise DataError(f"{r.name}: the {role} data has no rows", code="D108", span=r.span())
        out[role] = _normalise(ds, r, cols, label_col, labels, kind)
        hashes[role] = source_hash(src, ds)
    resolved = OwnData(train=sources["train"][0],
                       validation=sources["validation"][0] if "validation" in sources else None,
                       test=sources["test"][0] if "test" in sources else None,
                       text_column=text_col, text_pair_column=cols[1] if len(cols) == 2 else None,
                       label_column=label_col, task_type=data.task_type)
    task = CustomTask(name=_task_name(data.train), columns=(TEXT, TEXT_PAIR)[:len(cols)], labels=labels,
                      text_columns=cols, label_column=label_col,
                      data={**resolved.to_dict(), "label_kind": kind})
    return datasets.DatasetDict(out), task, hashes


def sample_own(ds, k: K, seed: int, dev_size: int = DEV_SIZE):
    """The splits of your own data, by the GLUE protocol (`sample`):

    - ``test``: the given test set; else a fixed ⌊n/5⌋ (≥ 1) of the training rows — the first ones of
      a shuffle with seed `TEST_SEED`, the same for every seed, K and spec (GLUE's test set is fixed
      too), so runs differ only in what they train and select on;
    - ``dev``: the given validation set; else ``dev_size`` of the remaining rows, held out per seed;
    - ``train``: ``k`` of the remaining rows per seed (``"all"``: every one), nested over K.
    """
    import datasets
    import numpy as np

    pool, test = ds["train"], ds["test"] if "test" in ds else None
    if test is None:
        test, pool = _hold_out_test(pool)
    if "validation" not in ds:
        try:
            return sample(datasets.DatasetDict({"train": pool, "dev": test}), k, seed, dev_size)
        except DataError as e:
            raise DataError(e.diagnostic.message.replace("the training set has", "after the test set "
                                                         f"({len(test)}) is held out, the training data has"),
                            code="D106", help="choose a smaller --k or --dev-size, or give --validation FILE "
                                              "(and --test FILE)") from None
    k = parse_k(k)
    n = len(pool)
    if k != "all" and n < k:
        raise DataError(f"the training data has {n} examples{' after the test set is held out' if 'test' not in ds else ''}; "
                        f"K={k} needs {k}", code="D106", help="choose a smaller --k")
    perm = np.random.default_rng(seed).permutation(n)
    idx = np.sort(perm if k == "all" else perm[:k])
    return datasets.DatasetDict({"train": pool.select(idx), "dev": ds["validation"], "test": test})


def own_test_split(data: OwnData):
    """The test split of a run's own data, rebuilt from its record (for `peltc eval`; the held-out
    test set does not depend on the seed): ``(Dataset, CustomTask, hashes)``."""
    ds, task, hashes = load_own(data)
    return (ds["test"] if "test" in ds else _hold_out_test(ds["train"])[0]), task, hashes


def _hold_out_test(train):
    """(test, rest): ⌊n/5⌋ (≥ 1) rows, the first of a shuffle with seed `TEST_SEED`; both in file order."""
    import numpy as np

    n = len(train)
    if n < 2:
        raise DataError(f"the training data has {n} example: holding out a test set needs at least 2",
                        code="D106", help="add examples, or give a test set with --test FILE")
    perm = np.random.default_rng(TEST_SEED).permutation(n)
    cut = max(1, n // TEST_SHARE)
    return train.select(np.sort(perm[:cut])), train.select(np.sort(perm[cut:]))


# --- generation tasks (causal LM: `--train gen:arith | gen:jsonl:PATH`) ---------------------------
#
#   raw = load_gen(task)                          # DatasetDict: train (the pool) [, test]; prompt, completion
#   splits = sample_own(raw, k=100, seed=1)       # the same protocol: a fixed ⌊n/5⌋ test, dev and K per seed
#   enc = tokenize_gen(splits, tokenizer)         # input_ids, attention_mask, labels (-100 on the prompt)

ARITH_POOL = 2500        # gen:arith: examples generated (seed ARITH_SEED); ⌊n/5⌋ of them are the test set
ARITH_SEED = 0


def gen_examples(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` distinct additions of two numbers of 2 or 3 digits (each size equally likely), as
    ``{"prompt": "123+45=", "completion": "168"}``; the same list for the same seed on any machine."""
    import numpy as np

    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    while len(out) < n:
        a, b = (int(rng.integers(10, 100)) if rng.random() < 0.5 else int(rng.integers(100, 1000)) for _ in "ab")
        prompt = f"{a}+{b}="
        if prompt not in seen:
            seen.add(prompt)
            out.append({"prompt": prompt, "completion": str(a + b)})
    return out


def read_gen_jsonl(path: str | os.PathLike, flag: str = "--train") -> list[dict[str, str]]:
    """The ``{"prompt": …, "completion": …}`` rows of a JSON Lines file (blank lines skipped; other keys
    ignored). A missing or empty file, a line that is not a JSON object, a missing key, or a prompt /
    completion that is not a non-empty string is a DataError naming the file, row and line. ``flag``: the
    option that named the file (--train, --validation, --test), for the message of a missing one."""
    import json

    from peltc.runtime.tasks import COMPLETION, PROMPT

    p = Path(path)
    if not p.is_file():
        what = "--train gen:jsonl:PATH" if flag == "--train" else f"{flag} PATH"
        raise DataError(f"{flag}: generation data file '{path}' not found", code="D101",
                        help=f"{what} reads JSON Lines: one {{\"prompt\": …, \"completion\": …}} per line")
    rows: list[dict[str, str]] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read '{path}': {e}", code="D105", span=Span(str(p), 1, 1)) from None
    for line_no, text in enumerate(lines, 1):
        if not text.strip():
            continue
        where = f"{p.name}: row {len(rows) + 1} (line {line_no})"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON: {e.msg}", code="D105", span=Span(str(p), line_no, e.colno),
                            help="one JSON object per line: {\"prompt\": \"…\", \"completion\": \"…\"}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: a JSON {type(obj).__name__}, not an object", code="D105",
                            span=Span(str(p), line_no, 1),
                            help="one JSON object per line: {\"prompt\": \"…\", \"completion\": \"…\"}")
        for key in (PROMPT, COMPLETION):
            if key not in obj:
                raise DataError(f"{where}: no '{key}'", code="D104", span=Span(str(p), line_no, 1),
                                help=did_you_mean(key, list(obj), "keys") or f"every row needs '{PROMPT}' and "
                                                                             f"'{COMPLETION}'")
            v = obj[key]
            if not isinstance(v, str) or not v.strip():
                raise DataError(f"{where}: '{key}' is {'empty' if isinstance(v, str) else 'not a string: ' + repr(v)}",
                                code="D110", span=Span(str(p), line_no, 1),
                                help=f"'{PROMPT}' and '{COMPLETION}' must be non-empty strings")
        rows.append({PROMPT: obj[PROMPT], COMPLETION: obj[COMPLETION]})
    if not rows:
        raise DataError(f"{p.name}: the file has no rows", code="D108", span=Span(str(p), 1, 1))
    return rows


_GEN_FLAGS = {"train": "--train", "validation": "--validation", "test": "--test"}


def load_gen(task, roles: Iterable[str] = ("train", "validation", "test")):
    """A generation task's examples: ``(DatasetDict with train — the pool — [, validation] [, test], the
    identity's data record)``. ``gen:arith``: `gen_examples` (ARITH_POOL, seed ARITH_SEED);
    ``gen:jsonl:PATH``: the file's rows, and those of the task's validation and test files when it names
    them (the record holds each file's sha256). ``roles``: the splits to read."""
    import datasets

    if task.source == "jsonl":
        files = {role: path for role, path in (("train", task.path), ("validation", task.validation),
                                               ("test", task.test)) if path and role in roles}
        rows = {role: read_gen_jsonl(path, _GEN_FLAGS[role]) for role, path in files.items()}
        record = {"source": task.ref,
                  **{role: path for role, path in files.items() if role != "train"},
                  "hashes": {role: _sha256_files([Path(path)], Path(path).parent) for role, path in files.items()}}
    else:
        rows = {"train": gen_examples(ARITH_POOL, ARITH_SEED)}
        record = {"source": task.ref, "pool": ARITH_POOL, "pool_seed": ARITH_SEED}
    feats = datasets.Features({"prompt": datasets.Value("string"), "completion": datasets.Value("string"),
                               "idx": datasets.Value("int32")})
    return datasets.DatasetDict({role: datasets.Dataset.from_dict(
        {"prompt": [r["prompt"] for r in rs], "completion": [r["completion"] for r in rs],
         "idx": list(range(len(rs)))}, features=feats) for role, rs in rows.items()}), record


def gen_test_split(task):
    """The test split of a generation task (its --test file, else the fixed fifth held out of the training
    data: it does not depend on the seed), for `peltc eval`; and the data record of what was read."""
    if task.source == "jsonl" and task.test:
        raw, record = load_gen(task, roles=("test",))
        return raw["test"], record
    raw, record = load_gen(task, roles=("train",))
    return _hold_out_test(raw["train"])[0], record


def encode_gen(tokenizer, prompt: str, completion: str | None = None, max_length: int | None = None):
    """Token ids of a prompt (with the tokenizer's special tokens, as `peltc generate` encodes it) and, given
    a completion, the completion's (no special tokens) followed by the end-of-sequence token. A prompt
    longer than ``max_length`` loses its start (the completion is kept whole)."""
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if completion is None:
        return p, None
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        c = [*c, tokenizer.eos_token_id]
    if max_length is not None and len(p) + len(c) > max_length:
        p = p[max(0, len(p) + len(c) - max_length):]
    return p, c


def tokenize_gen(ds, tokenizer, max_length: int = MAX_LENGTH):
    """Every split as a causal-LM example: ``input_ids`` = prompt + completion + end-of-sequence,
    ``labels`` = -100 on the prompt (the loss is on the completion only), ``attention_mask``,
    ``length``, and ``prompt_length`` (where the completion starts). ``prompt`` and ``completion`` stay
    (the Trainer drops them; scoring reads them)."""
    def encode(batch):
        out = {"input_ids": [], "attention_mask": [], "labels": [], "length": [], "prompt_length": []}
        for prompt, completion in zip(batch["prompt"], batch["completion"]):
            p, c = encode_gen(tokenizer, prompt, completion, max_length)
            out["input_ids"].append(p + c)
            out["attention_mask"].append([1] * (len(p) + len(c)))
            out["labels"].append([-100] * len(p) + c)
            out["length"].append(len(p) + len(c))
            out["prompt_length"].append(len(p))
        return out

    return ds.map(encode, batched=True, desc="tokenising")


def gen_collator(tokenizer):
    """Right padding (the pad token; ``labels`` padded with -100, ``attention_mask`` with 0): the positions
    of every example start at 0, so a batch computes what each example alone would."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def collate(features):
        n = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            gap = n - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [pad] * gap)
            batch["attention_mask"].append(list(f["attention_mask"]) + [0] * gap)
            batch["labels"].append(list(f.get("labels") or [-100] * len(f["input_ids"])) + [-100] * gap)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}

    return collate
