"""Head pooling ``mean``: the family's own head reads the first token's hidden state (BERT's pooler,
RoBERTa/ELECTRA's classification head, DistilBERT's pre_classifier, DeBERTa's ContextPooler).
A forward hook on the encoder (registered by ``rewrite``) replaces token 0 of the encoder output
by the masked mean over the tokens, so every family's head consumes the mean unchanged.
``last_hidden_state[:, 0]`` therefore holds the mean too (documented in the report).
"""

from __future__ import annotations

import torch

from peltc.compiler.torch.state import PeltState


def masked_mean(h: torch.Tensor, state: PeltState) -> torch.Tensor:
    """(batch, H): mean of h (batch, seq, H) over the tokens of the current mask."""
    m = state.token_mask(h)
    if m is None:
        return h.mean(1)
    return (h * m).sum(1) / m.sum(1).clamp_min(1.0)


def mean_pool_hook(state: PeltState):
    """Forward hook on the encoder: token 0 of the output ← masked mean over tokens."""
    def replace(h: torch.Tensor) -> torch.Tensor:
        return torch.cat([masked_mean(h, state).unsqueeze(1), h[:, 1:]], dim=1)

    def hook(module, args, output):
        if isinstance(output, torch.Tensor):
            return replace(output)
        if isinstance(output, tuple):
            return (replace(output[0]), *output[1:])
        output.last_hidden_state = replace(output.last_hidden_state)
        return output
    return hook
