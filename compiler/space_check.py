"""Check every point of a search space against a model config (`peltc check` on a space): the
space's size, its trainable-count range, and every invalid combination as an error that names it.

Each checked point is an ordinary spec (`Space._text(pad=True)`: the choices replaced in place, so
every diagnostic's line and column point into the space's own text) run through the whole front
end (`pipeline.build_ir`). Categorical and int dimensions are checked at every value. A float
dimension is checked at both ends (a float parameter's only constraint is its range, an interval,
so a value inside is valid when both ends are; no count depends on a float): its low end in every
check, its high end once, every other dimension at its first value.

Cost. Up to `FULL_LIMIT` combinations every one is checked. Beyond, the dimensions are grouped by
the instance (or settings section) they are written in, and every group is checked alone (the
other groups' instances removed) and every pair of groups together: each error the passes report
is about one instance or a pair of instances (two prefixes in one block, one bias trained twice),
and trainable counts add up per instance, so this is exact. Beyond `MAX_CHECKS` specs: E164.

An error is reported once, at its span (inside the offending choice's text), with the values of the
dimensions it depends on — those where changing the value alone makes it go away.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from peltc.compiler.archs import ModelConfig
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.lower import Loader
from peltc.compiler.pipeline import ModelArg, Result, build_ir
from peltc.compiler.space import Dimension, Space
from peltc.compiler.summary import trained_and_saved
from peltc.errors import Diagnostic, SpecError

FULL_LIMIT = 512      # combinations checked one by one, as whole specs
MAX_CHECKS = 5_000    # specs a check may build (each a whole front-end run); beyond: E164
_SETTINGS = ("train", "head")


@dataclass
class SpaceCheck:
    """What checking a space found (errors raise `SpecError`)."""

    space: Space
    result: Result                      # the first valid point's front end (model, IR: show, render)
    checked: int                        # specs built
    exhaustive: bool                    # every combination built (else: every group and pair of groups)
    counts: tuple[int, int] | None      # trained parameters, min and max over the space (None: no model)
    diagnostics: Diagnostics = field(default_factory=Diagnostics)   # the warnings

    @property
    def warnings(self) -> list[Diagnostic]:
        return self.diagnostics.warnings


def _check_values(d: Dimension) -> list[str]:
    if d.kind == "float":
        return [repr(float(d.low)), repr(float(d.high))]
    return [str(v) for v in d.values()]


class _Checker:
    def __init__(self, space: Space, model: ModelArg, default_model: str | None, loader: Loader | None = None,
                 memo: dict | None = None):
        self.space, self.model, self.default_model, self.loader = space, model, default_model, loader
        self.memo = memo
        self.checked = 0
        self.first: Result | None = None
        self.diags = Diagnostics()
        self.diags.sources[space.file] = space.source
        self.reported: set[tuple] = set()

    def build(self, values: dict[str, str], drop: frozenset[str] = frozenset()) -> tuple[Result | None, list]:
        """One point's front end: (result or None, its diagnostics)."""
        text = self.space.layout_text(values, drop)
        self.checked += 1
        key = "\n".join(line.rstrip() for line in text.split("\n"))   # a dropped instance: blank, however written
        if self.memo is not None and key in self.memo:
            r, items = self.memo[key]
            if r is not None and self.first is None and not drop:
                self.first = r
            return r, items
        try:
            r = build_ir(text, self.space.file, model=self.model, default_model=self.default_model, loader=self.loader)
        except SpecError as e:
            if self.memo is not None:
                self.memo[key] = (None, e.diagnostics)
            return None, e.diagnostics
        if self.memo is not None:
            self.memo[key] = (r, r.diagnostics.items)
        if isinstance(r.model, ModelConfig) and not isinstance(self.model, ModelConfig):
            self.model = r.model   # load the config once
        if self.first is None and not drop:
            self.first = r
        return r, r.diagnostics.items

    def batch(self, dims: list[Dimension], fixed: dict[str, str], drop: frozenset[str]) -> dict[tuple, int]:
        """Check the product of ``dims``' values (the rest ``fixed``); report what fails; return the
        trained count per valid combination."""
        grid = [_check_values(d) for d in dims]
        failing: dict[tuple, tuple[Diagnostic, dict[tuple, None]]] = {}
        counts: dict[tuple, int] = {}
        for combo in itertools.product(*grid):
            r, found = self.build(fixed | dict(zip((d.name for d in dims), combo)), drop)
            for d in found:
                key = (d.code, d.message, d.span, d.severity)
                failing.setdefault(key, (d, {}))[1][combo] = None
            if r is not None and r.ir.settings.family is not None:
                counts[combo] = trained_and_saved(r.ir)[0]
        for key, (d, combos) in failing.items():
            if key not in self.reported:
                self.reported.add(key)
                self.report(d, dims, grid, combos)
        return counts

    def report(self, d: Diagnostic, dims: list[Dimension], grid: list[list[str]], combos: dict[tuple, None]) -> None:
        """``d`` as found at ``combos``, naming the dimensions it depends on (changing one alone
        makes it go away), at the offending choice when its span lies in one."""
        relevant = [k for k in range(len(dims)) if any(
            c[:k] + (v,) + c[k + 1:] not in combos for c in combos for v in grid[k])]
        if relevant:
            first = next(iter(combos))
            many = len({tuple(c[k] for k in relevant) for c in combos}) - 1
            named = " and ".join(f"{dims[k].name} = {self._show(dims[k], first[k])}" for k in relevant)
            more = f"; {many} more combination{'s' if many > 1 else ''} fail" if many else ""
            span = next((dims[k].span for k in relevant if _inside(d.span, dims[k].span)), d.span)
            d = Diagnostic(d.code, f"{d.message} (with {named}{more})", span, d.help, d.severity)
        (self.diags.error if d.severity == "error" else self.diags.warning)(d.code, d.message, d.span, d.help)

    def _show(self, dim: Dimension, value: str) -> str:
        return self.space.written(dim.name, value) if dim.kind == "float" else value


