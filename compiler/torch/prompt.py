"""Prompt tuning (Lester et al.) and P-tuning (Liu et al.): n learned vectors prepended to the input
embeddings, at the global point ``embeddings``.

One `Prompt` per instance lives on the base model (``base.pelt_prompt[instance]``). Its vectors are
``embedding.weight`` (n, E), E the width of the word embeddings, or — P-tuning, ``encoder mlp|lstm`` —
the output of a `PromptEncoder` (peft's ``PromptEncoder`` layout: ``embedding``, ``lstm_head``,
``mlp_head``), computed once per forward and folded into a plain ``embedding`` after training
(`fold`: identical outputs; a folded P-tuning instance *is* a prompt-tuning instance).

A forward pre-hook on the base model (`prepend_hook`, registered by ``rewrite`` before the `PeltState`
hooks, so every gate and pooling sees the extended mask) rewrites the call as peft 0.21 does:

- ``inputs_embeds = [g·P ; word_embeddings(input_ids)]`` (several instances: concatenated in spec order);
- ``attention_mask``: n ones prepended; ``token_type_ids``: n zeros prepended;
- ``position_ids`` when given: ``[0 … n−1 ; position_ids + n]``, ``cache_position`` when given: ``+ n``
  with ``0 … n−1`` prepended. peft drops given position ids and lets the model count from 0 over the
  n + seq positions, which is the same numbers for unpadded or right-padded rows (a test checks both
  without position ids); keeping given ids shifted also keeps a left-padded generation's positions.
- a forward that continues a KV cache (a generation step) prepends nothing: the cache already holds the
  prompt; the mask still gets its n ones and positions their + n, so cached == uncached generation.

Output (``slice_hook`` on the base model, decoders only): the n prompt positions are cut from the base
model's hidden states, so an LM's logits line up with its labels (peft instead pads labels with −100
and returns n + seq logits) and a decoder classifier reads the last real token. Encoders keep all
n + seq positions: the pooler / classification head reads position 0, the first prompt vector, as with
peft; ``head { pool mean }`` averages over the prompt outputs and the real tokens (the extended mask).

Gate: ``g`` (``scalar`` or ``const``; sigmoid gates read a layer value and are refused at a global point)
scales the prompt vectors. ``g = 0`` gives zero vectors, which still take n positions: not the model
without a prompt.
"""

from __future__ import annotations

import inspect
import math
from functools import partial

import torch
from torch import nn

from peltc.compiler.torch.gate import Gate
from peltc.errors import CompileError

ENCODERS = ("none", "mlp", "lstm")
LSTM_LAYERS = 2       # peft's PromptEncoderConfig.encoder_num_layers default


class PromptEncoder(nn.Module):
    """P-tuning's reparameterisation, peft's ``PromptEncoder`` (same parameter names and layout):
    ``mlp``: Embedding(n, E) → Linear(E, H) → ReLU → Linear(H, H) → ReLU → Linear(H, E);
    ``lstm``: Embedding(n, E) → bidirectional 2-layer LSTM(E, H) → Linear(2H, 2H) → ReLU → Linear(2H, E)."""

    def __init__(self, length: int, dim: int, kind: str, hidden: int, *, device=None, dtype=None):
        super().__init__()
        self.length, self.dim, self.kind = length, dim, kind
        kw = {"device": device, "dtype": dtype}
        self.embedding = nn.Embedding(length, dim, **kw)
        if kind == "lstm":
            self.lstm_head = nn.LSTM(dim, hidden, num_layers=LSTM_LAYERS, bidirectional=True, batch_first=True, **kw)
            self.mlp_head = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden, **kw), nn.ReLU(),
                                          nn.Linear(2 * hidden, dim, **kw))
        else:
            self.mlp_head = nn.Sequential(nn.Linear(dim, hidden, **kw), nn.ReLU(), nn.Linear(hidden, hidden, **kw),
                                          nn.ReLU(), nn.Linear(hidden, dim, **kw))

    def forward(self) -> torch.Tensor:
        """(n, E): the prompt vectors."""
        x = self.embedding.weight.unsqueeze(0)
        if self.kind == "lstm":
            x = self.lstm_head(x)[0]
        return self.mlp_head(x)[0]


