"""One drawn module's parameters as the text of its diagram label (``size 48 · relu``, ``r 8 · α 16``),
read from the typed parameters (`schema.method_params`): a default is left out by asking the schema."""

from __future__ import annotations

from peltc.compiler.archs import Family
from peltc.compiler.diagram import Mod, bias_points, layer_layout
from peltc.compiler.schema import METHODS, is_default


def size_text(m: Mod, name: str) -> str:
    """``512`` or, written relative to the model, ``512 (hidden/1.5)``."""
    v = m.params[name]
    return f"{v} ({m.relative[name]})" if name in m.relative else str(v)


def param_text(m: Mod, fam: Family | None = None, d: dict[str, int] | None = None) -> str:
    text = method_text(m, fam, d)
    return text + (f" · lr {m.args.lr:g}" if m.args.lr is not None else "")


def method_text(m: Mod, fam: Family | None = None, d: dict[str, int] | None = None) -> str:
    p = m.args
    if m.method == "adapter":
        bits = [f"size {size_text(m, 'size')}", str(p.activation)]
        bits += ["parallel"] * (m.placement == "parallel") + \
            [f"scale {p.scale:g}"] * (not is_default("adapter", "scale", p.scale))
        return " · ".join(bits)
    if m.method == "prefix":
        return f"length {p.length} · " + ("no mlp" if p.mlp is None else f"mlp {p.mlp}") + \
            (f" · init {p.init}" if not is_default("prefix", "init", p.init) else "")
    if m.method == "prompt":
        enc = "" if p.encoder == "none" else f" · {p.encoder} encoder {p.encoder_hidden} (folded)"
        return f"{p.length} vectors before the tokens · init {p.init}{enc}"
    if m.method == "lora":
        rs = p.scaling == "rs"
        scale = (f"α {p.alpha:g}" + " / √r" * rs) if m.gate.kind == "none" or p.dora else \
            f"gate replaces α/{'√' * rs}r"
        bits = ["DoRA"] * bool(p.dora) + [f"r {size_text(m, 'rank')}", scale]
        bits += [f"init {p.init}"] * (p.init != "default") + [f"B lr × {p.lr_ratio:g}"] * (p.lr_ratio != 1)
        return " · ".join(bits + [f"dropout {p.dropout:g}"] * bool(p.dropout))
    if m.method == "bitfit":
        whole = {"all": "every bias (embeddings, layers, pooler)", "layer": "every bias of the layer",
                 "embeddings": "embedding LayerNorm bias", "head": "pooler bias"}
        if m.point in whole and (fam is None or fam.biases is None):   # every module holds a bias
            return whole[m.point]
        parts = bias_points(fam, "layer" if m.point == "all" else m.point, d)   # only those with a bias
        nodes = layer_layout(fam).nodes
        names = ", ".join((fam.drawing.norm if fam else "LayerNorm") if q.endswith(".output") else nodes[q].label
                          for q in parts)
        if m.point == "all":
            return f"every bias: {names} of each layer"
        return f"bias{'es' * (len(parts) > 1)} of {names}"
    if m.method == "ia3":
        return "l ⊙ its input (l₀ = 1)" if m.point == "ffn.down" else "l ⊙ its output (l₀ = 1)"
    if m.method == "loreft":
        return (f"r {size_text(m, 'rank')} · first {p.first} · last {p.last}" + " · tied" * bool(p.tied)
                + " · h + Rᵀ(Wh + b − Rh)")
    if m.method == "finetune":
        return "every base weight"
    own = METHODS[m.method].text     # a plug-in's own line, else its parameters as written
    if own is not None:
        return own(p)
    return " · ".join(f"{k} {v}" for k, v in m.params.items() if k != "lr" and v is not None) or m.method
