"""Issue 7, item 3 in the front end: `lr` per instance (every method, finetune included), prefix
`init random|tokens` and a sigmoid gate's starting bias `init=`: parsed, validated with located
errors, absent from the IR unless written (today's behaviour is the default), shown by `check` and
`show`, drawn by `render`, kept by `fmt` and lossless through `show --json`."""

from __future__ import annotations

import math

import pytest

from peltc.compiler import schema
from peltc.compiler.ir import IR, GateSpec
from peltc.compiler.pipeline import build_ir
from peltc.compiler.summary import outline, summary
from peltc.errors import SpecError
from peltc.grammar.fmt import format_source

SPEC = """\
adapter a {
  at layers[*].ffn.output
  lr 1e-4
  gate sigmoid(ffn.output, pool=mean_unmasked, init=-2)
}

prefix p {
  at layers[*].attention
  length 4
  init tokens
  lr 3e-4
  gate sigmoid(layer.input, init=1.5)
}

lora l {
  at layers[*].attention.{query, value}
  gate sigmoid(layer.input, init=-2)
}

bitfit b {
  at layers[*].attention.output
  lr 0.5
}
"""


def _errors(text: str, model: str | None = "bert-base-uncased") -> list[tuple[str, int, int, str]]:
    with pytest.raises(SpecError) as e:
        build_ir(text, "x.pelt", model=model)
    return [(d.code, d.span.line, d.span.col, d.message) for d in e.value.errors]


# --- lr ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,body", [
    ("adapter", "at layers[*].ffn.output"), ("prefix", "at layers[*].attention"),
    ("lora", "at layers[*].attention.query"), ("bitfit", ""), ("finetune", ""),
])
def test_every_method_takes_lr(method, body):
    ir = build_ir(f"{method} x {{ {body} lr 2e-5 }}", model="bert-base-uncased").ir
    assert ir.instance("x").params["lr"] == 2e-5
    assert all(a.params["lr"] == 2e-5 for a in ir.attachments("x"))


def test_lr_absent_unless_written():
    """Today's behaviour is the default: no `lr` in the IR, nothing printed."""
    r = build_ir("adapter a { at layers[*].ffn.output }", model="bert-base-uncased")
    assert "lr" not in r.ir.instance("a").params
    assert all("lr" not in a.params for a in r.ir.attachments())
    assert " lr " not in summary(r.ir, "x.pelt") and " lr " not in outline(r.ir, "x.pelt")


def test_lr_is_instance_only():
    assert all(m.params["lr"].instance_only for m in schema.METHODS.values())
    errs = _errors("adapter a {\n  at layers[*].ffn.output\n  layers[0] {\n    lr 1e-3\n  }\n}")
    assert [(c, ln, col) for c, ln, col, _ in errs] == [("E116", 4, 5)]
    assert "per-layer override" in errs[0][3]


@pytest.mark.parametrize("value,code", [("0", "E104"), ("-1e-4", "E104"), ("fast", "E103"), ("1e400", "E104")])
def test_bad_lr(value, code):
    errs = _errors(f"lora l {{\n  at layers[*].attention.query\n  lr {value}\n}}", model=None)
    assert [(c, ln, col) for c, ln, col, _ in errs] == [(code, 3, 6)]


# --- prefix init -----------------------------------------------------------------------------------
def test_prefix_init_default_random_and_tokens():
    ir = build_ir("prefix p { at layers[*].attention }", model="bert-base-uncased").ir
    assert ir.instance("p").params["init"] == "random"
    ir = build_ir("prefix p { at layers[*].attention init tokens mlp none }", model="bert-base-uncased").ir
    assert all(a.params["init"] == "tokens" for a in ir.attachments("p"))


def test_prefix_init_errors():
    assert [e[:3] for e in _errors("prefix p {\n  at layers[*].attention\n  init zeros\n}")] == [("E103", 3, 8)]
    assert [e[:3] for e in _errors("prefix p {\n  at layers[*].attention\n  layers[0] { init tokens }\n}")] == \
        [("E116", 3, 15)]
    # the MLP reproduces `length` activations exactly only with as many hidden units
    errs = _errors("prefix p {\n  at layers[*].attention\n  length 12\n  mlp 8\n  init tokens\n}", model=None)
    assert [e[:3] for e in errs] == [("E104", 5, 8)] and "mlp ≥ length" in errs[0][3]
    build_ir("prefix p { at layers[*].attention length 12 mlp 12 init tokens }")        # equal is enough
    build_ir("prefix p { at layers[*].attention length 12 mlp 8 init random }")         # random: any width
    build_ir("prefix p { at layers[*].attention length 12 mlp none init tokens }")


