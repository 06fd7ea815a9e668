"""Pass: resolve the model family's gate behaviour into the IR, so no consumer looks it up again.

The settings node gets the family's `GateBehaviour` (source normalisation, how a prefix gate scales,
a prefix gate's start); each attachment gets ``gate_init``, the bias its sigmoid gate starts at when the
spec writes no ``init=`` (a decoder's prefix gate: −10; None: 0). Rewrite, diagram, summary and the
artifact's A015 check read these resolved values.

An IR whose family is unknown (no model bound) resolves to nothing: ``gate_behaviour`` None, every
``gate_init`` None. ``resolve_gates(ir, behaviour)`` resolves an IR under a given behaviour (an old
artifact's, recorded beside its IR before the IR carried it).
"""

from __future__ import annotations

from peltc.compiler import schema
from peltc.compiler.archs import FAMILIES
from peltc.compiler.ir import IR, GateBehaviour


def family_behaviour(family: str | None) -> GateBehaviour | None:
    """The gate behaviour of a family by name (None for no or an unknown family)."""
    fam = FAMILIES.get(family) if family is not None else None
    return fam.gates if fam is not None else None


def resolve_gates(ir: IR, behaviour: GateBehaviour | None = None) -> IR:
    """Record ``behaviour`` (default: the IR's family's) on the settings node and each attachment's
    resolved gate start, in place; returns ``ir``."""
    b = family_behaviour(ir.settings.family) if behaviour is None else behaviour
    ir.replace(ir.settings.model_copy(update={"gate_behaviour": b}))
    for att in ir.attachments():
        init = b.prefix_gate_init if b is not None and schema.host_of(att.method) == "attention" else None
        if att.gate_init != init:
            ir.replace(att.model_copy(update={"gate_init": init}))
    return ir


def resolved(ir: IR) -> IR:
    """``ir`` if its gate behaviour is resolved, else a resolved copy (the caller's IR is not changed)."""
    if ir.settings.gate_behaviour is not None or family_behaviour(ir.settings.family) is None:
        return ir
    return resolve_gates(ir.copy())
