"""Draw the IR as an architecture diagram (graphviz): a read-only pass over the resolved plan.

Layers are clusters in data-flow order (layer input → attention with its linears → attention
output → feed-forward with its linears → feed-forward output); embeddings and the task head sit
outside them. Each family's block is laid out from its table (`diagram.layer_layout`): post-norm on
the encoders (the value points are the Add & LayerNorm after each sub-layer), pre-norm on the decoders
(x → RMSNorm → self-attention, RoPE on q and k, Qwen3's q/k norms → h_A → + x → RMSNorm → gated MLP,
act(gate) · up → down → h_F → +; the value points are the sub-layer outputs before the residual add,
parallel adapters read the normed sub-layer input), then the final norm before the head. Base modules are grey, every method has its colour, gates are small diamonds with a
dotted edge from the point they read and one to the module they scale. LoRA, prefix and BitFit sit
beside the module they change; a sequential adapter sits inline after its point; a parallel one
sits beside its block, reading the block's input and adding into its output (dashed). Consecutive
layers whose attachments are identical collapse into one cluster marked ``×N`` unless ``expand``;
clusters follow the model's layer order top to bottom. A scalar gate shows the value it starts at, a
sigmoid gate with an ``init`` the value it starts near; a module shows its ``lr`` when it has one. Without a
bound model the diagram is symbolic: one ``layers[*]`` cluster with every instance at its target
points, labelled by its selector.

What is drawn (layer groups, modules, module paths) comes from `peltc.compiler.diagram`; this
module only draws it. The look is one style table keyed by node kind and method (as torch.fx's
``graph_drawer``); the optional ``graphviz`` package is imported only when a diagram is drawn.
"""

from __future__ import annotations

import html
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

from peltc.compiler import schema
from peltc.compiler.archs import FAMILIES
from peltc.compiler.diagram import (LayerGroup, Mod, bias_modules, global_mods,
                                    layer_groups, layer_layout, path_pattern)
from peltc.compiler.glyphs import ascii_labels, font_has_glyphs
from peltc.compiler.ir import IR, GateSpec
from peltc.compiler.mod_text import param_text
from peltc.compiler.passes.resolve_paths import module_path
from peltc.compiler.render_style import (BASE_FILL, BASE_LINE, BASE_TEXT, EDGE_STYLE, FLOW, GATE_LINE,
                                          METHOD_COLOURS, NODE_STYLE, legend_always, mod_edge)
from peltc.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import graphviz

FORMATS = {"svg": "svg", "png": "png", "pdf": "pdf", "dot": "dot", "gv": "dot"}   # suffix → dot -T
FONT = "DejaVu Sans"

# --- the style table: compiler/render_style.py


# --- labels -------------------------------------------------------------------------------------
def _n(x: int) -> str:
    return f"{x:,}"


def _html(title: str, lines: list[str] = (), small: list[str] = ()) -> str:
    rows = [f"<B>{html.escape(title)}</B>"] + [html.escape(x) for x in lines]
    rows += [f'<FONT POINT-SIZE="7" COLOR="#555555">{html.escape(x)}</FONT>' for x in small if x]
    return "<" + "<BR/>".join(rows) + ">"


def _cluster_label(head: str, rest: str, small: str) -> str:
    text = f"<B>{html.escape(head)}</B>" + (f"  ·  {html.escape(rest)}" if rest else "")
    if small:
        text += f'<BR ALIGN="LEFT"/><FONT POINT-SIZE="8" COLOR="#666666">{html.escape(small)}</FONT>'
    return f'<{text}<BR ALIGN="LEFT"/>>'


def scalar_start(g: GateSpec) -> float:
    """The value a scalar gate starts at: σ(init) (``init`` is the logit, 0 by default → 0.5); a
    sigmoid gate starts near it (its bias starts at ``init``, its weights are small: N(0, 0.02))."""
    return 1.0 / (1.0 + math.exp(-(g.value or 0.0)))


def gate_label(g: GateSpec) -> str:
    """``σ(layer.input)``, ``scalar`` with the value it starts at, ``const 0.5`` (the text in a gate's
    diamond). A scalar gate is σ(w) with w starting at ``init``: `scalar(init=0.5)` starts at 0.62; a
    sigmoid gate with ``init`` shows the value it starts near: `sigmoid(layer.input, init=-2)` ≈0.119."""
    if g.kind == "sigmoid":
        src = "layer.input" if g.source == "input" else g.source
        return f"σ({src})" + ("" if g.pool == "masked_mean" else f"\n{g.pool}") + \
            (f"\nstarts ≈{scalar_start(g):.3g}" if g.value else "")
    if g.kind == "scalar":
        return f"scalar\nstarts {scalar_start(g):.3g}"
    return f"const {g.value:g}"


