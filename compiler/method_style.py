"""How `peltc render` colours and joins each method's module, read from the method registry (each
`Method.drawing`): built-ins and plug-ins alike."""

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
    """(node kind, point kind | method) → attributes; a plug-in method's box from its `Drawing`."""

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
