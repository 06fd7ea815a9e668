"""Lowering single terms of a spec: selectors, parameter values (typed against the schema, relative sizes),
gate expressions and targets. `lower` assembles sections and files from these.
"""

from __future__ import annotations

import math
from typing import Any

from peltc.compiler import schema
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import GateSpec, SpanModel, TargetSpec
from peltc.errors import did_you_mean
from peltc.grammar import ast


# --- selectors ------------------------------------------------------------------------------
def selector_items(sel: ast.Selector, diags: Diagnostics) -> tuple[tuple[int | None, int | None, int], ...]:
    out = []
    for it in sel.items:
        if it.kind == "all":
            out.append((None, None, 1))
            continue
        if it.step < 1:
            diags.error("E125", f"layer step must be ≥ 1, got {it.step}", it.span,
                        "write a range as `start..stop by step` with step ≥ 1, e.g. `0..11 by 2`")
            continue
        if it.kind == "range" and it.stop is not None and it.start is not None and \
                (it.start >= 0) == (it.stop >= 0) and it.stop < it.start:
            diags.error("E110", f"layer range {it.start}..{it.stop} is empty", it.span,
                        "ranges are inclusive and ascending: write the smaller index first")
            continue
        out.append((it.start, it.stop, it.step))
    return tuple(out)


def selector_text(items) -> str:
    parts = []
    for start, stop, step in items:
        if start is None and stop is None:
            parts.append("*")
        elif start == stop and step == 1:
            parts.append(str(start))
        else:
            s = f"{start}..{'' if stop is None else stop}"
            parts.append(s + (f" by {step}" if step != 1 else ""))
    return ", ".join(parts)


# --- values ---------------------------------------------------------------------------------
def coerce(pspec: schema.ParamSpec, value: ast.Value, name: str, diags: Diagnostics) -> Any:
    """Check a parameter value's type and static range; return the typed value or None."""
    v = value.value
    t = pspec.type
    if t == "int_or_none" and value.kind == "word" and v in ("none", "off"):
        return None
    if value.kind == "ratio" and pspec.below_hidden:
        return _relative(value, name, diags)
    if t in ("int", "int_or_none"):
        if value.kind != "number" or not isinstance(v, int):
            diags.error("E103", f"'{name}' takes a whole number, got {value.text}", value.span,
                        f"{name}: {pspec.doc}" + (" (or `none`)" if t == "int_or_none" else "") +
                        (f" (or relative to the model: `{name} hidden/16`)" if pspec.below_hidden else ""))
            return None
    elif t == "float":
        if value.kind != "number":
            diags.error("E103", f"'{name}' takes a number, got {value.text}", value.span, f"{name}: {pspec.doc}")
            return None
        v = float(v)
        if not math.isfinite(v):   # 1e400 overflows to inf
            diags.error("E104", f"'{name}' = {value.text} is out of range", value.span, f"{name} must be a finite number")
            return None
    elif t == "choice":
        if value.kind == "string":
            v = str(v)
        if value.kind not in ("word", "string") or v not in pspec.choices:
            diags.error("E103", f"'{name}' must be one of {', '.join(pspec.choices)}; got {value.text}",
                        value.span, did_you_mean(str(v), pspec.choices, f"values of {name}"))
            return None
        return v
    elif t == "str":
        if value.kind != "string":
            diags.error("E103", f"'{name}' takes a quoted text, got {value.text}", value.span,
                        f'{name}: {pspec.doc}, e.g. {name} "Classify the sentiment:"')
            return None
        return str(v)
    elif t == "bool":
        if value.kind != "word" or v not in ("true", "false"):
            diags.error("E103", f"'{name}' takes true or false, got {value.text}", value.span)
            return None
        return v == "true"
    rng = pspec.out_of_range(v)
    if rng is not None:
        diags.error("E104", f"'{name}' = {value.text} is out of range", value.span, f"{name} must be {rng}")
        return None
    return v


def _relative(value: ast.Value, name: str, diags: Diagnostics) -> str | None:
    """`hidden/16`: kept as its text (resolved to ⌊hidden / 16⌋ when a model is bound)."""
    base, div = value.value
    if base != schema.RELATIVE_TO:
        diags.error("E103", f"a relative '{name}' is the hidden size over a number, got {value.text}", value.span,
                    f"write `{name} {schema.RELATIVE_TO}/{div}`")
        return None
    d = schema.relative_divisor(f"{base}/{div}")
    if d <= 1:
        diags.error("E104", f"'{name}' = {value.text} is out of range", value.span,
                    f"{name} = ⌊hidden / D⌋ must be below the hidden size: write hidden/D with D > 1, e.g. hidden/16")
        return None
    return value.text


