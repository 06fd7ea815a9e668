"""The one gate module that every method uses (adapter, prefix, LoRA, BitFit).

Kinds (``GateSpec.kind``):

- ``sigmoid`` — per example: ``g = pool_over_tokens(sigmoid(Linear(H, 1)(x)))`` with ``x`` the
  source value of the same layer; Linear weight ~ N(0, 0.02), bias ``value`` (``init``; 0 when
  not given), so the gate starts near σ(init) (H + 1 parameters).
  Pools: ``masked_mean`` (padding excluded, the default), ``mean_unmasked`` (padding included,
  as the UniPELT authors' code), ``first`` (token 0).
- ``scalar`` — one learned scalar: ``g = sigmoid(w)``, ``w`` initialised to ``value`` (0).
- ``const`` — a fixed ``value``.
- ``none`` — no gate module at all (callers use their own default scale).

Sigmoid gates of one layer that read the same captured value with the same pooling are *fused*:
the first one asked computes all of them with one ``(H → n)`` matmul and caches the result for the
forward (``PeltState.groups`` lists the members; ``rewrite`` fills it). Each member keeps its own
weight and bias (stacked for the matmul), so members with different ``init`` fuse too.

Each gate keeps its last value, detached, shape ``(batch,)``; `read_gates` collects them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peltc.compiler.ir import GateSpec
from peltc.compiler.torch.state import PeltState


class Gate(nn.Module):
    """A gate of one attachment. ``key`` is ``(instance, layer, point)``."""

    def __init__(self, spec: GateSpec, hidden: int, key: tuple[str, int | None, str], state: PeltState,
                 *, reads_own: bool = False, device=None, dtype=None):
        super().__init__()
        self.kind = spec.kind
        self.source = spec.source
        self.pool = spec.pool
        self.const = float(spec.value) if spec.value is not None else (1.0 if spec.kind == "const" else 0.0)
        self.key = key
        self.reads_own = reads_own           # an adapter's gate reading its own input
        self.forced: float | None = None     # set by rewrite.force_gates (tests, ablations)
        self.last: torch.Tensor | None = None
        self.__dict__["_state"] = state      # shared context, not a submodule
        if self.kind == "sigmoid":
            self.proj = nn.Linear(hidden, 1, device=device, dtype=dtype)
            nn.init.normal_(self.proj.weight, 0.0, 0.02)
            nn.init.constant_(self.proj.bias, self.const)     # init (0 unless written)
        elif self.kind == "scalar":
            self.weight = nn.Parameter(torch.full((1,), self.const, device=device, dtype=dtype))

    @property
    def layer(self) -> int | None:
        return self.key[1]

    def extra_repr(self) -> str:
        return GateSpec(kind=self.kind, source=self.source, pool=self.pool,
                        value=self.const if self.kind != "sigmoid" or self.const else None).text()

    def forward(self, like: torch.Tensor, own: torch.Tensor | None = None) -> torch.Tensor:
        """Gate values, shape (batch,), for the batch of ``like`` (the tensor being scaled)."""
        batch = like.shape[0]
        if self.forced is not None:
            g = torch.full((batch,), self.forced, device=like.device, dtype=like.dtype)
        elif self.kind == "sigmoid":
            g = self._sigmoid(own)
        elif self.kind == "scalar":
            g = torch.sigmoid(self.weight).to(like.dtype).expand(batch)
        else:
            g = torch.full((batch,), self.const, device=like.device, dtype=like.dtype)
        return self._keep(g)

    def _keep(self, g: torch.Tensor) -> torch.Tensor:
        # plain attribute; skips nn.Module.__setattr__. A per-token (causal) gate keeps its value at the last
        # position: the pooled value over the whole sequence, as an encoder's gate.
        last = g[:, -1] if g.dim() == 2 else g
        self.__dict__["last"] = last.detach() if last.requires_grad else last
        return g

    def from_logits(self, logits: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """The values of a sigmoid gate reading its module's own input ``own``, from its logits (…, 1)
        computed elsewhere (`served.adapter_add`: inside the down-projection)."""
        state: PeltState = self.__dict__["_state"]
        return self._keep(pool_logits(logits, own, self.pool, state, ("own", id(self)))[..., 0])

    # --- sigmoid ---------------------------------------------------------------------------------
    def _sigmoid(self, own: torch.Tensor | None) -> torch.Tensor:
        state: PeltState = self.__dict__["_state"]
        if self.reads_own:
            if own is None:
                raise RuntimeError(f"gate {self.key}: reads its module's own input, none given")
            return pooled_sigmoid(own, self.proj.weight, self.proj.bias, self.pool, state,
                                  ("own", id(self)))[..., 0]
        x = state.value(self.layer, self.source)
        group, ck = group_of(self, state)
        hit = state.cache.get(ck)          # one computation per forward and source tensor
        if hit is None or hit[0] is not x:
            if len(group) == 1:
                w, b = group[0].proj.weight, group[0].proj.bias
            elif torch.is_grad_enabled() or not state.fuse:
                w, b = torch.cat([g.proj.weight for g in group]), torch.cat([g.proj.bias for g in group])
            else:                          # stacked once, not per forward
                ts = [t for g in group for t in (g.proj.weight, g.proj.bias)]
                w = state.pack(("gate_w", ck), ts, lambda: torch.cat([g.proj.weight for g in group]))
                b = state.pack(("gate_b", ck), ts, lambda: torch.cat([g.proj.bias for g in group]))
            hit = (x, pooled_sigmoid(x, w, b, self.pool, state, ck), {id(g): i for i, g in enumerate(group)})
            state.cache[ck] = hit
        return hit[1][..., hit[2][id(self)]]


def group_of(gate: Gate, state: PeltState) -> tuple[list[Gate], tuple]:
    """The fused group a sigmoid gate belongs to (itself alone when none) and the key of its per-forward
    result in ``state.cache``."""
    group = state.groups.get((gate.layer, gate.source, gate.pool)) or [gate]
    if not any(g is gate for g in group):
        group = [gate]
    ck = ("gate", gate.layer, gate.source, gate.pool) if len(group) > 1 else ("gate", id(gate))
    return group, ck


def pooled_sigmoid(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, pool: str,
                   state: PeltState, key=None) -> torch.Tensor:
    """(batch, n): ``pool_tokens(sigmoid(x W^T + b))`` for x of shape (batch, seq, H) or (batch, H).
    On a causal model (``state.causal``): (batch, seq, n), each token pooling itself and the tokens before
    it (`causal_pooled`)."""
    if weight.dtype != x.dtype:
        weight, bias = weight.to(x.dtype), bias.to(x.dtype)
    if getattr(state, "gate_norm", False):
        x = rms_normalised(x)
    if x.dim() == 3 and pool == "first" and not getattr(state, "causal", False):
        return torch.sigmoid(F.linear(x[:, 0], weight, bias))
    return pool_logits(F.linear(x, weight, bias), x, pool, state, key)


def pool_logits(logits: torch.Tensor, x: torch.Tensor, pool: str, state: PeltState, key=None) -> torch.Tensor:
    """`pooled_sigmoid` from the logits ``x W^T + b`` (batch, seq, n) or (batch, n) of the source ``x``."""
    if x.dim() == 2:
        return torch.sigmoid(logits)
    if getattr(state, "causal", False):
        return causal_pooled(torch.sigmoid(logits), pool, state, key)
    if pool == "first":
        return torch.sigmoid(logits[:, 0])
    s = torch.sigmoid(logits)                                            # (batch, seq, n)
    if pool == "masked_mean":
        m = state.token_mask(x)
        if m is not None:
            return (s * m).sum(1) / state.token_count(x)
    return s.mean(1)


def rms_normalised(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """x / rms(x) over the last dimension, no learned weight (``Family.gate_source_norm``): the gate of a
    pre-norm family reads its source at the scale an encoder's LayerNorm output has (‖x̂‖ = √H)."""
    return x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).to(x.dtype)


