"""Pass: a sigmoid gate's source must be computed before the module it gates, in the same layer.

``sigmoid(ffn.output)`` on an adapter at ``ffn.output`` reads the adapter's own input (h_FN), which
is available; on LoRA at ``attention.query`` it would read a value computed later: error E113.
"""

from __future__ import annotations

from peltc.compiler import schema
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR

_SOURCE_NAME = {v: k for k, v in schema.GATE_SOURCES.items()}


def available_sources(point: str, method: str) -> list[str]:
    """Gate sources (canonical points) readable by a module at ``point``."""
    if point == schema.WHOLE_LAYER:
        return ["input"]
    order = schema.POINT_ORDER[point]
    out = [s for s in schema.GATE_SOURCES.values() if schema.POINT_ORDER[s] < order]
    if schema.METHODS[method].reads_own_gate and point in schema.GATE_SOURCES.values():
        out.append(point)   # an adapter's gate may read its own input
    return out


def check_gates(ir: IR, diags: Diagnostics) -> None:
    for att in ir.attachments():
        g = att.gate
        if g.kind != "sigmoid":
            continue
        where = att.gate_span or att.span
        span = where.to_span() if where else None
        if att.layer is None:
            diags.error("E113", f"{att.instance}: a sigmoid gate reads a layer point, but '{att.point}' is not in a layer",
                        span, "use `gate scalar` or `gate const(<value>)` for whole-model attachments")
            continue
        ok = available_sources(att.point, att.method)
        if g.source not in ok:
            diags.error("E113", f"{att.instance}: gate source {_SOURCE_NAME[g.source]} is computed after "
                                f"{att.method} at {att.point}", span,
                        "available here: " + (", ".join(_SOURCE_NAME[s] for s in ok) or "none"))
