"""`observe_prefix_attention` (diagnostics) measures what attention really does: its per-layer mass on
prefix positions equals the mass read off eager attention weights (prefix columns first)."""

from __future__ import annotations

import pytest
import torch
from torch_models import PREFIX_FAMILIES, perturb, tiny_model

from peltc.api import compile_model
from peltc.compiler.torch.prefix import observe_prefix_attention

SPEC = ("prefix p { at layers[0].attention length 3 mlp 16 gate sigmoid(layer.input) }\n"
        "prefix q { at layers[1].attention length 2 mlp none gate scalar }")


@pytest.mark.parametrize("family", PREFIX_FAMILIES)
def test_mass_equals_eager_attention_weights(family, batch):
    model = tiny_model(family, "eager")
    compile_model(SPEC, model)
    perturb(model)
    with torch.no_grad(), observe_prefix_attention(model) as mass:
        out = model(**batch, output_attentions=True)
    tok = batch["attention_mask"].float()                           # (b, s)
    for layer, length in ((0, 3), (1, 2)):
        w = out.attentions[layer][..., :length].sum(-1)            # (b, heads, s)
        expect = float((w * tok[:, None]).sum() / (tok.sum() * w.shape[1]))
        assert mass[layer] == pytest.approx(expect, abs=1e-5)
    assert model.base_model is not None
    # outside the block nothing is observed
    with torch.no_grad():
        model(**batch)
    assert set(mass) == {0, 1}


@pytest.mark.parametrize("gate", ["none", "sigmoid(layer.input)"])
def test_mass_on_a_decoder_equals_eager_attention_weights(gate):
    """Decoders too, including the per-query gated path (a causal gate scales each query's prefix)."""
    from torch_models import tiny_batch, tiny_decoder

    model = tiny_decoder("llama", attn="eager")
    compile_model(f"prefix p {{ at layers[*].attention length 3 mlp none gate {gate} }}", model)
    perturb(model, std=1.0)
    batch = tiny_batch()
    with torch.no_grad(), observe_prefix_attention(model) as mass:
        out = model(**batch, output_attentions=True)
    tok = batch["attention_mask"].float()
    for layer in (0, 1):
        w = out.attentions[layer][..., :3].sum(-1)
        expect = float((w * tok[:, None]).sum() / (tok.sum() * w.shape[1]))
        assert mass[layer] == pytest.approx(expect, abs=1e-5)
