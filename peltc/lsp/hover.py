"""Hover: an instance's resolved parameters, layers, gate and exact trainable count on the spec's model;
a point's module paths; a parameter's meaning, default and range; a gate form; the model."""

from __future__ import annotations

from pathlib import Path

from lsprotocol import types as lsp

from peltc.compiler import schema
from peltc.compiler.archs import load_config
from peltc.compiler.layerset import compact_layers
from peltc.errors import PeltError, Span
from peltc.grammar import ast
from peltc.lsp.analysis import Analysis, find, span_range
from peltc.lsp.glossary import GATE_DOCS, POINT_DOCS, count_text, param_doc, value_text


def _model_note(a: Analysis) -> str:
    if a.hover_ir is None:
        return ""
    s = a.hover_ir.settings
    d = s.dims
    name = a.hover_model or s.model or "?"
    note = f"on `{name}` ({s.family}, {d['layers']} layers, hidden {d['hidden']})"
    if a.hover_model_defaulted:
        note += " — the spec names no model; `peltc compile`'s default"
    return note


def instance_hover(a: Analysis, name: str, method: str | None = None) -> str:
    from peltc.compiler.summary import params_text, point_order, points_text, trained_modules
    m = schema.METHODS.get(method or "")
    head = f"**{method}** `{name}`" + (f" — {m.doc}" if m else "")
    ir = a.hover_ir
    if ir is None or not any(i.name == name for i in ir.instances()):
        ir0 = a.ir
        if ir0 is not None and any(i.name == name for i in ir0.instances()):
            inst = ir0.instance(name)
            return head + "\n\n" + f"gate `{inst.gate.text()}`; " + \
                " · ".join(f"{k} {value_text(v)}" for k, v in inst.params.items())
        return head + "\n\n(counts appear when the spec checks without errors)"
    inst = ir.instance(name)
    atts = ir.attachments(name)
    s = ir.settings
    lines = [head, ""]
    pts = sorted({x.point for x in atts}, key=point_order(s.family))
    layers = sorted({x.layer for x in atts if x.layer is not None})
    lines.append(f"- at: `{points_text(pts)}`" + (f" · layers {compact_layers(layers)}" if layers else ""))
    if pt := params_text(inst.method, atts):
        lines.append(f"- {pt}")
    if schema.METHODS[inst.method].gated:
        gates = list(dict.fromkeys(x.gate.text() for x in atts)) or [inst.gate.text()]
        gp = sum(x.gate_params or 0 for x in atts)
        lines.append(f"- gate: `{', '.join(gates)}`" + (f" ({count_text(gp)} gate parameters)" if gp else ""))
    total = sum(x.saved or 0 for x in atts)
    per = {x.layer: 0 for x in atts if x.layer is not None}
    for x in atts:
        if x.layer is not None:
            per[x.layer] += x.saved or 0
    each = set(per.values())
    lines.append(f"- trainable: **{count_text(total)}**" + (f" ({count_text(each.pop())} per layer)" if len(each) == 1 else "") +
                 f" {_model_note(a)}")
    if inst.shared_trainable:
        lines.append(f"- also trains a {count_text(inst.shared_trainable)}-parameter reparameterisation MLP "
                     "(folded into the prefixes after training)" if inst.method == "prefix" else
                     f"- trains a {count_text(inst.shared_trainable)}-parameter P-tuning encoder "
                     "(folded into the prompt vectors after training)")
    mods = trained_modules(ir, atts)
    if mods:
        lines.append("- → " + "<br>".join(f"`{p}`" for p in mods))
    return "\n".join(lines)


def point_hover(a: Analysis, inst_name: str | None, target: ast.Target) -> str:
    from peltc.compiler.summary import path_patterns
    points = [p or schema.WHOLE_LAYER for p in target.points()] if target.selector is not None \
        else target.points()
    lines = []
    ir = a.hover_ir
    for p in points:
        lines.append(f"**{'layers[…].' if target.selector is not None and p != 'layer' else ''}{p}**: "
                     f"{POINT_DOCS.get(p, 'unknown point')}")
        if ir is not None and inst_name and any(i.name == inst_name for i in ir.instances()):
            atts = [x for x in ir.attachments(inst_name) if x.point == p]
            paths = path_patterns([x.module_path for x in atts if x.module_path])
            if paths:
                layers = sorted({x.layer for x in atts if x.layer is not None})
                lines.append(f"- resolves to ({_model_note(a)}" + (f", layers {compact_layers(layers)}" if layers
                                                                    else "") + "):")
                lines += [f"  - `{x}`" for x in paths]
    return "\n".join(lines)


