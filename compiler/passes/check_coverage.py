"""Pass: warn when one instance covers its points unevenly (e.g. query in every layer but value in
only some) — the silent partial targeting peft users trip over (W201)."""

from __future__ import annotations

from collections import defaultdict

from peltc.compiler.diagnostics import Diagnostics
from peltc.compiler.ir import IR


def coverage(ir: IR, instance: str) -> dict[str, list[int]]:
    """Layers covered per point by one instance."""
    cov: dict[str, list[int]] = defaultdict(list)
    for a in ir.attachments(instance):
        if a.layer is not None:
            cov[a.point].append(a.layer)
    return dict(cov)


def check_coverage(ir: IR, diags: Diagnostics) -> None:
    for inst in ir.instances():
        cov = coverage(ir, inst.name)
        shapes = {tuple(v) for v in cov.values()}
        if len(shapes) > 1:
            detail = "; ".join(f"{p}: {len(v)} layers" for p, v in cov.items())
            diags.warning("W201", f"{inst.name} covers its points unevenly ({detail})",
                          inst.span.to_span() if inst.span else None,
                          "if that is intended, split it into one instance per point set")
