"""Reading your own data files and checking them: the sources (``csv:PATH``, ``json:PATH``, ``disk:DIR``,
``hub:NAME[:CONFIG]``) read by `datasets` (its csv / json builders, load_from_disk, load_dataset); this
module only checks what was read — missing columns, empty files, mixed or unseen labels, empty texts are
DataErrors naming the file, row and column — and normalises each split to ``text`` [, ``text_pair``],
``label``, ``idx``. `task_own` builds the task from it.
"""

from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from peltc.errors import DataError, Span, UsageError, did_you_mean
from peltc.runtime import own_csv

TEXT = "text"            # the dataset column names a custom task's texts get, whatever the file calls them
TEXT_PAIR = "text_pair"
OWN_FORMATS = ("csv", "json", "disk", "hub")
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
        if self.src.kind == "csv":     # a row's first line (a quoted field may span lines)
            return dict(enumerate(own_csv.row_lines(self.src.path))).get(row)
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
        if src.kind == "csv":   # field counts and encoding, with rows and lines (pandas says neither)
            own_csv.check_csv(path, role)
        else:
            own_csv.read_utf8(path, role)
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
        return sha256_files([Path(src.path)], Path(src.path).parent)
    if src.kind == "disk":
        root = Path(src.path)
        return sha256_files(sorted(p for p in root.rglob("*") if p.is_file()), root)
    return f"fingerprint:{getattr(ds, '_fingerprint', None)}"


def sha256_named(path: str | Path, name: str) -> str:
    """`source_hash` of a file as if it were still called ``name`` (a data file moved since its run)."""
    h = hashlib.sha256(name.encode() + b"\0")
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_files(files, root: Path) -> str:
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