class Prompt(nn.Module):
    """One instance's soft prompt: ``embedding`` (n, E), or a `PromptEncoder` until folded."""

    def __init__(self, length: int, dim: int, gate: Gate | None, encoder: str = "none", hidden: int = 0,
                 *, device=None, dtype=None):
        super().__init__()
        self.length, self.dim = length, dim
        self.gate = gate
        self.enabled = True
        if encoder == "none":
            self.embedding = nn.Embedding(length, dim, device=device, dtype=dtype)   # N(0, 1), as peft
        else:
            self.encoder = PromptEncoder(length, dim, encoder, hidden, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"length={self.length}, encoded={'encoder' in self._modules}"

    def vectors(self) -> torch.Tensor:
        """(n, E), ungated."""
        enc = self._modules.get("encoder")
        return self.embedding.weight if enc is None else enc()

    @torch.no_grad()
    def start_at(self, rows: torch.Tensor) -> None:
        """Start the prompt (or its encoder's input embedding) at ``rows`` (n, E)."""
        target = self.embedding if "encoder" not in self._modules else self.encoder.embedding
        target.weight.copy_(rows.to(target.weight.dtype))


# --- entry points: build, count (compiler/counts.py), fold ----------------------------------------------

def build(length: int, dim: int, gate: Gate | None, encoder: str, hidden: int, *, device=None, dtype=None
          ) -> Prompt:
    """A fresh `Prompt` (random init: nn.Embedding's N(0, 1), as peft's RANDOM)."""
    return Prompt(length, dim, gate, encoder, hidden, device=device, dtype=dtype)


def init_ids(init: str, length: int, vocab: int, text_ids: list[int] | None = None) -> list[int] | None:
    """Vocabulary rows a prompt starts from: ``vocab`` n ids drawn uniformly (torch's generator, as peft's
    SAMPLE_VOCAB); ``text`` the text's token ids (special tokens included, as peft) repeated or cut to n;
    ``random`` None (the embedding's own init)."""
    if init == "vocab":
        return torch.randint(0, vocab, (length,)).tolist()
    if init == "text":
        ids = list(text_ids or [])
        return (ids * math.ceil(length / len(ids)))[:length]
    return None


def fold(prompt: Prompt) -> bool:
    """Replace the P-tuning encoder by its output as a plain ``embedding`` (identical outputs); False when
    there is nothing to fold."""
    enc = prompt._modules.get("encoder")
    if enc is None:
        return False
    with torch.no_grad():
        rows = enc().detach().clone()
    emb = nn.Embedding(prompt.length, prompt.dim, device=rows.device, dtype=rows.dtype)
    with torch.no_grad():
        emb.weight.copy_(rows)
    emb.weight.requires_grad_(enc.embedding.weight.requires_grad)
    del prompt.encoder
    prompt.embedding = emb
    return True


# --- the forward rewrite -----------------------------------------------------------------------------

def _active(host: nn.ModuleDict) -> list[Prompt]:
    return [p for p in host.values() if p.enabled]


def _past(kwargs: dict) -> int:
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    try:
        return int(cache.get_seq_length()) if cache is not None else 0
    except (AttributeError, TypeError):
        return 0


def _prepend(host: nn.ModuleDict, names: tuple[str, ...], module, args, kwargs):
    prompts = _active(host)
    host.__dict__["_pelt_prepended"] = 0
    if not prompts:
        return None
    kw = dict(zip(names, args))
    kw.update(kwargs)
    n = sum(p.length for p in prompts)
    ids, embeds = kw.get("input_ids"), kw.get("inputs_embeds")
    first = _past(kw) == 0
    if first:
        if embeds is None:
            embeds = module.get_input_embeddings()(ids)
        batch = embeds.shape[0]
        parts = []
        for p in prompts:
            v = p.vectors().to(embeds.dtype).unsqueeze(0).expand(batch, -1, -1)
            if p.gate is not None:
                v = v * p.gate(embeds).to(embeds.dtype).view(batch, 1, 1)
            parts.append(v)
        kw["inputs_embeds"] = torch.cat([*parts, embeds], dim=1)
        kw["input_ids"] = None
        tt = kw.get("token_type_ids")
        if tt is not None:
            kw["token_type_ids"] = torch.cat([tt.new_zeros(tt.shape[0], n), tt], dim=1)
        host.__dict__["_pelt_prepended"] = n
    pos = kw.get("position_ids")
    if pos is not None:
        kw["position_ids"] = torch.cat([torch.arange(n, device=pos.device, dtype=pos.dtype).expand(
            pos.shape[0], n), pos + n], dim=-1) if first else pos + n
    cp = kw.get("cache_position")
    if cp is not None:
        kw["cache_position"] = torch.cat([torch.arange(n, device=cp.device, dtype=cp.dtype), cp + n]) \
            if first else cp + n
    mask = kw.get("attention_mask")
    if isinstance(mask, torch.Tensor):
        if mask.dim() != 2:
            raise CompileError(f"a soft prompt extends a 2-D attention mask; this call gave a {mask.dim()}-D one",
                               code="C046", help="call the model with a (batch, seq) attention_mask")
        kw["attention_mask"] = torch.cat([mask.new_ones(mask.shape[0], n), mask], dim=1)
    return (), kw      # no mask: the model's own default (every position attends) over n + seq positions


def prepend_hook(host: nn.ModuleDict, forward) -> partial:
    """Forward pre-hook (with_kwargs) on the base model: prepend the prompts (see the module docstring)."""
    names = tuple(p.name for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    return partial(_prepend, host, names)


def _slice(host: nn.ModuleDict, module, args, kwargs, output):
    n = host.__dict__.get("_pelt_prepended", 0)
    if not n:
        return None
    if isinstance(output, tuple):
        return (output[0][:, n:], *output[1:])
    output.last_hidden_state = output.last_hidden_state[:, n:]
    hs = getattr(output, "hidden_states", None)
    if hs is not None:
        output.hidden_states = tuple(h[:, n:] for h in hs)
    return output


def slice_hook(host: nn.ModuleDict) -> partial:
    """Forward hook (with_kwargs) on a decoder's base model: cut the prompt positions from its output."""
    return partial(_slice, host)


