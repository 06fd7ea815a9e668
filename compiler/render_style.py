"""The diagram's look as data: one style table keyed by node kind and method (as torch.fx's
``graph_drawer``), each method's colours, and which edge role draws a module beside its point.
`render.py` draws with it; a new method is a row here."""

from __future__ import annotations

METHOD_COLOURS: dict[str, tuple[str, str]] = {   # method → (fill, line)
    "adapter": ("#cfe0fb", "#1f5fbf"), "prefix": ("#ffe2b8", "#c96a00"), "lora": ("#d3efd6", "#2e7d32"),
    "prompt": ("#e6dcf7", "#5b3fa8"), "bitfit": ("#f1d5ee", "#8e2f88"), "finetune": ("#ffd3d0", "#c0392b"),
    "ia3": ("#d6eef2", "#00838f"), "loreft": ("#f3e2cf", "#8d5524"),
}
LEGEND_IF_DRAWN = frozenset({"ia3", "loreft", "prompt"})   # in the legend only when drawn (the five before: always, as the goldens)
BASE_FILL, BASE_LINE, BASE_TEXT = "#ececec", "#9a9a9a", "#444444"
GATE_FILL, GATE_LINE = "#fff5c0", "#a67c00"
FLOW = "#707070"

_BASE = {"style": "filled", "fillcolor": BASE_FILL, "color": BASE_LINE, "fontcolor": BASE_TEXT, "shape": "box"}
NODE_STYLE: dict[tuple[str, str | None], dict[str, str]] = {   # (node kind, point kind | method)
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
    **{("attachment", m): {"shape": "box", "style": "rounded,filled,bold", "fillcolor": f, "color": c,
                           "fontsize": "9", "margin": "0.08,0.03"} for m, (f, c) in METHOD_COLOURS.items()},
}
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
_MOD_EDGE = {"prefix": "prefix", "prompt": "prompt", "lora": "parallel", "ia3": "parallel", "bitfit": "bias", "finetune": "bias"}
