"""BitFit's ungated deltas go into the module's own bias argument (``F.linear(x, W, b + Δb)``) rather
than being added to its output by a hook. The fold must be invisible: same logits, same gradients,
base biases untouched, and merge / disable / deepcopy behave as before."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch_models import logits, perturb, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import disable, merge
from peltc.compiler.torch.bitfit import UNFOLDED, FoldedLayerNorm, FoldedLinear

SPECS = {
    "ungated": "bitfit b { at all }",
    "gated beside ungated": "bitfit b { at layers[0] }\n"
                            "bitfit g { at layers[1] gate sigmoid(layer.input) }",
    "scalar gate": "bitfit b { at all gate scalar }",
}


def _compiled(spec: str):
    model = tiny_model("bert")
    compile_model(spec, model)
    perturb(model)
    return model


def _hooked(model):
    """A copy computing every delta with the output hook (the path before the fold)."""
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if type(m) in UNFOLDED:
            m.__class__ = UNFOLDED[type(m)]
    return twin


def _holders(model):
    return [m for m in model.modules() if "pelt_bitfit" in m._modules]


def test_ungated_deltas_fold_into_linear_and_layer_norm_forwards():
    model = _compiled(SPECS["ungated"])
    holders = _holders(model)
    assert {type(m) for m in holders} == {FoldedLinear, FoldedLayerNorm}
    assert all(isinstance(m, (nn.Linear, nn.LayerNorm)) for m in holders)


def test_fold_equals_the_hook_in_logits_and_gradients(batch):
    for spec in SPECS.values():
        model = _compiled(spec)
        twin = _hooked(model)
        model.train(), twin.train()
        torch.manual_seed(0)
        a = model(**batch).logits
        torch.manual_seed(0)
        b = twin(**batch).logits
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        a.square().sum().backward()
        b.square().sum().backward()
        ga = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
        gb = {n: p.grad for n, p in twin.named_parameters() if p.requires_grad}
        assert ga.keys() == gb.keys() and any("pelt_bitfit" in n for n in ga)
        for n in ga:
            torch.testing.assert_close(ga[n], gb[n], rtol=1e-5, atol=1e-6, msg=f"{spec}: {n}")


def test_fold_never_writes_the_base_bias(batch):
    base = tiny_model("bert")
    model = copy.deepcopy(base)
    compile_model(SPECS["ungated"], model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(**batch).logits.square().sum().backward()
    opt.step()
    want = dict(base.named_parameters())
    for n, p in model.named_parameters():
        if not p.requires_grad:                     # the base model (the head is trained)
            torch.testing.assert_close(p, want[n], rtol=0, atol=0, msg=n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.endswith(".bias") and "pelt_" not in n
                   and "classifier" not in n)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "pelt_bitfit" in n)


def test_disable_merge_and_deepcopy_see_the_folded_deltas(batch):
    base = logits(tiny_model("bert"), batch)
    model = _compiled(SPECS["ungated"])
    tuned = logits(model, batch)
    assert not torch.allclose(tuned, base, atol=1e-4)
    disable(model, "b")
    torch.testing.assert_close(logits(model, batch), base, rtol=0, atol=1e-6)
    disable(model, "b", False)
    twin = copy.deepcopy(model)
    perturb(twin, seed=3)              # the twin's folded forwards read the twin's deltas
    assert not torch.allclose(logits(twin, batch), tuned, atol=1e-4)
    torch.testing.assert_close(logits(model, batch), tuned, rtol=0, atol=0)
    merge(model)
    assert not _holders(model) and not any(type(m) in UNFOLDED for m in model.modules())
    torch.testing.assert_close(logits(model, batch), tuned, rtol=0, atol=1e-5)


def test_a_module_with_its_own_forward_keeps_the_hook(batch):
    """An instance that already carries a forward (e.g. an offloading hook's) is not folded: its deltas
    stay in the output hook, and that forward is left alone."""
    model = tiny_model("bert")
    want = tiny_model("bert")
    dense = model.bert.encoder.layer[0].output.dense
    own = dense.forward                                 # the bound class forward, put on the instance
    dense.forward = own
    compile_model(SPECS["ungated"], model)
    compile_model(SPECS["ungated"], want)
    assert type(dense) is nn.Linear and dense.__dict__["forward"] is own
    perturb(model)
    perturb(want)
    torch.testing.assert_close(logits(model, batch), logits(want, batch), rtol=0, atol=1e-6)


def test_shallow_replicas_run_their_own_deltas(batch):
    """DataParallel's replicas copy ``__dict__`` shallowly: each must read its own parameters."""
    model = _compiled(SPECS["ungated"])
    lin = model.bert.encoder.layer[0].output.dense
    replica = lin._replicate_for_data_parallel()
    replica._parameters = dict(lin._parameters)
    x = torch.randn(2, 3, lin.in_features)
    torch.testing.assert_close(replica(x), lin(x))
    replica._parameters["weight"] = torch.nn.Parameter(torch.zeros_like(lin.weight))
    torch.testing.assert_close(replica(x), folded_expected(lin, x, weight=torch.zeros_like(lin.weight)))


def folded_expected(lin, x, weight):
    return torch.nn.functional.linear(x, weight, lin.bias + lin.pelt_bitfit["b"].delta)
