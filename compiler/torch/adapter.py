"""Bottleneck adapters at a sub-layer output (``attention.output`` / ``ffn.output``).

A value point is produced by a LayerNorm that receives ``z = h_F + x`` (the sub-layer's dense
output after dropout, plus the residual). `AdapterPoint` wraps that LayerNorm (``base_layer``) and
holds the adapters of the point in ``pelt_adapters`` (keyed by instance):

- sequential (Pfeiffer; UniPELT, AdapterHub SeqBn): ``h = LN(z)``; ``z ← z + g·s·A(h)``;
  ``out = LN(z)``. Several sequential adapters apply in ``order``, each reading the previous
  one's result ``h_k = LN(z_k)``.
- parallel (He et al.): ``z ← z + g·s·A(x_in)`` with ``x_in`` the sub-layer's input (the layer
  input for ``attention.output``, the ``attention.output`` value for ``ffn.output``); all parallel
  adapters read the same ``x_in`` and are added before the sequential ones run.

``A(v) = up(act(down(v)))`` with ``up`` zero-initialised (weights and bias), so the model is
unchanged at init; ``down`` keeps ``nn.Linear``'s default init; ``s`` is the ``scale`` parameter.
A gate whose source is the adapter's own point reads the adapter's own input (``h_k`` for a
sequential adapter, the pre-adapter value ``LN(z)`` for a parallel one).

Pre-norm blocks (decoders: ``x + Attn(LN(x))``, ``x + MLP(LN(x))``) have no LayerNorm after the sub-layer:
there the value point is the sub-layer's output ``h`` before the residual add, and the adapters ride on a
forward hook of the sub-layer module (`attach_prenorm`; its submodules keep their paths):
sequential ``out = x + h + g·s·A(h)``, parallel ``out = x + h + g·s·A(LN(x))``.
"""

from __future__ import annotations

import torch
from torch import nn

from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.served import adapter_add, serving
from peltc.compiler.torch.state import PeltState, route_absent, route_rows

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}

# the value a parallel adapter reads, per point
PARALLEL_INPUT = {"attention.output": "input", "ffn.output": "attention.output"}


