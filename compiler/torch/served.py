"""Serving fast paths: fewer, larger kernels for forwards without autograd (eval, predict, generate).

Active when ``torch.is_grad_enabled()`` is False, the module is in eval mode, the model routes no runs and
``PeltState.fuse`` is on (``rewrite.serve_fused`` switches it; the benchmark's before / after). Training
never takes them. Each computes what the plain path computes, in other groupings (logits equal within
float rounding; tests/compiler_torch/test_served_fusion.py):

- **one down-projection per attention block** (`lora_down`): the LoRAs of the linears of one attention
  block (``rewrite`` groups them: ``PeltState.lora_groups``) read, on every family peltc knows, the same
  input ``x``; the first one called computes ``x @ [A_1; …; A_n]ᵀ`` for all of them in one matmul, and
  with it the logits of the layer's fused sigmoid gates when they read that same tensor (``layer.input``
  on an encoder), padded with zero rows to a multiple of 8 (`ROW_MULTIPLE`). Each member then takes its slice; a member called with another tensor (checked by
  identity) computes its own.
- **an adapter's gate inside its down-projection** (`adapter_add`): ``x @ [W_down; w_gate]ᵀ`` in one
  ``addmm``; the ``[c·u, c]`` block of the fused up-projection is built in that output (no ``cat``) and
  added in place into the residual stream.
- **in place**: a LoRA's ``B`` term is added into the base output with ``addmm_`` (no copy of it).

Stacked weights are built once and kept in ``PeltState.packs`` (`PeltState.pack`), rebuilt when one of
their parameters changes (its version counter or its storage: an optimizer step, ``load_state_dict``, ``.to()``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from peltc.compiler.torch.gate import Gate, group_of, pool_logits
from peltc.compiler.torch.state import PeltState

# the one down-projection's output width is padded with zero rows to a multiple of this: CPU GEMMs with a
# narrow output run markedly faster at a multiple of 8 (2048×384 @ 384×N, one thread: N = 19 ~1.3× N = 24)
ROW_MULTIPLE = 8
# activations applied in place to the down-projection's output (any other: out of place, copied back)
_IN_PLACE = {nn.ReLU: torch.relu_, nn.Tanh: torch.tanh_, nn.SiLU: lambda t: F.silu(t, inplace=True)}


def serving(state: PeltState | None, module: nn.Module) -> bool:
    """Whether this forward may take the fast paths (not under autocast: their in-place sums need one dtype)."""
    return (state is not None and state.fuse and not torch.is_grad_enabled() and not module.training
            and not state.routed and not torch.is_autocast_enabled("cpu") and not torch.is_autocast_enabled("cuda"))


def _as(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return w if w.dtype == x.dtype else w.to(x.dtype)


def _fusable_gate(g: Gate | None) -> bool:
    return g is not None and g.kind == "sigmoid" and g.forced is None


def lora_down(state: PeltState, lora, x: torch.Tensor) -> torch.Tensor | None:
    """``A x`` of ``lora`` (batch, …, rank), from its attention block's one matmul; None when it has no group."""
    gkey = lora.__dict__.get("_pelt_group")
    group = state.lora_groups.get(gkey) if gkey is not None else None
    if not group:
        return None
    ck = ("lora_down", gkey)
    hit = state.cache.get(ck)
    if hit is None or hit[0] is not x:
        gates, gate_key = _gates_reading(state, gkey[0], x)
        tensors = [t for g in gates for t in (g.proj.weight, g.proj.bias)] + [m.A.weight for m in group]
        rows = sum(m.rank for m in group)
        pad = -(rows + len(gates)) % ROW_MULTIPLE
        w = state.pack(("lora_A", gkey, len(gates)), tensors,
                       lambda: torch.cat([*(g.proj.weight for g in gates), *(m.A.weight for m in group),
                                          group[0].A.weight.new_zeros(pad, group[0].A.in_features)]))
        b = state.pack(("lora_Ab", gkey, len(gates)), tensors,
                       lambda: torch.cat([*(g.proj.bias for g in gates), group[0].A.weight.new_zeros(rows + pad)]))
        out = F.linear(x, _as(w, x), _as(b, x))
        if gates:
            gate_key(out[..., :len(gates)])
        offsets, at = {}, len(gates)
        for m in group:
            offsets[id(m)] = at
            at += m.rank
        hit = state.cache[ck] = (x, out, offsets)
    at = hit[2].get(id(lora))
    return None if at is None else hit[1][..., at:at + lora.rank]


