"""LoRA's options through the rest of the back end: merge exactness (DoRA under no, a const and a scalar
gate; PiSSA / OLoRA; rsLoRA), DoRA's refusal under a sigmoid gate, DoRA under a gate (g = 0 is the base,
g = 1 is ungated DoRA), PiSSA's base residual (the caller's tensor kept, restored exactly by an artifact,
a shared base left alone with several runs), E145, and cached generation on a tiny Llama."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_models import logits, perturb, tiny_batch, tiny_decoder, tiny_model

import peltc
from peltc.api import load_adapter, load_runs, save_adapter
from peltc.compiler.torch.rewrite import force_gates, merge
from peltc.errors import CompileError, SpecError

QV = "at layers[*].attention.{query, value}, layers[*].ffn.down"


def _compiled(spec: str, family: str = "bert", seed: int = 0):
    model = tiny_model(family)
    peltc.compile_model(spec, model)
    perturb(model, std=0.2, seed=seed)
    return model.eval()


@pytest.mark.parametrize("members", ["dora true", "dora true gate const(0.6)", "dora true gate scalar(init=0.5)",
                                     "scaling rs", "init pissa", "init olora gate const(0.7)",
                                     "init pissa dora true scaling rs"])
@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_merge_equals_unmerged(members, family, batch):
    model = _compiled(f"lora l {{ {QV.replace('ffn.down', 'ffn.up')} rank 4 {members} }}", family)
    before = logits(model, batch)
    merged = merge(model)
    assert merged and not any(".pelt_lora." in n for n, _ in model.named_parameters())
    torch.testing.assert_close(logits(model, batch), before, rtol=0, atol=1e-5)


def test_dora_under_a_sigmoid_gate_refuses_merge():
    model = _compiled(f"lora l {{ {QV} rank 4 dora true gate sigmoid(layer.input) }}")
    with pytest.raises(CompileError) as e:
        merge(model)
    assert e.value.diagnostic.code == "C009" and "l@" in str(e.value)


def test_dora_gate_scales_the_change_of_the_output(batch):
    """y = base + g·(DoRA − base): g = 0 gives the base model, g = 1 the ungated DoRA with the same weights."""
    base = tiny_model("bert")
    gated = _compiled(f"lora l {{ {QV} rank 4 dora true gate sigmoid(layer.input) }}")
    plain = tiny_model("bert")
    peltc.compile_model(f"lora l {{ {QV} rank 4 dora true }}", plain)
    own = dict(gated.named_parameters())
    with torch.no_grad():
        for n, p in plain.named_parameters():
            if ".pelt_lora." in n:
                p.copy_(own[n])
    force_gates(gated, 0.0)
    torch.testing.assert_close(logits(gated, batch), logits(base, batch), rtol=0, atol=1e-6)
    force_gates(gated, 1.0)
    torch.testing.assert_close(logits(gated, batch), logits(plain.eval(), batch), rtol=0, atol=1e-6)
    force_gates(gated, None)
    out = logits(gated, batch)
    assert (out - logits(base, batch)).abs().max() > 1e-4 and (out - logits(plain, batch)).abs().max() > 1e-6


def test_dora_alpha_is_no_gate_warning():
    """Under `dora true` the gate scales DoRA's change and alpha / rank stays the scale inside: no W202."""
    from peltc.compiler.pipeline import build_ir
    warned = build_ir("lora l { at layers[*].attention.query alpha 4 gate scalar }", model="none").warnings
    dora = build_ir("lora l { at layers[*].attention.query alpha 4 dora true gate scalar }", model="none").warnings
    assert any(d.code == "W202" for d in warned) and not any(d.code == "W202" for d in dora)


