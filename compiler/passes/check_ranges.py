"""Pass: parameter bounds that depend on the model (a bottleneck or rank below the hidden size)."""

from __future__ import annotations

from peltc.compiler import schema
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR
from peltc.compiler.layerset import expand_selector


def check_ranges(ir: IR, diags: Diagnostics) -> None:
    h, n = ir.settings.dims["hidden"], ir.settings.dims["layers"]
    for att in ir.attachments():
        for name, pspec in schema.METHODS[att.method].params.items():
            v = att.params.get(name)
            if pspec.below_hidden and v is not None and v >= h:
                # point at the per-layer override that set the value, if one did
                inst = ir.instance(att.instance)
                span = inst.spans.get(name) or inst.span
                for ov in inst.overrides:
                    if name in ov.params and att.layer in expand_selector(ov.items, n)[0]:
                        span = ov.spans.get(name) or ov.span or span
                # one error per instance and value, not one per layer it attaches to
                diags.error("E104", f"{att.instance}: '{name}' = {v} is not below the hidden size {h}",
                            span.to_span() if span else None, f"{name} must be between 1 and {h - 1}")
