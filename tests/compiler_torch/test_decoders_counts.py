"""Decoders (Llama, Mistral, Qwen2, Qwen3) in the front end: `peltc check`'s counts are exact — equal to
the live counts of the compiled model (built on the meta device, SmolLM2-like shapes with grouped KV
heads; Qwen3 with an explicit head_dim) — and what a family cannot do is a located E128."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_models import DECODERS

from peltc.api import compile_model
from peltc.compiler.pipeline import build_ir, check_file
from peltc.compiler.torch import fold_prefix
from peltc.errors import SpecError

SPECS = Path(__file__).resolve().parents[2] / "specs"


def _config(family, **over):
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config
    cls = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}[family]
    kw = dict(vocab_size=1000, hidden_size=576, num_hidden_layers=3, num_attention_heads=9, num_key_value_heads=3,
              intermediate_size=1536, num_labels=2, pad_token_id=0)
    if family == "qwen3":
        kw.update(head_dim=80)          # ≠ 576 / 9
    return cls(**{**kw, **over})


def _meta(cfg, causal_lm=False):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    auto = AutoModelForCausalLM if causal_lm else AutoModelForSequenceClassification
    with torch.device("meta"):
        return auto.from_config(cfg)


SHARED = ["lora.pelt", "adapter.pelt", "prefix.pelt", "unipelt_apl.pelt", "unipelt_ap.pelt",
          "lora_top_layers.pelt", "mam_adapter.pelt"]


@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("spec", SHARED)
def test_check_counts_equal_the_compiled_model(family, spec):
    cfg = _config(family, num_hidden_layers=4)     # lora_top_layers selects layers[-3..]
    planned = check_file(SPECS / spec, model=cfg.to_dict()).ir
    for causal_lm in (False, True):
        model = _meta(cfg, causal_lm)
        report = compile_model(SPECS / spec, model)
        assert report.saved_total == sum(a.saved for a in planned.attachments())
        fold_prefix(model)
        from peltc.compiler.torch import build_report
        after = build_report(model)
        for inst in after.instances:
            assert inst.planned == inst.saved, inst.name
        live = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert after.trainable_total == live
        head = 576 * 2 if not causal_lm else 0          # score (no bias); a causal LM's lm_head stays frozen
        assert live == after.pelt_trainable + head


@pytest.mark.parametrize("family", DECODERS)
def test_kv_sizes_come_from_num_key_value_heads_and_head_dim(family):
    cfg = _config(family)
    kv = 3 * (80 if family == "qwen3" else 64)
    q = 9 * (80 if family == "qwen3" else 64)
    ir = build_ir("prefix p { at layers[*].attention length 10 mlp none }\n"
                  "lora l { at layers[0].attention.{query, key, value, out} rank 4 }", model=cfg.to_dict()).ir
    assert [a.saved for a in ir.attachments("p")] == [2 * 10 * kv] * 3
    assert {a.point: a.saved for a in ir.attachments("l")} == {
        "attention.query": 4 * (576 + q), "attention.key": 4 * (576 + kv), "attention.value": 4 * (576 + kv),
        "attention.out": 4 * (q + 576)}
    model = _meta(cfg)
    report = compile_model("prefix p { at layers[*].attention length 10 mlp 64 }", model)
    assert report.instance("p").saved == 3 * 2 * 10 * kv
    mlp = 10 * 576 + (576 * 64 + 64) + (64 * 2 * 3 * kv + 2 * 3 * kv)    # embedding and first Linear: hidden
    assert report.instance("p").trainable == mlp


@pytest.mark.parametrize("family", DECODERS)
def test_base_parameter_count_is_exact(family):
    for over in ({}, {"attention_bias": True, "mlp_bias": True} if family == "llama" else {}):
        cfg = _config(family, **over)
        ir = build_ir("lora l { at layers[*].attention.query }", model=cfg.to_dict()).ir
        model = _meta(cfg)
        assert ir.settings.base_params == sum(p.numel() for p in model.model.parameters())


def test_gated_mlp_point_and_its_lora():
    cfg = _config("llama")
    ir = build_ir("lora g { at layers[*].ffn.{gate, up, down} rank 2 }", model=cfg.to_dict()).ir
    assert {a.module_path for a in ir.attachments("g") if a.layer == 0} == {
        "model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"}
    model = _meta(cfg)
    report = compile_model("lora g { at layers[*].ffn.{gate, up, down} rank 2 }", model)
    assert report.saved_total == 3 * 3 * 2 * (576 + 1536)


def _error(text, cfg):
    with pytest.raises(SpecError) as e:
        build_ir(text, "x.pelt", model=cfg)
    return e.value.diagnostics


def test_ffn_gate_on_an_encoder_is_e128_located():
    diags = _error("lora g {\n  at layers[*].ffn.gate\n}", "bert-base-uncased")
    [d] = [d for d in diags if d.code == "E128"]
    assert "no point 'ffn.gate'" in d.message and "bert" in d.message
    assert d.span.line == 2


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3"])
def test_bitfit_on_a_family_without_biases_is_e128_naming_it(family):
    diags = _error("bitfit b { at all }", _config(family).to_dict())
    [d] = [d for d in diags if d.code == "E128"]
    assert family in d.message and "no bias" in d.message


def test_bitfit_on_qwen2_covers_its_qkv_biases():
    cfg = _config("qwen2")
    ir = build_ir("bitfit b { at all }", model=cfg.to_dict()).ir
    assert sum(a.saved for a in ir.attachments()) == 3 * (576 + 192 + 192)
    model = _meta(cfg)
    assert compile_model("bitfit b { at all }", model).saved_total == 3 * (576 + 192 + 192)
    diags = _error("bitfit b { at layers[*].ffn }", cfg.to_dict())
    assert [d.code for d in diags] == ["E128"] and "qwen2" in diags[0].message


def test_llama_with_attention_bias_has_bitfit_biases():
    cfg = _config("llama", attention_bias=True)
    ir = build_ir("bitfit b { at layers[*].attention }", model=cfg.to_dict()).ir
    assert sum(a.saved for a in ir.attachments()) == 3 * (576 + 192 + 192 + 576)