def _gates_reading(state: PeltState, layer: int | None, x: torch.Tensor):
    """The fused sigmoid gate group of ``layer`` whose source value *is* ``x`` (an encoder's LoRAs and gates
    both read ``layer.input``), and a function storing their pooled values from the logits; else ``[]``."""
    if state.causal or state.gate_norm or layer is None:
        return [], None
    for (lay, source, pool), members in state.groups.items():
        if lay != layer or state.values.get((layer, source)) is not x:
            continue
        if not members or not all(_fusable_gate(g) for g in members):
            continue
        group, ck = group_of(members[0], state)
        if state.cache.get(ck) is not None and state.cache[ck][0] is x:
            continue                    # already computed this forward

        def store(logits, group=group, ck=ck, pool=pool):
            state.cache[ck] = (x, pool_logits(logits, x, pool, state, ck), {id(g): i for i, g in enumerate(group)})
        return group, store
    return [], None


def adapter_add(state: PeltState, adapter, z: torch.Tensor, x: torch.Tensor, own: torch.Tensor) -> torch.Tensor | None:
    """``z + g·s·A(x)`` with the gate's projection inside the down-projection, added into ``z`` in place
    (the caller's sum, not kept elsewhere); None when the gate does not read ``x`` itself."""
    g = adapter.gate
    fuse_gate = g is not None and _fusable_gate(g) and g.reads_own and own is x and not state.causal \
        and not state.gate_norm
    if g is not None and not fuse_gate:
        return None
    down, up = adapter.down, adapter.up
    size = down.out_features
    if fuse_gate:
        ts = [down.weight, down.bias, g.proj.weight, g.proj.bias]
        w = state.pack(("adapter_down", id(adapter)), ts, lambda: torch.cat([down.weight, g.proj.weight]))
        b = state.pack(("adapter_down_b", id(adapter)), ts, lambda: torch.cat([down.bias, g.proj.bias]))
        t = F.linear(x, _as(w, x), _as(b, x))                   # (..., size + 1): [down, gate logit]
    else:
        t = F.linear(x, down.weight, down.bias)
        t = torch.cat([t, t.new_ones((*t.shape[:-1], 1))], dim=-1)
    u = t[..., :size]
    act = _IN_PLACE.get(type(adapter.act))
    if act is not None:
        act(u)
    else:
        u.copy_(adapter.act(u))
    if fuse_gate:
        c = g.from_logits(t[..., size:], x)                              # (batch,)
        t[..., size:] = 1.0
        c = c * adapter.scale if adapter.scale != 1.0 else c
        t.mul_(c.to(t.dtype).view(*c.shape, *([1] * (t.dim() - c.dim()))))   # [c·u, c]
    elif adapter.scale != 1.0:
        t.mul_(adapter.scale)
    w_up = state.pack(("adapter_up", id(adapter)), [up.weight, up.bias],
                  lambda: torch.cat([up.weight, up.bias.unsqueeze(1)], dim=1))
    z2 = z.view(-1, z.shape[-1]) if z.is_contiguous() else z.reshape(-1, z.shape[-1])
    out = z2.addmm_(t.reshape(-1, size + 1), _as(w_up, t).t())
    return out.view(z.shape)


def lora_add(state: PeltState, lora, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
    """``y + s · B A x``, ``A x`` from the block's one matmul, added into ``y`` (the base output) in place."""
    a = lora_down(state, lora, x)
    if a is None:
        return None
    if lora.gate is None:
        a = a * lora.scaling
    else:
        gv = lora.gate(a)
        a = a * gv.view(*gv.shape, *([1] * (a.dim() - gv.dim())))
    y2 = y.view(-1, y.shape[-1]) if y.is_contiguous() else None
    if y2 is None:
        return torch.addmm(y.reshape(-1, y.shape[-1]), a.reshape(-1, a.shape[-1]), lora.B.weight.t()).view(y.shape)
    return y2.addmm_(a.reshape(-1, a.shape[-1]), lora.B.weight.t()).view(y.shape)
