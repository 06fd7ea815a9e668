"""The diagram's look as data: one style table keyed by node kind and method (as torch.fx's
``graph_drawer``), and each method's colours and edge read from the method registry (each `Method.drawing`:
built-ins and plug-ins alike). `render.py` draws with it; a new method's look is its `Drawing`."""

from __future__ import annotations

from peltc.compiler.schema import METHODS


class _Colours(dict):
    """method → (fill, line), from each method's `Drawing` in the registry (plug-ins included)."""

    def __missing__(self, method: str) -> tuple[str, str]:
        d = METHODS[method].drawing
        return (d.fill, d.line)

    def items(self):
        return [(m, self[m]) for m in METHODS]


METHOD_COLOURS: dict[str, tuple[str, str]] = _Colours()   # method → (fill, line)


class NodeStyle(dict):
    """(node kind, point kind | method) → attributes; a method's box (plug-ins included) from its `Drawing`."""

    def __missing__(self, key: tuple[str, str | None]) -> dict[str, str]:
        if key[0] != "attachment":
            raise KeyError(key)
        f, c = METHOD_COLOURS[key[1]]
        return {"shape": "box", "style": "rounded,filled,bold", "fillcolor": f, "color": c, "fontsize": "9",
                "margin": "0.08,0.03"}


def mod_edge(method: str) -> tuple[str, dict[str, str]]:
    """How a module drawn beside its point joins it (its method's `Drawing.edge`), and the edge's label."""
    d = METHODS[method].drawing
    return d.edge or "parallel", ({"label": d.label} if d.edge == "parallel" and d.label else {})


def legend_always(method: str) -> bool:
    """Whether the legend lists ``method`` even where it is not drawn (the first five built-ins, as the golden
    diagrams have them); other methods, plug-ins included, only where drawn."""
    return METHODS[method].drawing.legend


BASE_FILL, BASE_LINE, BASE_TEXT = "#ececec", "#9a9a9a", "#444444"
GATE_FILL, GATE_LINE = "#fff5c0", "#a67c00"
FLOW = "#707070"

_BASE = {"style": "filled", "fillcolor": BASE_FILL, "color": BASE_LINE, "fontcolor": BASE_TEXT, "shape": "box"}
NODE_STYLE: dict[tuple[str, str | None], dict[str, str]] = NodeStyle({   # (node kind, point kind | method)
    ("point", "value"): {**_BASE, "style": "rounded,filled"},
    ("point", "linear"): {**_BASE, "fontsize": "9"},
    ("point", "block"): {**_BASE, "fillcolor": "#e0e0e0"},
    ("point", "global"): {**_BASE, "style": "rounded,filled,bold"},
    ("point", "layers"): {**_BASE, "shape": "box3d"},
    ("point", "norm"): {**_BASE, "fontsize": "9", "fillcolor": "#f5f5f5"},
    ("point", "op"): {**_BASE, "shape": "ellipse", "fillcolor": "#ffffff", "fontsize": "9", "height": "0.25",
                      "margin": "0.04,0.01"},
    ("point", "add"): {**_BASE, "shape": "circle", "fillcolor": "#ffffff", "fontsize": "12", "width": "0.28",
                       "fixedsize": "true"},
    ("gate", None): {"shape": "diamond", "style": "filled", "fillcolor": GATE_FILL, "color": GATE_LINE,
                     "fontsize": "8", "margin": "0.02", "height": "0.3"},
})   # ("attachment", method): NodeStyle.__missing__, from the registry
EDGE_STYLE: dict[str, dict[str, str]] = {   # edge role → attributes (module edges take its colour)
    "flow": {"color": FLOW},
    "sequential": {"penwidth": "1.6"},
    "parallel": {"style": "dashed", "penwidth": "1.4"},
    "prefix": {"penwidth": "1.4", "label": "K,V", "fontsize": "8"},
    "prompt": {"penwidth": "1.4", "label": "prepended", "fontsize": "8"},
    "bias": {"style": "dotted", "penwidth": "1.4", "arrowhead": "none", "constraint": "false"},
    "source": {"style": "dotted", "color": GATE_LINE, "arrowsize": "0.6"},
    "scales": {"style": "dotted", "color": GATE_LINE, "arrowhead": "dot", "arrowsize": "0.6"},
    "residual": {"color": "#a8a8a8", "penwidth": "1.2", "style": "bold"},
}
