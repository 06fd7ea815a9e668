"""A prefix under CPU sdpa is followed by never-attended zero keys up to a multiple of 16 keys (the CPU
flash-attention kernel's cheap sizes). The padding must be invisible: same logits, same gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_models import perturb, tiny_batch, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import prefix as pf

SPEC = ("prefix p { at layers[*].attention length 3 mlp 8 gate sigmoid(layer.input) }\n"
        "lora l { at layers[*].attention.query rank 2 }")


def test_extend_mask_pads_never_attended_columns():
    b = torch.tensor([[[[True, False]]]])
    got = pf.extend_mask(b, 2, 3)
    assert got.tolist() == [[[[True, True, False, False, False, True, False]]]]
    f = torch.tensor([[[[0.0, -1e9]]]])
    got = pf.extend_mask(f, 1, 2)
    assert got[..., 0].item() == 0.0 and (got[..., 1:3] == torch.finfo(torch.float32).min).all()
    assert got[..., 3:].tolist() == f.tolist()


def test_key_padding_only_for_cpu_sdpa_with_a_mask():
    q = torch.zeros(1, 1, 4, 8)
    m = torch.ones(1, 1, 4, 138, dtype=torch.bool)
    assert pf.key_padding("sdpa", m, q, 138) == 6
    assert pf.key_padding("sdpa", m, q, 144) == 0
    assert pf.key_padding("sdpa", None, q, 138) == 0
    assert pf.key_padding("eager", m, q, 138) == 0


def _spy(monkeypatch) -> list[int]:
    """Record the key count every stock attention call receives."""
    seen: list[int] = []
    stock = pf._stock

    def spy(module, base):
        fn = stock(module, base)

        def wrapped(module, query, key, value, mask, **kw):
            seen.append(key.shape[2])
            return fn(module, query, key, value, mask, **kw)
        return wrapped
    monkeypatch.setattr(pf, "_stock", spy)
    return seen


def test_no_padding_under_attention_dropout(monkeypatch):
    """Training with attention dropout: the dropout mask's shape (and so a seeded run) stays as it was."""
    model = tiny_model("bert", "sdpa")
    compile_model(SPEC, model)
    model.train()
    seen = _spy(monkeypatch)
    model(**tiny_batch(batch=3, seq=7))
    assert seen and all(k == 10 for k in seen)


@pytest.mark.parametrize("grad", [False, True])
def test_padded_keys_change_nothing(monkeypatch, grad):
    batch = tiny_batch(batch=3, seq=7)                  # 3 prefix + 7 tokens = 10 keys → 6 padding keys
    model = tiny_model("bert", "sdpa")
    compile_model(SPEC, model)
    perturb(model)
    twin = copy.deepcopy(model)
    seen = _spy(monkeypatch)
    with torch.set_grad_enabled(grad):                  # eval mode (no dropout); with grad: the backward too
        a = model(**batch).logits
    assert seen and all(k == 16 for k in seen)
    monkeypatch.setattr(pf, "KEY_MULTIPLE", {})
    seen.clear()
    with torch.set_grad_enabled(grad):
        b = twin(**batch).logits
    assert all(k == 10 for k in seen)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    if grad:
        a.square().sum().backward()
        b.square().sum().backward()
        gb = dict(twin.named_parameters())
        for n, p in model.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(p.grad, gb[n].grad, rtol=1e-5, atol=1e-6, msg=n)
