"""Cached generation on a compiled decoder: `generate()` with a KV cache gives the same tokens as a full
recompute at each step, with prefix + LoRA + adapters + gates together. The prefixes live outside the
cache (it holds only real tokens' keys); the causal gates carry their running sums from one step to
the next (`PeltState.carry`), kept on the cache: reordered with it by beam search, read at its length
after a crop, one cache's sums never another's."""

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


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_beam_search_with_cache_equals_beam_search_without(attn):
    """Beam search reorders the KV cache at every step (``Cache.reorder_cache(beam_idx)``); the causal gates'
    running sums travel with the cache, so each beam continues its own gate state, not its slot's."""
    model = tiny_decoder("llama", causal_lm=True, attn=attn)
    compile_model(SPEC, model)
    perturb(model, std=2.0)        # gates far from constant: with the gate state not reordered, the beams differ
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 9, 33, 70, 2]])
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, min_new_tokens=8, num_beams=3,
              num_return_sequences=3, do_sample=False, pad_token_id=0, output_scores=True,
              return_dict_in_generate=True)
    with torch.no_grad():
        cached = model.generate(input_ids=ids, use_cache=True, **kw)
        full = model.generate(input_ids=ids, use_cache=False, **kw)
    assert torch.equal(cached.sequences, full.sequences)
    torch.testing.assert_close(cached.sequences_scores, full.sequences_scores, rtol=1e-4, atol=1e-4)
    # the beams did get reordered (else the test would not exercise the reordering)
    assert (cached.beam_indices[:, 1:] != torch.arange(6).unsqueeze(1)).any()


def _cache_kw(model, cache):
    import inspect
    name = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    return {name: cache, "use_cache": True}


def test_a_cropped_cache_continues_from_its_own_length():
    """Assisted decoding crops rejected tokens off the cache; the gates' sums are read at the cache's length."""
    from transformers import DynamicCache
    model = tiny_decoder("llama", causal_lm=True)
    compile_model(SPEC, model)
    perturb(model, std=2.0)
    ids = torch.tensor([[5, 17, 42, 8, 61, 3, 90], [9, 9, 33, 70, 2, 44, 12]])
    more = torch.tensor([[7, 8], [21, 22]])
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=ids, **_cache_kw(model, cache))
        cache.crop(-2)                                     # drop the last two tokens
        step = model(input_ids=more, attention_mask=torch.ones(2, 7, dtype=torch.long),
                     **_cache_kw(model, cache)).logits
        full = model(input_ids=torch.cat([ids[:, :5], more], 1), use_cache=False).logits[:, 5:]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


def test_two_caches_keep_their_own_gate_sums():
    """A step continuing cache A after a forward that filled cache B reads A's sums, not the last forward's."""
    from transformers import DynamicCache
    model = tiny_decoder("llama", causal_lm=True)
    compile_model(SPEC, model)
    perturb(model, std=2.0)
    a, b = torch.tensor([[5, 17, 42, 8, 61]]), torch.tensor([[9, 9, 33, 70, 2]])
    nxt = torch.tensor([[11]])
    ca, cb = DynamicCache(config=model.config), DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=a, **_cache_kw(model, ca))
        model(input_ids=b, **_cache_kw(model, cb))
        step = model(input_ids=nxt, **_cache_kw(model, ca)).logits[:, -1]
        full = model(input_ids=torch.cat([a, nxt], 1), use_cache=False).logits[:, -1]
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)
