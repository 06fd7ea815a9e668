"""A few AdamW steps: every base parameter stays bit-identical, every PELT parameter moves,
the trainable set is exactly PELT + head (and everything with finetune)."""

from __future__ import annotations

import pytest
import torch
from torch_models import FAMILIES, tiny_batch, tiny_model

from peltc.api import compile_model

SPECS = {
    "adapter": "adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }",
    "adapter-par": "adapter a { at layers[*].attention.output size 8 placement parallel gate scalar }",
    "lora": "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }",
    "bitfit": "bitfit b { at all gate scalar }",
    "prefix": "prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }",
    "unipelt-apl": ("adapter a { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }\n"
                    "prefix p { at layers[*].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
                    "lora l { at layers[*].attention.{query, value} rank 4 gate sigmoid(layer.input) }"),
}
CASES = [(f, s) for f in FAMILIES for s in SPECS if not (f == "deberta-v2" and "prefix" in SPECS[s])]


def _train(model, steps: int = 3):
    batch = {**tiny_batch(), "labels": torch.tensor([0, 1, 1])}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(**batch).loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("family,spec", CASES)
def test_base_frozen_pelt_moves(family, spec):
    model = tiny_model(family)
    report = compile_model(SPECS[spec], model)
    head = tuple(p + "." for p in report.head_paths)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if "pelt_" in n or n.startswith(head)}
    assert report.trainable_total == sum(p.numel() for p in model.parameters() if p.requires_grad)
    _train(model)
    for n, p in model.named_parameters():
        if "pelt_" in n:
            assert not torch.equal(p, before[n]), f"PELT parameter did not move: {n}"
        elif not n.startswith(head):
            assert torch.equal(p, before[n]), f"base parameter changed: {n}"
            assert p.grad is None


def test_finetune_trains_every_base_weight():
    model = tiny_model("bert")
    report = compile_model("finetune f {}", model)
    total = sum(p.numel() for p in model.parameters())
    assert report.trainable_total == total
    assert report.base_trainable == total - report.head_trainable
    assert report.instance("f").trainable == report.base_trainable
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train(model, steps=1)
    assert not torch.equal(model.bert.encoder.layer[0].attention.self.query.weight,
                           before["bert.encoder.layer.0.attention.self.query.weight"])


def test_state_is_cleared_after_each_forward():
    from peltc.compiler.torch import compiled
    model = tiny_model("bert")
    compile_model(SPECS["unipelt-apl"], model)
    st = compiled(model).state
    model(**tiny_batch())
    assert st.values == {} and st.cache == {}
    b2 = tiny_batch(seed=5, batch=2, seq=4)
    model(**b2)
    assert st.mask.shape == (2, 4) and st.values == {}


def test_gradient_checkpointing_gives_the_same_gradients():
    import copy
    model = tiny_model("bert")
    compile_model(SPECS["unipelt-apl"], model)
    ckpt = copy.deepcopy(model)
    enable = getattr(ckpt, "activation_checkpointing_enable", None) or ckpt.gradient_checkpointing_enable
    enable()
    batch = {**tiny_batch(), "labels": torch.tensor([0, 1, 1])}
    grads = []
    for m in (model, ckpt):
        m.train()
        torch.manual_seed(3)
        m(**batch).loss.backward()
        grads.append({n: p.grad for n, p in m.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-6, msg=n)
