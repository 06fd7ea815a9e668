"""What the architecture diagram shows, computed from the IR (no graphviz here): the layer groups
(layers with identical attachments collapse into one ``×N`` cluster), the modules drawn in each
(`Mod`), the whole-model modules, how one layer's base modules are laid out for the family
(`layer_layout`: post-norm encoders, pre-norm decoders with a gated MLP), and the base-model module
paths that carry PELT modules (`bias_modules`: only those that hold a bias). `render` draws these.

>>> from peltc.compiler.pipeline import build_ir
>>> ir = build_ir("adapter a { at layers[*].ffn.output }", model="bert-base-uncased").ir
>>> [g.label for g in layer_groups(ir)]
['layers 0–11 ×12']
>>> sorted(diagram_module_nodes(ir))[:2]
['bert.encoder.layer.0.output.LayerNorm', 'bert.encoder.layer.1.output.LayerNorm']
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from peltc.compiler.archs import BLOCKS, FAMILIES, Family, blocks, has_bias
from peltc.compiler.ir import IR, AttachmentNode, GateSpec
from peltc.compiler.layerset import compact_layers as _compact
from peltc.compiler.passes.resolve_paths import module_path
from peltc.compiler.schema import METHODS, method_params, placement_of


# --- what is drawn ------------------------------------------------------------------------------
@dataclass
class Mod:
    """One drawn module: an instance at one point, standing for its attachments in a layer group."""

    instance: str
    method: str
    point: str
    params: dict[str, Any]
    gate: GateSpec
    placement: str = "sequential"
    order: int = 0
    input_point: str | None = None     # the point it reads (a parallel adapter: its block's input)
    trainable: int | None = None       # per layer
    saved: int | None = None
    gate_params: int | None = None
    shared: int | None = None          # prefix MLP / P-tuning encoder (instance-wide, training only)
    relative: dict[str, str] = field(default_factory=dict)   # parameters written relative ("size" → "hidden/16")
    paths: list[str] = field(default_factory=list)   # module path in each layer of the group
    where: str | None = None           # symbolic diagrams: the selectors as written
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.instance}@{self.point}"

    @property
    def args(self) -> Any:
        """The parameters as the method's typed model (`schema.method_params`): every default filled."""
        return method_params(self.method, self.params)

    @property
    def beside(self) -> bool:
        """Drawn beside the module it changes (adapters sit in the data path instead)."""
        m = METHODS.get(self.method)
        return m is not None and m.drawing.edge is not None and m.host != "model"


@dataclass
class LayerGroup:
    """Layers drawn as one cluster (their attachments are identical), with the modules drawn in it."""

    layers: list[int]
    label: str
    mods: list[Mod]
    path: str            # module path of the first layer ('' without a model)

    @property
    def id(self) -> str:
        return f"L{self.layers[0]}" if self.layers else "Lsym"


def compact_layers(layers: list[int]) -> str:
    """``[0..11]`` → ``0–11``; ``[0, 2, …, 10]`` → ``0–10 by 2``; otherwise runs, comma-separated."""
    return _compact(layers, "–", steps=True)


def _signature(atts: list[AttachmentNode]) -> tuple:
    return tuple(sorted((a.instance, a.point, a.method, json.dumps(a.params, sort_keys=True, default=str),
                         a.gate.model_dump_json(), a.placement, a.order, a.trainable, a.saved) for a in atts))


def path_pattern(paths: list[str], layers: list[int]) -> str:
    """Module paths of several layers as one: ``bert.encoder.layer.{0–11}.output.LayerNorm``."""
    split = [p.split(".") for p in paths]
    if not paths or len({len(s) for s in split}) != 1:
        return ", ".join(paths)
    return ".".join(parts[0] if len(set(parts)) == 1 else "{" + compact_layers(layers) + "}"
                    for parts in zip(*split))


def _bound_mod(ir: IR, att: AttachmentNode, same: list[AttachmentNode]) -> Mod:
    inputs = ir.predecessors(att.id, "input")
    shared = ir.instance(att.instance).shared_trainable
    gate = att.start_gate   # as it starts on the model (the family's resolved gate_init)
    return Mod(att.instance, att.method, att.point, dict(att.params), gate, att.placement, att.order,
               inputs[0].point if inputs else att.point, att.trainable, att.saved, att.gate_params, shared,
               relative=dict(att.relative), paths=[a.module_path for a in same if a.module_path is not None])


