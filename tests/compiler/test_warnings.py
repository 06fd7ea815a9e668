"""Warnings: a parameter that a gate makes meaningless (LoRA's `alpha` under a gate, which replaces
alpha / rank) is warning W202 at the parameter, with a caret and a help line — not silence."""

from __future__ import annotations

from pathlib import Path

import pytest

from peltc.cli import main
from peltc.compiler.pipeline import build_ir

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.pelt"))


def w202(text: str, model: str | None = None, loader=None) -> list[tuple[int, int]]:
    r = build_ir(text, "x.pelt", model=model, loader=loader)
    return [(d.span.line, d.span.col) for d in r.warnings if d.code == "W202"]


def test_alpha_under_a_sigmoid_gate_warns_at_the_parameter():
    src = "lora qv {\n  at layers[*].attention.query\n  alpha 16\n  gate sigmoid(layer.input)\n}\n"
    assert w202(src) == [(3, 3)]
    assert w202(src, model="bert-base-uncased") == [(3, 3)]        # once, not once per layer


@pytest.mark.parametrize("gate", ["scalar", "scalar(init=1)", "const(0.5)"])
def test_every_gate_but_none_replaces_alpha(gate):
    assert w202(f"lora q {{ at layers[*].attention.query alpha 4 gate {gate} }}") == [(1, 39)]
    assert w202(f"lora q {{ at layers[*].attention.query alpha 4 gate none }}") == []
    assert w202(f"lora q {{ at layers[*].attention.query alpha 4 }}") == []


def test_alpha_in_a_per_layer_override_under_a_gate_warns_there():
    src = ("lora qv {\n  at layers[*].attention.query\n  gate scalar\n"
           "  layers[0..1] {\n    alpha 8\n  }\n}\n")
    assert w202(src) == [(5, 5)]
    # the override's own gate counts too
    src2 = "lora qv {\n  at layers[*].attention.query\n  layers[0] {\n    alpha 8\n    gate const(1)\n  }\n}\n"
    assert w202(src2) == [(4, 5)]


def test_alpha_that_reaches_an_ungated_layer_is_not_warned():
    # layer 0 has no gate: the instance's alpha scales it
    src = "lora q { at layers[*].attention.query alpha 4 gate scalar layers[0] { gate none } }"
    assert w202(src) == []
    # the override's alpha is for its ungated layers
    src = "lora q { at layers[*].attention.query gate scalar layers[0] { alpha 2 gate none } }"
    assert w202(src) == []


def test_a_variant_that_removes_the_gate_makes_alpha_meaningful_again():
    files = {"base.pelt": "lora qv { at layers[*].attention.query alpha 16 gate sigmoid(layer.input) }"}
    loader = files.__getitem__
    assert w202('extends "base.pelt"\nlora qv { gate none }', loader=loader) == []
    r = build_ir('extends "base.pelt"', "x.pelt", loader=loader)
    assert [(d.code, d.span.file, d.span.line, d.span.col) for d in r.warnings] == [("W202", "base.pelt", 1, 40)]


def test_cli_prints_the_warning_with_file_line_col_caret_and_help(tmp_path, capsys):
    p = tmp_path / "gated.pelt"
    p.write_text("lora qv {\n  at layers[*].attention.{query, value}\n  rank 8\n  alpha 16\n"
                 "  gate sigmoid(layer.input)\n}\n")
    assert main(["check", str(p), "--model", "bert-base-uncased"]) == 0
    err = capsys.readouterr().err.split("\n")
    head = next(k for k, line in enumerate(err) if line.startswith("warning:"))
    assert err[head].startswith(f"warning: {p}:4:3: qv: 'alpha' has no effect") and err[head].endswith("[W202]")
    assert err[head + 1] == " 4 |   alpha 16"
    assert err[head + 2] == "   |   ^^^^^^^^"
    assert err[head + 3].startswith("help: remove `alpha`")


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
@pytest.mark.parametrize("model", [None, "bert-base-uncased"])
def test_shipped_specs_check_without_warnings(path, model):
    r = build_ir(path.read_text(encoding="utf-8"), str(path), model=model)
    assert [d.render() for d in r.warnings] == []