def causal_pooled(s: torch.Tensor, pool: str, state: PeltState, key) -> torch.Tensor:
    """(batch, seq, n): for each token t the pooling of ``s`` (batch, seq, n) over the tokens up to t —
    ``masked_mean``: over the real tokens ≤ t; ``mean_unmasked``: over all tokens ≤ t; ``first``: token 0.
    No token's gate reads a later token, so a causal LM stays causal, and the last token's value is the
    encoder's pooled value. When the forward continues a KV cache of ``state.past`` tokens
    (``state.continuing``, a generation step), the sums over those tokens come from ``state.carry[key]``:
    per-token running sums (batch, tokens, n) that the KV cache keeps (`state.attach_carry`), reordered
    with it by beam search and read at the cache's length (so a cropped cache reads its own)."""
    carry = state.carry.get(key) if state.continuing else None
    if pool == "first":
        first = carry if carry is not None and carry.shape[0] == s.shape[0] else s[:, 0]
        state.carry[key] = first.detach()
        return first.unsqueeze(1).expand_as(s)
    m = state.tail_mask(s) if pool == "masked_mean" else None
    if m is None:
        m = torch.ones((*s.shape[:2], 1), dtype=s.dtype, device=s.device)
    total, count = torch.cumsum(s * m, 1), torch.cumsum(m, 1)
    past = state.past
    if carry is not None and carry[0].shape[0] == s.shape[0] and carry[0].shape[1] >= past > 0:
        before_total, before_count = carry[0][:, :past], carry[1][:, :past]
        total, count = total + before_total[:, -1:], count + before_count[:, -1:]
        state.carry[key] = (torch.cat([before_total, total.detach()], 1), torch.cat([before_count, count.detach()], 1))
    else:
        state.carry[key] = (total.detach(), count.detach())
    return total / count.clamp_min(1.0)


def scale(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """t * g per example (g of shape (batch,) broadcast over t's other dimensions), or per token
    (g of shape (batch, seq): a decoder's causal gate)."""
    return t * g.view(*g.shape, *([1] * (t.dim() - g.dim())))


def read_gates(model: nn.Module) -> dict[tuple[str, int | None, str], torch.Tensor]:
    """The last value of every gate of a compiled model: ``{(instance, layer, point): (batch,)}``.

    Values are those of the most recent forward (detached); gates not run yet are left out.
    """
    return {m.key: m.last for m in model.modules() if isinstance(m, Gate) and m.last is not None}
