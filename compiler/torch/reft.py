"""LoReFT (Wu et al. 2024) on a layer's output: at chosen token positions the hidden state h becomes

    Φ(h) = h + Rᵀ (W h + b − R h)

R (r × d) with orthonormal rows (torch's orthogonal parametrisation, Householder form without a
trivialisation buffer, so the saved parameters alone determine R; its ``original`` keeps ±1 signs on the
diagonal, which get no gradient — the trainer leaves it out of weight decay, which would zero them —
and a Householder product of d × r costs O(d r²) a forward where the matrix exponential would cost
O(d³)), W (r × d) and b (r) learned.
Positions: the first ``first`` and the last ``last`` real tokens of each sequence (the attention mask
says which tokens are real, left or right padding alike; no mask: every token is), each side with its
own intervention unless ``tied`` (AdapterHub's ``tied_weights``). Where the two sides overlap (a
sequence shorter than first + last) the last positions' intervention is the one applied, as
AdapterHub's scatter order does. Identity at init by construction: W starts equal to R and b at 0, so
W h + b − R h = 0 (AdapterHub starts W at random: its model changes at init).

Behind a gate ``g``: Φ(h) = h + g · Rᵀ(W h + b − R h). Not mergeable: it edits the hidden states of
chosen positions, which no weight change reproduces.

Generating on a decoder (`generate`, which ``rewrite`` puts in place of the model's own), the positions
are the prompt's: its first and last real tokens, in every forward of the generation, and no generated
token is intervened on (as pyreft and AdapterHub intervene on the prompt). A position counted at the end of
the growing sequence would move with each new token, so cached and uncached generation would differ;
counted on the prompt they agree exactly. Training a generation task does the same (`prompt_from_labels`:
the prompt is what the labels leave out, -100), so the positions trained are the positions generated from.

Entry points: `build` (one `LoReFT` per layer), `count` (its trainable size), `positions` (the
boolean masks of the chosen tokens), `generate`. The hook is a function here (`intervene`); ``rewrite``
registers it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.state import PeltState, mask_like, route_absent, route_mask


class ReftUnit(nn.Module):
    """One intervention: ``Rᵀ(W h + b − R h)`` (the change, without h)."""

    def __init__(self, hidden: int, rank: int, *, device=None, dtype=None):
        super().__init__()
        # torch's Householder product has no half-precision kernel: R is kept in float32 on a
        # float16 / bfloat16 model (as AdapterHub does) and cast to the hidden states' dtype
        rdtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
        self.R = orthogonal(nn.Linear(hidden, rank, bias=False, device=device, dtype=rdtype),
                            use_trivialization=False)
        self.W = nn.Linear(hidden, rank, bias=True, device=device, dtype=dtype)
        with torch.no_grad():
            self.W.weight.copy_(self.R.weight)
            self.W.bias.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        r = self.R.weight
        r = r if r.dtype == h.dtype else r.to(h.dtype)
        return (self.W(h) - h @ r.t()) @ r


class LoReFT(nn.Module):
    """One instance's interventions on one layer: ``units[0]`` for the first positions (or both sides
    when tied), ``units[-1]`` for the last ones."""

    def __init__(self, hidden: int, rank: int, first: int, last: int, tied: bool, gate: Gate | None,
                 state: PeltState, *, device=None, dtype=None):
        super().__init__()
        self.first, self.last, self.tied = int(first), int(last), bool(tied)
        n = count_units(self.first, self.last, self.tied)
        self.units = nn.ModuleList(ReftUnit(hidden, rank, device=device, dtype=dtype) for _ in range(n))
        self.gate = gate
        self.enabled = True
        self.__dict__["_state"] = state

    def extra_repr(self) -> str:
        return f"rank={self.units[0].W.out_features}, first={self.first}, last={self.last}, tied={self.tied}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        state: PeltState = self.__dict__["_state"]
        pf, pl = positions(state, h, self.first, self.last)
        g = None if self.gate is None else self.gate(h)
        m = route_mask(self, h)
        if m is not None:
            g = m if g is None else g * mask_like(m, g)
        sides = []
        if pf is not None:
            sides.append((self.units[0], pf & ~pl if pl is not None else pf))
        if pl is not None:
            sides.append((self.units[-1], pl))
        out = h
        for unit, where in sides:
            w = where.to(h.dtype)
            if g is not None:
                w = w * g.view(*g.shape, *([1] * (w.dim() - g.dim())))
            out = out + w.unsqueeze(-1) * unit(h)
        return out


def count_units(first: int, last: int, tied: bool) -> int:
    sides = int(first > 0) + int(last > 0)
    return min(sides, 1) if tied else sides


def build(hidden: int, rank: int, first: int, last: int, tied: bool, gate: Gate | None, state: PeltState,
          **where) -> LoReFT:
    return LoReFT(hidden, rank, first, last, tied, gate, state, **where)


def count(hidden: int, rank: int, first: int, last: int, tied: bool) -> int:
    """Trainable entries per layer (the loreft row of `compiler.schema.METHODS` counts it from dims)."""
    return count_units(first, last, tied) * (2 * rank * hidden + rank)


def positions(state: PeltState, h: torch.Tensor, first: int, last: int
              ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Boolean (batch, seq) masks of ``h``'s tokens among the first ``first`` / the last ``last`` real
    tokens of each sequence (None for a side with no positions). A forward continuing a KV cache of
    ``state.past`` tokens counts in the whole sequence; inside `generate`, only the prompt's tokens count
    (``state.prompt``: the tokens after it are never chosen)."""
    batch, seq = h.shape[0], h.shape[1]
    past = state.past if state.continuing else 0
    m = _prompt_mask(state.prompt, batch, past + seq)
    if m is None:
        m = state.mask
    if m is None or m.shape[0] != batch or m.shape[1] != past + seq:
        m = torch.ones(batch, past + seq, dtype=torch.long, device=h.device)
    m = m.to(h.device)
    real = m != 0
    offset = real.long().argmax(1, keepdim=True)             # first real token (left padding)
    length = real.long().sum(1, keepdim=True)
    pos = torch.arange(past, past + seq, device=h.device).unsqueeze(0)   # positions of h's tokens
    here = real[:, past:]
    pf = pl = None
    if first > 0:
        pf = here & (pos >= offset) & (pos < offset + torch.clamp(length, max=first))
    if last > 0:
        end = offset + length
        pl = here & (pos < end) & (pos >= end - torch.clamp(length, max=last))
    return pf, pl


