"""merge(): ungated (and constant / scalar gated) LoRA and BitFit fold into the base weights with
the same outputs; input-dependent gates refuse with a CompileError."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_models import FAMILIES, logits, perturb, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import build_report, merge
from peltc.errors import CompileError

MERGEABLE = ("lora l { at layers[*].attention.{query, key, value, out}, layers[*].ffn.{up, down} rank 4 }\n"
             "lora s { at layers[*].attention.query rank 2 gate scalar }\n"
             "lora c { at layers[1].ffn.up rank 2 gate const(0.5) }\n"
             "bitfit b { at all }")


@pytest.mark.parametrize("family", FAMILIES)
def test_merge_equals_unmerged(family, batch):
    model = tiny_model(family)
    report = compile_model(MERGEABLE, model)
    n_biases = len(report.instance("b").paths[None])
    assert n_biases == (18 if family == "bert" else 17)   # embeddings LN, 8 per layer, bert's pooler
    perturb(model, std=0.3)
    before = logits(model, batch)
    merged = merge(model)
    assert len(merged) == 2 * 6 + 2 + 1 + n_biases
    after = logits(model, batch)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    assert not any("pelt_" in n for n, _ in model.named_parameters())
    for path in report.instance("l").paths[0]:
        assert type(model.get_submodule(path)) is nn.Linear      # wrappers are gone: zero overhead
        assert not model.get_submodule(path)._forward_hooks      # and so are the bitfit hooks
    assert build_report(model).merged == merged


def test_merge_refuses_sigmoid_gates_and_changes_nothing(batch):
    model = tiny_model("bert")
    compile_model("lora l { at layers[*].attention.query rank 4 gate sigmoid(layer.input) }\n"
                  "lora u { at layers[*].attention.value rank 4 }\n"
                  "bitfit b { at layers[*].ffn gate sigmoid(layer.input) }", model)
    perturb(model, std=0.3)
    before = logits(model, batch)
    names = [n for n, _ in model.named_parameters()]
    with pytest.raises(CompileError) as e:
        merge(model)
    assert e.value.diagnostic.code == "C009"
    assert "l@bert.encoder.layer.0.attention.self.query" in str(e.value) and "(bitfit)" in str(e.value)
    assert [n for n, _ in model.named_parameters()] == names
    merged = merge(model, skip_gated=True)
    assert merged == ["u@bert.encoder.layer.0.attention.self.value", "u@bert.encoder.layer.1.attention.self.value"]
    torch.testing.assert_close(logits(model, batch), before, rtol=0, atol=1e-5)
    assert any("pelt_lora.l." in n for n, _ in model.named_parameters())