def lower_gate(expr: ast.GateExpr, diags: Diagnostics) -> GateSpec | None:
    name = expr.name
    if name not in schema.GATE_KINDS:
        diags.error("E111", f"unknown gate '{name}'", expr.span,
                    did_you_mean(name, schema.GATE_KINDS, "gates") +
                    " (write sigmoid(<point>), scalar, const(<value>) or none)")
        return None
    pos = [a for a in expr.args if a.key is None]
    kw = {a.key: a for a in expr.args if a.key is not None}
    if name == "none":
        if expr.called:
            diags.error("E114", "gate 'none' takes no arguments", expr.span, "write `gate none`")
            return None
        return GateSpec(kind="none")
    if name == "const":
        if len(pos) != 1 or kw or pos[0].value.kind != "number":
            diags.error("E114", "const gate takes one number", expr.span, "write e.g. `gate const(0.5)`")
            return None
        if not math.isfinite(float(pos[0].value.value)):
            diags.error("E104", f"const gate value {pos[0].value.text} is out of range", pos[0].span,
                        "a gate value must be a finite number")
            return None
        return GateSpec(kind="const", value=float(pos[0].value.value))
    if name == "scalar":
        bad = [a for a in expr.args if a.key != "init" or a.value.kind != "number"]
        if bad:
            diags.error("E114", "scalar gate takes only `init=<number>` (the logit it starts from)", bad[0].span,
                        "write `gate scalar` or `gate scalar(init=0)`")
            return None
        init = float(kw["init"].value.value) if "init" in kw else 0.0
        if not math.isfinite(init):
            diags.error("E104", f"scalar gate init {kw['init'].value.text} is out of range", kw["init"].value.span,
                        "a gate value must be a finite number")
            return None
        return GateSpec(kind="scalar", value=init)
    # sigmoid(<point>, pool=<pool>)
    if len(pos) != 1 or pos[0].value.kind != "point":
        diags.error("E114", "sigmoid gate takes the point it reads, e.g. sigmoid(layer.input)", expr.span,
                    did_you_mean("", schema.GATE_SOURCES, "gate sources"))
        return None
    src = pos[0].value.value
    if src not in schema.GATE_SOURCES:
        diags.error("E112", f"unknown gate source '{src}'", pos[0].span,
                    did_you_mean(src, schema.GATE_SOURCES, "gate sources"))
        return None
    pool, init = "masked_mean", None
    for key, a in kw.items():
        if key == "init":
            if a.value.kind != "number":
                diags.error("E114", f"sigmoid gate init must be a number (the starting bias), got {a.value.text}",
                            a.value.span, "write e.g. `gate sigmoid(layer.input, init=-2)`: starts at σ(-2) = 0.12")
                return None
            init = float(a.value.value)
            if not math.isfinite(init):
                diags.error("E104", f"sigmoid gate init {a.value.text} is out of range", a.value.span,
                            "a gate value must be a finite number")
                return None
            continue
        if key != "pool":
            diags.error("E114", f"unknown gate argument '{key}'", a.span,
                        did_you_mean(key, ["pool", "init"], "arguments"))
            return None
        if a.value.kind != "word" or a.value.value not in schema.POOLS:
            diags.error("E114", f"unknown pooling '{a.value.text}'", a.value.span,
                        did_you_mean(str(a.value.value), schema.POOLS, "poolings"))
            return None
        pool = a.value.value
    # init 0 (the default bias) is stored as None: `sigmoid(x, init=0)` and `sigmoid(x)` are one gate
    return GateSpec(kind="sigmoid", source=schema.GATE_SOURCES[src], pool=pool, value=init or None)


def lower_target(t: ast.Target, method: schema.MethodSpec, diags: Diagnostics) -> list[TargetSpec]:
    items = selector_items(t.selector, diags) if t.selector is not None else ()
    sel = selector_text(items) if t.selector is not None else None
    out = []
    for p in t.points() or [""]:
        if t.selector is not None:
            point = p or schema.WHOLE_LAYER
            valid = [*schema.LAYER_POINTS]
            known = point in schema.LAYER_POINTS or point == schema.WHOLE_LAYER
        else:
            point = p
            valid = [*schema.GLOBAL_POINTS]
            known = point in schema.GLOBAL_POINTS
        if not known:
            close = did_you_mean(point, valid, "points")
            diags.error("E107", f"unknown insertion point '{point}'", t.span,
                        close if t.selector is not None else f"{close}; or a layer point: layers[<selector>].<point>")
            continue
        if point not in method.points:
            allowed = sorted(method.points)
            kind = schema.LAYER_POINTS.get(point) or schema.GLOBAL_POINTS.get(point) or "layer"
            diags.error("E108", f"{method.name} cannot attach at '{point}' (a {kind} point)", t.span,
                        f"{method.name} attaches at: {', '.join(allowed)}")
            continue
        out.append(TargetSpec(selector=sel, items=items, point=point, span=SpanModel.of(t.span)))
    return out


def a_an(word: str) -> str:
    """`an adapter`, `a lora`."""
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"
