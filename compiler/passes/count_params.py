"""Pass: exact trainable / saved parameter counts per attachment (and shared prefix MLPs per instance)."""

from __future__ import annotations

from peltc.compiler import counts
from peltc.compiler.archs import FAMILIES
from peltc.compiler.ir import IR


def count_params(ir: IR) -> None:
    s = ir.settings
    d, fam = s.dims, FAMILIES[s.family]
    for att in ir.attachments():
        p = att.params
        g = counts.gate_params(att.gate.kind, d)
        if att.method == "adapter":
            own = counts.adapter_params(p["size"], d)
        elif att.method == "lora":
            own = counts.lora_params(p["rank"], att.point, d, bool(p.get("dora")))
        elif att.method == "prefix":
            own = counts.prefix_params(p["length"], d)
        elif att.method == "prompt":
            own = counts.prompt_params(p["length"], d)
        elif att.method == "bitfit":
            own = counts.bitfit_params(att.point, fam, d, d["layers"])
        elif att.method == "ia3":
            own = counts.ia3_params(att.point, d)
        elif att.method == "loreft":
            own = counts.loreft_params(p["rank"], p["first"], p["last"], p["tied"], d)
        else:  # finetune
            own = s.base_params
        total = None if own is None else own + g
        ir.replace(att.model_copy(update={"trainable": total, "saved": total, "gate_params": g}))
    for inst in ir.instances():
        if inst.method == "prefix":
            atts = ir.attachments(inst.name)
            n_cov = len(atts)
            length = max((a.params["length"] for a in atts), default=inst.params["length"])
            mlp = counts.prefix_mlp_params(length, inst.params.get("mlp"), n_cov, d)
            ir.replace(inst.model_copy(update={"shared_trainable": mlp}))
        elif inst.method == "prompt" and inst.params.get("encoder", "none") != "none":
            p = inst.params
            enc = counts.prompt_encoder_params(p["length"], p["encoder"], p.get("encoder_hidden", 128), d)
            ir.replace(inst.model_copy(update={"shared_trainable": enc}))
