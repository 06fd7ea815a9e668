"""The syntax tree of a .pelt file: plain frozen dataclasses, every node with its source span.

The tree records what was written, nothing more: names are not checked here (that is the
lowering's job, which can then point at the exact span of a misspelt name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from peltc.errors import Span


@dataclass(frozen=True)
class Value:
    """A written value. ``ratio`` is `hidden/16`: ``value`` is (the name, the divisor as written)."""

    kind: str  # "number" | "string" | "word" | "ratio" (and "point" for a gate's source)
    value: Union[int, float, str, tuple[str, str]]
    text: str
    span: Span


@dataclass(frozen=True)
class Choice:
    """`choice(a, b, ...)` in a search space: ``options`` are Values, GateExprs or Targets (``kind``
    "value" | "gate" | "at"), each printed canonically by grammar.fmt."""

    kind: str
    options: tuple
    span: Span


@dataclass(frozen=True)
class Range:
    """`uniform(a, b)`, `loguniform(a, b)` (floats) or `intrange(a, b)` (integers, both ends included)."""

    kind: str  # "uniform" | "loguniform" | "intrange"
    low: Value
    high: Value
    span: Span


@dataclass(frozen=True)
class Param:
    """``space`` is set when the value is a search dimension; ``value`` is then its first option
    (or its low end), so tools that read values keep working on a space."""

    name: str
    value: Value
    span: Span
    space: Choice | Range | None = None


@dataclass(frozen=True)
class SelItem:
    kind: str  # "all" | "index" | "range"
    start: int | None
    stop: int | None  # inclusive; None = to the last layer
    step: int
    span: Span


@dataclass(frozen=True)
class Selector:
    items: tuple[SelItem, ...]
    span: Span


@dataclass(frozen=True)
class Target:
    """`layers[sel].a.{b, c}` or a global point such as `embeddings`.

    ``segments`` holds, per dotted segment, its alternatives (each a dotted path); the target
    denotes the cartesian product of the alternatives.
    """

    selector: Selector | None
    segments: tuple[tuple[str, ...], ...]
    span: Span

    def points(self) -> list[str]:
        out = [""]
        for alts in self.segments:
            out = [f"{p}.{a}" if p else a for p in out for a in alts]
        return out


@dataclass(frozen=True)
class GateArg:
    key: str | None  # None for a positional argument
    value: Value     # a positional point is a Value of kind "point"
    span: Span


@dataclass(frozen=True)
class GateExpr:
    name: str
    args: tuple[GateArg, ...]
    called: bool  # written with parentheses
    span: Span


@dataclass(frozen=True)
class At:
    """``choice`` is set for `at choice(t1, t2)`: ``targets`` are then the alternatives, not a union."""

    targets: tuple[Target, ...]
    span: Span
    choice: Choice | None = None


@dataclass(frozen=True)
class Gate:
    """``choice`` is set for `gate choice(g1, g2)`: ``expr`` is then its first option."""

    expr: GateExpr
    span: Span
    choice: Choice | None = None


@dataclass(frozen=True)
class LayerOverride:
    selector: Selector
    members: tuple["Member", ...]
    span: Span


Member = Union[At, Gate, LayerOverride, Param]


@dataclass(frozen=True)
class Section:
    """`METHOD NAME { ... }` (an instance) or `head { ... }` / `train { ... }` (settings)."""

    keyword: str
    name: str | None
    members: tuple[Member, ...]
    span: Span
    keyword_span: Span
    name_span: Span | None
    optional: Span | None = None   # where `optional` is written (a search space's instance)


@dataclass(frozen=True)
class Model:
    ref: str
    span: Span


@dataclass(frozen=True)
class Extends:
    path: str
    span: Span


@dataclass(frozen=True)
class Import:
    path: str
    names: tuple[str, ...] | None  # None = everything
    span: Span


@dataclass(frozen=True)
class Remove:
    name: str
    span: Span


Statement = Union[Model, Extends, Import, Remove, Section]


@dataclass(frozen=True)
class Spec:
    file: str
    source: str
    statements: tuple[Statement, ...]
