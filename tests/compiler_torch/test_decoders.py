"""LoRA, adapters (sequential and parallel), BitFit and the shipped shared-point specs on tiny decoders
(Llama, Mistral, Qwen2, Qwen3; 4 query heads over 2 KV heads): the compiled model equals the base model at
init (prefixes disabled, and with every gate forced to 0), and a few AdamW steps move every PELT parameter
and the task head and nothing else — for *ForSequenceClassification and *ForCausalLM."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
from torch_models import DECODERS, changed, logits, perturb, tiny_batch, tiny_decoder

from peltc.api import compile_model
from peltc.compiler.torch.compiled import compiled
from peltc.compiler.torch.rewrite import disable, force_gates
from peltc.errors import SpecError

SPECS = Path(__file__).resolve().parents[2] / "specs"
SCALE = [(r"size \d+", "size 8"), (r"rank \d+", "rank 4"), (r"length \d+", "length 3"), (r"mlp \d+", "mlp 16")]

SPEC_TEXT = {
    "lora": "lora l { at layers[*].attention.{query, key, value, out}, layers[*].ffn.{gate, up, down} rank 4 }",
    "adapter": "adapter a { at layers[*].{attention, ffn}.output size 8 gate sigmoid(layer.input) }",
    "parallel": "adapter p { at layers[*].ffn.output size 8 placement parallel scale 2 gate scalar }\n"
                "adapter s { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }",
    "unipelt_apl": None, "unipelt_ap": None, "lora_spec": None, "adapter_spec": None, "mam_adapter": None,
}
FILES = {"unipelt_apl": "unipelt_apl.pelt", "unipelt_ap": "unipelt_ap.pelt", "lora_spec": "lora.pelt",
         "adapter_spec": "adapter.pelt", "mam_adapter": "mam_adapter.pelt"}


def _spec(name, tmp_path):
    if SPEC_TEXT.get(name):
        return SPEC_TEXT[name]
    for p in SPECS.glob("*.pelt"):       # scaled copies (extends / imports resolve beside them)
        text = p.read_text()
        for pat, rep in SCALE:
            text = re.sub(pat, rep, text)
        (tmp_path / p.name).write_text(text)
    return tmp_path / FILES[name]


def _batch(causal_lm):
    b = tiny_batch()
    if causal_lm:
        b["labels"] = b["input_ids"].masked_fill(b["attention_mask"] == 0, -100)
    else:
        b["labels"] = torch.tensor([0, 1, 0])
    return b


CASES = [(f, s, lm) for f in DECODERS for s in SPEC_TEXT for lm in (False, True)] + \
        [("qwen2", "bitfit", False), ("qwen2", "bitfit", True)]


@pytest.mark.parametrize("family,spec,causal_lm", CASES)
def test_identity_at_init_and_only_pelt_and_head_train(family, spec, causal_lm, tmp_path):
    base = tiny_decoder(family, causal_lm)
    model = copy.deepcopy(base)
    text = "bitfit b { at layers[*].attention gate sigmoid(layer.input) }" if spec == "bitfit" else _spec(spec, tmp_path)
    compile_model(text, model)
    batch = {k: v for k, v in _batch(causal_lm).items() if k != "labels"}
    prefixes = [n for n, atts in compiled(model).attachments.items() if atts[0].method == "prefix"]
    for name in prefixes:
        disable(model, name)
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=0, atol=1e-6)
    force_gates(model, 0.0)
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=0, atol=1e-6)
    force_gates(model, None)
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if "pelt_" in n}
    perturb(model)
    assert changed(logits(model, batch), logits(base, batch))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in saved:
                p.copy_(saved[n])
    for name in prefixes:
        disable(model, name, disabled=False)

    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    pelt0 = {n: p.detach().clone() for n, p in model.named_parameters() if "pelt_" in n}
    assert pelt0
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(**_batch(causal_lm)).loss.backward()
        opt.step()
        opt.zero_grad()
    now = dict(model.named_parameters())
    for n, p in frozen.items():
        key = n if n in now else re.sub(r"\.(weight|bias)$", r".base_layer.\1", n)
        if n.startswith("score."):
            assert not torch.equal(now[key], p), "the classification head did not train"
        else:
            assert torch.equal(now[key], p), f"base parameter {n} changed"
    for n, p in pelt0.items():
        assert not torch.equal(now[n], p), f"PELT parameter {n} did not move"


@pytest.mark.parametrize("family", DECODERS)
def test_causal_lm_head_stays_frozen_and_nothing_is_trained_but_pelt(family):
    model = tiny_decoder(family, causal_lm=True)
    report = compile_model("lora l { at layers[*].attention.{query, value} rank 4 }", model)
    assert report.head_trainable == 0
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("pelt_" in n for n in trained)


def test_adapter_formulas_on_a_pre_norm_block():
    """Sequential: out = x + h + s·A(h); parallel: out = x + h + s·A(LN(x)), h = the sub-layer's output."""
    from peltc.compiler.torch.adapter import Adapter
    model = tiny_decoder("llama")
    layer = model.model.layers[0]
    compile_model("adapter s { at layers[0].ffn.output size 8 scale 0.5 }\n"
                  "adapter p { at layers[0].attention.output size 8 placement parallel }", model)
    perturb(model)
    x = torch.randn(2, 5, 64)
    cos_sin = model.model.rotary_emb(x, torch.arange(5).unsqueeze(0))
    seen = {}
    hooks = [layer.self_attn.register_forward_hook(lambda m, a, kw, o: seen.__setitem__("attn", o[0]),
                                                   with_kwargs=True),
             layer.mlp.register_forward_hook(lambda m, a, o: seen.__setitem__("mlp", o))]
    with torch.no_grad():
        out = layer(x, position_embeddings=cos_sin)
        out = out[0] if isinstance(out, tuple) else out
        s: Adapter = layer.mlp.pelt_adapters["s"]
        p: Adapter = layer.self_attn.pelt_adapters["p"]
        ln1 = layer.input_layernorm(x)
        attn_raw = layer.self_attn.o_proj(_attention_only(layer, ln1, cos_sin))
        h1 = attn_raw + p.up(p.act(p.down(ln1)))
        x2 = x + h1
        m = layer.mlp.down_proj(layer.mlp.act_fn(layer.mlp.gate_proj(layer.post_attention_layernorm(x2)))
                                * layer.mlp.up_proj(layer.post_attention_layernorm(x2)))
        expect = x2 + m + 0.5 * s.up(s.act(s.down(m)))
    for h in hooks:
        h.remove()
    torch.testing.assert_close(seen["attn"], h1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-5)


