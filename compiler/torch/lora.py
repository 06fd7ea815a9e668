"""LoRA on a linear: ``y = W x + b + Σ_k s_k · B_k A_k dropout(x)``; DoRA as an option.

`LoraLinear` wraps the base ``nn.Linear`` (kept as ``base_layer``; wrap, don't subclass) and holds
the LoRAs of that linear in ``pelt_lora`` (keyed by instance); several LoRAs on one linear sum.
``A`` is initialised like peft (``kaiming_uniform_(a=sqrt(5))``), ``B`` is zero so the model is
unchanged at init. Scale: ``s = alpha / rank`` without a gate (``scaling rs``: ``alpha / √rank``,
rsLoRA); with a gate ``s = g`` (the gate replaces alpha / rank, as in UniPELT) — one gate per
adapted matrix.

``init pissa`` / ``init olora`` (`principal_init`): A and B start from the base weight's top-rank
singular triplets (PiSSA) or its QR factors (OLoRA), exactly as peft computes them; the initial A₀, B₀
are kept as buffers (``A0``, ``B0``: saved in artifacts) and the base weight becomes W − s·B₀A₀ —
that change is made by `rewrite` (`rewrite.attach.set_residual`), never here.

DoRA (``dora``, Liu et al. 2024; peft's ``use_dora``): ``W' = m ⊙ (W + s·BA) / ‖W + s·BA‖`` with the
norm per output row (``linalg.norm(·, dim=1)``), computed without gradient (the paper's §4.3, as peft),
``m`` (``magnitude``, one per output feature) learned, initialised to the row norms of ``W + s·BA``
(identity at init). The output it adds to the base is peft's ``(m/n − 1)·(W x) + (m/n)·s·B A x``
(the base bias untouched). Under a gate ``g`` that change is scaled by ``g``: ``y = base + g·(DoRA −
base)`` (s stays alpha / rank inside DoRA). Without autograd (serving) the plain LoRAs of one attention block share one
down-projection matmul (`served.lora_add`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from peltc.compiler.torch.gate import Gate, scale
from peltc.compiler.torch.host import LinearHost
from peltc.compiler.torch.served import lora_add, serving
from peltc.compiler.torch.state import route_absent, route_rows


def principal_init(weight: torch.Tensor, rank: int, s: float, init: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(A₀, B₀) in float32 for ``init pissa`` / ``init olora`` from a base weight (out, in), as peft's
    ``pissa_init`` (A = √S_r/s · V_rᵀ, B = U_r · √S_r/s: s·B A is the top-r part of W) and
    ``olora_init`` (W = Q R: A = R_r, B = Q_r)."""
    w = weight.detach().to(torch.float32)
    if init == "pissa":
        u, sv, vh = torch.linalg.svd(w, full_matrices=False)
        sr = sv[:rank] / s
        return torch.diag(torch.sqrt(sr)) @ vh[:rank], u[:, :rank] @ torch.diag(torch.sqrt(sr))
    if init == "olora":
        q, r = torch.linalg.qr(w)
        return r[:rank].contiguous(), q[:, :rank].contiguous()
    raise ValueError(init)


