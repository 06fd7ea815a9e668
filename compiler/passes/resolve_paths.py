"""Pass: the module path (in the task model, e.g. ``bert.encoder.layer.3.output.LayerNorm``) of
every point and attachment, from the family's table."""

from __future__ import annotations

from peltc.compiler.archs import FAMILIES, Family
from peltc.compiler.ir import IR


def module_path(fam: Family, layer: int | None, point: str) -> str:
    if layer is None:
        return {"embeddings": f"{fam.base}.embeddings", "all": "",
                "head": f"{fam.base}.{fam.pooler}" if fam.pooler else fam.head[-1]}[point]
    base = f"{fam.base}.{fam.layers}.{layer}"
    rel = "" if point in ("layer", "ffn") else fam.points.get(point, "")
    if point == "attention" and not rel:
        rel = "attention"
    return f"{base}.{rel}" if rel else base


def resolve_paths(ir: IR) -> None:
    fam = FAMILIES[ir.settings.family]
    for pt in list(ir.nodes("point")):
        ir.replace(pt.model_copy(update={"module_path": module_path(fam, pt.layer, pt.point)}))
    for att in ir.attachments():
        # a soft prompt lives on the base model, whose forward it rewrites (`compiler/torch/prompt.py`)
        path = fam.base if att.method == "prompt" else module_path(fam, att.layer, att.point)
        ir.replace(att.model_copy(update={"module_path": path}))
