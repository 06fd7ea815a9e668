"""Gates: values in (0, 1), one per example, readable per layer; the pooled-sigmoid formula;
fused gates equal unfused ones."""

from __future__ import annotations

import pytest
import torch
from torch_models import FAMILIES, perturb, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import compiled, read_gates

APL = ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
       "prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
       "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }")
AL = ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
      "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }")


@pytest.mark.parametrize("family", FAMILIES)
def test_gates_in_unit_interval_one_per_example_per_layer(family, batch):
    model = tiny_model(family)
    compile_model(AL if family == "deberta-v2" else APL, model)
    with torch.no_grad():
        model(**batch)
    gates = read_gates(model)
    points = ["ffn.output", "attention.query", "attention.value"] + ([] if family == "deberta-v2" else ["attention"])
    expected = {(inst, layer, pt) for layer in (0, 1) for inst, pt in
                [("a", "ffn.output"), ("l", "attention.query"), ("l", "attention.value"), ("p", "attention")]
                if pt in points}
    assert set(gates) == expected
    for g in gates.values():
        assert g.shape == (3,) and not g.requires_grad
        assert bool(((g > 0) & (g < 1)).all())


@pytest.mark.parametrize("pool", ["masked_mean", "mean_unmasked", "first"])
def test_sigmoid_gate_formula(pool, batch):
    model = tiny_model("bert")
    arg = "" if pool == "masked_mean" else f", pool={pool}"
    compile_model(f"lora l {{ at layers[*].attention.query rank 4 gate sigmoid(layer.input{arg}) }}", model)
    perturb(model, std=1.0)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    gates = read_gates(model)
    m = batch["attention_mask"].float().unsqueeze(-1)
    for layer in (0, 1):
        h = out.hidden_states[layer]                                  # the input of layer `layer`
        proj = model.bert.encoder.layer[layer].attention.self.query.pelt_lora.l.gate.proj
        s = torch.sigmoid(h @ proj.weight.T + proj.bias)              # (batch, seq, 1)
        want = {"masked_mean": (s * m).sum(1) / m.sum(1), "mean_unmasked": s.mean(1), "first": s[:, 0]}[pool][:, 0]
        torch.testing.assert_close(gates[("l", layer, "attention.query")], want, rtol=0, atol=1e-6)


def test_masked_and_unmasked_pools_differ_only_with_padding(batch):
    vals = {}
    for pool in ("masked_mean", "mean_unmasked"):
        model = tiny_model("bert")
        arg = "" if pool == "masked_mean" else ", pool=mean_unmasked"
        torch.manual_seed(0)
        compile_model(f"adapter a {{ at layers[*].ffn.output size 8 gate sigmoid(layer.input{arg}) }}", model)
        perturb(model, std=1.0)
        with torch.no_grad():
            model(**batch)
        vals[pool] = read_gates(model)[("a", 0, "ffn.output")]
    torch.testing.assert_close(vals["masked_mean"][0], vals["mean_unmasked"][0])      # no padding
    assert not torch.allclose(vals["masked_mean"][1:], vals["mean_unmasked"][1:])     # padded examples


def test_fused_gates_equal_unfused(batch):
    model = tiny_model("bert")
    compile_model(APL, model)
    perturb(model, std=1.0)
    state = compiled(model).state
    fused_groups = [g for g in state.groups.values() if len(g) > 1]
    assert fused_groups and all(len(g) == 3 for g in fused_groups)    # prefix + lora q + lora v per layer
    with torch.no_grad():
        fused_out = model(**batch).logits
    fused = read_gates(model)
    groups, state.groups = state.groups, {}
    with torch.no_grad():
        plain_out = model(**batch).logits
    plain = read_gates(model)
    state.groups = groups
    torch.testing.assert_close(fused_out, plain_out, rtol=0, atol=1e-6)
    for k in fused:
        torch.testing.assert_close(fused[k], plain[k], rtol=0, atol=1e-6)


def test_adapter_gate_reads_its_own_input(batch):
    model = tiny_model("bert")
    compile_model("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }", model)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)     # at init, h_FN == the layer output
    gate = model.bert.encoder.layer[0].output.LayerNorm.pelt_adapters.a.gate
    m = batch["attention_mask"].float().unsqueeze(-1)
    s = torch.sigmoid(out.hidden_states[1] @ gate.proj.weight.T + gate.proj.bias)
    torch.testing.assert_close(read_gates(model)[("a", 0, "ffn.output")], ((s * m).sum(1) / m.sum(1))[:, 0])


def test_scalar_and_const_gates(batch):
    model = tiny_model("bert")
    compile_model("lora l { at layers[*].attention.query rank 4 gate scalar(init=1) }\n"
                  "lora k { at layers[*].attention.key rank 4 gate const(0.25) }", model)
    with torch.no_grad():
        model(**batch)
    g = read_gates(model)
    torch.testing.assert_close(g[("l", 1, "attention.query")], torch.full((3,), torch.sigmoid(torch.tensor(1.0)).item()))
    torch.testing.assert_close(g[("k", 0, "attention.key")], torch.full((3,), 0.25))
    weight = model.bert.encoder.layer[0].attention.self.query.pelt_lora.l.gate.weight
    assert weight.numel() == 1 and weight.requires_grad
