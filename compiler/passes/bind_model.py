"""Pass: bind the spec to a model config — family, dimensions, base parameter count.

Without a model (no `model` line, no --model), the checks that need one are recorded as pending.
"""

from __future__ import annotations

from peltc.compiler.archs import ModelConfig, dims, family_of
from peltc.compiler.counts import base_params
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR

PENDING = ("layer indices in range", "sizes below the hidden size", "parameter counts",
           "module paths", "gate availability per layer", "conflicting placements")


def bind_model(ir: IR, model: ModelConfig | None, diags: Diagnostics) -> bool:
    """Record family/dims on the settings node. Returns False when no model is known."""
    if model is None:
        diags.pending.extend(PENDING)
        return False
    fam = family_of(model.config)
    d = dims(model.config, fam)
    s = ir.settings
    ir.replace(s.model_copy(update={"family": fam.name, "dims": d, "model_source": model.source,
                                    "model": s.model if model.ref == s.model else model.ref,
                                    "base_params": base_params(fam, model.config, d)}))
    return True