def layer_groups(ir: IR, expand: bool = False) -> list[LayerGroup]:
    """The layer clusters of the diagram, in layer order (the model's data flow, top to bottom).

    With a model: a run of consecutive layers whose attachments are identical (instances, points,
    parameters, gates) forms one group unless ``expand``. Identical layers that are not consecutive
    (``layers[0..11 by 2]``) stay separate groups: one group is one place in the flow. Without a
    model: a single symbolic ``layers[*]`` group.
    """
    s = ir.settings
    if s.family is None:
        return [LayerGroup([], "layers[*]", _symbolic_mods(ir)[0], "")]
    per_layer: dict[int, list[AttachmentNode]] = defaultdict(list)
    for a in ir.attachments():
        if a.layer is not None:
            per_layer[a.layer].append(a)
    runs: list[tuple[Any, list[int]]] = []
    for i in range(s.dims["layers"]):
        key = i if expand else _signature(per_layer[i])
        if runs and runs[-1][0] == key:
            runs[-1][1].append(i)
        else:
            runs.append((key, [i]))
    groups = []
    for _, layers in runs:
        same: dict[tuple, list[AttachmentNode]] = defaultdict(list)
        for i in layers:
            for a in per_layer[i]:
                same[a.instance, a.point].append(a)
        label = f"layer {layers[0]}" if len(layers) == 1 else f"layers {compact_layers(layers)} ×{len(layers)}"
        mods = [_bound_mod(ir, a, same[a.instance, a.point]) for a in per_layer[layers[0]]]
        groups.append(LayerGroup(layers, label, mods, module_path(FAMILIES[s.family], layers[0], "layer")))
    return groups


def _symbolic_mods(ir: IR) -> tuple[list[Mod], list[Mod]]:
    """(layer modules, whole-model modules) of a spec with no bound model, from its targets."""
    layer: dict[str, Mod] = {}
    glob: list[Mod] = []
    for inst in ir.instances():
        placement = placement_of(inst.params)
        notes = [f"layers[{ov.selector}]: " + ", ".join([f"{k} {v}" for k, v in ov.params.items()] +
                                                        ([f"gate {ov.gate.text()}"] if ov.gate else []))
                 for ov in inst.overrides]
        for t in inst.targets:
            inp = t.point
            if METHODS[inst.method].placement and placement == "parallel":   # as resolve_layers wires it
                inp = "attention.output" if t.point == "ffn.output" else "input"
            where = t.point if t.selector is None else f"layers[{t.selector}]"
            m = Mod(inst.name, inst.method, t.point, dict(inst.params), inst.gate, placement, inst.order, inp,
                    where=where, notes=notes)
            if t.selector is None:
                glob.append(m)
            elif m.key in layer:
                layer[m.key].where += f", {where}"
            else:
                layer[m.key] = m
    return list(layer.values()), glob


def global_mods(ir: IR) -> list[Mod]:
    if ir.settings.family is None:
        return _symbolic_mods(ir)[1]
    return [_bound_mod(ir, a, [a]) for a in ir.attachments() if a.layer is None]


# --- one layer's base modules, from the family's table ------------------------------------------
@dataclass(frozen=True)
class Node:
    """One base node of a layer: a point, or (pre-norm) a norm, an operation, a residual add."""

    label: str
    kind: str                  # point kind: value / linear / block; norm; op, add (no module)
    path: str | None = None    # module (relative to a layer) of a node that is not a point; None: an op
    note: str | None = None    # a second small line (what the value is), or an op's tooltip


@dataclass(frozen=True)
class Block:
    """A sub-layer as drawn: an optional norm before its cluster, the cluster's rows (the node ids of
    one rank, left to right), the value point that ends it, and an optional residual add after it
    (and after the adapters at that point)."""

    name: str
    rows: tuple[tuple[str, ...], ...]
    output: str
    entry: str                       # the node the previous block's exit flows into
    norm: str | None = None          # pre-norm: the norm node reading the block input (drawn before it)
    add: str | None = None           # pre-norm: the residual add node
    residual: str | None = None      # the node whose value the add adds back (the block input)
    parallel_input: str | None = None   # what a parallel adapter at ``output`` reads (None: its input point)


