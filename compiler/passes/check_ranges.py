"""Pass: parameter bounds that depend on the model (a bottleneck or rank below the hidden size)."""

from __future__ import annotations

from peltc.compiler import schema
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR


def check_ranges(ir: IR, diags: Diagnostics) -> None:
    h = ir.settings.dims["hidden"]
    for att in ir.attachments():
        for name, pspec in schema.METHODS[att.method].params.items():
            v = att.params.get(name)
            if pspec.below_hidden and v is not None and v >= h:
                where = f"layers[{att.layer}]" if att.layer is not None else att.point
                diags.error("E104", f"{att.instance}: '{name}' = {v} at {where} is not below the hidden size {h}",
                            att.span.to_span() if att.span else None, f"{name} must be between 1 and {h - 1}")
