"""BitFit without touching base weights: a zero-initialised bias delta on a module's output.

Each selected bias-holding module (a Linear or a LayerNorm) gets ``pelt_bitfit[instance]``, a
`BiasDelta` of the bias's size, and a forward hook (registered by ``rewrite``) adding
``g · Δb`` to its output. One gate serves all the modules of one attachment (e.g. every bias of a
layer for ``layers[i]``). Trainable counts equal the frozen biases' sizes; ungated deltas can be
merged into the base biases for inference.

Folding: an ungated delta of a plain ``nn.Linear`` / ``nn.LayerNorm`` on a model that routes no
runs is not added to the output by the hook; ``rewrite`` swaps the module's class for `FOLDED`'s
subclass, whose forward passes ``b + Δb`` as the bias argument (``F.linear(x, W, b + Δb)``), as
in-place BitFit does: no extra pass over the activations and no second activation-sized tensor per
module. The base bias itself is never written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peltc.compiler.torch.gate import Gate, scale
from peltc.compiler.torch.state import route_absent, route_mask


class BiasDelta(nn.Module):
    """``out + g · Δb``. The attachment's gate is registered under its first delta (``owns_gate``);
    the other deltas of the attachment only refer to it."""

    def __init__(self, size: int, gate: Gate | None = None, owns_gate: bool = True, *, device=None, dtype=None):
        super().__init__()
        self.delta = nn.Parameter(torch.zeros(size, device=device, dtype=dtype))
        if owns_gate and gate is not None:
            self.gate = gate
        else:
            self.__dict__["_shared_gate"] = gate
        self.enabled = True

    @property
    def the_gate(self) -> Gate | None:
        return self._modules.get("gate") or self.__dict__.get("_shared_gate")

    def folds(self) -> bool:
        """Whether this delta goes into its module's bias argument (ungated, not routed) rather than
        being added to the output by `bitfit_hook`."""
        return self.the_gate is None and self.__dict__.get("_pelt_run") is None

    def forward(self, out: torch.Tensor) -> torch.Tensor:
        d = self.delta if self.delta.dtype == out.dtype else self.delta.to(out.dtype)
        gate = self.the_gate
        m = route_mask(self, out)          # several runs on one base: 1 for this run's examples, else 0
        if m is not None:
            g = m if gate is None else gate(out)
            if gate is not None:
                g = g * m.view(m.shape[0], *([1] * (g.dim() - 1)))
            # (batch, 1, …, size): one pass over ``out``
            return out + g.view(*g.shape, *([1] * (out.dim() - g.dim()))) * d
        if gate is None:
            return out + d
        return out + scale(d.expand_as(out), gate(out))


def bias_size(module: nn.Module) -> int | None:
    """Size of a module's bias (None when it has none)."""
    b = getattr(module, "bias", None)
    return None if b is None else int(b.numel())


def bitfit_hook(module: nn.Module, args, output):
    """Forward hook: add every enabled delta of ``module.pelt_bitfit`` to the output (except those
    the module's folded forward already put into its bias)."""
    folded = type(module) in UNFOLDED
    for d in module.pelt_bitfit.values():
        if d.enabled and not (folded and d.folds()) and not route_absent(d):
            output = d(output)
    return output


def folded_bias(module: nn.Module) -> torch.Tensor:
    """``b + Σ Δb`` over the module's enabled deltas that fold (see `BiasDelta.folds`)."""
    b = module.bias
    for d in module.pelt_bitfit.values():
        if d.enabled and d.folds():
            b = b + (d.delta if d.delta.dtype == b.dtype else d.delta.to(b.dtype))
    return b


class FoldedLinear(nn.Linear):
    """An ``nn.Linear`` whose folding BitFit deltas enter its bias argument: ``F.linear(x, W, b + Σ Δb)``.
    ``rewrite`` swaps a module's class to this one (and back on ``merge``): a class, not an instance
    ``forward``, so that deepcopy, pickling and ``DataParallel``'s shallow replicas each run their own."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear(input, self.weight, folded_bias(self))


class FoldedLayerNorm(nn.LayerNorm):
    """An ``nn.LayerNorm`` whose folding BitFit deltas enter its bias argument (see `FoldedLinear`)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, folded_bias(self), self.eps)


# Module types (exact) whose forward takes the bias as an argument → the class folding the deltas into it.
# A type missing here (or a module whose instance already carries its own ``forward``, e.g. an offloading
# hook's) keeps the output hook for all its deltas.
FOLDED = {nn.Linear: FoldedLinear, nn.LayerNorm: FoldedLayerNorm}
UNFOLDED = {v: k for k, v in FOLDED.items()}