@dataclass(frozen=True)
class Layout:
    nodes: dict[str, Node]
    blocks: tuple[Block, ...]
    flow: tuple[tuple[str, str], ...]     # base data-flow edges inside a layer (adapters and adds aside)
    row_of: dict[str, str]                # a module beside a block (bitfit, prefix) sits in this node's row


# Encoders (post-norm): sub-layer → Add & LayerNorm, the value point; FFN up → down.
_ENCODER_NODES = {
    "input": Node("layer input", "value"),
    "attention.query": Node("query", "linear"), "attention.key": Node("key", "linear"),
    "attention.value": Node("value", "linear"), "attention": Node("self-attention", "block"),
    "attention.out": Node("out", "linear"), "attention.output": Node("Add & LayerNorm", "value"),
    "ffn.up": Node("up", "linear"), "ffn.down": Node("down", "linear"), "ffn.output": Node("Add & LayerNorm", "value"),
}
ENCODER_LAYOUT = Layout(
    _ENCODER_NODES,
    (Block("attention", (("attention.query", "attention.key", "attention.value"), ("attention",),
                         ("attention.out",), ("attention.output",)), "attention.output", "attention.query"),
     Block("ffn", (("ffn.up",), ("ffn.down",), ("ffn.output",)), "ffn.output", "ffn.up")),
    (("input", "attention.query"), ("input", "attention.key"), ("input", "attention.value"),
     ("attention.query", "attention"), ("attention.key", "attention"), ("attention.value", "attention"),
     ("attention", "attention.out"), ("attention.out", "attention.output"),
     ("ffn.up", "ffn.down"), ("ffn.down", "ffn.output")),
    {"attention": "attention", "ffn": "ffn.up", "layer": "input"})


def layer_layout(fam: Family | None) -> Layout:
    """How one layer of this family is drawn, from its table: post-norm (the encoders, and the symbolic
    diagram) or pre-norm — x → norm → self-attention → h_A → (+ x) → norm → MLP → h_F → (+), with the
    value points ``attention.output`` / ``ffn.output`` the sub-layer outputs before the residual add, a
    gated MLP where the family has ``ffn.gate``, per-head q/k norms and rotary positions where it has them."""
    if fam is None or not fam.pre_norm:
        return ENCODER_LAYOUT
    nodes = dict(_ENCODER_NODES)
    nodes["input"] = Node("layer input", "value", note="residual stream x")
    nodes["attention.output"] = Node("attention output", "value", note="h_A, before the residual add")
    nodes["ffn.output"] = Node("MLP output", "value", note="h_F, before the residual add")
    nodes["attention"] = Node("causal self-attention" if fam.causal else "self-attention", "block")
    for block, mod in fam.drawing.norms.items():
        nodes[f"{block}.norm"] = Node(fam.drawing.norm, "norm", mod)
    for b in ("attention", "ffn"):
        nodes[f"{b}.add"] = Node("+", "add", note="residual add: the block input plus its output")
    a_in = "attention.norm" if "attention" in fam.drawing.norms else "input"
    flow: list[tuple[str, str]] = [("input", a_in)] if a_in != "input" else []
    qkv = ("attention.query", "attention.key", "attention.value")
    flow += [(a_in, p) for p in qkv]
    rows: list[tuple[str, ...]] = [qkv]
    qk_ends = {p: p for p in qkv}
    if fam.drawing.qk_norms:
        for p, mod in fam.drawing.qk_norms.items():
            nodes[f"{p}.norm"] = Node(f"{p.rsplit('.', 1)[1][0]}_norm", "norm", mod)
            flow.append((p, f"{p}.norm"))
            qk_ends[p] = f"{p}.norm"
        rows.append(tuple(f"{p}.norm" for p in fam.drawing.qk_norms))
    if fam.drawing.rotary:
        nodes["attention.rope"] = Node("RoPE", "op", note="rotary positions on queries and keys")
        flow += [(qk_ends["attention.query"], "attention.rope"), (qk_ends["attention.key"], "attention.rope")]
        qk_ends["attention.query"] = qk_ends["attention.key"] = "attention.rope"
        rows.append(("attention.rope",))
    flow += [(e, "attention") for e in dict.fromkeys(qk_ends.values())]
    flow += [("attention", "attention.out"), ("attention.out", "attention.output")]
    rows += [("attention",), ("attention.out",), ("attention.output",)]
    attention = Block("attention", tuple(rows), "attention.output", a_in,
                      norm="attention.norm" if "attention" in fam.drawing.norms else None, add="attention.add",
                      residual="input", parallel_input=a_in)
    f_in = "ffn.norm" if "ffn" in fam.drawing.norms else "attention.add"
    if "ffn.gate" in fam.points:      # gated MLP: down(act(gate(x)) · up(x))
        act = fam.drawing.mlp_act or "act"
        nodes["ffn.gate"] = Node("gate", "linear")
        nodes["ffn.act"] = Node(f"{act}(gate) · up", "op", note=f"down reads {act}(gate(x)) · up(x)")
        frows: tuple[tuple[str, ...], ...] = (("ffn.gate", "ffn.up"), ("ffn.act",), ("ffn.down",), ("ffn.output",))
        flow += [(f_in, "ffn.gate"), (f_in, "ffn.up"), ("ffn.gate", "ffn.act"), ("ffn.up", "ffn.act"),
                 ("ffn.act", "ffn.down")]
    else:
        frows = (("ffn.up",), ("ffn.down",), ("ffn.output",))
        flow += [(f_in, "ffn.up"), ("ffn.up", "ffn.down")]
    flow.append(("ffn.down", "ffn.output"))
    ffn = Block("ffn", frows, "ffn.output", f_in, norm="ffn.norm" if "ffn" in fam.drawing.norms else None,
                add="ffn.add", residual="attention.add", parallel_input=f_in)
    return Layout(nodes, (attention, ffn), tuple(flow), {"attention": "attention", "ffn": frows[0][-1], "layer": "input"})


