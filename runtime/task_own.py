"""Your own data as a task (``--train csv:PATH | json:PATH | disk:DIR | hub:NAME[:CONFIG]``, with
``--validation``, ``--test`` and the column flags): `CustomTask`, the `task.Task` such data makes — read
and checked by `own_files`, its labels deciding classification or regression, split by the protocol of
`data.sample_own`, classified (`classify.Classification`).

    data = own_data(opts)                 # OwnData: the sources and columns the flags name
    raw, task, hashes = load_own(data)    # DatasetDict: train [, validation] [, test]; a CustomTask
    splits = task.sample(raw, k=100, seed=1, dev_size=1000)    # train (K), dev, test
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from peltc.errors import DataError, UsageError, did_you_mean
from peltc.runtime.classify import Classification
from peltc.runtime.data import hold_out_test, sample_own
from peltc.runtime.own_files import (
    _DEV_NAMES,
    TEXT,
    TEXT_PAIR,
    OwnData,
    Source,
    _column,
    _decide_labels,
    _load_source,
    _normalise,
    _pick_split,
    _raw_labels,
    _Rows,
    _task_name,
    _unlabelled,
    is_own,
    parse_source,
    sha256_named,
    source_hash,
)

MAIN_METRIC = {"classification": "accuracy", "regression": "spearmanr"}   # task type → selects checkpoints
# the flags that apply to your own data only (`peltc compile`'s and `peltc grid`'s)
OWN_FLAGS = {"validation": "--validation", "test": "--test", "text_column": "--text-column",
             "text_pair_column": "--text-pair-column", "label_column": "--label-column", "task_type": "--task-type"}


@dataclass(frozen=True)
class CustomTask(Classification):
    """A classification or regression task over a user's own data: what the runtime reads of a
    `GlueTask` (name, columns, labels, is_regression, num_labels, metrics, main_metric), plus where
    the data came from. Built by `load_own`; round-trips through JSON (``to_dict`` /
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
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)   # own_files.OwnData.to_dict()

    @property
    def task_type(self) -> str:
        return "regression" if self.labels is None else "classification"

    @property
    def main_metric(self) -> str:
        return MAIN_METRIC[self.task_type]

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

    # --- the task.Task protocol (the rest: classify.Classification) -----------------------------
    def load(self, data_dir: str | None = None):
        """The data again, from where its record says it came from (`load_own`)."""
        return load_own(OwnData.from_dict(self.data))[0]

    def sample(self, raw, k, seed: int, dev_size: int):
        return sample_own(raw, k, seed, dev_size=dev_size)

    def run_record(self) -> dict[str, Any]:
        return {"own_data": self.to_dict()}

    def artifact_record(self) -> dict[str, Any]:
        return {"task": self.name, "labels": list(self.labels) if self.labels else None,
                "task_type": self.task_type, "own_data": self.to_dict()}

    def locate(self, run_dir, train: str | None = None, test: str | None = None) -> "CustomTask":
        """The task as `peltc eval` reads it: its data at the places ``train`` / ``test`` give (``--train`` /
        ``--test``: a file or folder moved since the run; a bare path is of the run's format), the
        validation set left out (eval scores the test set only). A file or folder still missing is a
        DataError (D101) naming each and the flag that points at its new place."""
        d = OwnData.from_dict(self.data)
        new_train = parse_source(train, "--train", like=d.train) if train else d.train
        new_test = d.test
        if test:
            new_test = parse_source(test, "--test", like=new_train)
        elif d.test is not None and (d.test.kind, d.test.path) == (d.train.kind, d.train.path):
            new_test = replace(d.test, path=new_train.path)          # a split of the (moved) training folder
        missing = [(role, s) for role, s in (("train", new_train), ("test", new_test))
                   if s is not None and s.kind != "hub" and not Path(s.path).exists()]
        if missing:
            what = "; ".join(f"its {role} {'folder' if s.kind == 'disk' else 'file'} '{s.path}' is not there"
                             for role, s in missing)
            raise DataError(f"the data of {run_dir} moved: {what}", code="D101",
                            help=f"point at the new place: peltc eval {run_dir} "
                                 + " ".join(f"--{role} {s.kind.upper()}_PATH" for role, s in missing))
        moved = OwnData(new_train, None, new_test, d.text_column, d.text_pair_column, d.label_column, d.task_type)
        names = {role: Path(old.path).name for role, old, new in (("train", d.train, new_train), ("test", d.test, new_test))
                 if old is not None and new is not None and old.kind in ("csv", "json") and new.path != old.path}
        return replace(self, data={**self.data, **moved.to_dict(), "moved": names})

    def eval_split(self, run_dir, run: dict[str, Any], data_dir: str | None, tokenizer, max_length: int):
        """`peltc eval`'s test split, read again from where the run found it, tokenised; and a note when a
        file changed since the run. Labels that changed are refused (D111)."""
        import datasets

        from peltc.runtime.classify import tokenize

        test, now, hashes = own_test_split(OwnData.from_dict(self.data))
        if now.labels != self.labels:
            raise DataError(f"the data of {run_dir} changed since the run: its labels are now "
                            f"{list(now.labels) if now.labels else 'scores'}, the run's "
                            f"{list(self.labels) if self.labels else 'scores'}", code="D111",
                            help=f"the run trained on {self.data['train']['kind']}:{self.data['train']['path']}")
        before = (run.get("identity") or {}).get("data", {}).get("hashes", {})
        for role, name in self.data.get("moved", {}).items():   # a moved file: its content under its old name
            hashes[role] = sha256_named(OwnData.from_dict(self.data).to_dict()[role]["path"], name)
        changed = [k for k in hashes if k in before and before[k] != hashes[k]]
        notes = [f"the {' and '.join(changed)} data changed since the run: this is not its test set"] if changed else []
        return tokenize(datasets.DatasetDict({"test": test}), tokenizer, self, max_length=max_length)["test"], notes


