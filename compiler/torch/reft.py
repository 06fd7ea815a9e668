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
the prompt is what the labels leave out, -100), so the positions trained are the positions generated from;
a forward that reads a teacher-forced example without its labels says its prompt with `prompt_held`.

Entry points: `build` (one `LoReFT` per layer), `count` (its trainable size), `positions` (the
boolean masks of the chosen tokens), `generate`, `prompt_held`. The hook is a function here (`intervene`); ``rewrite``
registers it.
"""

from __future__ import annotations

import contextlib

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
    m = state.mask
    if m is None or m.shape[0] != batch or m.shape[1] != past + seq:
        m = torch.ones(batch, past + seq, dtype=torch.long, device=h.device)
    m = _prompt_mask(state, m.to(h.device))
    real = m != 0
    rank = real.long().cumsum(1)                              # 1, 2, … over each row's real tokens
    length = rank[:, -1:]
    here, r = real[:, past:], rank[:, past:]                  # h's tokens
    pf = here & (r <= first) if first > 0 else None
    pl = here & (r > length - last) if last > 0 else None
    return pf, pl


def _prompt_mask(state: PeltState, m: torch.Tensor) -> torch.Tensor:
    """The mask positions count on: the forward's own ``m`` (batch, past + seq), or the prompt's over the
    same columns (its tokens after the prompt: 0) while ``state.prompt_kind`` is set — inside `generate` the
    first forward's mask is the prompt (taken here); training on token labels, the labels' prompt follows
    the columns a soft prompt put first (taken from ``m``). Beam search and ``num_return_sequences`` repeat
    each prompt's row."""
    if state.prompt_kind is None:
        return m
    if state.prompt is None:                                   # generate's first forward
        state.prompt = m.clone()
        return m
    p = state.prompt.to(m.device)
    batch, total = m.shape
    if batch != p.shape[0]:
        if batch % p.shape[0]:
            return m
        p = p.repeat_interleave(batch // p.shape[0], 0)
    if state.prompt_kind == "labels" and p.shape[1] < total:
        return torch.cat([m[:, :total - p.shape[1]], p.to(m.dtype)], 1)
    if p.shape[1] >= total:
        return p[:, :total].to(m.dtype)
    return torch.cat([p.to(m.dtype), m.new_zeros(batch, total - p.shape[1])], 1)


def generate(self, *args, **kwargs):
    """The model's own ``generate``, LoReFT's positions held at the prompt's while it runs (its first
    forward's mask — the mask generate made, soft-prompt columns included), in every forward of the
    generation, cached or not. ``rewrite`` binds it to a compiled decoder holding LoReFT (``model.generate``;
    a deep copy rebinds it to the copy)."""
    from peltc.compiler.torch.compiled import compiled

    with _holding(compiled(self).state, None, "generate"):
        return type(self).generate(self, *args, **kwargs)


def prompt_from_labels(state: PeltState, module, args, kwargs) -> None:
    """Forward pre-hook (with_kwargs) on a compiled decoder: a forward given token-level ``labels`` (a
    generation task's training and evaluation: -100 on the prompt) holds its prompt, the real tokens
    labelled -100, in ``state.prompt`` — LoReFT's positions are the prompt's when training as when
    generating. A row without one (plain language-model labels) keeps its real tokens. Not inside
    `generate`; `prompt_done` (called even when the forward raises) clears it."""
    labels = kwargs.get("labels")
    if state.prompt_kind is not None or not isinstance(labels, torch.Tensor) or labels.dim() != 2:
        return
    state.prompt, state.prompt_kind = labels_prompt(labels, kwargs.get("attention_mask")), "labels"


def labels_prompt(labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, seq) long: 1 on each row's prompt — its real tokens labelled -100. A row with none (plain
    language-model labels, every real token learned; or a prompt cut away by max_length) keeps all its
    real tokens, as a forward without labels counts them."""
    real = mask != 0 if isinstance(mask, torch.Tensor) and mask.shape == labels.shape else torch.ones_like(labels, dtype=torch.bool)
    prompt = (labels == -100) & real
    return torch.where(prompt.any(1, keepdim=True), prompt, real).long()


@contextlib.contextmanager
def prompt_held(model: nn.Module, labels: torch.Tensor, mask: torch.Tensor | None):
    """LoReFT's positions in the forward inside counted as a forward given these token ``labels`` would
    count them (`prompt_from_labels`, `labels_prompt`) — for one that reads teacher-forced examples without
    their labels, so computes no loss (the generation task's diagnostics). A model that is not compiled is
    left alone."""
    pelt = model.__dict__.get("_pelt")
    if pelt is None:
        yield
        return
    with _holding(pelt.state, labels_prompt(labels, mask), "labels"):
        yield


@contextlib.contextmanager
def _holding(state: PeltState, prompt: torch.Tensor | None, kind: str):
    """``state.prompt`` and ``state.prompt_kind`` set for the block, restored after it (even when it raises)."""
    before = state.prompt, state.prompt_kind
    state.prompt, state.prompt_kind = prompt, kind
    try:
        yield
    finally:
        state.prompt, state.prompt_kind = before


def prompt_done(state: PeltState, module, args, output) -> None:
    if state.prompt_kind == "labels":
        state.prompt, state.prompt_kind = None, None


def intervene(module: nn.Module, args, output):
    """Forward hook on a layer: its output hidden states through each enabled `LoReFT` (in declaration
    order); a tuple output keeps its other members."""
    h = output[0] if isinstance(output, tuple) else output
    for r in module.pelt_reft.values():
        if r.enabled and not route_absent(r):
            h = r(h)
    return (h, *output[1:]) if isinstance(output, tuple) else h