# --- module paths -------------------------------------------------------------------------------
def bias_points(fam: Family | None, point: str, d: dict[str, int] | None = None) -> tuple[str, ...]:
    """The single points whose biases a bitfit attachment at a block, a layer or a single point trains:
    the family's block table, less the points whose module holds no bias on this family (a decoder's
    RMSNorms and bias-free linears; Qwen2 keeps q, k, v). Without a family: the encoders' blocks."""
    parts = (blocks(fam) if fam is not None else BLOCKS).get(point, (point,))
    return tuple(p for p in parts if fam is None or has_bias(fam, p, d or {}))


def bias_modules(fam: Family, layer: int | None, point: str, n_layers: int,
                 d: dict[str, int] | None = None) -> list[str]:
    """The modules whose biases a bitfit attachment trains (``d``: the model's dims, for the bias flags
    of a family such as Llama's ``attention_bias``)."""
    if point == "all":
        out = bias_modules(fam, None, "embeddings", n_layers, d)
        for i in range(n_layers):
            out += bias_modules(fam, i, "layer", n_layers, d)
        return out + bias_modules(fam, None, "head", n_layers, d)
    if point == "embeddings":
        return [f"{fam.base}.{e}" for e in fam.embeddings_bias]
    if point == "head":
        return [f"{fam.base}.{fam.pooler}"] if fam.pooler else []
    return [module_path(fam, layer, p) for p in bias_points(fam, point, d)]


def diagram_module_nodes(ir: IR) -> set[str]:
    """The module paths the diagram draws PELT modules on: each attachment's module, a bitfit
    attachment standing for the bias-holding modules it covers (every one of them for a block,
    a layer, the embeddings, the head or `all`). ``finetune`` adds none: it trains base weights.
    Empty without a model."""
    s = ir.settings
    if s.family is None:
        return set()
    out: set[str] = set()
    for a in ir.attachments():
        if METHODS[a.method].host == "biases":
            out.update(bias_modules(FAMILIES[s.family], a.layer, a.point, s.dims["layers"], s.dims))
        elif METHODS[a.method].host != "model" and a.module_path is not None:
            out.add(a.module_path)
    return out
