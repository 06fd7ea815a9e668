"""Exact trainable counts on a bert-base-shaped model (BertConfig(), built on the meta device: no
memory, no init cost), classifier head excluded — the numbers of DESIGN.md / paper Table 4."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peltc.api import compile_model
from peltc.compiler.torch import fold_prefix

SPECS = Path(__file__).resolve().parents[2] / "specs"
A = "adapter a { at layers[*].ffn.output size 48 gate sigmoid(ffn.output) }"
P = "prefix p { at layers[*].attention length 10 mlp 512 gate sigmoid(layer.input) }"
L = "lora l { at layers[*].attention.{query, value} rank 8 alpha 16 gate sigmoid(layer.input) }"

COUNTS = {
    "adapter": ("adapter a { at layers[*].ffn.output size 48 }", 894_528),
    "prefix": ("prefix p { at layers[*].attention length 10 mlp 512 }", 184_320),
    "lora": ("lora l { at layers[*].attention.{query, value} rank 8 }", 294_912),
    "bitfit": ("bitfit b { at all }", 102_912),
    "unipelt-ap": (A + "\n" + P, 1_097_304),
    "unipelt-apl": (A + "\n" + P + "\n" + L, 1_410_672),
    "prompt": ((SPECS / "prompt.pelt").read_text(), 15_360),        # README's spec table
    "ptuning": ((SPECS / "ptuning.pelt").read_text(), 15_360),
}


def _bert_base():
    from transformers import BertConfig, BertForSequenceClassification
    with torch.device("meta"):
        return BertForSequenceClassification(BertConfig())


@pytest.mark.parametrize("name", list(COUNTS))
def test_bert_base_counts(name):
    spec, expected = COUNTS[name]
    model = _bert_base()
    report = compile_model(spec, model)
    assert report.head_trainable == 768 * 2 + 2
    assert report.saved_total == expected
    fold_prefix(model)
    after = compile_report(model)
    assert after.pelt_trainable == expected
    assert after.trainable_total == expected + after.head_trainable
    assert after.trainable_total == sum(p.numel() for p in model.parameters() if p.requires_grad)
    for inst in after.instances:       # the front end's static count agrees with the live one
        assert inst.planned == inst.saved, inst.name


def compile_report(model):
    from peltc.compiler.torch import build_report
    return build_report(model)


def test_prefix_mlp_counts_before_folding():
    model = _bert_base()
    report = compile_model(COUNTS["prefix"][0], model)
    mlp = 10 * 768 + (768 * 512 + 512) + (512 * 2 * 12 * 768 + 2 * 12 * 768)
    assert report.instance("p").trainable == mlp       # the per-layer prefixes are the MLP's output
    assert report.instance("p").saved == 184_320
    assert report.pelt_trainable == mlp


def test_p_tuning_encoder_counts_before_folding():
    model = _bert_base()
    report = compile_model(COUNTS["ptuning"][0], model)
    mlp = 20 * 768 + 3 * (768 * 768 + 768)
    assert report.instance("soft").trainable == report.pelt_trainable == mlp == 1_787_136
    lstm = compile_model("prompt s { length 20 encoder lstm encoder_hidden 64 }", _bert_base())
    cell = 2 * (4 * 64 * (768 + 64) + 8 * 64) + 2 * (4 * 64 * (128 + 64) + 8 * 64)
    assert lstm.pelt_trainable == 20 * 768 + cell + (128 * 128 + 128) + (128 * 768 + 768)


def test_gate_parameter_count_is_hidden_plus_one():
    model = _bert_base()
    report = compile_model(A, model)
    assert report.instance("a").gate_params == 12 * 769


@pytest.mark.parametrize("name", list(COUNTS))
def test_check_prints_the_trained_and_saved_totals_compile_reports(name):
    """`peltc check`'s two totals are the compile report's "PELT total" row (issue 22, item 7)."""
    from transformers import BertConfig

    from peltc.compiler.pipeline import build_ir
    from peltc.compiler.summary import summary, trained_and_saved
    spec, _ = COUNTS[name]
    ir = build_ir(spec, model=BertConfig().to_dict()).ir
    report = compile_model(spec, _bert_base())
    assert trained_and_saved(ir) == (report.pelt_trainable, report.saved_total)
    text = summary(ir, "x.pelt")
    assert f"total trained: {report.pelt_trainable:,}" in text and f"total saved: {report.saved_total:,}" in text
    rendered = report.render(width=200)
    assert "trained" in rendered.split("\n")[2] and "saved" in rendered.split("\n")[2]