# --- sigmoid gate init -------------------------------------------------------------------------------
def test_sigmoid_gate_init():
    ir = build_ir(SPEC, model="bert-base-uncased").ir
    g = ir.instance("a").gate
    assert (g.kind, g.source, g.pool, g.value) == ("sigmoid", "ffn.output", "mean_unmasked", -2.0)
    assert g.text() == "sigmoid(ffn.output, pool=mean_unmasked, init=-2)"
    assert all(a.gate == g for a in ir.attachments("a"))
    assert ir.instance("l").gate.text() == "sigmoid(layer.input, init=-2)"
    # init 0 is the default bias: the same gate as none written
    zero = build_ir("lora l { at layers[*].attention.query gate sigmoid(layer.input, init=0) }").ir
    assert zero.instance("l").gate == GateSpec(kind="sigmoid", source="input")
    # an override may change the gate's init per layer
    ov = build_ir("lora l { at layers[*].attention.query gate sigmoid(layer.input)\n"
                  "layers[-1] { gate sigmoid(layer.input, init=-3) } }", model="bert-base-uncased").ir
    assert [a.gate.value for a in ov.attachments("l")] == [None] * 11 + [-3.0]


def test_sigmoid_gate_init_errors():
    errs = _errors("adapter a {\n  at layers[*].ffn.output\n  gate sigmoid(ffn.output, init=closed)\n}", None)
    assert [e[:3] for e in errs] == [("E114", 3, 33)]
    errs = _errors("adapter a {\n  at layers[*].ffn.output\n  gate sigmoid(ffn.output, start=1)\n}", None)
    assert errs[0][:3] == ("E114", 3, 28)
    errs = _errors("adapter a {\n  at layers[*].ffn.output\n  gate sigmoid(ffn.output, init=-1e999)\n}", None)
    assert [e[:3] for e in errs] == [("E104", 3, 33)]


# --- check, show, render, fmt, json ------------------------------------------------------------------
def test_check_and_show_list_the_new_parameters():
    r = build_ir(SPEC, "x.pelt", model="bert-base-uncased")
    text = summary(r.ir, "x.pelt")
    assert "size 48 · activation relu · placement sequential · scale 1 · lr 0.0001" in text
    assert "length 4 · mlp 512 · init tokens · lr 0.0003" in text
    assert "sigmoid(ffn.output, pool=mean_unmasked, init=-2)" in text and "lr 0.5" in text
    out = outline(r.ir, "x.pelt")
    assert "params: length 4 · mlp 512 · init tokens · lr 0.0003" in out
    assert "gate: sigmoid(layer.input, init=1.5) (769 parameters per attachment)" in out
    # counts: neither lr nor init changes them; a gate's init neither
    plain = build_ir(SPEC.replace(", init=-2", "").replace(", init=1.5", "").replace("init tokens", "")
                     .replace("lr 1e-4", "").replace("lr 3e-4", "").replace("lr 0.5", ""), model="bert-base-uncased")
    assert [a.trainable for a in r.ir.attachments()] == [a.trainable for a in plain.ir.attachments()]
    # without a model too
    bare = summary(build_ir(SPEC).ir, "x.pelt")
    assert "length 4 · mlp 512 · init tokens · lr 0.0003" in bare


def test_render_labels():
    pytest.importorskip("graphviz")
    from peltc.compiler.render import gate_label, to_dot
    assert gate_label(GateSpec(kind="sigmoid", source="input", value=-2.0)) == "σ(layer.input)\nstarts ≈0.119"
    assert gate_label(GateSpec(kind="sigmoid", source="ffn.output", pool="first", value=1.0)) == \
        "σ(ffn.output)\nfirst\nstarts ≈0.731"
    assert gate_label(GateSpec(kind="sigmoid", source="input")) == "σ(layer.input)"   # unchanged
    for model in ("bert-base-uncased", None):
        src = to_dot(build_ir(SPEC, model=model).ir).source
        assert "starts ≈0.119" in src and "starts ≈0.818" in src
        assert "length 4 · mlp 512 · init tokens · lr 0.0003" in src
        assert "lr 0.0001" in src and "lr 0.5" in src
    assert " lr " not in to_dot(build_ir("adapter a { at layers[*].ffn.output }").ir).source


def test_fmt_round_trip():
    messy = ("adapter a{at layers[*].ffn.output lr 1e-4 gate sigmoid( ffn.output ,pool=mean_unmasked,init=-2 )}\n"
             "prefix p{at layers[*].attention init tokens lr 3e-4}")
    once = format_source(messy)
    assert "  gate sigmoid(ffn.output, pool=mean_unmasked, init=-2)\n" in once
    assert "  init tokens\n  lr 3e-4\n" in once and "  lr 1e-4\n" in once
    assert format_source(once) == once
    assert format_source(SPEC) == SPEC
    a, b = build_ir(messy, model="bert-base-uncased").ir, build_ir(once, model="bert-base-uncased").ir
    assert _strip(a.to_dict()) == _strip(b.to_dict())


def _strip(obj):
    """IR json without source positions and the source hash."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("span", "spans", "gate_span", "spec_hash")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


@pytest.mark.parametrize("model", ["bert-base-uncased", None])
def test_json_round_trip(model):
    ir = build_ir(SPEC, model=model).ir
    back = IR.from_json(ir.to_json())
    assert back == ir and back.to_json() == ir.to_json()
    assert back.instance("p").params == {"length": 4, "mlp": 512, "init": "tokens", "lr": 3e-4}
    assert back.instance("a").gate.value == -2.0


def test_sigmoid_start_is_sigma_of_init():
    from peltc.compiler.render import scalar_start
    assert math.isclose(scalar_start(GateSpec(kind="sigmoid", source="input", value=-2.0)), 1 / (1 + math.exp(2)))