def _attention_only(layer, h, cos_sin):
    """The attention of ``layer`` before o_proj, computed by hand (causal, grouped KV heads)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb
    a = layer.self_attn
    b, t, _ = h.shape
    q = a.q_proj(h).view(b, t, -1, a.head_dim).transpose(1, 2)
    k = a.k_proj(h).view(b, t, -1, a.head_dim).transpose(1, 2)
    v = a.v_proj(h).view(b, t, -1, a.head_dim).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, *cos_sin)
    k, v = (z.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for z in (k, v))
    w = (q @ k.transpose(-1, -2)) * a.scaling
    w = w.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
    return (w @ v).transpose(1, 2).reshape(b, t, -1)


def test_bitfit_on_llama_is_a_clear_error():
    with pytest.raises(SpecError) as e:
        compile_model("bitfit b { at all }", tiny_decoder("llama"))
    assert e.value.diagnostic.code == "E128" and "llama" in e.value.diagnostic.message


def test_head_pool_mean_on_a_decoder_classifier_reads_the_masked_mean():
    """The score head reads the last non-pad token; with `head { pool mean }` it reads the masked mean of
    the final hidden states instead."""
    model = tiny_decoder("llama")
    compile_model("lora l { at layers[*].attention.query rank 2 }\nhead { pool mean }", model)
    batch = tiny_batch()
    seen = {}
    h = model.model.register_forward_hook(lambda m, a, o: seen.__setitem__("h", o.last_hidden_state))
    out = logits(model, batch)
    h.remove()
    m = batch["attention_mask"].unsqueeze(-1).float()
    hidden = seen["h"][:, 0]                                        # every position holds the mean
    torch.testing.assert_close(out, model.score(hidden), rtol=1e-5, atol=1e-6)
    plain = tiny_decoder("llama")
    with torch.no_grad():
        states = plain.model(**batch).last_hidden_state
    torch.testing.assert_close(hidden, (states * m).sum(1) / m.sum(1), rtol=1e-5, atol=1e-6)


def test_head_pool_mean_on_a_causal_lm_is_refused():
    from peltc.errors import CompileError
    with pytest.raises(CompileError) as e:
        compile_model("lora l { at layers[*].attention.query rank 2 }\nhead { pool mean }",
                      tiny_decoder("llama", causal_lm=True))
    assert e.value.diagnostic.code == "C017"
