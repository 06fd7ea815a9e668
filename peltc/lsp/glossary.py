"""What the points, gates and parameters of the language mean, as the editor shows them (hover and
completion documentation)."""

from __future__ import annotations

from peltc.compiler import schema

POINT_DOCS = {
    "input": "the layer input h_in (value)",
    "attention": "the self-attention block (block; prefix-tuning)",
    "attention.query": "the attention's query projection (linear; LoRA)",
    "attention.key": "the attention's key projection (linear; LoRA, (IA)³ scales its output)",
    "attention.value": "the attention's value projection (linear; LoRA, (IA)³ scales its output)",
    "attention.out": "the attention's output projection (linear; LoRA)",
    "attention.output": "the attention sub-layer output, after its LayerNorm (value; adapters, gate source)",
    "ffn": "the feed-forward block (block)",
    "ffn.gate": "the gate projection of a gated MLP (linear; decoders only)",
    "ffn.up": "the feed-forward up projection (linear; LoRA)",
    "ffn.down": "the feed-forward down projection (linear; LoRA, (IA)³ scales its input)",
    "ffn.output": "the feed-forward sub-layer output h_FN, after its LayerNorm (value; adapters, gate source)",
    "output": "the layer output h_out, the residual stream leaving the layer (value; LoReFT)",
    "layer": "the whole layer (bitfit)",
    "embeddings": "the embeddings (global)",
    "head": "the model's frozen pooler (global)",
    "all": "the whole model (global)",
}

GATE_DOCS = {
    "none": "`none` (default): no gate; the value is 1 (LoRA: alpha / rank). 0 parameters.",
    "sigmoid": "`sigmoid(SOURCE)`: per example, the mean over tokens of σ(Linear(H, 1)(SOURCE)); SOURCE is "
               "`layer.input`, `attention.output` or `ffn.output` of the same layer; `pool=masked_mean|"
               "mean_unmasked|first`, `init=B` (the starting bias). H + 1 parameters per attachment.",
    "scalar": "`scalar`, `scalar(init=W)`: one learned scalar σ(w), w starting at `init` (0). 1 parameter.",
    "const": "`const(C)`: a constant C. 0 parameters.",
}


def count_text(x: int | None) -> str:
    return "?" if x is None else f"{x:,}"


def param_doc(name: str, p: schema.ParamSpec, owner: str) -> str:
    lines = [f"**{name}** ({owner}): {p.doc}"]
    if p.type == "choice":
        lines.append(f"- values: {', '.join(f'`{c}`' for c in p.choices)}")
    else:
        kind = {"int": "a whole number", "float": "a number", "int_or_none": "a whole number or `none`",
                "bool": "`true` or `false`", "str": "a quoted text"}.get(p.type, p.type)
        if p.below_hidden:
            kind += ", or relative to the model: `hidden/D` (⌊hidden / D⌋, D > 1)"
        lines.append(f"- type: {kind}")
    lines.append(f"- default: {'—' if p.default is None else f'`{value_text(p.default)}`'}")
    rng = []
    if p.min is not None:
        rng.append(f"{'>' if p.min_exclusive else '≥'} {p.min:g}")
    if p.max is not None:
        rng.append(f"{'<' if p.max_exclusive else '≤'} {p.max:g}")
    if p.below_hidden:
        rng.append("< the hidden size")
    if rng:
        lines.append(f"- range: {', '.join(rng)}")
    if p.instance_only:
        lines.append("- holds for the whole instance (not in a per-layer override)")
    if p.gate_replaces:
        lines.append("- has no effect under a gate (the gate replaces alpha / rank)")
    return "\n".join(lines)


def value_text(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)
