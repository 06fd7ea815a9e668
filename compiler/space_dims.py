"""The dimensions of a search space, collected from one file's syntax tree (`compiler/space.py`
builds the `Space` around them): their names, domains and where each is written.

Malformed choices are reported here, before any model: `optional` on a settings section (E161), an
empty or reversed range or a loguniform range that reaches 0 (E162), an option given twice (E163); a
choice of one value is a warning (W220).
"""

from __future__ import annotations

from dataclasses import dataclass

from peltc.compiler.diagnostics import Diagnostics
from peltc.errors import Span
from peltc.grammar import ast, fmt

PRESENT = ("true", "false")   # the choices of an optional instance's `present` dimension


@dataclass(frozen=True)
class Dimension:
    """One axis of a search space. ``choices`` are canonical .pelt texts (categorical);
    ``low``/``high`` bound a float or int dimension (both ends included), ``log`` samples it on a log
    scale. ``section`` is the instance (or `train` / `head`) the dimension belongs to."""

    name: str
    kind: str                      # "categorical" | "float" | "int"
    choices: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    span: Span | None = None
    section: str = ""

    def values(self) -> list:
        """The discrete values (categorical: the choices; int: every integer low..high)."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise ValueError(f"{self.name} is continuous: it has no list of values")

    def to_dict(self) -> dict:
        d: dict = {"name": self.name, "kind": self.kind, "section": self.section,
                   "span": self.span.to_dict() if self.span else None}
        if self.kind == "categorical":
            d["choices"] = list(self.choices)
        else:
            d |= {"low": self.low, "high": self.high, "log": self.log}
        return d


@dataclass(frozen=True)
class Site:
    """Where a dimension is written: offsets [start, end) of its text in the source; for an
    optional instance's `present` (``present``) the whole section, ``kw_end`` the offset of its
    method keyword (what follows `optional `)."""

    dim: Dimension
    start: int
    end: int
    written: tuple[str, ...] = ()   # the options (or low, high) as written, in order
    present: bool = False
    kw_end: int = 0
    parent: str | None = None       # the `present` dimension of the optional instance it is in


def line_starts(text: str) -> list[int]:
    """Offsets of each line's start (lines counted on '\\n', as the parser does)."""
    starts = [0]
    for ln in text.split("\n")[:-1]:
        starts.append(starts[-1] + len(ln) + 1)
    return starts


def offsets(starts: list[int], first: Span, last: Span) -> tuple[int, int]:
    """[start of ``first``, end of ``last``) as offsets."""
    return (starts[first.line - 1] + first.col - 1, starts[last.end_line - 1] + last.end_col - 1)


class _Collector:
    def __init__(self, text: str, diags: Diagnostics):
        self.text, self.diags = text, diags
        self.starts = line_starts(text)
        self.dims: list[Dimension] = []
        self.sites: dict[str, Site] = {}

    def add(self, dim: Dimension, span: Span, written: tuple[str, ...] = (), parent: str | None = None,
            **kw) -> None:
        name, k = dim.name, 1
        while name in self.sites:   # two overrides with one selector: `x.layers[3].rank`, `…#2`
            k += 1
            name = f"{dim.name}#{k}"
        dim = Dimension(name, dim.kind, dim.choices, dim.low, dim.high, dim.log, dim.span, dim.section)
        a, b = offsets(self.starts, span, span)
        self.dims.append(dim)
        self.sites[name] = Site(dim, a, b, written, parent=parent, **kw)

    def slice(self, span: Span) -> str:
        a, b = offsets(self.starts, span, span)
        return self.text[a:b]

    def section(self, s: ast.Section) -> None:
        key = s.name or s.keyword
        parent = None
        if s.optional is not None:
            if s.name is None:
                self.diags.error("E161", f"`{s.keyword}` cannot be optional", s.optional,
                                 "only a method instance may be optional: `optional lora my_lora { ... }`")
            else:
                parent = f"{key}.present"
                dim = Dimension(parent, "categorical", PRESENT, span=s.optional, section=key)
                a, b = offsets(self.starts, s.optional, s.span)
                kw = offsets(self.starts, s.keyword_span, s.keyword_span)[0]
                self.dims.append(dim)
                self.sites[parent] = Site(dim, a, b, PRESENT, present=True, kw_end=kw)
        self.members(s.members, key, key, parent)

    def members(self, members, prefix: str, key: str, parent: str | None) -> None:
        for m in members:
            if isinstance(m, ast.LayerOverride):
                self.members(m.members, f"{prefix}.layers[{fmt.selector(m.selector)}]", key, parent)
            elif isinstance(m, ast.Param) and m.space is not None:
                self.space(f"{prefix}.{m.name}", m.space, key, parent)
            elif isinstance(m, (ast.At, ast.Gate)) and m.choice is not None:
                self.space(f"{prefix}.{'at' if isinstance(m, ast.At) else 'gate'}", m.choice, key, parent)

    def space(self, name: str, sp: ast.Choice | ast.Range, key: str, parent: str | None) -> None:
        if isinstance(sp, ast.Choice):
            texts = tuple(fmt.option(o) for o in sp.options)
            seen: set[str] = set()
            for o, t in zip(sp.options, texts):
                if t in seen:
                    self.diags.error("E163", f"{name}: option {t} given twice", o.span, "keep one of them")
                seen.add(t)
            if len(texts) == 1:
                self.diags.warning("W220", f"{name}: a choice of one value is no choice", sp.span,
                                   f"write the value itself: {texts[0]}")
            written = tuple(self.slice(o.span) for o in sp.options)
            self.add(Dimension(name, "categorical", texts, span=sp.span, section=key), sp.span, written, parent)
            return
        lo, hi = float(sp.low.value), float(sp.high.value)
        if sp.kind == "intrange":
            if lo > hi:
                self.diags.error("E162", f"{name}: empty range intrange({sp.low.text}, {sp.high.text})", sp.span,
                                 "write the low end first: intrange(LOW, HIGH), both ends included")
            elif lo == hi:
                self.diags.warning("W220", f"{name}: a range of one value is no choice", sp.span,
                                   f"write the value itself: {sp.low.text}")
        elif lo >= hi:
            self.diags.error("E162", f"{name}: empty range {sp.kind}({sp.low.text}, {sp.high.text})", sp.span,
                             f"write a low end below the high end: {sp.kind}(LOW, HIGH)")
        elif sp.kind == "loguniform" and lo <= 0:
            self.diags.error("E162", f"{name}: loguniform({sp.low.text}, {sp.high.text}) reaches {sp.low.text}",
                             sp.low.span, "a log scale needs a low end above 0, e.g. loguniform(1e-5, 1e-3)")
        kind = "int" if sp.kind == "intrange" else "float"
        if kind == "int":
            lo, hi = int(lo), int(hi)
        dim = Dimension(name, kind, low=lo, high=hi, log=sp.kind == "loguniform", span=sp.span, section=key)
        self.add(dim, sp.span, (sp.low.text, sp.high.text), parent)


def collect(tree: ast.Spec, text: str, diags: Diagnostics) -> tuple[list[Dimension], dict[str, Site]]:
    """The dimensions of ``tree`` (in spec order) and where each is written."""
    c = _Collector(text, diags)
    for s in tree.statements:
        if isinstance(s, ast.Section):
            c.section(s)
    return c.dims, c.sites
