"""What the architecture diagram shows, computed from the IR (no graphviz here): the layer groups
(layers with identical attachments collapse into one ``×N`` cluster), the modules drawn in each
(`Mod`), the whole-model modules, and the base-model module paths that carry PELT modules.
`render` draws these.

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

from peltc.compiler.archs import BLOCKS, FAMILIES, Family
from peltc.compiler.ir import IR, AttachmentNode, GateSpec
from peltc.compiler.layerset import compact_layers as _compact
from peltc.compiler.passes.resolve_paths import module_path


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
    shared: int | None = None          # prefix reparameterisation MLP (instance-wide, training only)
    relative: dict[str, str] = field(default_factory=dict)   # parameters written relative ("size" → "hidden/16")
    paths: list[str] = field(default_factory=list)   # module path in each layer of the group
    where: str | None = None           # symbolic diagrams: the selectors as written
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.instance}@{self.point}"

    @property
    def beside(self) -> bool:
        """Drawn beside the module it changes (adapters sit in the data path instead)."""
        return self.method in ("lora", "prefix", "bitfit")


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
    shared = ir.instance(att.instance).shared_trainable if att.method == "prefix" else None
    return Mod(att.instance, att.method, att.point, dict(att.params), att.gate, att.placement, att.order,
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
        placement = inst.params.get("placement", "sequential")
        notes = [f"layers[{ov.selector}]: " + ", ".join([f"{k} {v}" for k, v in ov.params.items()] +
                                                        ([f"gate {ov.gate.text()}"] if ov.gate else []))
                 for ov in inst.overrides]
        for t in inst.targets:
            inp = t.point
            if inst.method == "adapter" and placement == "parallel":   # as resolve_layers wires it
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


# --- module paths -------------------------------------------------------------------------------
def bias_modules(fam: Family, layer: int | None, point: str, n_layers: int) -> list[str]:
    """The modules whose biases a bitfit attachment trains."""
    if point == "all":
        out = bias_modules(fam, None, "embeddings", n_layers)
        for i in range(n_layers):
            out += bias_modules(fam, i, "layer", n_layers)
        return out + bias_modules(fam, None, "head", n_layers)
    if point == "embeddings":
        return [f"{fam.base}.{e}" for e in fam.embeddings_bias]
    if point == "head":
        return [f"{fam.base}.{fam.pooler}"] if fam.pooler else []
    return [module_path(fam, layer, p) for p in BLOCKS.get(point, (point,))]


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
        if a.method == "bitfit":
            out.update(bias_modules(FAMILIES[s.family], a.layer, a.point, s.dims["layers"]))
        elif a.method != "finetune" and a.module_path is not None:
            out.add(a.module_path)
    return out
