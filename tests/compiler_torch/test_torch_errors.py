"""CompileErrors with structured fields (code, span, help), raised before anything is changed."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch_models import make_ir, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import apply
from peltc.errors import CompileError


def _untouched(model) -> bool:
    return not any("pelt_" in n for n, _ in model.named_parameters()) and \
        all(p.requires_grad for p in model.parameters()) and "_pelt" not in model.__dict__


def test_unknown_layer_path_names_the_path_and_nearest_modules():
    model = tiny_model("bert")
    ir = make_ir("bert", [dict(instance="x", method="lora", layer=5, point="attention.query",
                               params=dict(rank=2, alpha=4))])
    with pytest.raises(CompileError) as e:
        apply(ir, model)
    d = e.value.diagnostic
    assert d.code == "C003"
    assert "bert.encoder.layer.5.attention.self.query" in d.message
    assert "bert.encoder.layer.0.attention.self.query" in d.help or "bert.encoder.layer.1" in d.help
    assert _untouched(model)


def test_missing_module_in_a_modified_model():
    model = tiny_model("bert")
    model.bert.encoder.layer[1].output.norm = model.bert.encoder.layer[1].output.LayerNorm
    del model.bert.encoder.layer[1].output.LayerNorm
    with pytest.raises(CompileError) as e:
        compile_model("adapter a { at layers[*].ffn.output size 8 }", model)
    d = e.value.diagnostic
    assert d.code == "C003" and "bert.encoder.layer.1.output.LayerNorm" in d.message
    assert "norm" in d.help
    assert d.span is not None and d.span.line == 1
    assert _untouched(model)


def test_family_mismatch():
    model = tiny_model("distilbert")
    ir = make_ir("bert", [dict(instance="x", method="bitfit", layer=None, point="all")])
    with pytest.raises(CompileError) as e:
        apply(ir, model)
    assert e.value.diagnostic.code == "C002"


def test_compiling_twice_is_refused():
    model = tiny_model("bert")
    compile_model("bitfit b { at all }", model)
    with pytest.raises(CompileError) as e:
        compile_model("bitfit b { at all }", model)
    assert e.value.diagnostic.code == "C001"


def test_bitfit_head_without_pooler():
    model = tiny_model("roberta")
    ir = make_ir("roberta", [dict(instance="h", method="bitfit", layer=None, point="head")])
    with pytest.raises(CompileError) as e:
        apply(ir, model)
    assert e.value.diagnostic.code == "C006" and "pooler" in e.value.diagnostic.message
    assert _untouched(model)


def test_sigmoid_gate_on_a_global_point():
    model = tiny_model("bert")
    ir = make_ir("bert", [dict(instance="e", method="bitfit", layer=None, point="embeddings",
                               gate=dict(kind="sigmoid", source="input"))])
    with pytest.raises(CompileError) as e:
        apply(ir, model)
    assert e.value.diagnostic.code == "C007"


def test_prefix_on_flash_attention_is_refused():
    model = tiny_model("bert")
    model.config._attn_implementation_internal = "flex_attention"
    ir = make_ir("bert", [dict(instance="p", method="prefix", layer=0, point="attention",
                               params=dict(length=2, mlp=None))])
    with pytest.raises(CompileError) as e:
        apply(ir, model)
    assert e.value.diagnostic.code == "C005"
    assert _untouched(model)


def test_gate_reading_a_later_value_fails_at_run_time():
    model = tiny_model("bert")
    ir = make_ir("bert", [dict(instance="x", method="lora", layer=0, point="attention.query",
                               params=dict(rank=2, alpha=4), gate=dict(kind="sigmoid", source="ffn.output"))])
    apply(ir, model)
    with pytest.raises(CompileError) as e:
        model(input_ids=torch.tensor([[5, 6, 7]]))
    assert e.value.diagnostic.code == "C010"


def test_lora_on_a_layernorm_is_refused():
    model = tiny_model("bert")
    model.bert.encoder.layer[0].attention.self.query = nn.Identity()
    ir = make_ir("bert", [dict(instance="x", method="lora", layer=0, point="attention.query",
                               params=dict(rank=2, alpha=4))])
    with pytest.raises(CompileError) as e:
        apply(ir, model)
    assert e.value.diagnostic.code == "C008"