def _count_lines(m: Mod, n_layers: int) -> list[str]:
    if m.trainable is None:
        return []
    line = _n(m.trainable) + (f" ×{n_layers}" if n_layers > 1 else "")
    if m.saved is not None and m.saved != m.trainable:
        line += f" (saved {_n(m.saved)})"
    if m.gate_params:
        line += f" (incl. gate {_n(m.gate_params)})"
    what = "encoder" if m.method == "prompt" else "MLP"
    return [line] + ([f"+ shared {what} {_n(m.shared)} (training only, folded)"] if m.shared else [])


def _braced(paths: list[str]) -> list[str]:
    """``a.b.x, a.b.y, c.z`` → ``["a.b.{x, y}", "c.z"]`` (one line per parent module)."""
    parents: dict[str, list[str]] = {}
    for p in paths:
        head, _, leaf = p.rpartition(".")
        parents.setdefault(head, []).append(leaf)
    return [(f"{h}." if h else "") + (leaves[0] if len(leaves) == 1 else "{" + ", ".join(leaves) + "}")
            for h, leaves in parents.items()]


def _rel(path: str, prefix: str) -> str:
    return path[len(prefix) + 1:] if prefix and path.startswith(prefix + ".") else path


# --- drawing ------------------------------------------------------------------------------------
class _Drawer:
    """Builds the Digraph. Edges are collected and written after every node, so that each node
    belongs to the cluster that declares it. Modules drawn beside a point share its rank and are
    ordered by invisible edges; such flat edges carry no label (dot then drops the row's order)."""

    def __init__(self, ir: IR, expand: bool, title: str | None, marks: dict | None = None):
        import graphviz
        self.ir, self.name, self.marks = ir, title, marks or {}
        s = ir.settings
        self.fam = FAMILIES[s.family] if s.family is not None else None
        self.layout = layer_layout(self.fam)
        self.groups = layer_groups(ir, expand)
        self.edges: list[tuple[str, str, dict[str, str]]] = []
        self.dot = graphviz.Digraph("peltc", graph_attr={
            "rankdir": "TB", "compound": "true", "newrank": "true", "remincross": "false",
            "nodesep": "0.18", "ranksep": "0.22", "fontname": FONT, "fontsize": "11", "labelloc": "t",
            "labeljust": "l", "tooltip": "peltc diagram"},
            node_attr={"fontname": FONT, "fontsize": "10", "height": "0.3", "margin": "0.1,0.03"},
            edge_attr={"fontname": FONT, "fontsize": "8", "arrowsize": "0.7", "color": FLOW})

    # primitives
    def node(self, g, nid: str, label: str, kind: str, sub: str | None, tooltip: str | None = None, **extra) -> None:
        g.node(nid, label, **{**NODE_STYLE[kind, sub], **extra}, **({"tooltip": tooltip} if tooltip else {}))

    def edge(self, a: str, b: str, role: str, colour: str | None = None, **extra: str) -> None:
        self.edges.append((a, b, {**EDGE_STYLE[role], **({"color": colour} if colour else {}), **extra}))

    def flat_edge(self, a: str, b: str, a_left: bool, role: str, colour: str, **extra: str) -> None:
        """Edge ``a → b`` between neighbours in one row, written left to right (``dir=back`` when
        ``a`` is on the right) so that it agrees with the row's order; a label moves to the end."""
        attrs = {**EDGE_STYLE[role], "constraint": "false", "color": colour, **extra}
        label = attrs.pop("label", None)
        if label:
            attrs["headlabel" if a_left else "taillabel"] = label
            attrs.setdefault("labeldistance", "1.6")
        if a_left:
            self.edges.append((a, b, attrs))
        else:
            attrs["arrowtail"] = attrs.pop("arrowhead", "normal")
            self.edges.append((b, a, {**attrs, "dir": "back", "arrowhead": "none"}))

    @staticmethod
    def row(g, ids: list[str]) -> None:
        if len(ids) > 1:
            with g.subgraph() as r:
                r.attr(rank="same")
                for a, b in zip(ids, ids[1:]):
                    r.edge(a, b, style="invis")

    # modules
    def mod_node(self, g, group: LayerGroup, m: Mod, nid: str) -> None:
        small, tip = ([m.where] if m.where else []), None
        if m.paths:
            tip = path_pattern(m.paths, group.layers) if group.layers else m.paths[0]
            small.append(_rel(m.paths[0], group.path))
        if m.method == "bitfit" and self.fam is not None:
            mods = bias_modules(self.fam, group.layers[0] if group.layers else None, m.point,
                                self.ir.settings.dims["layers"], self.ir.settings.dims)
            tip = "biases of: " + ", ".join(mods[:12]) + (f", … ({len(mods)} modules)" if len(mods) > 12 else "")
            small = [] if m.point == "all" else _braced([_rel(x, group.path) for x in mods])
        lines = [param_text(m, self.fam, self.ir.settings.dims)] + _count_lines(m, max(1, len(group.layers))) + \
            m.notes + (["prepended to K, V after RoPE"] if m.method == "prefix" and self.fam and self.fam.drawing.rotary else [])
        attrs, more = self.marks.get(m.instance, ({}, []))   # a search space's (space_summary.marks)
        self.node(g, nid, _html(f"{m.method} {m.instance}", lines + more, small), "attachment", m.method, tip, **attrs)

    def gate(self, g, m: Mod, nid: str, source: str | None, side: str | None = None) -> str | None:
        """Draw ``m``'s gate, if any, with its edges; returns its node id. With ``side`` the gate
        sits in the module's row on that side of it."""
        if m.gate.kind == "none":
            return None
        gid = f"{nid}.gate"
        tip = f"gate of {m.instance} at {m.point}: {m.gate.text()}" + \
              (f" ({_n(m.gate_params)} params)" if m.gate_params else "") + \
              (f"; g = σ(w), w starts at {m.gate.value or 0:g}, so g starts at {scalar_start(m.gate):.3g}"
               if m.gate.kind == "scalar" else "") + \
              (f"; its bias starts at {m.gate.value:g}, so g starts near {scalar_start(m.gate):.3g}"
               if m.gate.kind == "sigmoid" and m.gate.value else "")
        self.node(g, gid, gate_label(m.gate), "gate", None, tip)
        if m.gate.kind == "sigmoid" and source is not None:
            self.edge(source, gid, "source")
        if side is None:
            self.edge(gid, nid, "scales")
        else:
            self.flat_edge(gid, nid, side == "left", "scales", GATE_LINE)
        return gid

    def beside_row(self, g, group: LayerGroup, anchors: list[tuple[str, str, list[Mod]]], P) -> None:
        """One row: each anchor (node id, point, its modules) with its modules and their gates
        beside it: on the left of the row's first anchor when the row has several, else on the right."""
        order: list[str] = []
        for k, (anchor, point, mods) in enumerate(anchors):
            left = k == 0 and len(anchors) > 1
            ids: list[str] = []
            for m in mods:
                nid = f"{anchor}+{m.key}"
                self.mod_node(g, group, m, nid)
                role, extra = mod_edge(m.method)
                self.flat_edge(nid, anchor, left, role, METHOD_COLOURS[m.method][1], **extra)
                src = P(m.gate.source) if P and m.gate.kind == "sigmoid" and m.gate.source else None
                gid = self.gate(g, m, nid, src, "left" if left else "right")
                gates = [gid] if gid else []
                ids += gates + [nid] if left else [nid] + gates   # the gate on the far side
            order += ids + [anchor] if left else [anchor] + ids
        self.row(g, order)

    # layers
    def layer_cluster(self, group: LayerGroup) -> tuple[str, str]:
        """Draw one layer group, laid out as the family's blocks (`diagram.layer_layout`); returns its
        (entry, exit) node ids."""
        def P(point: str) -> str:
            return f"{group.id}.{point}"

        L = self.layout
        n = max(1, len(group.layers))
        path = path_pattern([module_path(self.fam, i, "layer") for i in group.layers], group.layers) if self.fam else ""
        total = sum(m.trainable or 0 for m in group.mods) * n
        rest = f"{_n(total)} params" if total else ""
        if self.fam is None:
            rest = "symbolic: no model bound (counts and module paths pending)"
        on: dict[str, list[Mod]] = defaultdict(list)     # point (or row) → modules, in application order
        for m in sorted(group.mods, key=lambda m: m.order):
            on[L.row_of.get(m.point, m.point) if m.beside else m.point].append(m)
        with self.dot.subgraph(name=f"cluster_{group.id}") as c:
            c.attr(label=_cluster_label(group.label, rest, path), style="rounded,filled", fillcolor="#fbfbfb",
                   color="#b0b0b0", fontsize="11", tooltip=path or group.label)
            if not group.mods and self.fam is not None:
                kind = "decoder layer" if self.fam.causal else "encoder layer"
                self.node(c, P("input"), _html(kind, ["no layer-specific modules"], [path]),
                          "point", "layers", path)
                return P("input"), P("input")
            self.point_node(c, group, "input", P)
            self.beside_row(c, group, [(P("input"), "input", [m for m in on["input"] if m.beside])], P)
            for blk in L.blocks:
                if blk.norm is not None:      # pre-norm: the norm reading the block input, before its cluster
                    self.point_node(c, group, blk.norm, P)
                with c.subgraph(name=f"cluster_{group.id}_{blk.name}") as b:
                    b.attr(label=blk.name, style="rounded,dashed", color="#b8b8b8", fillcolor="", fontsize="9",
                           fontcolor="#666666", tooltip=blk.name)
                    for points in blk.rows:
                        for point in points:
                            self.point_node(b, group, point, P)
                        self.beside_row(b, group, [(P(p), p, [m for m in on[p] if m.beside]) for p in points], P)
            for a, b_ in L.flow:
                self.edge(P(a), P(b_), "flow")
            exit_ = P(L.blocks[0].output)
            for k, blk in enumerate(L.blocks):
                point = blk.output
                exit_ = P(point)
                for m in (m for m in on[point] if not m.beside):   # adapters
                    nid = P(m.key)
                    colour = METHOD_COLOURS[m.method][1]
                    self.mod_node(c, group, m, nid)
                    if m.placement == "parallel":   # reads the block input, adds into its output
                        self.edge(P(blk.parallel_input or m.input_point or "input"), nid, "parallel", colour)
                        self.edge(nid, P(point), "parallel", colour, label=" +")
                    else:
                        self.edge(exit_, nid, "sequential", colour)
                        exit_ = nid
                    src = P(m.gate.source) if m.gate.kind == "sigmoid" and m.gate.source else None
                    self.gate(c, m, nid, src)
                if blk.add is not None:         # pre-norm: the residual add after the sub-layer (and its adapters)
                    self.point_node(c, group, blk.add, P)
                    self.edge(exit_, P(blk.add), "flow")
                    self.edge(P(blk.residual or "input"), P(blk.add), "residual")
                    exit_ = P(blk.add)
                if k + 1 < len(L.blocks):
                    self.edge(exit_, P(L.blocks[k + 1].entry), "flow")
            for m in on["output"]:             # LoReFT: on the layer output, in the data path
                self.mod_node(c, group, m, P(m.key))
                self.edge(exit_, P(m.key), "sequential", METHOD_COLOURS[m.method][1])
                exit_ = P(m.key)
                self.gate(c, m, exit_, P(m.gate.source) if m.gate.kind == "sigmoid" and m.gate.source else None)
        return P("input"), exit_

    def point_node(self, g, group: LayerGroup, point: str, P) -> None:
        nd = self.layout.nodes[point]
        text, kind = nd.label, nd.kind
        if self.fam is None:
            self.node(g, P(point), _html(text, small=[point]), "point", kind)
            return
        if nd.path is None and nd.kind in ("op", "add"):    # an operation: no module of its own
            self.node(g, P(point), _html(text), "point", kind, nd.note)
            return
        if point in self.fam.points or nd.path is None:
            paths = [module_path(self.fam, i, point) for i in group.layers]
        else:
            paths = [f"{module_path(self.fam, i, 'layer')}.{nd.path}" for i in group.layers]
        rel = "" if nd.note and paths[0] == group.path else _rel(paths[0], group.path) or "(layer)"
        self.node(g, P(point), _html(text, small=[rel, nd.note or ""]), "point", kind,
                  path_pattern(paths, group.layers))

    # whole model
    def draw(self) -> "graphviz.Digraph":
        s, fam = self.ir.settings, self.fam
        self.dot.attr(label=self.title())
        emb = f"{fam.base}.{fam.drawing.embed}" if fam else ""
        self.node(self.dot, "embeddings", _html("embeddings", small=[emb]), "point", "global", emb or None)
        prev, entries = "embeddings", []
        for g in self.groups:
            entry, exit_ = self.layer_cluster(g)
            entries.append((f"cluster_{g.id}", entry))
            self.edge(prev, entry, "flow")
            prev = exit_
        if fam is not None and fam.drawing.final_norm:     # pre-norm: the last layer's output is normalised once more
            norm = f"{fam.base}.{fam.drawing.final_norm}"
            self.node(self.dot, "final_norm", _html(fam.drawing.norm, small=[norm]), "point", "norm", norm)
            self.edge(prev, "final_norm", "flow")
            prev = "final_norm"
        head = module_path(fam, None, "head") if fam else ""
        written = s.head.get("pool")
        pool = written or schema.RECIPE_POOL   # without `head { pool … }`, what `peltc compile` trains
        lines = ["pooler (first token)" if pool == "pooler" else "masked mean over tokens", "+ classifier"]
        if fam is not None and fam.pooling == "last":   # a decoder's head: the last non-pad token, or the mean
            lines = ["last non-pad token" if pool == "pooler" else "masked mean over tokens", f"+ {head}"]
        if written is None:
            lines.append(f"(no head block: pool {pool}, as trained)")
        small = [head] if fam is None or not fam.lm_head else [f"*ForCausalLM: {fam.lm_head} (frozen)"]
        self.node(self.dot, "head", _html("task head", lines, small), "point", "global", head or None)
        self.edge(prev, "head", "flow")
        glob = global_mods(self.ir)
        empty = LayerGroup([], "", [], "")
        for anchor in ("embeddings", "head"):
            mods = [m for m in glob if (m.point == "head") == (anchor == "head")]
            self.beside_row(self.dot, empty, [(anchor, anchor, mods)], None)
        for m in glob:
            if m.point == "all":   # it reaches into every layer and the head too
                colour = METHOD_COLOURS[m.method][1]
                for cluster, entry in entries:
                    self.edge(f"embeddings+{m.key}", entry, "bias", colour, lhead=cluster)
                self.edge(f"embeddings+{m.key}", "head", "bias", colour)
        self.legend()
        for a, b, attrs in self.edges:
            self.dot.edge(a, b, **attrs)
        return self.dot

    def title(self) -> str:
        s, ir = self.ir.settings, self.ir
        name = f"{self.name}  ·  " if self.name else ""
        if self.fam is None:
            model = f"model {s.model} (not bound)" if s.model else "no model bound"
            return f"{name}{model}  ·  symbolic diagram: pass --model for counts and module paths"
        total = sum(a.trainable or 0 for a in ir.attachments())
        pct = f" ({100 * total / s.base_params:.2f}% of {_n(s.base_params)})" if s.base_params else ""
        shared = sum(i.shared_trainable or 0 for i in ir.instances())
        what = " / ".join(sorted({f"{i.method}-{'MLP' if i.method == 'prefix' else 'encoder'}"
                                  for i in ir.instances() if i.shared_trainable}))
        extra = f"  +  {_n(shared)} {what} params during training (folded away)" if shared else ""
        return (f"{name}model {s.model} ({s.family}, {s.dims['layers']} layers, hidden {s.dims['hidden']})\n"
                f"trainable {_n(total)}{pct}{extra}")

    def legend(self) -> None:
        """A legend cluster holding one table, in the task head's row."""
        def swatch(fill: str, line: str, rounded: bool = True) -> str:
            style = ' STYLE="rounded"' if rounded else ""
            return f'<TD BGCOLOR="{fill}" COLOR="{line}" BORDER="1"{style} WIDTH="26" HEIGHT="12"> </TD>'

        def glyph(text: str, colour: str) -> str:
            return f'<TD><FONT COLOR="{colour}">{text}</FONT></TD>'

        used = {i.method for i in self.ir.instances()}      # the newer methods only where drawn
        rows = [(swatch(f, c), m) for m, (f, c) in METHOD_COLOURS.items() if legend_always(m) or m in used]
        rows += [(swatch(BASE_FILL, BASE_LINE, False), "base module (frozen)"),
                 (glyph("◆", GATE_LINE), "gate: σ(point) per example, scalar, const"),
                 (glyph("━━▶", "#444444"), "sequential: inline in the data path"),
                 (glyph("╍╍▶", "#444444"), "parallel: reads the block input, adds (+)"),
                 (glyph("┄┄▶", GATE_LINE), "gate reads its source point"),
                 (glyph("┄┄●", GATE_LINE), "gate scales the module"),
                 (glyph("┄┄┄", METHOD_COLOURS["bitfit"][1]), "trains the biases (weights) of"),
                 (glyph("×N", BASE_TEXT), "identical layers drawn once")]
        if any(b.add for b in self.layout.blocks):   # pre-norm: a parallel adapter reads the normalised input
            rows = [(g, "parallel: reads the sub-layer's normed input, adds (+)" if t.startswith("parallel") else t)
                    for g, t in rows]
            rows += [(glyph("+", BASE_TEXT), "residual add: block input + its output"),
                     (glyph("━━▶", "#a8a8a8"), "residual stream (pre-norm block)")]
        half = (len(rows) + 1) // 2
        body = "".join("<TR>" + "".join(f'{cell}<TD ALIGN="LEFT">{html.escape(text)}</TD>'
                                        for cell, text in rows[k::half]) + "</TR>" for k in range(half))
        with self.dot.subgraph(name="cluster_legend") as c:
            c.attr(label="legend", style="rounded", color="#c8c8c8", fontsize="9", fontcolor="#666666",
                   tooltip="legend", labeljust="l")
            c.node("legend", f'<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="3" CELLPADDING="1">{body}</TABLE>>',
                   shape="plain", fontsize="8")
        with self.dot.subgraph() as r:
            r.attr(rank="same")
            r.node("head")
            r.node("legend")