class Adapter(nn.Module):
    """down (H → size) → act → up (size → H), ``up`` zero-initialised; optionally gated."""

    def __init__(self, hidden: int, size: int, activation: str = "relu", scale: float = 1.0,
                 placement: str = "sequential", gate: Gate | None = None, *, device=None, dtype=None):
        super().__init__()
        self.down = nn.Linear(hidden, size, device=device, dtype=dtype)
        self.act = ACTIVATIONS[activation]()
        self.up = nn.Linear(size, hidden, device=device, dtype=dtype)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.scale = float(scale)
        self.placement = placement
        self.gate = gate
        self.enabled = True

    def extra_repr(self) -> str:
        return f"placement={self.placement}, scale={self.scale:g}"

    def add_to(self, z: torch.Tensor, x: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """``z + g·s·A(x)`` in one matmul; ``own`` is what a gate reading the adapter's own point sees.

        The per-example factor ``c = g·s`` is applied at the bottleneck (``size`` values per token,
        not ``H``) and the up-projection's bias rides along as one extra input column holding ``c``:
        ``z + [c·u, c] @ [W_up, b_up]^T`` — a single ``addmm`` into ``z`` instead of up-projection,
        bias, scaling and residual add as four passes over ``(batch, seq, H)``.
        """
        rows = route_rows(self, z)        # several runs on one base: only this run's examples
        if rows is not None:
            return self._add_to_rows(z, x, own, rows)
        u = self.act(self.down(x))                                       # (..., size)
        c = self.gate(u, own=own) if self.gate is not None else None     # (batch,) or None
        return self._add(z, u, c)

    def _add_to_rows(self, z: torch.Tensor, x: torch.Tensor, own: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """`add_to` on the examples ``rows`` only (the others unchanged): the gate is computed on the whole
        batch (it pools over the batch's mask, and sigmoid gates of one layer are fused), the rest on the rows."""
        c = self.gate(x, own=own).index_select(0, rows) if self.gate is not None else None
        u = self.act(self.down(x.index_select(0, rows)))
        return z.index_copy(0, rows, self._add(z.index_select(0, rows), u, c))

    def _add(self, z: torch.Tensor, u: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if c is None:
            col = torch.full((*u.shape[:-1], 1), self.scale, dtype=u.dtype, device=u.device)
            if self.scale != 1.0:
                u = u * self.scale
        else:
            if self.scale != 1.0:
                c = c * self.scale
            c = c.to(u.dtype).view(*c.shape, *([1] * (u.dim() - c.dim())))    # per example or per token
            u = u * c
            col = c.expand(*u.shape[:-1], 1)
        w = torch.cat([self.up.weight, self.up.bias.unsqueeze(1)], dim=1)   # (H, size + 1)
        ext = torch.cat([u, col], dim=-1).reshape(-1, w.shape[1])
        return torch.addmm(z.reshape(-1, z.shape[-1]), ext, w.t()).view(z.shape)

def _prenorm_adapters(module, args, kwargs, output):
    """Forward hook (with kwargs) on a pre-norm sub-layer (a decoder's ``self_attn`` / ``mlp``): its output
    ``h`` (before the residual add) becomes ``h + Σ g·s·A(x_in)`` over the parallel adapters (``x_in`` the
    sub-layer's input, what it reads: the normalised layer input), then ``h ← h + g·s·A(h)`` for each
    sequential adapter in order; the block adds the residual after."""
    active = [a for a in module.pelt_adapters.values() if a.enabled and not route_absent(a)]
    if not active:
        return output
    h = output[0] if isinstance(output, tuple) else output
    par = [a for a in active if a.placement == "parallel"]
    if par:
        x_in = args[0] if args else kwargs.get("hidden_states", kwargs.get("x"))
        own = h
        for a in par:
            h = a.add_to(h, x_in, own)
    for a in active:
        if a.placement != "parallel":
            h = a.add_to(h, h, h)
    return (h, *output[1:]) if isinstance(output, tuple) else h


def attach_prenorm(module: nn.Module, name: str, adapter: Adapter) -> None:
    """Add an adapter to a pre-norm sub-layer module (``pelt_adapters[name]`` + the hook, once)."""
    if "pelt_adapters" not in module._modules:
        module.pelt_adapters = nn.ModuleDict()
        module.__dict__["_pelt_adapter_hook"] = module.register_forward_hook(_prenorm_adapters, with_kwargs=True)
    module.pelt_adapters[name] = adapter


class AdapterPoint(nn.Module):
    """Wraps the LayerNorm producing a value point; applies that point's adapters."""

    def __init__(self, base_layer: nn.Module, layer: int, point: str, state: PeltState):
        super().__init__()
        self.base_layer = base_layer
        self.pelt_adapters = nn.ModuleDict()
        self.layer = layer
        self.point = point
        self.__dict__["_state"] = state

    def extra_repr(self) -> str:
        return f"layer={self.layer}, point={self.point}"

    def add(self, name: str, adapter: Adapter) -> None:
        self.pelt_adapters[name] = adapter

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        ln = self.base_layer
        active = [a for a in self.pelt_adapters.values() if a.enabled and not route_absent(a)]
        if not active:
            return ln(z)
        par = [a for a in active if a.placement == "parallel"]
        seq = [a for a in active if a.placement != "parallel"]
        h = ln(z)
        state = self.__dict__["_state"]
        fast = serving(state, self)      # z, the sub-layer's sum, is this call's own: added into in place
        if par:
            x_in = state.value(self.layer, PARALLEL_INPUT[self.point])
            own = h
            for a in par:
                z = _added(state, fast, a, z, x_in, own)
            h = ln(z)
        for a in seq:
            z = _added(state, fast, a, z, h, h)
            h = ln(z)
        return h


def _added(state: PeltState, fast: bool, a: Adapter, z: torch.Tensor, x: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
    out = adapter_add(state, a, z, x, own) if fast else None
    return a.add_to(z, x, own) if out is None else out
