"""What a rewrite did: per instance, where it attached and how many parameters it trains and saves.

Counts are *live* (read from the model's parameters, after any folding or merging), attributed to
instances by parameter name: every PELT parameter sits below a ``pelt_<kind>.<instance>.`` path.
Three groups of trainable parameters are reported separately:

- ``pelt_trainable`` — the PELT modules (gates included);
- ``head_trainable`` — the task head (``family.head``), always trained, not a PELT parameter;
- ``base_trainable`` — base-model weights, non-zero only with ``finetune``;

and ``trainable_total = pelt + head + base == sum(p.numel() for p in model.parameters() if p.requires_grad)``.
``saved`` is what an adapter-only artifact keeps: the prefix MLP folded away (``2·L·H`` per layer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from peltc.compiler.schema import METHODS, host_of


@dataclass
class InstanceReport:
    name: str
    method: str
    gate: str
    coverage: list[str]                             # one line per target point
    paths: dict[int | None, list[str]]              # layer (None: global) → module paths
    trainable: int                                  # live, this instance's parameters (gates included)
    saved: int                                      # after folding the prefix MLP
    gate_params: int
    planned: int | None = None                      # the front end's count (IR), for cross-checking
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    model: str
    family: str
    layers: int
    attn_implementation: str | None
    pooling: str
    instances: list[InstanceReport]
    pelt_trainable: int
    head_trainable: int
    base_trainable: int
    trainable_total: int
    saved_total: int
    frozen: int
    head_paths: list[str]
    merged: list[str] = field(default_factory=list)
    folded: list[str] = field(default_factory=list)

    def instance(self, name: str) -> InstanceReport:
        return next(i for i in self.instances if i.name == name)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for inst in d["instances"]:
            inst["paths"] = {("*" if k is None else str(k)): v for k, v in inst["paths"].items()}
        return d

    def render(self, width: int = 110) -> str:
        """The report as a rich table (plain text)."""
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"peltc: {self.model} ({self.family}, {self.layers} layers)", title_justify="left")
        for col, just in (("instance", "left"), ("method", "left"), ("at", "left"), ("gate", "left"),
                          ("trained", "right"), ("saved", "right")):
            t.add_column(col, justify=just)
        rows = self._rows()
        for k, r in enumerate(rows):
            if k == len(self.instances):
                t.add_section()
            t.add_row(*r)
        console = Console(record=True, width=width, file=_Null(), color_system=None)
        console.print(t)
        notes = ["trained: what the optimiser updates, prefix MLPs included; saved: what the adapter keeps, "
                 "prefix MLPs folded away (`peltc check` prints the PELT total's two as total trained / saved)",
                 f"frozen base parameters: {self.frozen:,}", f"head pooling: {self.pooling}"]
        if self.attn_implementation:
            notes.append(f"attention: prefixes wrap '{self.attn_implementation}'")
        if self.folded:
            notes.append("folded prefix MLPs: " + ", ".join(self.folded))
        if self.merged:
            notes.append(f"merged into base weights: {len(self.merged)} modules")
        return console.export_text().rstrip() + "\n" + "\n".join(notes)

    def __str__(self) -> str:
        return self.render()

    def _rows(self) -> list[tuple[str, ...]]:
        """(instance, method, at, gate, trained, saved) for each instance, then the totals."""
        rows = [(i.name, i.method, "\n".join(i.coverage), i.gate, f"{i.trainable:,}", f"{i.saved:,}")
                for i in self.instances]
        rows.append(("PELT total", "", "", "", f"{self.pelt_trainable:,}", f"{self.saved_total:,}"))
        rows.append(("task head", "", ", ".join(self.head_paths) or "-", "", f"{self.head_trainable:,}", ""))
        if self.base_trainable:
            rows.append(("base (finetune)", "", "", "", f"{self.base_trainable:,}", ""))
        rows.append(("trained in all", "", "", "", f"{self.trainable_total:,}", ""))
        return rows

    def _repr_html_(self) -> str:
        """The report as an HTML table (Jupyter): one row per instance, then the totals."""
        import html
        e = html.escape
        cols = ("instance", "method", "at", "gate", "trained", "saved")
        head = "".join(f'<th style="text-align:{"right" if k >= 4 else "left"}">{c}</th>' for k, c in enumerate(cols))
        body = "".join("<tr>" + "".join(f'<td style="text-align:{"right" if k >= 4 else "left"}">'
                                        f'{e(c).replace(chr(10), "<br>")}</td>' for k, c in enumerate(r)) + "</tr>"
                       for r in self._rows())
        notes = f"frozen base parameters: {self.frozen:,} · head pooling: {e(self.pooling)}"
        return (f'<div class="peltc-report"><div><b>peltc: {e(self.model)} ({e(self.family)}, {self.layers} layers)'
                f"</b></div><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                f"<div>{notes}</div></div>")

    def _repr_markdown_(self) -> str:
        lines = [f"**peltc: {self.model} ({self.family}, {self.layers} layers)**", "",
                 "| instance | method | at | gate | trainable | saved |", "|---|---|---|---|---:|---:|"]
        lines += ["| " + " | ".join(c.replace("\n", "<br>") for c in r) + " |" for r in self._rows()]
        return "\n".join(lines)


class _Null:
    def write(self, s: str) -> int:
        return len(s)

    def flush(self) -> None:
        pass


def _instance_of(name: str) -> str | None:
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p.startswith("pelt_"):
            return parts[i + 1]
    return None


def _coverage(atts, n_layers: int) -> list[str]:
    by_point: dict[str, list[int | None]] = {}
    for a in atts:
        by_point.setdefault(a.point, []).append(a.layer)
    lines = []
    for point, layers in by_point.items():
        if layers == [None]:
            lines.append(point)
            continue
        ls = sorted(set(x for x in layers if x is not None))
        lines.append(f"layers[{_ranges(ls)}].{point}  ({len(ls)}/{n_layers})")
    return lines


def _ranges(ls: list[int]) -> str:
    out, i = [], 0
    while i < len(ls):
        j = i
        while j + 1 < len(ls) and ls[j + 1] == ls[j] + 1:
            j += 1
        out.append(str(ls[i]) if i == j else f"{ls[i]}..{ls[j]}")
        i = j + 1
    return ", ".join(out)


def build_report(model: nn.Module) -> Report:
    """A `Report` of a compiled model's current state."""
    from peltc.compiler.torch.prefix import Prefix
    from peltc.compiler.torch.prompt import Prompt
    from peltc.compiler.torch.compiled import compiled

    c = compiled(model)
    per: dict[str, int] = {}
    gates: dict[str, int] = {}
    pelt = head = base = frozen = 0
    head_prefixes = tuple(h + "." for h in c.head_paths)
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        inst = _instance_of(name) if "pelt_" in name else None
        if inst is not None:
            per[inst] = per.get(inst, 0) + p.numel()
            if ".gate." in name:
                gates[inst] = gates.get(inst, 0) + p.numel()
        if not p.requires_grad:
            frozen += p.numel()
        elif inst is not None:
            pelt += p.numel()
        elif name.startswith(head_prefixes):
            head += p.numel()
        else:
            base += p.numel()
    # prefix: what remains after folding (keys and values per covered layer, plus gates)
    folded_size: dict[str, int] = {}
    for m in model.modules():
        for inst, pre in (m._modules.get("pelt_prefix") or {}).items():
            if isinstance(pre, Prefix):
                folded_size[inst] = folded_size.get(inst, 0) + 2 * pre.length * pre.hidden
        for inst, prompt in (m._modules.get("pelt_prompt") or {}).items():
            if isinstance(prompt, Prompt):       # P-tuning: its encoder folds into the n vectors
                folded_size[inst] = prompt.length * prompt.dim
    instances = []
    for inst, atts in c.attachments.items():
        a0 = atts[0]
        trainable = per.get(inst, 0)
        if host_of(a0.method) == "model":
            trainable = base
        saved = trainable
        if METHODS[a0.method].shared_count is not None:   # trains more than it keeps (folded)
            saved = folded_size.get(inst, 0) + gates.get(inst, 0)
        planned = [a.trainable for a in atts]
        instances.append(InstanceReport(
            name=inst, method=a0.method, gate=a0.gate.text(), coverage=_coverage(atts, c.n_layers),
            paths=c.paths.get(inst, {}), trainable=trainable, saved=saved, gate_params=gates.get(inst, 0),
            planned=sum(planned) if all(x is not None for x in planned) else None, params=dict(a0.params)))
    return Report(
        model=type(model).__name__, family=c.family.name, layers=c.n_layers,
        attn_implementation=c.attn_implementation, pooling=_pooling(c),
        instances=instances, pelt_trainable=pelt, head_trainable=head, base_trainable=base,
        trainable_total=pelt + head + base,
        saved_total=sum(i.saved for i in instances if host_of(i.method) != "model"),
        frozen=frozen, head_paths=list(c.head_paths), merged=list(c.merged), folded=list(c.folded))


__all__ = ["Report", "InstanceReport", "build_report"]


def _pooling(c) -> str:
    """What the head reads: the spec's `pool mean`, else the model's own head — its pooler over the first
    token on encoders, the last non-pad token on decoders (the family table's ``pooling``)."""
    pool = (c.ir.settings.head or {}).get("pool")
    if pool == "mean":
        return "mean (masked mean over tokens)"
    return "last non-pad token" if c.family.pooling == "last" else "pooler (first token)"
