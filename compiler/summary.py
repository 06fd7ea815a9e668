"""The text `peltc check` prints: every instance, where it attaches, its parameters (relative sizes
resolved), the modules it trains and exact parameter counts.

Columns are as wide as their widest cell and two spaces apart, so they never run together.

>>> from peltc.compiler.pipeline import build_ir
>>> ir = build_ir("adapter a { at layers[*].ffn.output size hidden/16 }", model="bert-base-uncased").ir
>>> print(summary(ir, "x.pelt").split("\\n", 1)[1])   # doctest: +NORMALIZE_WHITESPACE
  instance  method   at          layers  gate  per layer    total
  a         adapter  ffn.output  0..11   none      74,544  894,528
              size 48 (hidden/16) · activation relu · placement sequential · scale 1
              → bert.encoder.layer.{0..11}.output.LayerNorm
  per layer: L0=74,544  L1=74,544  L2=74,544  L3=74,544  L4=74,544  L5=74,544  L6=74,544  L7=74,544  L8=74,544  L9=74,544  L10=74,544  L11=74,544
  total trained: 894,528; task head not included
  total saved: 894,528 (0.817% of 109,482,240 base parameters)
"""

from __future__ import annotations

import html
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from peltc.compiler import schema
from peltc.compiler.archs import FAMILIES
from peltc.compiler.ir import IR, AttachmentNode
from peltc.compiler.layerset import compact_layers

GAP = "  "


def _n(x: int | None) -> str:
    return "?" if x is None else f"{x:,}"


def table(header: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> list[str]:
    """Rows under a header, each column as wide as its widest cell, columns ``GAP`` apart
    (those in ``right`` right-aligned). Trailing spaces are dropped."""
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]
    out = []
    for r in [header, *rows]:
        cells = [c.rjust(w) if k in right else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths))]
        out.append(GAP.join(cells).rstrip())
    return out


def path_pattern(paths: list[str]) -> str:
    """``bert.encoder.layer.{0..11}.output.LayerNorm`` for a list of per-layer paths."""
    return ", ".join(path_patterns(paths, brace=False))


def path_patterns(paths: list[str], brace: bool = True) -> list[str]:
    """Per-layer paths folded over their layers (``layer.{0..11}.output.LayerNorm``), then, with
    ``brace``, siblings folded into one (``attention.self.{query, value}``): one entry per parent."""
    groups: dict[str, list[int]] = defaultdict(list)
    for p in paths:
        m = re.search(r"\.(\d+)(\.|$)", p)
        if not m:
            groups.setdefault(p, [])
            continue
        groups[p[:m.start(1)] + "{}" + p[m.end(1):]].append(int(m.group(1)))
    folded = [pat.replace("{}", "{" + compact_layers(sorted(set(layers))) + "}") if layers else pat
              for pat, layers in groups.items()]
    if not brace:
        return folded
    parents: dict[str, list[str]] = {}
    for p in folded:
        head, dot, leaf = p.rpartition(".")
        if "{" in leaf:   # the layer index is the last part: nothing to fold
            head, leaf = p, ""
        parents.setdefault(head, []).append(leaf)
    return [h if leaves == [""] else (f"{h}." if h else "") + (leaves[0] if len(leaves) == 1 else
                                                                "{" + ", ".join(leaves) + "}")
            for h, leaves in parents.items()]


def points_text(points: list[str]) -> str:
    """``attention.{query, value}`` for sibling points."""
    groups: dict[str, list[str]] = defaultdict(list)
    for p in points:
        head, _, tail = p.rpartition(".")
        groups[head].append(tail)
    out = []
    for head, tails in groups.items():
        if not head:
            out.extend(tails)
        elif len(tails) == 1:
            out.append(f"{head}.{tails[0]}")
        else:
            out.append(f"{head}.{{{', '.join(tails)}}}")
    return ", ".join(out)


def point_order(family: str | None):
    """Sort key of points in data-flow order: the schema's order, then the family's table (query, key,
    value; gate, up), so that ``attention.{query, key}`` reads as the model computes it."""
    table = list(FAMILIES[family].points) if family in FAMILIES else []

    def key(p: str) -> tuple[int, int, str]:
        return schema.POINT_ORDER.get(p, 99), table.index(p) if p in table else len(table), p
    return key


