"""Pass: placements that cannot coexist — two prefixes in one attention block, two trainings of the
same bias, bitfit beside full fine-tuning (E115); (IA)³ on a projection that LoRA or BitFit also changes
(E150: whether the vector scales their change would be a matter of hook order). Several adapters or LoRAs at one point are fine:
they compose in declaration order (sequential) or side by side (parallel)."""

from __future__ import annotations

from peltc.compiler import schema
from peltc.compiler.archs import BLOCKS, FAMILIES, blocks
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR
from peltc.compiler.layerset import compact_layers

def _bias_units(point: str, layer: int | None, n_layers: int, bl: dict = BLOCKS) -> list[tuple]:
    if point == "all":
        return [("embeddings",), ("head",)] + [(i, p) for i in range(n_layers) for p in bl["layer"]]
    if layer is None:
        return [(point,)]
    return [(layer, p) for p in bl.get(point, (point,))]

def check_conflicts(ir: IR, diags: Diagnostics) -> None:
    n = ir.settings.dims["layers"]
    prefixes: dict[int, str] = {}
    biases: dict[tuple, str] = {}
    host = {m: schema.METHODS[m].host for m in {a.method for a in ir.attachments()}}
    finetune = [a for a in ir.attachments() if host[a.method] == "model"]
    clashes: dict[tuple[str, str], tuple[list[int], object]] = {}   # one error per pair, not per layer
    reported: set[tuple[str, str]] = set()
    for att in ir.attachments():
        span = att.span.to_span() if att.span else None
        if host[att.method] == "attention":
            other = prefixes.setdefault(att.layer, att.instance)
            if other != att.instance:
                clashes.setdefault((att.instance, other), ([], span))[0].append(att.layer)
        elif host[att.method] == "biases":
            if finetune:
                diags.error("E115", f"bitfit '{att.instance}' trains biases that finetune '{finetune[0].instance}' "
                                    "already trains", span, "drop one of the two")
                continue
            for u in _bias_units(att.point, att.layer, n, blocks(FAMILIES[ir.settings.family])):
                other = biases.setdefault(u, att.instance)
                if other != att.instance and (att.instance, other) not in reported:
                    reported.add((att.instance, other))
                    where = f"layers[{u[0]}].{u[1]}" if len(u) == 2 else u[0]
                    diags.error("E115", f"bitfit '{att.instance}' and '{other}' both train the bias at {where}", span,
                                "each bias may be trained by one bitfit instance")
                    break
        elif host[att.method] == "model" and finetune[0].instance != att.instance:
            diags.error("E115", f"finetune '{att.instance}' repeats finetune '{finetune[0].instance}'", span,
                        "one finetune instance trains the whole model")
    _check_ia3(ir, diags, n)
    for (name, other), (layers, span) in clashes.items():
        diags.error("E115", f"prefix '{name}' and prefix '{other}' both attach at the attention of "
                            f"layers {compact_layers(layers)}", span,
                    "one prefix per attention block: merge them (a longer `length`) or split the layers")


def _check_ia3(ir: IR, diags: Diagnostics, n: int) -> None:
    """E150, once per pair of instances: (IA)³ and LoRA / BitFit on one linear."""
    bl = blocks(FAMILIES[ir.settings.family])
    scaled = {(a.layer, a.point): a for a in ir.attachments() if a.method == "ia3"}
    if not scaled:
        return
    reported: set[tuple[str, str]] = set()
    for att in ir.attachments():
        if att.method == "lora":
            units = [(att.layer, att.point)]
        elif att.method == "bitfit":
            units = [u for u in _bias_units(att.point, att.layer, n, bl) if len(u) == 2]
        else:
            continue
        for u in units:
            ia3 = scaled.get(u)
            if ia3 is not None and (ia3.instance, att.instance) not in reported:
                reported.add((ia3.instance, att.instance))
                diags.error("E150", f"ia3 '{ia3.instance}' and {att.method} '{att.instance}' both change "
                                    f"layers[{u[0]}].{u[1]}", ia3.span.to_span() if ia3.span else None,
                            "keep one method on that projection, or move the other to another point")
                break
