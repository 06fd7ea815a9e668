"""Prefix-tuning through the AttentionInterface: eager == sdpa, padding-invariant, attentions,
train mode, folding, and a precise error on DeBERTa-v2."""

from __future__ import annotations

import pytest
import torch
from torch_models import PREFIX_FAMILIES, perturb, tiny_batch, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import fold_prefix
from peltc.errors import CompileError

SPEC = ("prefix p { at layers[0].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
        "prefix q { at layers[1].attention length 2 mlp none gate scalar }")


def _compiled(family: str, attn: str):
    model = tiny_model(family, attn)
    torch.manual_seed(0)                 # same PELT init for both attention implementations
    report = compile_model(SPEC, model)
    perturb(model)
    return model, report


@pytest.mark.parametrize("family", PREFIX_FAMILIES)
def test_eager_equals_sdpa_with_padding(family, batch):
    m_sdpa, r = _compiled(family, "sdpa")
    m_eager, r2 = _compiled(family, "eager")
    assert r.attn_implementation == "sdpa" and r2.attn_implementation == "eager"
    assert m_sdpa.config._attn_implementation == "peltc_prefix_sdpa"
    with torch.no_grad():
        a, b = m_sdpa(**batch), m_eager(**batch)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", PREFIX_FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_does_not_change_unpadded_outputs(family, attn, batch):
    model, _ = _compiled(family, attn)
    with torch.no_grad():
        full = model(**batch, output_hidden_states=True)
        for i in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][i].sum())
            alone = model(input_ids=batch["input_ids"][i:i + 1, :n],
                          attention_mask=batch["attention_mask"][i:i + 1, :n], output_hidden_states=True)
            torch.testing.assert_close(alone.logits[0], full.logits[i], rtol=0, atol=1e-5)
            torch.testing.assert_close(alone.hidden_states[-1][0], full.hidden_states[-1][i, :n], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", PREFIX_FAMILIES)
def test_output_attentions_cover_prefix_and_tokens(family, batch):
    model, _ = _compiled(family, "eager")
    with torch.no_grad():
        out = model(**batch, output_attentions=True)
    b, s = batch["input_ids"].shape
    assert len(out.attentions) == 2
    assert out.attentions[0].shape == (b, 4, s, 3 + s)          # layer 0: prefix p
    assert out.attentions[1].shape == (b, 4, s, 2 + s)          # layer 1: prefix q
    att = out.attentions[0]
    torch.testing.assert_close(att.sum(-1), torch.ones(b, 4, s))
    pad = batch["attention_mask"] == 0                          # no weight on padding keys
    assert float(att[..., 3:].masked_select(pad[:, None, None, :].expand(b, 4, s, s)).abs().max()) < 1e-6


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_prefix_trains_in_train_mode_with_dropout(family):
    model, _ = _compiled(family, "sdpa")
    model.train()
    batch = {**tiny_batch(), "labels": torch.tensor([0, 1, 0])}
    loss = model(**batch).loss
    loss.backward()
    enc = model.get_submodule(f"{family}.pelt_prefix_encoders.p")
    assert enc.mlp[0].weight.grad is not None and enc.mlp[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_fold_prefix_keeps_outputs(family, batch):
    model, report = _compiled(family, "sdpa")
    before = model(**batch).logits.detach()
    assert fold_prefix(model) == ["p"]
    after = model(**batch).logits.detach()
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    names = [n for n, _ in model.named_parameters() if "pelt_prefix" in n]
    assert not any("encoders" in n for n in names)
    assert f"{family}.encoder.layer.0.attention.self.pelt_prefix.p.prefix" in names
    folded = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".prefix"))
    assert folded == 2 * 3 * 32 + 2 * 2 * 32
    assert fold_prefix(model) == []


def test_deberta_prefix_is_a_compile_error():
    from torch_models import make_ir

    from peltc.compiler.torch import apply
    from peltc.errors import PeltError
    model = tiny_model("deberta-v2")
    with pytest.raises(PeltError):          # the front end already refuses it (a SpecError) ...
        compile_model("prefix p { at layers[*].attention length 3 }", model)
    ir = make_ir("deberta-v2", [dict(instance="p", method="prefix", layer=1, point="attention",
                                     params=dict(length=3, mlp=None))])
    with pytest.raises(CompileError) as e:  # ... and so does the back end, given such an IR
        apply(ir, model)
    assert e.value.diagnostic.code == "C004"
    assert "deberta-v2" in str(e.value) and "layers[1].attention" in str(e.value)
    assert not any("pelt_" in n for n, _ in model.named_parameters())   # nothing was touched
    assert all(p.requires_grad for p in model.parameters())


def test_switching_attention_away_from_the_prefix_function_is_caught(batch):
    model, _ = _compiled("bert", "sdpa")
    model.set_attn_implementation("sdpa")
    with pytest.raises(CompileError) as e:
        model(**batch)
    assert e.value.diagnostic.code == "C014"
    model.set_attn_implementation("peltc_prefix_sdpa")
    model(**batch)
