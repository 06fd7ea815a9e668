"""The text `peltc check` prints: every instance, where it attaches, and exact parameter counts."""

from __future__ import annotations

import re
from collections import defaultdict

from peltc.compiler.ir import IR
from peltc.compiler.layerset import compact_layers


def _n(x: int | None) -> str:
    return "?" if x is None else f"{x:,}"


def path_pattern(paths: list[str]) -> str:
    """``bert.encoder.layer.{0..11}.output.LayerNorm`` for a list of per-layer paths."""
    if not paths:
        return ""
    groups: dict[str, list[int]] = defaultdict(list)
    for p in paths:
        m = re.search(r"\.(\d+)(\.|$)", p)
        if not m:
            groups[p] = []
            continue
        groups[p[:m.start(1)] + "{}" + p[m.end(1):]].append(int(m.group(1)))
    out = []
    for pat, layers in groups.items():
        out.append(pat.replace("{}", "{" + compact_layers(sorted(layers)) + "}") if layers else pat)
    return ", ".join(out)


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


def summary(ir: IR, spec_name: str) -> str:
    s = ir.settings
    lines = []
    if s.family is None:
        lines.append(f"{spec_name}: ok (no model: layer ranges, sizes and counts not checked)")
        for inst in ir.instances():
            where = ", ".join(f"layers[{t.selector}].{t.point}" if t.selector else t.point for t in inst.targets)
            lines.append(f"  {inst.method:<8} {inst.name:<20} at {where}   gate {inst.gate.text()}")
        return "\n".join(lines)
    d = s.dims
    lines.append(f"{spec_name}: ok — model {s.model or '?'} ({s.family}, {d['layers']} layers, hidden {d['hidden']}, "
                 f"from {s.model_source})")
    header = f"  {'instance':<22}{'method':<9}{'at':<26}{'layers':<11}{'gate':<26}{'per layer':>12}{'total':>13}"
    lines.append(header)
    total = 0
    per_layer: dict[int | None, int] = defaultdict(int)
    extra = []
    for inst in ir.instances():
        atts = ir.attachments(inst.name)
        inst_total = sum(a.saved or 0 for a in atts)
        total += inst_total
        for a in atts:
            per_layer[a.layer] += a.saved or 0
        points = sorted({a.point for a in atts})
        layers = compact_layers(sorted({a.layer for a in atts if a.layer is not None})) or "—"
        by_layer: dict[int, int] = defaultdict(int)
        for a in atts:
            if a.layer is not None:
                by_layer[a.layer] += a.saved or 0
        counts = set(by_layer.values())
        pl = "—" if not counts else _n(counts.pop()) if len(counts) == 1 else "varies"
        lines.append(f"  {inst.name:<22}{inst.method:<9}{points_text(points):<26}{layers:<11}"
                     f"{inst.gate.text():<26}{pl:>12}{_n(inst_total):>13}")
        paths = path_pattern([a.module_path for a in atts if a.module_path is not None])
        if paths:
            lines.append(f"  {'':<22}→ {paths}")
        if inst.shared_trainable:
            extra.append(f"  note: prefix '{inst.name}' also trains a {_n(inst.shared_trainable)}-parameter "
                         f"reparameterisation MLP, folded into the prefixes after training (not saved)")
    base = s.base_params
    pct = f" ({100 * total / base:.3f}% of {_n(base)} base parameters)" if base else ""
    lines.append("  per layer: " + "  ".join(f"L{k}={_n(v)}" for k, v in sorted(per_layer.items(), key=lambda kv: -1 if kv[0] is None else kv[0]) if k is not None))
    if None in per_layer:
        lines.append(f"  whole-model: {_n(per_layer[None])}")
    lines.append(f"  total trainable: {_n(total)}{pct}; task head not included")
    lines.extend(extra)
    return "\n".join(lines)
