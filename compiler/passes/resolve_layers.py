"""Pass: expand every instance's targets over the model's layers into ``attachment`` nodes (one per
instance × layer × point), apply per-layer overrides, and add the base ``point`` nodes, the gate
nodes and the data-flow edges.

Relative sizes (`size hidden/16`) become numbers here, on the bound model's hidden size.

Errors: a layer index out of range (E109), a selector or override that matches nothing (E110),
two targets of one instance hitting the same layer and point (E115).
"""

from __future__ import annotations

from collections import defaultdict

from peltc.compiler import schema
from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR, AttachmentNode, GateNode, PointNode, attachment_id, point_id
from peltc.compiler.layerset import compact_layers, expand_selector

# The main chain of one layer; linear points hang off their block with role "part".
_CHAIN = ("input", "attention", "attention.output", "ffn", "ffn.output")
_PARTS = {"attention": ("attention.query", "attention.key", "attention.value", "attention.out"),
          "ffn": ("ffn.gate", "ffn.up", "ffn.down")}


def _add_points(ir: IR, n_layers: int) -> None:
    from peltc.compiler.archs import FAMILIES
    fam = FAMILIES.get(ir.settings.family)
    have = set(fam.points) if fam is not None else set(schema.LAYER_POINTS)   # ffn.gate: gated MLPs only
    ir.add(PointNode(id=point_id(None, "embeddings"), layer=None, point="embeddings"))
    prev = point_id(None, "embeddings")
    for i in range(n_layers):
        for p in _CHAIN:
            ir.add(PointNode(id=point_id(i, p), layer=i, point=p))
            ir.connect(prev, point_id(i, p), "flow")
            prev = point_id(i, p)
            for part in _PARTS.get(p, ()):
                if part not in have:
                    continue
                ir.add(PointNode(id=point_id(i, part), layer=i, point=part))
                ir.connect(point_id(i, p), point_id(i, part), "part")
    ir.add(PointNode(id=point_id(None, "head"), layer=None, point="head"))
    ir.connect(prev, point_id(None, "head"), "flow")
    ir.add(PointNode(id=point_id(None, "all"), layer=None, point="all"))


def _point_of(layer: int | None, point: str) -> str:
    if layer is None:
        return point_id(None, point)
    return point_id(layer, "input" if point == schema.WHOLE_LAYER else point)


def resolve_layers(ir: IR, diags: Diagnostics) -> None:
    n, hidden = ir.settings.dims["layers"], ir.settings.dims["hidden"]
    _add_points(ir, n)
    per_point: dict[str, int] = defaultdict(int)
    for inst in ir.instances():
        seen: dict[tuple, object] = {}
        for t in inst.targets:
            if t.selector is None:
                layers: list[int | None] = [None]
            else:
                sel, bad = expand_selector(t.items, n)
                for k in bad:
                    start, stop, _ = t.items[k]
                    diags.error("E109", f"layer selector [{t.selector}] is out of range for a {n}-layer model",
                                t.span.to_span() if t.span else None,
                                f"layers are 0..{n - 1} (negative indices count from the end: -1 is {n - 1})")
                if not sel and not bad:
                    diags.error("E110", f"layer selector [{t.selector}] matches no layer", t.span.to_span() if t.span else None,
                                f"the model has layers 0..{n - 1}")
                layers = list(sel)
            dups: list[int | None] = []   # reported once per target, not once per layer
            for layer in layers:
                key = (layer, t.point)
                if key in seen:
                    dups.append(layer)
                    continue
                seen[key] = t
                params, gate = dict(inst.params), inst.gate
                gate_span = inst.spans.get("gate") or inst.span
                for ov in inst.overrides:
                    ol, _ = expand_selector(ov.items, n)
                    if layer in ol:
                        params.update(ov.params)
                        if ov.gate is not None:
                            gate, gate_span = ov.gate, ov.spans.get("gate") or ov.span
                relative = {k: v for k, v in params.items() if schema.relative_divisor(v) is not None}
                params.update({k: schema.resolve_relative(v, hidden) for k, v in relative.items()})
                placement = schema.placement_of(params)
                pid = _point_of(layer, t.point)
                if pid not in ir:       # a point this family lacks (check_family reports it: E128)
                    ir.add(PointNode(id=pid, layer=layer, point=t.point))
                order = per_point[pid]
                per_point[pid] += 1
                att = AttachmentNode(id=attachment_id(inst.name, layer, t.point), instance=inst.name,
                                     method=inst.method, layer=layer, point=t.point, params=params,
                                     relative=relative, gate=gate,
                                     placement=placement, order=order, span=t.span or inst.span,
                                     gate_span=gate_span)
                ir.add(att)
                ir.connect(inst.id, att.id, "instance")
                src_in = pid
                if schema.METHODS[inst.method].placement and placement == "parallel":
                    src_in = point_id(layer, "attention.output" if t.point == "ffn.output" else "input")
                ir.connect(src_in, att.id, "input")
                ir.connect(att.id, pid, "output")
                if gate.kind != "none":
                    g = GateNode(id=f"gate:{att.id[4:]}", attachment=att.id, instance=inst.name, layer=layer,
                                 gate=gate, span=gate_span)
                    ir.add(g)
                    ir.connect(g.id, att.id, "scales")
                    if gate.kind == "sigmoid" and layer is not None:
                        ir.connect(point_id(layer, gate.source), g.id, "source")
            if dups:
                where = t.point if dups[0] is None else f"layers[{compact_layers(dups)}]" + \
                    ("" if t.point == schema.WHOLE_LAYER else f".{t.point}")
                diags.error("E115", f"{inst.name} targets {where} twice",
                            t.span.to_span() if t.span else None, "remove the overlapping target")
        # overrides that select none of the instance's layers
        covered = {lay for lay, _ in seen}
        for ov in inst.overrides:
            ol, bad = expand_selector(ov.items, n)
            span = ov.span.to_span() if ov.span else None
            if bad:
                diags.error("E109", f"override selector [{ov.selector}] is out of range for a {n}-layer model", span,
                            f"layers are 0..{n - 1}")
            elif not set(ol) & covered:
                diags.error("E110", f"override layers[{ov.selector}] selects no layer that {inst.name} attaches to",
                            span, f"{inst.name} attaches to layers {compact_layers(sorted(x for x in covered if x is not None))}")