def _dimension_note(a: Analysis, member, text: str | None) -> str | None:
    """A search space's choice under the cursor: its dimension (what is resolved above is the first point)."""
    sp = getattr(member, "space", None) or getattr(member, "choice", None)
    d = next((d for d in a.space.dimensions if d.span == sp.span), None) if sp is not None and a.space else None
    if d is None:
        return text
    from peltc.compiler.space_summary import domain_text
    return (text or "") + f"\n\nsearch dimension `{d.name}` ({d.kind}): {domain_text(d)}; resolved above at " \
                          "the space's first point"


def hover(a: Analysis, line0: int, char0: int) -> lsp.Hover | None:
    tree = a.tree
    if tree is None:
        return None
    f = find(tree, line0, char0)
    st = f.statement
    text: str | None = None
    rng: Span | None = None
    if isinstance(st, ast.Model):
        try:
            cfg = load_config(st.ref)
            text = f"**model** `{st.ref}` — from {cfg.source}"
            if a.ir is not None and a.ir.settings.family:
                d = a.ir.settings.dims
                text += (f"\n\n{a.ir.settings.family}, {d['layers']} layers, hidden {d['hidden']}, "
                         f"{count_text(a.ir.settings.base_params)} base parameters")
        except PeltError as e:
            text = f"**model** `{st.ref}`: {e.diagnostic.message}"
        rng = st.span
    elif isinstance(st, (ast.Extends, ast.Import)):
        p = Path(a.path).parent / st.path
        text = f"`{p}`" + ("" if p.is_file() else " (not found)")
        rng = st.span
    elif isinstance(st, ast.Remove):
        text = f"removes the inherited instance `{st.name}`"
        rng = st.span
    elif f.section is not None:
        sec = f.section
        if f.part in ("keyword", "name"):
            if sec.name is not None:
                text = instance_hover(a, sec.name, sec.keyword)
            else:
                text = {"head": "**head**: task head settings (`pool pooler|mean`)",
                        "train": "**train**: training recipe defaults for `peltc compile` (flags win)"}.get(
                    sec.keyword)
            rng = sec.keyword_span if f.part == "keyword" else sec.name_span
        elif isinstance(f.member, ast.Param):
            m = f.member
            table = (schema.METHODS[sec.keyword].params if sec.keyword in schema.METHODS else
                     schema.HEAD_PARAMS if sec.keyword == "head" else
                     schema.TRAIN_PARAMS if sec.keyword == "train" else {})
            if m.name in table:
                text = param_doc(m.name, table[m.name], sec.keyword)
                if sec.name and a.hover_ir is not None and any(i.name == sec.name for i in a.hover_ir.instances()):
                    from peltc.compiler.summary import params_text
                    atts = a.hover_ir.attachments(sec.name)
                    now = [x for x in params_text(sec.keyword, atts).split(" · ") if x.startswith(m.name + " ")]
                    if now:
                        text += f"\n\nresolved: `{now[0]}` {_model_note(a)}"
            rng = m.span
        elif isinstance(f.member, ast.At):
            if f.target is not None:
                text = point_hover(a, sec.name, f.target)
                rng = f.target.span
            else:
                text = "**at**: where the instance attaches (targets separated by commas)"
                rng = f.member.span
        elif isinstance(f.member, ast.Gate):
            g = f.member.expr
            text = GATE_DOCS.get(g.name, f"unknown gate `{g.name}`")
            if sec.name and a.hover_ir is not None and any(i.name == sec.name for i in a.hover_ir.instances()):
                atts = a.hover_ir.attachments(sec.name)
                gp = sum(x.gate_params or 0 for x in atts)
                text += f"\n\nhere: `{', '.join(dict.fromkeys(x.gate.text() for x in atts))}`, {count_text(gp)} " \
                        f"gate parameters {_model_note(a)}"
            rng = f.member.span
        elif isinstance(f.member, ast.LayerOverride):
            text = "**layers[…] { }**: a per-layer override of parameters and the gate"
            rng = f.member.span
    text = _dimension_note(a, f.member, text)
    if not text:
        return None
    return lsp.Hover(contents=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=text),
                     range=span_range(rng) if rng else None)
