"""Prefix-tuning on decoders through the registered attention function (never past_key_values):
prefix K/V of num_key_value_heads × head_dim per layer, prepended after RoPE (the prefix keys carry no
rotation), an explicit causal mask with always-visible prefix columns, real tokens at their own
positions — checked against the same prefixes handed to the *base* model as a pre-filled KV cache
with positions 0…n−1. Gates on a decoder are per token (causal pooling): a compiled decoder with
prefix + LoRA + adapter + gates stays causal."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_models import DECODERS, logits, perturb, tiny_batch, tiny_decoder, per_query_gate_case

from peltc.api import compile_model
from peltc.compiler.torch.prefix import Prefix, _gated_per_query, _stock


def _reference(base, prefixes: dict[int, torch.Tensor], batch):
    """The base model with each layer's prefix (2, L, W) as a pre-filled KV cache, positions 0…n−1."""
    from transformers import DynamicCache
    cfg = base.config
    ids, mask = batch["input_ids"], batch["attention_mask"]
    b, n = ids.shape
    hd = cfg.head_dim if getattr(cfg, "head_dim", None) else cfg.hidden_size // cfg.num_attention_heads
    cache = DynamicCache(config=cfg)
    length = next(iter(prefixes.values())).shape[1]
    for i in range(cfg.num_hidden_layers):
        kv = prefixes[i].view(2, length, -1, hd).transpose(1, 2).unsqueeze(1).expand(2, b, -1, length, hd)
        cache.update(kv[0].contiguous(), kv[1].contiguous(), i)
    full = torch.cat([torch.ones(b, length, dtype=mask.dtype), mask], dim=1)
    # the cache argument is `past_key_values` up to transformers 5.2x, `cache` since (CI tests both)
    import inspect
    name = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"
    with torch.no_grad():
        return base(input_ids=ids, attention_mask=full, position_ids=torch.arange(n).expand(b, n),
                    use_cache=True, **{name: cache}).logits


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("padded", [True, False])
def test_prefix_equals_a_prefilled_cache_at_unshifted_positions(family, attn, padded):
    base = tiny_decoder(family, causal_lm=True, attn=attn)
    model = copy.deepcopy(base)
    report = compile_model("prefix p { at layers[*].attention length 3 mlp none }", model)
    kv = 2 * (24 if family == "qwen3" else 16)             # num_key_value_heads × head_dim
    assert report.instance("p").saved == 2 * (2 * 3 * kv)
    perturb(model, std=1.0)
    prefixes = {i: model.model.layers[i].self_attn.pelt_prefix["p"].prefix.detach() for i in range(2)}
    assert prefixes[0].shape == (2, 3, kv)
    batch = tiny_batch()
    if not padded:
        batch["attention_mask"] = torch.ones_like(batch["attention_mask"])
    out = logits(model, batch)
    ref = _reference(base, prefixes, batch)
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(out[real], ref[real], rtol=1e-4, atol=1e-4)
    assert (out - logits(base, batch)).abs().max() > 1e-3


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_per_query_gate_scales_prefix_keys_and_values_per_query(attn):
    """A causal gate has one value per query token g_t: query t attends to g_t·P_K and reads g_t·P_V."""
    model = tiny_decoder("llama", attn=attn)
    module = model.model.layers[0].self_attn
    b, hq, q, hd = 2, 4, 5, 16
    query, key, value, mask, pk, pv, g, causal = per_query_gate_case(attn, b=b, hq=hq, q=q, hd=hd)
    L = pk.shape[2]
    out, _ = _gated_per_query(module, query, key, value, mask, pk, pv, g, 0.25, attn, {})
    expect = torch.empty(b, q, hq, hd)
    for t in range(q):
        k = torch.cat([g[:, t].view(b, 1, 1, 1) * pk, key], 2).repeat_interleave(2, 1)
        v = torch.cat([g[:, t].view(b, 1, 1, 1) * pv, value], 2).repeat_interleave(2, 1)
        w = (query[:, :, t:t + 1] @ k.transpose(-1, -2)) * 0.25
        w = w.masked_fill(~torch.cat([torch.ones(b, 1, 1, L, dtype=torch.bool), causal[:, :, t:t + 1]], -1),
                          float("-inf")).softmax(-1)
        expect[:, t] = (w @ v)[:, :, 0]
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)


UNIPELT = ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
           "prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
           "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }\n"
           "adapter q { at layers[*].attention.output size 8 placement parallel gate sigmoid(layer.input, pool=mean_unmasked) }")


@pytest.mark.parametrize("family", DECODERS)
def test_gated_decoder_stays_causal(family):
    """Changing tokens from position 4 on changes no logit before position 4: no gate pools the future."""
    model = tiny_decoder(family, causal_lm=True)
    compile_model(UNIPELT, model)
    perturb(model, std=0.5)
    a = tiny_batch(batch=2, seq=8)
    a["attention_mask"] = torch.ones_like(a["attention_mask"])
    b = {k: v.clone() for k, v in a.items()}
    b["input_ids"][:, 4:] = (b["input_ids"][:, 4:] + 7) % 96 + 3
    la, lb = logits(model, a), logits(model, b)
    torch.testing.assert_close(la[:, :4], lb[:, :4], rtol=1e-5, atol=1e-5)
    assert (la[:, 4:] - lb[:, 4:]).abs().max() > 1e-3
    gates = [m for m in model.modules() if type(m).__name__ == "Gate"]
    assert gates and all(m.last.shape == (2,) for m in gates)


def test_sequence_classifier_reads_the_last_token_whose_gate_pools_every_token():
    """On a *ForSequenceClassification decoder the head reads the last real token, whose causal gate is the
    masked mean over every real token — the encoder's gate — so right padding changes nothing."""
    model = tiny_decoder("llama")
    compile_model(UNIPELT, model)
    perturb(model, std=0.5)
    batch = tiny_batch()
    one = {k: v[1:2, :5] for k, v in batch.items()}          # example 1 has 5 real tokens, 2 padding
    torch.testing.assert_close(logits(model, batch)[1:2], logits(model, one), rtol=1e-5, atol=1e-5)


def test_prefix_keys_are_sized_from_the_config_not_hidden_over_heads():
    model = tiny_decoder("qwen3")                                # hidden 64, 4 heads, head_dim 24, 2 KV heads
    compile_model("prefix p { at layers[*].attention length 5 mlp none }", model)
    p = model.model.layers[1].self_attn.pelt_prefix["p"]
    assert isinstance(p, Prefix) and p.prefix.shape == (2, 5, 2 * 24)
