"""Pass: what the bound architecture family cannot do, caught statically (E128): prefix-tuning
needs attention through transformers' AttentionInterface (DeBERTa-v2 computes its own), and
`bitfit at head` needs a frozen pretrained pooler (RoBERTa, ELECTRA, DistilBERT have none: their
head is trained anyway)."""

from __future__ import annotations

from peltc.compiler.archs import FAMILIES
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR


def check_family(ir: IR, diags: Diagnostics) -> None:
    fam = FAMILIES[ir.settings.family]
    for att in ir.attachments():
        span = att.span.to_span() if att.span else None
        if att.method == "prefix" and not fam.attention_interface:
            diags.error("E128", f"{att.instance}: the {fam.name} family does not route attention through "
                                f"transformers' AttentionInterface, so prefix-tuning cannot attach at attention",
                        span, "use adapter or lora on this family, or a BERT/RoBERTa/ELECTRA/DistilBERT model")
        if att.method == "bitfit" and att.point == "head" and not fam.pooler:
            diags.error("E128", f"{att.instance}: the {fam.name} family has no frozen pretrained pooler; "
                                f"its head ({', '.join(fam.head)}) is trained anyway", span,
                        "drop `head` from this bitfit's targets")