@pytest.mark.parametrize("gate", ["scalar", "sigmoid(layer.input)"])
def test_principal_init_under_a_learned_gate_is_refused(gate):
    from peltc.compiler.pipeline import build_ir
    with pytest.raises(SpecError) as e:
        build_ir(f"lora l {{\n  at layers[*].attention.query\n  init pissa\n  gate {gate}\n}}", model="none")
    err = next(d for d in e.value.diagnostics if d.code == "E145")
    assert err.span is not None and err.span.line == 3 and "gate none" in err.help
    with pytest.raises(SpecError):
        peltc.compile_model(f"lora l {{ at layers[*].attention.query init olora gate {gate} }}", tiny_model("bert"))


def test_pissa_keeps_the_callers_weight_and_an_artifact_restores_the_residual(tmp_path, batch):
    model = tiny_model("bert")
    q = model.bert.encoder.layer[0].attention.self.query
    original = q.weight.data
    kept = original.clone()
    peltc.compile_model(f"lora l {{ {QV} rank 4 init pissa }}", model)
    inner = model.bert.encoder.layer[0].attention.self.query
    assert torch.equal(original, kept)                       # the caller's tensor is not written
    assert not torch.equal(inner.base_layer.weight, kept)    # the base holds W − s·B₀A₀
    perturb(model, std=0.2)
    model.eval()
    save_adapter(model, tmp_path / "art")
    fresh = tiny_model("bert")
    load_adapter(fresh, tmp_path / "art")
    for (n, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), n                           # base residual and LoRA, bit for bit
    assert torch.equal(logits(fresh.eval(), batch), logits(model, batch))


@pytest.mark.parametrize("members", ["init pissa", "init olora dora true", "dora true gate scalar"])
def test_disabled_equals_base(members, batch):
    from peltc.compiler.torch.rewrite import disable
    base = logits(tiny_model("bert"), batch)
    model = _compiled(f"lora l {{ {QV} rank 4 {members} }}")
    assert (logits(model, batch) - base).abs().max() > 1e-4
    disable(model, "l")
    torch.testing.assert_close(logits(model, batch), base, rtol=0, atol=1e-6)


def test_pissa_and_dora_runs_share_a_base(tmp_path):
    """Several runs on one base: a principal init leaves the shared base alone (s·B₀A₀ x subtracted
    in the run's rows), DoRA reads the untouched base; each example gets its run's own logits."""
    from torch_models import tiny_config
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_config(tiny_config("bert")).eval()
    specs = [f"lora l {{ {QV} rank 4 init pissa }}", f"lora l {{ {QV} rank 2 dora true init olora }}",
             f"lora l {{ {QV} rank 3 }}"]
    dirs = []
    for i, spec in enumerate(specs):
        m = copy.deepcopy(base)
        peltc.compile_model(spec, m)
        perturb(m, std=0.2, seed=i)
        dirs.append(save_adapter(m, tmp_path / f"r{i}"))
    runs = load_runs(dirs, copy.deepcopy(base))
    x = tiny_batch(batch=3)
    route = [0, 1, 2]
    with torch.no_grad():
        out = runs(route, **x).logits
    for i, d in enumerate(dirs):
        alone = copy.deepcopy(base)
        load_adapter(alone, d)
        want = logits(alone.eval(), {k: v[i:i + 1] for k, v in x.items()})
        assert (out[i:i + 1] - want).abs().max() <= 1e-5, specs[i]


@pytest.mark.parametrize("members", ["dora true", "init pissa scaling rs", "dora true gate sigmoid(layer.input)"])
def test_cached_generation_equals_uncached_tiny_llama(members):
    model = tiny_decoder("llama", causal_lm=True)
    peltc.compile_model(f"lora l {{ at layers[*].attention.{{query, value}}, layers[*].ffn.down rank 4 "
                        f"{members} }}", model)
    perturb(model, std=0.3)
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 9, 33, 70, 2]])
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=6, min_new_tokens=6, do_sample=False,
              pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        cached = model.generate(input_ids=ids, use_cache=True, **kw)
        full = model.generate(input_ids=ids, use_cache=False, **kw)
    assert torch.equal(cached.sequences, full.sequences)
    torch.testing.assert_close(torch.stack(cached.logits, 1), torch.stack(full.logits, 1), rtol=1e-4, atol=1e-4)