class LoRA(nn.Module):
    def __init__(self, fan_in: int, fan_out: int, rank: int, alpha: float, dropout: float = 0.0,
                 gate: Gate | None = None, *, rs: bool = False, dora: bool = False, init: str = "default",
                 device=None, dtype=None):
        super().__init__()
        self.A = nn.Linear(fan_in, rank, bias=False, device=device, dtype=dtype)
        self.B = nn.Linear(rank, fan_out, bias=False, device=device, dtype=dtype)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.rank = rank
        self.alpha = float(alpha)
        self.rs = rs
        self.init = init
        self.gate = gate
        self.enabled = True
        # DoRA's magnitude m (set from the base weight by `init_magnitude`)
        self.magnitude = nn.Parameter(torch.ones(fan_out, device=device, dtype=dtype)) if dora else None
        if init != "default":     # A₀, B₀ of a principal init: the base holds W − s·B₀A₀
            self.register_buffer("A0", torch.zeros(rank, fan_in, device=device, dtype=torch.float32))
            self.register_buffer("B0", torch.zeros(fan_out, rank, device=device, dtype=torch.float32))
        # False for a principal init on a routed (shared) base, which keeps W: s·B₀A₀ x is subtracted here
        self.__dict__["in_base"] = True

    def extra_repr(self) -> str:
        scale = "gate" if self.gate is not None else f"alpha/{'√' * self.rs}rank={self.scaling:g}"
        return (f"rank={self.rank}, scale={scale}" + (", dora" if self.dora else "")
                + (f", init={self.init}" if self.init != "default" else ""))

    @property
    def dora(self) -> bool:
        return self.magnitude is not None

    @property
    def scaling(self) -> float:
        """alpha / rank, or alpha / √rank (rsLoRA)."""
        return self.alpha / (math.sqrt(self.rank) if self.rs else self.rank)

    @property
    def init_scale(self) -> float:
        """The s of W − s·B₀A₀ (the constant of a ``const`` gate when gated: plan refuses other gates)."""
        return self.scaling if self.gate is None else self.gate.const

    def set_principal(self, a0: torch.Tensor, b0: torch.Tensor) -> None:
        """Start A, B at a principal init's (A₀, B₀) and keep them."""
        with torch.no_grad():
            self.A.weight.copy_(a0)
            self.B.weight.copy_(b0)
            self.A0.copy_(a0)
            self.B0.copy_(b0)

    def init_magnitude(self, weight: torch.Tensor) -> None:
        """DoRA's m at init: the row norms of W + s·B A (peft's ``update_layer``)."""
        with torch.no_grad():
            self.magnitude.copy_(self.weight_norm(weight))

    def weight_norm(self, weight: torch.Tensor) -> torch.Tensor:
        """‖W + s·B A‖ per output row, without gradient (DoRA's §4.3)."""
        with torch.no_grad():
            w = weight.to(self.A.weight.dtype) + self.scaling * (self.B.weight @ self.A.weight)
            return torch.linalg.norm(w, dim=1).to(w.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``s · B A x`` alone (``add_to`` adds it to the base output in the same matmul)."""
        return self.B(self._down(x))

    def _down(self, x: torch.Tensor) -> torch.Tensor:
        # scale at rank r, before B (B is linear without bias): r values per token instead of fan_out
        a = self.A(self.dropout(x))
        return a * self.scaling if self.gate is None else scale(a, self.gate(a))

    def add_to(self, y: torch.Tensor, x: torch.Tensor, base: nn.Linear, y0: torch.Tensor | None = None
               ) -> torch.Tensor:
        """``y + s · B A x``, the up-projection and the add fused into one ``addmm`` (DoRA: ``y`` plus
        DoRA's change of the base output). On a model routing several runs, only for this run's examples
        (the gate computed on the whole batch: fused, pooled). ``y0``: the base output (DoRA reuses it as
        W x when no dropout is active, as peft)."""
        state = self.__dict__.get("_pelt_state")
        if not self.dora and self.in_base and serving(state, self):
            out = lora_add(state, self, y, x)
            if out is not None:
                return out
        rows = route_rows(self, y)
        if self.dora or not self.in_base:
            if rows is None:
                return y + self._change(x, base, None if self.gate is None else self.gate(x), y0)
            g = None if self.gate is None else self.gate(x).index_select(0, rows)
            return y.index_add(0, rows, self._change(x.index_select(0, rows), base, g,
                                                     None if y0 is None else y0.index_select(0, rows)))
        if rows is not None:
            a = self.A(self.dropout(x.index_select(0, rows)))
            a = a * self.scaling if self.gate is None else scale(a, self.gate(x).index_select(0, rows))
            yr = y.index_select(0, rows)
            yr = torch.addmm(yr.reshape(-1, yr.shape[-1]), a.reshape(-1, a.shape[-1]), self.B.weight.t()).view(yr.shape)
            return y.index_copy(0, rows, yr)
        a = self._down(x)
        return torch.addmm(y.reshape(-1, y.shape[-1]), a.reshape(-1, a.shape[-1]), self.B.weight.t()).view(y.shape)

    def _change(self, x: torch.Tensor, base: nn.Linear, g: torch.Tensor | None,
                y0: torch.Tensor | None = None) -> torch.Tensor:
        """What this LoRA adds to the base output of ``x``: ``s·B A x`` (minus ``s·B₀A₀ x`` where the base
        weight is not the residual), or DoRA's ``(m/n − 1)·W x + (m/n)·s·B A x``; times ``g`` when gated
        (DoRA) or with ``g`` as the scale (LoRA)."""
        xd = self.dropout(x)
        if not self.dora:
            d = self.B(self.A(xd))
            d = d * self.scaling if g is None else scale(d, g)
        else:
            weight = self.base_weight(base)
            k = (self.magnitude / self.weight_norm(weight)).to(x.dtype)
            if y0 is not None and self.in_base and (isinstance(self.dropout, nn.Identity) or not self.training):
                wx = y0 if base.bias is None else y0 - base.bias
            else:
                wx = F.linear(xd, weight.to(xd.dtype))
            d = (k - 1) * wx + k * (self.B(self.A(xd)) * self.scaling)
            d = d if g is None else scale(d, g)
        if not self.in_base:     # the base output is W x: make it (W − s·B₀A₀) x
            d = d - self.init_scale * F.linear(F.linear(x, self.A0.to(x.dtype)), self.B0.to(x.dtype))
        return d

    def base_weight(self, base: nn.Linear) -> torch.Tensor:
        """The weight DoRA normalises: the base's (W − s·B₀A₀ with a principal init, as peft)."""
        w = base.weight
        if self.init != "default" and not self.in_base:
            w = w - self.init_scale * (self.B0 @ self.A0).to(w.dtype)
        return w

    def delta_weight(self) -> torch.Tensor:
        """B A (out, in), unscaled."""
        return self.B.weight @ self.A.weight

    def merged_delta(self, weight: torch.Tensor, g: float) -> torch.Tensor:
        """What merging adds to the base ``weight`` (float32) under a static gate value ``g`` (1 ungated):
        ``s·B A`` (s = g when gated), or DoRA's ``g·((m/n)·(W + s·B A) − W)``."""
        if not self.dora:
            s = self.scaling if self.gate is None else g
            return s * self.delta_weight().to(torch.float32)
        w = weight.to(torch.float32)
        full = w + self.scaling * self.delta_weight().to(torch.float32)
        k = self.magnitude.detach().to(torch.float32) / torch.linalg.norm(full, dim=1)
        return g * (k[:, None] * full - w)


class LoraLinear(LinearHost):
    """A base linear plus its LoRAs."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__(base_layer)
        self.pelt_lora = nn.ModuleDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = y0 = self.base_layer(x)
        for lora in self.pelt_lora.values():
            if route_absent(lora):
                continue
            if lora.enabled:
                y = lora.add_to(y, x, self.base_layer, y0)
            elif lora.init != "default" and lora.in_base:    # switched off: the base is W again
                y = y + lora.init_scale * F.linear(F.linear(x, lora.A0.to(x.dtype)), lora.B0.to(x.dtype))
        return y
