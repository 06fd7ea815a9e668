"""LoRA on a linear: ``y = W x + b + Σ_k s_k · B_k A_k dropout(x)``.

`LoraLinear` wraps the base ``nn.Linear`` (kept as ``base_layer``; wrap, don't subclass) and holds
the LoRAs of that linear in ``pelt_lora`` (keyed by instance); several LoRAs on one linear sum.
``A`` is initialised like peft (``kaiming_uniform_(a=sqrt(5))``), ``B`` is zero so the model is
unchanged at init. Scale: ``s = alpha / rank`` without a gate; with a gate ``s = g`` (the gate
replaces alpha / rank, as in UniPELT) — one gate per adapted matrix. Without autograd (serving) the
LoRAs of one attention block share one down-projection matmul (`served.lora_add`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from peltc.compiler.torch.gate import Gate, scale
from peltc.compiler.torch.served import lora_add, serving
from peltc.compiler.torch.state import route_absent, route_rows


class LoRA(nn.Module):
    def __init__(self, fan_in: int, fan_out: int, rank: int, alpha: float, dropout: float = 0.0,
                 gate: Gate | None = None, *, device=None, dtype=None):
        super().__init__()
        self.A = nn.Linear(fan_in, rank, bias=False, device=device, dtype=dtype)
        self.B = nn.Linear(rank, fan_out, bias=False, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.rank = rank
        self.alpha = float(alpha)
        self.gate = gate
        self.enabled = True

    def extra_repr(self) -> str:
        scale = "gate" if self.gate is not None else f"alpha/rank={self.scaling:g}"
        return f"rank={self.rank}, scale={scale}"

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``s · B A x`` alone (``add_to`` adds it to the base output in the same matmul)."""
        return self.B(self._down(x))

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        # scale at rank r, before B (B is linear without bias): r values per token instead of fan_out
        a = self.A(self.dropout(x))
        return a * self.scaling if self.gate is None else scale(a, self.gate(a))

    def add_to(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``y + s · B A x``, the up-projection and the add fused into one ``addmm``. On a model routing
        several runs, only for this run's examples (the gate computed on the whole batch: fused, pooled)."""
        state = self.__dict__.get("_pelt_state")
        if serving(state, self):
            out = lora_add(state, self, y, x)
            if out is not None:
                return out
        rows = route_rows(self, y)
        if rows is not None:
            a = self.A(self.dropout(x.index_select(0, rows)))
            a = a * self.scaling if self.gate is None else scale(a, self.gate(x).index_select(0, rows))
            yr = y.index_select(0, rows)
            yr = torch.addmm(yr.reshape(-1, yr.shape[-1]), a.reshape(-1, a.shape[-1]), self.B.weight.t()).view(yr.shape)
            return y.index_copy(0, rows, yr)
        a = self._down(x)
        return torch.addmm(y.reshape(-1, y.shape[-1]), a.reshape(-1, a.shape[-1]), self.B.weight.t()).view(y.shape)

    def delta_weight(self) -> torch.Tensor:
        """B A (out, in), unscaled."""
        return self.B.weight @ self.A.weight


class LoraLinear(nn.Module):
    """A base linear plus its LoRAs."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.pelt_lora = nn.ModuleDict()

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        for lora in self.pelt_lora.values():
            if lora.enabled and not route_absent(lora):
                y = lora.add_to(y, x)
        return y
