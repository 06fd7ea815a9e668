"""What `peltc check`, `show --json` and `render` say about a checked search space: its size, its
dimensions, the trainable-count range; the marks the diagram draws on the point it shows (optional
instances dashed, each choice listed under its module)."""

from __future__ import annotations

from peltc.compiler.space import Dimension, Space
from peltc.compiler.space_check import SpaceCheck
from peltc.compiler.summary import table


def domain_text(d: Dimension) -> str:
    """`4 | 8 | 16`, `loguniform [1e-4, 1e-2]`, `int [4, 64]`."""
    if d.kind == "categorical":
        return " | ".join(d.choices)
    return f"{'loguniform' if d.log else 'uniform' if d.kind == 'float' else 'int'} [{_num(d.low)}, {_num(d.high)}]"


def _num(x: float | None) -> str:
    return f"{x:g}"


def size_text(space: Space) -> str:
    """`48 points` or `48 discrete points × 2 continuous dimensions (train.lr, q.lr)`."""
    n = space.discrete_size()
    cont = space.continuous()
    text = f"{n:,} point{'s' * (n != 1)}" if not cont else f"{n:,} discrete point{'s' * (n != 1)}"
    distinct = space.discrete_size(distinct=True)
    if distinct != n:
        text += f" ({distinct:,} different specs)"
    if cont:
        text += f" × {len(cont)} continuous dimension{'s' * (len(cont) > 1)} ({', '.join(d.name for d in cont)})"
    return text


def summary(sc: SpaceCheck, spec_name: str) -> str:
    """`peltc check`'s report on a space."""
    s = sc.result.ir.settings
    model = f"for model {s.model or '?'} ({s.family}, {s.dims['layers']} layers, hidden {s.dims['hidden']})" \
        if s.family is not None else "without a model (layer ranges, sizes and counts not checked)"
    how = "every combination" if sc.exhaustive else "every instance alone and every pair of instances"
    lines = [f"{spec_name}: ok — a search space of {size_text(sc.space)}, every point valid {model} "
             f"({how} checked: {sc.checked:,} specs)"]
    rows = [[d.name, d.kind, domain_text(d)] for d in sc.space.dimensions]
    lines += ["  " + ln for ln in table(["dimension", "kind", "values"], rows)]
    if sc.counts is not None:
        lo, hi = sc.counts
        lines.append(f"  trained parameters over the space: {lo:,} – {hi:,} (task head not included)")
    return "\n".join(lines)


def to_dict(sc: SpaceCheck) -> dict:
    """The `space` entry of `peltc show --json`."""
    return {"size": sc.space.size(), "dimensions": [d.to_dict() for d in sc.space.dimensions],
            "trained_range": list(sc.counts) if sc.counts else None, "checked": sc.checked,
            "exhaustive": sc.exhaustive}


def marks(space: Space) -> dict[str, tuple[dict[str, str], list[str]]]:
    """Per instance with choices, for `render.to_dot(marks=...)`: its node's extra attributes (an
    optional instance is dashed) and the lines listing its choices."""
    out: dict[str, tuple[dict[str, str], list[str]]] = {}
    for d in space.dimensions:
        attrs, lines = out.get(d.section, ({}, []))
        if d.name == f"{d.section}.present":
            attrs, lines = {"style": "rounded,filled,dashed"}, ["optional: present or not", *lines]
        else:
            lines = [*lines, f"{d.name[len(d.section) + 1:]} ∈ {domain_text(d)}"]
        out[d.section] = (attrs, lines)
    return out


def title(sc: SpaceCheck, spec_name: str) -> str:
    return (f"{spec_name}  ·  search space of {size_text(sc.space)}, drawn at one point "
            f"(dashed: optional; ∈: the choices)")