def _prompt_mask(prompt: torch.Tensor | None, batch: int, total: int) -> torch.Tensor | None:
    """The prompt's mask over a sequence of ``total`` tokens (its tokens after the prompt: 0), one row per
    example (beam search and ``num_return_sequences`` repeat each prompt's row); None outside `generate`."""
    if prompt is None or prompt.dim() != 2 or batch % prompt.shape[0] != 0:
        return None
    p = prompt.repeat_interleave(batch // prompt.shape[0], 0) if batch != prompt.shape[0] else prompt
    if p.shape[1] >= total:
        return p[:, :total]
    return torch.cat([p, p.new_zeros(batch, total - p.shape[1])], 1)


def generate(self, *args, **kwargs):
    """The model's own ``generate`` with the prompt's mask (``attention_mask``, else every token of
    ``input_ids`` / ``inputs_embeds``) held in the state while it runs: LoReFT's positions are the prompt's
    in every forward of the generation, cached or not. ``rewrite`` binds it to a compiled decoder holding
    LoReFT (``model.generate``; a deep copy rebinds it to the copy)."""
    from peltc.compiler.torch.compiled import compiled

    state = compiled(self).state
    mask = kwargs.get("attention_mask")
    if mask is None:
        like = kwargs.get("input_ids", args[0] if args else None)
        if like is None and kwargs.get("inputs_embeds") is not None:
            like = kwargs["inputs_embeds"][..., 0]
        if isinstance(like, torch.Tensor):
            mask = torch.ones(like.shape[:2], dtype=torch.long, device=like.device)
    before, state.prompt = state.prompt, mask
    try:
        return type(self).generate(self, *args, **kwargs)
    finally:
        state.prompt = before


def prompt_from_labels(state: PeltState, module, args, kwargs) -> None:
    """Forward pre-hook (with_kwargs) on a compiled decoder: a forward given token-level ``labels`` (a
    generation task's training and evaluation: -100 on the prompt) holds its prompt's mask, the real tokens
    labelled -100, in ``state.prompt`` — LoReFT's positions are the prompt's when training as when
    generating. Outside `generate` only; `prompt_done` clears it."""
    labels = kwargs.get("labels")
    if state.prompt is not None or not isinstance(labels, torch.Tensor) or labels.dim() != 2:
        return
    prompt = labels == -100
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.shape == labels.shape:
        prompt &= mask != 0
    state.prompt = prompt.long()
    state.__dict__["_prompt_from_labels"] = True


def prompt_done(state: PeltState, module, args, output) -> None:
    if state.__dict__.pop("_prompt_from_labels", False):
        state.prompt = None


def intervene(module: nn.Module, args, output):
    """Forward hook on a layer: its output hidden states through each enabled `LoReFT` (in declaration
    order); a tuple output keeps its other members."""
    h = output[0] if isinstance(output, tuple) else output
    for r in module.pelt_reft.values():
        if r.enabled and not route_absent(r):
            h = r(h)
    return (h, *output[1:]) if isinstance(output, tuple) else h
