"""A CSV (or TSV) file's shape, checked with the csv module before `datasets` reads it: pandas turns a
row with one field more than the header into an index and pads a short one silently, and its errors name
no row. Here a byte that is not UTF-8 and a row whose field count differs from the header's are
DataErrors naming the file, the row and its line; `row_lines` gives each row's real first line (a quoted
field may span lines), which `own_files._Rows` uses to name rows.
"""

from __future__ import annotations

import csv
import io
from functools import lru_cache
from pathlib import Path

from peltc.errors import DataError, Span


def delimiter(path: str | Path) -> str:
    return "\t" if Path(path).suffix.lower() == ".tsv" else ","


def read_utf8(path: str | Path, role: str, rows_of=None) -> str:
    """The file's text; a byte that is not UTF-8 is a DataError (D105) at its line and column, naming
    its row when ``rows_of(text, line)`` (the 1-based row holding that line, or None) says."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        start = data.rfind(b"\n", 0, e.start) + 1
        line, col = data.count(b"\n", 0, e.start) + 1, e.start - start + 1
        row = rows_of(data.decode("utf-8", errors="replace"), line) if rows_of else None
        where = f"row {row} (line {line})" if row else f"line {line}"
        raise DataError(f"{Path(path).name}: {where}, byte {col}: {data[e.start:e.start + 1]!r} is not UTF-8 "
                        f"(the {role} file must be UTF-8 text)", code="D105", span=Span(str(path), line, col),
                        help=f"convert it, e.g. iconv -f latin1 -t utf-8 '{Path(path).name}' > utf8.csv") from None


def _records(text: str, delim: str) -> list[tuple[int, list[str]]]:
    """(first line, fields) of every record that is not a blank line, the header first."""
    out, last = [], 0
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    for fields in reader:
        if fields:
            out.append((last + 1, fields))
        last = reader.line_num
    return out


def _row_of_line(delim: str):
    def rows_of(text: str, line: int) -> int | None:
        starts = [first for first, _ in _records(text, delim)]
        i = sum(1 for s in starts if s <= line) - 1
        return i if i >= 1 else None        # record 0 is the header
    return rows_of


def check_csv(path: str | Path, role: str) -> None:
    """Refuse a CSV that is not UTF-8 (D105) or has a row with more or fewer fields than its header
    (D102): the first such row, with its line, the counts and the header's names."""
    delim = delimiter(path)
    recs = _records(read_utf8(path, role, _row_of_line(delim)), delim)
    if not recs:
        return
    header = recs[0][1]
    name = Path(path).name
    for i, (line, fields) in enumerate(recs[1:], 1):
        if len(fields) != len(header):
            sep = "a tab" if delim == "\t" else "a comma"
            more = len(fields) > len(header)
            raise DataError(
                f"{name}: row {i} (line {line}) has {len(fields)} field{'s' * (len(fields) != 1)} where the header "
                f"has {len(header)} ({', '.join(header)})", code="D102", span=Span(str(path), line, 1),
                help=(f"a field that holds {sep} must be in double quotes (\"so, a gripping film\"); or remove the "
                      "extra field") if more else
                     "give every column a value (an empty value is two delimiters in a row)")


@lru_cache(maxsize=8)
def _row_lines(path: str, mtime: float, size: int) -> tuple[int, ...]:
    text = Path(path).read_bytes().decode("utf-8", errors="replace")
    return tuple(first for first, _ in _records(text, delimiter(path))[1:])


def row_lines(path: str | Path) -> tuple[int, ...]:
    """The first line of each row (0-based rows, the header not counted) of a CSV file."""
    st = Path(path).stat()
    return _row_lines(str(path), st.st_mtime, st.st_size)
