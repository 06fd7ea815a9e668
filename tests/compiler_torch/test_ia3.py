"""(IA)³: equal to peft 0.21's IA3 (identical, random non-identity vectors; padded batches; MiniLM with its
real weights and a tiny Llama with grouped KV heads), trainable counts equal to peft's, identity at
init, gates (closed = the base model, the documented formula), merge exact (constant gates; a sigmoid
gate refuses), cached generation equal to a full recompute, the front end's counts equal the torch ones."""

from __future__ import annotations

import pytest
import torch
from torch_models import logits, perturb, tiny_decoder, tiny_model

from peltc.api import compile_model
from peltc.compiler.pipeline import build_ir
from peltc.compiler.torch import merge
from peltc.compiler.torch.rewrite import force_gates
from peltc.errors import CompileError, SpecError

peft = pytest.importorskip("peft")

BERT_SPEC = "ia3 v { at layers[*].attention.{key, value}, layers[*].ffn.down }"
PEFT_TARGETS = {
    "bert": (r".*encoder\.layer\.\d+\.(attention\.self\.(key|value)|output\.dense)", r".*encoder\.layer\.\d+\.output\.dense"),
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
}


def _pair(make, family: str, spec: str):
    """(peltc model, peft model), same base weights and head, the same random vectors in both."""
    import copy

    from peft import IA3Config, get_peft_model
    base = make()
    ours = copy.deepcopy(base)
    compile_model(spec, ours)
    targets, ff = PEFT_TARGETS[family]
    pm = get_peft_model(copy.deepcopy(base), IA3Config(task_type="SEQ_CLS", target_modules=targets,
                                                       feedforward_modules=ff)).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if ".pelt_ia3." in name:
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=g))
                path = name.split(".pelt_ia3.")[0]
                theirs = pm.base_model.model.get_submodule(path).ia3_l["default"]
                theirs.copy_(p.view(theirs.shape))
    return ours.eval(), pm


def _padded(vocab: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return {"input_ids": ids * mask, "attention_mask": mask}


def _trainable(m) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_equals_peft_on_minilm(packaged_minilm):
    def _minilm():
        return packaged_minilm(3)
    ours, pm = _pair(_minilm, "bert", BERT_SPEC)
    b = _padded(30000)
    assert (logits(ours, b) - logits(pm, b)).abs().max() <= 1e-5
    assert not torch.allclose(logits(ours, b), logits(_minilm(), b), atol=1e-3)   # the vectors matter
    assert _trainable(ours) == pm.get_nb_trainable_parameters()[0]
    # peltc check's count: 6 layers × (384 + 384 + 1536)
    assert build_ir(BERT_SPEC, model="minilm").ir.instance("v") is not None
    assert sum(a.trainable for a in build_ir(BERT_SPEC, model="minilm").ir.attachments()) == 6 * (384 + 384 + 1536)


@pytest.mark.parametrize("family", ["llama", "qwen2"])     # qwen2: biased k / v projections (scaled too)
def test_equals_peft_on_decoders_with_grouped_kv(family):
    spec = "ia3 v { at layers[*].attention.{key, value}, layers[*].ffn.down }"
    ours, pm = _pair(lambda: tiny_decoder(family), "llama", spec)
    b = _padded(99)
    b["input_ids"][b["attention_mask"] == 0] = 0
    assert (logits(ours, b) - logits(pm, b)).abs().max() <= 1e-5
    k = ours.get_submodule("model.layers.0.self_attn.k_proj")
    assert k.pelt_ia3["v"].l.numel() == 2 * 16          # n_kv × head_dim, not hidden
    assert _trainable(ours) == pm.get_nb_trainable_parameters()[0]
    ir = build_ir(spec, model=ours.config.to_dict()).ir
    assert sum(a.trainable for a in ir.attachments()) == 2 * (32 + 32 + 48)


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_identity_at_init_and_closed_gate(family, batch):
    make = (lambda: tiny_model("bert")) if family == "bert" else (lambda: tiny_decoder("llama"))
    base = logits(make(), batch)
    m = make()
    compile_model(BERT_SPEC, m)
    assert torch.equal(logits(m, batch), base)
    g = make()
    compile_model(BERT_SPEC[:-1] + "gate sigmoid(layer.input) }", g)
    perturb(g, std=0.5)
    force_gates(g, 0.0)
    torch.testing.assert_close(logits(g, batch), base, rtol=0, atol=1e-6)


def test_gate_formula(batch):
    """Behind a gate g the vector is 1 + g·(l − 1): a const(0.3) gate equals ungated vectors 1 + 0.3·(l − 1)."""
    gated, plain = tiny_model("bert"), tiny_model("bert")
    compile_model(BERT_SPEC[:-1] + "gate const(0.3) }", gated)
    compile_model(BERT_SPEC, plain)
    perturb(gated, std=0.5)
    with torch.no_grad():
        for (n, p), (n2, q) in zip(gated.named_parameters(), plain.named_parameters()):
            if ".pelt_ia3." in n:
                assert n == n2
                q.copy_(1 + 0.3 * (p - 1))
    torch.testing.assert_close(logits(gated, batch), logits(plain, batch), rtol=0, atol=1e-6)


def test_merge_is_exact_and_refuses_sigmoid(batch):
    m = tiny_model("bert")
    compile_model("ia3 v { at layers[*].attention.{key, value}, layers[*].ffn.down }\n"
                  "ia3 c { at layers[0].attention.value gate const(0.5) }\n"
                  "lora l { at layers[*].attention.query rank 2 }", m)
    perturb(m, std=0.4)
    before = logits(m, batch)
    done = merge(m)
    assert len(done) == 6 + 1 + 2
    torch.testing.assert_close(logits(m, batch), before, rtol=0, atol=1e-5)
    assert not any("pelt_" in n for n, _ in m.named_parameters())
    lin = m.get_submodule("bert.encoder.layer.0.attention.self.value")
    assert not lin._forward_hooks and not lin._forward_pre_hooks
    s = tiny_model("bert")
    compile_model("ia3 v { at layers[*].ffn.down gate sigmoid(layer.input) }", s)
    with pytest.raises(CompileError) as e:
        merge(s)
    assert e.value.diagnostic.code == "C009"


def test_cached_generation_equals_recompute():
    model = tiny_decoder("llama", causal_lm=True)
    compile_model("ia3 v { at layers[*].attention.{key, value}, layers[*].ffn.down gate sigmoid(layer.input) }",
                  model)
    perturb(model, std=0.5)
    ids = torch.tensor([[5, 17, 42, 8, 61], [9, 9, 33, 70, 2]])
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0,
              attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        cached = model.generate(input_ids=ids, use_cache=True, **kw)
        full = model.generate(input_ids=ids, use_cache=False, **kw)
    assert torch.equal(cached, full)


def test_conflicts_with_lora_and_bitfit():
    for other in ("lora l { at layers[0].attention.value rank 2 }", "bitfit b { at layers[*].attention }"):
        with pytest.raises(SpecError) as e:
            build_ir(f"ia3 v {{ at layers[*].attention.value }}\n{other}", model="bert-base-uncased")
        assert [d.code for d in e.value.diagnostics] == ["E150"]
    ok = build_ir("ia3 v { at layers[*].attention.value }\nlora l { at layers[*].attention.query rank 2 }",
                  model="bert-base-uncased")
    assert not ok.diagnostics.errors
