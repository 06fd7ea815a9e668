"""The decoder families' gate defaults, kept as data in `compiler/archs.py` (docs/results.md, "Decoders:
SmolLM2 validation runs"): sigmoid gates read their source RMS-normalised (`gate_source_norm`), a per-token
prefix gate scales the prefix's keys, values *and* attention weights (`prefix_gate = "kv_weight"`: logit
g·q·P_K + log g) and a prefix's
sigmoid gate starts nearly closed (`prefix_gate_init`) unless the spec writes `init=`. Encoders keep theirs:
sources as they are, UniPELT's G_P on keys and values, gates starting at bias 0."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_models import DECODERS, logits, perturb, tiny_batch, tiny_decoder, tiny_model, per_query_gate_case

from peltc.api import compile_model
from peltc.compiler.archs import FAMILIES
from peltc.compiler.torch.gate import Gate, pooled_sigmoid
from peltc.compiler.torch.prefix import _gated_per_query
from peltc.compiler.torch.state import PeltState

UNIPELT = ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
           "prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
           "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }\n")


def test_the_defaults_are_family_data_decoders_only():
    for name, fam in FAMILIES.items():
        if fam.causal:
            assert fam.gates.model_dump() == {"gate_source_norm": True, "prefix_gate": "kv_weight",
                                              "prefix_gate_init": -10.0}, name
        else:
            assert fam.gates.model_dump() == {"gate_source_norm": False, "prefix_gate": "kv",
                                              "prefix_gate_init": None}, name


def _gates(model, inst):
    return [m for m in model.modules() if isinstance(m, Gate) and m.key[0] == inst]


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_prefix_gate_starts_at_the_family_init_unless_written(family):
    model = tiny_decoder(family)
    compile_model(UNIPELT, model)
    assert all(float(g.proj.bias.detach()) == -10.0 for g in _gates(model, "p"))
    assert all(float(g.proj.bias.detach()) == 0.0 for g in _gates(model, "l") + _gates(model, "a"))
    model = tiny_decoder(family)
    compile_model(UNIPELT.replace("sigmoid(layer.input) }\nlora", "sigmoid(layer.input, init=-2) }\nlora"), model)
    assert all(float(g.proj.bias.detach()) == -2.0 for g in _gates(model, "p"))


def test_encoder_gates_keep_their_defaults():
    model = tiny_model("bert")
    compile_model(UNIPELT, model)
    assert all(float(g.proj.bias.detach()) == 0.0 for g in _gates(model, "p"))
    state = _gates(model, "p")[0].__dict__["_state"]
    assert (state.gate_norm, state.prefix_gate) == (False, "kv")


def test_gate_source_norm_makes_a_gate_blind_to_its_sources_scale():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16) * 3
    w, b = torch.randn(1, 16) * 0.3, torch.zeros(1)
    on, off = PeltState(), PeltState()
    on.gate_norm = True
    torch.testing.assert_close(pooled_sigmoid(x * 500, w, b, "mean_unmasked", on),
                               pooled_sigmoid(x, w, b, "mean_unmasked", on))
    xn = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(pooled_sigmoid(x, w, b, "mean_unmasked", on),
                               pooled_sigmoid(xn, w, b, "mean_unmasked", off))
    assert not torch.allclose(pooled_sigmoid(x * 500, w, b, "mean_unmasked", off),
                              pooled_sigmoid(x, w, b, "mean_unmasked", off))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_kv_weight_gate_scales_keys_values_and_attention_weights_per_query(attn):
    """prefix_gate "kv_weight": query t's unnormalised weight on prefix key p is g_t · exp(s · q_t · g_t P_K[p])
    and it reads g_t P_V[p]."""
    model = tiny_decoder("llama", attn=attn)
    compile_model("prefix p { at layers[*].attention length 3 mlp none gate sigmoid(layer.input) }", model)
    module = model.model.layers[0].self_attn
    assert module.pelt_prefix["p"].__dict__["_state"].prefix_gate == "kv_weight"
    b, hq, q, hd = 2, 4, 5, 16
    query, key, value, mask, pk, pv, g, causal = per_query_gate_case(attn, b=b, hq=hq, q=q, hd=hd)
    L = pk.shape[2]
    out, _ = _gated_per_query(module, query, key, value, mask, pk, pv, g, 0.25, attn, {})
    expect = torch.empty(b, q, hq, hd)
    for t in range(q):
        gt = g[:, t].view(b, 1, 1, 1)
        k = torch.cat([gt * pk, key], 2).repeat_interleave(2, 1)
        v = torch.cat([gt * pv, value], 2).repeat_interleave(2, 1)
        e = ((query[:, :, t:t + 1] @ k.transpose(-1, -2)) * 0.25).exp()
        e = e * torch.cat([gt.expand(b, 1, 1, L), causal[:, :, t:t + 1].float()], -1)
        expect[:, t] = (e / e.sum(-1, keepdim=True) @ v)[:, :, 0]
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", DECODERS)
def test_a_closed_weight_gate_is_the_base_model_even_with_a_large_prefix(family):
    """g → 0 removes the prefix whatever its keys (a "kv" gate alone leaves keys at 0, logit 0, which still
    takes attention); adapter and LoRA start at zero: UniPELT at a closed prefix gate is the base model."""
    base = tiny_decoder(family, causal_lm=True)
    model = copy.deepcopy(base)
    compile_model(UNIPELT.replace("sigmoid(layer.input) }\nlora", "sigmoid(layer.input, init=-60) }\nlora"), model)
    with torch.no_grad():
        for enc in model.model.pelt_prefix_encoders.values():
            for p in enc.parameters():
                p.mul_(3.0)
    batch = tiny_batch()
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=1e-5, atol=1e-5)
    perturb(model, std=0.5)       # trained: the prefix, adapter and LoRA change the output
    assert (logits(model, batch) - logits(base, batch)).abs().max() > 1e-3


@pytest.mark.parametrize("family", DECODERS)
def test_decoder_unipelt_at_init_is_close_to_the_base_model(family):
    base = tiny_decoder(family, causal_lm=True)
    model = copy.deepcopy(base)
    compile_model(UNIPELT, model)
    batch = tiny_batch()
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=1e-3, atol=1e-3)
