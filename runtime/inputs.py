"""The input rows of `peltc predict --file` — one run or several, read and checked the same way.

JSON Lines (or one JSON array of objects) are read as written, row by row: a field a row lacks stays
absent in its prediction (no ``null`` is filled in), and rows may give their text under different
names (the run's column names, or ``text`` / ``text_pair``). ``--file -``, ``/dev/stdin`` and a shell's
process substitution (``<(…)``) are read as a stream. A ``.csv`` / ``.tsv`` file is read by `datasets`
and checked by `own_files` (field counts, encoding). Errors name the file, row and line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from peltc.errors import DataError, Span, did_you_mean

STDIN = "-"


class InputRows:
    """Names the rows of a JSON input (1-based rows, and the line each came from when it is JSON Lines)."""

    def __init__(self, path: str, lines: list[int] | None):
        self.file = "<stdin>" if path == STDIN else path
        self.lines = lines

    @property
    def name(self) -> str:
        return self.file if self.file == "<stdin>" else Path(self.file).name

    def line(self, row: int) -> int | None:
        return self.lines[row] if self.lines is not None and row < len(self.lines) else None

    def span(self, row: int | None = None) -> Span:
        return Span(self.file, (self.line(row) if row is not None else None) or 1, 1)

    def error(self, row: int, column: str, what: str, code: str, help: str | None = None) -> DataError:
        line = self.line(row)
        where = f"row {row + 1}" + (f" (line {line})" if line else "")
        return DataError(f"{self.name}: {where}, column '{column}': {what}", code=code, span=self.span(row),
                         help=help)


def is_csv(path: str | Path) -> bool:
    return str(path) != STDIN and Path(path).suffix.lower() in (".csv", ".tsv") and Path(path).is_file()


def read_inputs(path: str | Path):
    """``(rows, where)``: the input's rows in order (dicts) and what names a row in errors."""
    from peltc.runtime import own_files as F

    path = str(path)
    if is_csv(path):
        src = F.Source("csv", str(Path(path).resolve()))
        return F._pick_split(F._load_source(src, "input"), "file", src).to_list(), F._Rows(src, "input")
    if path == STDIN:
        data = sys.stdin.buffer.read()
    else:
        p = Path(path)
        if not p.exists() or p.is_dir():
            raise DataError(f"--file: input file '{path}' not found", code="D101",
                            help="one JSON object per line, with the text(s) to label; --file - reads standard input")
        with open(p, "rb") as f:          # a pipe (/dev/stdin, <(…)) as well as a file
            data = f.read()
    return _parse_json(data, path)


def _parse_json(data: bytes, path: str):
    where = InputRows(path, None)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{where.name}: line {line}: {data[e.start:e.start + 1]!r} is not UTF-8", code="D105",
                        span=Span(where.file, line, e.start - data.rfind(b"\n", 0, e.start)),
                        help="the input must be UTF-8 text") from None
    if not text.strip():
        raise DataError(f"input file '{where.name}' is empty", code="D108", span=where.span(),
                        help="one JSON object per line (JSON Lines), or a JSON array of objects")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where.name}: line {e.lineno}: not JSON ({e.msg})", code="D105",
                            span=Span(where.file, e.lineno, e.colno), help="a JSON array of objects") from None
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict)), None)
        if bad is not None:
            raise DataError(f"{where.name}: row {bad + 1} of the array is not a JSON object", code="D105",
                            span=where.span(), help="each row is an object with the text(s) to label")
        return rows, where
    rows, lines = [], []
    for n, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(f"{where.name}: line {n}: not JSON ({e.msg})", code="D105",
                            span=Span(where.file, n, e.colno), help="one JSON object per line (JSON Lines)") from None
        if not isinstance(row, dict):
            raise DataError(f"{where.name}: line {n} is not a JSON object", code="D105", span=Span(where.file, n, 1),
                            help="one JSON object per line, with the text(s) to label")
        rows.append(row)
        lines.append(n)
    where.lines = lines
    return rows, where


def input_columns(task) -> list[tuple[str, ...]]:
    """The names an input row may give its text(s) by: the run's own columns, then text / text_pair."""
    own = tuple(getattr(task, "text_columns", ()) or task.columns)
    return [c for c in (own, tuple(task.columns), ("text", "text_pair")[:len(task.columns)]) if c]


def row_texts(row: dict[str, Any], i: int, task, where, who: str) -> list[str]:
    """The text(s) of input row ``i`` for ``task``: under the first of its `input_columns` the row has
    (a missing one: D104; an empty one: D110, naming the row). ``who`` names the run in the message."""
    cands = input_columns(task)
    cols = next((c for c in cands if all(row.get(k) is not None for k in c)), None)
    if cols is None:
        wanted = " or ".join(repr(", ".join(c)) for c in cands)
        present = [k for k, v in row.items() if v is not None]
        raise where.error(i, cands[0][0], f"{who} ({task.name}) reads its text from {wanted}, which the row lacks",
                          code="D104", help=did_you_mean(cands[0][0], present, "fields of the row"))
    out = []
    for c in cols:
        v = row[c]
        if isinstance(v, float) and v != v or isinstance(v, str) and not v.strip():
            raise where.error(i, c, "the text is empty", code="D110",
                              help="every example needs a non-empty text; remove or fill the row")
        out.append(v if isinstance(v, str) else str(v))
    return out
