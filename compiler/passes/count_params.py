"""Pass: exact trainable / saved parameter counts per attachment (and shared prefix MLPs per instance).

Each attachment's own count is its method's `Method.count` over a `CountContext` (the model's dimensions at
its point); the gate's parameters are added here, the same for every method. What an instance trains once
for all its layers (the prefix's MLP) is its method's `Method.shared_count`."""

from __future__ import annotations

from peltc.compiler import counts, schema
from peltc.compiler.archs import FAMILIES
from peltc.compiler.ir import IR
from peltc.compiler.method import CountContext


def count_params(ir: IR) -> None:
    s = ir.settings
    d, fam = s.dims, FAMILIES[s.family]
    for att in ir.attachments():
        g = counts.gate_params(att.gate.kind, d)
        fan_in, fan_out = counts.linear_dims(att.point, d)
        ctx = CountContext(params=att.args, point=att.point, layer=att.layer, dims=d, fan_in=fan_in,
                           fan_out=fan_out, kv_width=counts.kv_width(d), base_params=s.base_params,
                           bias_terms=lambda p=att.point: counts.bitfit_params(p, fam, d, d["layers"]))
        own = schema.METHODS[att.method].count(ctx)
        total = None if own is None else int(own) + g
        ir.replace(att.model_copy(update={"trainable": total, "saved": total, "gate_params": g}))
    for inst in ir.instances():
        shared = schema.METHODS[inst.method].shared_count
        if shared is not None:
            atts = ir.attachments(inst.name)
            ctx = CountContext(params=inst.args, point=atts[0].point if atts else "", layer=None, dims=d,
                               fan_in=d["hidden"], fan_out=d["hidden"], kv_width=counts.kv_width(d),
                               base_params=s.base_params, covered=tuple(a.args for a in atts))
            ir.replace(inst.model_copy(update={"shared_trainable": shared(ctx)}))
