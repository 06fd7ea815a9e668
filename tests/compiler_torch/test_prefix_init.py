"""`init tokens` (Li & Liang): a prefix starts at the frozen base model's key and value projections of
real vocabulary tokens (`prefix.token_ids`), per covered layer, with `mlp none` (the prefix parameters
themselves) and with `mlp N` (the reparameterisation's output, its last Linear solved for). `init
random` (the default) is untouched."""

from __future__ import annotations

import pytest
import torch
from torch_models import PREFIX_FAMILIES, make_ir, tiny_batch, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch import apply, fold_prefix
from peltc.compiler.torch.prefix import Prefix, PrefixEncoder, token_ids
from peltc.errors import CompileError

_KV = {"bert": ("attention.self.key", "attention.self.value"), "roberta": ("attention.self.key", "attention.self.value"),
       "electra": ("attention.self.key", "attention.self.value"), "distilbert": ("attention.k_lin", "attention.v_lin")}


def reference_kv(family: str, length: int) -> dict[int, torch.Tensor]:
    """layer → (2, L, H): computed on a separate copy of the base model, from its hidden states: the
    input of layer i through layer i's key and value Linears."""
    model = tiny_model(family)
    base = model.get_submodule(model.base_model_prefix)
    layers = base.transformer.layer if family == "distilbert" else base.encoder.layer
    ids = torch.tensor([token_ids(model.config.vocab_size, length)])
    with torch.no_grad():
        hs = base(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states
        out = {}
        for i, layer in enumerate(layers):
            k, v = (layer.get_submodule(p) for p in _KV[family])
            out[i] = torch.stack([k(hs[i][0]), v(hs[i][0])])
    return out


def prefixes(model) -> dict[int, Prefix]:
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, Prefix):
            out[int(next(x for x in name.split(".") if x.isdigit()))] = m
    return out


def test_token_ids():
    assert token_ids(30522, 4) == [6104, 12208, 18313, 24417]
    ids = token_ids(30522, 512)
    assert len(set(ids)) == 512 and ids == sorted(ids) and 3052 <= ids[0] and ids[-1] < 0.9 * 30522
    assert token_ids(99, 3) == [23, 49, 75]


@pytest.mark.parametrize("family", PREFIX_FAMILIES)
@pytest.mark.parametrize("mlp", ["none", "16", "3"])
def test_prefix_starts_at_token_keys_and_values(family, mlp):
    want = reference_kv(family, 3)
    model = tiny_model(family)
    compile_model(f"prefix p {{ at layers[*].attention length 3 mlp {mlp} init tokens "
                  "gate sigmoid(layer.input) }", model)
    got = prefixes(model)
    assert set(got) == {0, 1}
    for layer, p in got.items():
        assert (p.encoder is None) == (mlp == "none")
        with torch.no_grad():
            kv = p.kv()                                                    # ungated (2, L, H)
        torch.testing.assert_close(kv, want[layer], rtol=0, atol=1e-5)
        assert not torch.equal(want[0], want[1])                           # per layer, not one copy
    if mlp != "none":                                                     # the MLP's output itself
        enc = next(m for m in model.modules() if isinstance(m, PrefixEncoder))
        with torch.no_grad():
            torch.testing.assert_close(enc(), torch.stack([want[0], want[1]]), rtol=0, atol=1e-5)
        # and it stays a trainable MLP: every part gets a gradient
        enc().pow(2).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in enc.parameters())
    # folding keeps it (the artifact's prefix is the token keys and values)
    fold_prefix(model)
    for layer, p in prefixes(model).items():
        torch.testing.assert_close(p.prefix.detach(), want[layer], rtol=0, atol=1e-5)


def test_covered_layers_and_lengths_per_layer():
    """Only covered layers; with `mlp none` a per-layer length takes that many tokens (its own sequence)."""
    model = tiny_model("bert")
    compile_model("prefix p { at layers[*].attention length 2 mlp none init tokens layers[1] { length 4 } }", model)
    got = prefixes(model)
    torch.testing.assert_close(got[0].kv().detach(), reference_kv("bert", 2)[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(got[1].kv().detach(), reference_kv("bert", 4)[1], rtol=0, atol=1e-5)
    model = tiny_model("bert")
    compile_model("prefix p { at layers[1].attention length 3 mlp 8 init tokens }", model)
    assert set(prefixes(model)) == {1}
    torch.testing.assert_close(prefixes(model)[1].kv().detach(), reference_kv("bert", 3)[1], rtol=0, atol=1e-5)


def test_taken_from_the_bare_base_model():
    """Other modules do not enter (a random prefix on layer 0 changes what layer 1 sees once attached),
    nor the model's mode: the keys and values are those of the frozen base model; train mode is kept."""
    model = tiny_model("bert").train()
    compile_model("prefix q { at layers[0].attention length 2 mlp none }\n"
                  "prefix p { at layers[1].attention length 3 mlp none init tokens }", model)
    assert all(m.training for m in model.modules())
    torch.testing.assert_close(prefixes(model)[1].kv().detach(), reference_kv("bert", 3)[1], rtol=0, atol=1e-5)


def test_init_random_is_unchanged(batch):
    """`init random` and no `init` draw the same parameters as before (no extra forward, no extra draws)."""
    states = []
    for spec in ("prefix p { at layers[*].attention length 3 mlp 16 }",
                 "prefix p { at layers[*].attention length 3 mlp 16 init random }"):
        model = tiny_model("bert")
        compile_model(spec, model)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    torch.manual_seed(0)
    emb = torch.nn.Embedding(3, 32)                                     # PyTorch's defaults: N(0, 1)
    assert torch.equal(states[0]["bert.pelt_prefix_encoders.p.embedding.weight"], emb.weight.detach())


def test_mlp_narrower_than_length_is_a_compile_error():
    """The front end rejects it (E104); an IR built by hand meets C016 in the back end."""
    ir = make_ir("bert", [{"instance": "p", "method": "prefix", "layer": i, "point": "attention",
                           "params": {"length": 4, "mlp": 2, "init": "tokens"}} for i in (0, 1)])
    with pytest.raises(CompileError) as e:
        apply(ir, tiny_model("bert"))
    assert e.value.diagnostic.code == "C016" and "mlp" in e.value.diagnostic.help


def test_training_moves_it_and_the_model_runs():
    model = tiny_model("roberta").train()
    compile_model("prefix p { at layers[*].attention length 3 mlp 8 init tokens gate sigmoid(layer.input, init=-2) }",
                  model)
    batch = tiny_batch()
    before = prefixes(model)[0].kv().detach().clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**batch, labels=torch.tensor([0, 1, 0])).loss.backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        model(**batch)
        assert not torch.equal(prefixes(model)[0].kv(), before)
