"""(IA)³ (Liu et al. 2022) on a linear: a learned vector ``l``, initialised to 1, scaling

- the projection's output on keys and values: ``y = l ⊙ (W x + b)`` (a forward hook, `scale_output`);
- the projection's input on the FFN's down projection: ``y = W (l ⊙ x) + b`` (a forward pre-hook,
  `scale_input`), i.e. the FFN's intermediate activation;

as peft's ``IA3Config`` (``is_feedforward`` for the down projection). Behind a gate ``g`` the vector
becomes ``1 + g · (l − 1)``: ``y = W x + b + g · ((l − 1) ⊙ (W x + b))``, so a closed gate (g = 0) is the
base model and an open one (g = 1) is plain (IA)³. Several instances on one linear multiply.

Entry points (the method's whole surface): `build` (one `IA3` per attached linear), `count` (its
trainable size), `merge_into` (fold a constant factor into the linear's weight and bias).
The hooks are functions here; ``rewrite`` registers them (it alone mutates modules).
"""

from __future__ import annotations

import torch
from torch import nn

from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.state import mask_like, route_absent, route_mask

FEEDFORWARD = frozenset({"ffn.down"})   # points whose input (not output) is scaled


class IA3(nn.Module):
    """One instance's vector on one linear (``feedforward``: it scales the input)."""

    def __init__(self, size: int, feedforward: bool, gate: Gate | None = None, *, device=None, dtype=None):
        super().__init__()
        self.l = nn.Parameter(torch.ones(size, device=device, dtype=dtype))
        self.feedforward = feedforward
        self.gate = gate
        self.enabled = True

    def extra_repr(self) -> str:
        return f"size={self.l.numel()}, scales={'input' if self.feedforward else 'output'}"

    def factor(self, like: torch.Tensor) -> torch.Tensor:
        """What ``like`` (batch, …, size) is multiplied by: ``l``, or ``1 + g · (l − 1)`` per example
        (per token under a causal gate) behind a gate or on a model routing several runs."""
        l = self.l if self.l.dtype == like.dtype else self.l.to(like.dtype)
        g = None if self.gate is None else self.gate(like)
        m = route_mask(self, like)
        if m is not None:
            g = m if g is None else g * mask_like(m, g)
        if g is None:
            return l
        return 1 + g.view(*g.shape, *([1] * (like.dim() - g.dim()))) * (l - 1)

    def constant_factor(self, g: float) -> torch.Tensor:
        """The factor under a constant gate value ``g`` (1.0: ungated), as float32."""
        return 1 + g * (self.l.detach().float() - 1)


def build(fan_in: int, fan_out: int, point: str, gate: Gate | None, **where) -> IA3:
    """The vector for a linear of ``fan_in → fan_out`` features at canonical ``point``."""
    ff = point in FEEDFORWARD
    return IA3(fan_in if ff else fan_out, ff, gate, **where)


def count(fan_in: int, fan_out: int, point: str) -> int:
    """Trainable entries of `build`'s vector (the ia3 row of `compiler.schema.METHODS` counts it from dims)."""
    return fan_in if point in FEEDFORWARD else fan_out


def _active(module: nn.Module, feedforward: bool):
    for v in module.pelt_ia3.values():
        if v.feedforward == feedforward and v.enabled and not route_absent(v):
            yield v


def scale_output(module: nn.Module, args, output):
    """Forward hook on a key / value projection: ``output ⊙ factor`` for each of its vectors."""
    for v in _active(module, False):
        output = output * v.factor(output)
    return output


def scale_input(module: nn.Module, args):
    """Forward pre-hook on a down projection: its input ``⊙ factor`` for each of its vectors."""
    x = args[0]
    for v in _active(module, True):
        x = x * v.factor(x)
    return (x, *args[1:])


@torch.no_grad()
def merge_into(linear: nn.Linear, vec: IA3, g: float) -> None:
    """Fold ``vec`` under constant gate value ``g`` into ``linear`` (peft's merge): the rows of W and the
    bias for an output vector, the columns of W for an input vector (the bias is not scaled)."""
    f = vec.constant_factor(g) if vec.enabled else torch.ones_like(vec.l, dtype=torch.float32)
    w = linear.weight
    if vec.feedforward:
        w.copy_((w.float() * f.view(1, -1)).to(w.dtype))
    else:
        w.copy_((w.float() * f.view(-1, 1)).to(w.dtype))
        if linear.bias is not None:
            linear.bias.copy_((linear.bias.float() * f).to(linear.bias.dtype))