# --- public entry points ------------------------------------------------------------------------
def to_dot(ir: IR, expand: bool = False, *, title: str | None = None, marks: dict | None = None) -> "graphviz.Digraph":
    """The diagram as a ``graphviz.Digraph`` (nothing runs; ``.source`` is the DOT text).
    ``title`` (e.g. the spec's file name) opens the diagram's title; ``marks``: instance → (node attributes, label lines)."""
    try:
        import graphviz  # noqa: F401
    except ModuleNotFoundError:
        raise UsageError("drawing needs the 'graphviz' Python package", code="U014",
                         help="pip install graphviz (and Graphviz's `dot`: apt-get install graphviz)") from None
    return _Drawer(ir, expand, title, marks).draw()


def _pipe(dg: "graphviz.Digraph", fmt: str) -> bytes:
    """The diagram drawn by Graphviz's `dot` in ``fmt`` (U014 without `dot`, U012 when it fails)."""
    import graphviz
    try:
        return dg.pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise UsageError("Graphviz's `dot` program was not found on PATH", code="U014",
                         help="install Graphviz (apt-get install graphviz, brew install graphviz), "
                              "or write DOT source: -o diagram.dot") from None
    except graphviz.CalledProcessError as e:
        lines = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise UsageError(f"Graphviz failed: {lines[-1] if lines else e}", code="U012") from None


