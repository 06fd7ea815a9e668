"""Pass: parameter bounds that depend on the model (a bottleneck or rank below the hidden size, a
relative one — `hidden/D` — at least 1)."""

from __future__ import annotations

from peltc.compiler import schema
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR
from peltc.compiler.layerset import compact_layers, expand_selector


def check_ranges(ir: IR, diags: Diagnostics) -> None:
    h, n = ir.settings.dims["hidden"], ir.settings.dims["layers"]
    _check_positions(ir, diags)
    for att in ir.attachments():
        for name, pspec in schema.METHODS[att.method].params.items():
            v = att.params.get(name)
            if not pspec.below_hidden or v is None or 1 <= v < h:
                continue
            # point at the per-layer override that set the value, if one did
            inst = ir.instance(att.instance)
            span = inst.spans.get(name) or inst.span
            for ov in inst.overrides:
                if name in ov.params and att.layer in expand_selector(ov.items, n)[0]:
                    span = ov.spans.get(name) or ov.span or span
            span = span.to_span() if span else None
            # one error per instance and value, not one per layer it attaches to
            if name in att.relative:   # hidden/D with D > 1 is below the hidden size: it is 0 here
                written = att.relative[name]
                diags.error("E104", f"{att.instance}: '{name}' = {written} is {v} on hidden size {h}", span,
                            f"{name} = ⌊hidden / D⌋ must be at least 1: D at most {h}")
            else:
                diags.error("E104", f"{att.instance}: '{name}' = {v} is not below the hidden size {h}", span,
                            f"{name} must be between 1 and {h - 1} (or relative to the model: `{name} hidden/16`)")


def _check_positions(ir: IR, diags: Diagnostics) -> None:
    """E151, once per instance: a LoReFT intervention with no token to change (`first 0` and `last 0`) in
    some of its layers; it points at the `first` (else `last`) that said so."""
    empty: dict[str, list[int]] = {}
    for att in ir.attachments():
        if att.method == "loreft" and not att.params.get("first") and not att.params.get("last"):
            empty.setdefault(att.instance, []).append(att.layer)
    for name, layers in empty.items():
        inst = ir.instance(name)
        span = inst.spans.get("first") or inst.spans.get("last") or inst.span
        every = len(layers) == len(ir.attachments(name))
        diags.error("E151", f"loreft '{name}' intervenes at no token" + ("" if every else
                    f" in layers {compact_layers(sorted(layers))}") + " (`first 0` and `last 0`)",
                    span.to_span() if span else None, "intervene at some tokens: `first 3`, `last 1`")
