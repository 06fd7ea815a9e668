"""A sigmoid gate's starting bias, `sigmoid(SOURCE, init=-2)`: the gate's Linear bias starts at init, so
the gate starts at σ(init) up to the small term of its N(0, 0.02) weights; the zero-initialised
modules it scales (adapter up, LoRA B, BitFit delta) still leave the model equal to the base at init;
fused gates (one layer, one source, one pooling) keep each member's own bias."""

from __future__ import annotations

import math

import pytest
import torch
from torch_models import FAMILIES, logits, perturb, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import compiled, read_gates
from peltc.compiler.torch.gate import Gate

CASES = {
    "adapter": "adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output, init=-2) }",
    "adapter-parallel": ("adapter a { at layers[*].ffn.output size 8 placement parallel "
                         "gate sigmoid(attention.output, pool=mean_unmasked, init=-2) }"),
    "lora": "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input, init=-2) }",
    "bitfit": "bitfit b { at layers[*] gate sigmoid(layer.input, pool=first, init=3) }",
    "mixed": ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output, pool=mean_unmasked, init=-2) }\n"
              "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input, init=-2) }\n"
              "bitfit b { at layers[*].attention.output gate sigmoid(layer.input, init=1) }"),
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", list(CASES))
def test_equal_to_base_at_init_with_gate_biases(family, case, batch):
    model = tiny_model(family)
    base = logits(model, batch)
    compile_model(CASES[case], model)
    torch.testing.assert_close(logits(model, batch), base, rtol=0, atol=1e-6)


@pytest.mark.parametrize("init", [-2.0, 0.0, 1.5])
@pytest.mark.parametrize("pool", ["masked_mean", "mean_unmasked", "first"])
def test_gate_starts_at_sigma_init(init, pool, batch):
    model = tiny_model("bert")
    args = ("" if pool == "masked_mean" else f", pool={pool}") + f", init={init:g}"
    compile_model(f"lora l {{ at layers[*].attention.query rank 4 gate sigmoid(layer.input{args}) }}", model)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    gates = read_gates(model)
    start = 1 / (1 + math.exp(-init))
    slope = start * (1 - start)                                       # σ'(init)
    for layer in (0, 1):
        proj = model.bert.encoder.layer[layer].attention.self.query.pelt_lora.l.gate.proj
        assert proj.bias.item() == init
        assert 0 < float(proj.weight.detach().std()) < 0.03                     # N(0, 0.02)
        # the random-weight term: |w·x| per token; the gate moves from σ(init) by at most about σ'(init)·|w·x|
        wx = (out.hidden_states[layer] @ proj.weight.T).abs().max().item()
        g = gates[("l", layer, "attention.query")]
        assert float((g - start).abs().max()) <= slope * wx * 1.05 + 1e-6
        assert float((g - start).abs().max()) < 0.05
    gate = model.bert.encoder.layer[0].attention.self.query.pelt_lora.l.gate
    assert (f"init={init:g}" in gate.extra_repr()) == (init != 0)


def test_nearly_closed_gate_scales_the_module(batch):
    """init=-2: a trained (perturbed) adapter contributes ~0.12 of what it does at init=0 (gate 0.5)."""
    outs = {}
    for init in (0, -2):
        model = tiny_model("bert")
        base = logits(model, batch)
        compile_model(f"adapter a {{ at layers[1].ffn.output size 8 gate sigmoid(ffn.output, init={init}) }}", model)
        ad = model.bert.encoder.layer[1].output.LayerNorm.pelt_adapters.a
        with torch.no_grad():
            ad.up.weight.normal_(0, 0.5)
            ad.gate.proj.weight.zero_()                                # the gate is exactly σ(init)
        outs[init] = logits(model, batch) - base
        g = read_gates(model)[("a", 1, "ffn.output")]
        torch.testing.assert_close(g, torch.full_like(g, 1 / (1 + math.exp(-init))))
    assert float(outs[-2].abs().max()) < float(outs[0].abs().max())


def test_fused_gates_keep_each_init(batch):
    """Three gates of each layer read layer.input with the same pooling: one fused group, one bias each."""
    spec = ("prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
            "lora l { at layers[*].attention.query rank 4 gate sigmoid(layer.input, init=-2) }\n"
            "lora m { at layers[*].attention.value rank 4 gate sigmoid(layer.input, init=1) }")
    model = tiny_model("bert")
    compile_model(spec, model)
    state = compiled(model).state
    groups = [g for g in state.groups.values() if len(g) > 1]
    assert len(groups) == 2 and all(len(g) == 3 for g in groups)
    assert sorted(g.proj.bias.item() for g in groups[0]) == [-2.0, 0.0, 1.0]
    perturb(model, std=0.5)                                              # weights and biases move off init
    with torch.no_grad():
        fused_out = model(**batch).logits
    fused = read_gates(model)
    saved, state.groups = state.groups, {}
    with torch.no_grad():
        plain_out = model(**batch).logits
    plain = read_gates(model)
    state.groups = saved
    torch.testing.assert_close(fused_out, plain_out, rtol=0, atol=1e-6)
    assert fused.keys() == plain.keys() and len(fused) == 6
    for k in fused:
        torch.testing.assert_close(fused[k], plain[k], rtol=0, atol=1e-6)


def test_fused_gates_at_init_start_at_their_own_sigma(batch):
    model = tiny_model("bert")
    compile_model("lora l { at layers[*].attention.query rank 4 gate sigmoid(layer.input, init=-2) }\n"
                  "lora m { at layers[*].attention.value rank 4 gate sigmoid(layer.input, init=2) }", model)
    for m in model.modules():
        if isinstance(m, Gate):
            with torch.no_grad():
                m.proj.weight.zero_()
    with torch.no_grad():
        model(**batch)
    g = read_gates(model)
    for layer in (0, 1):
        torch.testing.assert_close(g[("l", layer, "attention.query")], torch.full((3,), 1 / (1 + math.exp(2))))
        torch.testing.assert_close(g[("m", layer, "attention.value")], torch.full((3,), 1 / (1 + math.exp(-2))))