def to_svg(ir: IR, expand: bool = False, *, title: str | None = None) -> str:
    """The diagram as SVG text (for notebooks: `peltc.Spec._repr_svg_`), without the XML prolog."""
    svg = _pipe(to_dot(ir, expand, title=title), "svg").decode("utf-8")
    return svg[svg.find("<svg"):] if "<svg" in svg else svg


def render(ir: IR, out: str | Path, *, expand: bool = False, fmt: str | None = None,
           title: str | None = None, marks: dict | None = None) -> Path:
    """Write the diagram to ``out``; the format comes from ``fmt`` or the suffix: svg, png, pdf, or
    dot/gv for DOT source (which needs no `dot` program). Returns the path written."""
    out = Path(out)
    fmt = (fmt or out.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise UsageError(f"unknown diagram format '{fmt}'" if fmt else f"cannot tell the diagram format of '{out}'",
                         code="U015", help=f"name the output with one of: {', '.join('.' + f for f in FORMATS)}")
    dg = to_dot(ir, expand, title=title, marks=marks)
    if FORMATS[fmt] in ("png", "pdf") and not font_has_glyphs(FONT):
        import graphviz
        dg = graphviz.Source(ascii_labels(dg.source))
    data = dg.source.encode("utf-8") if FORMATS[fmt] == "dot" else _pipe(dg, FORMATS[fmt])
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)   # atomic: write, then rename
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.umask(umask := os.umask(0))   # read the umask (setting it back)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
