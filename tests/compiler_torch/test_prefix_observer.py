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
