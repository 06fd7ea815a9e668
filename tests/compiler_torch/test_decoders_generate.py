"""Cached generation on a compiled decoder: `generate()` with a KV cache gives the same tokens as a full
recompute at each step, with prefix + LoRA + adapters + gates together. The prefixes live outside the
cache (it holds only real tokens' keys); the causal gates carry their running sums from one step to
the next (`PeltState.carry`)."""

from __future__ import annotations

import pytest
import torch
from torch_models import perturb, tiny_decoder

from peltc.api import compile_model
from peltc.compiler.torch.gate import read_gates

SPEC = ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
        "prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
        "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }\n"
        "adapter q { at layers[*].attention.output size 8 placement parallel gate sigmoid(layer.input, pool=first) }\n"
        "lora m { at layers[*].ffn.gate rank 2 gate sigmoid(attention.output, pool=mean_unmasked) }")


def _greedy_recompute(model, ids, steps):
    """Greedy decoding by a full forward (no cache) over the whole sequence at every step."""
    out = ids
    scores = []
    with torch.no_grad():
        for _ in range(steps):
            last = model(input_ids=out, attention_mask=torch.ones_like(out), use_cache=False).logits[:, -1]
            scores.append(last)
            out = torch.cat([out, last.argmax(-1, keepdim=True)], dim=1)
    return out, torch.stack(scores, 1)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["llama", "qwen3"])
def test_cached_generate_equals_full_recompute(family, attn):
    model = tiny_decoder(family, causal_lm=True, attn=attn)
    compile_model(SPEC, model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 9, 33, 70, 2]])
    steps = 8
    with torch.no_grad():
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                             min_new_tokens=steps, do_sample=False, use_cache=True, output_logits=True,
                             return_dict_in_generate=True, pad_token_id=0)
    full, scores = _greedy_recompute(model, ids, steps)
    assert torch.equal(gen.sequences, full)
    torch.testing.assert_close(torch.stack(gen.logits, 1), scores, rtol=1e-4, atol=1e-4)
    # the PELT modules matter: the bare base model generates otherwise
    assert read_gates(model)


def test_generation_differs_from_the_base_model():
    base = tiny_decoder("llama", causal_lm=True)
    model = tiny_decoder("llama", causal_lm=True)
    compile_model(SPEC, model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61]])
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        assert not torch.equal(model.generate(input_ids=ids, **kw), base.generate(input_ids=ids, **kw))
