"""Search spaces: a spec whose values may be choices (`choice(4, 8)`, `uniform(a, b)`,
`loguniform(a, b)`, `intrange(a, b)`) and whose instances may be `optional`.

A space is read from the syntax tree of one file (choices in files it extends or imports are
E160). Each choice is one `Dimension`, named stably after where it is written:

    lora.rank   lora.layers[3..].rank   lora.gate   lora.at   adapter.present   train.lr

`Space.concrete(point)` writes the spec of one point: the source text with every choice replaced by
the point's value and every absent optional instance removed, so comments and layout are kept and
the text checks, compiles and hashes like a hand-written spec. A spec without choices is a space
with no dimensions (`concrete({})` is its text, unchanged). Checking every point against a model
is `compiler/space_check.py`'s job. Torch-free.

>>> s = load_space("lora q { at layers[*].attention.query rank choice(4, 8) }")
>>> [d.name for d in s.dimensions], s.size()
(['q.rank'], 2)
>>> s.concrete({"q.rank": 8})
'lora q { at layers[*].attention.query rank 8 }'
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.space_dims import Dimension, Site, collect, line_starts, offsets
from peltc.errors import Diagnostic, UsageError
from peltc.grammar import ast
from peltc.grammar.parser import parse


@dataclass
class Space:
    """A spec with search dimensions. ``dimensions`` are in spec order (empty for a plain spec)."""

    file: str
    source: str
    tree: ast.Spec
    dimensions: list[Dimension] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)   # found while reading it (W220)
    _sites: dict[str, Site] = field(default_factory=dict, repr=False)

    def size(self, distinct: bool = False) -> int | None:
        """The number of discrete points (the product over the dimensions); None with a float one.
        ``distinct``: the number of different specs among them (the dimensions of an absent optional
        instance change nothing)."""
        return None if self.continuous() else self.discrete_size(distinct)

    def discrete_size(self, distinct: bool = False) -> int:
        """`size` over the discrete dimensions alone (float ones set aside)."""
        if not distinct:
            return math.prod(len(d.values()) for d in self.discrete())
        inner: dict[str, int] = {}   # an optional instance's `present` → points of its other dimensions
        n = 1
        for d in self.discrete():
            site = self._sites[d.name]
            if site.parent is not None:
                inner[site.parent] = inner.get(site.parent, 1) * len(d.values())
            elif not site.present:
                n *= len(d.values())
        for d in self.dimensions:
            if self._sites[d.name].present:
                n *= inner.get(d.name, 1) + 1
        return n

    def discrete(self) -> list[Dimension]:
        return [d for d in self.dimensions if d.kind != "float"]

    def continuous(self) -> list[Dimension]:
        return [d for d in self.dimensions if d.kind == "float"]

    def points(self, distinct: bool = False) -> Iterator[dict]:
        """Every point over the discrete dimensions (categorical values as their choice text, ints as
        ints); float dimensions are left out (a sampler draws them). ``distinct``: one point per
        different spec (an absent optional instance's dimensions only at their first value)."""
        dims = self.discrete()
        for combo in itertools.product(*(d.values() for d in dims)):
            point = dict(zip((d.name for d in dims), combo))
            if distinct and any(point.get(self._sites[d.name].parent) == "false" and point[d.name] != d.values()[0]
                                for d in dims):
                continue
            yield point

    def concrete(self, point: dict[str, object]) -> str:
        """The .pelt text of one point: no choice left, absent optional instances removed.
        A value outside its dimension's domain is a ValueError, an unknown or missing key a KeyError
        (the dimensions inside an absent optional instance may be left out)."""
        return self._text(self.normalise(point), pad=False)

    def first(self) -> dict[str, str]:
        """The point of every dimension's first value (the first option, the low end), as text."""
        return {d.name: d.choices[0] if d.kind == "categorical" else _canonical(d, d.low) for d in self.dimensions}

    def layout_text(self, values: dict[str, str], drop: frozenset[str] = frozenset()) -> str:
        """The spec of a point (``values`` as `normalise` returns them) with every character kept at
        its line and column, so that the diagnostics and spans of its front end point into the space's
        own text (``drop``: instances removed whatever their values)."""
        return self._text({k: self.written(k, v) for k, v in values.items()}, pad=True, drop=drop)

    # --- values ---------------------------------------------------------------------------------
    def normalise(self, point: dict[str, object]) -> dict[str, str]:
        """The point's values as .pelt text, checked against each dimension's domain."""
        unknown = set(point) - {d.name for d in self.dimensions}
        if unknown:
            raise KeyError(f"no dimension {sorted(unknown)[0]!r} in {self.file}; dimensions: "
                           f"{', '.join(d.name for d in self.dimensions) or 'none'}")
        out: dict[str, str] = {}
        for d in self.dimensions:
            if d.name in point:
                out[d.name] = _canonical(d, point[d.name])
        for d in self.dimensions:
            if d.name not in out:
                parent = self._sites[d.name].parent
                if parent is None or out.get(parent) != "false":
                    raise KeyError(f"the point gives no value for {d.name!r}")
        return out

    def _text(self, values: dict[str, str], *, pad: bool, drop: frozenset[str] = frozenset()) -> str:
        """The source with each dimension's site replaced by its value (``values``: canonical text,
        or for ``pad`` the written text). ``pad`` keeps every character's line and column (the
        replaced text is padded with spaces) so diagnostics of the result point into the source.
        ``drop``: sections (instances) removed whatever their values (space_check's pair checks)."""
        edits: list[tuple[int, int, str]] = []
        removed: list[tuple[int, int]] = []
        for name, site in self._sites.items():
            if site.present:
                if values.get(name) == "false" or site.dim.section in drop:
                    removed.append((site.start, site.end))
                else:
                    edits.append((site.start, site.kw_end, ""))
        for sec in drop:
            rng = _section_range(self, sec)
            if rng and rng not in removed:
                removed.append(rng)
        for name, site in self._sites.items():
            if site.present or any(a <= site.start < b for a, b in removed) or name not in values:
                continue
            edits.append((site.start, site.end, values[name]))
        edits += [(a, _line_end(self.source, b) if not pad else b, "") for a, b in removed]
        text = self.source
        for a, b, new in sorted(edits, reverse=True):
            if pad:
                if len(new) > b - a:   # only a float between the ends is written longer than its range
                    raise ValueError(f"{new!r} does not fit where {text[a:b]!r} is written: use concrete()")
                new = new + "".join("\n" if c == "\n" else " " for c in text[a + len(new):b])
            text = text[:a] + new + text[b:]
        return text

    def written(self, name: str, value: str) -> str:
        """The text of ``value`` as written in the source (for `_text(pad=True)`): an option, or an
        end of a range, as written; other values as they are."""
        site = self._sites[name]
        d = site.dim
        if d.kind == "categorical":
            return site.written[d.choices.index(value)]
        if float(value) == d.low:
            return site.written[0]
        if float(value) == d.high:
            return site.written[1]
        return value


def _canonical(d: Dimension, v: object) -> str:
    if d.kind == "categorical":
        if isinstance(v, bool):
            v = "true" if v else "false"
        text = str(v)
        if text in d.choices:
            return text
        if isinstance(v, (int, float)) or _is_number(text):
            for c in d.choices:
                if _is_number(c) and float(c) == float(text):
                    return c
        raise ValueError(f"{d.name}: {v!r} is not one of {', '.join(d.choices)}")
    try:
        num = float(v) if not isinstance(v, bool) else math.nan   # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{d.name}: {v!r} is not a number") from None
    if not (d.low <= num <= d.high):
        raise ValueError(f"{d.name}: {v!r} is outside [{_num(d.low)}, {_num(d.high)}]")
    if d.kind == "int":
        if not num.is_integer():
            raise ValueError(f"{d.name}: {v!r} is not an integer")
        return str(int(num))
    return repr(num)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _line_end(text: str, b: int) -> int:
    """Past the blanks and the one line break after offset ``b``, when only blanks follow on its line."""
    j = b
    while j < len(text) and text[j] in " \t\r":
        j += 1
    return j + 1 if j < len(text) and text[j] == "\n" else (j if j == len(text) else b)


def _section_range(space: Space, name: str) -> tuple[int, int] | None:
    starts = line_starts(space.source)
    for s in space.tree.statements:
        if isinstance(s, ast.Section) and s.name == name:
            return offsets(starts, s.optional or s.span, s.span)
    return None


def relocate(text: str, file: str, folder: str | Path) -> str:
    """A point's spec ``text`` (written from the space ``file``) to be saved in ``folder`` (a search
    trial's): each relative `extends` / `import` path (a spec, a plug-in's .py) rewritten relative to
    ``folder``, so that it names the same file from there. A space given as text keeps its paths."""
    if file.startswith("<"):
        return text
    tree, starts = parse(text, file), line_starts(text)
    edits = []
    for s in tree.statements:
        if isinstance(s, (ast.Extends, ast.Import)) and not Path(s.path).is_absolute():
            start, end = offsets(starts, s.span, s.span)
            at = text.rindex(f'"{s.path}"', start, end)
            new = os.path.relpath(Path(file).resolve().parent / s.path, Path(folder).resolve())
            edits.append((at, at + len(s.path) + 2, '"' + Path(new).as_posix() + '"'))
    for a, b, new in sorted(edits, reverse=True):
        text = text[:a] + new + text[b:]
    return text


def load_space(source: str | Path, *, path: str | None = None) -> Space:
    """Read a space from .pelt text, or from a file when ``source`` is a Path (or a str naming an
    existing .pelt file). Syntax errors and malformed choices raise `SpecError`."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and "{" not in source
                                    and source.endswith(".pelt")):
        file = path or str(source)
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read spec '{source}': {getattr(e, 'strerror', None) or e}",
                             code="U001") from None
    else:
        file, text = path or "<string>", source
    diags = Diagnostics()
    diags.sources[file] = text
    tree = parse(text, file)
    dims, sites = collect(tree, text, diags)
    diags.raise_if_errors()
    return Space(file, text, tree, dims, diags.warnings, sites)


__all__ = ["Dimension", "Space", "load_space", "relocate"]