def own_data(opts, flag: str = "--train"):
    """The `OwnData` that ``opts`` asks for (``opts.task`` is csv:…, json:…, disk:… or hub:…; ``flag``
    names it in errors: `peltc grid` reads it from ``--tasks``)."""
    train = parse_source(opts.task, flag)
    return OwnData(train=train,
                     validation=parse_source(opts.validation, "--validation", like=train) if opts.validation else None,
                     test=parse_source(opts.test, "--test", like=train) if opts.test else None,
                     text_column=opts.text_column, text_pair_column=opts.text_pair_column,
                     label_column=opts.label_column or "label", task_type=opts.task_type)


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


def own_test_split(data: OwnData):
    """The test split of a run's own data, rebuilt from its record (for `peltc eval`; the held-out
    test set does not depend on the seed): ``(Dataset, CustomTask, hashes)``."""
    ds, task, hashes = load_own(data)
    return (ds["test"] if "test" in ds else hold_out_test(ds["train"])[0]), task, hashes


# --- resolving --train csv:… (and the rest), reading a run's record ----------------------------------

def claims(ref: str | None) -> bool:
    return is_own(ref)


def resolve(opts, say=print):
    """(task, raw data, the identity's data record): your own data is read and checked here, before
    weights load, since its labels make the task."""
    if opts.data_dir is not None:
        raise UsageError("--data-dir is for GLUE tasks", code="U130",
                         help=f"--train {opts.task} names the data itself")
    notes: list[str] = []
    raw, task, hashes = load_own(own_data(opts), notes)
    for n in notes:
        say(f"note: {n}")
    for line in label_report(task, raw["train"]):
        say(line)
    return task, raw, {"source": {k: v for k, v in task.data.items() if k != "label_kind"}, "hashes": hashes}


_TIMES = {1: "once", 2: "twice"}


def label_report(task: CustomTask, train) -> list[str]:
    """What the training labels make, said at start: the label set with each label's count (or the scores'
    range), and a warning for each label seen at most twice (a typo, e.g. `maybe`, is a class of its own)."""
    if task.labels is None:
        scores = train["label"]
        return [f"labels: scores from {min(scores):g} to {max(scores):g} (regression; {len(scores)} rows)"]
    counts = [0] * len(task.labels)
    for i in train["label"]:
        counts[i] += 1
    shown = ", ".join(f"{lab} {n}" for lab, n in zip(task.labels, counts))
    out = [f"labels: {len(task.labels)} classes from the training data: {shown}"]
    for lab, n in zip(task.labels, counts):
        if n in _TIMES:
            out.append(f"warning: label {lab!r} occurs {_TIMES[n]} in the {len(train)} training rows, and is a "
                       f"class of its own; if it is a mistake, fix or remove its row{'s' * (n > 1)}")
    return out


def from_record(manifest: dict[str, Any]) -> CustomTask | None:
    """The `CustomTask` an artifact's manifest records (``own_data``), or None when it records none."""
    from peltc.compiler.torch.artifact import read_task_record
    return read_task_record(manifest, "own_data", CustomTask.from_dict)
