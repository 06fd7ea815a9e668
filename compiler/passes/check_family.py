"""Pass: what the bound architecture family cannot do, caught statically (E128): prefix-tuning
needs attention through transformers' AttentionInterface (DeBERTa-v2 computes its own), and
`bitfit at head` needs a frozen pretrained pooler (RoBERTa, ELECTRA, DistilBERT have none: their
head is trained anyway). A point the family does not have (`ffn.gate` on an encoder without a gated
MLP) and a bitfit target holding no bias on the family (Llama has none; Qwen2 only q, k, v) are E128
too, never a silent 0-parameter instance."""

from __future__ import annotations

from peltc.compiler import counts, schema
from peltc.compiler.archs import FAMILIES, blocks
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR


def check_family(ir: IR, diags: Diagnostics) -> None:
    fam = FAMILIES[ir.settings.family]
    d = ir.settings.dims
    seen: set[tuple[str, str]] = set()      # one error per instance and point, not one per layer
    for att in ir.attachments():
        span = att.span.to_span() if att.span else None
        if (att.instance, att.point) in seen:
            continue
        if att.layer is not None and att.point not in fam.points and att.point not in blocks(fam) \
                and att.point != schema.WHOLE_LAYER:
            seen.add((att.instance, att.point))
            have = sorted(p for p in fam.points if schema.LAYER_POINTS.get(p) == schema.LAYER_POINTS[att.point])
            diags.error("E128", f"{att.instance}: the {fam.name} family has no point '{att.point}'", span,
                        f"{schema.LAYER_POINTS[att.point]} points of {fam.name}: {', '.join(have)}")
            continue
        if schema.host_of(att.method) == "biases" and (att.point != "head" or fam.pooler) \
                and counts.bitfit_params(att.point, fam, d, d["layers"]) == 0:
            seen.add((att.instance, att.point))
            what = "any of its modules" if att.point == "all" else f"'{att.point}'"
            diags.error("E128", f"{att.instance}: the {fam.name} family has no bias terms at {what}: "
                                f"bitfit would train nothing there", span,
                        _biased_help(fam, d))
            continue
        if schema.host_of(att.method) == "attention" and not fam.attention_interface:
            diags.error("E128", f"{att.instance}: the {fam.name} family does not route attention through "
                                f"transformers' AttentionInterface, so prefix-tuning cannot attach at attention",
                        span, "use adapter or lora on this family, or a BERT/RoBERTa/ELECTRA/DistilBERT model")
        if schema.host_of(att.method) == "biases" and att.point == "head" and not fam.pooler:
            diags.error("E128", f"{att.instance}: the {fam.name} family has no frozen pretrained pooler; "
                                f"its head ({', '.join(fam.head)}) is trained anyway", span,
                        "drop `head` from this bitfit's targets")


def _biased_help(fam, d) -> str:
    have = [p for p in fam.points if schema.LAYER_POINTS.get(p) in ("linear", "value")
            and p in schema.METHODS["bitfit"].points and counts.bitfit_params(p, fam, d, d["layers"])]
    if not have:
        return f"{fam.name} models have no biases (RMSNorm, bias-free linears): use lora or an adapter instead"
    return f"biases on {fam.name}: {', '.join(have)} (or `at all`)"
