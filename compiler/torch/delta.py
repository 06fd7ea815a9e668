"""The host of plug-in methods on a linear (``Method.build``, docs/extending.md):
``y = W x + b + Σ_k g_k · f_k(x)`` with ``f_k`` the module a plug-in built for instance k and ``g_k`` its
gate (1 without one).

`DeltaLinear` wraps the base linear (kept as ``base_layer``, as `LoraLinear` does) and holds one `Delta` per
instance in ``pelt_delta``; a `Delta` holds the plug-in's module as ``fn`` (its parameters are
``…pelt_delta.<instance>.fn.<name>``) and the gate. A module with ``delta_weight() -> (out, in)`` merges
into the base weight (`rewrite.merge`) where its method says it merges.
"""

from __future__ import annotations

import torch
from torch import nn

from peltc.compiler.torch.gate import Gate, scale
from peltc.compiler.torch.host import LinearHost
from peltc.compiler.torch.state import route_absent, route_rows


class Delta(nn.Module):
    def __init__(self, fn: nn.Module, gate: Gate | None, merges: bool):
        super().__init__()
        self.fn = fn
        self.gate = gate
        self.merges = merges and callable(getattr(fn, "delta_weight", None))
        self.enabled = True

    def add_to(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``y + g · fn(x)``; on a model routing several runs, only for this run's examples."""
        rows = route_rows(self, y)
        if rows is not None:
            d = self.fn(x.index_select(0, rows))
            if self.gate is not None:
                d = scale(d, self.gate(x).index_select(0, rows))
            return y.index_add(0, rows, d.to(y.dtype))
        d = self.fn(x)
        if self.gate is not None:
            d = scale(d, self.gate(d))
        return y + d.to(y.dtype)


class DeltaLinear(LinearHost):
    """A base linear plus plug-in deltas."""

    def __init__(self, base_layer: nn.Module):
        super().__init__(base_layer)
        self.pelt_delta = nn.ModuleDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        for d in self.pelt_delta.values():
            if d.enabled and not route_absent(d):
                y = d.add_to(y, x)
        return y