def value_text(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def params_text(method: str, atts: list[AttachmentNode]) -> str:
    """The effective parameters of an instance's attachments, e.g. ``size 256 (hidden/1.5) · scale 4``;
    a value that differs between layers is listed per layer set. A parameter a gate replaces (LoRA's
    alpha) is left out where the attachment is gated."""
    out = []
    for name, p in schema.METHODS[method].params.items():
        by_value: dict[str, list[int | None]] = {}
        for a in atts:
            if schema.gate_replaces(method, name, a.params) and a.gate.kind != "none":
                continue
            if name not in a.params or not schema.shown(method, name, a.params[name]):
                continue
            text = value_text(a.params[name]) + (f" ({a.relative[name]})" if name in a.relative else "")
            by_value.setdefault(text, []).append(a.layer)
        if len(by_value) == 1:
            out.append(f"{name} {next(iter(by_value))}")
        elif by_value:
            parts = []
            for text, layers in by_value.items():
                ls = sorted({x for x in layers if x is not None})
                parts.append(f"{text} in layer{'s' if len(ls) > 1 else ''} {compact_layers(ls)}")
            out.append(f"{name} " + ", ".join(parts))
    return " · ".join(out)


def trained_modules(ir: IR, atts: list[AttachmentNode]) -> list[str]:
    """The module paths whose parameters an instance's count covers: for bitfit every module whose
    bias it trains (a block's linears and LayerNorms), else the module each attachment changes."""
    from peltc.compiler.diagram import bias_modules
    s = ir.settings
    paths: list[str] = []
    order = point_order(s.family)
    for a in sorted(atts, key=lambda a: order(a.point)[:2]):   # data-flow order (stable across layers)
        if schema.host_of(a.method) == "biases":
            paths += bias_modules(FAMILIES[s.family], a.layer, a.point, s.dims["layers"], s.dims)
        elif schema.host_of(a.method) == "model":
            return ["every base weight"]
        elif a.module_path:
            paths.append(a.module_path)
    return path_patterns(list(dict.fromkeys(paths)))


def _rows(printed: list[str], rows: list[list[str]], below: list[list[str]]) -> list[str]:
    """The printed table, indented, with each row's lines under it (aligned with its second column)."""
    indent = " " * (2 + max(len(r[0]) for r in [["instance"], *rows]) + len(GAP))
    out = ["  " + printed[0]]
    for row, sub in zip(printed[1:], below):
        out.append("  " + row)
        out += [indent + x for x in sub]
    return out


def _default_gate_note(family: str | None, method: str, atts) -> str | None:
    """Where the model's family starts a gate the spec left without ``init=`` elsewhere than at bias 0
    (a decoder's prefix gate: −10, resolved into the attachments' ``gate_init``), the line that says so."""
    started = [a for a in atts if a.start_gate != a.gate]
    if not started:
        return None
    init = started[0].gate_init
    return (f"gate starts at bias {init:g} (σ ≈ {1 / (1 + math.exp(-init)):.2g}): the {family} family's default "
            f"for a {method} gate; write init= to change it")


def trained_and_saved(ir: IR) -> tuple[int, int]:
    """(trained, saved) PELT parameters, task head not included — `peltc compile`'s report's "PELT total"
    row. They differ only for a prefix with a reparameterisation MLP: training updates the MLP (and the
    gates), whose output the prefixes are; after training it is folded into the prefixes, which are saved."""
    trained = saved = 0
    for inst in ir.instances():
        atts = ir.attachments(inst.name)
        inst_saved = sum(a.saved or 0 for a in atts)
        saved += inst_saved
        trained += (inst.shared_trainable + sum(a.gate_params or 0 for a in atts)) if inst.shared_trainable \
            else inst_saved
    return trained, saved


def totals_lines(trained: int, saved: int, pct: str = "", indent: str = "  ") -> list[str]:
    """The two totals, labelled: what training updates and what the artifact saves."""
    folded = " (prefix reparameterisation MLPs included: folded away after training)" if trained != saved else ""
    return [f"{indent}total trained: {_n(trained)}{folded}; task head not included",
            f"{indent}total saved: {_n(saved)}{pct}"]


@dataclass
class CheckTable:
    """What `peltc check` reports, as data: one row per instance (the table's cells) with the lines under
    it, the per-layer counts, the total and the notes. ``summary`` prints it, ``summary_html`` draws it."""

    header: list[str]
    rows: list[list[str]]
    below: list[list[str]]                              # the lines under each row
    right: set[int]                                     # right-aligned columns
    title: str
    per_layer: dict[int | None, int] = field(default_factory=dict)
    total: int | None = None                            # saved; None: no model bound, nothing counted
    trained: int | None = None                          # trained (prefix MLPs included); None: = total
    base: int | None = None
    notes: list[str] = field(default_factory=list)

    def footer(self) -> list[str]:
        """The lines after the table (per layer, whole-model, total, notes), unindented."""
        if self.total is None:
            return []
        out = []
        if any(k is not None for k in self.per_layer):
            out.append("per layer: " + "  ".join(f"L{k}={_n(v)}" for k, v in sorted(
                (kv for kv in self.per_layer.items() if kv[0] is not None))))
        if None in self.per_layer:
            out.append(f"whole-model: {_n(self.per_layer[None])}")
        pct = f" ({100 * self.total / self.base:.3f}% of {_n(self.base)} base parameters)" if self.base else ""
        out += totals_lines(self.total if self.trained is None else self.trained, self.total, pct, indent="")
        return out + self.notes


def check_table(ir: IR, spec_name: str) -> CheckTable:
    """The rows, counts and notes of `peltc check`'s report on ``ir``."""
    s = ir.settings
    if s.family is None:
        rows, below = [], []
        for inst in ir.instances():
            where = ", ".join(t.point if t.selector is None else
                              f"layers[{t.selector}]" + ("" if t.point == schema.WHOLE_LAYER else f".{t.point}")
                              for t in inst.targets)
            rows.append([inst.name, inst.method, where, inst.gate.text()])
            written = [f"{k} {value_text(v)}" for k, v in inst.params.items()
                       if not (schema.gate_replaces(inst.method, k, inst.params) and inst.gate.kind != "none")
                       and schema.shown(inst.method, k, v)]
            below.append([" · ".join(written)] if written else [])
        return CheckTable(["instance", "method", "at", "gate"], rows, below, set(),
                          f"{spec_name}: ok (no model: layer ranges, sizes and counts not checked)")
    d = s.dims
    title = (f"{spec_name}: ok — model {s.model or '?'} ({s.family}, {d['layers']} layers, hidden {d['hidden']}, "
             f"from {s.model_source})")
    total = 0
    per_layer: dict[int | None, int] = defaultdict(int)
    extra = []
    rows: list[list[str]] = []
    below: list[list[str]] = []   # the lines under each row
    for inst in ir.instances():
        atts = ir.attachments(inst.name)
        inst_total = sum(a.saved or 0 for a in atts)
        total += inst_total
        for a in atts:
            per_layer[a.layer] += a.saved or 0
        points = sorted({a.point for a in atts}, key=point_order(s.family))
        layers = compact_layers(sorted({a.layer for a in atts if a.layer is not None})) if \
            any(a.layer is not None for a in atts) else "—"
        by_layer: dict[int, int] = defaultdict(int)
        for a in atts:
            if a.layer is not None:
                by_layer[a.layer] += a.saved or 0
        counts = set(by_layer.values())
        pl = "—" if not counts else _n(counts.pop()) if len(counts) == 1 else "varies"
        gates = list(dict.fromkeys(a.gate.text() for a in atts)) or [inst.gate.text()]
        rows.append([inst.name, inst.method, points_text(points), layers, ", ".join(gates), pl, _n(inst_total)])
        sub = []
        if ptext := params_text(inst.method, atts):
            sub.append(ptext)
        if note := _default_gate_note(s.family, inst.method, atts):
            sub.append(note)
        mods = trained_modules(ir, atts)
        sub += [("→ " if k == 0 else "  ") + m for k, m in enumerate(mods)]
        below.append(sub)
        if inst.shared_trainable:
            extra.append(f"note: prefix '{inst.name}' also trains a {_n(inst.shared_trainable)}-parameter "
                         f"reparameterisation MLP, folded into the prefixes after training (not saved)"
                         if inst.method == "prefix" else
                         f"note: prompt '{inst.name}' trains a {_n(inst.shared_trainable)}-parameter P-tuning "
                         f"encoder, folded into its prompt vectors after training (not saved)")
        if why := schema.METHODS[inst.method].check_note:
            extra.append(f"note: {inst.method} '{inst.name}' {why}")
    return CheckTable(["instance", "method", "at", "layers", "gate", "per layer", "total"], rows, below, {5, 6},
                      title, dict(per_layer), total, trained_and_saved(ir)[0], s.base_params, extra)


def summary(ir: IR, spec_name: str) -> str:
    """`peltc check`'s report as text."""
    t = check_table(ir, spec_name)
    lines = [t.title, *_rows(table(t.header, t.rows, right=t.right), t.rows, t.below)]
    return "\n".join(lines + ["  " + x for x in t.footer()])


def summary_html(ir: IR, spec_name: str) -> str:
    """`peltc check`'s report as an HTML table (notebooks): a row per instance, its parameters and the
    modules it trains in a smaller line under it, the counts in the footer."""
    t = check_table(ir, spec_name)
    e = html.escape
    th = "".join(f'<th style="text-align:{"right" if k in t.right else "left"}">{e(h)}</th>'
                 for k, h in enumerate(t.header))
    body = []
    for row, sub in zip(t.rows, t.below):
        body.append("<tr>" + "".join(f'<td style="text-align:{"right" if k in t.right else "left"}">'
                                     f"{'<code>' + e(c) + '</code>' if k == 2 else e(c)}</td>"
                                     for k, c in enumerate(row)) + "</tr>")
        if sub:
            body.append(f'<tr><td></td><td colspan="{len(row) - 1}" style="text-align:left">'
                        f'<small>{"<br>".join(e(x) for x in sub)}</small></td></tr>')
    foot = "".join(f"<div>{e(x)}</div>" for x in t.footer())
    return (f'<div class="peltc-check"><div><b>{e(t.title)}</b></div>'
            f'<table><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>{foot}</div>')


# --- `peltc show`: the resolved IR as an outline ---------------------------------------------------
def _tree(items: list[tuple[str, list]], prefix: str = "") -> list[str]:
    """``(text, children)`` pairs drawn as a tree with ├─ / └─ branches."""
    out = []
    for k, (text, children) in enumerate(items):
        last = k == len(items) - 1
        out.append(f"{prefix}{'└─ ' if last else '├─ '}{text}")
        out += _tree(children, prefix + ("   " if last else "│  "))
    return out


def _where(span) -> str:
    return f"{span.file}:{span.line}" if span else ""


def _kv(d: dict[str, Any]) -> str:
    return " · ".join(f"{k} {value_text(v)}" for k, v in d.items())


def _settings_items(ir: IR) -> list[tuple[str, list]]:
    s = ir.settings
    if s.family is None:
        model = f"model: {s.model} (not bound: pass --model)" if s.model else "model: none bound (pass --model NAME|DIR|config.json)"
        items = [(model, [])]
    else:
        d = s.dims
        kv = f" over {d['kv_heads']} KV heads" if d.get("kv_heads", d["heads"]) != d["heads"] else ""
        hd = f" of {d['head_dim']}" if "head_dim" in d and d["head_dim"] * d["heads"] != d["hidden"] else ""
        items = [(f"model: {s.model or '?'} — {s.family}, {d['layers']} layers, hidden {d['hidden']}, "
                  f"{d['heads']} heads{hd}{kv}, intermediate {d['intermediate']}", [(f"from {s.model_source}", [])]),
                 (f"base parameters: {_n(s.base_params)}", [])]
    items.append((f"head: {_kv(s.head)}" if s.head else "head: the model's own", []))
    items.append((f"train: {_kv(s.train)}" if s.train else "train: the recipe's defaults", []))
    if s.spec_hash:
        items.append((f"spec hash: {s.spec_hash[:16]}", []))
    return items


def _attachment_groups(ir: IR, atts: list[AttachmentNode]) -> list[tuple[str, list]]:
    """One line per point and identical attachments: layers → module path(s), parameters each, and
    what differs between the groups (parameters, gate) when per-layer overrides made them differ."""
    from peltc.compiler.diagram import bias_modules
    s = ir.settings
    groups: dict[tuple, list[AttachmentNode]] = {}
    for a in atts:
        key = (a.point, a.gate.text(), params_text(a.method, [a]), a.saved)
        groups.setdefault(key, []).append(a)
    common = set.intersection(*(set(k[2].split(" · ")) for k in groups)) if groups else set()
    gates_differ = len({k[1] for k in groups}) > 1
    out = []
    order = point_order(s.family)
    for (point, gate, ptext, saved), same in sorted(groups.items(), key=lambda kv: (
            schema.POINT_ORDER.get(kv[0][0], -1), order(kv[0][0])[1],
            min(-1 if a.layer is None else a.layer for a in kv[1]))):
        layers = sorted(a.layer for a in same if a.layer is not None)
        where = f"layers[{compact_layers(layers)}]" + ("" if point == schema.WHOLE_LAYER else f".{point}") \
            if layers else point
        if schema.host_of(same[0].method) == "biases":
            paths = [m for a in same for m in bias_modules(FAMILIES[s.family], a.layer, a.point, s.dims["layers"],
                                                           s.dims)]
        elif schema.host_of(same[0].method) == "model":
            paths = ["every base weight"]
        else:
            paths = [a.module_path for a in same if a.module_path]
        paths = path_patterns(list(dict.fromkeys(paths)))
        differs = [x for x in ptext.split(" · ") if x and x not in common] + ([f"gate {gate}"] if gates_differ else [])
        text = where + (f" → {paths[0]}" if len(paths) == 1 else "") + \
            f": {_n(saved)}{' each' if len(same) > 1 else ''}" + (f" ({' · '.join(differs)})" if differs else "")
        out.append((text, [(p, []) for p in paths] if len(paths) > 1 else []))
    return out


def _instance_items(ir: IR, inst) -> list[tuple[str, list]]:
    atts = ir.attachments(inst.name)
    method = schema.METHODS[inst.method]
    items: list[tuple[str, list]] = []
    written = {k: v for k, v in inst.params.items()
               if not (schema.gate_replaces(inst.method, k, inst.params) and inst.gate.kind != "none")
               and schema.shown(inst.method, k, v)}
    if written:
        items.append((f"params: {_kv(written)}", []))
    if method.gated:
        g = inst.gate.text()
        per = atts[0].gate_params if atts and atts[0].gate.kind != "none" else None
        note = _default_gate_note(ir.settings.family, inst.method, atts)
        items.append((f"gate: {g}" + (f" ({_n(per)} parameters per attachment)" if per else ""),
                      [(note, [])] if note else []))
    at = ", ".join(t.point if t.selector is None else
                   f"layers[{t.selector}]" + ("" if t.point == schema.WHOLE_LAYER else f".{t.point}")
                   for t in inst.targets)
    items.append((f"at: {at}", []))
    for ov in inst.overrides:
        bits = [f"{k} {value_text(v)}" for k, v in ov.params.items()] + ([f"gate {ov.gate.text()}"] if ov.gate else [])
        items.append((f"override layers[{ov.selector}]: {' · '.join(bits) or '(nothing)'}", []))
    if ir.settings.family is not None:
        total = sum(a.saved or 0 for a in atts)
        items.append((f"attachments: {len(atts)}, {_n(total)} parameters", _attachment_groups(ir, atts)))
        if inst.shared_trainable:
            items.append((f"shared: a {_n(inst.shared_trainable)}-parameter reparameterisation MLP "
                          "(training only, folded into the prefixes)" if inst.method == "prefix" else
                          f"shared: a {_n(inst.shared_trainable)}-parameter P-tuning encoder "
                          "(training only, folded into the prompt vectors)", []))
    return items


def outline(ir: IR, spec_name: str) -> str:
    """The resolved IR as a tree: the settings, then each instance with its method, parameters,
    gate, targets, per-layer overrides and (with a model) its attachments: layers, module paths and
    parameter counts. ``peltc show`` prints it; ``--json`` prints the IR itself."""
    items = [("settings", _settings_items(ir))]
    for inst in ir.instances():
        where = _where(inst.span)
        items.append((f"{inst.method} {inst.name}" + (f"  ({where})" if where else ""), _instance_items(ir, inst)))
    lines = [spec_name, *_tree(items)]
    if ir.settings.family is not None:
        trained, saved = trained_and_saved(ir)
        lines.append(f"total trained: {_n(trained)}, saved: {_n(saved)} (task head not included)")
    return "\n".join(lines)
