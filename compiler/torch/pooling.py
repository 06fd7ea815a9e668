"""Head pooling ``mean``: the family's own head reads the first token's hidden state (BERT's pooler,
RoBERTa/ELECTRA's classification head, DistilBERT's pre_classifier, DeBERTa's ContextPooler).
A forward hook on the encoder (registered by ``rewrite``) replaces token 0 of the encoder output
by the masked mean over the tokens, so every family's head consumes the mean unchanged.
``last_hidden_state[:, 0]`` therefore holds the mean too (documented in the report).

A family with a frozen *pretrained* pooler (BERT: dense + tanh, trained for next-sentence
prediction) would squash the mean through it before the classifier; measured on the packaged
MiniLM, a linear probe on SST-2 (K = 100, seed 1) drops from 69.0% on the mean to 58.4% on
tanh(dense(mean)). With ``pool mean`` that pooler is bypassed (``bypass_pooler_hook``), so the
classifier reads the masked mean itself, as a sentence-embedding model intends.
"""

from __future__ import annotations

from functools import partial

import torch

from peltc.compiler.torch.state import PeltState


def masked_mean(h: torch.Tensor, state: PeltState) -> torch.Tensor:
    """(batch, H): mean of h (batch, seq, H) over the tokens of the current mask."""
    m = state.token_mask(h)
    if m is None:
        return h.mean(1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def _chosen(state: PeltState, runs: frozenset[int] | None, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """``new`` for the examples of ``runs`` (several runs on one base, each with its own head pooling),
    ``old`` for the others; ``new`` everywhere when ``runs`` is None."""
    if runs is None or state.route is None:
        return new
    sel = sum((state.route == r for r in runs), torch.zeros_like(state.route, dtype=torch.bool)).to(new.device)
    return torch.where(sel.view(-1, *([1] * (new.dim() - 1))), new, old)


def _replace_first(h: torch.Tensor, state: PeltState, runs: frozenset[int] | None = None) -> torch.Tensor:
    return _chosen(state, runs, torch.cat([masked_mean(h, state).unsqueeze(1), h[:, 1:]], dim=1), h)


def _mean_pool(state: PeltState, runs, module, args, output):
    if isinstance(output, torch.Tensor):
        return _replace_first(output, state, runs)
    if isinstance(output, tuple):
        return (_replace_first(output[0], state, runs), *output[1:])
    output.last_hidden_state = _replace_first(output.last_hidden_state, state, runs)
    return output


def mean_pool_hook(state: PeltState, runs: frozenset[int] | None = None):
    """Forward hook on the encoder: token 0 of the output ← masked mean over tokens (with ``runs``: only
    for the examples of those runs, on a model routing several runs)."""
    return partial(_mean_pool, state, runs)


def _bypass_pooler(module, args, output):
    return args[0][:, 0]


def _bypass_pooler_routed(state: PeltState, runs: frozenset[int], module, args, output):
    return _chosen(state, runs, args[0][:, 0], output)


def bypass_pooler_hook(state: PeltState | None = None, runs: frozenset[int] | None = None):
    """Forward hook on a frozen pooler: its output ← its input's first token (the mean, see above); with
    ``runs``, only for the examples of those runs."""
    return _bypass_pooler if runs is None else partial(_bypass_pooler_routed, state, runs)


def _mean_pool_all(state: PeltState, runs, module, args, output):
    def every(h):
        return _chosen(state, runs, masked_mean(h, state).unsqueeze(1).expand_as(h), h)
    if isinstance(output, torch.Tensor):
        return every(output)
    if isinstance(output, tuple):
        return (every(output[0]), *output[1:])
    output.last_hidden_state = every(output.last_hidden_state)
    return output


def mean_pool_all_hook(state: PeltState, runs: frozenset[int] | None = None):
    """Forward hook on a decoder's base model: every position of the output ← the masked mean over tokens,
    so a head reading the last non-pad token (``*ForSequenceClassification``) reads the mean. Only the head
    sees it (it is the base model's output); a causal LM's next-token head must not (rewrite refuses)."""
    return partial(_mean_pool_all, state, runs)
