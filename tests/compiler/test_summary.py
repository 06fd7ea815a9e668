"""`peltc check`'s table: columns as wide as their widest cell (never run together, whatever the
names, points or gates), each instance's parameters, and every module its count includes."""

from __future__ import annotations

import re

from peltc.compiler.pipeline import build_ir
from peltc.compiler.summary import summary

LONG = """
adapter a_rather_long_instance_name_for_the_adapters {
  at layers[*].{attention, ffn}.output
  size 16
  gate sigmoid(attention.output, pool=mean_unmasked)
}
lora q { at layers[0..2].attention.query gate scalar(init=-1.5) }
"""


def table_lines(text: str) -> list[str]:
    """The header and instance rows (continuation lines are indented further)."""
    lines = text.split("\n")
    k = next(i for i, line in enumerate(lines) if line.lstrip().startswith("instance"))
    indent = len(lines[k]) - len(lines[k].lstrip())
    out = [lines[k]]
    for line in lines[k + 1:]:
        if not line.startswith(" " * indent) or line.lstrip().startswith(("per layer:", "whole-model:", "total")):
            break
        if len(line) - len(line.lstrip()) == indent:
            out.append(line)
    return out


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


def test_columns_never_run_together():
    text = summary(build_ir(LONG, model="minilm").ir, "x.pelt")
    head, *rows = table_lines(text)
    assert cells(head) == ["instance", "method", "at", "layers", "gate", "per layer", "total"]
    assert len(rows) == 2
    first = cells(rows[0])
    assert first[:5] == ["a_rather_long_instance_name_for_the_adapters", "adapter",
                         "attention.output, ffn.output", "0..5", "sigmoid(attention.output, pool=mean_unmasked)"]
    assert cells(rows[1])[:5] == ["q", "lora", "attention.query", "0..2", "scalar(init=-1.5)"]
    # left-aligned columns start where their header starts
    for k, name in enumerate(["method", "at", "layers", "gate"], start=1):
        col = head.index(name)
        for row in rows:
            assert row[col - 2:col] == "  " and row[col] != " ", (name, row)


def test_no_model_table_has_columns_too():
    text = summary(build_ir(LONG).ir, "x.pelt")
    head, *rows = table_lines(text)
    assert cells(head) == ["instance", "method", "at", "gate"]
    assert cells(rows[0])[2:] == ["layers[*].attention.output, layers[*].ffn.output",
                                  "sigmoid(attention.output, pool=mean_unmasked)"]


def test_bitfit_lists_every_module_its_count_includes():
    ir = build_ir("bitfit b { at layers[*].attention }", model="bert-base-uncased").ir
    text = summary(ir, "x.pelt")
    assert "bert.encoder.layer.{0..11}.attention.self.{query, key, value}" in text
    assert "bert.encoder.layer.{0..11}.attention.output.{dense, LayerNorm}" in text
    # the count is exactly the biases of those five modules, 768 each
    assert sum(a.saved for a in ir.attachments()) == 12 * 5 * 768


def test_bitfit_everywhere_lists_the_embeddings_the_layers_and_the_pooler():
    text = summary(build_ir("bitfit b { at all }", model="bert-base-uncased").ir, "x.pelt")
    for m in ["bert.embeddings.LayerNorm", "bert.encoder.layer.{0..11}.intermediate.dense",
              "bert.encoder.layer.{0..11}.output.{dense, LayerNorm}", "bert.pooler.dense"]:
        assert m in text
    assert "per layer:" not in text      # nothing per layer: it is one whole-model attachment


def test_parameters_line_lists_per_layer_values_and_leaves_out_what_a_gate_replaces():
    src = ("adapter a { at layers[*].ffn.output size 8 layers[0] { size 16 } }\n"
           "lora l { at layers[*].attention.value rank 4 gate scalar }")
    text = summary(build_ir(src, model="minilm").ir, "x.pelt")
    assert "size 16 in layer 0, 8 in layers 1..5 · activation relu" in text
    assert "rank 4 · dropout 0" in text and "alpha" not in text
