"""A stand-in for `compiler/space.py` (the i19-space branch) with exactly its interface, for the search tests
while that module is not merged: a spec whose `rank` is written `rank {{4|8}}`-style placeholders."""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

_CHOICE = re.compile(r"choice\(([^()]*)\)")


@dataclass(frozen=True)
class Dimension:
    name: str
    kind: str
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    log: bool = False
    span: object = None


class Space:
    def __init__(self, text: str) -> None:
        self.text = text
        self.sites = list(_CHOICE.finditer(text))
        self.dimensions = [Dimension(f"c{i}", "categorical", tuple(x.strip() for x in m.group(1).split(",")))
                           for i, m in enumerate(self.sites)]

    def size(self) -> int:
        n = 1
        for d in self.dimensions:
            n *= len(d.choices)
        return n

    def concrete(self, point: dict) -> str:
        out, last = [], 0
        for d, m in zip(self.dimensions, self.sites):
            out += [self.text[last:m.start()], str(point[d.name])]
            last = m.end()
        return "".join(out) + self.text[last:]

    def points(self):
        for combo in itertools.product(*(d.choices for d in self.dimensions)):
            yield dict(zip((d.name for d in self.dimensions), combo))


def load_space(source: str, path=None) -> Space:
    return Space(source)