def _inside(a, b) -> bool:
    """Does span ``a`` lie within span ``b``?"""
    if a is None or b is None or a.file != b.file or b.end_line is None:
        return False
    return (b.line, b.col) <= (a.line, a.col) and (a.end_line or a.line, a.end_col or a.col) <= (b.end_line, b.end_col)


def _groups(dims: list[Dimension]) -> dict[str, list[Dimension]]:
    out: dict[str, list[Dimension]] = {}
    for d in dims:
        out.setdefault(d.section, []).append(d)
    return out


def check_space(space: Space, *, model: ModelArg = None, default_model: str | None = None,
                loader: Loader | None = None, full_limit: int = FULL_LIMIT, max_checks: int = MAX_CHECKS,
                memo: dict | None = None) -> SpaceCheck:
    """Check every point of ``space`` (see the module's docstring); raise `SpecError` with every
    error found. ``loader`` reads the files it extends or imports (default: the file system). ``memo``
    (default: one for this check; the editor keeps one between checks of a document while the model and
    the files it reads stay the same): each built spec's outcome by its text, trailing spaces aside — the
    checks that leave an instance out blank it, so they repeat within a check, and an edit re-checks only
    the specs whose text it changes."""
    c = _Checker(space, model, default_model, loader, {} if memo is None else memo)
    for w in space.warnings:
        c.diags.warning(w.code, w.message, w.span, w.help)
    first = space.first()
    lows = {d.name: first[d.name] for d in space.continuous()}
    dims = space.discrete()
    full = math.prod(len(_check_values(d)) for d in dims)
    groups = _groups(dims)
    sizes = {g: math.prod(len(_check_values(d)) for d in ds) for g, ds in groups.items()}
    pairs = sum(sizes[a] * sizes[b] for a, b in itertools.combinations(groups, 2)) + sum(sizes.values()) + 1
    exhaustive = full <= full_limit or len(groups) < 2
    cost = (full if exhaustive else pairs) + 2 * len(lows)
    if cost > max_checks:
        _too_large(space, cost, max_checks)
    if exhaustive:
        counts = c.batch(dims, lows, frozenset())
        rng = (min(counts.values()), max(counts.values())) if counts else None
    else:
        rng = _pairwise(c, groups, lows)
    for d in space.continuous():   # a float's high end (its low end is in every check above)
        ends = c.batch([d], {k: v for k, v in first.items() if k != d.name}, frozenset())
        lo_end, hi_end = ((v,) for v in _check_values(d))
        delta = ends[hi_end] - ends[lo_end] if lo_end in ends and hi_end in ends else 0
        if rng is not None and delta:   # no float parameter sizes anything today; were one to, widen
            rng = (rng[0] + min(0, delta), rng[1] + max(0, delta))
    c.diags.raise_if_errors()
    if c.first is None:   # pair checks drop instances: build the first point for show/render
        c.build(first)
    assert c.first is not None
    return SpaceCheck(space, c.first, c.checked, exhaustive, rng, c.diags)


def _pairwise(c: _Checker, groups: dict[str, list[Dimension]], lows: dict[str, str]) -> tuple[int, int] | None:
    instances = frozenset(g for g in groups if g not in _SETTINGS)
    first = {d.name: _check_values(d)[0] for ds in groups.values() for d in ds}

    def fixed(*keep: str) -> dict[str, str]:   # the settings sections not varied here at their first values
        return lows | {d.name: first[d.name] for g in groups if g in _SETTINGS and g not in keep for d in groups[g]}

    base = c.batch([], fixed(), instances).get(())
    lo = hi = base
    for g, ds in groups.items():   # each group alone: its errors and its share of the count
        counts = c.batch(ds, fixed(g), instances - {g})
        if lo is not None and g not in _SETTINGS:
            if not counts:
                lo = hi = None
            else:
                lo += min(counts.values()) - base
                hi += max(counts.values()) - base
    for a, b in itertools.combinations(groups, 2):   # each pair: what two instances do together
        c.batch(groups[a] + groups[b], fixed(a, b), instances - {a, b})
    return None if lo is None else (lo, hi)


def _too_large(space: Space, n: int, limit: int) -> None:
    d = space.dimensions[0]
    sizes = ", ".join(f"{x.name} {len(_check_values(x))}" for x in space.dimensions)
    raise SpecError([Diagnostic("E164", f"checking every point of this space takes {n:,} specs (the limit is "
                                        f"{limit:,})", d.span,
                                f"values checked per dimension: {sizes}; narrow some choices or ranges "
                                f"(an intrange is checked at every value), or split the space", "error")],
                    {space.file: space.source})


def check_spec(text: str, file: str = "<string>", *, model: ModelArg = None,
               default_model: str | None = None) -> Result | SpaceCheck:
    """A spec's text checked as `peltc check` checks it: every point of a space (`check_space`), or the
    one spec (`build_ir`). Raises `SpecError` with every error found."""
    from peltc.compiler.space import load_space
    space = load_space(text, path=file)
    if space.dimensions:
        return check_space(space, model=model, default_model=default_model)
    return build_ir(text, file, model=model, default_model=default_model)
