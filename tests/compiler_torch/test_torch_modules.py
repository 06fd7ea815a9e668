"""Module-level formulas (adapter placements, LoRA, BitFit), head pooling, the report, hand-built
IRs, and copies of compiled models."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch_models import logits, make_ir, perturb, tiny_batch, tiny_model

from peltc.api import compile_model
from peltc.compiler.ir import GateSpec
from peltc.compiler.torch import apply, build_report, read_gates
from peltc.compiler.torch.adapter import Adapter, AdapterPoint
from peltc.compiler.torch.bitfit import BiasDelta
from peltc.compiler.torch.gate import Gate
from peltc.compiler.torch.lora import LoRA, LoraLinear
from peltc.compiler.torch.state import PeltState


def _adapter(h=8, size=3, placement="sequential", scale=1.0, gate=None):
    a = Adapter(h, size, "relu", scale, placement, gate)
    nn.init.normal_(a.up.weight)
    nn.init.normal_(a.up.bias)
    return a


def test_sequential_adapters_chain_in_order():
    torch.manual_seed(0)
    ln, st = nn.LayerNorm(8), PeltState()
    host = AdapterPoint(ln, 0, "ffn.output", st)
    a1, a2 = _adapter(scale=0.5), _adapter()
    host.add("a1", a1)
    host.add("a2", a2)
    z = torch.randn(2, 5, 8)
    A = lambda a, v: a.up(torch.relu(a.down(v)))  # noqa: E731
    z1 = z + 0.5 * A(a1, ln(z))
    want = ln(z1 + A(a2, ln(z1)))
    torch.testing.assert_close(host(z), want)


def test_parallel_adapter_reads_the_sublayer_input():
    torch.manual_seed(0)
    ln, st = nn.LayerNorm(8), PeltState()
    st.begin(None)
    g = Gate(GateSpec(kind="const", value=0.3), 8, ("p", 0, "ffn.output"), st)
    host = AdapterPoint(ln, 0, "ffn.output", st)
    par, seq = _adapter(placement="parallel", gate=g), _adapter()
    host.add("seq", seq)
    host.add("par", par)
    x_in, z = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    st.record(0, "attention.output", x_in)          # ffn.output's sub-layer input
    A = lambda a, v: a.up(torch.relu(a.down(v)))  # noqa: E731
    z1 = z + 0.3 * A(par, x_in)                     # parallel first, beside the sub-layer
    want = ln(z1 + A(seq, ln(z1)))
    torch.testing.assert_close(host(z), want)


def test_gated_scaled_adapter_matches_the_formula_per_example():
    """The fused add (gate·scale at the bottleneck, bias as an extra column, one addmm) equals
    ``z + g·s·up(act(down(h)))`` with a different gate value for every example."""
    torch.manual_seed(0)
    ln, st = nn.LayerNorm(8), PeltState()
    st.begin(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    g = Gate(GateSpec(kind="sigmoid", source="ffn.output", pool="masked_mean"), 8,
             ("a", 0, "ffn.output"), st, reads_own=True)
    nn.init.normal_(g.proj.weight)
    a = _adapter(scale=0.7, gate=g)
    host = AdapterPoint(ln, 0, "ffn.output", st)
    host.add("a", a)
    z = torch.randn(2, 5, 8)
    out = host(z)
    gv = g.last
    assert gv.shape == (2,) and not torch.allclose(gv[0], gv[1])
    h = ln(z)
    want = ln(z + 0.7 * gv.view(2, 1, 1) * a.up(torch.relu(a.down(h))))
    torch.testing.assert_close(out, want)


def test_lora_formula_and_sum():
    torch.manual_seed(0)
    lin = nn.Linear(6, 4)
    wrap = LoraLinear(lin)
    wrap.pelt_lora["a"] = LoRA(6, 4, rank=2, alpha=6)
    wrap.pelt_lora["b"] = LoRA(6, 4, rank=3, alpha=3)
    for l in wrap.pelt_lora.values():
        nn.init.normal_(l.B.weight)
    x = torch.randn(2, 3, 6)
    a, b = wrap.pelt_lora["a"], wrap.pelt_lora["b"]
    want = lin(x) + 3.0 * x @ a.A.weight.T @ a.B.weight.T + 1.0 * x @ b.A.weight.T @ b.B.weight.T
    torch.testing.assert_close(wrap(x), want)
    assert wrap.weight is lin.weight and wrap.in_features == 6


def test_bitfit_delta_formula():
    st = PeltState()
    g = Gate(GateSpec(kind="scalar", value=0.0), 4, ("b", None, "head"), st)
    d = BiasDelta(4, g)
    with torch.no_grad():
        d.delta.copy_(torch.arange(4.0))
    out = torch.zeros(2, 4)
    torch.testing.assert_close(d(out), 0.5 * torch.arange(4.0).expand(2, 4))


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_head_pool_mean_feeds_the_masked_mean_to_the_family_head(family, batch):
    base = tiny_model(family)
    model = copy.deepcopy(base)
    compile_model("head { pool mean }\nlora l { at layers[0].attention.query rank 2 }", model)
    with torch.no_grad():
        h = getattr(base, family)(**batch).last_hidden_state
        m = batch["attention_mask"].float().unsqueeze(-1)
        mean = (h * m).sum(1) / m.sum(1)
        if family == "bert":   # BERT's frozen pretrained pooler is bypassed: the classifier reads the mean
            want = base.classifier(mean)
        elif family == "roberta":
            want = base.classifier(mean.unsqueeze(1))
        else:
            want = base.classifier(torch.relu(base.pre_classifier(mean)))
    torch.testing.assert_close(logits(model, batch), want, rtol=0, atol=1e-6)


def test_report_render_and_dict():
    model = tiny_model("bert")
    report = compile_model("adapter ffn_adapter { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
                           "lora qv { at layers[1].attention.{query, value} rank 4 }", model)
    text = report.render()
    for word in ("ffn_adapter", "qv", "adapter", "lora", "sigmoid(ffn.output)", "layers[0..1].ffn.output",
                 "layers[1].attention.query", "task head", "classifier"):
        assert word in text, word
    a = report.instance("ffn_adapter")
    assert a.trainable == 2 * (32 * 8 + 8 + 8 * 32 + 32 + 33) and a.gate_params == 66
    assert a.paths[0] == ["bert.encoder.layer.0.output.LayerNorm"]
    assert report.instance("qv").paths == {1: ["bert.encoder.layer.1.attention.self.query",
                                                "bert.encoder.layer.1.attention.self.value"]}
    assert report.to_dict()["instances"][1]["paths"] == {"1": report.instance("qv").paths[1]}
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert "bert.encoder.layer.0.output.LayerNorm.pelt_adapters.ffn_adapter.down.weight" in names
    assert report.pelt_trainable == sum(p.numel() for n, p in model.named_parameters() if "pelt_" in n)


def test_hand_built_ir_with_two_prefixes_at_one_attention(batch):
    model = tiny_model("bert", "eager")
    base = logits(model, batch)
    ir = make_ir("bert", [
        dict(instance="p", method="prefix", layer=0, point="attention", params=dict(length=2, mlp=8),
             gate=dict(kind="sigmoid", source="input")),
        dict(instance="q", method="prefix", layer=0, point="attention", params=dict(length=3, mlp=None),
             order=1),
    ])
    apply(ir, model)
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    assert out.attentions[0].shape[-1] == 2 + 3 + batch["input_ids"].shape[1]
    assert out.attentions[1].shape[-1] == batch["input_ids"].shape[1]
    assert not torch.allclose(out.logits, base, atol=1e-6)


def test_deepcopy_of_a_compiled_model_is_independent(batch):
    model = tiny_model("bert")
    compile_model("adapter a { at layers[*].ffn.output size 8 gate sigmoid(layer.input) }\n"
                  "prefix p { at layers[*].attention length 2 mlp 8 gate sigmoid(layer.input) }", model)
    twin = copy.deepcopy(model)
    perturb(twin)
    with torch.no_grad():
        a = model(**batch).logits
        b = twin(**batch).logits
        model(**tiny_batch(batch=1, seq=4))
    assert not torch.allclose(a, b)
    assert read_gates(twin)[("a", 0, "ffn.output")].shape == (3,)      # the twin's gates saw its batch
    assert read_gates(model)[("a", 0, "ffn.output")].shape == (1,)
    assert build_report(twin).pelt_trainable == build_report(model).pelt_trainable


def test_compile_model_takes_a_path_text_or_ir(tmp_path, batch):
    from pathlib import Path

    from peltc.api import build_spec_ir
    from peltc.errors import UsageError
    spec = tmp_path / "x.pelt"
    spec.write_text("# a spec file\nlora l { at layers[*].attention.query rank 2 }\n")
    for s in (str(spec), Path(spec)):
        model = tiny_model("bert")
        r = compile_model(s, model)
        assert r.instance("l").paths[0] == ["bert.encoder.layer.0.attention.self.query"]
    model = tiny_model("bert")
    ir = build_spec_ir("bitfit b { at layers[0] }", model)
    assert compile_model(ir, model).instance("b").trainable == 7 * 32 + 37
    with pytest.raises(UsageError):
        compile_model(str(tmp_path / "missing.pelt"), tiny_model("bert"))
