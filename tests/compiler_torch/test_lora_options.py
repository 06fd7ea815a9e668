"""LoRA's options against peft 0.21 itself: rsLoRA (``scaling rs``), DoRA (``dora true``), PiSSA and OLoRA
(``init pissa`` / ``olora``). With the same weights (peft's A, B, magnitude copied into peltc; a principal
init computed by each side from the same base weight) the logits are equal on padded batches, on tiny
random encoders, a tiny Llama and the real MiniLM; the trainable counts equal peft's
``get_nb_trainable_parameters`` and the front end's count."""

from __future__ import annotations

import copy

import pytest
import torch
from torch_models import logits, tiny_batch, tiny_decoder, tiny_model

from peltc.api import compile_model

peft = pytest.importorskip("peft")


@pytest.fixture
def minilm_classifier(packaged_minilm):
    """The real packaged MiniLM (6 layers, hidden 384) as a sequence classifier."""
    return packaged_minilm(2)


TOL = 1e-5
# option → (peltc spec members, peft LoraConfig kwargs)
OPTIONS = {
    "rslora": ("scaling rs", dict(use_rslora=True)),
    "dora": ("dora true", dict(use_dora=True)),
    "dora-rs": ("dora true\n scaling rs", dict(use_dora=True, use_rslora=True)),
    "pissa": ("init pissa", dict(init_lora_weights="pissa")),
    "olora": ("init olora", dict(init_lora_weights="olora")),
    "pissa-dora": ("init pissa\n dora true", dict(init_lora_weights="pissa", use_dora=True)),
}
# family → (canonical points, peft target module names)
TARGETS = {
    "bert": ("attention.{query, value}, layers[*].ffn.down", r".*\.(query|value)|.*layer\.\d+\.output\.dense"),
    "llama": ("attention.{query, value}, layers[*].ffn.down", ["q_proj", "v_proj", "down_proj"]),
}


def _peft_name(name: str) -> str:
    """peltc's ``<module>.pelt_lora.l.A.weight`` → peft's ``<module>.lora_A.default.weight``."""
    return (name.replace(".pelt_lora.l.A.weight", ".lora_A.default.weight")
            .replace(".pelt_lora.l.B.weight", ".lora_B.default.weight")
            .replace(".pelt_lora.l.magnitude", ".lora_magnitude_vector.default.weight"))


def _pair(base, family: str, option: str, rank: int = 4, alpha: float = 8.0):
    """(peltc model, peft model) on copies of ``base``; peft's trained tensors randomised (non-identity) and
    copied into peltc's, so both compute with the same weights."""
    members, kwargs = OPTIONS[option]
    points, modules = TARGETS[family]
    ours = copy.deepcopy(base)
    spec = f"lora l {{\n at layers[*].{points}\n rank {rank}\n alpha {alpha:g}\n {members}\n}}"
    compile_model(spec, ours)
    pm = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(r=rank, lora_alpha=alpha, target_modules=modules,
                                                                   **kwargs))
    theirs = dict(pm.base_model.model.named_parameters())
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if ".pelt_lora." in n:
                q = theirs[_peft_name(n)]
                if option in ("pissa", "olora", "pissa-dora"):     # each side initialised itself
                    torch.testing.assert_close(p, q, rtol=0, atol=1e-5)
                q.add_(torch.randn(q.shape, generator=g) * 0.1)
                p.copy_(q)
    return ours.eval(), pm.eval()


@pytest.mark.parametrize("option", list(OPTIONS))
def test_equal_to_peft_tiny_bert(option):
    base = tiny_model("bert")
    ours, pm = _pair(base, "bert", option)
    batch = tiny_batch()
    assert (logits(ours, batch) - logits(pm, batch)).abs().max() <= TOL
    assert (logits(ours, batch) - logits(base, batch)).abs().max() > 1e-4     # the weights matter


@pytest.mark.parametrize("option", list(OPTIONS))
def test_equal_to_peft_tiny_llama(option):
    base = tiny_decoder("llama")
    ours, pm = _pair(base, "llama", option)
    batch = tiny_batch()
    batch["input_ids"][batch["attention_mask"] == 0] = 0
    assert (logits(ours, batch) - logits(pm, batch)).abs().max() <= TOL


@pytest.mark.parametrize("option", ["rslora", "dora", "pissa", "olora"])
def test_equal_to_peft_minilm(option, minilm_classifier):
    ours, pm = _pair(minilm_classifier, "bert", option, rank=8, alpha=16)
    batch = tiny_batch(seq=12)
    assert (logits(ours, batch) - logits(pm, batch)).abs().max() <= TOL


@pytest.mark.parametrize("option", list(OPTIONS))
def test_identity_at_init_tiny_llama(option):
    base = tiny_decoder("llama")
    model = copy.deepcopy(base)
    compile_model(f"lora l {{\n at layers[*].{TARGETS['llama'][0]}\n rank 4\n {OPTIONS[option][0]}\n}}", model)
    batch = tiny_batch()
    torch.testing.assert_close(logits(model, batch), logits(base, batch), rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_trainable_counts_equal_peft_and_the_front_end(option, family):
    """Live parameters = peft's trainable LoRA parameters = the front end's count (grouped K/V on the
    Llama: DoRA's magnitude on v_proj has num_key_value_heads × head_dim entries)."""
    from peltc.api import build_spec_ir
    make = (lambda: tiny_model("bert")) if family == "bert" else (lambda: tiny_decoder("llama"))
    base = make()
    for p in base.parameters():
        p.requires_grad_(False)
    ours, pm = _pair(base, family, option)
    live = sum(p.numel() for n, p in ours.named_parameters() if ".pelt_lora." in n)
    assert live == pm.get_nb_trainable_parameters()[0] - sum(
        p.numel() for n, p in pm.named_parameters() if p.requires_grad and "lora_" not in n)
    assert live == sum(a.trainable for a in ours._pelt.ir.attachments())
    members = OPTIONS[option][0]
    planned = build_spec_ir(f"lora l {{ at layers[*].{TARGETS[family][0]} rank 4 {members} }}", make())
    assert sum(a.trainable for a in planned.attachments()) == live


@pytest.mark.parametrize("option", ["dora", "pissa-dora", "rslora"])
def test_gradients_equal_peft(option):
    """The same gradients for A, B and DoRA's magnitude: the norm is detached as peft detaches it."""
    ours, pm = _pair(tiny_model("bert"), "bert", option)
    batch = tiny_batch()
    for m in (ours, pm):
        (m(**batch).logits ** 2).sum().backward()
    theirs = dict(pm.base_model.model.named_parameters())
    grads = [(p.grad, theirs[_peft_name(n)].grad) for n, p in ours.named_parameters() if ".pelt_lora." in n]
    assert grads and all(a is not None and b is not None for a, b in grads)
    for a, b in grads:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
